"""IEEE-754 binary32 multiplier and adder, pipelined, bit-exact with numpy float32.

The fp32 kernel (the paper's float datapath) needs the products and sums of numpy float32,
bit for bit, so that ``hlsinf/reference_float.py`` can stay the oracle of every test as
``hlsinf/reference.py`` is for the integer kernel. Two facts fix the design:

* numpy rounds ``a * b`` and ``a + b`` separately (round to nearest, ties to even), so
  there is a multiplier and an adder and no fused multiply-add: an FMA rounds once and
  would differ from the reference in the last bit.
* The MAC array forms ``CPO x CPI x 9`` products per cycle and feeds them to adder trees
  whose registers all load together (``stages/mul.py``). So the units are plain pipelines
  with a fixed ``latency``, an ``en`` that stalls every register and a valid bit that
  travels along (which Yosys removes when nobody reads it); :class:`FloatStream` wraps one
  in a valid/ready stream for tests. :class:`FDotTree` is the adder tree itself.

Semantics (docs/numbers.md, "fp32"):

* every result is the exact result rounded to nearest, ties to even; overflow gives
  ``±inf``;
* ``subnormals=True`` (the default): subnormal operands and results are supported, so the
  results equal numpy's everywhere. ``subnormals=False``: flush to zero, as x86's DAZ +
  FTZ do: subnormal operands are read as zero of their sign, and a result whose rounding
  (to 24 bits, exponent range unbounded) is below ``2**-126`` in magnitude becomes a zero
  of its sign; ``reference_float.ftz_mul``/``ftz_add`` model that;
* any NaN operand, ``inf * 0`` and ``inf - inf`` give the quiet NaN ``0x7FC00000`` (numpy
  may keep an operand's payload and sign: compare NaN as NaN); an exact zero sum is
  ``+0`` unless both operands are ``-0`` (``x + (-x) = +0``).

Datapath. Mantissas carry the hidden bit (0 for a subnormal, whose exponent reads as 1).
Every result is rounded the same way: the exponent field and the 23 fraction bits are
packed into one 31-bit word and the round-up bit is added to it, so a mantissa that
rounds up to ``2**24`` carries into the exponent, a subnormal that rounds up to ``2**-126``
becomes normal and ``0x7F7FFFFF`` rounds up to infinity without special cases. Overflow
before rounding, zeros, infinities and NaN are flags set from the operands in the first
stage; they travel along and pick the result in the last one.

:class:`FMul` (latency 6; 5 with flush to zero). The 24 x 24 mantissa product is written
as two products, 24 x 17 and 24 x 7 bits, each a DSP48E2 multiply (B port: 18 bits
signed), registered, then added with the second shifted by 17: the cascade of two DSP48E2
(the second one's ``PCIN >> 17`` input), so that no stage holds a multiply and a 48-bit
add; nothing else of the unit is a multiply. With subnormals, at most one operand is
subnormal (two give a result below ``2**-252``, which rounds to zero: a flag), so the
product's leading one lies in its top 25 bits. One left shift then both normalises it and
denormalises a result below ``2**-126``: shifting the product left by
``min(leading zeros, E)`` (``E`` the exponent sum) puts the leading one at the top when the
result is normal and the exponent at 1 when it is not.
The sticky bit needs no OR over the bits shifted out: the product's trailing zeros are the
sum of its operands' trailing zeros, counted in the first stage, and the sticky bit is
``trailing zeros + shift < 48``. With flush to zero the product is only shifted by its top
bit.

:class:`FAdd` (latency 6, both modes). Operands are ordered by magnitude (an unsigned
compare of their low 31 bits), the smaller mantissa is shifted right by the exponent
difference into a 27-bit word (24 bits, guard, round and a sticky bit OR-ed into the lowest
one), added or subtracted (one carry chain for both), and the sum shifted left by
``min(leading zeros, exponent)``: the same normalise-or-stop-at-subnormal shift as the
multiplier. Subnormals cost the adder only that ``min``.

Stages are cut so that Yosys finds at most 5 LUT levels between registers (the rule of
thumb for 300 MHz is about 6); resources and depth per unit: docs/numbers.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FMul", "FAdd", "FDotTree", "FloatStream", "CANONICAL_NAN", "leading_zeros"]

#: The quiet NaN every unit returns for any NaN result.
CANONICAL_NAN = 0x7FC00000
_INF = 0x7F800000


def leading_zeros(value: Value) -> Value:
    """Leading zeros of ``value`` (``len(value)`` for 0)."""
    return _count_zeros([value[k] for k in reversed(range(len(value)))])


def trailing_zeros(value: Value) -> Value:
    """Trailing zeros of ``value`` (``len(value)`` for 0)."""
    return _count_zeros([value[k] for k in range(len(value))])


def _count_zeros(bits: list) -> Value:
    """Zeros before the first one of ``bits`` (``len(bits)`` if none), in groups of four:
    four times the index of the first group that is not all zero, plus the zeros inside it.

    Expressions only, each group's read once per use: a tree of named signals would cost
    the simulator a pass per level, a tree of expressions repeats its subtrees (Yosys and
    ABC restructure either way: 5 LUT levels at most in the units).
    """
    width = len(bits)
    groups = [bits[k:k + 4] for k in range(0, width, 4)]
    zero = [~_any(g) for g in groups]
    inside = [_first_one(g) for g in groups]
    result = Const(width, range(width + 1))
    for g in reversed(range(len(groups))):
        result = Mux(zero[g], result, 4 * g + inside[g])
    return result


def _first_one(bits: list) -> Value:
    value = Const(len(bits) - 1, 2)
    for k in reversed(range(len(bits) - 1)):
        value = Mux(bits[k], k, value)
    return value


def _any(terms: list) -> Value:
    """OR of ``terms`` as a balanced expression."""
    while len(terms) > 1:
        terms = [terms[k] | terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
    return terms[0]


@dataclass
class _Operand:
    """The fields of one binary32 operand, as the units read them."""
    sign: Value
    exp: Value          #: biased exponent field
    exp_eff: Value      #: max(exponent field, 1): a subnormal's exponent
    mant: Value         #: 24 bits, hidden bit included (0 for a subnormal; 0 if flushed)
    nan: Value
    inf: Value
    zero: Value         #: +-0, or a subnormal that is flushed
    subnormal: Value


def _unpack(x: Value, subnormals: bool) -> _Operand:
    exp, frac = x[23:31], x[:23]
    exp_zero, exp_max, frac_zero = exp == 0, exp == 0xFF, frac == 0
    return _Operand(sign=x[31], exp=exp, exp_eff=Cat(exp[0] | exp_zero, exp[1:]),
                    mant=Cat(frac, ~exp_zero) if subnormals else Mux(exp_zero, 0, Cat(frac, 1)),
                    nan=exp_max & ~frac_zero, inf=exp_max & frac_zero,
                    zero=exp_zero & frac_zero if subnormals else exp_zero,
                    subnormal=exp_zero & ~frac_zero)


class _Pipeline:
    """Registers that load when ``en`` is high; data registers have no reset (the valid
    bits say what they hold), as in ``stages/mul.py``."""

    def __init__(self, m: Module, en: Value):
        self.m, self.en = m, en

    def reg(self, value, name: str, shape=None) -> Signal:
        value = Value.cast(value)
        r = Signal(shape if shape is not None else value.shape(), name=name, reset_less=True)
        with self.m.If(self.en):
            self.m.d.sync += r.eq(value)
        return r

    def regs(self, prefix: str, **values) -> dict:
        return {k: self.reg(v, f"{prefix}_{k}") for k, v in values.items()}

    def valid(self, value, name: str) -> Signal:
        r = Signal(name=name)
        with self.m.If(self.en):
            self.m.d.sync += r.eq(value)
        return r


def _result(*, sign, nan, inf, zero, packed, round_up, overflow=0, flush=0):
    """The last stage's result: the specials in priority order, else ``packed + round_up``
    (the carry of the rounding runs into the exponent field)."""
    rounded = (packed + round_up)[:31]
    return Mux(nan, CANONICAL_NAN,
               Mux(inf | overflow, Cat(Const(_INF, 31), sign),
                   Mux(zero | flush, Cat(Const(0, 31), sign), Cat(rounded, sign))))


class _Unit(wiring.Component):
    """Members of a two-operand unit.

    Members
    -------
    a, b : In(32)
        Operands (binary32 bit patterns), read combinationally by the first stage: drive
        them from registers.
    i_valid : In(1)
        Travels along with the operands to ``o_valid``.
    en : In(1)
        Every register loads when ``en`` is high, so the unit stalls with the pipeline
        around it.
    o : Out(32)
        The result of the operands presented ``latency`` enabled cycles earlier.
    o_valid : Out(1)
        ``i_valid`` of those operands.
    """

    def __init__(self, *, subnormals: bool = True):
        self.subnormals = bool(subnormals)
        super().__init__({"a": In(32), "b": In(32), "i_valid": In(1), "en": In(1),
                          "o": Out(32), "o_valid": Out(1)})


class FMul(_Unit):
    """``o = a * b`` in binary32, rounded to nearest even, one product per cycle.

    Parameters
    ----------
    subnormals : bool
        True: subnormals supported (numpy's results everywhere); False: flush to zero
        (``reference_float.ftz_mul``). See the module docstring.

    ``latency`` is :attr:`LATENCY` or :attr:`LATENCY_FTZ`; members: see ``_Unit``.
    """

    #: registers from the operands to ``o`` with subnormals: unpack, partial products,
    #: product, leading zeros, shift, round
    LATENCY = 6
    #: the same without subnormals: unpack, partial products, product, normalise, round
    LATENCY_FTZ = 5

    def __init__(self, *, subnormals: bool = True):
        super().__init__(subnormals=subnormals)
        self.latency = self.LATENCY if self.subnormals else self.LATENCY_FTZ

    def elaborate(self, platform):
        m = Module()
        p = _Pipeline(m, self.en)
        a, b = _unpack(self.a, self.subnormals), _unpack(self.b, self.subnormals)

        # Stage 1: unpack. The exponent sum is biased so that a product whose leading one is
        # at bit 46 has exponent `exp`.
        exp = a.exp_eff + b.exp_eff - 127                  # signed(10)
        specials = dict(sign=a.sign ^ b.sign,
                        nan=a.nan | b.nan | (a.inf & b.zero) | (b.inf & a.zero),
                        inf=a.inf | b.inf,
                        # two subnormals: below 2**-252, rounds to zero
                        zero=a.zero | b.zero | (a.subnormal & b.subnormal))
        s1 = p.regs("s1", ma=a.mant, mb=b.mant, exp=exp, **specials)
        if self.subnormals:
            s1 |= p.regs("s1", tza=trailing_zeros(a.mant), tzb=trailing_zeros(b.mant))
        valid = p.valid(self.i_valid, "s1_valid")

        # Stages 2 and 3: the 24 x 24 product as two DSP48E2 multiplies, 24 x 17 and 24 x 7
        # (the B port is 18 bits signed), each registered (the M register), then added with
        # the high one shifted by 17 (the second DSP48E2's cascade input and P register).
        # Written out, so that no stage holds a multiply and a 48-bit add.
        flags = {k: s1[k] for k in specials}
        s2 = p.regs("s2", low=s1["ma"] * s1["mb"][:17], high=s1["ma"] * s1["mb"][17:], exp=s1["exp"], **flags)
        if self.subnormals:
            s2 |= p.regs("s2", tz=s1["tza"] + s1["tzb"],
                         # shifts below -25 leave nothing above the round bit: clamp
                         exp_clamped=Mux(s1["exp"] < -25, -25, s1["exp"]))
        valid = p.valid(valid, "s2_valid")
        flags = {k: s2[k] for k in specials}
        s3 = p.regs("s3", product=(s2["low"] + (s2["high"] << 17))[:48], exp=s2["exp"], **flags)
        if self.subnormals:
            s3 |= p.regs("s3", tz=s2["tz"], exp_clamped=s2["exp_clamped"])
        valid = p.valid(valid, "s3_valid")
        product = s3["product"]
        flags = {k: s3[k] for k in specials}

        if self.subnormals:
            # Stage 4: shift = min(leading zeros, exp) >= -25, kept as shift + 25 in [0, 50].
            # The leading one is in bits 23..47 (one operand at most is subnormal).
            lz = leading_zeros(product[23:])
            shift25 = Mux(lz < s3["exp_clamped"], lz + 25, s3["exp_clamped"] + 25)
            s4 = p.regs("s4", product=product, shift25=Value.cast(shift25)[:6], exp=s3["exp"], tz=s3["tz"],
                        **flags)
            valid = p.valid(valid, "s4_valid")
            flags = {k: s4[k] for k in specials}

            # Stage 5: product << shift; bits 48..72 of (product << shift25) are the guard bit
            # and the 24-bit mantissa, everything below is sticky: the lowest one of the
            # product, at bit tz, lands below 48.
            window = (s4["product"] << s4["shift25"])[48:73]
            mant, guard = window[1:], window[0]
            sticky = (s4["tz"] + s4["shift25"]) < 48
            result_exp = s4["exp"] + 26 - s4["shift25"]    # exponent if mant[23] is set (signed)
            s5 = p.regs("s5", packed=Cat(mant[:23], Mux(mant[23], result_exp[:8], 0)),
                        round_up=guard & (sticky | mant[0]),
                        overflow=mant[23] & (result_exp >= 255), **flags)
            valid = p.valid(valid, "s5_valid")
            last = s5
        else:
            # Stage 4: normalise by the top bit; the exponent may be out of range either way.
            top = product[47]
            mant = Mux(top, product[24:48], product[23:47])
            guard = Mux(top, product[23], product[22])
            sticky = (product[:22] != 0) | (top & product[22])
            result_exp = s3["exp"] + top                   # signed
            round_up = guard & (sticky | mant[0])
            s4 = p.regs("s4", packed=Cat(mant[:23], result_exp[:8]), round_up=round_up,
                        overflow=result_exp >= 255,
                        # below 2**-126 after rounding: exponent below 0, or 0 and the
                        # rounding does not carry into it
                        flush=(result_exp < 0) | ((result_exp == 0) & ~((mant[:23] == 0x7FFFFF) & round_up)),
                        **flags)
            valid = p.valid(valid, "s4_valid")
            last = s4

        # Last stage: round, pick specials.
        result = _result(packed=last["packed"], round_up=last["round_up"],
                         overflow=last["overflow"], flush=0 if self.subnormals else last["flush"],
                         **{k: last[k] for k in specials})
        with m.If(self.en):
            m.d.sync += [self.o.eq(result), self.o_valid.eq(valid)]
        return m


class FAdd(_Unit):
    """``o = a + b`` in binary32, rounded to nearest even, one sum per cycle.

    Parameters
    ----------
    subnormals : bool
        True: subnormals supported (numpy's results everywhere); False: flush to zero
        (``reference_float.ftz_add``). See the module docstring.

    ``latency`` is :attr:`LATENCY` in both modes; members: see ``_Unit``.
    """

    #: registers from the operands to ``o``: order, align, add, leading zeros, shift, round
    LATENCY = 6

    def __init__(self, *, subnormals: bool = True):
        super().__init__(subnormals=subnormals)
        self.latency = self.LATENCY

    def elaborate(self, platform):
        m = Module()
        p = _Pipeline(m, self.en)
        a, b = _unpack(self.a, self.subnormals), _unpack(self.b, self.subnormals)

        # Stage 1: order by magnitude (a flushed subnormal orders like the zero it is read as).
        a_big = self.a[:31] >= self.b[:31]
        diff_ab, diff_ba = (a.exp_eff - b.exp_eff)[:8], (b.exp_eff - a.exp_eff)[:8]
        s1 = p.regs("s1",
                    big=Mux(a_big, a.mant, b.mant), small=Mux(a_big, b.mant, a.mant),
                    exp=Mux(a_big, a.exp_eff, b.exp_eff), diff=Mux(a_big, diff_ab, diff_ba),
                    sign=Mux(a_big, a.sign, b.sign), subtract=a.sign ^ b.sign,
                    nan=a.nan | b.nan | (a.inf & b.inf & (a.sign ^ b.sign)),
                    inf=a.inf | b.inf, inf_sign=Mux(a.inf, a.sign, b.sign),
                    zero_sign=a.sign & b.sign)      # the sign of an exact zero sum
        valid = p.valid(self.i_valid, "s1_valid")
        passing = ("exp", "sign", "subtract", "nan", "inf", "inf_sign", "zero_sign")

        # Stage 2: align. The small mantissa, with three more low bits, shifted right by the
        # difference (27 or more: nothing left but the sticky bit); the bits shifted out are
        # OR-ed into the lowest bit.
        shift = Mux(s1["diff"] > 27, 27, s1["diff"][:5])
        aligned = Cat(Const(0, 3), s1["small"]) >> shift
        out_mask = Cat(*(shift > k + 3 for k in range(24)))     # small[k] is shifted out
        sticky = (s1["small"] & out_mask) != 0
        s2 = p.regs("s2", big=s1["big"], aligned=aligned | sticky, **{k: s1[k] for k in passing})
        valid = p.valid(valid, "s2_valid")

        # Stage 3: |big| >= |aligned|, so the sum is never negative. Subtraction as
        # big + ~aligned + 1, the + 1 entering below the lowest bit; its carry out
        # (2**27) is dropped.
        sub = s2["subtract"]
        wide = Cat(sub, Const(0, 3), s2["big"]) + Cat(sub, Mux(sub, ~s2["aligned"], s2["aligned"]))
        total = Cat(wide[1:28], wide[28] & ~sub)
        s3 = p.regs("s3", total=total, **{k: s2[k] for k in passing})
        valid = p.valid(valid, "s3_valid")

        # Stage 4: left shift = min(leading zeros, exp): the leading one goes to bit 27 (the
        # hidden bit of a normal result), or the exponent stops at 1 (a subnormal result,
        # hidden bit 0). A carry out of the sum (bit 27) needs no shift.
        lz = leading_zeros(s3["total"])
        s4 = p.regs("s4", total=s3["total"], shift=Mux(lz < s3["exp"], lz, s3["exp"])[:5],
                    **{k: s3[k] for k in passing})
        valid = p.valid(valid, "s4_valid")

        # Stage 5: shift, round bits, exponent.
        normal = (s4["total"] << s4["shift"])[:28]
        mant, guard, sticky = normal[4:], normal[3], normal[:3] != 0
        result_exp = (s4["exp"] + 1 - s4["shift"])[:9]      # exponent if mant[23] is set
        nonzero = mant != 0
        s5 = p.regs("s5", packed=Cat(mant[:23], Mux(mant[23], result_exp[:8], 0)),
                    round_up=guard & (sticky | mant[0]),
                    overflow=mant[23] & (result_exp[8] | (result_exp[:8] == 0xFF)),
                    # flush to zero: a subnormal sum is exact, so "below 2**-126 after
                    # rounding" is "no hidden bit"
                    flush=Const(0) if self.subnormals else nonzero & ~mant[23],
                    sign=Mux(nonzero, s4["sign"], s4["zero_sign"]),
                    nan=s4["nan"], inf=s4["inf"], inf_sign=s4["inf_sign"])
        valid = p.valid(valid, "s5_valid")

        # Stage 6: round, pick specials (an infinity keeps its own sign).
        result = _result(sign=Mux(s5["inf"], s5["inf_sign"], s5["sign"]), nan=s5["nan"],
                         inf=s5["inf"], zero=0, packed=s5["packed"], round_up=s5["round_up"],
                         overflow=s5["overflow"], flush=s5["flush"])
        with m.If(self.en):
            m.d.sync += [self.o.eq(result), self.o_valid.eq(valid)]
        return m


class FDotTree(wiring.Component):
    """The sum of ``n`` binary32 values by a pipelined tree of :class:`FAdd`, in a fixed order.

    The pairing is that of the integer adder tree (``stages/mul.py``) and of
    ``reference_float.dot_tree``: at every level neighbours ``(0, 1), (2, 3), ...`` are
    added and an odd last value waits (``FAdd.LATENCY`` registers) for the next level.
    Every sum is rounded, so this order is part of the result: see docs/numbers.md.

    Parameters
    ----------
    n : int
        Number of values (1 or more); ``latency = ceil(log2(n)) * FAdd.LATENCY``. With
        ``n = 1`` there is no adder: the value passes unchanged (a NaN keeps its payload,
        a subnormal is not flushed), as in ``dot_tree``.
    subnormals : bool
        Passed to every :class:`FAdd`.

    Members
    -------
    i : In(ArrayLayout(32, n))
        The values, read combinationally by the first level: drive them from registers.
    i_valid, en, o, o_valid
        As for :class:`FMul` and :class:`FAdd`.
    """

    def __init__(self, n: int, *, subnormals: bool = True):
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"FDotTree: n = {n!r} is out of range: allowed an int >= 1")
        self.n, self.subnormals = n, bool(subnormals)
        #: adder levels
        self.levels = math.ceil(math.log2(n)) if n > 1 else 0
        self.latency = self.levels * FAdd.LATENCY
        super().__init__({"i": In(data.ArrayLayout(32, n)), "i_valid": In(1), "en": In(1),
                          "o": Out(32), "o_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p = _Pipeline(m, self.en)
        nodes = [self.i[k] for k in range(self.n)]
        valid = self.i_valid
        for level in range(self.levels):
            next_nodes = []
            for k in range(0, len(nodes) - 1, 2):
                add = m.submodules[f"add{level}_{k // 2}"] = FAdd(subnormals=self.subnormals)
                m.d.comb += [add.a.eq(nodes[k]), add.b.eq(nodes[k + 1]), add.en.eq(self.en)]
                next_nodes.append(add.o)
            if len(nodes) % 2:
                last = nodes[-1]
                for r in range(FAdd.LATENCY):
                    last = p.reg(last, f"wait{level}_{r}", shape=32)
                next_nodes.append(last)
            for r in range(FAdd.LATENCY):
                valid = p.valid(valid, f"valid{level}_{r}")
            nodes = next_nodes
        assert len(nodes) == 1
        m.d.comb += [self.o.eq(nodes[0]), self.o_valid.eq(valid)]
        return m


class FloatStream(wiring.Component):
    """A unit (:class:`FMul`, :class:`FAdd`, :class:`FDotTree`) behind valid/ready streams,
    for tests: the whole pipeline advances when its output register is empty or being read,
    as ``stages/mul.py`` does.

    Members
    -------
    i : In(stream.Signature(StructLayout))
        The unit's operand members (``a`` and ``b``, or ``i``) as one payload.
    o : Out(stream.Signature(32))
        The results, in order; ``latency`` cycles from operands taken to result offered.
    """

    _CONTROL = ("i_valid", "en", "o", "o_valid")

    def __init__(self, unit):
        self.unit = unit
        self.latency = unit.latency
        self._operands = [name for name in unit.signature.members if name not in self._CONTROL]
        layout = data.StructLayout({name: unit.signature.members[name].shape for name in self._operands})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        unit = m.submodules.unit = self.unit
        advance = Signal()
        m.d.comb += [
            advance.eq(~unit.o_valid | self.o.ready),
            unit.en.eq(advance),
            unit.i_valid.eq(self.i.valid),
            self.i.ready.eq(advance),
            self.o.valid.eq(unit.o_valid),
            self.o.payload.eq(unit.o),
        ]
        m.d.comb += [getattr(unit, name).eq(self.i.payload[name]) for name in self._operands]
        return m
