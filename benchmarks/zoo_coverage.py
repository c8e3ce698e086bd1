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
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hlsinf import zoo
from hlsinf.config import KernelConfig
from hlsinf.host import FpgaLayer, Session, quantize, to_fpga
from hlsinf.host.plan import CpuLayer, Transfer

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
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": cal[k:k + 1]} for k in range(len(cal))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(out), Reader(), **options)     # no options: every default
    return onnx.load(str(out))


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


# Accounting ------------------------------------------------------------------------------------

def node_macs(graph, node) -> int:
    """Multiply-accumulates of one Conv, Gemm or MatMul node of a planned graph (batch of one)."""
    s = graph.shapes
    if node.op == "Conv":
        w = s[node.inputs[1]]
        return int(np.prod(s[node.outputs[0]])) * int(np.prod(w[1:]))
    if node.op == "Gemm":
        a = s[node.inputs[0]]
        k = a[0] if node.attrs.get("transA", 0) else a[1]
        return int(np.prod(s[node.outputs[0]])) * int(k)
    if node.op == "MatMul":
        return int(np.prod(s[node.outputs[0]])) * int(s[node.inputs[0]][-1])
    return 0


_PREFIX = re.compile(r"^node '[^']*' \([^)]*\): ")


def reason_key(reason: str) -> str:
    """A plan reason without what varies from layer to layer (node name, zero point, group count)."""
    key = _PREFIX.sub("", reason)
    key = re.sub(r"zero point is -?\d+", "zero point is not 0", key)
    return re.sub(r"group=\d+", "group=C", key)


def coverage(plan) -> dict:
    """MAC share on the accelerator, and every CPU layer that multiplies, with the plan's reason."""
    graph = plan.graph
    on_acc = {s.name for s in plan.steps if isinstance(s, FpgaLayer)}
    total = acc = 0
    cpu_layers, reasons = [], collections.OrderedDict()
    for node in graph.nodes:
        macs = node_macs(graph, node)
        if not macs:
            continue
        total += macs
        if node.op == "Conv" and node.name in on_acc:
            acc += macs
            continue
        step = next((s for s in plan.steps if isinstance(s, CpuLayer) and s.name == node.name), None)
        reason = (step.reason if step is not None and step.reason else
                  "not a convolution (the accelerator runs Conv only)" if node.op != "Conv" else
                  "pruned by the plan (output unused)" if step is None else "no reason given")
        cpu_layers.append(dict(node=node.name, op=node.op, macs=macs, reason=reason))
        key = reason_key(reason)
        r = reasons.setdefault(key, dict(layers=0, macs=0))
        r["layers"] += 1
        r["macs"] += macs
    fused = {n for layer in plan.fpga_layers if layer.residual for n in layer.nodes}
    adds = [n.name for n in graph.nodes if n.op == "Add"]
    other = collections.Counter(s.node.op for s in plan.steps
                                if isinstance(s, CpuLayer) and node_macs(graph, s.node) == 0)
    return dict(total_macs=total, accelerator_macs=acc, share=acc / total if total else 0.0,
                accelerator_layers=len(on_acc), convs=sum(n.op == "Conv" for n in graph.nodes),
                cpu_layers=cpu_layers, reasons=reasons, other_cpu_ops=dict(other),
                adds=len(adds), adds_fused=sum(a in fused for a in adds),
                transfers=sum(s.device == "transfer" for s in plan.steps))


def failure(stage: str, e: Exception, graph=None) -> dict:
    """One line: stage, node and op when the message names a node, exception type and message."""
    msg = " ".join(str(e).split())
    node = op = None
    m = re.search(r"node '([^']+)'", msg) or re.search(r"layer '([^']+)'", msg)
    if m:
        node = m.group(1)
        if graph is not None:
            op = next((n.op for n in graph.nodes if n.name == node), None)
        if op is None:
            m2 = re.search(r"node '[^']+' \((\w+)", msg)
            op = m2.group(1) if m2 else None
    return dict(stage=stage, node=node, op=op, error=type(e).__name__, message=msg[:400])


