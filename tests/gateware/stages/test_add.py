"""Stage ``add`` in Amaranth's simulator against a plain numpy sum over input groups
followed by ``reference.add_bias``.

Several output groups of GI frames each run back to back in one simulation, with random
stalls on the partial, bias and output streams. Frames of 1, 2 and 3 pixels make the
buffer return a row before the previous frame's write of it has landed (forwarding).
"""

import random

import numpy as np
import pytest

from hlsinf.config import KernelConfig
from hlsinf import reference as ref
from hlsinf.gateware.stages.add import Add

from hlsinf.sim.streams import collect, feed, run_stage


def small_config(cpo, cpi=1):
    return KernelConfig(cpi=cpi, cpo=cpo, wmax=4, hmax=2, imax=16)


def partial_range(cfg):
    """What ``mul`` can produce: CPI x 9 products."""
    plo, phi = cfg.product_range
    return plo * cfg.cpi * 9, phi * cfg.cpi * 9


def make_groups(cfg, groups_out, groups_in, frame_pixels, rng):
    """Partials ``[go][gi][pixel][cpo]`` and biases ``[go][cpo]``.

    Output group 0 is all largest partials with the largest bias and group 1 all smallest
    with the smallest, so both ends saturate; the rest are random, a third of the values
    extreme, biases sometimes near the accumulator limits.
    """
    lo, hi = partial_range(cfg)
    blo, bhi = cfg.bias_range
    partials = rng.integers(lo, hi + 1, (groups_out, groups_in, frame_pixels, cfg.cpo))
    extreme = rng.random(partials.shape) < 0.3
    partials = np.where(extreme, rng.choice([lo, hi], partials.shape), partials)
    biases = np.where(rng.random((groups_out, cfg.cpo)) < 0.5,
                      rng.integers(-5000, 5000, (groups_out, cfg.cpo)),
                      rng.choice([blo, bhi, blo + hi, bhi + lo], (groups_out, cfg.cpo)))
    partials[0], biases[0] = hi, bhi
    if groups_out > 1:
        partials[1], biases[1] = lo, blo
    return partials, biases


def expected_outputs(cfg, partials, biases):
    sums = partials.astype(np.int64).sum(axis=1)                     # go x pixels x cpo
    return np.stack([ref.add_bias(sums[g], biases[g], cfg) for g in range(len(biases))])


def simulate(cfg, partials, biases, *, stall, seed=0):
    """Run the stage; returns (outputs as go x pixels x CPO, cycles of the collector, dut)."""
    groups_out, groups_in, frame_pixels = partials.shape[:3]
    dut = Add(cfg)
    result = {}

    async def params(ctx):
        ctx.set(dut.params.frame_pixels, frame_pixels)
        ctx.set(dut.params.groups_in, groups_in)

    async def partials_in(ctx):
        items = [p.tolist() for p in partials.reshape(-1, cfg.cpo)]
        await feed(ctx, dut.i, items, stall=stall, rng=random.Random(seed + 1))

    async def biases_in(ctx):
        await feed(ctx, dut.bias, [b.tolist() for b in biases], stall=stall, rng=random.Random(seed + 2))

    async def outputs(ctx):
        items, cycles = await collect(ctx, dut.o, groups_out * frame_pixels, stall=stall,
                                      rng=random.Random(seed + 3), convert=lambda v: [int(x) for x in v])
        result["items"], result["cycles"] = items, cycles

    run_stage(dut, [params, partials_in, biases_in, outputs], deadline_cycles=20_000)
    got = np.array(result["items"], np.int64).reshape(groups_out, frame_pixels, cfg.cpo)
    return got, result["cycles"], dut


@pytest.mark.parametrize("cpo,frame_pixels,groups_in", [
    (1, 1, 1), (2, 1, 3), (4, 2, 2), (2, 3, 4), (1, 5, 2), (4, 3, 1), (2, 2, 5),
])
def test_output_groups_back_to_back_with_stalls(cpo, frame_pixels, groups_in):
    cfg = small_config(cpo)
    rng = np.random.default_rng(100 * cpo + 10 * frame_pixels + groups_in)
    partials, biases = make_groups(cfg, 5, groups_in, frame_pixels, rng)
    want = expected_outputs(cfg, partials, biases)
    got, _, _ = simulate(cfg, partials, biases, stall=0.3, seed=frame_pixels)
    np.testing.assert_array_equal(got, want)


