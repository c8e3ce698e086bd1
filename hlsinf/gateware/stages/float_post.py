"""Post-op stages of an fp32 kernel: ``leaky_relu`` and ``bn`` on binary32 activations.

The float counterparts of :class:`~hlsinf.gateware.stages.leaky_relu.LeakyRelu` and
:class:`~hlsinf.gateware.stages.batch_norm.BatchNorm`, with the same members and parameter
names, so the kernel can build either (docs/numbers.md, "fp32", "Post-operations"):

* ``leaky_relu``: ``y`` if its sign bit is clear, else ``fmul(y, alpha)``
  (``reference_float.leaky_relu``), ``alpha`` the binary32 bits of the 32-bit
  ``leaky_alpha_num`` register; ``leaky_alpha_shift`` must be 0 (``CallArgs.validate``)
  and is not read.
* ``bn``: ``fadd(fmul(y, m[c]), b[c])`` per lane (``reference_float.batch_norm``), ``m``
  and ``b`` binary32 from the ``n`` image, ``[GO][2][CPO]`` words, one item of the
  ``bn_layout`` stream per frame. Rounded twice (no fused multiply-add), no clip:
  ``bn_shift``, ``bn_clip_lo`` and ``bn_clip_hi`` are in the parameters for the kernel's
  sake but must be 0 / unset and are not read.

Both: a 2-entry FIFO in front (``i.ready`` a register, as in the integer stages), one item
per cycle, the whole pipeline advancing together when the output register is free, the
input value carried beside the units so that a disabled stage (or a positive value) passes
unchanged (a NaN keeps its payload, a subnormal is not flushed).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd, FMul
from hlsinf.gateware.lib.streams import (
    FLOAT_LANE,
    bn_signature,
    fifo_on_stream,
    frame_counter,
    pixel_layout,
    pixel_signature,
)
from hlsinf.gateware.lib.wide_stream import payload_width
from hlsinf.gateware.stages.batch_norm import batch_norm_params_layout
from hlsinf.reference import LEAKY_ALPHA_SHIFT_MAX

__all__ = ["FloatLeakyRelu", "FloatBatchNorm", "float_leaky_relu_params_layout"]


def float_leaky_relu_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`FloatLeakyRelu`: the names of ``LeakyRelu``'s, with
    ``leaky_alpha_num`` the 32 bits of the binary32 slope."""
    return data.StructLayout({
        "leaky_relu": 1,
        "leaky_alpha_num": unsigned(32),
        "leaky_alpha_shift": unsigned(LEAKY_ALPHA_SHIFT_MAX.bit_length()),
    })


def _require_float(name: str, cfg: KernelConfig, integer: str):
    if not cfg.is_float:
        raise ValueError(f"{name}: cfg.number_format = {cfg.number_format!r}: allowed 'fp32' "
                         f"(the integer formats use stages.{integer})")


def _shift_register(m, advance, value, length: int, name: str):
    """``value`` after ``length`` pipeline registers that load on ``advance``; all of them."""
    regs = []
    for k in range(length):
        shape = value.shape()
        reg = Signal(shape, name=f"{name}{k + 1}", reset_less=shape != unsigned(1))
        with m.If(advance):
            m.d.sync += reg.eq(value)
        regs.append(reg)
        value = reg
    return regs


class FloatLeakyRelu(wiring.Component):
    """fp32 leaky ReLU post-op: binary32 activations in and out, one item per cycle.

    Members
    -------
    params : In(float_leaky_relu_params_layout(cfg))
        Read when an item enters the pipeline and carried with it.
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from an item offered on ``i`` (unstalled) to its result taken from
    ``o`` as ``hlsinf.sim.streams.collect`` counts them: the input FIFO, the operand
    register, :class:`FMul` and the output register. ``multipliers``: :class:`FMul` units (CPO).
    """

    def __init__(self, cfg: KernelConfig):
        _require_float("FloatLeakyRelu", cfg, "leaky_relu.LeakyRelu")
        self.cfg = cfg
        self.params_layout = float_leaky_relu_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })
        self.mul_latency = FMul.LATENCY if cfg.fp32_subnormals else FMul.LATENCY_FTZ
        self.pipeline_steps = 1 + self.mul_latency + 1
        self.latency = self.pipeline_steps + 1
        self.multipliers = cfg.cpo

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        advance, take = Signal(), Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), take.eq(advance & pixels.valid),
                     pixels.ready.eq(take)]

        # Operand registers: the activations, the slope, the enable.
        lanes = Signal(pixel_layout(cfg, cfg.cpo), reset_less=True)
        alpha = Signal(32, reset_less=True)
        valid, enable = Signal(), Signal()
        with m.If(advance):
            m.d.sync += [valid.eq(take), lanes.eq(pixels.payload), alpha.eq(self.params.leaky_alpha_num),
                         enable.eq(self.params.leaky_relu)]

        # The multipliers, and the values and flags beside them.
        products = []
        for k in range(cfg.cpo):
            mul = m.submodules[f"mul{k}"] = FMul(subnormals=cfg.fp32_subnormals)
            m.d.comb += [mul.a.eq(lanes[k]), mul.b.eq(alpha), mul.en.eq(advance)]
            assert mul.latency == self.mul_latency
            products.append(mul.o)
        late_lanes = _shift_register(m, advance, lanes, self.mul_latency, "lanes")[-1]
        late_valid = _shift_register(m, advance, valid, self.mul_latency, "valid")[-1]
        late_enable = _shift_register(m, advance, enable, self.mul_latency, "enable")[-1]

        # Output register: the product where the sign bit is set and the stage is on.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(late_valid)
            for k in range(cfg.cpo):
                x = Value.cast(late_lanes[k])
                m.d.sync += self.o.payload[k].eq(Mux(late_enable & x[31], products[k], x))
        return m


