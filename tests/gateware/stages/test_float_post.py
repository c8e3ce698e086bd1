# amaranth: UnusedElaboratable=no
"""fp32 post-op stages ``FloatLeakyRelu`` and ``FloatBatchNorm`` in simulation against
``reference_float.leaky_relu`` / ``batch_norm``, bit for bit (NaN as ``0x7FC00000``).

Calls with the stage on and off run back to back under random stalls; values include
zeros of both signs, subnormals, infinities, NaNs (with the sign set too) and huge and
tiny magnitudes, slopes and bn parameters likewise. Frames of one pixel make several
frames' bn biases wait in the stage's queue at once.
"""

import random

import numpy as np
import pytest

from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd, FMul
from hlsinf.gateware.stages.float_post import FloatBatchNorm, FloatLeakyRelu
from hlsinf.sim.streams import collect, feed, run_stage

from ..lib.float_operands import SPECIALS, dot_values, random_normals
from .test_float_mul import signed_words, to_u32

SLOPES = [0x3DCCCCCD, 0x3F800000, 0x00000000, 0x80000000, 0xBF000000, 0x7F800000, 0x7FC00000, 0x00000001,
          0x7F7FFFFF, 0x0D000000]    # 0.1, 1, +-0, -0.5, inf, NaN, subnormal, largest, tiny


def float_config(cpo, post_ops, subnormals=True):
    return KernelConfig.from_format("fp32", cpi=1, cpo=cpo, wmax=8, hmax=8, imax=16, post_ops=post_ops,
                                    fp32_subnormals=subnormals)


def activations(rng, shape):
    """Values for a post-op: tree-like values, a wide spread, 10 % specials, both signs."""
    values = dot_values(rng, shape)
    special = rng.random(shape) < 0.1
    values = np.where(special, np.asarray(SPECIALS, np.uint32)[rng.integers(0, len(SPECIALS), shape)], values)
    huge = rng.random(shape) < 0.05
    values = np.where(huge, random_normals(rng, int(np.prod(shape)), 240, 254).reshape(shape), values)
    return values.astype(np.uint32)


def canonical(values) -> np.ndarray:
    return rf.to_bits(values, canonical=True)


