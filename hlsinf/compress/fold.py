"""BatchNormalization folding as a compression pass: the IR's fold (:func:`hlsinf.ir.fold_batchnorm`)
on a model, with its report.

``W' = s * W`` and ``b' = s * (b - mean) + beta`` per output channel, ``s = scale /
sqrt(var + eps)``; the host's planner and quantiser run the same fold on their graphs.
"""

from __future__ import annotations

import onnx

from hlsinf.compress._model import compress_errors, load, save
from hlsinf.ir import FoldReport
from hlsinf.ir import fold_batchnorm as _fold

__all__ = ["FoldReport", "fold_batchnorm"]


@compress_errors
def fold_batchnorm(model, *, strict: bool = False) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every BatchNormalization that directly follows a Conv into that Conv.

    ``model`` is a ``ModelProto`` (not modified) or a path. A BatchNormalization that
    cannot be folded (after another op, a Conv output used twice, training mode...) is
    left in place and listed in the report, or raises :class:`CompressError` with
    ``strict``.
    """
    report = FoldReport()
    return save(_fold(load(model), strict=strict, report=report)), report
