"""One ONNX graph IR for the host runtime and the compression passes.

* :mod:`hlsinf.ir.graph`: :class:`Node`, :class:`Graph` (queries and edits), :class:`GraphError`;
* :mod:`hlsinf.ir.onnx_io`: :func:`read_model` (a path or ``ModelProto``, errors naming the
  file), :func:`load_model` (static import for running, editable import for rewriting),
  :func:`to_onnx`;
* :mod:`hlsinf.ir.fold`: :func:`fold_batchnorm` and its :class:`FoldReport`.

It sits below both users: it imports numpy and onnx, never ``hlsinf.host`` or
``hlsinf.compress``. Who needs an operator table passes it in (``load_model(ops=...)``).
"""

from hlsinf.ir.graph import Graph, GraphError, Node, describe, through_identity
from hlsinf.ir.onnx_io import load_model, read_model, to_onnx
from hlsinf.ir.fold import FoldReport, fold_batchnorm

__all__ = ["Graph", "GraphError", "Node", "describe", "load_model", "read_model", "to_onnx", "FoldReport",
           "fold_batchnorm", "through_identity"]
