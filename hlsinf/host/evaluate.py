"""Measure a planned network: how much of it the accelerator runs, how close it is to
onnxruntime, and how long one image would take on a card.

One place for what ``benchmarks/zoo_coverage.py``, ``benchmarks/networks.py``,
``examples/networks.py`` and their tests all report (docs/networks.md, method section):

* :func:`quantize_ort`: onnxruntime's ``quantize_static`` with its defaults, the second
  quantiser next to the library's own :func:`hlsinf.host.quantize.quantize`;
* :func:`coverage`: share of multiply-accumulates (Conv, Gemm, MatMul) on the accelerator,
  and every CPU layer that multiplies with the plan's reason;
* :func:`run_plan`: the plan on a device against onnxruntime: the network output against the
  same QDQ model and (given the float model) cosine and top-1 against the float model, and
  every accelerator layer alone fed onnxruntime's int8 input (:func:`isolated_layers`);
* :func:`project`: accelerator time = the plan's own ideal cycles per layer
  (``FpgaLayer.ideal_cycles``, so a kernel mode that changes a layer's rate, such as 1x1 at
  full rate, shows up here without change) + calls x :data:`PER_CALL_CYCLES`, at
  :data:`CLOCK_HZ`; :func:`measure_host`: the CPU layers and transfers measured with a
  :class:`~hlsinf.host.runtime.Profile` on a device.
"""

from __future__ import annotations

import collections
import math
import re
import time

import numpy as np
import onnx

from hlsinf.config import KernelConfig
from hlsinf.host.ort import onnxruntime_session
from hlsinf.host.plan import CpuLayer, FpgaLayer, Transfer
from hlsinf.host.runtime import Profile, Session

__all__ = ["PER_CALL_CYCLES", "CLOCK_HZ", "NETWORK_BUILD", "network_build", "quantize_ort", "node_macs",
           "reason_key", "coverage", "failure", "isolated_layers", "run_plan", "cosine", "top1_agreement",
           "project", "measure_host"]

#: Fixed cost of one kernel call on top of its ideal cycles: the largest measured by
#: ``benchmarks/whole_layers.py`` (every VGG16 and SegNet-decoder conv layer as one whole call
#: in Verilator, 100-cycle read and write latency, one 512-bit beat per cycle per bundle, at
#: 4x4, 8x8, 16x16 and 32x32; docs/performance.md): 620 cycles, conv1_1 at 4x4.
PER_CALL_CYCLES = 620
#: The design target of the projections (not a timing-closed figure of any build).
CLOCK_HZ = 300e6

#: What the four networks of issue 10 need of a kernel beyond CPI/CPO (docs/networks.md):
#: depthwise 3x3 (MobileNetV2), nearest upsize x2 (UNet's Upsample, fused after a conv),
#: post-op residual_add (ResNet-18 and MobileNetV2's Add). Activations uint8 (the default).
#: Where ``KernelConfig`` has them, also full-rate 1x1 calls (``with_pointwise``) and input
#: channels beyond imax over several calls (``with_acc_split``: MobileNetV2's 576/960, the
#: UNet's 768 channels).
NETWORK_BUILD = dict(with_depthwise=True, max_upsize=2, post_ops=("residual_add",),
                     **{f: True for f in ("with_pointwise", "with_acc_split")
                        if f in KernelConfig.__dataclass_fields__})


def network_build(n: int, **overrides) -> KernelConfig:
    """The one build per size that has what ResNet-18, MobileNetV2, VGG16 and UNet use: CPI = CPO = n."""
    return KernelConfig(cpi=n, cpo=n, **{**NETWORK_BUILD, **overrides})


# Quantiser -------------------------------------------------------------------------------------

