# amaranth: UnusedElaboratable=no
"""The pointwise option leaves other builds alone, has its register last and is described to hosts;
the sequencer divides by nine right for every channel count."""

import json
import math
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from hlsinf.build.cli import register_map_markdown
from hlsinf.build.descriptor import build_descriptor, load_descriptor
from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import kernel_verilog
from hlsinf.gateware.sequencer import Sequencer
from hlsinf.reference import CallArgs, pointwise_imax
from hlsinf.registers import encode_call, register_map

SMALL = dict(cpi=2, cpo=2, imax=16, wmax=8, hmax=8)


def test_default_build_has_no_pointwise_logic():
    plain = kernel_verilog(KernelConfig(**SMALL), input_cache_pixels=0)
    assert "pointwise" not in plain and "superpixel" not in plain
    built = kernel_verilog(KernelConfig(**SMALL, with_pointwise=True), input_cache_pixels=0)
    assert "pointwise" in built and "superpixel" in built
    # the padding -> cvt front end instead of the window stage takes the mux as well
    assert "superpixel" in kernel_verilog(KernelConfig(**SMALL, with_pointwise=True), input_cache_pixels=16,
                                          window_stage=False)


def test_register_after_every_other_and_in_the_descriptor(tmp_path):
    cfg = KernelConfig(cpi=4, cpo=4, with_depthwise=True, with_pointwise=True, post_ops=("bn",))
    regs = register_map(cfg)
    assert [r.name for r in regs[-2:]] == ["depthwise", "pointwise"]
    assert [r.offset for r in register_map(KernelConfig(cpi=4, cpo=4, with_depthwise=True, post_ops=("bn",)))] \
        == [r.offset for r in regs[:-1]]
    words = encode_call(CallArgs(H=4, W=4, rows=4, I=6, O=6, pointwise=True), cfg, dict.fromkeys("xwbmy", 0))
    assert words[regs[-1].offset] == 1 and words[regs[-2].offset] == 0
    path = tmp_path / "descriptor.json"
    path.write_text(json.dumps(build_descriptor(cfg)))
    back, data = load_descriptor(path)
    assert back == cfg and "pointwise" in data["operations"] and "superpixels" in data["layouts"]
    assert "pointwise" not in build_descriptor(KernelConfig(cpi=4, cpo=4))["operations"]
    row = register_map_markdown(KernelConfig(with_pointwise=True)).splitlines()[-1]
    assert "| pointwise |" in row and row in (Path(__file__).parents[2] / "docs" / "build.md").read_text()


@pytest.mark.parametrize("cpi", [1, 4])
def test_sequencer_super_pixel_groups(cpi):
    """groups_in of a pointwise call is ceil(ceil(I/CPI) / 9), by the serial division, for every I up
    to 9 x imax (reference.pointwise_imax)."""
    cfg = KernelConfig(cpi=cpi, cpo=4, imax=50, wmax=8, hmax=8, with_pointwise=True)
    dut = Sequencer(cfg)
    got = {}

    async def bench(ctx):
        for i in range(1, pointwise_imax(cfg) + 1):
            ctx.set(dut.args, {"I": i, "H": 2, "W": 2, "rows": 2, "o_count": 0, "pointwise": 1, "stride": 1})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            while ctx.get(dut.busy):
                await ctx.tick()
            got[i] = ctx.get(dut.geometry.groups_in)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == {i: math.ceil(math.ceil(i / cpi) / 9) for i in range(1, pointwise_imax(cfg) + 1)}
