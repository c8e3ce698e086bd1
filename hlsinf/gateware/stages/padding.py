"""Stage ``padding``: surround each input frame with zero rows and columns.

The stage walks the padded frame row-major, one position per cycle when the output is free,
and takes an input pixel only at interior positions; border positions emit zeros without
touching the input. It holds no frame in memory: the only state is the position and two
flags saying whether it lies in an interior row and column.

Timing choices:

* Everything on the critical path is registered: the interior flags are updated
  incrementally from the position, and the bounds they are compared with
  (``cols + pad_left - 1`` and so on) are registered copies of sums of the parameters, so
  a cycle sees a counter, an equality comparator and a multiplexer, never an adder chain
  into a comparator. ``i.ready`` is ``(~o.valid | o.ready) & interior``.
* A frame begins only when its first input pixel is offered (``i.valid``), even if the
  frame starts with border rows. So a stage that has finished a call does not start the
  top border of the next one with the previous call's parameters; the parameters must
  be stable from one cycle before a call's first input pixel is offered until its last
  output has been emitted (the kernel latches them at ``ap_start``).
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.gateware.lib.streams import pixel_signature

__all__ = ["Padding", "padding_params_layout"]


def padding_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Padding`: the input frame size and the four paddings."""
    pad = unsigned(bits_for(MAX_PAD))
    return data.StructLayout({
        "rows": unsigned(bits_for(cfg.hmax)),
        "cols": unsigned(bits_for(cfg.wmax)),
        "pad_top": pad,
        "pad_bottom": pad,
        "pad_left": pad,
        "pad_right": pad,
    })


class Padding(wiring.Component):
    """Zero padding of ``rows x cols`` frames of CPI-lane pixels.

    Ports: ``params`` (:func:`padding_params_layout`, held constant during a call), ``i``
    (input pixels, ``pixel_signature(cfg, CPI)``), ``o`` (padded pixels, the same).
    Per frame, ``rows * cols`` pixels in, ``(rows + pad_top + pad_bottom) x (cols +
    pad_left + pad_right)`` out, row-major. Latency: an output position is visible on
    ``o`` the cycle after it is generated (one register).
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = padding_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpi)),
            "o": Out(pixel_signature(cfg, cfg.cpi)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        col_width = bits_for(self.cfg.max_padded_cols)
        row_width = bits_for(self.cfg.max_padded_rows)

        # Bounds derived from the parameters, registered so no adder feeds a comparator in
        # the same cycle. "enter" is the position just before the interior (only used
        # when the padding before is not zero), "leave" the last interior position.
        last_col = Signal(col_width)
        col_enter = Signal(col_width)
        col_leave = Signal(col_width)
        no_pad_left = Signal()
        last_row = Signal(row_width)
        row_enter = Signal(row_width)
        row_leave = Signal(row_width)
        no_pad_top = Signal()
        m.d.sync += [
            last_col.eq(p.cols + p.pad_left + p.pad_right - 1),
            col_enter.eq(p.pad_left - 1),
            col_leave.eq(p.cols + p.pad_left - 1),
            no_pad_left.eq(p.pad_left == 0),
            last_row.eq(p.rows + p.pad_top + p.pad_bottom - 1),
            row_enter.eq(p.pad_top - 1),
            row_leave.eq(p.rows + p.pad_top - 1),
            no_pad_top.eq(p.pad_top == 0),
        ]

        # The bounds are valid from the second cycle after reset on.
        armed = Signal()
        m.d.sync += armed.eq(1)

        x = Signal(col_width)
        y = Signal(row_width)
        col_in = Signal()      # x is an interior column
        row_in = Signal()      # y is an interior row
        started = Signal()     # at least one position of the current frame was emitted
        interior = Signal()
        m.d.comb += interior.eq(col_in & row_in)

        out_free = Signal()
        advance = Signal()
        m.d.comb += [
            out_free.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(out_free & armed & interior),
            advance.eq(out_free & armed & Mux(interior, self.i.valid, started | self.i.valid)),
        ]

        at_last_col = Signal()
        at_last_row = Signal()
        m.d.comb += [
            at_last_col.eq(x == last_col),
            at_last_row.eq(y == last_row),
        ]

        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.eq(Mux(interior, self.i.payload, 0)),
                started.eq(~(at_last_col & at_last_row)),
            ]
            with m.If(at_last_col):
                m.d.sync += [
                    x.eq(0),
                    col_in.eq(no_pad_left),
                ]
                with m.If(at_last_row):
                    m.d.sync += [y.eq(0), row_in.eq(no_pad_top)]
                with m.Else():
                    m.d.sync += [
                        y.eq(y + 1),
                        row_in.eq((~no_pad_top & (y == row_enter)) | (row_in & (y != row_leave))),
                    ]
            with m.Else():
                m.d.sync += [
                    x.eq(x + 1),
                    col_in.eq((~no_pad_left & (x == col_enter)) | (col_in & (x != col_leave))),
                ]
        with m.Else():
            with m.If(out_free):
                m.d.sync += self.o.valid.eq(0)
            # Waiting for a frame: follow the parameters, which may have changed since the
            # last frame ended (a new call).
            with m.If(~started):
                m.d.sync += [
                    col_in.eq(p.pad_left == 0),
                    row_in.eq(p.pad_top == 0),
                ]

        return m
