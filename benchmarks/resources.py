"""Resources and logic depth of whole int8 kernels (Yosys ``synth_xilinx -family xcup``).

    PYTHONPATH=. python benchmarks/resources.py [--sizes 4 8 16] [--out benchmarks/results]

For each CPI = CPO = n build (default ``KernelConfig`` otherwise: int8 activations and
weights, imax 512, wmax 256, hmax 256, the default 16384-pixel input cache) it writes the
kernel Verilog, synthesises it with the Debian Yosys (``/usr/bin/yosys``) through
``hlsinf.build.resources.resource_report`` (the build's report: counts, shares of the
U200, deepest LUT path between sequential cells), and adds the figures issue 6 asks for:
multipliers (``CPI*CPO*9``) per DSP48E2 and the LUT-level depth against the targets.

Each size goes to ``<out>/resources-<n>x<n>.json`` as soon as it is done, then a table of
all sizes to ``<out>/resources.md`` and ``resources.json``. Yosys needs many minutes (and
gigabytes) for 16x16 on two cores; run one instance at a time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from hlsinf.build import resources as res
from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import TOP_NAME, kernel_verilog
from hlsinf.build.platforms.alveo_u200 import AlveoU200Platform

#: Fabric of the XCU200 (Alveo U200), BRAM in 36 Kib blocks.
U200 = AlveoU200Platform.fabric
TARGET_MULTS_PER_DSP = 2
TARGET_LUT_LEVELS = 6


def one_size(n: int, out: Path, work: Path) -> dict:
    cfg = KernelConfig(cpi=n, cpo=n)
    started = time.monotonic()
    verilog = work / f"kernel-{n}x{n}.v"
    verilog.write_text(kernel_verilog(cfg))
    export_s = time.monotonic() - started
    report = res.resource_report(verilog, TOP_NAME, U200, work / f"yosys-{n}x{n}", family="xcup")
    row = report.to_dict()
    mults = cfg.cpi * cfg.cpo * 9
    dsp = report.counts["DSP48E2"]
    row.update(size=f"{n}x{n}", config=cfg.to_dict(), export_seconds=round(export_s, 1),
               multipliers=mults, multipliers_per_dsp=round(mults / dsp, 3) if dsp else None,
               meets={"dsp": bool(dsp) and mults / dsp >= TARGET_MULTS_PER_DSP,
                      "lut_levels": report.depth["lut_levels"] <= TARGET_LUT_LEVELS,
                      "fits": all(report.counts[k] <= U200[k] for k in U200)})
    (out / f"resources-{n}x{n}.json").write_text(json.dumps(row, indent=1))
    (out / f"resources-{n}x{n}.md").write_text(report.to_markdown())
    return row


def table(rows: list[dict]) -> str:
    lines = ["| build | LUT | FF | DSP48E2 | BRAM36 | URAM | mults/DSP | LUT levels | logic levels | yosys s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = r["resources"]
        cells = [f"{res[k]['used']:g} ({100 * res[k]['share']:.2f} %)" for k in U200]
        lines.append(f"| {r['size']} | " + " | ".join(cells) +
                     f" | {r['multipliers_per_dsp']} | {r['depth']['lut_levels']} | "
                     f"{r['depth']['logic_levels']} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="/tmp/hlsinf-resources")
    opts = parser.parse_args(argv)
    out, work = Path(opts.out), Path(opts.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in opts.sizes:
        rows.append(one_size(n, out, work))
        print(table(rows[-1:]), flush=True)
    # merge with sizes measured by earlier runs
    every = {}
    for path in sorted(out.glob("resources-*x*.json")):
        r = json.loads(path.read_text())
        every[r["config"]["cpi"]] = r
    merged = [every[k] for k in sorted(every)]
    (out / "resources.json").write_text(json.dumps(merged, indent=1))
    (out / "resources.md").write_text(table(merged))
    print(table(merged))


if __name__ == "__main__":
    main()
