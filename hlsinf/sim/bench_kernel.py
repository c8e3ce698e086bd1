"""cocotb bench of the whole kernel: AXI RAMs on the three masters, the host on ``s_axi_control``.

Every test writes memory images and the call's arguments (through
:func:`hlsinf.registers.encode_call`), starts the kernel, waits for ``ap_done`` (by polling or
by the interrupt line), and compares the **whole** output buffer, including the bytes around
the pixels the call writes, bit for bit with :func:`hlsinf.reference.kernel_call` run on a copy
of the same memory.

The kernel configuration comes from ``$HLSINF_CFG`` (JSON of a KernelConfig); the Verilog
under test must have been generated from the same configuration (``hlsinf.sim.runner.run_kernel``).
Cycle counts of each call are appended to ``$HLSINF_CYCLES`` (JSON lines) when it is set.
"""

from __future__ import annotations

import json
import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE, CallArgs
from hlsinf.registers import CONTROL, GIE, IER, ISR, encode_call

CLOCK_NS = 4
RAM_BYTES = 1 << 22


def kernel_config() -> KernelConfig:
    return KernelConfig.from_dict(json.loads(os.environ.get("HLSINF_CFG", "{}")))


def memory_model(bus, clk, rst):
    """One bundle's memory: ``AxiRam`` (answers the cycle after the address), or, when
    ``$HLSINF_MEMORY`` holds JSON arguments of :class:`hlsinf.sim.axi_latency.LatencyAxiRam`
    (``read_latency``, ``write_latency``, ``beats_per_cycle``), the DDR-like model."""
    size = int(os.environ.get("HLSINF_RAM_BYTES", RAM_BYTES))
    options = os.environ.get("HLSINF_MEMORY")
    if options:
        from hlsinf.sim.axi_latency import LatencyAxiRam
        return LatencyAxiRam(bus, clk, rst, reset_active_level=False, size=size, clock_period_ns=CLOCK_NS,
                             **json.loads(options))
    return AxiRam(bus, clk, rst, reset_active_level=False, size=size)


