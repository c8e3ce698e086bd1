# amaranth: UnusedElaboratable=no
"""WriteMaster against numpy: bytes in range written exactly, bytes outside untouched, done per command."""

import math
import random

import numpy as np
import pytest
from amaranth import unsigned

from hlsinf.sim.axi_memory import AXIMemory, run
from hlsinf.sim.streams import feed
from hlsinf.config import KernelConfig
from hlsinf.gateware.memory.write import PixelWriter, WriteMaster

BASE = 0x2_0000_0000 - 0x2000


def random_commands(rng, count, item_bytes, chunk, max_items, span=0x3800):
    cmds = []
    for _ in range(count):
        length = int(rng.integers(1, max_items + 1)) * item_bytes
        addr = int(rng.integers(0, (span - length) // chunk)) * chunk
        cmds.append((BASE + addr, length))
    return cmds


def write_and_check(dut, cmds, *, latency=0, stall=0.0, in_stall=0.0, cmd_stall=0.0, seed=0,
                    mem_bytes=0x4000, lanes=0, lane_bits=8, lane_signed=False):
    """Write random items for ``cmds`` (in order; later commands may overwrite earlier ones)
    and compare the whole memory with numpy."""
    rng = np.random.default_rng(seed)
    item = dut.item_bytes
    before = rng.integers(0, 256, mem_bytes, dtype=np.uint8)
    model = AXIMemory(before.copy(), base=BASE, data_width=dut.data_width, latency=latency,
                      stall=stall, seed=seed)
    payloads = [rng.integers(0, 256, n, dtype=np.uint8) for _, n in cmds]
    items = [int.from_bytes(p[k:k + item].tobytes(), "little") for p in payloads for k in range(0, len(p), item)]
    if lanes:   # an ArrayLayout payload of lanes (bytes, or 4-bit lanes low nibble first)
        mask, top = (1 << lane_bits) - 1, 1 << (lane_bits - 1)
        items = [[(v >> (lane_bits * j)) & mask for j in range(lanes)] for v in items]
        if lane_signed:
            items = [[x - 2 * top if x & top else x for x in item] for item in items]
    done_cycles = []

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in cmds], stall=cmd_stall,
                   rng=random.Random(seed + 1))

    async def data(ctx):
        await feed(ctx, dut.i, items, stall=in_stall, rng=random.Random(seed + 2))

    async def watch_done(ctx):
        while len(done_cycles) < len(cmds):
            _, _, done = await ctx.tick().sample(dut.done)
            if done:
                done_cycles.append(model.cycle)

    run(dut, [commands, data, watch_done], [(model, dut.axi)], max_cycles=30 * len(items) + 3000)

    expect = before.copy()
    for (addr, n), p in zip(cmds, payloads):
        expect[addr - BASE: addr - BASE + n] = p
    diff = np.flatnonzero(model.mem != expect)
    assert diff.size == 0, f"{diff.size} bytes differ, first at address {BASE + diff[0]:#x}"

    # Bursts are exactly the commands' beats, in order; strobes are exact.
    beat = dut.data_width // 8
    issued = [(b.addr + k * beat, b.strobes[k]) for b in model.writes for k in range(b.beats)]
    expected = []
    for a, n in cmds:
        for b in range(a // beat * beat, a + n, beat):
            lo, hi = max(a, b), min(a + n, b + beat)
            expected.append((b, ((1 << (hi - lo)) - 1) << (lo - b)))
    assert issued == expected

    # done for a command only after the B response of its last burst.
    bursts = iter(model.writes)
    for (a, n), when in zip(cmds, done_cycles):
        beats = math.ceil((a % beat + n) / beat)
        mine, covered = [], 0
        while covered < beats:
            b = next(bursts)
            mine.append(b)
            covered += b.beats
        assert when > max(b.finished for b in mine), "done before the last B response"
    assert len(done_cycles) == len(cmds)
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_pixels_random_with_stalls(seed):
    cfg = KernelConfig(cpi=4, cpo=4)
    dut = PixelWriter(cfg, max_outstanding=4, fifo_beats=64)
    rng = np.random.default_rng(seed)
    cmds = random_commands(rng, 10, 4, 4, 120)
    cmds += [(BASE + 0x1000 - 8, 16), (BASE + 0x2000 - 4 * 64 - 4, 4 * 64 + 12), (BASE + 0x3000 - 64, 64)]
    rng.shuffle(cmds)
    model = write_and_check(dut, cmds, latency=int(rng.integers(0, 10)), stall=0.3, in_stall=0.3,
                            cmd_stall=0.3, seed=seed, lanes=4)
    assert max(b.beats for b in model.writes) <= 64


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
def test_4bit_pixels_random_with_stalls(fmt):
    """4-bit lanes: a 4-lane pixel is 2 bytes, lane 0 in the low nibble of the first byte."""
    cfg = KernelConfig.from_format(fmt, cpi=4, cpo=4)
    dut = PixelWriter(cfg, max_outstanding=4, fifo_beats=64)
    assert dut.item_bytes == 2
    rng = np.random.default_rng(len(fmt))
    cmds = random_commands(rng, 10, 2, 2, 120)
    write_and_check(dut, cmds, latency=3, stall=0.3, in_stall=0.3, cmd_stall=0.3, seed=5, lanes=4, lane_bits=4,
                    lane_signed=cfg.act_signed)


@pytest.mark.parametrize("item_bytes", [1, 3, 12, 144, 128])
def test_item_sizes(item_bytes):
    """Items of any byte size, at addresses that are multiples of gcd(item, beat)."""
    dut = WriteMaster(unsigned(8 * item_bytes), max_outstanding=2, fifo_beats=64)
    rng = np.random.default_rng(item_bytes)
    cmds = random_commands(rng, 5, item_bytes, dut.chunk, max(1, 600 // item_bytes))
    write_and_check(dut, cmds, latency=2, stall=0.3, in_stall=0.3, seed=item_bytes)


def test_256_beat_limit_with_narrow_beats():
    dut = WriteMaster(unsigned(8), data_width=32, max_outstanding=3, fifo_beats=300)
    cmds = [(BASE + 0x0FF1, 1100 * 4 + 2), (BASE + 0x2FFE, 5)]
    model = write_and_check(dut, cmds, latency=3, stall=0.2, seed=7)
    assert max(b.beats for b in model.writes) == 256


def test_bursts_overlap_with_latency():
    """Many short commands: bursts are issued faster than the slow memory answers."""
    dut = WriteMaster(unsigned(512), max_outstanding=4, fifo_beats=128)
    cmds = [(BASE + 0x100 + 0x200 * k, 64 * 2) for k in range(12)]
    model = write_and_check(dut, cmds, latency=40, seed=3)
    assert model.max_writes_in_flight == 4


@pytest.mark.parametrize("latency", [0, 30])
@pytest.mark.parametrize("issue_beats", [None, 4])
def test_throughput(latency, issue_beats):
    """Beats leave one per cycle: N beats end about N + latency cycles after the start, plus
    one burst (64 beats) when AWs wait for whole bursts."""
    n = 150
    dut = WriteMaster(unsigned(512), issue_beats=issue_beats)
    model = write_and_check(dut, [(BASE + 0x40, 64 * n)], latency=latency, seed=5)
    cycles = model.writes[-1].finished
    overhead = cycles - n - latency
    print(f"write {n} beats, latency {latency}, issue_beats {issue_beats}: last B at cycle {cycles}, "
          f"overhead {overhead}")
    assert overhead <= (10 if issue_beats else 64 + 10)


def test_early_issue_with_slow_producer():
    """With issue_beats small, W waits for data in mid-burst: still exact under stalls."""
    dut = WriteMaster(unsigned(32), issue_beats=2, max_outstanding=3, fifo_beats=64)
    rng = np.random.default_rng(8)
    cmds = random_commands(rng, 4, 4, 4, 300)
    write_and_check(dut, cmds, latency=3, stall=0.3, in_stall=0.6, seed=8)


def test_error_flag():
    dut = WriteMaster(unsigned(512))
    model = AXIMemory(np.zeros(0x4000, np.uint8), base=BASE, error_ranges=[(BASE + 0x1000, BASE + 0x1001)])
    flags = []

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": BASE + 0x800, "length": 0x400},
                                  {"addr": BASE + 0x0FC0, "length": 0x80}])

    async def data(ctx):
        await feed(ctx, dut.i, list(range(0x480 // 64)))

    async def watch(ctx):
        while len(flags) < 2:
            _, _, done, error, resp = await ctx.tick().sample(dut.done, dut.error, dut.resp)
            if done:
                flags.append((error, resp))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        flags.append((ctx.get(dut.error), ctx.get(dut.resp)))

    run(dut, [commands, data, watch], [(model, dut.axi)])
    assert len(model.writes) == 3     # the second command is cut at 4 KiB; its last burst fails
    # error (and the response, SLVERR) is raised together with that command's done; clear resets it
    assert flags == [(0, 0), (1, 2), (0, 0)]


def test_parameter_errors():
    with pytest.raises(ValueError, match="max_outstanding"):
        WriteMaster(unsigned(8), max_outstanding=65)
    with pytest.raises(ValueError, match="fifo_beats"):
        WriteMaster(unsigned(8), fifo_beats=8)
    with pytest.raises(ValueError, match="item_shape"):
        WriteMaster(unsigned(4))
    with pytest.raises(ValueError, match="issue_beats"):
        WriteMaster(unsigned(8), issue_beats=65)
