"""Loop hook for iterative prune-and-fine-tune in PyTorch (the slides' strategy, with PWE).

Pruning a trained network a little at a time, and fine-tuning in between, loses far
less accuracy than pruning once. The schedule (``prune_finetune``):

1. train (or fine-tune) until the validation loss has not improved for ``patience``
   epochs -- the *patience on the epochs before pruning* (PWE) -- or ``max_epochs`` pass,
   then restore the best epoch's weights;
2. prune to the next amount of the schedule, by the same L1/L2 channel criterion and
   selection as the ONNX pass (:func:`hlsinf.compress.channel_scores`,
   :func:`hlsinf.compress.select_channels`), and go back to 1.

Pruned channels are held at zero by ``torch.nn.utils.prune`` masks, so any training loop
works unchanged: the hook only needs a function that trains one epoch and one that
returns the validation loss. A Conv followed by a BatchNorm has the BatchNorm's scale and
shift masked too, so the pruned channel is exactly 0 after the normalisation; this lets
:func:`hlsinf.compress.remove_channels` delete it even before a zero-padded Conv (a
nonzero constant there would have to stay as one merged channel).

Use::

    from hlsinf.compress.finetune import ChannelPruner, prune_finetune

    pruner = ChannelPruner(model)                     # every Conv2d, BatchNorm2d paired
    def on_level(amount, model):                      # after each level's fine-tuning
        torch.onnx.export(pruner.exportable(), x0, f"model_{amount}.onnx", dynamo=False)
    prune_finetune(model, pruner, train_epoch, val_loss, amounts=[0.5, 0.75, 0.9],
                   patience=3, max_epochs=30, on_level=on_level)

then ``python -m hlsinf.compress model_0.5.onnx -o slim.onnx --prune 0.5`` removes the
channels (re-pruning at the same amount selects exactly the channels already at zero).
Torch is imported lazily: it is not a dependency of hlsinf.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from hlsinf.compress._model import CompressError
from hlsinf.compress.prune import CRITERIA, SCOPES, _check_choice, channel_scores, check_amount, select_channels

__all__ = ["ChannelPruner", "LevelResult", "prune_finetune"]


def _torch():
    try:
        import torch
    except ImportError:
        raise CompressError("hlsinf.compress.finetune needs PyTorch: pip install torch") from None
    return torch


def _current(module, name):
    """A parameter as the next forward pass will see it (mask applied), even right after load_state_dict."""
    if hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name)


class ChannelPruner:
    """Structured channel masks on the Conv2d layers of a PyTorch model.

    ``layers`` lists ``Conv2d`` modules or ``(Conv2d, BatchNorm2d)`` pairs. By default it
    is every ``Conv2d`` with ``groups == 1`` except the last one in module order (usually
    the output side, which channel removal cannot shrink), each paired with a
    ``BatchNorm2d`` registered right after it with as many features.
    """

    def __init__(self, model, layers=None, *, criterion: str = "l1", scope: str = "layer"):
        torch = _torch()
        _check_choice("criterion", criterion, CRITERIA)
        _check_choice("scope", scope, SCOPES)
        self.model, self.criterion, self.scope = model, criterion, scope
        if layers is None:
            layers = self._default_layers(model)
        self.layers = []
        names = {m: n for n, m in model.named_modules()}
        for item in layers:
            conv, bn = item if isinstance(item, tuple) else (item, None)
            if not isinstance(conv, torch.nn.Conv2d) or conv.groups != 1:
                raise CompressError(f"ChannelPruner layer {names.get(conv, conv)!r} must be a Conv2d with groups = 1")
            if bn is not None and (not isinstance(bn, torch.nn.BatchNorm2d) or bn.num_features != conv.out_channels):
                raise CompressError(f"ChannelPruner: {names.get(bn, bn)!r} must be a BatchNorm2d with "
                                    f"{conv.out_channels} features to pair with {names.get(conv, conv)!r}")
            self.layers.append((names.get(conv, str(len(self.layers))), conv, bn))
        if not self.layers:
            raise CompressError("ChannelPruner found no Conv2d layer to prune")

    @staticmethod
    def _default_layers(model):
        torch = _torch()
        modules = list(model.modules())
        convs = [i for i, m in enumerate(modules) if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
        layers = []
        for i in convs[:-1]:
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            paired = isinstance(nxt, torch.nn.BatchNorm2d) and nxt.num_features == modules[i].out_channels
            layers.append((modules[i], nxt) if paired else modules[i])
        return layers

    def effective_weight(self, conv, bn) -> np.ndarray:
        """The weight the folded model will have: BatchNorm's per-channel scale applied."""
        torch = _torch()
        with torch.no_grad():
            w = _current(conv, "weight").detach().double()
            if bn is not None:
                scale = _current(bn, "weight").detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
                w = w * scale.reshape(-1, 1, 1, 1)
        return w.cpu().numpy()

    def prune(self, amount) -> dict[str, np.ndarray]:
        """Zero (and keep zero) the weakest channels so that ``amount`` of each layer (or all) is pruned.

        Masks accumulate: channels pruned before stay pruned (their score is 0).
        Returns the pruned channel indices per layer.
        """
        torch = _torch()
        from torch.nn.utils import prune as torch_prune

        if not isinstance(amount, dict):
            check_amount(amount)
        scores = {name: channel_scores(self.effective_weight(conv, bn), self.criterion,
                                       per_weight=(self.scope == "global"))
                  for name, conv, bn in self.layers}
        chosen = select_channels(scores, amount, self.scope)
        for name, conv, bn in self.layers:
            keep = torch.ones(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
            keep[torch.as_tensor(chosen[name], dtype=torch.long)] = 0
            targets = [(conv, "weight"), (conv, "bias")] + ([(bn, "weight"), (bn, "bias")] if bn is not None else [])
            for module, param in targets:
                tensor = getattr(module, param, None)
                if tensor is None:
                    continue
                mask = keep.reshape(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()
                torch_prune.custom_from_mask(module, param, mask)
        return chosen

    def pruned_fraction(self) -> float:
        total = zero = 0
        for _, conv, _ in self.layers:
            w = _current(conv, "weight").detach().reshape(conv.out_channels, -1)
            total += conv.out_channels
            zero += int((w.abs().sum(dim=1) == 0).sum())
        return zero / total

    def exportable(self):
        """A copy of the model with the masks baked into plain parameters (for ONNX export)."""
        from torch.nn.utils import prune as torch_prune

        # The masked ``weight`` attributes are computed tensors, which deepcopy refuses: swap
        # detached copies in for the duration of the copy.
        swapped = []
        for module in self.model.modules():
            for param in ("weight", "bias"):
                if hasattr(module, f"{param}_mask"):
                    swapped.append((module, param, getattr(module, param)))
                    setattr(module, param, _current(module, param).detach())
        try:
            clone = copy.deepcopy(self.model)
        finally:
            for module, param, value in swapped:
                setattr(module, param, value)
        for module in clone.modules():
            for param in ("weight", "bias"):
                if torch_prune.is_pruned(module) and hasattr(module, f"{param}_mask"):
                    torch_prune.remove(module, param)
        return clone


@dataclass
class LevelResult:
    amount: float
    epochs: int                      #: epochs run at this level
    best_loss: float                 #: validation loss of the restored weights
    losses: list[float] = field(default_factory=list)


def prune_finetune(model, pruner: ChannelPruner, train_epoch, validate, *, amounts,
                   patience: int = 3, max_epochs: int = 50, min_delta: float = 0.0,
                   on_level=None) -> list[LevelResult]:
    """Iterative pruning: train to a plateau (``patience`` epochs = PWE), prune to the next amount, repeat.

    ``amounts`` is an increasing list in [0, 1) (``0`` first trains the dense model);
    ``train_epoch(model)`` runs one epoch; ``validate(model)`` returns the validation
    loss (lower is better). After each level the best epoch's weights are restored and
    ``on_level(amount, model)`` is called (export, evaluate, save...).
    """
    torch = _torch()
    if not isinstance(patience, int) or patience < 1:
        raise CompressError(f"prune_finetune patience = {patience!r} is out of range: allowed an integer >= 1")
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise CompressError(f"prune_finetune max_epochs = {max_epochs!r} is out of range: allowed an integer >= 1")
    amounts = [check_amount(a, f"amounts[{i}]") for i, a in enumerate(amounts)]
    if any(b < a for a, b in zip(amounts, amounts[1:])):
        raise CompressError(f"prune_finetune amounts = {amounts} must not decrease: masks only accumulate")
    results = []
    for amount in amounts:
        if amount > 0:
            pruner.prune(amount)
        best, best_state, wait, losses = float("inf"), copy.deepcopy(model.state_dict()), 0, []
        for _ in range(max_epochs):
            train_epoch(model)
            loss = float(validate(model))
            losses.append(loss)
            if loss < best - min_delta:
                best, best_state, wait = loss, copy.deepcopy(model.state_dict()), 0
            else:
                wait += 1
                if wait >= patience:
                    break
        model.load_state_dict(best_state)
        results.append(LevelResult(amount, len(losses), best, losses))
        if on_level is not None:
            with torch.no_grad():
                on_level(amount, model)
    return results
