"""reference_float_fast.kernel_call_fast writes the same bits as the fp32 oracle reference_float.kernel_call."""

import numpy as np
import pytest

from hlsinf.config import KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE, CallArgs, CallError
from hlsinf.reference_float import float_bits, kernel_call, to_bits
from hlsinf.reference_float_fast import kernel_call_fast, tree_sum
from hlsinf.reference_float import dot_tree

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.17e-38, 3.4e38, -3.4e38],
                   np.float32)


def _values(rng, n, special: float):
    """Normal-ish float32 values over a wide exponent range, some special values mixed in."""
    v = (rng.standard_normal(n) * np.exp2(rng.integers(-8, 8, n))).astype(np.float32)
    mask = rng.random(n) < special
    v[mask] = rng.choice(SPECIAL, mask.sum())
    return v


def _random_call(rng, cfg):
    h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    pool = int(rng.choice([POOL_NONE, POOL_MAX, POOL_AVG]))
    stride = int(rng.integers(1, 3))
    for _ in range(100):
        pads = [int(p) for p in rng.integers(0, 3, 4)]
        first = int(rng.integers(0, h))
        rows = int(rng.integers(1, h - first + 1))
        o = int(rng.integers(1, 3 * cfg.cpo + 1))
        args = CallArgs(H=h, W=w, rows=rows, I=int(rng.integers(1, 3 * cfg.cpi + 1)), O=o,
                        pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3], stride=stride,
                        pool=pool, relu=bool(rng.integers(0, 2)), read_offset=first * w)
        try:
            args.validate(cfg)
        except CallError:
            continue
        go = args.go(cfg)
        args.o_first = int(rng.integers(0, go))
        args.o_count = int(rng.integers(1, go - args.o_first + 1)) if rng.random() < 0.5 else None
        plane = args.out_rows * args.out_cols
        args.write_offset = int(rng.integers(0, 4))
        args.out_plane = args.write_offset + plane + int(rng.integers(0, 3))
        if rng.random() < 0.5:
            args.clip_lo = float_bits(rng.uniform(-2, 0.5))
        if rng.random() < 0.5:
            args.clip_hi = float_bits(rng.uniform(0.5, 3)) & 0xFFFFFFFF
        return args
    pytest.skip("no valid call drawn")


@pytest.mark.parametrize("cpi,cpo,subnormals", [(4, 4, True), (2, 4, True), (4, 2, False), (1, 1, True)])
def test_fast_call_is_bit_exact_with_the_oracle(cpi, cpo, subnormals):
    cfg = KernelConfig.from_format("fp32", cpi=cpi, cpo=cpo, fp32_subnormals=subnormals, imax=64, wmax=16, hmax=16)
    rng = np.random.default_rng(cpi * 10 + cpo + subnormals)
    for trial in range(25):
        args = _random_call(rng, cfg)
        gi, go = args.gi(cfg), args.go(cfg)
        special = 0.0 if trial % 3 == 0 else 0.05
        x = _values(rng, gi * args.H * args.W * cfg.cpi, special)
        w = _values(rng, go * gi * cfg.cpo * cfg.cpi * 9, special / 5)
        b = _values(rng, go * cfg.cpo, special)
        size = go * args.plane_out() * cfg.cpo
        start = _values(rng, size, 0.0)
        want = kernel_call(cfg, args, x, w, b, start.copy())
        got = kernel_call_fast(cfg, args, x, w, b, start.copy())
        np.testing.assert_array_equal(to_bits(got, canonical=True), to_bits(want, canonical=True),
                                      err_msg=f"trial {trial}: {args}")


def test_post_operations_are_the_oracles():
    """leaky_relu and bn (an fp32 kernel built with them) after the clip, before the pool."""
    from hlsinf.reference_float import pack_bn
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4, imax=64, wmax=16, hmax=16, post_ops=("leaky_relu", "bn"))
    rng = np.random.default_rng(21)
    for trial in range(10):
        args = _random_call(rng, cfg)
        args.relu = False
        args.leaky_relu = bool(trial % 2)
        args.leaky_alpha_num = float_bits(rng.uniform(0, 0.5))
        args.bn = trial % 3 != 0
        gi, go = args.gi(cfg), args.go(cfg)
        x = _values(rng, gi * args.H * args.W * cfg.cpi, 0.02)
        w = _values(rng, go * gi * cfg.cpo * cfg.cpi * 9, 0.0)
        b = _values(rng, go * cfg.cpo, 0.0)
        n = pack_bn(_values(rng, go * cfg.cpo, 0.0), _values(rng, go * cfg.cpo, 0.0), cfg.cpo)
        size = go * args.plane_out() * cfg.cpo
        want = kernel_call(cfg, args, x, w, b, np.zeros(size, np.float32), None, n)
        got = kernel_call_fast(cfg, args, x, w, b, np.zeros(size, np.float32), None, n)
        np.testing.assert_array_equal(to_bits(got, canonical=True), to_bits(want, canonical=True),
                                      err_msg=f"trial {trial}: {args}")


def test_large_call_blocks_and_groups():
    """A call with many input groups and more pixels than one block holds."""
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4, imax=512, wmax=64, hmax=64)
    rng = np.random.default_rng(5)
    args = CallArgs(H=40, W=40, rows=40, I=200, O=8, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                    relu=True, pool=POOL_MAX).validate(cfg)
    x = _values(rng, args.gi(cfg) * 40 * 40 * 4, 0.0)
    w = _values(rng, args.go(cfg) * args.gi(cfg) * 16 * 9, 0.0)
    b = _values(rng, 8, 0.0)
    want = kernel_call(cfg, args, x, w, b, np.zeros(2 * 400 * 4, np.float32))
    got = kernel_call_fast(cfg, args, x, w, b, np.zeros(2 * 400 * 4, np.float32))
    np.testing.assert_array_equal(to_bits(got), to_bits(want))


@pytest.mark.parametrize("n", [1, 2, 3, 9, 18, 36, 37])
def test_tree_sum_is_dot_tree(n):
    v = _values(np.random.default_rng(n), 50 * n, 0.02).reshape(50, n)
    np.testing.assert_array_equal(to_bits(tree_sum(v), canonical=True), to_bits(dot_tree(v), canonical=True))


def test_same_errors_as_the_oracle():
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4)
    args = CallArgs(H=4, W=4, rows=4, I=4, O=4, shift=3)
    with pytest.raises(CallError, match="shift"):
        kernel_call_fast(cfg, args, np.zeros(64, np.float32), np.zeros(144, np.float32), np.zeros(4, np.float32),
                         np.zeros(64, np.float32))
    args = CallArgs(H=4, W=4, rows=4, I=4, O=4)
    with pytest.raises(CallError, match="w_mem"):
        kernel_call_fast(cfg, args, np.zeros(64, np.float32), np.zeros(10, np.float32), np.zeros(4, np.float32),
                         np.zeros(64, np.float32))
    with pytest.raises(CallError, match="number_format"):
        kernel_call_fast(KernelConfig(cpi=4, cpo=4), args, None, None, None, np.zeros(4))
