"""A whole small layer through padding -> cvt -> mul -> add -> relu -> pool, in one Amaranth top.

Simulation support for the chain tests (tests/gateware/test_chain.py and the window
stage's). The testbench does what the kernel's read side will do: it cuts the call's memory images
into the stage streams (:func:`call_streams`), sets every stage's parameters from the call
arguments (:func:`stage_params`), and places the output stream back into an output image
(:func:`place_outputs`), which must equal ``reference.kernel_call`` on the same images bit
for bit. These three helpers are kept free of any simulation so the kernel can reuse them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.reference import CallArgs

from hlsinf.sim.streams import collect, feed, run_stage

from hlsinf.gateware.stages.add import Add
from hlsinf.gateware.stages.cvt import Cvt
from hlsinf.gateware.stages.mul import Mul
from hlsinf.gateware.stages.padding import Padding
from hlsinf.gateware.stages.pool import Pool
from hlsinf.gateware.stages.relu import Relu


# Call arguments -> stage streams (reusable by the kernel) ------------------------------------

@dataclass
class CallStreams:
    """What one kernel call feeds into the stage streams, in stream order.

    For each output group ``og`` in ``groups``, for each input group ``gi``: one input frame
    (``rows x W x CPI``) and one weight set (``CPO x CPI x 9``, tap ``ky*3+kx``); one bias
    (``CPO``) and, with ``use_mult``, one multiplier item (``CPO``) per output group.
    """

    groups: range
    frames: list
    weight_sets: list
    biases: list
    mults: list

    @property
    def frame_pixels(self) -> int:
        return sum(f.shape[0] * f.shape[1] for f in self.frames)


def call_streams(cfg: KernelConfig, args: CallArgs, x_mem, w_mem, b_mem, m_mem=None) -> CallStreams:
    """Cut a call's memory images (layouts of docs/numbers.md) into the stage streams."""
    args.validate(cfg)
    gi_count, go_count = args.gi(cfg), args.go(cfg)
    plane = args.H * args.W
    x = np.asarray(x_mem).reshape(-1)[: gi_count * plane * cfg.cpi].reshape(gi_count, plane, cfg.cpi)
    tile = x[:, args.read_offset: args.read_offset + args.rows * args.W].reshape(gi_count, args.rows, args.W, cfg.cpi)
    w = np.asarray(w_mem).reshape(-1)[: go_count * gi_count * cfg.cpo * cfg.cpi * 9]
    w = w.reshape(go_count, gi_count, cfg.cpo, cfg.cpi, 9)
    b = np.asarray(b_mem).reshape(-1)[: go_count * cfg.cpo].reshape(go_count, cfg.cpo)
    groups = args.groups(cfg)
    frames, weight_sets = [], []
    for og in groups:
        for gi in range(gi_count):
            frames.append(tile[gi])
            weight_sets.append(w[og, gi])
    mults = []
    if args.use_mult:
        mm = np.asarray(m_mem).reshape(-1)[: go_count * cfg.cpo].reshape(go_count, cfg.cpo)
        mults = [mm[og] for og in groups]
    return CallStreams(groups, frames, weight_sets, [b[og] for og in groups], mults)


def stage_params(cfg: KernelConfig, args: CallArgs) -> dict:
    """Every stage's ``params`` for a call, keyed by stage name."""
    args.validate(cfg)
    padded_rows = args.rows + args.pad_top + args.pad_bottom
    padded_cols = args.W + args.pad_left + args.pad_right
    frame_pixels = args.conv_rows * args.conv_cols
    lo, hi = args.clip_bounds(cfg)
    return {
        "padding": dict(rows=args.rows, cols=args.W, pad_top=args.pad_top, pad_bottom=args.pad_bottom,
                        pad_left=args.pad_left, pad_right=args.pad_right),
        "cvt": dict(rows=padded_rows, cols=padded_cols, stride=args.stride),
        "mul": dict(frame_pixels=frame_pixels),
        "add": dict(frame_pixels=frame_pixels, groups_in=args.gi(cfg)),
        "relu": dict(frame_pixels=frame_pixels, shift=args.shift, clip_lo=lo, clip_hi=hi,
                     relu=int(args.relu), use_mult=int(args.use_mult)),
        "pool": dict(rows=args.conv_rows, cols=args.conv_cols, mode=args.pool),
    }


def output_pixels(args: CallArgs, cfg: KernelConfig) -> int:
    """Pixels (of CPO lanes) on the output stream for the whole call."""
    return len(args.groups(cfg)) * args.out_rows * args.out_cols


