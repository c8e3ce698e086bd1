"""Cvt stage against ``reference.windows``: random padded frames, stride 1 and 2, random stalls."""

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.cvt import Cvt, cvt_params_layout
from hlsinf.gateware.stages.padding import Padding
from hlsinf.sim.streams import collect, feed, run_stage

#: Cycles from the start of a stall-free run to its last window, beyond one per input pixel.
LATENCY = 3


def small_cfg(cpi, signed):
    return KernelConfig(cpi=cpi, cpo=2, act_signed=signed, wmax=8, hmax=8, imax=16)


def random_frames(rng, cfg, rows, cols, count):
    lo, hi = cfg.act_range
    return [rng.integers(lo, hi + 1, size=(rows, cols, cfg.cpi)) for _ in range(count)]


def window_count(rows, cols, stride):
    return ((rows - 3) // stride + 1) * ((cols - 3) // stride + 1)


def to_window(cfg):
    return lambda v: [[v[c][t] for t in range(9)] for c in range(cfg.cpi)]


def run_calls(cfg, calls, *, stall, seed):
    """Run ``calls`` = [(params, padded frames)] through one Cvt, one call after the other.

    Frames of a call follow each other back to back; between calls the parameters change
    (after the previous call's last window, one cycle before the next input), with no
    reset. Returns the windows of each call.
    """
    dut = Cvt(cfg)
    rng = random.Random(seed)
    results = []
    counts = [len(frames) * window_count(p["rows"], p["cols"], p["stride"]) for p, frames in calls]

    async def producer(ctx):
        for k, (params, frames) in enumerate(calls):
            while len(results) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await ctx.tick()
            items = [[int(v) for v in px] for f in frames for px in f.reshape(-1, cfg.cpi)]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    async def consumer(ctx):
        out_rng = random.Random(seed + 1)
        for count in counts:
            items, _ = await collect(ctx, dut.o, count, stall=stall, rng=out_rng, convert=to_window(cfg))
            results.append(items)

    pixels = sum(f.shape[0] * f.shape[1] for _, frames in calls for f in frames)
    run_stage(dut, [producer, consumer], deadline_cycles=20 * (pixels + sum(counts)) + 20 * len(calls) + 100)
    return results


def check_calls(cfg, calls, results):
    for (p, frames), got in zip(calls, results):
        want = np.concatenate([ref.windows(f, p["stride"]).reshape(-1, cfg.cpi, 9) for f in frames])
        np.testing.assert_array_equal(np.array(got, dtype=np.int64).reshape(-1, cfg.cpi, 9), want,
                                      err_msg=f"params {p}")


#: Padded frame sizes: 3 is the one-window-wide frame (a 1-pixel interior with padding 1+1).
SIZES = [(3, 3), (3, 5), (5, 3), (4, 4), (3, 8), (6, 7), (8, 3), (5, 6), (4, 3), (7, 4)]


@pytest.mark.parametrize("cpi,signed", [(1, False), (2, True), (4, False), (4, True)])
def test_random_frames_with_stalls(cpi, signed):
    """Both strides on every size, 2-3 different frames per call, parameters changing between calls."""
    cfg = small_cfg(cpi, signed)
    rng = np.random.default_rng(cpi * 10 + signed)
    calls = []
    for n, (rows, cols) in enumerate(SIZES):
        for stride in (1, 2):
            params = dict(rows=rows, cols=cols, stride=stride)
            calls.append((params, random_frames(rng, cfg, rows, cols, 2 + (n + stride) % 2)))
    random.Random(cpi).shuffle(calls)
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=cpi))


def test_widest_frame_with_stalls():
    """Padded frames as wide as the line buffer (max_padded_cols) and as tall as max_padded_rows."""
    cfg = KernelConfig(cpi=2, cpo=2, wmax=5, hmax=4, imax=16)
    rng = np.random.default_rng(5)
    rows, cols = cfg.max_padded_rows, cfg.max_padded_cols
    calls = [(dict(rows=rows, cols=cols, stride=s), random_frames(rng, cfg, rows, cols, 2)) for s in (1, 2)]
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=9))


