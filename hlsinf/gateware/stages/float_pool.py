"""Stage ``pool`` of the fp32 kernel: 2x2 stride-2 max or average pooling of binary32 pixels.

Exactly ``reference_float.pool2x2``: max is the larger by ``reference_float.max_key`` of
``(y00, y01)``, then of ``(y10, y11)``, then of the two (a compare of 32-bit keys, no
float unit); average is ``((y00 + y01) + (y10 + y11)) * 0.25`` with every step rounded
(:class:`~hlsinf.gateware.lib.float32.FAdd`, :class:`~hlsinf.gateware.lib.float32.FMul`).

The frame walk is that of the integer :class:`~hlsinf.gateware.stages.pool.Pool`: an even
column waits in a register for its odd neighbour, the pair is reduced, an even row's pair
goes to a line buffer of ``cols // 2`` entries and the odd row's pair is combined with it.
Because a float sum takes ``FAdd.latency`` cycles, the reductions are a pipeline that moves
on a global stall (every register, and every unit's ``en``, loads when the output register
is free):

========================  ==============================================================
registers                 hold
========================  ==============================================================
1                         the pair (left pixel, this pixel) and the pixel's tags
2 .. 1 + A                ``FAdd`` of the pair; beside it the max (or, in mode 0, the
                          pixel itself) and the tags, delayed
2 + A                     the pair result and the line buffer's pair from the row above
3 + A .. 2 + 2A           ``FAdd`` of the two pairs; beside it their max, delayed
3 + 2A .. 2 + 2A + M      ``FMul`` by 0.25; beside it the max, delayed
output                    the mode's result
========================  ==============================================================

(``A = FAdd.latency``, ``M = FMul.latency``.) An even row's pair is written to the line
buffer as it leaves register 1 + A; the odd row's read is issued one register earlier (a
synchronous read, as block RAM wants). Items taken on different cycles occupy different
registers, so the write of ``(2r, 2c+1)`` happens at least two loads before the read for
``(2r+1, 2c+1)``. Mode 0 passes every pixel through the same registers.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd, FMul
from hlsinf.gateware.lib.streams import fifo_on_stream, pixel_signature
from hlsinf.gateware.stages.float_relu import float_key
from hlsinf.gateware.stages.pool import pool_params_layout
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE

__all__ = ["FloatPool"]

_QUARTER = 0x3E800000      # binary32 0.25


class FloatPool(wiring.Component):
    """fp32 pooling stage: one pixel consumed per cycle, ``(rows//2) x (cols//2)`` out per frame.

    Parameters
    ----------
    cfg : KernelConfig
        An fp32 config; modes not built into it (``with_maxpool``, ``with_avgpool``) behave
        as mode 0.

    Members
    -------
    params : In(pool_params_layout(cfg))
        ``rows``, ``cols`` of the convolution output frame and ``mode`` (0 none, 1 max,
        2 average), as for :class:`~hlsinf.gateware.stages.pool.Pool`.
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from a pixel offered on ``i`` (unstalled) to its output taken from
    ``o``: the input FIFO and the registers of the module docstring.
    """

    def __init__(self, cfg: KernelConfig):
        if not cfg.is_float:
            raise ValueError(f"FloatPool: cfg.number_format = {cfg.number_format!r}; it is the fp32 stage "
                             f"(use stages.pool.Pool)")
        self.cfg = cfg
        self.params_layout = pool_params_layout(cfg)
        sub = cfg.fp32_subnormals
        self.add_latency = FAdd.LATENCY
        self.mul_latency = FMul.LATENCY if sub else FMul.LATENCY_FTZ
        self.latency = 1 + 1 + self.add_latency + 1 + self.add_latency + self.mul_latency + 1
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        sub = cfg.fp32_subnormals
        m = Module()
        lanes = data.ArrayLayout(32, cpo)
        tags = data.StructLayout({"valid": 1, "emit": 1, "mode": 2, "odd_row": 1,
                                  "addr": unsigned(max(1, (cfg.max_padded_cols // 2 - 1).bit_length()))})

        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        pixel = Signal(lanes)
        m.d.comb += [pixel[k].eq(Value.cast(pixels.payload[k])[:32]) for k in range(cpo)]

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
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), take.eq(advance & pixels.valid),
                     pixels.ready.eq(take)]

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

        left = Signal(lanes)
        with m.If(take & ~odd_col):
            m.d.sync += left.eq(pixel)

        def reg(value, name, shape):
            r = Signal(shape, name=name)
            with m.If(advance):
                m.d.sync += r.eq(value)
            return r

        def delay(value, name, shape, n):
            chain = [value]
            for k in range(n):
                chain.append(reg(chain[-1], f"{name}{k}", shape))
            return chain

        def larger(a, b):
            return Mux(float_key(b) > float_key(a), b, a)

        # 1: the pair and the tags. In mode 0 every pixel is emitted, else one per 2x2 block.
        t1_in = Signal(tags)
        m.d.comb += [t1_in.valid.eq(take), t1_in.mode.eq(mode), t1_in.odd_row.eq(odd_row),
                     t1_in.addr.eq(col >> 1),
                     t1_in.emit.eq(take & ((mode == POOL_NONE) | (odd_row & odd_col))),
                     # an even row's pair is written, an odd row's combined: only at odd columns
                     ]
        pair_ok = Signal()
        m.d.comb += pair_ok.eq(take & odd_col & (mode != POOL_NONE))
        t1 = reg(t1_in, "t1", tags)
        pair1 = reg(pair_ok, "pair1", 1)
        a1, b1 = reg(left, "a1", lanes), reg(pixel, "b1", lanes)

        # 2 .. 1 + A: the pair's sum; its max (or the pixel) and the tags delayed alongside.
        A = self.add_latency
        v1 = Signal(lanes)
        for k in range(cpo):
            m.d.comb += v1[k].eq(Mux(t1.mode == POOL_NONE, b1[k], larger(a1[k], b1[k])))
        tags_a = delay(t1, "ta", tags, A)
        pair_a = delay(pair1, "pa", 1, A)
        v_a = delay(v1, "va", lanes, A)
        sums1 = []
        for k in range(cpo):
            add = m.submodules[f"pair_add{k}"] = FAdd(subnormals=sub)
            m.d.comb += [add.a.eq(a1[k]), add.b.eq(b1[k]), add.en.eq(advance), add.i_valid.eq(0)]
            sums1.append(add.o)
        tA, pA, vA = tags_a[-1], pair_a[-1], v_a[-1]
        pair_result = Signal(lanes)
        for k in range(cpo):
            m.d.comb += pair_result[k].eq(Mux(tA.mode == POOL_AVG, sums1[k], vA[k]))

        # The line buffer: even rows write their pairs as they leave register 1 + A; odd
        # rows read the pair above one register earlier.
        line_buffer = Memory(shape=lanes, depth=max(1, cfg.max_padded_cols // 2), init=[])
        m.submodules.line_buffer = line_buffer
        wr = line_buffer.write_port()
        rd = line_buffer.read_port()
        t_before, p_before = tags_a[-2], pair_a[-2]
        m.d.comb += [
            rd.addr.eq(t_before.addr),
            rd.en.eq(advance & p_before & t_before.odd_row),
            wr.addr.eq(tA.addr),
            wr.data.eq(pair_result),
            wr.en.eq(advance & pA & ~tA.odd_row),
        ]

        # 2 + A: the odd row's pair (or the passed pixel) and the pair above it.
        t2 = reg(tA, "t2", tags)
        held = reg(pair_result, "held", lanes)
        above = reg(rd.data, "above", lanes)

        # 3 + A .. 2 + 2A + M: (above + held) * 0.25; the max of the two (or the pixel) delayed.
        v2 = Signal(lanes)
        for k in range(cpo):
            m.d.comb += v2[k].eq(Mux(t2.mode == POOL_MAX, larger(above[k], held[k]), held[k]))
        M = self.mul_latency
        tags_b = delay(t2, "tb", tags, A + M)
        v_b = delay(v2, "vb", lanes, A + M)
        avg = []
        for k in range(cpo):
            add = m.submodules[f"quad_add{k}"] = FAdd(subnormals=sub)
            mul = m.submodules[f"quarter{k}"] = FMul(subnormals=sub)
            m.d.comb += [add.a.eq(above[k]), add.b.eq(held[k]), add.en.eq(advance), add.i_valid.eq(0),
                         mul.a.eq(add.o), mul.b.eq(Const(_QUARTER, 32)), mul.en.eq(advance), mul.i_valid.eq(0)]
            avg.append(mul.o)
        tB, vB = tags_b[-1], v_b[-1]

        # Output register.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(tB.valid & tB.emit)
            for k in range(cpo):
                m.d.sync += self.o.payload[k].eq(Mux(tB.mode == POOL_AVG, avg[k], vB[k]))
        return m
