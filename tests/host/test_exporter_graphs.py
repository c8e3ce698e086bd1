"""Graphs as torch's exporter writes them, not as the project builds them.

``torch.onnx.export(do_constant_folding=False)`` leaves arithmetic on constants in the
graph (a Resize's scales as ``Concat(Constant, Constant)``, parameters behind ``Identity``);
the host folds it on import, so both exports of one network plan and run the same.
"""

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice, Session, load_model, onnxruntime_session, to_fpga

torch = pytest.importorskip("torch")
CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)


def _tiny_unet():
    """Encoder conv+BN+ReLU, max pool, conv, nearest 2x upsampling, skip concatenation, convs."""
    nn = torch.nn
    torch.manual_seed(0)

    class TinyUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.dec = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            skip = self.enc1(x)
            deep = self.enc2(nn.functional.max_pool2d(skip, 2))
            return self.head(self.dec(torch.cat([self.up(deep), skip], 1)))

    model = TinyUNet().eval()
    with torch.no_grad():                       # non-trivial batch-norm statistics
        model.enc1[1].running_mean.uniform_(-0.2, 0.2)
        model.enc1[1].running_var.uniform_(0.5, 2.0)
    return model


def _export(model, folding: bool) -> onnx.ModelProto:
    f = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), f, opset_version=13, dynamo=False,
                      do_constant_folding=folding)
    return onnx.load_from_string(f.getvalue())


def test_unet_exported_without_constant_folding_plans_and_runs_like_the_folded_export():
    model = _tiny_unet()
    unfolded, folded = _export(model, False), _export(model, True)
    assert [n.op_type for n in unfolded.graph.node].count("Constant") >= 2          # the scales, as written
    rng = np.random.default_rng(1)
    calibration = rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    x = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    plans = [to_fpga(m, CFG, calibration=calibration) for m in (unfolded, folded)]
    convs = [n.op_type for n in folded.graph.node].count("Conv")
    assert [len(p.fpga_layers) for p in plans] == [convs, convs]          # every conv, the last (output) one too
    outs = [Session(p, ReferenceDevice(CFG)).run(x)[p.graph.outputs[0]] for p in plans]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)    # torch folds BN in float itself
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(outs[0] - want).max() < 0.05 * np.abs(want).max()       # int8 against float


def test_resize_scales_from_concatenated_constants_are_folded_before_shape_inference():
    """Concat(Constant, Constant) -> Resize: the output shape is known after import, and the
    folded graph computes what onnxruntime computes on the original."""
    nodes = [
        helper.make_node("Constant", [], ["roi"], value=numpy_helper.from_array(np.zeros(0, np.float32))),
        helper.make_node("Constant", [], ["s_nc"], value=numpy_helper.from_array(np.ones(2, np.float32))),
        helper.make_node("Constant", [], ["s_hw"], value=numpy_helper.from_array(np.full(2, 2, np.float32))),
        helper.make_node("Concat", ["s_nc", "s_hw"], ["scales"], axis=0, name="scales_concat"),
        helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", name="up"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = load_model(model)
    assert g.shapes["y"] == (1, 3, 8, 10)
    assert [n.op for n in g.nodes] == ["Resize"] and "scales" in g.initializers
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)
    plan = to_fpga(model, CFG)
    got = Session(plan, ReferenceDevice(CFG)).run(x)["y"]
    np.testing.assert_array_equal(got, onnxruntime_session(model).run(None, {"x": x})[0])
