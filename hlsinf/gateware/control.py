"""The kernel's ``s_axi_control`` slave: Vitis ``ap_ctrl_hs`` and the argument registers.

Offsets come from :mod:`hlsinf.registers`, so the gateware decodes exactly the map the
build publishes and the hosts encode.

Host-visible behaviour (``0x00`` control):

* bit 0 ``ap_start``: the host writes 1; it reads 1 until the kernel accepts the call
  (immediately when idle), then clears unless ``auto_restart`` is set. Writing 0 does
  nothing.
* bit 1 ``ap_done``: set when the kernel finishes a call, cleared by reading the control
  register (a finish in the same cycle as the read wins).
* bit 2 ``ap_idle``: 1 while no call runs.
* bit 3 ``ap_ready``: set when the kernel accepts a call (its arguments are latched, so
  the host may write the next call's arguments), cleared by reading the control register.
* bit 7 ``auto_restart``: read/write; while set, ``ap_start`` stays set and the kernel
  starts again as soon as it finishes.

``0x04`` GIE (bit 0), ``0x08`` IER (bit 0 done, bit 1 ready), ``0x0C`` ISR: bit 0 is set
on a finish and bit 1 on an accept when the matching IER bit is set; writing 1 to an ISR
bit toggles it. ``interrupt = GIE & |(IER & ISR)``. Arguments from ``0x10`` read back
what was written (byte strobes honoured); a 64-bit pointer is two words, low word first.
``0x90`` status (read-only, :data:`hlsinf.registers.STATUS`): the kernel's ``status``
input, which holds the AXI error flags of the running or last call (cleared by the
kernel when a call starts). Other addresses read 0 and ignore writes; every response is
OKAY.
"""

from __future__ import annotations

from amaranth import *
from amaranth.utils import bits_for
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.memory.axi import AXI4LiteSignature, RESP_OKAY
from hlsinf.config import KernelConfig
from hlsinf.registers import CONTROL, CONTROL_BITS, GIE, IER, ISR, STATUS, register_map

__all__ = ["Control", "args_layout", "control_addr_width"]


