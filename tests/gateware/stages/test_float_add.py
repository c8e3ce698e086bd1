# amaranth: UnusedElaboratable=no
"""Stage ``FloatAdd`` (fp32 ``add``) in Amaranth's simulator against ``reference_float.accumulate``.

Several output groups of GI frames each run back to back in one simulation, with random
stalls on the partial, bias and output streams; every result must equal the reference bit
for bit (NaN as ``0x7FC00000``). Frames shorter than the read-modify-write distance (8)
make a partial wait for the previous frame's sum of its pixel; the throughput tests count
the cycles that costs, and check that longer frames take one partial per cycle.
"""

import random

import numpy as np
import pytest

from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd
from hlsinf.gateware.stages.float_add import FloatAdd
from hlsinf.sim.streams import collect, feed, run_stage

from ..lib.float_operands import SPECIALS, dot_values, random_normals
from .test_float_mul import check, signed_words, to_u32


def float_config(cpo, subnormals=True, wmax=6, hmax=4):
    return KernelConfig.from_format("fp32", cpi=1, cpo=cpo, wmax=wmax, hmax=hmax, imax=16,
                                    fp32_subnormals=subnormals)


def make_groups(cfg, groups_out, groups_in, frame_pixels, rng):
    """Partials ``[go][gi][pixel][cpo]`` and biases ``[go][cpo]`` (uint32 bits).

    Group 0 mixes in specials (zeros of both signs, subnormals, infinities, NaNs), group 1
    huge values that overflow to infinity and cancel, group 2 tiny ones (subnormal sums);
    the rest are similar magnitudes of mixed signs, where the order of the sums matters.
    """
    partials = dot_values(rng, (groups_out, groups_in, frame_pixels, cfg.cpo))
    biases = dot_values(rng, (groups_out, cfg.cpo))
    specials = np.asarray(SPECIALS, np.uint32)
    mask = rng.random(partials[0].shape) < 0.3
    partials[0] = np.where(mask, specials[rng.integers(0, len(specials), partials[0].shape)], partials[0])
    biases[0] = specials[rng.integers(0, len(specials), cfg.cpo)]
    for g, (lo, hi) in ((1, (250, 254)), (2, (0, 3))):
        if groups_out > g:
            partials[g] = random_normals(rng, partials[g].size, lo, hi).reshape(partials[g].shape)
            biases[g] = random_normals(rng, cfg.cpo, lo, hi)
    return partials, biases


def expected(cfg, partials, biases):
    """go x pixels x CPO canonical bits: ``accumulate`` wants ``... x GI x CPO``."""
    p = rf.from_bits(partials).transpose(0, 2, 1, 3)                      # go x pixels x gi x cpo
    b = rf.from_bits(biases)[:, None, :]
    return rf.to_bits(rf.accumulate(p, b, subnormals=cfg.fp32_subnormals), canonical=True)


def simulate(cfg, partials, biases, *, stall, seed=0):
    """Run the stage; returns (outputs as go x pixels x CPO, collector cycles, dut)."""
    groups_out, groups_in, frame_pixels = partials.shape[:3]
    dut = FloatAdd(cfg)
    result = {}

    async def params(ctx):
        ctx.set(dut.params.frame_pixels, frame_pixels)
        ctx.set(dut.params.groups_in, groups_in)

    async def partials_in(ctx):
        items = [signed_words(p) for p in partials.reshape(-1, cfg.cpo)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed + 1))

    async def biases_in(ctx):
        await feed(ctx, dut.bias, [signed_words(b) for b in biases], stall=stall, rng=random.Random(seed + 2))

    async def outputs(ctx):
        items, cycles = await collect(ctx, dut.o, groups_out * frame_pixels, stall=stall,
                                      rng=random.Random(seed + 3), convert=to_u32)
        result["items"], result["cycles"] = items, cycles

    run_stage(dut, [params, partials_in, biases_in, outputs], deadline_cycles=40_000)
    got = np.array(result["items"], np.uint32).reshape(groups_out, frame_pixels, cfg.cpo)
    return got, result["cycles"], dut


@pytest.mark.parametrize("cpo,frame_pixels,groups_in", [
    (1, 1, 1), (2, 1, 3), (4, 2, 2), (2, 3, 4), (1, 5, 2), (4, 3, 1), (2, 9, 3), (1, 8, 2), (2, 7, 2),
])
def test_output_groups_back_to_back_with_stalls(cpo, frame_pixels, groups_in):
    cfg = float_config(cpo)
    rng = np.random.default_rng(100 * cpo + 10 * frame_pixels + groups_in)
    partials, biases = make_groups(cfg, 5, groups_in, frame_pixels, rng)
    got, _, _ = simulate(cfg, partials, biases, stall=0.3, seed=frame_pixels)
    check(got, expected(cfg, partials, biases))


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_subnormal_modes(subnormals):
    """Sums of values near 2**-126: flushing or not changes the results."""
    cfg = float_config(2, subnormals)
    rng = np.random.default_rng(5)
    partials = random_normals(rng, 4 * 3 * 2 * 2, 0, 3).reshape(4, 3, 2, 2)
    biases = random_normals(rng, 4 * 2, 0, 2).reshape(4, 2)
    partials[0, 0, 0] = [0x00000001, 0x807FFFFF]
    want = expected(cfg, partials, biases)
    assert (want != expected(float_config(2, not subnormals), partials, biases)).any()
    got, _, _ = simulate(cfg, partials, biases, stall=0.3, seed=2)
    check(got, want)


