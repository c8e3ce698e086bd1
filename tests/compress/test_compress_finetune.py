"""The PyTorch loop hook: masks that survive training, the same channels as the ONNX pass, exportable models."""

import io

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.compress.compress_models import conv_channels, run
from hlsinf.compress import CompressError, prune, remove_channels
from hlsinf.compress.finetune import ChannelPruner, prune_finetune


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 3))


def export(model):
    model.eval()
    f = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), f, opset_version=13, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return onnx.load_from_string(f.getvalue())


def randomise_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)


def test_masks_hold_through_training_and_bn_is_masked():
    net = small_net()
    randomise_bn(net[1])
    pruner = ChannelPruner(net)
    assert [(n, type(c).__name__, type(b).__name__) for n, c, b in pruner.layers] == [("0", "Conv2d", "BatchNorm2d")]
    chosen = pruner.prune(0.5)["0"]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 1, 8, 8)).square().sum().backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        feature = net[1](net[0](torch.randn(2, 1, 8, 8)))
    assert len(chosen) == 4
    assert torch.all(feature[:, chosen] == 0)  # conv + BN output of a pruned channel is exactly 0
    assert pruner.pruned_fraction() == 0.5


def test_same_channels_as_the_onnx_pass_and_fully_removable():
    net = small_net()
    randomise_bn(net[1])
    net.eval()
    pruner = ChannelPruner(net)
    dense = export(pruner.exportable())  # the exporter folds BN into the Conv
    onnx_pruned, report = prune(dense, 0.5, layers=[dense.graph.node[0].name])
    chosen = pruner.prune(0.5)["0"]
    assert list(chosen) == report.layers[0].pruned
    model = export(pruner.exportable())
    slim, _ = remove_channels(model)
    assert list(conv_channels(slim).values())[0] == 4  # exactly 0 channels leave even before the padded Conv
    x = np.random.default_rng(0).normal(0, 1, (3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(slim, x), expected, rtol=1e-4, atol=1e-5)


def test_patience_stops_and_restores_the_best_epoch():
    net = small_net()
    pruner = ChannelPruner(net)
    losses = iter([5.0, 4.0, 4.5, 4.2, 4.1,   # level 0: best at epoch 2, then 3 worse epochs
                   3.0, 3.5, 3.6, 3.7])     # level 0.5
    seen = []

    def train_epoch(model):
        with torch.no_grad():
            model[0].bias.add_(1.0)  # a visible change per epoch

    def validate(model):
        seen.append(float(model[0].bias.detach()[0]))
        return next(losses)

    levels = []
    results = prune_finetune(net, pruner, train_epoch, validate, amounts=[0, 0.5], patience=3, max_epochs=10,
                             on_level=lambda a, m: levels.append((a, pruner.pruned_fraction(),
                                                                  float(m[0].bias.detach()[0]))))
    assert [r.epochs for r in results] == [5, 4]
    assert levels[0][2] == seen[1]  # the weights of the best epoch (the second) are restored
    assert [r.best_loss for r in results] == [4.0, 3.0]
    assert [l[:2] for l in levels] == [(0.0, 0.0), (0.5, 0.5)]


def test_bad_arguments():
    net = small_net()
    pruner = ChannelPruner(net)
    with pytest.raises(CompressError, match=r"amount = 1.0 is out of range"):
        pruner.prune(1.0)
    with pytest.raises(CompressError, match="patience = 0"):
        prune_finetune(net, pruner, lambda m: None, lambda m: 0.0, amounts=[0.5], patience=0)
    with pytest.raises(CompressError, match="must not decrease"):
        prune_finetune(net, pruner, lambda m: None, lambda m: 0.0, amounts=[0.5, 0.25])
    with pytest.raises(CompressError, match="BatchNorm2d with 8 features"):
        ChannelPruner(net, [(net[0], net[0])])
