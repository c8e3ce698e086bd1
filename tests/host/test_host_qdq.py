"""QDQ models as onnxruntime's tools and torch's exporter write them (issue 11).

* ``quantize_static`` with its defaults (int8 activations with zero points) and per-channel
  symmetric: the activation format comes from the model when the kernel leaves it open, the
  other format is mapped exactly (int8 zero point -128 = uint8 zero point 0), zero points go
  into the bias and the host pads with the input's; every conv on the accelerator, each layer
  within 1 LSB of onnxruntime given the same integer input.
* Constants behind ``Identity`` nodes (torch's exporter shares identical initializers, e.g. two
  equal biases, or tied weights, through ``Identity``) and ``Constant`` nodes are constants.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import FpgaLayer, Session, quantize, to_fpga
from hlsinf.host.models import small_cnn
from tests.host.ort_reference import ort_run

ort.set_default_logger_severity(3)



def _lsb(plan, qdq, x):
    """|accelerator - onnxruntime| in LSB over every tensor an accelerator layer writes."""
    fetch = [s.output for s in plan.steps if isinstance(s, FpgaLayer)]
    got, want = Session(plan).run(x, fetch=fetch), ort_run(qdq, x, fetch)
    return np.concatenate([np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).ravel() for f in fetch])


def _layer_by_layer(plan, qdq, x):
    """Each accelerator layer alone, on onnxruntime's own int8/uint8 input to it, against
    onnxruntime's output: ``{layer name: |difference| in LSB}``. The layer is cut out of the QDQ
    model (its integer input tensor becomes the model input) and planned for the same kernel."""
    from onnx.utils import Extractor
    layers = plan.fpga_layers
    want = ort_run(qdq, x, [t for l in layers for t in (l.source, l.output)])
    extractor = Extractor(onnx.shape_inference.infer_shapes(qdq))
    diffs = {}
    for layer in layers:
        sub = to_fpga(extractor.extract_model([layer.source], [layer.output]), plan.cfg)
        assert [l.name for l in sub.fpga_layers] == [layer.name], sub.summary()
        got = Session(sub).run(want[layer.source])[layer.output]
        diffs[layer.name] = np.abs(got.astype(np.int64) - want[layer.output].astype(np.int64))
    return diffs


def torch_style_model(h=10, w=10, seed=0, tied=True):
    """Three 3x3 convs written the way ``torch.onnx.export(..., do_constant_folding=False)`` writes
    them: conv2's bias equals conv1's, so the exporter shares it as ``Identity(c1.bias) -> c2.bias``;
    conv3's weights are tied to conv2's (``Identity(c2.weight) -> c3.weight``; ``tied=False``: its
    own); ReLU6's bounds are ``Constant`` nodes."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (6, 6, 3, 3)).astype(np.float32)
    b1 = np.full(6, 0.1, np.float32)
    b3 = rng.normal(0, 0.05, 6).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("c1.weight", w1), ("c1.bias", b1), ("c2.weight", w2), ("c3.bias", b3))]
    if not tied:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.2, (6, 6, 3, 3)).astype(np.float32), "c3.weight"))
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
    nodes = [helper.make_node("Identity", ["c2.weight"], ["c3.weight"], name="Identity_0")] if tied else []
    nodes += [
        helper.make_node("Identity", ["c1.bias"], ["c2.bias"], name="Identity_1"),
        helper.make_node("Conv", ["input", "c1.weight", "c1.bias"], ["/c1/Conv_output_0"], name="/c1/Conv", **conv),
        helper.make_node("Relu", ["/c1/Conv_output_0"], ["/Relu_output_0"], name="/Relu"),
        helper.make_node("Conv", ["/Relu_output_0", "c2.weight", "c2.bias"], ["/c2/Conv_output_0"], name="/c2/Conv",
                         **conv),
        helper.make_node("Relu", ["/c2/Conv_output_0"], ["/Relu_1_output_0"], name="/Relu_1"),
        helper.make_node("Conv", ["/Relu_1_output_0", "c3.weight", "c3.bias"], ["/c3/Conv_output_0"],
                         name="/c3/Conv", **conv),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["/Constant_1_output_0"], name="/Constant_1",
                         value=numpy_helper.from_array(np.array(6, np.float32))),
        helper.make_node("Clip", ["/c3/Conv_output_0", "/Constant_output_0", "/Constant_1_output_0"],
                         ["/Clip_output_0"], name="/Clip"),
        helper.make_node("Flatten", ["/Clip_output_0"], ["output"], name="/Flatten", axis=1),
    ]
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [1, 3, h, w])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    return model


