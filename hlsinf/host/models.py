"""CNNs built with ``onnx.helper`` and seeded random weights, for tests, examples and benchmarks.

Nothing is downloaded: each builder returns an ``onnx.ModelProto`` whose weights come from
a seeded generator (He-style scaling so activations keep a sensible range through depth).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ModelBuilder", "small_cnn", "vgg16", "segnet"]


class ModelBuilder:
    """Append layers to a float NCHW graph; each method returns the name of its output."""

    def __init__(self, name: str, input_shape, seed: int = 0, opset: int = 17):
        from onnx import TensorProto, helper
        self.helper, self.TP = helper, TensorProto
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
        self.channels = input_shape[1]
        self.count = 0

    def _name(self, kind):
        self.count += 1
        return f"{kind}{self.count}"

    def _init(self, name, arr):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def conv(self, x, out_ch, k=3, stride=1, pad=None, bias=True, relu=True, bn=False):
        n = self._name("conv")
        pad = k // 2 if pad is None else pad
        pads = list(pad) if isinstance(pad, (list, tuple)) else [pad] * 4
        fan_in = self.channels * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (out_ch, self.channels, k, k))
        ins = [x, self._init(f"{n}_w", w)]
        if bias:
            ins.append(self._init(f"{n}_b", self.rng.normal(0, 0.05, out_ch)))
        y = f"{n}_out"
        self.nodes.append(self.helper.make_node("Conv", ins, [y], name=n, kernel_shape=[k, k],
                                                strides=[stride, stride], pads=pads))
        self.channels = out_ch
        if bn:
            b = f"{n}_bn"
            params = [self._init(f"{b}_scale", self.rng.uniform(0.5, 1.5, out_ch)),
                      self._init(f"{b}_bias", self.rng.normal(0, 0.1, out_ch)),
                      self._init(f"{b}_mean", self.rng.normal(0, 0.1, out_ch)),
                      self._init(f"{b}_var", self.rng.uniform(0.5, 1.5, out_ch))]
            self.nodes.append(self.helper.make_node("BatchNormalization", [y] + params, [f"{b}_out"], name=b))
            y = f"{b}_out"
        if relu:
            r = self._name("relu")
            self.nodes.append(self.helper.make_node("Relu", [y], [f"{r}_out"], name=r))
            y = f"{r}_out"
        return y

    def pool(self, x, kind="max", k=2, stride=2):
        n = self._name(f"{kind}pool")
        op = "MaxPool" if kind == "max" else "AveragePool"
        self.nodes.append(self.helper.make_node(op, [x], [f"{n}_out"], name=n, kernel_shape=[k, k], strides=[stride, stride]))
        return f"{n}_out"

    def upsample(self, x, factor=2):
        n = self._name("upsample")
        scales = self._init(f"{n}_scales", [1, 1, factor, factor])
        self.nodes.append(self.helper.make_node("Resize", [x, "", scales], [f"{n}_out"], name=n, mode="nearest"))
        return f"{n}_out"

    def global_pool(self, x):
        n = self._name("gap")
        self.nodes.append(self.helper.make_node("GlobalAveragePool", [x], [f"{n}_out"], name=n))
        return f"{n}_out"

    def flatten(self, x, features):
        n = self._name("flatten")
        self.nodes.append(self.helper.make_node("Flatten", [x], [f"{n}_out"], name=n))
        self.channels = features
        return f"{n}_out"

    def gemm(self, x, out, relu=False):
        n = self._name("fc")
        w = self.rng.normal(0, np.sqrt(2.0 / self.channels), (out, self.channels))
        self.nodes.append(self.helper.make_node("Gemm", [x, self._init(f"{n}_w", w),
                                                         self._init(f"{n}_b", self.rng.normal(0, 0.05, out))],
                                                [f"{n}_out"], name=n, transB=1))
        self.channels = out
        y = f"{n}_out"
        if relu:
            r = self._name("relu")
            self.nodes.append(self.helper.make_node("Relu", [y], [f"{r}_out"], name=r))
            y = f"{r}_out"
        return y

    def softmax(self, x, axis=-1):
        n = self._name("softmax")
        self.nodes.append(self.helper.make_node("Softmax", [x], [f"{n}_out"], name=n, axis=axis))
        return f"{n}_out"

    def build(self, y):
        helper = self.helper
        out = helper.make_tensor_value_info(y, self.TP.FLOAT, None)
        graph = helper.make_graph(self.nodes, self.name, [self.input], [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="hlsinf.host.models")
        model.ir_version = 8
        return model


def small_cnn(h: int = 12, w: int = 12, channels: int = 3, classes: int = 10, seed: int = 0, bn: bool = False):
    """A test-sized CNN: 3x3 and 1x1 convolutions, padding 0 and 1, stride 1 and 2, channel
    counts that are not multiples of 4 or 8, max and average pooling, Gemm and Softmax."""
    b = ModelBuilder("small_cnn", [1, channels, h, w], seed)
    x = b.conv("input", 6, 3, 1, 1, bn=bn)          # 3x3 pad 1
    x = b.pool(x, "max")                              # fused 2x2 max pool
    x = b.conv(x, 10, 1, 1, 0)                       # 1x1 pad 0
    x = b.conv(x, 7, 3, 2, 1)                        # 3x3 stride 2
    x = b.conv(x, 9, 3, 1, 0, bn=bn)                 # 3x3 pad 0
    hh = ((h // 2 + 2 - 3) // 2 + 1) - 2
    ww = ((w // 2 + 2 - 3) // 2 + 1) - 2
    if hh >= 2 and ww >= 2:
        x = b.conv(x, 5, 3, 1, 1)
        x = b.pool(x, "avg")
        hh, ww = hh // 2, ww // 2
    else:
        x = b.conv(x, 5, 3, 1, 1)
    x = b.flatten(x, b.channels * hh * ww)
    x = b.gemm(x, classes)
    return b.build(b.softmax(x))


def vgg16(h: int = 224, w: int = 224, classes: int = 1000, seed: int = 0):
    """VGG16 (13 conv 3x3 + ReLU, 5 max pools, 3 fully connected, softmax)."""
    b = ModelBuilder("vgg16", [1, 3, h, w], seed)
    x = "input"
    for block, (n, ch) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]):
        for _ in range(n):
            x = b.conv(x, ch)
        x = b.pool(x, "max")
    x = b.flatten(x, 512 * (h // 32) * (w // 32))
    x = b.gemm(x, 4096, relu=True)
    x = b.gemm(x, 4096, relu=True)
    x = b.gemm(x, classes)
    return b.build(b.softmax(x))


def segnet(h: int = 224, w: int = 224, classes: int = 12, seed: int = 0, width: int = 1):
    """A SegNet-like encoder-decoder: VGG-style encoder with max pools, decoder with nearest
    upsampling and 3x3 convs, 1x1 classifier, per-pixel softmax."""
    b = ModelBuilder("segnet", [1, 3, h, w], seed)
    x = "input"
    enc = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
    for n, ch in enc:
        for _ in range(n):
            x = b.conv(x, ch * width // 1, bn=True)
        x = b.pool(x, "max")
    for n, ch in reversed(enc):
        x = b.upsample(x)
        for k in range(n):
            x = b.conv(x, ch, bn=True)
    x = b.conv(x, classes, 1, 1, 0, relu=False)
    return b.build(b.softmax(x, axis=1))
