# amaranth: UnusedElaboratable=no
"""The stream-protocol monitor that ``run_stage`` attaches to every stream port: it passes a
correct producer and fails, naming stream, cycle and values, one that drops ``valid`` before
``ready`` or changes ``payload`` while stalled, in the DUT or in the test's own driver."""

import random
import re

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.lib.wide_stream import MAX_WIRE_BITS, WideSignature, stream_signature
from hlsinf.sim.streams import StreamProtocolError, collect, feed, run_stage, stream_ports


class Source(wiring.Component):
    """Counts 0, 1, 2, ... on ``o``. ``bug``: None (correct: holds each item until taken, then
    rests a cycle after every odd one), "drop_valid" (valid toggles every cycle whatever
    ``ready`` does) or "change_payload" (always valid, payload is a free-running counter)."""

    o: Out(stream.Signature(8))

    def __init__(self, bug=None):
        self.bug = bug
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        count = Signal(8)
        rest = Signal()
        if self.bug == "drop_valid":
            phase = Signal()
            m.d.sync += phase.eq(~phase)
            m.d.comb += [self.o.valid.eq(~phase), self.o.payload.eq(count)]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += count.eq(count + 1)
        elif self.bug == "change_payload":
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(count)]
            m.d.sync += count.eq(count + 1)
        else:
            m.d.comb += [self.o.valid.eq(~rest), self.o.payload.eq(count)]
            m.d.sync += rest.eq(0)
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += [count.eq(count + 1), rest.eq(count[0])]
        return m


class Register(wiring.Component):
    """A correct one-item buffer from ``i`` to ``o`` (``ready`` on ``i`` only when empty)."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m


async def hold_ready_low(ctx, port, cycles):
    ctx.set(port.ready, 0)
    for _ in range(cycles):     # not tick().repeat(): aborted mid-repeat, it warns when collected
        await ctx.tick()


def test_correct_source_passes_with_stalls():
    dut = Source()
    got = {}

    async def taker(ctx):
        got["items"], _ = await collect(ctx, dut.o, 60, stall=0.5, rng=random.Random(2))

    run_stage(dut, [taker], deadline_cycles=1000)
    assert got["items"] == list(range(60))


def test_valid_dropped_before_ready_fails():
    dut = Source("drop_valid")
    with pytest.raises(StreamProtocolError, match=re.escape(
            "stream Source.o: valid fell at cycle 1 before the item offered at cycle 0 was taken (payload 0x0)")):
        run_stage(dut, [lambda ctx: hold_ready_low(ctx, dut.o, 10)], deadline_cycles=100)


def test_payload_changed_while_stalled_fails():
    dut = Source("change_payload")
    with pytest.raises(StreamProtocolError, match=re.escape(
            "stream Source.o: payload changed at cycle 1 while stalled since cycle 0: 0x0 -> 0x1")):
        run_stage(dut, [lambda ctx: hold_ready_low(ctx, dut.o, 10)], deadline_cycles=100)


@pytest.mark.parametrize("bug", ["drop_valid", "change_payload"])
def test_broken_source_fails_under_random_stalls(bug):
    """The ordinary collector with random stalls is enough to expose both bugs."""
    dut = Source(bug)

    async def taker(ctx):
        await collect(ctx, dut.o, 60, stall=0.3, rng=random.Random(5))

    with pytest.raises(StreamProtocolError, match=r"^stream Source\.o: (valid fell|payload changed) at cycle \d+"):
        run_stage(dut, [taker], deadline_cycles=1000)


@pytest.mark.parametrize("bug", ["drop_valid", "change_payload"])
def test_monitor_off_lets_it_pass(bug):
    """Without the monitor the broken sources go unnoticed, which is why it is on by default."""
    dut = Source(bug)
    run_stage(dut, [lambda ctx: hold_ready_low(ctx, dut.o, 10)], deadline_cycles=100, monitor=False)


def test_correct_stage_and_driver_pass():
    dut = Register()
    items = [random.Random(7).randrange(256) for _ in range(50)]
    got = {}

    async def driver(ctx):
        await feed(ctx, dut.i, items, stall=0.4, rng=random.Random(8))

    async def taker(ctx):
        got["items"], _ = await collect(ctx, dut.o, len(items), stall=0.4, rng=random.Random(9))

    run_stage(dut, [driver, taker], deadline_cycles=2000)
    assert got["items"] == items


def test_broken_driver_on_an_input_fails():
    """Inputs are monitored too: here the test's own driver withdraws an item it offered."""
    dut = Register()

    async def driver(ctx):
        ctx.set(dut.o.ready, 0)
        await ctx.tick().repeat(3)          # the register fills up and stops taking
        ctx.set(dut.i.payload, 0x55)
        ctx.set(dut.i.valid, 1)
        await ctx.tick().repeat(2)
        ctx.set(dut.i.payload, 0x56)
        await ctx.tick()

    async def filler(ctx):
        await feed(ctx, dut.i, [0x11])

    with pytest.raises(StreamProtocolError, match=re.escape(
            "stream Register.i: payload changed at cycle 5 while stalled since cycle 3: 0x55 -> 0x56")):
        run_stage(dut, [filler, driver], deadline_cycles=100)


class Nested(wiring.Component):
    """Streams inside a sub-signature and in arrays, a wide one, and a plain port."""

    def __init__(self):
        inner = wiring.Signature({"s": Out(stream.Signature(4)).array(2), "flag": Out(1)})
        super().__init__({
            "ports": Out(inner),
            "wide": In(stream_signature(MAX_WIRE_BITS + 1)),
            "x": In(3),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.ports.flag.eq(self.x[0])
        return m


class Wrapper(Elaboratable):
    """A test's wrapper around connected components, with no signature of its own."""

    def __init__(self):
        self.first, self.second = Register(), Register()

    def elaborate(self, platform):
        m = Module()
        m.submodules.first, m.submodules.second = self.first, self.second
        wiring.connect(m, self.first.o, self.second.i)
        return m


def test_stream_ports_walks_the_signature():
    dut = Nested()
    assert isinstance(dut.signature.members["wide"].signature.flip(), WideSignature)
    ports = stream_ports(dut)
    assert list(ports) == ["Nested.ports.s[0]", "Nested.ports.s[1]", "Nested.wide"]
    assert ports["Nested.ports.s[1]"] is dut.ports.s[1]


def test_stream_ports_of_a_wrapper_are_its_components_ports():
    assert list(stream_ports(Wrapper())) == ["Wrapper.first.i", "Wrapper.first.o",
                                             "Wrapper.second.i", "Wrapper.second.o"]


def test_wide_stream_payload_is_monitored():
    dut = Nested()
    width = MAX_WIRE_BITS + 1

    async def driver(ctx):
        ctx.set(dut.wide.valid, 1)
        ctx.set(dut.wide.payload, top)
        await ctx.tick()
        ctx.set(dut.wide.payload, 1)
        await ctx.tick()

    top = 1 << (width - 1)
    with pytest.raises(StreamProtocolError, match=re.escape(
            f"stream Nested.wide: payload changed at cycle 1 while stalled since cycle 0: {top:#x} -> 0x1")):
        run_stage(dut, [driver], deadline_cycles=100)
