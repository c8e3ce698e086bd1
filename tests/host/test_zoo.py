"""The zoo of real architectures (hlsinf.zoo): tiny versions export to valid ONNX that onnxruntime
runs to the torch model's own output, with and without the exporter's constant folding."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hlsinf import zoo

TINY = dict(resolution=32, width=0.125)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ort(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("folding", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_tiny_export_matches_torch(name, folding, tmp_path):
    path = zoo.export(name, **TINY, seed=3, path=tmp_path / f"{name}.onnx", do_constant_folding=folding)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops
    if not folding and name not in ("vgg11", "vgg16", "squeezenet1_1"):
        assert "BatchNormalization" in ops            # the unfolded export keeps BN for the host to fold

    x = zoo.calibration(name, 2, seed=5, resolution=TINY["resolution"])     # a batch of 2: dynamic batch axis
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32 and x.min() < 0 < x.max()
    with torch.no_grad():
        ref = zoo.build(name, **TINY, seed=3)(torch.from_numpy(x)).numpy()
    assert np.all(np.isfinite(ref)) and ref.std() > 0
    got = _ort(path, x)
    assert got.shape == ref.shape
    np.testing.assert_array_less(np.abs(got - ref).max(), 1e-4 * np.abs(ref).max())


def test_seeded_and_bn_statistics_nontrivial():
    a = zoo.build("resnet18", **TINY, seed=1)
    b = zoo.build("resnet18", **TINY, seed=1)
    c = zoo.build("resnet18", **TINY, seed=2)
    wa, wb, wc = (m.conv1.weight.detach().numpy() for m in (a, b, c))
    assert np.array_equal(wa, wb) and not np.array_equal(wa, wc)
    bn = a.layer1[0].bn2
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
    assert np.array_equal(zoo.calibration("vgg16", 2, 7, resolution=32), zoo.calibration("vgg16", 2, 7, resolution=32))


def test_full_size_shapes_match_torchvision():
    """Parameter counts of torchvision's models (their layer shapes), and MACs of one 224x224 image."""
    expected = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872, "vgg11": 132_863_336,
                "vgg16": 138_357_544, "squeezenet1_1": 1_235_496, "googlenet": 6_624_904}
    d = zoo._defs()
    for name, params in expected.items():
        with torch.device("meta"):      # shapes only: no weights allocated, no BN-statistics pass
            model = d["vgg"](name, 224) if name.startswith("vgg") else d[name]()
        assert sum(p.numel() for p in model.parameters()) == params, name
    assert d["googlenet"]().inception4e.branch1[0].in_channels == 528


def test_cli_and_errors(tmp_path, capsys):
    out, cal = tmp_path / "sq.onnx", tmp_path / "cal.npy"
    assert zoo.main(["squeezenet1_1", "--out", str(out), "--resolution", "32", "--width", "0.125",
                     "--calibration", str(cal), "--n", "3"]) == 0
    onnx.checker.check_model(onnx.load(out))
    assert np.load(cal).shape == (3, 3, 32, 32)
    assert "MACs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        zoo.main(["vgg16", "--out", str(out), "--resolution", "40"])          # not a multiple of 32
    with pytest.raises(ValueError, match="unknown network"):
        zoo.build("alexnet")
