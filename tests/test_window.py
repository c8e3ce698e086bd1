"""Window stage against ``reference.windows(reference.pad(...))``: every padding, both strides,
random stalls, frames and calls back to back; throughput against one cycle per input pixel."""

import itertools
import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.modules.window import Window, window_params_layout
from streams import collect, feed, run_stage


def small_cfg(cpi, signed, wmax=8, hmax=8):
    return KernelConfig(cpi=cpi, cpo=2, act_signed=signed, wmax=wmax, hmax=hmax, imax=16)


def random_frames(rng, cfg, rows, cols, count):
    lo, hi = cfg.act_range
    return [rng.integers(lo, hi + 1, size=(rows, cols, cfg.cpi)) for _ in range(count)]


def out_size(size, before, after, stride):
    return (size + before + after - 3) // stride + 1


def window_count(p):
    return (out_size(p["rows"], p["pad_top"], p["pad_bottom"], p["stride"]) *
            out_size(p["cols"], p["pad_left"], p["pad_right"], p["stride"]))


def expected(p, frames, cpi):
    pads = p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]
    return np.concatenate([ref.windows(ref.pad(f, *pads), p["stride"]).reshape(-1, cpi, 9) for f in frames])


def to_window(cfg):
    return lambda v: [[v[c][t] for t in range(9)] for c in range(cfg.cpi)]


def pixels(cfg, frames):
    return [[int(v) for v in px] for f in frames for px in f.reshape(-1, cfg.cpi)]


def run_calls(cfg, calls, *, stall, seed):
    """Run ``calls`` = [(params, frames)] through one Window, one call after the other.

    Frames of a call follow each other back to back. Between calls the parameters change as
    soon as the documented rule allows: once the previous call's last window *and* last
    input pixel have been taken, one cycle before the next call's first pixel is offered;
    no reset. Returns the windows of each call.
    """
    dut = Window(cfg)
    rng = random.Random(seed)
    results = []
    fed = []
    counts = [len(frames) * window_count(p) for p, frames in calls]

    async def producer(ctx):
        for k, (params, frames) in enumerate(calls):
            while len(results) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await ctx.tick()
            await feed(ctx, dut.i, pixels(cfg, frames), stall=stall, rng=rng)
            fed.append(k)

    async def consumer(ctx):
        out_rng = random.Random(seed + 1)
        for k, count in enumerate(counts):
            items, _ = await collect(ctx, dut.o, count, stall=stall, rng=out_rng, convert=to_window(cfg))
            while len(fed) <= k:          # a dropped last row (stride 2) may follow the last window
                await ctx.tick()
            results.append(items)

    n_pixels = sum(f.shape[0] * f.shape[1] for _, frames in calls for f in frames)
    run_stage(dut, [producer, consumer], deadline_cycles=20 * (n_pixels + sum(counts)) + 20 * len(calls) + 200)
    return results


def check_calls(cfg, calls, results):
    assert len(results) == len(calls)
    for (p, frames), got in zip(calls, results):
        np.testing.assert_array_equal(np.array(got, dtype=np.int64).reshape(-1, cfg.cpi, 9),
                                      expected(p, frames, cfg.cpi), err_msg=f"params {p}")


def params(rows, cols, top, bottom, left, right, stride):
    return dict(rows=rows, cols=cols, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
                stride=stride)


def fits(rows, cols, top, bottom, left, right):
    return rows + top + bottom >= 3 and cols + left + right >= 3


PADS = list(itertools.product(range(MAX_PAD + 1), repeat=4))      # every (top, bottom, left, right)
SIZES = [(1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (2, 4), (4, 1), (1, 5), (6, 7), (5, 6), (4, 4), (7, 2)]


@pytest.mark.parametrize("cpi,signed", [(1, False), (2, True), (4, False), (4, True)])
def test_every_padding_with_stalls(cpi, signed):
    """All 81 paddings at stride 1 and 2, tiles 1x1 .. 6x7, 2-3 frames per call, 30% stalls."""
    cfg = small_cfg(cpi, signed)
    rng = np.random.default_rng(cpi * 10 + signed)
    calls = []
    for n, pads in enumerate(PADS):
        for stride in (1, 2):
            for k in range(len(SIZES)):
                rows, cols = SIZES[(n * 5 + stride * 3 + k + cpi) % len(SIZES)]
                if fits(rows, cols, *pads):
                    break
            calls.append((params(rows, cols, *pads, stride), random_frames(rng, cfg, rows, cols, 2 + (n + stride) % 2)))
    random.Random(cpi).shuffle(calls)
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=cpi))
