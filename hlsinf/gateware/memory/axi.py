"""AXI4 and AXI4-Lite interfaces, and the burst policy shared by the read and write engines.

Signatures use the AMBA channel signal names (``arvalid``, ``rdata``, ...), so a top level
that prefixes them with its bundle name gets the Vitis port names
(``m_axi_gmem_in_arvalid``, ``s_axi_control_awaddr``); :func:`port_map` builds exactly
those names for ``amaranth.back.verilog.convert(ports=...)``.

Both signatures are written from the **master's** point of view (``Out`` = driven by the
master); a slave uses ``In(signature)`` (or ``signature.flip()``).
"""

from __future__ import annotations


from amaranth import *
from amaranth.utils import bits_for, exact_log2
from amaranth.hdl import _ir
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "DATA_WIDTH", "ADDR_WIDTH", "LENGTH_WIDTH", "BURST_MAX_BEATS", "BOUNDARY_BYTES",
    "BURST_INCR", "RESP_OKAY",
    "AXI4Signature", "AXI4LiteSignature", "CommandLayout", "BurstLayout",
    "BurstSplitter", "ReadArbiter", "port_map", "beat_bytes", "max_burst_beats", "check_data_width",
]

#: Width of the kernel's memory ports (a 512-bit beat is 64 bytes).
DATA_WIDTH = 512
#: Byte addresses are 64 bits wide (Vitis ``m_axi`` default).
ADDR_WIDTH = 64
#: Width of a command's byte length: up to 4 GiB - 1 per command.
LENGTH_WIDTH = 32
#: AXI4 INCR bursts carry at most 256 beats (AxLEN = beats - 1 is 8 bits).
BURST_MAX_BEATS = 256
#: No burst may cross a 4 KiB address boundary (AXI4 rule).
BOUNDARY_BYTES = 4096
#: AxBURST encoding of incrementing bursts.
BURST_INCR = 0b01
#: xRESP encoding of a successful transfer.
RESP_OKAY = 0b00


def check_data_width(data_width: int, who: str = "data_width"):
    """AXI data widths are powers of two from 8 to 1024 bits."""
    if not (isinstance(data_width, int) and data_width in (8, 16, 32, 64, 128, 256, 512, 1024)):
        raise ValueError(f"{who} = {data_width!r} is out of range: allowed a power of two from 8 to 1024")


def beat_bytes(data_width: int = DATA_WIDTH) -> int:
    return data_width // 8


