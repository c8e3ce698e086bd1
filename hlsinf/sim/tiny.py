"""A tiny design with the Vitis clock and reset ports, to prove the Verilator/cocotb flow."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.kernel import vitis_clock_domain


class TinyCounter(wiring.Component):
    """Counts ``ap_clk`` cycles while ``enable`` is high; clears in reset."""

    ap_clk: In(1)
    ap_rst_n: In(1)
    enable: In(1)
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        vitis_clock_domain(m, self.ap_clk, self.ap_rst_n)
        with m.If(self.enable):
            m.d.sync += self.count.eq(self.count + 1)
        return m