def test_bias_added_last():
    """Values where adding the bias first or in the middle would give another result."""
    cfg = float_config(1)
    big, one = 0x4B800000, 0x3F800000            # 2**24 and 1: 2**24 + 1 rounds back to 2**24
    minus_big = big | 0x80000000
    partials = np.array([[[[big]], [[minus_big]]]], np.uint32)     # one group, GI = 2, one pixel
    biases = np.array([[one]], np.uint32)
    want = expected(cfg, partials, biases)
    assert want[0, 0, 0] == one                  # (2**24 - 2**24) + 1; bias first would give 0
    got, _, _ = simulate(cfg, partials, biases, stall=0.0)
    check(got, want)


@pytest.mark.parametrize("frame_pixels,groups_in", [(8, 3), (9, 2), (12, 1), (1, 1), (3, 1)])
def test_one_partial_per_cycle(frame_pixels, groups_in):
    """Without stalls, frames of 8 or more pixels (or one frame per group) take one partial
    per cycle: N partials in N + latency cycles, no gap between frames or groups."""
    cfg = float_config(2)
    rng = np.random.default_rng(frame_pixels)
    partials, biases = make_groups(cfg, 3, groups_in, frame_pixels, rng)
    got, cycles, dut = simulate(cfg, partials, biases, stall=0.0)
    check(got, expected(cfg, partials, biases))
    assert dut.latency == 2 + 2 * FAdd.LATENCY == 14
    assert cycles == partials.size // cfg.cpo + dut.latency


@pytest.mark.parametrize("frame_pixels,groups_in", [(1, 3), (2, 4), (5, 2), (7, 3)])
def test_short_frames_wait_for_their_rows(frame_pixels, groups_in):
    """A frame of F < 8 pixels that reads the buffer takes 8 cycles: an output group takes
    F + (GI - 1) * 8 cycles, as docs/numbers.md says."""
    cfg = float_config(2)
    groups_out = 3
    rng = np.random.default_rng(10 + frame_pixels)
    partials, biases = make_groups(cfg, groups_out, groups_in, frame_pixels, rng)
    got, cycles, dut = simulate(cfg, partials, biases, stall=0.0)
    check(got, expected(cfg, partials, biases))
    per_group = frame_pixels + (groups_in - 1) * max(frame_pixels, FloatAdd.MIN_FULL_RATE_FRAME)
    assert cycles == groups_out * per_group + dut.latency


def test_calls_with_different_params_back_to_back():
    """The counters are back at their start after every output group: a new call with other
    parameters follows with no reset."""
    cfg = float_config(2)
    calls = [(2, 3, 2), (1, 2, 3), (9, 2, 2), (3, 1, 2)]   # frame_pixels, groups_in, groups_out
    rng = np.random.default_rng(21)
    cases = [make_groups(cfg, go, gi, fp, rng) for fp, gi, go in calls]
    dut = FloatAdd(cfg)
    result = {}

    async def partials_in(ctx):
        for (fp, gi, _), (partials, _) in zip(calls, cases):
            ctx.set(dut.params.frame_pixels, fp)
            ctx.set(dut.params.groups_in, gi)
            await feed(ctx, dut.i, [signed_words(p) for p in partials.reshape(-1, cfg.cpo)],
                       stall=0.3, rng=random.Random(fp * 10 + gi))

    async def biases_in(ctx):
        await feed(ctx, dut.bias, [signed_words(b) for _, biases in cases for b in biases],
                   stall=0.3, rng=random.Random(2))

    async def outputs(ctx):
        count = sum(fp * go for fp, _, go in calls)
        result["items"], _ = await collect(ctx, dut.o, count, stall=0.3, rng=random.Random(3), convert=to_u32)

    run_stage(dut, [partials_in, biases_in, outputs], deadline_cycles=20_000)
    want = np.concatenate([expected(cfg, p, b).reshape(-1, cfg.cpo) for p, b in cases])
    check(np.array(result["items"], np.uint32), want)


def test_rejects_integer_config():
    with pytest.raises(ValueError, match="allowed 'fp32'"):
        FloatAdd(KernelConfig(cpi=1, cpo=1, wmax=4, hmax=2, imax=16))


@pytest.mark.parametrize("cpo", [1, 4])
def test_float_stages_connect(cpo):
    """mul -> add -> post-ops of an fp32 cfg connect with ``wiring.connect`` (the same binary32
    lane shape on every stream) and stay 32 bits a lane."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring

    from hlsinf.gateware.stages.float_mul import FloatMul
    from hlsinf.gateware.stages.float_post import FloatBatchNorm, FloatLeakyRelu

    cfg = KernelConfig.from_format("fp32", cpi=2, cpo=cpo, wmax=6, hmax=4, imax=16, post_ops=("leaky_relu", "bn"))
    mul, add, leaky, bn = FloatMul(cfg), FloatAdd(cfg), FloatLeakyRelu(cfg), FloatBatchNorm(cfg)
    m = Module()
    wiring.connect(m, mul.o, add.i)
    wiring.connect(m, add.o, leaky.i)
    wiring.connect(m, leaky.o, bn.i)
    for layout in (add.partial_layout, add.bias_layout, add.acc_layout):
        assert layout.size == 32 * cpo
    assert bn.signature.members["item"].signature.members["payload"].shape.size == 2 * 32 * cpo
