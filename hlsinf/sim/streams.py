"""Stream drivers for Amaranth async testbenches: feed and collect with random stalls.

Every stage test uses these so that "correct under arbitrary valid/ready stalls" and
"one item per cycle when unblocked" are checked the same way everywhere.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["feed", "collect", "run_stage"]


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


def run_stage(dut, testbenches, *, background=(), deadline_cycles: int = 200_000, vcd: str | None = None):
    """Run ``testbenches`` (async functions of ``ctx``) on ``dut`` with one clock domain.

    ``background`` testbenches (memory models, monitors) run alongside and are dropped
    once the others finish. Fails if the testbenches have not all finished after
    ``deadline_cycles`` cycles, so a stage that deadlocks fails its test instead of
    hanging it.
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
