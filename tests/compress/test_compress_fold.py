"""BatchNormalization folding against onnxruntime."""

import numpy as np
import pytest

from tests.compress.compress_models import init, run, sequential
from hlsinf.compress import CompressError, fold_batchnorm


@pytest.mark.parametrize("layers", [
    [("conv", 5, 1), ("bn",), ("relu",), ("conv", 4, 0), ("bn",)],
    [("conv", 5, 0, False), ("bn",), ("relu",)],
], ids=["two BNs", "conv without bias"])
def test_folding_keeps_outputs(layers):
    model = sequential(layers)
    folded, report = fold_batchnorm(model)
    assert [n.op_type for n in folded.graph.node].count("BatchNormalization") == 0
    assert len(report.folded) == sum(1 for l in layers if l[0] == "bn")
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 6, 6))
    np.testing.assert_allclose(run(folded, x), run(model, x), rtol=1e-5, atol=1e-5)


def test_folded_weights_match_the_formula():
    model = sequential([("conv", 3, 1), ("bn",)])
    folded, _ = fold_batchnorm(model)
    s = init(model, "bn1.scale") / np.sqrt(init(model, "bn1.var") + 1e-5)
    np.testing.assert_allclose(init(folded, "conv0.w"), init(model, "conv0.w") * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(init(folded, "conv0.b"),
                               s * (init(model, "conv0.b") - init(model, "bn1.mean")) + init(model, "bn1.B"),
                               rtol=1e-5, atol=1e-6)


def test_bn_not_after_conv_is_left_or_named():
    model = sequential([("conv", 3, 1), ("relu",), ("bn",)])
    folded, report = fold_batchnorm(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu", "BatchNormalization"]
    assert report.left and report.left[0][0] == "bn2" and "Relu" in report.left[0][1]
    with pytest.raises(CompressError, match="bn2.*follows Relu node 'relu1'"):
        fold_batchnorm(model, strict=True)
