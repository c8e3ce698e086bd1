"""Operators the accelerator does not take run on the CPU as onnxruntime runs them: every
attribute of Resize (mode, coordinate transformation, nearest mode, axes), ConvTranspose,
and the ones the project's old numpy operators never had."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice, Session, onnxruntime_session, to_fpga

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
RNG = np.random.default_rng(7)


def _run_both(nodes, inits, in_shape, opset):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    x = RNG.uniform(-1, 1, in_shape).astype(np.float32)
    plan = to_fpga(model, CFG)
    got = Session(plan, ReferenceDevice(CFG)).run(x)["y"]
    want = onnxruntime_session(model).run(None, {"x": x})[0]
    return got, want


RESIZES = {
    "nearest_asymmetric_floor": dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "nearest_half_pixel_round_prefer_ceil": dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                                 nearest_mode="round_prefer_ceil"),
    "linear_align_corners": dict(mode="linear", coordinate_transformation_mode="align_corners"),
    "linear_half_pixel": dict(mode="linear", coordinate_transformation_mode="half_pixel"),
    "cubic_pytorch_half_pixel": dict(mode="cubic", coordinate_transformation_mode="pytorch_half_pixel"),
}


@pytest.mark.parametrize("name", RESIZES)
def test_resize_follows_every_attribute(name):
    """Scale 1.5 x 2.5 (not integers), so the attributes change the result."""
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **RESIZES[name])]
    got, want = _run_both(nodes, {"scales": np.array([1, 1, 1.5, 2.5], np.float32)}, [1, 3, 6, 5], 13)
    assert got.shape == want.shape == (1, 3, 9, 12)
    np.testing.assert_array_equal(got, want)


def test_resize_with_axes_opset_18():
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest", axes=[2, 3])]
    got, want = _run_both(nodes, {"scales": np.array([2, 3], np.float32)}, [1, 2, 4, 4], 18)
    assert got.shape == (1, 2, 8, 12)
    np.testing.assert_array_equal(got, want)


def test_conv_transpose_runs_on_the_cpu():
    w = RNG.uniform(-1, 1, (3, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", strides=[2, 2], pads=[1, 1, 0, 0],
                              output_padding=[1, 1])]
    got, want = _run_both(nodes, {"w": w}, [1, 3, 5, 5], 13)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
