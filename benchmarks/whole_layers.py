"""Efficiency of the kernel on whole conv layers of VGG16 and the SegNet-like decoder: each
layer simulated as ONE call, nothing extrapolated.

    PYTHONPATH=. python benchmarks/whole_layers.py [--cpi 8 --cpo 8] [--network vgg16|segnet-decoder|all]
                                                   [--latency 100] [--quick] [--layers conv1_1 ...]

Each 224x224-network conv layer (the lists of ``benchmarks/kernel_efficiency.py``) runs as
one call: 'same' 3x3 (pad 1, stride 1), ReLU, 2x2 max pool where VGG16 has one, every input
channel and every output group (``o_first = 0, o_count = GO``), on random activations and
weights over their whole ranges (``--seed``). The generated Verilog runs in Verilator with
the plain C++ harness (``hlsinf/sim/harness.py``, ``hlsinf/sim/speed_main.cpp``): an AXI4-Lite host and
three AXI memories with ``--latency`` cycles from a read address to its first beat and from
a write's last beat to its response, at most one 512-bit beat per cycle per bundle (the
model of ``hlsinf/sim/axi_latency.py``). The output memory is compared bit for bit with
``hlsinf.reference.kernel_call``; a layer whose call does not finish within four times its
ideal cycles plus a million is reported as hung.

Efficiency = ideal / simulated; ideal = ``ceil(I/CPI) * H * W * ceil(O/CPO)``; simulated =
the harness's call cycles, from the ``ap_start`` write's response to the read of
``ap_done``. A shape met twice (in one network or in both) is simulated once and reported
for each layer. ``--quick`` runs the first ``QUICK_ROWS`` rows of each layer (full width,
all channels and groups) for a smoke run of a few minutes.

Per layer: ideal and simulated cycles, efficiency, the seconds of the harness's simulation
loop and its cycles per second (all simulated cycles, register writes included, as
``benchmarks/sim_speed.py``). Per network: the totals, and the simulation time of all its
layers (a repeated shape counted at its measured time). Writes
``benchmarks/results/whole_layers[_quick][_CPIxCPO][_network].{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path


from hlsinf.config import KernelConfig                       # noqa: E402
from hlsinf.reference import POOL_MAX, POOL_NONE, CallArgs   # noqa: E402
from kernel_efficiency import NETWORKS, write_results         # noqa: E402
from hlsinf.sim import harness                                       # noqa: E402

#: Rows of each layer in ``--quick`` mode (full width, all channels and output groups).
QUICK_ROWS = 16
TITLES = {"vgg16": "VGG16", "segnet-decoder": "SegNet-like decoder"}


def layer_call(cfg: KernelConfig, layer: tuple, rows: int | None = None) -> CallArgs:
    """The one call of a whole layer (or of its first ``rows`` rows)."""
    _, I, O, H, pool = layer
    h = H if rows is None else min(rows, H)
    return CallArgs(H=h, W=H, rows=h, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                    relu=True, shift=harness.requantize_shift(cfg, I), pool=POOL_MAX if pool else POOL_NONE,
                    o_first=0, o_count=math.ceil(O / cfg.cpo)).validate(cfg)


def run_layer(exe: Path, cfg: KernelConfig, layer: tuple, args: CallArgs, seed: int, latency: int) -> dict:
    """Simulate one layer's call; its figures, or its error. Memory images live in /tmp meanwhile."""
    name, I, O, H, pool = layer
    row = dict(layer=name, I=I, O=O, H=args.rows, W=H, pool=pool, ideal=args.ideal_cycles(cfg))
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix=f"hlsinf-whole-{name}-", dir="/tmp") as tmp:
            result = harness.run_call(exe, cfg, args, seed, Path(tmp), latency=latency,
                                      label=f"layer {name} ({I}->{O} @{args.rows}x{H})")
    except harness.HarnessError as error:
        return dict(row, error=str(error), wall_seconds=round(time.monotonic() - started, 1))
    return dict(row, cycles=result["cycles"], efficiency=row["ideal"] / result["cycles"],
                sim_cycles=result["sim_cycles"], seconds=round(result["seconds"], 2),
                cpu_seconds=round(result["cpu_seconds"], 2),
                cycles_per_second=round(result["sim_cycles"] / result["seconds"]),
                wall_seconds=round(time.monotonic() - started, 1))


