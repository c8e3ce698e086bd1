"""Stage ``relu``: requantise the accumulators to activations.

``y = clip((acc * M + 2**(s-1)) >> s, lo, hi)`` per lane, rounding half up and saturating,
never wrapping (``reference.requantize``). ``M`` is the frame's per-output-channel
multiplier when ``use_mult`` is set, else 1; ReLU raises ``lo`` to 0.

The arithmetic is a pipeline of short steps so that no path between registers is longer
than a multiplier or a carry chain:

====  ==========================================================================
step  register holds
====  ==========================================================================
1     accumulator and multiplier (operand registers of the DSP)
2     product ``acc * M``
3     product again (the DSP's output register; lets synthesis retime into it),
      and the rounding constant decoded from ``s``
4     product plus the rounding constant ``2**(s-1)``
5     coarse arithmetic shift by ``8 * (s // 8)`` (a 6:1 mux per bit)
6     fine arithmetic shift by ``s % 8`` (an 8:1 mux per bit)
7     value saturated to ``act_bits + 2`` bits (an all-ones/all-zeros test of the top bits)
8     value clipped to ``[lo, hi]``: the output register
====  ==========================================================================

A 2-entry FIFO in front of the pipeline makes ``i.ready`` a register, so the ready
path of the kernel does not chain through every stage; the whole pipeline moves
whenever its output register is empty or taken (a global stall).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import KernelConfig
from .shapes import act_shape

__all__ = ["Relu", "relu_params_layout"]


def relu_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Relu`, constant while a call runs."""
    return data.StructLayout({
        "frame_pixels": unsigned(max(1, cfg.max_frame_pixels.bit_length())),
        "shift": unsigned(max(1, cfg.max_shift.bit_length())),
        # Signed and one bit wider than an activation, so both uint8 and int8 bounds fit.
        "clip_lo": signed(cfg.act_bits + 1),
        "clip_hi": signed(cfg.act_bits + 1),
        "relu": 1,
        "use_mult": 1,
    })