def control_addr_width(cfg: KernelConfig | None = None) -> int:
    """Address bits of ``s_axi_control``: enough for every register of the map."""
    end = max([reg.offset + reg.bits // 8 for reg in register_map(cfg)] + [STATUS + 4])
    return bits_for(end - 1)


def args_layout(cfg: KernelConfig | None = None) -> data.StructLayout:
    """The kernel arguments as one struct: a field per register (``H``, ``W``, ..., ``x``,
    ``y``), 32-bit scalars (signed where the map says so) and 64-bit pointers; with a
    ``cfg`` built with post-operations, their registers last."""
    fields = {}
    for reg in register_map(cfg):
        fields[reg.name] = signed(reg.bits) if reg.signed else unsigned(reg.bits)
    return data.StructLayout(fields)


class Control(wiring.Component):
    """AXI4-Lite control slave implementing ``ap_ctrl_hs`` (see the module docstring).

    Kernel-side ports
    -----------------
    ``start``: out, one-cycle pulse: a call begins; ``args`` already holds its arguments.
    ``done``: in, one-cycle pulse from the kernel: the call finished (all writes have their
    B responses). ``idle``: out, 1 while no call runs (``ap_idle``). ``args``: out,
    :func:`args_layout`, latched when the call is accepted and constant until the next
    accept. ``status``: in, read at :data:`~hlsinf.registers.STATUS`. ``interrupt``: out
    (the kernel's ``interrupt`` port). ``s_axi_control``: in
    (slave side of :class:`~hlsinf.gateware.memory.axi.AXI4LiteSignature`).

    One write and one read are handled at a time: AW, then W, then B; AR, then R.
    """

    def __init__(self, cfg: KernelConfig | None = None):
        self.cfg = cfg
        self.addr_width = control_addr_width(cfg)
        super().__init__({
            "s_axi_control": In(AXI4LiteSignature(addr_width=self.addr_width)),
            "interrupt": Out(1),
            "start": Out(1),
            "done": In(1),
            "idle": Out(1, init=1),
            "args": Out(args_layout(cfg)),
            "status": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axi_control
        regs = register_map(self.cfg)

        # Host-visible argument words, by word offset.
        words = {}
        for reg in regs:
            for k in range(reg.bits // 32):
                words[reg.offset + 4 * k] = Signal(32, name=f"arg_{reg.name}_{k}")

        ap_start = Signal()
        ap_done = Signal()
        ap_ready = Signal()
        auto_restart = Signal()
        gie = Signal()
        ier = Signal(2)
        isr = Signal(2)

        # --- write channel: AW, then W, then B -------------------------------------
        waddr = Signal(self.addr_width)
        write = Signal()   # the W beat of the current write is being taken this cycle
        with m.FSM(name="write"):
            with m.State("ADDR"):
                m.d.comb += bus.awready.eq(1)
                with m.If(bus.awvalid):
                    m.d.sync += waddr.eq(bus.awaddr)
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [bus.wready.eq(1), write.eq(bus.wvalid)]
                with m.If(bus.wvalid):
                    m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [bus.bvalid.eq(1), bus.bresp.eq(RESP_OKAY)]
                with m.If(bus.bready):
                    m.next = "ADDR"

        word_addr = Cat(C(0, 2), waddr[2:])
        wdata, wstrb = bus.wdata, bus.wstrb

        def merged(old):
            return Cat(*(Mux(wstrb[b], wdata[8 * b:8 * b + 8], old[8 * b:8 * b + 8]) for b in range(4)))

        write_control = write & (word_addr == CONTROL) & wstrb[0]
        for offset, word in words.items():
            with m.If(write & (word_addr == offset)):
                m.d.sync += word.eq(merged(word))
        with m.If(write & (word_addr == GIE) & wstrb[0]):
            m.d.sync += gie.eq(wdata[0])
        with m.If(write & (word_addr == IER) & wstrb[0]):
            m.d.sync += ier.eq(wdata[:2])
        isr_toggle = Mux(write & (word_addr == ISR) & wstrb[0], wdata[:2], 0)

        # --- read channel: AR, then R ----------------------------------------------
        read_control = Signal()
        rdata = Signal(32)
        with m.FSM(name="read"):
            with m.State("ADDR"):
                m.d.comb += bus.arready.eq(1)
                with m.If(bus.arvalid):
                    raddr = Cat(C(0, 2), bus.araddr[2:])
                    m.d.comb += read_control.eq(raddr == CONTROL)
                    with m.Switch(raddr):
                        with m.Case(CONTROL):
                            m.d.sync += rdata.eq(
                                (ap_start << CONTROL_BITS["ap_start"]) |
                                (ap_done << CONTROL_BITS["ap_done"]) |
                                (self.idle << CONTROL_BITS["ap_idle"]) |
                                (ap_ready << CONTROL_BITS["ap_ready"]) |
                                (auto_restart << CONTROL_BITS["auto_restart"]))
                        with m.Case(GIE):
                            m.d.sync += rdata.eq(gie)
                        with m.Case(IER):
                            m.d.sync += rdata.eq(ier)
                        with m.Case(ISR):
                            m.d.sync += rdata.eq(isr)
                        with m.Case(STATUS):
                            m.d.sync += rdata.eq(self.status)
                        for offset, word in words.items():
                            with m.Case(offset):
                                m.d.sync += rdata.eq(word)
                        with m.Default():
                            m.d.sync += rdata.eq(0)
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [bus.rvalid.eq(1), bus.rdata.eq(rdata), bus.rresp.eq(RESP_OKAY)]
                with m.If(bus.rready):
                    m.next = "ADDR"

        # --- ap_ctrl_hs ---------------------------------------------------------------
        accept = ap_start & self.idle
        m.d.sync += self.start.eq(accept)
        with m.If(accept):
            m.d.sync += self.idle.eq(0)
            for reg in regs:
                value = Cat(*(words[reg.offset + 4 * k] for k in range(reg.bits // 32)))
                m.d.sync += getattr(self.args, reg.name).eq(value)
        with m.Elif(self.done):
            m.d.sync += self.idle.eq(1)

        with m.If(write_control & wdata[CONTROL_BITS["ap_start"]]):
            m.d.sync += ap_start.eq(1)
        with m.Elif(accept & ~auto_restart):
            m.d.sync += ap_start.eq(0)
        with m.If(write_control):
            m.d.sync += auto_restart.eq(wdata[CONTROL_BITS["auto_restart"]])

        with m.If(self.done):
            m.d.sync += ap_done.eq(1)
        with m.Elif(read_control):
            m.d.sync += ap_done.eq(0)
        with m.If(accept):
            m.d.sync += ap_ready.eq(1)
        with m.Elif(read_control):
            m.d.sync += ap_ready.eq(0)

        events = Cat(self.done & ier[0], accept & ier[1])
        m.d.sync += [
            isr.eq((isr ^ isr_toggle) | events),
            self.interrupt.eq(gie & (ier & isr).any()),
        ]
        return m