class Host:
    """The three memories, the control master and the clock of one simulated card."""

    def __init__(self, dut, cfg: KernelConfig):
        self.dut, self.cfg = dut, cfg
        clk, rst = dut.ap_clk, dut.ap_rst_n
        self.mem = {bundle: memory_model(AxiBus.from_prefix(dut, f"m_axi_{bundle}"), clk, rst)
                    for bundle in ("gmem_in", "gmem_w", "gmem_out")}
        self.ctrl = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), clk, rst,
                                  reset_active_level=False)
        # The models log every transfer at INFO: keep failures readable.
        for model in (*self.mem.values(), self.ctrl):
            for part in (model.write_if, model.read_if):
                part.log.setLevel(logging.WARNING)

    async def start(self):
        cocotb.start_soon(Clock(self.dut.ap_clk, CLOCK_NS, unit="ns").start())
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, 8)
        self.dut.ap_rst_n.value = 1
        await ClockCycles(self.dut.ap_clk, 4)

    @property
    def cycle(self) -> int:
        """Clock cycles since time 0 (from the simulation time: no per-cycle coroutine)."""
        return int(get_sim_time(unit="ns") // CLOCK_NS)

    def pause_everything(self, seed: int, probability: float = 0.3):
        """Random stalls on every channel of every AXI interface (ready and valid sides)."""
        rng = random.Random(seed)

        def pauses():
            while True:
                yield rng.random() < probability
        for ram in self.mem.values():
            for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                       ram.read_if.ar_channel, ram.read_if.r_channel):
                ch.set_pause_generator(pauses())
        for ch in (self.ctrl.write_if.aw_channel, self.ctrl.write_if.w_channel, self.ctrl.write_if.b_channel,
                   self.ctrl.read_if.ar_channel, self.ctrl.read_if.r_channel):
            ch.set_pause_generator(pauses())

    async def read_control(self) -> int:
        return await self.ctrl.read_dword(CONTROL)

    async def call(self, args: CallArgs, pointers: dict[str, int], *, wait: str = "poll",
                   timeout_cycles: int | None = None) -> int:
        """Write the arguments, start, wait for done; return the cycles from start to done.

        A call that takes longer than ``timeout_cycles`` fails as hung. The default is
        ``$HLSINF_TIMEOUT_CYCLES`` when set, else four times the call's ideal cycles plus
        50,000 for memory latency and fill.
        """
        if timeout_cycles is None:
            default = 4 * args.ideal_cycles(self.cfg) + 50_000
            timeout_cycles = int(os.environ.get("HLSINF_TIMEOUT_CYCLES", default))
        for offset, value in sorted(encode_call(args, self.cfg, pointers).items()):
            await self.ctrl.write_dword(offset, value)
        if wait == "interrupt":
            await self.ctrl.write_dword(GIE, 1)
            await self.ctrl.write_dword(IER, 1)
            stale = await self.ctrl.read_dword(ISR)      # set by an earlier call finished by polling
            if stale:
                await self.ctrl.write_dword(ISR, stale)  # toggle-on-write clears it
                await ClockCycles(self.dut.ap_clk, 2)     # the interrupt output is registered
            assert not int(self.dut.interrupt.value), "interrupt high before the call started"
        status = await self.read_control()
        assert status & 0b100, f"kernel not idle before start (control = {status:#x})"
        await self.ctrl.write_dword(CONTROL, 1)
        started = self.cycle
        if wait == "interrupt":
            if not int(self.dut.interrupt.value):
                await First(RisingEdge(self.dut.interrupt), Timer(timeout_cycles * CLOCK_NS, unit="ns"))
            assert int(self.dut.interrupt.value), "no interrupt: kernel hung"
            finished = self.cycle
            isr = await self.ctrl.read_dword(ISR)
            assert isr & 1, f"interrupt raised but ISR = {isr:#x}"
            await self.ctrl.write_dword(ISR, 1)          # toggle on write: clears ap_done's bit
            await ClockCycles(self.dut.ap_clk, 2)
            assert not int(self.dut.interrupt.value), "interrupt still high after clearing ISR"
            status = await self.read_control()
            assert status & 0b10, f"ap_done not set after the interrupt (control = {status:#x})"
        else:
            while True:
                status = await self.read_control()
                if status & 0b10:
                    break
                assert self.cycle - started < timeout_cycles, "no ap_done: kernel hung"
            finished = self.cycle
        status = await self.read_control()
        assert not status & 0b10, "ap_done did not clear on read"
        assert status & 0b100, "ap_idle not set after done"
        return finished - started


