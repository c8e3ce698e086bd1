# amaranth: UnusedElaboratable=no
"""FMul, FAdd and FDotTree against numpy float32 (``hlsinf/reference_float.py``), bit for bit.

Results are compared as 32-bit patterns; a NaN from numpy counts as ``0x7FC00000``, the
only NaN the units return. Both subnormal modes are tested: ``subnormals=True`` against
numpy itself, ``subnormals=False`` against ``ftz_mul``/``ftz_add``.
"""

import random
import re
import shutil

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hlsinf import reference_float as rf
from hlsinf.gateware.lib.float32 import CANONICAL_NAN, FAdd, FDotTree, FloatStream, FMul
from hlsinf.sim.streams import collect, feed, run_stage

from .float_operands import SPECIALS, add_operands, dot_values, mul_operands

NAN = CANONICAL_NAN
UNITS = {"mul": FMul, "add": FAdd}
MODES = {"subnormals": True, "ftz": False}


def expected(kind: str, a, b, subnormals: bool) -> np.ndarray:
    op = rf.fmul if kind == "mul" else rf.fadd
    return rf.to_bits(op(rf.from_bits(a), rf.from_bits(b), subnormals=subnormals), canonical=True)


def simulate(unit, operands: dict) -> np.ndarray:
    """Drive ``operands`` (member name -> values) into ``unit`` back to back, one set per
    cycle with ``en`` high, in one simulation; return the results in order.

    Checks the throughput on the way: result ``k`` is in the output register exactly
    ``latency`` cycles after operand set ``k`` entered, so N sets take N + latency cycles.
    """
    columns = {name: np.asarray(values).tolist() for name, values in operands.items()}
    n = len(next(iter(columns.values())))
    latency = unit.latency
    top = Module()
    top.submodules.unit = unit
    top.domains.sync = ClockDomain()          # FDotTree(1) has no register
    results = []

    async def bench(ctx):
        ctx.set(unit.en, 1)
        for t in range(n + latency):
            if t < n:
                for name, values in columns.items():
                    ctx.set(getattr(unit, name), values[t])
            ctx.set(unit.i_valid, t < n)
            if latency == 0:
                results.append(ctx.get(unit.o))
                continue
            await ctx.tick()
            valid = ctx.get(unit.o_valid)
            # after edge t + 1 the output register holds the result of set t + 1 - latency
            assert valid == (latency - 1 <= t < n + latency - 1), f"o_valid = {valid} after edge {t + 1}"
            if valid:
                results.append(ctx.get(unit.o))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == n
    return np.array(results, np.uint32)


def check(kind, a, b, got, subnormals):
    want = expected(kind, a, b, subnormals)
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, f"{len(bad)} of {len(a)} wrong, e.g. " + ", ".join(
        f"{a[k]:#010x} {'*' if kind == 'mul' else '+'} {b[k]:#010x}: got {got[k]:#010x}, expected {want[k]:#010x}"
        for k in bad[:5])


# Hand-checked results: (a, b, IEEE result = numpy's, flush-to-zero result, what it shows).
MUL_CASES = [
    (0x3F800000, 0x3F800000, 0x3F800000, 0x3F800000, "1 * 1"),
    (0x3FC00000, 0x3FC00000, 0x40100000, 0x40100000, "1.5 * 1.5 = 2.25"),
    (0x3F800001, 0x3F800001, 0x3F800002, 0x3F800002, "(1 + 2^-23)^2 rounds the 2^-46 away"),
    (0x3F800800, 0x3F800800, 0x3F801000, 0x3F801000, "(1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: tie, even is down"),
    (0x40400000, 0x3F800001, 0x40400002, 0x40400002, "3 (1 + 2^-23) = 3 + 1.5 ulp: tie, even is up"),
    (0x7F7FFFFF, 0x40000000, 0x7F800000, 0x7F800000, "largest * 2 overflows to +inf"),
    (0xFF7FFFFF, 0x40000000, 0xFF800000, 0xFF800000, "... and to -inf"),
    (0x00800000, 0x3F000000, 0x00400000, 0x00000000, "2^-126 / 2 = 2^-127, subnormal"),
    (0x00000001, 0x3F000000, 0x00000000, 0x00000000, "2^-149 / 2: tie between 0 and 2^-149, even is 0"),
    (0x00000001, 0x3F400000, 0x00000001, 0x00000000, "0.75 * 2^-149 rounds up to 2^-149"),
    (0x00000001, 0x3FC00000, 0x00000002, 0x00000000, "1.5 * 2^-149: tie, even is 2 * 2^-149"),
    (0x00000003, 0x3F000000, 0x00000002, 0x00000000, "1.5 * 2^-149 from a subnormal"),
    (0x00800000, 0x3F7FFFFF, 0x00800000, 0x00000000,
     "2^-126 (1 - 2^-24): a subnormal tie, rounds up to 2^-126; exact at 24 bits, so tiny: flushed"),
    (0x00000001, 0x4B000000, 0x00800000, 0x00000000, "2^-149 * 2^23 = 2^-126: subnormal operand, normal result"),
    (0x00000001, 0x7F000000, 0x34800000, 0x00000000, "2^-149 * 2^127 = 2^-22"),
    (0x00400001, 0x40000000, 0x00800002, 0x00000000, "a subnormal times 2 becomes normal"),
    (0x00000001, 0x00000001, 0x00000000, 0x00000000, "two subnormals: zero"),
    (0x80000001, 0x00000001, 0x80000000, 0x80000000, "... of the sign of the product"),
    (0x80000000, 0x3F800000, 0x80000000, 0x80000000, "-0 * 1 = -0"),
    (0x7F800000, 0x00000000, NAN, NAN, "inf * 0 = NaN"),
    (0x7F800000, 0x00000001, 0x7F800000, NAN, "inf * 2^-149 = inf; flushed, inf * 0"),
    (0xFF800000, 0xBF800000, 0x7F800000, 0x7F800000, "-inf * -1 = +inf"),
    (0xFFC00001, 0x3F800000, NAN, NAN, "a NaN's payload and sign are not kept"),
    (0x7F800001, 0x00000000, NAN, NAN, "a signalling NaN gives the quiet NaN"),
]

