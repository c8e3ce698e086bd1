"""The reference device's fast path against the readable oracle, bit for bit, on random calls.

Every argument kind a call has: padding on each side, stride 1/2, max/avg pooling, row
tiles (read/write offsets into larger planes), output-group ranges, ReLU and clip bounds,
multiplier or shift only, uint8/int8 and 16-bit data, saturation of the accumulator, input
channels without weights; each through both product paths (onnxruntime MatMulInteger for
8-bit data, exact float32/float64 BLAS chunks) and both schedules (in this thread, blocks on
the thread pool). The whole output memory (not only what the call writes) must be equal.
"""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf import reference_fast
from hlsinf.config import KernelConfig
from hlsinf.reference import CallArgs
from hlsinf.reference_fast import kernel_call_fast, prepare_weights


def _random_call(rng, cfg):
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    I = int(rng.integers(1, 4 * cfg.cpi + 2))
    if rng.integers(0, 4) == 0:          # many input groups: sums beyond 2**24, several chunks
        I = int(rng.integers(4 * cfg.cpi, 40 * cfg.cpi))
    I = min(I, cfg.imax)
    O = int(rng.integers(1, 3 * cfg.cpo + 2))
    H = int(rng.integers(3, 12))
    W = int(rng.integers(3, 12))
    stride = int(rng.choice([1, 2]))
    pads = [int(v) for v in rng.integers(0, 3, 4)]
    rows = int(rng.integers(1, H + 1))
    start = int(rng.integers(0, H - rows + 1))
    go = -(-O // cfg.cpo)
    o_first = int(rng.integers(0, go))
    o_count = None if rng.integers(0, 2) else int(rng.integers(1, go - o_first + 1))
    lo_hi = sorted(int(v) for v in rng.integers(amin, amax + 1, 2))
    args = CallArgs(H=H, W=W, rows=rows, I=I, O=O, pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2],
                    pad_right=pads[3], stride=stride, o_first=o_first, o_count=o_count,
                    relu=bool(rng.integers(0, 2)),
                    clip_lo=lo_hi[0] if rng.integers(0, 3) == 0 else None,
                    clip_hi=lo_hi[1] if rng.integers(0, 3) == 0 else None,
                    shift=int(rng.integers(0, cfg.max_shift + 1)) if rng.integers(0, 2) else int(rng.integers(0, 12)),
                    use_mult=cfg.with_multiplier and bool(rng.integers(0, 2)), read_offset=start * W)
    if args.conv_rows < 1 or args.conv_cols < 1:
        return None
    if args.conv_rows >= 2 and args.conv_cols >= 2:
        args.pool = int(rng.integers(0, 3))
    if args.relu and args.clip_hi is not None and args.clip_hi < 0:
        args.clip_hi = None
    extra = int(rng.integers(0, 2)) * int(rng.integers(1, 20))
    args.write_offset = int(rng.integers(0, 5))
    args.out_plane = args.write_offset + args.out_rows * args.out_cols + extra
    if cfg.number_format == "fixed":
        args.shift, args.use_mult = cfg.frac_bits, False
    args.validate(cfg)
    x = rng.integers(amin, amax + 1, args.gi(cfg) * cfg.cpi * H * W)
    if rng.integers(0, 4) == 0:          # extremes: every product at its largest magnitude
        x = np.full_like(x, amin if amin < 0 and rng.integers(0, 2) else amax)
    w = rng.integers(wmin, wmax + 1, go * args.gi(cfg) * cfg.cpo * cfg.cpi * 9)
    if rng.integers(0, 4) == 0:
        w = np.full_like(w, wmin if rng.integers(0, 2) else wmax)
    if rng.integers(0, 3) == 0:          # input channels without weights (padding lanes), sometimes all
        lanes = w.reshape(go, args.gi(cfg), cfg.cpo, cfg.cpi, 9)
        dead = rng.random((args.gi(cfg), cfg.cpi)) < rng.choice([0.5, 1.0])
        lanes.transpose(1, 3, 0, 2, 4)[dead] = 0
        w = lanes.reshape(-1)
    blo, bhi = cfg.bias_range
    b = rng.integers(blo, bhi + 1, go * cfg.cpo) if rng.integers(0, 3) == 0 else rng.integers(-5000, 5000, go * cfg.cpo)
    m = rng.integers(0, 1 << cfg.mult_bits, go * cfg.cpo)
    out_size = go * args.out_plane * cfg.cpo
    return (args, x.astype(ref.act_dtype(cfg)), w.astype(ref.weight_dtype(cfg)), b.astype(ref.bias_dtype(cfg)),
            m.astype(ref.mult_dtype(cfg)), out_size)


