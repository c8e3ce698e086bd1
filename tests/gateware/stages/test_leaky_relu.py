"""Post-op stage ``leaky_relu`` in simulation against ``reference.leaky_relu``, bit for bit."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.leaky_relu import LeakyRelu

from hlsinf.sim.streams import collect, feed, run_stage

from tests.gateware.stages.test_relu import rtlil_cells

CONFIGS = {
    "int8": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("leaky_relu",)),
    "uint8": KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, post_ops=("leaky_relu",)),
    "int16": KernelConfig(cpi=2, cpo=1, act_signed=True, act_bits=16, acc_bits=48, imax=16, wmax=8, hmax=8,
                          post_ops=("leaky_relu",)),
    "int8_trunc_wrap": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("leaky_relu",),
                                    rounding="trunc", overflow="wrap"),
    "int8_trunc": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("leaky_relu",),
                               rounding="trunc"),
}


def random_call(rng, cfg, n, *, enable=None, alpha_num=None, alpha_shift=None):
    amin, amax = cfg.act_range
    enable = bool(rng.integers(0, 4)) if enable is None else enable       # mostly on
    shift = int(rng.integers(0, ref.LEAKY_ALPHA_SHIFT_MAX + 1)) if alpha_shift is None else alpha_shift
    if alpha_num is None:
        # Slopes around 0.01 .. 1 at this shift, sometimes the extremes.
        alpha_num = int(rng.choice([0, 1, ref.LEAKY_ALPHA_NUM_MAX,
                                    int(rng.integers(0, ref.LEAKY_ALPHA_NUM_MAX + 1)),
                                    min(ref.LEAKY_ALPHA_NUM_MAX, max(0, int(rng.random() * (1 << shift))))]))
    v = rng.integers(amin, amax + 1, (n, cfg.cpo))
    v[rng.random((n, cfg.cpo)) < 0.05] = amin
    v[rng.random((n, cfg.cpo)) < 0.05] = amax
    params = dict(leaky_relu=int(enable), leaky_alpha_num=alpha_num, leaky_alpha_shift=shift)
    expected = ref.leaky_relu(v, alpha_num, shift, amin, amax, ref.Modes.of(cfg)) if enable else v
    return params, v, expected


def run_calls(cfg, calls, *, stall, seed=0, dut=None):
    dut = dut or LeakyRelu(cfg)
    done, results = [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, v, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await feed(ctx, dut.i, [[int(x) for x in px] for px in v], stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 1)
        for _, v, _ in calls:
            items, cycles = await collect(ctx, dut.o, len(v), stall=stall, rng=rng,
                                          convert=lambda p: [p[k] for k in range(cfg.cpo)])
            results.append((items, cycles))
            done.append(True)

    run_stage(dut, [feeder, collector])
    return results


def check(calls, results):
    for (params, v, expected), (items, _) in zip(calls, results):
        assert len(items) == len(expected)
        for n, (got, want, x) in enumerate(zip(items, expected.tolist(), v.tolist())):
            assert got == want, f"pixel {n} ({x}) of call {params}: got {got}, expected {want}"


@pytest.mark.parametrize("name", CONFIGS)
def test_random_calls_with_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(list(CONFIGS).index(name))
    calls = [random_call(rng, cfg, int(rng.integers(1, 30))) for _ in range(8)]
    check(calls, run_calls(cfg, calls, stall=0.3))


@pytest.mark.parametrize("name", ["int8", "int8_trunc_wrap", "int8_trunc"])
def test_rounding_and_saturation(name):
    """Every int8 value at slopes where rounding ties, saturation and shift 0 matter."""
    cfg = CONFIGS[name]
    v = np.arange(-128, 128).reshape(-1, 2)
    calls = []
    for num, shift in [(1, 1), (3, 2), (5, 3), (1, 0), (2, 0), (65535, 0), (65535, 16), (13, 31), (0, 0),
                       (26, 8), (128, 8), (255, 8)]:
        params = dict(leaky_relu=1, leaky_alpha_num=num, leaky_alpha_shift=shift)
        calls.append((params, v, ref.leaky_relu(v, num, shift, -128, 127, ref.Modes.of(cfg))))
    assert {-1, -64, -128}.issubset(set(np.concatenate([c[2].ravel() for c in calls]).tolist()))
    check(calls, run_calls(cfg, calls, stall=0.3, seed=4))


def test_reference_formula():
    """The reference is the formula of docs/numbers.md, value by value."""
    for v in range(-128, 128):
        for num, s in [(26, 8), (1, 1), (3, 0), (65535, 4)]:
            want = v if v >= 0 else max(-128, min(127, (v * num + ((1 << s) >> 1)) >> s))
            assert ref.leaky_relu(np.array([v]), num, s, -128, 127)[0] == want


@pytest.mark.parametrize("n", [1, 7, 40])
def test_throughput(n):
    """Unstalled, N items take N + latency cycles."""
    cfg = CONFIGS["int8"]
    rng = np.random.default_rng(n)
    calls = [random_call(rng, cfg, n, enable=True)]
    dut = LeakyRelu(cfg)
    results = run_calls(cfg, calls, stall=0.0, dut=dut)
    check(calls, results)
    assert results[0][1] == n + dut.latency


def test_no_hardware_multiplier():
    cells = rtlil_cells(LeakyRelu(CONFIGS["int8"]))
    assert "$add" in cells and "$mul" not in cells, sorted(cells)
