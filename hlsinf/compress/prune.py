"""Structured pruning: zero whole Conv output channels (weights and bias) by a norm criterion.

Pruning here only zeroes numbers, so the pruned model computes exactly what fine-tuning
with the same masks computes; :mod:`hlsinf.compress.remove` then deletes the zeroed
channels from the graph. The scoring and selection functions work on numpy arrays so
the PyTorch loop hook (:mod:`hlsinf.compress.finetune`) picks the same channels.

Criteria: ``"l1"`` (sum of absolute weights of the channel) and ``"l2"`` (Euclidean
norm). With ``scope="global"`` the channels of all layers compete, so the scores are
divided by the channel's fan-in (``"l1"`` becomes the mean absolute weight, ``"l2"`` the
root mean square): a raw norm grows with the number of inputs and would always prune the
layers with few inputs first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from hlsinf.compress._model import CompressError, compress_errors, load, save
from hlsinf.compress.remove import trace_uses
from hlsinf.ir import Graph, GraphError

__all__ = ["CRITERIA", "SCOPES", "LayerPruning", "PruneReport", "channel_scores", "check_amount",
           "select_channels", "prune", "prunable_convs"]

CRITERIA = ("l1", "l2")
SCOPES = ("layer", "global")


@dataclass
class LayerPruning:
    name: str
    channels: int
    pruned: list[int] = field(default_factory=list)   #: indices of the zeroed output channels


@dataclass
class PruneReport:
    criterion: str
    scope: str
    layers: list[LayerPruning] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        total = sum(l.channels for l in self.layers)
        return sum(len(l.pruned) for l in self.layers) / total if total else 0.0

    def __str__(self):
        lines = [f"pruning by {self.criterion} norm, {self.scope} target"]
        lines += [f"  {l.name:<24} {len(l.pruned):>4} of {l.channels:>4} channels zeroed" for l in self.layers]
        lines.append(f"  total {self.fraction:.1%} of the output channels zeroed")
        return "\n".join(lines)


def check_amount(amount, name: str = "amount") -> float:
    """Validate one pruning amount: a number in [0, 1)."""
    ok = isinstance(amount, (int, float, np.floating)) and not isinstance(amount, bool) and math.isfinite(amount)
    if not ok or not 0 <= amount < 1:
        raise CompressError(f"pruning {name} = {amount!r} is out of range: allowed a number in [0, 1) "
                            f"(the fraction of output channels to zero; 1 would remove a whole layer)")
    return float(amount)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise CompressError(f"pruning {name} = {value!r} is not known: allowed {', '.join(allowed)}")


def channel_scores(weight: np.ndarray, criterion: str = "l1", per_weight: bool = False) -> np.ndarray:
    """Importance of each output channel of a weight ``[O, I, ...]``: smaller is pruned first.

    ``per_weight`` divides by the fan-in, making scores comparable across layers.
    """
    _check_choice("criterion", criterion, CRITERIA)
    w = np.asarray(weight, dtype=np.float64).reshape(weight.shape[0], -1)
    score = np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
    if per_weight:
        score = score / w.shape[1] if criterion == "l1" else score / math.sqrt(w.shape[1])
    return score


def select_channels(scores: dict[str, np.ndarray], amount, scope: str = "layer") -> dict[str, np.ndarray]:
    """The channels to prune: for each layer, the sorted indices of its lowest-scoring channels.

    ``amount`` is one fraction for every layer, or (``scope="layer"`` only) a dict from
    layer name to fraction. ``"layer"`` prunes ``round(amount * channels)`` of each layer;
    ``"global"`` prunes ``round(amount * all channels)`` channels with the lowest scores
    wherever they are. Either way every layer keeps at least one channel.
    """
    _check_choice("scope", scope, SCOPES)
    if isinstance(amount, dict):
        if scope != "layer":
            raise CompressError("pruning amount given per layer (a dict) needs scope = 'layer'")
        unknown = set(amount) - set(scores)
        if unknown:
            raise CompressError(f"pruning amount names layer(s) {sorted(unknown)} that are not prunable Convs; "
                                f"prunable: {sorted(scores)}")
        amounts = {name: check_amount(a, f"amount[{name!r}]") for name, a in amount.items()}
    else:
        amounts = {name: check_amount(amount) for name in scores}

    chosen: dict[str, list[int]] = {name: [] for name in scores}
    if scope == "layer":
        for name, a in amounts.items():
            s = scores[name]
            n = min(int(round(a * len(s))), len(s) - 1)
            chosen[name] = list(np.argsort(s, kind="stable")[:n])
    else:
        total = sum(len(s) for s in scores.values())
        n = int(round(amounts[next(iter(amounts))] * total)) if amounts else 0
        ranked = sorted((float(v), name, int(c)) for name, s in scores.items() for c, v in enumerate(s))
        for _, name, c in ranked:
            if n == 0:
                break
            if len(chosen[name]) < len(scores[name]) - 1:
                chosen[name].append(c)
                n -= 1
    return {name: np.array(sorted(c), dtype=int) for name, c in chosen.items()}


@compress_errors
def prunable_convs(model) -> dict[str, str]:
    """Each Conv of ``model`` (a ``ModelProto``, path or IR graph) mapped to ``""`` if its channels can be
    removed, else the reason."""
    g = model if isinstance(model, Graph) else load(model)
    out = {}
    for conv in g.nodes_of("Conv"):
        try:
            trace_uses(g, conv)
            out[conv.name] = ""
        except GraphError as e:
            out[conv.name] = str(e)
    return out


@compress_errors
def prune(model, amount, *, scope: str = "layer", criterion: str = "l1",
          layers: list[str] | None = None) -> tuple[onnx.ModelProto, PruneReport]:
    """Zero the weights and bias of the lowest-scoring output channels of Conv layers.

    ``model`` is a ``ModelProto`` (not modified) or a path. ``layers`` names the Convs to
    prune (default: every Conv whose channels :func:`~hlsinf.compress.remove_channels` can
    remove; a dict ``amount`` names them itself). A named Conv that cannot be removed, an
    unknown name or an amount outside [0, 1) raises :class:`CompressError`.
    """
    _check_choice("scope", scope, SCOPES)
    _check_choice("criterion", criterion, CRITERIA)
    if not isinstance(amount, dict):
        check_amount(amount)
    g = load(model)
    status = prunable_convs(g)
    if not status:
        raise CompressError("the model has no Conv node to prune")
    if isinstance(amount, dict):
        layers = list(amount)
    if layers is None:
        targets = [name for name, why in status.items() if not why]
        if not targets:
            reasons = "; ".join(f"{n}: {why}" for n, why in status.items())
            raise CompressError(f"no Conv of the model can have its channels removed ({reasons})")
    else:
        targets = list(layers)
        for name in targets:
            if name not in status:
                raise CompressError(f"pruning layer {name!r} is not a Conv node of the model; Conv nodes: "
                                    f"{sorted(status)}")
            if status[name]:
                raise CompressError(f"pruning layer {name!r} cannot be pruned: {status[name]}")

    weights = {name: g.parameter(g.node(name), 1, "weight") for name in targets}
    scores = {name: channel_scores(w, criterion, per_weight=(scope == "global")) for name, w in weights.items()}
    chosen = select_channels(scores, amount, scope)
    report = PruneReport(criterion, scope)
    for name in targets:
        conv, idx = g.node(name), chosen[name]
        w = weights[name].copy()
        w[idx] = 0
        g.set_initializer(conv.inputs[1], w)
        if len(conv.inputs) > 2 and conv.inputs[2]:
            b = g.initializers[conv.inputs[2]].copy()
            b[idx] = 0
            g.set_initializer(conv.inputs[2], b)
        report.layers.append(LayerPruning(name, w.shape[0], [int(i) for i in idx]))
    return save(g), report
