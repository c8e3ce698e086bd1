"""``python -m hlsinf.compress``: a compressed model that computes what the pruned one does, and clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.compress.compress_models import conv_channels, run, sequential
from hlsinf.compress import prune
from hlsinf.compress.__main__ import main

NET = [("conv", 8, 1), ("bn",), ("relu",), ("conv", 6, 1), ("relu",), ("maxpool",), ("flatten",), ("gemm", 4)]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(sequential(NET), path)
    return path


def test_prune_and_remove(model_file, tmp_path, capsys):
    out = tmp_path / "slim.onnx"
    assert main([str(model_file), "-o", str(out), "--prune", "0.5"]) == 0
    slim = onnx.load(out)
    assert conv_channels(slim) == {"conv0": 4, "conv3": 3}
    assert "BatchNormalization" not in [n.op_type for n in slim.graph.node]
    printed = capsys.readouterr().out
    assert "folded bn1 into conv0" in printed and "written to" in printed
    # The oracle: the library's own prune of the same model (after folding), run by onnxruntime.
    from hlsinf.compress import fold_batchnorm
    pruned, _ = prune(fold_batchnorm(onnx.load(model_file))[0], 0.5)
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 6, 6))
    np.testing.assert_allclose(run(slim, x), run(pruned, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--prune", "1.2"], "pruning amount = 1.2 is out of range"),
    (["--prune", "0.5", "--layers", "nope"], "'nope' is not a Conv node"),
    (["--quantize"], "--quantize and --calibration go together"),
    (["--calibration", "c.npy"], "--quantize and --calibration go together"),
    (["--calibration", "missing.npy", "--quantize"], "calibration file 'missing.npy' does not exist"),
])
def test_bad_input_exits_2_with_one_line(model_file, tmp_path, capsys, argv, message):
    assert main([str(model_file), "-o", str(tmp_path / "o.onnx"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()


def test_missing_model_through_python_m(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run([sys.executable, "-m", "hlsinf.compress", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode == 2 and "model file" in r.stderr and "none.onnx" in r.stderr and "does not exist" in r.stderr


def test_zero_channels_that_cannot_leave_are_reported(tmp_path, capsys):
    """A dead channel before a residual Add stays; the CLI says why and still writes the model."""
    from onnx import helper
    from tests.compress.compress_models import zero_weights
    model = sequential([("conv", 4, 1), ("relu",), ("conv", 4, 1)], input_shape=(1, 2, 5, 5))
    model.graph.node.append(helper.make_node("Add", ["t1", "t2"], ["sum"], name="residual_add"))
    model.graph.output[0].name = "sum"
    zero_weights(model, "conv0", [1])
    onnx.save(model, tmp_path / "res.onnx")
    assert main([str(tmp_path / "res.onnx"), "-o", str(tmp_path / "o.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "1 zero channel(s) left" in printed and "residual_add" in printed
    assert conv_channels(onnx.load(tmp_path / "o.onnx")) == {"conv0": 4, "conv2": 4}
