"""Vitis RTL kernel packaging: (platform, config, register map, Verilog) -> the files Vivado and v++ read.

Everything here is derived from two sources so nothing can drift: the register map of
:mod:`hlsinf.registers` (argument names, offsets, sizes, bundles) and the ports of the
generated Verilog's top module (bundle names, AXI data and address widths). The files:

* ``kernel.xml``: the Vitis RTL kernel description (ports, arguments, register offsets);
* ``package.tcl``: a Vivado batch script that packages the Verilog as an IP with the
  register map and bus associations, then calls ``package_xo`` to make the ``.xo``;
* ``link.cfg``: the ``v++ --link`` configuration (compute units and DDR bank of every
  pointer argument);
* ``README.md``: the exact vendor commands.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hlsinf.registers import (CONTROL, CONTROL_BITS, GIE, IER, ISR, STATUS, STATUS_BITS, STATUS_RESP_SHIFT,
                              Register)

__all__ = ["PackagingError", "Port", "KernelInterface", "kernel_xml", "package_tcl",
           "link_config", "readme", "write_packaging", "PACKAGING_FILES", "CONTROL_REGISTERS", "STATUS_REGISTER"]

#: Names of the files :func:`write_packaging` writes, by role.
PACKAGING_FILES = {"kernel_xml": "kernel.xml", "package_tcl": "package.tcl",
                   "link_config": "link.cfg", "readme": "README.md"}

#: Vitis ap_ctrl_hs registers below ``ARGS_BASE``, as the IP packager names them.
CONTROL_REGISTERS = (
    ("CTRL", CONTROL, "ap_ctrl_hs control: " + ", ".join(f"bit {bit} {name}" for name, bit in CONTROL_BITS.items())),
    ("GIER", GIE, "global interrupt enable (bit 0)"),
    ("IP_IER", IER, "IP interrupt enable: bit 0 ap_done, bit 1 ap_ready"),
    ("IP_ISR", ISR, "IP interrupt status (toggle on write): bit 0 ap_done, bit 1 ap_ready"),
)

#: The read-only status word after the arguments (not an argument: kernel.xml names it in a
#: comment, the IP packager's register map lists it).
STATUS_REGISTER = (
    "STATUS", STATUS,
    "read-only, AXI error responses of the last call, cleared at ap_start, final at ap_done: "
    + ", ".join(f"bit {bit} {bundle}" for bundle, bit in STATUS_BITS.items()) + "; "
    + ", ".join(f"bits {shift + 1}-{shift} first {bundle} response" for bundle, shift in STATUS_RESP_SHIFT.items())
    + " (2 SLVERR, 3 DECERR); 0: clean")

#: Ports every Vitis RTL kernel must have, besides its AXI interfaces.
REQUIRED_PORTS = ("ap_clk", "ap_rst_n", "interrupt")

#: Channels of an AXI4-Lite slave whose presence makes ``s_axi_control`` an interface.
AXI_LITE_SIGNALS = ("awvalid", "awready", "awaddr", "wvalid", "wready", "wdata", "wstrb",
                    "bvalid", "bready", "bresp", "arvalid", "arready", "araddr",
                    "rvalid", "rready", "rdata", "rresp")


class PackagingError(ValueError):
    """The Verilog or the register map cannot be packaged as a Vitis kernel; the message says why."""


@dataclass(frozen=True)
class Port:
    name: str
    direction: str   #: "input", "output" or "inout"
    width: int


_TOP_RE = re.compile(r"\(\*\s*top\s*=\s*(?:1|32'd1)\s*\*\)\s*(?:\(\*.*?\*\)\s*)*module\s+(\\?\S+?)\s*\(", re.S)
_MODULE_RE = re.compile(r"^\s*module\s+(\\?\S+?)\s*[(#;]", re.M)
_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                      r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?(\\?[^\s;]+)\s*;", re.M)


@dataclass(frozen=True)
class KernelInterface:
    """Name and ports of the kernel's top module, read from its Verilog."""

    name: str
    ports: dict

    @classmethod
    def from_verilog(cls, text: str) -> "KernelInterface":
        top = _TOP_RE.search(text)
        if top:
            name, start = top.group(1), top.start()
        else:
            modules = list(_MODULE_RE.finditer(text))
            if len(modules) != 1:
                raise PackagingError("cannot tell the top module of the Verilog: no (* top = 1 *) "
                                     f"attribute and {len(modules)} modules")
            name, start = modules[0].group(1), modules[0].start()
        end = text.find("endmodule", start)
        body = text[start:end if end >= 0 else len(text)]
        ports = {}
        for m in _PORT_RE.finditer(body):
            direction, msb, lsb, port = m.groups()
            width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
            ports[port] = Port(port, direction, width)
        if not ports:
            raise PackagingError(f"top module {name!r} of the Verilog has no ports")
        return cls(name.lstrip("\\"), ports)

    def width(self, port: str) -> int:
        try:
            return self.ports[port].width
        except KeyError:
            raise PackagingError(f"kernel {self.name!r} has no port {port!r}") from None

    @property
    def control_range(self) -> int:
        """Bytes of the ``s_axi_control`` address space (from its address width)."""
        return 1 << self.width("s_axi_control_awaddr")

    def master(self, bundle: str) -> dict:
        """Data and address width of AXI4 master ``m_axi_<bundle>``."""
        prefix = f"m_axi_{bundle}_"
        data = self.ports.get(prefix + "rdata") or self.ports.get(prefix + "wdata")
        addr = self.ports.get(prefix + "araddr") or self.ports.get(prefix + "awaddr")
        if data is None or addr is None:
            raise PackagingError(f"kernel {self.name!r} has no AXI4 master {prefix[:-1]!r} "
                                 f"(looked for {prefix}rdata/wdata and {prefix}araddr/awaddr)")
        return {"data_width": data.width, "addr_width": addr.width}

    def bundles(self, regs: list[Register]) -> list[str]:
        """AXI master bundles the pointer arguments use, in register order, each once."""
        return list(dict.fromkeys(r.bundle for r in regs if r.kind == "pointer"))

    def check(self, regs: list[Register]) -> None:
        """Raise :class:`PackagingError` naming the first port Vitis needs that is missing."""
        for port in REQUIRED_PORTS:
            self.width(port)
        for signal in AXI_LITE_SIGNALS:
            self.width(f"s_axi_control_{signal}")
        if self.width("s_axi_control_wdata") != 32:
            raise PackagingError("s_axi_control_wdata must be 32 bits wide for Vitis")
        last = max([r.offset + r.bits // 8 for r in regs] + [STATUS_REGISTER[1] + 4])
        if last > self.control_range:
            raise PackagingError(f"register map ends at 0x{last:x}, beyond the 0x{self.control_range:x}-byte "
                                 "s_axi_control address space")
        for bundle in self.bundles(regs):
            self.master(bundle)


# Argument types -------------------------------------------------------------------------

_C_TYPES = {"uint8": "unsigned char", "int8": "char", "uint16": "unsigned short", "int16": "short",
            "uint32": "unsigned int", "int32": "int", "float32": "float"}


def _arg_type(reg: Register, element_types: dict) -> str:
    if reg.kind == "pointer":
        return _C_TYPES[element_types[reg.name]] + "*"
    return "int" if reg.signed else "unsigned int"


def _hex(value: int, digits: int = 3) -> str:
    return f"0x{value:0{digits}X}"


# kernel.xml -----------------------------------------------------------------------------

def kernel_xml(interface: KernelInterface, regs: list[Register], element_types: dict,
               vendor: str = "hlsinf.org", version: str = "1.0") -> str:
    """The Vitis RTL kernel XML: one ``<port>`` per AXI interface, one ``<arg>`` per register.

    ``element_types`` maps each pointer argument to the numpy name of what it points at
    (``uint8``, ``int32``, ...), which becomes its C type.
    """
    interface.check(regs)
    root = ET.Element("root", versionMajor="1", versionMinor="6")
    kernel = ET.SubElement(root, "kernel", name=interface.name, language="ip_c",
                           vlnv=f"{vendor}:kernel:{interface.name}:{version}", attributes="",
                           preferredWorkGroupSizeMultiple="0", workGroupSize="1", interrupt="true",
                           hwControlProtocol="ap_ctrl_hs")
    ports = ET.SubElement(kernel, "ports")
    ET.SubElement(ports, "port", name="s_axi_control", mode="slave", range=_hex(interface.control_range),
                  dataWidth="32", portType="addressable", base="0x0")
    for bundle in interface.bundles(regs):
        master = interface.master(bundle)
        ET.SubElement(ports, "port", name=f"m_axi_{bundle}", mode="master",
                      range=_hex((1 << master["addr_width"]) - 1, 1), dataWidth=str(master["data_width"]),
                      portType="addressable", base="0x0")
    kernel.append(ET.Comment(f" {STATUS_REGISTER[0]} at {_hex(STATUS_REGISTER[1])} of s_axi_control, not an argument: "
                             f"{STATUS_REGISTER[2]} "))
    args = ET.SubElement(kernel, "args")
    for arg_id, reg in enumerate(regs):
        size = reg.bits // 8
        ET.SubElement(args, "arg", name=reg.name, addressQualifier="1" if reg.kind == "pointer" else "0",
                      id=str(arg_id), port=f"m_axi_{reg.bundle}" if reg.kind == "pointer" else "s_axi_control",
                      size=_hex(size, 1), offset=_hex(reg.offset), type=_arg_type(reg, element_types),
                      hostOffset="0x0", hostSize=_hex(size, 1))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# package.tcl ----------------------------------------------------------------------------

def _tcl_quote(text: str) -> str:
    """A Tcl word that stands for ``text`` literally (braces, with unbalanced ones removed)."""
    return "{" + text.replace("{", "(").replace("}", ")").replace("\\", "/") + "}"


def package_tcl(platform, interface: KernelInterface, regs: list[Register], verilog_file: str,
                kernel_xml_file: str = PACKAGING_FILES["kernel_xml"], vendor: str = "hlsinf.org",
                version: str = "1.0") -> str:
    """Vivado batch script: package ``verilog_file`` as a Vitis RTL kernel IP, then ``package_xo``.

    Paths are relative to the script's own folder, so the output folder can be moved.
    """
    interface.check(regs)
    name = interface.name
    clock_hz = int(platform.default_clk_frequency)
    lines = [
        f"# Package the hlsinf RTL kernel {name} for {platform.vitis_platform} ({platform.part}).",
        "# Generated by python -m hlsinf.build; run from any folder with:",
        "#   vivado -mode batch -source package.tcl",
        "# Writes <this folder>/" + f"{name}.xo, the input of v++ --link.",
        "",
        "set here [file dirname [file normalize [info script]]]",
        f"set kernel_name {name}",
        f"set part {platform.part}",
        "set work [file join $here _package]",
        "set ip_dir [file join $work ip]",
        f"set xo_path [file join $here {name}.xo]",
        "",
        "# 1. A throw-away project holding the Verilog, packaged as an IP.",
        "create_project -force -part $part kernel_pack [file join $work project]",
        f"add_files -norecurse [file join $here {verilog_file}]",
        "set_property top $kernel_name [current_fileset]",
        "update_compile_order -fileset sources_1",
        f"ipx::package_project -root_dir $ip_dir -vendor {vendor} -library kernel "
        "-taxonomy /KernelIP -import_files -set_current true",
        "set core [ipx::current_core]",
        f"set_property version {version} $core",
        "set_property sdx_kernel true $core",
        "set_property sdx_kernel_type rtl $core",
        "set_property vitis_drc {ctrl_protocol ap_ctrl_hs} $core",
        "set_property ipi_drc {ignore_freq_hz true} $core",
        "",
        "# 2. Clock and reset: every interface runs on ap_clk; ap_rst_n is active low.",
        "ipx::associate_bus_interfaces -busif s_axi_control -clock ap_clk $core",
    ]
    for bundle in interface.bundles(regs):
        lines.append(f"ipx::associate_bus_interfaces -busif m_axi_{bundle} -clock ap_clk $core")
    lines += [
        "ipx::associate_bus_interfaces -clock ap_clk -reset ap_rst_n $core",
        "set reset [ipx::get_bus_interfaces ap_rst_n -of_objects $core]",
        "set polarity [ipx::get_bus_parameters POLARITY -of_objects $reset]",
        "if {$polarity eq \"\"} { set polarity [ipx::add_bus_parameter POLARITY $reset] }",
        "set_property value ACTIVE_LOW $polarity",
        "set clock [ipx::get_bus_interfaces ap_clk -of_objects $core]",
        "set frequency [ipx::get_bus_parameters FREQ_HZ -of_objects $clock]",
        "if {$frequency eq \"\"} { set frequency [ipx::add_bus_parameter FREQ_HZ $clock] }",
        f"set_property value {clock_hz} $frequency",
        "",
        "# 3. The register map of s_axi_control (hlsinf/registers.py); each pointer",
        "#    argument is tied to the AXI master it addresses.",
        "set block [ipx::get_address_blocks reg0 -of_objects [ipx::get_memory_maps s_axi_control -of_objects $core]]",
        f"set_property range {interface.control_range} $block",
        "proc add_register {block name offset size description {bus \"\"}} {",
        "    set reg [ipx::add_register $name $block]",
        "    set_property address_offset $offset $reg",
        "    set_property size $size $reg",
        "    set_property description $description $reg",
        "    if {$bus ne \"\"} {",
        "        set_property value $bus [ipx::add_register_parameter ASSOCIATED_BUSIF $reg]",
        "    }",
        "}",
    ]
    for reg_name, offset, doc in CONTROL_REGISTERS:
        lines.append(f"add_register $block {reg_name} {_hex(offset)} 32 {_tcl_quote(doc)}")
    for reg in regs:
        bus = f" m_axi_{reg.bundle}" if reg.kind == "pointer" else ""
        lines.append(f"add_register $block {reg.name} {_hex(reg.offset)} {reg.bits} {_tcl_quote(reg.doc)}{bus}")
    name, offset, doc = STATUS_REGISTER
    lines.append(f"add_register $block {name} {_hex(offset)} 32 {_tcl_quote(doc)}")
    lines += [
        "",
        "# 4. Save the IP and turn it into a Vitis object file.",
        "ipx::create_xgui_files $core",
        "ipx::update_checksums $core",
        "ipx::check_integrity -kernel $core",
        "ipx::save_core $core",
        "close_project -delete",
        "package_xo -force -xo_path $xo_path -kernel_name $kernel_name -ip_directory $ip_dir "
        f"-kernel_xml [file join $here {kernel_xml_file}]",
        "puts \"hlsinf: wrote $xo_path\"",
        "",
    ]
    return "\n".join(lines)


# link.cfg -------------------------------------------------------------------------------

def compute_unit(interface: KernelInterface) -> str:
    """Name of the single compute unit ``v++`` instantiates."""
    return f"{interface.name}_1"


def link_config(platform, interface: KernelInterface, regs: list[Register]) -> str:
    """``v++ --link --config`` file: one compute unit, each pointer argument on its bundle's bank."""
    interface.check(regs)
    cu = compute_unit(interface)
    lines = [
        f"# v++ --link configuration for {interface.name} on {platform.vitis_platform}.",
        "# Activations live on two DDR4 banks that both the input and the output master",
        "# reach, since one layer's output is the next layer's input; the host alternates",
        "# layers between them, so a call reads one bank and writes the other. Weights,",
        "# bias and multipliers have a bank of their own. Arguments on one bundle share it.",
        "[connectivity]",
        f"nk={interface.name}:1:{cu}",
    ]
    for reg in regs:
        if reg.kind == "pointer":
            lines.append(f"sp={cu}.{reg.name}:{platform.bank_of(reg.bundle)}")
    return "\n".join(lines) + "\n"


# README ---------------------------------------------------------------------------------

def readme(platform, interface: KernelInterface, regs: list[Register], files: dict) -> str:
    """Short guide to the output folder with the exact vendor commands."""
    name = interface.name
    mhz = int(platform.default_clk_frequency // 1_000_000)
    rows = "\n".join(f"| `{path}` | {role} |" for role, path in files.items())
    return f"""# {name}: Vitis RTL kernel for the Alveo U200

Generated by `python -m hlsinf.build`. Files in this folder:

| file | what it is |
|---|---|
{rows}

## From Verilog to a bitstream (needs Vivado and Vitis 2021.1 or later)

1. Package the RTL kernel as a Vitis object (writes `{name}.xo`):

       vivado -mode batch -source package.tcl

2. Link it against the U200 shell (hours; writes `{name}.xclbin`):

       v++ -l -t hw --platform {platform.vitis_platform} --kernel_frequency {mhz} \\
           --config link.cfg -o {name}.xclbin {name}.xo

   For hardware emulation use `-t hw_emu` instead of `-t hw`.

3. Load it on the card with XRT (`xrt::device::load_xclbin`), write the arguments at the
   offsets of `descriptor.json` (or `kernel.xml`), set ap_start and wait for ap_done.

The compute unit is `{compute_unit(interface)}`; its AXI masters go to these DDR banks:
{", ".join(f"`m_axi_{b}` on {platform.bank_of(b)}" for b in interface.bundles(regs))}.
"""


def write_packaging(out_dir, platform, interface: KernelInterface, regs: list[Register],
                    element_types: dict, verilog_file: str, extra_files: dict | None = None) -> dict:
    """Write kernel.xml, package.tcl, link.cfg and README.md into ``out_dir``; return {role: path}.

    ``extra_files`` ({description: file name}) are listed in the README next to these.
    """
    from pathlib import Path
    out = Path(out_dir)
    listed = {"kernel Verilog": verilog_file, **(extra_files or {}),
              "Vitis RTL kernel description": PACKAGING_FILES["kernel_xml"],
              "Vivado script: IP packaging and package_xo": PACKAGING_FILES["package_tcl"],
              "v++ --link configuration": PACKAGING_FILES["link_config"],
              "this guide": PACKAGING_FILES["readme"]}
    texts = {
        "kernel_xml": kernel_xml(interface, regs, element_types),
        "package_tcl": package_tcl(platform, interface, regs, verilog_file),
        "link_config": link_config(platform, interface, regs),
        "readme": readme(platform, interface, regs, listed),
    }
    written = {}
    for role, text in texts.items():
        path = out / PACKAGING_FILES[role]
        path.write_text(text)
        written[role] = path
    return written
