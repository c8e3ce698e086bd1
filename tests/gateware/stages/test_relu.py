"""Stage ``relu`` (requantise) in simulation against ``reference.requantize``, bit for bit."""

import random
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.relu import Relu

from hlsinf.sim.streams import collect, feed, run_stage


def clip_bounds(cfg, clip_lo, clip_hi, relu):
    """The bounds the reference applies: ReLU raises the lower one to 0."""
    return (max(clip_lo, 0) if relu else clip_lo), clip_hi


def random_accumulators(rng, cfg, n, shift, mult):
    """Accumulators that land around the activation range after requantising, plus halfway
    cases (round half up) and a share of values anywhere in the accumulator range (saturation)."""
    amin, amax = cfg.acc_range
    lo, hi = cfg.act_range
    m = np.maximum(np.asarray(mult, np.int64), 1)
    target = rng.integers(lo - 40, hi + 41, (n, cfg.cpo))
    near = (target << shift) // m + rng.integers(-3, 4, (n, cfg.cpo))
    halfway = ((target << shift) + ((1 << shift) >> 1)) // m
    anywhere = rng.integers(amin, amax + 1, (n, cfg.cpo), dtype=np.int64)
    pick = rng.integers(0, 4, (n, cfg.cpo))
    acc = np.select([pick == 0, pick == 1, pick == 2], [near, halfway, anywhere], near + 1)
    acc[rng.random((n, cfg.cpo)) < 0.05] = amin
    acc[rng.random((n, cfg.cpo)) < 0.05] = amax
    return np.clip(acc, amin, amax)


def random_call(rng, cfg, frames, frame_pixels, *, shift=None, extreme_mult=False):
    """One call: params, per-frame accumulators and multipliers, expected activations."""
    amin, amax = cfg.act_range
    shift = int(rng.integers(0, cfg.max_shift + 1)) if shift is None else shift
    use_mult = bool(cfg.with_multiplier and rng.integers(0, 2))
    if rng.random() < 0.4:
        clip_lo, clip_hi = amin, amax
    else:
        clip_lo, clip_hi = sorted(int(v) for v in rng.integers(amin, amax + 1, 2))
    relu = bool(rng.integers(0, 2))
    if relu and clip_hi < 0:
        clip_hi = 0
    mmax = (1 << cfg.mult_bits) - 1
    data, mults, expected = [], [], []
    lo, hi = clip_bounds(cfg, clip_lo, clip_hi, relu)
    for _ in range(frames):
        if extreme_mult:
            mult = np.full(cfg.cpo, mmax, np.int64)
        else:
            mult = rng.integers(0, mmax + 1, cfg.cpo)
            mult[rng.random(cfg.cpo) < 0.2] = mmax
        m_eff = mult if use_mult else np.ones(cfg.cpo, np.int64)
        acc = random_accumulators(rng, cfg, frame_pixels, shift, m_eff)
        data.append(acc)
        mults.append(mult)
        expected.append(ref.requantize(acc, m_eff, shift, lo, hi, ref.Modes.of(cfg)))
    params = dict(frame_pixels=frame_pixels, shift=shift, clip_lo=clip_lo, clip_hi=clip_hi,
                  relu=int(relu), use_mult=int(use_mult))
    return params, data, mults, expected


def run_calls(cfg, calls, *, stall, seed=0, dut=None):
    """Run calls back to back in one simulation (on ``dut``, a ``Relu(cfg)`` by default);
    return (outputs per call, cycles per call).

    Each call's parameters are set once the previous call's outputs are all out.
    """
    dut = dut or Relu(cfg)
    assert hasattr(dut, "mult") == cfg.with_multiplier
    done = []
    results = []

    async def acc_feeder(ctx):
        rng = random.Random(seed)
        for k, (params, data, _, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            items = [[int(v) for v in px] for frame in data for px in frame]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    async def mult_feeder(ctx):
        rng = random.Random(seed + 1)
        items = [[int(v) for v in mult] for params, _, mults, _ in calls if params["use_mult"] for mult in mults]
        await feed(ctx, dut.mult, items, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 2)
        for params, data, _, _ in calls:
            count = sum(len(frame) for frame in data)
            items, cycles = await collect(ctx, dut.o, count, stall=stall, rng=rng,
                                          convert=lambda p: [p[k] for k in range(cfg.cpo)])
            results.append((items, cycles))
            done.append(True)

    benches = [acc_feeder, collector]
    if cfg.with_multiplier:
        benches.append(mult_feeder)
    run_stage(dut, benches)
    return results


def check(cfg, calls, results):
    for (params, _, _, expected), (items, _) in zip(calls, results):
        want = np.concatenate(expected).tolist()
        assert len(items) == len(want)
        for n, (got, exp) in enumerate(zip(items, want)):
            assert got == exp, f"pixel {n} of call {params}: got {got}, expected {exp}"


CONFIGS = {
    "uint8": KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8),
    "int8": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8),
    "int8_trunc": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, rounding="trunc"),
    "uint8_wrap": KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, overflow="wrap"),
    "fixed_trunc_wrap": KernelConfig.from_format("fixed<8,4>", cpi=2, cpo=2, imax=16, wmax=8, hmax=8,
                                                 rounding="trunc", overflow="wrap"),
    "int4": KernelConfig.from_format("int4", cpi=2, cpo=2, imax=16, wmax=8, hmax=8),
    "uint4_trunc_wrap": KernelConfig.from_format("uint4", cpi=2, cpo=2, imax=16, wmax=8, hmax=8, rounding="trunc",
                                                 overflow="wrap"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_random_calls_with_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(list(CONFIGS).index(name))
    calls = [random_call(rng, cfg, frames=3, frame_pixels=int(rng.integers(1, 9))) for _ in range(6)]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3))