class Relu(wiring.Component):
    """Requantisation stage: accumulators in, activations out, one item per cycle.

    Parameters
    ----------
    cfg : KernelConfig

    Members
    -------
    params : In(relu_params_layout(cfg))
        ``frame_pixels`` (accumulators per frame), ``shift``, ``clip_lo``/``clip_hi``,
        ``relu`` (raise ``clip_lo`` to 0), ``use_mult``. Read when an item enters the
        pipeline and carried with it, so they only need to hold while items are entering.
    i : In(stream.Signature(ArrayLayout(signed(acc_bits), CPO)))
        Accumulators.
    mult : In(stream.Signature(ArrayLayout(unsigned(mult_bits), CPO)))
        Only with ``cfg.with_multiplier``: one item per frame when ``use_mult``, taken
        together with the frame's first accumulator; not read otherwise.
    o : Out(stream.Signature(ArrayLayout(act, CPO)))
        Activations.
    """

    #: Cycles from an accumulator entering the pipeline to its result in the output register.
    PIPELINE_STEPS = 8
    #: Cycles from an item offered on ``i`` (unstalled) to its result taken from ``o``,
    #: counted by ``tests/streams.collect``: the input FIFO plus the pipeline.
    LATENCY = PIPELINE_STEPS + 1

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.act_shape = act_shape(cfg)
        self.params_layout = relu_params_layout(cfg)
        members = {
            "params": In(self.params_layout),
            "i": In(stream.Signature(data.ArrayLayout(signed(cfg.acc_bits), cfg.cpo))),
        }
        if cfg.with_multiplier:
            members["mult"] = In(stream.Signature(data.ArrayLayout(unsigned(cfg.mult_bits), cfg.cpo)))
        members["o"] = Out(stream.Signature(data.ArrayLayout(self.act_shape, cfg.cpo)))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()

        mult_bits = cfg.mult_bits if cfg.with_multiplier else 1
        # Signed acc x unsigned M is exact in acc_bits + mult_bits + 1 bits; max_shift + 2
        # bits also hold the rounding constant 2**(s-1), so the rounding add never wraps.
        prod_bits = max(cfg.acc_bits + mult_bits + 1, cfg.max_shift + 2)
        narrow_bits = cfg.act_bits + 2                    # holds every clip bound and one more
        assert prod_bits >= narrow_bits
        acc_layout = data.ArrayLayout(signed(cfg.acc_bits), cpo)
        mult_layout = data.ArrayLayout(unsigned(mult_bits), cpo)
        wide_layout = data.ArrayLayout(signed(prod_bits), cpo)
        narrow_layout = data.ArrayLayout(signed(narrow_bits), cpo)
        shift_shape = self.params_layout.members["shift"]
        bound_shape = self.params_layout.members["clip_lo"]

        # Input buffers: registered ready towards the producers.
        m.submodules.acc_fifo = acc_fifo = fifo.SyncFIFO(width=acc_layout.size, depth=2)
        m.d.comb += [
            acc_fifo.w_data.eq(self.i.payload),
            acc_fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(acc_fifo.w_rdy),
        ]
        acc_in = acc_layout(acc_fifo.r_data)
        if cfg.with_multiplier:
            m.submodules.mult_fifo = mult_fifo = fifo.SyncFIFO(width=mult_layout.size, depth=2)
            m.d.comb += [
                mult_fifo.w_data.eq(self.mult.payload),
                mult_fifo.w_en.eq(self.mult.valid),
                self.mult.ready.eq(mult_fifo.w_rdy),
            ]
            mult_in = mult_layout(mult_fifo.r_data)

        # Global stall: every pipeline register moves when the output register is free.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Position inside the frame, counted as accumulators enter the pipeline.
        pixel = Signal.like(self.params.frame_pixels)
        first = Signal()
        m.d.comb += first.eq(pixel == 0)
        if cfg.with_multiplier:
            need_mult = Signal()
            m.d.comb += need_mult.eq(self.params.use_mult & first)
            mult_ok = ~need_mult | mult_fifo.r_rdy
        else:
            mult_ok = Const(1)
        take = Signal()
        m.d.comb += take.eq(advance & acc_fifo.r_rdy & mult_ok)
        m.d.comb += acc_fifo.r_en.eq(take)
        if cfg.with_multiplier:
            m.d.comb += mult_fifo.r_en.eq(take & need_mult)
        with m.If(take):
            with m.If(pixel + 1 >= self.params.frame_pixels):
                m.d.sync += pixel.eq(0)
            with m.Else():
                m.d.sync += pixel.eq(pixel + 1)

        def step(name, layout):
            """One pipeline register: valid bit, lanes, and the per-item control it carries."""
            return (Signal(name=f"{name}_valid"), Signal(layout, name=f"{name}_lanes"),
                    Signal(shift_shape, name=f"{name}_shift"),
                    Signal(bound_shape, name=f"{name}_lo"), Signal(bound_shape, name=f"{name}_hi"))

        def move(dst, src_valid, src_ctl):
            """On advance, dst takes src's valid bit and control; the caller sets the lanes."""
            m.d.sync += dst[0].eq(src_valid)
            for d, s in zip(dst[2:], src_ctl):
                m.d.sync += d.eq(s)

        # 1: operands. M is the frame's multiplier (latched at its first pixel) or 1.
        s1 = step("s1", acc_layout)
        m1 = Signal(mult_layout)
        lo_in = Signal(bound_shape)
        if cfg.with_relu:
            m.d.comb += lo_in.eq(Mux(self.params.relu & (self.params.clip_lo < 0), 0, self.params.clip_lo))
        else:
            m.d.comb += lo_in.eq(self.params.clip_lo)
        with m.If(advance):
            move(s1, take, (self.params.shift, lo_in, self.params.clip_hi))
            m.d.sync += s1[1].eq(acc_in)
            if cfg.with_multiplier:
                with m.If(take & need_mult):
                    m.d.sync += m1.eq(mult_in)
                with m.Elif(take & first):
                    m.d.sync += [m1[k].eq(1) for k in range(cpo)]
            else:
                m.d.sync += [m1[k].eq(1) for k in range(cpo)]

        # 2, 3: product, then the same product one register later.
        s2 = step("s2", wide_layout)
        s3 = step("s3", wide_layout)
        rounding = Signal(unsigned(prod_bits - 1))
        with m.If(advance):
            move(s2, s1[0], s1[2:])
            for k in range(cpo):
                if cfg.with_multiplier:
                    m.d.sync += s2[1][k].eq(s1[1][k] * m1[k])
                else:
                    m.d.sync += s2[1][k].eq(s1[1][k])
            move(s3, s2[0], s2[2:])
            m.d.sync += s3[1].eq(s2[1])
            # The rounding constant 2**(s-1) (0 for s = 0), decoded here so that step 4
            # is a bare adder.
            m.d.sync += rounding.eq((Const(1, prod_bits) << s2[2])[1:])

        # 4: rounding add. |product| < 2**(prod_bits-2) and 2**(s-1) <= 2**(prod_bits-3):
        # the sum fits.
        s4 = step("s4", wide_layout)
        with m.If(advance):
            move(s4, s3[0], s3[2:])
            for k in range(cpo):
                m.d.sync += s4[1][k].eq(s3[1][k] + rounding)

        # 5, 6: the variable arithmetic shift, split into bytes then bits.
        s5 = step("s5", wide_layout)
        s6 = step("s6", wide_layout)
        coarse_steps = cfg.max_shift // 8 + 1
        with m.If(advance):
            move(s5, s4[0], s4[2:])
            for k in range(cpo):
                with m.Switch(s4[2] >> 3):
                    for c in range(coarse_steps):
                        with m.Case(c):
                            m.d.sync += s5[1][k].eq(s4[1][k] >> (8 * c))
            move(s6, s5[0], s5[2:])
            for k in range(cpo):
                with m.Switch(s5[2] & 7):
                    for f in range(8):
                        with m.Case(f):
                            m.d.sync += s6[1][k].eq(s5[1][k] >> f)

        # 7: saturate to narrow_bits; every clip bound lies inside that range, so the
        # clip below gives the same result as on the full value.
        s7 = step("s7", narrow_layout)
        with m.If(advance):
            move(s7, s6[0], s6[2:])
            for k in range(cpo):
                value = s6[1][k]
                top = value[narrow_bits - 1:]                      # must all equal the sign
                fits = (top == 0) | (top == (1 << len(top)) - 1)
                nmax = (1 << (narrow_bits - 1)) - 1
                nmin = -(1 << (narrow_bits - 1))
                m.d.sync += s7[1][k].eq(Mux(fits, value[:narrow_bits].as_signed(),
                                            Mux(value[-1], nmin, nmax)))

        # 8: clip into the output register.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(s7[0])
            for k in range(cpo):
                value, lo, hi = s7[1][k], s7[3], s7[4]
                m.d.sync += self.o.payload[k].eq(Mux(value < lo, lo, Mux(value > hi, hi, value)))

        return m