def network_totals(rows: list[dict]) -> dict:
    """Sums over each network's layers (repeats counted); None where a layer failed."""
    totals = {}
    for network in ("vgg16", "segnet-decoder"):
        names = {layer[0] for layer in NETWORKS[network]}
        mine = [r for r in rows if r["layer"] in names]
        if not mine:
            continue
        t = dict(layers=len(mine), ideal=sum(r["ideal"] for r in mine))
        if any("error" in r for r in mine):
            t.update(cycles=None, efficiency=None, seconds=None, failed=[r["layer"] for r in mine if "error" in r])
        else:
            t["cycles"] = sum(r["cycles"] for r in mine)
            t["efficiency"] = t["ideal"] / t["cycles"]
            t["seconds"] = round(sum(r["seconds"] for r in mine), 1)
            t["sim_cycles"] = sum(r["sim_cycles"] for r in mine)
            t["cycles_per_second"] = round(t["sim_cycles"] / t["seconds"])
        totals[network] = t
    return totals


def _seconds(s: float) -> str:
    return f"{s:.2f}" if s < 1 else f"{s:.1f}"


def table(rows: list[dict], totals: dict) -> str:
    lines = [("| layer | I->O @HxW | ideal cycles | simulated cycles | simulated - ideal | efficiency "
              "| simulation s | cycles/s |"),
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = f"{r['I']}->{r['O']} @{r['H']}x{r['W']}"
        name = r["layer"] + (" +pool" if r["pool"] else "")
        if "error" in r:
            lines.append(f"| {name} | {shape} | {r['ideal']:,} | FAILED: {r['error']} | | | | |")
            continue
        seconds = f"same shape as {r['same_as']}" if "same_as" in r else _seconds(r["seconds"])
        speed = "" if "same_as" in r else f"{r['cycles_per_second']:,}"
        lines.append(f"| {name} | {shape} | {r['ideal']:,} | {r['cycles']:,} | {r['cycles'] - r['ideal']:,} "
                     f"| **{r['efficiency']:.4f}** | {seconds} | {speed} |")
    for network, t in totals.items():
        if t["cycles"] is None:
            lines.append(f"| **{TITLES[network]}: all {t['layers']}** | | {t['ideal']:,} "
                         f"| failed: {', '.join(t['failed'])} | | | | |")
        else:
            lines.append(f"| **{TITLES[network]}: all {t['layers']}** | | {t['ideal']:,} | {t['cycles']:,} "
                         f"| {t['cycles'] - t['ideal']:,} | **{t['efficiency']:.4f}** | {_seconds(t['seconds'])} "
                         f"| {t['cycles_per_second']:,} |")
    return "\n".join(lines) + "\n"


def summary(totals: dict, quick: bool) -> str:
    """One sentence per network: its efficiency and how long its convolutions took to simulate."""
    lines = []
    for network, t in totals.items():
        what = f"{TITLES[network]}'s {t['layers']} convolutions" + (" (quick: first rows only)" if quick else "")
        if t["cycles"] is None:
            lines.append(f"{what}: FAILED ({', '.join(t['failed'])})")
        else:
            lines.append(f"{what}: {t['cycles']:,} cycles for {t['ideal']:,} ideal, efficiency "
                         f"{t['efficiency']:.4f}; simulated in {t['seconds']:.0f} s "
                         f"({t['cycles_per_second']:,} cycles/s)")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpi", type=int, default=8)
    parser.add_argument("--cpo", type=int, default=8)
    parser.add_argument("--network", choices=sorted(NETWORKS), default="vgg16",
                        help="VGG16's 13 convolutions, the SegNet-like decoder's 14, or both")
    parser.add_argument("--latency", type=int, default=100, help="read and write latency in cycles")
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK_ROWS} rows of each layer")
    parser.add_argument("--layers", nargs="*", help="only these layers (e.g. conv1_1 conv5_1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random activations and weights")
    parser.add_argument("--threads", type=int, default=1, help="Verilator model threads")
    parser.add_argument("--out", default="benchmarks/results")
    opts = parser.parse_args(argv)
    if opts.latency < 1:
        parser.error(f"--latency {opts.latency}: must be at least 1 cycle")

    cfg = KernelConfig(cpi=opts.cpi, cpo=opts.cpo)
    layers = [layer for layer in NETWORKS[opts.network] if not opts.layers or layer[0] in opts.layers]
    if not layers:
        raise SystemExit(f"--layers {' '.join(opts.layers)}: no such layer in --network {opts.network}")
    started = time.monotonic()
    exe, build_seconds = harness.build(cfg, opts.threads)
    if build_seconds:
        print(f"built {exe} in {build_seconds:.0f} s", flush=True)

    # One call per distinct shape (I, O, H, pool): the call does not depend on the layer's name.
    measured, rows = {}, []
    for layer in layers:
        shape = layer[1:]
        if shape in measured:
            first = measured[shape]
            rows.append(dict(first, layer=layer[0], same_as=first["layer"]))
            continue
        row = run_layer(exe, cfg, layer, layer_call(cfg, layer, QUICK_ROWS if opts.quick else None),
                        opts.seed, opts.latency)
        measured[shape] = row
        rows.append(row)
        if "error" in row:
            print(f"{layer[0]}: {row['error']}", flush=True)
        else:
            print(f"{layer[0]}: {row['cycles']:,} cycles (ideal {row['ideal']:,}, efficiency {row['efficiency']:.4f}) "
                  f"in {row['seconds']:.1f} s, {row['cycles_per_second']:,} cycles/s; bit-exact", flush=True)
    totals = network_totals(rows)
    elapsed = time.monotonic() - started
    load = os.getloadavg()
    result = {"config": cfg.to_dict(), "network": opts.network, "quick": opts.quick,
              "rows_per_layer": QUICK_ROWS if opts.quick else "all",
              "memory": {"read_latency": opts.latency, "write_latency": opts.latency, "beats_per_cycle": 1},
              "seed": opts.seed, "threads": opts.threads, "layers": rows, "totals": totals,
              "distinct_calls": len(measured),
              "seconds_simulated": round(sum(r.get("seconds", 0) for r in measured.values()), 1),
              "elapsed_seconds": round(elapsed, 1), "build_seconds": round(build_seconds, 1),
              "load_average": [round(x, 2) for x in load]}
    title = " and ".join(TITLES[n] for n in totals)
    build_note = f", the build {build_seconds:.0f} s" if build_seconds else ""
    text = (f"Whole conv layers of {title}, one call each{f' (quick: first {QUICK_ROWS} rows)' if opts.quick else ''}; "
            f"CPI={cfg.cpi} CPO={cfg.cpo}; memory latency {opts.latency} cycles, 1 beat/cycle per bundle; "
            f"every output bit-exact against hlsinf.reference unless marked FAILED.\n"
            f"{len(measured)} calls simulated in {result['seconds_simulated']:.0f} s ({elapsed:.0f} s elapsed with "
            f"the reference{build_note}; load average {load[0]:.1f} on {os.cpu_count()} cores).\n\n"
            + summary(totals, opts.quick) + "\n" + table(rows, totals))
    print("\n" + text)
    write_results(opts.out, "whole_layers", cfg, opts.network, opts.quick, result, text)
    failed = [r["layer"] for r in measured.values() if "error" in r]
    if failed:
        raise SystemExit(f"{len(failed)} layer(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
