"""Post-op stage ``residual_add``: ResNet's ``Add(+Relu)`` fused into the convolution's call.

Per lane, on a requantised activation ``v`` and the operand pixel ``r`` at the same position
of the convolution output (``reference.residual_add``)::

    t = clip(v + ((r * r_mult + 2**(r_shift-1)) >> r_shift), r_clip_lo, r_clip_hi)
    y = max(t, 0) if r_relu else t

rounding half up (no rounding term for ``r_shift = 0``), saturating. ``r_mult`` (16 bits
unsigned) and ``r_shift`` (0..31) bring the operand to the output's scale; the operand is
an activation of the same format. The operand stream comes from its own reader on
``gmem_in`` (docs/memory.md); disabled (``residual_add = 0``) the stage takes no operand and
passes ``v`` with the same latency.

Pipeline (``L = FabricMultiplier.levels(16) = 4``), one item per cycle, a global stall:

=========  ====================================================================
step       register holds
=========  ====================================================================
1          ``v``, ``r``, the multiplier, the call's shift / bounds / relu / enable
2 .. L+1   adder-tree levels of ``r * r_mult`` (LUTs and carry chains, no DSP48E2)
L+2, L+3   ``q = floor(2 * r * r_mult / 2**s)``: bytes then bits
L+4        ``(q + 1) >> 1``: the rounded operand
L+5        ``v + operand``
L+6        clipped to ``[r_clip_lo, r_clip_hi]``
L+7        ReLU (or ``v`` when off): the output register
=========  ====================================================================

Two-entry FIFOs in front of both inputs make both ``ready`` signals registers.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.fabric_mul import FabricMultiplier
from hlsinf.gateware.lib.shift import shift_bits, shift_bytes
from hlsinf.gateware.lib.streams import act_shape, fifo_on_stream, pixel_layout, pixel_signature
from hlsinf.reference import R_MULT_BITS, R_SHIFT_MAX

__all__ = ["ResidualAdd", "residual_add_params_layout"]


def residual_add_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`ResidualAdd`, the call's registers of the same names
    (``hlsinf.registers.POST_OP_SCALARS``); constant while a call runs."""
    return data.StructLayout({
        "residual_add": 1,
        "r_mult": unsigned(R_MULT_BITS),
        "r_shift": unsigned(R_SHIFT_MAX.bit_length()),
        "r_relu": 1,
        "r_clip_lo": signed(cfg.act_bits + 1),
        "r_clip_hi": signed(cfg.act_bits + 1),
    })


