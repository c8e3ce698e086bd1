# amaranth: UnusedElaboratable=no
"""The pointwise mux in front of mul and the reader's super-pixel output, against numpy."""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal

from hlsinf.config import KernelConfig
from hlsinf.gateware.memory.read import ActivationReader
from hlsinf.gateware.stages.pointwise import PointwiseMux
from hlsinf.sim.axi_memory import AXIMemory
from hlsinf.sim.streams import collect, feed, run_stage

CFG = KernelConfig.from_format("int8", cpi=4, cpo=4, imax=64, wmax=8, hmax=8, with_pointwise=True)
BASE = 0x1_0000_0000 - 0x4000


class Clocked(Elaboratable):
    """The combinational mux with a clock domain for the testbenches to run on."""

    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        tick = Signal()
        m.d.sync += tick.eq(~tick)
        return m


def run_mux(cfg, pointwise, windows, superpixels, *, stall, seed=0):
    """Feed both inputs (``windows`` ``N x CPI x 9``, ``superpixels`` ``N x 9 x CPI``); collect the selected count."""
    dut = PointwiseMux(cfg)
    count = len(superpixels) if pointwise else len(windows)
    result = {}

    async def params(ctx):
        ctx.set(dut.pointwise, pointwise)

    async def feed_windows(ctx):
        await feed(ctx, dut.windows, windows.tolist() if not pointwise else [], stall=stall, rng=random.Random(seed))

    async def feed_superpixels(ctx):
        await feed(ctx, dut.superpixels, superpixels.tolist() if pointwise else [], stall=stall,
                   rng=random.Random(seed + 1))

    async def idle_other(ctx):
        # The unselected input offers an item the whole time: the mux must never take it.
        other = dut.windows if pointwise else dut.superpixels
        ctx.set(other.valid, 1)
        for _ in range(3 * count + 20):
            _, _, ready = await ctx.tick().sample(other.ready)
            assert not ready, "the unselected input was taken"

    async def collector(ctx):
        result["items"], result["cycles"] = await collect(
            ctx, dut.o, count, stall=stall, rng=random.Random(seed + 2),
            convert=lambda p: [[int(p[ci][t]) for t in range(9)] for ci in range(cfg.cpi)])

    feeders = [feed_superpixels] if pointwise else [feed_windows]
    run_stage(Clocked(dut), [params, *feeders, collector], background=[idle_other])
    return result["items"], result["cycles"]


@pytest.mark.parametrize("pointwise", [0, 1])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_mux_matches_numpy(pointwise, stall):
    rng = np.random.default_rng(pointwise * 10 + int(stall * 10))
    windows = rng.integers(-128, 128, (40, CFG.cpi, 9))
    superpixels = rng.integers(-128, 128, (40, 9, CFG.cpi))
    items, cycles = run_mux(CFG, pointwise, windows, superpixels, stall=stall, seed=3)
    # The oracle: a window as is, or a super-pixel transposed (window[ci][t] = superpixel[t][ci]).
    want = superpixels.transpose(0, 2, 1) if pointwise else windows
    assert np.array_equal(np.array(items), want)
    if not stall:
        assert cycles <= len(want) + 2      # one item per cycle, no latency


def test_reader_superpixels_under_stalls():
    """In a pointwise call the reader cuts its bytes into 9*CPI-lane super-pixels (36 bytes at
    4 int8 lanes, not a divisor of the 64-byte beat); the pixel output stays silent."""
    rng = np.random.default_rng(5)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    sp = 9 * CFG.cpi
    dut = ActivationReader(CFG, max_outstanding=2, fifo_beats=128)
    model = AXIMemory(mem.copy(), base=BASE, latency=3, stall=0.3, seed=5)
    frames = [(BASE + sp * 7 + 4, sp * 30), (BASE + 0x1000 - sp * 2 - 5, sp * 5), (BASE + 8, sp)]
    total = sum(n for _, n in frames) // sp
    got = {}

    async def commands(ctx):
        ctx.set(dut.pointwise, 1)
        await feed(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in frames], stall=0.3)

    async def output(ctx):
        ctx.set(dut.o.ready, 1)
        got["sp"], _ = await collect(ctx, dut.superpixels, total, stall=0.3,
                                     convert=lambda p: [[int(p[t][c]) for c in range(CFG.cpi)] for t in range(9)])

    async def silent(ctx):
        while True:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "a pixel came out in a pointwise call"

    async def memory(ctx):
        await model.serve(ctx, dut.axi)

    run_stage(dut, [commands, output], background=[memory, silent], deadline_cycles=20_000)
    expect = np.concatenate([mem[a - BASE: a - BASE + n].view(np.int8) for a, n in frames]).reshape(-1, 9, CFG.cpi)
    assert np.array_equal(np.array(got["sp"]), expect)