class FloatBatchNorm(wiring.Component):
    """fp32 batch-norm post-op: binary32 activations in and out, one item per cycle.

    Members
    -------
    params : In(batch_norm_params_layout(cfg))
        ``frame_pixels`` (from the geometry) and ``bn``; ``bn_shift``, ``bn_clip_lo`` and
        ``bn_clip_hi`` are not read (0 / unset on an fp32 call).
    i : In(pixel_signature(cfg, cfg.cpo))
    item : In(bn_signature(cfg))
        CPO binary32 multipliers and biases per frame when ``bn``, taken with the frame's
        first pixel; not read otherwise.
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency`` as for :class:`FloatLeakyRelu`, with :class:`FAdd` after :class:`FMul`.
    ``multipliers``, ``adders``: units (CPO each).
    """

    #: params fields the kernel takes from the call geometry rather than the registers.
    GEOMETRY_PARAMS = ("frame_pixels",)

    def __init__(self, cfg: KernelConfig):
        _require_float("FloatBatchNorm", cfg, "batch_norm.BatchNorm")
        self.cfg = cfg
        self.params_layout = batch_norm_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "item": In(bn_signature(cfg)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })
        self.mul_latency = FMul.LATENCY if cfg.fp32_subnormals else FMul.LATENCY_FTZ
        self.pipeline_steps = 1 + self.mul_latency + FAdd.LATENCY + 1
        self.latency = self.pipeline_steps + 1
        self.multipliers = self.adders = cfg.cpo

    def elaborate(self, platform):
        cfg = self.cfg
        cpo, sub = cfg.cpo, cfg.fp32_subnormals
        m = Module()
        p = self.params
        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        items = fifo_on_stream(m, "item_fifo", wiring.flipped(self.item), depth=2)

        # The biases reach the adders a multiplier latency later, when up to that many
        # frames (of one pixel) may have started: they wait in a queue, one entry per
        # frame, and move to the adders' operand register with the frame's pixels.
        bias_layout = data.ArrayLayout(FLOAT_LANE, cpo)
        queue = fifo.SyncFIFO(width=payload_width(bias_layout), depth=self.mul_latency + 1)
        m.submodules.bias_queue = queue

        advance, take, need_item = Signal(), Signal(), Signal()
        first, last = frame_counter(m, take, p.frame_pixels, "pixel")
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready),
                     need_item.eq(p.bn & first),
                     take.eq(advance & pixels.valid & (~need_item | (items.valid & queue.w_rdy))),
                     pixels.ready.eq(take), items.ready.eq(take & need_item)]

        # Operand registers: the activations and the frame's multipliers (loaded with its
        # first pixel: older pixels have moved into the multipliers by then).
        lanes_layout = pixel_layout(cfg, cpo)
        lanes = Signal(lanes_layout, reset_less=True)
        mult = Signal(data.ArrayLayout(FLOAT_LANE, cpo), reset_less=True)
        valid, enable, frame_end = Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [valid.eq(take), lanes.eq(pixels.payload), enable.eq(p.bn), frame_end.eq(last)]
        with m.If(advance & take & need_item):
            m.d.sync += mult.eq(items.payload.mult)

        m.d.comb += [queue.w_en.eq(advance & take & need_item), queue.w_data.eq(items.payload.bias.as_value())]

        products = []
        for k in range(cpo):
            mul = m.submodules[f"mul{k}"] = FMul(subnormals=sub)
            m.d.comb += [mul.a.eq(lanes[k]), mul.b.eq(mult[k]), mul.en.eq(advance)]
            assert mul.latency == self.mul_latency
            products.append(mul.o)
        stages = self.mul_latency + FAdd.LATENCY
        carried_lanes = _shift_register(m, advance, lanes, stages, "lanes")
        carried_valid = _shift_register(m, advance, valid, stages, "valid")
        carried_enable = _shift_register(m, advance, enable, stages, "enable")
        carried_end = _shift_register(m, advance, frame_end, self.mul_latency, "end")

        # The item one step before the adders: load its frame's biases (the queue's head)
        # and drop them from the queue with the frame's last pixel.
        before = self.mul_latency - 2       # index of the register one step before the products
        pre_valid = carried_valid[before] if before >= 0 else valid
        pre_enable = carried_enable[before] if before >= 0 else enable
        pre_end = carried_end[before] if before >= 0 else frame_end
        bias = Signal(bias_layout, reset_less=True)
        with m.If(advance & pre_valid & pre_enable):
            m.d.sync += bias.as_value().eq(queue.r_data)
        m.d.comb += queue.r_en.eq(advance & pre_valid & pre_enable & pre_end)

        sums = []
        for k in range(cpo):
            add = m.submodules[f"add{k}"] = FAdd(subnormals=sub)
            m.d.comb += [add.a.eq(products[k]), add.b.eq(bias[k]), add.en.eq(advance)]
            sums.append(add.o)

        # Output register: the affine result, or the input when off.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(carried_valid[-1])
            for k in range(cpo):
                m.d.sync += self.o.payload[k].eq(Mux(carried_enable[-1], sums[k], carried_lanes[-1][k]))
        return m
