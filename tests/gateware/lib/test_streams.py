# amaranth: UnusedElaboratable=no
"""hlsinf/gateware/lib/streams.py: the one definition of the stage payloads."""

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib import streams
from hlsinf.gateware.memory.read import ActivationReader
from hlsinf.gateware.memory.weights import ParameterLoader
from hlsinf.gateware.memory.write import PixelWriter
from hlsinf.gateware.stages.add import Add
from hlsinf.gateware.stages.cvt import Cvt
from hlsinf.gateware.stages.input_cache import InputCache
from hlsinf.gateware.stages.mul import Mul
from hlsinf.gateware.stages.padding import Padding
from hlsinf.gateware.stages.pool import Pool
from hlsinf.gateware.stages.relu import Relu
from hlsinf.gateware.stages.window import Window

CFGS = [KernelConfig(cpi=2, cpo=4, imax=16, wmax=8, hmax=8),
        KernelConfig(cpi=4, cpo=2, act_signed=True, imax=16, wmax=8, hmax=8)]


@pytest.mark.parametrize("cfg", CFGS)
def test_every_port_uses_the_one_definition(cfg):
    """Producers and consumers get their stream signatures from streams.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # built only to read their signatures
        _check_ports(cfg)
        gc.collect()


def _check_ports(cfg):
    pixel_in, pixel_out = streams.pixel_signature(cfg, cfg.cpi), streams.pixel_signature(cfg, cfg.cpo)
    ports = {
        (Padding(cfg), "i"): pixel_in, (Padding(cfg), "o"): pixel_in,
        (Window(cfg), "i"): pixel_in, (Window(cfg), "o"): streams.window_signature(cfg),
        (Cvt(cfg), "i"): pixel_in, (Cvt(cfg), "o"): streams.window_signature(cfg),
        (InputCache(cfg, 16), "i"): pixel_in, (InputCache(cfg, 16), "o"): pixel_in,
        (Mul(cfg), "i"): streams.window_signature(cfg), (Mul(cfg), "weights"): streams.weight_set_signature(cfg),
        (Mul(cfg), "o"): streams.partial_signature(cfg),
        (Add(cfg), "i"): streams.partial_signature(cfg), (Add(cfg), "bias"): streams.bias_signature(cfg),
        (Add(cfg), "o"): streams.acc_signature(cfg),
        (Relu(cfg), "i"): streams.acc_signature(cfg), (Relu(cfg), "mult"): streams.mult_signature(cfg),
        (Relu(cfg), "o"): pixel_out,
        (Pool(cfg), "i"): pixel_out, (Pool(cfg), "o"): pixel_out,
        (ParameterLoader(cfg), "weights"): streams.weight_set_signature(cfg),
        (ParameterLoader(cfg), "bias"): streams.bias_signature(cfg),
        (ParameterLoader(cfg), "mult"): streams.mult_signature(cfg),
        (ActivationReader(cfg), "o"): pixel_in, (PixelWriter(cfg), "i"): pixel_out,
    }
    for (component, name), expected in ports.items():
        flow = component.signature.members[name].flow
        assert component.signature.members[name] == flow(expected), (type(component).__name__, name)
