# amaranth: UnusedElaboratable=no
"""hlsinf/gateware/lib/streams.py: the one definition of the stage payloads, and the FIFO helper."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

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
from hlsinf.sim.streams import collect, feed, run_stage

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


class _Buffered(wiring.Component):
    """A component whose input goes through ``fifo_on_stream`` straight to its output."""

    def __init__(self, layout, buffered):
        self.buffered = buffered
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        items = streams.fifo_on_stream(m, "fifo", wiring.flipped(self.i), depth=2, buffered=self.buffered)
        assert items.payload.shape() == self.i.payload.shape()     # a view, not raw bits
        m.d.comb += [self.o.valid.eq(items.valid), self.o.payload.eq(items.payload),
                     items.ready.eq(self.o.ready)]
        return m


@pytest.mark.parametrize("buffered", [False, True])
def test_fifo_on_stream_keeps_items_and_order(buffered):
    layout = data.ArrayLayout(streams.act_shape(CFGS[1]), 3)
    dut = _Buffered(layout, buffered)
    rng = random.Random(4)
    items = [[rng.randrange(-128, 128) for _ in range(3)] for _ in range(40)]
    got = []

    async def source(ctx):
        await feed(ctx, dut.i, items, stall=0.3, rng=random.Random(1))

    async def sink(ctx):
        got.extend((await collect(ctx, dut.o, len(items), stall=0.3, rng=random.Random(2),
                                  convert=lambda v: [v[k] for k in range(3)]))[0])

    run_stage(dut, [source, sink], deadline_cycles=2000)
    assert got == items
