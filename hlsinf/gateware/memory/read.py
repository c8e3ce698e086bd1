"""AXI4 read engine and the adapters that turn its byte stream into kernel items.

:class:`ReadMaster` takes ``(byte address, byte length)`` commands and returns each
command's bytes as a contiguous stream of full-width beats (the first beat starts at the
command's first byte, whatever its alignment). :class:`BytesToItems` cuts such a stream
into items of any number of bytes (pixels, weight sets, bias words); :class:`ItemReader`
and :class:`ActivationReader` put the two together.
"""

from __future__ import annotations

import math

from amaranth import *
from amaranth.utils import bits_for, exact_log2
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.lib.wide_stream import stream_signature

from hlsinf.gateware.memory.axi import (ADDR_WIDTH, BURST_INCR, DATA_WIDTH, LENGTH_WIDTH, RESP_OKAY, AXI4Signature,
                   BurstSplitter, CommandLayout, check_data_width, check_master_queues)
from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout

__all__ = ["BeatLayout", "Realigner", "ReadMaster", "BytesToItems", "ItemReader", "ActivationReader",
           "item_bytes", "place_chunks"]


def BeatLayout(data_width: int = DATA_WIDTH):
    """A beat of a command's byte stream: ``data`` (byte 0 in bits 0..7), ``count`` valid
    bytes from byte 0 (the full beat except on the last beat of a command), ``last`` beat of
    the command."""
    return data.StructLayout({"data": unsigned(data_width),
                              "count": unsigned(exact_log2(data_width // 8) + 1),
                              "last": unsigned(1)})


def _RealignLayout(data_width: int, length_width: int):
    ob = max(1, exact_log2(data_width // 8))
    return data.StructLayout({
        "aligned": unsigned(1),             # the first byte starts a memory beat
        "skew": unsigned(ob),               # (first byte's position in its beat - 1) mod beat bytes
        "single": unsigned(1),              # one output beat
        "out_beats_m2": unsigned(length_width),  # output beats - 2 (when not single)
        "extra": unsigned(1),               # one more memory beat than output beats
        "last_count": unsigned(ob + 1),     # bytes of the last output beat
    })


class Realigner(wiring.Component):
    """Shifts memory beats so that a command's first byte lands in byte 0 of its first beat.

    Output beat ``k`` of a command whose first byte sits at byte ``offset`` of memory beat 0
    is bytes ``offset..`` of memory beat ``k`` followed by bytes ``..offset-1`` of beat
    ``k+1``: one registered ``2 x width -> width`` byte shifter (a 64:1 byte mux for
    512 bits). With ``offset`` 0 beats pass straight through; otherwise the first memory
    beat only loads the shifter, and when the command's bytes end inside the last memory
    beat one final output is made without taking a new beat. One beat per cycle.

    Ports: ``meta`` (in, one item per command, see :class:`ReadMaster`), ``i`` (in, memory
    beats), ``o`` (out, :func:`BeatLayout`).
    """

    def __init__(self, *, data_width: int = DATA_WIDTH, length_width: int = LENGTH_WIDTH):
        check_data_width(data_width)
        self.data_width, self.length_width = data_width, length_width
        super().__init__({
            "meta": In(stream.Signature(_RealignLayout(data_width, length_width))),
            "i": In(stream.Signature(unsigned(data_width))),
            "o": Out(stream.Signature(BeatLayout(data_width))),
        })

    def elaborate(self, platform):
        m = Module()
        dw = self.data_width
        meta = self.meta.payload

        prev = Signal(dw)            # memory beat k while beat k+1 is awaited
        loaded = Signal()            # prev holds this command's memory beat 0
        out_index = Signal(self.length_width)

        aligned = meta.aligned
        # Whether the next output beat is the command's last, without a wide compare in the
        # handshake path: decided one beat ahead (or from the command's `single` flag).
        at_start = Signal(init=1)
        last_next = Signal()
        last_out = Mux(at_start, meta.single, last_next)
        load = ~aligned & ~loaded                          # take beat 0, emit nothing
        flush = ~aligned & loaded & ~meta.extra & last_out  # emit, take nothing
        consume = ~flush
        emit = ~load
        out_free = ~self.o.valid | self.o.ready

        # Output byte j is window byte j + skew: byte offset + j of (prev, i) when unaligned,
        # byte j of i when aligned (skew = beat bytes - 1), so no mux is needed before the
        # shifter and the realigner is a single 64:1 byte mux deep.
        window = Cat(prev[8:], self.i.payload)
        shifted = window.bit_select(Cat(C(0, 3), meta.skew), dw)

        m.d.comb += self.i.ready.eq(self.meta.valid & consume & (~emit | out_free))
        step = self.meta.valid & (~consume | self.i.valid) & (~emit | out_free)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(step):
            with m.If(consume):
                m.d.sync += [prev.eq(self.i.payload), loaded.eq(1)]
            with m.If(emit):
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(shifted),
                    self.o.payload.count.eq(Mux(last_out, meta.last_count, dw // 8)),
                    self.o.payload.last.eq(last_out),
                    out_index.eq(out_index + 1),
                    at_start.eq(0),
                    last_next.eq(out_index == meta.out_beats_m2),
                ]
                with m.If(last_out):
                    m.d.comb += self.meta.ready.eq(1)
                    m.d.sync += [out_index.eq(0), loaded.eq(0), at_start.eq(1), last_next.eq(0)]
        return m


class ReadMaster(wiring.Component):
    """AXI4 read engine: byte-range commands in, the commands' bytes out, in order.

    Parameters
    ----------
    data_width, addr_width, id_width:
        AXI port shape (512, 64, 1 for the kernel).
    max_outstanding:
        Bursts that may be in flight (AR issued, last R beat not yet received).
    fifo_beats:
        Depth of the receive FIFO. An AR is issued only when the FIFO has room for every
        beat of every burst in flight plus the new one, so ``rready`` never drops and a
        stalled consumer can never block the R channel. Default: ``max_outstanding`` full
        bursts.

    Ports
    -----
    ``cmd``: in, :func:`~hlsinf.gateware.memory.axi.CommandLayout` (``addr``, ``length`` in bytes; a zero
    length command is dropped). ``o``: out, :func:`BeatLayout`: ``ceil(length / bytes per
    beat)`` beats per command, the command's bytes packed from byte 0, ``count`` valid bytes
    and ``last`` on the final beat. ``axi``: out, :class:`~hlsinf.gateware.memory.axi.AXI4Signature` (only
    AR and R are used; AW/W/B are tied off). ``error``: out, sticky, set by an R response
    other than OKAY; ``resp``: out, that first response (SLVERR, DECERR); ``clear``: in,
    resets both (the kernel pulses it when a call starts). Beats of an error response are
    passed on like any other, so a call always finishes.

    Bursts are INCR, full width, at most 256 beats, never across 4 KiB (see
    :class:`~hlsinf.gateware.memory.axi.BurstSplitter`).
    """

    def __init__(self, *, data_width: int = DATA_WIDTH, addr_width: int = ADDR_WIDTH,
                 length_width: int = LENGTH_WIDTH, id_width: int = 1, max_outstanding: int = 8,
                 fifo_beats: int | None = None):
        fifo_beats = check_master_queues(data_width, max_outstanding, fifo_beats,
                                         default_bursts=max_outstanding)
        self.splitter = BurstSplitter(data_width=data_width, addr_width=addr_width,
                                      length_width=length_width)
        self.data_width, self.addr_width, self.length_width = data_width, addr_width, length_width
        self.id_width, self.max_outstanding, self.fifo_beats = id_width, max_outstanding, fifo_beats
        super().__init__({
            "cmd": In(stream.Signature(CommandLayout(addr_width, length_width))),
            "o": Out(stream.Signature(BeatLayout(data_width))),
            "axi": Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "error": Out(1),
            "resp": Out(2),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        ob = exact_log2(self.data_width // 8)
        m.submodules.splitter = splitter = self.splitter
        m.submodules.realigner = realigner = Realigner(data_width=self.data_width,
                                                       length_width=self.length_width)
        meta_layout = _RealignLayout(self.data_width, self.length_width)
        m.submodules.meta_fifo = meta_fifo = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=4)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=self.data_width, depth=self.fifo_beats)

        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)

        # Per-command realignment facts, computed from registered splitter outputs.
        info = splitter.info.payload
        meta_in = Signal(meta_layout)
        length_m1 = info.length - 1
        m.d.comb += [
            meta_in.aligned.eq(info.offset == 0),
            meta_in.skew.eq(info.offset - 1),
            meta_in.single.eq((length_m1 >> ob) == 0),
            meta_in.out_beats_m2.eq((length_m1 >> ob) - 1),
            meta_in.extra.eq(info.beats != (length_m1 >> ob) + 1),
            meta_in.last_count.eq(length_m1[:ob] + 1),
            meta_fifo.w_data.eq(meta_in),
            meta_fifo.w_en.eq(splitter.info.valid),
            splitter.info.ready.eq(meta_fifo.w_rdy),
        ]
        wiring.connect(m, meta_fifo.r_stream, realigner.meta)

        # AR: issue a burst when the receive FIFO can hold it on top of everything in flight.
        burst = splitter.burst.payload
        reserved = Signal(range(self.fifo_beats + 1))     # beats issued and not yet read out of rx_fifo
        in_flight = Signal(range(self.max_outstanding + 1))
        fits = burst.len < self.fifo_beats - reserved     # len + 1 beats on top of reserved
        m.d.comb += [
            axi.arvalid.eq(splitter.burst.valid & fits & (in_flight != self.max_outstanding)),
            splitter.burst.ready.eq(axi.arvalid & axi.arready),
            axi.araddr.eq(burst.addr),
            axi.arlen.eq(burst.len),
            axi.arsize.eq(ob),
            axi.arburst.eq(BURST_INCR),
            axi.arcache.eq(0b0011),   # normal, bufferable (Vitis default)
            axi.arid.eq(0),
        ]
        ar_done = axi.arvalid & axi.arready
        r_done = axi.rvalid & axi.rready
        rx_pop = rx_fifo.r_rdy & rx_fifo.r_en
        # Both outcomes computed ahead and chosen by ar_done last (logic depth).
        kept = Signal.like(reserved)
        m.d.comb += kept.eq(reserved - rx_pop)
        with m.If(ar_done):
            m.d.sync += reserved.eq(kept + burst.len + 1)
        with m.Else():
            m.d.sync += reserved.eq(kept)
        m.d.sync += in_flight.eq(in_flight + ar_done - (r_done & axi.rlast))

        # R: always accepted (room was reserved).
        m.d.comb += [
            axi.rready.eq(rx_fifo.w_rdy),
            rx_fifo.w_data.eq(axi.rdata),
            rx_fifo.w_en.eq(axi.rvalid),
        ]
        wiring.connect(m, rx_fifo.r_stream, realigner.i)
        with m.If(self.clear):
            m.d.sync += [self.error.eq(0), self.resp.eq(0)]
        with m.Elif(r_done & (axi.rresp != RESP_OKAY) & ~self.error):
            m.d.sync += [self.error.eq(1), self.resp.eq(axi.rresp)]

        wiring.connect(m, realigner.o, wiring.flipped(self.o))

        # Write channels unused.
        m.d.comb += [axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(1)]
        return m


def place_chunks(m, src, pos, positions, *, chunk_bits, src_chunks, dest_chunks, name):
    """Put ``src`` (``src_chunks`` chunks) at chunk ``pos`` of a ``dest_chunks`` buffer.

    Returns ``(chunks, hit)``: ``chunks[p]`` is ``src`` chunk ``p - pos`` where ``hit[p]`` is
    set. ``positions`` lists the values ``pos`` can take, so every destination chunk is a
    mux of only the sources that can land on it (a decoder when there is one), never a full
    barrel shifter over the buffer. Each chunk is a signal of its own: Amaranth's netlist
    holds at most 65,536 bits per signal driver, less than a 32x32 weight set.
    """
    chunks = [Signal(chunk_bits, name=f"{name}_placed{p}") for p in range(dest_chunks)]
    hit = Signal(dest_chunks, name=f"{name}_hit")
    for p in range(dest_chunks):
        cases = [(v, p - v) for v in positions if 0 <= p - v < src_chunks]
        if not cases:
            continue
        if len(cases) == 1:
            (v, j), = cases
            m.d.comb += [chunks[p].eq(src[j * chunk_bits:(j + 1) * chunk_bits]), hit[p].eq(pos == v)]
            continue
        with m.Switch(pos):
            for v, j in cases:
                with m.Case(v):
                    m.d.comb += [chunks[p].eq(src[j * chunk_bits:(j + 1) * chunk_bits]), hit[p].eq(1)]
    return chunks, hit


def item_bytes(item_shape) -> int:
    """Bytes of one item of ``item_shape``; its width must be a positive multiple of 8 bits."""
    width = item_shape.size if isinstance(item_shape, data.Layout) else Shape.cast(item_shape).width
    if width == 0 or width % 8:
        raise ValueError(f"item_shape {item_shape!r} is {width} bits wide: allowed a positive multiple of 8")
    return width // 8


class BytesToItems(wiring.Component):
    """Cuts a byte stream of :func:`BeatLayout` beats into items of ``item_bytes`` bytes.

    ``item_shape`` is the output payload (any shape whose width is a whole number of bytes,
    e.g. ``ArrayLayout(unsigned(8), 8)`` for an 8-lane pixel or a weight-set layout); item
    byte 0 is bits 0..7. Every command's length must be a multiple of ``item_bytes`` (items
    never span commands).

    The buffer holds ``item_bytes + beat_bytes - g`` bytes, ``g = gcd(item_bytes,
    beat_bytes)``; a beat is written at the current fill level (a multiple of ``g`` below
    one item, so each ``g``-byte chunk picks among at most ``min(item, beat) / g``
    sources: none when items divide beats, a decoder when beats divide items),
    an item is read from byte 0 and the buffer then shifts down by a constant. One item per
    cycle when items are at most a beat, one beat per cycle otherwise.
    """

    def __init__(self, item_shape, *, data_width: int = DATA_WIDTH):
        check_data_width(data_width)
        self.item_shape, self.data_width = item_shape, data_width
        self.item_bytes = item_bytes(item_shape)
        self.beat_bytes = data_width // 8
        self.chunk = math.gcd(self.item_bytes, self.beat_bytes)
        super().__init__({
            "i": In(stream.Signature(BeatLayout(data_width))),
            "o": Out(stream_signature(item_shape)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.chunk
        item_c = self.item_bytes // g
        beat_c = self.beat_bytes // g
        cap_c = item_c + beat_c - 1
        cb = g * 8                                   # bits per chunk

        # One signal per chunk (see place_chunks): items can exceed a netlist driver's width.
        buffer = [Signal(cb, name=f"buffer{p}") for p in range(cap_c)]
        fill = Signal(range(cap_c + 1))              # chunks held

        m.d.comb += [
            self.o.valid.eq(fill >= item_c),
            self.o.payload.eq(Cat(*buffer[:item_c])),
        ]
        emit = self.o.valid & self.o.ready
        fill_after = Signal.like(fill)
        m.d.comb += fill_after.eq(Mux(emit, fill - item_c, fill))

        # A beat is taken while the buffer (after this cycle's item) holds less than an item:
        # then it fits whatever the beat's count.
        m.d.comb += self.i.ready.eq(fill_after < item_c)
        take = self.i.valid & self.i.ready

        pos = fill_after[:max(1, bits_for(item_c - 1))]
        placed, hit = place_chunks(m, self.i.payload.data, pos, range(item_c), chunk_bits=cb,
                                   src_chunks=beat_c, dest_chunks=cap_c, name="beat")
        count_c = self.i.payload.count >> exact_log2(g)

        m.d.sync += fill.eq(Mux(take, fill_after + count_c, fill_after))
        # Per chunk: load from the beat, or move down by an item. Chunks at or above the
        # fill level are don't-care, so the top item's worth of chunks never needs clearing
        # (when beats divide items nothing moves at all: the buffer is plain enabled FFs).
        for p in range(cap_c):
            with m.If(take & hit[p]):
                m.d.sync += buffer[p].eq(placed[p])
            if p + item_c < cap_c:
                with m.Elif(emit):
                    m.d.sync += buffer[p].eq(buffer[p + item_c])
        return m


class ItemReader(wiring.Component):
    """A :class:`ReadMaster` followed by :class:`BytesToItems`: commands in, items out.

    Ports: ``cmd`` (in), ``o`` (out, ``item_shape``), ``axi`` (out), ``error``, ``resp`` (out)
    and ``clear`` (in) of the master.
    Command lengths must be multiples of the item size.
    """

    def __init__(self, item_shape, *, data_width: int = DATA_WIDTH, addr_width: int = ADDR_WIDTH,
                 length_width: int = LENGTH_WIDTH, id_width: int = 1, max_outstanding: int = 8,
                 fifo_beats: int | None = None, extra_members: dict | None = None):
        item_bytes(item_shape)
        self.master = ReadMaster(data_width=data_width, addr_width=addr_width, length_width=length_width,
                                 id_width=id_width, max_outstanding=max_outstanding, fifo_beats=fifo_beats)
        self.converter = BytesToItems(item_shape, data_width=data_width)
        super().__init__({
            "cmd": In(stream.Signature(CommandLayout(addr_width, length_width))),
            "o": Out(stream_signature(item_shape)),
            "axi": Out(self.master.axi.signature),
            "error": Out(1),
            "resp": Out(2),
            "clear": In(1),
            **(extra_members or {}),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.master = self.master
        m.submodules.converter = self.converter
        wiring.connect(m, wiring.flipped(self.cmd), self.master.cmd)
        wiring.connect(m, self.master.o, self.converter.i)
        wiring.connect(m, self.converter.o, wiring.flipped(self.o))
        wiring.connect(m, self.master.axi, wiring.flipped(self.axi))
        m.d.comb += [self.error.eq(self.master.error), self.resp.eq(self.master.resp),
                     self.master.clear.eq(self.clear)]
        return m


class ActivationReader(ItemReader):
    """Reads GIHWCPI activations: commands in, ``pixel_layout(cfg, cfg.cpi)`` pixels out.

    A command is one contiguous run of pixels (e.g. a frame: ``rows * W`` pixels from
    ``x + (gi*H*W + read_offset) * CPI * act_bytes``); its length is ``pixels * CPI *
    act_bytes``.

    With ``cfg.with_pointwise`` it also has a ``pointwise`` input and a ``superpixels`` output
    (``9 * CPI`` lanes, :func:`~hlsinf.gateware.stages.pointwise.superpixel_layout`): while
    ``pointwise`` is high (a whole call) the master's beats go to a second cutter of
    super-pixels instead, at one beat a cycle (64 bytes against 72 of an 8-lane int8 super-pixel).
    """

    def __init__(self, cfg: KernelConfig, **kwargs):
        self.cfg = cfg
        extra = {}
        if cfg.with_pointwise:
            from hlsinf.gateware.stages.pointwise import superpixel_layout
            self.superpixel_converter = BytesToItems(superpixel_layout(cfg),
                                                     data_width=kwargs.get("data_width", DATA_WIDTH))
            extra = {"pointwise": In(1), "superpixels": Out(self.superpixel_converter.o.signature)}
        super().__init__(pixel_layout(cfg, cfg.cpi), extra_members=extra, **kwargs)

    def elaborate(self, platform):
        if not self.cfg.with_pointwise:
            return super().elaborate(platform)
        m = Module()
        m.submodules.master = self.master
        m.submodules.converter = self.converter
        m.submodules.superpixel_converter = sp = self.superpixel_converter
        wiring.connect(m, wiring.flipped(self.cmd), self.master.cmd)
        beats, pw = self.master.o, self.pointwise
        for conv, on in ((self.converter, ~pw), (sp, pw)):
            m.d.comb += [conv.i.payload.eq(beats.payload), conv.i.valid.eq(beats.valid & on)]
        m.d.comb += beats.ready.eq(Mux(pw, sp.i.ready, self.converter.i.ready))
        wiring.connect(m, self.converter.o, wiring.flipped(self.o))
        wiring.connect(m, sp.o, wiring.flipped(self.superpixels))
        wiring.connect(m, self.master.axi, wiring.flipped(self.axi))
        m.d.comb += [self.error.eq(self.master.error), self.resp.eq(self.master.resp),
                     self.master.clear.eq(self.clear)]
        return m
