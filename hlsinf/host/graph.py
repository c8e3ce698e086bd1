"""A small graph IR for ONNX models: nodes in topological order, constant tensors, static shapes.

The host never works on ``onnx.ModelProto`` directly: importing once into plain Python
objects (numpy initializers, dict attributes, one shape per tensor) keeps the planner and
the CPU operators free of protobuf details, and checks up front that every operator can
run somewhere, so an unsupported node fails at import with its name, not mid-inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GraphError", "Node", "Graph", "load_model", "fold_batchnorm", "to_onnx"]


class GraphError(ValueError):
    """The model cannot be imported or run; the message names the file, node or tensor."""


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]            #: "" marks an omitted optional input
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def __str__(self):
        return f"node {self.name!r} ({self.op})"


@dataclass
class Graph:
    """An imported model. ``shapes``/``dtypes`` cover every tensor (inputs, initializers, node outputs)."""

    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    opset: int = 13
    name: str = "model"

    def producer(self, tensor: str) -> Node | None:
        return self._producers().get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        return self._consumers().get(tensor, [])

    def _producers(self):
        if not hasattr(self, "_prod"):
            self._prod = {o: n for n in self.nodes for o in n.outputs}
        return self._prod

    def _consumers(self):
        if not hasattr(self, "_cons"):
            cons: dict[str, list[Node]] = {}
            for n in self.nodes:
                for i in n.inputs:
                    if i:
                        cons.setdefault(i, []).append(n)
            self._cons = cons
        return self._cons

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor (an initializer), else None."""
        return self.initializers.get(tensor)


_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 4: np.uint16, 12: np.uint32}


