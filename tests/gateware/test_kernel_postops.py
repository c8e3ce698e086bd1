# amaranth: UnusedElaboratable=no
"""The composed kernel with post-operations (KernelConfig.post_ops) in Amaranth's simulator
against hlsinf.reference.kernel_call; the default build's Verilog does not change."""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs
from hlsinf.sim.amaranth_bench import KernelSim

from tests.gateware.test_kernel_sim import make_layer, place

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("leaky_relu",))


def calls_with_leaky(cfg):
    H, W, I, O = 5, 6, 2 * cfg.cpi + 1, 2 * cfg.cpo - 1
    return (H, W, I, O), [
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                 leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8),
        # Leaky off in between: the stage passes the activations.
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=10, relu=True, pool=POOL_AVG),
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=17, use_mult=True,
                 read_offset=W, o_first=1, pool=POOL_MAX, write_offset=2, out_plane=12,
                 leaky_relu=True, leaky_alpha_num=3, leaky_alpha_shift=1),
    ]


def run_and_check(cfg, calls, dims, *, stall, seed=3):
    rng = np.random.default_rng(5)
    H, W, I, O = dims
    layer = make_layer(cfg, rng, H, W, I, O)
    pointers = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "y": 0x2000 - 8}
    sim = KernelSim(cfg, stall=stall, seed=seed, input_cache_pixels=80)
    place(sim, layer, pointers)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    negatives = 0
    for args in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo
        out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
        negatives += int((out < 0).sum())
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)
    return negatives


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_leaky_relu_in_the_kernel(stall):
    dims, calls = calls_with_leaky(CFG)
    assert run_and_check(CFG, calls, dims, stall=stall) > 0     # the slope really is seen


def test_leaky_relu_changes_the_result():
    """The reference applies the post-op: with it on, negative outputs shrink."""
    (H, W, I, O), calls = calls_with_leaky(CFG)
    rng = np.random.default_rng(5)
    layer = make_layer(CFG, rng, H, W, I, O)
    outs = []
    for on in (False, True):
        args = calls[0]
        args.leaky_relu = on
        out = np.zeros(args.go(CFG) * args.plane_out() * CFG.cpo, ref.act_dtype(CFG))
        ref.kernel_call(CFG, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
        outs.append(out.astype(np.int64))
    off, on = outs
    assert (off < 0).any()
    np.testing.assert_array_equal(on, ref.leaky_relu(off, 26, 8, -128, 127))


def test_default_build_is_unchanged():
    """post_ops=() is today's kernel: the same Verilog as a config that never heard of them."""
    from hlsinf.gateware.kernel import POST_OP_STAGES, kernel_verilog
    cfg = KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8)
    text = kernel_verilog(cfg, input_cache_pixels=0)
    assert not any(name in text for name in POST_OP_STAGES)
    with_leaky = kernel_verilog(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, post_ops=("leaky_relu",)),
                                input_cache_pixels=0)
    assert "leaky_relu" in with_leaky and "leaky_alpha_num" in with_leaky


BOTH = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("leaky_relu", "bn"))


def bn_layer(cfg, O, rng):
    mult = rng.integers(-300, 300, O)
    bias = rng.integers(-5000, 5000, O)
    return mult, bias, ref.pack_bn(mult, bias, cfg.cpo)


@pytest.mark.parametrize("stall", [0.3])
def test_leaky_relu_and_bn_in_the_kernel(stall):
    """Both post-ops, in the configured order, with calls enabling either, both or none;
    bn's per-group parameters read from n on gmem_w between the multipliers and the weights."""
    cfg = BOTH
    rng = np.random.default_rng(8)
    H, W, I, O = 5, 6, 2 * cfg.cpi + 1, 2 * cfg.cpo - 1
    layer = make_layer(cfg, rng, H, W, I, O)
    _, _, n_mem = bn_layer(cfg, O, rng)
    pointers = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "n": 0xB000 + 6,
                "y": 0x2000 - 8}
    leaky = dict(leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8)
    bn = dict(bn=True, bn_shift=7, bn_clip_lo=-100, bn_clip_hi=120)
    calls = [
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9, **leaky, **bn),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=10, use_mult=True, pool=POOL_MAX, **bn),
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=17, use_mult=True,
                 read_offset=W, o_first=1, pool=POOL_AVG, write_offset=2, out_plane=12, **leaky),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=9, o_first=1, bn=True, bn_shift=0),
    ]
    sim = KernelSim(cfg, stall=stall, seed=3, input_cache_pixels=80)
    place(sim, layer, pointers)
    raw = n_mem.view(np.uint8)
    sim.mem["gmem_w"][pointers["n"]: pointers["n"] + raw.size] = raw
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    for args in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo
        out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"], n_mem)
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