@pytest.mark.parametrize("rows,cols,stride", [(3, 3, 1), (5, 6, 1), (5, 7, 2), (7, 5, 2)])
def test_throughput(rows, cols, stride):
    """No stalls: N input pixels of back-to-back frames give all windows within N + LATENCY cycles."""
    cfg = small_cfg(2, True)
    frames = 4
    rng = np.random.default_rng(2)
    data = random_frames(rng, cfg, rows, cols, frames)
    n_in = frames * rows * cols
    n_out = frames * window_count(rows, cols, stride)
    dut = Cvt(cfg)
    got = {}

    async def producer(ctx):
        ctx.set(dut.params, dict(rows=rows, cols=cols, stride=stride))
        await feed(ctx, dut.i, [[int(v) for v in px] for f in data for px in f.reshape(-1, cfg.cpi)])

    async def consumer(ctx):
        got["items"], got["cycles"] = await collect(ctx, dut.o, n_out, convert=to_window(cfg))

    run_stage(dut, [producer, consumer], deadline_cycles=4 * n_in + 100)
    want = np.concatenate([ref.windows(f, stride).reshape(-1, cfg.cpi, 9) for f in data])
    np.testing.assert_array_equal(np.array(got["items"]), want)
    # These sizes end each frame on a window, so the bound is met exactly.
    assert got["cycles"] == n_in + LATENCY, f"{got['cycles']} cycles for {n_in} input pixels"


class PaddingToCvt(Elaboratable):
    """Padding feeding Cvt, as in the kernel, to check the two contracts fit together."""

    def __init__(self, cfg):
        self.padding, self.cvt = Padding(cfg), Cvt(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.padding, m.submodules.cvt = self.padding, self.cvt
        wiring.connect(m, self.padding.o, self.cvt.i)
        return m


@pytest.mark.parametrize("stride", [1, 2])
def test_after_padding_with_stalls(stride):
    """Unpadded frames through Padding then Cvt equal reference.windows(reference.pad(...))."""
    cfg = small_cfg(2, False)
    rng = np.random.default_rng(stride)
    rows, cols, pads = 3, 1, (1, 2, 1, 1)
    data = random_frames(rng, cfg, rows, cols, 3)
    prows, pcols = rows + pads[0] + pads[1], cols + pads[2] + pads[3]
    top = PaddingToCvt(cfg)
    got = {}

    async def producer(ctx):
        ctx.set(top.padding.params, dict(rows=rows, cols=cols, pad_top=pads[0], pad_bottom=pads[1],
                                         pad_left=pads[2], pad_right=pads[3]))
        ctx.set(top.cvt.params, dict(rows=prows, cols=pcols, stride=stride))
        await feed(ctx, top.padding.i, [[int(v) for v in px] for f in data for px in f.reshape(-1, cfg.cpi)],
                   stall=0.3, rng=random.Random(3))

    async def consumer(ctx):
        got["items"], _ = await collect(ctx, top.cvt.o, 3 * window_count(prows, pcols, stride), stall=0.3,
                                        convert=to_window(cfg))

    run_stage(top, [producer, consumer], deadline_cycles=2000)
    want = np.concatenate([ref.windows(ref.pad(f, *pads), stride).reshape(-1, cfg.cpi, 9) for f in data])
    np.testing.assert_array_equal(np.array(got["items"]), want)


def test_params_layout_widths():
    cfg = KernelConfig(cpi=2, cpo=2, wmax=124, hmax=60, imax=16)
    layout = cvt_params_layout(cfg)
    assert layout["cols"].shape.width == 8 and layout["rows"].shape.width == 7   # up to 128 and 64 padded
    assert layout["stride"].shape.width == 2
