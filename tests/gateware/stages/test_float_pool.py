"""Stage ``pool`` of the fp32 kernel (:class:`FloatPool`) against ``reference_float.pool2x2``,
bit for bit, with random stalls."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.float_pool import FloatPool
from hlsinf.sim.streams import collect, feed, run_stage
from tests.gateware.lib.float_operands import SPECIALS
from tests.gateware.stages.test_float_relu import lane_value

CONFIGS = {
    "fp32": KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=16, wmax=8, hmax=8),
    "fp32-ftz": KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=16, wmax=8, hmax=8, fp32_subnormals=False),
}


def random_frames(rng, cfg, count, rows, cols):
    """Frames of bit patterns: ordinary values, values that cancel or tie, and the specials
    (signed zeros, subnormals, infinities, NaNs)."""
    frames = []
    specials = np.asarray(SPECIALS, np.uint32)
    for _ in range(count):
        shape = (rows, cols, cfg.cpo)
        normal = rf.to_bits(rng.normal(0, 2, shape).astype(np.float32))
        tiny = rf.to_bits((rng.normal(0, 1, shape) * 2.0 ** -125).astype(np.float32))
        huge = rf.to_bits((rng.normal(0, 0.5, shape).clip(-1.9, 1.9) * 2.0 ** 127).astype(np.float32))
        pick = rng.random(shape)
        frame = np.select([pick < 0.5, pick < 0.65, pick < 0.8], [normal, tiny, huge],
                          specials[rng.integers(0, len(specials), shape)])
        frames.append(frame.astype(np.uint32))
    return frames


def expected(cfg, params, frames):
    return np.concatenate([
        rf.to_bits(rf.pool2x2(rf.from_bits(f), params["mode"], subnormals=cfg.fp32_subnormals),
                   canonical=params["mode"] == ref.POOL_AVG).reshape(-1, cfg.cpo) for f in frames]).tolist()


def run_calls(cfg, calls, *, stall, seed=0):
    dut = FloatPool(cfg)
    shape = dut.i.payload.shape().elem_shape
    done, results = [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, frames) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            if k:
                await ctx.tick().repeat(4)
            ctx.set(dut.params, params)
            items = [[lane_value(shape, v) for v in px] for frame in frames for px in frame.reshape(-1, cfg.cpo)]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 1)
        for params, frames in calls:
            count = len(expected(cfg, params, frames))
            results.append(await collect(ctx, dut.o, count, stall=stall, rng=rng,
                                         convert=lambda p: [int(p[k]) & 0xFFFFFFFF for k in range(cfg.cpo)]))
            done.append(True)

    run_stage(dut, [feeder, collector])
    run_calls.latency = dut.latency
    return results


def check(cfg, calls, results):
    for (params, frames), (items, _) in zip(calls, results):
        want = expected(cfg, params, frames)
        assert len(items) == len(want)
        for n, (got, exp) in enumerate(zip(items, want)):
            # max and none pass the input bits (NaN payloads too); avg's NaN is the canonical one
            assert got == exp, f"output {n} of call {params}: got {[hex(v) for v in got]}, " \
                               f"expected {[hex(v) for v in exp]}"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mode", [ref.POOL_NONE, ref.POOL_MAX, ref.POOL_AVG])
def test_random_frames_with_stalls(name, mode):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(10 * mode + list(CONFIGS).index(name))
    sizes = [(2, 2), (7, 7), (3, 6), (6, 3)] + [tuple(int(v) for v in rng.integers(2, 8, 2)) for _ in range(2)]
    calls = [(dict(rows=r, cols=c, mode=mode), random_frames(rng, cfg, 2, r, c)) for r, c in sizes]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=mode))


def test_modes_change_between_calls():
    cfg = CONFIGS["fp32"]
    rng = np.random.default_rng(5)
    calls = []
    for mode in (ref.POOL_AVG, ref.POOL_NONE, ref.POOL_MAX, ref.POOL_AVG, ref.POOL_MAX):
        r, c = (int(v) for v in rng.integers(2, 8, 2))
        calls.append((dict(rows=r, cols=c, mode=mode), random_frames(rng, cfg, 2, r, c)))
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=4))


def test_widest_frame():
    cfg = CONFIGS["fp32"]
    rows, cols = 3, cfg.max_padded_cols - 2
    rng = np.random.default_rng(6)
    calls = [(dict(rows=rows, cols=cols, mode=mode), random_frames(rng, cfg, 2, rows, cols))
             for mode in (ref.POOL_MAX, ref.POOL_AVG)]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=6))


@pytest.mark.parametrize("mode,rows,cols", [(ref.POOL_NONE, 3, 5), (ref.POOL_MAX, 4, 6), (ref.POOL_AVG, 5, 7)])
def test_throughput(mode, rows, cols):
    """Unstalled, N input pixels are consumed in N cycles; the last output follows latency later."""
    cfg = CONFIGS["fp32"]
    rng = np.random.default_rng(rows)
    frames = random_frames(rng, cfg, 3, rows, cols)
    calls = [(dict(rows=rows, cols=cols, mode=mode), frames)]
    results = run_calls(cfg, calls, stall=0.0)
    check(cfg, calls, results)
    last_used = rows * cols if mode == ref.POOL_NONE else ((rows // 2 * 2 - 1) * cols + cols // 2 * 2)
    n = (len(frames) - 1) * rows * cols + last_used
    assert results[0][1] == n + run_calls.latency


def test_integer_cfg_refused():
    with pytest.raises(ValueError, match="fp32 stage"):
        FloatPool(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8))
