"""A zoo of real CNN architectures in plain torch, with seeded weights, exported to ONNX.

For the host's tests and benchmarks: networks whose layer shapes are those of torchvision's
models, written here from the architectures (torchvision does not import beside the pinned
torch), with seeded weights instead of trained ones. Nothing is downloaded.

========================  =====================================================================
``resnet18``              ResNet-18: 7x7/2 stem, 3x3/2 max pool, 4 stages of 2 BasicBlocks
                          (3x3 conv-BN-ReLU, 3x3 conv-BN, 1x1/s conv-BN downsample on the
                          shortcut when the shape changes, residual Add, ReLU), global average
                          pool, fc
``mobilenet_v2``          MobileNetV2: 3x3/2 stem, 17 inverted residuals (1x1 expand-BN-ReLU6,
                          3x3 depthwise (groups = channels)-BN-ReLU6, 1x1 project-BN, Add when
                          the shape is kept), 1x1 to 1280, global average pool, fc
``vgg11``, ``vgg16``      VGG configurations A and D (3x3 conv + ReLU, 2x2 max pools, no BN),
                          adaptive average pool, classifier fc-ReLU-dropout x2, fc
``squeezenet1_1``         SqueezeNet 1.1: 3x3/2 stem, 3x3/2 ceil-mode max pools, 8 fire modules
                          (1x1 squeeze, 1x1 and 3x3 expand, Concat), 1x1 conv classifier,
                          global average pool
``googlenet``             GoogLeNet (Inception v1) as torchvision has it: 7x7/2 stem, 1x1 and
                          3x3 convs, 9 Inception blocks (1x1 | 1x1-3x3 | 1x1-3x3 | 3x3 max
                          pool-1x1, Concat; torchvision's "5x5" branch is a 3x3), every conv
                          bias-free + BN(eps=1e-3) + ReLU, ceil-mode max pools, no auxiliary
                          heads (inference), global average pool, fc
``unet``                  A small UNet: 4 encoder levels of two 3x3 conv-BN-ReLU and a 2x2 max
                          pool (32..256 channels), a 512-channel bottleneck, 4 decoder levels of
                          nearest Upsample(x2), Concat with the skip, two 3x3 conv-BN-ReLU;
                          1x1 classifier (2 classes)
========================  =====================================================================

``width`` scales every channel count (MobileNetV2 rounds to multiples of 8, as torchvision's
``width_mult``); ``resolution`` is the input's height and width. Tests use tiny versions
(32x32, width 1/8), benchmarks the real size (224x224, width 1).

Weights: ``torch.manual_seed(seed)``, He-normal convolutions, small random biases; every
BatchNorm gets running statistics measured on a seeded batch of images and a random affine
part (gamma in [0.5, 1.5], beta ~ N(0, 0.1)), so BN folding changes the weights and biases
and activations keep a sensible range through depth. Two conditioning rules keep the seeded
networks as insensitive to small perturbations (int8 rounding) as trained ones instead of
chaotic (docs/zoo.md has the measurements): dense k x k kernels (k > 1) put half their
energy in their mean (about; smooth kernels: a white random kernel is a high-pass filter that BN,
normalising by the smooth signal's variance, turns into a noise amplifier), and the last
BatchNorm of every residual branch has its gamma divided by sqrt(number of residual blocks)
(as Fixup / SkipInit / zero-init-residual do, so the residual stream does not grow with depth).

Inputs are images normalised the torchvision way (``(x - mean) / std`` per channel, so they
are signed); :func:`calibration` gives a seeded batch of them.

    python -m hlsinf.zoo resnet18 --out resnet18.onnx [--resolution 224 --width 1]
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ["NETWORKS", "build", "export", "calibration", "stats"]

#: name -> what the resolution must be a multiple of
NETWORKS = {
    "resnet18": 1,
    "mobilenet_v2": 1,
    "vgg11": 32,
    "vgg16": 32,
    "squeezenet1_1": 1,
    "googlenet": 1,
    "unet": 16,
}
FULL_RESOLUTION = 224
#: conditioning of the seeded weights (module docstring, *Weights*)
SMOOTH_KERNELS = True
SCALE_RESIDUALS = True
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _check(name: str, resolution: int, width: float):
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; the zoo has {', '.join(NETWORKS)}")
    if not isinstance(resolution, int) or resolution < 16 or resolution % NETWORKS[name]:
        raise ValueError(f"{name}: resolution must be an integer >= 16"
                         + (f" and a multiple of {NETWORKS[name]}" if NETWORKS[name] > 1 else "")
                         + f", got {resolution!r}")
    if not width > 0:
        raise ValueError(f"{name}: width must be positive, got {width!r}")


def _ch(c: int, width: float) -> int:
    return max(1, round(c * width))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never 10 % below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


@functools.cache
def _defs():
    """The torch module classes (torch is imported here, on first use)."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride=1, pad=None, groups=1, act=nn.ReLU, eps=1e-5):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=eps)]
        if act is not None:
            layers.append(act(inplace=True))
        return nn.Sequential(*layers)

    # ResNet-18 -------------------------------------------------------------------------------
    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + identity)

    class ResNet18(nn.Module):
        def __init__(self, width=1.0, num_classes=1000):
            super().__init__()
            c = [_ch(v, width) for v in (64, 128, 256, 512)]
            self.conv1 = nn.Conv2d(3, c[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(c[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = c[0]
            for k, cout in enumerate(c):
                stride = 1 if k == 0 else 2
                setattr(self, f"layer{k + 1}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
                cin = cout
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    # MobileNetV2 -----------------------------------------------------------------------------
    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = round(cin * expand)
            self.use_res = stride == 1 and cin == cout
            layers = []
            if expand != 1:
                layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        #: expansion t, channels c, repeats n, first stride s
        SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]

        def __init__(self, width=1.0, num_classes=1000):
            super().__init__()
            cin = _make_divisible(32 * width)
            last = _make_divisible(1280 * max(1.0, width))
            features = [conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
            for t, c, n, s in self.SETTINGS:
                cout = _make_divisible(c * width)
                for k in range(n):
                    features.append(InvertedResidual(cin, cout, s if k == 0 else 1, t))
                    cin = cout
            features.append(conv_bn(cin, last, 1, act=nn.ReLU6))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    # VGG -------------------------------------------------------------------------------------
    class VGG(nn.Module):
        CONFIGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
                   "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                             512, 512, 512, "M"]}

        def __init__(self, config, resolution, width=1.0, num_classes=1000):
            super().__init__()
            layers, cin = [], 3
            for v in self.CONFIGS[config]:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, _ch(v, width), 3, padding=1), nn.ReLU(inplace=True)]
                    cin = _ch(v, width)
            self.features = nn.Sequential(*layers)
            pool = resolution // 32             # torchvision's 7x7 at 224x224
            self.avgpool = nn.AdaptiveAvgPool2d(pool)
            hidden = _ch(4096, width)
            self.classifier = nn.Sequential(
                nn.Linear(cin * pool * pool, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    # SqueezeNet 1.1 --------------------------------------------------------------------------
    class Fire(nn.Module):
        def __init__(self, cin, squeeze, e1, e3):
            super().__init__()
            self.squeeze = nn.Conv2d(cin, squeeze, 1)
            self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
            self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.relu(self.squeeze(x))
            return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], 1)

    class SqueezeNet11(nn.Module):
        def __init__(self, width=1.0, num_classes=1000):
            super().__init__()
            w = functools.partial(_ch, width=width)

            def fire(cin, s, e):
                return Fire(cin, w(s), w(e), w(e)), 2 * w(e)

            layers = [nn.Conv2d(3, w(64), 3, 2), nn.ReLU(inplace=True)]
            cin = w(64)
            for item in ["M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192),
                         (64, 256), (64, 256)]:
                if item == "M":
                    layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                else:
                    f, cin = fire(cin, *item)
                    layers.append(f)
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(cin, num_classes, 1), nn.ReLU(inplace=True),
                                            nn.AdaptiveAvgPool2d(1))

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    # GoogLeNet -------------------------------------------------------------------------------
    def basic(cin, cout, k, stride=1, pad=None):
        return conv_bn(cin, cout, k, stride, pad, eps=1e-3)

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.branch1 = basic(cin, c1, 1)
            self.branch2 = nn.Sequential(basic(cin, c3r, 1), basic(c3r, c3, 3))
            self.branch3 = nn.Sequential(basic(cin, c5r, 1), basic(c5r, c5, 3))     # torchvision: 3x3, not 5x5
            self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), basic(cin, pp, 1))
            self.out_channels = c1 + c3 + c5 + pp

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class GoogLeNet(nn.Module):
        BLOCKS = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "M3": None,
                  "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
                  "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
                  "4e": (256, 160, 320, 32, 128, 128), "M4": None,
                  "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)}

        def __init__(self, width=1.0, num_classes=1000):
            super().__init__()
            w = functools.partial(_ch, width=width)
            self.conv1 = basic(3, w(64), 7, 2, 3)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = basic(w(64), w(64), 1)
            self.conv3 = basic(w(64), w(192), 3)
            self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            cin = w(192)
            for name, spec in self.BLOCKS.items():
                if spec is None:
                    pool = nn.MaxPool2d(3, 2, ceil_mode=True) if name == "M3" else nn.MaxPool2d(2, 2, ceil_mode=True)
                    setattr(self, f"maxpool{name[1]}", pool)
                else:
                    block = Inception(cin, *map(w, spec))
                    setattr(self, f"inception{name}", block)
                    cin = block.out_channels
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
            for name, spec in self.BLOCKS.items():
                x = getattr(self, f"maxpool{name[1]}" if spec is None else f"inception{name}")(x)
            return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    # UNet ------------------------------------------------------------------------------------
    def double_conv(cin, cout):
        return nn.Sequential(conv_bn(cin, cout, 3), conv_bn(cout, cout, 3))

    class UNet(nn.Module):
        def __init__(self, width=1.0, num_classes=2, base=32, depth=4):
            super().__init__()
            chans = [_ch(base * 2 ** k, width) for k in range(depth + 1)]
            self.down = nn.ModuleList()
            cin = 3
            for c in chans[:-1]:
                self.down.append(double_conv(cin, c))
                cin = c
            self.pool = nn.MaxPool2d(2, 2)
            self.bottleneck = double_conv(cin, chans[-1])
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
            self.up = nn.ModuleList()
            cin = chans[-1]
            for c in reversed(chans[:-1]):
                self.up.append(double_conv(cin + c, c))
                cin = c
            self.head = nn.Conv2d(cin, num_classes, 1)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            for block, skip in zip(self.up, reversed(skips)):
                x = block(torch.cat([self.upsample(x), skip], 1))
            return self.head(x)

    def residual_bns(model):
        """The last BatchNorm of every residual branch (the one added to the shortcut)."""
        return ([m.bn2 for m in model.modules() if isinstance(m, BasicBlock)]
                + [m.conv[-1] for m in model.modules() if isinstance(m, InvertedResidual) and m.use_res])

    return dict(torch=torch, nn=nn, resnet18=ResNet18, mobilenet_v2=MobileNetV2, vgg=VGG,
                squeezenet1_1=SqueezeNet11, googlenet=GoogLeNet, unet=UNet, residual_bns=residual_bns)


