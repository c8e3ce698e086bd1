# amaranth: UnusedElaboratable=no
"""Stage ``FloatMul`` (fp32 ``mul``) in Amaranth's simulator against ``reference_float.mul_partial``.

Several frames with different weight sets run back to back with random stalls on the
window, weight and output streams; every partial sum must equal the reference bit for bit
(NaN compared as ``0x7FC00000``). Values: mostly similar magnitudes with mixed signs (so
the tree order matters), a wide spread, and frames full of specials: zeros of both signs,
subnormals, infinities, NaNs, the largest and smallest normals.
"""

import random

import numpy as np
import pytest

from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd, FMul
from hlsinf.gateware.stages.float_mul import FloatMul
from hlsinf.sim.streams import collect, feed, run_stage

from ..lib.float_operands import SPECIALS, dot_values, random_normals


def float_config(cpi, cpo, subnormals=True):
    return KernelConfig.from_format("fp32", cpi=cpi, cpo=cpo, wmax=4, hmax=2, imax=64, fp32_subnormals=subnormals)


def signed_words(bits) -> list:
    """uint32 bit patterns as the signed(32) lane values the streams carry."""
    return np.asarray(bits, np.uint32).view(np.int32).tolist()


def to_u32(values) -> list:
    return [int(v) & 0xFFFFFFFF for v in values]


def make_frames(cfg, frame_pixels, frames, rng):
    """Windows ``[frame][pixel][cpi][9]`` and weight sets ``[frame][cpo][cpi][9]`` (uint32 bits).

    Frame 0 is all specials; frame 1 pairs huge with tiny values (overflow to inf,
    underflow to subnormals and zero); the rest come from ``dot_values``.
    """
    windows = dot_values(rng, (frames, frame_pixels, cfg.cpi, 9))
    weights = dot_values(rng, (frames, cfg.cpo, cfg.cpi, 9))
    specials = np.asarray(SPECIALS, np.uint32)
    windows[0] = specials[rng.integers(0, len(specials), windows[0].shape)]
    weights[0] = specials[rng.integers(0, len(specials), weights[0].shape)]
    if frames > 1:
        windows[1] = random_normals(rng, windows[1].size, 200, 254).reshape(windows[1].shape)
        weights[1] = np.where(rng.random(weights[1].shape) < 0.5,
                              random_normals(rng, weights[1].size, 1, 60).reshape(weights[1].shape),
                              random_normals(rng, weights[1].size, 100, 140).reshape(weights[1].shape))
    return windows, weights


def expected(cfg, windows, weights):
    """frames x pixels x CPO canonical bit patterns."""
    return np.stack([rf.to_bits(rf.mul_partial(rf.from_bits(windows[f]), rf.from_bits(weights[f]),
                                               subnormals=cfg.fp32_subnormals), canonical=True)
                     for f in range(len(weights))])


def simulate(cfg, windows, weights, *, stall, seed=0):
    """Run the stage; returns (partials as frames x pixels x CPO uint32, collector cycles, dut)."""
    frames, frame_pixels = windows.shape[:2]
    dut = FloatMul(cfg)
    result = {}

    async def params(ctx):
        ctx.set(dut.params.frame_pixels, frame_pixels)

    async def windows_in(ctx):
        items = [signed_words(windows[f, p]) for f in range(frames) for p in range(frame_pixels)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed + 1))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [signed_words(w) for w in weights], stall=stall, rng=random.Random(seed + 2))

    async def partials_out(ctx):
        items, cycles = await collect(ctx, dut.o, frames * frame_pixels, stall=stall,
                                      rng=random.Random(seed + 3), convert=to_u32)
        result["items"], result["cycles"] = items, cycles

    run_stage(dut, [params, windows_in, weights_in, partials_out])
    got = np.array(result["items"], np.uint32).reshape(frames, frame_pixels, cfg.cpo)
    return got, result["cycles"], dut


def check(got, want):
    bad = np.argwhere(got != want)
    assert len(bad) == 0, f"{len(bad)} of {want.size} wrong, first at {tuple(bad[0])}: " \
                          f"{int(got[tuple(bad[0])]):#010x} != {int(want[tuple(bad[0])]):#010x}"


