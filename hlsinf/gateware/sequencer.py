"""The call controller: from the latched arguments of one call to the memory commands of its
frames, and ``done`` once every output byte is acknowledged.

The dataflow stages count positions inside frames themselves (docs/architecture.md), so the
sequencer's job is only to

* derive the frame geometry of the call once, at start (:func:`geometry_layout`), which the
  kernel hands to the stages as their constant ``params``;
* issue the read commands of the input frames (``in_cmd``), of the bias, multipliers and
  weight sets (``w_cmd``, tagged by :class:`WeightKind`) and the write commands of the output
  groups (``out_cmd``), each list from its own counter so every master runs ahead of the
  others as far as its buffers allow;
* count the acknowledged output writes and pulse ``done`` after the last one.

Semantics are :class:`hlsinf.reference.CallArgs` exactly: for each output group ``og`` of
``o_first .. o_first+o_count-1``, the GI input frames at ``x + (gi*H*W + read_offset)*CPI``
of ``rows*W*CPI`` bytes each, the bias and multipliers of ``og``, its GI weight sets, and
``out_rows*out_cols*CPO`` bytes written at ``y + (og*out_plane + write_offset)*CPO`` (bytes
count ``act_bits/8`` per lane). With ``cache_pixels``, a tile of ``GI*rows*W`` pixels that
fits is read for the first output group only (``geometry.cached``): the kernel's input cache
replays it for the others.

In a kernel built with ``KernelConfig.with_depthwise``, a call with ``depthwise`` set streams one
frame per output group instead: output group ``og`` reads input group ``og`` (at ``x + (og*H*W +
read_offset)*CPI``, addresses stepping by a plane from group to group), ``groups_in`` is 1 (the
add stage sums one frame), the tile is never cached (every group reads a different one), and
the weights of ``og`` are its ``CPO*9`` depthwise weights at ``w + og*CPO*9`` (``[G][CPO][3][3]``).

In a kernel built with ``KernelConfig.with_acc_split``, a call with ``acc_hold`` keeps its sums
in the add stage for the next call: it issues no output writes and no multiplier, bn, table or
residual reads (the bias is still read: the add stage takes one per group and ignores it), and
its ``done`` counts the add stage's ``held`` pulses, which the kernel ORs into ``out_ack``.
``acc_resume`` only reaches the add stage (``geometry.acc_resume``).

In a kernel built with ``KernelConfig.with_pointwise``, a call with ``pointwise`` set reads frames
of super-pixels (``9*CPI`` lanes each, ``[GS][H][W][9][CPI]``): ``groups_in`` is ``GS =
ceil(ceil(I/CPI) / 9)`` (a restoring division by nine, one bit a cycle, in state ``SUPER``), the
input offsets and lengths count ``9*CPI`` lanes a pixel, every pixel is an output
(``conv_rows = rows``), and the tile is never cached (the input cache holds CPI-lane pixels). The
weight sets are addressed as ever, GS of them per output group.

Products of arguments (``H*W``, ``rows*W`` ...) are formed once per call by shift-and-add
:class:`~hlsinf.gateware.lib.serial_multiplier.SerialMultiplier` s, side by side, one bit of the usually
small operand per cycle: the DSP blocks are all the MAC array's, and a few tens of cycles
once per call cost nothing against calls of thousands of cycles. Multiplying by the
constant size of a weight set (``9 * 2**k`` bytes) is two shifts and one addition. The
sequencer waits for the products; every per-frame address is then one addition.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum as amaranth_enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from hlsinf.gateware.control import args_layout
from hlsinf.gateware.memory.axi import ADDR_WIDTH, LENGTH_WIDTH, CommandLayout
from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.gateware.lib.serial_multiplier import SerialMultiplier

__all__ = ["WeightKind", "BN_KIND", "TABLE_KIND", "weight_kind_shape", "geometry_layout", "command_layout",
           "weight_command_layout", "Sequencer", "weight_set_bytes", "depthwise_set_bytes"]

ADDRESS_BITS = ADDR_WIDTH
LENGTH_BITS = LENGTH_WIDTH


class WeightKind(amaranth_enum.Enum, shape=2):
    """What a read on the ``gmem_w`` bundle returns; bytes are routed by it."""
    WEIGHTS = 0
    BIAS = 1
    MULT = 2


#: The ``gmem_w`` kind of the post-op ``bn`` parameters, in a kernel built with it: the
#: enum's free value rather than a member, so that a kernel without it keeps its Verilog
#: (Amaranth writes every member's name into it).
BN_KIND = 3
#: The ``gmem_w`` kind of the post-op ``table`` (its lookup table, read once per call). The
#: 2-bit field is full, so a kernel built with the table has a 3-bit kind (and only then:
#: the others keep their Verilog).
TABLE_KIND = 4


def weight_kind_shape(cfg: KernelConfig | None = None):
    """Shape of a ``gmem_w`` read's kind: :class:`WeightKind` (2 bits), or 3 bits in a kernel
    built with the post-op ``table`` (:data:`TABLE_KIND`)."""
    return unsigned(3) if cfg is not None and "table" in cfg.post_ops else WeightKind


def command_layout() -> data.StructLayout:
    """One memory transfer: a byte address and a length in bytes (the AXI engines' commands)."""
    return CommandLayout(ADDRESS_BITS, LENGTH_BITS)


def weight_command_layout(cfg: KernelConfig | None = None) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(ADDRESS_BITS), "length": unsigned(LENGTH_BITS),
                              "kind": weight_kind_shape(cfg)})


