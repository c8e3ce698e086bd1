"""Stage ``window``: 3x3 windows of zero-padded frames, without spending cycles on the borders.

It replaces ``padding -> cvt``, which walks every *padded* pixel and so costs
``(rows + pt + pb) x (cols + pl + pr)`` cycles per frame. Here the padding is never
materialised: a **writer** stores the incoming (unpadded) pixels into a ring of four line
buffers, one row per slot, and a **reader** walks the output windows, reads a column of
three rows per cycle and substitutes zeros for taps outside the tile. The two sides are
decoupled by credits, so a frame costs ``max(rows x cols, windows)`` cycles and the bottom
border rows of one frame overlap with the first rows of the next being written.

::

    i ──► writer ──► 4 line-buffer slots (one Memory each, wmax pixels)
                         │  row credit G (rows written - rows the reader waits for),
                         │  column compare on the row being written (pixel-level),
                         │  free slots (rows released by the reader)
                         ▼
          reader F: walks (output row, input column); one read of all four slots
          reader D: picks the three tap rows (zeros outside the tile), forms the window
                    from two history columns and the new one ──► o (the output register)

Columns. Per output row the reader fetches each used input column ``j`` once; window
``(oy, ox)`` with padded column ``p = ox*stride + 2 = j + pad_left`` is emitted when column
``j`` arrives, from the history ``(H0, H1)`` (the two previous columns, masked to zero at
the row's first two columns) and the new column. Windows whose right column lies in the right padding
("trailing" windows, at most two per row) need no fetch: at the row's last column the two
newest columns are copied into a tail register ``T`` and the trailing windows are emitted
from it while the reader already fetches the next row's first columns (which never emit,
because a row's first windows need ``3 - pad_left`` columns). So a 'same' row costs
``cols`` cycles, not ``cols + 2``.

Rows. Output row ``oy`` uses input rows ``oy*stride - pad_top + (0, 1, 2)``; rows outside
``0 .. rows-1`` are zero. Each output row *enters* the rows it needs for the first time
(its credit demand) and *releases*, after its last fetch, the rows the next output row does
not use; the writer may start a row only in a free slot. A last input row that no window
uses (stride 2) is taken and dropped without a slot.

Timing choices: every comparator reads registers (bounds derived from the parameters are
registered, column/row "last" flags are kept as registers), the row credit is a 4-bit
counter and the pixel-level check one comparator of the reader's column with the writer's.

Parameter rule (as for ``padding``): ``params`` stable from one cycle before a call's first
input pixel is offered until the call has drained, i.e. its last input pixel *and* its last
window have been taken. Then nothing of the call is left inside (the reader stops at the
last used column), and the next call's parameters may be applied on the following cycle.
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.padding import padding_params_layout
from hlsinf.gateware.lib.streams import pixel_layout, pixel_signature, window_layout, window_signature

__all__ = ["Window", "window_params_layout"]

#: Line-buffer slots: three rows for the windows being read, one for the row being written.
SLOTS = 4


def window_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Window`: the unpadded tile, the paddings, the stride.

    ``rows`` 1..hmax and ``cols`` 1..wmax are the *unpadded* tile; paddings 0..MAX_PAD; the
    padded tile must be at least 3x3. Any stride other than 2 acts as 1.
    """
    return data.StructLayout({**padding_params_layout(cfg).members, "stride": unsigned(2)})


def _popcount(bits):
    return sum((b.as_unsigned() for b in bits), Const(0, 2))


