"""Efficiency of the whole kernel on the conv layers of VGG16 and of the SegNet-like decoder,
with DDR-like memories.

    PYTHONPATH=. python benchmarks/kernel_efficiency.py [--quick] [--cpi 8 --cpo 8] [--latency 100]
                                                        [--network vgg16|segnet-decoder|all]

Every call runs the generated Verilog in Verilator under cocotb (``hlsinf/sim/bench_kernel.py``, test
``benchmark_calls``), its output compared bit for bit with ``hlsinf.reference``. The three
AXI masters see :class:`hlsinf.sim.axi_latency.LatencyAxiRam`: ``--latency`` cycles from a read
address to its first beat and from a write's last beat to its response, and at most one
512-bit beat per cycle per bundle (19.2 GB/s at 300 MHz, one DDR4-2400 channel; per bundle
because the U200 flow puts each bundle on its own DDR bank). Cycles run from the
``ap_start`` write to the interrupt.

Efficiency = ideal / simulated, ideal = ``ceil(I/CPI) * H * W * ceil(O/CPO)`` (one pixel of
CPI lanes per cycle per output group, the padding free).

A whole layer is too long to simulate (VGG16 is ~27 M ideal cycles at 8x8; cocotb runs some
thousands of cycles a second), so each layer is simulated as 'same' calls on an image of
``h`` rows (full width, full input channels), computing ``k`` of the output groups
(``o_count``); ``h`` is at least 8 and large enough that the tile fits the input cache
exactly when the full layer's does (so replay versus re-read is the full layer's), and the
14x14 layers run at their full height. The overhead ``simulated - ideal`` is fitted to

    overhead(h, k) = A + d*k + r*k*GI*h

(A per call, d per output group, r per input row of a frame) from calls (h, 1), (h, 2)
and, in full mode, (2h, 2) (or (h, 4) when h is the full height); quick mode assumes
r = 0. The full layer's cycles are then estimated conservatively as ``ideal + max measured
overhead + max(d, 0)*(GO-1) + max(r, 0)*GO*GI*H`` (the per-call overhead moves by tens of
cycles with the output's burst alignment, so d from one or two groups is noisy). In full
mode the layers of at most 1 M ideal cycles (the 14x14 ones at 8x8) are also simulated
whole, and that measurement is their figure (it checks the extrapolation).

The SegNet-like model (``hlsinf.host.models.segnet``) has VGG16's 13 convolutions as its
encoder (with BN, folded); its decoder adds 13 'same' 3x3 convolutions after nearest 2x
upsamplings and a 1x1 classifier, which runs in the kernel's 3x3 slot (pad 1, zero outer
taps) and so costs what a 3x3 call of its shape costs. A shape met twice (in both networks,
or twice in one) is simulated once.

Writes ``benchmarks/results/kernel_efficiency[_quick][_CPIxCPO][_network].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path


from hlsinf.config import KernelConfig          # noqa: E402
from hlsinf.gateware.kernel import DEFAULT_INPUT_CACHE_PIXELS   # noqa: E402
from hlsinf.reference import POOL_MAX, POOL_NONE   # noqa: E402

#: VGG16's conv layers at 224x224: (name, I, O, H=W, max pool after)
VGG16 = [
    ("conv1_1", 3, 64, 224, False), ("conv1_2", 64, 64, 224, True),
    ("conv2_1", 64, 128, 112, False), ("conv2_2", 128, 128, 112, True),
    ("conv3_1", 128, 256, 56, False), ("conv3_2", 256, 256, 56, False), ("conv3_3", 256, 256, 56, True),
    ("conv4_1", 256, 512, 28, False), ("conv4_2", 512, 512, 28, False), ("conv4_3", 512, 512, 28, True),
    ("conv5_1", 512, 512, 14, False), ("conv5_2", 512, 512, 14, False), ("conv5_3", 512, 512, 14, True),
]
#: The SegNet-like decoder (``hlsinf.host.models.segnet(224, 224)``): after each upsampling
#: the stage's convolutions, then the 1x1 classifier to 12 classes; no pooling.
SEGNET_DECODER = [
    ("dec5_1", 512, 512, 14, False), ("dec5_2", 512, 512, 14, False), ("dec5_3", 512, 512, 14, False),
    ("dec4_1", 512, 512, 28, False), ("dec4_2", 512, 512, 28, False), ("dec4_3", 512, 512, 28, False),
    ("dec3_1", 512, 256, 56, False), ("dec3_2", 256, 256, 56, False), ("dec3_3", 256, 256, 56, False),
    ("dec2_1", 256, 128, 112, False), ("dec2_2", 128, 128, 112, False),
    ("dec1_1", 128, 64, 224, False), ("dec1_2", 64, 64, 224, False),
    ("classifier", 64, 12, 224, False),
]
NETWORKS = {"vgg16": VGG16, "segnet-decoder": SEGNET_DECODER, "all": VGG16 + SEGNET_DECODER}
MIN_ROWS = 8
#: In full mode, layers of at most this many ideal cycles are also simulated whole.
WHOLE_LAYER_CYCLES = 1_000_000


def sim_rows(cfg: KernelConfig, I: int, H: int, cache: int) -> int:
    """Rows of the simulated image: the full layer's cache decision, at least MIN_ROWS."""
    gi = math.ceil(I / cfg.cpi)
    if gi * H * H <= cache:
        return H
    return min(H, max(MIN_ROWS, cache // (gi * H) + 1))


def calls_of(cfg: KernelConfig, layer, cache: int, quick: bool) -> list[dict]:
    name, I, O, H, pool = layer
    h = sim_rows(cfg, I, H, cache)
    points = [(h, 1), (h, 2)] + ([] if quick else [(min(2 * h, H), 2)])
    if not quick and points[-1][0] == h:     # full height already: vary the groups instead
        points[-1] = (h, 4)
    gi, go = math.ceil(I / cfg.cpi), math.ceil(O / cfg.cpo)
    if not quick and gi * go * H * H <= WHOLE_LAYER_CYCLES:
        points.append((H, go))
    calls = []
    for rows, k in points:
        calls.append(dict(name=f"{name} h={rows} k={k}", H=rows, W=H, I=I, O=O, rows=rows,
                          pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=12, relu=True,
                          pool=POOL_MAX if pool else POOL_NONE, o_first=0, o_count=k))
    return calls


def fit(cfg: KernelConfig, layer, rows: list[dict]) -> dict:
    """A, d, r of the overhead model from the layer's partial calls; the full layer's figures.

    The per-call overhead moves by some tens of cycles with where the output's last bursts
    fall, which is as large as d*k over one or two groups, so the fit can return d < 0:
    the extrapolation is made conservative by using the largest measured overhead for A and
    max(d, 0), max(r, 0). A whole-layer call, when simulated, is reported as measured.
    """
    import numpy as np
    name, I, O, H, pool = layer
    gi, go = math.ceil(I / cfg.cpi), math.ceil(O / cfg.cpo)
    ideal = gi * H * H * go
    whole = [r for r in rows if r["args"]["rows"] == H and r["args"]["o_count"] == go]
    parts = [r for r in rows if r not in whole] or rows
    a = [[1, r["args"]["o_count"], r["args"]["o_count"] * gi * r["args"]["rows"]] for r in parts]
    y = [r["cycles"] - r["ideal"] for r in parts]
    if len(parts) >= 3 and np.linalg.matrix_rank(np.array(a, float)) == 3:
        A, d, rr = np.linalg.lstsq(np.array(a, float), np.array(y, float), rcond=None)[0]
    else:       # r = 0
        A, d = np.linalg.lstsq(np.array([row[:2] for row in a], float), np.array(y, float), rcond=None)[0]
        rr = 0.0
    cycles = ideal + max(y) + max(d, 0) * (go - 1) + max(rr, 0) * go * gi * H
    result = dict(layer=name, I=I, O=O, H=H, W=H, pool=pool, gi=gi, go=go, ideal=ideal,
                  overhead_call=round(float(A), 1), overhead_group=round(float(d), 2),
                  overhead_row=round(float(rr), 4), cycles_extrapolated=round(float(cycles)),
                  efficiency_extrapolated=ideal / float(cycles),
                  measured=[dict(rows=r["args"]["rows"], o_count=r["args"]["o_count"], cycles=r["cycles"],
                                 ideal=r["ideal"], efficiency=r["ideal"] / r["cycles"]) for r in rows])
    if whole:
        result.update(cycles=whole[0]["cycles"], efficiency=ideal / whole[0]["cycles"], source="whole layer simulated")
    else:
        result.update(cycles=round(float(cycles)), efficiency=ideal / float(cycles), source="extrapolated")
    return result


def table(result: dict) -> str:
    lines = ["| layer | I->O @HxW | simulated calls (rows x groups: cycles, efficiency) | per call | per group "
             "| per row | full layer ideal | extrapolated | whole layer simulated | efficiency |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in result["layers"]:
        sims = ("; ".join(f"{m['rows']}x{m['o_count']}: {m['cycles']} ({m['efficiency']:.3f})" for m in f["measured"])
                if "same_as" not in f else f"same shape as {f['same_as']}")
        lines.append(f"| {f['layer']}{' +pool' if f['pool'] else ''} | {f['I']}->{f['O']} @{f['H']}x{f['W']} | {sims} "
                     f"| {f['overhead_call']:.0f} | {f['overhead_group']:.1f} | {f['overhead_row']:.3f} "
                     f"| {f['ideal']:,} | {f['cycles_extrapolated']:,} "
                     f"| {f['cycles'] if f['source'] == 'whole layer simulated' else '-'} | **{f['efficiency']:.4f}** |")
    for network, t in result["totals"].items():
        lines.append(f"| {network}: all {t['layers']} | | | | | | {t['ideal']:,} | | {t['cycles']:,} "
                     f"| **{t['efficiency']:.4f}** |")
    return "\n".join(lines) + "\n"


def write_results(out, name: str, cfg: KernelConfig, network: str, quick: bool, result: dict, text: str):
    """``<out>/<name>[_quick][_CPIxCPO][_network].{json,md}`` (8x8 and VGG16 are the defaults)."""
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = name + ("_quick" if quick else "")
    if (cfg.cpi, cfg.cpo) != (8, 8):
        stem += f"_{cfg.cpi}x{cfg.cpo}"
    if network != "vgg16":
        stem += f"_{network}"
    (outdir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (outdir / f"{stem}.md").write_text(text)
    print(f"written {outdir / stem}.json and .md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpi", type=int, default=8)
    parser.add_argument("--cpo", type=int, default=8)
    parser.add_argument("--latency", type=int, default=100, help="read and write latency in cycles (>= 100)")
    parser.add_argument("--beats-per-cycle", type=float, default=1.0, help="per-bundle beat rate (<= 1)")
    parser.add_argument("--quick", action="store_true", help="two calls per layer, no per-row fit")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="vgg16",
                        help="VGG16's 13 convolutions, the SegNet-like decoder's 14, or both")
    parser.add_argument("--layers", nargs="*", help="only these layers (e.g. conv1_1 conv5_1)")
    parser.add_argument("--out", default="benchmarks/results")
    opts = parser.parse_args(argv)

    from hlsinf.sim import runner
    cfg = KernelConfig(cpi=opts.cpi, cpo=opts.cpo)
    cache = DEFAULT_INPUT_CACHE_PIXELS
    layers = [layer for layer in NETWORKS[opts.network] if not opts.layers or layer[0] in opts.layers]
    if not layers:
        raise SystemExit(f"--layers {' '.join(opts.layers)}: no such layer in --network {opts.network}")
    # One representative per distinct shape (I, O, H, pool): the calls do not depend on the name.
    shapes = {}
    for layer in layers:
        shapes.setdefault(layer[1:], layer)
    cases = [c for layer in shapes.values() for c in calls_of(cfg, layer, cache, opts.quick)]
    memory = {"read_latency": opts.latency, "write_latency": opts.latency, "beats_per_cycle": opts.beats_per_cycle}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cycles.jsonl"
        tests, failures = runner.run_kernel(
            cfg, "benchmark_calls", kernel_args={"input_cache_pixels": cache},
            env={"HLSINF_BENCH": json.dumps(cases), "HLSINF_CYCLES": str(out), "HLSINF_MEMORY": json.dumps(memory),
                 "HLSINF_RAM_BYTES": str(1 << 24), "HLSINF_TIMEOUT_CYCLES": "2000000"})
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        if failures or len(rows) != len(cases):
            raise SystemExit(f"benchmark run failed ({failures} of {tests} cocotb tests, {len(rows)} of "
                             f"{len(cases)} calls): see the simulator log")
    seconds = time.monotonic() - started
    fitted, at = {}, 0
    for shape, layer in shapes.items():
        n = len(calls_of(cfg, layer, cache, opts.quick))
        fitted[shape] = fit(cfg, layer, rows[at: at + n])
        at += n
    fits = []
    for layer in layers:
        f = dict(fitted[layer[1:]], layer=layer[0])
        if shapes[layer[1:]] is not layer:
            f["same_as"] = shapes[layer[1:]][0]
        fits.append(f)
    totals = {}
    for network in ("vgg16", "segnet-decoder"):
        names = {layer[0] for layer in NETWORKS[network]}
        mine = [f for f in fits if f["layer"] in names]
        if mine:
            ideal, cycles = sum(f["ideal"] for f in mine), sum(f["cycles"] for f in mine)
            totals[network] = dict(layers=len(mine), ideal=ideal, cycles=cycles, efficiency=ideal / cycles)
    result = {"config": cfg.to_dict(), "input_cache_pixels": cache, "memory": memory, "quick": opts.quick,
              "simulated_cycles": sum(r["cycles"] for r in rows), "seconds": round(seconds, 1),
              "layers": fits, "totals": totals,
              "targets": {"per_layer": 0.90, "total": 0.95},
              "meets": {"per_layer": all(f["efficiency"] >= 0.90 for f in fits),
                        "total": all(t["efficiency"] >= 0.95 for t in totals.values())}}
    title = {"vgg16": "VGG16 conv layers", "segnet-decoder": "SegNet-like decoder conv layers",
             "all": "VGG16 and SegNet-like decoder conv layers"}[opts.network]
    result["network"] = opts.network
    text = (f"{title}, CPI={cfg.cpi} CPO={cfg.cpo}, memory latency {opts.latency} cycles, "
            f"{opts.beats_per_cycle:g} beat/cycle per bundle{' (quick)' if opts.quick else ''}; "
            f"{result['simulated_cycles']:,} cycles simulated in {seconds:.0f} s\n\n" + table(result))
    print(text)
    write_results(opts.out, "kernel_efficiency", cfg, opts.network, opts.quick, result, text)


if __name__ == "__main__":
    main()
