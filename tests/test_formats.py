"""Number formats: ``KernelConfig.from_format`` / ``--format`` and the fp32 reference call."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hlsinf import reference_float as rf
from hlsinf.config import ConfigError, KernelConfig, parse_format
from hlsinf.reference import CallArgs, pack_activations, pack_channels, pack_weights, unpack_activations


@pytest.mark.parametrize("fmt, name, bits", [("fp32", "fp32", 32), ("int8", "int8", 8), ("uint8", "uint8", 8),
                                             ("int4", "int4", 4), ("fixed<8,4>", "fixed<8,4>", 8),
                                             ("FIXED< 16 , 8 >", "fixed<16,8>", 16), ("int16", "int16", 16)])
def test_from_format(fmt, name, bits):
    cfg = KernelConfig.from_format(fmt, cpi=4, cpo=4)
    assert cfg.format_name == name and cfg.act_bits == bits == cfg.weight_bits
    lo, hi = cfg.acc_range
    if not cfg.is_float:           # the accumulator holds every sum the format can make
        slo, shi = cfg.sum_range
        assert lo <= slo and shi <= hi
    assert KernelConfig.from_dict(cfg.to_dict()) == cfg


def test_fixed_frac_bits():
    assert KernelConfig.from_format("fixed<8,3>").frac_bits == 5
    assert KernelConfig.from_format("int8").frac_bits == 0


@pytest.mark.parametrize("bad, field", [
    (dict(number_format="fp32"), "act_bits"),
    (dict(number_format="fp16"), "number_format"),
    (dict(rounding="nearest"), "rounding"),
    (dict(overflow="clamp"), "overflow"),
    (dict(act_bits=4, cpi=1), "cpi"),
    (dict(number_format="fixed", act_signed=False), "act_signed"),
    (dict(number_format="fixed", act_signed=True, int_bits=9), "int_bits"),
    (dict(int_bits=3), "int_bits"),
])
def test_bad_config_names_field(bad, field):
    with pytest.raises(ConfigError, match=rf"KernelConfig\.{field} "):
        KernelConfig(**bad)


@pytest.mark.parametrize("fmt", ["fp16", "fixed<8>", "int", 8])
def test_unknown_format(fmt):
    with pytest.raises(ConfigError, match="format"):
        parse_format(fmt)


def test_cli_format_errors_name_the_flag(tmp_path):
    run = [sys.executable, "-m", "hlsinf.build", "--out", str(tmp_path / "k")]
    bad = subprocess.run(run + ["--format", "fixed<8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--format" in bad.stderr
    bad = subprocess.run(run + ["--format", "fp32", "--act-bits", "8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--act-bits" in bad.stderr and "fp32" in bad.stderr


def _float_layer(rng, i, o, h, w):
    x = rng.standard_normal((i, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, i, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return x, wt, b


@pytest.mark.parametrize("stride, pool, relu", [(1, 0, False), (1, 1, True), (2, 0, True), (1, 2, False)])
def test_fp32_call_matches_float64(stride, pool, relu):
    """The fp32 reference call against a float64 numpy convolution: close (the order of
    float sums differs), and its stage functions composed by hand: bit-exact."""
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4)
    rng = np.random.default_rng(stride * 10 + pool)
    i, o, h, w = 6, 5, 8, 9
    x, wt, b = _float_layer(rng, i, o, h, w)
    args = CallArgs(H=h, W=w, rows=h, I=i, O=o, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                    stride=stride, relu=relu, pool=pool)
    out = np.zeros(2 * args.plane_out() * 4, np.float32)
    rf.kernel_call(cfg, args, pack_activations(x, 4, np.float32), pack_weights(wt, 4, 4, np.float32),
                   pack_channels(b, 4, np.float32), out)
    got = unpack_activations(out, o, args.out_rows, args.out_cols, 4)

    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    ho, wo = args.conv_rows, args.conv_cols
    y = np.zeros((o, ho, wo))
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
            y += np.einsum("ihw,oi->ohw", patch, wt[:, :, ky, kx].astype(np.float64))
    y += b[:, None, None]
    if relu:
        y = np.maximum(y, 0)
    if pool:
        q = y[:, :ho // 2 * 2, :wo // 2 * 2].reshape(o, ho // 2, 2, wo // 2, 2)
        y = q.max(axis=(2, 4)) if pool == 1 else q.mean(axis=(2, 4))
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)


def test_fp32_clip_and_relu_semantics():
    y = np.array([-0.0, 0.0, -1.0, 2.5, np.inf, -np.inf, np.nan], np.float32)
    assert rf.to_bits(rf.relu(y[:2])).tolist() == [0, 0]                  # -0 -> +0
    clipped = rf.clip(y, rf.float_bits(-0.5), rf.float_bits(1.0))
    assert clipped[2] == np.float32(-0.5) and clipped[3] == 1.0 and clipped[4] == 1.0 and clipped[5] == -0.5
    assert clipped[6] == 1.0                                              # NaN sits above every bound
    keys = rf.max_key(np.array([-np.inf, -1.0, -0.0, 0.0, 1.0, np.inf, np.nan], np.float32))
    assert (np.diff(keys) > 0).all()


def test_fp32_call_rejects_requantisation():
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4)
    args = CallArgs(H=4, W=4, rows=4, I=4, O=4, shift=3)
    with pytest.raises(ValueError, match="shift"):
        rf.kernel_call(cfg, args, np.zeros(64, np.float32), np.zeros(144, np.float32), np.zeros(4, np.float32),
                       np.zeros(64, np.float32))


def test_the_generator_builds_every_format():
    """trunc/wrap, fixed<W,I>, 4-bit lanes and fp32 all build."""
    from hlsinf.gateware.kernel import unsupported_features
    assert unsupported_features(KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, rounding="trunc",
                                                         overflow="wrap")) == ""
    assert unsupported_features(KernelConfig.from_format("int4", cpi=4, cpo=4)) == ""
    assert unsupported_features(KernelConfig.from_format("fp32", cpi=4, cpo=4)) == ""


def test_fp32_clip_registers():
    """fp32 clip bounds are binary32 bits: None is written as bits that clip nothing, the
    reference applies exactly the register values, and bounds are ordered by max_key."""
    from hlsinf.reference import CallError
    from hlsinf.registers import encode_call, register_map
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4)
    offsets = {reg.name: reg.offset for reg in register_map(cfg)}
    pointers = dict(x=0, w=0, b=0, m=0, y=0)
    words = encode_call(CallArgs(H=4, W=4, rows=4, I=4, O=4), cfg, pointers)
    assert (words[offsets["clip_lo"]], words[offsets["clip_hi"]]) == (0xFFFFFFFF, 0x7FFFFFFF)
    # signed (float_bits) and unsigned spellings of the same bits are the same register word
    lo, hi = rf.float_bits(-1.5), rf.float_bits(np.inf)
    for lo_arg in (lo, lo & 0xFFFFFFFF):
        words = encode_call(CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=lo_arg, clip_hi=hi), cfg, pointers)
        assert (words[offsets["clip_lo"]], words[offsets["clip_hi"]]) == (lo & 0xFFFFFFFF, hi)
    # -1.0 < +0.5 by value although its bits, as an integer, are larger unsigned and smaller signed
    CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=rf.float_bits(-1.0) & 0xFFFFFFFF,
             clip_hi=rf.float_bits(0.5)).validate(cfg)
    with pytest.raises(CallError, match="clip_hi"):
        CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=rf.float_bits(-1.0), clip_hi=rf.float_bits(-2.0)).validate(cfg)
    with pytest.raises(CallError, match="clip_lo"):
        CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=1 << 32).validate(cfg)
    with pytest.raises(CallError, match="clip_lo"):
        CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=0.5).validate(cfg)
    # the reference call with None bounds equals the one with the encoded bounds
    rng = np.random.default_rng(3)
    x, wt, b = _float_layer(rng, 4, 4, 4, 4)
    x[0, 0, 0], b[0] = np.inf, np.nan
    outs = []
    for clip in ((None, None), (0xFFFFFFFF, 0x7FFFFFFF)):
        args = CallArgs(H=4, W=4, rows=4, I=4, O=4, clip_lo=clip[0], clip_hi=clip[1])
        out = np.zeros(args.plane_out() * 4, np.float32)
        rf.kernel_call(cfg, args, pack_activations(x, 4, np.float32), pack_weights(wt, 4, 4, np.float32),
                       pack_channels(b, 4, np.float32), out)
        outs.append(rf.to_bits(out))
    assert (outs[0] == outs[1]).all() and np.isnan(rf.from_bits(outs[0])).any()
