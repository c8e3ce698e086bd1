"""Stream drivers for Amaranth async testbenches: feed and collect with random stalls.

Every stage test uses these so that "correct under arbitrary valid/ready stalls" and
"one item per cycle when unblocked" are checked the same way everywhere. ``run_stage`` also
watches every stream port of the design under test with a protocol monitor
(:func:`stream_monitor`), so a stage that breaks the valid/ready rules fails its test even
when its data come out right.
"""

from __future__ import annotations

import itertools
import random

from amaranth.hdl import Value
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from hlsinf.gateware.lib.wide_stream import WideSignature

__all__ = ["feed", "collect", "run_stage", "stream_ports", "stream_monitor", "StreamProtocolError"]


async def feed(ctx, stream, items, *, stall: float = 0.0, rng: random.Random | None = None):
    """Drive ``items`` into ``stream`` (a DUT input), holding each until it is accepted.

    With ``stall`` > 0, ``valid`` drops for a cycle with that probability before each offer.
    """
    rng = rng or random.Random(0)
    for item in items:
        while stall and rng.random() < stall:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.payload, item)
        ctx.set(stream.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            if ready:
                break
    ctx.set(stream.valid, 0)


async def collect(ctx, stream, count: int, *, stall: float = 0.0, rng: random.Random | None = None,
                  convert=lambda v: v):
    """Take ``count`` items from ``stream`` (a DUT output); ``ready`` drops randomly with ``stall``.

    Returns ``(items, cycles)``: the payloads (through ``convert``) and the number of cycles
    from the first call until the last item was taken.
    """
    rng = rng or random.Random(1)
    items, cycles = [], 0
    while len(items) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        cycles += 1
        if ready and valid:
            items.append(convert(payload))
    ctx.set(stream.ready, 0)
    return items, cycles


class StreamProtocolError(AssertionError):
    """A producer broke the valid/ready rules of ``amaranth.lib.stream`` on a monitored stream."""


def _is_stream(signature) -> bool:
    if isinstance(signature, wiring.FlippedSignature):
        signature = signature.flip()
    return isinstance(signature, (stream.Signature, WideSignature))


def _walk(signature, interface, path):
    for name, member in signature.members.items():
        if not member.is_signature:
            continue
        value = getattr(interface, name)
        for index in itertools.product(*(range(n) for n in member.dimensions)):
            item = value
            for i in index:
                item = item[i]
            sub_path = f"{path}.{name}" + "".join(f"[{i}]" for i in index)
            if _is_stream(member.signature):
                yield sub_path, item
            else:
                yield from _walk(member.signature, item, sub_path)


def stream_ports(dut) -> dict:
    """Every stream port of ``dut``, by path (``"Relu.o"``, ``"Top.ports.i[2]"``).

    Walks ``dut.signature`` recursively (arrays included) for members whose signature is an
    ``amaranth.lib.stream.Signature`` or a :class:`WideSignature`, in either direction. A DUT
    that is not a component (a test's wrapper around connected stages) has no signature; then
    the components among its attributes are walked instead.
    """
    if isinstance(dut, wiring.Component):
        return dict(_walk(dut.signature, dut, type(dut).__name__))
    ports = {}
    for name, value in vars(dut).items():
        if isinstance(value, wiring.Component):
            ports.update(_walk(value.signature, value, f"{type(dut).__name__}.{name}"))
    return ports


def stream_monitor(streams: dict, domain: str = "sync"):
    """A background testbench that checks the producer side of each stream in ``streams``
    (path -> stream interface) on every clock edge of ``domain``:

    - once ``valid`` is high it stays high until an edge where ``ready`` is high too (the
      transfer);
    - ``payload`` does not change while ``valid`` is high and the item is not yet taken.

    Edges are counted from the start of the simulation; a violation raises
    :class:`StreamProtocolError` naming the stream, the edge and the values. The consumer side
    (``ready`` may do anything) and "``valid`` must not depend on ``ready``" (a combinational
    property, invisible to sampling at the edges) are not checked.
    """
    names = list(streams)
    sampled = []
    for name in names:
        port = streams[name]
        sampled += [port.valid, port.ready, Value.cast(port.payload)]
    count = len(names)

    async def monitor(ctx):
        offered = [None] * count       # per stream: the payload offered and not yet taken
        cycle = 0
        async for _, reset, *values in ctx.tick(domain).sample(*sampled):
            if reset:
                offered = [None] * count
            else:
                for k in range(count):
                    valid, ready, payload = values[3 * k:3 * k + 3]
                    held = offered[k]
                    if held is not None:
                        if not valid:
                            raise StreamProtocolError(
                                f"stream {names[k]}: valid fell at cycle {cycle} before the item "
                                f"offered at cycle {held[0]} was taken (payload {held[1]:#x})")
                        if payload != held[1]:
                            raise StreamProtocolError(
                                f"stream {names[k]}: payload changed at cycle {cycle} while "
                                f"stalled since cycle {held[0]}: {held[1]:#x} -> {payload:#x}")
                    if valid and not ready:
                        if held is None:
                            offered[k] = (cycle, payload)
                    else:
                        offered[k] = None
            cycle += 1

    return monitor


def run_stage(dut, testbenches, *, background=(), deadline_cycles: int = 200_000, vcd: str | None = None,
              monitor: bool = True):
    """Run ``testbenches`` (async functions of ``ctx``) on ``dut`` with one clock domain.

    ``background`` testbenches (memory models, monitors) run alongside and are dropped
    once the others finish. Fails if the testbenches have not all finished after
    ``deadline_cycles`` cycles, so a stage that deadlocks fails its test instead of
    hanging it.

    With ``monitor`` (the default), every stream port of ``dut`` (:func:`stream_ports`) is
    checked by :func:`stream_monitor`: its outputs check the DUT, its inputs the testbenches
    that drive them.
    """
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    finished = []

    for tb in testbenches:
        async def wrapped(ctx, tb=tb):
            await tb(ctx)
            finished.append(tb)
        sim.add_testbench(wrapped)
    for tb in background:
        sim.add_testbench(tb, background=True)
    ports = stream_ports(dut) if monitor else {}
    if ports:
        sim.add_testbench(stream_monitor(ports), background=True)

    async def watchdog(ctx):
        await ctx.delay(deadline_cycles * 1e-8)
        raise AssertionError(f"testbenches did not finish within {deadline_cycles} cycles (deadlock?)")
    # Background: sim.run() returns as soon as the testbenches are done (run_until would
    # always simulate the whole deadline).
    sim.add_testbench(watchdog, background=True)

    def run():
        sim.run()
    if vcd:
        with sim.write_vcd(vcd):
            run()
    else:
        run()
    if len(finished) != len(testbenches):
        raise AssertionError(f"testbenches did not finish within {deadline_cycles} cycles (deadlock?)")
