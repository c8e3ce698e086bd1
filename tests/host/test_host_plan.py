"""to_fpga: fusion, tiling, output-group splitting, kernel slots, transfers, requantisation, errors.

Oracles: an untiled plan (tiling must not change a single bit), a plain numpy integer
convolution written here from the ONNX semantics (for one fused layer), and exact rational
arithmetic for the multiplier/shift mapping.
"""


import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import FpgaLayer, PlanError, Session, Transfer, quantize, requant_params, to_fpga
from hlsinf.host.device import decode_call
from hlsinf.host.models import small_cnn
from hlsinf.reference import CallArgs
from hlsinf.registers import encode_call


def _ptq(model, shape, seed=0, n=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n,) + shape).astype(np.float32)


def _run_all(plan, x):
    fetch = [s.output for s in plan.steps if isinstance(s, FpgaLayer)]
    return Session(plan).run(x, fetch=fetch), fetch


@pytest.mark.parametrize("max_rows,max_groups", [(2, None), (3, None), (None, 1), (4, 1)])
def test_tiling_and_group_splitting_are_bit_exact(max_rows, max_groups):
    model = small_cnn(20, 12, seed=6)
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=32)
    qdq = quantize(model, _ptq(model, (3, 20, 12)), cfg)
    whole = to_fpga(qdq, cfg)
    tiled = to_fpga(qdq, cfg, max_rows=max_rows, max_out_groups=max_groups)
    assert all(len(l.calls) == 1 for l in whole.fpga_layers)
    assert sum(len(l.calls) for l in tiled.fpga_layers) > len(tiled.fpga_layers)
    x = _ptq(model, (3, 20, 12), seed=1, n=2)
    a, fetch = _run_all(whole, x)
    b, _ = _run_all(tiled, x)
    for name in fetch + whole.graph.outputs:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_hmax_forces_row_tiles_with_halo_and_stays_exact():
    model = small_cnn(24, 10, seed=8)
    qdq = quantize(model, _ptq(model, (3, 24, 10)), KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=32))
    big = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=32))
    small = to_fpga(qdq, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=5))
    first = small.fpga_layers[0]
    assert first.row_tiles > 1
    # halo: consecutive tiles overlap by 2 input rows (3x3, stride 1) and every call reads <= hmax rows
    starts = [c.read_offset // c.W for c in first.calls]
    ends = [s + c.rows for s, c in zip(starts, first.calls)]
    assert all(c.rows <= 5 for l in small.fpga_layers for c in l.calls)
    assert all(e - s2 == 2 for e, s2 in zip(ends, starts[1:]))
    assert first.calls[0].pad_top == 1 and first.calls[0].pad_bottom == 0
    assert first.calls[-1].pad_bottom == 1 and all(c.pad_top == 0 for c in first.calls[1:])
    assert small.ideal_cycles() > big.ideal_cycles()     # halo rows are read twice
    x = _ptq(model, (3, 24, 10), seed=2, n=2)
    a, fetch = _run_all(big, x)
    b, _ = _run_all(small, x)
    for name in fetch:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _single_conv_qdq(c, o, h, w, k, stride, pads, pool=None, seed=0, relu=True, clip=None):
    """Q -> DQ -> Conv(k x k) [-> Relu] -> Q [-> DQ -> pool -> Q] written by hand: known integers."""
    rng = np.random.default_rng(seed)
    wq = rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)
    bq = rng.integers(-3000, 3000, o).astype(np.int32)
    sx, sy = np.float32(0.02), np.float32(0.05)
    sw = rng.uniform(0.001, 0.01, o).astype(np.float32)
    z8 = np.array(0, np.uint8)
    inits = {"sx": sx, "sy": sy, "z": z8, "wq": wq, "sw": sw, "zw": np.zeros(o, np.int8), "bq": bq,
             "sb": (sx * sw).astype(np.float32), "zb": np.zeros(o, np.int32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="theconv", kernel_shape=[k, k],
                              strides=[stride, stride], pads=list(pads))]
    t = "c"
    if clip is not None:
        inits.update(lo=np.array(clip[0], np.float32), hi=np.array(clip[1], np.float32))
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["r"]))
        t = "r"
    elif relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        t = "r"
    nodes.append(helper.make_node("QuantizeLinear", [t, "sy", "z"], ["yq"]))
    out = "yq"
    if pool:
        nodes += [helper.make_node("DequantizeLinear", ["yq", "sy", "z"], ["yd"]),
                  helper.make_node(pool, ["yd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("QuantizeLinear", ["p", "sy", "z"], ["pq"])]
        out = "pq"
    nodes.append(helper.make_node("DequantizeLinear", [out, "sy", "z"], ["y"]))
    g = helper.make_graph(nodes, "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, wq, bq, float(sx), sw.astype(np.float64), float(sy), out


def _numpy_layer(xq, wq, bq, scale, stride, pads, pool, relu, hi=255):
    """Integer conv from the ONNX definition with direct loops over the kernel taps (independent of packing)."""
    c, h, w = xq.shape
    o, _, kh, kw = wq.shape
    t, l, b, r = pads
    xp = np.pad(xq.astype(np.int64), ((0, 0), (t, b), (l, r)))
    ho, wo = (h + t + b - kh) // stride + 1, (w + l + r - kw) // stride + 1
    acc = np.zeros((o, ho, wo), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky: ky + stride * (ho - 1) + 1: stride, kx: kx + stride * (wo - 1) + 1: stride]
            acc += np.einsum("chw,oc->ohw", patch, wq[:, :, ky, kx].astype(np.int64))
    acc += bq.reshape(-1, 1, 1)
    y = np.rint(acc * scale.reshape(-1, 1, 1))
    y = np.clip(y, 0, hi)
    if pool == "MaxPool":
        y = y[:, : ho // 2 * 2, : wo // 2 * 2].reshape(o, ho // 2, 2, wo // 2, 2).max(axis=(2, 4))
    return y.astype(np.int64)


@pytest.mark.parametrize("k,stride,pads,pool", [
    (3, 1, (1, 1, 1, 1), None), (3, 2, (1, 1, 1, 1), "MaxPool"), (3, 1, (0, 0, 0, 0), None),
    (1, 1, (0, 0, 0, 0), "MaxPool"), (1, 2, (0, 0, 0, 0), None), (1, 1, (1, 1, 1, 1), None),
    (2, 1, (0, 0, 0, 0), None), (2, 2, (1, 0, 1, 0), None), (3, 1, (2, 0, 1, 2), None)])
def test_one_layer_matches_numpy_integer_convolution(k, stride, pads, pool):
    c, o, h, w = 5, 6, 9, 8
    model, wq, bq, sx, sw, sy, out = _single_conv_qdq(c, o, h, w, k, stride, pads, pool, seed=k * 10 + stride)
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    plan = to_fpga(model, cfg)
    assert len(plan.fpga_layers) == 1, plan.summary()
    layer = plan.fpga_layers[0]
    assert layer.kernel == (k, k) and max(layer.pads) <= 2
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, (c, h, w))
    got = Session(plan).run((xq * sx).astype(np.float32)[None], fetch=[out])[out][0]
    # pads in ONNX order are (top, left, bottom, right)
    want = _numpy_layer(xq, wq, bq, sx * sw / sy, stride, (pads[0], pads[1], pads[2], pads[3]), pool, True)
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want)
    # M / 2**shift differs from the real scale by < 2**-15 relative: ties can flip by one LSB
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.97


def test_relu6_clip_becomes_the_kernel_clip_bounds():
    c, o, h, w = 3, 5, 6, 6
    model, wq, bq, sx, sw, sy, out = _single_conv_qdq(c, o, h, w, 3, 1, (1, 1, 1, 1), seed=3, clip=(0.0, 6.0))
    plan = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16))
    (layer,) = plan.fpga_layers
    hi = round(6.0 / sy)                      # 120 at s_y = 0.05: below the uint8 top, so it matters
    assert layer.calls[0].clip_hi == hi and layer.calls[0].relu
    xq = np.random.default_rng(1).integers(0, 256, (c, h, w))
    got = Session(plan).run((xq * sx).astype(np.float32)[None], fetch=[out])[out][0]
    want = _numpy_layer(xq, wq, bq, sx * sw / sy, 1, (1, 1, 1, 1), None, True, hi=hi)
    assert (want == hi).sum() > 10
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.97


def test_kernel_from_a_build_descriptor(tmp_path):
    from hlsinf.build import descriptor
    cfg = KernelConfig(cpi=4, cpo=8, imax=64, wmax=16, hmax=16)
    descriptor.write_descriptor(tmp_path / "descriptor.json", cfg)
    model = small_cnn(12, 12, seed=1)
    plan = to_fpga(model, tmp_path, calibration=_ptq(model, (3, 12, 12)))
    assert plan.cfg == cfg and plan.descriptor["config"] == cfg.to_dict()


def test_consecutive_layers_stay_on_device_and_cpi_cpo_mismatch_relayouts():
    model = small_cnn(12, 12, seed=1)
    calib = _ptq(model, (3, 12, 12))
    same = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16), calibration=calib)
    transfers = [s for s in same.steps if isinstance(s, Transfer)]
    assert [t.direction for t in transfers] == ["to_device", "from_device"]
    mixed = to_fpga(model, KernelConfig(cpi=4, cpo=8, imax=64, wmax=16, hmax=16), calibration=calib)
    n = len(mixed.fpga_layers)
    assert sum(isinstance(s, Transfer) for s in mixed.steps) == 2 + 2 * (n - 1)
    x = _ptq(model, (3, 12, 12), seed=3, n=2)
    out = same.graph.outputs[0]
    np.testing.assert_array_equal(Session(same).run(x)[out], Session(mixed).run(x)[out])


