"""ONNX in and out of the IR: reading a model file, importing it (static or editable), exporting it.

Two imports share one reader and one node conversion:

* static (``load_model(model, input_shape)``, what the host runs): exactly one graph input,
  its symbolic dimensions fixed, every tensor's shape known after ONNX shape inference, and
  optionally every operator checked against a table (``ops``) *before* inference, so an
  unsupported node fails with its name rather than as a shape-inference error;
* editable (``load_model(model, static=False)``, what the compression passes rewrite):
  the model as declared (symbolic dimensions stay, unknown dimensions are ``None``),
  ``Constant`` nodes and ``Identity`` copies of initializers turned into initializers so
  that every parameter can be rewritten, and the ``ModelProto`` kept around the graph so
  :func:`to_onnx` writes back the same opsets, metadata and declared inputs and outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hlsinf.ir.graph import Graph, GraphError, Node

__all__ = ["read_model", "load_model", "to_onnx"]

_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 4: np.uint16, 12: np.uint32}

#: Initializers larger than this go into shape inference as typed inputs (only their shapes matter;
#: serialising VGG16's weights for inference would take far longer than the inference).
_INFER_INLINE = 1024


def read_model(model):
    """The ``onnx.ModelProto`` of a path (loaded) or of a ``ModelProto`` (a copy: the caller's is never modified).

    Raises :class:`GraphError` naming the file when it is missing or not an ONNX model.
    """
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto
    name = os.fspath(model)
    path = Path(name)
    if not path.exists():
        raise GraphError(f"model file {name!r} does not exist")
    if not path.is_file():
        raise GraphError(f"model file {name!r} is not a file")
    try:
        return onnx.load(name)
    except Exception as e:  # protobuf raises several types
        raise GraphError(f"model file {name!r} is not a readable ONNX model: {e}") from e


def _attr(attr):
    from onnx import helper, numpy_helper
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims") and hasattr(value, "data_type"):      # TensorProto
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _node(n, name: str) -> Node:
    return Node(name, n.op_type, list(n.input), list(n.output), {a.name: _attr(a) for a in n.attribute},
                n.domain if n.domain not in ("", "ai.onnx") else "", {a.name: a.type for a in n.attribute})


def _infer(proto, **options):
    """ONNX shape inference of ``proto`` (edited in place) with the large initializers passed as typed inputs."""
    from onnx import helper, shape_inference

    g = proto.graph
    small = [t for t in g.initializer if int(np.prod(t.dims)) <= _INFER_INLINE]
    large = [t for t in g.initializer if int(np.prod(t.dims)) > _INFER_INLINE]
    declared = {i.name for i in g.input}
    del g.initializer[:]
    g.initializer.extend(small)
    for t in large:
        if t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return shape_inference.infer_shapes(proto, **options)


def _types(inferred, static: bool):
    shapes: dict[str, tuple] = {}
    dtypes: dict[str, np.dtype] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            if not static or None not in dims:
                shapes[vi.name] = dims
        if tt.elem_type in _ONNX_DTYPES:
            dtypes[vi.name] = np.dtype(_ONNX_DTYPES[tt.elem_type])
    return shapes, dtypes


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)


def load_model(model, input_shape: tuple[int, ...] | None = None, *, ops=None, static: bool = True) -> Graph:
    """Import an ONNX model (path or ``ModelProto``, never modified) into a :class:`Graph`.

    Static (the default): symbolic dimensions of the one graph input are fixed from
    ``input_shape`` (else 1, a batch of one), then ONNX shape inference gives every tensor
    its shape. Editable (``static=False``): see the module docstring. ``ops`` (any
    container of operator names) is the operator table the caller supports; a node of
    another operator or domain is refused.

    Raises :class:`GraphError` for a missing or unreadable file, an unsupported operator
    (naming the node), and for a static import also a model without exactly one input, an
    ``input_shape`` that contradicts the model and a tensor whose shape stays unknown.
    """
    proto = read_model(model)
    name = Path(os.fspath(model)).stem if isinstance(model, (str, os.PathLike)) else (proto.graph.name or "model")
    if static:
        return _static(proto, name, input_shape, ops)
    if input_shape is not None:
        raise ValueError("input_shape fixes dimensions: it needs a static import")
    _check_ops(proto, ops)
    return _editable(proto, name)


def _check_ops(proto, ops):
    """Refuse the first node ``ops`` does not support, naming it. ``ops`` is a container of
    operator names, or a function ``(op, domain, opset) -> None | reason``."""
    if ops is None:
        return
    opset = _opset(proto)
    for node in proto.graph.node:
        if callable(ops):
            problem = ops(node.op_type, node.domain, opset)
        elif node.domain not in ("", "ai.onnx") or node.op_type not in ops:
            problem = f"supported operators: {', '.join(sorted(ops))}"
        else:
            problem = None
        if problem:
            nm = node.name or node.output[0]
            raise GraphError(f"node {nm!r}: operator {node.domain + '.' if node.domain else ''}{node.op_type} "
                             f"is not supported: {problem}")


#: Operators never folded even with constant inputs: the planner reads the quantisation of
#: a weight from its DequantizeLinear node, so those must stay nodes.
_KEEP_AS_NODES = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _fold_constants(proto) -> int:
    """Replace every node whose inputs are all constant by initializers of its outputs; how many.

    Exporters leave arithmetic on constants in the graph: ``torch.onnx.export`` with
    ``do_constant_folding=False`` computes a Resize's scales as ``Concat(Constant, Constant)``
    and passes weights and shared biases through ``Identity``. Shape inference cannot see
    through that (the Resize's output shape stays unknown), and the planner wants parameters
    as initializers. Each node is evaluated on its own with ONNX's reference evaluator, in
    graph order, so chains fold too; graph outputs, nodes with subgraphs and the
    quantisation nodes the planner reads (:data:`_KEEP_AS_NODES`) stay.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = proto.graph
    constant = {t.name for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    kept, folded = [], 0
    for node in g.node:
        foldable = (node.domain in ("", "ai.onnx") and node.op_type not in _KEEP_AS_NODES
                    and all(not i or i in constant for i in node.input)
                    and not graph_outputs & set(node.output)
                    and not any(a.type in (5, 10) for a in node.attribute))      # GRAPH, GRAPHS
        if not foldable:
            kept.append(node)
            continue
        if node.op_type == "Identity":
            source = next(t for t in g.initializer if t.name == node.input[0])
            values = [numpy_helper.to_array(source)]
        else:
            inputs = [i for i in node.input if i]
            feeds = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name in inputs}
            single = helper.make_model(
                helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output],
                                  [numpy_helper.from_array(feeds[i], i) for i in dict.fromkeys(inputs)]),
                opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
            try:
                values = ReferenceEvaluator(single).run(None, {})
            except Exception as e:
                raise GraphError(f"node {node.name or node.output[0]!r} ({node.op_type}): its inputs are constant "
                                 f"but it could not be evaluated: {e}") from e
        for out, value in zip(node.output, values):
            g.initializer.append(numpy_helper.from_array(np.asarray(value), out))
            constant.add(out)
        folded += 1
    del g.node[:]
    g.node.extend(kept)
    return folded


def _static(proto, name: str, input_shape, ops) -> Graph:
    from onnx import numpy_helper

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
    _check_ops(proto, ops)

    _fold_constants(proto)
    initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    try:
        inferred = _infer(proto, strict_mode=True, data_prop=True)
    except Exception as e:
        raise GraphError(f"ONNX shape inference failed on {name!r}: {e}") from e

    nodes = []
    for k, n in enumerate(inferred.graph.node):
        node = _node(n, n.name or f"{n.op_type}_{k}")
        if n.op_type == "Constant":   # constants become initializers
            if "value" not in node.attrs:
                raise GraphError(f"node {node.name!r} (Constant): only the 'value' attribute is supported")
            initializers[n.output[0]] = np.asarray(node.attrs["value"])
            continue
        nodes.append(node)

    shapes, dtypes = _types(inferred, static=True)
    for t, v in initializers.items():
        shapes[t] = tuple(v.shape)
        dtypes[t] = v.dtype
    for n in nodes:
        for o in n.outputs:
            if o and o not in shapes:
                raise GraphError(f"node {n.name!r} ({n.op}): the shape of output {o!r} is unknown after "
                                 "shape inference (is a shape computed at run time?)")
    return Graph(nodes, initializers, [inp.name], [o.name for o in g.output], shapes, dtypes, _opset(proto), name)


def _editable(proto, name: str) -> Graph:
    from onnx import numpy_helper

    g = proto.graph
    initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    if proto.ir_version >= 4:
        # Old exporters also list initializers as graph inputs (keep_initializers_as_inputs);
        # their declared shapes would contradict rewritten parameters.
        for vi in [vi for vi in g.input if vi.name in initializers]:
            g.input.remove(vi)
    outputs = [o.name for o in g.output]
    nodes = []
    for k, n in enumerate(g.node):
        node = _node(n, n.name or f"{n.op_type}_{k}")
        out = n.output[0] if n.output else ""
        # Constant nodes and Identity copies of initializers become initializers: exporters emit
        # both (torch.onnx.export(do_constant_folding=False) wraps every parameter in an Identity),
        # and the passes need parameters they can rewrite.
        if out and out not in outputs:
            if n.op_type == "Constant" and node.attrs.get("value") is not None:
                initializers[out] = np.asarray(node.attrs["value"])
                continue
            if n.op_type == "Identity" and n.input[0] in initializers:
                initializers[out] = initializers[n.input[0]]
                continue
        nodes.append(node)
    inputs = [i.name for i in g.input if i.name not in initializers]

    annotations = list(g.value_info)
    source = type(proto)()
    source.CopyFrom(proto)
    del source.graph.node[:], source.graph.initializer[:], source.graph.value_info[:]
    graph = Graph(nodes, initializers, inputs, outputs, {}, {}, _opset(proto), name, source)
    # Shapes of the graph as the passes see it (constants already initializers); the
    # model's own annotations help where inference alone cannot tell.
    model = to_onnx(graph)
    model.graph.value_info.extend(annotations)
    try:
        inferred = _infer(model)
    except Exception:   # the passes only need the shapes inference can give
        inferred = model
    graph.shapes, graph.dtypes = _types(inferred, static=False)
    for t, v in initializers.items():
        graph.shapes[t] = tuple(v.shape)
        graph.dtypes[t] = v.dtype
    return graph


def _to_proto(n: Node):
    from onnx import helper, numpy_helper

    node = helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain or None)
    for k, v in sorted(n.attrs.items()):    # sorted, as helper.make_node writes them
        if v is None:
            continue
        if isinstance(v, np.ndarray):
            v = numpy_helper.from_array(v)
        # the imported type decides only for a list (an empty one has no type of its own)
        kind = n.attr_types.get(k) if isinstance(v, (list, tuple)) else None
        node.attribute.append(helper.make_attribute(k, v, attr_type=kind))
    return node