def weight_set_bytes(cfg: KernelConfig) -> int:
    """Bytes of one ``[CPO][CPI][3][3]`` weight set in memory."""
    return cfg.cpo * cfg.cpi * 9 * cfg.weight_bits // 8


def geometry_layout(cfg: KernelConfig) -> data.StructLayout:
    """Per-call values every stage's ``params`` are cut from, constant while a call runs."""
    rows = unsigned(bits_for(cfg.max_padded_rows))
    cols = unsigned(bits_for(cfg.max_padded_cols))
    pixels = unsigned(bits_for(cfg.max_frame_pixels))
    # Written rows, columns and pixels grow by the upsize factor (KernelConfig.max_upsize).
    up_log = cfg.max_upsize.bit_length() - 1
    out_rows_shape = unsigned(bits_for(cfg.max_padded_rows) + up_log)
    out_cols_shape = unsigned(bits_for(cfg.max_padded_cols) + up_log)
    out_pixels_shape = unsigned(bits_for(cfg.max_frame_pixels) + 2 * up_log)
    fields = {
        "groups_in": unsigned(bits_for(math.ceil(cfg.imax / cfg.cpi))),
        "rows": rows,                    # input rows of a frame
        "cols": cols,                    # input columns of a frame (W)
        "pad_top": unsigned(bits_for(MAX_PAD)),
        "pad_bottom": unsigned(bits_for(MAX_PAD)),
        "pad_left": unsigned(bits_for(MAX_PAD)),
        "pad_right": unsigned(bits_for(MAX_PAD)),
        "stride": unsigned(2),
        "padded_rows": rows,
        "padded_cols": cols,
        "conv_rows": rows,
        "conv_cols": cols,
        "frame_pixels": pixels,          # convolution outputs of a frame
        "pool": unsigned(2),
        "out_rows": out_rows_shape,
        "out_cols": out_cols_shape,
        "out_pixels": out_pixels_shape,  # pixels written per output group
        "shift": unsigned(bits_for(cfg.max_shift)),
        # Signed and one bit wider than an activation: both uint8 and int8 bounds fit.
        "clip_lo": signed(cfg.act_bits + 1),
        "clip_hi": signed(cfg.act_bits + 1),
        "relu": 1,
        "use_mult": 1,
        # Input cache: the tile (GI frames) is read once and replayed when it fits.
        "tile_pixels": unsigned(32),     # GI * rows * W
        "passes": unsigned(32),          # output groups of the call (o_count)
        "cached": 1,
    }
    if cfg.max_upsize > 1:
        fields["upsize_log"] = unsigned(2)   # log2 of the nearest-upsize factor (0: none)
    if cfg.with_depthwise:   # depthwise call (kernels built with it only, so that others keep their Verilog)
        fields["depthwise"] = 1
    if cfg.with_acc_split:   # split accumulation across calls (stages/add.py)
        fields["acc_hold"] = 1
        fields["acc_resume"] = 1
    if cfg.with_pointwise:   # pointwise (1x1, super-pixel) call, likewise
        fields["pointwise"] = 1
    return data.StructLayout(fields)