def run(dut, cfg, calls, *, stall, seed=0, items=False):
    """``calls``: (params dict, pixels [n][cpo] uint32, items list or None). Returns the
    outputs of each call and the collector's cycles per call."""
    done, results = [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, pixels, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await feed(ctx, dut.i, [signed_words(px) for px in pixels], stall=stall, rng=rng)

    async def item_feeder(ctx):
        rng = random.Random(seed + 1)
        stream = [{"mult": signed_words(mult), "bias": signed_words(bias)}
                  for _, _, its in calls if its for mult, bias in its]
        await feed(ctx, dut.item, stream, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 2)
        for _, pixels, _ in calls:
            got, cycles = await collect(ctx, dut.o, len(pixels), stall=stall, rng=rng, convert=to_u32)
            results.append((np.array(got, np.uint32), cycles))
            done.append(True)

    run_stage(dut, [feeder, item_feeder, collector] if items else [feeder, collector], deadline_cycles=40_000)
    return results


# Leaky ReLU --------------------------------------------------------------------------------

def leaky_calls(rng, cfg, count, pixels):
    calls, want = [], []
    for k in range(count):
        on = k % 3 != 2
        alpha = int(SLOPES[k % len(SLOPES)] if k < len(SLOPES) else random_normals(rng, 1, 100, 140)[0])
        x = activations(rng, (pixels, cfg.cpo))
        calls.append((dict(leaky_relu=int(on), leaky_alpha_num=alpha, leaky_alpha_shift=0), x, None))
        y = rf.leaky_relu(rf.from_bits(x), alpha, subnormals=cfg.fp32_subnormals) if on else rf.from_bits(x)
        want.append(canonical(y))
    return calls, want


@pytest.mark.parametrize("cpo", [1, 2, 4])
def test_leaky_relu_calls_with_stalls(cpo):
    cfg = float_config(cpo, ("leaky_relu",))
    rng = np.random.default_rng(cpo)
    calls, want = leaky_calls(rng, cfg, 12, 7)
    results = run(FloatLeakyRelu(cfg), cfg, calls, stall=0.3, seed=cpo)
    for (got, _), w in zip(results, want):
        np.testing.assert_array_equal(canonical(rf.from_bits(got)), w)


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_leaky_relu_subnormal_modes(subnormals):
    """Negative subnormals and products that underflow: flushed or not. A positive subnormal
    passes unchanged in both modes (it is not multiplied)."""
    cfg = float_config(2, ("leaky_relu",), subnormals)
    rng = np.random.default_rng(9)
    x = random_normals(rng, 40, 0, 30).reshape(20, 2)
    x[0] = [0x00000005, 0x80000005]
    alpha = 0x3DCCCCCD
    calls = [(dict(leaky_relu=1, leaky_alpha_num=alpha, leaky_alpha_shift=0), x, None)]
    want = canonical(rf.leaky_relu(rf.from_bits(x), alpha, subnormals=subnormals))
    assert (want != canonical(rf.leaky_relu(rf.from_bits(x), alpha, subnormals=not subnormals))).any()
    assert want[0, 0] == 0x00000005
    [(got, _)] = run(FloatLeakyRelu(cfg), cfg, calls, stall=0.3)
    np.testing.assert_array_equal(got, want)


def test_leaky_relu_one_item_per_cycle():
    cfg = float_config(2, ("leaky_relu",))
    rng = np.random.default_rng(4)
    calls, want = leaky_calls(rng, cfg, 1, 30)
    dut = FloatLeakyRelu(cfg)
    [(got, cycles)] = run(dut, cfg, calls, stall=0.0)
    np.testing.assert_array_equal(canonical(rf.from_bits(got)), want[0])
    # input FIFO, operand register, multiplier, output register
    assert dut.latency == 1 + 1 + FMul.LATENCY + 1 == 9
    assert cycles == 30 + dut.latency


# Batch norm --------------------------------------------------------------------------------

def bn_calls(rng, cfg, count, frames, pixels):
    calls, want = [], []
    for k in range(count):
        on = k % 4 != 3
        x = activations(rng, (frames, pixels, cfg.cpo))
        mult = activations(rng, (frames, cfg.cpo))
        bias = activations(rng, (frames, cfg.cpo))
        if k == 0:      # plain scales and shifts: few NaNs, cancellation between product and bias
            mult = random_normals(rng, frames * cfg.cpo, 120, 132).reshape(frames, cfg.cpo)
            bias = dot_values(rng, (frames, cfg.cpo))
        params = dict(frame_pixels=pixels, bn=int(on), bn_shift=0, bn_clip_lo=0, bn_clip_hi=0)
        items = list(zip(mult, bias)) if on else []
        calls.append((params, x.reshape(-1, cfg.cpo), items))
        if on:
            y = rf.batch_norm(rf.from_bits(x), rf.from_bits(mult)[:, None], rf.from_bits(bias)[:, None],
                              subnormals=cfg.fp32_subnormals)
        else:
            y = rf.from_bits(x)
        want.append(canonical(y).reshape(-1, cfg.cpo))
    return calls, want


@pytest.mark.parametrize("cpo,pixels", [(1, 1), (2, 3), (4, 1), (2, 12)])
def test_batch_norm_calls_with_stalls(cpo, pixels):
    cfg = float_config(cpo, ("bn",))
    rng = np.random.default_rng(10 * cpo + pixels)
    calls, want = bn_calls(rng, cfg, 6, 4, pixels)
    results = run(FloatBatchNorm(cfg), cfg, calls, stall=0.3, seed=pixels, items=True)
    for (got, _), w in zip(results, want):
        np.testing.assert_array_equal(canonical(rf.from_bits(got)), w)


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_batch_norm_subnormal_modes(subnormals):
    cfg = float_config(2, ("bn",), subnormals)
    rng = np.random.default_rng(12)
    x = random_normals(rng, 3 * 4 * 2, 50, 80).reshape(3, 4, 2)
    mult = random_normals(rng, 3 * 2, 50, 80).reshape(3, 2)
    bias = random_normals(rng, 3 * 2, 0, 2).reshape(3, 2)
    calls = [(dict(frame_pixels=4, bn=1, bn_shift=0, bn_clip_lo=0, bn_clip_hi=0), x.reshape(-1, 2),
              list(zip(mult, bias)))]
    def ref(sub):
        return canonical(rf.batch_norm(rf.from_bits(x), rf.from_bits(mult)[:, None], rf.from_bits(bias)[:, None],
                                       subnormals=sub)).reshape(-1, 2)
    assert (ref(subnormals) != ref(not subnormals)).any()
    [(got, _)] = run(FloatBatchNorm(cfg), cfg, calls, stall=0.3, items=True)
    np.testing.assert_array_equal(got, ref(subnormals))


def test_batch_norm_product_and_sum_rounded_separately():
    """x * m + b with the product inexact: a fused multiply-add would differ in the last bit."""
    cfg = float_config(1, ("bn",))
    x, m = np.float32(1 + 2 ** -12), np.float32(1 + 2 ** -12)        # x * m = 1 + 2**-11 + 2**-24
    b = np.float32(-1)
    fused = np.float32(np.float64(x) * np.float64(m) + np.float64(b))
    want = rf.batch_norm(x, m, b)
    assert rf.to_bits(want) != rf.to_bits(fused)
    calls = [(dict(frame_pixels=1, bn=1, bn_shift=0, bn_clip_lo=0, bn_clip_hi=0),
              rf.to_bits(np.array([[x]])), [(rf.to_bits([m]), rf.to_bits([b]))])]
    [(got, _)] = run(FloatBatchNorm(cfg), cfg, calls, stall=0.0, items=True)
    assert got[0, 0] == rf.to_bits(want)


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_batch_norm_one_item_per_cycle(subnormals):
    """Frames of one pixel (a new item every cycle) and of five, without stalls: N items in
    N + latency cycles."""
    cfg = float_config(2, ("bn",), subnormals)
    rng = np.random.default_rng(5)
    dut = FloatBatchNorm(cfg)
    mul_latency = FMul.LATENCY if subnormals else FMul.LATENCY_FTZ
    # input FIFO, operand register, multiplier, adder, output register
    assert dut.latency == 1 + 1 + mul_latency + FAdd.LATENCY + 1
    for frames, pixels in ((20, 1), (4, 5)):
        calls, want = bn_calls(rng, cfg, 1, frames, pixels)
        [(got, cycles)] = run(FloatBatchNorm(cfg), cfg, calls, stall=0.0, items=True)
        np.testing.assert_array_equal(canonical(rf.from_bits(got)), want[0])
        assert cycles == frames * pixels + dut.latency


def test_rejects_integer_config():
    cfg = KernelConfig(cpi=1, cpo=1, wmax=4, hmax=2, imax=16, post_ops=("leaky_relu", "bn"))
    with pytest.raises(ValueError, match="allowed 'fp32'"):
        FloatLeakyRelu(cfg)
    with pytest.raises(ValueError, match="allowed 'fp32'"):
        FloatBatchNorm(cfg)
