"""Structured pruning: which channels go, that they are zero, and the error messages."""

import math

import numpy as np
import pytest

from tests.compress.compress_models import conv_channels, init, run, sequential
from hlsinf.compress import CompressError, prune, remove_channels, select_channels

NET = [("conv", 8, 1), ("relu",), ("conv", 6, 1), ("relu",), ("maxpool",), ("flatten",), ("gemm", 4)]


def norms(w, criterion):
    """Per output channel, by plain loops."""
    out = []
    for o in range(w.shape[0]):
        vals = [float(v) for v in w[o].ravel()]
        out.append(sum(abs(v) for v in vals) if criterion == "l1" else math.sqrt(sum(v * v for v in vals)))
    return out


@pytest.mark.parametrize("criterion", ["l1", "l2"])
@pytest.mark.parametrize("amount", [0.0, 0.25, 0.5, 0.9])
def test_layer_scope_zeroes_the_weakest_channels(criterion, amount):
    model = sequential(NET)
    pruned, report = prune(model, amount, criterion=criterion)
    for name, wname, bname in (("conv0", "conv0.w", "conv0.b"), ("conv2", "conv2.w", "conv2.b")):
        w = init(model, wname)
        n = min(round(amount * w.shape[0]), w.shape[0] - 1)
        weakest = sorted(range(w.shape[0]), key=lambda c: norms(w, criterion)[c])[:n]
        pw, pb = init(pruned, wname), init(pruned, bname)
        zero = [c for c in range(w.shape[0]) if not pw[c].any()]
        assert zero == sorted(weakest)
        assert all(pb[c] == 0 for c in zero)
        rest = [c for c in range(w.shape[0]) if c not in zero]
        np.testing.assert_array_equal(pw[rest], w[rest])
    assert [n.name for n in pruned.graph.node] == [n.name for n in model.graph.node]


def test_prune_then_remove_is_exact_and_smaller():
    model = sequential(NET)
    pruned, _ = prune(model, 0.5)
    slim, _ = remove_channels(pruned)
    assert conv_channels(slim) == {"conv0": 4, "conv2": 3}
    x = np.random.default_rng(2).normal(0, 1, (2, 3, 6, 6))
    np.testing.assert_allclose(run(slim, x), run(pruned, x), rtol=1e-5, atol=1e-5)


def test_global_scope_compares_mean_magnitudes_and_keeps_a_channel_per_layer():
    scores = {"a": np.array([0.1, 0.2, 0.3, 5.0]), "b": np.array([0.05, 0.06])}
    chosen = select_channels(scores, 0.5, "global")
    # 3 of 6 channels go: b keeps one, so a's two weakest and b's weakest.
    assert list(chosen["a"]) == [0, 1] and list(chosen["b"]) == [0]
    model = sequential(NET)
    pruned, report = prune(model, 0.6, scope="global")
    assert sum(len(l.pruned) for l in report.layers) == round(0.6 * 14)
    assert all(len(l.pruned) < l.channels for l in report.layers)


def test_per_layer_amounts():
    model = sequential(NET)
    pruned, report = prune(model, {"conv2": 0.5})
    assert [(l.name, len(l.pruned)) for l in report.layers] == [("conv2", 3)]
    np.testing.assert_array_equal(init(pruned, "conv0.w"), init(model, "conv0.w"))


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, float("nan"), "half", True])
def test_amount_out_of_range(amount):
    with pytest.raises(CompressError, match=r"amount = .* out of range: allowed a number in \[0, 1\)"):
        prune(sequential(NET), amount)


def test_bad_names_and_options():
    model = sequential(NET)
    with pytest.raises(CompressError, match="'conv9' is not a Conv node.*conv0"):
        prune(model, 0.5, layers=["conv9"])
    with pytest.raises(CompressError, match=r"amount\['conv2'\] = 2"):
        prune(model, {"conv2": 2})
    with pytest.raises(CompressError, match="criterion = 'l3' is not known"):
        prune(model, 0.5, criterion="l3")
    with pytest.raises(CompressError, match="scope = 'net' is not known"):
        prune(model, 0.5, scope="net")


def test_conv_that_cannot_be_removed_is_refused_by_name():
    model = sequential([("conv", 4, 1), ("relu",), ("conv", 3, 1)])  # conv2 is the graph output
    with pytest.raises(CompressError, match="'conv2' cannot be pruned: the output of Conv node 'conv2' is a graph output"):
        prune(model, 0.5, layers=["conv2"])
    pruned, report = prune(model, 0.5)  # by default only removable Convs are pruned
    assert [l.name for l in report.layers] == ["conv0"]
