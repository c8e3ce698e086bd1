"""Integer arithmetic for the kernel: requantisation multipliers, QDQ parameters, post-training quantisation.

Two ways into integer mode share one representation, an ONNX QDQ model
(QuantizeLinear/DequantizeLinear around every convolution), so that onnxruntime can run
exactly the model the accelerator runs:

* a QDQ model written by a tool (``onnxruntime.quantization.quantize_static``), used as is;
* a float model plus a calibration batch: :func:`quantize` measures activation ranges,
  quantises weights per output channel (symmetric int8) and bias to int32, and writes
  the QDQ model itself.

Zero points: :func:`quantize` writes zero points of 0 where that loses nothing (uint8 of a
tensor never negative in calibration, e.g. after ReLU; symmetric int8 on an int8 kernel) and,
for a uint8 kernel, an asymmetric uint8 encoding (scale and zero point from the calibrated
range) of a tensor that can be negative (a residual sum, a linear bottleneck, a conv before
an Add), as onnxruntime's ``quantize_static`` does. The planner folds zero points into the
bias and pads with them on the host (:func:`hlsinf.host.plan.realise_input_zero_point`,
docs/host.md); QDQ models from other tools may have any.

onnxruntime as the reference: :func:`hlsinf.host.ort.onnxruntime_session` opens a CPU session
that computes the QDQ model's integer arithmetic as ONNX defines it (int32 accumulation). A
default session does not on x86 CPUs without VNNI, see there.
"""

from __future__ import annotations


import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.host.load import load_model
from hlsinf.ir import Graph, GraphError, Node

__all__ = ["QuantError", "requant_params", "quantize", "calibrate_ranges", "CALIBRATION_PERCENTILE"]


class QuantError(ValueError):
    """A scale cannot be represented by the kernel; the message names the layer."""


def requant_params(real_scale, cfg: KernelConfig, layer: str = "layer") -> tuple[np.ndarray, int, float]:
    """Map per-channel real scales ``s_x * s_w / s_y`` onto ``M / 2**shift``.

    ``M`` is unsigned with ``cfg.mult_bits`` bits, one per channel; ``shift`` is shared by
    the layer and at most ``cfg.max_shift``. The largest shift whose multipliers still fit
    is taken (most precision). Returns ``(M as uint32, shift, worst relative error)``.
    Without a multiplier in the kernel (``with_multiplier=False``) every scale must be a
    power of two: ``M = 1`` and the nearest shift is used, and the error says how far off it is.
    """
    m = np.asarray(real_scale, np.float64).reshape(-1)
    if np.any(~np.isfinite(m)) or np.any(m <= 0):
        raise QuantError(f"{layer}: requantisation scales must be positive and finite, got {m[:4]}...")
    if not cfg.with_multiplier:
        shifts = np.rint(-np.log2(m))
        if np.any(shifts != shifts[0]):
            raise QuantError(f"{layer}: per-channel scales need the kernel's multiplier (with_multiplier=False)")
        shift = int(shifts[0])
        if not 0 <= shift <= cfg.max_shift:
            raise QuantError(f"{layer}: scale {m[0]:.3g} needs shift {shift}, allowed 0 to {cfg.max_shift}")
        err = float(np.max(np.abs(2.0 ** -shift / m - 1)))
        return np.ones(m.size, np.uint32), shift, err
    mmax = (1 << cfg.mult_bits) - 1
    top = float(m.max())
    shift = cfg.max_shift
    while shift > 0 and round(top * 2.0 ** shift) > mmax:
        shift -= 1
    if round(top * 2.0 ** shift) > mmax:
        raise QuantError(f"{layer}: requantisation scale {top:.6g} is larger than the largest multiplier "
                         f"{mmax} (mult_bits = {cfg.mult_bits}) at shift 0")
    mult = np.rint(m * 2.0 ** shift)
    err = float(np.max(np.abs(mult / 2.0 ** shift / m - 1)))
    return mult.astype(np.uint32), shift, err


