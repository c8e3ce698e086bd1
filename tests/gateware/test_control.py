# amaranth: UnusedElaboratable=no
"""Control (s_axi_control, ap_ctrl_hs) through an AXI4-Lite master with random delays, against
the rules of DESIGN.md and the register map of hlsinf/registers.py."""

import random

import pytest

from hlsinf.config import KernelConfig
from hlsinf.gateware.control import Control, args_layout, control_addr_width
from hlsinf.reference import CallArgs
from hlsinf.registers import CONTROL, GIE, IER, ISR, STATUS, decode_status, encode_call, register_map

IDLE, DONE, START, READY, AUTO = 0x4, 0x2, 0x1, 0x8, 0x80
CFG = KernelConfig(cpi=4, cpo=4)


class LiteMaster:
    """AXI4-Lite master: AW and W offered together (in random order and delay), then B;
    AR then R. READY on B/R drops randomly."""

    def __init__(self, bus, seed=0, stall=0.3):
        self.bus, self.rng, self.stall = bus, random.Random(seed), stall

    async def _pause(self, ctx):
        while self.rng.random() < self.stall:
            await ctx.tick()

    async def write(self, ctx, addr, value, strb=0xF):
        bus = self.bus
        aw_at, w_at = self.rng.randint(0, 3), self.rng.randint(0, 3)   # AW and W in either order
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, strb)
        aw_done = w_done = False
        cycle = 0
        while not (aw_done and w_done):
            ctx.set(bus.awvalid, not aw_done and cycle >= aw_at)
            ctx.set(bus.wvalid, not w_done and cycle >= w_at)
            _, _, awvalid, awready, wvalid, wready = await ctx.tick().sample(
                bus.awvalid, bus.awready, bus.wvalid, bus.wready)
            aw_done |= bool(awvalid and awready)
            w_done |= bool(wvalid and wready)
            cycle += 1
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(bus.bready, ready)
            _, _, bvalid, bresp = await ctx.tick().sample(bus.bvalid, bus.bresp)
            if bvalid and ready:
                break
        ctx.set(bus.bready, 0)
        assert bresp == 0

    async def read(self, ctx, addr):
        bus = self.bus
        await self._pause(ctx)
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arvalid, 1)
        while True:
            _, _, arready = await ctx.tick().sample(bus.arready)
            if arready:
                break
        ctx.set(bus.arvalid, 0)
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(bus.rready, ready)
            _, _, rvalid, rdata, rresp = await ctx.tick().sample(bus.rvalid, bus.rdata, bus.rresp)
            if rvalid and ready:
                break
        ctx.set(bus.rready, 0)
        assert rresp == 0
        return rdata


class FakeKernel:
    """Runs a call of ``cycles`` cycles per start pulse; records the arguments it saw."""

    def __init__(self, dut, cycles=(5, 30), seed=0):
        self.dut, self.cycles, self.rng = dut, cycles, random.Random(seed)
        self.calls = []

    async def serve(self, ctx):
        dut = self.dut
        while True:
            _, _, start = await ctx.tick().sample(dut.start)
            if not start:
                continue
            args = ctx.get(dut.args)
            self.calls.append({reg.name: getattr(args, reg.name) for reg in register_map()})
            assert ctx.get(dut.idle) == 0
            for _ in range(self.rng.randint(*self.cycles)):
                await ctx.tick()
                # The latched arguments hold for the whole call.
                assert {reg.name: getattr(ctx.get(dut.args), reg.name) for reg in register_map()} == self.calls[-1]
            ctx.set(dut.done, 1)
            await ctx.tick()
            ctx.set(dut.done, 0)


def simulate(body, *, seed=0, cycles=(5, 30)):
    dut = Control(CFG)
    kernel = FakeKernel(dut, cycles, seed)
    host = LiteMaster(dut.s_axi_control, seed)

    async def tb(ctx):
        await body(ctx, dut, host, kernel)

    async def kernel_tb(ctx):
        await kernel.serve(ctx)

    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    finished = []

    async def main(ctx):
        await tb(ctx)
        finished.append(1)
    sim.add_testbench(main)
    sim.add_testbench(kernel_tb, background=True)
    for _ in range(200_000):
        if not sim.advance():
            break
    assert finished, "testbench did not finish (deadlock?)"
    return kernel


