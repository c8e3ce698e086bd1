"""Where every zoo network stands on the host today: how much of it the accelerator runs.

For each network of ``hlsinf.zoo`` (tiny: 32x32, width 1/8; full: 224x224, width 1), exported
by torch (TorchScript exporter, constant folding on, opset 13), and each quantiser:

* ``hlsinf``: the library's own post-training quantisation, ``quantize(model, calibration,
  cfg)`` (what ``to_fpga(model, cfg, calibration=...)`` does), from ``zoo.calibration``;
* ``ort``: onnxruntime's ``quantize_static`` with its defaults (QDQ format, int8 activations
  and weights, MinMax calibration, per-tensor, no pre-processing), same calibration batch;

``to_fpga(qdq, KernelConfig(cpi=8, cpo=8), cpu_fallback=True)`` plans it, and the plan runs
one image on the reference device, compared with onnxruntime running the same QDQ model
(as ``onnxruntime_session``: exact integer products; and with its ``WeightBiasQuantization``
optimiser off, which otherwise quantises the weights of the float convolutions a mixed model
keeps), at the output and for each accelerator layer alone. Reported per network and quantiser: the
share of multiply-accumulates (Conv, Gemm, MatMul; counted on the planned graph) that runs on
the accelerator, the layers that stay on the CPU with the plan's reason, and any failure to
quantise, plan or run (stage, node, op, message).

    PYTHONPATH=. python benchmarks/zoo_coverage.py [--sizes tiny small full] [--networks ...]
                                                   [--with-depthwise]
                                                   [--json benchmarks/results/zoo_coverage.json]

``--with-depthwise`` plans for a kernel built with depthwise convolutions (``small`` is 64x64 at
width 1, for MobileNetV2's depthwise layers at a size that runs in seconds).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hlsinf import zoo
from hlsinf.config import KernelConfig
from hlsinf.host import evaluate, quantize, to_fpga
from hlsinf.host.evaluate import coverage, failure, run_plan

SIZES = {"tiny": dict(resolution=32, width=0.125), "small": dict(resolution=64, width=1.0),
         "full": dict(resolution=224, width=1.0)}
CALIBRATION = {"tiny": 8, "small": 4, "full": 2}  # images in the calibration batch
DEFAULT_SIZES = ("tiny", "full")
#: extra KernelConfig fields of every plan (--with-depthwise)
EXTRA_FIELDS: dict = {}
CPI = CPO = 8


# Quantisers ------------------------------------------------------------------------------------

def quantize_hlsinf(float_path: Path, cal: np.ndarray, cfg: KernelConfig, out: Path) -> onnx.ModelProto:
    return quantize(str(float_path), cal, cfg)


def quantize_ort(float_path: Path, cal: np.ndarray, cfg: KernelConfig, out: Path, **options) -> onnx.ModelProto:
    return evaluate.quantize_ort(float_path, cal, out, **options)     # no options: every default


def quantize_ort_u8(float_path, cal, cfg, out):
    from onnxruntime.quantization import QuantType
    return quantize_ort(float_path, cal, cfg, out, activation_type=QuantType.QUInt8)


#: name -> (quantiser, kernel it plans for, label). The first two are the report; the others
#: are what-ifs: an int8-activation build (act_signed=True), onnxruntime with uint8 activations.
QUANTISERS = {
    "hlsinf": (quantize_hlsinf, dict(), "hlsinf PTQ"),
    "ort": (quantize_ort, dict(), "ort defaults"),
    "hlsinf-int8": (quantize_hlsinf, dict(act_signed=True), "hlsinf PTQ, int8-activation build"),
    "ort-u8": (quantize_ort_u8, dict(), "ort, activation_type=QUInt8"),
}
DEFAULT_QUANTISERS = ("hlsinf", "ort")


# One network -----------------------------------------------------------------------------------

def one(name: str, size: str, quantiser: str, float_path: Path, cal, x, tmp: Path, run: bool) -> dict:
    fn, fields, _ = QUANTISERS[quantiser]
    cfg = KernelConfig(cpi=CPI, cpo=CPO, **{**fields, **EXTRA_FIELDS})
    res = dict(network=name, size=size, quantiser=quantiser)
    t0 = time.perf_counter()
    try:
        qdq = fn(float_path, cal, cfg, tmp / f"{name}_{size}_{quantiser}.onnx")
    except Exception as e:
        res["failure"] = failure("quantize", e)
        return res
    res["quantize_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        plan = to_fpga(qdq, cfg, cpu_fallback=True)
    except Exception as e:
        res["failure"] = failure("plan", e)
        return res
    res["plan_s"] = time.perf_counter() - t0
    res.update(coverage(plan))
    if run:
        try:
            res["run"] = run_plan(plan, qdq, x)
        except Exception as e:
            res["failure"] = failure("run", e, plan.graph)
    return res


# Report ----------------------------------------------------------------------------------------

def _share(r: dict | None) -> str:
    if r is None:
        return "-"
    if "share" not in r:
        f = r["failure"]
        return f"fails ({f['stage']})"
    s = f"{100 * r['share']:.1f} %"
    if r.get("failure"):
        s += " (run fails)"
    return s


def table(results: list[dict]) -> str:
    """Per network and size: MAC share on the accelerator and accelerated layers / convolutions, per quantiser."""
    rows, quantisers = collections.OrderedDict(), list(dict.fromkeys(r["quantiser"] for r in results))
    for r in results:
        rows.setdefault((r["network"], r["size"]), {})[r["quantiser"]] = r
    lines = ["| network | size | MACs | " + " | ".join(f"{QUANTISERS[q][2]}: MACs on accelerator | layers"
                                                  for q in quantisers) + " |",
             "|---|---|---:|" + "---:|---:|" * len(quantisers)]
    for (net, size), q in rows.items():
        macs = next((v["macs"] for v in q.values() if "macs" in v), None)
        spec = SIZES[size]
        cells = []
        for name in quantisers:
            r = q.get(name)
            cells += [_share(r), f"{r['accelerator_layers']} / {r['convs']}" if r and "convs" in r else "-"]
        lines.append(f"| {net} | {spec['resolution']}x{spec['resolution']} w{spec['width']:g} | "
                     + (f"{macs / 1e6:,.1f} M" if macs else "-") + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_table(results: list[dict]) -> str:
    """The plan on the reference device against onnxruntime on the same QDQ model."""
    lines = ["| network | size | quantiser | output: max abs diff / max abs | same top-1 | "
             "accelerator layers alone: max LSB (values differing) |", "|---|---|---|---:|---:|---:|"]
    for r in results:
        run = r.get("run")
        if not run or not r.get("accelerator_layers"):
            continue
        alone = run["layers_alone"]
        top1 = "-" if run["same_top1"] is None else "yes" if run["same_top1"] else "**no**"
        lines.append(f"| {r['network']} | {r['size']} | {r['quantiser']} | {run['rel_err_vs_ort']:.2g} | {top1} | "
                     f"{alone['max_lsb']} ({100 * alone['differing']:.3f} %) |")
    return "\n".join(lines)


def reasons_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "reasons" not in r:
            continue
        parts = [f"{v['layers']}x {k} ({100 * v['macs'] / r['total_macs']:.1f} % MACs)"
                 for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]["macs"])]
        others = ", ".join(f"{op} x{n}" for op, n in sorted(r["other_cpu_ops"].items()))
        if r.get("adds") and "residual_add" in EXTRA_FIELDS.get("post_ops", ()):
            parts.append(f"Adds fused (residual_add): {r['adds_fused']} / {r['adds']}")
        lines.append(f"* {r['network']} {r['size']} {r['quantiser']}: CPU: " + ("; ".join(parts) or "none")
                     + (f". Other CPU ops: {others}" if others else ""))
    return "\n".join(lines)


def failures_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        f = r.get("failure")
        if f:
            lines.append(f"* {r['network']} {r['size']} {r['quantiser']}: {f['stage']}: node {f['node']!r} "
                         f"({f['op']}): {f['error']}: {f['message']}")
    return "\n".join(lines) or "none"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(DEFAULT_SIZES))
    p.add_argument("--with-depthwise", action="store_true", help="plan for a kernel built with depthwise convolutions")
    p.add_argument("--with-acc-split", action="store_true",
                   help="plan for a kernel built with acc_split (input channels beyond imax, Gemm/MatMul)")
    p.add_argument("--with-pointwise", action="store_true",
                   help="plan for a kernel built with pointwise calls (1x1 convolutions and Gemm at full rate)")
    p.add_argument("--post-ops", default="", help="post-ops of the kernel, e.g. residual_add (Adds fused are reported)")
    p.add_argument("--act-signed", action="store_true", help="plan for an int8-activation kernel (default uint8)")
    p.add_argument("--networks", nargs="+", choices=list(zoo.NETWORKS), default=list(zoo.NETWORKS))
    p.add_argument("--quantisers", nargs="+", choices=list(QUANTISERS), default=list(DEFAULT_QUANTISERS),
                   help="hlsinf and ort are the report; hlsinf-int8 and ort-u8 are what-ifs")
    p.add_argument("--no-constant-folding", action="store_true",
                   help="export with torch.onnx.export(do_constant_folding=False) (BN and Constant nodes kept)")
    p.add_argument("--no-run", action="store_true", help="plan only; do not run the plans on the reference device")
    p.add_argument("--json", default="benchmarks/results/zoo_coverage.json")
    args = p.parse_args(argv)
    if args.with_depthwise:
        EXTRA_FIELDS["with_depthwise"] = True
    if args.with_acc_split:
        EXTRA_FIELDS["with_acc_split"] = True
    if args.with_pointwise:
        EXTRA_FIELDS["with_pointwise"] = True
    if args.post_ops:
        EXTRA_FIELDS["post_ops"] = tuple(p for p in args.post_ops.split(",") if p)
    if args.act_signed:
        EXTRA_FIELDS["act_signed"] = True
    import logging

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)         # quantize_static's advice to pre-process, once per model

    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for size in args.sizes:
            spec = SIZES[size]
            for name in args.networks:
                t0 = time.perf_counter()
                path = zoo.export(name, **spec, seed=0, path=tmp / f"{name}_{size}.onnx",
                                  do_constant_folding=not args.no_constant_folding)
                cal = zoo.calibration(name, CALIBRATION[size], seed=0, resolution=spec["resolution"])
                x = zoo.calibration(name, 1, seed=1, resolution=spec["resolution"])
                st = zoo.stats(name, **spec)
                print(f"{name} {size}: {st['params']:,} parameters, {st['macs']:,} MACs, exported in "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
                for q in args.quantisers:
                    t0 = time.perf_counter()
                    r = one(name, size, q, path, cal, x, tmp, not args.no_run)
                    r.update(st)
                    results.append(r)
                    status = (f"{100 * r['share']:.1f} % of MACs on the accelerator" if "share" in r else "")
                    if r.get("failure"):
                        status += f" FAILS at {r['failure']['stage']}: {r['failure']['message'][:160]}"
                    print(f"  {q}: {status} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    folding = "off" if args.no_constant_folding else "on"
    extra = "".join(f", {k}={v}" for k, v in EXTRA_FIELDS.items())
    print(f"\n### Zoo coverage, KernelConfig(cpi={CPI}, cpo={CPO}{extra}), cpu_fallback=True, export constant folding "
          f"{folding}\n")
    print(table(results))
    print("\n### Agreement with onnxruntime on the same QDQ model (plans with accelerator layers)\n")
    print(agreement_table(results))
    print("\n### Layers on the CPU (plan reasons)\n")
    print(reasons_text(results))
    print("\n### Failures\n")
    print(failures_text(results))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(cpi=CPI, cpo=CPO, **EXTRA_FIELDS, sizes=SIZES, calibration_images=CALIBRATION,
                                    quantisers={q: QUANTISERS[q][2] for q in args.quantisers},
                                    constant_folding=not args.no_constant_folding,
                                    results=results), indent=1))
    print(f"\nfigures written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
