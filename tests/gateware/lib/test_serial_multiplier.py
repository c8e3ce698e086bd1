# amaranth: UnusedElaboratable=no
"""SerialMultiplier against Python integers: exact products, cycle counts and handshake."""

import random

import pytest

from amaranth.sim import Simulator

from hlsinf.gateware.lib.serial_multiplier import SerialMultiplier


def edge_operands(width):
    top = (1 << width) - 1
    return sorted(v for v in {0, 1, 2, 3, top, top - 1, 1 << (width - 1)} if 0 <= v <= top)


def run_products(a_width, b_width, pairs, gap_rng=None):
    """Multiply each pair in turn; return [(product, busy cycles, done pulses)]."""
    dut = SerialMultiplier(a_width, b_width)
    results = []

    async def bench(ctx):
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            # Operands may change once start is taken.
            ctx.set(dut.a, (a * 7 + 3) % (1 << a_width))
            ctx.set(dut.b, (b * 5 + 1) % (1 << b_width))
            busy = 0
            while ctx.get(dut.busy):
                assert not ctx.get(dut.done)
                busy += 1
                assert busy <= b_width, "busy longer than one cycle per bit of b"
                await ctx.tick()
            assert ctx.get(dut.done), "no done pulse when busy fell"
            product = ctx.get(dut.product)
            idle = 0 if gap_rng is None else gap_rng.randrange(3)
            for _ in range(idle):
                await ctx.tick()
                assert not ctx.get(dut.done) and not ctx.get(dut.busy)
                assert ctx.get(dut.product) == product, "product changed while idle"
            results.append((product, busy))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("a_width, b_width", [(32, 32), (32, 9), (9, 32), (1, 1), (7, 1), (1, 7), (42, 7)])
def test_edge_and_random_operands(a_width, b_width):
    rng = random.Random(a_width * 100 + b_width)
    pairs = [(a, b) for a in edge_operands(a_width) for b in edge_operands(b_width)]
    pairs += [(rng.getrandbits(a_width), rng.getrandbits(b_width)) for _ in range(40)]
    # Small multipliers, the common case of the sequencer (o_first, GI).
    pairs += [(rng.getrandbits(a_width), rng.getrandbits(rng.randint(1, b_width))) for _ in range(20)]
    results = run_products(a_width, b_width, pairs, gap_rng=rng)
    for (a, b), (product, busy) in zip(pairs, results):
        assert product == a * b, (a, b)
        assert busy == max(1, b.bit_length()), (a, b)


def test_restart_while_busy():
    dut = SerialMultiplier(16, 16)

    async def bench(ctx):
        ctx.set(dut.a, 0xFFFF)
        ctx.set(dut.b, 0xFFFF)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.a, 1234)
        ctx.set(dut.b, 567)
        await ctx.tick().repeat(3)      # start held: reloads every cycle
        ctx.set(dut.start, 0)
        await ctx.tick()
        while ctx.get(dut.busy):
            await ctx.tick()
        assert ctx.get(dut.product) == 1234 * 567

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("widths", [(0, 4), (4, 0), (2.0, 3)])
def test_bad_widths(widths):
    with pytest.raises(ValueError, match="width"):
        SerialMultiplier(*widths)