def test_requant_params_are_the_closest_representable_scales():
    cfg = KernelConfig(mult_bits=16, max_shift=31)
    rng = np.random.default_rng(0)
    scales = rng.uniform(1e-5, 1e-2, 40)
    mult, shift, err = requant_params(scales, cfg)
    assert mult.max() < 2 ** 16 and 0 <= shift <= 31
    assert round(scales.max() * 2.0 ** (shift + 1)) >= 2 ** 16      # one more bit of shift would overflow
    np.testing.assert_array_equal(mult, np.rint(scales * 2.0 ** shift))
    assert err <= 0.5 / mult.min() + 1e-12
    # shift-only kernels: power-of-two scales are exact, others are rounded and the error says so
    shift_only = KernelConfig(with_multiplier=False)
    m, s, e = requant_params([2.0 ** -9] * 3, shift_only)
    assert (m == 1).all() and s == 9 and e == 0
    assert requant_params([0.003], shift_only)[2] > 0.1
    with pytest.raises(ValueError, match="larger than the largest multiplier"):
        requant_params([70000.0], cfg)


def test_register_round_trip_through_the_reference_device():
    cfg = KernelConfig(cpi=4, cpo=4)
    args = CallArgs(H=9, W=7, rows=4, I=5, O=9, pad_top=1, pad_left=1, pad_right=1, stride=2, o_first=1,
                    o_count=2, relu=True, clip_hi=100, shift=7, use_mult=True, pool=1, read_offset=14,
                    write_offset=3, out_plane=40)
    ptrs = {"x": 0x1000, "w": 0x2000_0000_1000, "b": 0x3000, "m": 0x4000, "y": 0x5000}
    back, p = decode_call(encode_call(args, cfg, ptrs))
    assert p == ptrs
    assert back.to_dict() == {**args.to_dict(), "clip_lo": 0}


