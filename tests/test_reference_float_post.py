"""fp32 post-operations in the reference: ``reference_float.leaky_relu`` / ``batch_norm`` and
``kernel_call`` applying ``cfg.post_ops`` in order (after clip, before pool), against plain
numpy float32 arithmetic composed by hand; ``CallArgs.validate`` on fp32 post-op arguments."""

from __future__ import annotations

import numpy as np
import pytest

from hlsinf import reference_float as rf
from hlsinf.config import KernelConfig
from hlsinf.reference import (
    CallArgs,
    CallError,
    pack_activations,
    pack_channels,
    pack_weights,
    unpack_activations,
)


def test_leaky_relu_semantics():
    y = np.array([2.0, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45], np.float32)
    alpha = rf.float_bits(0.25)
    got = rf.leaky_relu(y, alpha)
    with np.errstate(all="ignore"):
        plain = np.where(np.signbit(y), y * np.float32(0.25), y)
    np.testing.assert_array_equal(rf.to_bits(got, canonical=True), rf.to_bits(plain, canonical=True))
    assert rf.to_bits(got[3]) == 0x80000000                      # -0 * 0.25 = -0
    assert rf.to_bits(rf.leaky_relu(y[3], rf.float_bits(-1.0))) == 0          # -0 * -1 = +0
    flushed = rf.leaky_relu(y, alpha, subnormals=False)
    assert rf.to_bits(flushed[8]) == rf.to_bits(y[8])            # positive subnormal: not multiplied
    assert rf.to_bits(flushed[9]) == 0x80000000                  # negative one: flushed by the product


def test_batch_norm_rounds_product_and_sum():
    y = np.array([[1 + 2 ** -12, 3.0]], np.float32)
    m = np.array([1 + 2 ** -12, -0.5], np.float32)
    b = np.array([-1.0, 1.5], np.float32)
    got = rf.batch_norm(y, m, b)
    np.testing.assert_array_equal(rf.to_bits(got), rf.to_bits((y * m).astype(np.float32) + b))


def _layer(rng, i, o, h, w):
    x = rng.standard_normal((i, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, i, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return x, wt, b


def _call(cfg, args, x, wt, b, n_mem=None):
    go = args.go(cfg)
    out = np.zeros(go * args.plane_out() * cfg.cpo, np.float32)
    rf.kernel_call(cfg, args, pack_activations(x, cfg.cpi, np.float32), pack_weights(wt, cfg.cpi, cfg.cpo, np.float32),
                   pack_channels(b, cfg.cpo, np.float32), out, n_mem=n_mem)
    return unpack_activations(out, args.O, args.out_rows, args.out_cols, cfg.cpo)


@pytest.mark.parametrize("order", [("leaky_relu", "bn"), ("bn", "leaky_relu")])
@pytest.mark.parametrize("pool", [0, 1])
def test_kernel_call_applies_post_ops_in_cfg_order(order, pool):
    """The call with post-ops equals the call without them followed by the numpy float32
    ops in ``cfg.post_ops`` order, then pooling; the two orders differ on this data."""
    cpi = cpo = 2
    i, o, h, w = 3, 3, 6, 5
    rng = np.random.default_rng(len(order[0]) + pool)
    x, wt, b = _layer(rng, i, o, h, w)
    m = rng.standard_normal(o).astype(np.float32)
    beta = rng.standard_normal(o).astype(np.float32)
    alpha = np.float32(0.1)
    n_mem = rf.pack_bn(m, beta, cpo)
    geometry = dict(H=h, W=w, rows=h, I=i, O=o, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                    clip_lo=rf.float_bits(-3.0))
    cfg = KernelConfig.from_format("fp32", cpi=cpi, cpo=cpo, post_ops=order, with_maxpool=True)
    plain_cfg = KernelConfig.from_format("fp32", cpi=cpi, cpo=cpo)
    args = CallArgs(**geometry, pool=pool, leaky_relu=True, leaky_alpha_num=rf.float_bits(alpha), bn=True)
    got = _call(cfg, args, x, wt, b, n_mem)

    y = _call(plain_cfg, CallArgs(**geometry), x, wt, b)           # o x ho x wo, clipped
    steps = {"leaky_relu": lambda v: np.where(np.signbit(v), v * alpha, v).astype(np.float32),
             "bn": lambda v: (v * m[:, None, None] + beta[:, None, None]).astype(np.float32)}
    for op in order:
        y = steps[op](y)
    other = y
    for op in reversed(order):
        other = steps[op](other)
    assert (rf.to_bits(y) != rf.to_bits(other)).any(), "the order should matter on this data"
    if pool:
        y = rf.pool2x2(y.transpose(1, 2, 0), pool).transpose(2, 0, 1)
    np.testing.assert_array_equal(rf.to_bits(got, canonical=True), rf.to_bits(y, canonical=True))


def test_kernel_call_post_ops_off_or_missing():
    cfg = KernelConfig.from_format("fp32", cpi=2, cpo=2, post_ops=("leaky_relu", "bn"))
    rng = np.random.default_rng(1)
    x, wt, b = _layer(rng, 2, 2, 4, 4)
    base = dict(H=4, W=4, rows=4, I=2, O=2, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)
    plain = _call(KernelConfig.from_format("fp32", cpi=2, cpo=2), CallArgs(**base), x, wt, b)
    np.testing.assert_array_equal(rf.to_bits(_call(cfg, CallArgs(**base), x, wt, b)), rf.to_bits(plain))
    with pytest.raises(CallError, match="n_mem"):
        _call(cfg, CallArgs(**base, bn=True), x, wt, b)
    with pytest.raises(CallError, match="n_mem holds 2 elements"):
        _call(cfg, CallArgs(**base, bn=True), x, wt, b, n_mem=np.zeros(2, np.uint32))


def test_validate_fp32_post_op_arguments():
    cfg = KernelConfig.from_format("fp32", cpi=2, cpo=2, post_ops=("leaky_relu", "bn"))
    base = dict(H=4, W=4, rows=4, I=2, O=2)
    for alpha in (rf.float_bits(-0.1), rf.float_bits(-0.1) & 0xFFFFFFFF, rf.float_bits(0.1)):
        CallArgs(**base, leaky_relu=True, leaky_alpha_num=alpha).validate(cfg)
    with pytest.raises(CallError, match="leaky_alpha_num = 4294967296 is out of range: the 32 bits"):
        CallArgs(**base, leaky_alpha_num=1 << 32).validate(cfg)
    with pytest.raises(CallError, match="leaky_alpha_shift = 3 is out of range: 0 on an fp32 kernel"):
        CallArgs(**base, leaky_alpha_shift=3).validate(cfg)
    with pytest.raises(CallError, match="bn_shift = 1 is out of range: 0 on an fp32 kernel"):
        CallArgs(**base, bn_shift=1).validate(cfg)
    with pytest.raises(CallError, match="bn_clip_lo = 0 is out of range: None on an fp32 kernel"):
        CallArgs(**base, bn_clip_lo=0).validate(cfg)
    integer = KernelConfig(cpi=2, cpo=2, post_ops=("leaky_relu",))
    with pytest.raises(CallError, match="leaky_alpha_num = 65536 is out of range: 0 to 65535 .*fp32"):
        CallArgs(**base, leaky_alpha_num=65536).validate(integer)
