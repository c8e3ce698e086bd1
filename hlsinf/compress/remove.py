"""Channel removal: physically delete the zeroed output channels of every Conv.

Pruning only zeroes numbers; the accelerator's cycle count (``ceil(I/CPI) * H * W *
ceil(O/CPO)``) and the parameter memory drop only once the channels are gone from the
graph. A Conv output channel whose weights are all zero is not "nothing": it outputs its
bias everywhere, and after the per-channel ops that follow it (BatchNormalization, ReLU,
pooling...) it is still a constant ``k`` image. Its contribution to the next layer is
therefore a constant that can be folded into that layer's bias (the SIMPLIFY method):

* next layer a Conv without padding: ``bias[o] += sum_c k_c * sum_{ky,kx} W[o, c, ky, kx]``;
* next layer a Gemm after Flatten: ``C[m] += alpha/beta * sum_c k_c * sum_s B[c*S + s, m]``.

A next Conv *with* zero padding sees ``k`` inside the image and 0 in the padding, so the
contribution at the borders is not a bias. Every constant channel then has the same
spatial pattern, only scaled by its own ``k``, so all of them can be merged exactly into
one of them (the representative ``r``): ``W[o, r] = sum_c k_c * W[o, c] / k_r``. One
constant channel stays, the rest go; channels whose constant is 0 (a pruned ReLU layer)
always go. See docs/compress.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from hlsinf.compress._model import CompressError, compress_errors, load, save
from hlsinf.ir import Graph, GraphError, Node, describe

__all__ = ["ChannelUse", "LayerRemoval", "RemovalReport", "remove_channels", "trace_uses",
           "zero_channels", "PER_CHANNEL_OPS"]

#: Ops between a Conv and its consumer that act on each channel alone and map a constant
#: image to a constant image (with the conditions checked in ``_check_per_channel``).
PER_CHANNEL_OPS = ("BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                   "Elu", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
                   "GlobalMaxPool")

_HANDLED = "Conv, or Flatten (axis 1) then Gemm, possibly after " + ", ".join(PER_CHANNEL_OPS)


@dataclass
class ChannelUse:
    """One place where the output channels of a Conv end up."""

    path: tuple            #: per-channel nodes from the producer Conv to the consumer
    consumer: Node  #: the Conv or Gemm that mixes the channels
    spatial: int = 1       #: features per channel after Flatten (Gemm consumers)
    padded: bool = False   #: a Conv consumer with zero padding (constants are not constant at borders)


@dataclass
class LayerRemoval:
    """What channel removal did to one Conv."""

    name: str
    channels_before: int
    channels_after: int
    removed: list[int] = field(default_factory=list)   #: original indices of deleted channels
    kept_constant: list[int] = field(default_factory=list)  #: zero-weight channels kept (merged constants)
    note: str = ""


@dataclass
class RemovalReport:
    layers: list[LayerRemoval] = field(default_factory=list)

    @property
    def channels_before(self) -> int:
        return sum(l.channels_before for l in self.layers)

    @property
    def channels_after(self) -> int:
        return sum(l.channels_after for l in self.layers)

    def __str__(self):
        lines = [f"{'conv':<24} {'before':>6} {'after':>6}  note"]
        for l in self.layers:
            note = l.note or (f"{len(l.kept_constant)} constant channel(s) kept for padded borders"
                              if l.kept_constant else "")
            lines.append(f"{l.name:<24} {l.channels_before:>6} {l.channels_after:>6}  {note}")
        lines.append(f"{'total':<24} {self.channels_before:>6} {self.channels_after:>6}")
        return "\n".join(lines)


# Tracing where a Conv's channels go ------------------------------------------------------------

def _check_conv_parameters(g: Graph, conv: Node, role: str):
    """A Conv whose channel axis we rewrite: plain (group 1), constant and unshared parameters."""
    group = conv.attrs.get("group", 1)
    if group != 1:
        raise CompressError(f"{describe(conv)} ({role}) has group = {group}: channel removal handles "
                            f"only group = 1 convolutions")
    g.parameter(conv, 1, "weight")
    g.parameter(conv, 2, "bias", required=False)
    for i in (1, 2):
        if i < len(conv.inputs) and conv.inputs[i] and g.use_count(conv.inputs[i]) > 1:
            raise CompressError(f"{describe(conv)}: its initializer {conv.inputs[i]!r} is shared with "
                                f"other nodes, so its channels cannot be removed for this node alone")


def _is_padded(g: Graph, conv: Node) -> bool:
    if conv.attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return True
    return any(p != 0 for p in conv.attrs.get("pads", []))


def _check_per_channel(g: Graph, node: Node):
    op = node.op
    if op == "BatchNormalization":
        if len([o for o in node.outputs if o]) > 1 or node.attrs.get("training_mode", 0):
            raise CompressError(f"{describe(node)} is in training mode: export the model in eval mode")
        for i, what in enumerate(("scale", "B", "mean", "var"), start=1):
            g.parameter(node, i, what)
            if g.use_count(node.inputs[i]) > 1:
                raise CompressError(f"{describe(node)}: its {what} {node.inputs[i]!r} is shared with other nodes")
    elif op == "Clip":
        for i, what in ((1, "min"), (2, "max")):
            g.parameter(node, i, what, required=False)
    elif op == "Dropout":
        if len(node.outputs) > 1 and node.outputs[1] and g.use_count(node.outputs[1]):
            raise CompressError(f"{describe(node)}: its mask output is used; channel removal needs an "
                                f"inference-mode Dropout")
    elif op == "AveragePool":
        if any(p != 0 for p in node.attrs.get("pads", [])) and node.attrs.get("count_include_pad", 0):
            raise CompressError(f"{describe(node)} averages zero padding (count_include_pad = 1): a constant "
                                f"channel is not constant at its borders, so it cannot be folded")


def trace_uses(g: Graph, conv: Node) -> list[ChannelUse]:
    """Every consumer that mixes ``conv``'s output channels, through per-channel ops.

    Raises :class:`CompressError` naming the node that stops the channels from being
    removed (an op the pass does not know, a graph output, a shared initializer...).
    """
    _check_conv_parameters(g, conv, "producer")
    uses: list[ChannelUse] = []

    def walk(tensor: str, path: tuple):
        source = describe(path[-1]) if path else describe(conv)
        if g.is_output(tensor):
            raise CompressError(f"the output of {source} is a graph output: removing channels of "
                                f"{describe(conv)} would change the model's output")
        for node, index in g.uses(tensor):
            op = node.op
            if op in PER_CHANNEL_OPS and index == 0:
                _check_per_channel(g, node)
                walk(node.outputs[0], path + (node,))
            elif op == "Conv" and index == 0:
                _check_conv_parameters(g, node, f"consumer of {conv.name!r}")
                uses.append(ChannelUse(path, node, padded=_is_padded(g, node)))
            elif op == "Flatten" and index == 0:
                uses.extend(_trace_flatten(g, conv, node, tensor, path))
            else:
                raise CompressError(f"{describe(node)} reads the output of {source} (as its input {index}): "
                                    f"channel removal of {describe(conv)} handles only {_HANDLED}")

    walk(conv.outputs[0], ())
    return uses


def _trace_flatten(g: Graph, conv, flatten, tensor, path) -> list[ChannelUse]:
    axis = flatten.attrs.get("axis", 1)
    shape = g.shapes.get(tensor)
    if axis != 1:
        raise CompressError(f"{describe(flatten)} has axis = {axis}: channel removal handles only axis = 1")
    if shape is None or len(shape) < 2 or any(d is None for d in shape[1:]):
        raise CompressError(f"the shape of {tensor!r} (input of {describe(flatten)}) is not known statically "
                            f"(got {shape}); give the model input fixed channel and spatial sizes")
    spatial = math.prod(shape[2:])
    if g.is_output(flatten.outputs[0]):
        raise CompressError(f"the output of {describe(flatten)} is a graph output")
    uses = []
    for gemm, index in g.uses(flatten.outputs[0]):
        if gemm.op != "Gemm" or index != 0:
            raise CompressError(f"{describe(gemm)} reads the output of {describe(flatten)}: channel removal "
                                f"of {describe(conv)} handles only a Gemm (as input A) after Flatten")
        if gemm.attrs.get("transA", 0):
            raise CompressError(f"{describe(gemm)} has transA = 1: channel removal needs transA = 0")
        g.parameter(gemm, 1, "B")
        c = g.parameter(gemm, 2, "C", required=False)
        for i in (1, 2):
            if i < len(gemm.inputs) and gemm.inputs[i] and g.use_count(gemm.inputs[i]) > 1:
                raise CompressError(f"{describe(gemm)}: its initializer {gemm.inputs[i]!r} is shared")
        m = g.initializers[gemm.inputs[1]].shape[0 if gemm.attrs.get("transB", 0) else 1]
        if c is not None and c.size not in (1, m):
            raise CompressError(f"{describe(gemm)}: its C has shape {c.shape}; channel removal needs a "
                                f"bias of {m} values (or one)")
        if c is not None and gemm.attrs.get("beta", 1.0) == 0:
            raise CompressError(f"{describe(gemm)} has beta = 0 and a C input: the constant of removed "
                                f"channels cannot be folded into a bias that is multiplied by 0")
        uses.append(ChannelUse(path, gemm, spatial=spatial))
    return uses


# Constants through per-channel ops --------------------------------------------------------------

def _propagate(g: Graph, path, values: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """The constant each channel has after the ``path`` ops, given its constant before them.

    ``keep`` selects the channels of the per-channel parameters (BatchNormalization)
    that ``values`` stands for.
    """
    v = np.asarray(values, dtype=np.float64)
    pick = (lambda a: a) if keep is None else (lambda a: a[keep])
    for node in path:
        op = node.op
        if op == "BatchNormalization":
            scale, bias, mean, var = (pick(g.initializers[node.inputs[i]].astype(np.float64)) for i in (1, 2, 3, 4))
            eps = node.attrs.get("epsilon", 1e-5)
            v = scale * (v - mean) / np.sqrt(var + eps) + bias
        elif op == "Relu":
            v = np.maximum(v, 0.0)
        elif op == "LeakyRelu":
            v = np.where(v >= 0, v, node.attrs.get("alpha", 0.01) * v)
        elif op == "Clip":
            lo = g.parameter(node, 1, "min", required=False)
            hi = g.parameter(node, 2, "max", required=False)
            lo = node.attrs.get("min", -np.inf) if lo is None else float(lo)
            hi = node.attrs.get("max", np.inf) if hi is None else float(hi)
            v = np.clip(v, lo, hi)
        elif op == "Sigmoid":
            v = 1.0 / (1.0 + np.exp(-v))
        elif op == "Tanh":
            v = np.tanh(v)
        elif op == "HardSigmoid":
            v = np.clip(node.attrs.get("alpha", 0.2) * v + node.attrs.get("beta", 0.5), 0.0, 1.0)
        elif op == "Elu":
            v = np.where(v >= 0, v, node.attrs.get("alpha", 1.0) * (np.exp(v) - 1.0))
        # Identity, Dropout (inference) and the pools keep a constant image constant.
    return v


def zero_channels(weight: np.ndarray) -> np.ndarray:
    """Indices of the output channels whose weights are all zero."""
    return np.flatnonzero(~np.asarray(weight).reshape(weight.shape[0], -1).any(axis=1))


# The pass ------------------------------------------------------------------------------------

@compress_errors
def remove_channels(model, *, strict: bool = True) -> tuple[onnx.ModelProto, RemovalReport]:
    """Delete the all-zero output channels of every Conv, folding their constants forward.

    ``model`` is a ``ModelProto`` (not modified) or a path. Returns the new model and a
    report per Conv. With ``strict`` (the default), a Conv that has zero channels the pass
    cannot remove raises :class:`CompressError` naming the node that blocks it; otherwise
    that Conv is left as it is and the reason is in the report.
    """
    g = load(model)
    convs = g.nodes_of("Conv")
    if not convs:
        raise CompressError("the model has no Conv node: nothing to remove channels from")
    report = RemovalReport()
    for conv in convs:  # graph order is topological, so removals cascade forward
        report.layers.append(_remove_from(g, conv, strict))
    return save(g), report


def _remove_from(g: Graph, conv: Node, strict: bool) -> LayerRemoval:
    weight = g.parameter(conv, 1, "weight")
    channels = weight.shape[0]
    zero = zero_channels(weight)
    try:
        uses = trace_uses(g, conv)
    except GraphError as e:
        if zero.size and strict:
            raise CompressError(f"{describe(conv)} has {zero.size} all-zero output channel(s) that cannot be "
                                f"removed: {e}") from None
        note = f"{zero.size} zero channel(s) left: {e}" if zero.size else ""
        return LayerRemoval(conv.name, channels, channels, note=note)
    if not zero.size:
        return LayerRemoval(conv.name, channels, channels)

    bias = g.parameter(conv, 2, "bias", required=False)
    bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    consts = [_propagate(g, u.path, bias[zero], keep=zero) for u in uses]  # per use, per zero channel
    padded = [i for i, u in enumerate(uses) if u.padded]
    keep, representative = _channels_to_keep(zero, consts, padded)
    removed_pos = [j for j in range(len(zero)) if j not in keep]
    if len(removed_pos) == channels:  # every channel is a removable constant: one must stay
        keep = {removed_pos.pop(0)}
    removed = zero[removed_pos]

    for use, k in zip(uses, consts):
        if use.consumer.op == "Conv":
            _fold_into_conv(g, use, zero, k, removed_pos, representative)
        else:
            _fold_into_gemm(g, use, zero, k, removed_pos)
    sliced = set()
    for use in uses:
        for node in use.path:
            if node.op == "BatchNormalization" and node.name not in sliced:
                sliced.add(node.name)
                for i in (1, 2, 3, 4):
                    g.set_initializer(node.inputs[i], np.delete(g.initializers[node.inputs[i]], removed))
    g.set_initializer(conv.inputs[1], np.delete(weight, removed, axis=0))
    if len(conv.inputs) > 2 and conv.inputs[2]:
        g.set_initializer(conv.inputs[2], np.delete(g.initializers[conv.inputs[2]], removed))
    return LayerRemoval(conv.name, channels, channels - len(removed), removed=[int(c) for c in removed],
                        kept_constant=[int(zero[j]) for j in sorted(keep)])


def _channels_to_keep(zero, consts, padded) -> tuple[set[int], int | None]:
    """Positions (into ``zero``) of the constant channels that must stay for padded consumers,
    and the representative the others merge into (``None`` if there is none).

    A channel whose constant reaches a padded Conv as a nonzero value shapes that Conv's
    borders. All such channels merge into one representative whose constant is nonzero on
    every padded path (the largest smallest-magnitude one, to keep the division well
    conditioned); if no channel qualifies, all of them stay.
    """
    needed = [j for j in range(len(zero)) if any(consts[u][j] != 0 for u in padded)]
    if not needed:
        return set(), None
    candidates = [j for j in needed if all(consts[u][j] != 0 for u in padded)]
    if not candidates:
        return set(needed), None
    best = max(candidates, key=lambda j: min(abs(consts[u][j]) for u in padded))
    return {best}, best


def _fold_into_conv(g: Graph, use: ChannelUse, zero, k, removed_pos, representative):
    node = use.consumer
    w = g.initializers[node.inputs[1]].astype(np.float64)
    out = w.shape[0]
    channels = zero  # original channel index of each position
    if use.padded:
        if representative is not None:
            r = channels[representative]
            merged = sum(k[j] * w[:, channels[j]] for j in range(len(zero)) if k[j] != 0)
            w[:, r] = merged / k[representative]
        # else: every removed channel has constant 0 on this path and contributes nothing
    else:
        delta = sum((k[j] * w[:, channels[j]].sum(axis=(1, 2)) for j in removed_pos), np.zeros(out))
        if np.any(delta):
            _add_bias(g, node, 2, delta, out, scale=1.0)
    g.set_initializer(node.inputs[1], np.delete(w, zero[removed_pos], axis=1))


def _fold_into_gemm(g: Graph, use: ChannelUse, zero, k, removed_pos):
    node, s = use.consumer, use.spatial
    trans_b = node.attrs.get("transB", 0)
    b = g.initializers[node.inputs[1]].astype(np.float64)
    rows = b.T if trans_b else b  # features x outputs
    out = rows.shape[1]
    delta = np.zeros(out)
    for j in removed_pos:
        c = zero[j]
        delta += k[j] * rows[c * s:(c + 1) * s].sum(axis=0)
    delta *= node.attrs.get("alpha", 1.0)
    if np.any(delta):
        _add_bias(g, node, 2, delta, out, scale=1.0 / node.attrs.get("beta", 1.0))
    features = np.concatenate([np.arange(zero[j] * s, (zero[j] + 1) * s) for j in removed_pos]) \
        if removed_pos else np.zeros(0, dtype=int)
    rows = np.delete(rows, features, axis=0)
    g.set_initializer(node.inputs[1], rows.T if trans_b else rows)


def _add_bias(g: Graph, node, index, delta, size, scale):
    """Add ``delta * scale`` to the bias input ``index`` of ``node``, creating it if absent."""
    if index < len(node.inputs) and node.inputs[index]:
        old = g.initializers[node.inputs[index]]
        value = np.broadcast_to(old.astype(np.float64).reshape(-1), (size,)) + delta * scale
        g.set_initializer(node.inputs[index], value.reshape(old.shape) if old.size == size else value)
    else:
        dtype = g.initializers[node.inputs[1]].dtype
        g.set_input(node, index, g.add_initializer(f"{node.name}_bias", (delta * scale).astype(dtype)))
