"""The call controller against CallArgs: derived geometry and every memory command of a call."""

import random

import numpy as np
import pytest

from amaranth.back import rtlil
from amaranth.sim import Simulator

from hlsinf.config import KernelConfig
from hlsinf.reference import CallArgs, POOL_AVG, POOL_MAX, POOL_NONE
from hlsinf.registers import encode_call, register_map
from hlsinf.gateware.sequencer import Sequencer, WeightKind, weight_set_bytes

from hlsinf.sim.streams import collect

POINTERS = {"x": 0x1_0000_0013, "w": 0x2000_0101, "b": 0x3000_0002, "m": 0x4000_0300, "y": 0x5_0000_0fff}


def argument_values(cfg, args, pointers):
    """Register words of a call, regrouped per argument (pointers as one 64-bit value)."""
    words = encode_call(args, cfg, pointers)
    values = {}
    for reg in register_map(cfg):
        values[reg.name] = words[reg.offset] | (words[reg.offset + 4] << 32 if reg.bits == 64 else 0)
    return values


def expected_commands(cfg, args, p, cache_pixels=0):
    """The transfers of a call, written out from the memory layouts in hlsinf.reference."""
    ab = cfg.act_bits // 8
    cpi, cpo = cfg.cpi * ab, cfg.cpo * ab      # bytes per pixel
    gi, plane_in = args.gi(cfg), args.H * args.W
    bias_bytes = cfg.bias_bits // 8
    reads, params, writes = [], [], []
    cached = 0 < gi * args.rows * args.W <= cache_pixels and not args.depthwise
    for k, og in enumerate(args.groups(cfg)):
        # A depthwise call reads input group og for output group og, a dense one every input group.
        in_groups = [og] if args.depthwise else range(gi if k == 0 or not cached else 0)
        for g in in_groups:
            reads.append((p["x"] + (g * plane_in + args.read_offset) * cpi, args.rows * args.W * cpi))
        params.append((p["b"] + og * cfg.cpo * bias_bytes, cfg.cpo * bias_bytes, WeightKind.BIAS.value))
        if args.use_mult:
            params.append((p["m"] + og * cfg.cpo * 4, cfg.cpo * 4, WeightKind.MULT.value))
        if args.depthwise:      # [G][CPO][3][3]
            params.append((p["w"] + og * cfg.cpo * 9 * cfg.weight_bits // 8, cfg.cpo * 9 * cfg.weight_bits // 8,
                           WeightKind.WEIGHTS.value))
        else:
            params.append((p["w"] + og * gi * cfg.cpo * cfg.cpi * 9 * cfg.weight_bits // 8,
                           gi * weight_set_bytes(cfg), WeightKind.WEIGHTS.value))
        writes.append((p["y"] + (og * args.plane_out() + args.write_offset) * cpo,
                       args.out_rows * args.out_cols * cpo))
    return reads, params, writes


