"""Tiny random ONNX models for the compression tests, and onnxruntime as their oracle."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hlsinf.host import onnxruntime_session


def sequential(layers, input_shape=(2, 3, 6, 6), seed=0, opset=13):
    """A chain of layers with random parameters.

    Layer specs: ``("conv", out, pad[, bias[, stride]])``, ``("bn",)``, ``("relu",)``, ``("sigmoid",)``,
    ``("maxpool",)``, ``("gap",)``, ``("flatten",)``, ``("gemm", out[, transB[, with_c]])``.
    Conv kernels are 3x3. Nodes are named ``conv0``, ``bn1``... by position.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, channels = "x", input_shape[1]
    features = None

    def param(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    for i, spec in enumerate(layers):
        kind, y = spec[0], f"t{i}"
        name = f"{kind}{i}"
        if kind == "conv":
            out, pad = spec[1], spec[2]
            bias = spec[3] if len(spec) > 3 else True
            stride = spec[4] if len(spec) > 4 else 1
            inputs = [x, param(f"{name}.w", rng.normal(0, 0.5, (out, channels, 3, 3)))]
            if bias:
                inputs.append(param(f"{name}.b", rng.normal(0, 0.5, out)))
            nodes.append(helper.make_node("Conv", inputs, [y], name=name, kernel_shape=[3, 3], pads=[pad] * 4,
                                          strides=[stride] * 2))
            channels = out
        elif kind == "bn":
            nodes.append(helper.make_node(
                "BatchNormalization",
                [x, param(f"{name}.scale", rng.uniform(0.5, 1.5, channels)), param(f"{name}.B", rng.normal(0, 1, channels)),
                 param(f"{name}.mean", rng.normal(0, 1, channels)), param(f"{name}.var", rng.uniform(0.5, 2, channels))],
                [y], name=name, epsilon=1e-5))
        elif kind in ("relu", "sigmoid"):
            nodes.append(helper.make_node(kind.capitalize(), [x], [y], name=name))
        elif kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [x], [y], name=name, kernel_shape=[2, 2], strides=[2, 2]))
        elif kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [y], name=name))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [y], name=name, axis=1))
        elif kind == "gemm":
            out = spec[1]
            trans_b = spec[2] if len(spec) > 2 else 1
            with_c = spec[3] if len(spec) > 3 else True
            features = _features(nodes, inits, x, input_shape, opset)
            shape = (out, features) if trans_b else (features, out)
            inputs = [x, param(f"{name}.B", rng.normal(0, 0.3, shape))]
            if with_c:
                inputs.append(param(f"{name}.C", rng.normal(0, 0.3, out)))
            nodes.append(helper.make_node("Gemm", inputs, [y], name=name, transB=trans_b, alpha=0.7, beta=1.3))
        else:
            raise ValueError(kind)
        x = y
    return _model(nodes, inits, x, input_shape, opset)


def _model(nodes, inits, output, input_shape, opset):
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model).graph
    model.graph.output[0].CopyFrom(next(vi for vi in (*inferred.output, *inferred.value_info) if vi.name == output))
    onnx.checker.check_model(model)
    return model


def _features(nodes, inits, x, input_shape, opset):
    """Width of tensor ``x`` in a partial graph (for sizing a Gemm)."""
    partial = onnx.shape_inference.infer_shapes(_model(list(nodes), list(inits), x, input_shape, opset))
    for vi in (*partial.graph.output, *partial.graph.value_info):
        if vi.name == x:
            return vi.type.tensor_type.shape.dim[1].dim_value
    raise AssertionError(x)


def run(model, x):
    sess = onnxruntime_session(model)           # QDQ models: exact integer products on every CPU
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def init(model, name):
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def set_init(model, name, value):
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))


def zero_weights(model, conv_name, channels, keep_bias=True):
    """Zero the weights (and unless ``keep_bias``, the bias) of some output channels, in place."""
    node = next(n for n in model.graph.node if n.name == conv_name)
    w = init(model, node.input[1]).copy()
    w[list(channels)] = 0
    set_init(model, node.input[1], w)
    if not keep_bias and len(node.input) > 2:
        b = init(model, node.input[2]).copy()
        b[list(channels)] = 0
        set_init(model, node.input[2], b)
    return model


def conv_channels(model):
    """Output channels of each Conv, by name."""
    return {n.name: init(model, n.input[1]).shape[0] for n in model.graph.node if n.op_type == "Conv"}
