"""Stage ``add``: sum the partial sums of GI input groups on chip, add the bias, saturate.

An output group arrives as ``groups_in`` frames of ``frame_pixels`` partial sums, one
frame per input group. Frame ``gi`` adds into a buffer of one accumulator row per pixel
(read, add, write back: one read-modify-write per cycle); the last frame does not write
back but sends ``saturate(sum + bias)`` straight out, so the next output group starts on
the next cycle with no drain phase (docs/architecture.md, "Bias added once, at the end,
with saturation").

Pipeline (one register per line; the whole pipeline advances together when the output
register is empty or being read)::

    S1  partial; buffer read issued         (the bias loads with a group's first partial)
    S2  partial (+ bias in the last frame);  buffer row registered (the BRAM output register)
    S3  sum = previous rows (or 0 in the first frame) + S2, exact; written back unless last frame
    S4  saturate(sum) to the accumulator range: drives ``o``

A row written by S3 reaches the buffer three advances after its read was issued, so for
frames of 1, 2 or 3 pixels S2 would read a row before the previous frame's value of it
has landed. S3 and a two-deep history of the last written rows forward the newest value
by address instead.

Split accumulation (``KernelConfig.with_acc_split``): a layer of more input channels than
``imax`` runs as several calls over chunks of its input channels, the partial sums staying
in this buffer between calls. Two run-time flags, constant while a call runs:

* ``acc_resume``: each output group's first frame adds to the buffer's row instead of 0;
* ``acc_hold``: each output group's last frame writes its exact sum back instead of
  emitting ``saturate(sum + bias)``; nothing leaves on ``o`` (the bias is still taken, and
  ignored, so the parameter stream is the same as any call's) and ``held`` pulses once the
  group's last row is written.

While either is on, output group ``k`` of the call (0 .. ``passes`` - 1) has rows
``k * frame_pixels ..`` of its own, so one call can hold ``passes`` groups (the host keeps
``passes * frame_pixels <= max_frame_pixels``). Rows are stored modulo ``2**acc_bits``: the
host only splits a layer whose partial sums provably fit (docs/kernel.md).
"""

from __future__ import annotations

import math

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import (acc_layout, acc_signature, bias_layout, bias_signature, frame_counter,
                                         frame_pixels_shape, partial_layout, partial_signature)

__all__ = ["Add", "add_params_layout", "saturate"]


