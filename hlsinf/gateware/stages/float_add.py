"""Stage ``add`` of an fp32 kernel: accumulate GI frames of binary32 partial sums, then the bias.

The float counterpart of :class:`~hlsinf.gateware.stages.add.Add`, with the same members and
parameters. An output group arrives as ``groups_in`` frames of ``frame_pixels`` partials;
per pixel and lane the result is ``((p0 + p1) + ... + p_{G-1}) + bias``, every sum rounded
(``reference_float.accumulate``: the bias is added last, after all groups; nothing
saturates). Frame ``g`` adds into a buffer of one row per pixel (read, :class:`FAdd`, write
back); the last frame does not write back but adds the bias in a second adder and sends
the result out, so the next output group starts on the next cycle.

Pipeline (the whole pipeline advances together when the output register is empty or being
read)::

    S1        partial; buffer read issued     (the bias is queued with a group's first partial)
    S2        operands: the row as read (-0 in a group's first frame) and the partial
    S3..S8    adder A = row + partial (FAdd.LATENCY = 6 registers); S8 writes it back
              unless in the last frame
    S9..S14   adder B = A + bias (last frame only): B's output register drives ``o``

``-0`` is the identity of binary32 addition (``x + (-0) = x`` for every ``x``, ``-0``
included; a NaN comes out as ``0x7FC00000``, which every later sum would give too; with
flush to zero a subnormal becomes a zero, which every later sum would do too), so the
first frame goes through adder A like the others and A's result is always the newest row.

Read-after-write hazard. A row written at S8 is in the buffer for a read issued at the
same advance (the read port is transparent to the write port), so a partial that reads a
row (not in its group's first frame) waits while a partial that will write the same row
(not in its group's last frame) is in S1..S7. Frames of 8 or more pixels never wait: one
partial per cycle. A shorter frame (``F < 8`` pixels) that reads waits until the previous
frame's partial of the same pixel has reached S8: such a frame takes 8 cycles instead of
``F``, so an output group takes ``F + (groups_in - 1) * max(F, 8)`` cycles. Forwarding
could not do better: adder A needs 6 cycles per sum and a pixel's sums form a chain.

The bias of a group is taken with its first partial (as in ``add``) into a small queue,
because up to 7 groups can be in the pipeline before their last partials reach adder B;
it moves to B's operand register when the group's last-frame partials pass S7.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.float32 import FAdd
from hlsinf.gateware.lib.streams import (
    acc_layout,
    acc_signature,
    bias_layout,
    bias_signature,
    frame_counter,
    frame_pixels_shape,
    partial_layout,
    partial_signature,
)
from hlsinf.gateware.lib.wide_stream import payload_width
from hlsinf.gateware.stages.add import add_params_layout

__all__ = ["FloatAdd", "NEGATIVE_ZERO"]

#: binary32 ``-0``: what a group's first frame adds to its partial.
NEGATIVE_ZERO = 0x80000000


class FloatAdd(wiring.Component):
    """Binary32 partial sums of GI frames -> ``((p0 + p1) + ...) + bias``, one item per cycle
    for frames of at least :attr:`MIN_FULL_RATE_FRAME` pixels (fp32 kernels).

    Members
    -------
    params : In(add_params_layout(cfg))
        ``frame_pixels`` and ``groups_in`` (both >= 1), constant while a call runs.
    i : In(partial_signature(cfg))
        The partial sums from ``FloatMul``.
    bias : In(bias_signature(cfg))
        One item per output group, taken with the group's first partial.
    o : Out(acc_signature(cfg))
        ``reference_float.accumulate`` for every pixel of each output group's last frame.

    ``latency`` is the number of cycles from a last-frame partial being taken to its result
    being offered on ``o`` when nothing stalls. ``adders``: :class:`FAdd` units (2 CPO). The
    buffer holds ``cfg.max_frame_pixels`` rows of CPO x 32 bits.
    """

    #: read-modify-write distance: a row written at S8 is read by a partial taken then.
    HAZARD_STAGES = 2 + FAdd.LATENCY
    #: frames of this many pixels or more run at one partial per cycle.
    MIN_FULL_RATE_FRAME = HAZARD_STAGES
    #: S1, S2, adder A, adder B
    latency = 2 + 2 * FAdd.LATENCY
    #: bias queue entries: one per group with its last partial in S1..S7, plus the newest.
    BIAS_QUEUE_DEPTH = HAZARD_STAGES

    def __init__(self, cfg: KernelConfig):
        if not cfg.is_float:
            raise ValueError(f"FloatAdd: cfg.number_format = {cfg.number_format!r}: allowed 'fp32' "
                             f"(the integer formats use stages.add.Add)")
        self._cfg = cfg
        self.partial_layout = partial_layout(cfg)
        self.bias_layout = bias_layout(cfg)
        self.acc_layout = acc_layout(cfg)
        self.params_layout = add_params_layout(cfg)
        self.adders = 2 * cfg.cpo
        super().__init__({
            "params": In(self.params_layout),
            "i": In(partial_signature(cfg)),
            "bias": In(bias_signature(cfg)),
            "o": Out(acc_signature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        cpo, sub = cfg.cpo, cfg.fp32_subnormals
        m = Module()

        row_layout = data.ArrayLayout(32, cpo)
        m.submodules.buffer = buffer = Memory(shape=row_layout, depth=cfg.max_frame_pixels, init=[])
        write = buffer.write_port()
        read = buffer.read_port(transparent_for=(write,))

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Every stage S1..S14 as a set of registers; the addresses only up to S8.
        stages = {}
        for k in range(1, self.latency + 1):
            stages[k] = dict(valid=Signal(name=f"s{k}_valid"), last=Signal(name=f"s{k}_last"),
                             end=Signal(name=f"s{k}_end"))
            if k <= self.HAZARD_STAGES:
                stages[k]["addr"] = Signal(frame_pixels_shape(cfg), name=f"s{k}_addr")

        # Input: the pixel (buffer address) and input group of the next partial.
        take = Signal()
        position = Signal(frame_pixels_shape(cfg))
        first_pixel, last_pixel = frame_counter(m, take, self.params.frame_pixels, "pixel")
        first_group, last_group = frame_counter(m, take & last_pixel, self.params.groups_in, "group")
        group_start = Signal()
        m.d.comb += group_start.eq(first_group & first_pixel)

        # The hazard: this partial reads its row and an older one still has to write it.
        hazard = Signal()
        m.d.comb += hazard.eq(~first_group & _any(
            s["valid"] & ~s["last"] & (s["addr"] == position)
            for k, s in stages.items() if k < self.HAZARD_STAGES))

        biases = fifo.SyncFIFO(width=payload_width(self.bias_layout), depth=self.BIAS_QUEUE_DEPTH)
        m.submodules.bias_queue = biases
        m.d.comb += [
            self.i.ready.eq(advance & ~hazard & (~group_start | (self.bias.valid & biases.w_rdy))),
            self.bias.ready.eq(advance & ~hazard & group_start & self.i.valid & biases.w_rdy),
            take.eq(self.i.valid & self.i.ready),
            biases.w_en.eq(take & group_start),
            biases.w_data.eq(self.bias.payload.as_value()),
        ]
        with m.If(take):
            m.d.sync += position.eq(Mux(last_pixel, 0, position + 1))
        m.d.comb += [read.addr.eq(position), read.en.eq(advance)]

        # S1.
        s1_partial = Signal(self.partial_layout, reset_less=True)
        s1_first = Signal()
        with m.If(advance):
            m.d.sync += [
                stages[1]["valid"].eq(take), stages[1]["last"].eq(last_group),
                stages[1]["end"].eq(last_group & last_pixel), stages[1]["addr"].eq(position),
                s1_first.eq(first_group), s1_partial.eq(self.i.payload),
            ]

        # S2..S14: the flags move along.
        with m.If(advance):
            for k in range(2, self.latency + 1):
                for name, reg in stages[k].items():
                    m.d.sync += reg.eq(stages[k - 1][name])

        # S2: adder A's operands.
        s2_row = Signal(row_layout, reset_less=True)
        s2_partial = Signal(self.partial_layout, reset_less=True)
        with m.If(advance):
            m.d.sync += s2_partial.eq(s1_partial)
            for o in range(cpo):
                m.d.sync += s2_row[o].eq(Mux(s1_first, Const(NEGATIVE_ZERO, 32), read.data[o]))

        # Adder A; S8 writes its result back unless in the last frame.
        at8 = stages[self.HAZARD_STAGES]
        sums = []
        for o in range(cpo):
            add = m.submodules[f"acc{o}"] = FAdd(subnormals=sub)
            m.d.comb += [add.a.eq(s2_row[o]), add.b.eq(s2_partial[o]), add.en.eq(advance)]
            assert add.latency == self.HAZARD_STAGES - 2
            sums.append(add.o)
        m.d.comb += [write.addr.eq(at8["addr"]), write.en.eq(advance & at8["valid"] & ~at8["last"])]
        m.d.comb += [write.data[o].eq(sums[o]) for o in range(cpo)]

        # The bias for adder B: loaded from the queue as a last-frame partial moves to S8,
        # dropped from it with the group's last partial.
        at7 = stages[self.HAZARD_STAGES - 1]
        bias = Signal(self.bias_layout, reset_less=True)
        with m.If(advance & at7["valid"] & at7["last"]):
            m.d.sync += bias.as_value().eq(biases.r_data)
        m.d.comb += biases.r_en.eq(advance & at7["valid"] & at7["end"])

        # Adder B; its output register is the stage's output.
        for o in range(cpo):
            add = m.submodules[f"bias{o}"] = FAdd(subnormals=sub)
            m.d.comb += [add.a.eq(sums[o]), add.b.eq(bias[o]), add.en.eq(advance),
                         self.o.payload[o].eq(add.o)]
        out = stages[self.latency]
        m.d.comb += self.o.valid.eq(out["valid"] & out["last"])
        return m


def _any(terms):
    """The OR of ``terms`` (0 when there are none)."""
    result = Const(0, 1)
    for term in terms:
        result = result | term
    return result
