"""Window stage against ``reference.windows(reference.pad(...))``: every padding, both strides,
random stalls, frames and calls back to back; throughput against one cycle per input pixel."""

import itertools
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from hlsinf import reference as ref
from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.reference import CallArgs
from hlsinf.gateware.stages.window import Window, window_params_layout
from hlsinf.sim.streams import collect, feed, run_stage
from hlsinf.sim import chain


def small_cfg(cpi, signed, wmax=8, hmax=8):
    return KernelConfig(cpi=cpi, cpo=2, act_signed=signed, wmax=wmax, hmax=hmax, imax=16)


def random_frames(rng, cfg, rows, cols, count):
    lo, hi = cfg.act_range
    return [rng.integers(lo, hi + 1, size=(rows, cols, cfg.cpi)) for _ in range(count)]


def out_size(size, before, after, stride):
    return (size + before + after - 3) // stride + 1


def window_count(p):
    return (out_size(p["rows"], p["pad_top"], p["pad_bottom"], p["stride"]) *
            out_size(p["cols"], p["pad_left"], p["pad_right"], p["stride"]))


def expected(p, frames, cpi):
    pads = p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]
    return np.concatenate([ref.windows(ref.pad(f, *pads), p["stride"]).reshape(-1, cpi, 9) for f in frames])


def to_window(cfg):
    return lambda v: [[v[c][t] for t in range(9)] for c in range(cfg.cpi)]


def pixels(cfg, frames):
    return [[int(v) for v in px] for f in frames for px in f.reshape(-1, cfg.cpi)]


def run_calls(cfg, calls, *, stall, seed):
    """Run ``calls`` = [(params, frames)] through one Window, one call after the other.

    Frames of a call follow each other back to back. Between calls the parameters change as
    soon as the documented rule allows: once the previous call's last window *and* last
    input pixel have been taken, one cycle before the next call's first pixel is offered;
    no reset. Returns the windows of each call.
    """
    dut = Window(cfg)
    in_stall, out_stall = stall if isinstance(stall, tuple) else (stall, stall)
    rng = random.Random(seed)
    results = []
    fed = []
    counts = [len(frames) * window_count(p) for p, frames in calls]

    async def producer(ctx):
        for k, (params, frames) in enumerate(calls):
            while len(results) < k:
                await ctx.tick()
            ctx.set(dut.params, params)
            await ctx.tick()
            await feed(ctx, dut.i, pixels(cfg, frames), stall=in_stall, rng=rng)
            fed.append(k)

    async def consumer(ctx):
        out_rng = random.Random(seed + 1)
        for k, count in enumerate(counts):
            items, _ = await collect(ctx, dut.o, count, stall=out_stall, rng=out_rng, convert=to_window(cfg))
            while len(fed) <= k:          # a dropped last row (stride 2) may follow the last window
                await ctx.tick()
            results.append(items)

    n_pixels = sum(f.shape[0] * f.shape[1] for _, frames in calls for f in frames)
    run_stage(dut, [producer, consumer], deadline_cycles=40 * (n_pixels + sum(counts)) + 20 * len(calls) + 200)
    return results


def check_calls(cfg, calls, results):
    assert len(results) == len(calls)
    for (p, frames), got in zip(calls, results):
        np.testing.assert_array_equal(np.array(got, dtype=np.int64).reshape(-1, cfg.cpi, 9),
                                      expected(p, frames, cfg.cpi), err_msg=f"params {p}")


def params(rows, cols, top, bottom, left, right, stride):
    return dict(rows=rows, cols=cols, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
                stride=stride)


def fits(rows, cols, top, bottom, left, right):
    return rows + top + bottom >= 3 and cols + left + right >= 3


PADS = list(itertools.product(range(MAX_PAD + 1), repeat=4))      # every (top, bottom, left, right)
SIZES = [(1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (2, 4), (4, 1), (1, 5), (6, 7), (5, 6), (4, 4), (7, 2)]


@pytest.mark.parametrize("cpi,signed", [(1, False), (2, True), (4, False), (4, True)])
def test_every_padding_with_stalls(cpi, signed):
    """All 81 paddings at stride 1 and 2, tiles 1x1 .. 6x7, 2-3 frames per call, 30% stalls."""
    cfg = small_cfg(cpi, signed)
    rng = np.random.default_rng(cpi * 10 + signed)
    calls = []
    for n, pads in enumerate(PADS):
        for stride in (1, 2):
            for k in range(len(SIZES)):
                rows, cols = SIZES[(n * 5 + stride * 3 + k + cpi) % len(SIZES)]
                if fits(rows, cols, *pads):
                    break
            calls.append((params(rows, cols, *pads, stride), random_frames(rng, cfg, rows, cols, 2 + (n + stride) % 2)))
    random.Random(cpi).shuffle(calls)
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=cpi))


