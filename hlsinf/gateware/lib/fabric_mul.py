"""A multiplier built from LUTs and carry chains, for products that must not take a DSP48E2.

With 8-bit data the DSP budget of a kernel (``CPI * CPO * 9 / 2`` DSP48E2) belongs to the
MAC array (``mul.py`` packs two products per DSP), so any other product, such as the
requantisation multiply of ``relu``, has to be built in the fabric. Writing ``a * b``
leaves the choice to synthesis, which maps it onto DSPs; :class:`FabricMultiplier` forms
the partial products explicitly, so the design holds no ``$mul`` cell at all.

Structure. The partial products are summed by a binary tree of adders with a register
after every level::

    level 1:  a * b[2i:2i+2], one adder each (an odd top bit: a or 0)  -> register
    level 2:  neighbouring level-1 nodes added                         -> register
    ...       ceil(log2(b_width)) levels; an odd node out is registered as it is

Level 1 takes ``b`` two bits ``d`` at a time as ``a * d = a + a * (d - 1)``, where
``a * (d - 1)`` is ``-a``, 0, ``a`` or ``2a``: each of its bits is a function of two bits
of ``a`` and two of ``b`` that shares a LUT with the adder's XOR, and the carry chain's
other input is a bit of ``a`` with no logic in front. Two AND rows ``(a & b[j]) + (a &
b[j+1]) << 1`` give the same adder but need a LUT of their own for that carry-chain input:
for 32 x 16 bits, Yosys maps them to 760 LUTs against 520 this way. Radix-4 Booth rows
halve the row count too, but a Booth row bit needs five inputs (two bits of ``a``, three
digit controls), so two rows cannot share an adder's LUTs: a LUT per row bit before the
adders (about 90 more LUTs for 32 x 16, estimated) and one more LUT level.

Every path between registers is one carry-chain adder and the LUT that feeds it. A node
covering ``k`` bits of ``b`` from bit ``lo`` holds ``a * b[lo:lo+k]`` exactly, in the
fewest bits that hold it; adding a node to the one above it leaves the lower node's ``k``
low bits unchanged, so they bypass the adder, which is only as wide as the upper node.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FabricMultiplier"]


class FabricMultiplier(wiring.Component):
    """``p = a * b`` in LUTs and carry chains, one product per cycle, ``latency`` registers deep.

    Parameters
    ----------
    a_shape : Shape
        Signed or unsigned, any width.
    b_shape : Shape
        Unsigned; its width sets the depth of the adder tree.

    Members
    -------
    a : In(a_shape)
    b : In(b_shape)
        Operands, read combinationally by the first tree level: drive them from registers.
    en : In(1)
        Every tree register loads when ``en`` is high, so the multiplier stalls with the
        pipeline around it.
    p : Out(shape of ``a * b``)
        The product of the operands presented ``latency`` enabled cycles earlier, with the
        same shape Amaranth gives ``a * b``. With a 1-bit ``b`` there is no tree: ``p`` is
        ``a`` or 0, combinationally.
    """

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        if b_shape.signed or b_shape.width < 1:
            raise ValueError(f"FabricMultiplier: b_shape = {b_shape!r} is not allowed: unsigned, 1 bit or wider")
        if a_shape.width < 1:
            raise ValueError(f"FabricMultiplier: a_shape = {a_shape!r} is not allowed: 1 bit or wider")
        self.a_shape, self.b_shape = a_shape, b_shape
        #: registers from the operands to ``p``: the adder-tree levels
        self.latency = self.levels(b_shape.width)
        super().__init__({
            "a": In(a_shape),
            "b": In(b_shape),
            "en": In(1),
            "p": Out((Signal(a_shape) * Signal(b_shape)).shape()),
        })

    @staticmethod
    def levels(b_width: int) -> int:
        """Adder-tree levels (and registers) for a ``b_width``-bit ``b``."""
        return math.ceil(math.log2(b_width))

    def _node_shape(self, bits: int) -> Shape:
        """The smallest shape holding ``a * x`` for every ``bits``-bit unsigned ``x``."""
        a_min = -(1 << (self.a_shape.width - 1)) if self.a_shape.signed else 0
        a_max = (1 << (self.a_shape.width - (1 if self.a_shape.signed else 0))) - 1
        x_max = (1 << bits) - 1
        low, high = min(a_min * x_max, 0), max(a_max * x_max, 0)
        if low < 0:         # Shape.cast(range(...)) cannot take ranges longer than 2**63
            return signed(max((-low - 1).bit_length(), high.bit_length()) + 1)
        return unsigned(max(high.bit_length(), 1))

    def elaborate(self, platform):
        m = Module()
        width = self.b_shape.width
        if width == 1:
            m.d.comb += self.p.eq(self._row(0))
            return m

        # Level 1: the rows in pairs (an odd last row alone); a node is (register, bits of b).
        nodes = []
        for j in range(0, width, 2):
            value, bits = (self._row_pair(j), 2) if j + 1 < width else (self._row(j), 1)
            nodes.append((self._register(m, value, bits, f"level1_node{j // 2}"), bits))
        # Levels 2 ...: neighbours added, an odd last node registered as it is.
        for level in range(2, self.latency + 1):
            registered = []
            for n in range(0, len(nodes), 2):
                value, bits = self._add(nodes[n], nodes[n + 1]) if n + 1 < len(nodes) else nodes[n]
                registered.append((self._register(m, value, bits, f"level{level}_node{n // 2}"), bits))
            nodes = registered
        [(product, bits)] = nodes
        assert bits == width
        m.d.comb += self.p.eq(product)
        return m

    def _register(self, m, value, bits, name):
        """A tree register holding a node that covers ``bits`` bits of ``b``."""
        reg = Signal(self._node_shape(bits), name=name)
        with m.If(self.en):
            m.d.sync += reg.eq(value)
        return reg

    def _row(self, j):
        """``a * b[j]``: ``a`` or 0."""
        return Mux(self.b[j], self.a, 0)

    def _row_pair(self, j):
        """``a * b[j:j+2]`` as ``a + a * (d - 1)`` (module docstring): ``a`` is the adder's
        first operand, the one Yosys feeds to the carry chain's data input. ``-a`` is
        ``~a + 1``; the ``+ 1`` enters as the carry into the lowest bit, by giving both
        operands one more low bit that holds it (their sum carries it out).
        """
        a = self.a if self.a_shape.signed else Cat(self.a, 0).as_signed()   # ~a = -a - 1
        digit = self.b[j:j + 2]
        zero = digit == 0
        rest = Mux(zero, ~a, Mux(digit == 1, 0, Mux(digit == 2, a, a.shift_left(1))))
        total = Cat(zero, a).as_signed() + Cat(zero, rest).as_signed()     # 2 * (a + rest + zero)
        return total[1:1 + self._node_shape(2).width]

    def _add(self, low, high):
        """``low + high * 2**(bits of low)``, with the low node's own low bits bypassing the adder."""
        (low_value, low_bits), (high_value, high_bits) = low, high
        bits = low_bits + high_bits
        shape = self._node_shape(bits)
        # floor(result / 2**low_bits) = (low >> low_bits) + high, and it fits the rest of `shape`.
        low_upper = low_value.shift_right(low_bits)         # a signed value keeps its sign bit
        if len(low_upper) == 0:
            low_upper = Const(0, unsigned(1))
        upper = (low_upper + high_value)[:shape.width - low_bits]
        return Cat(low_value[:low_bits], upper), bits
