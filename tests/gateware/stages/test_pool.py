"""Stage ``pool`` in simulation against ``reference.pool2x2``, bit for bit."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.pool import Pool

from hlsinf.sim.streams import collect, feed, run_stage


CONFIGS = {
    "uint8": KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8),
    "int8": KernelConfig(cpi=2, cpo=4, act_signed=True, imax=16, wmax=8, hmax=8),
    "int4": KernelConfig.from_format("int4", cpi=2, cpo=2, imax=16, wmax=8, hmax=8),
    "uint4": KernelConfig.from_format("uint4", cpi=2, cpo=4, imax=16, wmax=8, hmax=8),
}


def random_frames(rng, cfg, count, rows, cols):
    amin, amax = cfg.act_range
    frames = []
    for _ in range(count):
        frame = rng.integers(amin, amax + 1, (rows, cols, cfg.cpo))
        # Some blocks at the extremes: the average's sum must not wrap.
        frame[rng.random((rows, cols, cfg.cpo)) < 0.15] = amax
        frame[rng.random((rows, cols, cfg.cpo)) < 0.15] = amin
        frames.append(frame)
    return frames


def expected(cfg, params, frames, mode=None):
    """What the stage must emit for a call: pool2x2 of each frame (``mode`` overrides params)."""
    mode = params["mode"] if mode is None else mode
    return np.concatenate([ref.pool2x2(f, mode).reshape(-1, cfg.cpo) for f in frames]).tolist()


def run_calls(cfg, calls, *, stall, seed=0, mode=None):
    """``calls``: list of (params, frames). Returns (outputs, cycles) per call, run back to back."""
    dut = Pool(cfg)
    done, results, fed_at = [], [], []
    clock = [0]

    async def cycle_counter(ctx):
        while len(done) < len(calls) or len(fed_at) < len(calls):
            await ctx.tick()
            clock[0] += 1

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, frames) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            # Pixels of a dropped last row can still sit in the input FIFO when the last
            # output is out; the kernel changes parameters only after ap_done, long after.
            if k:
                await ctx.tick().repeat(4)
            ctx.set(dut.params, params)
            items = [[int(v) for v in px] for frame in frames for px in frame.reshape(-1, cfg.cpo)]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)
            fed_at.append(clock[0])

    async def collector(ctx):
        rng = random.Random(seed + 1)
        for params, frames in calls:
            count = len(expected(cfg, params, frames, mode))
            results.append(await collect(ctx, dut.o, count, stall=stall, rng=rng,
                                         convert=lambda p: [p[k] for k in range(cfg.cpo)]))
            done.append(True)

    run_stage(dut, [cycle_counter, feeder, collector])   # the counter first: it ticks first
    run_calls.fed_at = fed_at          # clock edge on which each call's last input was taken
    return results


def check(cfg, calls, results, mode=None):
    for (params, frames), (items, _) in zip(calls, results):
        want = expected(cfg, params, frames, mode)
        assert len(items) == len(want)
        for n, (got, exp) in enumerate(zip(items, want)):
            assert got == exp, f"output {n} of call {params}: got {got}, expected {exp}"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mode", [ref.POOL_NONE, ref.POOL_MAX, ref.POOL_AVG])
def test_random_frames_with_stalls(name, mode):
    """Calls of odd and even sizes (rows, cols 2..7), three frames each, back to back."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(10 * mode + list(CONFIGS).index(name))
    sizes = [(2, 2), (7, 7), (3, 6), (6, 3), (4, 5)] + [tuple(int(v) for v in rng.integers(2, 8, 2)) for _ in range(2)]
    calls = [(dict(rows=r, cols=c, mode=mode), random_frames(rng, cfg, 3, r, c)) for r, c in sizes]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=mode))


def test_modes_change_between_calls():
    cfg = CONFIGS["uint8"]
    rng = np.random.default_rng(5)
    calls = []
    for mode in (ref.POOL_AVG, ref.POOL_NONE, ref.POOL_MAX, ref.POOL_AVG, ref.POOL_MAX):
        r, c = (int(v) for v in rng.integers(2, 8, 2))
        calls.append((dict(rows=r, cols=c, mode=mode), random_frames(rng, cfg, 2, r, c)))
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=4))


def test_widest_frame():
    """The line buffer holds max_padded_cols // 2 pairs: the widest frame uses all of it."""
    cfg = CONFIGS["int8"]
    rows, cols = 3, cfg.max_padded_cols - 2
    rng = np.random.default_rng(6)
    calls = [(dict(rows=rows, cols=cols, mode=mode), random_frames(rng, cfg, 2, rows, cols))
             for mode in (ref.POOL_MAX, ref.POOL_AVG)]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=6))


def test_unbuilt_mode_passes_through():
    """A kernel without average pooling treats mode 2 as mode 0 (the host must not ask for it)."""
    cfg = KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, with_avgpool=False)
    rng = np.random.default_rng(8)
    frames = random_frames(rng, cfg, 2, 4, 4)
    calls = [(dict(rows=4, cols=4, mode=ref.POOL_AVG), frames)]
    check(cfg, calls, run_calls(cfg, calls, stall=0.3, mode=ref.POOL_NONE), mode=ref.POOL_NONE)


@pytest.mark.parametrize("mode,rows,cols", [(ref.POOL_NONE, 3, 5), (ref.POOL_MAX, 4, 6), (ref.POOL_AVG, 5, 7)])
def test_throughput(mode, rows, cols):
    """Unstalled, N input pixels are consumed in N cycles; the last output follows LATENCY later."""
    cfg = CONFIGS["uint8"]
    rng = np.random.default_rng(rows)
    frames = random_frames(rng, cfg, 3, rows, cols)
    calls = [(dict(rows=rows, cols=cols, mode=mode), frames)]
    results = run_calls(cfg, calls, stall=0.0)
    check(cfg, calls, results)
    # The last output comes from the last pixel of the last full 2x2 block.
    last_used = rows * cols if mode == ref.POOL_NONE else ((rows // 2 * 2 - 1) * cols + cols // 2 * 2)
    n = (len(frames) - 1) * rows * cols + last_used
    assert results[0][1] == n + Pool.LATENCY
    # Every input, including a dropped last row or column, was taken one per cycle.
    assert run_calls.fed_at == [len(frames) * rows * cols]
