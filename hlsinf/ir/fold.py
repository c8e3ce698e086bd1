"""BatchNormalization folding into the preceding Conv, for the planner, the quantiser and the compression pipeline.

The accelerator computes conv + bias + requantise; an inference-mode BatchNormalization
is a per-channel affine map ``y = s * (x - mean) + beta`` with ``s = scale / sqrt(var +
eps)``, so it disappears into the Conv: ``W' = s * W`` (per output channel) and ``b' =
s * (b - mean) + beta``. Folding before quantisation keeps one rounding step per layer,
and before pruning it makes the scores see the weights the hardware will really use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hlsinf.ir.graph import Graph, GraphError, Node, describe

__all__ = ["FoldReport", "fold_batchnorm"]


@dataclass
class FoldReport:
    folded: list[tuple[str, str]] = field(default_factory=list)   #: (BatchNormalization, Conv) pairs
    left: list[tuple[str, str]] = field(default_factory=list)     #: (BatchNormalization, reason)


def _foldable(g: Graph, bn: Node) -> Node:
    """The Conv ``bn`` can fold into, or raise GraphError saying why not."""
    if len([o for o in bn.outputs if o]) > 1 or bn.attrs.get("training_mode", 0):
        raise GraphError(f"{describe(bn)} is in training mode: export the model in eval mode")
    conv = g.producer(bn.inputs[0])
    if conv is None or conv.op != "Conv":
        what = describe(conv) if conv is not None else "a graph input"
        raise GraphError(f"{describe(bn)} follows {what}, not a Conv")
    if g.use_count(conv.outputs[0]) > 1:
        raise GraphError(f"{describe(bn)}: the output of {describe(conv)} is also used elsewhere, "
                         f"so the Conv cannot absorb the normalisation")
    for node, i, what in ((conv, 1, "weight"), (conv, 2, "bias"), (bn, 1, "scale"), (bn, 2, "B"),
                          (bn, 3, "mean"), (bn, 4, "var")):
        g.parameter(node, i, what, required=(what != "bias"))
    return conv


def _write(g: Graph, conv: Node, index: int, value: np.ndarray, hint: str):
    """Input ``index`` of ``conv`` becomes ``value``: in place if the Conv is the initializer's only
    reader, else (shared, or absent) as a new initializer."""
    name = conv.inputs[index] if index < len(conv.inputs) else ""
    if name and g.use_count(name) == 1:
        g.set_initializer(name, value)
    else:
        dtype = g.initializers[name].dtype if name else g.initializers[conv.inputs[1]].dtype
        g.set_input(conv, index, g.add_initializer(hint, value.astype(dtype)))


def fold_batchnorm(graph: Graph, *, strict: bool = False, report: FoldReport | None = None) -> Graph:
    """Fold every BatchNormalization that directly follows a Conv into that Conv.

    Returns a new graph (``graph`` is not modified) whose unused initializers are dropped.
    A BatchNormalization that cannot be folded (after another op, a Conv output used
    twice, training mode, parameters computed in the graph) stays in place; its reason is
    listed in ``report`` (a :class:`FoldReport` to fill, if given), or with ``strict`` it
    raises :class:`GraphError`. Folded weights keep their element type and their name
    unless another node shares them.
    """
    g = graph.copy()
    report = FoldReport() if report is None else report
    for bn in g.nodes_of("BatchNormalization"):
        try:
            conv = _foldable(g, bn)
        except GraphError as e:
            if strict:
                raise
            report.left.append((bn.name, str(e)))
            continue
        w = g.initializers[conv.inputs[1]].astype(np.float64)
        b = g.parameter(conv, 2, "bias", required=False)
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        scale, beta, mean, var = (g.initializers[bn.inputs[i]].astype(np.float64) for i in (1, 2, 3, 4))
        s = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        _write(g, conv, 1, w * s.reshape(-1, *([1] * (w.ndim - 1))), f"{conv.name}_weight")
        _write(g, conv, 2, s * (b - mean) + beta, f"{conv.name}_bias")
        g.set_output(conv, 0, bn.outputs[0])
        g.remove_node(bn)
        report.folded.append((bn.name, conv.name))
    g.drop_unused_initializers()
    return g
