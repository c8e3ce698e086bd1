# amaranth: UnusedElaboratable=no
"""ReadMaster and its adapters against numpy byte arrays, through a stalling AXI memory model."""

import math
import random

import numpy as np
import pytest
from amaranth import unsigned

from hlsinf.sim.axi_memory import AXIMemory, run
from hlsinf.sim.streams import collect, feed
from hlsinf.gateware.memory.axi import BurstSplitter
from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.memory.read import ActivationReader, ItemReader, ReadMaster

BASE = 0x1_0000_0000 - 0x4000     # a 64-bit window whose upper address bits change inside it


def random_commands(rng, count, mem_bytes, beat, max_len):
    cmds = []
    for _ in range(count):
        length = int(rng.integers(1, max_len + 1))
        addr = int(rng.integers(0, mem_bytes - length - 2 * beat))
        cmds.append((BASE + addr, length))
    return cmds


def straddling(beat):
    """Ranges that start unaligned just before a 4 KiB boundary and run across it."""
    return [(BASE + 0x1000 - 3, 10), (BASE + 0x2000 - 5 * beat - 1, 7 * beat + 3),
            (BASE + 0x1000 - 64 * beat + beat // 2, 64 * beat), (BASE + 0x3000 - beat, beat)]


def read_and_check(dut, cmds, mem, *, latency=0, stall=0.0, out_stall=0.0, cmd_stall=0.0, seed=0):
    beat = dut.data_width // 8
    model = AXIMemory(mem.copy(), base=BASE, data_width=dut.data_width, latency=latency,
                      stall=stall, seed=seed)
    nbeats = sum(math.ceil(length / beat) for _, length in cmds)
    got = {}

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in cmds], stall=cmd_stall,
                   rng=random.Random(seed + 1))

    async def output(ctx):
        got["beats"], got["cycles"] = await collect(
            ctx, dut.o, nbeats, stall=out_stall, rng=random.Random(seed + 2),
            convert=lambda p: (int(p.data), int(p.count), int(p.last)))

    run(dut, [commands, output], [(model, dut.axi)], max_cycles=20 * nbeats + 2000)

    beats = iter(got["beats"])
    for addr, length in cmds:
        expect = mem[addr - BASE: addr - BASE + length]
        n = math.ceil(length / beat)
        chunk = [next(beats) for _ in range(n)]
        assert [c[2] for c in chunk] == [0] * (n - 1) + [1], f"last flags of command {addr:#x}+{length}"
        assert [c[1] for c in chunk] == [beat] * (n - 1) + [length - beat * (n - 1)]
        raw = b"".join(d.to_bytes(beat, "little")[:cnt] for d, cnt, _ in chunk)
        assert np.array_equal(np.frombuffer(raw, np.uint8), expect), f"data of command {addr:#x}+{length}"
    # The bursts are exactly the commands' beats, in order.
    expected_beats = [b for a, n in cmds
                      for b in range((a // beat) * beat, a + n, beat)]
    issued = [b.addr + k * beat for b in model.reads for k in range(b.beats)]
    assert issued == expected_beats
    return model, got["cycles"]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_ranges_with_stalls(seed):
    rng = np.random.default_rng(seed)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    cmds = straddling(64) + random_commands(rng, 12, len(mem), 64, 600)
    rng.shuffle(cmds)
    dut = ReadMaster(max_outstanding=4, fifo_beats=128)
    model, _ = read_and_check(dut, cmds, mem, latency=int(rng.integers(0, 12)), stall=0.3,
                              out_stall=0.3, cmd_stall=0.3, seed=seed)
    assert max(b.beats for b in model.reads) <= 64
    # Straddling commands were split at the boundary.
    assert any((b.addr + b.beats * 64) % 4096 == 0 for b in model.reads)


def test_256_beat_limit_with_narrow_beats():
    """With 32-bit beats a 4 KiB page is 1024 beats, so the 256-beat rule is the binding one."""
    rng = np.random.default_rng(5)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    cmds = [(BASE + 0x0FF2, 1100 * 4 + 3), (BASE + 0x2345, 9), (BASE + 0x2FFE, 5)]
    dut = ReadMaster(data_width=32, max_outstanding=3, fifo_beats=600)
    model, _ = read_and_check(dut, cmds, mem, latency=3, stall=0.2, out_stall=0.2, seed=3)
    assert max(b.beats for b in model.reads) == 256
    assert (0x1000 + BASE) in [b.addr for b in model.reads]   # cut at the boundary


def test_bursts_overlap_with_latency():
    """With a slow memory several bursts are in flight, up to the configured limit."""
    mem = np.random.default_rng(2).integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ReadMaster(max_outstanding=4, fifo_beats=256)
    cmds = [(BASE + 64 * k + 32, 64 * 4 + 5) for k in range(0, 40, 8)]
    model, _ = read_and_check(dut, cmds, mem, latency=40, seed=4)
    assert model.max_reads_in_flight == 4


def test_receive_fifo_bounds_outstanding():
    """A consumer that stalls can never make the memory wait on R: ARs stop when the FIFO is full."""
    mem = np.random.default_rng(3).integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ReadMaster(max_outstanding=8, fifo_beats=64)
    cmds = [(BASE, 0x3000)]
    model, _ = read_and_check(dut, cmds, mem, latency=5, out_stall=0.7, seed=5)
    assert model.max_reads_in_flight == 1   # 64-beat bursts, 64-beat FIFO


@pytest.mark.parametrize("latency", [0, 30])
def test_throughput(latency):
    n = 150
    mem = np.random.default_rng(4).integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ReadMaster()
    model, cycles = read_and_check(dut, [(BASE + 0x1000 + 7, 64 * n)], mem, latency=latency)
    overhead = cycles - (n + 1) - latency
    print(f"read {n + 1} beats, latency {latency}: {cycles} cycles, overhead {overhead}")
    assert overhead <= 10


def test_unaligned_throughput_multiple_commands():
    """Back-to-back unaligned commands lose at most a few cycles each."""
    mem = np.random.default_rng(6).integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ReadMaster()
    cmds = [(BASE + 1000 * k + 3, 64 * 20 + 9) for k in range(4)]
    _, cycles = read_and_check(dut, cmds, mem, latency=0)
    ideal = sum(math.ceil(n / 64) for _, n in cmds)
    print(f"4 unaligned commands, {ideal} beats: {cycles} cycles")
    assert cycles <= ideal + 4 * 6 + 10


@pytest.mark.parametrize("item_bytes", [3, 12, 64, 144, 128])
def test_item_reader(item_bytes):
    """Bytes -> items of any size: each item equals its slice of memory."""
    rng = np.random.default_rng(item_bytes)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ItemReader(unsigned(8 * item_bytes), max_outstanding=2, fifo_beats=128)
    cmds = []
    for _ in range(6):
        items = int(rng.integers(1, 12))
        addr = int(rng.integers(0, 0x3000))
        cmds.append((BASE + addr, items * item_bytes))
    cmds.append((BASE + 0x1000 - item_bytes - 1, 2 * item_bytes))
    model = AXIMemory(mem.copy(), base=BASE, latency=3, stall=0.3, seed=item_bytes)
    total = sum(n for _, n in cmds) // item_bytes
    got = {}

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in cmds], stall=0.3)

    async def output(ctx):
        got["items"], got["cycles"] = await collect(ctx, dut.o, total, stall=0.3, convert=int)

    run(dut, [commands, output], [(model, dut.axi)], max_cycles=50 * total + 3000)
    expect = [int.from_bytes(mem[a - BASE + k: a - BASE + k + item_bytes].tobytes(), "little")
              for a, n in cmds for k in range(0, n, item_bytes)]
    assert got["items"] == expect


def test_item_reader_rate():
    """Items smaller than a beat come out one per cycle; larger ones one beat per cycle."""
    mem = np.random.default_rng(9).integers(0, 256, 0x4000, dtype=np.uint8)
    for item_bytes, items in ((8, 256), (128, 32)):
        dut = ItemReader(unsigned(8 * item_bytes))
        model = AXIMemory(mem.copy(), base=BASE)
        got = {}

        async def commands(ctx):
            await feed(ctx, dut.cmd, [{"addr": BASE + 0x100, "length": items * item_bytes}])

        async def output(ctx):
            got["items"], got["cycles"] = await collect(ctx, dut.o, items, convert=int)

        run(dut, [commands, output], [(model, dut.axi)])
        ideal = max(items, items * item_bytes // 64)
        print(f"{items} items of {item_bytes} bytes: {got['cycles']} cycles (ideal {ideal})")
        assert got["cycles"] <= ideal + 12


@pytest.mark.parametrize("act_bits, signed, dtype", [(8, True, np.int8), (16, False, np.uint16), (4, True, None),
                                                     (4, False, None)])
def test_activation_reader_pixels(act_bits, signed, dtype):
    """Pixels of 4 lanes from byte ranges; 4-bit lanes two per byte, low nibble first."""
    cfg = KernelConfig(cpi=4, cpo=4, act_bits=act_bits, weight_bits=min(8, act_bits), act_signed=signed, acc_bits=48)
    px = 4 * act_bits // 8
    rng = np.random.default_rng(11)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    dut = ActivationReader(cfg, max_outstanding=2, fifo_beats=128)
    model = AXIMemory(mem.copy(), base=BASE, latency=2, stall=0.3, seed=11)
    frames = [(BASE + px * 37, px * 50), (BASE + px * 1020, px * 9), (BASE + px * 3, px * 1)]
    total = sum(n for _, n in frames) // px
    got = {}

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in frames], stall=0.3)

    async def output(ctx):
        got["px"], _ = await collect(ctx, dut.o, total, stall=0.3, convert=lambda p: [int(v) for v in p])

    run(dut, [commands, output], [(model, dut.axi)])
    if act_bits == 4:
        expect = np.concatenate([ref.unpack_nibbles(mem[a - BASE: a - BASE + n], signed)
                                 for a, n in frames]).reshape(-1, 4)
    else:
        expect = np.concatenate([mem[a - BASE: a - BASE + n].view(dtype) for a, n in frames]).reshape(-1, 4)
    assert np.array_equal(np.array(got["px"]), expect)


