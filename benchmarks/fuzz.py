"""Reliability fuzz: N seeded random kernel calls in Verilator, bit-exact against the reference.

    PYTHONPATH=. python benchmarks/fuzz.py [--calls 1000] [--seed 1] [--builds u8,i8] [--jobs 1]
    PYTHONPATH=. python benchmarks/fuzz.py --seed S --builds B --replay I      # one call again, alone

Every call draws every argument the kernel takes (hlsinf/sim/fuzz.py: ``H``, ``W``, ``rows``
with ``read_offset``, ``I``/``O`` with partial groups, ``o_first``/``o_count``, padding
0..2 on each side, stride 1/2, ReLU, clip bounds, multiplier, shift, pool none/max/avg,
``write_offset``/``out_plane``) and how the memories and host behave during it: per-burst
latencies, random valid/ready pauses on every AXI channel and on AXI4-Lite, now and then an
injected SLVERR/DECERR (the status register must name the bundle) or a reset in the middle
of the call (every register must read its reset value, then the call runs again cleanly).
Calls alternate over the builds (``u8``, ``i8``: CPI = CPO = 4, uint8 and int8; ``u8-8x4``:
CPI = 8, CPO = 4), each build's calls back to back on one simulated kernel
(``hlsinf/sim/speed_main.cpp --serve``). Each output memory is compared bit for bit with
``hlsinf.reference.kernel_call``. A mismatch prints the error, the CallArgs, the AXI options
and the command that replays it. ``--jobs 2`` splits the calls over two processes.

Prints calls, mismatches, cycles against ideal (clean calls), calls per second; writes
``benchmarks/results/fuzz[_<builds>]_seed<S>.json``. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hlsinf.sim import fuzz


def _run_part(names: list[str], calls: int, seed: int, first: int, part: tuple[int, int]):
    return fuzz.run([fuzz.BUILDS[n] for n in names], calls, seed, first=first, part=part,
                    log=lambda line: print(line, flush=True))


def _merge(total: fuzz.FuzzResult, got: fuzz.FuzzResult):
    for key in ("calls", "mismatches", "errors_injected", "resets", "cycles", "ideal", "seconds", "sim_seconds"):
        setattr(total, key, getattr(total, key) + getattr(got, key))
    total.failures += got.failures
    for name, stats in got.per_build.items():
        mine = total.per_build.setdefault(name, {k: 0 for k in stats})
        for k, v in stats.items():
            mine[k] += v


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--builds", default="u8,i8", help=f"comma-separated, of {sorted(fuzz.BUILDS)}")
    parser.add_argument("--first", type=int, default=0, help="index of the first call")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--replay", type=int, default=None, help="run call REPLAY alone (on a fresh kernel)")
    parser.add_argument("--out", default="benchmarks/results")
    opts = parser.parse_args(argv)
    names = opts.builds.split(",")
    for name in names:
        if name not in fuzz.BUILDS:
            parser.error(f"--builds: unknown build {name!r}; known: {sorted(fuzz.BUILDS)}")
    builds = [fuzz.BUILDS[n] for n in names]

    if opts.replay is not None:
        build = builds[opts.replay % len(builds)] if len(builds) > 1 else builds[0]
        args, options, data_seed = fuzz.draw(build, opts.seed, opts.replay)
        print(f"call {opts.replay} on {build.name}: {args}\n  axi: {'; '.join(options.text().strip().splitlines())}")
        got = fuzz.run([build], 1, opts.seed, first=opts.replay, log=print) if len(builds) == 1 else \
            fuzz.run(builds, 1, opts.seed, first=opts.replay, log=print)
        print("mismatch" if got.mismatches else
              "ok: the status register named the injected error" if got.errors_injected else "ok: bit-exact")
        return 1 if got.mismatches else 0

    for build in builds:                  # build (or find) every executable before timing
        fuzz.build_exe(build)
    started = time.monotonic()
    if opts.jobs > 1:
        with ProcessPoolExecutor(opts.jobs) as pool:
            parts = [pool.submit(_run_part, names, opts.calls, opts.seed, opts.first, (p, opts.jobs))
                     for p in range(opts.jobs)]
            result = fuzz.FuzzResult()
            for part in parts:
                _merge(result, part.result())
    else:
        result = fuzz.run(builds, opts.calls, opts.seed, first=opts.first, log=lambda line: print(line, flush=True))
    wall = time.monotonic() - started

    efficiency = result.ideal / result.cycles if result.cycles else 0.0
    print(f"fuzz seed {opts.seed}, builds {', '.join(names)}: {result.calls} calls, {result.mismatches} mismatches, "
          f"{result.errors_injected} with an injected AXI error reported, {result.resets} with a reset in the middle")
    print(f"  clean calls: {result.cycles:,} cycles against {result.ideal:,} ideal (ideal/simulated = {efficiency:.3f})")
    print(f"  {wall:.0f} s wall ({result.calls / wall:.1f} calls/s, jobs {opts.jobs}), "
          f"{result.sim_seconds:.0f} s in the simulation loops")
    for name, stats in result.per_build.items():
        print(f"  {name}: {stats['calls']} calls, {stats['mismatches']} mismatches")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if opts.builds == "u8,i8" else "_" + opts.builds.replace(",", "-")
    path = out / f"fuzz{suffix}_seed{opts.seed}.json"
    path.write_text(json.dumps({
        "seed": opts.seed, "first": opts.first, "builds": {b.name: {"cfg": b.cfg.to_dict(), "kernel": b.kernel_args}
                                                           for b in builds},
        "calls": result.calls, "mismatches": result.mismatches, "errors_injected": result.errors_injected,
        "resets": result.resets, "cycles": result.cycles, "ideal": result.ideal,
        "wall_seconds": round(wall, 1), "sim_seconds": round(result.sim_seconds, 1), "jobs": opts.jobs,
        "calls_per_second": round(result.calls / wall, 2), "per_build": result.per_build,
        "failures": result.failures,
    }, indent=2) + "\n")
    print(f"  wrote {path}")
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
