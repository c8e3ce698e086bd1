"""Stage ``relu`` of the fp32 kernel: ReLU, then clip to ``[clip_lo, clip_hi]``, on binary32 lanes.

There is nothing to requantise in fp32 (no shift, no multiplier), so the stage is the
``reference_float.relu`` and ``reference_float.clip`` of every lane:

1. ReLU (``params.relu``): a value with the sign bit set, ``-0`` included, becomes ``+0``;
2. ``y < lo`` -> ``lo``, then ``y > hi`` -> ``hi``, compared in the order of
   ``reference_float.max_key``: the bit pattern with the magnitude bits inverted when the
   sign is set, compared as a signed 32-bit integer. No float unit is needed.

The bounds are the binary32 bits in the 32-bit ``clip_lo`` / ``clip_hi`` registers. "No
bound" is encoded by the two ends of the key order, ``0xFFFFFFFF`` (a NaN with the sign set,
key ``-2**31``) for ``lo`` and ``0x7FFFFFFF`` (key ``2**31 - 1``) for ``hi``: nothing lies
outside them, so they clip nothing (``CallArgs.clip_bounds`` writes them for ``None``).

A 2-entry FIFO makes ``i.ready`` a register; three pipeline registers (relu, lower bound,
upper bound) move together on a global stall.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import acc_signature, fifo_on_stream, pixel_signature
from hlsinf.reference import FLOAT_NO_LOWER_BOUND, FLOAT_NO_UPPER_BOUND

__all__ = ["FloatRelu", "float_relu_params_layout", "float_key", "FLOAT_NO_LOWER_BOUND", "FLOAT_NO_UPPER_BOUND"]



def float_key(bits) -> Value:
    """The signed 32-bit compare key of binary32 ``bits`` (``reference_float.max_key``)."""
    bits = Value.cast(bits)[:32]
    return (bits ^ Mux(bits[31], 0x7FFFFFFF, 0)).as_signed()


def float_relu_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`FloatRelu`, constant while a call runs: the bounds'
    binary32 bits and the ReLU enable (the names of :class:`~hlsinf.gateware.stages.relu.Relu`'s)."""
    return data.StructLayout({"clip_lo": 32, "clip_hi": 32, "relu": 1})


class FloatRelu(wiring.Component):
    """fp32 ReLU and clip: accumulators in, activations out, one item per cycle.

    Members
    -------
    params : In(float_relu_params_layout(cfg))
        ``clip_lo``/``clip_hi`` (binary32 bits), ``relu``. Read when an item enters the
        pipeline and carried with it.
    i : In(acc_signature(cfg))
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from an item offered on ``i`` (unstalled) to its result taken from
    ``o``: the input FIFO and three registers.
    """

    latency = 4

    def __init__(self, cfg: KernelConfig):
        if not cfg.is_float:
            raise ValueError(f"FloatRelu: cfg.number_format = {cfg.number_format!r}; it is the fp32 stage "
                             f"(use stages.relu.Relu)")
        self.cfg = cfg
        self.params_layout = float_relu_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(acc_signature(cfg)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        cpo = cfg.cpo
        m = Module()
        lanes = data.ArrayLayout(32, cpo)

        accs = fifo_on_stream(m, "acc_fifo", wiring.flipped(self.i), depth=2)
        advance = Signal()
        take = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), take.eq(advance & accs.valid),
                     accs.ready.eq(take)]

        def stage(name):
            return (Signal(name=f"{name}_valid"), Signal(lanes, name=f"{name}_y"),
                    Signal(signed(32), name=f"{name}_lo_key"), Signal(32, name=f"{name}_lo"),
                    Signal(signed(32), name=f"{name}_hi_key"), Signal(32, name=f"{name}_hi"))

        # 1: ReLU; the bounds' keys are formed once per item and carried.
        s1 = stage("s1")
        relu_on = self.params.relu if cfg.with_relu else 0
        with m.If(advance):
            m.d.sync += [s1[0].eq(take), s1[2].eq(float_key(self.params.clip_lo)), s1[3].eq(self.params.clip_lo),
                         s1[4].eq(float_key(self.params.clip_hi)), s1[5].eq(self.params.clip_hi)]
            for k in range(cpo):
                y = Value.cast(accs.payload[k])[:32]
                m.d.sync += s1[1][k].eq(Mux(relu_on & y[31], 0, y))

        # 2: the lower bound; 3: the upper bound (in this order, as reference_float.clip).
        s2 = stage("s2")
        with m.If(advance):
            m.d.sync += [a.eq(b) for a, b in zip(s2[::2] + s2[3::2], s1[::2] + s1[3::2])]
            for k in range(cpo):
                m.d.sync += s2[1][k].eq(Mux(float_key(s1[1][k]) < s1[2], s1[3], s1[1][k]))
            m.d.sync += self.o.valid.eq(s2[0])
            for k in range(cpo):
                m.d.sync += self.o.payload[k].eq(Mux(float_key(s2[1][k]) > s2[4], s2[5], s2[1][k]))
        return m
