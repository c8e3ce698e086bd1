"""Shapes and a frame counter that several stages share, so that they agree by construction."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data

from hlsinf.config import KernelConfig

__all__ = ["act_shape", "pixel_layout", "window_layout", "frame_pixels_shape", "frame_counter"]


def act_shape(cfg: KernelConfig):
    """Shape of one activation: ``signed`` or ``unsigned`` ``act_bits`` per ``cfg.act_signed``."""
    return signed(cfg.act_bits) if cfg.act_signed else unsigned(cfg.act_bits)


def pixel_layout(cfg: KernelConfig, lanes: int) -> data.ArrayLayout:
    """A pixel of ``lanes`` activations (CPI lanes on the input side, CPO on the output side)."""
    return data.ArrayLayout(act_shape(cfg), lanes)


def window_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """A 3x3 window of CPI lanes: ``[lane][ky * 3 + kx]``."""
    return data.ArrayLayout(data.ArrayLayout(act_shape(cfg), 9), cfg.cpi)


def frame_pixels_shape(cfg: KernelConfig):
    """Shape of a ``frame_pixels`` parameter: wide enough for ``cfg.max_frame_pixels``."""
    return unsigned(cfg.max_frame_pixels.bit_length())


def frame_counter(m: Module, step, length, name: str):
    """``(first, last)``: whether the next of every ``length`` items (``length`` >= 1) is the
    first or the last one; ``step`` takes an item.

    A ``first`` flag and a down-counter of the items still to come: the flags come from
    compares with constants, never from an adder followed by a compare, so the counter
    adds no long path before the stream handshakes it drives. ``length`` is only read
    when a run starts, so it may change between runs.
    """
    first = Signal(init=1, name=f"{name}_first")
    left = Signal.like(length, name=f"{name}_left")   # items after the previous one
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(Mux(first, length == 1, left == 1))
    with m.If(step):
        m.d.sync += [first.eq(last), left.eq(Mux(first, length - 1, left - 1))]
    return first, last
