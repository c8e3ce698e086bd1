"""Simulated cycles per kernel call next to the ideal ceil(I/CPI) * rows * W * ceil(O/CPO).

Runs the generated Verilog in Verilator (hlsinf/sim/bench_kernel.py, test ``benchmark_calls``):
each call is started through ``s_axi_control`` and timed from the ``ap_start`` write to the
interrupt. Prints a table and writes the figures as JSON.

    python benchmarks/cycles.py [--cpi 4 --cpo 4] [--json benchmarks/results/cycles.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


from hlsinf.config import KernelConfig          # noqa: E402
from hlsinf.reference import POOL_MAX           # noqa: E402

#: name, shape and arguments of the timed calls (pads of 1 = "same" convolution)
CASES = [
    dict(name="8x8 I=O=CPI", H=8, W=8, I=1, O=1),
    dict(name="8x8 pad1 2 groups", H=8, W=8, I=2, O=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1),
    dict(name="16x16 pad1 2x2 groups", H=16, W=16, I=2, O=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1),
    dict(name="16x16 no pad 4x4 groups", H=16, W=16, I=4, O=4),
    dict(name="32x32 pad1 4x4 groups", H=32, W=32, I=4, O=4, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1),
    dict(name="32x32 pad1 stride2", H=32, W=32, I=2, O=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
         stride=2),
    dict(name="32x32 pad1 maxpool", H=32, W=32, I=2, O=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
         pool=POOL_MAX),
]


def concrete(case: dict, cfg: KernelConfig) -> dict:
    """Channel counts in the table are in groups; the bench wants channels."""
    case = dict(case)
    case["I"] *= cfg.cpi
    case["O"] *= cfg.cpo
    case.setdefault("shift", 10)
    return case


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpi", type=int, default=4)
    parser.add_argument("--cpo", type=int, default=4)
    parser.add_argument("--json", default="benchmarks/results/cycles.json", help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="only the first three calls")
    opts = parser.parse_args(argv)

    from hlsinf.sim import runner
    # The configuration of tests/gateware/test_kernel_rtl.py at CPI = CPO = 4 (the Verilator build is
    # shared): its 64-pixel input cache holds none of these tiles, so each is re-read per group.
    cfg = KernelConfig(cpi=opts.cpi, cpo=opts.cpo, imax=16 * opts.cpi, wmax=32, hmax=32)
    cases = [concrete(c, cfg) for c in (CASES[:3] if opts.quick else CASES)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cycles.jsonl"
        tests, failures = runner.run_kernel(cfg, "benchmark_calls", kernel_args={"input_cache_pixels": 64},
                                            env={"HLSINF_BENCH": json.dumps(cases), "HLSINF_CYCLES": str(out)})
        if failures or not out.exists():
            raise SystemExit(f"benchmark run failed ({failures} of {tests} cocotb tests): see the simulator log")
        rows = [json.loads(line) for line in out.read_text().splitlines()]

    print(f"kernel cycles, CPI={cfg.cpi} CPO={cfg.cpo} (Verilator; start write to interrupt)")
    print(f"{'call':32} {'HxW':>7} {'I':>4} {'O':>4} {'cycles':>8} {'ideal':>8} {'ratio':>6}")
    for row in rows:
        a = row["args"]
        row["ratio"] = row["cycles"] / row["ideal"]
        name = row["name"].rsplit("[", 1)[0]
        print(f"{name:32} {a['H']:>3}x{a['W']:<3} {a['I']:>4} {a['O']:>4} {row['cycles']:>8} "
              f"{row['ideal']:>8} {row['ratio']:>6.2f}")
    Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.json).write_text(json.dumps({"config": cfg.to_dict(), "calls": rows}, indent=1))
    print(f"written {opts.json}")


if __name__ == "__main__":
    main()
