"""Stage ``relu`` of the fp32 kernel (:class:`FloatRelu`) against ``reference_float.relu`` / ``clip``,
bit for bit, with random stalls."""

import random

import numpy as np
import pytest
from amaranth.hdl import Shape

from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.float_relu import FLOAT_NO_LOWER_BOUND, FLOAT_NO_UPPER_BOUND, FloatRelu
from hlsinf.sim.streams import collect, feed, run_stage
from tests.gateware.lib.float_operands import SPECIALS

CFG = KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=16, wmax=8, hmax=8)


def lane_value(shape, bits: int) -> int:
    """``bits`` (uint32) as the integer a lane of ``shape`` holds."""
    bits = int(bits) & 0xFFFFFFFF
    return bits - (1 << 32) if Shape.cast(shape).signed and bits >> 31 else bits


def random_values(rng, n) -> np.ndarray:
    """``n x CPO`` bit patterns: any pattern, the specials, values near the bounds drawn."""
    vals = rng.integers(0, 1 << 32, (n, CFG.cpo), dtype=np.uint64).astype(np.uint32)
    small = rf.to_bits(rng.normal(0, 4, (n, CFG.cpo)).astype(np.float32))
    pick = rng.random((n, CFG.cpo))
    vals = np.where(pick < 0.5, small, vals)
    specials = np.asarray(SPECIALS, np.uint32)
    vals = np.where(pick > 0.8, specials[rng.integers(0, len(specials), (n, CFG.cpo))], vals)
    return vals.astype(np.uint32)


def random_call(rng, n):
    relu = int(rng.integers(0, 2))
    choice = rng.integers(0, 4)
    if choice == 0:
        lo, hi = None, None
    elif choice == 1:     # ordinary bounds (maybe lo > 0 with relu, hi < 0)
        lo, hi = sorted(float(v) for v in rng.normal(0, 3, 2))
        lo, hi = rf.float_bits(lo), rf.float_bits(hi)
    else:                 # bounds from the specials: +-0, infinities, NaNs, subnormals; any order
        lo, hi = (int(SPECIALS[int(k)]) for k in rng.integers(0, len(SPECIALS), 2))
        if choice == 3:
            lo = None if rng.random() < 0.5 else lo
    values = random_values(rng, n)
    y = rf.from_bits(values)
    want = rf.clip(rf.relu(y) if relu else y, lo, hi)
    params = dict(relu=relu, clip_lo=FLOAT_NO_LOWER_BOUND if lo is None else lo & 0xFFFFFFFF,
                  clip_hi=FLOAT_NO_UPPER_BOUND if hi is None else hi & 0xFFFFFFFF)
    return params, values, rf.to_bits(want)


def run_calls(calls, *, stall, seed=0):
    dut = FloatRelu(CFG)
    in_shape = dut.i.payload.shape().elem_shape
    done, results = [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, values, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            items = [[lane_value(in_shape, v) for v in px] for px in values]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 1)
        for _, values, _ in calls:
            results.append(await collect(ctx, dut.o, len(values), stall=stall, rng=rng,
                                         convert=lambda p: [int(p[k]) & 0xFFFFFFFF for k in range(CFG.cpo)]))
            done.append(True)

    run_stage(dut, [feeder, collector])
    return results


def check(calls, results):
    for (params, values, want), (items, _) in zip(calls, results):
        assert len(items) == len(want)
        for n, (got, exp) in enumerate(zip(items, want.tolist())):
            assert got == exp, (f"item {n} of call {params}: input {[hex(v) for v in values[n]]}: "
                                f"got {[hex(v) for v in got]}, expected {[hex(v) for v in exp]}")


def test_random_calls_with_stalls():
    rng = np.random.default_rng(1)
    calls = [random_call(rng, int(rng.integers(1, 40))) for _ in range(12)]
    check(calls, run_calls(calls, stall=0.3))


def test_every_special_against_every_bound():
    """Each special value clipped by each pair of special bounds, with and without ReLU."""
    specials = np.asarray(SPECIALS, np.uint32)
    values = specials.repeat(CFG.cpo).reshape(-1, CFG.cpo)
    calls = []
    for relu in (0, 1):
        for lo in (None, 0x80000000, 0x00000000, 0xFF800000, 0x3F800000, 0xFFC00001):
            for hi in (None, 0x00000000, 0x7F800000, 0x7FC00000, 0x80000001, 0x3F800000):
                y = rf.from_bits(values)
                want = rf.to_bits(rf.clip(rf.relu(y) if relu else y, lo, hi))
                calls.append((dict(relu=relu, clip_lo=FLOAT_NO_LOWER_BOUND if lo is None else lo,
                                   clip_hi=FLOAT_NO_UPPER_BOUND if hi is None else hi), values, want))
    check(calls, run_calls(calls, stall=0.2, seed=3))


def test_no_bound_encoding_is_no_bound():
    """The bits written for None clip nothing: every bit pattern keeps its value."""
    every = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
    y = rf.from_bits(every)
    assert (rf.to_bits(rf.clip(y, FLOAT_NO_LOWER_BOUND, FLOAT_NO_UPPER_BOUND)) == every).all()
    assert (rf.to_bits(rf.clip(y, rf.float_bits(rf.bits_float(FLOAT_NO_LOWER_BOUND)), None)) == every).all()


def test_throughput():
    """Unstalled, N items come out in N + latency cycles."""
    rng = np.random.default_rng(2)
    calls = [random_call(rng, 50)]
    results = run_calls(calls, stall=0.0)
    check(calls, results)
    assert results[0][1] == 50 + FloatRelu.latency


def test_integer_cfg_refused():
    with pytest.raises(ValueError, match="fp32 stage"):
        FloatRelu(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8))
