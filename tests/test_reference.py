"""The reference model against an independent computation: plain int64 loops over NCHW arrays."""


import numpy as np
import pytest

from hlsinf.config import ConfigError, KernelConfig
from hlsinf import reference as ref
from hlsinf.reference import CallArgs, CallError


def naive_layer(x, w, b, m, args: CallArgs, cfg: KernelConfig):
    """Direct loops: conv 3x3 over the padded tile, bias, requantise, pool. Independent of the packing code."""
    C, _, W = x.shape
    O = w.shape[0]
    tile = x[:, args.read_offset // W: args.read_offset // W + args.rows, :].astype(np.int64)
    tile = np.pad(tile, ((0, 0), (args.pad_top, args.pad_bottom), (args.pad_left, args.pad_right)))
    ho = (tile.shape[1] - 3) // args.stride + 1
    wo = (tile.shape[2] - 3) // args.stride + 1
    amin, amax = cfg.acc_range
    lo, hi = args.clip_bounds(cfg)
    y = np.zeros((O, ho, wo), np.int64)
    for o in range(O):
        for r in range(ho):
            for c in range(wo):
                s = 0
                for i in range(C):
                    for ky in range(3):
                        for kx in range(3):
                            s += int(tile[i, r * args.stride + ky, c * args.stride + kx]) * int(w[o, i, ky, kx])
                acc = min(max(s + int(b[o]), amin), amax)
                mult = int(m[o]) if args.use_mult else 1
                v = acc * mult
                if args.shift:
                    half = (1 << (args.shift - 1)) if cfg.rounding == "round" else 0
                    v = (v + half) // (1 << args.shift)
                if cfg.overflow == "wrap":        # the low act_bits bits, as the activation type
                    v %= 1 << cfg.act_bits
                    if cfg.act_signed and v >= 1 << (cfg.act_bits - 1):
                        v -= 1 << cfg.act_bits
                y[o, r, c] = min(max(v, lo), hi)
    if args.pool == ref.POOL_NONE:
        return y
    hp, wp = ho // 2, wo // 2
    p = np.zeros((O, hp, wp), np.int64)
    for o in range(O):
        for r in range(hp):
            for c in range(wp):
                q = [y[o, 2 * r + dy, 2 * c + dx] for dy in (0, 1) for dx in (0, 1)]
                p[o, r, c] = max(q) if args.pool == ref.POOL_MAX else (sum(q) + 2) // 4
    return p


def random_case(rng, cfg):
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    I = int(rng.integers(1, 3 * cfg.cpi + 2))
    O = int(rng.integers(1, 3 * cfg.cpo + 2))
    H = int(rng.integers(3, 9))
    W = int(rng.integers(3, 9))
    args = CallArgs(H=H, W=W, rows=H, I=I, O=O,
                    pad_top=int(rng.integers(0, 2)), pad_bottom=int(rng.integers(0, 2)),
                    pad_left=int(rng.integers(0, 2)), pad_right=int(rng.integers(0, 2)),
                    stride=int(rng.choice([1, 2])), relu=bool(rng.integers(0, 2)),
                    shift=int(rng.integers(0, 12)), use_mult=bool(rng.integers(0, 2)))
    if args.conv_rows >= 2 and args.conv_cols >= 2:
        args.pool = int(rng.integers(0, 3))
    x = rng.integers(amin, amax + 1, (I, H, W))
    w = rng.integers(wmin, wmax + 1, (O, I, 3, 3))
    b = rng.integers(-5000, 5000, O)
    m = rng.integers(0, 1 << cfg.mult_bits, O)
    return args, x, w, b, m


def run_packed(cfg, args, x, w, b, m):
    out = np.zeros(args.go(cfg) * cfg.cpo * args.out_rows * args.out_cols, dtype=ref.act_dtype(cfg))
    ref.kernel_call(cfg, args,
                    ref.pack_activations(x, cfg.cpi, ref.act_dtype(cfg)),
                    ref.pack_weights(w, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg)),
                    ref.pack_channels(b, cfg.cpo, ref.bias_dtype(cfg)),
                    out, ref.pack_channels(m, cfg.cpo, ref.mult_dtype(cfg)))
    return ref.unpack_activations(out, args.O, args.out_rows, args.out_cols, cfg.cpo)