def run_calls(cfg, calls, stall=0.3, seed=0, cache_pixels=0):
    dut = Sequencer(cfg, cache_pixels=cache_pixels)
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        for args in calls:
            values = argument_values(cfg, args, POINTERS)
            for name, value in values.items():
                ctx.set(getattr(dut.args, name), value)
            reads, params, writes = expected_commands(cfg, args, POINTERS, cache_pixels)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got = {}

            async def take(name, stream, count, kind=False):
                def convert(v):
                    return (v.addr, v.length) + ((v.kind.value,) if kind else ())
                got[name], _ = await collect(ctx, stream, count, stall=stall,
                                             rng=random.Random(rng.random()), convert=convert)

            # Take the three streams one after the other: each generator runs on its own.
            await take("reads", dut.in_cmd, len(reads))
            await take("params", dut.w_cmd, len(params), kind=True)
            await take("writes", dut.out_cmd, len(writes))
            assert got == {"reads": reads, "params": params, "writes": writes}
            g = dut.geometry
            geometry = {k: ctx.get(getattr(g, k)) for k in
                        ("groups_in", "conv_rows", "conv_cols", "frame_pixels", "out_rows", "out_cols",
                         "out_pixels", "padded_rows", "padded_cols", "stride", "pool")}
            assert geometry == {
                "groups_in": args.frames_per_group(cfg), "conv_rows": args.conv_rows, "conv_cols": args.conv_cols,
                "frame_pixels": args.conv_rows * args.conv_cols, "out_rows": args.out_rows,
                "out_cols": args.out_cols, "out_pixels": args.out_rows * args.out_cols,
                "padded_rows": args.rows + args.pad_top + args.pad_bottom,
                "padded_cols": args.W + args.pad_left + args.pad_right,
                "stride": args.stride, "pool": args.pool}
            if cache_pixels:
                tile = args.frames_per_group(cfg) * args.rows * args.W
                assert (ctx.get(g.tile_pixels), ctx.get(g.cached), ctx.get(g.passes)) == \
                    (tile, int(tile <= cache_pixels and not args.depthwise), len(args.groups(cfg)))
            else:
                assert not ctx.get(g.cached)
            lo, hi = args.clip_bounds(cfg)
            assert (ctx.get(g.clip_lo), ctx.get(g.clip_hi)) == (lo, hi)
            # done only after the last write is acknowledged and the last input pixel taken,
            # whichever comes last
            pixels = len(args.groups(cfg)) * args.frames_per_group(cfg) * args.rows * args.W
            if cfg.with_depthwise:
                assert ctx.get(g.depthwise) == int(args.depthwise)
            events = ["ack"] * len(writes) + ["pixel"] * pixels
            last = "ack" if rng.random() < 0.5 else "pixel"
            events.remove(last)
            rng.shuffle(events)
            for event in events + [last]:
                for _ in range(rng.randrange(3)):
                    assert ctx.get(dut.busy) and not ctx.get(dut.done)
                    await ctx.tick()
                pulse = dut.out_ack if event == "ack" else dut.in_taken
                ctx.set(pulse, 1)
                await ctx.tick()
                ctx.set(pulse, 0)
            for cycle in range(3):
                if ctx.get(dut.done):
                    break
                await ctx.tick()
            assert ctx.get(dut.done), f"done not raised after the last {last}"
            await ctx.tick()
            assert not ctx.get(dut.busy)
            results.append(args)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * 20000 * len(calls))
    assert results == calls


CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)


def test_one_call_every_feature():
    args = CallArgs(H=9, W=7, rows=5, I=10, O=11, pad_top=1, pad_bottom=2, pad_left=2, pad_right=1,
                    stride=2, o_first=1, o_count=2, relu=True, shift=5, use_mult=True, pool=POOL_MAX,
                    read_offset=14, write_offset=3, out_plane=20)
    run_calls(CFG, [args])


@pytest.mark.parametrize("cache_pixels", [0, 60])
def test_back_to_back_random_calls(cache_pixels):
    rng = np.random.default_rng(3)
    calls = []
    while len(calls) < 12:
        H, W = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        rows = int(rng.integers(1, H + 1))
        args = CallArgs(H=H, W=W, rows=rows, I=int(rng.integers(1, 20)), O=int(rng.integers(1, 20)),
                        pad_top=int(rng.integers(0, 3)), pad_bottom=int(rng.integers(0, 3)),
                        pad_left=int(rng.integers(0, 3)), pad_right=int(rng.integers(0, 3)),
                        stride=int(rng.choice([1, 2])), use_mult=bool(rng.integers(0, 2)),
                        relu=bool(rng.integers(0, 2)), shift=int(rng.integers(0, 20)),
                        read_offset=int(rng.integers(0, H - rows + 1)) * W)
        if args.conv_rows < 1 or args.conv_cols < 1:
            continue
        if args.conv_rows >= 2 and args.conv_cols >= 2:
            args.pool = int(rng.choice([POOL_NONE, POOL_MAX, POOL_AVG]))
        go = args.go(CFG)
        args.o_first = int(rng.integers(0, go))
        args.o_count = int(rng.integers(1, go - args.o_first + 1))
        if rng.integers(0, 2):
            args.write_offset = int(rng.integers(0, 5))
            args.out_plane = args.write_offset + args.out_rows * args.out_cols + int(rng.integers(0, 4))
        calls.append(args.validate(CFG))
    run_calls(CFG, calls, seed=7, cache_pixels=cache_pixels)