CONFIGS = [
    KernelConfig(cpi=4, cpo=4),
    KernelConfig(cpi=8, cpo=8, act_signed=True),
    KernelConfig(cpi=2, cpo=8, bias_bits=16, acc_bits=24, mult_bits=8, max_shift=15, imax=16),
    KernelConfig(cpi=8, cpo=2, act_signed=True, with_multiplier=False),
    KernelConfig(cpi=1, cpo=1),
    KernelConfig(cpi=4, cpo=4, act_bits=16, weight_bits=16, acc_bits=48, mult_bits=24, max_shift=47),
    KernelConfig(cpi=4, cpo=8, act_bits=16, act_signed=True, weight_bits=8, acc_bits=40),
    KernelConfig(cpi=4, cpo=4, rounding="trunc"),
    KernelConfig(cpi=2, cpo=4, act_signed=True, rounding="trunc", overflow="wrap"),
    KernelConfig(cpi=4, cpo=2, overflow="wrap"),
    KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, rounding="trunc", overflow="wrap"),
    KernelConfig.from_format("fixed<16,8>", cpi=2, cpo=2, overflow="wrap"),
]


@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_fast_kernel_call_equals_the_oracle_bit_for_bit(k, monkeypatch):
    cfg = CONFIGS[k]
    rng = np.random.default_rng(100 + k)
    done = 0
    while done < 60:
        case = _random_call(rng, cfg)
        if case is None:
            continue
        args, x, w, b, m, out_size = case
        fill = rng.integers(0, 256, out_size * np.dtype(ref.act_dtype(cfg)).itemsize).astype(np.uint8)
        want = fill.copy().view(ref.act_dtype(cfg))
        got = fill.copy().view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, x, w, b, want, m if args.use_mult else None)
        prepared = prepare_weights(cfg, args, w, use_onnxruntime=bool(rng.integers(0, 2))) if rng.integers(0, 4) else None
        monkeypatch.setattr(reference_fast, "_PARALLEL_MACS", int(rng.choice([0, 1 << 25])))
        kernel_call_fast(cfg, args, x, w, b, got, m if args.use_mult else None, prepared=prepared)
        np.testing.assert_array_equal(got, want, err_msg=f"{cfg} {args}")
        done += 1


def test_products_beyond_float32_are_split_into_exact_chunks():
    """255 x 127 x 9 per input channel: 2**24 holds 57 channels, so 256 channels take 5 exact
    float32 chunks; the sum (about 2**26) is right to the last unit."""
    cfg = KernelConfig(cpi=8, cpo=8)
    args = CallArgs(H=3, W=3, rows=3, I=256, O=8, shift=0)
    assert 255 * 127 * 9 * 57 <= 1 << 24 < 255 * 127 * 9 * 58
    x = np.full(args.gi(cfg) * 8 * 9, 255, np.uint8)
    w = np.full(args.gi(cfg) * 8 * 8 * 9, 127, np.int8)
    b = np.full(8, -(255 * 127 * 256 * 9) + 100, np.int32)      # brings the exact sum down to 100
    prepared = prepare_weights(cfg, args, w, use_onnxruntime=False)
    assert prepared.dtype == np.float32 and len(prepared.chunks) == 5 and prepared.chunks[0] == (0, 57)
    out = np.zeros(8, np.uint8)
    kernel_call_fast(cfg, args, x, w, b, out, prepared=prepared)
    assert list(out) == [100] * 8
    want = np.zeros(8, np.uint8)
    ref.kernel_call(cfg, args, x, w, b, want)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("signed", [False, True])