class Layer:
    """Random tensors of one layer and their packed memory images."""

    def __init__(self, cfg: KernelConfig, rng: np.random.Generator, *, H, W, I, O, mult_bits=None):
        self.cfg = cfg
        amin, amax = cfg.act_range
        wmin, wmax = cfg.weight_range
        self.x = rng.integers(amin, amax + 1, (I, H, W))
        self.w = rng.integers(wmin, wmax + 1, (O, I, 3, 3))
        self.b = rng.integers(-3000, 3000, O)
        self.m = rng.integers(0, 1 << (mult_bits or cfg.mult_bits), O)
        self.x_mem = ref.pack_activations(self.x, cfg.cpi, ref.act_dtype(cfg), bits=cfg.act_bits)
        self.w_mem = ref.pack_weights(self.w, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg), bits=cfg.weight_bits)
        self.b_mem = ref.pack_channels(self.b, cfg.cpo, ref.bias_dtype(cfg))
        self.m_mem = ref.pack_channels(self.m, cfg.cpo, ref.mult_dtype(cfg))
        # Post-op bn parameters (written only for a kernel built with bn).
        self.n_mem = ref.pack_bn(rng.integers(-300, 300, O), rng.integers(-5000, 5000, O), cfg.cpo) \
            if "bn" in cfg.post_ops else None
        # Post-op residual_add operand: an output-shaped image (GOHWCPO) of planes of up to
        # 2 * H * W pixels (the calls choose r_offset and r_plane inside it).
        self.r_mem = rng.integers(amin, amax + 1, -(-O // cfg.cpo) * 2 * H * W * cfg.cpo).astype(ref.act_dtype(cfg)) \
            if "residual_add" in cfg.post_ops else None
        # Post-op table: a random table (the scenario may replace it between calls).
        self.t_mem = rng.integers(0, 256, 1 << cfg.act_bits).astype(np.uint8).view(ref.act_dtype(cfg)) \
            if "table" in cfg.post_ops else None


class Buffers:
    """Where a layer's images sit in the three memories; the output buffer with a guard band."""

    GUARD = 67  # bytes checked on each side of the output buffer

    def __init__(self, host: Host, layer: Layer, calls: list[CallArgs], pointers: dict[str, int],
                 rng: np.random.Generator):
        cfg = host.cfg
        self.host, self.layer, self.pointers = host, layer, pointers
        mem = host.mem
        mem["gmem_in"].write(pointers["x"], layer.x_mem.tobytes())
        mem["gmem_w"].write(pointers["w"], layer.w_mem.tobytes())
        mem["gmem_w"].write(pointers["b"], layer.b_mem.tobytes())
        mem["gmem_w"].write(pointers["m"], layer.m_mem.tobytes())
        if layer.n_mem is not None:
            mem["gmem_w"].write(pointers["n"], layer.n_mem.tobytes())
        if layer.r_mem is not None:
            mem["gmem_in"].write(pointers["r"], layer.r_mem.tobytes())
        if layer.t_mem is not None:
            mem["gmem_w"].write(pointers["t"], layer.t_mem.tobytes())
        # Random bytes everywhere: a write outside the call's pixels shows as a difference.
        size = max(args.go(cfg) * args.plane_out() * cfg.cpo for args in calls) * cfg.act_bits // 8
        self.out_raw = rng.integers(0, 256, size + 2 * self.GUARD, dtype=np.uint8)   # guard, output, guard
        mem["gmem_out"].write(pointers["y"] - self.GUARD, self.out_raw.tobytes())

    def expect(self, args: CallArgs) -> np.ndarray:
        """The reference output of ``args`` applied to the current expected memory."""
        cfg, g = self.host.cfg, self.GUARD
        dtype = ref.act_dtype(cfg)
        expected = self.out_raw.copy()
        out = expected[g: len(expected) - g].view(dtype)
        ref.kernel_call(cfg, args, self.layer.x_mem, self.layer.w_mem, self.layer.b_mem, out,
                        self.layer.m_mem, self.layer.n_mem, r_mem=self.layer.r_mem,
                        t_mem=self.layer.t_mem)
        self.out_raw = expected
        return expected

    def check(self, args: CallArgs):
        expected = self.expect(args)
        got = np.frombuffer(self.host.mem["gmem_out"].read(self.pointers["y"] - self.GUARD, len(expected)),
                            dtype=np.uint8)
        if not np.array_equal(got, expected):
            bad = np.flatnonzero(got != expected)
            raise AssertionError(
                f"output differs at {len(bad)} of {len(expected)} bytes (guard {self.GUARD}); first at "
                f"byte {bad[0] - self.GUARD} of the buffer: got {got[bad[:8]].tolist()}, "
                f"expected {expected[bad[:8]].tolist()} for {args}")


POINTERS = {"x": 0x1000, "w": 0x10000, "b": 0x30000, "m": 0x31000, "y": 0x20000, "n": 0x32000, "r": 0x8000 + 5,
            "t": 0x33000}


def record_cycles(name: str, cfg: KernelConfig, args: CallArgs, cycles: int):
    path = os.environ.get("HLSINF_CYCLES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "cfg": cfg.to_dict(), "args": args.to_dict(),
                                "cycles": cycles, "ideal": args.ideal_cycles(cfg)}) + "\n")


