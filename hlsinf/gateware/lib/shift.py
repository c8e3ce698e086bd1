"""A variable arithmetic right shift in two registered steps: whole bytes, then bits.

The requantising stages (relu, leaky_relu, batch_norm) shift a wide product right by a
run-time amount of up to 31 bits. One barrel shifter of 32 positions is a deep multiplexer
tree; splitting the amount into ``shift >> 3`` (a multiplexer of ``max_shift // 8 + 1``
inputs) and ``shift & 7`` (8 inputs), each followed by a register, keeps every path to a
few LUT levels. Both functions only add the switch to the caller's ``m.d.sync``; the caller
owns the pipeline registers and the condition (its stall) around them.

The stages shift ``2 * x`` (relu, leaky_relu) so that one more bit survives; :func:`halve`
then rounds (``KernelConfig.rounding``), and :func:`wrap_to` is ``overflow='wrap'``: the
low bits of the result in the activation format, instead of a saturation.
"""

from __future__ import annotations

__all__ = ["shift_bytes", "shift_bits", "halve", "wrap_to"]


def shift_bytes(m, dst, value, shift, max_shift: int):
    """``dst <= value >> (8 * (shift >> 3))`` (registered): the whole bytes of ``shift``."""
    with m.Switch(shift >> 3):
        for c in range(max_shift // 8 + 1):
            with m.Case(c):
                m.d.sync += dst.eq(value >> (8 * c))


def shift_bits(m, dst, value, shift):
    """``dst <= value >> (shift & 7)`` (registered): the rest of ``shift``."""
    with m.Switch(shift & 7):
        for f in range(8):
            with m.Case(f):
                m.d.sync += dst.eq(value >> f)


def halve(q, rounding: str):
    """From ``q = floor(2x / 2**s)``: ``floor((x + 2**(s-1)) / 2**s)`` (``rounding='round'``, half
    up; ``x`` for ``s = 0``) as ``(q + 1) >> 1``, or ``floor(x / 2**s)`` (``'trunc'``) as ``q >> 1``."""
    return (q + 1) >> 1 if rounding == "round" else q >> 1


def wrap_to(value, bits: int, signed: bool):
    """The low ``bits`` bits of ``value`` as two's complement (``signed``) or unsigned: AP_WRAP."""
    low = value[:bits]
    return low.as_signed() if signed else low
