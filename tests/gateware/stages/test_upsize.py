"""Stage ``upsize`` in simulation against numpy's ``repeat``, with and without stalls."""

import random

import numpy as np
import pytest

from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.upsize import Upsize
from hlsinf.sim.streams import collect, feed, run_stage

CFG = KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, max_upsize=4)


def nearest(frame, factor):
    """The oracle: every pixel ``factor`` times along a row, every row ``factor`` times."""
    return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


def run(cfg, frames, cols, factor, *, stall, seed=0):
    dut = Upsize(cfg)
    want = np.concatenate([nearest(f, factor).reshape(-1, cfg.cpo) for f in frames]).tolist()
    result = {}

    async def feeder(ctx):
        ctx.set(dut.params, {"cols": cols, "factor_log": factor.bit_length() - 1})
        items = [[int(v) for v in px] for f in frames for px in f.reshape(-1, cfg.cpo)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed))

    async def collector(ctx):
        result["items"], result["cycles"] = await collect(
            ctx, dut.o, len(want), stall=stall, rng=random.Random(seed + 1),
            convert=lambda p: [p[k] for k in range(cfg.cpo)])

    run_stage(dut, [feeder, collector])
    return result["items"], want, result["cycles"]


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (3, 8), (1, 5)])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_matches_numpy(factor, rows, cols, stall):
    rng = np.random.default_rng(rows * 100 + cols * 10 + factor)
    frames = [rng.integers(0, 256, (rows, cols, CFG.cpo)) for _ in range(3)]   # frames back to back
    items, want, _ = run(CFG, frames, cols, factor, stall=stall, seed=factor + rows)
    assert items == want


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_one_pixel_per_cycle(factor):
    """Without stalls the output never idles: f*f*N pixels in f*f*N + latency cycles."""
    rng = np.random.default_rng(7)
    rows, cols = 4, 8
    frames = [rng.integers(0, 256, (rows, cols, CFG.cpo))]
    items, want, cycles = run(CFG, frames, cols, factor, stall=0.0)
    assert items == want
    assert cycles <= len(want) + Upsize.LATENCY + 1


def test_factor_above_build_is_capped():
    """A kernel built for 2 treats a larger request as 2 (the call is validated before)."""
    cfg = KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, max_upsize=2)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (2, 3, cfg.cpo))]
    dut_items, _, _ = run(cfg, frames, 3, 2, stall=0.2)
    assert dut_items == nearest(frames[0], 2).reshape(-1, cfg.cpo).tolist()
