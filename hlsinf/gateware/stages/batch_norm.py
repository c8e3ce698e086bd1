"""Post-op stage ``bn``: batch-norm after the activation, a per-output-channel integer affine.

Per lane ``c``, on a requantised activation ``v`` (``reference.batch_norm``)::

    clip((v * m[c] + b[c] + 2**(s-1)) >> s, lo, hi)          (no rounding term for s = 0)

with ``m[c]`` a signed 16-bit multiplier and ``b[c]`` a signed 32-bit bias, one item of CPO
of each per output group from the ``n`` pointer (loaded on ``gmem_w`` like the bias and the
requantisation multipliers), and run-time ``bn_shift`` (0..31), ``bn_clip_lo``, ``bn_clip_hi``.
Disabled (``bn = 0``) the stage takes no items and passes ``v``. Built with
``rounding='trunc'`` there is no rounding term (floor); with ``overflow='wrap'`` the low
``act_bits`` bits of ``x >> s`` (as the activation type) are clipped instead of ``x >> s``.

The product is formed in the fabric (:class:`FabricMultiplier`, no DSP48E2), which wants an
unsigned multiplier: ``m = mu - 2**15`` with ``mu = m ^ 0x8000`` unsigned, so
``v * m = v * mu - (v << 15)``; the correction and the bias with its rounding term are
added beside the adder tree. Pipeline (``L = 4`` tree levels), a global stall:

=========  ====================================================================
step       register holds
=========  ====================================================================
1          activation, the frame's ``mu`` and ``b + 2**(s-1)`` (latched with the
           frame's first pixel)
2 .. L+1   adder-tree levels of ``v * mu``; beside them ``c = b + 2**(s-1) - (v << 15)``
L+2        ``x = v * mu + c``
L+3, L+4   ``x >> s``, by bytes then bits (arithmetic: floor)
L+5        clipped to ``[lo, hi]`` (or ``v`` when off): the output register
=========  ====================================================================
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.fabric_mul import FabricMultiplier
from hlsinf.gateware.lib.shift import shift_bits, shift_bytes, wrap_to
from hlsinf.gateware.lib.streams import (act_shape, bn_signature, fifo_on_stream, frame_counter,
                                         frame_pixels_shape, pixel_layout, pixel_signature)
from hlsinf.reference import BN_MULT_BITS, BN_SHIFT_MAX

__all__ = ["BatchNorm", "batch_norm_params_layout"]


def batch_norm_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`BatchNorm`: the call's ``bn*`` registers and the
    convolution frame's pixel count (from the geometry)."""
    return data.StructLayout({
        "frame_pixels": frame_pixels_shape(cfg),
        "bn": 1,
        "bn_shift": unsigned(BN_SHIFT_MAX.bit_length()),
        "bn_clip_lo": signed(cfg.act_bits + 1),
        "bn_clip_hi": signed(cfg.act_bits + 1),
    })


