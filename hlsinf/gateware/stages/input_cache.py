"""On-chip copy of a call's input tile, replayed for every output group after the first.

A call streams the same GI input frames once per output group. When the whole tile (GI
frames of ``rows x W`` pixels) fits in :class:`InputCache`, the sequencer reads it from
memory only for the first output group; the cache passes those pixels on while writing them
into a ``Memory``, then replays them ``passes - 1`` times. Memory traffic on ``gmem_in``
drops by the number of output groups, and the stages downstream see the same stream.

Replay reads run a few items ahead into a small FIFO, so the output carries one pixel per
cycle under any ``ready`` pattern although the memory's read port has a cycle of latency.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout, pixel_signature

__all__ = ["InputCache", "input_cache_params_layout"]

#: Replay reads in flight plus items waiting: enough for one item per cycle.
READ_AHEAD = 4


def input_cache_params_layout(pixels: int) -> data.StructLayout:
    return data.StructLayout({
        "enable": 1,                               # this call's tile fits: keep and replay it
        "tile_pixels": unsigned(bits_for(pixels)), # pixels of one pass (GI frames), >= 1
        "passes": unsigned(32),                    # passes of the tile (output groups), >= 1
    })


class InputCache(wiring.Component):
    """Pass-through of input pixels that keeps and replays the tile of a call.

    Parameters
    ----------
    cfg : KernelConfig
    pixels : int
        Capacity in pixels of CPI lanes (>= 1).

    Members
    -------
    params : In(input_cache_params_layout(pixels))
        Constant while a call runs. With ``enable`` low the cache is a plain wire.
    i : In(pixel_signature(cfg, cfg.cpi))
        Pixels from memory: the first pass only when ``enable``.
    o : Out(pixel_signature(cfg, cfg.cpi))
        ``passes`` copies of the tile when ``enable``, else ``i``.
    """

    def __init__(self, cfg: KernelConfig, pixels: int):
        if not (isinstance(pixels, int) and pixels >= 1):
            raise ValueError(f"InputCache pixels = {pixels!r} is out of range: allowed >= 1")
        self.cfg, self.pixels = cfg, pixels
        self.pixel_layout = pixel_layout(cfg, cfg.cpi)
        super().__init__({
            "params": In(input_cache_params_layout(pixels)),
            "i": In(pixel_signature(cfg, cfg.cpi)),
            "o": Out(pixel_signature(cfg, cfg.cpi)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.store = store = Memory(shape=self.pixel_layout, depth=self.pixels, init=[])
        write = store.write_port()
        read = store.read_port(domain="sync")
        # Wired by hand, not to streams: it is written by the memory's read port, whose room
        # is reserved from ``level`` (a read port has no ready), and it drives ``o`` only in
        # REPLAY (in FILL ``o`` is ``i``).
        m.submodules.ahead = ahead = fifo.SyncFIFOBuffered(width=self.pixel_layout.size, depth=READ_AHEAD)

        position = Signal(range(self.pixels + 1))   # pixel of the pass on the output
        passes_left = Signal(32)                     # replay passes still to output
        read_addr = Signal(range(self.pixels))
        read_passes = Signal(32)                     # replay passes still to read
        read_pending = Signal()                      # a read was issued last cycle

        with m.FSM(name="cache"):
            with m.State("FILL"):
                m.d.comb += [
                    self.o.valid.eq(self.i.valid),
                    self.o.payload.eq(self.i.payload),
                    self.i.ready.eq(self.o.ready),
                ]
                with m.If(p.enable & self.i.valid & self.o.ready):
                    m.d.comb += [write.addr.eq(position), write.data.eq(self.i.payload), write.en.eq(1)]
                    with m.If(position + 1 == p.tile_pixels):
                        m.d.sync += position.eq(0)
                        with m.If(p.passes > 1):
                            m.d.sync += [passes_left.eq(p.passes - 1), read_passes.eq(p.passes - 1),
                                         read_addr.eq(0)]
                            m.next = "REPLAY"
                    with m.Else():
                        m.d.sync += position.eq(position + 1)
            with m.State("REPLAY"):
                # Reads: keep the FIFO topped up, counting the read whose data is on its way.
                room = ahead.level + read_pending < READ_AHEAD
                issue = (read_passes != 0) & room
                m.d.comb += [read.addr.eq(read_addr), read.en.eq(issue)]
                with m.If(issue):
                    with m.If(read_addr + 1 == p.tile_pixels):
                        m.d.sync += [read_addr.eq(0), read_passes.eq(read_passes - 1)]
                    with m.Else():
                        m.d.sync += read_addr.eq(read_addr + 1)
                # Outputs.
                m.d.comb += [
                    self.o.valid.eq(ahead.r_rdy),
                    self.o.payload.eq(ahead.r_data),
                    ahead.r_en.eq(self.o.ready),
                ]
                with m.If(self.o.valid & self.o.ready):
                    with m.If(position + 1 == p.tile_pixels):
                        m.d.sync += [position.eq(0), passes_left.eq(passes_left - 1)]
                        with m.If(passes_left == 1):
                            m.next = "FILL"
                    with m.Else():
                        m.d.sync += position.eq(position + 1)
                m.d.sync += read_pending.eq(issue)
        m.d.comb += [ahead.w_data.eq(read.data), ahead.w_en.eq(read_pending)]
        return m