def place_outputs(cfg: KernelConfig, args: CallArgs, pixels, out_mem) -> np.ndarray:
    """Write the output stream (``output_pixels`` items of CPO lanes) into a GOHWCPO image."""
    per_group = args.out_rows * args.out_cols
    pixels = np.asarray(pixels).reshape(len(args.groups(cfg)), per_group * cfg.cpo)
    out = out_mem.reshape(-1)
    for k, og in enumerate(args.groups(cfg)):
        base = (og * args.plane_out() + args.write_offset) * cfg.cpo
        out[base: base + per_group * cfg.cpo] = pixels[k]
    return out_mem


# The chain -------------------------------------------------------------------------------------

class Chain(wiring.Component):
    """padding -> cvt -> mul -> add -> relu -> pool; each stage's ``params`` set directly."""

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.padding, self.cvt, self.mul = Padding(cfg), Cvt(cfg), Mul(cfg)
        self.add, self.relu, self.pool = Add(cfg), Relu(cfg), Pool(cfg)
        members = {
            "i": self.padding.signature.members["i"],
            "weights": self.mul.signature.members["weights"],
            "bias": self.add.signature.members["bias"],
            "o": self.pool.signature.members["o"],
        }
        if cfg.with_multiplier:
            members["mult"] = self.relu.signature.members["mult"]
        super().__init__(members)

    @property
    def stages(self) -> dict:
        return {"padding": self.padding, "cvt": self.cvt, "mul": self.mul,
                "add": self.add, "relu": self.relu, "pool": self.pool}

    def elaborate(self, platform):
        m = Module()
        for name, stage in self.stages.items():
            m.submodules[name] = stage
        wiring.connect(m, wiring.flipped(self.i), self.padding.i)
        wiring.connect(m, self.padding.o, self.cvt.i)
        wiring.connect(m, self.cvt.o, self.mul.i)
        wiring.connect(m, wiring.flipped(self.weights), self.mul.weights)
        wiring.connect(m, self.mul.o, self.add.i)
        wiring.connect(m, wiring.flipped(self.bias), self.add.bias)
        wiring.connect(m, self.add.o, self.relu.i)
        if self.cfg.with_multiplier:
            wiring.connect(m, wiring.flipped(self.mult), self.relu.mult)
        wiring.connect(m, self.relu.o, self.pool.i)
        wiring.connect(m, self.pool.o, wiring.flipped(self.o))
        return m


def lanes(values) -> list:
    return [int(v) for v in values]


def padded_pixels(args: CallArgs) -> int:
    """Pixels of one padded frame: what cvt takes per input frame."""
    return (args.rows + args.pad_top + args.pad_bottom) * (args.W + args.pad_left + args.pad_right)


def simulate_calls(cfg, calls, *, stall, seed=0, dut=None, params_of=None, front="cvt",
                   front_inputs=padded_pixels, settle=3):
    """Run ``calls`` (list of (args, CallStreams)) back to back through one Chain.

    Returns, per call, ``(output pixels, cycles)`` (cycles counted by the collector).

    A call's parameters change only once the previous call has drained: its output is
    out, and the front stage and pool have taken every input of it (a dropped last row of
    pool, or of cvt at stride 2, is taken after the last output), as the kernel must do
    before ap_done. The first pixel follows its parameters by ``settle`` cycles, as it
    follows ap_start in the kernel (the padding stage needs its parameters settled first).

    Another front end passes its own ``dut`` (with the same ports and a ``stages`` dict),
    ``params_of(args) -> {stage: params}``, the name of its first stage and the inputs
    that stage takes per frame.
    """
    dut = dut or Chain(cfg)
    params_of = params_of or (lambda args: stage_params(cfg, args))
    outputs_done, results = [], []
    taken = {front: 0, "pool": 0}          # transfers into the front stage and pool so far

    def totals(args):
        frames = args.gi(cfg) * len(args.groups(cfg))
        return {front: frames * front_inputs(args),
                "pool": len(args.groups(cfg)) * args.conv_rows * args.conv_cols}

    def count_transfers(name):
        port = dut.stages[name].i

        async def bench(ctx):
            while len(outputs_done) < len(calls):
                _, _, valid, ready = await ctx.tick().sample(port.valid, port.ready)
                taken[name] += valid and ready
        return bench

    async def wait_for_call(ctx, k):
        need = {name: sum(totals(args)[name] for args, _ in calls[:k]) for name in taken}
        while len(outputs_done) < k or any(taken[name] < need[name] for name in taken):
            await ctx.tick()

    async def params_and_pixels(ctx):
        rng = random.Random(seed)
        for k, (args, streams) in enumerate(calls):
            await wait_for_call(ctx, k)
            for name, params in params_of(args).items():
                ctx.set(dut.stages[name].params, params)
            await ctx.tick().repeat(settle)
            items = [lanes(px) for frame in streams.frames for px in frame.reshape(-1, cfg.cpi)]
            await feed(ctx, dut.i, items, stall=stall, rng=rng)

    def side_stream(port, name, offset):
        async def bench(ctx):
            rng = random.Random(seed + offset)
            for k, (args, streams) in enumerate(calls):
                await wait_for_call(ctx, k)
                items = getattr(streams, name)
                if name == "weight_sets":
                    items = [[[lanes(taps) for taps in lane] for lane in w.reshape(cfg.cpo, cfg.cpi, 9)]
                             for w in items]
                else:
                    items = [lanes(v) for v in items]
                await feed(ctx, port, items, stall=stall, rng=rng)
        return bench

    async def collector(ctx):
        rng = random.Random(seed + 9)
        for args, _ in calls:
            results.append(await collect(ctx, dut.o, output_pixels(args, cfg), stall=stall, rng=rng,
                                         convert=lambda p: [p[k] for k in range(cfg.cpo)]))
            outputs_done.append(True)

    benches = [params_and_pixels, side_stream(dut.weights, "weight_sets", 1),
               side_stream(dut.bias, "biases", 2), collector]
    if cfg.with_multiplier:
        benches.append(side_stream(dut.mult, "mults", 3))
    benches += [count_transfers(front), count_transfers("pool")]
    run_stage(dut, benches, deadline_cycles=20_000)
    return results


