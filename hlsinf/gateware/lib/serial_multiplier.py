"""Shift-and-add multiplication, one bit of the multiplier per cycle, in LUTs and carry chains.

The kernel's DSP48E2 blocks belong to the MAC array (``CPI*CPO*9/2`` of them, the whole
budget of an int8 build). The sequencer's products of call arguments (``H*W``,
``o_first*out_plane`` ...) are needed once per call, and a call lasts thousands to millions
of cycles, so spending a few tens of cycles on each is cheap where a DSP is not.

Each cycle adds the shifted multiplicand to the product when the low bit of the remaining
multiplier is set, then shifts both by one. It stops once the remaining multiplier is zero,
so the time follows the value, not the width, of ``b``: pass the operand that is usually
small as ``b``. Everything is registered: the adder reads registers only and the stop test
is an OR over the remaining bits of ``b`` (Yosys ``synth_xilinx``, 32x32 bits: 138 LUT,
161 FF, no DSP, two LUT levels besides the 64-bit carry chain).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialMultiplier"]


class SerialMultiplier(wiring.Component):
    """``product = a * b`` (unsigned, exact) in ``max(1, b.bit_length())`` cycles.

    Parameters
    ----------
    a_width, b_width : int
        Widths of the operands; ``product`` has ``a_width + b_width`` bits.

    Members
    -------
    a : In(a_width)
    b : In(b_width)
        Operands, sampled in the cycle ``start`` is high.
    start : In(1)
        Begin a product (also while busy: the old one is dropped).
    busy : Out(1)
        High from the cycle after ``start`` until ``product`` is final.
    done : Out(1)
        One-cycle pulse in the first cycle ``product`` is final (``busy`` just fell).
    product : Out(a_width + b_width)
        The product while ``busy`` is low; it holds until the next ``start``.
    """

    def __init__(self, a_width: int, b_width: int):
        for name, width in (("a_width", a_width), ("b_width", b_width)):
            if not (isinstance(width, int) and width >= 1):
                raise ValueError(f"SerialMultiplier {name} = {width!r} is out of range: allowed an int >= 1")
        self.a_width, self.b_width = a_width, b_width
        super().__init__({
            "a": In(a_width),
            "b": In(b_width),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "product": Out(a_width + b_width),
        })

    def elaborate(self, platform):
        m = Module()
        addend = Signal(self.a_width + self.b_width - 1)   # a << (cycles so far)
        rest = Signal(self.b_width)                        # b >> (cycles so far)

        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [self.product.eq(0), addend.eq(self.a), rest.eq(self.b), self.busy.eq(1)]
        with m.Elif(self.busy):
            with m.If(rest[0]):
                m.d.sync += self.product.eq(self.product + addend)
            m.d.sync += [addend.eq(addend << 1), rest.eq(rest >> 1)]
            with m.If(rest[1:] == 0):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m