# Post-training quantisation --------------------------------------------------------------------

#: Percentile of each calibration image's values that bounds an activation's range
#: (:func:`calibrate_ranges`); ``None``: the plain minimum and maximum.
CALIBRATION_PERCENTILE = 99.99
#: Tensors with fewer values per image than this use their minimum and maximum: a percentile
#: of a few values would only interpolate between the largest ones.
PERCENTILE_MIN_VALUES = 1000


def calibrate_ranges(graph: Graph, calibration: np.ndarray,
                     percentile: float | None = CALIBRATION_PERCENTILE) -> dict[str, tuple[float, float]]:
    """Range of every float tensor over a calibration batch (the float graph runs in onnxruntime).

    Per image, the ``100 - percentile`` and ``percentile`` percentiles of a tensor's values (its
    minimum and maximum when ``percentile`` is None or the tensor has fewer than
    :data:`PERCENTILE_MIN_VALUES` values); over the batch, the smallest and largest of those. A
    few outlying values per image then saturate instead of costing every other value
    resolution: on the zoo at 224x224 (16 calibration images, docs/zoo.md) MobileNetV2's cosine to
    the float model goes from 0.9898 (min/max) to 0.9912 and the UNet's from 0.9926 to 0.9913,
    ResNet-18 0.9994 and VGG16 0.9996 either way."""
    from hlsinf.host.cpu import graph_runner

    if percentile is not None and not 50 < percentile <= 100:
        raise ValueError(f"calibrate_ranges: percentile = {percentile!r} is out of range: allowed 50 < p <= 100")
    calibration = np.asarray(calibration, np.float32)
    shape = graph.shapes[graph.inputs[0]]
    if calibration.ndim == len(shape) - 1:
        calibration = calibration[None]
    if tuple(calibration.shape[1:]) != tuple(shape[1:]):
        raise GraphError(f"calibration batch has shape {calibration.shape}; the model input "
                         f"{graph.inputs[0]!r} needs (N, {', '.join(map(str, shape[1:]))})")
    ranges: dict[str, list[float]] = {}
    run = graph_runner(graph, keep=True)
    for k in range(calibration.shape[0]):
        values = run(calibration[k:k + 1])
        for name, v in values.items():
            if name in graph.initializers or not np.issubdtype(np.asarray(v).dtype, np.floating):
                continue
            v = np.asarray(v).ravel()
            if percentile is None or percentile == 100 or v.size < PERCENTILE_MIN_VALUES:
                lo, hi = float(np.min(v)), float(np.max(v))
            else:
                lo, hi = (float(q) for q in np.percentile(v, (100 - percentile, percentile)))
            if name in ranges:
                ranges[name][0] = min(ranges[name][0], lo)
                ranges[name][1] = max(ranges[name][1], hi)
            else:
                ranges[name] = [lo, hi]
    return {k: (v[0], v[1]) for k, v in ranges.items()}


def _kernel_depthwise(graph: Graph, node: Node, kernel: KernelConfig | None) -> bool:
    """A depthwise Conv (group = input = output channels, C x 1 x k x k weights) a kernel built
    with depthwise runs: quantised like a dense one (per output channel)."""
    if kernel is None or not getattr(kernel, "with_depthwise", False):
        return False
    w = graph.shapes.get(node.inputs[1])
    x = graph.shapes.get(node.inputs[0])
    group = node.attrs.get("group", 1)
    return bool(w is not None and x is not None and len(w) == 4 and len(x) == 4 and w[1] == 1
                and group == x[1] == w[0])