def add_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Add`: partials per frame and frames (input groups)
    per output group, both >= 1."""
    fields = {
        "frame_pixels": frame_pixels_shape(cfg),
        "groups_in": unsigned(math.ceil(cfg.imax / cfg.cpi).bit_length()),
    }
    if cfg.with_acc_split:   # only then: the others keep their Verilog
        fields.update(acc_hold=1, acc_resume=1, passes=unsigned(32))
    return data.StructLayout(fields)


def saturate(value, bits: int):
    """``value`` clamped to ``signed(bits)``: a check of the top bits, no wide comparator."""
    top = value[bits - 1:]
    fits = top.all() | ~top.any()
    lo, hi = Const(-(1 << (bits - 1)), signed(bits)), Const((1 << (bits - 1)) - 1, signed(bits))
    return Mux(fits, value[:bits].as_signed(), Mux(value[-1], lo, hi))


class Add(wiring.Component):
    """Partial sums of GI frames -> saturate(sum over frames + bias), one item per cycle.

    Members
    -------
    params : In(add_params_layout(cfg))
        ``frame_pixels`` (>= 1): partials per frame; ``groups_in`` (>= 1): frames (input
        groups) per output group. Constant while a call runs.
    i : In(partial_signature(cfg))
        Partial sums from ``mul``.
    bias : In(bias_signature(cfg))
        One item per output group, taken with the group's first partial.
    o : Out(acc_signature(cfg))
        ``reference.add_bias(sum, bias)`` for every pixel of each output group's last frame.
    held : Out(1)
        Only with ``cfg.with_acc_split``: one pulse per output group of an ``acc_hold`` call,
        when its last row is written back (the sequencer counts them instead of writes).

    ``latency`` is the number of cycles from a last-frame partial being taken to its
    result being offered on ``o`` when nothing stalls. The buffer holds
    ``cfg.max_frame_pixels`` rows of CPO x acc_bits bits.
    """

    latency = 4

    def __init__(self, cfg: KernelConfig):
        self._cfg = cfg
        self.partial_layout = partial_layout(cfg)
        self.bias_layout = bias_layout(cfg)
        self.acc_layout = acc_layout(cfg)
        self.params_layout = add_params_layout(cfg)
        members = {
            "params": In(self.params_layout),
            "i": In(partial_signature(cfg)),
            "bias": In(bias_signature(cfg)),
            "o": Out(acc_signature(cfg)),
        }
        if cfg.with_acc_split:
            members["held"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        m.submodules.buffer = buffer = Memory(shape=self.acc_layout, depth=cfg.max_frame_pixels, init=[])
        read = buffer.read_port()              # not transparent: S3/history forward instead
        write = buffer.write_port()

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Input: the pixel (buffer address) and the input group of the next partial; a
        # group's first partial needs a bias.
        take = Signal()
        position = Signal(frame_pixels_shape(cfg))
        first_pixel, last_pixel = frame_counter(m, take, self.params.frame_pixels, "pixel")
        first_group, last_group = frame_counter(m, take & last_pixel, self.params.groups_in, "group")
        group_start = Signal()
        m.d.comb += [
            group_start.eq(first_group & first_pixel),
            self.i.ready.eq(advance & (~group_start | self.bias.valid)),
            self.bias.ready.eq(advance & group_start & self.i.valid),
            take.eq(self.i.valid & self.i.ready),
        ]
        split = cfg.with_acc_split
        if split:
            # Hold/resume: output group k of the call owns rows k*frame_pixels.. (``region``
            # is its first row); otherwise every group uses rows 0..frame_pixels-1.
            hold, resume = self.params.acc_hold, self.params.acc_resume
            regional = hold | resume
            region = Signal.like(position)
            first_pass, last_pass = frame_counter(m, take & last_pixel & last_group, self.params.passes, "pass")
            next_region = Mux(regional & ~last_pass, position + 1, 0)
            with m.If(take & last_pixel):
                with m.If(last_group):
                    m.d.sync += [position.eq(next_region), region.eq(next_region)]
                with m.Else():
                    m.d.sync += position.eq(region)
            with m.Elif(take):
                m.d.sync += position.eq(position + 1)
        else:
            with m.If(take):
                m.d.sync += position.eq(Mux(last_pixel, 0, position + 1))
        m.d.comb += [read.addr.eq(position), read.en.eq(advance)]

        # S1. The bias changes only when a group's first partial enters S1, where it is
        # used, so every partial of the previous group has already moved on.
        bias = Signal(self.bias_layout)
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_end = Signal()   # the last partial of an output group
        s1_addr = Signal.like(position)
        s1_partial = Signal(self.partial_layout)
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(take),
                s1_first.eq(first_group & ~resume if split else first_group),
                s1_last.eq(last_group & ~hold if split else last_group),
                s1_addr.eq(position), s1_partial.eq(self.i.payload),
            ]
            with m.If(take & group_start):
                m.d.sync += bias.eq(self.bias.payload)
            if split:
                m.d.sync += s1_end.eq(last_group & last_pixel)

        # The rows written back: S3's (written at the next advance) and a history of
        # the two written before it, each with a flag saying whether it was written.
        sum_shape = signed(max(cfg.acc_bits, cfg.partial_bits, cfg.bias_bits) + 2)
        s3_valid, s3_last, s3_writes, s3_end = Signal(), Signal(), Signal(), Signal()
        s3_addr = Signal.like(position)
        s3_sum = Signal(data.ArrayLayout(sum_shape, cfg.cpo))
        s3_row = Signal(self.acc_layout)
        m.d.comb += s3_writes.eq(s3_valid & ~s3_last)
        for o in range(cfg.cpo):
            m.d.comb += s3_row[o].eq(s3_sum[o])  # exact: only rows without bias are kept
        written1, written1_addr, written1_row = Signal(), Signal.like(position), Signal(self.acc_layout)
        written2, written2_row = Signal(), Signal(self.acc_layout)
        with m.If(advance):
            m.d.sync += [
                written1.eq(s3_writes), written1_addr.eq(s3_addr), written1_row.eq(s3_row),
                written2.eq(written1), written2_row.eq(written1_row),
            ]

        # S2: partial plus the bias in the last frame; the buffer row as read. The read
        # misses a row written less than three advances before it; which newer row to
        # use instead is decided here by address, a stage early, so S3's adder starts
        # from a plain mux. (Matching addresses, not counting pixels, stays right when
        # stalls and bubbles change the distance.)
        addend_shape = signed(max(cfg.partial_bits, cfg.bias_bits) + 1)
        s2_valid, s2_first, s2_last, s2_end = Signal(), Signal(), Signal(), Signal()
        s2_addr = Signal.like(position)
        s2_addend = Signal(data.ArrayLayout(addend_shape, cfg.cpo))
        s2_row = Signal(self.acc_layout)
        s2_from_s3, s2_from_written1, s2_from_written2 = Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last),
                s2_addr.eq(s1_addr), s2_row.eq(read.data),
                # Where S2, S3 and written1 move to at this advance:
                s2_from_s3.eq(s2_valid & ~s2_last & (s2_addr == s1_addr)),
                s2_from_written1.eq(s3_writes & (s3_addr == s1_addr)),
                s2_from_written2.eq(written1 & (written1_addr == s1_addr)),
            ]
            for o in range(cfg.cpo):
                m.d.sync += s2_addend[o].eq(s1_partial[o] + Mux(s1_last, bias[o], 0))

        # S3: the exact sum of the newest row (0 in the first frame) and the addend.
        previous = Signal(self.acc_layout)
        with m.If(s2_first):
            m.d.comb += previous.eq(0)
        with m.Elif(s2_from_s3):
            m.d.comb += previous.eq(s3_row)
        with m.Elif(s2_from_written1):
            m.d.comb += previous.eq(written1_row)
        with m.Elif(s2_from_written2):
            m.d.comb += previous.eq(written2_row)
        with m.Else():
            m.d.comb += previous.eq(s2_row)
        with m.If(advance):
            m.d.sync += [s3_valid.eq(s2_valid), s3_last.eq(s2_last), s3_addr.eq(s2_addr)]
            if split:
                m.d.sync += [s2_end.eq(s1_end), s3_end.eq(s2_end)]
            for o in range(cfg.cpo):
                m.d.sync += s3_sum[o].eq(previous[o] + s2_addend[o])
        m.d.comb += [
            write.addr.eq(s3_addr), write.data.eq(s3_row), write.en.eq(advance & s3_writes),
        ]
        if split:   # a held group's last row is written (in an acc_hold call s3_last is never set)
            m.d.comb += self.held.eq(advance & s3_writes & s3_end)

        # S4: only the last frame's results leave the stage.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(s3_valid & s3_last)
            for o in range(cfg.cpo):
                m.d.sync += self.o.payload[o].eq(saturate(s3_sum[o], cfg.acc_bits))
        return m