@pytest.mark.parametrize("cpi,cpo,signed", [(4, 4, False), (2, 8, True), (8, 2, False), (1, 1, True)])
def test_kernel_call_matches_naive_convolution(cpi, cpo, signed):
    cfg = KernelConfig(cpi=cpi, cpo=cpo, act_signed=signed, imax=64, wmax=16, hmax=16)
    rng = np.random.default_rng(cpi * 100 + cpo + signed)
    for _ in range(12):
        args, x, w, b, m = random_case(rng, cfg)
        got = run_packed(cfg, args, x, w, b, m)
        want = naive_layer(x, w, b, m, args, cfg)
        np.testing.assert_array_equal(got, want, err_msg=str(args))


@pytest.mark.parametrize("fmt,rounding,overflow", [("int8", "trunc", "sat"), ("uint8", "round", "wrap"),
                                                    ("int8", "trunc", "wrap"), ("fixed<8,4>", "trunc", "wrap"),
                                                    ("fixed<8,3>", "round", "sat"), ("fixed<16,6>", "trunc", "wrap")])
def test_rounding_and_overflow_modes_match_naive_convolution(fmt, rounding, overflow):
    cfg = KernelConfig.from_format(fmt, cpi=2, cpo=4, imax=64, wmax=16, hmax=16, rounding=rounding,
                                   overflow=overflow)
    rng = np.random.default_rng(len(fmt) * 7 + len(rounding) + len(overflow))
    seen_wrap = 0
    for _ in range(12):
        args, x, w, b, m = random_case(rng, cfg)
        if cfg.number_format == "fixed":
            args.shift, args.use_mult = cfg.frac_bits, False
            b = b * (1 << cfg.frac_bits)      # bias has 2F fractional bits
        got = run_packed(cfg, args, x, w, b, m)
        want = naive_layer(x, w, b, m, args, cfg)
        np.testing.assert_array_equal(got, want, err_msg=str(args))
        seen_wrap += overflow == "wrap" and args.pool == 0 and not args.relu
    assert seen_wrap or overflow == "sat"


@pytest.mark.parametrize("fmt,rounding,overflow", [("int4", "round", "sat"), ("uint4", "round", "sat"),
                                                    ("int4", "trunc", "wrap"), ("uint4", "trunc", "wrap")])
