"""Padding stage against ``reference.pad``: random frames, every padding, random stalls."""

import itertools
import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.gateware.stages.padding import Padding, padding_params_layout
from hlsinf.sim.streams import collect, feed, run_stage

#: Cycles from the start of a stall-free run to its last output, beyond one per output item.
LATENCY = 2


def small_cfg(cpi, signed):
    return KernelConfig(cpi=cpi, cpo=2, act_signed=signed, wmax=8, hmax=8, imax=16)


def random_frames(rng, cfg, rows, cols, count):
    lo, hi = cfg.act_range
    return [rng.integers(lo, hi + 1, size=(rows, cols, cfg.cpi)) for _ in range(count)]


def run_calls(cfg, calls, *, stall, seed):
    """Run ``calls`` = [(params, frames)] through one Padding, one call after the other.

    The frames of a call follow each other back to back; between calls the parameters
    change (after the previous call's last output, one cycle before the next input), with
    no reset. Returns the outputs of each call as ``frames x Hp x Wp x CPI`` arrays.
    """
    dut = Padding(cfg)
    rng = random.Random(seed)
    results = []
    expected_counts = [len(frames) * (p["rows"] + p["pad_top"] + p["pad_bottom"]) *
                       (p["cols"] + p["pad_left"] + p["pad_right"]) for p, frames in calls]

    async def producer(ctx):
        for k, (params, frames) in enumerate(calls):
            while len(results) < k:          # previous call fully drained
                await ctx.tick()
            ctx.set(dut.params, params)
            await ctx.tick()
            items = [[int(v) for v in pixel] for f in frames for pixel in f.reshape(-1, cfg.cpi)]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    async def consumer(ctx):
        out_rng = random.Random(seed + 1)
        for count in expected_counts:
            items, _ = await collect(ctx, dut.o, count, stall=stall, rng=out_rng,
                                     convert=lambda v: [v[c] for c in range(cfg.cpi)])
            results.append(items)

    total = sum(expected_counts)
    run_stage(dut, [producer, consumer], deadline_cycles=20 * total + 20 * len(calls) + 100)
    return results


def check_calls(cfg, calls, results):
    for (p, frames), got in zip(calls, results):
        want = np.concatenate([ref.pad(f, p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"])
                               .reshape(-1, cfg.cpi) for f in frames])
        np.testing.assert_array_equal(np.array(got, dtype=np.int64).reshape(-1, cfg.cpi), want,
                                      err_msg=f"params {p}")


PADS = list(itertools.product(range(MAX_PAD + 1), repeat=4))      # every (top, bottom, left, right)
SIZES = [(1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (2, 4), (4, 1), (1, 5)]


@pytest.mark.parametrize("cpi,signed", [(1, False), (2, True), (4, False), (4, True)])
def test_every_padding_with_stalls(cpi, signed):
    """All 81 paddings, frames of 1 to 5 pixels a side, 2-3 frames per call, 30% stalls."""
    cfg = small_cfg(cpi, signed)
    rng = np.random.default_rng(cpi * 10 + signed)
    calls = []
    for n, (top, bottom, left, right) in enumerate(PADS):
        rows, cols = SIZES[(n + cpi) % len(SIZES)]
        params = dict(rows=rows, cols=cols, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right)
        calls.append((params, random_frames(rng, cfg, rows, cols, 2 + n % 2)))
    results = run_calls(cfg, calls, stall=0.3, seed=cpi)
    check_calls(cfg, calls, results)


def test_largest_frame_with_stalls():
    """A frame at the configured maximum (hmax x wmax, widest padding): counters use their full range."""
    cfg = KernelConfig(cpi=2, cpo=2, wmax=6, hmax=5, imax=16)
    rng = np.random.default_rng(7)
    params = dict(rows=5, cols=6, pad_top=2, pad_bottom=2, pad_left=2, pad_right=2)
    calls = [(params, random_frames(rng, cfg, 5, 6, 2))]
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=3))


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 2, 2, 1), (2, 0, 0, 2)])
def test_throughput(pads):
    """No stalls: N output items of back-to-back frames take N + LATENCY cycles, no per-frame gap."""
    cfg = small_cfg(2, False)
    top, bottom, left, right = pads
    rows, cols, frames = 3, 4, 4
    rng = np.random.default_rng(1)
    data = random_frames(rng, cfg, rows, cols, frames)
    n_out = frames * (rows + top + bottom) * (cols + left + right)
    dut = Padding(cfg)
    got = {}

    async def producer(ctx):
        ctx.set(dut.params, dict(rows=rows, cols=cols, pad_top=top, pad_bottom=bottom,
                                 pad_left=left, pad_right=right))
        await feed(ctx, dut.i, [[int(v) for v in px] for f in data for px in f.reshape(-1, cfg.cpi)])

    async def consumer(ctx):
        got["items"], got["cycles"] = await collect(ctx, dut.o, n_out,
                                                    convert=lambda v: [v[c] for c in range(cfg.cpi)])

    run_stage(dut, [producer, consumer], deadline_cycles=4 * n_out + 100)
    want = np.concatenate([ref.pad(f, top, bottom, left, right).reshape(-1, cfg.cpi) for f in data])
    np.testing.assert_array_equal(np.array(got["items"]), want)
    assert got["cycles"] == n_out + LATENCY, f"{got['cycles']} cycles for {n_out} items"


def test_params_layout_widths():
    cfg = KernelConfig(cpi=2, cpo=2, wmax=200, hmax=100, imax=16)
    layout = padding_params_layout(cfg)
    assert layout["cols"].shape.width == 8 and layout["rows"].shape.width == 7
    assert layout["pad_top"].shape.width == 2
