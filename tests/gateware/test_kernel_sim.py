# amaranth: UnusedElaboratable=no
"""The composed kernel in Amaranth's simulator against hlsinf.reference.kernel_call (quick check;
the Verilator benches in test_kernel_rtl.py cover the scenarios in depth)."""


import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator


from hlsinf import reference as ref                      # noqa: E402
from hlsinf.config import KernelConfig                   # noqa: E402
from hlsinf.gateware.kernel import connect_params        # noqa: E402
from hlsinf.reference import POOL_AVG, POOL_MAX, CallArgs  # noqa: E402
from hlsinf.sim.amaranth_bench import KernelSim                 # noqa: E402

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)


def place(sim, layer, pointers):
    for bundle, name, image in (("gmem_in", "x", layer["x"]), ("gmem_w", "w", layer["w"]),
                                ("gmem_w", "b", layer["b"]), ("gmem_w", "m", layer["m"])):
        raw = image.view(np.uint8)
        sim.mem[bundle][pointers[name]: pointers[name] + raw.size] = raw


def make_layer(cfg, rng, H, W, I, O):
    return {
        "x": ref.pack_activations(rng.integers(*cfg.act_range, (I, H, W), endpoint=True), cfg.cpi, ref.act_dtype(cfg)),
        "w": ref.pack_weights(rng.integers(*cfg.weight_range, (O, I, 3, 3), endpoint=True), cfg.cpi, cfg.cpo,
                              ref.weight_dtype(cfg)),
        "b": ref.pack_channels(rng.integers(-3000, 3000, O), cfg.cpo, ref.bias_dtype(cfg)),
        "m": ref.pack_channels(rng.integers(0, 1 << 10, O), cfg.cpo, ref.mult_dtype(cfg)),
    }


@pytest.mark.parametrize("stall, cache, window", [(0.0, 0, True), (0.3, 0, True), (0.0, 16384, True),
                                                  (0.3, 80, True), (0.3, 80, False)])
def test_two_calls(stall, cache, window):
    """Two calls; without input cache, with one holding both tiles, and with one holding only
    the second call's tile (the first is re-read for each output group); windows from the
    Window stage or from padding -> cvt."""
    cfg = CFG
    rng = np.random.default_rng(11)
    H, W, I, O = 5, 6, 2 * cfg.cpi + 1, 2 * cfg.cpo - 1
    layer = make_layer(cfg, rng, H, W, I, O)
    pointers = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "y": 0x2000 - 8}
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=9),
             CallArgs(H=H, W=W, rows=4, I=I, O=O, pad_top=1, pad_left=1, stride=2, shift=17, use_mult=True, relu=True,
                      read_offset=W, o_first=1, pool=POOL_MAX, write_offset=2, out_plane=12)]
    sim = KernelSim(cfg, stall=stall, seed=3, input_cache_pixels=cache, window_stage=window)
    place(sim, layer, pointers)
    before = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    # Input traffic: the tile once per call when it fits in the cache, else once per output group.
    beats = 0
    for args in calls:
        passes = 1 if args.gi(cfg) * args.rows * args.W <= cache else len(args.groups(cfg))
        for g in range(args.gi(cfg)):
            addr = pointers["x"] + (g * args.H * args.W + args.read_offset) * cfg.cpi
            beats += passes * ((addr % 64 + args.rows * args.W * cfg.cpi + 63) // 64)
    assert sum(b.beats for b in sim.models["gmem_in"].reads) == beats
    expected = before.copy()
    for args in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo
        out = expected[pointers["y"]: pointers["y"] + max(size, 0)].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


@pytest.mark.parametrize("cfg", [
    KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True),
    KernelConfig(cpi=4, cpo=2, imax=64, wmax=32, hmax=32, act_bits=16, acc_bits=48),
    KernelConfig(cpi=2, cpo=8, imax=64, wmax=32, hmax=32, weight_bits=16, acc_bits=48),
], ids=["int8", "uint16-cpo2", "w16-cpi2-cpo8"])
def test_number_formats(cfg):
    """int8 and 16-bit activations, 16-bit weights, CPI != CPO: byte lengths, layouts, cache."""
    rng = np.random.default_rng(1)
    H, W, I, O = 5, 6, 2 * cfg.cpi + 1, 2 * cfg.cpo - 1
    layer = make_layer(cfg, rng, H, W, I, O)
    pixel_bytes = cfg.cpo * cfg.act_bits // 8
    pointers = {"x": 0x1000 - 5, "w": 0x8000 + 3, "b": 0x9000 - 1, "m": 0xA000 + 2, "y": 0x2000 - 8 * pixel_bytes}
    shift = 9 + (8 if cfg.act_bits == 16 else 0) + (8 if cfg.weight_bits == 16 else 0)
    calls = [CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=shift),
             CallArgs(H=H, W=W, rows=H, I=I, O=O, pad_top=1, shift=shift + 9, use_mult=True, relu=True,
                      pool=POOL_AVG, o_first=1)]
    sim = KernelSim(cfg, seed=3, input_cache_pixels=50)
    place(sim, layer, pointers)
    expected = sim.mem["gmem_out"].copy()
    sim.run([(args, pointers) for args in calls])
    for args in calls:
        size = args.go(cfg) * args.plane_out() * cfg.cpo * cfg.act_bits // 8
        out = expected[pointers["y"]: pointers["y"] + size].view(ref.act_dtype(cfg))
        ref.kernel_call(cfg, args, layer["x"], layer["w"], layer["b"], out, layer["m"])
    np.testing.assert_array_equal(sim.mem["gmem_out"], expected)


def test_connect_params_by_name():
    """Stage parameters come from the geometry fields of the same name, or from the named
    values; a parameter with neither, or a name that is no parameter, fails elaboration."""
    sink = Signal(data.StructLayout({"rows": 4, "mode": 2, "stride": 2}))
    source = Signal(data.StructLayout({"rows": 4, "conv_rows": 4, "pool": 2, "stride": 2}))
    m = Module()
    connect_params(m, sink, source, rows=source.conv_rows, mode=source.pool)

    async def bench(ctx):
        ctx.set(source, {"rows": 3, "conv_rows": 9, "pool": 2, "stride": 1})
        assert (ctx.get(sink.rows), ctx.get(sink.mode), ctx.get(sink.stride)) == (9, 2, 1)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match="'mode'"):
        connect_params(Module(), sink, source, rows=source.conv_rows)                 # no field 'mode'
    with pytest.raises(ValueError, match="cols"):
        connect_params(Module(), sink, source, mode=source.pool, cols=source.rows)   # not a parameter