def test_4bit_images_match_naive_convolution(fmt, rounding, overflow):
    """4-bit lanes, two per byte, through kernel_call and the fast path, against the loops."""
    from hlsinf.reference_fast import kernel_call_fast
    cfg = KernelConfig.from_format(fmt, cpi=2, cpo=4, imax=64, wmax=16, hmax=16, rounding=rounding,
                                   overflow=overflow)
    rng = np.random.default_rng(len(fmt) + 3 * len(rounding) + len(overflow))
    for _ in range(10):
        args, x, w, b, m = random_case(rng, cfg)
        args.shift = int(rng.integers(0, 6))
        want = naive_layer(x, w, b, m, args, cfg)
        xm = ref.pack_activations(x, cfg.cpi, bits=4)
        wm = ref.pack_weights(w, cfg.cpi, cfg.cpo, bits=4)
        assert xm.dtype == np.uint8 and xm.size == args.gi(cfg) * cfg.cpi * x.shape[1] * x.shape[2] // 2
        for call in (ref.kernel_call, kernel_call_fast):
            out = np.full(args.go(cfg) * cfg.cpo * args.out_rows * args.out_cols // 2, 0x5A, np.uint8)
            call(cfg, args, xm, wm, ref.pack_channels(b, cfg.cpo, np.int32), out,
                 ref.pack_channels(m, cfg.cpo, np.uint32))
            got = ref.unpack_activations(out, args.O, args.out_rows, args.out_cols, cfg.cpo, bits=4,
                                         signed=cfg.act_signed)
            np.testing.assert_array_equal(got, want, err_msg=f"{call.__name__} {args}")


def test_nibble_order_is_little_end_first():
    assert list(ref.pack_nibbles([1, 2, -1, 7, -8])) == [0x21, 0x7F, 0x08]
    np.testing.assert_array_equal(ref.unpack_nibbles(np.array([0x21, 0x7F, 0x08], np.uint8), True),
                                  [1, 2, -1, 7, -8, 0])
    np.testing.assert_array_equal(ref.unpack_nibbles(np.array([0xF1], np.uint8), False), [1, 15])
    with pytest.raises(ValueError, match="pack_nibbles"):
        ref.pack_nibbles([16])


def test_trunc_is_floor_and_wrap_keeps_the_low_bits():
    modes = ref.Modes("trunc", "wrap", 8, True)
    assert list(ref.requantize([5, -5, 7, -7], 1, 1, -128, 127, modes)) == [2, -3, 3, -4]
    assert list(ref.requantize([300, -300, 128], 1, 0, -128, 127, modes)) == [44, -44, -128]
    assert list(ref.requantize([300, -300], 1, 0, 0, 127, modes)) == [44, 0]      # relu after the wrap
    unsigned = ref.Modes("round", "wrap", 8, False)
    assert list(ref.requantize([300, -1], 1, 0, 0, 255, unsigned)) == [44, 255]
    assert list(ref.leaky_relu([-100], 26, 8, -128, 127, ref.Modes("trunc"))) == [-11]   # -10.16 -> -11
    assert list(ref.batch_norm([100], [3], [10], 0, -128, 127, modes)) == [54]           # 310 -> 54


def test_fixed_calls_use_the_fractional_shift():
    cfg = KernelConfig.from_format("fixed<8,4>", cpi=2, cpo=2, imax=4, wmax=8, hmax=8)
    assert cfg.frac_bits == 4
    with pytest.raises(CallError, match="shift"):
        CallArgs(H=3, W=3, rows=3, I=2, O=2, shift=3).validate(cfg)
    with pytest.raises(CallError, match="use_mult"):
        CallArgs(H=3, W=3, rows=3, I=2, O=2, shift=4, use_mult=True).validate(cfg)
    CallArgs(H=3, W=3, rows=3, I=2, O=2, shift=4).validate(cfg)


def test_row_tiles_with_offsets_assemble_the_whole_layer():
    """Two calls on row tiles (halo rows, read/write offsets, out_plane) equal one whole call."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=16, wmax=16, hmax=16)
    rng = np.random.default_rng(7)
    I, O, H, W = 6, 5, 10, 7
    x = rng.integers(0, 256, (I, H, W))
    w = rng.integers(-128, 128, (O, I, 3, 3))
    b = rng.integers(-3000, 3000, O)
    m = np.ones(O, int)
    whole = CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=6)
    want = naive_layer(x, w, b, m, whole, cfg)
    xm = ref.pack_activations(x, 4, np.uint8)
    wm, bm = ref.pack_weights(w, 4, 4, np.int8), ref.pack_channels(b, 4, np.int32)
    out = np.zeros(2 * 4 * H * W, np.uint8)
    # tile 1: output rows 0..4 need input rows 0..5; tile 2: output rows 5..9 need input rows 4..9
    top = CallArgs(H=H, W=W, rows=6, I=I, O=O, pad_top=1, pad_left=1, pad_right=1, shift=6, out_plane=H * W)
    bottom = CallArgs(H=H, W=W, rows=6, I=I, O=O, pad_bottom=1, pad_left=1, pad_right=1, shift=6,
                      read_offset=4 * W, write_offset=5 * W, out_plane=H * W)
    ref.kernel_call(cfg, top, xm, wm, bm, out)
    ref.kernel_call(cfg, bottom, xm, wm, bm, out)
    np.testing.assert_array_equal(ref.unpack_activations(out, O, H, W, 4), want)


def test_output_group_range_writes_only_its_groups():
    cfg = KernelConfig(cpi=2, cpo=2, imax=8, wmax=8, hmax=8)
    rng = np.random.default_rng(3)
    args, x, w, b, m = random_case(rng, cfg)
    args.O, args.pool = 6, 0
    w = rng.integers(-128, 128, (6, args.I, 3, 3))
    b, m = rng.integers(-100, 100, 6), np.ones(6, int)
    full = naive_layer(x, w, b, m, args, cfg)
    sentinel = 77
    out = np.full(3 * 2 * args.out_rows * args.out_cols, sentinel, np.uint8)
    args.o_first, args.o_count = 1, 1
    ref.kernel_call(cfg, args, ref.pack_activations(x, 2, np.uint8), ref.pack_weights(w, 2, 2, np.int8),
                    ref.pack_channels(b, 2, np.int32), out)
    got = ref.unpack_activations(out, 6, args.out_rows, args.out_cols, 2)
    np.testing.assert_array_equal(got[2:4], full[2:4])
    assert (got[:2] == sentinel).all() and (got[4:] == sentinel).all()


def test_saturation_never_wraps():
    cfg = KernelConfig(cpi=1, cpo=1, imax=1, wmax=4, hmax=4, acc_bits=32)
    amin, amax = cfg.acc_range
    assert ref.add_bias([amax], [amax], cfg)[0] == amax
    assert ref.add_bias([amin], [-5], cfg)[0] == amin
    assert ref.requantize([amax], [65535], 0, 0, 255)[0] == 255
    assert ref.requantize([-(1 << 30)], [65535], 3, -128, 127)[0] == -128


def test_rounding_is_half_up():
    # 5/2 = 2.5 -> 3, -5/2 = -2.5 -> -2, 7/4 = 1.75 -> 2, -7/4 -> -2
    got = ref.requantize([5, -5, 7, -7, 6], 1, 1, -100, 100)
    assert list(got) == [3, -2, 4, -3, 3]
    assert list(ref.requantize([7, -7], 1, 2, -100, 100)) == [2, -2]
    assert list(ref.pool2x2(np.array([[[1], [2]], [[2], [1]]]), ref.POOL_AVG).ravel()) == [2]   # 6/4 = 1.5 -> 2
    assert list(ref.pool2x2(np.array([[[-1], [-2]], [[-2], [-1]]]), ref.POOL_AVG).ravel()) == [-1]  # -1.5 -> -1


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 3, 4))
    np.testing.assert_array_equal(ref.unpack_activations(ref.pack_activations(x, 4), 5, 3, 4, 4), x)
    w = rng.integers(-128, 128, (5, 3, 3, 3))
    np.testing.assert_array_equal(ref.unpack_weights(ref.pack_weights(w, 2, 4), 5, 3, 2, 4), w)
    # layout formula of docs/numbers.md
    mem = ref.pack_activations(x, 4)
    c, h, ww = 4, 2, 1
    assert mem[(c // 4) * 3 * 4 * 4 + h * 4 * 4 + ww * 4 + c % 4] == x[c, h, ww]


@pytest.mark.parametrize("field,value", [("W", 0), ("stride", 3), ("pad_left", 3), ("I", 10_000),
                                         ("shift", 99), ("pool", 5), ("o_first", 9), ("clip_lo", -1)])
def test_bad_arguments_name_the_argument(field, value):
    cfg = KernelConfig(cpi=4, cpo=4)
    args = CallArgs(H=4, W=4, rows=4, I=4, O=4)
    setattr(args, field, value)
    with pytest.raises(CallError, match=field):
        args.validate(cfg)


@pytest.mark.parametrize("kw,name", [(dict(cpi=0), "cpi"), (dict(cpo=3), "cpo"), (dict(act_bits=7), "act_bits"),
                                     (dict(acc_bits=24), "acc_bits"), (dict(imax=0), "imax"),
                                     (dict(wmax=4096, hmax=4096, cpo=32), "wmax"), (dict(mult_bits=30), "mult_bits")])
def test_bad_config_names_the_parameter(kw, name):
    with pytest.raises(ConfigError, match=name):
        KernelConfig(**kw)


def test_accumulator_check_uses_the_product_range():
    # uint8 x int8 products span [-32640, 32385]; 64 channels x 9 taps of them need 20 bits.
    cfg = KernelConfig(cpi=8, cpo=8, imax=64, acc_bits=32)
    assert cfg.sum_range == (-32640 * 576, 32385 * 576)
    assert cfg.partial_bits == KernelConfig.bits_needed(-32640 * 72, 32385 * 72)
    with pytest.raises(ConfigError, match="acc_bits"):
        KernelConfig(imax=65536, acc_bits=32)


def test_post_op_call_arguments_are_validated():
    import pytest as _pytest
    from hlsinf.config import KernelConfig
    from hlsinf.reference import CallArgs, CallError
    plain = KernelConfig(cpi=2, cpo=2, act_signed=True)
    leaky = KernelConfig(cpi=2, cpo=2, act_signed=True, post_ops=("leaky_relu",))
    args = CallArgs(H=4, W=4, rows=4, I=2, O=2, leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8)
    args.validate(leaky)
    with _pytest.raises(CallError, match="leaky_relu"):
        args.validate(plain)
    for field, value in [("relu", True), ("leaky_alpha_num", 1 << 16), ("leaky_alpha_shift", 32)]:
        bad = CallArgs(**{**args.to_dict(), field: value})
        with _pytest.raises(CallError, match=field):
            bad.validate(leaky)


def test_bn_call_arguments_are_validated():
    import pytest as _pytest
    from hlsinf.config import KernelConfig
    from hlsinf.reference import CallArgs, CallError
    plain = KernelConfig(cpi=2, cpo=2, act_signed=True, post_ops=("leaky_relu",))
    bn = KernelConfig(cpi=2, cpo=2, act_signed=True, post_ops=("bn",))
    args = CallArgs(H=4, W=4, rows=4, I=2, O=2, bn=True, bn_shift=5, bn_clip_lo=-3, bn_clip_hi=7)
    args.validate(bn)
    with _pytest.raises(CallError, match="bn"):
        args.validate(plain)
    for field, value in [("bn_shift", 32), ("bn_clip_lo", -129), ("bn_clip_hi", 128), ("bn_clip_hi", -4)]:
        with _pytest.raises(CallError, match=field):
            CallArgs(**{**args.to_dict(), field: value}).validate(bn)


def test_residual_add_in_the_call_is_the_add_before_the_pool():
    """kernel_call with residual_add equals the call without it, then the formula on the
    operand pixels of the same output positions (from r_offset of planes of r_plane), then
    the pool: computed here independently from the unpooled output."""
    import pytest as _pytest
    from hlsinf.reference import CallError
    cfg = KernelConfig(cpi=2, cpo=2, act_signed=True, post_ops=("residual_add",))
    rng = np.random.default_rng(3)
    H, W, I, O = 6, 5, 3, 5
    x = rng.integers(-128, 128, 2 * H * W * 2).astype(np.int8)
    w = rng.integers(-128, 128, 3 * 2 * 2 * 2 * 9).astype(np.int8)
    b = rng.integers(-500, 500, 6).astype(np.int32)
    for pool in (ref.POOL_NONE, ref.POOL_MAX, ref.POOL_AVG):
        plain = CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=8,
                         o_first=1)
        conv = np.zeros(3 * H * W * 2, np.int8)
        ref.kernel_call(cfg, plain, x, w, b, conv)
        r_plane, r_offset = H * W + 3, 2
        r = rng.integers(-128, 128, 3 * r_plane * 2).astype(np.int8)
        args = CallArgs(**{**plain.to_dict(), "pool": pool, "residual_add": True, "r_mult": 300, "r_shift": 8,
                           "r_relu": pool == ref.POOL_AVG, "r_clip_lo": -100, "r_offset": r_offset,
                           "r_plane": r_plane})
        out = np.zeros(3 * args.plane_out() * 2, np.int8)
        ref.kernel_call(cfg, args, x, w, b, out, r_mem=r)
        for g in (1, 2):
            v = conv.reshape(3, H * W, 2)[g].astype(np.int64)
            rr = r.reshape(3, r_plane, 2)[g, r_offset: r_offset + H * W].astype(np.int64)
            t = np.clip(v + ((rr * 300 + 128) >> 8), -100, 127)
            if pool == ref.POOL_AVG:
                t = np.maximum(t, 0)
            want = ref.pool2x2(t.reshape(H, W, 2), pool).reshape(-1)
            np.testing.assert_array_equal(out.reshape(3, -1)[g, : want.size], want)
        with _pytest.raises(CallError, match="r_mem"):
            ref.kernel_call(cfg, args, x, w, b, out)
    with _pytest.raises(CallError, match="r_plane"):
        CallArgs(**{**plain.to_dict(), "residual_add": True, "r_offset": 1}).validate(cfg)
    with _pytest.raises(CallError, match="residual_add"):
        CallArgs(**{**plain.to_dict(), "residual_add": True}).validate(KernelConfig(cpi=2, cpo=2))


def test_modes_on_products_beyond_int64():
    """48-bit accumulators times 24-bit multipliers (Python integers inside requantize): trunc
    and wrap against plain Python arithmetic."""
    rng = np.random.default_rng(9)
    acc = [int(v) for v in rng.integers(-(1 << 47), 1 << 47, 50)] + [-(1 << 47), (1 << 47) - 1]
    mult = [int(v) for v in rng.integers(0, 1 << 24, 52)]
    for rounding in ("round", "trunc"):
        for shift in (0, 1, 17, 47):
            modes = ref.Modes(rounding, "wrap", 16, True)
            got = ref.requantize(np.array(acc), np.array(mult), shift, -(1 << 15), (1 << 15) - 1, modes)
            for a, m, g in zip(acc, mult, got):
                v = (a * m + ((1 << (shift - 1)) if rounding == "round" and shift else 0)) >> shift
                v = (v + (1 << 15)) % (1 << 16) - (1 << 15)
                assert g == v, (a, m, shift, rounding)