def test_library_ptq_of_a_torch_style_model_with_shared_initializers():
    """Used to fail with KeyError: 'c2.bias' (the bias is an Identity output, not an initializer)."""
    model = torch_style_model()
    rng = np.random.default_rng(1)
    calib = rng.uniform(0, 1, (6, 3, 10, 10)).astype(np.float32)
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    qdq = quantize(model, calib, cfg)
    onnx.checker.check_model(qdq)
    plan = to_fpga(qdq, cfg)
    assert len(plan.fpga_layers) == 3, plan.summary()
    x = rng.uniform(0, 1, (4, 3, 10, 10)).astype(np.float32)
    assert all(d.max() <= 1 for d in _layer_by_layer(plan, qdq, x).values())
    diffs = _lsb(plan, qdq, x)           # end to end, a 1-LSB difference can grow by one downstream
    assert np.mean(diffs <= 1) >= 0.999 and np.mean(diffs == 0) >= 0.95
    # the float model agrees: ReLU6 (Constant bounds) became the clip of the last layer
    out = plan.graph.outputs[0]
    assert "/Clip" in plan.fpga_layers[-1].nodes and plan.fpga_layers[-1].calls[0].relu
    err = np.abs(Session(plan).run(x)[out] - ort_run(model, x)[out])
    assert err.max() < 0.3 and err.mean() < 0.02, (err.max(), err.mean())     # of 0..6, 8-bit


# quantize_static as it comes: int8 activations with zero points ----------------------------------

def no_relu_cnn(h=16, w=16, seed=0):
    """3x3 convolutions with and without ReLU (so zero points are not at the range's end), padding
    0 and 1, stride 1 and 2, a fused max pool, then GlobalAveragePool and Gemm on the CPU."""
    from hlsinf.host.models import ModelBuilder
    b = ModelBuilder("no_relu_cnn", [1, 3, h, w], seed)
    x = b.conv("input", 8, 3, 1, 1, relu=False)       # pad 1, no ReLU: signed output
    x = b.conv(x, 8, 3, 2, 1)                         # stride 2, input zero point mid-range
    x = b.pool(x, "max")
    x = b.conv(x, 6, 3, 1, 0, relu=False)             # pad 0
    x = b.conv(x, 5, 3, 1, 1)                         # pad 1 after a conv without ReLU
    x = b.flatten(b.global_pool(x), 5)
    return b.build(b.softmax(b.gemm(x, 4)))