@pytest.mark.parametrize("name", CONFIGS)
def test_saturation_extremes(name):
    """acc at the accumulator limits, M = 2**mult_bits - 1, shift 0 and max_shift."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(7)
    amin, amax = cfg.acc_range
    calls = []
    for shift in (0, 1, cfg.max_shift - 1, cfg.max_shift):
        params, data, mults, _ = random_call(rng, cfg, frames=2, frame_pixels=4, shift=shift, extreme_mult=True)
        params.update(use_mult=1, relu=0, clip_lo=cfg.act_range[0], clip_hi=cfg.act_range[1])
        data = [np.array([[amin, amax], [amax, amin], [amin + 1, amax - 1], [-1, 1]], np.int64)[:, :cfg.cpo]
                for _ in data]
        expected = [ref.requantize(acc, mult, shift, *cfg.act_range, ref.Modes.of(cfg)) for acc, mult in zip(data, mults)]
        calls.append((params, data, mults, expected))
    # The unclipped values really do span past the activation range at both ends.
    raw = ref.requantize(calls[0][1][0], calls[0][2][0], 0, -(1 << 80), 1 << 80, ref.Modes(cfg.rounding))
    assert raw.min() < cfg.act_range[0] and raw.max() > cfg.act_range[1]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=3))


def test_wide_accumulator_and_multiplier():
    """acc_bits = 48, mult_bits = 24, max_shift = 47: the widest datapath the config allows."""
    cfg = KernelConfig(cpi=2, cpo=2, act_signed=True, acc_bits=48, mult_bits=24, max_shift=47,
                       imax=16, wmax=8, hmax=8)
    rng = np.random.default_rng(11)
    calls = [random_call(rng, cfg, frames=2, frame_pixels=5, shift=s) for s in (0, 23, 46, 47)]
    calls.append(random_call(rng, cfg, frames=2, frame_pixels=3, shift=47, extreme_mult=True))
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=5))


@pytest.mark.parametrize("name", CONFIGS)
def test_rounding_and_saturation_boundaries(name):
    """Results just inside and outside the clip bounds and the saturation range
    (+-2**act_bits), each with the exact halves around it, at several shifts: the rounding
    and saturation steps against the reference where they could disagree."""
    cfg = CONFIGS[name]
    lo, hi = cfg.act_range
    edge = 1 << cfg.act_bits
    targets = sorted({t + d for t in (-2 * edge, -edge, lo, 0, hi, edge, 2 * edge) for d in range(-3, 4)})
    calls = []
    for shift in (0, 1, 2, 7, 8, 9, 17, cfg.max_shift):
        half = (1 << shift) >> 1
        values = [(t << shift) + d for t in targets
                  for d in sorted({-half - 1, -half, -half + 1, -1, 0, 1, half - 1, half, half + 1})]
        acc = np.clip(np.array(values, np.int64), *cfg.acc_range)
        acc = acc[: len(acc) // cfg.cpo * cfg.cpo].reshape(-1, cfg.cpo)
        params = {"frame_pixels": len(acc), "shift": shift, "clip_lo": lo, "clip_hi": hi, "relu": 0, "use_mult": 0}
        calls.append((params, [acc], [np.ones(cfg.cpo, np.int64)],
                      [ref.requantize(acc, 1, shift, lo, hi, ref.Modes.of(cfg))]))
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=17))


def test_modes_differ_from_the_default():
    """The trunc and wrap references really give other values on the same accumulators
    (so the tests above could catch a stage that ignores its mode)."""
    acc = np.array([5, -5, 300, -300, 1000], np.int64)
    base = ref.requantize(acc, 1, 1, -128, 127)
    for name in ("int8_trunc", "fixed_trunc_wrap"):
        assert (ref.requantize(acc, 1, 1, -128, 127, ref.Modes.of(CONFIGS[name])) != base).any()
    assert (ref.requantize(acc, 1, 1, 0, 255, ref.Modes.of(CONFIGS["uint8_wrap"]))
            != ref.requantize(acc, 1, 1, 0, 255)).any()


def test_without_multiplier():
    """A kernel built without the multiplier has no ``mult`` port and requantises with M = 1."""
    cfg = KernelConfig(cpi=2, cpo=4, with_multiplier=False, imax=16, wmax=8, hmax=8)
    rng = np.random.default_rng(13)
    calls = [random_call(rng, cfg, frames=2, frame_pixels=int(rng.integers(1, 6))) for _ in range(4)]
    assert not any(params["use_mult"] for params, *_ in calls)
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=9))


def test_relu_bit_applies_on_its_own():
    """relu=1 with a negative clip_lo clips at 0 even though the kernel would pass lo = 0."""
    cfg = CONFIGS["int8"]
    acc = np.array([[-100, 50], [-1, 0], [7, -7]], np.int64)
    params = dict(frame_pixels=3, shift=0, clip_lo=-128, clip_hi=127, relu=1, use_mult=0)
    expected = [ref.requantize(acc, 1, 0, 0, 127)]
    assert expected[0].min() == 0
    calls = [(params, [acc], [np.ones(2, np.int64)], expected)]
    check(cfg, calls, run_calls(cfg, calls, stall=0.0))


@pytest.mark.parametrize("frame_pixels,use_mult,name", [(1, 1, "uint8"), (5, 1, "uint8"), (7, 0, "uint8"),
                                                       (5, 1, "fixed_trunc_wrap")])
def test_throughput(frame_pixels, use_mult, name):
    """Unstalled, N items take N + latency cycles, even with a new multiplier every cycle."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(frame_pixels)
    frames = 24 // frame_pixels
    params, data, mults, _ = random_call(rng, cfg, frames=frames, frame_pixels=frame_pixels)
    params["use_mult"] = use_mult
    m_eff = mults if use_mult else [np.ones(cfg.cpo, np.int64)] * frames
    lo, hi = clip_bounds(cfg, params["clip_lo"], params["clip_hi"], params["relu"])
    expected = [ref.requantize(acc, m, params["shift"], lo, hi, ref.Modes.of(cfg)) for acc, m in zip(data, m_eff)]
    calls = [(params, data, mults, expected)]
    dut = Relu(cfg)
    results = run_calls(cfg, calls, stall=0.0, dut=dut)
    check(cfg, calls, results)
    n = frames * frame_pixels
    assert results[0][1] == n + dut.latency