@pytest.mark.parametrize("bad", [False, True])
def test_error_flag(bad):
    mem = np.zeros(0x4000, np.uint8)
    dut = ReadMaster()
    model = AXIMemory(mem, base=BASE, error_ranges=[(BASE + 0x2000, BASE + 0x2001)] if bad else [])
    flag = {}

    async def commands(ctx):
        await feed(ctx, dut.cmd, [{"addr": BASE + 0x1F00, "length": 0x200}])

    async def output(ctx):
        await collect(ctx, dut.o, 8)
        flag["error"], flag["resp"] = ctx.get(dut.error), ctx.get(dut.resp)
        ctx.set(dut.clear, 1)                  # what the kernel does when the next call starts
        await ctx.tick()
        ctx.set(dut.clear, 0)
        flag["cleared"] = ctx.get(dut.error), ctx.get(dut.resp)

    run(dut, [commands, output], [(model, dut.axi)])
    assert flag["error"] == bad
    assert flag["resp"] == (2 if bad else 0)   # the first error response: SLVERR
    assert flag["cleared"] == (0, 0)


def test_port_names():
    """A top level exposing an AXI4 master and the control slave gets the Vitis port names."""
    from amaranth.hdl import _ir
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from hlsinf.gateware.memory.axi import AXI4LiteSignature, AXI4Signature, port_map

    class Top(wiring.Component):
        m_axi_gmem_in: Out(AXI4Signature())
        s_axi_control: In(AXI4LiteSignature(addr_width=8))

    top = Top()
    ports = {**port_map("m_axi_gmem_in", top.m_axi_gmem_in), **port_map("s_axi_control", top.s_axi_control)}
    assert ports["m_axi_gmem_in_arvalid"][1] == _ir.PortDirection.Output
    assert ports["m_axi_gmem_in_rdata"][1] == _ir.PortDirection.Input
    assert len(ports["m_axi_gmem_in_rdata"][0]) == 512 and len(ports["m_axi_gmem_in_araddr"][0]) == 64
    assert ports["s_axi_control_awaddr"][1] == _ir.PortDirection.Input
    assert ports["s_axi_control_rdata"][1] == _ir.PortDirection.Output
    assert len([p for p in ports if p.startswith("m_axi_gmem_in_")]) == 2 * 11 + 5 + 4 + 6


