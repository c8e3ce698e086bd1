"""The check every RTL host test makes: a plan on the kernel's Verilog equals the reference device."""

import numpy as np


def assert_rtl_matches_reference(plan, cfg, x):
    """Run ``plan`` on the reference device and on the kernel's Verilog in Verilator
    (``RtlDevice(cfg)``) with input ``x``: every accelerator layer's output and every graph
    output must be bit-equal. Returns the (closed) RtlDevice, for its call and cycle counts."""
    from hlsinf.host import ReferenceDevice, Session
    from hlsinf.host.rtl import RtlDevice

    fetch = [layer.output for layer in plan.fpga_layers]
    want = Session(plan, ReferenceDevice(cfg)).run(x, fetch=fetch)
    device = RtlDevice(cfg)
    try:
        got = Session(plan, device).run(x, fetch=fetch)
    finally:
        device.close()
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    return device