# Small layers that the chain tests share ---------------------------------------------------

CFG = KernelConfig(cpi=2, cpo=2, imax=16, wmax=8, hmax=8)
CFG_INT8 = KernelConfig(cpi=2, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8)


def random_layer(rng, cfg, args):
    """Memory images for a layer with I inputs, O outputs and an H x W image."""
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    x = rng.integers(amin, amax + 1, (args.I, args.H, args.W))
    w = rng.integers(wmin, wmax + 1, (args.O, args.I, 3, 3))
    b = rng.integers(-4000, 4000, args.O)
    mult = rng.integers(1, 1 << cfg.mult_bits, args.O)
    images = dict(x_mem=ref.pack_activations(x, cfg.cpi, ref.act_dtype(cfg)),
                  w_mem=ref.pack_weights(w, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg)),
                  b_mem=ref.pack_channels(b, cfg.cpo, ref.bias_dtype(cfg)),
                  m_mem=ref.pack_channels(mult, cfg.cpo, ref.mult_dtype(cfg)))
    # A shift that brings the largest |acc * M| just inside the activation range, so the
    # outputs spread over the range (computed with plain numpy, not the model under test).
    r0 = args.read_offset // args.W
    tile = np.pad(x[:, r0: r0 + args.rows].astype(np.int64),
                  ((0, 0), (args.pad_top, args.pad_bottom), (args.pad_left, args.pad_right)))
    win = np.lib.stride_tricks.sliding_window_view(tile, (3, 3), axis=(1, 2))[:, ::args.stride, ::args.stride]
    acc = np.einsum("ihwyx,oiyx->ohw", win, w.astype(np.int64)) + b[:, None, None]
    scaled = np.abs(acc) * (mult[:, None, None] if args.use_mult else 1)
    peak = int(scaled.max())
    args.shift = max(0, min(cfg.max_shift, peak.bit_length() - cfg.act_bits))
    return images


def out_image(cfg, args):
    size = (args.groups(cfg).stop) * args.plane_out() * cfg.cpo
    return np.zeros(size, ref.act_dtype(cfg))


CASES = {
    # 5x6 image, I=5 (3 input groups), O=3 (2 output groups), padding on all sides.
    "stride1_max_mult": (CFG, CallArgs(H=5, W=6, rows=5, I=5, O=3, pad_top=1, pad_bottom=1, pad_left=1,
                                       pad_right=1, stride=1, relu=True, use_mult=True, pool=ref.POOL_MAX)),
    "stride2_avg_mult": (CFG, CallArgs(H=5, W=6, rows=5, I=5, O=3, pad_top=1, pad_bottom=1, pad_left=1,
                                       pad_right=1, stride=2, relu=False, use_mult=True, pool=ref.POOL_AVG)),
    "stride1_avg_int8": (CFG_INT8, CallArgs(H=5, W=6, rows=5, I=5, O=3, pad_top=1, pad_bottom=2, pad_left=2,
                                            pad_right=1, stride=1, relu=False, use_mult=True, pool=ref.POOL_AVG,
                                            clip_lo=-100, clip_hi=90)),
    "stride2_none_shift_only": (CFG_INT8, CallArgs(H=5, W=6, rows=5, I=5, O=3, pad_top=1, pad_bottom=1,
                                                   pad_left=1, pad_right=1, stride=2, relu=True, pool=ref.POOL_NONE)),
    # A row tile of a taller image, one output group, written into a larger output plane.
    "row_tile_group1": (CFG, CallArgs(H=7, W=5, rows=4, I=3, O=4, pad_top=0, pad_bottom=1, pad_left=1,
                                      pad_right=1, read_offset=2 * 5, o_first=1, o_count=1, use_mult=True,
                                      pool=ref.POOL_MAX, write_offset=3, out_plane=12)),
}