@pytest.mark.parametrize("max_cols", [None, 3, 4])
def test_column_tiles_for_images_wider_than_wmax_are_bit_exact(max_cols):
    model = small_cnn(10, 22, seed=1)
    calib = _ptq(model, (3, 10, 22))
    wide = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=16)
    narrow = KernelConfig(cpi=4, cpo=4, imax=64, wmax=8, hmax=16)
    qdq = quantize(model, calib, wide)
    a = to_fpga(qdq, wide)
    b = to_fpga(qdq, narrow, max_cols=max_cols, max_rows=3)
    first = b.fpga_layers[0]
    assert len(first.columns) >= 3 and not a.fpga_layers[0].columns
    assert all(c.W <= 8 for l in b.fpga_layers for c in l.calls)
    # strips overlap by the 2 halo columns of a 3x3 stride-1 conv and cover the image
    assert first.columns[0].in_start == 0 and first.columns[-1].in_stop == 22
    assert all(p.in_stop - n.in_start == 2 for p, n in zip(first.columns, first.columns[1:]))
    x = _ptq(model, (3, 10, 22), seed=4, n=2)
    ra, fetch = _run_all(a, x)
    rb, _ = _run_all(b, x)
    for name in fetch + a.graph.outputs:
        np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)


def test_layer_no_tiling_can_fit_is_a_clear_error():
    model = small_cnn(12, 20, seed=1)
    calib = _ptq(model, (3, 12, 20))
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    with pytest.raises(PlanError, match=r"node 'conv1'.*input width 20 is larger than the kernel's wmax = 16 "
                                        r"and no column tiling fits"):
        to_fpga(model, cfg, calibration=calib, max_cols=1)     # a fused 2x2 pool needs 2 columns
    plan = to_fpga(model, cfg, calibration=calib, max_cols=1, cpu_fallback=True)
    assert any("no column tiling" in (getattr(s, "reason", None) or "") for s in plan.steps)
    with pytest.raises(PlanError, match=r"imax = 4"):
        to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=4, wmax=32, hmax=16), calibration=calib)
    with pytest.raises(PlanError, match=r"no row tiling fits the kernel's hmax = 2"):
        to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=2), calibration=calib)


