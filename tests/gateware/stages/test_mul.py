"""Stage ``mul`` in Amaranth's simulator against ``reference.mul_partial``.

Several frames with different weight sets run back to back in one simulation, with random
stalls on the window, weight and output streams; every partial sum must equal the
reference exactly, with two products per multiplier (``pack_dsp``) and without. The packed
multiply itself is checked exhaustively against plain integer products.
"""

import gc
import math
import random
import re
import warnings

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Const, Elaboratable, Module, Signal, UnusedElaboratable, signed, unsigned
from amaranth.sim import Simulator

from hlsinf.config import KernelConfig
from hlsinf import reference as ref
from hlsinf.gateware.stages.mul import Mul, multiply, product_registers

from hlsinf.sim.streams import collect, feed, run_stage


def small_config(cpi, cpo, act_signed, **widths):
    return KernelConfig(cpi=cpi, cpo=cpo, act_signed=act_signed, wmax=4, hmax=2, imax=64, **widths)


def random_values(rng, lo, hi, shape, extreme_share=0.3):
    """Uniform values with ``extreme_share`` of them forced to ``lo`` or ``hi``."""
    values = rng.integers(lo, hi + 1, shape)
    extreme = rng.random(shape) < extreme_share
    return np.where(extreme, rng.choice([lo, hi], shape), values)


def make_frames(cfg, frame_pixels, frames, rng):
    """``frames`` frames of windows and their weight sets; the first two are all-extreme."""
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    windows = random_values(rng, amin, amax, (frames, frame_pixels, cfg.cpi, 9))
    weights = random_values(rng, wmin, wmax, (frames, cfg.cpo, cfg.cpi, 9))
    # Largest-magnitude products of both signs.
    windows[0], weights[0] = amax, wmin
    if frames > 1:
        windows[1] = amin if cfg.act_signed else amax
        weights[1] = wmin if cfg.act_signed else wmax
    return windows, weights


def expected_partials(windows, weights):
    return np.stack([ref.mul_partial(windows[f], weights[f]) for f in range(len(weights))])


def simulate(cfg, windows, weights, *, stall, seed=0, levels_per_register=2, pack_dsp=True):
    """Run the stage; returns (partials as frames x pixels x CPO, cycles of the collector)."""
    frames, frame_pixels = windows.shape[:2]
    dut = Mul(cfg, levels_per_register=levels_per_register, pack_dsp=pack_dsp)
    result = {}

    async def params(ctx):
        ctx.set(dut.params.frame_pixels, frame_pixels)

    async def windows_in(ctx):
        items = [windows[f, p].tolist() for f in range(frames) for p in range(frame_pixels)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed + 1))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [w.tolist() for w in weights], stall=stall, rng=random.Random(seed + 2))

    async def partials_out(ctx):
        items, cycles = await collect(ctx, dut.o, frames * frame_pixels, stall=stall,
                                      rng=random.Random(seed + 3), convert=lambda v: [int(x) for x in v])
        result["items"], result["cycles"] = items, cycles

    run_stage(dut, [params, windows_in, weights_in, partials_out])
    got = np.array(result["items"], np.int64).reshape(frames, frame_pixels, cfg.cpo)
    return got, result["cycles"], dut


