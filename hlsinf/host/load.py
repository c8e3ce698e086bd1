"""``load_model`` for the host: the shared IR's static import, every operator checked against the CPU table.

The IR (:mod:`hlsinf.ir`) knows nothing about what the host can execute; the CPU operator
table (:data:`hlsinf.host.cpu_ops.CPU_OPS`) is every operator the host runs somewhere
(the accelerator takes a subset of them, always with a CPU fallback), so an unsupported
node fails at import with its name, not mid-inference.
"""

from __future__ import annotations

from hlsinf.host.cpu_ops import CPU_OPS
from hlsinf.ir import Graph
from hlsinf.ir import load_model as _load_model

__all__ = ["load_model"]


def load_model(model, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Import an ONNX model (path or ``ModelProto``) with static shapes (see :func:`hlsinf.ir.load_model`).

    Symbolic dimensions of the graph input are fixed from ``input_shape`` (else 1). Raises
    :class:`~hlsinf.ir.GraphError` for a missing file, an unsupported operator (naming the
    node) or a tensor whose shape stays unknown.
    """
    return _load_model(model, input_shape, ops=CPU_OPS)
