"""Whole networks (issue 10): ResNet-18, MobileNetV2, VGG16 and a UNet decoder, each from two
quantisers, on builds 8x8, 16x16 and 32x32: share of MACs on the accelerator, agreement with
onnxruntime, projected time per image next to the paper's Table II.

For each network of ``hlsinf.zoo`` (plain torch, seeded weights, exported to ONNX; full:
224x224 at width 1, ``--quick``: 64x64 at width 1) and each quantiser

* ``hlsinf``: the library's post-training quantisation, ``quantize(model, calibration, cfg)``
  (what ``to_fpga(model, cfg, calibration=...)`` does);
* ``ort``: onnxruntime's ``quantize_static`` with its defaults (QDQ, int8 activations and
  weights, MinMax, per-tensor), the same calibration batch (``zoo.calibration``, seed 0);

and each build :func:`hlsinf.host.evaluate.network_build` ``(n)`` (CPI = CPO = n, uint8
activations, depthwise, nearest upsize x2, post-op residual_add: one build that has what
the four networks use), ``to_fpga(qdq, cfg, cpu_fallback=True)`` plans it, and
(``hlsinf.host.evaluate``):

* MAC share: multiply-accumulates (Conv, Gemm, MatMul) of the accelerator layers / all;
* accuracy, on the first build (the integers do not depend on CPI/CPO): ``--images``
  images (``zoo.calibration`` seed 1) on the reference device; cosine (over the batch) and
  top-1 agreement (per image, or per pixel for UNet) of its output with onnxruntime's float
  model, and the same for onnxruntime's own QDQ output; every accelerator layer alone fed
  onnxruntime's int8 input of the same QDQ model (first image): largest difference in LSB
  and share of values differing;
* time: accelerator = plan ideal cycles + calls x ``PER_CALL_CYCLES`` at 300 MHz (projected),
  host = CPU layers + transfers of the first image measured on the reference device with a
  ``Profile`` (fastest of ``--repeats`` runs by CPU time); total = accelerator + host.

Printed as markdown tables with the paper's Table II and onnxruntime's float time on this
machine; every figure also goes to JSON.

    PYTHONPATH=. python benchmarks/networks.py [--quick] [--json benchmarks/results/networks.json]
                                               [--networks ...] [--quantisers hlsinf ort]
                                               [--builds 8 16 32] [--repeats 3] [--images 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hlsinf import zoo
from hlsinf.host import quantize, to_fpga
from hlsinf.host.evaluate import (CLOCK_HZ, PER_CALL_CYCLES, coverage, failure, measure_host, network_build,
                                  project, quantize_ort, run_plan)

NETWORKS = ("resnet18", "mobilenet_v2", "vgg16", "unet")
QUANTISERS = {"hlsinf": "hlsinf PTQ", "ort": "ort quantize_static defaults",
              "ort-pc": "ort quantize_static per_channel=True"}
DEFAULT_QUANTISERS = ("hlsinf", "ort")
BUILDS = (8, 16, 32)
MODES = {"full": dict(resolution=224, width=1.0, calibration=16),
         "quick": dict(resolution=64, width=1.0, calibration=16)}

#: The paper's Table II (HLSinf, Medina et al., section IV-D "Rendimiento de los Modelos",
#: "Tabla II": inference time of one 224x224 image, ms). CPU: i7-7800X with 12 threads;
#: FPGA: Alveo U200. VGG16 fp32 ran on a CPI = CPO = 4 fp32 kernel, the quantised VGG16 on
#: an 8-bit-weight kernel (its text: "up to a factor of 8" more parallelism); the pruned
#: rows on fp32 4x4. Table II has no ResNet-18, MobileNetV2 or UNet; SegNet is its
#: encoder-decoder, listed beside UNet for scale only.
PAPER = {
    "vgg16": [("VGG16, CPU (i7-7800X, 12 threads)", 1430.29), ("VGG16, FPGA fp32 4x4", 552.28),
              ("VGG16-Quant, FPGA int8", 229.93), ("VGG16-HA (pruned), FPGA", 99.33),
              ("VGG16-HCR (pruned), FPGA", 15.09)],
    "unet": [("SegNet (not UNet), CPU (i7-7800X, 12 threads)", 3165.97), ("SegNet (not UNet), FPGA", 757.22),
             ("SegNet-Pruned (not UNet), FPGA", 282.23)],
}


def onnxruntime_ms(path, x, repeats: int) -> float:
    """Fastest wall time of onnxruntime (default threads) on the float model, after a warm-up."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def quantise(quantiser: str, path: Path, cal: np.ndarray, cfg, out: Path):
    if quantiser == "hlsinf":
        return quantize(str(path), cal, cfg)
    if quantiser == "ort-pc":       # onnxruntime's own option: one weight scale per output channel
        return quantize_ort(path, cal, out, per_channel=True)
    return quantize_ort(path, cal, out)