def to_onnx(graph: Graph):
    """Export the IR to an ``onnx.ModelProto``.

    An editable import is written back into its own model (opsets, IR version, metadata,
    the declared inputs and outputs); a graph built in Python (what
    :func:`hlsinf.host.quantize` writes) gets a fresh model with opset
    ``max(13, graph.opset)`` and input/output types from ``graph.shapes``/``graph.dtypes``.
    """
    from onnx import helper, numpy_helper

    nodes = [_to_proto(n) for n in graph.nodes]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.initializers.items()]
    inv = {np.dtype(v): k for k, v in _ONNX_DTYPES.items()}

    def info(t):
        shape = graph.shapes.get(t)
        return helper.make_tensor_value_info(t, inv[graph.dtypes.get(t, np.dtype(np.float32))],
                                             None if shape is None else list(shape))

    if graph.source is None:
        g = helper.make_graph(nodes, graph.name, [info(t) for t in graph.inputs], [info(t) for t in graph.outputs],
                              inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(13, graph.opset))],
                                  producer_name="hlsinf.host")
        model.ir_version = 8
        return model

    model = type(graph.source)()
    model.CopyFrom(graph.source)
    g = model.graph
    declared_in = {vi.name: vi for vi in graph.source.graph.input}
    declared_out = {vi.name: vi for vi in graph.source.graph.output}
    # declared order; initializers stay listed as inputs in models of IR version < 4
    inputs = [vi for t, vi in declared_in.items() if t in graph.inputs or t in graph.initializers]
    inputs += [info(t) for t in graph.inputs if t not in declared_in]
    outputs = [declared_out[t] if t in declared_out else info(t) for t in graph.outputs]
    del g.input[:], g.output[:], g.node[:], g.initializer[:], g.value_info[:]
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model
