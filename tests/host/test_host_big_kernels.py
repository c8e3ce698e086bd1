"""Kernels above 3x3 (ResNet's and GoogLeNet's 7x7 stems, Inception's 5x5) run on the
accelerator as one 3x3 call over shifted copies of the input stacked as channels
(hlsinf.host.plan.stacked_copies): compared with onnxruntime's QDQ model and a plain numpy
convolution."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.host import Session, quantize, to_fpga
from hlsinf.host.plan import Transfer, stacked_copies
from tests.host.test_host_qdq import _layer_by_layer, _lsb, _quantize_static


def conv_model(k, stride, pad, c=3, o=6, h=15, w=13, seed=0, relu=True):
    """A float Conv k x k (+ Relu) then a 3x3 conv: the first is the stem under test."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.15, (o, c, k, k)).astype(np.float32)
    b1 = rng.normal(0, 0.1, o).astype(np.float32)
    w2 = rng.normal(0, 0.2, (4, o, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 4).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="stem", kernel_shape=[k, k],
                              strides=[stride, stride], pads=[pad] * 4)]
    t = "c1"
    if relu:
        nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
        t = "r1"
    nodes.append(helper.make_node("Conv", [t, "w2", "b2"], ["output"], name="conv2", kernel_shape=[3, 3],
                                  pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_stacked_copies_cover_the_kernel_once():
    for kh, kw in [(4, 4), (5, 5), (7, 7), (7, 3), (11, 11)]:
        copies = stacked_copies(kh, kw)
        covered = np.zeros((3 * 4, 3 * 4), int)
        for dy, dx in copies:
            covered[dy:dy + 3, dx:dx + 3] += 1
        assert (covered[:kh, :kw] == 1).all() and covered.sum() == 9 * len(copies)


@pytest.mark.parametrize("k, stride, pad", [(7, 2, 3), (5, 1, 2), (4, 1, 0), (7, 1, 3), (5, 2, 1)])
def test_quantize_static_big_kernel_on_the_accelerator(tmp_path, k, stride, pad):
    model = conv_model(k, stride, pad)
    rng = np.random.default_rng(1)
    calib = rng.uniform(-1, 1, (8, 3, 15, 13)).astype(np.float32)
    qdq = _quantize_static(model, calib, tmp_path)
    plan = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32))
    stem = next(layer for layer in plan.fpga_layers if layer.kernel == (k, k))   # on the accelerator
    assert stem.input_copies == stacked_copies(k, k)
    assert any(isinstance(s, Transfer) and s.copies for s in plan.steps)
    x = rng.uniform(-1, 1, (3, 3, 15, 13)).astype(np.float32)
    per_layer = _layer_by_layer(plan, qdq, x)
    allv = np.concatenate([v.ravel() for v in per_layer.values()])
    assert allv.max() <= 1 and np.mean(allv == 0) >= 0.99, allv.max()
    assert np.mean(_lsb(plan, qdq, x) <= 1) >= 0.999


def test_library_ptq_stem_is_exact_against_numpy(tmp_path):
    """hlsinf's own PTQ (zero point 0): the stem layer's integers equal a plain numpy 7x7/s2
    convolution of the same integers, requantised with the layer's own multiplier and shift."""
    model = conv_model(7, 2, 3, relu=False)
    rng = np.random.default_rng(2)
    calib = rng.uniform(0, 1, (8, 3, 15, 13)).astype(np.float32)
    kernel = dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True)   # the stem has no ReLU
    plan = to_fpga(quantize(model, calib, act_signed=True), kernel)
    stem = next(layer for layer in plan.fpga_layers if layer.kernel == (7, 7))
    x = rng.uniform(0, 1, (1, 3, 15, 13)).astype(np.float32)
    got = Session(plan).run(x, fetch=[stem.source, stem.output])
    xq = got[stem.source][0].astype(np.int64)
    # Recover the integer weights and bias the layer holds, in the original 7x7 shape.
    from hlsinf.reference import unpack_weights
    c = xq.shape[0]
    w3 = unpack_weights(stem.weights, 6, len(stem.input_copies) * c, 4, 4).reshape(6, len(stem.input_copies), c, 3, 3)
    w7 = np.zeros((6, c, 9, 9), np.int64)
    for k, (dy, dx) in enumerate(stem.input_copies):
        w7[:, :, dy:dy + 3, dx:dx + 3] = w3[:, k]
    assert not w7[:, :, 7:, :].any() and not w7[:, :, :, 7:].any()
    w7 = w7[:, :, :7, :7]
    xp = np.pad(xq, ((0, 0), (3, 3), (3, 3)))
    ho, wo = (15 + 6 - 7) // 2 + 1, (13 + 6 - 7) // 2 + 1
    acc = np.zeros((6, ho, wo), np.int64)
    for ky in range(7):
        for kx in range(7):
            acc += np.einsum("chw,oc->ohw", xp[:, ky:ky + 2 * ho:2, kx:kx + 2 * wo:2], w7[:, :, ky, kx])
    bias = stem.bias.reshape(-1)[:6].astype(np.int64)
    mult = stem.mult.reshape(-1)[:6].astype(np.int64)
    call = stem.calls[0]
    y = (acc + bias[:, None, None]) * mult[:, None, None]
    y = (y + (1 << (call.shift - 1))) >> call.shift
    lo, hi = call.clip_bounds(plan.cfg)
    np.testing.assert_array_equal(got[stem.output][0].astype(np.int64), np.clip(y, lo, hi))


def test_too_many_copies_for_imax_stay_on_the_cpu(tmp_path):
    model = conv_model(7, 2, 3, c=8)
    rng = np.random.default_rng(3)
    qdq = _quantize_static(model, rng.uniform(-1, 1, (4, 8, 15, 13)).astype(np.float32), tmp_path)
    plan = to_fpga(qdq, dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32))     # 9 x 8 = 72 > 64
    assert all(layer.kernel != (7, 7) for layer in plan.fpga_layers)
    assert "imax" in plan.summary()