async def run_case(dut, name: str, calls, *, H, W, I, O, seed=0, pointers=POINTERS, wait="poll",
                   pause=False, mult_bits=None):
    """One layer in memory, then each CallArgs of ``calls`` run and checked in turn."""
    cfg = kernel_config()
    host = Host(dut, cfg)
    if pause:
        host.pause_everything(seed)
    await host.start()
    rng = np.random.default_rng(seed)
    layer = Layer(cfg, rng, H=H, W=W, I=I, O=O, mult_bits=mult_bits)
    for args in calls:
        args.validate(cfg)
    buffers = Buffers(host, layer, calls, pointers, rng)
    for k, args in enumerate(calls):
        cycles = await host.call(args, pointers, wait=wait if isinstance(wait, str) else wait[k % len(wait)])
        buffers.check(args)
        record_cycles(f"{name}[{k}]", cfg, args, cycles)
        dut._log.info(f"{name}[{k}]: {cycles} cycles, ideal {args.ideal_cycles(cfg)}")


# The scenarios ----------------------------------------------------------------------------------

@cocotb.test()
async def groups_and_padding(dut):
    """Several input and output groups, one-pixel padding, requantisation by shift."""
    cfg = kernel_config()
    I, O = 2 * cfg.cpi + 1, 2 * cfg.cpo + 1
    await run_case(dut, "groups_and_padding",
                   [CallArgs(H=5, W=6, rows=5, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1,
                             pad_right=1, shift=9)], H=5, W=6, I=I, O=O, seed=1)


@cocotb.test()
async def padding_each_side(dut):
    """Padding 0, 1, 2 on different sides (each side on its own), interrupt completion."""
    cfg = kernel_config()
    I, O = cfg.cpi, cfg.cpo
    calls = [CallArgs(H=5, W=5, rows=5, I=I, O=O, shift=8, **{side: 2})
             for side in ("pad_top", "pad_bottom", "pad_left", "pad_right")]
    calls.append(CallArgs(H=5, W=5, rows=5, I=I, O=O, shift=8, pad_top=2, pad_bottom=1, pad_left=0, pad_right=2))
    await run_case(dut, "padding_each_side", calls, H=5, W=5, I=I, O=O, seed=2, wait="interrupt")


@cocotb.test()
async def stride2_maxpool(dut):
    cfg = kernel_config()
    I, O = cfg.cpi + 2, cfg.cpo + 3
    await run_case(dut, "stride2_maxpool",
                   [CallArgs(H=9, W=10, rows=9, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                             stride=2, shift=8, pool=POOL_MAX)], H=9, W=10, I=I, O=O, seed=3)


@cocotb.test()
async def avgpool_requantise(dut):
    """Average pooling after requantisation with per-channel multipliers, ReLU and a clip."""
    cfg = kernel_config()
    I, O = 2 * cfg.cpi, 2 * cfg.cpo
    amin, amax = cfg.act_range
    await run_case(dut, "avgpool_requantise",
                   [CallArgs(H=6, W=7, rows=6, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                             shift=20, use_mult=True, relu=True, clip_hi=amax - 30, pool=POOL_AVG),
                    CallArgs(H=6, W=7, rows=6, I=I, O=O, shift=20, use_mult=True, pool=POOL_MAX)],
                   H=6, W=7, I=I, O=O, seed=4, mult_bits=min(cfg.mult_bits, 12))


@cocotb.test()
async def post_ops(dut):
    """The post-operations of KernelConfig.post_ops on, off, on again (with pooling after them);
    nothing to do in a kernel built without any."""
    cfg = kernel_config()
    if not cfg.post_ops:
        return
    I, O = 2 * cfg.cpi, 2 * cfg.cpo - 1
    leaky = dict(leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8) if "leaky_relu" in cfg.post_ops else {}
    bn = dict(bn=True, bn_shift=7, bn_clip_lo=-100) if "bn" in cfg.post_ops else {}
    await run_case(dut, "post_ops",
                   [CallArgs(H=6, W=7, rows=6, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                             shift=9, **leaky, **bn),
                    CallArgs(H=6, W=7, rows=6, I=I, O=O, shift=10, relu=True, pool=POOL_MAX),
                    CallArgs(H=6, W=7, rows=6, I=I, O=O, pad_top=1, pad_left=1, shift=20, use_mult=True,
                             pool=POOL_AVG, o_first=1, **leaky),
                    CallArgs(H=6, W=7, rows=6, I=I, O=O, shift=11, use_mult=True, o_first=1, **bn)],
                   H=6, W=7, I=I, O=O, seed=12, mult_bits=min(cfg.mult_bits, 12))


