"""Numpy implementations of the ONNX operators the host runs on the CPU.

Everything the accelerator does not take (classifier heads, softmax, upsampling, layers
with shapes or number formats the kernel cannot run) runs here, with ONNX semantics, so a
whole network executes end to end. Each operator is ``fn(node, inputs, opset) -> outputs``;
:data:`CPU_OPS` is the list of supported operators the importer checks against.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hlsinf.ir import GraphError, Node

__all__ = ["CPU_OPS", "run_node", "conv2d", "quantize_linear", "dequantize_linear"]


def _axis_shape(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Broadcast a per-tensor (scalar) or per-axis (1-D) parameter against an ndim tensor."""
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def quantize_linear(x, scale, zero_point=None, axis: int = 1, dtype=np.uint8):
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``."""
    x = np.asarray(x, np.float32)
    if zero_point is not None:
        dtype = np.asarray(zero_point).dtype
    info = np.iinfo(dtype)
    s = _axis_shape(np.asarray(scale, np.float32), x.ndim, axis % max(x.ndim, 1))
    z = 0 if zero_point is None else _axis_shape(np.asarray(zero_point, np.int64), x.ndim, axis % max(x.ndim, 1))
    q = np.rint(x / s).astype(np.int64) + z
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_linear(q, scale, zero_point=None, axis: int = 1):
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` in float32."""
    q = np.asarray(q)
    ax = axis % max(q.ndim, 1)
    s = _axis_shape(np.asarray(scale, np.float32), q.ndim, ax)
    z = 0 if zero_point is None else _axis_shape(np.asarray(zero_point, np.int64), q.ndim, ax)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def _pads_2d(node: Node, x_hw, kernel, strides, dilations):
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for a in range(2):
            out = math.ceil(x_hw[a] / strides[a])
            total = max(0, (out - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - x_hw[a])
            small, big = total // 2, total - total // 2
            pads[a], pads[a + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    return pads


def conv2d(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1):
    """NCHW float convolution (ONNX Conv), im2col + matrix product, in float32."""
    x = np.asarray(x, np.float32)
    w = np.asarray(w, np.float32)
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ekh, ekw = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    win = sliding_window_view(xp, (ekh, ekw), axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    outs = []
    og = o // group
    for g in range(group):
        cols = win[:, g * cg:(g + 1) * cg]                     # n, cg, ho, wo, kh, kw
        wg = w[g * og:(g + 1) * og]                             # og, cg, kh, kw
        outs.append(np.einsum("nchwyx,ocyx->nohw", cols, wg, optimize=True))
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]
    if b is not None:
        y = y + np.asarray(b, np.float32).reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _conv(node, ins, opset):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    k = w.shape[2:]
    if len(k) != 2:
        raise GraphError(f"{node}: only 2-D convolutions are supported (kernel shape {k})")
    strides = node.attrs.get("strides", [1, 1])
    dil = node.attrs.get("dilations", [1, 1])
    pads = _pads_2d(node, x.shape[2:], k, strides, dil)
    return [conv2d(x, w, b, strides, pads, dil, node.attrs.get("group", 1))]


def _pool(node, ins, opset, mode):
    x = np.asarray(ins[0])
    k = node.attrs["kernel_shape"]
    if len(k) != 2:
        raise GraphError(f"{node}: only 2-D pooling is supported")
    strides = node.attrs.get("strides", [1, 1])
    dil = node.attrs.get("dilations", [1, 1])
    pads = _pads_2d(node, x.shape[2:], k, strides, dil)
    ceil_mode = node.attrs.get("ceil_mode", 0)
    extra = [0, 0]
    if ceil_mode:
        for a in range(2):
            size = x.shape[2 + a] + pads[a] + pads[a + 2]
            ek = (k[a] - 1) * dil[a] + 1
            out = math.ceil((size - ek) / strides[a]) + 1
            if (out - 1) * strides[a] >= x.shape[2 + a] + pads[a]:
                out -= 1
            extra[a] = max(0, (out - 1) * strides[a] + ek - size)
    fill = -np.inf if mode == "max" else 0.0
    xf = x.astype(np.float64)
    xp = np.pad(xf, ((0, 0), (0, 0), (pads[0], pads[2] + extra[0]), (pads[1], pads[3] + extra[1])),
                constant_values=fill)
    ek = ((k[0] - 1) * dil[0] + 1, (k[1] - 1) * dil[1] + 1)
    win = sliding_window_view(xp, ek, axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]
    if mode == "max":
        y = win.max(axis=(4, 5))
    else:
        ones = np.pad(np.ones(x.shape[2:]), ((pads[0], pads[2] + extra[0]), (pads[1], pads[3] + extra[1])))
        if node.attrs.get("count_include_pad", 0):
            ones = np.pad(np.ones((x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3])),
                          ((0, extra[0]), (0, extra[1])))
        cnt = sliding_window_view(ones, ek)[::strides[0], ::strides[1], ::dil[0], ::dil[1]].sum(axis=(2, 3))
        y = win.sum(axis=(4, 5)) / cnt
    return [y.astype(x.dtype)]


def _gemm(node, ins, opset):
    a, b = np.asarray(ins[0], np.float32), np.asarray(ins[1], np.float32)
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    y = node.attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + node.attrs.get("beta", 1.0) * np.asarray(ins[2], np.float32)
    return [y.astype(np.float32)]


def _softmax(node, ins, opset):
    x = np.asarray(ins[0], np.float64)
    axis = node.attrs.get("axis", -1 if opset >= 13 else 1)
    if opset < 13:   # older opsets flatten from axis on
        shape = x.shape
        x = x.reshape(int(np.prod(shape[:axis])), -1)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return [(e / e.sum(axis=1, keepdims=True)).reshape(shape).astype(ins[0].dtype)]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(ins[0].dtype)]


