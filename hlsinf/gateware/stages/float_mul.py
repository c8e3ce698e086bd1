"""Stage ``mul`` of an fp32 kernel: CPO x CPI x 9 binary32 multipliers and one adder tree per lane.

The float counterpart of :class:`~hlsinf.gateware.stages.mul.Mul`, with the same members and
parameters so the kernel can build either: one window of CPI lanes per cycle times the
weight set of the current frame (taken with the frame's first window), CPO partial sums
out. Every product is rounded (:class:`FMul`) and the ``CPI * 9`` products of an output
lane are summed by :class:`FDotTree` with leaf ``c * 9 + tap``, each sum rounded: exactly
``reference_float.mul_partial`` (docs/numbers.md, "fp32", "Summation order").

Pipeline (the whole pipeline advances together when the output register is empty or being
read, as in ``mul``; the units' ``en`` is that advance)::

    window, weight set  ->  operand registers   (a new weight set loads with a frame's first window)
    operands            ->  FMul, ``FMul.latency`` registers (6 with subnormals, 5 flushing)
    products            ->  FDotTree(CPI * 9), ``ceil(log2(CPI * 9)) * FAdd.LATENCY`` registers;
                            its last adder's output register drives ``o``
"""

from __future__ import annotations

import math

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd, FDotTree, FMul
from hlsinf.gateware.lib.streams import (
    partial_layout,
    partial_signature,
    weight_set_layout,
    weight_set_signature,
    window_layout,
    window_signature,
)
from hlsinf.gateware.stages.mul import mul_params_layout, operand_registers

__all__ = ["FloatMul"]


class FloatMul(wiring.Component):
    """Window x weight set -> CPO binary32 partial sums, one window per cycle (fp32 kernels).

    Parameters
    ----------
    cfg : KernelConfig
        ``number_format='fp32'``; CPI, CPO and ``fp32_subnormals`` (passed to every unit).

    Members
    -------
    params : In(mul_params_layout(cfg))
        ``frame_pixels``: windows per frame (>= 1), constant while a call runs.
    i : In(window_signature(cfg))
        Windows; tap ``ky * 3 + kx`` of each lane, binary32 bit patterns.
    weights : In(weight_set_signature(cfg))
        One weight set ``[cpo][cpi][tap]`` per frame, taken with the frame's first window.
    o : Out(partial_signature(cfg))
        ``reference_float.mul_partial`` of each window, in order.

    ``latency``: cycles from a window being taken to its partial sums being offered on
    ``o`` when nothing stalls (``1 + FMul latency + FDotTree latency``). ``multipliers``
    and ``adders`` count the :class:`FMul` and :class:`FAdd` units.
    """

    def __init__(self, cfg: KernelConfig):
        if not cfg.is_float:
            raise ValueError(f"FloatMul: cfg.number_format = {cfg.number_format!r}: allowed 'fp32' "
                             f"(the integer formats use stages.mul.Mul)")
        self._cfg = cfg
        self.window_layout = window_layout(cfg)
        self.weights_layout = weight_set_layout(cfg)
        self.partial_layout = partial_layout(cfg)
        self.params_layout = mul_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(window_signature(cfg)),
            "weights": In(weight_set_signature(cfg)),
            "o": Out(partial_signature(cfg)),
        })
        leaves = cfg.cpi * 9
        self.mul_latency = FMul.LATENCY if cfg.fp32_subnormals else FMul.LATENCY_FTZ
        self.tree_latency = math.ceil(math.log2(leaves)) * FAdd.LATENCY
        #: operand registers + multiplier + adder tree
        self.latency = 1 + self.mul_latency + self.tree_latency
        self.multipliers = cfg.cpo * leaves
        self.adders = cfg.cpo * (leaves - 1)

    def elaborate(self, platform):
        cfg = self._cfg
        sub = cfg.fp32_subnormals
        m = Module()

        # Operand registers (shared with stages/mul.py); the units read them combinationally.
        advance, window, weight_set, valid = operand_registers(m, self, cfg)

        # Multipliers and one tree per lane; only lane 0's units carry the valid bit.
        for o in range(cfg.cpo):
            tree = m.submodules[f"tree{o}"] = FDotTree(cfg.cpi * 9, subnormals=sub)
            m.d.comb += tree.en.eq(advance)
            for c in range(cfg.cpi):
                for tap in range(9):
                    k = c * 9 + tap
                    mul = m.submodules[f"mul{o}_{c}_{tap}"] = FMul(subnormals=sub)
                    m.d.comb += [mul.a.eq(window[c][tap]), mul.b.eq(weight_set[o][c][tap]), mul.en.eq(advance),
                                 tree.i[k].eq(mul.o)]
                    assert mul.latency == self.mul_latency
                    if o == 0 and k == 0:
                        m.d.comb += [mul.i_valid.eq(valid), tree.i_valid.eq(mul.o_valid)]
            assert tree.latency == self.tree_latency
            if o == 0:
                m.d.comb += self.o.valid.eq(tree.o_valid)
            m.d.comb += self.o.payload[o].eq(tree.o)
        return m
