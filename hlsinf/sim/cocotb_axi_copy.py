"""cocotb bench (run by tests/gateware/memory/test_axi_cocotb.py): the AXI engines against cocotbext-axi's AxiRam.

The design under test copies byte ranges: a ReadMaster on ``m_axi_gmem_in`` feeds its beats
to a WriteMaster on ``m_axi_gmem_out``; both ports are served by AxiRam models sharing one
memory, with random pauses on every channel. An independent AXI implementation checks that
the engines' bursts, strobes and handshakes are ones a real slave accepts.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

MEM = 1 << 16


def pauses(seed, p):
    rng = random.Random(seed)
    while True:
        yield int(rng.random() < p)


async def feed(dut, prefix, items, rng):
    valid = getattr(dut, f"{prefix}_valid")
    ready = getattr(dut, f"{prefix}_ready")
    for addr, length in items:
        while rng.random() < 0.3:
            valid.value = 0
            await RisingEdge(dut.clk)
        getattr(dut, f"{prefix}_addr").value = addr
        getattr(dut, f"{prefix}_length").value = length
        valid.value = 1
        while True:
            await RisingEdge(dut.clk)
            if ready.value:
                break
    valid.value = 0


@cocotb.test()
async def copy_ranges(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    src_ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_gmem_in"), dut.clk, dut.rst, size=MEM)
    dst_ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_gmem_out"), dut.clk, dut.rst, mem=src_ram.mem)
    for i, ram in enumerate((src_ram, dst_ram)):
        for ch, name in enumerate(("aw", "w", "b", "ar", "r")):
            channel = getattr(ram.write_if if name in ("aw", "w", "b") else ram.read_if, f"{name}_channel")
            channel.set_pause_generator(pauses(10 * i + ch, 0.3))

    rng = random.Random(1)
    image = bytes(rng.getrandbits(8) for _ in range(MEM))
    src_ram.write(0, image)

    # Sources anywhere (unaligned, across 4 KiB); destinations beat-aligned in the upper half.
    copies, dst = [], 0x8000
    for length in (64, 128, 64 * 70, 64 * 3, 64 * 65):
        src = rng.randrange(0, 0x8000 - length)
        copies.append((src, dst, length))
        dst += length + 64 * rng.randrange(1, 4)
    copies.append((0x1000 - 37, 0xF000 - 64 * 2, 64 * 4))   # both straddle 4 KiB

    dut.rst.value = 1
    dut.rd_valid.value = 0
    dut.wr_valid.value = 0
    for _ in range(5):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    cocotb.start_soon(feed(dut, "rd", [(s, n) for s, _, n in copies], random.Random(2)))
    cocotb.start_soon(feed(dut, "wr", [(d, n) for _, d, n in copies], random.Random(3)))
    done = 0
    for _ in range(200_000):
        await RisingEdge(dut.clk)
        await ReadOnly()
        done += int(dut.done.value)
        if done == len(copies):
            break
    assert done == len(copies), f"{done} of {len(copies)} copies reported done"
    assert int(dut.error.value) == 0

    expect = bytearray(image)
    for src, dst, n in copies:
        expect[dst:dst + n] = image[src:src + n]
    got = src_ram.read(0, MEM)
    bad = [i for i in range(MEM) if got[i] != expect[i]]
    assert not bad, f"{len(bad)} bytes differ, first at {bad[0]:#x}"
