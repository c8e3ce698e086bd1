"""``load_model`` for the host: the shared IR's static import, every operator checked against
what the host can run.

The IR (:mod:`hlsinf.ir`) knows nothing about what the host can execute. Every operator the
host meets runs on the CPU in onnxruntime unless the accelerator takes it, so a node is
supported when onnxruntime's CPU provider has a kernel for it
(:func:`hlsinf.host.cpu.operator_problem`); an unsupported node fails at import with its
name, not mid-inference.
"""

from __future__ import annotations

from hlsinf.host.cpu import operator_problem
from hlsinf.ir import Graph
from hlsinf.ir import load_model as _load_model

__all__ = ["load_model"]


def load_model(model, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Import an ONNX model (path or ``ModelProto``) with static shapes (see :func:`hlsinf.ir.load_model`).

    Symbolic dimensions of the graph input are fixed from ``input_shape`` (else 1). Raises
    :class:`~hlsinf.ir.GraphError` for a missing file, an unsupported operator (naming the
    node) or a tensor whose shape stays unknown.
    """
    return _load_model(model, input_shape, ops=operator_problem)