def rtlil_cells(elaboratable, ports=None) -> set:
    """The cell types in the RTLIL Amaranth writes for ``elaboratable``."""
    text = rtlil.convert(elaboratable, ports=ports)
    return set(re.findall(r"^\s*cell (\S+) ", text, re.MULTILINE))


@pytest.mark.parametrize("name", ["uint8", "int8", "wide", "no_multiplier"])
def test_no_hardware_multiplier(name):
    """The requantisation product is built from adders (FabricMultiplier): no ``$mul`` cell
    that synthesis could map onto a DSP48E2, which the MAC array owns."""
    cfg = {"wide": KernelConfig(cpi=2, cpo=2, acc_bits=48, mult_bits=24, max_shift=47, imax=16, wmax=8, hmax=8),
           "no_multiplier": KernelConfig(cpi=2, cpo=2, with_multiplier=False, imax=16, wmax=8, hmax=8),
           **CONFIGS}[name]
    cells = rtlil_cells(Relu(cfg))
    assert "$add" in cells and "$mul" not in cells, sorted(cells)


def test_rtlil_cells_sees_a_multiplier():
    """The check above would see a ``*``: the same helper finds ``$mul`` in a bare product."""
    m = Module()
    a, b, p = Signal(signed(32)), Signal(16), Signal(signed(49))
    m.d.comb += p.eq(a * b)
    assert "$mul" in rtlil_cells(m, ports=[a, b, p])