def _act_qparams(lo: float, hi: float, signed: bool) -> tuple[float, int]:
    """Scale and zero point of an activation with calibrated range ``lo..hi``.

    int8: symmetric, zero point 0. uint8: zero point 0 when ``lo >= 0``; else asymmetric over
    ``min(lo, 0)..max(hi, 0)`` (real 0 is exactly the integer zero point, so padding and ReLU
    stay exact), which keeps every uint8 code in use for a tensor that can be negative."""
    if signed:
        s = max(abs(lo), abs(hi)) / 127.0
        return (s if s > 0 else 1.0), 0
    if lo >= 0:
        s = hi / 255.0
        return (s if s > 0 else 1.0), 0
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255.0
    if not s > 0:
        return 1.0, 0
    return s, int(np.clip(np.rint(-lo / s), 0, 255))


def _gemm_axis(graph: Graph, node: Node) -> int | None:
    """The output features' axis of the constant weights of a Gemm (alpha = beta = 1, transA = 0;
    0 with transB, 1 without) or MatMul (K x O: 1) the planner maps to a
    1x1 convolution; None for any other node."""
    a = node.attrs
    if node.op == "Gemm" and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0 and not a.get("transA", 0):
        w = graph.const(node.inputs[1])
        return (0 if a.get("transB", 0) else 1) if w is not None and w.ndim == 2 else None
    if node.op == "MatMul":
        w = graph.const(node.inputs[1])
        return 1 if w is not None and w.ndim == 2 else None
    return None