def _batchnorm(node, ins, opset):
    x, scale, bias, mean, var = ins[:5]
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)).reshape(shape)
    y = (x - np.asarray(mean).reshape(shape)) * inv + np.asarray(bias).reshape(shape)
    return [y.astype(x.dtype)]


def _reshape(node, ins, opset):
    x, shape = ins[0], [int(v) for v in np.asarray(ins[1]).reshape(-1)]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[k] if v == 0 else v for k, v in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(node, ins, opset):
    x = ins[0]
    axis = node.attrs.get("axis", 1) % max(x.ndim, 1) if x.ndim else 0
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def _clip(node, ins, opset):
    x = ins[0]
    lo = node.attrs.get("min", None)
    hi = node.attrs.get("max", None)
    if len(ins) > 1 and ins[1] is not None:
        lo = ins[1]
    if len(ins) > 2 and ins[2] is not None:
        hi = ins[2]
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, x.dtype))
    return [y]


def _resize(node, ins, opset):
    """Nearest-neighbour Resize/Upsample with integer scale factors (the decoder case)."""
    x = ins[0]
    mode = node.attrs.get("mode", "nearest")
    if mode != "nearest":
        raise GraphError(f"{node}: only mode='nearest' is supported, got {mode!r}")
    if node.op == "Upsample":
        scales = ins[1] if len(ins) > 1 else node.attrs.get("scales")
        sizes = None
    else:
        scales = ins[2] if len(ins) > 2 and ins[2] is not None and np.size(ins[2]) else None
        sizes = ins[3] if len(ins) > 3 and ins[3] is not None and np.size(ins[3]) else None
    if sizes is not None:
        scales = np.asarray(sizes, np.float64) / np.asarray(x.shape, np.float64)
    scales = np.asarray(scales, np.float64).reshape(-1)
    y = x
    for axis, s in enumerate(scales):
        if s == 1:
            continue
        if s != int(s) or s < 1:
            raise GraphError(f"{node}: only integer up-scaling factors are supported, got {list(scales)}")
        y = np.repeat(y, int(s), axis=axis)
    return [y]


def _transpose(node, ins, opset):
    perm = node.attrs.get("perm")
    return [np.transpose(ins[0], perm)]


def _axes(node, ins, opset, k=1):
    if len(ins) > k and ins[k] is not None:
        return [int(a) for a in np.asarray(ins[k]).reshape(-1)]
    return node.attrs.get("axes")