class ResidualAdd(wiring.Component):
    """Residual add post-op: activations and operand pixels in, activations out, one a cycle.

    Members
    -------
    params : In(residual_add_params_layout(cfg))
    i : In(pixel_signature(cfg, cfg.cpo))
        The requantised activations, in the order the output is written (before pooling).
    operand : In(pixel_signature(cfg, cfg.cpo))
        One pixel per activation pixel while ``residual_add`` is set; not read otherwise.
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from an item offered on ``i`` (unstalled, operand already there) to
    its result taken from ``o`` as ``hlsinf.sim.streams.collect`` counts them.
    """

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = residual_add_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "operand": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })
        self.tree_levels = FabricMultiplier.levels(R_MULT_BITS)
        self.pipeline_steps = self.tree_levels + 7
        self.latency = self.pipeline_steps + 1

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()
        p = self.params
        # r * r_mult is exact in act_bits + 16 (+1 for uint) bits; q is twice it; the sum one more.
        doubled_bits = cfg.act_bits + R_MULT_BITS + 2
        wide_layout = data.ArrayLayout(signed(doubled_bits), cpo)
        sum_layout = data.ArrayLayout(signed(doubled_bits + 1), cpo)
        lanes_layout = pixel_layout(cfg, cpo)
        ctl_shapes = [p.r_shift.shape(), p.r_clip_lo.shape(), p.r_clip_hi.shape(), unsigned(1), unsigned(1)]

        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        operands = fifo_on_stream(m, "operand_fifo", wiring.flipped(self.operand), depth=2)
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        take = Signal()
        m.d.comb += [take.eq(advance & pixels.valid & (~p.residual_add | operands.valid)),
                     pixels.ready.eq(take), operands.ready.eq(take & p.residual_add)]

        def step(name, layout=None):
            """A pipeline register: valid, lanes (or None), the carried activation, the controls."""
            return (Signal(name=f"{name}_valid"),
                    None if layout is None else Signal(layout, name=f"{name}_lanes"),
                    Signal(lanes_layout, name=f"{name}_v"),
                    [Signal(shape, name=f"{name}_ctl{k}") for k, shape in enumerate(ctl_shapes)])

        def move(dst, src):
            m.d.sync += [dst[0].eq(src[0]), dst[2].eq(src[2])]
            m.d.sync += [d.eq(s) for d, s in zip(dst[3], src[3])]

        # 1: operands of the multiply, the activation and the call's controls.
        s1 = step("s1", lanes_layout)
        mult = Signal(unsigned(R_MULT_BITS))
        with m.If(advance):
            m.d.sync += [s1[0].eq(take), s1[1].eq(operands.payload), s1[2].eq(pixels.payload),
                         mult.eq(p.r_mult)]
            m.d.sync += [d.eq(s) for d, s in zip(s1[3], (p.r_shift, p.r_clip_lo, p.r_clip_hi, p.r_relu,
                                                          p.residual_add))]

        # 2 .. L+1: r * r_mult in the fabric.
        products = []
        for k in range(cpo):
            multiplier = FabricMultiplier(act_shape(cfg), unsigned(R_MULT_BITS))
            m.submodules[f"multiplier{k}"] = multiplier
            m.d.comb += [multiplier.a.eq(s1[1][k]), multiplier.b.eq(mult), multiplier.en.eq(advance)]
            products.append(multiplier.p)
        assert multiplier.latency == self.tree_levels >= 1
        at = s1
        for level in range(1, self.tree_levels + 1):
            nxt = step(f"tree{level}")
            with m.If(advance):
                move(nxt, at)
            at = nxt

        # L+2, L+3: q = floor(2 * product / 2**s), bytes then bits.  L+4: round half up.
        coarse = step("coarse", wide_layout)
        fine = step("fine", wide_layout)
        rounded = step("rounded", wide_layout)
        with m.If(advance):
            move(coarse, at)
            for k in range(cpo):
                prod = products[k]
                prod_signed = prod.as_signed() if prod.shape().signed else Cat(prod, Const(0, 1)).as_signed()
                shift_bytes(m, coarse[1][k], Cat(Const(0, 1), prod_signed).as_signed(), at[3][0], R_SHIFT_MAX)
            move(fine, coarse)
            for k in range(cpo):
                shift_bits(m, fine[1][k], coarse[1][k], coarse[3][0])
            move(rounded, fine)
            for k in range(cpo):
                m.d.sync += rounded[1][k].eq((fine[1][k] + 1) >> 1)

        # L+5: the sum.  L+6: clipped.  L+7: ReLU, or v when off: the output register.
        total = step("total", sum_layout)
        clipped = step("clipped", data.ArrayLayout(signed(cfg.act_bits + 1), cpo))
        with m.If(advance):
            move(total, rounded)
            for k in range(cpo):
                m.d.sync += total[1][k].eq(rounded[2][k] + rounded[1][k])
            move(clipped, total)
            _, lo, hi, _, _ = total[3]
            for k in range(cpo):
                x = total[1][k]
                m.d.sync += clipped[1][k].eq(Mux(x < lo, lo, Mux(x > hi, hi, x)))
            m.d.sync += self.o.valid.eq(clipped[0])
            _, _, _, relu, on = clipped[3]
            for k in range(cpo):
                c = clipped[1][k]
                m.d.sync += self.o.payload[k].eq(Mux(on, Mux(relu & (c < 0), 0, c), clipped[2][k]))
        return m