def test_saturates_both_ends():
    cfg = small_config(2, cpi=4)
    rng = np.random.default_rng(5)
    partials, biases = make_groups(cfg, 4, 3, 2, rng)
    want = expected_outputs(cfg, partials, biases)
    lo, hi = cfg.acc_range
    assert (want[0] == hi).all() and (want[1] == lo).all()
    got, _, _ = simulate(cfg, partials, biases, stall=0.3, seed=9)
    np.testing.assert_array_equal(got, want)


def test_largest_sums_are_exact():
    """imax channels of extreme partials: the largest sums KernelConfig allows, no bias."""
    cfg = small_config(2, cpi=4)
    groups_in = cfg.imax // cfg.cpi
    lo, hi = partial_range(cfg)
    partials = np.empty((2, groups_in, 3, cfg.cpo), np.int64)
    partials[0], partials[1] = hi, lo
    biases = np.zeros((2, cfg.cpo), np.int64)
    want = expected_outputs(cfg, partials, biases)
    assert want[0].min() == cfg.sum_range[1] and want[1].max() == cfg.sum_range[0]
    got, _, _ = simulate(cfg, partials, biases, stall=0.3, seed=4)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("frame_pixels,groups_in", [(1, 4), (2, 3), (3, 3), (4, 2), (5, 1)])
def test_one_partial_per_cycle(frame_pixels, groups_in):
    """Without stalls N partials (every frame of several output groups) take N + latency
    cycles: no gap between frames or groups, even when a row comes back 1-3 cycles after
    it was written."""
    cfg = small_config(2)
    rng = np.random.default_rng(frame_pixels)
    partials, biases = make_groups(cfg, 4, groups_in, frame_pixels, rng)
    got, cycles, dut = simulate(cfg, partials, biases, stall=0.0)
    np.testing.assert_array_equal(got, expected_outputs(cfg, partials, biases))
    # Partial k is taken at the end of cycle k (1-based); the last one is a last-frame
    # partial, offered on `o` `latency` cycles later.
    assert cycles == partials.size // cfg.cpo + dut.latency


def test_calls_with_different_params_back_to_back():
    """The counters are back at their start after every output group, so a new call with
    other parameters follows on the next cycle with no reset."""
    cfg = small_config(2)
    calls = [(2, 3, 2), (1, 2, 3), (3, 1, 2), (2, 2, 1)]   # frame_pixels, groups_in, groups_out
    rng = np.random.default_rng(21)
    cases = [make_groups(cfg, go, gi, fp, rng) for fp, gi, go in calls]
    dut = Add(cfg)
    result = {}

    async def partials_in(ctx):
        for (fp, gi, _), (partials, _) in zip(calls, cases):
            ctx.set(dut.params.frame_pixels, fp)
            ctx.set(dut.params.groups_in, gi)
            await feed(ctx, dut.i, [p.tolist() for p in partials.reshape(-1, cfg.cpo)],
                       stall=0.3, rng=random.Random(fp * 10 + gi))

    async def biases_in(ctx):
        await feed(ctx, dut.bias, [b.tolist() for _, biases in cases for b in biases],
                   stall=0.3, rng=random.Random(2))

    async def outputs(ctx):
        count = sum(fp * go for fp, _, go in calls)
        result["items"], _ = await collect(ctx, dut.o, count, stall=0.3, rng=random.Random(3),
                                           convert=lambda v: [int(x) for x in v])

    run_stage(dut, [partials_in, biases_in, outputs], deadline_cycles=20_000)
    want = np.concatenate([expected_outputs(cfg, p, b).reshape(-1, cfg.cpo) for p, b in cases])
    np.testing.assert_array_equal(np.array(result["items"], np.int64), want)


# Split accumulation (KernelConfig.with_acc_split): acc_hold / acc_resume -------------------

def split_config(cpo):
    return KernelConfig(cpi=1, cpo=cpo, wmax=4, hmax=2, imax=16, with_acc_split=True)


def expected_split(cfg, calls, cases):
    """Numpy model of a run of calls: each output group k of a call owns rows k*fp.. while
    hold or resume is on; a held row is the exact sum modulo 2**acc_bits. Returns the emitted
    items (pixels x CPO) and the number of groups held."""
    rows, out, held = {}, [], 0
    for (fp, gi, go, hold, resume), (partials, biases) in zip(calls, cases):
        for k in range(go):
            s = partials[k].astype(np.int64).sum(axis=0)
            if resume:
                s = s + rows[k]
            if hold:
                rows[k] = (s + (1 << (cfg.acc_bits - 1))) % (1 << cfg.acc_bits) - (1 << (cfg.acc_bits - 1))
                held += 1
            else:
                out.append(ref.add_bias(s, biases[k], cfg))
    return np.concatenate(out).reshape(-1, cfg.cpo), held


