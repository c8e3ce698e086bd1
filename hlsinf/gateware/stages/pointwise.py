"""The stream mux in front of ``mul`` of a kernel built with ``KernelConfig.with_pointwise``.

A 1x1 convolution in the 3x3 slot uses one tap of nine: each input value meets only CPO
weights, so the MAC array can only be filled by nine times more input per cycle. A pointwise
call therefore reads *super-pixels*, the ``9 x CPI`` activations of nine consecutive input
channel groups at one pixel (docs/memory.md), and hands each to ``mul`` as if it were a
window: tap ``t`` of lane ``ci`` is slot ``t``'s lane ``ci``. The weight set of a frame holds,
at tap ``t`` of lane ``ci``, the weight of input channel ``(s*9 + t)*CPI + ci``, so ``mul``'s
CPO x CPI x 9 products are all useful ones and nothing after the mux changes.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout, window_signature

__all__ = ["superpixel_layout", "superpixel_signature", "superpixel_as_window", "PointwiseMux"]


def superpixel_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """A super-pixel ``[9][CPI]``: slot ``t`` is input group ``s*9 + t`` of one pixel, as in memory."""
    return data.ArrayLayout(pixel_layout(cfg, cfg.cpi), 9)


def superpixel_signature(cfg: KernelConfig) -> stream.Signature:
    return stream.Signature(superpixel_layout(cfg))


def superpixel_as_window(superpixel) -> list:
    """The window of a super-pixel view, lane by lane: ``window[ci][t] = superpixel[t][ci]`` (wiring only)."""
    lanes = len(superpixel[0])
    return [[superpixel[t][ci] for t in range(9)] for ci in range(lanes)]


class PointwiseMux(wiring.Component):
    """``o`` is ``windows`` (``pointwise`` low) or ``superpixels`` reshaped as windows (high).

    Combinational, no state: one item per cycle, the unselected input is held (ready low).
    ``pointwise`` must be constant while items flow (the sequencer's geometry, set per call).

    Ports: ``pointwise`` (in), ``windows`` (in, window stream), ``superpixels`` (in,
    :func:`superpixel_signature`), ``o`` (out, window stream, to ``mul``).
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        super().__init__({
            "pointwise": In(1),
            "windows": In(window_signature(cfg)),
            "superpixels": In(superpixel_signature(cfg)),
            "o": Out(window_signature(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self.pointwise
        reshaped = superpixel_as_window(self.superpixels.payload)
        for ci in range(self.cfg.cpi):
            for t in range(9):
                m.d.comb += self.o.payload[ci][t].eq(Mux(pw, reshaped[ci][t], self.windows.payload[ci][t]))
        m.d.comb += [
            self.o.valid.eq(Mux(pw, self.superpixels.valid, self.windows.valid)),
            self.windows.ready.eq(~pw & self.o.ready),
            self.superpixels.ready.eq(pw & self.o.ready),
        ]
        return m
