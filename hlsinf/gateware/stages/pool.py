"""Stage ``pool``: 2x2, stride-2 max or average pooling of requantised pixels.

Pixels arrive row-major, one per cycle. Within a row, each even column is kept in a
register until its odd neighbour arrives; the pair is then reduced (max, or sum with one
extra bit). On an even row the pair result goes into a line buffer of ``cols // 2``
entries; on the following odd row it is read back and combined with that row's pair,
giving one output per 2x2 block: ``max`` of the four, or ``(a + b + c + d + 2) >> 2``.
An odd last column or row is consumed and never paired, so it drops out by itself.
Mode 0 passes every pixel through.

The line buffer is read on the even column of an odd row (a synchronous read, as block
RAM wants), so its data is ready when the odd column arrives. A 2-entry FIFO in front
makes ``i.ready`` a register; the two pipeline registers move on a global stall.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE
from hlsinf.gateware.lib.streams import act_shape, fifo_on_stream, pixel_layout, pixel_signature

__all__ = ["Pool", "pool_params_layout"]


def pool_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Pool`, constant while a call runs."""
    return data.StructLayout({
        "rows": unsigned((cfg.max_padded_rows - 2).bit_length()),   # rows of the conv output frame
        "cols": unsigned((cfg.max_padded_cols - 2).bit_length()),   # columns of the conv output frame
        "mode": unsigned(2),                                          # 0 none, 1 max, 2 average
    })


class Pool(wiring.Component):
    """Pooling stage: one pixel consumed per cycle, ``(rows//2) x (cols//2)`` out per frame.

    Parameters
    ----------
    cfg : KernelConfig

    Members
    -------
    params : In(pool_params_layout(cfg))
        ``rows``, ``cols`` of the convolution output frame and ``mode`` (0 none, 1 max,
        2 average). Modes not built into ``cfg`` behave as mode 0.
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))
    """

    #: Cycles from a pixel offered on ``i`` (unstalled) to its output taken from ``o``,
    #: counted by ``tests/streams.collect``: input FIFO, pair register, output register.
    LATENCY = 3

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.act_shape = act_shape(cfg)
        self.params_layout = pool_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()

        # A pair result: the larger of two pixels, or their sum (one bit wider).
        pair_shape = (signed if cfg.act_signed else unsigned)(cfg.act_bits + 1)
        pair_layout = data.ArrayLayout(pair_shape, cpo)

        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        pixel = pixels.payload

        # Modes not built in fall back to pass-through.
        mode = Signal(2)
        with m.Switch(self.params.mode):
            if cfg.with_maxpool:
                with m.Case(POOL_MAX):
                    m.d.comb += mode.eq(POOL_MAX)
            if cfg.with_avgpool:
                with m.Case(POOL_AVG):
                    m.d.comb += mode.eq(POOL_AVG)
            with m.Default():
                m.d.comb += mode.eq(POOL_NONE)

        advance = Signal()
        take = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            take.eq(advance & pixels.valid),
            pixels.ready.eq(take),
        ]

        # Position of the pixel being taken.
        row = Signal.like(self.params.rows)
        col = Signal.like(self.params.cols)
        with m.If(take):
            with m.If(col + 1 >= self.params.cols):
                m.d.sync += col.eq(0)
                with m.If(row + 1 >= self.params.rows):
                    m.d.sync += row.eq(0)
                with m.Else():
                    m.d.sync += row.eq(row + 1)
            with m.Else():
                m.d.sync += col.eq(col + 1)
        odd_row, odd_col = row[0], col[0]

        line_buffer = Memory(shape=pair_layout, depth=max(1, cfg.max_padded_cols // 2), init=[])
        m.submodules.line_buffer = line_buffer
        wr = line_buffer.write_port()
        rd = line_buffer.read_port()

        def reduce(a, b, mode_):
            """Pair reduction in pair_shape: max, or sum."""
            return Mux(mode_ == POOL_MAX, Mux(a > b, a, b), a + b)

        # Even column: keep the pixel; on an odd row, fetch the pair above it.
        left = Signal(pixel_layout(cfg, cpo))
        pair = Signal(pair_layout)
        for k in range(cpo):
            m.d.comb += pair[k].eq(reduce(left[k], pixel[k], mode))
        m.d.comb += [
            rd.addr.eq(col >> 1),
            rd.en.eq(take & odd_row & ~odd_col),
            wr.addr.eq(col >> 1),
            wr.data.eq(pair),
            wr.en.eq(take & ~odd_row & odd_col & (mode != POOL_NONE)),
        ]
        with m.If(take & ~odd_col):
            m.d.sync += left.eq(pixel)

        # Register 1: the pixel (mode 0) or the odd row's pair, and whether it is emitted.
        held_valid = Signal()
        held = Signal(pair_layout)
        held_mode = Signal(2)
        with m.If(advance):
            m.d.sync += [
                held_valid.eq(take & ((mode == POOL_NONE) | (odd_row & odd_col))),
                held_mode.eq(mode),
            ]
            with m.If(mode == POOL_NONE):
                m.d.sync += [held[k].eq(pixel[k]) for k in range(cpo)]
            with m.Else():
                m.d.sync += held.eq(pair)

        # Register 2 (output): combine with the line buffer's pair from the row above.
        above = pair_layout(rd.data)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(held_valid)
            for k in range(cpo):
                with m.Switch(held_mode):
                    with m.Case(POOL_MAX):
                        m.d.sync += self.o.payload[k].eq(Mux(held[k] > above[k], held[k], above[k]))
                    with m.Case(POOL_AVG):
                        m.d.sync += self.o.payload[k].eq((held[k] + above[k] + 2) >> 2)
                    with m.Default():
                        m.d.sync += self.o.payload[k].eq(held[k])

        return m