def simulate_split(cfg, calls, cases, *, stall, seed=0):
    dut = Add(cfg)
    result = {"held": 0}
    count = sum(fp * go for fp, _, go, hold, _ in calls if not hold)

    async def partials_in(ctx):
        for n, ((fp, gi, go, hold, resume), (partials, _)) in enumerate(zip(calls, cases)):
            ctx.set(dut.params.frame_pixels, fp)
            ctx.set(dut.params.groups_in, gi)
            ctx.set(dut.params.passes, go)
            ctx.set(dut.params.acc_hold, hold)
            ctx.set(dut.params.acc_resume, resume)
            await feed(ctx, dut.i, [p.tolist() for p in partials.reshape(-1, cfg.cpo)],
                       stall=stall, rng=random.Random(seed + n))

    async def biases_in(ctx):
        await feed(ctx, dut.bias, [b.tolist() for _, biases in cases for b in biases],
                   stall=stall, rng=random.Random(seed + 100))

    async def outputs(ctx):
        result["items"], result["cycles"] = await collect(ctx, dut.o, count, stall=stall,
                                                          rng=random.Random(seed + 200),
                                                          convert=lambda v: [int(x) for x in v])

    async def held(ctx):
        async for _, _, pulse in ctx.tick().sample(dut.held):
            result["held"] += pulse

    run_stage(dut, [partials_in, biases_in, outputs], background=[held], deadline_cycles=40_000)
    return np.array(result["items"], np.int64), result["held"], result["cycles"]


@pytest.mark.parametrize("cpo,fp,chunks,go", [(2, 1, 3, 5), (1, 3, 2, 2), (4, 2, 3, 3), (2, 5, 2, 1), (2, 2, 4, 2)])
def test_hold_resume_chunks_with_stalls(cpo, fp, chunks, go):
    """A layer split in ``chunks`` calls (hold on all but the last, resume on all but the
    first), each of several output groups with their own rows, between ordinary calls; the
    chunks' groups_in differ. Exact against numpy, with random stalls everywhere."""
    cfg = split_config(cpo)
    rng = np.random.default_rng(1000 * cpo + 100 * fp + 10 * chunks + go)
    calls = [(fp, 2, 2, 0, 0)]
    calls += [(fp, 1 + (c % 3), go, int(c < chunks - 1), int(c > 0)) for c in range(chunks)]
    calls += [(fp, 2, 2, 0, 0)]
    cases = [make_groups(cfg, g, gi, f, rng) for f, gi, g, _, _ in calls]
    want, want_held = expected_split(cfg, calls, cases)
    got, held, _ = simulate_split(cfg, calls, cases, stall=0.3, seed=fp)
    np.testing.assert_array_equal(got, want)
    assert held == want_held


def test_held_rows_wrap_modulo_acc_bits():
    """A held sum beyond acc_bits is kept modulo 2**acc_bits (the host never lets it happen:
    docs/kernel.md); the model says so, and resuming from it adds exactly."""
    cfg = split_config(2)
    lo, hi = partial_range(cfg)
    calls = [(2, 16, 1, 1, 0), (2, 16, 1, 1, 1), (2, 1, 1, 0, 1)]
    cases = [(np.full((1, gi, fp, cfg.cpo), hi, np.int64), np.zeros((1, cfg.cpo), np.int64))
             for fp, gi, _, _, _ in calls]
    want, _ = expected_split(cfg, calls, cases)
    got, _, _ = simulate_split(cfg, calls, cases, stall=0.2, seed=3)
    np.testing.assert_array_equal(got, want)


def test_hold_keeps_one_partial_per_cycle():
    """Hold and resume calls take a partial every cycle too: N partials of a hold call then a
    resume call in N + latency cycles without stalls."""
    cfg = split_config(2)
    rng = np.random.default_rng(7)
    calls = [(3, 2, 3, 1, 0), (3, 3, 3, 0, 1)]
    cases = [make_groups(cfg, g, gi, f, rng) for f, gi, g, _, _ in calls]
    want, _ = expected_split(cfg, calls, cases)
    got, _, cycles = simulate_split(cfg, calls, cases, stall=0.0)
    np.testing.assert_array_equal(got, want)
    assert cycles == sum(p.size for p, _ in cases) // cfg.cpo + Add.latency