class BatchNorm(wiring.Component):
    """Batch-norm post-op: activations in, activations out, one item per cycle.

    Members
    -------
    params : In(batch_norm_params_layout(cfg))
    i : In(pixel_signature(cfg, cfg.cpo))
    item : In(bn_signature(cfg))
        One per frame when ``bn``, taken with the frame's first pixel; not read otherwise.
    o : Out(pixel_signature(cfg, cfg.cpo))
    """

    #: params fields the kernel takes from the call geometry rather than the registers.
    GEOMETRY_PARAMS = ("frame_pixels",)

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = batch_norm_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "item": In(bn_signature(cfg)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })
        self.tree_levels = FabricMultiplier.levels(BN_MULT_BITS)
        self.pipeline_steps = self.tree_levels + 5
        self.latency = self.pipeline_steps + 1

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()
        wide = signed(cfg.act_bits + 30)       # holds b + 2**30 - (v << 15) + v * mu
        wide_layout = data.ArrayLayout(wide, cpo)
        lanes_layout = pixel_layout(cfg, cpo)
        p = self.params
        ctl_shapes = [p.bn_shift.shape(), p.bn_clip_lo.shape(), p.bn_clip_hi.shape(), unsigned(1)]

        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        items = fifo_on_stream(m, "item_fifo", wiring.flipped(self.item), depth=2)

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        take = Signal()
        first, _ = frame_counter(m, take, p.frame_pixels, "pixel")
        need_item = Signal()
        m.d.comb += [need_item.eq(p.bn & first),
                     take.eq(advance & pixels.valid & (~need_item | items.valid)),
                     pixels.ready.eq(take), items.ready.eq(take & need_item)]

        def step(name, layout=None):
            return (Signal(name=f"{name}_valid"),
                    None if layout is None else Signal(layout, name=f"{name}_lanes"),
                    Signal(lanes_layout, name=f"{name}_v"),
                    [Signal(shape, name=f"{name}_ctl{k}") for k, shape in enumerate(ctl_shapes)])

        def move(dst, src):
            m.d.sync += [dst[0].eq(src[0]), dst[2].eq(src[2])]
            m.d.sync += [d.eq(s) for d, s in zip(dst[3], src[3])]

        # 1: the activation; the frame's parameters latched with its first pixel.
        s1 = step("s1")
        mu = Signal(data.ArrayLayout(unsigned(BN_MULT_BITS), cpo))
        bias_r = Signal(data.ArrayLayout(signed(34), cpo))
        rounding = Signal(unsigned(BN_SHIFT_MAX))
        if cfg.rounding == "round":
            m.d.comb += rounding.eq((Const(1, BN_SHIFT_MAX + 1) << p.bn_shift) >> 1)
        with m.If(advance):
            m.d.sync += [s1[0].eq(take), s1[2].eq(pixels.payload)]
            m.d.sync += [d.eq(s) for d, s in zip(s1[3], (p.bn_shift, p.bn_clip_lo, p.bn_clip_hi, p.bn))]
        with m.If(advance & take & need_item):
            for k in range(cpo):
                m.d.sync += [mu[k].eq(items.payload.mult[k][:BN_MULT_BITS] ^ (1 << (BN_MULT_BITS - 1))),
                             bias_r[k].eq(items.payload.bias[k] + rounding)]

        # 2 .. L+1: v * mu in the fabric; c beside it, computed at the first level.
        products = []
        for k in range(cpo):
            multiplier = FabricMultiplier(act_shape(cfg), unsigned(BN_MULT_BITS))
            m.submodules[f"multiplier{k}"] = multiplier
            m.d.comb += [multiplier.a.eq(s1[2][k]), multiplier.b.eq(mu[k]), multiplier.en.eq(advance)]
            products.append(multiplier.p)
        assert multiplier.latency == self.tree_levels >= 1
        at = s1
        for level in range(1, self.tree_levels + 1):
            nxt = step(f"tree{level}", wide_layout)
            with m.If(advance):
                move(nxt, at)
                for k in range(cpo):
                    if level == 1:
                        m.d.sync += nxt[1][k].eq(bias_r[k] - (s1[2][k] << (BN_MULT_BITS - 1)))
                    else:
                        m.d.sync += nxt[1][k].eq(at[1][k])
            at = nxt

        # L+2: x = v * mu + c.  L+3, L+4: x >> s, bytes then bits.
        total = step("total", wide_layout)
        coarse = step("coarse", wide_layout)
        fine = step("fine", wide_layout)
        with m.If(advance):
            move(total, at)
            for k in range(cpo):
                m.d.sync += total[1][k].eq(products[k] + at[1][k])
            move(coarse, total)
            for k in range(cpo):
                shift_bytes(m, coarse[1][k], total[1][k], total[3][0], BN_SHIFT_MAX)
            move(fine, coarse)
            for k in range(cpo):
                shift_bits(m, fine[1][k], coarse[1][k], coarse[3][0])

        # L+5: clip, or pass v when off.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(fine[0])
            _, lo, hi, on = fine[3]
            for k in range(cpo):
                x = fine[1][k]
                if cfg.overflow == "wrap":
                    x = wrap_to(x, cfg.act_bits, cfg.act_signed)
                m.d.sync += self.o.payload[k].eq(Mux(on, Mux(x < lo, lo, Mux(x > hi, hi, x)), fine[2][k]))
        return m