def test_wrong_input_shape_at_run_time():
    model = small_cnn(12, 12, seed=1)
    plan = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16), calibration=_ptq(model, (3, 12, 12)))
    with pytest.raises(ValueError, match=r"plan expects \(N, 3, 12, 12\)"):
        Session(plan).run(np.zeros((1, 3, 12, 11), np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_random_layers_tiled_equal_untiled_and_numpy(seed):
    """Random kernel sizes, strides, paddings, pooling, channel counts and tiny hmax/wmax:
    every tiled plan equals the untiled one bit for bit and the numpy conv within 1 LSB."""
    rng = np.random.default_rng(1000 + seed)
    ran = 0
    for it in range(12):
        k, s = int(rng.choice([1, 2, 3])), int(rng.choice([1, 2]))
        pads = tuple(int(p) for p in rng.integers(0, 2 if k < 3 else 3, 4))
        pool = [None, "MaxPool"][int(rng.integers(0, 2))]
        c, o, h, w = (int(v) for v in (rng.integers(1, 9), rng.integers(1, 11), rng.integers(4, 15), rng.integers(4, 15)))
        model, wq, bq, sx, sw, sy, out = _single_conv_qdq(c, o, h, w, k, s, pads, pool, seed=it)
        whole = to_fpga(model, KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32))
        if not whole.fpga_layers:          # e.g. a pool over a single output row: CPU
            continue
        small = KernelConfig(cpi=4, cpo=4, imax=64, wmax=int(rng.integers(5, 8)), hmax=int(rng.integers(5, 8)))
        tiled = to_fpga(model, small, max_out_groups=int(rng.integers(1, 3)))
        xq = rng.integers(0, 256, (c, h, w))
        x = (xq * sx).astype(np.float32)[None]
        a = Session(whole).run(x, fetch=[out])[out][0]
        b = Session(tiled).run(x, fetch=[out])[out][0]
        np.testing.assert_array_equal(a, b, err_msg=f"k={k} s={s} pads={pads} pool={pool} {c}x{h}x{w}->{o}")
        want = _numpy_layer(xq, wq, bq, sx * sw / sy, s, pads, pool, True)
        assert a.shape == want.shape and np.abs(a.astype(np.int64) - want).max() <= 1
        ran += 1
    assert ran >= 8