@pytest.mark.parametrize("cpi,cpo,frame_pixels", [(1, 1, 1), (1, 4, 2), (2, 2, 3), (4, 1, 2), (2, 4, 1)])
def test_frames_back_to_back_with_stalls(cpi, cpo, frame_pixels):
    cfg = float_config(cpi, cpo)
    rng = np.random.default_rng(100 * cpi + 10 * cpo + frame_pixels)
    windows, weights = make_frames(cfg, frame_pixels, frames=6, rng=rng)
    want = expected(cfg, windows, weights)
    got, _, _ = simulate(cfg, windows, weights, stall=0.3, seed=frame_pixels)
    check(got, want)


@pytest.mark.slow
def test_four_by_four_with_stalls():
    """CPI = CPO = 4: 144 multipliers, four 36-leaf trees (~90 s in the Python simulator)."""
    cfg = float_config(4, 4)
    rng = np.random.default_rng(44)
    windows, weights = make_frames(cfg, 2, frames=4, rng=rng)
    got, _, _ = simulate(cfg, windows, weights, stall=0.3, seed=4)
    check(got, expected(cfg, windows, weights))


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_subnormal_modes(subnormals):
    """Products and sums near 2**-126: the two modes give different results, each its own
    reference's."""
    cfg = float_config(1, 2, subnormals)
    rng = np.random.default_rng(7)
    frames, frame_pixels = 4, 3
    windows = random_normals(rng, frames * frame_pixels * 9, 40, 90).reshape(frames, frame_pixels, 1, 9)
    weights = random_normals(rng, frames * 2 * 9, 40, 90).reshape(frames, 2, 1, 9)
    windows[0, 0, 0, :4] = [0x00000001, 0x807FFFFF, 0x00400000, 0x80000000]
    want = expected(cfg, windows, weights)
    other = expected(float_config(1, 2, not subnormals), windows, weights)
    assert (want != other).any(), "the data should tell the two modes apart"
    got, _, dut = simulate(cfg, windows, weights, stall=0.2, seed=11)
    check(got, want)
    assert dut.mul_latency == (FMul.LATENCY if subnormals else FMul.LATENCY_FTZ)


@pytest.mark.parametrize("cpi,cpo,subnormals", [(1, 2, True), (2, 1, False), (4, 1, True)])
def test_one_window_per_cycle(cpi, cpo, subnormals):
    """Without stalls N windows in several frames come out N + latency cycles after the start."""
    cfg = float_config(cpi, cpo, subnormals)
    rng = np.random.default_rng(3)
    windows, weights = make_frames(cfg, 3, frames=5, rng=rng)
    got, cycles, dut = simulate(cfg, windows, weights, stall=0.0)
    check(got, expected(cfg, windows, weights))
    tree_levels = int(np.ceil(np.log2(cpi * 9)))
    assert dut.latency == 1 + (FMul.LATENCY if subnormals else FMul.LATENCY_FTZ) + tree_levels * FAdd.LATENCY
    assert cycles == windows.shape[0] * windows.shape[1] + dut.latency
    assert dut.multipliers == cpo * cpi * 9 and dut.adders == cpo * (cpi * 9 - 1)


def test_calls_with_different_frame_sizes_back_to_back():
    """The window counter is back at its start after every frame: a call with another
    ``frame_pixels`` follows on the next cycle."""
    cfg = float_config(2, 2)
    rng = np.random.default_rng(31)
    calls = [make_frames(cfg, fp, frames, rng) for fp, frames in [(3, 2), (1, 3), (4, 2)]]
    dut = FloatMul(cfg)
    result = {}

    async def windows_in(ctx):
        for windows, _ in calls:
            ctx.set(dut.params.frame_pixels, windows.shape[1])
            await feed(ctx, dut.i, [signed_words(w) for w in windows.reshape(-1, cfg.cpi, 9)],
                       stall=0.3, rng=random.Random(windows.shape[1]))

    async def weights_in(ctx):
        await feed(ctx, dut.weights, [signed_words(w) for _, weights in calls for w in weights],
                   stall=0.3, rng=random.Random(2))

    async def partials_out(ctx):
        count = sum(w.shape[0] * w.shape[1] for w, _ in calls)
        result["items"], _ = await collect(ctx, dut.o, count, stall=0.3, rng=random.Random(3), convert=to_u32)

    run_stage(dut, [windows_in, weights_in, partials_out], deadline_cycles=20_000)
    want = np.concatenate([expected(cfg, w, k).reshape(-1, cfg.cpo) for w, k in calls])
    check(np.array(result["items"], np.uint32), want)


def test_rejects_integer_config():
    with pytest.raises(ValueError, match="allowed 'fp32'"):
        FloatMul(KernelConfig(cpi=1, cpo=1, wmax=4, hmax=2, imax=16))
