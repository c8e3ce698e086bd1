"""Pointwise calls of the integer reference (``CallArgs.pointwise``) against an independent oracle.

The oracle is a plain 1x1 convolution: ``numpy.einsum`` over the unpacked ``O x I`` weights and
``C x H x W`` input, then the existing stage functions ``add_bias``, ``requantize`` and ``pool2x2``,
written back with ``pack``/``unpack_activations``; ``reference_fast.kernel_call_fast`` (what the
reference device runs) must agree bit for bit. Random calls cover channel counts that are not whole
super-pixel groups, row tiles, output-group ranges, ReLU, clips, multipliers and pooling.
"""

import math

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import ConfigError, KernelConfig
from hlsinf.reference import CallArgs, CallError
from hlsinf.reference_fast import kernel_call_fast

CFGS = [KernelConfig.from_format("int8", cpi=2, cpo=2, imax=64, wmax=16, hmax=16, with_pointwise=True),
        KernelConfig.from_format("uint8", cpi=4, cpo=8, imax=200, wmax=16, hmax=16, with_pointwise=True),
        KernelConfig.from_format("int8", cpi=8, cpo=4, imax=300, wmax=16, hmax=16, with_pointwise=True)]


def oracle(cfg, args, x, w, b, m):
    """The call's output channels ``groups`` x out_rows x out_cols from a plain 1x1 convolution."""
    tile = x[:, args.read_offset // args.W: args.read_offset // args.W + args.rows]
    sums = np.einsum("ihw,oi->hwo", tile.astype(np.int64), w.astype(np.int64))
    channels = slice(args.o_first * cfg.cpo, min(args.O, (args.o_first + len(args.groups(cfg))) * cfg.cpo))
    acc = ref.add_bias(sums[..., channels], b[channels], cfg)
    y = ref.requantize(acc, m[channels] if args.use_mult else 1, args.shift, *args.clip_bounds(cfg))
    return ref.pool2x2(y, args.pool).transpose(2, 0, 1), channels


def random_case(rng, cfg):
    i = int(rng.integers(1, ref.pointwise_imax(cfg) + 1))
    o = int(rng.integers(1, 20))
    h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    rows = int(rng.integers(2, h + 1))
    go = math.ceil(o / cfg.cpo)
    o_first = int(rng.integers(0, go))
    args = CallArgs(H=h, W=w, rows=rows, I=i, O=o, read_offset=int(rng.integers(0, h - rows + 1)) * w,
                    o_first=o_first, o_count=int(rng.integers(1, go - o_first + 1)), relu=bool(rng.integers(2)),
                    use_mult=bool(rng.integers(2)), pool=int(rng.integers(3)), pointwise=True)
    args.shift = 20 if args.use_mult else 8
    return args.validate(cfg)


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: f"{c.cpi}x{c.cpo}")
@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_1x1_convolution(cfg, seed):
    rng = np.random.default_rng(seed)
    args = random_case(rng, cfg)
    lo, hi = cfg.act_range
    x = rng.integers(lo, hi + 1, (args.I, args.H, args.W))
    w = rng.integers(-128, 128, (args.O, args.I))
    b = rng.integers(-3000, 3000, args.O)
    m = rng.integers(0, 1 << cfg.mult_bits, args.O)
    x_mem = ref.pack_superpixels(x, cfg.cpi, ref.act_dtype(cfg))
    w_mem = ref.pack_pointwise_weights(w, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg))
    b_mem = ref.pack_channels(b, cfg.cpo, ref.bias_dtype(cfg))
    m_mem = ref.pack_channels(m, cfg.cpo, ref.mult_dtype(cfg))
    go = args.go(cfg)
    out = np.zeros(go * args.plane_out() * cfg.cpo, ref.act_dtype(cfg))
    fast = out.copy()
    ref.kernel_call(cfg, args, x_mem, w_mem, b_mem, out, m_mem)
    kernel_call_fast(cfg, args, x_mem, w_mem, b_mem, fast, m_mem)
    assert np.array_equal(out, fast)
    want, channels = oracle(cfg, args, x, w, b, m)
    got = ref.unpack_activations(out, go * cfg.cpo, args.out_rows, args.out_cols, cfg.cpo)[channels]
    assert np.array_equal(got, want)
    # Channels outside the call's output groups are not written.
    untouched = np.ones(go * cfg.cpo, bool)
    untouched[args.o_first * cfg.cpo: (args.o_first + len(args.groups(cfg))) * cfg.cpo] = False
    assert not ref.unpack_activations(out, go * cfg.cpo, args.out_rows, args.out_cols, cfg.cpo)[untouched].any()


