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


def test_widest_tile_with_stalls():
    """Tiles as wide as the line buffers (wmax) and as tall as hmax, both strides."""
    cfg = small_cfg(2, True, wmax=6, hmax=5)
    rng = np.random.default_rng(5)
    calls = [(params(cfg.hmax, cfg.wmax, *pads, s), random_frames(rng, cfg, cfg.hmax, cfg.wmax, 2))
             for pads, s in [((1, 1, 1, 1), 1), ((2, 0, 0, 2), 2), ((0, 0, 0, 0), 1), ((2, 2, 2, 2), 2)]]
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=9))


def test_params_layout_widths():
    cfg = KernelConfig(cpi=2, cpo=2, wmax=124, hmax=60, imax=16)
    layout = window_params_layout(cfg)
    assert layout["cols"].shape.width == 7 and layout["rows"].shape.width == 6     # up to 124 and 60
    assert layout["pad_top"].shape.width == 2 and layout["stride"].shape.width == 2


def measure(cfg, p, frames):
    """Stall-free run: (windows, cycles from the first input offered to the last window taken)."""
    dut = Window(cfg)
    got = {}
    n_out = len(frames) * window_count(p)

    async def producer(ctx):
        ctx.set(dut.params, p)
        await ctx.tick()
        got["start"] = ctx  # marker: the input is offered from this cycle on
        await feed(ctx, dut.i, pixels(cfg, frames))

    async def consumer(ctx):
        await ctx.tick()                     # the producer's parameter cycle
        got["items"], got["cycles"] = await collect(ctx, dut.o, n_out, convert=to_window(cfg))

    run_stage(dut, [producer, consumer], deadline_cycles=4 * n_out + 40 * p["cols"] + 200)
    np.testing.assert_array_equal(np.array(got["items"]).reshape(-1, cfg.cpi, 9), expected(p, frames, cfg.cpi))
    return got["cycles"]


#: Stall-free cost of a call of F 'same' frames (pad 1 all round, stride 1), from the first
#: input pixel offered to the last window taken: F*rows*cols + first + LATENCY, where
#: ``first`` is the index of the input pixel window (0, 0) waits for: pixel (1, 1), i.e.
#: ``cols + 1``, for tiles of at least 2x2 (the one-row fill). LATENCY: the pixel is
#: written (1), fetched (2), its column formed into the output register (3); one more
#: for a 1-column tile, whose windows all come from the tail register. After the first
#: window, one window leaves every cycle: no gap between rows or frames.
LATENCY = 3


def first_needed_pixel(rows, cols):
    return min(1, rows - 1) * cols + min(1, cols - 1)


@pytest.mark.parametrize("rows,cols,frames", [(3, 3, 4), (4, 6, 3), (6, 5, 3), (1, 4, 5), (5, 1, 3), (1, 1, 6), (2, 8, 3)])
def test_throughput_same_padding(rows, cols, frames):
    """No stalls, pad 1 all round: every frame after the first costs exactly rows*cols cycles."""
    cfg = small_cfg(2, False)
    rng = np.random.default_rng(rows * 10 + cols)
    p = params(rows, cols, 1, 1, 1, 1, 1)
    cycles = measure(cfg, p, random_frames(rng, cfg, rows, cols, frames))
    want = frames * rows * cols + first_needed_pixel(rows, cols) + LATENCY + (cols == 1)
    assert cycles == want, f"{cycles} cycles for {frames} frames of {rows}x{cols}, expected {want}"
