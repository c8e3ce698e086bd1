"""Resources and logic depth of the memory-side blocks, from Yosys ``synth_xilinx`` (UltraScale+).

    PYTHONPATH=. python benchmarks/memory_resources.py [name ...]

For each block: LUTs, MUXF7/8/9, flip-flops, block RAMs, and the longest chain of LUT and
MUXF cells between registers (carry chains excluded: they are fast and counted apart by
Vivado anyway). An estimate, not Vivado timing; it catches a shifter or a compare that
ends up in a handshake path. Takes about a minute per block.
"""

import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from amaranth import unsigned
from amaranth._toolchain.yosys import find_yosys
from amaranth.back import rtlil

from hlsinf.config import KernelConfig
from hlsinf.control import Control
from hlsinf.modules.read import ActivationReader, BytesToItems, ReadMaster
from hlsinf.modules.write import PixelWriter

CFG = KernelConfig(cpi=8, cpo=8)
BLOCKS = {
    "ReadMaster": lambda: ReadMaster(),
    "ActivationReader(cpi=8)": lambda: ActivationReader(CFG),
    "PixelWriter(cpo=8)": lambda: PixelWriter(CFG),
    "BytesToItems(576 B)": lambda: BytesToItems(unsigned(576 * 8)),
    "BytesToItems(144 B)": lambda: BytesToItems(unsigned(144 * 8)),
    "Control": lambda: Control(CFG),
}


def analyse(name, make, tmp: Path):
    il, syn, js, ltp = (tmp / f"{name}.{ext}" for ext in ("il", "syn.il", "json", "ltp"))
    il.write_text(rtlil.convert(make()))
    yosys = find_yosys(lambda ver: ver >= (0, 10))
    yosys.run(["-q", "-p", f"read_rtlil {il}; synth_xilinx -family xcup -flatten -top top; "
                           f"write_json {js}; tee -q -o {ltp} ltp -noff t:LUT* t:MUXF* t:INV w:*"],
              ignore_warnings=True)
    cells = json.loads(js.read_text())["modules"]["top"]["cells"]
    kinds = Counter(c["type"] for c in cells.values())
    vias = re.findall(r"\(via (.*)\)\s*$", ltp.read_text(), re.M)
    path = [cells.get(v, {}).get("type", "?") for v in vias]
    return {
        "LUT": sum(n for k, n in kinds.items() if k.startswith("LUT")),
        "MUXF": sum(n for k, n in kinds.items() if k.startswith("MUXF")),
        "FF": sum(n for k, n in kinds.items() if k.startswith("FD")),
        "RAMB18": kinds["RAMB18E2"] + 2 * kinds["RAMB36E2"],
        "LUTRAM": kinds["RAM32M16"] + kinds["RAM32M"] + kinds["RAM64M"],
        "depth_lut": sum(t.startswith("LUT") for t in path),
        "depth_muxf": sum(t.startswith("MUXF") for t in path),
    }


def main(names, blocks=BLOCKS):
    """Print the table for ``names`` (all of ``blocks`` when empty)."""
    print(f"{'block':26} {'LUT':>6} {'MUXF':>6} {'FF':>6} {'RAMB18':>6} {'LUTRAM':>6}  longest LUT+MUXF path")
    with tempfile.TemporaryDirectory() as d:
        for name in names or blocks:
            r = analyse(re.sub(r"\W", "_", name), blocks[name], Path(d))
            print(f"{name:26} {r['LUT']:6} {r['MUXF']:6} {r['FF']:6} {r['RAMB18']:6} {r['LUTRAM']:6}  "
                  f"{r['depth_lut']} LUT + {r['depth_muxf']} MUXF", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
