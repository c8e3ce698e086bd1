# amaranth: UnusedElaboratable=no
"""The composed kernel with nearest upsampling (KernelConfig.max_upsize) in Amaranth's
simulator against hlsinf.reference.kernel_call; the default build does not change."""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs
from hlsinf.sim.amaranth_bench import KernelSim

from tests.gateware.test_kernel_sim import make_layer, place

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, max_upsize=4)


def upsize_calls():
    H, W, I, O = 5, 6, 2 * CFG.cpi + 1, 2 * CFG.cpo - 1
    return (H, W, I, O), [
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                 relu=True, upsize=2),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=10, pool=POOL_AVG),          # upsize off
        CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=17, use_mult=True,
                 read_offset=W, o_first=1, pool=POOL_MAX, write_offset=2, out_plane=40, upsize=4),
        CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                 pool=POOL_MAX, upsize=2),
    ]


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_upsize_in_the_kernel(stall):
    rng = np.random.default_rng(5)
    (H, W, I, O), calls = upsize_calls()
    layer = make_layer(CFG, rng, H, W, I, O)
    pointers = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "y": 0x2000 - 8}
    sim = KernelSim(CFG, stall=stall, seed=3, input_cache_pixels=80)
    place(sim, layer, pointers)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    for args in calls:
        size = args.go(CFG) * args.plane_out() * CFG.cpo
        out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(CFG))
        ref.kernel_call(CFG, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


def test_reference_upsize_is_nearest():
    """kernel_call with upsize f is the call without it, every pixel repeated f x f (numpy)."""
    rng = np.random.default_rng(1)
    (H, W, I, O), calls = upsize_calls()
    layer = make_layer(CFG, rng, H, W, I, O)
    for f in (2, 4):
        args = CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9,
                        pool=POOL_MAX, upsize=f)
        plain = CallArgs(**{**args.to_dict(), "upsize": 1})
        outs = []
        for a in (plain, args):
            out = np.zeros(a.go(CFG) * a.plane_out() * CFG.cpo, np.uint8)
            ref.kernel_call(CFG, a, layer["x"], layer["w"], layer["b"], out, layer["m"])
            outs.append(ref.unpack_activations(out, O, a.out_rows, a.out_cols, CFG.cpo))
        np.testing.assert_array_equal(outs[1], outs[0].repeat(f, axis=1).repeat(f, axis=2))


def test_fast_reference_agrees():
    from hlsinf.reference_fast import kernel_call_fast
    rng = np.random.default_rng(2)
    (H, W, I, O), calls = upsize_calls()
    layer = make_layer(CFG, rng, H, W, I, O)
    for args in calls:
        outs = []
        for fn in (ref.kernel_call, kernel_call_fast):
            out = np.zeros(args.go(CFG) * args.plane_out() * CFG.cpo, np.uint8)
            fn(CFG, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("upsize, cfg", [(2, KernelConfig(cpi=4, cpo=4)), (8, CFG), (3, CFG)])
def test_bad_upsize_names_the_argument(upsize, cfg):
    with pytest.raises(ref.CallError, match="upsize"):
        CallArgs(H=4, W=4, rows=4, I=4, O=4, upsize=upsize).validate(cfg)


def test_default_build_is_unchanged():
    from hlsinf.gateware.kernel import kernel_verilog
    text = kernel_verilog(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8), input_cache_pixels=0)
    assert "upsize" not in text
    with_up = kernel_verilog(KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8, max_upsize=2), input_cache_pixels=0)
    assert "upsize" in with_up