def test_widest_tile_with_stalls():
    """Tiles as wide as the line buffers (wmax) and as tall as hmax, both strides."""
    cfg = small_cfg(2, True, wmax=6, hmax=5)
    rng = np.random.default_rng(5)
    calls = [(params(cfg.hmax, cfg.wmax, *pads, s), random_frames(rng, cfg, cfg.hmax, cfg.wmax, 2))
             for pads, s in [((1, 1, 1, 1), 1), ((2, 0, 0, 2), 2), ((0, 0, 0, 0), 1), ((2, 2, 2, 2), 2)]]
    check_calls(cfg, calls, run_calls(cfg, calls, stall=0.3, seed=9))


def test_params_layout_widths():
    cfg = KernelConfig(cpi=2, cpo=2, wmax=124, hmax=60, imax=16)
    layout = window_params_layout(cfg)
    assert layout["cols"].shape.width == 7 and layout["rows"].shape.width == 6     # up to 124 and 60
    assert layout["pad_top"].shape.width == 2 and layout["stride"].shape.width == 2


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_config():
    with pytest.raises(TypeError, match="KernelConfig"):
        Window(dict(cpi=2))


def measure(cfg, p, frames):
    """Stall-free run: (windows, cycles from the first input offered to the last window taken)."""
    dut = Window(cfg)
    got = {}
    n_out = len(frames) * window_count(p)

    async def producer(ctx):
        ctx.set(dut.params, p)
        await ctx.tick()
        await feed(ctx, dut.i, pixels(cfg, frames))

    async def consumer(ctx):
        await ctx.tick()                     # the producer's parameter cycle
        got["items"], got["cycles"] = await collect(ctx, dut.o, n_out, convert=to_window(cfg))

    run_stage(dut, [producer, consumer], deadline_cycles=4 * n_out + 40 * p["cols"] + 200)
    np.testing.assert_array_equal(np.array(got["items"]).reshape(-1, cfg.cpi, 9), expected(p, frames, cfg.cpi))
    return got["cycles"]


#: Stall-free cost of a call of F 'same' frames (pad 1 all round, stride 1), from the first
#: input pixel offered to the last window taken: F*rows*cols + first + LATENCY, where
#: ``first`` is the index of the input pixel window (0, 0) waits for: pixel (1, 1), i.e.
#: ``cols + 1``, for tiles of at least 2x2 (the one-row fill). LATENCY: the pixel is
#: written (1), fetched (2), its column formed into the output register (3); one more
#: for a 1-column tile, whose windows all come from the tail register. After the first
#: window, one window leaves every cycle: no gap between rows or frames.
LATENCY = 3


def first_needed_pixel(rows, cols):
    return min(1, rows - 1) * cols + min(1, cols - 1)


@pytest.mark.parametrize("rows,cols,frames", [(3, 3, 4), (4, 6, 3), (6, 5, 3), (1, 4, 5), (5, 1, 3), (1, 1, 6), (2, 8, 3)])
def test_throughput_same_padding(rows, cols, frames):
    """No stalls, pad 1 all round: every frame after the first costs exactly rows*cols cycles."""
    cfg = small_cfg(2, False)
    rng = np.random.default_rng(rows * 10 + cols)
    p = params(rows, cols, 1, 1, 1, 1, 1)
    cycles = measure(cfg, p, random_frames(rng, cfg, rows, cols, frames))
    want = frames * rows * cols + first_needed_pixel(rows, cols) + LATENCY + (cols == 1)
    assert cycles == want, f"{cycles} cycles for {frames} frames of {rows}x{cols}, expected {want}"


def test_throughput_14x14_four_frames():
    """A VGG16 14x14 'same' tile, 4 frames: the exact count and its ratio to rows*cols per frame."""
    cfg = small_cfg(1, False, wmax=16, hmax=16)
    rng = np.random.default_rng(14)
    cycles = measure(cfg, params(14, 14, 1, 1, 1, 1, 1), random_frames(rng, cfg, 14, 14, 4))
    ideal = 4 * 14 * 14
    print(f"14x14, 4 frames: {cycles} cycles, ideal {ideal}, ratio {cycles / ideal:.4f}")
    assert cycles == ideal + first_needed_pixel(14, 14) + LATENCY        # 784 + 15 + 3