def test_integer_products_do_not_saturate_pairs_to_int16(signed):
    """uint8 255 (int8 -128) times int8 -128/127: every pair of products is beyond int16, where
    onnxruntime's uint8 x int8 kernels without VNNI would clamp; the uint8 x uint8 MatMulInteger
    of the fast path is exact. The bias brings each channel's exact sum to 100 + channel."""
    cfg = KernelConfig(cpi=8, cpo=8, act_signed=signed)
    args = CallArgs(H=3, W=3, rows=3, I=64, O=16)
    a = cfg.act_range[0] if signed else cfg.act_range[1]
    x = np.full(args.gi(cfg) * 8 * 9, a, ref.act_dtype(cfg))
    w = np.where(np.arange(args.go(cfg) * args.gi(cfg) * 8 * 8 * 9) % 5 < 2, -128, 127).astype(np.int8)
    exact = (a * ref.unpack_weights(w, 16, 64, 8, 8).astype(np.int64)).sum(axis=(1, 2, 3))
    assert np.abs(exact).max() > 1 << 20
    b = (100 - exact + np.arange(16)).astype(np.int32)
    prepared = prepare_weights(cfg, args, w)
    assert prepared.integer is not None
    got, want = np.zeros(16, ref.act_dtype(cfg)), np.zeros(16, ref.act_dtype(cfg))
    kernel_call_fast(cfg, args, x, w, b, got, prepared=prepared)
    ref.kernel_call(cfg, args, x, w, b, want)
    np.testing.assert_array_equal(want, 100 + np.arange(16))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_fast_residual_add_equals_the_oracle(k, monkeypatch):
    """Post-op residual_add (operand before pooling, its own plane and offset) in the fast path."""
    cfg = KernelConfig(**{**CONFIGS[k].to_dict(), "post_ops": ("residual_add",)})
    rng = np.random.default_rng(200 + k)
    amin, amax = cfg.act_range
    done = 0
    while done < 30:
        case = _random_call(rng, cfg)
        if case is None:
            continue
        args, x, w, b, m, out_size = case
        args.residual_add = bool(rng.integers(0, 4))
        args.r_mult = int(rng.integers(0, 1 << 16))
        args.r_shift = int(rng.integers(0, 32)) if rng.integers(0, 2) else int(rng.integers(8, 17))
        args.r_relu = bool(rng.integers(0, 2))
        lo_hi = sorted(int(v) for v in rng.integers(amin, amax + 1, 2))
        args.r_clip_lo, args.r_clip_hi = (lo_hi if rng.integers(0, 3) == 0 else (None, None))
        pixels = args.conv_rows * args.conv_cols
        if rng.integers(0, 2):
            args.r_offset = int(rng.integers(0, 4))
            args.r_plane = args.r_offset + pixels + int(rng.integers(0, 3))
        args.validate(cfg)
        r_plane = args.residual_geometry()[1]
        r = rng.integers(amin, amax + 1, args.go(cfg) * r_plane * cfg.cpo).astype(ref.act_dtype(cfg))
        fill = rng.integers(0, 256, out_size * np.dtype(ref.act_dtype(cfg)).itemsize).astype(np.uint8)
        want = fill.copy().view(ref.act_dtype(cfg))
        got = fill.copy().view(ref.act_dtype(cfg))
        mm = m if args.use_mult else None
        ref.kernel_call(cfg, args, x, w, b, want, mm, r_mem=r)
        monkeypatch.setattr(reference_fast, "_PARALLEL_MACS", int(rng.choice([0, 1 << 25])))
        kernel_call_fast(cfg, args, x, w, b, got, mm, r_mem=r)
        np.testing.assert_array_equal(got, want, err_msg=f"{cfg} {args}")
        done += 1


POST_CONFIGS = [
    KernelConfig(cpi=4, cpo=4, act_signed=True, post_ops=("leaky_relu", "bn", "table")),
    KernelConfig(cpi=8, cpo=4, post_ops=("table", "bn")),
]


@pytest.mark.parametrize("k", range(len(POST_CONFIGS)))
def test_fast_post_ops_equal_the_oracle(k, monkeypatch):
    """Post-ops (a non-monotone random table among them) before max / average pooling: the
    fast path pools after them, as the kernel does."""
    cfg = POST_CONFIGS[k]
    rng = np.random.default_rng(300 + k)
    amin, amax = cfg.act_range
    done = 0
    while done < 30:
        case = _random_call(rng, cfg)
        if case is None:
            continue
        args, x, w, b, m, out_size = case
        args.table = bool(rng.integers(0, 4))
        args.bn = bool(rng.integers(0, 2))
        args.bn_shift = int(rng.integers(0, 10))
        if "leaky_relu" in cfg.post_ops and not args.relu:
            args.leaky_relu, args.leaky_alpha_num, args.leaky_alpha_shift = bool(rng.integers(0, 2)), 26, 8
        t_mem = rng.integers(amin, amax + 1, 256).astype(ref.act_dtype(cfg))
        n_mem = ref.pack_bn(rng.integers(-300, 300, args.go(cfg) * cfg.cpo),
                            rng.integers(-5000, 5000, args.go(cfg) * cfg.cpo), cfg.cpo)
        want = np.zeros(out_size, ref.act_dtype(cfg))
        got = want.copy()
        mm = m if args.use_mult else None
        ref.kernel_call(cfg, args, x, w, b, want, mm, n_mem, t_mem=t_mem)
        monkeypatch.setattr(reference_fast, "_PARALLEL_MACS", int(rng.choice([0, 1 << 25])))
        kernel_call_fast(cfg, args, x, w, b, got, mm, n_mem=n_mem, t_mem=t_mem)
        np.testing.assert_array_equal(got, want, err_msg=f"{cfg} {args}")
        done += 1


def test_table_lookup_by_loops():
    """kernel_call with the table equals the call without it looked up entry by entry."""
    cfg = POST_CONFIGS[0]
    rng = np.random.default_rng(5)
    case = None
    while case is None:
        case = _random_call(rng, cfg)
    args, x, w, b, m, out_size = case
    args.pool = 0
    table = rng.integers(-128, 128, 256)
    t_mem = ref.make_table(lambda v: table[v + 128], cfg)
    plain = np.zeros(out_size, np.int8)
    ref.kernel_call(cfg, args, x, w, b, plain, m if args.use_mult else None)
    args.table = True
    looked = np.zeros(out_size, np.int8)
    ref.kernel_call(cfg, args, x, w, b, looked, m if args.use_mult else None, t_mem=t_mem)
    for i in range(out_size):
        if looked[i] != plain[i] or plain[i] != 0:
            assert looked[i] == table[int(plain[i]) + 128]