def _attr_value(attr):
    from onnx import helper, numpy_helper
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims") and hasattr(value, "data_type"):      # TensorProto
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def load_model(model, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Import an ONNX model (path or ``ModelProto``) with static shapes.

    Symbolic dimensions of the graph input are fixed from ``input_shape`` (else 1, the
    batch of one the planner works on), then ONNX shape inference gives every tensor its
    shape. Raises :class:`GraphError` for a missing file, an unsupported operator (naming
    the node) or a tensor whose shape stays unknown.
    """
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    from hlsinf.host.cpu import operator_problem

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise GraphError(f"model file {str(path)!r} does not exist")
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # protobuf raises several types
            raise GraphError(f"model file {str(path)!r} is not a readable ONNX model: {e}") from e
        name = path.stem
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        name = proto.graph.name or "model"

    g = proto.graph
    init_names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in init_names]
    if len(real_inputs) != 1:
        raise GraphError(f"the model has {len(real_inputs)} graph inputs ({[i.name for i in real_inputs]}); "
                         "the host runs models with exactly one input")
    inp = real_inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if input_shape is not None:
        if len(input_shape) != len(dims):
            raise GraphError(f"input {inp.name!r} has {len(dims)} dimensions in the model, "
                             f"the given shape {tuple(input_shape)} has {len(input_shape)}")
        for k, (d, v) in enumerate(zip(dims, input_shape)):
            if d.HasField("dim_value") and d.dim_value != v:
                raise GraphError(f"input {inp.name!r} has shape "
                                 f"{tuple(x.dim_value if x.HasField('dim_value') else x.dim_param for x in dims)} "
                                 f"in the model; got {tuple(input_shape)} (dimension {k} differs)")
    for k, d in enumerate(dims):
        if not d.HasField("dim_value"):
            value = 1 if input_shape is None else int(input_shape[k])
            d.Clear()
            d.dim_value = value
    for o in g.output:   # leave output shapes to inference
        o.type.tensor_type.ClearField("shape")
    del g.value_info[:]

    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)
    for node in g.node:
        problem = operator_problem(node.op_type, node.domain, opset)
        if problem:
            nm = node.name or node.output[0]
            raise GraphError(f"node {nm!r}: operator {node.domain + '.' if node.domain else ''}{node.op_type} "
                             f"is not supported: {problem}")
    # Shape inference serialises the model: large weights go in as typed inputs instead (only
    # their shapes matter), which keeps a VGG16 import to a second.
    initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    small = [t for t in g.initializer if int(np.prod(t.dims)) <= 1024]
    large = [t for t in g.initializer if int(np.prod(t.dims)) > 1024]
    del g.initializer[:]
    g.initializer.extend(small)
    for t in large:
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        inferred = shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as e:
        raise GraphError(f"ONNX shape inference failed on {name!r}: {e}") from e

    nodes = []
    for k, n in enumerate(inferred.graph.node):
        attrs = {a.name: _attr_value(a) for a in n.attribute}
        nm = n.name or f"{n.op_type}_{k}"
        if n.op_type == "Constant":   # constants become initializers
            if "value" not in attrs:
                raise GraphError(f"node {nm!r} (Constant): only the 'value' attribute is supported")
            initializers[n.output[0]] = np.asarray(attrs["value"])
            continue
        nodes.append(Node(nm, n.op_type, list(n.input), list(n.output), attrs))

    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, np.dtype] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
        if tt.elem_type in _ONNX_DTYPES:
            dtypes[vi.name] = np.dtype(_ONNX_DTYPES[tt.elem_type])
    for t, v in initializers.items():
        shapes[t] = tuple(v.shape)
        dtypes[t] = v.dtype
    for n in nodes:
        for o in n.outputs:
            if o and o not in shapes:
                raise GraphError(f"node {n.name!r} ({n.op}): the shape of output {o!r} is unknown after "
                                 "shape inference (is a shape computed at run time?)")
    return Graph(nodes, initializers, [inp.name], [o.name for o in g.output], shapes, dtypes, opset, name)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold ``Conv -> BatchNormalization`` (float weights, constant statistics) into the Conv."""
    nodes, inits = [], dict(graph.initializers)
    removed = set()
    by_name = {}
    for node in graph.nodes:
        if node.op == "BatchNormalization":
            conv = graph.producer(node.inputs[0])
            params = [inits.get(i) for i in node.inputs[1:5]]
            if (conv is not None and conv.op == "Conv" and len(graph.consumers(conv.outputs[0])) == 1
                    and conv.outputs[0] not in graph.outputs and conv.inputs[1] in inits
                    and all(p is not None for p in params) and len(node.outputs) == 1
                    and (len(conv.inputs) < 3 or not conv.inputs[2] or conv.inputs[2] in inits)):
                scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)
                k = scale / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
                w = inits[conv.inputs[1]].astype(np.float64) * k.reshape(-1, 1, 1, 1)
                b0 = inits[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] else 0.0
                b = (b0 - mean) * k + bias
                wname, bname = f"{conv.name}_bnfolded_w", f"{conv.name}_bnfolded_b"
                inits[wname] = w.astype(np.float32)
                inits[bname] = b.astype(np.float32)
                new = Node(conv.name, "Conv", [conv.inputs[0], wname, bname], [node.outputs[0]], dict(conv.attrs))
                by_name[conv.name] = new
                removed.add(node.name)
    for node in graph.nodes:
        if node.name in removed:
            continue
        nodes.append(by_name.get(node.name, node))
    used = {i for n in nodes for i in n.inputs}
    inits = {k: v for k, v in inits.items() if k in used}
    shapes = {k: v for k, v in graph.shapes.items()}
    for k, v in inits.items():
        shapes[k] = v.shape
    return Graph(nodes, inits, list(graph.inputs), list(graph.outputs), shapes, dict(graph.dtypes),
                 graph.opset, graph.name)


def to_onnx(graph: Graph):
    """Export the IR back to an ``onnx.ModelProto`` (what :func:`quantize` writes)."""
    from onnx import helper, numpy_helper

    def attr(v):
        return numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v

    nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **{k: attr(v) for k, v in n.attrs.items()})
             for n in graph.nodes]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.initializers.items()]
    inv = {np.dtype(v): k for k, v in _ONNX_DTYPES.items()}

    def info(t):
        return helper.make_tensor_value_info(t, inv[graph.dtypes.get(t, np.dtype(np.float32))], list(graph.shapes[t]))

    g = helper.make_graph(nodes, graph.name, [info(t) for t in graph.inputs], [info(t) for t in graph.outputs], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(13, graph.opset))],
                              producer_name="hlsinf.host")
    model.ir_version = 8
    return model