@pytest.mark.slow
def test_throughput_56x56_four_frames():
    cfg = small_cfg(1, False, wmax=56, hmax=56)
    rng = np.random.default_rng(56)
    cycles = measure(cfg, params(56, 56, 1, 1, 1, 1, 1), random_frames(rng, cfg, 56, 56, 4))
    ideal = 4 * 56 * 56
    print(f"56x56, 4 frames: {cycles} cycles, ideal {ideal}, ratio {cycles / ideal:.4f}")
    assert cycles == ideal + first_needed_pixel(56, 56) + LATENCY


def measure_calls(cfg, calls):
    """Stall-free calls [(params, frames)] one after the other in one simulation (each
    drained before the next); the cycles each took, up to a constant offset."""
    dut = Window(cfg)
    started, cycles = [], []

    async def producer(ctx):
        for k, (p, frames) in enumerate(calls):
            while len(cycles) < k:
                await ctx.tick()
            ctx.set(dut.params, p)
            await ctx.tick()
            started.append(k)
            await feed(ctx, dut.i, pixels(cfg, frames))

    async def consumer(ctx):
        for k, (p, frames) in enumerate(calls):
            while len(started) <= k:
                await ctx.tick()
            items, n = await collect(ctx, dut.o, len(frames) * window_count(p), convert=to_window(cfg))
            np.testing.assert_array_equal(np.array(items).reshape(-1, cfg.cpi, 9), expected(p, frames, cfg.cpi))
            cycles.append(n)

    total = sum(len(frames) * max(f.shape[0] * f.shape[1], window_count(p)) for p, frames in calls for f in frames)
    run_stage(dut, [producer, consumer], deadline_cycles=4 * total + 100 * len(calls))
    return cycles


@pytest.mark.parametrize("stride", [1, 2])
def test_every_padding_costs_max_of_pixels_and_windows(stride):
    """Steady state, every padding: a frame costs max(rows*cols, windows) cycles, except when
    the vertical padding exceeds 2 and the horizontal one is below 2 at stride 1 (see
    docs/stages/window.md): then output rows * cols (the reader fetches every column of
    every output row)."""
    cfg = small_cfg(1, False)
    rng = np.random.default_rng(stride)
    rows, cols = 5, 6
    calls = []
    for pads in PADS:
        p = params(rows, cols, *pads, stride)
        calls += [(p, random_frames(rng, cfg, rows, cols, 1)), (p, random_frames(rng, cfg, rows, cols, 3))]
    cycles = measure_calls(cfg, calls)
    for n, pads in enumerate(PADS):
        p = calls[2 * n][0]
        per_frame = (cycles[2 * n + 1] - cycles[2 * n]) / 2
        out_rows = out_size(rows, pads[0], pads[1], stride)
        ideal = max(rows * cols, window_count(p))
        if stride == 1 and pads[0] + pads[1] > 2 and pads[2] + pads[3] < 2:
            ideal = out_rows * cols
        assert per_frame == ideal, f"pads {pads}: {per_frame} cycles per frame, expected {ideal}"


@pytest.mark.parametrize("in_stall,out_stall", [(0.0, 0.8), (0.8, 0.0), (0.5, 0.5)])
def test_one_sided_stalls(in_stall, out_stall):
    """A slow consumer (the slot ring fills, the writer waits) or a slow producer (the reader
    waits on the credit), both strides, frames back to back."""
    cfg = small_cfg(2, False)
    rng = np.random.default_rng(int(in_stall * 10 + out_stall * 100))
    calls = [(params(r, c, *pads, s), random_frames(rng, cfg, r, c, 3))
             for (r, c), pads, s in [((5, 6), (1, 1, 1, 1), 1), ((6, 5), (1, 0, 2, 0), 2), ((2, 3), (0, 1, 0, 2), 1),
                                     ((1, 1), (1, 1, 1, 1), 1), ((7, 4), (0, 0, 0, 0), 2)]]
    check_calls(cfg, calls, run_calls(cfg, calls, stall=(in_stall, out_stall), seed=3))


# The stage in the chain, as the kernel will use it -------------------------------------------

