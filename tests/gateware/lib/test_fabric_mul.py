# amaranth: UnusedElaboratable=no
"""FabricMultiplier (LUT/carry-chain multiplier) against Python integers, bit for bit."""

import random

import pytest
from amaranth.hdl import ClockDomain, Module, Shape, Signal, signed, unsigned
from amaranth.sim import Simulator

from hlsinf.gateware.lib.fabric_mul import FabricMultiplier


def operand_range(shape):
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def edge_and_random_operands(a_shape, b_shape, rng, count):
    """Every pair of edge values (most negative and largest a, 0, +-1, b = 0, 1, max, a
    single top bit, alternating bits), then random pairs."""
    amin, amax = operand_range(a_shape)
    bmin, bmax = operand_range(b_shape)
    width = Shape.cast(b_shape).width
    a_edges = sorted({amin, amax, 0, min(1, amax), max(-1, amin), amin + 1 if amin < amax else amin, amax // 3})
    b_edges = sorted({0, 1 & bmax, bmax, 1 << (width - 1), int("01" * width, 2) & bmax, int("10" * width, 2) & bmax})
    pairs = [(a, b) for a in a_edges for b in b_edges]
    pairs += [(rng.randint(amin, amax), rng.randint(bmin, bmax)) for _ in range(count)]
    rng.shuffle(pairs)
    return pairs


def simulate(a_shape, b_shape, pairs, *, stall, seed=0):
    """Drive the pairs with ``en`` low on a random share ``stall`` of cycles; return the
    products the multiplier presents for each pair and the expected ones."""
    dut = FabricMultiplier(a_shape, b_shape)
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain()     # a 1-bit b has no register: give the clock a domain
    got = []

    async def bench(ctx):
        rng = random.Random(seed)
        entered = []                     # operands in the tree, oldest first
        pending = list(pairs)
        while len(got) < len(pairs):
            enable = not (stall and rng.random() < stall)
            if pending and enable:
                a, b = pending[0]
            else:                        # garbage while stalled or draining
                a, b = rng.randint(*operand_range(a_shape)), rng.randint(*operand_range(b_shape))
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, enable)
            if dut.latency == 0:
                if pending and enable:
                    got.append(ctx.get(dut.p))
                    pending.pop(0)
                await ctx.tick()
                continue
            await ctx.tick()
            if enable:
                entered.append(pending.pop(0) if pending else None)
                # After the edge, p holds the operands that entered `latency` enables ago.
                if len(entered) >= dut.latency and entered[-dut.latency] is not None:
                    got.append(ctx.get(dut.p))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, [a * b for a, b in pairs]


CASES = [
    (signed(32), unsigned(16)),     # the default kernel: acc_bits 32, mult_bits 16
    (signed(48), unsigned(24)),     # the widest the config allows
    (signed(16), unsigned(1)),      # no tree at all
    (signed(16), unsigned(2)),      # one pair
    (signed(16), unsigned(3)),      # a pair and an odd row
    (signed(24), unsigned(7)),
    (signed(40), unsigned(13)),
    (signed(33), unsigned(17)),     # one odd node left at every level
    (unsigned(8), unsigned(5)),     # unsigned a
    (signed(1), unsigned(3)),       # a is 0 or -1
    (unsigned(1), unsigned(4)),
]


@pytest.mark.parametrize("a_shape,b_shape", CASES, ids=lambda s: repr(s))
def test_products_with_stalls(a_shape, b_shape):
    rng = random.Random(f"{a_shape}{b_shape}")
    pairs = edge_and_random_operands(a_shape, b_shape, rng, 300)
    got, want = simulate(a_shape, b_shape, pairs, stall=0.3, seed=len(pairs))
    assert len(got) == len(want)
    for (a, b), g, w in zip(pairs, got, want):
        assert g == w, f"{a} * {b}: got {g}, expected {w}"


def test_one_product_per_cycle_and_latency():
    """Unstalled, the tree takes a pair every cycle; latency = ceil(log2(b width))."""
    assert [FabricMultiplier.levels(w) for w in (1, 2, 3, 4, 5, 8, 9, 16, 17, 24)] == [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    rng = random.Random(1)
    pairs = edge_and_random_operands(signed(32), unsigned(16), rng, 100)
    got, want = simulate(signed(32), unsigned(16), pairs, stall=0.0)
    assert got == want


def test_product_shape_is_that_of_a_times_b():
    for a_shape, b_shape in CASES:
        want = (Signal(a_shape) * Signal(b_shape)).shape()
        assert FabricMultiplier(a_shape, b_shape).p.shape() == want


def test_bad_operand_shapes():
    with pytest.raises(ValueError, match="b_shape.*unsigned"):
        FabricMultiplier(signed(32), signed(16))
    with pytest.raises(ValueError, match="a_shape"):
        FabricMultiplier(unsigned(0), unsigned(16))