def _squeeze(node, ins, opset):
    axes = _axes(node, ins, opset)
    return [np.squeeze(ins[0], axis=tuple(axes) if axes is not None else None)]


def _unsqueeze(node, ins, opset):
    y = ins[0]
    axes = sorted(a % (y.ndim + len(_axes(node, ins, opset))) for a in _axes(node, ins, opset))
    for a in axes:
        y = np.expand_dims(y, a)
    return [y]


def _pad(node, ins, opset):
    x = ins[0]
    pads = [int(p) for p in (ins[1] if len(ins) > 1 else node.attrs["pads"])]
    value = float(ins[2]) if len(ins) > 2 and ins[2] is not None and np.size(ins[2]) else node.attrs.get("value", 0.0)
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise GraphError(f"{node}: only constant padding is supported, got mode={mode!r}")
    n = x.ndim
    return [np.pad(x, [(pads[k], pads[k + n]) for k in range(n)], constant_values=value)]


def _qlinear(node, ins, opset):
    axis = node.attrs.get("axis", 1)
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if node.op == "QuantizeLinear":
        return [quantize_linear(ins[0], ins[1], zp, axis, np.uint8)]
    return [dequantize_linear(ins[0], ins[1], zp, axis)]


def _binary(fn):
    return lambda node, ins, opset: [fn(ins[0], ins[1]).astype(np.result_type(ins[0], ins[1]))]


def _global_pool(fn):
    return lambda node, ins, opset: [fn(ins[0], axis=tuple(range(2, ins[0].ndim)), keepdims=True).astype(ins[0].dtype)]


CPU_OPS = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda node, ins, opset: [np.matmul(ins[0], ins[1])],
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Relu": lambda node, ins, opset: [np.maximum(ins[0], np.zeros((), ins[0].dtype))],
    "LeakyRelu": lambda node, ins, opset: [np.where(ins[0] >= 0, ins[0], ins[0] * node.attrs.get("alpha", 0.01)).astype(ins[0].dtype)],
    "Sigmoid": lambda node, ins, opset: [(1 / (1 + np.exp(-ins[0]))).astype(ins[0].dtype)],
    "Tanh": lambda node, ins, opset: [np.tanh(ins[0])],
    "Clip": _clip,
    "Softmax": _softmax,
    "MaxPool": lambda node, ins, opset: _pool(node, ins, opset, "max"),
    "AveragePool": lambda node, ins, opset: _pool(node, ins, opset, "avg"),
    "GlobalAveragePool": _global_pool(np.mean),
    "GlobalMaxPool": _global_pool(np.max),
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda node, ins, opset: [np.concatenate(ins, axis=node.attrs["axis"])],
    "Identity": lambda node, ins, opset: [ins[0]],
    "Dropout": lambda node, ins, opset: [ins[0]],
    "Pad": _pad,
    "Upsample": _resize,
    "Resize": _resize,
    "QuantizeLinear": _qlinear,
    "DequantizeLinear": _qlinear,
    "Constant": None,   # folded into initializers by the importer
}


def run_node(node: Node, inputs: list, opset: int) -> list[np.ndarray]:
    fn = CPU_OPS.get(node.op)
    if fn is None:
        raise GraphError(f"{node}: operator {node.op} is not supported on the CPU")
    try:
        return fn(node, inputs, opset)
    except GraphError:
        raise
    except Exception as e:
        shapes = [None if i is None else tuple(np.shape(i)) for i in inputs]
        raise GraphError(f"{node} failed on inputs of shapes {shapes}: {e}") from e


def evaluate(graph, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Run a whole graph on the CPU (float reference, calibration): ``{tensor: value}``.

    With ``keep`` every intermediate tensor is returned, else only the graph outputs.
    """
    values = dict(graph.initializers)
    values[graph.inputs[0]] = np.asarray(x)
    for node in graph.nodes:
        ins = [values[i] if i else None for i in node.inputs]
        for name, v in zip(node.outputs, run_node(node, ins, graph.opset)):
            if name:
                values[name] = v
    if keep:
        return values
    return {o: values[o] for o in graph.outputs}
