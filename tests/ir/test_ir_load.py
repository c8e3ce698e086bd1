"""The shared IR's import and export: errors that name the file, static and editable imports, write-back."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compress.compress_models import run, sequential
from hlsinf.compress import CompressError, prune
from hlsinf.host import load_model as host_load_model
from hlsinf.ir import GraphError, load_model, read_model, to_onnx


def _model(nodes, inits, in_shape, inputs=("x",)):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(i, TensorProto.FLOAT, in_shape) for i in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("static", [True, False])
def test_file_errors_name_the_file(tmp_path, static):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(GraphError, match=r"model file '.*missing\.onnx' does not exist"):
        load_model(missing, static=static)
    with pytest.raises(GraphError, match=r"model file '.*folder' is not a file"):
        (tmp_path / "folder").mkdir()
        load_model(tmp_path / "folder", static=static)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(GraphError, match=r"model file '.*bad\.onnx' is not a readable ONNX model"):
        load_model(str(bad), static=static)


def test_host_and_compress_report_the_irs_file_errors_as_their_own(tmp_path):
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(GraphError, match="missing.onnx' does not exist"):
        host_load_model(missing)
    with pytest.raises(CompressError, match="missing.onnx' does not exist") as e:
        prune(missing, 0.5)
    assert isinstance(e.value, GraphError) and isinstance(e.value, ValueError)


def test_static_import_errors():
    relu = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    with pytest.raises(GraphError, match="2 graph inputs"):
        load_model(_model([helper.make_node("Add", ["x", "z"], ["y"])], {}, [1, 2], inputs=("x", "z")))
    with pytest.raises(GraphError, match=r"dimension 1 differs"):
        load_model(_model(relu, {}, [1, 3]), input_shape=(1, 4))
    with pytest.raises(GraphError, match=r"node 'r': operator Relu is not supported: supported operators: Add"):
        load_model(_model(relu, {}, [1, 3]), ops={"Add"})
    with pytest.raises(ValueError, match="static"):
        load_model(_model(relu, {}, [1, 3]), input_shape=(1, 3), static=False)


def test_imports_never_modify_the_callers_model():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 3])
    before = model.SerializeToString()
    assert load_model(model).shapes["x"] == (1, 3)
    assert load_model(model, static=False).shapes["x"] == (None, 3)
    read_model(model).graph.name = "changed"
    assert model.SerializeToString() == before


def test_editable_import_turns_constants_into_initializers_and_writes_back_the_same_model():
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_copy"]),
             helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.arange(4, dtype=np.float32))),
             helper.make_node("Conv", ["x", "w_copy", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = _model(nodes, {"w": w}, ["N", 3, 5, 5])
    model.producer_name = "exporter"
    g = load_model(model, static=False)
    assert [n.op for n in g.nodes] == ["Conv", "Relu"]
    assert [n.name for n in g.nodes] == ["Conv_2", "Relu_3"]          # unnamed nodes named by position
    assert set(g.initializers) == {"w", "w_copy", "b"} and g.shapes["c"] == (None, 4, 5, 5)
    out = to_onnx(g)
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(out))
    assert out.producer_name == "exporter" and out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 5))
    np.testing.assert_array_equal(run(out, x), run(model, x))


def test_editable_round_trip_keeps_attribute_types():
    model = sequential([("conv", 4, 1), ("relu",), ("maxpool",)])
    g = load_model(model, static=False)
    g.nodes[0].attrs["pads"] = []            # an empty list has no type of its own: the imported one is used
    attr = {a.name: a for a in to_onnx(g).graph.node[0].attribute}["pads"]
    assert attr.type == onnx.AttributeProto.INTS and list(attr.ints) == []