class WindowChain(wiring.Component):
    """window -> mul -> add -> relu -> pool: test_chain's Chain with padding + cvt replaced."""

    def __init__(self, cfg):
        from hlsinf.gateware.stages.add import Add
        from hlsinf.gateware.stages.mul import Mul
        from hlsinf.gateware.stages.pool import Pool
        from hlsinf.gateware.stages.relu import Relu
        self.cfg = cfg
        self.stages = {"window": Window(cfg), "mul": Mul(cfg), "add": Add(cfg), "relu": Relu(cfg), "pool": Pool(cfg)}
        s = self.stages
        members = {"i": s["window"].signature.members["i"], "weights": s["mul"].signature.members["weights"],
                   "bias": s["add"].signature.members["bias"], "o": s["pool"].signature.members["o"]}
        if cfg.with_multiplier:
            members["mult"] = s["relu"].signature.members["mult"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        s = self.stages
        for name, stage in s.items():
            m.submodules[name] = stage
        wiring.connect(m, wiring.flipped(self.i), s["window"].i)
        wiring.connect(m, s["window"].o, s["mul"].i)
        wiring.connect(m, wiring.flipped(self.weights), s["mul"].weights)
        wiring.connect(m, s["mul"].o, s["add"].i)
        wiring.connect(m, wiring.flipped(self.bias), s["add"].bias)
        wiring.connect(m, s["add"].o, s["relu"].i)
        if self.cfg.with_multiplier:
            wiring.connect(m, wiring.flipped(self.mult), s["relu"].mult)
        wiring.connect(m, s["relu"].o, s["pool"].i)
        wiring.connect(m, s["pool"].o, wiring.flipped(self.o))
        return m


def window_params(args):
    return params(args.rows, args.W, args.pad_top, args.pad_bottom, args.pad_left, args.pad_right, args.stride)


def simulate_chain(cfg, calls, *, stall, seed=0):
    """Calls [(args, CallStreams)] back to back through one WindowChain; per call (pixels, cycles).

    ``hlsinf.sim.chain.simulate_calls`` with window as the front stage: a call's parameters change
    once the previous call has drained (its output is out, window and pool have taken every
    input of it), and its first pixel follows them by one cycle, the least the window stage
    allows.
    """

    def params_of(args):
        stage_params = chain.stage_params(cfg, args)
        return {"window": window_params(args), **{name: stage_params[name] for name in ("mul", "add", "relu", "pool")}}

    return chain.simulate_calls(cfg, calls, stall=stall, seed=seed, dut=WindowChain(cfg), params_of=params_of,
                                front="window", front_inputs=lambda args: args.rows * args.W, settle=1)


def chain_case(rng, cfg, args):
    images = chain.random_layer(rng, cfg, args)
    streams = chain.call_streams(cfg, args, images["x_mem"], images["w_mem"], images["b_mem"], images["m_mem"])
    want = ref.kernel_call(cfg, args, out_mem=chain.out_image(cfg, args), **images)
    return streams, want


def test_chain_calls_back_to_back_with_stalls():
    """Whole layers (3 input, 2 output groups; every test_chain case) through window..pool
    in one simulation, 30% stalls on every stream, against reference.kernel_call."""
    rng = np.random.default_rng(11)
    for cfg in (chain.CFG, chain.CFG_INT8):
        cases = [CallArgs(**args.to_dict()) for c, args in chain.CASES.values() if c is cfg]
        calls, wants = [], []
        for args in cases:
            streams, want = chain_case(rng, cfg, args)
            calls.append((args, streams))
            wants.append(want)
        assert len(calls) >= 2
        results = simulate_chain(cfg, calls, stall=0.3, seed=len(cases))
        for (args, _), (pixels_out, _), want in zip(calls, results, wants):
            got = chain.place_outputs(cfg, args, pixels_out, chain.out_image(cfg, args))
            np.testing.assert_array_equal(got, want, err_msg=str(args))


def test_chain_throughput():
    """Unstalled, a 'same' layer through the chain: ideal cycles + one row + the pipeline,
    where padding -> cvt took one cycle per padded pixel (test_chain: 336 + 21)."""
    cfg, args = chain.CASES["stride1_max_mult"]
    args = CallArgs(**args.to_dict())
    streams, want = chain_case(np.random.default_rng(5), cfg, args)
    [(pixels_out, cycles)] = simulate_chain(cfg, [(args, streams)], stall=0.0)
    np.testing.assert_array_equal(chain.place_outputs(cfg, args, pixels_out, chain.out_image(cfg, args)), want)
    ideal = args.ideal_cycles(cfg)
    print(f"chain with window: {cycles} cycles, ideal {ideal}")
    assert cycles <= ideal + args.W + 1 + 21          # 21: the pipeline, 10 of it in relu
