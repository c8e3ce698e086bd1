"""Resources and logic depth of the memory-side blocks, each synthesised on its own.

    PYTHONPATH=. python benchmarks/memory_resources.py [name ...]

Each block goes through ``hlsinf.build.resources.component_report``: the whole kernel's Yosys
flow (``synth_xilinx -family xcup``, out of context) and netlist analysis, with the block's
ports as path ends. One markdown row per block:

* LUT: LUT1-6, INV and the LUTs of distributed RAM and shift registers; LUTRAM: those of
  distributed RAM (included in LUT); MUXF: MUXF7/8/9; BRAM36: block RAM in RAMB36 (a RAMB18
  is 1/2);
* LUT levels: the most LUTs on one path between registers, carry chains and MUXF passing
  for free (issue 6's figure: at most about 6 for 300 MHz); "deepest LUT path" gives that
  path's LUT + MUXF + CARRY cells;
* longest carry: the path with the most CARRY4 cells (a wide adder or compare), with its
  LUT and MUXF cells ("none" without carry chains).

An estimate, not Vivado timing: it catches a shifter or a compare that ends up in a
handshake path. Takes seconds to a minute per block.
"""

import re
import sys

from amaranth import unsigned

from hlsinf.config import KernelConfig
from hlsinf.gateware.control import Control
from hlsinf.gateware.memory.read import ActivationReader, BytesToItems, ReadMaster
from hlsinf.gateware.memory.write import PixelWriter
from hlsinf.build.resources import component_report, describe_counts

CFG = KernelConfig(cpi=8, cpo=8)
BLOCKS = {
    "ReadMaster": lambda: ReadMaster(),
    "ActivationReader(cpi=8)": lambda: ActivationReader(CFG),
    "PixelWriter(cpo=8)": lambda: PixelWriter(CFG),
    "BytesToItems(576 B)": lambda: BytesToItems(unsigned(576 * 8)),
    "BytesToItems(144 B)": lambda: BytesToItems(unsigned(144 * 8)),
    "Control": lambda: Control(CFG),
}

HEADER = ("| block | LUT | LUTRAM | MUXF | FF | DSP48E2 | BRAM36 | URAM | LUT levels | deepest LUT path "
          "| longest carry | Yosys s |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")


def row(name: str, report) -> str:
    """One markdown row of the table for a :class:`hlsinf.build.resources.ResourceReport`."""
    c, d = report.counts, report.depth
    counts = " | ".join(f"{c[k]:,g}" for k in ("LUT", "LUTRAM", "MUXF", "FF", "DSP48E2", "BRAM36", "URAM"))
    carry = describe_counts(d["paths"]["carry_levels"]["counts"]) if d["carry_levels"] else "none"
    return (f"| {name} | {counts} | {d['lut_levels']} | {describe_counts(d['paths']['lut_levels']['counts'])} "
            f"| {carry} | {report.seconds:.0f} |")


def main(names, blocks=BLOCKS):
    """Print the table for ``names`` (all of ``blocks`` when empty)."""
    unknown = [n for n in names if n not in blocks]
    if unknown:
        sys.exit(f"unknown block {', '.join(map(repr, unknown))}; choose from: {', '.join(map(repr, blocks))}")
    print(HEADER, flush=True)
    for name in names or blocks:
        report = component_report(blocks[name](), top=re.sub(r"\W+", "_", name).strip("_"))
        print(row(name, report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