def test_read_arbiter_shares_one_port():
    """Three item readers (weights-, bias- and multiplier-like) on one port via ReadArbiter;
    the weights consumer stalls 90% of the time."""
    from amaranth import Module
    from amaranth.lib import wiring
    from hlsinf.gateware.memory.axi import ReadArbiter

    sizes = (36, 16, 8)

    class Shared(wiring.Component):
        def __init__(self):
            self.readers = [ItemReader(unsigned(8 * n), max_outstanding=2, fifo_beats=64) for n in sizes]
            self.arbiter = ReadArbiter(len(sizes), max_outstanding=8)
            super().__init__({"axi": wiring.Out(self.arbiter.axi.signature)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.arbiter = self.arbiter
            for k, r in enumerate(self.readers):
                m.submodules[f"reader{k}"] = r
                wiring.connect(m, r.axi, self.arbiter.inputs[k])
            wiring.connect(m, self.arbiter.axi, wiring.flipped(self.axi))
            return m

    dut = Shared()
    rng = np.random.default_rng(21)
    mem = rng.integers(0, 256, 0x4000, dtype=np.uint8)
    model = AXIMemory(mem.copy(), base=BASE, latency=4, stall=0.3, seed=21)
    cmds = [[(BASE + int(rng.integers(0, 0x3000)), int(rng.integers(1, 20)) * n) for _ in range(5)] for n in sizes]
    got = [None] * len(sizes)

    def feeder(k):
        async def tb(ctx):
            await feed(ctx, dut.readers[k].cmd, [{"addr": a, "length": n} for a, n in cmds[k]], stall=0.3,
                       rng=random.Random(k))
        return tb

    def taker(k):
        async def tb(ctx):
            total = sum(n for _, n in cmds[k]) // sizes[k]
            got[k], _ = await collect(ctx, dut.readers[k].o, total, stall=0.9 if k == 0 else 0.2,
                                      rng=random.Random(10 + k), convert=int)
        return tb

    run(dut, [feeder(k) for k in range(3)] + [taker(k) for k in range(3)], [(model, dut.axi)],
        max_cycles=20_000)
    for k, n in enumerate(sizes):
        expect = [int.from_bytes(mem[a - BASE + j: a - BASE + j + n].tobytes(), "little")
                  for a, length in cmds[k] for j in range(0, length, n)]
        assert got[k] == expect, f"reader {k}"


def test_parameter_errors():
    with pytest.raises(ValueError, match="max_outstanding"):
        ReadMaster(max_outstanding=0)
    with pytest.raises(ValueError, match="fifo_beats"):
        ReadMaster(fifo_beats=16)
    with pytest.raises(ValueError, match="data_width"):
        BurstSplitter(data_width=48)
    with pytest.raises(ValueError, match="item_shape"):
        ItemReader(unsigned(12))
