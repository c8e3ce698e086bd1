"""Depthwise calls of the integer reference (``CallArgs.depthwise``) against two other models.

* The same call as a dense one: a depthwise layer is a dense layer whose weights are zero
  off the diagonal (output channel c, input channel c), so ``kernel_call`` with the weights
  expanded to ``[GO][GI][CPO][CPI][3][3]`` must write the same memory.
* ``reference_fast.kernel_call_fast`` must write the same memory bit for bit.

Random calls cover padding on each side, stride 1/2, pooling, ReLU and clips, multipliers,
row tiles, output-group ranges and channel counts that are not whole groups.
"""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import ConfigError, KernelConfig
from hlsinf.reference import CallArgs, CallError
from hlsinf.reference_fast import kernel_call_fast
from tests.test_reference_fast import _random_call


def _depthwise_case(rng, cfg):
    while True:
        case = _random_call(rng, cfg)
        if case is None:
            continue
        args, x = case[:2]
        args.O = args.I
        go = args.go(cfg)
        if args.o_first >= go:
            args.o_first = go - 1
        if args.o_count is not None:
            args.o_count = min(args.o_count, go - args.o_first)
        args.depthwise = True
        if cfg.max_upsize > 1:           # the nearest upsize after pooling, on depthwise calls too
            args.upsize = int(rng.choice([1, 2, 4]))
            if args.out_plane is not None:
                args.out_plane = args.write_offset + args.out_rows * args.out_cols
        try:
            args.validate(cfg)
        except CallError:
            continue
        wmin, wmax = cfg.weight_range
        w = rng.integers(wmin, wmax + 1, go * cfg.cpo * 9).astype(ref.weight_dtype(cfg))
        w[args.I * 9:] = 0               # a packed image: lanes past the last channel are zero
        b = rng.integers(-5000, 5000, go * cfg.cpo).astype(ref.bias_dtype(cfg))
        m = rng.integers(0, 1 << cfg.mult_bits, go * cfg.cpo).astype(ref.mult_dtype(cfg))
        return args, x, w, b, m, go * args.plane_out() * cfg.cpo


def _expanded(w_dw, channels, cfg):
    """Depthwise weights as a dense O x I x 3 x 3 array, zero off the diagonal, packed."""
    dw = ref.unpack_depthwise_weights(w_dw, channels, cfg.cpo)[:, 0]
    dense = np.zeros((channels, channels, 3, 3), np.int64)
    dense[np.arange(channels), np.arange(channels)] = dw
    return ref.pack_weights(dense, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg))


CONFIGS = [
    KernelConfig(cpi=4, cpo=4, with_depthwise=True),
    KernelConfig(cpi=8, cpo=8, act_signed=True, with_depthwise=True),
    KernelConfig(cpi=2, cpo=2, bias_bits=16, acc_bits=24, mult_bits=8, max_shift=15, imax=16, with_depthwise=True),
    KernelConfig(cpi=4, cpo=4, act_bits=16, weight_bits=16, acc_bits=48, mult_bits=24, max_shift=47,
                 with_depthwise=True),
    KernelConfig(cpi=4, cpo=4, with_depthwise=True, max_upsize=4),
]


@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_depthwise_call_equals_the_dense_call_with_diagonal_weights_and_the_fast_path(k):
    cfg = CONFIGS[k]
    rng = np.random.default_rng(300 + k)
    for _ in range(40):
        args, x, w, b, m, out_size = _depthwise_case(rng, cfg)
        fill = rng.integers(0, 256, out_size * np.dtype(ref.act_dtype(cfg)).itemsize).astype(np.uint8)
        got, dense, fast = (fill.copy().view(ref.act_dtype(cfg)) for _ in range(3))
        mm = m if args.use_mult else None
        ref.kernel_call(cfg, args, x, w, b, got, mm)
        dense_args = CallArgs(**{**args.to_dict(), "depthwise": False})
        ref.kernel_call(cfg, dense_args, x, _expanded(w, args.I, cfg), b, dense, mm)
        np.testing.assert_array_equal(got, dense, err_msg=f"{cfg} {args}")
        kernel_call_fast(cfg, args, x, w, b, fast, mm)
        np.testing.assert_array_equal(fast, got, err_msg=f"{cfg} {args}")


def test_mul_depthwise_is_the_diagonal_of_mul_partial():
    rng = np.random.default_rng(5)
    win = rng.integers(-128, 128, (7, 4, 9))
    w = rng.integers(-128, 128, (4, 9))
    full = np.zeros((4, 4, 9), np.int64)
    full[np.arange(4), np.arange(4)] = w
    np.testing.assert_array_equal(ref.mul_depthwise(win, w), ref.mul_partial(win, full))


def test_pack_depthwise_weights_round_trip_and_layout():
    w = np.arange(5 * 9).reshape(5, 1, 3, 3)
    mem = ref.pack_depthwise_weights(w, 4)
    assert mem.size == 8 * 9 and not mem[45:].any()
    assert mem[(1 * 4 + 0) * 9 + 2 * 3 + 1] == w[4, 0, 2, 1]      # channel 4: group 1, lane 0
    np.testing.assert_array_equal(ref.unpack_depthwise_weights(mem, 5, 4), w)
    with pytest.raises(ValueError, match="C x 1 x 3 x 3"):
        ref.pack_depthwise_weights(np.zeros((5, 2, 3, 3)), 4)


def test_bad_depthwise_calls_and_configs_are_refused_by_name():
    cfg = KernelConfig(cpi=4, cpo=4, with_depthwise=True)
    with pytest.raises(CallError, match="kernel argument O = 6 .*equal to I = 5"):
        CallArgs(H=4, W=4, rows=4, I=5, O=6, depthwise=True).validate(cfg)
    CallArgs(H=4, W=4, rows=4, I=600, O=600, depthwise=True).validate(KernelConfig(cpi=4, cpo=4, imax=512,
                                                                                   with_depthwise=True))
    with pytest.raises(CallError, match="kernel argument I = 600 .*imax = 512"):
        CallArgs(H=4, W=4, rows=4, I=600, O=600).validate(KernelConfig(cpi=4, cpo=4, imax=512, with_depthwise=True))
    with pytest.raises(CallError, match="depthwise .*not built"):
        CallArgs(H=4, W=4, rows=4, I=5, O=5, depthwise=True).validate(KernelConfig(cpi=4, cpo=4))
    with pytest.raises(ConfigError, match="with_depthwise .*cpi == cpo"):
        KernelConfig(cpi=4, cpo=8, with_depthwise=True)
    with pytest.raises(ConfigError, match="with_depthwise .*fp32"):
        KernelConfig.from_format("fp32", cpi=4, cpo=4, with_depthwise=True)