ADD_CASES = [
    (0x3F800000, 0x33800000, 0x3F800000, 0x3F800000, "1 + 2^-24: tie, even is 1"),
    (0x3F800001, 0x33800000, 0x3F800002, 0x3F800002, "(1 + 2^-23) + 2^-24: tie, even is up"),
    (0x3F800000, 0x33800001, 0x3F800001, 0x3F800001, "just above the tie: up"),
    (0x4B800000, 0x3F800000, 0x4B800000, 0x4B800000, "2^24 + 1: tie, even is 2^24"),
    (0x3F800000, 0xBF800000, 0x00000000, 0x00000000, "1 + (-1) = +0"),
    (0xBF800000, 0x3F800000, 0x00000000, 0x00000000, "-1 + 1 = +0"),
    (0x80000000, 0x80000000, 0x80000000, 0x80000000, "-0 + -0 = -0"),
    (0x00000000, 0x80000000, 0x00000000, 0x00000000, "+0 + -0 = +0"),
    (0x3F800001, 0xBF800000, 0x34000000, 0x34000000, "cancellation down to 2^-23, exact"),
    (0x7F7FFFFF, 0x7F7FFFFF, 0x7F800000, 0x7F800000, "largest + largest overflows"),
    (0x7F7FFFFF, 0x73000000, 0x7F800000, 0x7F800000, "largest + half an ulp: tie, rounds up to inf"),
    (0x7F7FFFFF, 0x72FFFFFF, 0x7F7FFFFF, 0x7F7FFFFF, "just below the tie: stays"),
    (0x00000001, 0x00000001, 0x00000002, 0x00000000, "subnormal sums are exact"),
    (0x007FFFFF, 0x00000001, 0x00800000, 0x00000000, "largest subnormal + 2^-149 = 2^-126"),
    (0x00800000, 0x80000001, 0x007FFFFF, 0x00800000, "2^-126 - 2^-149 is subnormal; flushed, - 0"),
    (0x00800001, 0x80800000, 0x00000001, 0x00000000, "two normals, a subnormal difference"),
    (0x80800001, 0x00800000, 0x80000001, 0x80000000, "... flushed to a zero of its sign"),
    (0x7F800000, 0xFF800000, NAN, NAN, "inf - inf = NaN"),
    (0x7F800000, 0x7F800000, 0x7F800000, 0x7F800000, "inf + inf = inf"),
    (0xFF800000, 0x7F7FFFFF, 0xFF800000, 0xFF800000, "-inf + largest = -inf"),
    (0x7FC00000, 0x7F800000, NAN, NAN, "NaN + inf = NaN"),
    (0x3F800000, 0xFFC00001, NAN, NAN, "a NaN's payload and sign are not kept"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", UNITS)
def test_hand_checked_cases(kind, mode):
    subnormals = MODES[mode]
    cases = MUL_CASES if kind == "mul" else ADD_CASES
    a = np.array([c[0] for c in cases], np.uint32)
    b = np.array([c[1] for c in cases], np.uint32)
    want = np.array([c[2] if subnormals else c[3] for c in cases], np.uint32)
    # the reference agrees with the table (numpy itself with subnormals) ...
    assert list(expected(kind, a, b, subnormals)) == list(want)
    # ... and so does the unit, with both operand orders
    got = simulate(UNITS[kind](subnormals=subnormals), {"a": np.concatenate([a, b]), "b": np.concatenate([b, a])})
    for (x, y, *_, what), g1, g2, w in zip(cases, got[:len(a)], got[len(a):], want):
        assert g1 == w and g2 == w, f"{x:#010x}, {y:#010x} ({what}): got {g1:#010x} / {g2:#010x}, expected {w:#010x}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", UNITS)
def test_special_value_pairs(kind, mode):
    """Every pair of zeros, subnormals, extreme normals, infinities and NaNs."""
    pairs = np.array([(x, y) for x in SPECIALS for y in SPECIALS], np.uint32)
    got = simulate(UNITS[kind](subnormals=MODES[mode]), {"a": pairs[:, 0], "b": pairs[:, 1]})
    check(kind, pairs[:, 0], pairs[:, 1], got, MODES[mode])
    assert set(got[np.isnan(rf.from_bits(got))]) <= {NAN}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", UNITS)
def test_random_back_to_back(kind, mode):
    """20,000 operations (10,000 flushing to zero) of every kind (float_operands.py) in one
    simulation, one per cycle."""
    rng = np.random.default_rng(sorted(UNITS).index(kind) * 2 + MODES[mode])
    a, b = (mul_operands if kind == "mul" else add_operands)(rng, 20_000 if MODES[mode] else 10_000)
    got = simulate(UNITS[kind](subnormals=MODES[mode]), {"a": a, "b": b})
    check(kind, a, b, got, MODES[mode])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", UNITS)
def test_million_random(kind, mode):
    """1,000,000 operations per unit and mode (10 simulations of 100,000)."""
    rng = np.random.default_rng(1000 + sorted(UNITS).index(kind) * 2 + MODES[mode])
    for _ in range(10):
        a, b = (mul_operands if kind == "mul" else add_operands)(rng, 100_000)
        got = simulate(UNITS[kind](subnormals=MODES[mode]), {"a": a, "b": b})
        check(kind, a, b, got, MODES[mode])


@pytest.mark.parametrize("kind", UNITS)
def test_stream_with_stalls(kind):
    """Behind FloatStream, with valid and ready dropped at random 30 % of the cycles: every
    register holds while ``en`` is low, results come out in order (protocol monitored)."""
    rng = np.random.default_rng(7)
    a, b = (mul_operands if kind == "mul" else add_operands)(rng, 1500)
    dut = FloatStream(UNITS[kind]())
    out = {}

    async def source(ctx):
        await feed(ctx, dut.i, [{"a": int(x), "b": int(y)} for x, y in zip(a, b)], stall=0.3, rng=random.Random(1))

    async def sink(ctx):
        out["items"], _ = await collect(ctx, dut.o, len(a), stall=0.3, rng=random.Random(2))

    run_stage(dut, [source, sink])
    check(kind, a, b, np.array(out["items"], np.uint32), True)


@pytest.mark.parametrize("kind", UNITS)
def test_stream_throughput(kind):
    """Unstalled, FloatStream takes operands every cycle: N in N + latency cycles."""
    rng = np.random.default_rng(8)
    a, b = (mul_operands if kind == "mul" else add_operands)(rng, 300)
    dut = FloatStream(UNITS[kind]())
    out = {}

    async def source(ctx):
        await feed(ctx, dut.i, [{"a": int(x), "b": int(y)} for x, y in zip(a, b)])

    async def sink(ctx):
        out["items"], out["cycles"] = await collect(ctx, dut.o, len(a))

    run_stage(dut, [source, sink])
    check(kind, a, b, np.array(out["items"], np.uint32), True)
    assert out["cycles"] == len(a) + dut.latency


def test_latencies():
    assert FMul().latency == FMul.LATENCY == 6 and FMul(subnormals=False).latency == FMul.LATENCY_FTZ == 5
    assert FAdd().latency == FAdd(subnormals=False).latency == FAdd.LATENCY == 6
    assert [FDotTree(n).latency for n in (1, 2, 3, 4, 9, 18, 36, 72)] == [0, 6, 12, 12, 24, 30, 36, 42]


def rtlil_cells(elaboratable) -> list:
    """The cell types in the RTLIL Amaranth writes for ``elaboratable``, with repeats."""
    return re.findall(r"^\s*cell (\S+) ", rtlil.convert(elaboratable), re.MULTILINE)


@pytest.mark.parametrize("mode", MODES)
def test_rtlil_multipliers(mode):
    """The mantissa product is the multiplier's only two ``$mul`` cells (what Yosys maps to
    DSP48E2), 24 x 17 and 24 x 7 bits; the adder and the adder tree have none."""
    text = rtlil.convert(FMul(subnormals=MODES[mode]))
    cells = re.findall(r"^\s*cell \$mul \S+\n(.*?)^\s*end$", text, re.MULTILINE | re.DOTALL)
    widths = [tuple(int(re.search(rf"parameter \\{port}_WIDTH (\d+)", cell).group(1)) for port in "AB")
              for cell in cells]
    assert rtlil_cells(FMul(subnormals=MODES[mode])).count("$mul") == 2
    assert sorted(widths) == [(24, 7), (24, 17)], widths
    assert "$mul" not in rtlil_cells(FAdd(subnormals=MODES[mode]))
    assert "$mul" not in rtlil_cells(FDotTree(9, subnormals=MODES[mode]))
    assert "$add" in rtlil_cells(FAdd(subnormals=MODES[mode]))


# FDotTree ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n,mode", [(n, mode) for n in (1, 2, 3, 5, 9, 18) for mode in MODES] + [(36, "subnormals")])
def test_dot_tree(n, mode):
    """Sums of n values in the documented pairing order, bit for bit with ``dot_tree``."""
    rng = np.random.default_rng(n)
    count = {9: 600, 18: 300, 36: 150}.get(n, 1000)
    values = dot_values(rng, (count, n))
    got = simulate(FDotTree(n, subnormals=MODES[mode]), {"i": values})
    want = rf.to_bits(rf.dot_tree(rf.from_bits(values), subnormals=MODES[mode]), canonical=True)
    if n == 1:      # no adder: the value passes unchanged, a NaN with its payload
        got = rf.to_bits(rf.from_bits(got), canonical=True)
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, f"{len(bad)} of {count} wrong, first: {[hex(v) for v in values[bad[0]]]} " \
                          f"got {got[bad[0]]:#x}, expected {want[bad[0]]:#x}"


def test_dot_tree_stream_with_stalls():
    rng = np.random.default_rng(5)
    values = dot_values(rng, (300, 9))
    dut = FloatStream(FDotTree(9))
    out = {}

    async def source(ctx):
        await feed(ctx, dut.i, [{"i": [int(v) for v in row]} for row in values], stall=0.3, rng=random.Random(3))

    async def sink(ctx):
        out["items"], _ = await collect(ctx, dut.o, len(values), stall=0.3, rng=random.Random(4))

    run_stage(dut, [source, sink])
    assert out["items"] == list(rf.to_bits(rf.dot_tree(rf.from_bits(values)), canonical=True))


class ProductLane(wiring.Component):
    """One output lane of a fp32 ``mul`` stage: CPI x 9 FMul, their products into FDotTree."""

    def __init__(self, cpi: int):
        self.cpi = cpi
        self.latency = FMul.LATENCY + FDotTree(cpi * 9).latency
        lanes = data.ArrayLayout(32, cpi * 9)
        super().__init__({"x": In(lanes), "w": In(lanes), "i_valid": In(1), "en": In(1),
                          "o": Out(32), "o_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        tree = m.submodules.tree = FDotTree(self.cpi * 9)
        for k in range(self.cpi * 9):
            mul = m.submodules[f"mul{k}"] = FMul()
            m.d.comb += [mul.a.eq(self.x[k]), mul.b.eq(self.w[k]), mul.en.eq(self.en), tree.i[k].eq(mul.o)]
        m.d.comb += [tree.en.eq(self.en), self.o.eq(tree.o)]
        valid = self.i_valid
        for r in range(self.latency):
            nxt = Signal(name=f"valid{r}")
            with m.If(self.en):
                m.d.sync += nxt.eq(valid)
            valid = nxt
        m.d.comb += self.o_valid.eq(valid)
        return m


def test_products_into_the_tree_match_mul_partial():
    """FMul products of a CPI = 2 window fed to FDotTree(18): ``reference_float.mul_partial``."""
    rng = np.random.default_rng(11)
    cpi, count = 2, 100
    window = rf.from_bits(dot_values(rng, (count, cpi, 9)))
    weights = rf.from_bits(dot_values(rng, (1, cpi, 9)))
    x = rf.to_bits(window).reshape(count, cpi * 9)
    w = np.broadcast_to(rf.to_bits(weights).reshape(1, cpi * 9), x.shape)
    got = simulate(ProductLane(cpi), {"x": x, "w": w})
    want = rf.to_bits(rf.mul_partial(window, weights)[:, 0], canonical=True)
    assert list(got) == list(want)


# Yosys ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None, reason="Yosys with synth_xilinx not installed")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", UNITS)
def test_yosys_mapping(kind, mode):
    """Yosys synth_xilinx: two DSP48E2 for the product, none for the adder, and at most 6 LUT
    levels between registers (the 300 MHz rule of thumb of hlsinf/build/resources.py)."""
    from hlsinf.build.resources import component_report
    report = component_report(UNITS[kind](subnormals=MODES[mode]), top=f"f{kind}")
    assert report.counts["DSP48E2"] == (2 if kind == "mul" else 0)
    assert report.depth["lut_levels"] <= 6