def evaluate_network(name: str, quantiser: str, path: Path, cal: np.ndarray, x: np.ndarray, builds, tmp: Path,
                     repeats: int = 3, accuracy: bool = True) -> dict:
    """One network and quantiser on every build: coverage, projection and measured host time
    per build; accuracy (:func:`run_plan` against onnxruntime) on the first build. A failure
    at any stage is recorded (``failure``) instead of raised."""
    res = dict(network=name, quantiser=quantiser, builds=[])
    cfg0 = network_build(builds[0])
    t0 = time.perf_counter()
    try:
        qdq = quantise(quantiser, path, cal, cfg0, tmp / f"{name}_{quantiser}.onnx")
    except Exception as e:
        res["failure"] = failure("quantize", e)
        return res
    res["quantize_s"] = time.perf_counter() - t0
    for k, n in enumerate(builds):
        cfg = network_build(n)
        b = dict(build=f"{n}x{n}", config=cfg.to_dict())
        res["builds"].append(b)
        try:
            plan = to_fpga(qdq, cfg, cpu_fallback=True)
        except Exception as e:
            b["failure"] = failure("plan", e)
            continue
        cov = coverage(plan)
        b.update({k2: cov[k2] for k2 in ("total_macs", "accelerator_macs", "share", "accelerator_layers",
                                         "convs", "transfers", "adds", "adds_fused")},
                 reasons=cov["reasons"], other_cpu_ops=cov["other_cpu_ops"])
        b.update(project(plan))
        try:
            host = measure_host(plan, x[:1], repeats)
            b.update(host)
            b["total_ms"] = b["accelerator_ms"] + host["cpu_ms"] + host["transfer_ms"]
            if k == 0 and accuracy:
                res["accuracy"] = run_plan(plan, qdq, x, float_model=path)
        except Exception as e:
            b["failure"] = failure("run", e, plan.graph)
    return res


