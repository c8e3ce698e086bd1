"""Post-op stage ``table`` in simulation against a numpy lookup, bit for bit."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import TABLE_BANKS, table_items
from hlsinf.gateware.stages.table import Table
from hlsinf.sim.streams import collect, feed, run_stage

CONFIGS = {
    "int8": KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8, post_ops=("table",)),
    "uint8": KernelConfig(cpi=2, cpo=4, imax=16, wmax=8, hmax=8, post_ops=("table",)),
}


def random_call(rng, cfg, pixels, *, enable=None):
    """A random table (by bit pattern) and pixels; the expected output from numpy indexing."""
    amin, amax = cfg.act_range
    enable = bool(rng.integers(0, 4)) if enable is None else enable
    table = rng.integers(amin, amax + 1, 1 << cfg.act_bits)
    v = rng.integers(amin, amax + 1, (pixels, cfg.cpo))
    v[rng.random(v.shape) < 0.1] = amin
    v[rng.random(v.shape) < 0.1] = amax
    expected = table[v & 0xFF] if enable else v
    return dict(table=int(enable)), table, v, expected


def run_calls(cfg, calls, *, stall, seed=0, dut=None, pixel_delay=0):
    """Each call: pulse start, then its table items and its pixels concurrently (pixels may
    arrive before the table is complete); a call starts once the previous one's outputs are in."""
    dut = dut or Table(cfg)
    done, started, results = [], [], []

    async def feeder(ctx):
        rng = random.Random(seed)
        for k, (params, _, v, _) in enumerate(calls):
            while len(done) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            started.append(True)
            for _ in range(pixel_delay):
                await ctx.tick()
            await feed(ctx, dut.i, [[int(x) for x in px] for px in v], stall=stall, rng=rng)

    async def item_feeder(ctx):
        rng = random.Random(seed + 1)
        for k, (params, table, _, _) in enumerate(calls):
            while len(started) <= k:
                await ctx.tick()
            if params["table"]:
                items = [[int(x) for x in table[j:j + TABLE_BANKS]] for j in range(0, table.size, TABLE_BANKS)]
                await feed(ctx, dut.entries, items, stall=stall, rng=rng)

    async def collector(ctx):
        rng = random.Random(seed + 2)
        for _, _, v, _ in calls:
            items, cycles = await collect(ctx, dut.o, len(v), stall=stall, rng=rng,
                                          convert=lambda p: [p[k] for k in range(cfg.cpo)])
            results.append((items, cycles))
            done.append(True)

    run_stage(dut, [feeder, item_feeder, collector])
    return results


def check(calls, results):
    for (params, _, _, expected), (items, _) in zip(calls, results):
        assert items == expected.tolist(), f"call {params}"


@pytest.mark.parametrize("name", CONFIGS)
def test_random_calls_with_stalls(name):
    """Calls with the table on and off, a new random table each time, 30 % stalls everywhere."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(list(CONFIGS).index(name))
    calls = [random_call(rng, cfg, int(rng.integers(1, 40)), enable=(k % 3 != 1)) for k in range(6)]
    check(calls, run_calls(cfg, calls, stall=0.3))


def test_pixels_wait_for_the_whole_table():
    """Pixels offered at once after start, items stalled: no pixel uses a half-written table
    (the previous call's table differs at every entry)."""
    cfg = CONFIGS["int8"]
    rng = np.random.default_rng(7)
    first = random_call(rng, cfg, 8, enable=True)
    second = list(random_call(rng, cfg, 30, enable=True))
    second[1] = (first[1] + 1 + rng.integers(0, 250, first[1].size)) % 256 - 128
    second[3] = second[1][second[2] & 0xFF]
    calls = [first, tuple(second)]
    check(calls, run_calls(cfg, calls, stall=0.6, seed=3))


def test_reference_agrees():
    """reference.table_lookup over a packed image equals the numpy indexing used above."""
    cfg = CONFIGS["int8"]
    t_mem = ref.make_table(lambda v: np.clip(v * 3 - 7, -128, 127), cfg)
    v = np.arange(-128, 128)
    assert ref.table_lookup(v, ref.unpack_table(t_mem, cfg)).tolist() == np.clip(v * 3 - 7, -128, 127).tolist()
    assert t_mem.dtype == np.int8 and t_mem[0] == -7 and t_mem[255] == -10   # by bit pattern


@pytest.mark.parametrize("enable", [True, False])
def test_throughput(enable):
    """Unstalled, N pixels take N + latency cycles once the table is loaded."""
    cfg = CONFIGS["int8"]
    rng = np.random.default_rng(11)
    calls = [random_call(rng, cfg, 40, enable=enable)]
    dut = Table(cfg)
    # The pixels start after the table has loaded (its 64 items, one a cycle).
    delay = table_items(cfg) + 2
    results = run_calls(cfg, calls, stall=0.0, dut=dut, pixel_delay=delay)
    check(calls, results)
    # collect counts from the start pulse's cycle: 1 + the delay before the first pixel.
    assert results[0][1] == 1 + delay + 40 + dut.latency


def test_load_time():
    """Table on, pixels offered right after start: the table's items are written one a cycle
    (TABLE_BANKS entries each), then the pixels flow at one a cycle."""
    cfg = CONFIGS["uint8"]
    rng = np.random.default_rng(12)
    calls = [random_call(rng, cfg, 10, enable=True)]
    results = run_calls(cfg, calls, stall=0.0)
    check(calls, results)
    # collect counts from its first call (start + 1) to the last result: load + N + latency.
    assert results[0][1] == table_items(cfg) + 10 + Table.latency


def test_refusals_name_the_parameter():
    """A table needs 8-bit activations and a kernel built with it; a call enabling it needs t."""
    from hlsinf.config import ConfigError
    with pytest.raises(ConfigError, match="post_ops.*'table' only with act_bits = 8"):
        KernelConfig(act_bits=16, weight_bits=16, acc_bits=48, act_signed=True, post_ops=("table",))
    args = ref.CallArgs(H=4, W=4, rows=4, I=2, O=2, table=True)
    with pytest.raises(ref.CallError, match="kernel argument table = True.*not built"):
        args.validate(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8))
    cfg = CONFIGS["int8"]
    x, w = np.zeros(32, np.int8), np.zeros(2 * 2 * 9, np.int8)
    with pytest.raises(ref.CallError, match="t_mem is missing"):
        ref.kernel_call(cfg, args, x, w, np.zeros(2, np.int32), np.zeros(32, np.int8))
    with pytest.raises(ref.CallError, match="t_mem holds 100 bytes"):
        ref.kernel_call(cfg, args, x, w, np.zeros(2, np.int32), np.zeros(32, np.int8), t_mem=np.zeros(100, np.int8))