@cocotb.test()
async def residual(dut):
    """Post-op residual_add: on and off, several output groups, pooling after the add, row
    tiles addressed like the output, explicit operand planes; nothing to do without it."""
    cfg = kernel_config()
    if "residual_add" not in cfg.post_ops:
        return
    H, W, I, O = 6, 7, 2 * cfg.cpi, 3 * cfg.cpo - 1
    plane = H * W
    add = dict(residual_add=True, r_mult=181, r_shift=8)
    calls = [
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                 r_relu=True, **add),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=10, relu=True, pool=POOL_MAX),            # add off
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_left=1, shift=20, use_mult=True, pool=POOL_AVG,
                 o_first=1, r_clip_lo=-20, r_clip_hi=90, **add),
        # Row tiles of one layer: output rows [0, 3) and [3, 6), the operand addressed like the output.
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, pad_right=1, shift=9,
                 write_offset=0, out_plane=plane, r_relu=True, **add),
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                 read_offset=2 * W, write_offset=3 * W, out_plane=plane, r_relu=True, **add),
        # An operand plane of its own (not the output's), shift 0, stride 2.
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=8, o_first=1, o_count=1,
                 residual_add=True, r_mult=3, r_shift=0, r_offset=5, r_plane=2 * plane),
    ]
    await run_case(dut, "residual", calls, H=H, W=W, I=I, O=O, seed=13, mult_bits=min(cfg.mult_bits, 12),
                   pause=True, wait=["poll", "interrupt"])


@cocotb.test()
async def table(dut):
    """Post-op table: calls with it on and off, a new random table before each call (so a
    stale table shows), several output groups, pooling after it, random AXI pauses; also
    the table's read at an unaligned address. Nothing to do in a kernel built without it."""
    cfg = kernel_config()
    if "table" not in cfg.post_ops:
        return
    H, W, I, O = 6, 7, 2 * cfg.cpi + 1, 3 * cfg.cpo - 1
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                      shift=9, table=True),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=10, pool=POOL_MAX, table=True),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_left=1, shift=9, o_first=1),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_left=1, shift=20, use_mult=True,
                      pool=POOL_AVG, o_first=1, table=True),
             CallArgs(H=H, W=W, rows=5, I=I, O=O, pad_bottom=1, stride=2, shift=8, relu=True, table=True)]
    host = Host(dut, cfg)
    await host.start()
    for seed, pause, t in ((13, False, POINTERS["t"]), (14, True, POINTERS["t"] + 0x1C3)):
        pointers = {**POINTERS, "t": t}
        if pause:
            host.pause_everything(seed)
        rng = np.random.default_rng(seed)
        layer = Layer(cfg, rng, H=H, W=W, I=I, O=O, mult_bits=min(cfg.mult_bits, 12))
        buffers = Buffers(host, layer, calls, pointers, rng)
        for k, args in enumerate(calls):
            layer.t_mem = rng.integers(0, 256, 1 << cfg.act_bits).astype(np.uint8).view(ref.act_dtype(cfg))
            host.mem["gmem_w"].write(pointers["t"], layer.t_mem.tobytes())
            cycles = await host.call(args, pointers)
            buffers.check(args)
            record_cycles(f"table[{k}]", cfg, args, cycles)
            dut._log.info(f"table[{k}] (pauses {pause}): {cycles} cycles, ideal {args.ideal_cycles(cfg)}")


