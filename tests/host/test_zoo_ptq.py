"""hlsinf.run's own post-training quantisation on torch exports of VGG11 and SqueezeNet 1.1
(do_constant_folding=False): the CLI runs them and the output tracks the float model. (The
issue's crash came from biases torch shares through Identity nodes when they are identical;
seeded weights make none identical here, so that pattern is tested on a purpose-built model
in test_host_qdq.py.) Calibration: 16 images; the zoo's seeded images are 4 x 4 colour fields,
and 4 of them leave the test image's activations outside the calibrated ranges (docs/zoo.md)."""

import numpy as np
import onnxruntime as ort
import pytest

from hlsinf.run import main

pytest.importorskip("torch")

from hlsinf import zoo  # noqa: E402


@pytest.mark.parametrize("network", ["vgg11", "squeezenet1_1"])
def test_hlsinf_ptq_runs_torch_exports_without_constant_folding(tmp_path, network):
    model = tmp_path / "m.onnx"
    zoo.export(network, resolution=32, width=0.125, seed=3, path=model, do_constant_folding=False)
    batch = zoo.calibration(network, 17, seed=4, resolution=32)
    np.save(tmp_path / "cal.npy", batch[1:])
    np.save(tmp_path / "x.npy", batch[:1])
    out = tmp_path / "y.npy"
    assert main([str(model), "--input", str(tmp_path / "x.npy"), "--calibration", str(tmp_path / "cal.npy"),
                 "--cpi", "4", "--cpo", "4", "--output", str(out), "--quiet"]) == 0
    want = ort.InferenceSession(str(model)).run(None, {"input": batch[:1]})[0]
    got = np.load(out)
    cosine = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine >= 0.99, cosine
