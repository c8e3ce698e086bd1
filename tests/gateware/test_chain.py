"""A whole small layer through padding -> cvt -> mul -> add -> relu -> pool, in one Amaranth top
(:mod:`hlsinf.sim.chain`), against ``reference.kernel_call`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.reference import CallArgs
from hlsinf.sim.chain import (CASES, CFG, call_streams, out_image, place_outputs, random_layer,
                              simulate_calls)


# Tests -----------------------------------------------------------------------------------------

def run_case(cfg, args, rng, *, stall, seed):
    images = random_layer(rng, cfg, args)
    streams = call_streams(cfg, args, images["x_mem"], images["w_mem"], images["b_mem"], images["m_mem"])
    results = simulate_calls(cfg, [(args, streams)], stall=stall, seed=seed)
    got = place_outputs(cfg, args, results[0][0], out_image(cfg, args))
    want = ref.kernel_call(cfg, args, out_mem=out_image(cfg, args), **images)
    return got, want, results[0][1]


@pytest.mark.parametrize("name", CASES)
def test_layer_matches_reference(name):
    cfg, args = CASES[name]
    args = CallArgs(**args.to_dict())
    rng = np.random.default_rng(list(CASES).index(name))
    got, want, _ = run_case(cfg, args, rng, stall=0.3, seed=list(CASES).index(name))
    assert len(np.unique(want)) >= 4, "degenerate test data: outputs barely vary"
    np.testing.assert_array_equal(got, want)


def test_two_calls_back_to_back():
    """Different shapes and parameters in one simulation: counters restart cleanly per call."""
    rng = np.random.default_rng(99)
    calls, wants = [], []
    for args in (CallArgs(**CASES["stride1_max_mult"][1].to_dict()),
                 CallArgs(**CASES["row_tile_group1"][1].to_dict()),
                 CallArgs(**CASES["stride2_avg_mult"][1].to_dict())):
        images = random_layer(rng, CFG, args)
        calls.append((args, call_streams(CFG, args, images["x_mem"], images["w_mem"], images["b_mem"],
                                         images["m_mem"])))
        wants.append(ref.kernel_call(CFG, args, out_mem=out_image(CFG, args), **images))
    results = simulate_calls(CFG, calls, stall=0.3, seed=7)
    for (args, _), (pixels, _), want in zip(calls, results, wants):
        np.testing.assert_array_equal(place_outputs(CFG, args, pixels, out_image(CFG, args)), want)


def test_call_streams_order():
    """The helper against the layout formulas directly: frame (og, gi) is channel block gi."""
    cfg = CFG
    args = CallArgs(H=4, W=3, rows=2, I=5, O=3, pad_top=1, read_offset=3, o_first=1)
    x = np.arange(5 * 4 * 3).reshape(5, 4, 3)
    w = np.arange(3 * 5 * 9).reshape(3, 5, 3, 3)
    s = call_streams(cfg, args, ref.pack_activations(x, 2), ref.pack_weights(w, 2, 2),
                     ref.pack_channels(np.arange(3), 2), None)
    assert list(s.groups) == [1]
    assert len(s.frames) == len(s.weight_sets) == 3 and len(s.biases) == 1 and s.mults == []
    for gi, frame in enumerate(s.frames):
        for lane in range(2):
            c = gi * 2 + lane
            want = x[c, 1:3] if c < 5 else np.zeros((2, 3))
            np.testing.assert_array_equal(frame[:, :, lane], want)
    # output group 1 holds output channel 2 (lane 0) and a zero channel (lane 1)
    np.testing.assert_array_equal(s.weight_sets[1][0], w[2, 2:4].reshape(2, 9))
    np.testing.assert_array_equal(s.weight_sets[2][1], np.zeros((2, 9)))
    np.testing.assert_array_equal(s.biases[0], [2, 0])


def test_throughput_close_to_ideal():
    """Unstalled, the chain takes the paper's cycle count plus a fixed pipeline fill."""
    cfg, args = CASES["stride1_max_mult"]
    args = CallArgs(**args.to_dict())
    rng = np.random.default_rng(5)
    got, want, cycles = run_case(cfg, args, rng, stall=0.0, seed=5)
    np.testing.assert_array_equal(got, want)
    # The input stream carries the padded frames' worth of work: rows x W pixels per
    # (og, gi) frame plus the padding the padding stage inserts.
    padded = (args.rows + args.pad_top + args.pad_bottom) * (args.W + args.pad_left + args.pad_right)
    frames = args.gi(cfg) * len(args.groups(cfg))
    print(f"chain: {cycles} cycles, ideal {args.ideal_cycles(cfg)} (input pixels), "
          f"{frames * padded} padded pixels")
    # Measured: 21 cycles over one padded pixel per cycle (3 for the parameters to settle,
    # the rest pipeline fill, 10 of it in relu); a bubble per frame would add 6.
    assert cycles <= frames * padded + 24