@pytest.mark.parametrize("pack_dsp", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("cpi,cpo,act_signed,frame_pixels,levels", [
    (1, 1, False, 1, 2),
    (1, 4, True, 2, 2),
    (2, 2, False, 3, 1),
    (4, 2, True, 1, 2),
    (2, 4, False, 5, 2),
    (4, 4, True, 2, 2),
    (4, 4, False, 3, 1),
])
def test_frames_back_to_back_with_stalls(cpi, cpo, act_signed, frame_pixels, levels, pack_dsp):
    cfg = small_config(cpi, cpo, act_signed)
    rng = np.random.default_rng(cpi * 100 + cpo * 10 + frame_pixels)
    windows, weights = make_frames(cfg, frame_pixels, frames=10, rng=rng)
    got, _, dut = simulate(cfg, windows, weights, stall=0.3, seed=frame_pixels, levels_per_register=levels,
                           pack_dsp=pack_dsp)
    assert dut.packs_dsp == (pack_dsp and cpo >= 2)
    np.testing.assert_array_equal(got, expected_partials(windows, weights))


@pytest.mark.parametrize("act_bits,weight_bits,act_signed", [(16, 8, False), (8, 16, True)])
def test_wide_operands_keep_one_product_per_multiplier(act_bits, weight_bits, act_signed):
    """Packing is for 8-bit operands only; other widths run unpacked, exactly."""
    cfg = small_config(2, 2, act_signed, act_bits=act_bits, weight_bits=weight_bits, acc_bits=40)
    rng = np.random.default_rng(act_bits + weight_bits)
    windows, weights = make_frames(cfg, 2, frames=4, rng=rng)
    got, _, dut = simulate(cfg, windows, weights, stall=0.3, seed=5)
    assert not dut.packs_dsp
    np.testing.assert_array_equal(got, expected_partials(windows, weights))


@pytest.mark.parametrize("pack_dsp", [True, False], ids=["packed", "unpacked"])
def test_extremes_reach_partial_bits(pack_dsp):
    """All-extreme frames give the largest sums the output lanes must hold, exactly."""
    for act_signed in (False, True):
        cfg = small_config(4, 2, act_signed)
        rng = np.random.default_rng(7)
        windows, weights = make_frames(cfg, 2, frames=2, rng=rng)
        want = expected_partials(windows, weights)
        lo, hi = -(1 << (cfg.partial_bits - 1)), (1 << (cfg.partial_bits - 1)) - 1
        assert want.min() >= lo and want.max() <= hi
        assert max(-want.min(), want.max()) > hi // 2, "extremes should need the top bit"
        got, _, _ = simulate(cfg, windows, weights, stall=0.3, seed=3, pack_dsp=pack_dsp)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("pack_dsp", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("cpi,cpo,levels", [(1, 2, 2), (2, 2, 1), (4, 1, 2), (2, 4, 2)])
def test_one_window_per_cycle(cpi, cpo, levels, pack_dsp):
    """Without stalls N windows in several frames come out N + latency cycles after the start."""
    cfg = small_config(cpi, cpo, False)
    rng = np.random.default_rng(11)
    windows, weights = make_frames(cfg, 3, frames=8, rng=rng)
    got, cycles, dut = simulate(cfg, windows, weights, stall=0.0, levels_per_register=levels, pack_dsp=pack_dsp)
    np.testing.assert_array_equal(got, expected_partials(windows, weights))
    # operand registers + product registers (M, and P when packed) + adder-tree registers
    tree_registers = math.ceil(math.ceil(math.log2(cpi * 9)) / levels)
    assert dut.latency == 1 + (2 if dut.packs_dsp else 1) + tree_registers
    assert dut.packs_dsp == (pack_dsp and cpo >= 2)
    # Window k is taken at the end of cycle k (1-based) and offered `latency` cycles later.
    assert cycles == windows.shape[0] * windows.shape[1] + dut.latency


def multipliers(dut):
    """``(A_WIDTH, B_WIDTH, signed)`` of every ``$mul`` cell in the design's RTLIL."""
    text = rtlil.convert(dut)
    cells = re.findall(r"cell \$mul .*?\n\s*end", text, re.S)
    def param(cell, name):
        return int(re.search(rf"parameter \\{name} (\d+)", cell).group(1))
    return [(param(c, "A_WIDTH"), param(c, "B_WIDTH"), bool(param(c, "A_SIGNED") and param(c, "B_SIGNED")))
            for c in cells]


@pytest.mark.parametrize("cpi,cpo,act_signed", [(2, 4, False), (1, 2, True), (2, 1, False), (1, 8, True)])
def test_one_multiplier_per_pair_of_products(cpi, cpo, act_signed):
    """Packed: CPI x 9 x ceil(CPO/2) multipliers, each fitting a DSP48E2's signed 18 x 27
    multiplier (the 8-bit activation, sign- or zero-extended, times the 27-bit pair);
    unpacked: one per product."""
    cfg = small_config(cpi, cpo, act_signed)
    packed = multipliers(Mul(cfg))
    assert len(packed) == cpi * 9 * math.ceil(cpo / 2)
    for a_width, b_width, both_signed in packed:
        narrow, wide = sorted([a_width, b_width])
        assert both_signed and narrow <= 18 and wide <= 27, (a_width, b_width)
    assert len(multipliers(Mul(cfg, pack_dsp=False))) == cpi * 9 * cpo


def test_packing_needs_pairs():
    with pytest.raises(ValueError, match="3 weights cannot be packed in pairs: allowed an even number"):
        multiply(Signal(8), [Signal(signed(8)) for _ in range(3)], lambda value, name: value, pack=True)


def test_rejects_bad_levels_per_register():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # the half-built instance
        with pytest.raises(ValueError, match="levels_per_register = 3 is out of range: 1 or 2"):
            Mul(small_config(1, 1, False), levels_per_register=3)
        gc.collect()


def test_calls_with_different_frame_sizes_back_to_back():
    """The window counter is back at its start after every frame, so a call with another
    ``frame_pixels`` follows on the next cycle with no reset."""
    cfg = small_config(2, 2, True)
    rng = np.random.default_rng(31)
    calls = [make_frames(cfg, fp, frames, rng) for fp, frames in [(3, 2), (1, 3), (4, 2), (2, 2)]]
    dut = Mul(cfg)
    result = {}

    async def windows_in(ctx):
        for windows, _ in calls:
            ctx.set(dut.params.frame_pixels, windows.shape[1])
            await feed(ctx, dut.i, [w.tolist() for w in windows.reshape(-1, cfg.cpi, 9)],
                       stall=0.3, rng=random.Random(windows.shape[1]))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [w.tolist() for _, weights in calls for w in weights],
                   stall=0.3, rng=random.Random(2))

    async def partials_out(ctx):
        count = sum(w.shape[0] * w.shape[1] for w, _ in calls)
        result["items"], _ = await collect(ctx, dut.o, count, stall=0.3, rng=random.Random(3),
                                           convert=lambda v: [int(x) for x in v])

    run_stage(dut, [windows_in, weights_in, partials_out], deadline_cycles=20_000)
    want = np.concatenate([expected_partials(w, k).reshape(-1, cfg.cpo) for w, k in calls])
    np.testing.assert_array_equal(np.array(result["items"], np.int64), want)


# The packed multiply on its own: all 256 x 256 (activation, weight) pairs, the weight in
# the low and in the high field, its partner at the extremes and around zero.

PARTNERS = [-128, -1, 0, 1, 127]
LANES = 16


class PackedPairs(Elaboratable):
    """``LANES`` activations, each multiplied by the weight ``w`` paired with every partner in
    ``PARTNERS``, ``w`` first (low field) and second (high field); ``products`` is all of them."""

    def __init__(self, act_shape):
        self.activations = [Signal(act_shape, name=f"a{lane}") for lane in range(LANES)]
        self.weight = Signal(signed(8))
        self.weights = ([w for p in PARTNERS for w in (self.weight, Const(p, signed(8)))]
                        + [w for p in PARTNERS for w in (Const(p, signed(8)), self.weight)])
        self.products = Signal(16 * LANES * len(self.weights))

    def elaborate(self, platform):
        m = Module()

        def register(value, name):
            reg = Signal(value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        products = []
        for activation in self.activations:
            products += multiply(activation, self.weights, register, pack=True)
        assert all(p.shape() == signed(16) for p in products)
        m.d.comb += self.products.eq(Cat(*products))
        return m


@pytest.mark.parametrize("act_signed", [False, True], ids=["uint8", "int8"])
def test_packed_multiply_exhaustive(act_signed):
    lo = -128 if act_signed else 0
    dut = PackedPairs(signed(8) if act_signed else unsigned(8))
    n = len(dut.weights)
    weight_values = np.arange(-128, 128)
    got = {}

    async def bench(ctx):
        for base in range(lo, lo + 256, LANES):
            for lane, activation in enumerate(dut.activations):
                ctx.set(activation, base + lane)
            # After the tick that takes weight k, the output registers hold the products
            # of weight k - (registers - 1).
            delay = product_registers(True) - 1
            for k, w in enumerate(weight_values.tolist() + [0] * delay):
                ctx.set(dut.weight, w)
                await ctx.tick()
                if k >= delay:
                    got[base, int(weight_values[k - delay])] = ctx.get(dut.products)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    checked = 0
    for (base, w), bits in got.items():
        fields = [(bits >> (16 * k)) & 0xFFFF for k in range(LANES * n)]
        values = np.array([f - (1 << 16) if f >> 15 else f for f in fields]).reshape(LANES, n)
        activations = np.arange(base, base + LANES)[:, None]
        weights = np.array([w if isinstance(x, Signal) else x.value for x in dut.weights])[None, :]
        np.testing.assert_array_equal(values, activations * weights, err_msg=f"weight {w}")
        checked += values.size
    assert checked == 256 * 256 * n


# The triple-packed 4-bit multiply: every activation with every (w0, w1, w2) triple of int4
# weights, plus every pair (two weights left over) and every single weight (the fabric
# product), against numpy.

class Packed4(Elaboratable):
    """All 16 activations at once, each times ``TRIPLES`` weight triples (set per cycle), one
    pair and one single: the three shapes a 4-bit weight list is cut into."""

    TRIPLES = 16

    def __init__(self, act_shape):
        self.activations = [Signal(act_shape, name=f"a{v}") for v in range(16)]
        self.triples = [[Signal(signed(4), name=f"t{t}_{j}") for j in range(3)] for t in range(self.TRIPLES)]
        self.pair = [Signal(signed(4), name=f"p{j}") for j in range(2)]
        self.single = Signal(signed(4))
        self.products = []

    def elaborate(self, platform):
        m = Module()

        def register(value, name):
            reg = Signal(value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        for a in self.activations:
            row = []
            for triple in self.triples:
                row += multiply(a, triple, register, pack=3)
            row += multiply(a, self.pair, register, pack=3)
            row += multiply(a, [self.single], register, pack=3)
            self.products.append(row)
        return m


@pytest.mark.parametrize("act_signed", [False, True], ids=["uint4", "int4"])
def test_triple_packed_multiply_exhaustive(act_signed):
    """16 x 16**3 triples (every 4-bit activation, every int4 w0, w1, w2), 16 x 16**2 pairs
    and 16 x 16 single products, each equal to numpy's product."""
    dut = Packed4(signed(4) if act_signed else unsigned(4))
    acts = np.arange(-8, 8) if act_signed else np.arange(16)
    triples = np.array(np.meshgrid(*[np.arange(-8, 8)] * 3, indexing="ij")).reshape(3, -1).T   # 4096 x 3
    steps = len(triples) // dut.TRIPLES
    assert steps >= 256
    # After the tick that takes step k's weights, the outputs hold step k - (registers - 1).
    delay = product_registers(3) - 1
    results = []

    async def bench(ctx):
        for v, a in zip(acts, dut.activations):
            ctx.set(a, int(v))
        for step in range(steps + delay):
            if step < steps:
                for t, triple in enumerate(dut.triples):
                    for j in range(3):
                        ctx.set(triple[j], int(triples[step * dut.TRIPLES + t, j]))
                pair = divmod(step, 16)
                ctx.set(dut.pair[0], pair[0] - 8)
                ctx.set(dut.pair[1], pair[1] - 8)
                ctx.set(dut.single, step % 16 - 8)
            await ctx.tick()
            if step >= delay:
                results.append(np.array([[ctx.get(p) for p in row] for row in dut.products]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    n = 3 * dut.TRIPLES
    for step, got in enumerate(results):
        w = triples[step * dut.TRIPLES: (step + 1) * dut.TRIPLES].reshape(-1)
        pair = np.array(divmod(step, 16)) - 8
        single = step % 16 - 8
        want = acts[:, None] * np.concatenate([w, pair, [single]])[None, :]
        np.testing.assert_array_equal(got, want, err_msg=f"step {step}")
        assert got.shape[1] == n + 3
    assert len(results) * dut.TRIPLES == 16 ** 3


def test_4bit_multipliers_take_three_products():
    """4x4 int4: CPI x 9 multipliers for CPO = 4 (a triple each, the fourth product in the
    fabric), each fitting a DSP48E2 (27-bit packed weights, 5-bit activation)."""
    for cpo, per_tap in [(4, 1), (8, 3), (2, 1)]:
        cfg = KernelConfig.from_format("uint4", cpi=2, cpo=cpo, wmax=4, hmax=2, imax=64)
        dut = Mul(cfg)
        assert dut.products_per_multiplier == 3
        found = multipliers(dut)
        assert len(found) == 2 * 9 * per_tap, (cpo, found)
        for a_width, b_width, both_signed in found:
            narrow, wide = sorted([a_width, b_width])
            assert both_signed and narrow <= 18 and wide <= 27, (a_width, b_width)


@pytest.mark.parametrize("fmt,cpi,cpo,frame_pixels", [("int4", 2, 4, 3), ("uint4", 4, 4, 2), ("uint4", 2, 8, 1),
                                                      ("int4", 2, 2, 4)])
def test_4bit_frames_with_stalls_and_throughput(fmt, cpi, cpo, frame_pixels):
    """4-bit lanes (three products per multiplier) against reference.mul_partial under random
    stalls, then N windows in N + latency cycles without stalls."""
    cfg = KernelConfig.from_format(fmt, cpi=cpi, cpo=cpo, wmax=4, hmax=2, imax=64)
    rng = np.random.default_rng(cpi * 10 + cpo + frame_pixels)
    windows, weights = make_frames(cfg, frame_pixels, frames=8, rng=rng)
    got, _, dut = simulate(cfg, windows, weights, stall=0.3, seed=frame_pixels)
    assert dut.products_per_multiplier == 3
    np.testing.assert_array_equal(got, expected_partials(windows, weights))
    got, cycles, dut = simulate(cfg, windows, weights, stall=0.0)
    np.testing.assert_array_equal(got, expected_partials(windows, weights))
    assert cycles == windows.shape[0] * windows.shape[1] + dut.latency
