"""The whole compression pipeline: fold BatchNormalization, prune, remove channels, quantise.

Quantisation is the host's post-training quantiser (:func:`hlsinf.host.quantize`): the
compressed float model plus a calibration batch become the QDQ model the accelerator
runs (int8 weights, int32 bias, per-channel multiplier and shift); nothing is duplicated
here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from hlsinf.compress._model import CompressError, compress_errors
from hlsinf.compress.fold import FoldReport, fold_batchnorm
from hlsinf.compress.prune import PruneReport, check_amount, prune as prune_pass
from hlsinf.compress.remove import RemovalReport, remove_channels
from hlsinf.ir import read_model

__all__ = ["CompressReport", "compress", "parameter_bytes"]


def parameter_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer (weights, biases, and for QDQ models scales and zero points)."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


@dataclass
class CompressReport:
    fold: FoldReport
    prune: PruneReport | None
    removal: RemovalReport
    bytes_before: int
    bytes_after: int
    quantized: bool = False

    def __str__(self):
        lines = []
        if self.fold.folded:
            lines.append("folded " + ", ".join(f"{bn} into {conv}" for bn, conv in self.fold.folded))
        for bn, why in self.fold.left:
            lines.append(f"not folded: {bn}: {why}")
        if self.prune is not None:
            lines.append(str(self.prune))
        lines.append(str(self.removal))
        lines.append(f"parameters: {self.bytes_before} bytes before, {self.bytes_after} bytes after"
                     + (" (quantised)" if self.quantized else ""))
        return "\n".join(lines)


@compress_errors
def compress(model, *, amount=None, scope: str = "layer", criterion: str = "l1", layers=None,
             fold_bn: bool = True, calibration: np.ndarray | None = None, kernel=None,
             act_signed: bool | None = None) -> tuple[onnx.ModelProto, CompressReport]:
    """Fold BN, prune ``amount`` (if given), remove zeroed channels, and quantise if ``calibration`` is given.

    ``kernel`` (a :class:`~hlsinf.config.KernelConfig`) sets the activation format of the
    quantiser. Returns the float compressed model, or the QDQ model when quantised.
    """
    if amount is not None and not isinstance(amount, dict):
        check_amount(amount)
    model = read_model(model)
    before = parameter_bytes(model)
    fold_report = FoldReport()
    if fold_bn:
        model, fold_report = fold_batchnorm(model)
    prune_report = None
    if amount is not None:
        model, prune_report = prune_pass(model, amount, scope=scope, criterion=criterion, layers=layers)
    # Not strict: zero channels the pass cannot remove (e.g. before a residual Add) stay, and the
    # report says why; the pruning pass itself only prunes Convs whose channels can be removed.
    model, removal = remove_channels(model, strict=False)
    quantized = calibration is not None
    if quantized:
        model = quantize(model, calibration, kernel, act_signed=act_signed)
    return model, CompressReport(fold_report, prune_report, removal, before, parameter_bytes(model), quantized)


def quantize(model: onnx.ModelProto, calibration: np.ndarray, kernel=None, *, act_signed=None) -> onnx.ModelProto:
    """The host's post-training quantiser, with its errors turned into :class:`CompressError`."""
    try:
        from hlsinf.host import quantize as host_quantize
    except ImportError as e:
        raise CompressError(f"quantisation needs the host package hlsinf.host, which is not available ({e})") from None
    calibration = np.asarray(calibration)
    if calibration.ndim == 0 or not np.issubdtype(calibration.dtype, np.number):
        raise CompressError(f"calibration batch must be a numeric N x C x H x W array, got {calibration.dtype} "
                            f"of shape {calibration.shape}")
    try:
        return host_quantize(model, calibration.astype(np.float32), kernel, act_signed=act_signed)
    except ValueError as e:  # QuantError, GraphError: the message names the layer or tensor
        raise CompressError(f"quantisation failed: {e}") from None