def expected_args(words):
    """The argument values a register map of words means: pointers joined, signed scalars."""
    values = {}
    for reg in register_map():
        v = words.get(reg.offset, 0)
        if reg.kind == "pointer":
            v |= words.get(reg.offset + 4, 0) << 32
        elif reg.signed and v & 0x8000_0000:
            v -= 1 << 32
        values[reg.name] = v
    return values


def random_words(rng):
    words = {}
    for reg in register_map():
        for k in range(reg.bits // 32):
            words[reg.offset + 4 * k] = rng.getrandbits(32)
    return words


async def wait_done(ctx, host):
    """Poll the control register until ap_done; returns the value read."""
    while True:
        v = await host.read(ctx, CONTROL)
        if v & DONE:
            return v


def test_address_width_fits_register_map():
    end = max(r.offset + r.bits // 8 for r in register_map())
    assert (1 << control_addr_width()) >= end > (1 << (control_addr_width() - 1))
    assert set(args_layout().members) == {r.name for r in register_map()}


@pytest.mark.parametrize("seed", [0, 1])
def test_registers_read_back(seed):
    rng = random.Random(seed)
    words = random_words(rng)

    async def body(ctx, dut, host, kernel):
        assert await host.read(ctx, CONTROL) == IDLE
        for offset, value in words.items():
            await host.write(ctx, offset, value)
        for offset, value in rng.sample(sorted(words.items()), len(words)):
            assert await host.read(ctx, offset) == value, f"register {offset:#x}"
        # Byte strobes: only the enabled bytes change.
        first = register_map()[0].offset
        await host.write(ctx, first, 0x11223344, strb=0b0101)
        old = words[first]
        assert await host.read(ctx, first) == (old & 0xFF00FF00) | 0x00220044
        # GIE / IER keep their implemented bits; unmapped addresses read 0.
        await host.write(ctx, GIE, 0xFFFFFFFF)
        await host.write(ctx, IER, 0xFFFFFFFF)
        assert await host.read(ctx, GIE) == 1
        assert await host.read(ctx, IER) == 3
        await host.write(ctx, 0xFC, 0x12345678)
        assert await host.read(ctx, 0xFC) == 0
        assert await host.read(ctx, CONTROL) == IDLE    # nothing started by all this
        assert kernel.calls == []

    simulate(body, seed=seed)


def test_start_done_handshake_and_latched_arguments():
    args = CallArgs(H=6, W=5, rows=4, I=7, O=9, pad_top=1, pad_left=1, clip_lo=-3,
                    shift=4, read_offset=5)
    cfg = KernelConfig(cpi=4, cpo=4, act_signed=True)
    first = encode_call(args, cfg, {"x": 0x1_2345_6780, "w": 0x40, "b": 0x80, "m": 0xC0, "y": 0xFFFF_FFFF_0000})
    second = random_words(random.Random(7))

    async def body(ctx, dut, host, kernel):
        for offset, value in first.items():
            await host.write(ctx, offset, value)
        await host.write(ctx, CONTROL, START)
        v = await host.read(ctx, CONTROL)
        assert v & (START | IDLE | DONE) == 0 and v & READY, f"control {v:#x} after the start"
        assert await host.read(ctx, CONTROL) & READY == 0        # ap_ready cleared by the read
        # The next call's arguments may be written while this one runs.
        for offset, value in second.items():
            await host.write(ctx, offset, value)
        assert ctx.get(dut.idle) == 0 and len(kernel.calls) == 1, "the first call should still run"
        assert await wait_done(ctx, host) == DONE | IDLE
        assert await host.read(ctx, CONTROL) == IDLE             # ap_done cleared on read
        await host.write(ctx, CONTROL, START)
        await wait_done(ctx, host)

    kernel = simulate(body, cycles=(400, 500))   # long enough to write every argument meanwhile
    assert kernel.calls == [expected_args(first), expected_args(second)]
    assert kernel.calls[0]["clip_lo"] == -3 and kernel.calls[0]["x"] == 0x1_2345_6780


def test_start_while_running_waits_for_done():
    async def body(ctx, dut, host, kernel):
        await host.write(ctx, CONTROL, START)
        while not kernel.calls:
            await ctx.tick()
        await host.write(ctx, CONTROL, START)     # queued: the kernel is busy
        assert await host.read(ctx, CONTROL) & START
        while len(kernel.calls) < 2:
            await ctx.tick()
        assert ctx.get(dut.idle) == 0
        v = await wait_done(ctx, host)
        assert v & START == 0

    kernel = simulate(body, cycles=(40, 60))
    assert len(kernel.calls) == 2


def test_done_interrupt_and_isr_toggle():
    async def body(ctx, dut, host, kernel):
        await host.write(ctx, GIE, 1)
        await host.write(ctx, IER, 1)
        await host.write(ctx, CONTROL, START)
        while not ctx.get(dut.interrupt):
            await ctx.tick()
        assert await host.read(ctx, ISR) == 1
        assert await host.read(ctx, CONTROL) & DONE
        assert ctx.get(dut.interrupt)                  # reading ap_done does not clear ISR
        await host.write(ctx, ISR, 1)                  # toggle-on-write clears it
        assert await host.read(ctx, ISR) == 0
        await ctx.tick().repeat(2)
        assert not ctx.get(dut.interrupt)
        await host.write(ctx, ISR, 2)                  # ... and sets a clear bit
        assert await host.read(ctx, ISR) == 2
        await ctx.tick().repeat(2)
        assert ctx.get(dut.interrupt) == 0             # IER bit 1 off masks it
        await host.write(ctx, IER, 3)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.interrupt) == 1
        await host.write(ctx, GIE, 0)                  # global enable masks everything
        await ctx.tick().repeat(2)
        assert ctx.get(dut.interrupt) == 0
        await host.write(ctx, ISR, 2)
        assert await host.read(ctx, ISR) == 0

    simulate(body)


def test_ready_interrupt_and_disabled_done_interrupt():
    async def body(ctx, dut, host, kernel):
        await host.write(ctx, GIE, 1)
        await host.write(ctx, IER, 2)                  # ready only
        await host.write(ctx, CONTROL, START)
        while not ctx.get(dut.interrupt):
            await ctx.tick()
        assert await host.read(ctx, ISR) == 2
        await host.write(ctx, ISR, 2)
        await wait_done(ctx, host)
        assert await host.read(ctx, ISR) == 0          # done not enabled: ISR bit 0 stays clear
        assert not ctx.get(dut.interrupt)

    simulate(body)


def test_auto_restart():
    async def body(ctx, dut, host, kernel):
        await host.write(ctx, CONTROL, START | AUTO)
        while len(kernel.calls) < 3:
            await ctx.tick()
        v = await host.read(ctx, CONTROL)
        assert v & AUTO and v & START
        await host.write(ctx, CONTROL, 0)              # stop: the call in progress finishes
        n = len(kernel.calls)
        await wait_done(ctx, host)
        while await host.read(ctx, CONTROL) != IDLE:
            pass
        await ctx.tick().repeat(50)
        assert len(kernel.calls) <= n + 1
        assert await host.read(ctx, CONTROL) == IDLE

    kernel = simulate(body)
    assert len(kernel.calls) >= 3


def test_status_register_reads_the_status_input_and_ignores_writes():
    async def body(ctx, dut, host, kernel):
        assert await host.read(ctx, STATUS) == 0
        ctx.set(dut.status, 0x3806)                    # gmem_w and gmem_out errors, SLVERR / DECERR
        assert await host.read(ctx, STATUS) == 0x3806
        await host.write(ctx, STATUS, 0)               # read-only
        assert await host.read(ctx, STATUS) == 0x3806
        assert decode_status(0x3806) == {"gmem_w": "SLVERR", "gmem_out": "DECERR"}

    simulate(body)
