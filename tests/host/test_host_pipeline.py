"""Whole networks through to_fpga on the reference device, against onnxruntime.

* QDQ models written by onnxruntime's ``quantize_static`` (uint8 and int8 activations,
  per-channel and per-tensor weights): every quantised tensor the plan produces matches
  onnxruntime's own execution of the same QDQ model to within 1 LSB on >= 99.9 % of values.
* Float models quantised by the library (``quantize`` + calibration): onnxruntime runs the
  resulting QDQ model the same way, and the float model agrees on top-1 and within a few
  output LSBs.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import FpgaLayer, Session, quantize, to_fpga
from hlsinf.host.models import small_cnn
from tests.host.ort_reference import ort_run

ort.set_default_logger_severity(3)



def _quantize_static(model, calibration, tmp_path, *, signed, per_channel):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calibration[k:k + 1]} for k in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True})
    return onnx.load(dst)


def _convs(model):
    return sum(n.op_type == "Conv" for n in model.graph.node)


def _quantised_outputs(plan):
    """Every integer tensor an accelerator layer writes (they are all device tensors)."""
    return [s.output for s in plan.steps if isinstance(s, FpgaLayer)]


def _lsb_agreement(plan, qdq_model, x):
    fetch = _quantised_outputs(plan)
    got = Session(plan).run(x, fetch=fetch)
    want = ort_run(qdq_model, x, fetch=fetch)
    diffs = np.concatenate([np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).ravel() for f in fetch])
    return diffs, got, want


def _int16_pair_model():
    """Input Q/DQ (uint8, all 255) -> Conv 3x3 with int8 weights at +-127 -> output Q/DQ (uint8).

    Every pair of neighbouring products is 2 x 255 x 127 = 64770 in magnitude, more than int16
    holds, whatever order a kernel pairs them in."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    s_x, s_y = np.float32(1 / 255), np.float32(0.25)
    s_w = np.full(4, 0.01, np.float32)
    w = np.empty((4, 4, 3, 3), np.int8)
    w[0], w[1] = 127, -127                                   # every pair saturates: + and -
    w[2:] = rng.integers(-127, 128, (2, 4, 3, 3))            # mixed signs
    b = np.array([0, 1_400_000, 20_000, -30_000], np.int32)  # lifts channel 1 back into range
    s_b = (s_x * s_w).astype(np.float32)
    inits = {"s_x": s_x, "z_x": np.uint8(0), "w_q": w, "s_w": s_w, "z_w": np.zeros(4, np.int8),
             "b_q": b, "s_b": s_b, "z_b": np.zeros(4, np.int32), "s_y": s_y, "z_y": np.uint8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["input", "s_x", "z_x"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "s_x", "z_x"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["w_dq"], axis=0),
             helper.make_node("DequantizeLinear", ["b_q", "s_b", "z_b"], ["b_dq"], axis=0),
             helper.make_node("Conv", ["x_dq", "w_dq", "b_dq"], ["conv"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("QuantizeLinear", ["conv", "s_y", "z_y"], ["y_q"]),
             helper.make_node("DequantizeLinear", ["y_q", "s_y", "z_y"], ["y"])]
    graph = helper.make_graph(nodes, "pairs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, w, b, s_x * s_w.astype(np.float64) / s_y


def test_int8_products_beyond_int16_are_exact_on_the_accelerator_and_in_the_onnxruntime_reference():
    """The root cause of a CPU-dependent disagreement with onnxruntime, pinned against int64 numpy.

    ONNX's QLinearConv (what onnxruntime fuses DQ -> Conv -> Q into) accumulates in int32; the
    kernel does. onnxruntime's x86 U8S8 kernels without VNNI (VPMADDUBSW) clamp each pair of
    products to int16 unless the session sets ``session.x64quantprecision``; ``onnxruntime_session``
    does, and the tests' reference is that session."""
    model, w, b, m = _int16_pair_model()
    x = np.ones((1, 4, 5, 5), np.float32)                    # quantises to 255 everywhere
    k = 4 * 3 * 3
    exact = (255 * w.reshape(4, -1).astype(np.int64)).sum(1) + b
    pairs = (255 * w.reshape(4, -1).astype(np.int64)).reshape(4, k // 2, 2).sum(2)
    saturated = np.clip(pairs, -2**15, 2**15 - 1).sum(1) + b

    def requant(acc):
        return np.clip(np.rint(acc * m), 0, 255).astype(np.uint8)

    want = np.broadcast_to(requant(exact).reshape(1, 4, 1, 1), (1, 4, 3, 3))
    assert requant(saturated)[0] < want[0, 0, 0, 0] and requant(saturated)[1] > want[0, 1, 0, 0]  # it matters
    plan = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert len(plan.fpga_layers) == 1, plan.summary()
    np.testing.assert_array_equal(Session(plan).run(x, fetch=["y_q"])["y_q"], want)
    np.testing.assert_array_equal(ort_run(model, x, fetch=["y_q"])["y_q"], want)
    # A default session gives the exact value (VNNI, ARM, ...) or the int16-clamped one of
    # channels 0 and 1 (x86 without VNNI): nothing else, so the clamp is the whole difference.
    m2 = onnx.ModelProto()
    m2.CopyFrom(model)
    m2.graph.output.append(onnx.helper.make_empty_tensor_value_info("y_q"))
    plain = ort.InferenceSession(m2.SerializeToString(), providers=["CPUExecutionProvider"])
    default = plain.run(["y_q"], {"input": x})[0][0, :2, 0, 0]
    assert list(default) in (list(want[0, :2, 0, 0]), list(requant(saturated)[:2])), default


@pytest.mark.parametrize("signed,per_channel", [(False, True), (True, True), (False, False)])
def test_quantize_static_model_matches_onnxruntime_within_one_lsb(tmp_path, signed, per_channel):
    rng = np.random.default_rng(3)
    model = small_cnn(14, 14, seed=1)
    lo = -1.0 if signed else 0.0
    calib = rng.uniform(lo, 1, (8, 3, 14, 14)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, signed=signed, per_channel=per_channel)
    cfg = KernelConfig(cpi=4, cpo=4, act_signed=signed, imax=64, wmax=16, hmax=16)
    plan = to_fpga(qdq, cfg)
    layers = [s for s in plan.steps if isinstance(s, FpgaLayer)]
    assert len(layers) == _convs(model), plan.summary()     # every conv is on the accelerator
    x = rng.uniform(lo, 1, (6, 3, 14, 14)).astype(np.float32)
    diffs, got, want = _lsb_agreement(plan, qdq, x)
    assert diffs.size > 1000
    assert np.mean(diffs <= 1) >= 0.999, f"max diff {diffs.max()}, {np.mean(diffs <= 1):.5f} within 1 LSB"
    assert np.mean(diffs == 0) >= 0.95
    out = plan.graph.outputs[0]
    np.testing.assert_allclose(got[out], want[out], atol=0.05)


def test_library_ptq_runs_in_onnxruntime_and_tracks_the_float_model():
    rng = np.random.default_rng(5)
    model = small_cnn(16, 16, seed=2, bn=True)
    calib = rng.uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    cfg = KernelConfig(cpi=4, cpo=8, imax=64, wmax=16, hmax=16)
    qdq = quantize(model, calib, cfg)
    onnx.checker.check_model(qdq)
    plan = to_fpga(qdq, cfg)
    assert len(plan.fpga_layers) == _convs(model), plan.summary()
    x = rng.uniform(0, 1, (32, 3, 16, 16)).astype(np.float32)
    # the accelerator against onnxruntime executing the library's QDQ model
    diffs, got, want = _lsb_agreement(plan, qdq, x)
    assert np.mean(diffs <= 1) >= 0.999 and np.mean(diffs == 0) >= 0.95
    # against the float model: top-1 agreement and error in output LSBs of the last conv
    out = plan.graph.outputs[0]
    ref = ort_run(model, x)[out]
    assert np.mean(got[out].argmax(1) == ref.argmax(1)) >= 0.9
    last = plan.fpga_layers[-1]
    q_last = got[last.output].astype(np.float64)
    scale = float(plan.graph.initializers[plan.graph.consumers(last.output)[0].inputs[1]])
    float_last = ort_run(model, x, fetch=["avgpool12_out"])["avgpool12_out"]
    err_lsb = np.abs(q_last - float_last / scale)
    # five layers of 8-bit rounding accumulate: on average about one LSB, a few percent of full scale at worst
    print(f"float vs accelerator, last conv: mean {np.mean(err_lsb):.2f} LSB, p99 {np.percentile(err_lsb, 99):.1f}, "
          f"max {err_lsb.max():.1f} (of 255)")
    assert np.mean(err_lsb) < 1.5 and err_lsb.max() < 20, (np.mean(err_lsb), err_lsb.max())


def test_library_ptq_with_int8_activations_takes_negative_inputs():
    rng = np.random.default_rng(6)
    model = small_cnn(12, 12, seed=7)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    cfg = KernelConfig(cpi=4, cpo=4, act_signed=True, imax=64, wmax=16, hmax=16)
    qdq = quantize(model, calib, cfg)
    plan = to_fpga(qdq, cfg)
    assert len(plan.fpga_layers) == _convs(model), plan.summary()
    x = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    diffs, got, _ = _lsb_agreement(plan, qdq, x)
    assert np.mean(diffs <= 1) >= 0.999 and np.mean(diffs == 0) >= 0.95
    first = got[plan.fpga_layers[0].output]
    assert first.dtype == np.int8 and first.min() == 0        # int8 after ReLU
    out = plan.graph.outputs[0]
    assert np.mean(got[out].argmax(1) == ort_run(model, x)[out].argmax(1)) >= 0.75


def test_calibration_argument_of_to_fpga_equals_quantize_then_plan():
    rng = np.random.default_rng(9)
    model = small_cnn(12, 12, seed=4)
    calib = rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    cfg = KernelConfig(cpi=8, cpo=8, imax=64, wmax=16, hmax=16)
    a = to_fpga(model, cfg, calibration=calib)
    b = to_fpga(quantize(model, calib, cfg), cfg)
    x = rng.uniform(0, 1, (3, 3, 12, 12)).astype(np.float32)
    out = a.graph.outputs[0]
    np.testing.assert_array_equal(Session(a).run(x)[out], Session(b).run(x)[out])


def test_negative_activations_in_uint8_get_a_zero_point():
    """A conv whose input may be negative gets an asymmetric uint8 input (zero point from the
    calibrated range, folded into the bias and padded by the host): it runs on the accelerator."""
    rng = np.random.default_rng(1)
    model = small_cnn(12, 12, seed=3)
    calib = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    plan = to_fpga(model, cfg, calibration=calib)
    first = next(s for s in plan.steps if getattr(s, "name", "") == "conv1")
    assert first.device == "accelerator" and 100 < first.in_zero_point.value < 156, first.describe(cfg)
    assert len(plan.fpga_layers) == _convs(model)
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    out = plan.graph.outputs[0]
    ref = ort_run(model, x)[out]
    assert np.mean(Session(plan).run(x)[out].argmax(1) == ref.argmax(1)) >= 0.75


def test_nonzero_input_zero_point_is_folded_into_the_bias_and_padded_by_the_host(tmp_path):
    """uint8 QDQ of an input in [-1, 1] has zero point ~128: the first conv runs on the accelerator
    with -z·sum(w) in its bias and an input the host pads with z (it ran on the CPU before issue 11)."""
    rng = np.random.default_rng(2)
    model = small_cnn(12, 12, seed=5)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, signed=False, per_channel=True)
    plan = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert len(plan.fpga_layers) == _convs(model), plan.summary()
    first = plan.fpga_layers[0]
    assert first.in_zero_point.value in (127, 128) and first.in_zero_point.host_pads == (1, 1, 1, 1)
    assert first.in_shape == (3, 14, 14) and first.pads == (0, 0, 0, 0)
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    diffs, _, _ = _lsb_agreement(plan, qdq, x)
    assert np.mean(diffs <= 1) >= 0.999


def _residual_model():
    """conv -> [conv -> conv] + skip -> Add -> depthwise conv -> GlobalAveragePool -> Gemm: branches,
    a tensor needed by the accelerator and the CPU, and a grouped conv the kernel cannot take."""
    from hlsinf.host.models import ModelBuilder
    b = ModelBuilder("residual", [1, 3, 10, 10], seed=11)
    a = b.conv("input", 8)
    y = b.conv(a, 8)
    y = b.conv(y, 8, relu=False)
    n = "add"
    b.nodes.append(onnx.helper.make_node("Add", [a, y], [n], name=n))
    r = "add_relu"
    b.nodes.append(onnx.helper.make_node("Relu", [n], [r], name=r))
    dw = "dw"
    wdw = b._init("dw_w", b.rng.normal(0, 0.5, (8, 1, 3, 3)))
    b.nodes.append(onnx.helper.make_node("Conv", [r, wdw], [dw], name=dw, group=8, pads=[1, 1, 1, 1]))
    g = b.global_pool(dw)
    f = b.flatten(g, 8)
    return b.build(b.softmax(b.gemm(f, 5)))


def test_branching_network_with_cpu_layers_between_accelerator_layers(tmp_path):
    rng = np.random.default_rng(12)
    model = _residual_model()
    calib = rng.uniform(0, 1, (8, 3, 10, 10)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, signed=True, per_channel=True)
    plan = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, act_signed=True, imax=64, wmax=16, hmax=16))
    text = plan.summary()
    assert len(plan.fpga_layers) == 3, text
    assert "grouped convolution (group=8)" in text
    # the first conv's output feeds the next accelerator layer and the CPU Add: one copy out
    first = plan.fpga_layers[0].output
    assert [s.direction for s in plan.steps if getattr(s, "tensor", None) == first] == ["from_device"]
    # int8 QDQ keeps Relu as DQ -> Relu -> Q at the same scale: absorbed, so conv3 -> conv5 stay on the device
    assert sum(s.device == "transfer" for s in plan.steps) == 3, text
    x = rng.uniform(0, 1, (4, 3, 10, 10)).astype(np.float32)
    diffs, got, want = _lsb_agreement(plan, qdq, x)
    assert np.mean(diffs <= 1) >= 0.999
    out = plan.graph.outputs[0]
    np.testing.assert_allclose(got[out], want[out], atol=0.03)
