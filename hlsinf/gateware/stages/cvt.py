"""Stage ``cvt``: turn a stream of padded pixels into a stream of 3x3 windows.

A line buffer remembers the two rows above the incoming pixel: one ``Memory`` word per
column holds the pixels of rows ``r-2`` and ``r-1``, so every input pixel costs one read
and one write of the same address, and a 3x3 shift register of pixels slides along the
row. Window ``(oy, ox)`` is complete when padded pixel ``(oy*stride + 2, ox*stride + 2)``
has been shifted in.

Pipeline (each step advances only when the step after it can take its item, so the
memory read enable and the shift register stop together under a stall)::

    i ──► stage 1: pixel register + line-buffer read of its column
          ──► stage 2: the shift register itself, which is ``o.payload``; ``o.valid`` says
                       whether the window it holds is one to emit

The shift register doubles as the output register, so there is no separate copy of the
window. It may shift freely while it holds a window that is not emitted, and holds still
while an emitted window waits for ``o.ready``.

The memory needs no bypass: the word of column ``c`` is written when pixel ``(r, c)``
leaves stage 1 and read again when pixel ``(r+1, c)`` enters it, at least one row
(``cols >= 3`` pixels) later. Rows 0 and 1 of a frame read what the previous frame
left there; those values only reach windows that are not emitted, so frames follow each
other with no reset.

Parameters must be stable from one cycle before a call's first input pixel until its last
window has been emitted (the kernel latches them at ``ap_start``).
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import pixel_layout, pixel_signature, window_signature

__all__ = ["Cvt", "cvt_params_layout"]


def cvt_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Cvt`: padded frame size and stride (1 or 2).

    Any stride value other than 2 is taken as 1.
    """
    return data.StructLayout({
        "rows": unsigned(bits_for(cfg.max_padded_rows)),
        "cols": unsigned(bits_for(cfg.max_padded_cols)),
        "stride": unsigned(2),
    })


class Cvt(wiring.Component):
    """3x3 windows of ``rows x cols`` padded frames of CPI-lane pixels.

    Ports: ``params`` (:func:`cvt_params_layout`), ``i`` (padded pixels,
    ``pixel_signature(cfg, CPI)``), ``o`` (windows, ``window_signature(cfg)``;
    tap ``ky*3 + kx`` of lane ``c`` is ``padded[oy*stride + ky, ox*stride + kx, c]``).
    Latency: a window is on ``o`` two cycles after the pixel that completes it was taken.
    Resources: a ``cfg.max_padded_cols`` x ``2*CPI*act_bits`` line buffer, ``10*CPI``
    activation registers (stage-1 pixel and the 3x3 window).
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = cvt_params_layout(cfg)
        self.pixel_layout = pixel_layout(cfg, cfg.cpi)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpi)),
            "o": Out(window_signature(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        p = self.params
        col_width = bits_for(cfg.max_padded_cols - 1)
        row_width = bits_for(cfg.max_padded_rows - 1)

        # Line buffer: word c = (pixel of row r-2, pixel of row r-1) at column c.
        two_rows = data.ArrayLayout(self.pixel_layout, 2)
        m.submodules.line_buffer = line_buffer = Memory(shape=two_rows, depth=cfg.max_padded_cols, init=[])
        rd = line_buffer.read_port(transparent_for=())
        wr = line_buffer.write_port()

        # Registered bounds (see the module docstring about parameter stability).
        last_col = Signal(col_width)
        last_row = Signal(row_width)
        stride2 = Signal()
        armed = Signal()
        m.d.sync += [
            last_col.eq(p.cols - 1),
            last_row.eq(p.rows - 1),
            stride2.eq(p.stride == 2),
            armed.eq(1),
        ]

        # Position of the next input pixel.
        x = Signal(col_width)
        y = Signal(row_width)
        at_last_col = Signal()
        m.d.comb += at_last_col.eq(x == last_col)
        # It completes a window to emit: row and column >= 2, both on the stride grid.
        row_on_grid = Signal()
        col_on_grid = Signal()
        m.d.comb += [
            row_on_grid.eq((y[1:] != 0) & (~stride2 | ~y[0])),
            col_on_grid.eq((x[1:] != 0) & (~stride2 | ~x[0])),
        ]

        # Stage 1.
        s1_valid = Signal()
        s1_pixel = Signal(self.pixel_layout)
        s1_col = Signal(col_width)
        s1_emit = Signal()

        s1_advance = Signal()
        take = Signal()
        m.d.comb += [
            s1_advance.eq(s1_valid & (~self.o.valid | self.o.ready)),
            self.i.ready.eq(armed & (~s1_valid | s1_advance)),
            take.eq(self.i.valid & self.i.ready),
            rd.addr.eq(x),
            rd.en.eq(take),
        ]

        with m.If(take):
            m.d.sync += [
                s1_valid.eq(1),
                s1_pixel.eq(self.i.payload),
                s1_col.eq(x),
                s1_emit.eq(row_on_grid & col_on_grid),
            ]
            with m.If(at_last_col):
                m.d.sync += [x.eq(0), y.eq(Mux(y == last_row, 0, y + 1))]
            with m.Else():
                m.d.sync += x.eq(x + 1)
        with m.Elif(s1_advance):
            m.d.sync += s1_valid.eq(0)

        # Stage 2: shift the column (r-2, r-1, r) into the window; write (r-1, r) back.
        above = rd.data
        column = [above[0], above[1], s1_pixel]
        m.d.comb += [
            wr.addr.eq(s1_col),
            wr.data[0].eq(above[1]),
            wr.data[1].eq(s1_pixel),
            wr.en.eq(s1_advance),
        ]
        window = self.o.payload
        with m.If(s1_advance):
            m.d.sync += self.o.valid.eq(s1_emit)
            for lane in range(cfg.cpi):
                for ky in range(3):
                    taps = [window[lane][ky * 3 + kx] for kx in range(3)]
                    m.d.sync += [
                        taps[0].eq(taps[1]),
                        taps[1].eq(taps[2]),
                        taps[2].eq(column[ky][lane]),
                    ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        return m
