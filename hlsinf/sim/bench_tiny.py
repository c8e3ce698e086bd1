"""cocotb bench of hlsinf.sim.tiny.TinyCounter: reset clears it, it counts one per enabled cycle."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, ReadOnly


@cocotb.test()
async def counts_after_reset(dut):
    cocotb.start_soon(Clock(dut.ap_clk, 4, unit="ns").start())
    dut.enable.value = 1
    dut.ap_rst_n.value = 0
    await ClockCycles(dut.ap_clk, 5)
    await ReadOnly()
    assert int(dut.count.value) == 0
    await RisingEdge(dut.ap_clk)
    dut.ap_rst_n.value = 1
    await ClockCycles(dut.ap_clk, 3)   # reset is registered once: one more cycle of reset
    await ReadOnly()
    first = int(dut.count.value)
    await ClockCycles(dut.ap_clk, 10)
    await ReadOnly()
    assert int(dut.count.value) == first + 10
    await RisingEdge(dut.ap_clk)
    dut.enable.value = 0
    await ReadOnly()
    held = int(dut.count.value)
    await ClockCycles(dut.ap_clk, 4)
    await ReadOnly()
    assert int(dut.count.value) == held
