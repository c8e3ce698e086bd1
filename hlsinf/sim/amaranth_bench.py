"""The whole kernel in Amaranth's simulator: Python AXI memories on the three masters and an
AXI4-Lite host on ``s_axi_control``, driven through the flat Vitis-named ports.

Slower per cycle than Verilator but needs no compile, so it is the quick check of the
composition (tests/gateware/test_kernel_sim.py) and the place to debug with a VCD.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth.sim import Simulator

from hlsinf.sim.axi_memory import AXIMemory
from hlsinf.gateware.memory.axi import AXI4Signature
from hlsinf.gateware.kernel import BUNDLES, Kernel
from hlsinf.registers import CONTROL, encode_call

__all__ = ["bundle_view", "KernelSim"]

PERIOD = 1e-8


def bundle_view(dut, prefix: str, signature) -> SimpleNamespace:
    """The flat ports ``prefix_<member>`` of ``dut`` as an object with the members as attributes."""
    return SimpleNamespace(**{name: getattr(dut, f"{prefix}_{name}") for name in signature.members})


class KernelSim:
    """Runs calls on ``Kernel(cfg)`` with memories of ``mem_bytes`` bytes per bundle."""

    def __init__(self, cfg, *, mem_bytes: int = 1 << 18, stall: float = 0.0, latency: int = 4, seed: int = 0,
                 **kernel_args):
        self.cfg = cfg
        self.dut = Kernel(cfg, **kernel_args)
        self.mem = {b: np.zeros(mem_bytes, np.uint8) for b in BUNDLES}
        self.models = {b: AXIMemory(self.mem[b], latency=latency, stall=stall, seed=seed + k)
                       for k, b in enumerate(BUNDLES)}
        self.cycles = []

    async def _write(self, ctx, addr, value):
        d = self.dut
        ctx.set(d.s_axi_control_awaddr, addr)
        ctx.set(d.s_axi_control_awvalid, 1)
        ctx.set(d.s_axi_control_wdata, value)
        ctx.set(d.s_axi_control_wstrb, 0xF)
        ctx.set(d.s_axi_control_wvalid, 1)
        ctx.set(d.s_axi_control_bready, 1)
        aw = w = False
        while not (aw and w):
            _, _, awready, wready = await ctx.tick("sync").sample(d.s_axi_control_awready, d.s_axi_control_wready)
            if awready and ctx.get(d.s_axi_control_awvalid):
                aw = True
                ctx.set(d.s_axi_control_awvalid, 0)
            if wready and ctx.get(d.s_axi_control_wvalid):
                w = True
                ctx.set(d.s_axi_control_wvalid, 0)
        while True:
            _, _, bvalid = await ctx.tick("sync").sample(d.s_axi_control_bvalid)
            if bvalid:
                break
        ctx.set(d.s_axi_control_bready, 0)

    async def _read(self, ctx, addr):
        d = self.dut
        ctx.set(d.s_axi_control_araddr, addr)
        ctx.set(d.s_axi_control_arvalid, 1)
        ctx.set(d.s_axi_control_rready, 1)
        while True:
            _, _, arready = await ctx.tick("sync").sample(d.s_axi_control_arready)
            if arready:
                break
        ctx.set(d.s_axi_control_arvalid, 0)
        while True:
            _, _, rvalid, rdata = await ctx.tick("sync").sample(d.s_axi_control_rvalid, d.s_axi_control_rdata)
            if rvalid:
                break
        ctx.set(d.s_axi_control_rready, 0)
        return rdata

    def run(self, calls, *, max_cycles: int = 50_000, vcd: str | None = None):
        """``calls``: list of ``(CallArgs, pointers)``; runs them in turn, records cycles."""
        dut = self.dut
        sim = Simulator(dut)
        finished = []

        async def clock(ctx):
            while True:
                ctx.set(dut.ap_clk, 0)
                await ctx.delay(PERIOD / 2)
                ctx.set(dut.ap_clk, 1)
                await ctx.delay(PERIOD / 2)

        async def host(ctx):
            ctx.set(dut.ap_rst_n, 0)
            for _ in range(4):
                await ctx.tick("sync")
            ctx.set(dut.ap_rst_n, 1)
            for _ in range(3):     # the reset is registered once inside the kernel
                await ctx.tick("sync")
            for args, pointers in calls:
                for offset, value in sorted(encode_call(args, self.cfg, pointers).items()):
                    await self._write(ctx, offset, value)
                await self._write(ctx, CONTROL, 1)
                start = self.models[BUNDLES[0]].cycle
                while not (await self._read(ctx, CONTROL)) & 0b10:
                    pass
                self.cycles.append(self.models[BUNDLES[0]].cycle - start)
            finished.append(True)

        sim.add_process(clock)
        sim.add_testbench(host)
        for bundle in BUNDLES:
            view = bundle_view(dut, f"m_axi_{bundle}", AXI4Signature())
            async def serve(ctx, model=self.models[bundle], view=view):
                await model.serve(ctx, view)
            sim.add_testbench(serve, background=True)

        def go():
            t = 0
            while not finished and t < max_cycles:
                t += 500
                sim.run_until(t * PERIOD)
        if vcd:
            with sim.write_vcd(vcd):
                go()
        else:
            go()
        if not finished:
            raise AssertionError(f"calls did not finish within {max_cycles} cycles (kernel hung?)")
