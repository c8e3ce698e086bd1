"""The CLI ``python -m hlsinf.run``: plan printed, output written, profile, clear errors with exit 2."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hlsinf.host.models import small_cnn
from hlsinf.run import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    model = small_cnn(12, 12, seed=2)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.uniform(0, 1, (3, 3, 12, 12)).astype(np.float32))
    np.save(tmp_path / "cal.npy", rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32))
    return tmp_path


def test_cli_runs_a_float_model_with_calibration(files, capsys):
    out = files / "y.npy"
    rc = main([str(files / "m.onnx"), "--input", str(files / "x.npy"), "--calibration", str(files / "cal.npy"),
               "--cpi", "4", "--cpo", "4", "--max-rows", "2", "--output", str(out), "--profile"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "accelerator conv1" in text and "row tile(s)" in text and "ideal" in text
    assert "time split: accelerator" in text and "transfer" in text
    y = np.load(out)
    x = np.load(files / "x.npy")
    sess = ort.InferenceSession(str(files / "m.onnx"))
    ref = np.concatenate([sess.run(None, {"input": x[k:k + 1]})[0] for k in range(3)])
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)          # softmax output
    assert np.abs(y - ref).max() < 0.2


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "hlsinf.run", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_cli_errors_exit_nonzero_with_a_clear_message(files):
    m, x, cal = files / "m.onnx", files / "x.npy", files / "cal.npy"
    cases = [
        ((files / "missing.onnx", "--input", x), "model file .*missing.onnx.* does not exist"),
        ((m, "--input", files / "nope.npy"), "input file .*nope.npy.* does not exist"),
        ((m, "--input", cal, "--calibration", x, "--imax", "4", "--cpi", "4", "--cpo", "4", "--no-cpu-fallback"),
         "node 'conv4'.*6 input channels, more than the kernel's imax = 4"),
        ((m, "--input", x, "--calibration", cal, "--hmax", "2", "--no-cpu-fallback"),
         "node 'conv1'.*no row tiling fits the kernel's hmax = 2"),
        ((m, "--input", x, "--cpi", "3"), r"KernelConfig.cpi = 3 is out of range"),
        ((m, "--input", x, "--cpi", "0"), r"--cpi 0: must be a positive"),
        ((m, "--input", x, "--cpo", "-4"), r"--cpo -4: must be a positive"),
        ((m, "--input", x, "--calibration", cal, "--output", files / "no" / "such" / "y.npy"),
         r"--output .*y.npy.*folder .*such.* does not exist"),
    ]
    np.save(files / "empty.npy", np.zeros((0, 3, 12, 12), np.float32))
    cases.append(((m, "--input", files / "empty.npy", "--calibration", cal), r"input batch is empty \(shape \(0, 3, 12, 12\)\)"))
    nan = np.load(x)
    nan[1, 2, 3, 4] = np.nan
    np.save(files / "nan.npy", nan)
    cases.append(((m, "--input", files / "nan.npy", "--calibration", cal),
                  r"input batch holds 1 NaN or infinite value\(s\), the first at index \(1, 2, 3, 4\)"))
    cases.append(((m, "--input", x, "--calibration", files / "nan.npy"), r"calibration batch holds 1 NaN"))
    np.save(files / "bad.npy", np.zeros((1, 3, 11, 12), np.float32))
    cases.append(((m, "--input", files / "bad.npy", "--calibration", cal), "dimension 2 differs"))
    bad_op = small_cnn(12, 12)
    bad_op.graph.node[0].op_type = "FancyConv"
    onnx.save(bad_op, files / "bad_op.onnx")
    cases.append(((files / "bad_op.onnx", "--input", x), "node 'conv1': operator FancyConv is not supported"))
    for args, pattern in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert re.search(pattern, r.stderr), (pattern, r.stderr)
        assert "Traceback" not in r.stderr


def test_profile_splits_time_and_plots_when_matplotlib_is_there(files, tmp_path):
    import importlib.util
    from hlsinf.config import KernelConfig
    from hlsinf.host import Profile, Session, to_fpga
    x, cal = np.load(files / "x.npy"), np.load(files / "cal.npy")
    plan = to_fpga(str(files / "m.onnx"), KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16), calibration=cal)
    profile = Profile()
    Session(plan).run(x, profile=profile)
    totals = profile.totals()
    assert set(totals) == {"accelerator", "cpu", "transfer"} and all(v > 0 for v in totals.values())
    assert set(profile.runs.values()) == {3} and set(profile.ideal) == {l.name for l in plan.fpga_layers}
    assert not profile.cycles                     # the reference device does not count cycles
    made = profile.plot(str(tmp_path / "p.png"))
    assert made == (importlib.util.find_spec("matplotlib") is not None) == (tmp_path / "p.png").exists()


def test_layers_the_kernel_cannot_hold_fall_back_to_the_cpu_by_default(files):
    """With --hmax 2 no row tiling fits conv1: by default it runs on the CPU (the plan says
    why) and the output still tracks onnxruntime; --no-cpu-fallback makes it an error."""
    out = files / "y.npy"
    r = _cli(files / "m.onnx", "--input", files / "x.npy", "--calibration", files / "cal.npy", "--hmax", "2",
             "--output", out)
    assert r.returncode == 0, r.stderr
    assert re.search(r"cpu\s+conv1.*no row tiling fits the kernel's hmax = 2", r.stdout), r.stdout
    x = np.load(files / "x.npy")
    sess = ort.InferenceSession(str(files / "m.onnx"))
    want = np.concatenate([sess.run(None, {"input": x[k:k + 1]})[0] for k in range(len(x))])
    assert np.abs(np.load(out) - want).max() < 0.2


def test_cli_builds_the_optional_calls_in_process(tmp_path, capsys):
    """A zoo MobileNetV2 from torch, quantised by the library's PTQ, on an in-process kernel
    with depthwise, pointwise and split calls and the residual add: every convolution on the
    accelerator, the output close to onnxruntime's float model; a bad option value exits 2
    naming it."""
    pytest.importorskip("torch")
    from hlsinf import zoo
    from hlsinf.host.evaluate import cosine

    path = zoo.export("mobilenet_v2", resolution=32, width=0.25, seed=0, path=tmp_path / "m.onnx")
    np.save(tmp_path / "cal.npy", zoo.calibration("mobilenet_v2", 16, seed=0, resolution=32))
    x = zoo.calibration("mobilenet_v2", 1, seed=1, resolution=32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    rc = main([str(path), "--input", str(tmp_path / "x.npy"), "--calibration", str(tmp_path / "cal.npy"),
               "--with-depthwise", "--with-pointwise", "--with-acc-split", "--post-ops", "residual_add",
               "--imax", "64", "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "dwconv" in text and "pwconv" in text
    assert "3 input-channel chunks held on chip" in text      # the classifier: 1280 features > 9 x imax = 576
    assert not re.search(r"^\s*\d+ cpu\s+\S+\s+Conv\b", text, re.M), text     # no convolution on the CPU
    # the same as the library's API on that configuration, and close to onnxruntime running the
    # same QDQ model (tiny MobileNetV2's 1-LSB differences grow: tests/host/test_networks.py)
    from hlsinf.config import KernelConfig
    from hlsinf.host import Session, onnxruntime_session, quantize, to_fpga
    cfg = KernelConfig(with_depthwise=True, with_pointwise=True, with_acc_split=True, post_ops=("residual_add",),
                       imax=64)
    qdq = quantize(str(path), np.load(tmp_path / "cal.npy"), cfg)
    y = np.load(out)
    plan = to_fpga(qdq, cfg)
    np.testing.assert_array_equal(y, Session(plan).run(x)[plan.graph.outputs[0]])
    assert cosine(y, onnxruntime_session(qdq).run(None, {"input": x})[0]) > 0.8
    bad = _cli(path, "--input", tmp_path / "x.npy", "--calibration", tmp_path / "cal.npy", "--max-upsize", "3")
    assert bad.returncode == 2 and "max_upsize" in bad.stderr, bad.stderr
