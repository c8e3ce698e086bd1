"""AXI4 write engine: byte-range commands plus a stream of items in, memory writes out.

:class:`WriteMaster` packs items (e.g. ``ArrayLayout(act, CPO)`` pixels) into full-width
beats placed at the command's address, with WSTRB covering exactly the command's bytes,
and writes them in INCR bursts; it raises ``done`` once every burst of a command has its
B response. :class:`PixelWriter` is the kernel's output port.
"""

from __future__ import annotations

import math

from amaranth import *
from amaranth.utils import bits_for, exact_log2
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.memory.axi import (ADDR_WIDTH, BURST_INCR, DATA_WIDTH, LENGTH_WIDTH, RESP_OKAY, AXI4Signature,
                   BurstSplitter, CommandLayout, check_data_width, check_master_queues, max_burst_beats)
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout
from hlsinf.gateware.memory.read import item_bytes, place_chunks

__all__ = ["WriteBeatLayout", "ItemPacker", "WriteMaster", "PixelWriter"]


def WriteBeatLayout(data_width: int = DATA_WIDTH):
    """A beat on its way to W: ``data`` and ``strb`` (one bit per byte)."""
    return data.StructLayout({"data": unsigned(data_width), "strb": unsigned(data_width // 8)})


class ItemPacker(wiring.Component):
    """Packs items into beats laid out as in memory, one command at a time.

    For each ``meta`` item (``offset``: first byte's position in its beat, in units of
    :attr:`chunk` bytes; ``last_at``: the command's length in bytes minus one item) the
    packer takes ``length / item_bytes`` items and emits ``ceil((offset_bytes + length) /
    beat_bytes)`` beats: the first starts ``offset`` chunks in, bytes outside the command
    have their strobe low. Commands never share a beat.

    Items are written at the buffer's fill level (a multiple of ``chunk = gcd(item_bytes,
    beat_bytes)``, which is why command addresses must be multiples of ``chunk``); a full
    beat leaves from byte 0 and the buffer shifts down by a constant. One item per cycle
    when items are at most a beat, one beat per cycle otherwise.
    """

    def __init__(self, item_shape, *, data_width: int = DATA_WIDTH, length_width: int = LENGTH_WIDTH):
        check_data_width(data_width)
        self.item_shape, self.data_width = item_shape, data_width
        self.item_bytes = item_bytes(item_shape)
        self.beat_bytes = data_width // 8
        self.chunk = math.gcd(self.item_bytes, self.beat_bytes)
        beat_c = self.beat_bytes // self.chunk
        super().__init__({
            "meta": In(stream.Signature(data.StructLayout({
                "offset": unsigned(max(1, bits_for(beat_c - 1))),
                "last_at": unsigned(length_width),
            }))),
            "i": In(stream.Signature(item_shape)),
            "o": Out(stream.Signature(WriteBeatLayout(data_width))),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.chunk
        cb = 8 * g
        item_c = self.item_bytes // g
        beat_c = self.beat_bytes // g
        cap_c = item_c + beat_c - 1
        meta = self.meta.payload

        buffer = Signal(cap_c * cb)
        valid = Signal(cap_c)                  # one bit per chunk: written by this command
        fill = Signal(range(cap_c + 1))        # chunks up to the end of the last item
        flush = Signal()                       # the buffer ends a command: drain it fully
        taken = Signal.like(meta.last_at)      # bytes of the current command taken

        full = fill >= beat_c
        m.d.comb += [
            self.o.valid.eq(full | (flush & (fill != 0))),
            self.o.payload.data.eq(buffer[:beat_c * cb]),
            self.o.payload.strb.eq(Cat(*(valid[j].replicate(g) for j in range(beat_c)))),
        ]
        emit = self.o.valid & self.o.ready
        final = flush & (fill <= beat_c)       # this beat drains the buffer

        fill_after = Signal.like(fill)
        flush_after = Signal()
        valid_after = Signal.like(valid)
        with m.If(emit & final):
            m.d.comb += [fill_after.eq(0), flush_after.eq(0), valid_after.eq(0)]
        with m.Elif(emit):
            m.d.comb += [fill_after.eq(fill - beat_c), flush_after.eq(flush), valid_after.eq(valid >> beat_c)]
        with m.Else():
            m.d.comb += [fill_after.eq(fill), flush_after.eq(flush), valid_after.eq(valid)]

        first = Signal(init=1)                 # the next item starts a command
        room = Mux(first, fill_after == 0, fill_after < beat_c)
        m.d.comb += self.i.ready.eq(self.meta.valid & ~flush_after & room)
        take = self.i.valid & self.i.ready
        last_item = taken == meta.last_at

        pos = Signal(range(beat_c))
        m.d.comb += pos.eq(Mux(first, meta.offset, fill_after))
        item = Value.cast(self.i.payload)
        placed, hit = place_chunks(m, item, pos, range(beat_c), chunk_bits=cb, src_chunks=item_c,
                                   dest_chunks=cap_c, name="item")

        # Data chunks: load an item chunk, or move down by a beat; chunks whose valid bit is
        # clear are don't-care, so nothing is ever cleared.
        for p in range(cap_c):
            chunk = buffer[p * cb:(p + 1) * cb]
            with m.If(take & hit[p]):
                m.d.sync += chunk.eq(placed[p])
            if p + beat_c < cap_c:
                with m.Elif(emit):
                    m.d.sync += chunk.eq(buffer[(p + beat_c) * cb:(p + beat_c + 1) * cb])

        with m.If(take):
            m.d.sync += [
                valid.eq(valid_after | hit),
                fill.eq(pos + item_c),
                flush.eq(last_item),
                taken.eq(Mux(last_item, 0, taken + self.item_bytes)),
                first.eq(last_item),
            ]
            m.d.comb += self.meta.ready.eq(last_item)
        with m.Else():
            m.d.sync += [valid.eq(valid_after), fill.eq(fill_after), flush.eq(flush_after)]
        return m


class WriteMaster(wiring.Component):
    """AXI4 write engine: commands and items in, bursts out, ``done`` per command.

    Parameters
    ----------
    item_shape:
        Payload of ``i`` (e.g. ``ArrayLayout(act, CPO)``); item byte 0 is bits 0..7 and goes
        to the lowest address. Its width must be a whole number of bytes.
    data_width, addr_width, id_width:
        AXI port shape (512, 64, 1 for the kernel).
    max_outstanding:
        Bursts in flight (AW issued, B not yet received).
    fifo_beats:
        Depth of the beat FIFO in front of W (at least one full burst; default two, so
        one burst fills while the previous one drains).
    issue_beats:
        An AW is issued once ``min(burst beats, issue_beats)`` of its beats wait in the
        FIFO. Default (None): the whole burst, so W never waits for data in mid-burst and
        the interconnect is never held by a half-written burst (Xilinx's advice); the
        cost is up to one burst (64 beats) of extra latency before the first write.
        A small value (e.g. 4) starts writing early when the producer keeps up.

    Ports
    -----
    ``cmd``: in, :func:`~hlsinf.gateware.memory.axi.CommandLayout`: ``addr`` (a multiple of
    :attr:`chunk` = gcd(item bytes, beat bytes), i.e. item-aligned when items divide a
    beat) and ``length`` in bytes (a positive multiple of the item size). ``i``: in, the
    items of the commands, in order. ``done``: out, a one-cycle pulse when the last B
    response of a command arrives (commands complete in order). ``axi``: out, AW/W/B used,
    AR/R tied off. ``error``: out, sticky, set by a B response other than OKAY; ``resp``:
    out, that first response; ``clear``: in, resets both (at the start of a call). An
    error response completes its burst like OKAY does, so a call always finishes.
    """

    def __init__(self, item_shape, *, data_width: int = DATA_WIDTH, addr_width: int = ADDR_WIDTH,
                 length_width: int = LENGTH_WIDTH, id_width: int = 1, max_outstanding: int = 8,
                 fifo_beats: int | None = None, issue_beats: int | None = None):
        item_bytes(item_shape)
        fifo_beats = check_master_queues(data_width, max_outstanding, fifo_beats, default_bursts=2)
        burst_beats = max_burst_beats(data_width)
        if issue_beats is None:
            issue_beats = burst_beats
        if not (isinstance(issue_beats, int) and 1 <= issue_beats <= burst_beats):
            raise ValueError(f"issue_beats = {issue_beats!r} is out of range: allowed 1 to {burst_beats}")
        self.issue_beats = issue_beats
        self.packer = ItemPacker(item_shape, data_width=data_width, length_width=length_width)
        self.splitter = BurstSplitter(data_width=data_width, addr_width=addr_width, length_width=length_width)
        self.item_shape, self.data_width, self.addr_width = item_shape, data_width, addr_width
        self.length_width, self.id_width = length_width, id_width
        self.max_outstanding, self.fifo_beats = max_outstanding, fifo_beats
        self.item_bytes, self.chunk = self.packer.item_bytes, self.packer.chunk
        super().__init__({
            "cmd": In(stream.Signature(CommandLayout(addr_width, length_width))),
            "i": In(stream.Signature(item_shape)),
            "axi": Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "done": Out(1),
            "error": Out(1),
            "resp": Out(2),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        ob = exact_log2(self.data_width // 8)
        m.submodules.splitter = splitter = self.splitter
        m.submodules.packer = packer = self.packer
        meta_layout = packer.meta.payload.shape()
        m.submodules.meta_fifo = meta_fifo = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=4)
        beat_layout = WriteBeatLayout(self.data_width)
        m.submodules.w_fifo = w_fifo = fifo.SyncFIFOBuffered(width=beat_layout.size, depth=self.fifo_beats)
        # Burst bookkeeping, wired by hand: written on the AW handshake, read on W's last beat / B.
        m.submodules.wlen_fifo = wlen_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.max_outstanding)
        m.submodules.blast_fifo = blast_fifo = fifo.SyncFIFOBuffered(width=1, depth=self.max_outstanding)

        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)

        # Packer: one meta item per command.
        info = splitter.info.payload
        meta_in = Signal(meta_layout)
        cg = exact_log2(self.chunk)
        m.d.comb += [
            meta_in.offset.eq(info.offset >> cg),
            meta_in.last_at.eq(info.length - self.item_bytes),
            meta_fifo.w_data.eq(meta_in),
            meta_fifo.w_en.eq(splitter.info.valid),
            splitter.info.ready.eq(meta_fifo.w_rdy),
        ]
        wiring.connect(m, meta_fifo.r_stream, packer.meta)
        wiring.connect(m, wiring.flipped(self.i), packer.i)
        wiring.connect(m, packer.o, w_fifo.w_stream)

        # AW: issue a burst once all its beats wait in w_fifo.
        burst = splitter.burst.payload
        # Beats pushed into w_fifo minus beats of issued AWs (negative while an AW issued
        # early still waits for some of its beats).
        unclaimed = Signal(range(-self.splitter.max_beats, self.fifo_beats + 1))
        if self.issue_beats >= self.splitter.max_beats:
            need = burst.len                    # the whole burst (no burst is longer)
        else:
            need = Mux(burst.len < self.issue_beats, burst.len, self.issue_beats - 1)  # beats needed - 1
        in_flight = Signal(range(self.max_outstanding + 1))
        m.d.comb += [
            axi.awvalid.eq(splitter.burst.valid & (unclaimed > need) &
                           (in_flight != self.max_outstanding) & wlen_fifo.w_rdy & blast_fifo.w_rdy),
            splitter.burst.ready.eq(axi.awvalid & axi.awready),
            axi.awaddr.eq(burst.addr),
            axi.awlen.eq(burst.len),
            axi.awsize.eq(ob),
            axi.awburst.eq(BURST_INCR),
            axi.awcache.eq(0b0011),
            axi.awid.eq(0),
        ]
        aw_done = axi.awvalid & axi.awready
        beat_in = w_fifo.w_en & w_fifo.w_rdy
        # Both outcomes computed ahead and chosen by aw_done last: the AW decision (a compare)
        # then feeds one mux, not an adder (logic depth).
        kept = Signal.like(unclaimed)
        m.d.comb += kept.eq(unclaimed + beat_in)
        with m.If(aw_done):
            m.d.sync += unclaimed.eq(kept - (burst.len + 1))
        with m.Else():
            m.d.sync += unclaimed.eq(kept)
        m.d.comb += [
            wlen_fifo.w_data.eq(burst.len), wlen_fifo.w_en.eq(aw_done),
            blast_fifo.w_data.eq(burst.last), blast_fifo.w_en.eq(aw_done),
        ]

        # W: beats of claimed bursts, wlast from the burst lengths.
        beat_index = Signal(8)
        w_beat = Signal(beat_layout)
        m.d.comb += [
            w_beat.eq(w_fifo.r_data),
            axi.wvalid.eq(w_fifo.r_rdy & wlen_fifo.r_rdy),
            axi.wdata.eq(w_beat.data),
            axi.wstrb.eq(w_beat.strb),
            axi.wlast.eq(beat_index == wlen_fifo.r_data),
        ]
        w_done = axi.wvalid & axi.wready
        m.d.comb += [w_fifo.r_en.eq(w_done), wlen_fifo.r_en.eq(w_done & axi.wlast)]
        with m.If(w_done):
            m.d.sync += beat_index.eq(Mux(axi.wlast, 0, beat_index + 1))

        # B: in order; the last burst of a command completes it.
        m.d.comb += axi.bready.eq(1)
        b_done = axi.bvalid & axi.bready
        m.d.comb += blast_fifo.r_en.eq(b_done)
        m.d.sync += [
            in_flight.eq(in_flight + aw_done - b_done),
            self.done.eq(b_done & blast_fifo.r_data[0]),
        ]
        with m.If(self.clear):
            m.d.sync += [self.error.eq(0), self.resp.eq(0)]
        with m.Elif(b_done & (axi.bresp != RESP_OKAY) & ~self.error):
            m.d.sync += [self.error.eq(1), self.resp.eq(axi.bresp)]

        # Read channels unused.
        m.d.comb += [axi.arvalid.eq(0), axi.rready.eq(1)]
        return m


class PixelWriter(WriteMaster):
    """Writes GOHWCPO activations: ``pixel_layout(cfg, cfg.cpo)`` pixels in.

    A command is one contiguous run of output pixels (a frame at ``y + (o * out_plane +
    write_offset) * CPO * act_bytes``), length ``pixels * CPO * act_bytes``; ``y`` must be
    pixel-aligned.
    """

    def __init__(self, cfg: KernelConfig, **kwargs):
        self.cfg = cfg
        super().__init__(pixel_layout(cfg, cfg.cpo), **kwargs)