def quantize_ort(float_path, calibration: np.ndarray, out, **options) -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` of the float model at ``float_path``, written to ``out``.

    No ``options``: every default (QDQ format, int8 activations and weights, MinMax
    calibration, per-tensor, no pre-processing); the calibration batch is fed image by image.
    """
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: calibration[k:k + 1]} for k in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(out), Reader(), **options)
    return onnx.load(str(out))


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
    """MAC share on the accelerator, and every CPU layer that multiplies, with the plan's reason.

    A node counts as on the accelerator when an accelerator layer fuses it (a Gemm or MatMul
    run as a 1x1 convolution counts once the planner puts it in a layer's nodes).
    """
    graph = plan.graph
    on_acc = {s.name for s in plan.steps if isinstance(s, FpgaLayer)}
    fused = {n for s in plan.steps if isinstance(s, FpgaLayer) for n in getattr(s, "nodes", ())}
    total = acc = 0
    cpu_layers, reasons = [], collections.OrderedDict()
    for node in graph.nodes:
        macs = node_macs(graph, node)
        if not macs:
            continue
        total += macs
        if node.name in on_acc or node.name in fused:
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
    with_residual = {n for layer in plan.fpga_layers if layer.residual for n in layer.nodes}
    adds = [n.name for n in graph.nodes if n.op == "Add"]
    other = collections.Counter(s.node.op for s in plan.steps
                                if isinstance(s, CpuLayer) and node_macs(graph, s.node) == 0)
    return dict(total_macs=total, accelerator_macs=acc, share=acc / total if total else 0.0,
                accelerator_layers=len(on_acc), convs=sum(n.op == "Conv" for n in graph.nodes),
                cpu_layers=cpu_layers, reasons=reasons, other_cpu_ops=dict(other),
                adds=len(adds), adds_fused=sum(a in with_residual for a in adds),
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


# Agreement -------------------------------------------------------------------------------------

def isolated_layers(session: Session, ref: dict[str, np.ndarray]) -> dict:
    """Each accelerator layer alone, fed onnxruntime's quantised input: its output against onnxruntime's, in LSBs.

    Whole-network differences mix two things: a layer computing something else, and a 1-LSB
    rounding difference (an exact tie, or a CPU float layer summing in another order before a
    QuantizeLinear) propagating through the layers after it. This separates them.
    """
    from hlsinf.reference import pack_activations, unpack_activations

    plan, dev, cfg = session.plan, session.device, session.plan.cfg
    worst, worst_layer, differing, values, layers = 0, None, 0, 0, 0
    for layer in plan.fpga_layers:
        # onnxruntime's integers as the runtime writes them: the plan's device encoding (e.g.
        # int8 + 128 on a uint8 kernel), host padding with the zero point, shifted copies
        # a layer may read its input in other lanes than CPI (a full-rate 1x1 layer's super-pixels)
        lanes = layer.in_lanes(cfg) if hasattr(layer, "in_lanes") else cfg.cpi
        feed = Transfer(layer.source, "to_device", layer.in_shape, lanes, plan.encodings.get(layer.source),
                        layer.input, layer.in_zero_point.host_pads, layer.input_copies)
        src = np.asarray(ref[layer.source][0])
        if src.ndim == 1:                   # a 1 x K row (Gemm, MatMul as a 1x1 convolution): K x 1 x 1
            src = src.reshape(-1, 1, 1)
        image = feed.device_image(src, session.act)
        x_addr = session.buffers[(layer.input, lanes)]
        dev.write(x_addr, pack_activations(image, lanes, session.act))
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
            # a layer split over input-channel chunks points each call at its chunk (call_pointers)
            for k, args in enumerate(layer.calls):
                dev.call(args, layer.call_pointers(k, ptrs) if hasattr(layer, "call_pointers") else ptrs)
        o, h, w = layer.out_shape
        g = -(-o // cfg.cpo)
        y = unpack_activations(dev.read(ptrs["y"], session.act, g * cfg.cpo * h * w), o, h, w, cfg.cpo)
        want = np.asarray(ref[layer.output][0])
        y = plan.host_value(layer.output, y).reshape(want.shape)
        d = np.abs(y.astype(np.int64) - want.astype(np.int64))
        differing += int(np.count_nonzero(d))
        values += d.size
        layers += 1
        if d.max() > worst:
            worst, worst_layer = int(d.max()), layer.name
    return dict(max_lsb=worst, worst_layer=worst_layer, differing=differing / max(values, 1), layers=layers)


def ort_reference(model: onnx.ModelProto):
    """``hlsinf.host.onnxruntime_session``: exact integer products, no weight-quantising optimiser."""
    return onnxruntime_session(model)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two outputs, flattened, in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of argmax decisions over the class axis (axis 1) that agree: one per image for a
    classifier (N x classes), one per pixel for a segmentation map (N x classes x H x W)."""
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def _ort_run(sess, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """``names`` of an onnxruntime session, image by image (a quantised model may fix batch 1)."""
    runs = [sess.run(names, {sess.get_inputs()[0].name: x[k:k + 1]}) for k in range(x.shape[0])]
    return {n: np.concatenate([r[j] for r in runs]) for j, n in enumerate(names)}


def run_plan(plan, qdq: onnx.ModelProto, x: np.ndarray, float_model=None, device=None,
             keep_output: bool = False) -> dict:
    """The plan on ``device`` (default: the reference device) against onnxruntime on the same
    QDQ model (one image): the network output, and every accelerator layer alone
    (:func:`isolated_layers`). With ``float_model`` (path or ModelProto) also cosine and top-1
    agreement of the plan's and of onnxruntime's QDQ output with onnxruntime's float output.
    ``keep_output``: the plan's output array is in the result too (``output``)."""
    session = Session(plan, device)
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
    ref = _ort_run(sess, names, x)
    y, r = got[plan.graph.outputs[0]], ref[plan.graph.outputs[0]]
    err = float(np.abs(y.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-12))
    same_top1 = top1_agreement(y, r) == 1.0 if r.ndim == 2 else None
    if x.shape[0] > 1:
        # the layers alone are fed the first image's tensors; whatever buffer a layer reads that
        # they do not overwrite must hold that image too, not the batch's last
        session.run(x[:1])
    out = dict(seconds=seconds, rel_err_vs_ort=err, same_top1=same_top1, cosine_vs_ort_qdq=cosine(y, r),
               layers_alone=isolated_layers(session, ref))
    if keep_output:
        out["output"] = y
    if float_model is not None:
        import onnxruntime as ort
        data = float_model.SerializeToString() if isinstance(float_model, onnx.ModelProto) else str(float_model)
        fs = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        f = _ort_run(fs, [fs.get_outputs()[0].name], x)[fs.get_outputs()[0].name]
        out.update(cosine_vs_float=cosine(y, f), ort_qdq_cosine_vs_float=cosine(r, f),
                   top1_vs_float=top1_agreement(y, f), ort_qdq_top1_vs_float=top1_agreement(r, f))
    return out


# Time ------------------------------------------------------------------------------------------

#: Bytes one 512-bit AXI beat carries: each bundle delivers one beat per cycle at best.
BEAT_BYTES = 64


def bus_bound_cycles(cfg: KernelConfig, call) -> float:
    """A call's cycles when a memory bundle, not the MAC array, sets its pace: the larger of its
    ideal cycles, its input at one 64-byte beat per cycle (a pointwise call at CPI = 8 needs
    72-byte super-pixels: 0.889 of one a cycle, docs/performance.md) and its weight sets at one
    beat per cycle (binds for frames of a few pixels, e.g. a Gemm's single pixel)."""
    ideal = call.ideal_cycles(cfg)
    lanes = 9 * cfg.cpi if call.pointwise else cfg.cpi
    read = ideal * max(1.0, lanes * cfg.act_bits / 8 / BEAT_BYTES)
    sets = 0 if call.depthwise else call.frames_per_group(cfg) * len(call.groups(cfg))
    weights = sets * cfg.cpo * cfg.cpi * 9 * cfg.weight_bits / 8 / BEAT_BYTES
    return max(ideal, read, weights)


def project(plan, per_call_cycles: int = PER_CALL_CYCLES, clock_hz: float = CLOCK_HZ) -> dict:
    """Projected accelerator time of one image: per layer the sum over its calls of
    :func:`bus_bound_cycles` (the ideal cycles unless a memory bundle is slower) + calls x
    ``per_call_cycles``.

    ``ideal`` is the plan's own ``FpgaLayer.ideal_cycles(cfg)`` (the sum of its calls' ideal
    cycles), so whatever rate a call has on its kernel (e.g. a 1x1 layer in a full-rate
    pointwise mode) is counted as the planner counts it. ``efficiency``: the layers' MACs /
    (ideal cycles x CPI x CPO x 9), the share of the MAC array doing useful work in an ideal
    cycle.
    """
    cfg, layers = plan.cfg, []
    nodes = {n.name: n for n in plan.graph.nodes}
    peak = cfg.cpi * cfg.cpo * 9                    # multipliers of the MAC array
    for layer in plan.fpga_layers:
        ideal = int(layer.ideal_cycles(cfg))
        projected = (math.ceil(sum(bus_bound_cycles(cfg, call) for call in layer.calls))
                     + len(layer.calls) * per_call_cycles)
        macs = sum(node_macs(plan.graph, nodes[n]) for n in layer.nodes if n in nodes)
        c, h, w = layer.in_shape
        o, ho, wo = layer.out_shape
        layers.append(dict(name=layer.name, shape=f"{c}x{h}x{w} -> {o}x{ho}x{wo}", kernel=list(layer.kernel),
                           depthwise=bool(layer.depthwise), calls=len(layer.calls), macs=macs,
                           ideal_cycles=ideal, efficiency=macs / (ideal * peak) if ideal else 0.0,
                           projected_cycles=projected, projected_ms=projected / clock_hz * 1e3))
    ideal = sum(r["ideal_cycles"] for r in layers)
    projected = sum(r["projected_cycles"] for r in layers)
    macs = sum(r["macs"] for r in layers)
    return dict(layers=layers, accelerator_layers=len(layers), calls=sum(r["calls"] for r in layers),
                efficiency=macs / (ideal * peak) if ideal else 0.0,
                ideal_cycles=ideal, projected_cycles=projected, ideal_ms=ideal / clock_hz * 1e3,
                accelerator_ms=projected / clock_hz * 1e3, per_call_cycles=per_call_cycles, clock_hz=clock_hz)


def measure_host(plan, x: np.ndarray, repeats: int = 3, device=None) -> dict:
    """The host side of one image, measured: the plan runs ``repeats`` times with a
    :class:`Profile`; the run with the least CPU-layer time is kept (other jobs on a shared
    machine only ever slow a run down). Its ``cpu`` (onnxruntime partitions) and ``transfer``
    (layout transform + copy) times are the host's; its ``accelerator`` time is the device's
    emulation, not an FPGA time, and is not used."""
    session = Session(plan, device)
    profiles, wall = [], []
    for _ in range(repeats):
        profiles.append(Profile())
        t0 = time.perf_counter()
        session.run(x, profile=profiles[-1])
        wall.append(time.perf_counter() - t0)
    profile = min(profiles, key=lambda pr: pr.totals()["cpu"])
    totals = profile.totals()
    cpu_steps = sorted(((k, v) for k, v in profile.seconds.items() if profile.category[k] == "cpu"),
                       key=lambda kv: -kv[1])
    return dict(cpu_ms=totals["cpu"] * 1e3, transfer_ms=totals["transfer"] * 1e3,
                cpu_ms_runs=[pr.totals()["cpu"] * 1e3 for pr in profiles],
                slowest_cpu_steps_ms={k: v * 1e3 for k, v in cpu_steps[:5]},
                cpu_layers=sum(s.device == "cpu" for s in plan.steps),
                transfers=sum(s.device == "transfer" for s in plan.steps),
                device_run_s=min(wall))