def _quantize_static(model, calibration, tmp_path, **kw):
    """onnxruntime.quantization.quantize_static with its defaults unless ``kw`` says otherwise."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calibration[k:k + 1]} for k in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), **kw)
    return onnx.load(dst)


def _per_channel_symmetric():
    from onnxruntime.quantization import QuantFormat, QuantType
    return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=True, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def _convs3x3(model):
    return sum(n.op_type == "Conv" and numpy_helper.to_array(next(
        i for i in model.graph.initializer if i.name == n.input[1])).shape[2:] == (3, 3)
        for n in model.graph.node)


def _report(what, plan, per_layer, diffs):
    allv = np.concatenate([v.ravel() for v in per_layer.values()])
    print(f"{what}: {'int8' if plan.cfg.act_signed else 'uint8'} kernel, {len(plan.fpga_layers)} conv(s) on the "
          f"accelerator; layer by layer max {allv.max()} LSB, {np.mean(allv == 0):.2%} exact of {allv.size}; "
          f"end to end max {diffs.max()} LSB, {np.mean(diffs == 0):.2%} exact, {np.mean(diffs <= 1):.3%} within 1; "
          f"ideal cycles {plan.ideal_cycles()}, {sum(s.device == 'transfer' for s in plan.steps)} transfers")
    return allv


NETWORKS = {"small_cnn": (lambda: small_cnn(14, 14, seed=1), 0.0, 14),           # all ReLU, a 1x1, avg pool
            "no_relu_cnn": (lambda: no_relu_cnn(16, 16, seed=3), -1.0, 16)}     # signed input, convs without ReLU


@pytest.mark.parametrize("format_", ["model", "other"])
@pytest.mark.parametrize("settings", ["defaults", "per_channel_symmetric"])
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_quantize_static_puts_every_conv_on_the_accelerator_within_one_lsb(tmp_path, net, settings, format_):
    """Issue 11: quantize_static with its defaults (int8 activations with zero points, per-tensor
    weights) and per-channel symmetric, planned with only CPI/CPO (the format comes from the
    model: int8) or for a uint8 kernel: every conv on the accelerator, and each layer within 1 LSB
    of onnxruntime given the same integer input."""
    build, lo, size = NETWORKS[net]
    model = build()
    rng = np.random.default_rng(0)
    calib = rng.uniform(lo, 1, (8, 3, size, size)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, **({} if settings == "defaults" else _per_channel_symmetric()))
    kernel = dict(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    if format_ == "other":
        kernel["act_signed"] = False
    plan = to_fpga(qdq, kernel)
    assert plan.cfg.act_signed == (format_ == "model")
    assert ("from the model" in plan.summary()) == (format_ == "model")
    convs = sum(n.op_type == "Conv" for n in qdq.graph.node)
    assert len(plan.fpga_layers) == convs and sum(l.kernel == (3, 3) for l in plan.fpga_layers) == _convs3x3(model)
    x = rng.uniform(lo, 1, (6, 3, size, size)).astype(np.float32)
    per_layer = _layer_by_layer(plan, qdq, x)
    diffs = _lsb(plan, qdq, x)
    allv = _report(f"{net}, quantize_static {settings}", plan, per_layer, diffs)
    assert allv.max() <= 1 and np.mean(allv == 0) >= 0.99
    assert np.mean(diffs <= 1) >= 0.999 and np.mean(diffs == 0) >= 0.98
    out = plan.graph.outputs[0]
    want = ort_run(qdq, x)[out]
    assert np.mean(Session(plan).run(x)[out].argmax(1) == want.argmax(1)) >= 0.8


def test_int8_zero_point_minus_128_is_uint8_zero_point_0_exactly(tmp_path):
    """quantize_static's defaults quantise a ReLU output to int8 with zero point -128: on a uint8
    kernel that is value + 128 with zero point 0, so those layers need no folding and no padding."""
    rng = np.random.default_rng(0)
    model = small_cnn(14, 14, seed=1)
    calib = rng.uniform(0, 1, (8, 3, 14, 14)).astype(np.float32)      # inputs >= 0: zero point -128 too
    qdq = _quantize_static(model, calib, tmp_path)
    plan = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert not plan.cfg.act_signed
    for layer in plan.fpga_layers:
        assert layer.in_zero_point.value == 0 and layer.out_zero_point == 0, layer.describe(plan.cfg)
        assert plan.encodings[layer.output].offset == 128 and plan.encodings[layer.output].zero_point == -128
    assert [s.direction for s in plan.steps if s.device == "transfer"] == ["to_device", "from_device"]
    # the same model on the int8 kernel its type asks for: the zero points are folded (and padded)
    signed = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert signed.cfg.act_signed and all(l.out_zero_point == -128 for l in signed.fpga_layers)
    padded = [l for l in signed.fpga_layers if any(l.in_zero_point.host_pads)]
    assert padded and all(l.in_zero_point.value == -128 for l in padded)
    assert signed.ideal_cycles() > plan.ideal_cycles()


def test_symmetric_int8_after_relu_is_uint8_unchanged(tmp_path):
    """int8 with zero point 0 after a ReLU holds 0..127: a uint8 kernel takes the same values
    (offset 0); a conv without ReLU gets int8 + 128 (zero point 128, folded)."""
    rng = np.random.default_rng(1)
    model = no_relu_cnn(16, 16, seed=3)
    calib = rng.uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, **_per_channel_symmetric())
    plan = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    enc = {l.name: plan.encodings[l.output] for l in plan.fpga_layers}
    assert (enc["conv2"].offset, enc["conv6"].offset) == (0, 0)           # after ReLU: unchanged
    assert (enc["conv1"].offset, enc["conv1"].device_zero_point) == (128, 128)   # no ReLU: shifted
    assert plan.fpga_layers[0].out_zero_point == 128 and plan.fpga_layers[1].in_zero_point.value == 128


def test_host_padding_costs_the_padded_pixels():
    """A non-zero input zero point at padded borders: the host writes the (H+2)x(W+2) image and
    the call pads nothing, so the ideal cycles grow by (H+2)(W+2)/(HW)."""
    from tests.host.test_host_plan import _single_conv_qdq
    model, *_ = _single_conv_qdq(5, 6, 12, 12, 3, 1, (1, 1, 1, 1), seed=4)
    for init in model.graph.initializer:                 # zero point 128: an input in [-1, 1] as uint8
        if init.name == "z":
            init.CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), "z"))
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    (layer,) = to_fpga(model, cfg).fpga_layers
    assert layer.in_zero_point.host_pads == (1, 1, 1, 1) and layer.pads == (0, 0, 0, 0)
    assert layer.in_shape == (5, 14, 14)
    # the same zero point after the ReLU: the output holds 128..255, which is uint8 - 128 exactly
    assert layer.out_zero_point == 0 and to_fpga(model, cfg).encodings["yq"].offset == -128
    gi = go = 2
    assert layer.ideal_cycles(cfg) == gi * 14 * 14 * go == gi * 12 * 12 * go * (14 * 14) / (12 * 12)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5, 12, 12)).astype(np.float32)
    plan = to_fpga(model, cfg)
    want = ort_run(model, x, ["yq"])["yq"]
    got = Session(plan).run(x, fetch=["yq"])["yq"]
    d = np.abs(got.astype(np.int64) - want)
    assert d.max() <= 1 and np.mean(d == 0) >= 0.99
    border = np.ones(got.shape[2:], bool)
    border[1:-1, 1:-1] = False                   # where the padding counts
    assert d[:, :, border].max() <= 1 and np.mean(d[:, :, border] == 0) >= 0.99


def test_output_zero_point_in_the_bias_is_exact_when_the_multiplier_divides_it():
    from hlsinf.host.plan import _fold_output_zero_point
    from hlsinf.reference import requantize
    acc = np.arange(-200_000, 200_000, 7, dtype=np.int64)
    for mult, shift, z in ((1 << 12, 20, -128), (1, 9, 100), (46_341, 24, -128), (30_001, 22, 7)):
        t, exact = _fold_output_zero_point(z, np.array([mult]), shift)
        got = requantize(acc + t[0], mult, shift, -10**9, 10**9)
        want = requantize(acc, mult, shift, -10**9, 10**9) + z
        assert exact == (z * (1 << shift) % mult == 0)
        if exact:
            np.testing.assert_array_equal(got, want)
        else:                                   # off by M/2^(s+1) at most before rounding: rare, 1 LSB
            residual = abs(z * (1 << shift) - t[0] * mult) / 2 ** shift
            assert residual <= mult / 2 ** (shift + 1)
            assert np.abs(got - want).max() <= 1 and np.mean(got != want) <= residual + 1e-3


def test_a_type_the_kernel_cannot_hold_runs_on_the_cpu_with_the_reason():
    from tests.host.test_host_plan import _single_conv_qdq
    model, *_ = _single_conv_qdq(3, 4, 6, 6, 3, 1, (1, 1, 1, 1), seed=1)
    for init in model.graph.initializer:
        if init.name == "z":
            init.CopyFrom(numpy_helper.from_array(np.array(0, np.int16), "z"))
    model.opset_import[0].version = 21                  # int16 QuantizeLinear
    for kernel in (KernelConfig(cpi=4, cpo=4), KernelConfig(cpi=4, cpo=4, act_signed=True), dict(cpi=4, cpo=4)):
        plan = to_fpga(model, kernel)
        assert not plan.fpga_layers
        assert "input is int16 (values -32768..32767); the kernel takes" in plan.summary(), plan.summary()


def test_torch_style_shared_bias_in_a_quantize_static_model(tmp_path):
    """quantize_static keeps conv2's bias as Identity(DequantizeLinear(conv1's int32 bias)): it
    used to send the conv to the CPU ('bias is not constant')."""
    rng = np.random.default_rng(2)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(torch_style_model(12, 12, tied=False), calib, tmp_path)
    assert any(n.op_type == "Identity" for n in qdq.graph.node)
    plan = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert len(plan.fpga_layers) == 3, plan.summary()
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    assert all(d.max() <= 1 for d in _layer_by_layer(plan, qdq, x).values())


def test_torch_style_tied_weights_in_a_quantize_static_model(tmp_path):
    """conv3's weights, tied to conv2's through Identity, are quantised by onnxruntime like an
    activation (per tensor, zero point != 0) as DQ -> Identity -> Q -> DQ. The planner reads them
    (a constant subgraph), but w - zero point does not fit int8, so that conv stays on the CPU
    and says so. (onnxruntime 1.32 itself fails to open this model with
    session.x64quantprecision: 'Attempt to replace the existing tensor'.)"""
    rng = np.random.default_rng(2)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(torch_style_model(12, 12), calib, tmp_path)
    plan = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert [l.name for l in plan.fpga_layers] == ["/c1/Conv", "/c2/Conv"], plan.summary()
    assert "not constant" not in plan.summary()
    reasons = {s.name: s.reason for s in plan.steps if getattr(s, "reason", None)}
    assert reasons["/c3/Conv"].startswith("weight zero point is not 0 (asymmetric weights) and w - zero point spans")


def test_cli_takes_the_activation_format_from_the_model(tmp_path, capsys):
    from hlsinf.run import main
    rng = np.random.default_rng(3)
    model = small_cnn(14, 14, seed=1)
    qdq = _quantize_static(model, rng.uniform(-1, 1, (8, 3, 14, 14)).astype(np.float32), tmp_path)
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (2, 3, 14, 14)).astype(np.float32))
    args = [str(tmp_path / "qdq.onnx"), "--input", str(tmp_path / "x.npy"), "--cpi", "4", "--cpo", "4"]
    assert main(args + ["--output", str(tmp_path / "y.npy")]) == 0
    text = capsys.readouterr().out
    assert "int8 activations (from the model: 5 of 5 quantised convolution inputs are int8)" in text
    assert "5 accelerator layer(s)" in text
    y = np.load(tmp_path / "y.npy")
    want = ort_run(qdq, np.load(tmp_path / "x.npy"))[qdq.graph.output[0].name]
    assert np.abs(y - want).max() < 0.02
    assert main(args + ["--no-act-signed"]) == 0
    assert "uint8 activations, " in capsys.readouterr().out


def test_asymmetric_weights_that_fit_int8_after_centring_run_on_the_accelerator():
    from tests.host.test_host_plan import _numpy_layer, _single_conv_qdq
    model, wq, bq, sx, sw, sy, out = _single_conv_qdq(4, 5, 7, 7, 3, 1, (1, 1, 1, 1), seed=2)
    zw = np.array([3, -5, 0, 7, 1], np.int8)
    wq = np.clip(wq, -100, 100).astype(np.int8)
    for init in model.graph.initializer:
        if init.name == "zw":
            init.CopyFrom(numpy_helper.from_array(zw, "zw"))
        if init.name == "wq":
            init.CopyFrom(numpy_helper.from_array(wq, "wq"))
    plan = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    assert len(plan.fpga_layers) == 1, plan.summary()
    xq = np.random.default_rng(0).integers(0, 256, (4, 7, 7))
    got = Session(plan).run((xq * sx).astype(np.float32)[None], fetch=[out])[out][0]
    centred = wq.astype(np.int64) - zw.reshape(-1, 1, 1, 1)
    want = _numpy_layer(xq, centred, bq, sx * sw / sy, 1, (1, 1, 1, 1), None, True)
    d = np.abs(got.astype(np.int64) - want)
    assert d.max() <= 1 and np.mean(d == 0) > 0.97
