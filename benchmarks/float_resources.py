"""Resources and logic depth of the fp32 units with Yosys: FMul, FAdd (both subnormal modes)
and FDotTree adder trees.

    PYTHONPATH=$PWD python benchmarks/float_resources.py [--trees 9 36] [--yosys /usr/bin/yosys]

Each unit is synthesised on its own through ``hlsinf.build.resources.component_report`` (the
kernel's Yosys ``synth_xilinx -family xcup`` flow and netlist analysis) and printed as one
markdown row: latency, DSP48E2, LUT (LUT-like cells: SRL16E and INV included), FF, CARRY4
and the depth columns of ``benchmarks/yosys_mul.py`` (LUT + MUXF + CARRY cells on the path
with the most LUTs and on the longest carry path, and logic levels as Vivado counts them,
with Yosys' 4-bit CARRY4 where Vivado has CARRY8). The unit's ports are path ends, as if
registered outside. Not Vivado: a check of structure and depth, not a timing promise.
"""

from __future__ import annotations

import argparse

from hlsinf.build.resources import component_report
from hlsinf.gateware.lib.float32 import FAdd, FDotTree, FMul


def path_cells(path: dict) -> str:
    return " + ".join(str(path["counts"][kind]) for kind in ("LUT", "MUXF", "CARRY"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="*", type=int, default=[9, 36], help="FDotTree sizes")
    parser.add_argument("--yosys", default=None, help="Yosys with synth_xilinx (default: the one on PATH)")
    args = parser.parse_args()
    units = [(f"FMul{'' if sub else ' (FTZ)'}", FMul(subnormals=sub), "fmul") for sub in (True, False)]
    units += [(f"FAdd{'' if sub else ' (FTZ)'}", FAdd(subnormals=sub), "fadd") for sub in (True, False)]
    units += [(f"FDotTree({n})", FDotTree(n), f"fdottree{n}") for n in args.trees]
    print("| unit | latency | DSP48E2 | LUT | FF | CARRY4 | most LUTs | longest carry | logic levels | yosys s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, unit, top in units:
        report = component_report(unit, top=top, yosys=args.yosys)
        c, depth = report.counts, report.depth
        print(f"| {name} | {unit.latency} | {c['DSP48E2']} | {c['LUT']:,} | {c['FF']:,} | {c['CARRY']} | "
              f"{path_cells(depth['paths']['lut_levels'])} | {path_cells(depth['paths']['carry_levels'])} | "
              f"{depth['logic_levels']} | {report.seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