def depthwise_set_bytes(cfg: KernelConfig) -> int:
    """Bytes of one output group's ``[CPO][3][3]`` depthwise weights in memory."""
    return cfg.cpo * 9 * cfg.weight_bits // 8


def _times_depthwise_bytes(value, cfg: KernelConfig):
    """``value * depthwise_set_bytes(cfg)`` as shifts and one addition (nine times a power of two)."""
    shift = exact_log2(depthwise_set_bytes(cfg) // 9)
    return ((value << 3) + value) << shift


def _times_nine(value):
    """``9 * value`` as one shift and one addition."""
    return (value << 3) + value


def _times_set_bytes(value, cfg: KernelConfig):
    """``value * weight_set_bytes(cfg)`` as ``((value << 3) + value) << k``: no multiplier.

    A weight set is ``CPO*CPI*9*weight_bits/8`` bytes, nine times a power of two.
    """
    shift = exact_log2(weight_set_bytes(cfg) // 9)
    return ((value << 3) + value) << shift


class Sequencer(wiring.Component):
    """Derives a call's geometry at ``start`` and issues its memory commands.

    Members
    -------
    args : In(args_layout())
        Arguments latched by the control slave, constant from ``start`` to ``done``: the
        layout of :func:`hlsinf.gateware.control.args_layout` (one field per register of
        the map, signed where it says so).
    start : In(1)
        One-cycle pulse: begin a call (ignored while busy).
    busy : Out(1)
        High from ``start`` to ``done``.
    done : Out(1)
        One-cycle pulse after the last output write is acknowledged.
    geometry : Out(geometry_layout(cfg))
        Derived per-call values, registered; they change only at ``start``.
    in_cmd, out_cmd : Out(stream.Signature(command_layout()))
        Input frame reads on ``gmem_in``; output group writes on ``gmem_out``.
    w_cmd : Out(stream.Signature(weight_command_layout(cfg)))
        Reads on ``gmem_w``: first the lookup table (post-op ``table``, when on), then per
        output group: bias, multipliers (when ``use_mult``), bn parameters (when ``bn``),
        then its GI weight sets as one transfer.
    out_ack : In(1)
        One pulse per write command whose every byte is acknowledged (``BRESP`` seen).
    in_taken : In(1)
        One pulse per input pixel taken by the first stage of the dataflow. ``done`` also
        waits for all ``o_count * GI * rows * W`` of them: at stride 2 a last input row no
        window uses may still be on its way when the last write is acknowledged, and the
        next call must not change the parameters under it.
    """

    def __init__(self, cfg: KernelConfig, *, cache_pixels: int = 0):
        if not (isinstance(cache_pixels, int) and cache_pixels >= 0):
            raise ValueError(f"Sequencer cache_pixels = {cache_pixels!r} is out of range: allowed >= 0")
        self.cfg, self.cache_pixels = cfg, cache_pixels
        members = {
            "args": In(args_layout(cfg)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "geometry": Out(geometry_layout(cfg)),
            "in_cmd": Out(stream.Signature(command_layout())),
            "w_cmd": Out(stream.Signature(weight_command_layout(cfg))),
            "out_cmd": Out(stream.Signature(command_layout())),
            "out_ack": In(1),
            "in_taken": In(1),
        }
        if "residual_add" in cfg.post_ops:
            # Post-op residual_add: per output group, the operand pixels of its convolution
            # output, from r + (o * r_plane + r_offset) * CPO (while the call enables the add).
            members["r_cmd"] = Out(stream.Signature(command_layout()))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        a, g = self.args, self.geometry
        # Bytes per input / output pixel are powers of two: multiplying by them is a shift.
        # (4-bit lanes: two per byte, CPI and CPO >= 2 by KernelConfig.)
        cpi_log = exact_log2(cfg.cpi * cfg.act_bits // 8)
        cpo_log = exact_log2(cfg.cpo * cfg.act_bits // 8)
        bias_group_log = exact_log2(cfg.cpo * cfg.bias_bits // 8)
        mult_group_log = exact_log2(cfg.cpo * 4)

        # Arguments the command generators need beyond the geometry, copied at start.
        count_bits = 32
        o_first = Signal(count_bits)
        o_count = Signal(count_bits)
        out_plane = Signal(32)
        write_offset = Signal(32)
        height = Signal(32)

        # Products, formed once per call by serial multipliers; ``b``, the operand iterated
        # over, is the narrower one (or, for o_first * out_plane, the usually small one).
        def product(name, a, b):
            mul = m.submodules[name] = SerialMultiplier(len(a), len(b))
            m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
            return mul
        # Started in CONV, from values latched at start.
        plane_in = product("plane_in", height, g.cols)              # H*W
        tile_in = product("tile_in", g.rows, g.cols)                # rows*W
        w_first = product("w_first", o_first, g.groups_in)          # sets before o_first
        out_first = product("out_first", out_plane, o_first)        # pixels before o_first
        frames = product("frames", o_count, g.groups_in)            # input frames of the call
        gi_rows = product("gi_rows", g.rows, g.groups_in)           # GI*rows ...
        tile = product("tile", gi_rows.product, g.cols)             # ... then GI*rows*W
        m.d.comb += tile.start.eq(gi_rows.done)
        depthwise = cfg.with_depthwise
        if depthwise:   # input planes before o_first: a depthwise call starts at input group o_first
            in_first = product("in_first", plane_in.product, o_first)
            m.d.comb += in_first.start.eq(plane_in.done)
            dw = g.depthwise
        pointwise = cfg.with_pointwise
        if pointwise:
            pw = g.pointwise
            # GS = ceil(ceil(I/CPI) / 9) by restoring division, one quotient bit a cycle (state SUPER).
            # ceil(I/CPI) is up to 9*ceil(imax/CPI) (reference.pointwise_imax): 4 bits more than groups_in.
            div_bits = bits_for(9 * math.ceil(cfg.imax / cfg.cpi))
            div_n = Signal(div_bits)
            div_q = Signal(div_bits)
            div_rem = Signal(4)
            div_left = Signal(range(div_bits + 1))
        # Started in POOL, once conv_rows/cols are registered: the convolution outputs, and
        # the pixels written, from the same values halved when pooling (a 2:1 mux).
        pooled = g.pool != 0
        out_rows = Mux(pooled, g.conv_rows >> 1, g.conv_rows)
        out_cols = Mux(pooled, g.conv_cols >> 1, g.conv_cols)
        if cfg.max_upsize > 1:
            out_rows, out_cols = out_rows << g.upsize_log, out_cols << g.upsize_log
        frame = product("frame", g.conv_rows, g.conv_cols)
        out_pixels = product("out_px", out_rows, out_cols)
        started_in_conv = [plane_in, tile_in, w_first, out_first, frames, gi_rows]
        with_res = "residual_add" in cfg.post_ops
        if with_res:
            r_plane = Signal(32)
            r_offset = Signal(32)
            r_first = product("r_first", r_plane, o_first)        # operand pixels before o_first
            started_in_conv.append(r_first)
        started_in_pool = [frame, out_pixels]
        products_busy = Signal()
        busy_terms = gi_rows.done | tile.busy | Cat(mul.busy for mul in started_in_conv + started_in_pool).any()
        if depthwise:
            busy_terms = busy_terms | plane_in.done | in_first.busy
        m.d.comb += products_busy.eq(busy_terms)

        # Bases and steps of the three address sequences.
        in_base = Signal(ADDRESS_BITS)
        in_step = Signal(ADDRESS_BITS)
        frame_bytes = Signal(LENGTH_BITS)
        w_base = Signal(ADDRESS_BITS)
        w_group_bytes = Signal(LENGTH_BITS)
        b_base = Signal(ADDRESS_BITS)
        m_base = Signal(ADDRESS_BITS)
        out_base = Signal(ADDRESS_BITS)
        out_step = Signal(ADDRESS_BITS)
        out_bytes = Signal(LENGTH_BITS)

        # Command generator state.
        in_active = Signal()
        # Counters count down to a compare with a constant: no adder or wide comparator
        # between them and the handshake that steps them.
        in_groups_left = Signal(count_bits)
        in_frames_left = Signal.like(g.groups_in)
        in_addr = Signal(ADDRESS_BITS)
        w_active = Signal()
        w_groups_left = Signal(count_bits)
        w_kind = Signal(weight_kind_shape(cfg))
        with_table = "table" in cfg.post_ops
        b_addr = Signal(ADDRESS_BITS)
        m_addr = Signal(ADDRESS_BITS)
        w_addr = Signal(ADDRESS_BITS)
        with_bn = "bn" in cfg.post_ops
        if with_bn:   # post-op bn: one item per output group after the multipliers
            bn_group_log = exact_log2(cfg.cpo * 8)
            n_base = Signal(ADDRESS_BITS)
            n_addr = Signal(ADDRESS_BITS)
            bn_on = Signal()
        if with_res:
            r_on = Signal()
            r_base = Signal(ADDRESS_BITS)
            r_step = Signal(ADDRESS_BITS)
            r_bytes = Signal(LENGTH_BITS)
            r_active = Signal()
            r_groups_left = Signal(count_bits)
            r_addr = Signal(ADDRESS_BITS)
        out_active = Signal()
        out_groups_left = Signal(count_bits)
        out_addr = Signal(ADDRESS_BITS)
        acks_left = Signal(count_bits)
        frames_left = Signal(count_bits)             # input frames not yet fully taken
        frame_pixels_left = Signal(32)               # pixels of the current one
        frame_in = Signal(32)                        # rows * W

        def shift_by_stride(value):
            return Mux(g.stride == 2, value >> 1, value)

        split = cfg.with_acc_split
        # An acc_hold call emits nothing: no multipliers, bn parameters, residual operand or table.
        def emits(flag):
            return flag & (a.acc_hold == 0) if split else flag
        with m.FSM(name="call") as call:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        g.groups_in.eq(Mux(a.depthwise != 0, 1, (a.I + (cfg.cpi - 1)) >> exact_log2(cfg.cpi))
                                       if depthwise else (a.I + (cfg.cpi - 1)) >> exact_log2(cfg.cpi)),
                        g.rows.eq(a.rows), g.cols.eq(a.W),
                        g.pad_top.eq(a.pad_top), g.pad_bottom.eq(a.pad_bottom),
                        g.pad_left.eq(a.pad_left), g.pad_right.eq(a.pad_right),
                        g.stride.eq(Mux(a.stride == 2, 2, 1)),
                        g.padded_rows.eq(a.rows + a.pad_top + a.pad_bottom),
                        g.padded_cols.eq(a.W + a.pad_left + a.pad_right),
                        g.pool.eq(a.pool), g.shift.eq(a.shift),
                        g.clip_lo.eq(a.clip_lo), g.clip_hi.eq(a.clip_hi),
                        g.relu.eq(a.relu != 0), g.use_mult.eq(emits(a.use_mult != 0)),
                        o_first.eq(a.o_first), o_count.eq(a.o_count), out_plane.eq(a.out_plane),
                        g.passes.eq(a.o_count), g.cached.eq(0),
                        write_offset.eq(a.write_offset), height.eq(a.H),
                        in_base.eq(a.x + (a.read_offset << cpi_log)),
                        b_base.eq(a.b + (a.o_first << bias_group_log)),
                        m_base.eq(a.m + (a.o_first << mult_group_log)),
                        out_step.eq(a.out_plane << cpo_log),
                    ]
                    if cfg.max_upsize > 1:
                        m.d.sync += g.upsize_log.eq(Mux(a.upsize == 4, 2, Mux(a.upsize == 2, 1, 0)))
                    if with_bn:
                        m.d.sync += [n_base.eq(a.n + (a.o_first << bn_group_log)), bn_on.eq(emits(a.bn != 0))]
                    if depthwise:
                        m.d.sync += dw.eq(a.depthwise != 0)
                    if split:
                        m.d.sync += [g.acc_hold.eq(a.acc_hold != 0), g.acc_resume.eq(a.acc_resume != 0)]
                    if with_res:
                        m.d.sync += [r_plane.eq(a.r_plane), r_offset.eq(a.r_offset), r_on.eq(emits(a.residual_add != 0)),
                                     r_step.eq(a.r_plane << cpo_log)]
                    m.next = "CONV"
                    if pointwise:
                        # Super-pixels are 9*CPI lanes: offsets count nine times the bytes.
                        m.d.sync += [pw.eq(a.pointwise != 0),
                                     div_n.eq((a.I + (cfg.cpi - 1)) >> exact_log2(cfg.cpi)),
                                     div_q.eq(0), div_rem.eq(0), div_left.eq(div_bits)]
                        with m.If(a.pointwise != 0):
                            m.d.sync += in_base.eq(a.x + (_times_nine(a.read_offset) << cpi_log))
                            m.next = "SUPER"
            if pointwise:
                with m.State("SUPER"):
                    top = div_n[-1]
                    shifted = Cat(top, div_rem)              # (rem << 1) | next dividend bit
                    fits = shifted >= 9
                    rem_next = Mux(fits, shifted - 9, shifted)
                    q_next = Cat(fits, div_q)
                    m.d.sync += [div_n.eq(div_n << 1), div_rem.eq(rem_next), div_q.eq(q_next),
                                 div_left.eq(div_left - 1)]
                    with m.If(div_left == 1):
                        m.d.sync += g.groups_in.eq(q_next + (rem_next != 0))
                        m.next = "CONV"
            with m.State("CONV"):
                # (padded - 3) // stride + 1: validated arguments keep padded >= 3.
                m.d.sync += [g.conv_rows.eq(shift_by_stride(g.padded_rows - 3) + 1),
                             g.conv_cols.eq(shift_by_stride(g.padded_cols - 3) + 1)]
                if pointwise:       # 1x1, stride 1, no padding: every pixel is an output
                    with m.If(pw):
                        m.d.sync += [g.conv_rows.eq(g.rows), g.conv_cols.eq(g.cols)]
                m.d.comb += [mul.start.eq(1) for mul in started_in_conv]
                m.next = "POOL"
            with m.State("POOL"):
                m.d.sync += [g.out_rows.eq(out_rows), g.out_cols.eq(out_cols)]
                m.d.comb += [mul.start.eq(1) for mul in started_in_pool]
                m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                # Every multiplier is busy from the cycle after its start, and the tile's
                # starts on the done pulse of GI*rows: no product is missed here.
                with m.If(~products_busy):
                    # Offsets first, pointers added in the next cycle: one carry chain each.
                    m.d.sync += [
                        g.frame_pixels.eq(frame.product), g.out_pixels.eq(out_pixels.product),
                        in_step.eq(plane_in.product << cpi_log),
                        frame_bytes.eq(tile_in.product << cpi_log),
                        w_base.eq(Mux(dw, _times_depthwise_bytes(o_first, cfg), _times_set_bytes(w_first.product, cfg))
                                  if depthwise else _times_set_bytes(w_first.product, cfg)),
                        w_group_bytes.eq(Mux(dw, depthwise_set_bytes(cfg), _times_set_bytes(g.groups_in, cfg))
                                         if depthwise else _times_set_bytes(g.groups_in, cfg)),
                        out_base.eq((out_first.product + write_offset) << cpo_log),
                        out_bytes.eq(out_pixels.product << cpo_log),
                        frame_in.eq(tile_in.product),
                        g.tile_pixels.eq(tile.product),
                        g.cached.eq((tile.product <= self.cache_pixels) if self.cache_pixels else 0),
                    ]
                    if depthwise:
                        # Each output group reads its own input group: nothing to replay.
                        with m.If(dw):
                            m.d.sync += [g.cached.eq(0),
                                         in_base.eq(in_base + (in_first.product << cpi_log))]
                    if pointwise:
                        # Frames of super-pixels (9*CPI lanes), read again for every output group.
                        with m.If(pw):
                            m.d.sync += [g.cached.eq(0),
                                         in_step.eq(_times_nine(plane_in.product) << cpi_log),
                                         frame_bytes.eq(_times_nine(tile_in.product) << cpi_log)]
                    if with_res:
                        m.d.sync += [r_base.eq((r_first.product + r_offset) << cpo_log),
                                     r_bytes.eq(frame.product << cpo_log)]
                    m.next = "BASES"
            with m.State("BASES"):
                m.d.sync += [w_base.eq(self.args.w + w_base), out_base.eq(self.args.y + out_base)]
                if with_res:
                    m.d.sync += r_base.eq(self.args.r + r_base)
                m.next = "START"
            with m.State("START"):
                m.d.sync += [
                    in_active.eq(o_count != 0), in_groups_left.eq(o_count), in_frames_left.eq(g.groups_in),
                    in_addr.eq(in_base),
                    w_active.eq(o_count != 0), w_groups_left.eq(o_count),
                    w_kind.eq(Mux((self.args.table != 0) & ~g.acc_hold if split else self.args.table != 0,
                                  TABLE_KIND, WeightKind.BIAS.value) if with_table
                              else WeightKind.BIAS),
                    b_addr.eq(b_base), m_addr.eq(m_base), w_addr.eq(w_base),
                    *([n_addr.eq(n_base)] if with_bn else []),
                    out_active.eq((o_count != 0) & ~g.acc_hold if split else o_count != 0),
                    out_groups_left.eq(o_count), out_addr.eq(out_base),
                    acks_left.eq(o_count),
                    frames_left.eq(frames.product), frame_pixels_left.eq(frame_in),
                ]
                if with_res:
                    m.d.sync += [r_active.eq(r_on & (o_count != 0)), r_groups_left.eq(o_count), r_addr.eq(r_base)]
                m.next = "RUN"
            with m.State("RUN"):
                idle = ~in_active & ~w_active & ~out_active & (acks_left == 0) & (frames_left == 0)
                if with_res:
                    idle = idle & ~r_active
                with m.If(idle):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~call.ongoing("IDLE"))

        # Input frames: for each output group, the GI planes of the tile.
        m.d.comb += [self.in_cmd.valid.eq(in_active),
                     self.in_cmd.payload.addr.eq(in_addr),
                     self.in_cmd.payload.length.eq(frame_bytes)]
        with m.If(self.in_cmd.valid & self.in_cmd.ready):
            with m.If(in_frames_left == 1):
                m.d.sync += [in_frames_left.eq(g.groups_in),
                             in_addr.eq(Mux(dw, in_addr + in_step, in_base) if depthwise else in_base),
                             in_groups_left.eq(in_groups_left - 1)]
                # With the tile in the input cache, only the first output group reads it.
                with m.If((in_groups_left == 1) | g.cached):
                    m.d.sync += in_active.eq(0)
            with m.Else():
                m.d.sync += [in_frames_left.eq(in_frames_left - 1), in_addr.eq(in_addr + in_step)]

        # Parameters: per output group its bias, its multipliers, then its weight sets.
        m.d.comb += [self.w_cmd.valid.eq(w_active), self.w_cmd.payload.kind.eq(w_kind)]
        with m.Switch(w_kind):
            with m.Case(WeightKind.BIAS):
                m.d.comb += [self.w_cmd.payload.addr.eq(b_addr),
                             self.w_cmd.payload.length.eq(cfg.cpo * cfg.bias_bits // 8)]
            with m.Case(WeightKind.MULT):
                m.d.comb += [self.w_cmd.payload.addr.eq(m_addr),
                             self.w_cmd.payload.length.eq(cfg.cpo * 4)]
            if with_bn:
                with m.Case(BN_KIND):
                    m.d.comb += [self.w_cmd.payload.addr.eq(n_addr),
                                 self.w_cmd.payload.length.eq(cfg.cpo * 8)]
            if with_table:
                with m.Case(TABLE_KIND):
                    m.d.comb += [self.w_cmd.payload.addr.eq(self.args.t),
                                 self.w_cmd.payload.length.eq((1 << cfg.act_bits) * cfg.act_bits // 8)]
            with m.Default():
                m.d.comb += [self.w_cmd.payload.addr.eq(w_addr),
                             self.w_cmd.payload.length.eq(w_group_bytes)]
        with m.If(self.w_cmd.valid & self.w_cmd.ready):
            with m.Switch(w_kind):
                after_mult = (Mux(bn_on, Const(BN_KIND, 2), Const(WeightKind.WEIGHTS.value, 2)) if with_bn
                              else WeightKind.WEIGHTS)
                with m.Case(WeightKind.BIAS):
                    m.d.sync += [b_addr.eq(b_addr + (1 << bias_group_log)),
                                 w_kind.eq(Mux(g.use_mult, WeightKind.MULT, after_mult))]
                with m.Case(WeightKind.MULT):
                    m.d.sync += [m_addr.eq(m_addr + (1 << mult_group_log)), w_kind.eq(after_mult)]
                if with_bn:
                    with m.Case(BN_KIND):
                        m.d.sync += [n_addr.eq(n_addr + (1 << bn_group_log)), w_kind.eq(WeightKind.WEIGHTS)]
                if with_table:
                    with m.Case(TABLE_KIND):       # once per call, before the first group
                        m.d.sync += w_kind.eq(WeightKind.BIAS)
                with m.Default():
                    m.d.sync += [w_addr.eq(w_addr + w_group_bytes), w_kind.eq(WeightKind.BIAS),
                                 w_groups_left.eq(w_groups_left - 1)]
                    with m.If(w_groups_left == 1):
                        m.d.sync += w_active.eq(0)

        # Output groups.
        m.d.comb += [self.out_cmd.valid.eq(out_active),
                     self.out_cmd.payload.addr.eq(out_addr),
                     self.out_cmd.payload.length.eq(out_bytes)]
        with m.If(self.out_cmd.valid & self.out_cmd.ready):
            m.d.sync += [out_addr.eq(out_addr + out_step), out_groups_left.eq(out_groups_left - 1)]
            with m.If(out_groups_left == 1):
                m.d.sync += out_active.eq(0)
        if with_res:
            # Operand pixels: one command per output group, addressed like the output.
            m.d.comb += [self.r_cmd.valid.eq(r_active),
                         self.r_cmd.payload.addr.eq(r_addr),
                         self.r_cmd.payload.length.eq(r_bytes)]
            with m.If(self.r_cmd.valid & self.r_cmd.ready):
                m.d.sync += [r_addr.eq(r_addr + r_step), r_groups_left.eq(r_groups_left - 1)]
                with m.If(r_groups_left == 1):
                    m.d.sync += r_active.eq(0)
        with m.If(self.in_taken):
            with m.If(frame_pixels_left == 1):
                m.d.sync += [frame_pixels_left.eq(frame_in), frames_left.eq(frames_left - 1)]
            with m.Else():
                m.d.sync += frame_pixels_left.eq(frame_pixels_left - 1)
        with m.If(self.out_ack):
            m.d.sync += acks_left.eq(acks_left - 1)
        return m
