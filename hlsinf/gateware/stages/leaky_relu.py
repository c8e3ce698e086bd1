"""Post-op stage ``leaky_relu``: a fixed-point slope on the negative activations.

Per lane, on a requantised activation ``v`` (``reference.leaky_relu``)::

    v                                                        if v >= 0 or the stage is off
    clip((v * alpha_num + 2**(alpha_shift-1)) >> alpha_shift, amin, amax)   otherwise

rounding half up (no rounding term for ``alpha_shift = 0``) and saturating to the
activation range; built with ``rounding='trunc'`` it floors, with ``overflow='wrap'`` it
keeps the low ``act_bits`` bits instead of saturating (``reference.Modes``). ``alpha_num`` is 16 bits unsigned, ``alpha_shift`` 0 to 31; both are
run-time, as is the enable. With uint activations no value is negative and the stage
passes everything (it is still a valid build).

Pipeline (``L = FabricMultiplier.levels(16) = 4``), one item per cycle, a global stall:

=========  ====================================================================
step       register holds
=========  ====================================================================
1          activation and slope (the multiplier's operands), shift, enable
2 .. L+1   adder-tree levels of ``v * alpha_num`` (:class:`FabricMultiplier`: LUTs
           and carry chains, no DSP48E2)
L+2        ``2 * v * alpha_num`` arithmetically shifted by ``8 * (s // 8)``
L+3        ... and by ``s % 8``: ``q = floor(2 * v * alpha_num / 2**s)``
L+4        ``(q + 1) >> 1``: the rounded quotient (as in the relu stage)
L+5        ``v`` or the rounded value clipped to the activation range: the output
=========  ====================================================================

A 2-entry FIFO in front makes ``i.ready`` a register, as in the relu stage.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.fabric_mul import FabricMultiplier
from hlsinf.gateware.lib.shift import halve, shift_bits, shift_bytes, wrap_to
from hlsinf.gateware.lib.streams import act_shape, fifo_on_stream, pixel_layout, pixel_signature
from hlsinf.reference import LEAKY_ALPHA_NUM_MAX, LEAKY_ALPHA_SHIFT_MAX

__all__ = ["LeakyRelu", "leaky_relu_params_layout"]


def leaky_relu_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`LeakyRelu`, constant while a call runs. The names are
    the call's registers (``hlsinf.registers.POST_OP_SCALARS``)."""
    return data.StructLayout({
        "leaky_relu": 1,
        "leaky_alpha_num": unsigned(LEAKY_ALPHA_NUM_MAX.bit_length()),
        "leaky_alpha_shift": unsigned(LEAKY_ALPHA_SHIFT_MAX.bit_length()),
    })


class LeakyRelu(wiring.Component):
    """Leaky ReLU post-op: activations in, activations out, one item per cycle.

    Members
    -------
    params : In(leaky_relu_params_layout(cfg))
        Read when an item enters the pipeline and carried with it.
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from an item offered on ``i`` (unstalled) to its result taken from
    ``o`` as ``hlsinf.sim.streams.collect`` counts them (the input FIFO plus ``L + 5``).
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = leaky_relu_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })
        self.alpha_bits = LEAKY_ALPHA_NUM_MAX.bit_length()
        self.tree_levels = FabricMultiplier.levels(self.alpha_bits)
        self.pipeline_steps = self.tree_levels + 5
        self.latency = self.pipeline_steps + 1

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()
        amin, amax = cfg.act_range
        shape = act_shape(cfg)
        # v * alpha is exact in act_bits + alpha_bits (+1 for uint) bits; q is twice that.
        doubled_bits = cfg.act_bits + self.alpha_bits + 2
        wide_layout = data.ArrayLayout(signed(doubled_bits), cpo)
        lanes_layout = pixel_layout(cfg, cpo)
        shift_shape = self.params_layout.members["leaky_alpha_shift"]

        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        take = Signal()
        m.d.comb += [take.eq(advance & pixels.valid), pixels.ready.eq(take)]

        def step(name, layout=None):
            """A pipeline register: valid, lanes (or None), and the carried activation, shift, enable."""
            return (Signal(name=f"{name}_valid"),
                    None if layout is None else Signal(layout, name=f"{name}_lanes"),
                    Signal(lanes_layout, name=f"{name}_v"), Signal(shift_shape, name=f"{name}_shift"),
                    Signal(name=f"{name}_en"))

        def move(dst, src):
            m.d.sync += [dst[0].eq(src[0]), dst[2].eq(src[2]), dst[3].eq(src[3]), dst[4].eq(src[4])]

        # 1: operands.
        s1 = step("s1")
        alpha = Signal(self.params_layout.members["leaky_alpha_num"])
        with m.If(advance):
            m.d.sync += [s1[0].eq(take), s1[2].eq(pixels.payload), s1[3].eq(self.params.leaky_alpha_shift),
                         s1[4].eq(self.params.leaky_relu), alpha.eq(self.params.leaky_alpha_num)]

        # 2 .. L+1: the multipliers' adder trees.
        products = []
        for k in range(cpo):
            multiplier = FabricMultiplier(shape, unsigned(self.alpha_bits))
            m.submodules[f"multiplier{k}"] = multiplier
            m.d.comb += [multiplier.a.eq(s1[2][k]), multiplier.b.eq(alpha), multiplier.en.eq(advance)]
            products.append(multiplier.p)
        assert multiplier.latency == self.tree_levels
        at = s1
        for level in range(1, self.tree_levels + 1):
            nxt = step(f"tree{level}")
            with m.If(advance):
                move(nxt, at)
            at = nxt

        # L+2, L+3: q = floor(2 * product / 2**s), bytes then bits.
        coarse = step("coarse", wide_layout)
        fine = step("fine", wide_layout)
        with m.If(advance):
            move(coarse, at)
            for k in range(cpo):
                p = products[k]
                p_signed = p.as_signed() if p.shape().signed else Cat(p, Const(0, 1)).as_signed()
                doubled = Cat(Const(0, 1), p_signed).as_signed()
                shift_bytes(m, coarse[1][k], doubled, at[3], LEAKY_ALPHA_SHIFT_MAX)
            move(fine, coarse)
            for k in range(cpo):
                shift_bits(m, fine[1][k], coarse[1][k], coarse[3])

        # L+4: round half up (or floor: KernelConfig.rounding).
        rounded = step("rounded", wide_layout)
        with m.If(advance):
            move(rounded, fine)
            for k in range(cpo):
                m.d.sync += rounded[1][k].eq(halve(fine[1][k], cfg.rounding))

        # L+5: select and saturate into the output register.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(rounded[0])
            for k in range(cpo):
                v, r = rounded[2][k], rounded[1][k]
                if cfg.overflow == "wrap":
                    clipped = wrap_to(r, cfg.act_bits, cfg.act_signed)
                else:
                    clipped = Mux(r < amin, amin, Mux(r > amax, amax, r))
                negative = (v < 0) if cfg.act_signed else Const(0)
                m.d.sync += self.o.payload[k].eq(Mux(rounded[4] & negative, clipped, v))
        return m
