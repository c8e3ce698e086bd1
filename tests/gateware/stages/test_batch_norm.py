"""Post-op stage ``bn`` in simulation against ``reference.batch_norm``, bit for bit."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.batch_norm import BatchNorm

from hlsinf.sim.streams import collect, feed, run_stage

from tests.gateware.stages.test_relu import rtlil_cells

CONFIGS = {
    "int8": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("bn",)),
    "uint8": KernelConfig(cpi=2, cpo=4, imax=16, wmax=8, hmax=8, post_ops=("bn",)),
    "int16": KernelConfig(cpi=2, cpo=1, act_signed=True, act_bits=16, acc_bits=48, imax=16, wmax=8, hmax=8,
                          post_ops=("bn",)),
    "int8_trunc_wrap": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("bn",),
                                    rounding="trunc", overflow="wrap"),
    "uint8_wrap": KernelConfig(cpi=2, cpo=4, imax=16, wmax=8, hmax=8, post_ops=("bn",), overflow="wrap"),
}
MMIN, MMAX = -(1 << 15), (1 << 15) - 1


def random_call(rng, cfg, frames, frame_pixels, *, enable=None, shift=None):
    amin, amax = cfg.act_range
    enable = bool(rng.integers(0, 4)) if enable is None else enable
    shift = int(rng.integers(0, ref.BN_SHIFT_MAX + 1)) if shift is None else shift
    if rng.random() < 0.5:
        lo, hi = amin, amax
    else:
        lo, hi = sorted(int(x) for x in rng.integers(amin, amax + 1, 2))
    params = dict(frame_pixels=frame_pixels, bn=int(enable), bn_shift=shift, bn_clip_lo=lo, bn_clip_hi=hi)
    data, items, expected = [], [], []
    for _ in range(frames):
        mult = rng.integers(MMIN, MMAX + 1, cfg.cpo)
        mult[rng.random(cfg.cpo) < 0.15] = MMIN
        mult[rng.random(cfg.cpo) < 0.15] = MMAX
        # Biases around the scale of v * m, sometimes anywhere in int32.
        bias = np.where(rng.random(cfg.cpo) < 0.8, rng.integers(-(1 << (shift + 8)), 1 << (shift + 8), cfg.cpo),
                        rng.integers(-(1 << 31), 1 << 31, cfg.cpo))
        bias = np.clip(bias, -(1 << 31), (1 << 31) - 1)
        v = rng.integers(amin, amax + 1, (frame_pixels, cfg.cpo))
        data.append(v)
        items.append((mult, bias))
        expected.append(ref.batch_norm(v, mult, bias, shift, lo, hi, ref.Modes.of(cfg)) if enable else v)
    return params, data, items, expected


def run_calls(cfg, calls, *, stall, seed=0, dut=None):
    dut = dut or BatchNorm(cfg)
    done, results = [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, data, _, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await feed(ctx, dut.i, [[int(x) for x in px] for v in data for px in v], stall=stall, rng=rng)

    async def item_feeder(ctx):
        rng = random.Random(seed + 1)
        items = [{"mult": [int(x) for x in mult], "bias": [int(x) for x in bias]}
                 for params, _, its, _ in calls if params["bn"] for mult, bias in its]
        await feed(ctx, dut.item, items, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 2)
        for _, data, _, _ in calls:
            items, cycles = await collect(ctx, dut.o, sum(len(v) for v in data), stall=stall, rng=rng,
                                          convert=lambda p: [p[k] for k in range(cfg.cpo)])
            results.append((items, cycles))
            done.append(True)

    run_stage(dut, [feeder, item_feeder, collector])
    return results


def check(calls, results):
    for (params, _, _, expected), (items, _) in zip(calls, results):
        want = np.concatenate(expected).tolist()
        assert len(items) == len(want)
        for n, (got, exp) in enumerate(zip(items, want)):
            assert got == exp, f"pixel {n} of call {params}: got {got}, expected {exp}"


@pytest.mark.parametrize("name", CONFIGS)
def test_random_calls_with_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(list(CONFIGS).index(name))
    calls = [random_call(rng, cfg, 3, int(rng.integers(1, 7))) for _ in range(6)]
    check(calls, run_calls(cfg, calls, stall=0.3))


@pytest.mark.parametrize("name", ["int8", "int8_trunc_wrap"])
def test_extremes(name):
    """m at both int16 ends, biases at both int32 ends, shifts 0, 1, 31."""
    cfg = CONFIGS[name]
    v = np.array([[-128, 127], [127, -128], [-1, 1], [0, 0]])
    calls = []
    for shift in (0, 1, 15, 31):
        for mult, bias in [((MMIN, MMAX), (-(1 << 31), (1 << 31) - 1)), ((MMAX, MMIN), ((1 << 31) - 1, -(1 << 31))),
                           ((1, -1), (0, 0)), ((3, 5), ((1 << shift) >> 1, -((1 << shift) >> 1)))]:
            mult, bias = np.array(mult), np.array(bias)
            params = dict(frame_pixels=4, bn=1, bn_shift=shift, bn_clip_lo=-128, bn_clip_hi=127)
            calls.append((params, [v], [(mult, bias)], [ref.batch_norm(v, mult, bias, shift, -128, 127,
                                                                           ref.Modes.of(cfg))]))
    check(calls, run_calls(cfg, calls, stall=0.3, seed=5))


def test_pack_roundtrip():
    cfg = CONFIGS["uint8"]
    mult, bias = np.array([MMIN, -1, 0, 7, MMAX]), np.array([-(1 << 31), -5, 0, 9, (1 << 31) - 1])
    n = ref.pack_bn(mult, bias, cfg.cpo)
    assert n.dtype == np.int32 and n.size == 2 * 2 * cfg.cpo
    m2, b2 = ref.unpack_bn(n, cfg, slice(0, 5))
    assert m2.tolist() == mult.tolist() and b2.tolist() == bias.tolist()
    m3, _ = ref.unpack_bn(n.view(np.uint8), cfg, slice(0, 5))
    assert m3.tolist() == mult.tolist()


@pytest.mark.parametrize("frame_pixels", [1, 5])
def test_throughput(frame_pixels):
    """Unstalled, N items take N + latency cycles, even with a new item every frame."""
    cfg = CONFIGS["int8"]
    rng = np.random.default_rng(frame_pixels)
    calls = [random_call(rng, cfg, 20 // frame_pixels, frame_pixels, enable=True)]
    dut = BatchNorm(cfg)
    results = run_calls(cfg, calls, stall=0.0, dut=dut)
    check(calls, results)
    assert results[0][1] == (20 // frame_pixels) * frame_pixels + dut.latency


def test_no_hardware_multiplier():
    cells = rtlil_cells(BatchNorm(CONFIGS["int8"]))
    assert "$add" in cells and "$mul" not in cells, sorted(cells)
