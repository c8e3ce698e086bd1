"""BatchNormalization folding into the preceding Conv.

The accelerator computes conv + bias + requantise; an inference-mode BatchNormalization
is a per-channel affine map ``y = s * (x - mean) + beta`` with ``s = scale / sqrt(var +
eps)``, so it disappears into the Conv: ``W' = s * W`` (per output channel) and ``b' =
s * (b - mean) + beta``. Folding first also makes pruning scores see the weights the
hardware will really use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from hlsinf.compress._graph import CompressError, Graph, load_model

__all__ = ["FoldReport", "fold_batchnorm"]


@dataclass
class FoldReport:
    folded: list[tuple[str, str]] = field(default_factory=list)   #: (BatchNormalization, Conv) pairs
    left: list[tuple[str, str]] = field(default_factory=list)     #: (BatchNormalization, reason)


def _foldable(g: Graph, bn: onnx.NodeProto):
    """The Conv ``bn`` can fold into, or raise CompressError saying why not."""
    if len([o for o in bn.output if o]) > 1 or g.attr(bn, "training_mode", 0):
        raise CompressError(f"{g.describe(bn)} is in training mode: export the model in eval mode")
    producers = [n for n in g.graph.node if bn.input[0] in n.output]
    if not producers or producers[0].op_type != "Conv":
        what = g.describe(producers[0]) if producers else "a graph input"
        raise CompressError(f"{g.describe(bn)} follows {what}, not a Conv")
    conv = producers[0]
    if g.use_count(conv.output[0]) > 1:
        raise CompressError(f"{g.describe(bn)}: the output of {g.describe(conv)} is also used elsewhere, "
                            f"so the Conv cannot absorb the normalisation")
    for node, i, what in ((conv, 1, "weight"), (conv, 2, "bias"), (bn, 1, "scale"), (bn, 2, "B"),
                          (bn, 3, "mean"), (bn, 4, "var")):
        if g.parameter(node, i, what, required=(what != "bias")) is not None and g.use_count(node.input[i]) > 1:
            raise CompressError(f"{g.describe(node)}: its {what} {node.input[i]!r} is shared with other nodes")
    return conv


def fold_batchnorm(model, *, strict: bool = False) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every BatchNormalization that directly follows a Conv into that Conv.

    ``model`` is a ``ModelProto`` (not modified) or a path. A BatchNormalization that
    cannot be folded (after another op, a Conv output used twice, training mode...) is
    left in place and listed in the report, or raises :class:`CompressError` with
    ``strict``.
    """
    g = Graph(load_model(model))
    report = FoldReport()
    for bn in g.nodes("BatchNormalization"):
        try:
            conv = _foldable(g, bn)
        except CompressError as e:
            if strict:
                raise
            report.left.append((bn.name, str(e)))
            continue
        w = g.array(conv.input[1]).astype(np.float64)
        b = g.parameter(conv, 2, "bias", required=False)
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        scale, beta, mean, var = (g.array(bn.input[i]).astype(np.float64) for i in (1, 2, 3, 4))
        s = scale / np.sqrt(var + g.attr(bn, "epsilon", 1e-5))
        g.set_array(conv.input[1], w * s.reshape(-1, *([1] * (w.ndim - 1))))
        new_bias = s * (b - mean) + beta
        if len(conv.input) > 2 and conv.input[2]:
            g.set_array(conv.input[2], new_bias)
        else:
            name = g.add_array(f"{conv.name}_bias", new_bias.astype(g.array(conv.input[1]).dtype))
            if len(conv.input) > 2:
                conv.input[2] = name
            else:
                conv.input.append(name)
        conv.output[0] = bn.output[0]
        g.remove_node(bn)
        report.folded.append((bn.name, conv.name))
    return g.finish(), report
