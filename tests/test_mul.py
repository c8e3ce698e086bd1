"""Stage ``mul`` in Amaranth's simulator against ``reference.mul_partial``.

Several frames with different weight sets run back to back in one simulation, with random
stalls on the window, weight and output streams; every partial sum must equal the
reference exactly.
"""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hlsinf.config import KernelConfig
from hlsinf import reference as ref
from hlsinf.modules.mul import Mul

from streams import collect, feed, run_stage


def small_config(cpi, cpo, act_signed):
    return KernelConfig(cpi=cpi, cpo=cpo, act_signed=act_signed, wmax=4, hmax=2, imax=64)


def random_values(rng, lo, hi, shape, extreme_share=0.3):
    """Uniform values with ``extreme_share`` of them forced to ``lo`` or ``hi``."""
    values = rng.integers(lo, hi + 1, shape)
    extreme = rng.random(shape) < extreme_share
    return np.where(extreme, rng.choice([lo, hi], shape), values)


def make_frames(cfg, frame_pixels, frames, rng):
    """``frames`` frames of windows and their weight sets; the first two are all-extreme."""
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    windows = random_values(rng, amin, amax, (frames, frame_pixels, cfg.cpi, 9))
    weights = random_values(rng, wmin, wmax, (frames, cfg.cpo, cfg.cpi, 9))
    # Largest-magnitude products of both signs.
    windows[0], weights[0] = amax, wmin
    if frames > 1:
        windows[1] = amin if cfg.act_signed else amax
        weights[1] = wmin if cfg.act_signed else wmax
    return windows, weights


def expected_partials(windows, weights):
    return np.stack([ref.mul_partial(windows[f], weights[f]) for f in range(len(weights))])


def simulate(cfg, windows, weights, *, stall, seed=0, levels_per_register=2):
    """Run the stage; returns (partials as frames x pixels x CPO, cycles of the collector)."""
    frames, frame_pixels = windows.shape[:2]
    dut = Mul(cfg, levels_per_register=levels_per_register)
    result = {}

    async def params(ctx):
        ctx.set(dut.params.frame_pixels, frame_pixels)

    async def windows_in(ctx):
        items = [windows[f, p].tolist() for f in range(frames) for p in range(frame_pixels)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed + 1))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [w.tolist() for w in weights], stall=stall, rng=random.Random(seed + 2))

    async def partials_out(ctx):
        items, cycles = await collect(ctx, dut.o, frames * frame_pixels, stall=stall,
                                      rng=random.Random(seed + 3), convert=lambda v: [int(x) for x in v])
        result["items"], result["cycles"] = items, cycles

    run_stage(dut, [params, windows_in, weights_in, partials_out])
    got = np.array(result["items"], np.int64).reshape(frames, frame_pixels, cfg.cpo)
    return got, result["cycles"], dut


@pytest.mark.parametrize("cpi,cpo,act_signed,frame_pixels,levels", [
    (1, 1, False, 1, 2),
    (1, 4, True, 2, 2),
    (2, 2, False, 3, 1),
    (4, 2, True, 1, 2),
    (2, 4, False, 5, 2),
    (4, 4, True, 2, 2),
    (4, 4, False, 3, 1),
])
def test_frames_back_to_back_with_stalls(cpi, cpo, act_signed, frame_pixels, levels):
    cfg = small_config(cpi, cpo, act_signed)
    rng = np.random.default_rng(cpi * 100 + cpo * 10 + frame_pixels)
    windows, weights = make_frames(cfg, frame_pixels, frames=10, rng=rng)
    got, _, _ = simulate(cfg, windows, weights, stall=0.3, seed=frame_pixels, levels_per_register=levels)
    np.testing.assert_array_equal(got, expected_partials(windows, weights))


def test_extremes_reach_partial_bits():
    """All-extreme frames give the largest sums the output lanes must hold, exactly."""
    for act_signed in (False, True):
        cfg = small_config(4, 1, act_signed)
        rng = np.random.default_rng(7)
        windows, weights = make_frames(cfg, 2, frames=2, rng=rng)
        want = expected_partials(windows, weights)
        lo, hi = -(1 << (cfg.partial_bits - 1)), (1 << (cfg.partial_bits - 1)) - 1
        assert want.min() >= lo and want.max() <= hi
        assert max(-want.min(), want.max()) > hi // 2, "extremes should need the top bit"
        got, _, _ = simulate(cfg, windows, weights, stall=0.3, seed=3)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cpi,cpo,levels", [(1, 2, 2), (2, 2, 1), (4, 1, 2)])
def test_one_window_per_cycle(cpi, cpo, levels):
    """Without stalls N windows in several frames come out N + latency cycles after the start."""
    cfg = small_config(cpi, cpo, False)
    rng = np.random.default_rng(11)
    windows, weights = make_frames(cfg, 3, frames=8, rng=rng)
    got, cycles, dut = simulate(cfg, windows, weights, stall=0.0, levels_per_register=levels)
    np.testing.assert_array_equal(got, expected_partials(windows, weights))
    # Window k is taken at the end of cycle k (1-based) and offered `latency` cycles later.
    assert cycles == windows.shape[0] * windows.shape[1] + dut.latency


def test_rejects_bad_levels_per_register():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # the half-built instance
        with pytest.raises(ValueError, match="levels_per_register = 3 is out of range: 1 or 2"):
            Mul(small_config(1, 1, False), levels_per_register=3)
        gc.collect()


def test_calls_with_different_frame_sizes_back_to_back():
    """The window counter is back at its start after every frame, so a call with another
    ``frame_pixels`` follows on the next cycle with no reset."""
    cfg = small_config(2, 2, True)
    rng = np.random.default_rng(31)
    calls = [make_frames(cfg, fp, frames, rng) for fp, frames in [(3, 2), (1, 3), (4, 2), (2, 2)]]
    dut = Mul(cfg)
    result = {}

    async def windows_in(ctx):
        for windows, _ in calls:
            ctx.set(dut.params.frame_pixels, windows.shape[1])
            await feed(ctx, dut.i, [w.tolist() for w in windows.reshape(-1, cfg.cpi, 9)],
                       stall=0.3, rng=random.Random(windows.shape[1]))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [w.tolist() for _, weights in calls for w in weights],
                   stall=0.3, rng=random.Random(2))

    async def partials_out(ctx):
        count = sum(w.shape[0] * w.shape[1] for w, _ in calls)
        result["items"], _ = await collect(ctx, dut.o, count, stall=0.3, rng=random.Random(3),
                                           convert=lambda v: [int(x) for x in v])

    run_stage(dut, [windows_in, weights_in, partials_out], deadline_cycles=20_000)
    want = np.concatenate([expected_partials(w, k).reshape(-1, cfg.cpo) for w, k in calls])
    np.testing.assert_array_equal(np.array(result["items"], np.int64), want)