# Report ----------------------------------------------------------------------------------------

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def summary_table(results: list[dict]) -> str:
    """Per network and quantiser: MAC share, accuracy, agreement, total time per build."""
    builds = [b["build"] for b in results[0]["builds"]] if results else []
    lines = ["| network | quantiser | GMACs | MACs on accelerator | accelerator layers / convs | cosine to float "
             "(ort QDQ's) | top-1 = float (ort QDQ's) | layers alone vs ort QDQ: max LSB (values differing) | "
             + " | ".join(f"{b} ms/image" for b in builds) + " |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(builds)]
    for r in results:
        b0 = r["builds"][0] if r["builds"] else {}
        acc = r.get("accuracy") or {}
        alone = acc.get("layers_alone")
        cos = (f"{acc['cosine_vs_float']:.4f} ({acc['ort_qdq_cosine_vs_float']:.4f})" if "cosine_vs_float" in acc
               else "-")
        top1 = (f"{_pct(acc['top1_vs_float'])} ({_pct(acc['ort_qdq_top1_vs_float'])})" if "top1_vs_float" in acc
                else "-")
        lsb = f"{alone['max_lsb']} ({100 * alone['differing']:.3f} %)" if alone else "-"
        times = [f"{b['total_ms']:.1f}" if "total_ms" in b else "fails" for b in r["builds"]]
        share = _pct(b0.get("share")) if "share" in b0 else "fails"
        if r.get("failure"):
            lines.append(f"| {r['network']} | {r['quantiser']} | | fails ({r['failure']['stage']}) | | | | | "
                         + " | ".join("-" for _ in builds) + " |")
            continue
        lines.append(f"| {r['network']} | {r['quantiser']} | {b0.get('total_macs', 0) / 1e9:.3f} | {share} | "
                     f"{b0.get('accelerator_layers', '-')} / {b0.get('convs', '-')} | {cos} | {top1} | {lsb} | "
                     + " | ".join(times) + " |")
    return "\n".join(lines)


def time_table(net: str, results: list[dict], ort_ms: float, size: int) -> str:
    """One network: per quantiser and build the projected accelerator time, the measured host time, the total."""
    lines = ["| quantiser | build | MACs on accelerator | calls | ideal Mcycles | MAC array busy (ideal) | "
             "projected Mcycles | accelerator ms (projected) | CPU layers ms (measured) | transfers ms (measured) | "
             "**total ms** |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for b in r["builds"]:
            if "total_ms" not in b:
                lines.append(f"| {r['quantiser']} | {b['build']} | fails | | | | | | | | |")
                continue
            lines.append(f"| {r['quantiser']} | {b['build']} | {_pct(b['share'])} | {b['calls']} | "
                         f"{b['ideal_cycles'] / 1e6:.2f} | {_pct(b['efficiency'])} | "
                         f"{b['projected_cycles'] / 1e6:.2f} | "
                         f"{b['accelerator_ms']:.2f} | {b['cpu_ms']:.1f} | {b['transfer_ms']:.1f} | "
                         f"**{b['total_ms']:.1f}** |")
    lines.append(f"| onnxruntime float, this machine ({size}x{size}) | | | | | | | | | | **{ort_ms:.1f}** |")
    for label, ms in PAPER.get(net, []):
        lines.append(f"| paper Table II: {label} (224x224) | | | | | | | | | | {ms:.2f} |")
    return "\n".join(lines)


def reasons_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        b = r["builds"][0] if r["builds"] else {}
        if "reasons" not in b:
            continue
        parts = [f"{v['layers']}x {k} ({100 * v['macs'] / b['total_macs']:.1f} % MACs)"
                 for k, v in sorted(b["reasons"].items(), key=lambda kv: -kv[1]["macs"])]
        others = ", ".join(f"{op} x{n}" for op, n in sorted(b["other_cpu_ops"].items()))
        if b.get("adds"):
            parts.append(f"residual Adds fused into calls: {b['adds_fused']} / {b['adds']}")
        lines.append(f"* {r['network']} {r['quantiser']}: CPU: " + ("; ".join(parts) or "none")
                     + (f". Other CPU ops: {others}" if others else ""))
    return "\n".join(lines)


def failures_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        for where, f in [("", r.get("failure"))] + [(b["build"] + " ", b.get("failure")) for b in r["builds"]]:
            if f:
                lines.append(f"* {r['network']} {r['quantiser']} {where}{f['stage']}: node {f['node']!r} ({f['op']}): "
                             f"{f['error']}: {f['message']}")
    return "\n".join(lines) or "none"


def run(networks, quantisers, builds, resolution: int, width: float, n_cal: int, repeats: int, images: int = 4,
        log=sys.stderr) -> dict:
    """Every network x quantiser; returns the JSON document (``networks``: per network its
    float onnxruntime time and per quantiser :func:`evaluate_network`'s result)."""
    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)         # quantize_static's advice to pre-process, once per model
    out = dict(resolution=resolution, width=width, calibration_images=n_cal, images=images, repeats=repeats,
               per_call_cycles=PER_CALL_CYCLES, clock_hz=CLOCK_HZ,
               builds={f"{n}x{n}": network_build(n).to_dict() for n in builds}, networks={})
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in networks:
            t0 = time.perf_counter()
            path = zoo.export(name, resolution=resolution, width=width, seed=0, path=tmp / f"{name}.onnx")
            cal = zoo.calibration(name, n_cal, seed=0, resolution=resolution)
            x = zoo.calibration(name, images, seed=1, resolution=resolution)
            net = dict(export_s=time.perf_counter() - t0, onnxruntime_ms=onnxruntime_ms(path, x[:1], repeats),
                       paper_ms=dict(PAPER.get(name, [])), quantisers={})
            for q in quantisers:
                t0 = time.perf_counter()
                r = evaluate_network(name, q, path, cal, x, builds, tmp, repeats)
                r["seconds"] = time.perf_counter() - t0
                net["quantisers"][q] = r
                b0 = r["builds"][0] if r["builds"] else {}
                acc = r.get("accuracy", {})
                print(f"{name} {q}: {_pct(b0.get('share'))} of MACs on the accelerator, cosine to float "
                      f"{acc.get('cosine_vs_float', float('nan')):.4f}, "
                      + ", ".join(f"{b['build']} {b['total_ms']:.1f} ms" for b in r["builds"] if "total_ms" in b)
                      + (f" FAILS: {r['failure']['message'][:160]}" if r.get("failure") else "")
                      + f" ({r['seconds']:.1f} s)", file=log, flush=True)
            out["networks"][name] = net
    return out


def report(out: dict) -> str:
    size = out["resolution"]
    results = [r for net in out["networks"].values() for r in net["quantisers"].values()]
    parts = [f"### Networks at {size}x{size}, width {out['width']:g}: MACs on the accelerator, accuracy, "
             f"total time per image\n", summary_table(results)]
    for name, net in out["networks"].items():
        parts += [f"\n### {name}, {size}x{size}: time per image (A = {out['per_call_cycles']} cycles per call, "
                  f"{out['clock_hz'] / 1e6:.0f} MHz)\n",
                  time_table(name, list(net["quantisers"].values()), net["onnxruntime_ms"], size)]
    parts += ["\n### Layers on the CPU (first build, plan reasons)\n", reasons_text(results),
              "\n### Failures\n", failures_text(results)]
    return "\n".join(parts)


BEGIN = "<!-- benchmarks/networks.py results: begin -->"
END = "<!-- benchmarks/networks.py results: end -->"


def update_docs(path: Path, out: dict, text: str) -> None:
    """Replace what lies between :data:`BEGIN` and :data:`END` in ``path`` with this run's tables."""
    doc = path.read_text()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"--update-docs {path}: needs exactly one {BEGIN!r} followed by one {END!r}")
    head = (f"Measured {out['date']}: {out['resolution']}x{out['resolution']}, width {out['width']:g}, builds "
            f"{', '.join(out['builds'])}, {out['calibration_images']} calibration images, {out['images']} evaluation "
            f"images, {out['repeats']} host runs per build, {out['seconds']:.0f} s in all "
            f"(load average {out['load_average'][0]:.1f} at the start, "
            f"{out['load_average'][1]:.1f} at the end; 2 cores shared with other jobs).\n\n")
    block = BEGIN + "\n" + head + text.replace("### ", "#### ") + "\n" + END
    path.write_text(doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):])
    print(f"tables written into {path}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64x64 images (width 1) instead of 224x224")
    p.add_argument("--resolution", type=int, help="override the mode's resolution")
    p.add_argument("--width", type=float, help="override the mode's channel width (zoo width)")
    p.add_argument("--json", default="benchmarks/results/networks.json", help="where to write the figures")
    p.add_argument("--update-docs", metavar="MD",
                   help="also replace the tables between the result markers of this file (docs/networks.md)")
    p.add_argument("--networks", nargs="+", choices=list(zoo.NETWORKS), default=list(NETWORKS))
    p.add_argument("--quantisers", nargs="+", choices=list(QUANTISERS), default=list(DEFAULT_QUANTISERS),
                   help="ort-pc: onnxruntime with per_channel=True (a what-if; not in the default run)")
    p.add_argument("--builds", nargs="+", type=int, default=list(BUILDS), help="CPI = CPO of each build")
    p.add_argument("--images", type=int, default=4,
                   help="images (zoo.calibration seed 1) of the accuracy comparison; the first is timed")
    p.add_argument("--repeats", type=int, default=3,
                   help="reference-device runs per build (the fastest by CPU-layer time is kept)")
    args = p.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    resolution = args.resolution or mode["resolution"]
    width = args.width or mode["width"]
    for n in args.builds:
        try:
            network_build(n)
        except ValueError as e:
            p.error(f"--builds {n}: {e}")
    if args.images < 1:
        p.error(f"--images must be at least 1, got {args.images}")
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    out = run(args.networks, args.quantisers, args.builds, resolution, width, mode["calibration"], args.repeats,
              args.images)
    out["seconds"] = time.perf_counter() - t0
    out["load_average"] = [load, os.getloadavg()[0]]
    out["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = report(out)
    print(text)
    if args.update_docs:
        update_docs(Path(args.update_docs), out, text)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nfigures written to {path} ({out['seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