@pytest.mark.parametrize("cpi", [1, 2, 8])
def test_pack_unpack_round_trip_and_slots(cpi):
    rng = np.random.default_rng(cpi)
    x = rng.integers(-128, 128, (9 * cpi + 5, 3, 4))
    mem = ref.pack_superpixels(x, cpi)
    assert mem.size == 2 * 9 * cpi * 12
    assert np.array_equal(ref.unpack_superpixels(mem, x.shape[0], 3, 4, cpi), x)
    # Slot t of super-pixel group s is channel group s*9 + t: the GIHWCPI groups, nine to a pixel.
    gi = ref.pack_activations(x, cpi).reshape(-1, 12, cpi)
    sp = mem.reshape(2, 12, 9, cpi)
    for g in range(gi.shape[0]):
        assert np.array_equal(sp[g // 9, :, g % 9], gi[g])
    w = rng.integers(-128, 128, (5, x.shape[0], 1, 1))
    wm = ref.pack_pointwise_weights(w, cpi, 2)
    assert np.array_equal(ref.unpack_pointwise_weights(wm, 5, x.shape[0], cpi, 2), w)


def test_bad_calls_are_named():
    cfg = CFGS[0]
    base = dict(H=4, W=4, rows=4, I=8, O=4, pointwise=True)
    with pytest.raises(CallError, match="stride"):
        CallArgs(**base, stride=2).validate(cfg)
    with pytest.raises(CallError, match="pad_left"):
        CallArgs(**base, pad_left=1).validate(cfg)
    with pytest.raises(CallError, match="pointwise"):
        CallArgs(**{**base, "O": 8}, depthwise=True).validate(KernelConfig(cpi=2, cpo=2, with_pointwise=True,
                                                               with_depthwise=True))
    with pytest.raises(CallError, match="with_pointwise"):
        CallArgs(**base).validate(KernelConfig(cpi=2, cpo=2))
    CallArgs(**{**base, "I": 9 * cfg.imax}).validate(cfg)         # one product per channel: 9x imax
    with pytest.raises(CallError, match="I = 577 .* 1 to 576 in a pointwise call"):
        CallArgs(**{**base, "I": 9 * cfg.imax + 1}).validate(cfg)
    with pytest.raises(CallError, match="I"):
        CallArgs(**{**base, "I": cfg.imax + 1, "pointwise": False}).validate(cfg)
    with pytest.raises(CallError, match="w_mem"):
        args = CallArgs(**base).validate(cfg)
        ref.kernel_call(cfg, args, np.zeros(4 * 4 * 18, np.int8), np.zeros(10, np.int8), np.zeros(4, np.int32),
                        np.zeros(64, np.int8))
    with pytest.raises(ConfigError, match="with_pointwise"):
        KernelConfig.from_format("fp32", cpi=2, cpo=2, with_pointwise=True)
    with pytest.raises(ConfigError, match="with_pointwise"):
        KernelConfig.from_format("int4", cpi=2, cpo=2, with_pointwise=True)


def test_ideal_cycles_count_superpixel_frames():
    cfg = CFGS[2]
    args = CallArgs(H=14, W=14, rows=14, I=288, O=96, pointwise=True).validate(cfg)
    assert args.ideal_cycles(cfg) == 4 * 14 * 14 * 24       # GS = 288 / 72, GO = 96 / 4
