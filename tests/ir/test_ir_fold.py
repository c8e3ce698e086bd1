"""The shared BatchNormalization fold on the IR, against onnxruntime (the models of the compression fold tests)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compress.compress_models import run, sequential
from hlsinf.ir import FoldReport, GraphError, fold_batchnorm, load_model, to_onnx

LAYERS = {
    "two BNs": [("conv", 5, 1), ("bn",), ("relu",), ("conv", 4, 0), ("bn",)],
    "conv without bias": [("conv", 5, 0, False), ("bn",), ("relu",)],
}
X = np.random.default_rng(0).normal(0, 1, (2, 3, 6, 6))


@pytest.mark.parametrize("static", [True, False], ids=["static (host)", "editable (compress)"])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_fold_keeps_outputs(case, static):
    model = sequential(LAYERS[case])
    graph = load_model(model, static=static)
    report = FoldReport()
    folded = fold_batchnorm(graph, report=report)
    assert [n.op for n in folded.nodes].count("BatchNormalization") == 0
    assert report.folded == [(f"bn{i}", f"conv{i - 1}") for i, l in enumerate(LAYERS[case]) if l[0] == "bn"]
    assert [n.op for n in graph.nodes].count("BatchNormalization") == len(report.folded)   # input untouched
    np.testing.assert_allclose(run(to_onnx(folded), X), run(model, X), rtol=1e-5, atol=1e-5)
    if case == "conv without bias":
        assert folded.nodes[0].inputs[2] == "conv0_bias" and folded.dtypes["conv0_bias"] == np.float32


def test_bn_not_after_conv_is_left_with_the_reason_or_raises():
    graph = load_model(sequential([("conv", 3, 1), ("relu",), ("bn",)]))
    report = FoldReport()
    assert [n.op for n in fold_batchnorm(graph, report=report).nodes] == ["Conv", "Relu", "BatchNormalization"]
    assert report.left == [("bn2", "BatchNormalization node 'bn2' follows Relu node 'relu1', not a Conv")]
    with pytest.raises(GraphError, match="bn2.*follows Relu node 'relu1'"):
        fold_batchnorm(graph, strict=True)


def _conv_bn_model(shared_weight):
    """Two Conv -> BatchNormalization whose statistics are one initializer set (exporters deduplicate
    equal constants), the Convs optionally sharing their weight too."""
    rng = np.random.default_rng(2)
    P = lambda name, a: numpy_helper.from_array(np.asarray(a, np.float32), name)  # noqa: E731
    inits = [P("w", rng.normal(0, .5, (3, 3, 3, 3))), P("w1", rng.normal(0, .5, (3, 3, 3, 3))),
             P("s", rng.uniform(.5, 1.5, 3)), P("B", rng.normal(0, 1, 3)), P("m", rng.normal(0, 1, 3)),
             P("v", rng.uniform(.5, 2, 3))]
    stats = ["s", "B", "m", "v"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c0", *stats], ["b0"], name="bn0"),
             helper.make_node("Relu", ["b0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w" if shared_weight else "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c1", *stats], ["y"], name="bn1")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("shared_weight", [False, True])
def test_shared_parameters_are_read_not_rewritten(shared_weight):
    model = _conv_bn_model(shared_weight)
    graph = load_model(model, static=False)
    report = FoldReport()
    folded = fold_batchnorm(graph, report=report)
    assert report.folded == [("bn0", "conv0"), ("bn1", "conv1")] and not report.left
    np.testing.assert_allclose(run(to_onnx(folded), X), run(model, X), rtol=1e-5, atol=1e-5)
    weights = [n.inputs[1] for n in folded.nodes if n.op == "Conv"]
    if shared_weight:   # conv0 gets a new weight; conv1, then the only reader of "w", rewrites it
        assert weights == ["conv0_weight", "w"]
    else:               # unshared weights are rewritten in place, under their own names
        assert weights == ["w", "w1"]


def test_chained_batchnorms_both_fold():
    """Conv -> BN -> BN: once the first is folded the second follows the Conv, and folds too."""
    model = sequential([("conv", 4, 1), ("bn",), ("bn",), ("relu",)])
    report = FoldReport()
    folded = fold_batchnorm(load_model(model), report=report)
    assert report.folded == [("bn1", "conv0"), ("bn2", "conv0")]
    np.testing.assert_allclose(run(to_onnx(folded), X), run(model, X), rtol=1e-5, atol=1e-5)
