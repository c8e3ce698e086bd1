# amaranth: UnusedElaboratable=no
"""The depthwise option leaves the default build alone and is described to hosts."""

import json

from hlsinf.build.descriptor import build_descriptor, load_descriptor
from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import kernel_verilog
from hlsinf.reference import CallArgs
from hlsinf.registers import encode_call, register_map


def test_default_build_has_no_depthwise_logic():
    small = dict(cpi=2, cpo=2, imax=16, wmax=8, hmax=8)
    plain = kernel_verilog(KernelConfig(**small), input_cache_pixels=0)
    assert "depthwise" not in plain and "diagonal" not in plain
    built = kernel_verilog(KernelConfig(**small, with_depthwise=True), input_cache_pixels=0)
    assert "depthwise" in built and "diagonal" in built


def test_register_after_every_other_and_in_the_descriptor(tmp_path):
    cfg = KernelConfig(cpi=4, cpo=4, with_depthwise=True, post_ops=("leaky_relu", "bn"))
    regs = register_map(cfg)
    assert regs[-1].name == "depthwise"
    assert regs[-1].offset > max(r.offset for r in regs[:-1])
    assert [r.offset for r in register_map(KernelConfig(cpi=4, cpo=4, post_ops=("leaky_relu", "bn")))] == \
        [r.offset for r in regs[:-1]]
    words = encode_call(CallArgs(H=4, W=4, rows=4, I=6, O=6, depthwise=True), cfg, dict.fromkeys("xwbmy", 0))
    assert words[regs[-1].offset] == 1
    path = tmp_path / "descriptor.json"
    path.write_text(json.dumps(build_descriptor(cfg)))
    back, data = load_descriptor(path)
    assert back == cfg and "depthwise" in data["operations"] and "depthwise_weights" in data["layouts"]
    assert "depthwise" not in build_descriptor(KernelConfig(cpi=4, cpo=4))["operations"]
