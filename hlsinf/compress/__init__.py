"""Model compression for the accelerator: structured pruning, channel removal, BN folding.

The passes work on ONNX models (``onnx.ModelProto`` or a path) and return a new model
plus a report; none modifies its input:

* :func:`fold_batchnorm` folds BatchNormalization into the preceding Conv;
* :func:`prune` zeroes whole Conv output channels by L1 or L2 norm, per layer or globally;
* :func:`remove_channels` deletes zeroed channels and folds their constant output into the
  next layer's bias (SIMPLIFY's method);
* :mod:`hlsinf.compress.finetune` is the PyTorch loop hook for iterative prune-and-fine-tune.

:func:`compress` chains them and quantises with the host's post-training quantiser.
Command line: ``python -m hlsinf.compress MODEL.onnx -o OUT.onnx --prune 0.5``.
"""

from hlsinf.compress._model import CompressError
from hlsinf.compress.fold import FoldReport, fold_batchnorm
from hlsinf.compress.prune import CRITERIA, SCOPES, PruneReport, channel_scores, prunable_convs, prune, select_channels
from hlsinf.compress.remove import RemovalReport, remove_channels
from hlsinf.compress.pipeline import CompressReport, compress, parameter_bytes

__all__ = ["CompressError", "CRITERIA", "SCOPES", "CompressReport", "FoldReport", "PruneReport", "RemovalReport",
           "channel_scores", "compress", "fold_batchnorm", "parameter_bytes", "prunable_convs", "prune",
           "remove_channels", "select_channels"]
