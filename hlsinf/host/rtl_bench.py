"""cocotb side of :class:`hlsinf.host.rtl.RtlDevice`: the simulated card serving kernel calls.

Runs inside the Verilator simulation of the generated kernel. It connects back to the host
process over a Unix socket (``$HLSINF_RTL_SOCKET``) and serves one request at a time:
load the regions of a call into the three AXI RAM models, write the argument registers
through AXI4-Lite exactly as the host encoded them, set ``ap_start``, poll ``ap_done``,
and send back the output region, the status register (AXI errors of the call) and the
cycles from start to done (within the few cycles of one AXI4-Lite read). A request may name
bundles in ``"fail"``: every access of that call on them answers SLVERR (a broken memory,
for tests of the error path).
The simulator only advances while a call runs, so blocking on the socket between calls is
harmless.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from hlsinf.config import KernelConfig
from hlsinf.host.rtl import recv, send
from hlsinf.registers import CONTROL, STATUS

CLOCK_NS = 4


@cocotb.test()
async def serve(dut):
    cfg = KernelConfig.from_dict(json.loads(os.environ["HLSINF_CFG"]))
    size = int(os.environ.get("HLSINF_RTL_RAM", str(1 << 26)))
    clk = dut.ap_clk
    rams = {b: AxiRam(AxiBus.from_prefix(dut, f"m_axi_{b}"), clk, dut.ap_rst_n, reset_active_level=False, size=size)
            for b in ("gmem_in", "gmem_w", "gmem_out")}
    ctrl = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), clk, dut.ap_rst_n, reset_active_level=False)
    cocotb.start_soon(Clock(clk, CLOCK_NS, unit="ns").start())
    dut.ap_rst_n.value = 0
    await ClockCycles(clk, 8)
    dut.ap_rst_n.value = 1
    await ClockCycles(clk, 4)
    for bus in list(rams.values()) + [ctrl]:          # one INFO line per burst otherwise
        for side in (bus.write_if, bus.read_if):
            side.log.setLevel(logging.WARNING)
    failing = set()                                   # bundles whose accesses answer SLVERR

    def fallible(bundle, access):
        async def wrapped(address, data_or_length):
            if bundle in failing:
                raise OSError(f"{bundle}: injected error")   # AxiSlave answers SLVERR
            return await access(address, data_or_length)
        return wrapped
    for bundle, ram in rams.items():
        ram.read_if._read = fallible(bundle, ram.read_if._read)
        ram.write_if._write = fallible(bundle, ram.write_if._write)
        for side in (ram.read_if, ram.write_if):      # no warning line per failed beat
            side.log.setLevel(logging.ERROR)
    cycle = 0

    async def count():
        nonlocal cycle
        while True:
            await RisingEdge(clk)
            cycle += 1
    cocotb.start_soon(count())

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["HLSINF_RTL_SOCKET"])
    send(sock, {"ready": cfg.to_dict()})
    while True:
        req = recv(sock)
        if req.get("quit"):
            break
        for bundle, regions in req["regions"].items():
            for address, data in regions:
                rams[bundle].write(address, data)
        failing.clear()
        failing.update(req.get("fail", ()))
        for offset, word in sorted(req["words"].items()):
            await ctrl.write_dword(offset, word)
        status = await ctrl.read_dword(CONTROL)
        if not status & 0b100:
            send(sock, {"error": f"kernel not idle before start (control = {status:#x})"})
            continue
        await ctrl.write_dword(CONTROL, 1)
        started = cycle
        while True:                                  # poll ap_done (clear on read), as a host driver does
            status = await ctrl.read_dword(CONTROL)
            if status & 0b10:
                break
            if cycle - started > req["timeout"]:
                break
        if not status & 0b10:
            send(sock, {"error": f"no ap_done after {req['timeout']} cycles (control = {status:#x}): kernel hung"})
            break
        cycles = cycle - started
        failing.clear()
        status = await ctrl.read_dword(STATUS)
        address, nbytes = req["out"]
        send(sock, {"cycles": cycles, "status": status, "out": rams["gmem_out"].read(address, nbytes)})
    sock.close()
