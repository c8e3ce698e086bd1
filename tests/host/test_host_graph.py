"""ONNX import, and the CPU path (the imported graph exported back to ONNX and run in
onnxruntime, as the plan's CPU partitions are) against onnxruntime on the original float graphs."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.host.cpu import evaluate
from hlsinf.host import GraphError, load_model


def _model(nodes, inits, in_shape, opset=17):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


RNG = np.random.default_rng(7)
F = lambda *s: RNG.normal(size=s).astype(np.float32)  # noqa: E731

CASES = {
    "conv_group_dilation_stride": ([helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[2, 1],
                                                     dilations=[1, 2], pads=[1, 0, 2, 1])],
                                   {"w": F(4, 2, 3, 2)}, [1, 4, 9, 8]),
    "conv_same_upper": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                        {"w": F(5, 3, 3, 3), "b": F(5)}, [1, 3, 7, 6]),
    "maxpool_ceil_pads": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                            pads=[1, 1, 0, 0], ceil_mode=1)], {}, [1, 2, 8, 7]),
    "avgpool_exclude_pad": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1])], {}, [1, 2, 7, 7]),
    "avgpool_include_pad": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                                              count_include_pad=1)], {}, [1, 2, 5, 5]),
    "bn_relu_gap": ([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["t"], epsilon=1e-3),
                     helper.make_node("Relu", ["t"], ["u"]),
                     helper.make_node("GlobalAveragePool", ["u"], ["y"])],
                    {"s": F(3), "b": F(3), "m": F(3), "v": np.abs(F(3)) + 0.1}, [1, 3, 5, 4]),
    "flatten_gemm_softmax": ([helper.make_node("Flatten", ["x"], ["f"]),
                              helper.make_node("Gemm", ["f", "w", "b"], ["g"], transB=1, alpha=0.5, beta=2.0),
                              helper.make_node("Softmax", ["g"], ["y"])],
                             {"w": F(6, 24), "b": F(6)}, [1, 2, 3, 4]),
    "resize_concat_add": ([helper.make_node("Resize", ["x", "", "sc"], ["r"], mode="nearest"),
                           helper.make_node("Concat", ["r", "r"], ["c"], axis=1),
                           helper.make_node("Add", ["c", "k"], ["y"])],
                          {"sc": np.array([1, 1, 2, 3], np.float32), "k": F(1, 4, 1, 1)}, [1, 2, 3, 2]),
    "reshape_matmul_clip": ([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                             helper.make_node("MatMul", ["r", "w"], ["m"]),
                             helper.make_node("Clip", ["m", "lo", "hi"], ["y"])],
                            {"shape": np.array([1, -1], np.int64), "w": F(12, 5),
                             "lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}, [1, 3, 2, 2]),
    "qdq_per_channel": ([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
                         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
                        {"s": np.array([0.01, 0.02, 0.05], np.float32), "z": np.array([0, 5, -3], np.int8)},
                        [1, 3, 4, 4]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_path_matches_onnxruntime(case):
    nodes, inits, shape = CASES[case]
    model = _model(nodes, inits, shape)
    x = F(*shape)
    graph = load_model(model)
    got = evaluate(graph, x)["y"]
    want = _ort(model, x)
    assert got.shape == want.shape == graph.shapes["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_import_infers_every_shape_and_fixes_the_batch():
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
                    helper.make_node("Relu", ["c"], ["y"])], {"w": F(5, 3, 3, 3)}, ["N", 3, 9, 7])
    graph = load_model(model)
    assert graph.shapes["x"] == (1, 3, 9, 7)
    assert graph.shapes["c"] == graph.shapes["y"] == (1, 5, 5, 4)
    assert load_model(model, input_shape=(2, 3, 9, 7)).shapes["y"] == (2, 5, 5, 4)


def test_unsupported_operator_names_node_and_operator():
    # an ONNX operator (opset 20) that onnxruntime's CPU provider does not implement
    model = _model([helper.make_node("ImageDecoder", ["x"], ["y"], name="my_decoder")], {}, [3, 3], opset=20)
    with pytest.raises(GraphError, match=r"node 'my_decoder': operator ImageDecoder is not supported"):
        load_model(model)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(GraphError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(GraphError, match="bad.onnx"):
        load_model(bad)


def test_wrong_input_shape_is_rejected():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {}, [1, 3, 4, 4])
    with pytest.raises(GraphError, match=r"dimension 2 differs"):
        load_model(model, input_shape=(1, 3, 5, 4))