@cocotb.test()
async def row_tiles(dut):
    """An image computed in three row tiles through read/write offsets, output groups split."""
    cfg = kernel_config()
    H, W, I, O = 8, 5, cfg.cpi + 1, 2 * cfg.cpo
    plane = H * W
    # Output row r uses input rows r-1..r+1; tiles of output rows [0,3), [3,6), [6,8).
    calls = [
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, pad_right=1, shift=8,
                 read_offset=0, write_offset=0, out_plane=plane, o_first=0, o_count=1),
        CallArgs(H=H, W=W, rows=5, I=I, O=O, pad_left=1, pad_right=1, shift=8,
                 read_offset=2 * W, write_offset=3 * W, out_plane=plane, o_first=0, o_count=1),
        CallArgs(H=H, W=W, rows=3, I=I, O=O, pad_bottom=1, pad_left=1, pad_right=1, shift=8,
                 read_offset=5 * W, write_offset=6 * W, out_plane=plane),
        CallArgs(H=H, W=W, rows=5, I=I, O=O, pad_top=1, pad_left=1, pad_right=1, shift=8,
                 read_offset=0, write_offset=0, out_plane=plane, o_first=1),
    ]
    await run_case(dut, "row_tiles", calls, H=H, W=W, I=I, O=O, seed=5, wait=["poll", "interrupt"])


@cocotb.test()
async def back_to_back(dut):
    """Calls with different arguments one after the other, without reset in between."""
    cfg = kernel_config()
    H, W, I, O = 6, 6, 2 * cfg.cpi, 2 * cfg.cpo
    calls = [
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9),
        CallArgs(H=H, W=W, rows=H, I=cfg.cpi, O=cfg.cpo, stride=2, shift=7, relu=True),
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_left=2, shift=18, use_mult=True, pool=POOL_AVG,
                 read_offset=W, o_first=1),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=2, pad_right=1, shift=9, pool=POOL_MAX, stride=2),
    ]
    await run_case(dut, "back_to_back", calls, H=H, W=W, I=I, O=O, seed=6, mult_bits=min(cfg.mult_bits, 10))


@cocotb.test()
async def unaligned_buffers(dut):
    """Buffers at odd addresses, each straddling a 4 KiB boundary.

    The output buffer is pixel-aligned (a multiple of CPO activation bytes), as the write
    master requires; every input buffer is at an arbitrary byte address.
    """
    cfg = kernel_config()
    H, W, I, O = 7, 7, 2 * cfg.cpi, 2 * cfg.cpo
    pixel_bytes = cfg.cpo * cfg.act_bits // 8
    pointers = {"x": 0x3000 - 101, "w": 0x12000 - 75, "b": 0x33000 - 5, "m": 0x34000 - 3,
                "y": 0x22000 - 13 * pixel_bytes}
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                      shift=18, use_mult=True, relu=True),
             CallArgs(H=H, W=W, rows=5, I=I, O=O, shift=9, read_offset=W + 0, write_offset=1, o_first=1,
                      out_plane=40)]
    await run_case(dut, "unaligned_buffers", calls, H=H, W=W, I=I, O=O, seed=7, pointers=pointers,
                   mult_bits=min(cfg.mult_bits, 10))


