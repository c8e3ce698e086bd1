"""A small editable view of an ONNX graph shared by the compression passes.

The passes read and rewrite initializers (weights, biases, BatchNormalization
parameters) as numpy arrays and need to know who consumes a tensor; this module keeps
that bookkeeping in one place so each pass only states its own rule.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

__all__ = ["CompressError", "Graph", "load_model"]


class CompressError(ValueError):
    """A compression pass cannot handle its input; the message names the node or parameter."""


def load_model(model) -> onnx.ModelProto:
    """Accept a ``ModelProto`` (copied, never modified) or a path to an ``.onnx`` file."""
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model)
    try:
        return onnx.load(str(model))
    except FileNotFoundError:
        raise CompressError(f"model file {str(model)!r} does not exist") from None
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not a model
        raise CompressError(f"model file {str(model)!r} is not a readable ONNX model: {e}") from None


class Graph:
    """Editable view of ``model.graph`` (the model is edited in place: pass a copy)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        for i, node in enumerate(self.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{i}"
        self._inits = {t.name: t for t in self.graph.initializer}
        self._shapes = None
        self._constants_to_initializers()
        if model.ir_version >= 4:
            # Old exporters also list initializers as graph inputs (keep_initializers_as_inputs);
            # their declared shapes would contradict the rewritten parameters.
            for vi in [vi for vi in self.graph.input if vi.name in self._inits]:
                self.graph.input.remove(vi)

    def _constants_to_initializers(self):
        """Turn ``Constant`` nodes and ``Identity`` copies of initializers into initializers.

        Exporters emit both (``torch.onnx.export(do_constant_folding=False)`` wraps every
        parameter in an Identity); the passes need parameters they can rewrite.
        """
        for node in list(self.graph.node):
            out = node.output[0] if node.output else ""
            if not out or self.is_graph_output(out):
                continue
            if node.op_type == "Constant" and self.attr(node, "value") is not None:
                tensor = numpy_helper.to_array(self.attr(node, "value"))
            elif node.op_type == "Identity" and node.input[0] in self._inits:
                tensor = self.array(node.input[0])
            else:
                continue
            self.graph.node.remove(node)
            self.graph.initializer.append(numpy_helper.from_array(tensor, out))
            self._inits[out] = self.graph.initializer[-1]

    # Nodes and tensors ----------------------------------------------------------------------

    @staticmethod
    def describe(node: onnx.NodeProto) -> str:
        return f"{node.op_type} node {node.name!r}"

    def nodes(self, op_type: str | None = None) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if op_type is None or n.op_type == op_type]

    def node(self, name: str) -> onnx.NodeProto:
        for n in self.graph.node:
            if n.name == name:
                return n
        raise CompressError(f"no node named {name!r} in the graph; "
                            f"Conv nodes are {[n.name for n in self.nodes('Conv')]}")

    def consumers(self, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
        """Every ``(node, input index)`` reading ``tensor``."""
        return [(n, i) for n in self.graph.node for i, name in enumerate(n.input) if name == tensor]

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.graph.output)

    def use_count(self, tensor: str) -> int:
        return len(self.consumers(tensor)) + self.is_graph_output(tensor)

    def remove_node(self, node: onnx.NodeProto):
        self.graph.node.remove(node)

    # Attributes --------------------------------------------------------------------------------

    @staticmethod
    def attr(node: onnx.NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    # Initializers ------------------------------------------------------------------------------

    def has_array(self, name: str) -> bool:
        return name in self._inits

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self._inits[name])

    def set_array(self, name: str, value: np.ndarray):
        """Replace an initializer's data, keeping its element type."""
        old = self._inits[name]
        dtype = numpy_helper.to_array(old).dtype
        new = numpy_helper.from_array(np.asarray(value).astype(dtype), name)
        old.CopyFrom(new)

    def add_array(self, hint: str, value: np.ndarray) -> str:
        """Add an initializer under a fresh name based on ``hint``; return the name."""
        taken = set(self._inits) | {t for n in self.graph.node for t in (*n.input, *n.output)}
        name, k = hint, 1
        while name in taken:
            name, k = f"{hint}_{k}", k + 1
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self._inits[name] = self.graph.initializer[-1]
        return name

    def drop_unused_initializers(self):
        used = {t for n in self.graph.node for t in n.input} | {o.name for o in self.graph.output}
        for t in list(self.graph.initializer):
            if t.name not in used:
                self.graph.initializer.remove(t)
                del self._inits[t.name]

    def parameter(self, node: onnx.NodeProto, index: int, what: str, required: bool = True):
        """Input ``index`` of ``node`` as an array; it must be an initializer (or absent if optional)."""
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise CompressError(f"{self.describe(node)} has no {what} (input {index})")
            return None
        name = node.input[index]
        if not self.has_array(name):
            raise CompressError(f"{self.describe(node)}: its {what} {name!r} is computed in the graph, "
                                f"not a constant initializer, so the pass cannot rewrite it")
        return self.array(name)

    # Shapes ---------------------------------------------------------------------------------------

    def shape(self, tensor: str) -> tuple | None:
        """Static shape of ``tensor`` from ONNX shape inference (``None`` for unknown dims)."""
        if self._shapes is None:
            inferred = shape_inference.infer_shapes(self.model)
            g = inferred.graph
            self._shapes = {}
            for vi in (*g.input, *g.value_info, *g.output):
                if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                    dims = vi.type.tensor_type.shape.dim
                    self._shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        return self._shapes.get(tensor)

    def finish(self) -> onnx.ModelProto:
        """Drop stale shape annotations, re-infer them and check the edited model."""
        # Graph outputs keep their declared shapes: the passes never change a graph output.
        del self.graph.value_info[:]
        self.drop_unused_initializers()
        model = shape_inference.infer_shapes(self.model)
        onnx.checker.check_model(model)
        self._shapes = None
        return model
