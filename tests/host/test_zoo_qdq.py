"""onnxruntime's quantize_static output of real architectures (the zoo, exported by torch)
puts every dense 3x3 convolution on the accelerator with nothing but CPI and CPO given:
with its defaults (int8 activations with zero points, per-tensor weights) and with
per-channel symmetric settings. Accuracy against onnxruntime is checked layer by layer in
test_host_qdq.py; here the output must track onnxruntime's on the same QDQ model."""

import numpy as np
import pytest

from hlsinf.host import FpgaLayer, Session, onnxruntime_session, to_fpga

pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

from hlsinf import zoo  # noqa: E402

SETTINGS = {
    "defaults": {},
    "per_channel_symmetric": dict(per_channel=True,
                                  extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}),
}


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, name, batch):
        self.items = iter([{name: image[None]} for image in batch])

    def get_next(self):
        return next(self.items, None)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("network", ["resnet18", "squeezenet1_1"])
def test_every_dense_3x3_conv_of_a_quantize_static_model_is_on_the_accelerator(tmp_path, network, setting):
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    zoo.export(network, resolution=32, width=0.125, seed=1, path=float_path)
    batch = zoo.calibration(network, 4, seed=2, resolution=32)
    quantization.quantize_static(str(float_path), str(qdq_path), _Reader("input", batch), **SETTINGS[setting])
    plan = to_fpga(str(qdq_path), {"cpi": 4, "cpo": 4})
    convs = [n for n in plan.graph.nodes if n.op == "Conv"]
    dense_3x3 = {n.name for n in convs if tuple(n.attrs.get("kernel_shape", ())) == (3, 3) and n.attrs.get("group", 1) == 1}
    on_accelerator = {name for layer in plan.steps if isinstance(layer, FpgaLayer) for name in layer.nodes}
    assert dense_3x3 and dense_3x3 <= on_accelerator, sorted(dense_3x3 - on_accelerator)
    x = batch[:1]
    got = Session(plan).run(x)[plan.graph.outputs[0]]
    want = onnxruntime_session(str(qdq_path)).run(None, {"input": x})[0]
    cosine = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine >= 0.99, cosine
