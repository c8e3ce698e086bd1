"""Stage ``relu``: requantise the accumulators to activations.

``y = clip((acc * M + 2**(s-1)) >> s, lo, hi)`` per lane, rounding half up and saturating
(``reference.requantize``); built with ``rounding='trunc'`` the rounding term is left out
(floor), built with ``overflow='wrap'`` the value keeps its low ``act_bits`` bits (as the
activation type) before the clip instead of saturating. ``M`` is the frame's per-output-channel
multiplier when ``use_mult`` is set, else 1; ReLU raises ``lo`` to 0.

The arithmetic is a pipeline of short steps so that no path between registers is longer
than one carry chain and the LUT that feeds it, or a few LUT levels. ``L`` is the depth of
the multiplier's adder tree, ``FabricMultiplier.levels(mult_bits)``: 4 for 16-bit
multipliers, 0 for a 1-bit one or without multipliers (``with_multiplier=False``; the
product is then the accumulator itself).

=========  ====================================================================
step       register holds
=========  ====================================================================
1          accumulator and multiplier (the multiplier's operands)
2 .. L+1   levels of the adder tree of ``acc * M`` (:class:`FabricMultiplier`:
           LUTs and carry chains, no DSP48E2: the DSP budget belongs to the MAC
           array)
L+2        ``2 * acc * M`` arithmetically shifted by ``8 * (s // 8)`` (up to a 6:1
           mux per bit)
L+3        ... and by ``s % 8`` (an 8:1 mux per bit): ``q = floor(2 * acc * M / 2**s)``
L+4        ``(q + 1) >> 1`` saturated to ``act_bits + 2`` bits (an increment of
           ``act_bits + 2`` bits beside an all-ones/all-zeros test of the top bits)
L+5        value clipped to ``[lo, hi]``: the output register
=========  ====================================================================

With ``rounding='trunc'`` step L+4 is ``q >> 1`` (floor); with ``overflow='wrap'`` it is the
low ``act_bits`` bits of the rounded value, taken from ``q``'s low ``act_bits + 1`` bits.

Rounding after the shift: ``floor((q + 1) / 2)`` is ``floor((x + 2**(s-1)) / 2**s)`` for
``x = acc * M`` and ``s >= 1``, and ``x`` for ``s = 0``, so the rounding add is a short
increment of ``q``'s low ``act_bits + 2`` bits rather than an adder as wide as the product.

A 2-entry FIFO in front of the pipeline makes ``i.ready`` a register, so the ready
path of the kernel does not chain through every stage; the whole pipeline moves
whenever its output register is empty or taken (a global stall).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.fabric_mul import FabricMultiplier
from hlsinf.gateware.lib.shift import halve, shift_bits, shift_bytes, wrap_to
from hlsinf.gateware.lib.streams import (acc_layout, acc_signature, act_shape, fifo_on_stream,
                                         frame_pixels_shape, mult_layout, mult_signature, pixel_signature)

__all__ = ["Relu", "relu_params_layout"]


def relu_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Relu`, constant while a call runs."""
    return data.StructLayout({
        "frame_pixels": frame_pixels_shape(cfg),
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
    i : In(acc_signature(cfg))
        Accumulators.
    mult : In(mult_signature(cfg))
        Only with ``cfg.with_multiplier``: one item per frame when ``use_mult``, taken
        together with the frame's first accumulator; not read otherwise.
    o : Out(pixel_signature(cfg, cfg.cpo))
        Activations.

    ``tree_levels`` is ``L``, the depth of the multipliers' adder trees (module docstring);
    ``pipeline_steps`` the number of cycles from an accumulator entering the pipeline to
    its result in the output register (``L + 5``), ``latency`` the number of cycles from an
    item offered on ``i`` (unstalled) to its result taken from ``o``, as
    ``tests/streams.collect`` counts them: the input FIFO plus the pipeline.
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.act_shape = act_shape(cfg)
        self.params_layout = relu_params_layout(cfg)
        members = {
            "params": In(self.params_layout),
            "i": In(acc_signature(cfg)),
        }
        if cfg.with_multiplier:
            members["mult"] = In(mult_signature(cfg))
        members["o"] = Out(pixel_signature(cfg, cfg.cpo))
        super().__init__(members)
        self.tree_levels = FabricMultiplier.levels(cfg.mult_bits) if cfg.with_multiplier else 0
        self.pipeline_steps = self.tree_levels + 5
        self.latency = self.pipeline_steps + 1

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()

        # Signed acc x unsigned M is exact in acc_bits + mult_bits bits; the shifts work on
        # twice the product, one bit more.
        mult_bits = cfg.mult_bits if cfg.with_multiplier else 0
        doubled_bits = cfg.acc_bits + mult_bits + 1
        narrow_bits = cfg.act_bits + 2                    # holds every clip bound and one more
        assert doubled_bits > narrow_bits
        wide_layout = data.ArrayLayout(signed(doubled_bits), cpo)
        narrow_layout = data.ArrayLayout(signed(narrow_bits), cpo)
        shift_shape = self.params_layout.members["shift"]
        bound_shape = self.params_layout.members["clip_lo"]

        # Input buffers: registered ready towards the producers.
        accs = fifo_on_stream(m, "acc_fifo", wiring.flipped(self.i), depth=2)
        acc_in = accs.payload
        if cfg.with_multiplier:
            mults = fifo_on_stream(m, "mult_fifo", wiring.flipped(self.mult), depth=2)
            mult_in = mults.payload

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
            mult_ok = ~need_mult | mults.valid
        else:
            mult_ok = Const(1)
        take = Signal()
        m.d.comb += take.eq(advance & accs.valid & mult_ok)
        m.d.comb += accs.ready.eq(take)
        if cfg.with_multiplier:
            m.d.comb += mults.ready.eq(take & need_mult)
        with m.If(take):
            with m.If(pixel + 1 >= self.params.frame_pixels):
                m.d.sync += pixel.eq(0)
            with m.Else():
                m.d.sync += pixel.eq(pixel + 1)

        def step(name, layout=None):
            """One pipeline register: valid bit, lanes (none if ``layout`` is None), and the
            per-item control it carries."""
            lanes = None if layout is None else Signal(layout, name=f"{name}_lanes")
            return (Signal(name=f"{name}_valid"), lanes,
                    Signal(shift_shape, name=f"{name}_shift"),
                    Signal(bound_shape, name=f"{name}_lo"), Signal(bound_shape, name=f"{name}_hi"))

        def move(dst, src_valid, src_ctl):
            """On advance, dst takes src's valid bit and control; the caller sets the lanes."""
            m.d.sync += dst[0].eq(src_valid)
            for d, s in zip(dst[2:], src_ctl):
                m.d.sync += d.eq(s)

        # 1: operands. M is the frame's multiplier (latched at its first pixel) or 1.
        s1 = step("s1", acc_layout(cfg))
        lo_in = Signal(bound_shape)
        if cfg.with_relu:
            m.d.comb += lo_in.eq(Mux(self.params.relu & (self.params.clip_lo < 0), 0, self.params.clip_lo))
        else:
            m.d.comb += lo_in.eq(self.params.clip_lo)
        with m.If(advance):
            move(s1, take, (self.params.shift, lo_in, self.params.clip_hi))
            m.d.sync += s1[1].eq(acc_in)
        if cfg.with_multiplier:
            m1 = Signal(mult_layout(cfg))
            with m.If(advance & take):
                with m.If(need_mult):
                    m.d.sync += m1.eq(mult_in)
                with m.Elif(first):
                    m.d.sync += [m1[k].eq(1) for k in range(cpo)]

        # 2 .. L+1: the multipliers' adder trees, fed by the operand registers; these steps
        # carry the control alongside.
        if cfg.with_multiplier:
            products = []
            for k in range(cpo):
                multiplier = FabricMultiplier(signed(cfg.acc_bits), unsigned(mult_bits))
                m.submodules[f"multiplier{k}"] = multiplier
                m.d.comb += [multiplier.a.eq(s1[1][k]), multiplier.b.eq(m1[k]), multiplier.en.eq(advance)]
                products.append(multiplier.p)
            assert multiplier.latency == self.tree_levels
        else:
            products = [s1[1][k] for k in range(cpo)]
        product_step = s1
        for level in range(1, self.tree_levels + 1):
            tree_step = step(f"tree{level}")
            with m.If(advance):
                move(tree_step, product_step[0], product_step[2:])
            product_step = tree_step

        # L+2, L+3: q = floor(2 * product / 2**s), the variable arithmetic shift split into
        # bytes then bits.
        coarse = step("coarse", wide_layout)
        fine = step("fine", wide_layout)
        with m.If(advance):
            move(coarse, product_step[0], product_step[2:])
            for k in range(cpo):
                doubled = Cat(Const(0, 1), products[k]).as_signed()
                shift_bytes(m, coarse[1][k], doubled, product_step[2], cfg.max_shift)
            move(fine, coarse[0], coarse[2:])
            for k in range(cpo):
                shift_bits(m, fine[1][k], coarse[1][k], coarse[2])

        # L+4: round, (q + 1) >> 1, and saturate to narrow_bits. Every clip bound lies in
        # [-2**(narrow_bits-2), 2**(narrow_bits-2)). When q fits narrow_bits, the rounded
        # value does too and is exact; when it does not, the rounded value is at least
        # 2**(narrow_bits-2) or at most -2**(narrow_bits-2): past every bound on the side of
        # its sign (or on the lowest bound), so nmax or nmin clip to the same result.
        saturated = step("saturated", narrow_layout)
        nmax = (1 << (narrow_bits - 1)) - 1
        nmin = -(1 << (narrow_bits - 1))
        with m.If(advance):
            move(saturated, fine[0], fine[2:])
            for k in range(cpo):
                q = fine[1][k]
                if cfg.overflow == "wrap":
                    # The low act_bits bits of the rounded value only depend on q's low
                    # act_bits + 1 bits: a short increment, no saturation.
                    low = q[:cfg.act_bits + 1]
                    value = halve(Cat(low, Const(0, 1)), cfg.rounding)
                    m.d.sync += saturated[1][k].eq(wrap_to(value, cfg.act_bits, cfg.act_signed))
                    continue
                top = q[narrow_bits - 1:]                          # must all equal the sign
                fits = (top == 0) | (top == (1 << len(top)) - 1)
                if cfg.rounding == "round":
                    rounded = (q[:narrow_bits].as_signed() + 1)[1:].as_signed()
                else:
                    rounded = q[1:narrow_bits].as_signed()         # floor: drop the extra bit
                m.d.sync += saturated[1][k].eq(Mux(fits, rounded, Mux(q[-1], nmin, nmax)))

        # L+5: clip into the output register.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(saturated[0])
            for k in range(cpo):
                value, lo, hi = saturated[1][k], saturated[3], saturated[4]
                m.d.sync += self.o.payload[k].eq(Mux(value < lo, lo, Mux(value > hi, hi, value)))

        return m
