"""Stage ``upsize``: nearest-neighbour upsampling by 1, 2 or 4, after pooling.

A decoder's ``Resize(mode=nearest)`` / ``Upsample`` by an integer factor ``f`` repeats every
pixel ``f`` times along a row and every row ``f`` times, so the kernel writes ``f * f``
pixels for each one it computes and the host never touches the tensor.

Pixels arrive row-major. The first copy of a row is sent as its pixels arrive, each held in
the output register for ``f`` cycles, and the row is written into a line buffer of
``wmax`` pixels as it passes; the other ``f - 1`` copies are replayed from the buffer while
the input waits. The stage therefore sends one pixel per cycle and takes one every ``f * f``
cycles: the writer's bandwidth, not the MAC array, bounds an upsized call. With ``f = 1``
every pixel passes straight through, one per cycle.

The line buffer is read synchronously (block RAM); its address is the column of the next
pixel to load, moved on the cycle a pixel is loaded, so the data is ready when the next
load happens. A one-column row writes and reads the same entry back to back, which the read
port's transparency covers.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout, pixel_signature

__all__ = ["Upsize", "upsize_params_layout", "UPSIZE_FACTORS"]

#: Factors a kernel can be built with (``KernelConfig.max_upsize``) and a call can ask for.
UPSIZE_FACTORS = (1, 2, 4)


def upsize_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Upsize`: columns of the frame it receives (after
    pooling) and log2 of the factor (0, 1 or 2; at most log2(cfg.max_upsize))."""
    return data.StructLayout({
        "cols": unsigned((cfg.max_padded_cols - 2).bit_length()),
        "factor_log": unsigned(2),
    })


class Upsize(wiring.Component):
    """Nearest upsampling: ``f * f`` pixels out for each pixel in, one out per cycle.

    Members
    -------
    params : In(upsize_params_layout(cfg))
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))
    """

    #: Cycles from a pixel offered on ``i`` (unstalled) to its first copy taken from ``o``.
    LATENCY = 1

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = upsize_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        p = self.params
        cols_shape = unsigned((cfg.max_padded_cols - 2).bit_length())
        factor_max = max(1, cfg.max_upsize)
        factor_log = Signal(2)
        m.d.comb += factor_log.eq(Mux(p.factor_log > (factor_max.bit_length() - 1),
                                      factor_max.bit_length() - 1, p.factor_log))
        last_copy = Signal(2)          # f - 1: 0, 1 or 3
        m.d.comb += last_copy.eq((1 << factor_log) - 1)

        col = Signal(cols_shape)       # column of the next pixel to load
        copy = Signal(2)               # copy of the current row: 0 is the input, then replays
        repeats = Signal(2)            # further cycles the output register holds its pixel

        slot_free = ~self.o.valid | self.o.ready
        repeat = slot_free & self.o.valid & (repeats != 0)
        from_input = copy == 0
        load = Signal()
        m.d.comb += load.eq(slot_free & ~repeat & (~from_input | self.i.valid))
        m.d.comb += self.i.ready.eq(slot_free & ~repeat & from_input)

        last_col = col == p.cols - 1
        next_col = Mux(last_col, 0, col + 1)

        if factor_max > 1:
            m.submodules.line = line = Memory(shape=pixel_layout(cfg, cfg.cpo), depth=cfg.max_padded_cols - 2,
                                              init=[])
            write = line.write_port()
            read = line.read_port(transparent_for=(write,))
            m.d.comb += [write.addr.eq(col), write.data.eq(self.i.payload), write.en.eq(load & from_input),
                         read.addr.eq(Mux(load, next_col, col))]
            source = Mux(from_input, self.i.payload.as_value(), read.data.as_value())
        else:
            source = self.i.payload.as_value()

        with m.If(load):
            m.d.sync += [self.o.payload.eq(source), self.o.valid.eq(1), repeats.eq(last_copy), col.eq(next_col)]
            with m.If(last_col):
                m.d.sync += copy.eq(Mux(copy == last_copy, 0, copy + 1))
        with m.Elif(repeat):
            m.d.sync += repeats.eq(repeats - 1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
