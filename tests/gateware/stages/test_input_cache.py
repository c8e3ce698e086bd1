"""InputCache: the first pass goes through and is kept, later passes are replayed from memory."""

import random

import pytest

from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.input_cache import InputCache

from hlsinf.sim.streams import collect, feed, run_stage

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)


def run_calls(calls, *, stall, capacity=40, seed=4, cfg=CFG):
    """``calls``: (enable, tile, passes) each; returns the cycles each call's output took.

    Without ``enable`` the input carries every pass (as the reader does without a cache).
    Calls do not overlap: parameters change only after the previous call's last output.
    """
    dut = InputCache(cfg, capacity)
    lo, hi = cfg.act_range
    rng = random.Random(seed)
    plans = []
    for enable, tile, passes in calls:
        data = [[rng.randint(lo, hi) for _ in range(cfg.cpi)] for _ in range(tile)]
        plans.append((enable, tile, passes, data if enable else data * passes, data * passes))
    finished, timings = [], []

    async def driver(ctx):
        for k, (enable, tile, passes, sent, _) in enumerate(plans):
            while len(finished) < k:
                await ctx.tick()
            ctx.set(dut.params.enable, enable)
            ctx.set(dut.params.tile_pixels, tile)
            ctx.set(dut.params.passes, passes)
            await ctx.tick()
            await feed(ctx, dut.i, sent, stall=stall, rng=random.Random(k))

    async def taker(ctx):
        for k, (*_, want) in enumerate(plans):
            got, cycles = await collect(ctx, dut.o, len(want), stall=stall, rng=random.Random(100 + k),
                                        convert=lambda v: [int(x) for x in v])
            assert got == want, f"call {k}"
            timings.append(cycles)
            finished.append(k)

    run_stage(dut, [driver, taker])
    return timings


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_calls_back_to_back(stall):
    run_calls([(1, 7, 3), (0, 5, 2), (1, 40, 2), (1, 1, 4), (1, 9, 1), (0, 3, 1), (1, 12, 2)], stall=stall)


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
def test_4bit_lanes(fmt):
    """Pixels of 4-bit lanes (8 bits at CPI = 2) go through and are replayed unchanged."""
    cfg = KernelConfig.from_format(fmt, cpi=2, cpo=2, imax=64, wmax=16, hmax=16)
    run_calls([(1, 7, 3), (0, 5, 2), (1, 40, 2)], stall=0.3, cfg=cfg)


def test_one_pixel_per_cycle():
    """No stalls: one pixel per cycle; two cycles of read latency once, after the first pass."""
    tile, passes = 30, 4
    (cycles,) = run_calls([(1, tile, passes)], stall=0.0)
    assert cycles <= tile * passes + 4, cycles


def test_capacity_checked():
    import gc
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the half-built component is never elaborated
        with pytest.raises(ValueError, match="pixels"):
            InputCache(CFG, 0)
        gc.collect()