def isolated_layers(session: Session, ref: dict[str, np.ndarray]) -> dict:
    """Each accelerator layer alone, fed onnxruntime's quantised input: its output against onnxruntime's, in LSBs.

    Whole-network differences mix two things: a layer computing something else, and a 1-LSB
    rounding difference (an exact tie, or a CPU float layer summing in another order before a
    QuantizeLinear) propagating through the layers after it. This separates them.
    """
    from hlsinf.reference import pack_activations, unpack_activations

    plan, dev, cfg = session.plan, session.device, session.plan.cfg
    worst, worst_layer, differing, values = 0, None, 0, 0
    for layer in plan.fpga_layers:
        # onnxruntime's integers as the runtime writes them: the plan's device encoding (e.g.
        # int8 + 128 on a uint8 kernel), host padding with the zero point, shifted copies
        feed = Transfer(layer.source, "to_device", layer.in_shape, cfg.cpi, plan.encodings.get(layer.source),
                        layer.input, layer.in_zero_point.host_pads, layer.input_copies)
        x = feed.device_image(ref[layer.source][0], session.act)
        x_addr = session.buffers[(layer.input, cfg.cpi)]
        dev.write(x_addr, pack_activations(x, cfg.cpi, session.act))
        p = session.params[layer.name]
        ptrs = {"x": x_addr, "y": session.buffers[(layer.output, cfg.cpo)], "w": p["w"], "b": p["b"], "m": p["m"]}
        if layer.residual:                  # post-op residual_add: onnxruntime's operand too
            r_enc = plan.encodings.get(layer.residual)
            r = ref[layer.residual][0]
            ptrs["r"] = session.buffers[(layer.residual, cfg.cpo)]
            dev.write(ptrs["r"], pack_activations(r_enc.to_device(r, session.act) if r_enc is not None else r,
                                                  cfg.cpo, session.act))
        if layer.columns:
            session._run_columns(layer, ptrs, None)
        else:
            for args in layer.calls:
                dev.call(args, ptrs)
        o, h, w = layer.out_shape
        g = -(-o // cfg.cpo)
        y = plan.host_value(layer.output,
                            unpack_activations(dev.read(ptrs["y"], session.act, g * cfg.cpo * h * w), o, h, w, cfg.cpo))
        d = np.abs(y.astype(np.int64) - ref[layer.output][0].astype(np.int64))
        differing += int(np.count_nonzero(d))
        values += d.size
        if d.max() > worst:
            worst, worst_layer = int(d.max()), layer.name
    return dict(max_lsb=worst, worst_layer=worst_layer, differing=differing / max(values, 1))


def ort_reference(model: onnx.ModelProto):
    """``hlsinf.host.onnxruntime_session``: exact integer products, no weight-quantising optimiser."""
    from hlsinf.host import onnxruntime_session

    return onnxruntime_session(model)


def run_plan(plan, qdq: onnx.ModelProto, x: np.ndarray) -> dict:
    """The plan on the reference device against onnxruntime on the same QDQ model (one image):
    the network output, and every accelerator layer alone (:func:`isolated_layers`)."""
    session = Session(plan)
    t0 = time.perf_counter()
    got = session.run(x)
    seconds = time.perf_counter() - t0
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    wanted = {t for layer in plan.fpga_layers for t in (layer.source, layer.output, layer.residual) if t}
    names = [o.name for o in m.graph.output]
    for t in sorted(wanted - set(names)):
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
        names.append(t)
    sess = ort_reference(m)
    ref = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))
    y, r = got[plan.graph.outputs[0]], ref[plan.graph.outputs[0]]
    err = float(np.abs(y.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-12))
    same_top1 = bool(np.argmax(y.reshape(-1)) == np.argmax(r.reshape(-1))) if r.ndim == 2 else None
    return dict(seconds=seconds, rel_err_vs_ort=err, same_top1=same_top1, layers_alone=isolated_layers(session, ref))


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
