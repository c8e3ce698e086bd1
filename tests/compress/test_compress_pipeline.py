"""Compression through the host: PTQ of the compressed model, and fewer planned kernel cycles after removal."""

import math

import numpy as np
import onnx

from hlsinf import host

from tests.compress.compress_models import conv_channels, run, sequential
from hlsinf.compress import compress, prune, remove_channels
from hlsinf.compress.__main__ import main
from hlsinf.config import KernelConfig

CFG = KernelConfig(cpi=4, cpo=4)
NET = [("conv", 12, 1), ("relu",), ("conv", 8, 1), ("relu",), ("maxpool",), ("conv", 8, 1), ("relu",),
       ("flatten",), ("gemm", 5)]


def batch(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 2, 8, 8)).astype(np.float32)


def net():
    return sequential(NET, input_shape=(1, 2, 8, 8), seed=4)


def paper_cycles(model, cfg):
    """ceil(I/CPI) * H * W * ceil(O/CPO) per Conv, from the model's own shapes (the paper's model)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            _, i, h, w = shapes[node.input[0]]
            o = shapes[node.output[0]][1]
            total += math.ceil(i / cfg.cpi) * h * w * math.ceil(o / cfg.cpo)
    return total


def test_removal_reduces_planned_kernel_cycles():
    pruned, _ = prune(net(), 0.5)
    slim, _ = remove_channels(pruned)
    calib = batch(8)
    plans = {name: host.to_fpga(m, CFG, calibration=calib) for name, m in (("pruned", pruned), ("slim", slim))}
    assert all(len(p.fpga_layers) == 3 for p in plans.values())
    assert plans["pruned"].ideal_cycles() == paper_cycles(pruned, CFG)
    assert plans["slim"].ideal_cycles() == paper_cycles(slim, CFG)
    assert plans["slim"].ideal_cycles() < plans["pruned"].ideal_cycles()
    assert conv_channels(slim) == {"conv0": 6, "conv2": 4, "conv5": 4}


def test_compress_quantizes_through_the_host():
    calib = batch(16)
    qdq, report = compress(net(), amount=0.5, calibration=calib, kernel=CFG)
    assert report.quantized and report.bytes_after < report.bytes_before
    ops = [n.op_type for n in qdq.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    float_slim, _ = compress(net(), amount=0.5)
    x = batch(1, seed=5)
    yq, yf = run(qdq, x), run(float_slim, x)
    assert np.max(np.abs(yq - yf)) < 0.1 * np.max(np.abs(yf))  # int8 close to float
    # What the accelerator computes for the quantised model is what onnxruntime computes for it.
    plan = host.to_fpga(qdq, CFG)
    y_acc = host.Session(plan).run(x)[plan.graph.outputs[0]]
    np.testing.assert_allclose(y_acc, yq, rtol=1e-4, atol=1e-4)


def test_cli_quantize(tmp_path, capsys):
    onnx.save(net(), tmp_path / "net.onnx")
    np.save(tmp_path / "calib.npy", batch(8))
    out = tmp_path / "q.onnx"
    assert main([str(tmp_path / "net.onnx"), "-o", str(out), "--prune", "0.5", "--calibration",
                 str(tmp_path / "calib.npy"), "--quantize"]) == 0
    assert "(quantised)" in capsys.readouterr().out
    plan = host.to_fpga(str(out), CFG)
    assert len(plan.fpga_layers) == 3


def test_bad_calibration_names_the_shape(tmp_path, capsys):
    onnx.save(net(), tmp_path / "net.onnx")
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 8, 8), np.float32))
    assert main([str(tmp_path / "net.onnx"), "-o", str(tmp_path / "q.onnx"), "--calibration",
                 str(tmp_path / "calib.npy"), "--quantize"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: quantisation failed") and "(4, 3, 8, 8)" in err