@cocotb.test()
async def random_pauses(dut):
    """Random pauses (30%) on every AXI channel of every interface, several groups."""
    cfg = kernel_config()
    H, W, I, O = 6, 5, 2 * cfg.cpi + 1, 2 * cfg.cpo + 1
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                      shift=9, pool=POOL_MAX),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, stride=2, shift=18, use_mult=True)]
    pointers = {"x": 0x3000 - 33, "w": 0x12000 - 7, "b": 0x33000 - 2, "m": 0x34000 - 1,
                "y": 0x22000 - 9 * cfg.cpo * cfg.act_bits // 8}
    await run_case(dut, "random_pauses", calls, H=H, W=W, I=I, O=O, seed=8, pause=True, pointers=pointers,
                   wait=["poll", "interrupt"], mult_bits=min(cfg.mult_bits, 10))


@cocotb.test(skip=os.environ.get("HLSINF_BENCH") is None)
async def benchmark_calls(dut):
    """Calls listed in ``$HLSINF_BENCH`` (JSON list of {H, W, I, O, args...}), for benchmarks/cycles.py."""
    cases = json.loads(os.environ["HLSINF_BENCH"])
    for k, case in enumerate(cases):
        name = case.pop("name", f"bench{k}")
        shape = {key: case.pop(key) for key in ("H", "W", "I", "O")}
        args = CallArgs(rows=case.pop("rows", shape["H"]), **shape, **case)
        await run_case(dut, name, [args], **shape, seed=100 + k, wait="interrupt",
                       pointers=packed_pointers(kernel_config(), args))


def packed_pointers(cfg: KernelConfig, args: CallArgs, align: int = 4096) -> dict[str, int]:
    """Buffers of one call one after the other (4 KiB aligned, past a guard band): big
    layers do not fit the fixed :data:`POINTERS`."""
    gi, go = args.gi(cfg), args.go(cfg)
    sizes = {"x": gi * args.H * args.W * cfg.cpi * cfg.act_bits // 8,
             "w": go * gi * cfg.cpo * cfg.cpi * 9 * cfg.weight_bits // 8,
             "b": go * cfg.cpo * cfg.bias_bits // 8, "m": go * cfg.cpo * 4,
             "y": go * args.plane_out() * cfg.cpo * cfg.act_bits // 8}
    if "residual_add" in cfg.post_ops:             # the operand image of Layer (planes of 2 * H * W)
        sizes["r"] = go * 2 * args.H * args.W * cfg.cpo * cfg.act_bits // 8
    pointers, at = {}, align
    for name, size in sizes.items():
        pointers[name] = at
        at += -(-(size + 2 * Buffers.GUARD) // align) * align + align
    limit = int(os.environ.get("HLSINF_RAM_BYTES", RAM_BYTES))
    if at > limit:
        raise ValueError(f"the buffers of {args} need {at} bytes: set HLSINF_RAM_BYTES >= {at} (now {limit})")
    return pointers


@cocotb.test()
async def random_calls(dut):
    """Random valid calls on one layer in memory: shapes, padding, stride, pooling, groups, tiles."""
    cfg = kernel_config()
    seed = int(os.environ.get("HLSINF_SEED", "9"))
    rng = np.random.default_rng(seed)
    H, W = 7, 6
    I, O = 2 * cfg.cpi + 1, 3 * cfg.cpo - 1
    amin, amax = cfg.act_range
    calls = []
    while len(calls) < 10:
        rows = int(rng.integers(1, H + 1))
        args = CallArgs(H=H, W=W, rows=rows, I=I, O=O,
                        pad_top=int(rng.integers(0, 3)), pad_bottom=int(rng.integers(0, 3)),
                        pad_left=int(rng.integers(0, 3)), pad_right=int(rng.integers(0, 3)),
                        stride=int(rng.choice([1, 2])), relu=bool(rng.integers(0, 2)),
                        use_mult=bool(rng.integers(0, 2)), read_offset=int(rng.integers(0, H - rows + 1)) * W)
        args.shift = int(rng.integers(16, 21)) if args.use_mult else int(rng.integers(7, 11))
        if rng.integers(0, 3) == 0:
            lo, hi = sorted(int(v) for v in rng.integers(amin, amax + 1, 2))
            args.clip_lo, args.clip_hi = lo, hi
        if args.conv_rows < 1 or args.conv_cols < 1:
            continue
        if args.conv_rows >= 2 and args.conv_cols >= 2:
            args.pool = int(rng.choice([POOL_NONE, POOL_MAX, POOL_AVG]))
        go = args.go(cfg)
        args.o_first = int(rng.integers(0, go))
        args.o_count = int(rng.integers(1, go - args.o_first + 1))
        args.write_offset = int(rng.integers(0, 4))
        args.out_plane = args.write_offset + args.out_rows * args.out_cols + int(rng.integers(0, 3))
        try:
            calls.append(args.validate(cfg))
        except ValueError:
            continue
    await run_case(dut, "random_calls", calls, H=H, W=W, I=I, O=O, seed=seed + 1, wait=["poll", "interrupt"],
                   mult_bits=min(cfg.mult_bits, 10), pause=bool(rng.integers(0, 2)))