def quantize(model, calibration: np.ndarray, kernel: KernelConfig | None = None, *,
             act_signed: bool | None = None, per_channel: bool = True,
             percentile: float | None = CALIBRATION_PERCENTILE):
    """Post-training quantisation of a float ONNX model into a QDQ ``onnx.ModelProto``.

    ``model`` is a path or ``ModelProto``; ``calibration`` an ``N x C x H x W`` float batch
    (a few representative inputs). Activation format follows ``kernel.act_signed`` (or
    ``act_signed``; default uint8): scale from the calibrated range (each image's
    ``percentile`` bounds, :func:`calibrate_ranges`; ``percentile=None``: min/max), zero point 0 for int8
    (symmetric) and for uint8 tensors never negative in calibration, else (uint8) the
    asymmetric zero point of :func:`_act_qparams`. Weights are
    symmetric int8 (per output channel unless ``per_channel=False``), bias int32 at scale
    ``s_x * s_w``. Every convolution with constant weights is quantised (its input and its
    (ReLU/Clip-ed) output) when their ranges were calibrated; others stay float and run on
    the CPU. A Gemm (alpha = beta = 1, transA = 0) or MatMul with constant
    2-D weights is quantised the same way, per output feature. Depthwise convolutions (group = channels) are quantised only
    for a ``kernel`` built with depthwise. 2-D max/average pools of a quantised tensor keep its scale.
    The output of an element-wise activation after a quantised convolution (Sigmoid, Tanh,
    SiLU, HardSwish, Mish, ...: :func:`hlsinf.host.activation.activation_region`) is quantised
    at its calibrated range when ``kernel`` has the post-op ``table``, so the planner
    fuses it into the convolution's call as a lookup table.
    The result runs in onnxruntime and goes to :func:`hlsinf.host.plan.to_fpga` as is.
    """
    from hlsinf.ir import Node, fold_batchnorm, to_onnx

    from hlsinf.host.activation import activation_region

    signed = act_signed if act_signed is not None else (kernel.act_signed if kernel is not None else False)
    with_table = kernel is not None and "table" in kernel.post_ops
    graph = model if isinstance(model, Graph) else load_model(model)
    graph = fold_batchnorm(graph)
    ranges = calibrate_ranges(graph, calibration, percentile)

    def representable(t):
        return t in ranges

    scales: dict[str, float] = {}               # quantised activation tensors -> scale
    zero_points: dict[str, int] = {}            # ... -> zero point (uint8 tensors that can be negative)

    with_residual = kernel is not None and "residual_add" in kernel.post_ops
    amin = -128 if signed else 0

    def assign(t):
        lo, hi = ranges[t]
        grown = _residual_sum_range(t) if with_residual else None
        if grown is not None:
            lo, hi = min(lo, grown[0]), max(hi, grown[1])
        scales[t], zero_points[t] = _act_qparams(lo, hi, signed)

    def _residual_sum_range(t):
        """For ``t = [Relu](Add(conv, operand))`` with both addends quantised: the real range
        ``t``'s codes must span so the kernel's residual_add can hold the convolution's part
        before the add (docs/host.md, *Residual add*): the convolution's quantised range shifted
        by ``z_r·s_r``, which the planner folds into its bias. None for any other tensor."""
        node = graph.producer(t)
        if node is not None and node.op in ("Relu", "Clip") and len(graph.consumers(node.inputs[0])) == 1:
            node = graph.producer(node.inputs[0])
        if node is None or node.op != "Add" or len(node.inputs) != 2 or node.inputs[0] == node.inputs[1]:
            return None
        for c, r in (node.inputs, node.inputs[::-1]):
            conv = graph.producer(c)
            if (conv is not None and conv.op == "Conv" and c in scales and r in scales
                    and len(graph.consumers(c)) == 1):
                s_c, z_c = scales[c], zero_points[c]
                k = zero_points[r] * scales[r]
                margin = 0.01 * s_c
                return s_c * (amin - z_c) - k - margin, s_c * (amin + 255 - z_c) - k + margin
        return None
    conv_input: dict[str, str] = {}             # conv node name -> its quantised input tensor
    for node in graph.nodes:
        bias_const = len(node.inputs) < 3 or not node.inputs[2] or graph.const(node.inputs[2]) is not None
        if ((node.op == "Conv" and graph.const(node.inputs[1]) is not None and bias_const
                and (node.attrs.get("group", 1) == 1 or _kernel_depthwise(graph, node, kernel)))
                or (_gemm_axis(graph, node) is not None and bias_const)):
            x, out = node.inputs[0], node.outputs[0]
            cons = graph.consumers(out)
            if len(cons) == 1 and cons[0].op in ("Relu", "Clip") and out not in graph.outputs:
                out = cons[0].outputs[0]
            if (x in scales or representable(x)) and representable(out):
                if x not in scales:
                    assign(x)
                assign(out)
                conv_input[node.name] = x
                # An element-wise activation next (Sigmoid, SiLU, ...) becomes the kernel's
                # post-op table: its output gets a scale of its own (the table's output codes).
                region = activation_region(graph, out, quantized=False) if with_table else None
                if region is not None and representable(region[1]):
                    assign(region[1])
        elif with_residual and node.op == "Add":
            # The sum of a quantised convolution and another quantised tensor is quantised
            # (after its Relu/Clip) even when no convolution reads it (ResNet's last block
            # before the global pool), so the kernel's residual_add takes the Add.
            t = node.outputs[0]
            cons = graph.consumers(t)
            if len(cons) == 1 and cons[0].op in ("Relu", "Clip") and t not in graph.outputs:
                t = cons[0].outputs[0]
            if t not in scales and t in ranges and _residual_sum_range(t) is not None:
                assign(t)
        elif node.op in ("MaxPool", "AveragePool") and node.inputs[0] in scales:
            scales[node.outputs[0]] = scales[node.inputs[0]]
            zero_points[node.outputs[0]] = zero_points[node.inputs[0]]
        elif node.op == "Resize" and node.attrs.get("mode", "nearest") == "nearest" and node.inputs[0] in scales:
            scales[node.outputs[0]] = scales[node.inputs[0]]      # nearest copies values: same scale
            zero_points[node.outputs[0]] = zero_points[node.inputs[0]]

    zp_dtype = np.int8 if signed else np.uint8
    inits = dict(graph.initializers)
    shapes, dtypes = dict(graph.shapes), dict(graph.dtypes)
    nodes: list[Node] = []
    rename: dict[str, str] = {}

    def add_init(name, value):
        inits[name] = value
        shapes[name], dtypes[name] = value.shape, value.dtype

    def qdq(t, src=None):
        """Q -> DQ after ``t``; ``src``: ``t`` is a graph output, computed as ``src`` and kept as the DQ's output."""
        add_init(f"{t}_scale", np.array(scales[t], np.float32))
        add_init(f"{t}_zero_point", np.array(zero_points[t], zp_dtype))
        dst = t if src is not None else f"{t}_dequantized"
        nodes.append(Node(f"{t}_QuantizeLinear", "QuantizeLinear", [src or t, f"{t}_scale", f"{t}_zero_point"],
                          [f"{t}_quantized"]))
        nodes.append(Node(f"{t}_DequantizeLinear", "DequantizeLinear",
                          [f"{t}_quantized", f"{t}_scale", f"{t}_zero_point"], [dst]))
        shapes[f"{t}_quantized"] = shapes[dst] = shapes[t]
        dtypes[f"{t}_quantized"], dtypes[dst] = np.dtype(zp_dtype), np.dtype(np.float32)
        if src is None:
            rename[t] = dst

    def dq_param(name, q, scale, axis):
        add_init(f"{name}_quantized", q)
        add_init(f"{name}_scale", scale)
        add_init(f"{name}_zero_point", np.zeros(scale.shape, q.dtype))
        nodes.append(Node(f"{name}_DequantizeLinear", "DequantizeLinear",
                          [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"], [f"{name}_dequantized"],
                          {"axis": axis}))
        shapes[f"{name}_dequantized"], dtypes[f"{name}_dequantized"] = q.shape, np.dtype(np.float32)
        return f"{name}_dequantized"

    if graph.inputs[0] in scales:
        qdq(graph.inputs[0])
    for node in graph.nodes:
        new = Node(node.name, node.op, [rename.get(i, i) for i in node.inputs], list(node.outputs), dict(node.attrs))
        if node.name in conv_input:
            x = conv_input[node.name]
            w = graph.const(node.inputs[1]).astype(np.float64)      # through Identity (torch shares initializers)
            axis = _gemm_axis(graph, node) or 0                      # the output channels' axis
            wo = np.moveaxis(w, axis, 0)
            o = wo.shape[0]
            wmax = np.abs(wo.reshape(o, -1)).max(axis=1) if per_channel else np.full(o, np.abs(w).max())
            sw = np.where(wmax > 0, wmax / 127.0, 1.0).astype(np.float32)
            wq = np.moveaxis(np.clip(np.rint(wo / sw.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127),
                             0, axis).astype(np.int8)
            new.inputs[1] = dq_param(f"{node.name}_w", wq, sw if per_channel else sw[:1].reshape(()), axis)
            if len(node.inputs) > 2 and node.inputs[2]:
                b = graph.const(node.inputs[2]).astype(np.float64)
                sb = (np.float32(scales[x]) * sw).astype(np.float32)
                bq = np.clip(np.rint(b / sb.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
                new.inputs[2] = dq_param(f"{node.name}_b", bq, sb, 0)
        # A quantised graph output (a last convolution's): the node writes it under another
        # name and the DequantizeLinear writes the output, so the planner sees its Q and
        # the model keeps its output name.
        src = {}
        for k, out in enumerate(new.outputs):
            if out in scales and out in graph.outputs:
                src[out] = new.outputs[k] = f"{out}_float"
                shapes[src[out]], dtypes[src[out]] = shapes[out], dtypes[out]
        nodes.append(new)
        for out in node.outputs:
            if out in scales:
                qdq(out, src.get(out))
    used = {i for n in nodes for i in n.inputs}
    inits = {k: v for k, v in inits.items() if k in used}
    qgraph = Graph(nodes, inits, list(graph.inputs), list(graph.outputs), shapes, dtypes,
                   max(13, graph.opset), graph.name)
    return to_onnx(qgraph)