class Window(wiring.Component):
    """3x3 windows (stride 1 or 2) of zero-padded ``rows x cols`` frames of CPI-lane pixels.

    Ports: ``params`` (:func:`window_params_layout`), ``i`` (unpadded pixels, row-major,
    ``pixel_signature(cfg, CPI)``), ``o`` (windows, ``window_signature(cfg)``,
    tap ``ky*3 + kx`` of lane ``c`` is ``padded[oy*stride + ky, ox*stride + kx, c]``, as
    ``reference.windows(reference.pad(frame, ...), stride)``; the same stream as ``cvt``).
    Resources: four ``wmax x CPI*act_bits`` memories, ``21 * CPI`` activation registers
    (the output window, two history and two tail columns of three rows).
    """

    def __init__(self, cfg: KernelConfig):
        if not isinstance(cfg, KernelConfig):
            raise TypeError(f"Window(cfg): cfg must be a KernelConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        self.params_layout = window_params_layout(cfg)
        self.pixel_layout = pixel_layout(cfg, cfg.cpi)
        self.window_layout = window_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpi)),
            "o": Out(window_signature(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        p = self.params
        col_width = bits_for(cfg.wmax - 1)
        row_width = bits_for(cfg.hmax - 1)
        orow_width = bits_for(cfg.max_padded_rows)
        rsigned = signed(row_width + 3)            # input row of a tap: -2 .. hmax + 2

        # --- Line buffers ------------------------------------------------------------------
        rd_data = []
        wr_ports = []
        rd_ports = []
        for k in range(SLOTS):
            mem = Memory(shape=self.pixel_layout, depth=cfg.wmax, init=[])
            m.submodules[f"slot{k}"] = mem
            rd_ports.append(mem.read_port(transparent_for=()))
            wr_ports.append(mem.write_port())
            rd_data.append(rd_ports[-1].data)

        # --- Bounds derived from the parameters, registered (valid one cycle later) --------
        s2 = Signal()                 # stride 2
        stride = Signal(2)
        col_last_w_m1 = Signal(col_width)   # cols - 2 (the column before the last)
        one_col = Signal()                  # cols == 1
        row_last_w_m1 = Signal(row_width)   # rows - 2
        one_row = Signal()                  # rows == 1
        skip_last_row = Signal()            # stride 2 leaves the last input row unused
        col_last_r_m1 = Signal(col_width)   # last column the reader fetches, minus one
        one_col_r = Signal()                # the reader fetches a single column per row
        ho_last = Signal(orow_width)        # output rows - 1
        ho_last_m1 = Signal(orow_width)     # output rows - 2
        tail_mask = Signal(2)               # trailing windows per row (right padding)
        pl = Signal(2)
        row0_zero = Signal(3)               # taps of output row 0 outside the tile
        row0_enter = Signal(2, init=1)      # input rows output row 0 needs
        r0n_first = Signal(rsigned)         # input row of tap 0 of output row 1
        rows_m1 = Signal(rsigned)           # rows - 1
        rows_m2 = Signal(rsigned)           # rows - 2
        pt_neg = Signal(2)                  # -pad_top mod 4 (slot offset of output row 0)
        rows_used = Signal(2)               # rows the reader uses, mod 4 (slots per frame)
        armed = Signal()

        cols_pl = p.cols + p.pad_left
        rows_pt = p.rows + p.pad_top
        skip_row = (p.stride == 2) & (p.pad_bottom == 0) & ~rows_pt[0]
        skip_last_col = (p.stride == 2) & (p.pad_right == 0) & ~cols_pl[0]
        padded_rows = p.rows + p.pad_top + p.pad_bottom
        out_rows_m1 = Mux(p.stride == 2, (padded_rows - 3) >> 1, padded_rows - 3)
        m.d.sync += [
            s2.eq(p.stride == 2),
            stride.eq(Mux(p.stride == 2, 2, 1)),
            col_last_w_m1.eq(p.cols - 2),
            one_col.eq(p.cols == 1),
            row_last_w_m1.eq(p.rows - 2),
            one_row.eq(p.rows == 1),
            skip_last_row.eq(skip_row),
            rows_used.eq(p.rows - skip_row),
            col_last_r_m1.eq(p.cols - 2 - skip_last_col),
            one_col_r.eq(p.cols - skip_last_col == 1),
            ho_last.eq(out_rows_m1),
            ho_last_m1.eq(out_rows_m1 - 1),
            tail_mask[0].eq((p.pad_right >= 1) & (cols_pl >= 2) & ((p.stride != 2) | ~cols_pl[0])),
            tail_mask[1].eq((p.pad_right >= 2) & ((p.stride != 2) | cols_pl[0])),
            pl.eq(p.pad_left),
            r0n_first.eq(Mux(p.stride == 2, 2, 1) - p.pad_top),
            rows_m1.eq(p.rows - 1),
            rows_m2.eq(p.rows - 2),
            pt_neg.eq(-p.pad_top),
            armed.eq(1),
        ]
        for ky in range(3):
            m.d.sync += row0_zero[ky].eq((p.pad_top > ky) | (rows_pt <= ky))
        # At least one row, even for parameters no call uses (zeros after reset): a reader
        # waiting at a frame start never fetches before the writer has written something.
        enter0 = _popcount([(p.pad_top <= ky) & (rows_pt > ky) for ky in range(3)])
        m.d.sync += row0_enter.eq(Mux(enter0 == 0, 1, enter0))

        # --- Shared counters -----------------------------------------------------------------
        # Input rows completely written minus rows the reader has entered (asked for).
        credit = Signal(signed(4))
        # Slots the writer may still claim (4 minus claimed plus released).
        free = Signal(range(SLOTS + 1), init=SLOTS)

        # --- Writer --------------------------------------------------------------------------
        wx = Signal(col_width)
        wy = Signal(row_width)
        w_slot = Signal(2)
        w_mid = Signal()              # wx != 0
        w_at_start = Signal(init=1)   # at the first pixel of a frame
        w_col_last_r = Signal()       # registered "wx is the last column" (inside a frame)
        w_row_last_r = Signal()
        w_col_last = Signal()
        w_row_last = Signal()
        w_used = Signal()             # the current row is one the reader uses
        m.d.comb += [
            # At a frame start the flags follow the (possibly new) parameters.
            w_col_last.eq(Mux(w_at_start, one_col, w_col_last_r)),
            w_row_last.eq(Mux(w_at_start, one_row, w_row_last_r)),
            w_used.eq(~(skip_last_row & w_row_last)),
        ]
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(armed & (w_mid | ~w_used | (free != 0))),
            take.eq(self.i.valid & self.i.ready),
        ]
        claim = Signal()
        row_done = Signal()
        m.d.comb += [
            claim.eq(take & ~w_mid & w_used),
            row_done.eq(take & w_col_last & w_used),
        ]
        for k in range(SLOTS):
            m.d.comb += [
                wr_ports[k].addr.eq(wx),
                wr_ports[k].data.eq(self.i.payload),
                wr_ports[k].en.eq(take & w_used & (w_slot == k)),
            ]
        with m.If(take):
            m.d.sync += [w_at_start.eq(w_col_last & w_row_last), w_row_last_r.eq(w_row_last)]
            with m.If(w_col_last):
                m.d.sync += [wx.eq(0), w_mid.eq(0), w_col_last_r.eq(one_col)]
                with m.If(w_used):
                    m.d.sync += w_slot.eq(w_slot + 1)
                with m.If(w_row_last):
                    m.d.sync += [wy.eq(0), w_row_last_r.eq(one_row)]
                with m.Else():
                    m.d.sync += [wy.eq(wy + 1), w_row_last_r.eq(wy == row_last_w_m1)]
            with m.Else():
                m.d.sync += [wx.eq(wx + 1), w_mid.eq(1), w_col_last_r.eq(wx == col_last_w_m1)]

        # --- Reader, step F: position, credit check, read of all slots ----------------------
        j = Signal(col_width)
        col_first = Signal(init=1)    # j == 0
        col_second = Signal()         # j == 1
        col_last = Signal()
        pc = Signal(2)                # min(j + pad_left, 2)
        odd = Signal()                # (j + pad_left) odd
        oy = Signal(orow_width)
        row_last = Signal()
        frame_start = Signal(init=1)  # at (0, 0) of a frame, nothing fetched from it yet
        row_zero = Signal(3)          # taps of the current output row outside the tile
        need = Signal(2, init=1)      # rows this fetch needs for the first time (column 0 only)
        r0n = Signal(rsigned)         # input row of tap 0 of the next output row
        slot0 = Signal(2)             # slot of tap 0's row
        frame_base = Signal(2)        # slot of the current frame's row 0

        # Credit check. The newest row the fetch needs is complete (credit >= need), or it
        # is the row being written (credit == need - 1) and the writer is past column j.
        credit_ok = Signal()
        m.d.comb += credit_ok.eq((credit >= need) | ((credit == need - 1) & w_used & (j < wx)))

        # Step D registers.
        d_valid = Signal()
        d_emit = Signal()
        d_last = Signal()
        d_first = Signal()            # column 0: the window's left two columns are padding
        d_second = Signal()           # column 1: its left column is padding
        d_slot = [Signal(2, name=f"d_slot{ky}") for ky in range(3)]
        d_zero = Signal(3)

        # Tail: pending trailing windows of the last row (bit 0: (T0, T1, 0), bit 1: (T1, 0, 0)).
        tail = Signal(2)
        out_free = Signal()
        m.d.comb += out_free.eq(~self.o.valid | self.o.ready)
        tail_zero = Signal()
        tail_free = Signal()          # T may be overwritten this cycle
        m.d.comb += [
            tail_zero.eq(tail == 0),
            tail_free.eq(tail_zero | ((tail != 3) & out_free)),
        ]
        d_ok = Signal()
        d_advance = Signal()
        m.d.comb += [
            d_ok.eq(Mux(d_emit, tail_zero & out_free, ~d_last | tail_free)),
            d_advance.eq(d_valid & d_ok),
        ]

        fetch = Signal()
        m.d.comb += fetch.eq(armed & credit_ok & (~d_valid | d_ok))
        for port in rd_ports:
            m.d.comb += [port.addr.eq(j), port.en.eq(fetch)]

        emit_now = Signal()
        m.d.comb += emit_now.eq((pc == 2) & (~s2 | ~odd))

        # Rows released after the current output row's last fetch: the taps the next row
        # does not share (all of them after the frame's last row).
        valid = [~row_zero[ky] for ky in range(3)]
        release = Signal(2)
        m.d.comb += release.eq(Mux(row_last, _popcount(valid),
                                   Mux(s2, _popcount(valid[:2]), valid[0].as_unsigned())))
        # Next output row (same frame): taps r0n + (0, 1, 2).
        next_zero = Signal(3)
        m.d.comb += [
            next_zero[0].eq(r0n < 0),
            next_zero[1].eq(r0n >= rows_m1),
            next_zero[2].eq(r0n >= rows_m2),
        ]
        next_enter = Signal(2)
        m.d.comb += next_enter.eq(Mux(s2, _popcount([~next_zero[1], ~next_zero[2]]),
                                      (~next_zero[2]).as_unsigned()))

        def load_row0(slot_base):
            return [
                oy.eq(0),
                row_last.eq(ho_last == 0),
                row_zero.eq(row0_zero),
                need.eq(row0_enter),
                r0n.eq(r0n_first),
                slot0.eq(slot_base + pt_neg),
            ]

        def restart_columns():
            return [
                j.eq(0), col_first.eq(1), col_second.eq(0), col_last.eq(one_col_r),
                pc.eq(pl), odd.eq(pl[0]),
            ]

        m.d.sync += credit.eq(credit + row_done - Mux(fetch, need, 0))
        m.d.sync += free.eq(free - claim + Mux(fetch & col_last, release, 0))

        with m.If(fetch):
            m.d.sync += [
                d_emit.eq(emit_now),
                d_last.eq(col_last),
                d_first.eq(col_first),
                d_second.eq(col_second),
            ]
            m.d.sync += d_zero.eq(row_zero)
            for ky in range(3):
                m.d.sync += d_slot[ky].eq(slot0 + ky)
            with m.If(col_last):
                m.d.sync += restart_columns()
                with m.If(row_last):
                    m.d.sync += [frame_start.eq(1), frame_base.eq(frame_base + rows_used)]
                    m.d.sync += load_row0(frame_base + rows_used)
                with m.Else():
                    m.d.sync += [
                        frame_start.eq(0),
                        oy.eq(oy + 1),
                        row_last.eq(oy == ho_last_m1),
                        row_zero.eq(next_zero),
                        need.eq(next_enter),
                        r0n.eq(r0n + stride),
                        slot0.eq(slot0 + stride),
                    ]
            with m.Else():
                m.d.sync += [
                    frame_start.eq(0),
                    j.eq(j + 1), need.eq(0), col_last.eq(j == col_last_r_m1),
                    col_first.eq(0), col_second.eq(col_first),
                    pc.eq(Mux(pc == 2, 2, pc + 1)), odd.eq(~odd),
                ]
        with m.Elif(frame_start):
            # Waiting for a frame: follow the parameters (a new call may have started).
            m.d.sync += load_row0(frame_base)
            m.d.sync += restart_columns()

        with m.If(fetch):
            m.d.sync += d_valid.eq(1)
        with m.Elif(d_advance):
            m.d.sync += d_valid.eq(0)

        # --- Reader, step D: the column of three tap rows, the window -----------------------
        pixel = self.pixel_layout
        column = []
        for ky in range(3):
            tap = Signal(pixel, name=f"new_tap{ky}")
            m.d.comb += tap.as_value().eq(Mux(d_zero[ky], 0, Array(d.as_value() for d in rd_data)[d_slot[ky]]))
            column.append(tap)
        h0 = [Signal(pixel, name=f"h0_{ky}") for ky in range(3)]
        h1 = [Signal(pixel, name=f"h1_{ky}") for ky in range(3)]
        t0 = [Signal(pixel, name=f"t0_{ky}") for ky in range(3)]
        t1 = [Signal(pixel, name=f"t1_{ky}") for ky in range(3)]

        # The history keeps the previous row's columns; they are masked where used (a mux
        # input that is there anyway) rather than cleared (a gate on every history bit).
        with m.If(d_advance):
            for ky in range(3):
                m.d.sync += [h0[ky].eq(h1[ky]), h1[ky].eq(column[ky])]
            with m.If(d_last):
                for ky in range(3):
                    m.d.sync += [t0[ky].eq(Mux(d_first, 0, h1[ky].as_value())), t1[ky].eq(column[ky])]

        trail_emit = Signal()
        m.d.comb += trail_emit.eq(~tail_zero & out_free)
        with m.If(d_advance & d_last):
            m.d.sync += tail.eq(tail_mask)
        with m.Elif(trail_emit):
            m.d.sync += tail.eq(Mux(tail[0], tail & 0b10, 0))

        window = self.o.payload

        def put(columns, zero=(None, None, None)):
            stmts = []
            for lane in range(cfg.cpi):
                for ky in range(3):
                    for kx in range(3):
                        src = columns[kx]
                        value = 0 if src is None else src[ky][lane]
                        if zero[kx] is not None:
                            value = Mux(zero[kx], 0, value)
                        stmts.append(window[lane][ky * 3 + kx].eq(value))
            return stmts

        with m.If(d_advance & d_emit):
            m.d.sync += [self.o.valid.eq(1)] + put([h0, h1, column], zero=(d_first | d_second, d_first, None))
        with m.Elif(trail_emit):
            m.d.sync += self.o.valid.eq(1)
            with m.If(tail[0]):
                m.d.sync += put([t0, t1, None])
            with m.Else():
                m.d.sync += put([t1, None, None])
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        return m
