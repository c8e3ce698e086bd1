"""The random layers of the C++-harness benchmarks (hlsinf/sim/harness.py) exercise the requantiser:
with ``requantize_shift`` the reference outputs spread over the range instead of sitting at
the clip bounds, from 3 input channels to 512 (checked on small images, reference model only)."""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.reference import CallArgs
from hlsinf.sim import harness


@pytest.mark.parametrize("channels", [3, 64, 512])
def test_random_layer_outputs_are_spread(channels):
    cfg = KernelConfig(cpi=8, cpo=8)
    args = CallArgs(H=6, W=6, rows=6, I=channels, O=16, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                    relu=True, shift=harness.requantize_shift(cfg, channels)).validate(cfg)
    data = harness.random_call_data(cfg, args, np.random.default_rng(3))
    out = np.zeros(args.go(cfg) * args.plane_out() * cfg.cpo, ref.act_dtype(cfg))
    ref.kernel_call(cfg, args, data["x"], data["w"], data["b"], out, data["m"])
    lo, hi = args.clip_bounds(cfg)
    assert np.mean(out == hi) < 0.05, "most outputs saturate: shift too small"
    assert np.mean(out > lo) > 0.25, "most outputs are clipped to zero: shift too large or bias dominates"
    assert len(np.unique(out)) > 30
