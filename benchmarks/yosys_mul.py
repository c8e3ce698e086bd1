"""Structure check of stage ``mul`` with Yosys: DSP48E2, LUT, FF, CARRY and logic depth,
packed (two products per DSP48E2) against unpacked.

    PYTHONPATH=$PWD python benchmarks/yosys_mul.py 4 8 [16 32] [--yosys /usr/bin/yosys]

Synthesises ``Mul(KernelConfig(cpi=n, cpo=n))`` (uint8 activations, int8 weights, default
``levels_per_register``) on its own through ``hlsinf.build.resources.component_report`` (the
kernel's Yosys ``synth_xilinx -family xcup`` flow and netlist analysis) and prints one
markdown row per build. Not Vivado: a check of the structure and logic depth, not a timing
promise.

Depth columns, on paths between registers, block RAM and the block's ports (a DSP48E2 with
no internal register is logic in the path; Yosys leaves every DSP of this stage
unregistered), each as the LUT + MUXF7/8/9 + CARRY4 cells on the path:

* ``most LUTs``: the path with the most LUTs (then MUXF, then CARRY cells): issue 6's LUT
  levels outside carry chains;
* ``longest carry``: the path with the most CARRY4 cells (then LUTs, then MUXF);
* ``logic levels``: the most LUT, MUXF, CARRY and unregistered DSP48E2 cells on one path,
  as Vivado counts logic levels (Yosys' CARRY4 is 4 bits where Vivado uses CARRY8, so
  carry chains count about twice).

The nets each of the first two paths starts and ends at are printed below the table.
"""

from __future__ import annotations

import argparse

from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.mul import Mul
from hlsinf.build.resources import component_report


def path_cells(path: dict) -> str:
    """A path's make-up as ``LUT + MUXF + CARRY`` cell numbers, e.g. ``2 + 3 + 0``."""
    return " + ".join(str(path["counts"][kind]) for kind in ("LUT", "MUXF", "CARRY"))


def path_ends(path: dict) -> str:
    """The named nets a path starts and ends at (the last named net its cells drive)."""
    named = [c["net"] for c in path["cells"] if c["net"]]
    return f"{path['from'] or '?'} -> {named[-1] if named else '?'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", type=int, help="CPI = CPO values")
    parser.add_argument("--yosys", default=None, help="Yosys with synth_xilinx (default: the one on PATH)")
    parser.add_argument("--unpacked-only", action="store_true")
    parser.add_argument("--packed-only", action="store_true")
    args = parser.parse_args()
    modes = [m for m in (True, False) if not (m and args.unpacked_only) and not (not m and args.packed_only)]
    print("| CPI x CPO | pack_dsp | latency | DSP48E2 | LUT | FF | CARRY4 | most LUTs | longest carry "
          "| logic levels | yosys s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ends = []
    for n in args.sizes:
        for pack in modes:
            dut = Mul(KernelConfig(cpi=n, cpo=n), pack_dsp=pack)
            report = component_report(dut, top="mul", yosys=args.yosys)
            c, depth = report.counts, report.depth
            most_luts, longest_carry = depth["paths"]["lut_levels"], depth["paths"]["carry_levels"]
            print(f"| {n} x {n} | {'on' if pack else 'off'} | {dut.latency} | {c['DSP48E2']:,} | {c['LUT']:,} | "
                  f"{c['FF']:,} | {c['CARRY']:,} | {path_cells(most_luts)} | {path_cells(longest_carry)} | "
                  f"{depth['logic_levels']} | {report.seconds:.0f} |", flush=True)
            for what, path in (("most LUTs", most_luts), ("longest carry", longest_carry)):
                ends.append(f"{n} x {n} pack_dsp={'on' if pack else 'off'}, {what}: {path_ends(path)}")
    print()
    print("\n".join(ends))


if __name__ == "__main__":
    main()