def test_post_op_order_is_the_configured_one():
    """kernel_call applies the post-ops in cfg.post_ops order: the two orders differ."""
    rng = np.random.default_rng(2)
    H, W, I, O = 4, 4, 4, 4
    other = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("bn", "leaky_relu"))
    layer = make_layer(BOTH, rng, H, W, I, O)
    mult, bias, n_mem = bn_layer(BOTH, O, rng)
    args = CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                    leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8, bn=True, bn_shift=6)
    outs = {}
    for cfg in (BOTH, other):
        out = np.zeros(args.plane_out() * cfg.cpo, np.int8)
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"], n_mem)
        outs[cfg.post_ops] = out.astype(np.int64)
    plain = np.zeros(args.plane_out() * 4, np.int8)
    ref.kernel_call(BOTH, CallArgs(**{**args.to_dict(), "leaky_relu": False, "bn": False}),
                    layer["x"], layer["w"], layer["b"], plain, layer["m"])
    y = plain.astype(np.int64).reshape(-1, 4)
    first = ref.batch_norm(ref.leaky_relu(y, 26, 8, -128, 127), mult, bias, 6, -128, 127)
    np.testing.assert_array_equal(outs[("leaky_relu", "bn")], first.reshape(-1))
    second = ref.leaky_relu(ref.batch_norm(y, mult, bias, 6, -128, 127), 26, 8, -128, 127)
    np.testing.assert_array_equal(outs[("bn", "leaky_relu")], second.reshape(-1))
    assert not np.array_equal(first, second)


TABLE = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("leaky_relu", "table"))


def test_table_in_the_kernel():
    """Post-op table after leaky_relu: calls with the table on (two different random tables,
    one at an unaligned address) and off, pooling after it; the table is read once per call
    from t on gmem_w before the first group's bias."""
    cfg = TABLE
    rng = np.random.default_rng(9)
    H, W, I, O = 5, 6, 2 * cfg.cpi + 1, 2 * cfg.cpo - 1
    layer = make_layer(cfg, rng, H, W, I, O)
    tables = [rng.integers(-128, 128, 256).astype(np.int8) for _ in range(2)]
    base = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "y": 0x2000 - 8}
    at = [0xB000, 0xC000 + 7]
    leaky = dict(leaky_relu=True, leaky_alpha_num=26, leaky_alpha_shift=8)
    calls = [
        (CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                  table=True, **leaky), 0),
        (CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=10, use_mult=True, pool=POOL_MAX, table=True), 1),
        (CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=9, o_first=1, **leaky), 1),
        (CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=17, use_mult=True, read_offset=W,
                  o_first=1, pool=POOL_AVG, write_offset=2, out_plane=12, table=True), 0),
    ]
    sim = KernelSim(cfg, stall=0.3, seed=4, input_cache_pixels=80)
    place(sim, layer, base)
    for address, table in zip(at, tables):
        sim.mem["gmem_w"][address: address + 256] = table.view(np.uint8)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, {**base, "t": at[k]}) for args, k in calls])
    for args, k in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo
        out = expected[base["y"]: base["y"] + size].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"], t_mem=tables[k])
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


def test_bn_and_table_in_the_kernel():
    """bn (gmem_w kind 3) and the table (kind 4) in one kernel: the 3-bit kinds route the
    table, the bn items and the weights apart; calls with either, both or none."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("bn", "table"))
    rng = np.random.default_rng(10)
    H, W, I, O = 5, 6, cfg.cpi + 1, 2 * cfg.cpo
    layer = make_layer(cfg, rng, H, W, I, O)
    _, _, n_mem = bn_layer(cfg, O, rng)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    pointers = {"x": 0x1000, "w": 0x8000 + 1, "b": 0x9000, "m": 0xA000, "n": 0xB000 + 2, "t": 0xC000 + 3,
                "y": 0x2000}
    bn = dict(bn=True, bn_shift=7, bn_clip_lo=-100, bn_clip_hi=120)
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                      table=True, **bn),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=9, use_mult=True, table=True, pool=POOL_MAX),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=10, o_first=1, **bn),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, shift=8)]
    sim = KernelSim(cfg, stall=0.3, seed=6, input_cache_pixels=80)
    place(sim, layer, pointers)
    sim.mem["gmem_w"][pointers["n"]: pointers["n"] + n_mem.nbytes] = n_mem.view(np.uint8)
    sim.mem["gmem_w"][pointers["t"]: pointers["t"] + 256] = table.view(np.uint8)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    for args in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo
        out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"], n_mem, t_mem=table)
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


def test_table_then_pool_then_upsize_in_the_kernel():
    """The table before a max pool (a non-monotone table: the order matters) and the nearest
    upsampling after it, in one call."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("table",), max_upsize=2)
    rng = np.random.default_rng(12)
    H, W, I, O = 6, 6, cfg.cpi, cfg.cpo
    layer = make_layer(cfg, rng, H, W, I, O)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    pointers = {"x": 0x1000, "w": 0x8000, "b": 0x9000, "m": 0xA000, "t": 0xB000, "y": 0x2000}
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                      table=True, pool=POOL_MAX, upsize=2)]
    sim = KernelSim(cfg, stall=0.3, seed=7, input_cache_pixels=80)
    place(sim, layer, pointers)
    sim.mem["gmem_w"][pointers["t"]: pointers["t"] + 256] = table.view(np.uint8)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    args = calls[0]
    size = args.go(cfg) * args.plane_out() * cfg.cpo
    out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(cfg))
    ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"], t_mem=table)
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)
