"""Channel removal against onnxruntime: the slimmer model computes what the pruned model computes."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compress.compress_models import conv_channels, init, run, sequential, set_init, zero_weights
from hlsinf.compress import CompressError, remove_channels


def random_input(model, seed=1):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).normal(0, 1, shape)


def assert_same_outputs(a, b, seed=1):
    x = random_input(a, seed)
    ya, yb = run(a, x), run(b, x)
    assert ya.shape == yb.shape
    np.testing.assert_allclose(yb, ya, rtol=1e-5, atol=1e-5)


STRUCTURES = {
    "conv-relu-conv pad0": [("conv", 6, 1), ("relu",), ("conv", 4, 0), ("relu",)],
    "conv-relu-conv pad1": [("conv", 6, 0), ("relu",), ("conv", 4, 1), ("relu",)],
    "conv-sigmoid-conv pad0": [("conv", 6, 1), ("sigmoid",), ("conv", 4, 0), ("relu",)],
    "conv-sigmoid-conv pad1": [("conv", 6, 1), ("sigmoid",), ("conv", 4, 1), ("relu",)],
    "conv-bn-conv pad1": [("conv", 6, 1), ("bn",), ("conv", 4, 1), ("relu",)],
    "conv-bn-relu-conv pad0": [("conv", 6, 1), ("bn",), ("relu",), ("conv", 4, 0), ("relu",)],
    "conv-bn-relu-pool-conv pad1": [("conv", 6, 1), ("bn",), ("relu",), ("maxpool",), ("conv", 4, 1), ("relu",)],
    "conv-flatten-gemm": [("conv", 6, 1), ("relu",), ("flatten",), ("gemm", 5, 1)],
    "conv-pool-flatten-gemm transB0": [("conv", 6, 1), ("relu",), ("maxpool",), ("flatten",), ("gemm", 5, 0)],
    "conv-flatten-gemm no C": [("conv", 6, 1), ("sigmoid",), ("flatten",), ("gemm", 5, 1, False)],
    "conv-gap-flatten-gemm": [("conv", 6, 1), ("bn",), ("gap",), ("flatten",), ("gemm", 5, 1)],
    "conv no bias-conv pad1": [("conv", 6, 1, False), ("sigmoid",), ("conv", 4, 1), ("relu",)],
    "conv-sigmoid-conv pad1 stride2": [("conv", 6, 1), ("sigmoid",), ("conv", 4, 1, True, 2), ("relu",)],
    "conv-sigmoid-conv pad0 stride2": [("conv", 6, 1), ("sigmoid",), ("conv", 4, 0, True, 2), ("relu",)],
}


@pytest.mark.parametrize("keep_bias", [False, True], ids=["pruned bias", "bias kept"])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_removal_keeps_outputs(name, keep_bias):
    """Zero-weight channels (constant act(bias) images) leave exactly, borders included."""
    pruned = zero_weights(sequential(STRUCTURES[name], seed=len(name)), "conv0", [0, 2, 3], keep_bias=keep_bias)
    slim, report = remove_channels(pruned)
    assert_same_outputs(pruned, slim)
    assert conv_channels(slim)["conv0"] < 6
    assert report.layers[0].channels_after == conv_channels(slim)["conv0"]


def test_zero_constants_always_leave():
    """A pruned channel (weights and bias 0) before ReLU is 0 everywhere: it goes even before padding."""
    pruned = zero_weights(sequential(STRUCTURES["conv-relu-conv pad1"]), "conv0", [1, 4, 5], keep_bias=False)
    slim, report = remove_channels(pruned)
    assert conv_channels(slim)["conv0"] == 3
    assert report.layers[0].removed == [1, 4, 5] and report.layers[0].kept_constant == []
    assert init(slim, "conv2.w").shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(init(slim, "conv2.w"), init(pruned, "conv2.w")[:, [0, 2, 3]])
    assert_same_outputs(pruned, slim)


def test_nonzero_constants_before_padding_merge_into_one_channel():
    """sigmoid(b) is never 0, and the next Conv pads: three constant channels become one, exactly."""
    pruned = zero_weights(sequential(STRUCTURES["conv-sigmoid-conv pad1"]), "conv0", [0, 2, 3])
    slim, report = remove_channels(pruned)
    assert conv_channels(slim)["conv0"] == 6 - 3 + 1
    assert len(report.layers[0].kept_constant) == 1
    for seed in range(3):
        assert_same_outputs(pruned, slim, seed)


def test_nonzero_constants_without_padding_fold_into_bias():
    pruned = zero_weights(sequential(STRUCTURES["conv-sigmoid-conv pad0"]), "conv0", [0, 2, 3])
    slim, _ = remove_channels(pruned)
    assert conv_channels(slim)["conv0"] == 3
    # The folded bias, computed here by hand: sigmoid(b_c) times the tap sum of W_next.
    b0, w2 = init(pruned, "conv0.b").astype(np.float64), init(pruned, "conv2.w").astype(np.float64)
    expected = init(pruned, "conv2.b") + sum(w2[:, c].sum(axis=(1, 2)) / (1 + np.exp(-b0[c])) for c in (0, 2, 3))
    np.testing.assert_allclose(init(slim, "conv2.b"), expected, rtol=1e-6)


def test_cascade_empties_the_next_layer():
    """Removing every input a channel of the next conv reads makes that channel constant too."""
    model = sequential([("conv", 4, 1), ("relu",), ("conv", 5, 0), ("relu",), ("conv", 3, 0)], input_shape=(1, 2, 8, 8))
    zero_weights(model, "conv0", [0, 1], keep_bias=False)
    w2 = init(model, "conv2.w").copy()
    w2[1, 2:] = 0  # output channel 1 of conv2 reads only the soon-removed inputs 0 and 1
    set_init(model, "conv2.w", w2)
    slim, _ = remove_channels(model)
    assert conv_channels(slim) == {"conv0": 2, "conv2": 4, "conv4": 3}
    assert_same_outputs(model, slim)


def fan_out_model(branch_a, branch_b, pad_b, seed=3):
    """conv0 feeding two Convs: ``branch_a`` ops then a pad-1 Conv, ``branch_b`` ops then a pad-``pad_b`` Conv."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)
             for name, shape in (("w0", (6, 2, 3, 3)), ("b0", (6,)), ("wa", (3, 6, 3, 3)), ("ba", (3,)),
                                 ("wb", (4, 6, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", kernel_shape=[3, 3], pads=[1] * 4)]
    for branch, ops in (("a", branch_a), ("b", branch_b)):
        t = "c0"
        for i, op in enumerate(ops):
            nodes.append(helper.make_node(op, [t], [f"path_{branch}{i}"], name=f"{op}_{branch}{i}"))
            t = f"path_{branch}{i}"
        if branch == "a":
            nodes.append(helper.make_node("Conv", [t, "wa", "ba"], ["ya"], name="conva", kernel_shape=[3, 3], pads=[1] * 4))
        else:
            nodes.append(helper.make_node("Conv", [t, "wb"], ["yb"], name="convb", kernel_shape=[3, 3], pads=[pad_b] * 4))
    side = 5 - 2 + 2 * pad_b
    graph = helper.make_graph(nodes, "fan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("ya", TensorProto.FLOAT, [1, 3, 5, 5]),
                               helper.make_tensor_value_info("yb", TensorProto.FLOAT, [1, 4, side, side])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def assert_same_outputs_all(a, b):
    import onnxruntime as ort
    x = random_input(a).astype(np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
            for m in (a, b)]
    for ya, yb in zip(*outs):
        np.testing.assert_allclose(yb, ya, rtol=1e-5, atol=1e-5)


def test_fan_out_to_padded_and_unpadded_convs():
    """One Conv feeding two Convs (pad 1 and pad 0) through Sigmoids: every use stays exact."""
    model = zero_weights(fan_out_model(["Sigmoid"], ["Sigmoid"], pad_b=0), "conv0", [1, 2, 5])
    slim, report = remove_channels(model)
    assert conv_channels(slim)["conv0"] == 4 and len(report.layers[0].kept_constant) == 1
    assert_same_outputs_all(model, slim)


def test_constant_that_vanishes_on_one_padded_path_stays():
    """A constant -0.5 is 0 after ReLU on one padded path and -0.5 on the other: it cannot stand for the
    others on both paths, so (being the only constant channel) it stays as it is."""
    model = zero_weights(fan_out_model(["Relu"], ["Identity"], pad_b=1), "conv0", [2])
    b = init(model, "b0").copy()
    b[2] = -0.5
    set_init(model, "b0", b)
    slim, report = remove_channels(model)
    assert conv_channels(slim)["conv0"] == 6 and report.layers[0].kept_constant == [2]
    assert_same_outputs_all(model, slim)
    # With a second constant channel that is nonzero on both paths, that one represents both.
    zero_weights(model, "conv0", [4])
    b[4] = 0.7
    set_init(model, "b0", b)
    slim, report = remove_channels(model)
    assert conv_channels(slim)["conv0"] == 5 and report.layers[0].kept_constant == [4]
    assert_same_outputs_all(model, slim)


def test_all_channels_zero_keeps_one():
    model = zero_weights(sequential([("conv", 3, 1), ("relu",), ("conv", 2, 0), ("relu",)]), "conv0", [0, 1, 2])
    slim, _ = remove_channels(model)
    assert conv_channels(slim)["conv0"] == 1
    assert_same_outputs(model, slim)


def test_nothing_to_remove_is_identity():
    model = sequential(STRUCTURES["conv-bn-conv pad1"])
    slim, report = remove_channels(model)
    assert conv_channels(slim) == conv_channels(model)
    assert_same_outputs(model, slim)


def test_unsupported_consumer_is_named():
    model = sequential([("conv", 4, 1), ("relu",), ("conv", 4, 1)], input_shape=(1, 2, 5, 5))
    add = helper.make_node("Add", ["t1", "t2"], ["sum"], name="residual_add")
    model.graph.node.append(add)
    model.graph.output[0].name = "sum"
    zero_weights(model, "conv0", [1])
    with pytest.raises(CompressError, match="residual_add") as e:
        remove_channels(model)
    assert "conv0" in str(e.value)
    slim, report = remove_channels(model, strict=False)
    assert conv_channels(slim)["conv0"] == 4 and "residual_add" in report.layers[0].note


def test_model_without_conv_is_rejected():
    model = sequential([("flatten",), ("gemm", 3, 1)], input_shape=(1, 2, 3, 3))
    with pytest.raises(CompressError, match="no Conv"):
        remove_channels(model)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CompressError, match="nothere.onnx"):
        remove_channels(tmp_path / "nothere.onnx")


def test_opset_17_models():
    model = zero_weights(sequential(STRUCTURES["conv-bn-relu-pool-conv pad1"], opset=17), "conv0", [1, 3], keep_bias=False)
    slim, _ = remove_channels(model)
    assert slim.opset_import[0].version == 17
    assert_same_outputs(model, slim)


def test_parameters_behind_identity_and_constant_nodes():
    """As torch.onnx.export(do_constant_folding=False) writes them: Identity(initializer), Constant."""
    model = zero_weights(sequential(STRUCTURES["conv-relu-conv pad0"]), "conv0", [0, 5])
    conv0, conv2 = model.graph.node[0], model.graph.node[2]
    model.graph.node.insert(0, helper.make_node("Identity", ["conv0.w"], ["conv0.w.id"], name="param_id"))
    conv0.input[1] = "conv0.w.id"
    bias = next(t for t in model.graph.initializer if t.name == "conv2.b")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["conv2.b.const"], name="param_const", value=bias))
    model.graph.initializer.remove(bias)
    conv2.input[2] = "conv2.b.const"
    onnx.checker.check_model(model)
    slim, _ = remove_channels(model)
    assert conv_channels(slim)["conv0"] == 4
    assert [n.op_type for n in slim.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    assert_same_outputs(model, slim)


def test_initializers_listed_as_graph_inputs():
    """keep_initializers_as_inputs-style models: the inputs naming parameters go, the data input stays."""
    model = zero_weights(sequential(STRUCTURES["conv-relu-conv pad0"]), "conv0", [2])
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)))
    slim, _ = remove_channels(model)
    assert [i.name for i in slim.graph.input] == ["x"]
    assert conv_channels(slim)["conv0"] == 5
    assert_same_outputs(model, slim)
