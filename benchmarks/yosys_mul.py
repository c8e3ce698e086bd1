"""Structure check of stage ``mul`` with Yosys: DSP48E2, LUT, FF, CARRY and logic depth,
packed (two products per DSP48E2) against unpacked.

    PYTHONPATH=$PWD python benchmarks/yosys_mul.py 4 8 [16 32] [--yosys /usr/bin/yosys]

Runs ``synth_xilinx -family xcup -flatten`` on ``Mul(KernelConfig(cpi=n, cpo=n))`` (uint8
activations, int8 weights, default ``levels_per_register``) and prints one markdown row
per build. Not Vivado: a check of the structure and logic depth, not a timing promise.

Depth is measured on the mapped netlist (``write_json``), with every flip-flop, DSP48E2 and
I/O buffer as a path end, two ways:

* ``most LUTs``: the register-to-register path with the most LUTs, as LUT + MUXF + CARRY4
  cells on it (MUXF7/8/9 extend a LUT within its slice; a carry chain is one dedicated
  fast path, not LUT levels); ``longest carry``: the path with the most CARRY4 cells, in
  the same form. The nets they start and end at are printed below the table;
* ``ltp cells``: Yosys' ``ltp`` (longest topological path, every cell counts 1) after
  deleting flip-flops, DSPs and buffers, as in earlier measurements.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from amaranth.back import rtlil

from hlsinf.config import KernelConfig
from hlsinf.modules.mul import Mul

PATH_ENDS = ("FD", "DSP48", "IBUF", "OBUF", "BUFG", "RAMB", "URAM")
LUT_LIKE = ("LUT", "MUXF")


def synthesize(dut, workdir: Path, yosys: str):
    (workdir / "top.il").write_text(rtlil.convert(dut, name="top"))
    script = f"""
read_rtlil {workdir}/top.il
synth_xilinx -family xcup -flatten -top top
tee -o {workdir}/stat.txt stat
write_json {workdir}/net.json
delete t:FD* t:DSP48* t:*BUF* t:RAMB* t:URAM*
tee -o {workdir}/ltp.txt ltp
"""
    subprocess.run([yosys, "-q", "-p", script], check=True, stdout=subprocess.DEVNULL)
    cells = Counter()
    for line in (workdir / "stat.txt").read_text().splitlines():
        m = re.match(r"\s+(\w+)\s+(\d+)$", line)
        if m:
            cells[m.group(1)] = int(m.group(2))
    ltp = re.search(r"Longest topological path in \S+ \(length=(\d+)\)",
                    (workdir / "ltp.txt").read_text())
    return cells, int(ltp.group(1)) if ltp else None, deepest_paths(workdir / "net.json")


def deepest_paths(netlist: Path):
    """The deepest register-to-register paths of the mapped netlist, as ``(luts, muxes,
    carries, start net, end net)``: the one with the most LUTs (then wide muxes, then carry
    cells), and the one with the most carry cells (then LUTs)."""
    module = json.loads(netlist.read_text())["modules"]["top"]
    names = {}
    for net, info in module["netnames"].items():
        for bit in info["bits"]:
            if not isinstance(bit, str) and (bit not in names or len(net) < len(names[bit])):
                names[bit] = net
    drivers = {}
    sinks = defaultdict(list)
    cells = module["cells"]
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            for bit in bits:
                if isinstance(bit, str):
                    continue
                if cell["port_directions"].get(port) == "output":
                    drivers[bit] = name
                else:
                    sinks[name].append(bit)

    def is_end(name):
        return cells[name]["type"].startswith(PATH_ENDS)

    def counts(kind):
        return (kind.startswith("LUT"), kind.startswith("MUXF"), kind.startswith("CARRY"))

    def deepest(order):
        memo = {}

        def depth(name):
            """Deepest path ending at the output of combinational cell ``name``."""
            if name in memo:
                return memo[name]
            memo[name] = (0, 0, 0, "?")   # breaks a combinational loop, if there were one
            best = None
            for bit in sinks[name]:
                source = drivers.get(bit)
                if source is None:
                    continue
                found = (0, 0, 0, names.get(bit, "?")) if is_end(source) else depth(source)
                best = found if best is None else max(best, found, key=order)
            best = best or (0, 0, 0, "constant")
            add = counts(cells[name]["type"])
            memo[name] = (best[0] + add[0], best[1] + add[1], best[2] + add[2], best[3])
            return memo[name]

        result = (0, 0, 0, "-", "-")
        for name in cells:
            if is_end(name):
                for bit in sinks[name]:
                    source = drivers.get(bit)
                    if source is not None and not is_end(source):
                        found = (*depth(source), names.get(bit, "?"))
                        result = max(result, found, key=order)
        return result

    sys.setrecursionlimit(1_000_000)
    return (deepest(lambda d: (d[0], d[1], d[2])),
            deepest(lambda d: (d[2], d[0], d[1])))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", type=int, help="CPI = CPO values")
    parser.add_argument("--yosys", default="yosys")
    parser.add_argument("--unpacked-only", action="store_true")
    parser.add_argument("--packed-only", action="store_true")
    args = parser.parse_args()
    modes = [m for m in (True, False) if not (m and args.unpacked_only) and not (not m and args.packed_only)]
    print("| CPI x CPO | pack_dsp | latency | DSP48E2 | LUT | FF | CARRY4 | most LUTs | longest carry | ltp cells | yosys s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    paths = []
    for n in args.sizes:
        for pack in modes:
            dut = Mul(KernelConfig(cpi=n, cpo=n), pack_dsp=pack)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.time()
                cells, ltp, (most_luts, longest_carry) = synthesize(dut, Path(tmp), args.yosys)
                seconds = time.time() - start
            lut = sum(v for k, v in cells.items() if k.startswith("LUT"))
            ff = sum(v for k, v in cells.items() if k.startswith("FD"))
            print(f"| {n} x {n} | {'on' if pack else 'off'} | {dut.latency} | {cells['DSP48E2']:,} | {lut:,} | "
                  f"{ff:,} | {cells['CARRY4'] + cells['CARRY8']:,} | {path(most_luts)} | {path(longest_carry)} | "
                  f"{ltp} | {seconds:.0f} |", flush=True)
            for what, p in (("most LUTs", most_luts), ("longest carry", longest_carry)):
                paths.append(f"{n} x {n} pack_dsp={'on' if pack else 'off'}, {what}: {p[3]} -> {p[4]}")
    print()
    print("\n".join(paths))


def path(p):
    return f"{p[0]} + {p[1]} + {p[2]}"


if __name__ == "__main__":
    main()