def max_burst_beats(data_width: int = DATA_WIDTH) -> int:
    """Longest burst both AXI4 rules allow: 256 beats, and one 4 KiB page (64 beats of 512 bits)."""
    return min(BURST_MAX_BEATS, BOUNDARY_BYTES // (data_width // 8))


def check_master_queues(data_width: int, max_outstanding, fifo_beats, default_bursts: int) -> int:
    """Check a master's ``max_outstanding`` and ``fifo_beats``; the FIFO depth to use.

    The data FIFO holds at least one full burst; ``fifo_beats=None`` means
    ``default_bursts`` full bursts.
    """
    check_data_width(data_width)
    if not (isinstance(max_outstanding, int) and 1 <= max_outstanding <= 64):
        raise ValueError(f"max_outstanding = {max_outstanding!r} is out of range: allowed 1 to 64")
    burst_beats = max_burst_beats(data_width)
    if fifo_beats is None:
        fifo_beats = default_bursts * burst_beats
    if not (isinstance(fifo_beats, int) and burst_beats <= fifo_beats <= 65536):
        raise ValueError(f"fifo_beats = {fifo_beats!r} is out of range: allowed "
                         f"{burst_beats} (one full burst) to 65536")
    return fifo_beats


class AXI4Signature(wiring.Signature):
    """AXI4 full master: AW, W, B, AR, R channels (``Out`` = driven by the master).

    Members, per channel (names are the AMBA ones):

    * AW / AR: ``{aw,ar}id, addr, len, size, burst, lock, cache, prot, qos, valid`` out,
      ``{aw,ar}ready`` in;
    * W: ``wdata, wstrb, wlast, wvalid`` out, ``wready`` in;
    * B: ``bid, bresp, bvalid`` in, ``bready`` out;
    * R: ``rid, rdata, rresp, rlast, rvalid`` in, ``rready`` out.

    ``lock`` is 1 bit (AXI4 has no locked transfers, only exclusive).
    """

    def __init__(self, *, addr_width: int = ADDR_WIDTH, data_width: int = DATA_WIDTH, id_width: int = 1):
        check_data_width(data_width)
        if not (isinstance(addr_width, int) and 12 <= addr_width <= 64):
            raise ValueError(f"addr_width = {addr_width!r} is out of range: allowed 12 to 64")
        if not (isinstance(id_width, int) and 1 <= id_width <= 16):
            raise ValueError(f"id_width = {id_width!r} is out of range: allowed 1 to 16")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        members = {}
        for ch in ("aw", "ar"):
            members.update({
                f"{ch}id": Out(id_width), f"{ch}addr": Out(addr_width), f"{ch}len": Out(8),
                f"{ch}size": Out(3), f"{ch}burst": Out(2), f"{ch}lock": Out(1),
                f"{ch}cache": Out(4), f"{ch}prot": Out(3), f"{ch}qos": Out(4),
                f"{ch}valid": Out(1), f"{ch}ready": In(1),
            })
        members.update({
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })
        super().__init__(members)

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width and
                self.data_width == other.data_width and self.id_width == other.id_width)

    def __repr__(self):
        return f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, id_width={self.id_width})"


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite master (``Out`` = driven by the master), 32-bit data: the Vitis
    ``s_axi_control_*`` members ``awaddr awvalid awready wdata wstrb wvalid wready bresp
    bvalid bready araddr arvalid arready rdata rresp rvalid rready``.

    Vitis control slaves have no ``awprot``/``arprot``, so neither does this signature.
    """

    def __init__(self, *, addr_width: int, data_width: int = 32):
        if not (isinstance(addr_width, int) and 2 <= addr_width <= 64):
            raise ValueError(f"addr_width = {addr_width!r} is out of range: allowed 2 to 64")
        if data_width not in (32, 64):
            raise ValueError(f"data_width = {data_width!r} is out of range: allowed 32 or 64")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width and
                self.data_width == other.data_width)

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def port_map(prefix: str, interface, *, flipped: bool = False) -> dict:
    """``{f"{prefix}_{member}": (signal, direction)}`` for ``verilog.convert(ports=...)``.

    ``interface`` is an AXI interface object (e.g. ``kernel.m_axi_gmem_in``); directions are
    taken from its signature, so flipped (slave) interfaces come out right.
    """
    ports = {}
    for path, member, value in interface.signature.flatten(interface):
        name = "_".join([prefix, *map(str, path)])
        dir = _ir.PortDirection.Input if member.flow == In else _ir.PortDirection.Output
        ports[name] = (value, dir)
    return ports


def CommandLayout(addr_width: int = ADDR_WIDTH, length_width: int = LENGTH_WIDTH):
    """A read or write command: a byte address and a byte length (>= 1)."""
    return data.StructLayout({"addr": unsigned(addr_width), "length": unsigned(length_width)})


def BurstLayout(addr_width: int = ADDR_WIDTH):
    """One INCR burst: beat-aligned byte address, AxLEN (beats - 1), last burst of its command."""
    return data.StructLayout({"addr": unsigned(addr_width), "len": unsigned(8), "last": unsigned(1)})


class BurstSplitter(wiring.Component):
    """Cuts byte-range commands into AXI4 INCR bursts.

    Each burst is at most ``BURST_MAX_BEATS`` beats and never crosses a 4 KiB boundary
    (with 512-bit beats the 4 KiB rule is the binding one: 64 beats). A command covers the
    beats from the one holding ``addr`` to the one holding ``addr + length - 1``.

    Besides the bursts, every accepted command produces one ``info`` item that the data
    side needs to realign or pack bytes: ``offset`` (``addr`` modulo the beat size),
    ``beats`` (beats the bursts cover), ``length``.

    Timing: one cycle to take a command, then two cycles per burst (the burst length is
    computed in one cycle and registered, so no carry chain feeds another one
    combinationally). Bursts are at least tens of beats except for tiny commands, so this
    never limits the data rate.

    Ports: ``cmd`` (in, :func:`CommandLayout`), ``burst`` (out, :func:`BurstLayout`),
    ``info`` (out, ``offset``, ``beats``, ``length``). A command of ``length`` 0 is dropped
    (no burst, no info).
    """

    def __init__(self, *, data_width: int = DATA_WIDTH, addr_width: int = ADDR_WIDTH,
                 length_width: int = LENGTH_WIDTH):
        check_data_width(data_width)
        self.data_width, self.addr_width, self.length_width = data_width, addr_width, length_width
        self.beat_bytes = data_width // 8
        self.offset_bits = max(1, exact_log2(self.beat_bytes))
        #: beats in a 4 KiB page and the largest burst under both rules
        self.page_beats = BOUNDARY_BYTES // self.beat_bytes
        self.max_beats = max_burst_beats(data_width)
        beats_width = length_width + 1
        super().__init__({
            "cmd": In(stream.Signature(CommandLayout(addr_width, length_width))),
            "burst": Out(stream.Signature(BurstLayout(addr_width))),
            "info": Out(stream.Signature(data.StructLayout({
                "offset": unsigned(self.offset_bits),
                "beats": unsigned(beats_width),
                "length": unsigned(length_width),
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        ob = exact_log2(self.beat_bytes)
        page_bits = exact_log2(self.page_beats)

        beat_addr = Signal(self.addr_width - ob)       # address of the next burst, in beats
        beats_left = Signal(self.length_width + 1)     # beats of the command not yet in a burst
        burst_beats = Signal(range(self.max_beats + 1))  # beats of the burst being emitted

        cmd = self.cmd.payload
        first_offset = cmd.addr[:ob] if ob else C(0, 1)
        cmd_beats = (cmd.length + first_offset + (self.beat_bytes - 1)) >> ob

        # Beats up to the next 4 KiB boundary, capped at the AXI4 maximum.
        page_offset = beat_addr[:page_bits] if page_bits else C(0, 1)
        to_boundary = Signal(range(self.page_beats + 1))
        m.d.comb += to_boundary.eq(self.page_beats - page_offset)
        room = Mux(to_boundary > self.max_beats, self.max_beats, to_boundary)

        with m.FSM():
            with m.State("TAKE"):
                # The command is taken only when its info item can be handed on.
                m.d.comb += self.cmd.ready.eq(~self.info.valid | self.info.ready)
                with m.If(self.info.ready):
                    m.d.sync += self.info.valid.eq(0)
                with m.If(self.cmd.valid & self.cmd.ready & (cmd.length != 0)):
                    m.d.sync += [
                        beat_addr.eq(cmd.addr[ob:]),
                        beats_left.eq(cmd_beats),
                        self.info.valid.eq(1),
                        self.info.payload.offset.eq(first_offset),
                        self.info.payload.beats.eq(cmd_beats),
                        self.info.payload.length.eq(cmd.length),
                    ]
                    m.next = "SIZE"
            with m.State("SIZE"):
                with m.If(self.info.ready):
                    m.d.sync += self.info.valid.eq(0)
                m.d.sync += burst_beats.eq(Mux(beats_left < room, beats_left, room))
                m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(self.info.ready):
                    m.d.sync += self.info.valid.eq(0)
                last = beats_left == burst_beats
                m.d.comb += [
                    self.burst.valid.eq(1),
                    self.burst.payload.addr.eq(beat_addr << ob),
                    self.burst.payload.len.eq(burst_beats - 1),
                    self.burst.payload.last.eq(last),
                ]
                with m.If(self.burst.ready):
                    m.d.sync += [
                        beat_addr.eq(beat_addr + burst_beats),
                        beats_left.eq(beats_left - burst_beats),
                    ]
                    m.next = "SIZE"
                    with m.If(last):
                        m.next = "TAKE"
        return m


class ReadArbiter(wiring.Component):
    """Shares one AXI4 read port among ``n`` read engines (e.g. weights, bias and
    multipliers on ``m_axi_gmem_w``).

    AR: round robin among the engines with ``arvalid``; a grant is held until its AR is
    accepted, so each engine's AR stays stable. Every accepted AR pushes its engine's index
    into an order FIFO (all ARs use ID 0, so the memory answers in order) and R beats go
    to the engine at its head until ``rlast``. The engines of this package keep ``rready``
    high (they reserve receive-FIFO room before issuing), so one engine's slow consumer
    never blocks the others' data.

    Ports: ``inputs``: ``In(AXI4Signature)`` array of ``n`` (connect engine ``k``'s ``axi``
    to ``inputs[k]``); ``axi``: the shared master. Write channels are tied off (inputs'
    AW/W/B are ignored; their ``bvalid``/``awready``/``wready`` stay low).
    ``max_outstanding`` sizes the order FIFO (total bursts in flight, all engines).
    """

    def __init__(self, n: int, *, addr_width: int = ADDR_WIDTH, data_width: int = DATA_WIDTH,
                 id_width: int = 1, max_outstanding: int = 32):
        if not (isinstance(n, int) and 1 <= n <= 16):
            raise ValueError(f"n = {n!r} is out of range: allowed 1 to 16 read engines")
        if not (isinstance(max_outstanding, int) and 1 <= max_outstanding <= 1024):
            raise ValueError(f"max_outstanding = {max_outstanding!r} is out of range: allowed 1 to 1024")
        self.n, self.max_outstanding = n, max_outstanding
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        super().__init__({
            "inputs": In(sig).array(n),
            "axi": Out(sig),
        })

    def elaborate(self, platform):
        from amaranth.lib import fifo
        m = Module()
        n, axi = self.n, self.axi
        index_bits = max(1, bits_for(n - 1))
        # Wired by hand: written on the AR handshake, read on each burst's last R beat.
        m.submodules.order = order = fifo.SyncFIFOBuffered(width=index_bits, depth=self.max_outstanding)

        # AR: round robin, grant held until the handshake.
        grant = Signal(range(n))
        locked = Signal()           # the granted engine's AR is being offered
        chosen = Signal(range(n))
        # The next requester after the last grant, in circular order.
        with m.If(locked):
            m.d.comb += chosen.eq(grant)
        with m.Else():
            m.d.comb += chosen.eq(grant)
            for step in reversed(range(1, n + 1)):
                k = Signal(range(n), name=f"rr_{step}")
                m.d.comb += k.eq((grant + step) % n if n > 1 else 0)
                with m.If(self.inputs[0].arvalid if n == 1 else Array(i.arvalid for i in self.inputs)[k]):
                    m.d.comb += chosen.eq(k)
        src = Array(self.inputs)[chosen]
        m.d.comb += [
            axi.arvalid.eq(src.arvalid & order.w_rdy),
            axi.araddr.eq(src.araddr), axi.arlen.eq(src.arlen), axi.arsize.eq(src.arsize),
            axi.arburst.eq(src.arburst), axi.arlock.eq(src.arlock), axi.arcache.eq(src.arcache),
            axi.arprot.eq(src.arprot), axi.arqos.eq(src.arqos), axi.arid.eq(0),
            order.w_data.eq(chosen), order.w_en.eq(axi.arvalid & axi.arready),
        ]
        for k, i in enumerate(self.inputs):
            m.d.comb += i.arready.eq((chosen == k) & axi.arready & order.w_rdy)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [grant.eq(chosen), locked.eq(0)]
        with m.Elif(axi.arvalid):
            m.d.sync += [grant.eq(chosen), locked.eq(1)]

        # R: to the engine at the head of the order FIFO.
        head = order.r_data[:index_bits]
        for k, i in enumerate(self.inputs):
            sel = order.r_rdy & (head == k)
            m.d.comb += [
                i.rvalid.eq(sel & axi.rvalid), i.rdata.eq(axi.rdata), i.rresp.eq(axi.rresp),
                i.rlast.eq(axi.rlast), i.rid.eq(axi.rid),
            ]
        m.d.comb += [
            axi.rready.eq(order.r_rdy & Array(i.rready for i in self.inputs)[head]),
            order.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
            axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(1),
        ]
        return m
