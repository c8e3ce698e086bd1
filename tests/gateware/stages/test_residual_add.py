"""Post-op stage ``residual_add`` in simulation against ``reference.residual_add``, bit for bit."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.residual_add import ResidualAdd

from hlsinf.sim.streams import collect, feed, run_stage

from tests.gateware.stages.test_relu import rtlil_cells

CONFIGS = {
    "int8": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("residual_add",)),
    "uint8": KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, post_ops=("residual_add",)),
    "int16": KernelConfig(cpi=2, cpo=1, act_signed=True, act_bits=16, acc_bits=48, imax=16, wmax=8, hmax=8,
                          post_ops=("residual_add",)),
}


def random_call(rng, cfg, n, *, enable=None, mult=None, shift=None, relu=None, bounds=None):
    amin, amax = cfg.act_range
    enable = bool(rng.integers(0, 4)) if enable is None else enable        # mostly on
    shift = int(rng.integers(0, ref.R_SHIFT_MAX + 1)) if shift is None else shift
    if mult is None:
        # Scales around 0.25 .. 4 at this shift, sometimes the extremes.
        mult = int(rng.choice([0, 1, (1 << ref.R_MULT_BITS) - 1, int(rng.integers(0, 1 << ref.R_MULT_BITS)),
                               min((1 << ref.R_MULT_BITS) - 1, int((rng.random() * 4 + 0.25) * (1 << shift)))]))
    relu = bool(rng.integers(0, 2)) if relu is None else relu
    if bounds is None:
        bounds = (amin, amax) if rng.integers(0, 2) else tuple(sorted(int(b) for b in rng.integers(amin, amax + 1, 2)))
    v = rng.integers(amin, amax + 1, (n, cfg.cpo))
    r = rng.integers(amin, amax + 1, (n, cfg.cpo))
    for a in (v, r):
        a[rng.random((n, cfg.cpo)) < 0.05] = amin
        a[rng.random((n, cfg.cpo)) < 0.05] = amax
    params = dict(residual_add=int(enable), r_mult=mult, r_shift=shift, r_relu=int(relu),
                  r_clip_lo=bounds[0], r_clip_hi=bounds[1])
    expected = ref.residual_add(v, r, mult, shift, relu, *bounds) if enable else v
    return params, v, (r if enable else r[:0]), expected


def run_calls(cfg, calls, *, stall, seed=0, dut=None):
    dut = dut or ResidualAdd(cfg)
    done, results = [], []
    lanes = lambda a: [[int(x) for x in px] for px in a]            # noqa: E731

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, v, _, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await feed(ctx, dut.i, lanes(v), stall=stall, rng=rng)

    async def operand_feeder(ctx):
        rng = random.Random(seed + 2)
        for k, (_, _, r, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            await feed(ctx, dut.operand, lanes(r), stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 1)
        for _, v, _, _ in calls:
            items, cycles = await collect(ctx, dut.o, len(v), stall=stall, rng=rng,
                                          convert=lambda p: [p[k] for k in range(cfg.cpo)])
            results.append((items, cycles))
            done.append(True)

    run_stage(dut, [feeder, operand_feeder, collector])
    return results


def check(calls, results):
    for (params, v, r, expected), (items, _) in zip(calls, results):
        assert len(items) == len(expected)
        for n, (got, want) in enumerate(zip(items, expected.tolist())):
            assert got == want, f"pixel {n} (v {v[n].tolist()}) of call {params}: got {got}, expected {want}"


@pytest.mark.parametrize("name", CONFIGS)
def test_random_calls_with_stalls(name):
    """Random parameters and data, calls on and off, 30 % stalls on both inputs and the output."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(list(CONFIGS).index(name))
    calls = [random_call(rng, cfg, int(rng.integers(1, 30))) for _ in range(8)]
    check(calls, run_calls(cfg, calls, stall=0.3))


def test_rounding_saturation_relu():
    """Every int8 operand at scales where ties, saturation, shift 0 and the ReLU matter."""
    cfg = CONFIGS["int8"]
    r = np.arange(-128, 128).reshape(-1, 2)
    v = np.roll(r, 37)
    calls = []
    for mult, shift, relu, bounds in [(1, 1, 0, (-128, 127)), (3, 2, 1, (-128, 127)), (1, 0, 0, (-128, 127)),
                                      (65535, 0, 0, (-128, 127)), (65535, 16, 1, (-50, 60)),
                                      (13, 31, 0, (-128, 127)), (0, 0, 1, (-128, 127)), (181, 8, 0, (-5, 5)),
                                      (256, 8, 1, (-128, -3))]:
        params = dict(residual_add=1, r_mult=mult, r_shift=shift, r_relu=relu, r_clip_lo=bounds[0],
                      r_clip_hi=bounds[1])
        calls.append((params, v, r, ref.residual_add(v, r, mult, shift, relu, *bounds)))
    outs = set(np.concatenate([c[3].ravel() for c in calls]).tolist())
    assert {-128, 127, 0}.issubset(outs)
    check(calls, run_calls(cfg, calls, stall=0.3, seed=4))


def test_reference_formula():
    """The reference is the formula of docs/stages/post.md, value by value."""
    for v in range(-128, 128, 7):
        for r in range(-128, 128, 5):
            for mult, s, relu in [(181, 8, False), (1, 1, True), (3, 0, False), (65535, 4, True)]:
                t = max(-128, min(127, v + ((r * mult + ((1 << s) >> 1)) >> s)))
                want = max(t, 0) if relu else t
                assert ref.residual_add(np.array([v]), np.array([r]), mult, s, relu, -128, 127)[0] == want


@pytest.mark.parametrize("n", [1, 7, 40])
def test_throughput(n):
    """Unstalled, N items take N + latency cycles (on and off)."""
    cfg = CONFIGS["int8"]
    rng = np.random.default_rng(n)
    for enable in (True, False):
        calls = [random_call(rng, cfg, n, enable=enable)]
        dut = ResidualAdd(cfg)
        results = run_calls(cfg, calls, stall=0.0, dut=dut)
        check(calls, results)
        assert results[0][1] == n + dut.latency


def test_no_hardware_multiplier():
    cells = rtlil_cells(ResidualAdd(CONFIGS["int8"]))
    assert "$add" in cells and "$mul" not in cells, sorted(cells)