@pytest.mark.parametrize("cache_pixels", [0, 60])
def test_depthwise_calls_among_dense_ones(cache_pixels):
    """A kernel built with depthwise: random depthwise calls (one frame of input group og per output
    group og, [G][CPO][3][3] weights, never cached) back to back with dense ones."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, with_depthwise=True)
    rng = np.random.default_rng(9)
    calls = []
    while len(calls) < 10:
        H, W = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        rows = int(rng.integers(1, H + 1))
        C = int(rng.integers(1, 20))
        depthwise = bool(rng.integers(0, 3))
        args = CallArgs(H=H, W=W, rows=rows, I=C, O=C if depthwise else int(rng.integers(1, 20)),
                        pad_top=int(rng.integers(0, 3)), pad_bottom=int(rng.integers(0, 3)),
                        pad_left=int(rng.integers(0, 3)), pad_right=int(rng.integers(0, 3)),
                        stride=int(rng.choice([1, 2])), use_mult=bool(rng.integers(0, 2)),
                        read_offset=int(rng.integers(0, H - rows + 1)) * W, depthwise=depthwise)
        if args.conv_rows < 1 or args.conv_cols < 1:
            continue
        go = args.go(cfg)
        args.o_first = int(rng.integers(0, go))
        args.o_count = int(rng.integers(1, go - args.o_first + 1))
        calls.append(args.validate(cfg))
    # and one at the edge of the registers: o_first * H * W * CPI beyond 32 bits
    calls.append(CallArgs(H=(1 << 26) + 3, W=32, rows=2, I=63, O=63, pad_top=1, pad_bottom=1,
                          o_first=14, o_count=2, read_offset=(1 << 26) * 32, depthwise=True).validate(cfg))
    # more channels than imax: a depthwise output sums one channel's products
    calls.append(CallArgs(H=4, W=5, rows=4, I=100, O=100, o_first=20, o_count=5, depthwise=True).validate(cfg))
    run_calls(cfg, calls, seed=13, cache_pixels=cache_pixels)


@pytest.mark.parametrize("cache_pixels", [0, 2048])
def test_extreme_arguments(cache_pixels):
    """Every per-call product at the edge of the 32-bit registers stays exact (addresses
    are kept below 2**64, where the memory map ends)."""
    top = (1 << 32) - 1
    out_plane = (1 << 29) - 1
    far_group = CallArgs(H=top, W=32, rows=2, I=64, O=4 << 32, pad_top=1, pad_bottom=1, pad_left=1,
                         pad_right=1, o_first=top, o_count=1, read_offset=top, out_plane=out_plane,
                         write_offset=out_plane - 32 * 2, use_mult=True)
    wide_plane = CallArgs(H=top, W=31, rows=4, I=61, O=4 << 30, pad_top=1, pad_bottom=1, pad_left=2, stride=2,
                          pool=POOL_MAX,
                          o_first=(1 << 29) + 12345, o_count=2, read_offset=top - 7, out_plane=top,
                          write_offset=top - 8)
    run_calls(CFG, [far_group.validate(CFG), wide_plane.validate(CFG)], seed=11, cache_pixels=cache_pixels)


@pytest.mark.parametrize("cache_pixels", [0, 1024])
def test_no_multiplier_cells(cache_pixels):
    """The per-call products are shift-and-add: every DSP block is left to the MAC array."""
    text = rtlil.convert(Sequencer(KernelConfig(cpi=4, cpo=4), cache_pixels=cache_pixels))
    assert "cell $add" in text                  # the netlist is really there
    assert "$mul" not in text


def test_other_config_widths():
    cfg = KernelConfig(cpi=8, cpo=2, act_bits=16, bias_bits=16, weight_bits=16, acc_bits=48, imax=32,
                       wmax=16, hmax=16)
    args = CallArgs(H=6, W=5, rows=4, I=17, O=5, pad_left=1, read_offset=10, use_mult=True)
    run_calls(cfg, [args, CallArgs(H=3, W=3, rows=3, I=1, O=1)])