def _images(n: int, resolution: int, seed: int) -> np.ndarray:
    """Seeded 'images': smooth random colour fields plus pixel noise in [0, 1], normalised the torchvision way."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 3, 4, 4))
    reps = -(-resolution // 4)
    smooth = np.repeat(np.repeat(coarse, reps, 2), reps, 3)[:, :, :resolution, :resolution]
    x = np.clip(0.7 * smooth + 0.3 * rng.uniform(0, 1, (n, 3, resolution, resolution)), 0, 1)
    return ((x - MEAN.reshape(1, 3, 1, 1)) / STD.reshape(1, 3, 1, 1)).astype(np.float32)


def build(name: str, *, resolution: int = FULL_RESOLUTION, width: float = 1.0, seed: int = 0):
    """The torch model (eval mode) with seeded weights and BN statistics."""
    _check(name, resolution, width)
    d = _defs()
    torch, nn = d["torch"], d["nn"]
    torch.manual_seed(seed)
    model = d["vgg"](name, resolution, width) if name.startswith("vgg") else d[name](width)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=gen)
                if SMOOTH_KERNELS and isinstance(m, nn.Conv2d) and m.groups == 1 and m.weight[0, 0].numel() > 1:
                    # smooth kernels: half of each k x k kernel's energy in its mean (module docstring)
                    m.weight += (2.0 / fan_in) ** 0.5 * torch.randn(*m.weight.shape[:2], 1, 1, generator=gen)
                    m.weight *= 0.5 ** 0.5
                if m.bias is not None:
                    m.bias.normal_(0, 0.05, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
                m.reset_running_stats()
                m.momentum = None               # cumulative average over the statistics batch
        residual = d["residual_bns"](model) if SCALE_RESIDUALS else []
        for bn in residual:                     # residual branches scaled by 1/sqrt(blocks) (module docstring)
            bn.weight /= len(residual) ** 0.5
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            # running statistics measured on seeded images, one forward pass in training mode
            model.train()
            model(torch.from_numpy(_images(4, resolution, seed + 2)))
    return model.eval()


def stats(name: str, *, resolution: int = FULL_RESOLUTION, width: float = 1.0) -> dict:
    """Parameters and multiply-accumulates of one image (convolutions and fully connected layers)."""
    d = _defs()
    torch, nn = d["torch"], d["nn"]
    model = build(name, resolution=resolution, width=width)
    macs = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs.append(out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        else:
            macs.append(m.in_features * m.out_features * (out.numel() // m.out_features))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return dict(params=sum(p.numel() for p in model.parameters()), macs=sum(macs))


def export(name: str, *, resolution: int = FULL_RESOLUTION, width: float = 1.0, seed: int = 0, path,
           do_constant_folding: bool = True, opset: int = 13) -> Path:
    """Export the seeded network to ONNX at ``path`` (TorchScript exporter); returns the path.

    Input ``input`` (N x 3 x resolution x resolution, N dynamic), output ``output``.
    """
    torch = _defs()["torch"]
    model = build(name, resolution=resolution, width=width, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # dynamo=False is deliberate: no onnxscript
        torch.onnx.export(model, torch.zeros(1, 3, resolution, resolution), str(path), opset_version=opset,
                          dynamo=False, do_constant_folding=do_constant_folding, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
    return path


def calibration(name: str, n: int = 4, seed: int = 0, *, resolution: int = FULL_RESOLUTION) -> np.ndarray:
    """A seeded ``n x 3 x resolution x resolution`` float32 batch of normalised images for ``name``."""
    _check(name, resolution, 1.0)
    if n < 1:
        raise ValueError(f"calibration batch size must be at least 1, got {n}")
    return _images(n, resolution, seed + 1000)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hlsinf.zoo",
                                description="Export a zoo network with seeded weights to ONNX.")
    p.add_argument("name", choices=list(NETWORKS))
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--resolution", type=int, default=FULL_RESOLUTION)
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (e.g. 0.125)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opset", type=int, default=13)
    p.add_argument("--no-constant-folding", action="store_true", help="torch.onnx.export(do_constant_folding=False)")
    p.add_argument("--calibration", metavar="NPY", help="also write a calibration batch here")
    p.add_argument("--n", type=int, default=4, help="images in the calibration batch")
    args = p.parse_args(argv)
    try:
        _check(args.name, args.resolution, args.width)
        if args.calibration and args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
    except ValueError as e:
        p.error(str(e))
    path = export(args.name, resolution=args.resolution, width=args.width, seed=args.seed, path=args.out,
                  do_constant_folding=not args.no_constant_folding, opset=args.opset)
    s = stats(args.name, resolution=args.resolution, width=args.width)
    print(f"{args.name} {args.resolution}x{args.resolution} width {args.width:g}: {s['params']:,} parameters, "
          f"{s['macs']:,} MACs per image -> {path}")
    if args.calibration:
        np.save(args.calibration, calibration(args.name, args.n, args.seed, resolution=args.resolution))
        print(f"calibration batch ({args.n} images) -> {args.calibration}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
