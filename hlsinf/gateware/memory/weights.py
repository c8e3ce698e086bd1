"""Loader of the per-frame parameters on the ``gmem_w`` bundle: weight sets, bias, multipliers.

Weights, bias and multipliers share one AXI master, so their reads come back in the order
they were issued. Each command carries a :class:`~hlsinf.gateware.sequencer.WeightKind`; the kinds of
the commands in flight wait in a small FIFO, and the bytes of each command are routed to the
converter of its kind, which cuts them into items:

* a weight set (:func:`~hlsinf.gateware.lib.streams.weight_set_layout`, the layout of
  ``[CPO][CPI][3][3]`` in memory) for the mul stage;
* a bias item (:func:`~hlsinf.gateware.lib.streams.bias_layout`) for the add stage;
* a multiplier item (:func:`~hlsinf.gateware.lib.streams.mult_layout`), cut from CPO
  32-bit words, for the relu stage.

Every output has a FIFO of ``depth`` assembled items behind its converter, so the next
frame's weight set is read and assembled while the current frame computes and waits in the
FIFO: the mul stage takes it on the cycle after the current frame's last window. Reads are
issued in dependency order (per output group: bias, multipliers, weight sets) and every
consumer takes its items in that order, so a full FIFO only ever waits for a consumer that
already has everything it needs: the loader cannot deadlock the pipeline.

With ``KernelConfig.with_depthwise`` the loader has a ``depthwise`` input (constant while a call
runs): then the bytes of a ``WEIGHTS`` command are an output group's ``[CPO][3][3]`` depthwise
weights, cut by a converter of their own and placed on the diagonal of a weight set (output
lane ``o``, input lane ``o``; zeros elsewhere). The mul stage is unchanged: with the other
weights zero its lane ``o`` sums lane ``o`` of the window times its 9 weights.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.memory.axi import ADDR_WIDTH, DATA_WIDTH
from hlsinf.config import KernelConfig
from hlsinf.gateware.sequencer import BN_KIND, TABLE_KIND, WeightKind, weight_command_layout, weight_kind_shape
from hlsinf.gateware.memory.read import BytesToItems, ReadMaster
from hlsinf.gateware.lib.streams import (bias_layout, bias_signature, bn_layout, bn_signature, mult_layout, mult_signature,
                                         table_layout, table_signature, weight_set_layout, weight_set_signature)
from hlsinf.gateware.lib.wide_stream import WideSignature, payload_width, stream_signature

__all__ = ["ParameterLoader"]


class _ItemFifo(wiring.Component):
    """A stream FIFO of ``depth`` items of ``shape`` (``fifo.SyncFIFOBuffered`` underneath).

    An item wider than :data:`~.wide_stream.MAX_WIRE_BITS` is kept in several FIFOs side by
    side, moved together (a 32x32 weight set is 73,728 bits; Amaranth's netlist holds at most
    65,536 per memory port). The slices see the same enables, so their flags stay equal.
    That is why the FIFOs are wired by hand rather than through their ``w_stream`` and
    ``r_stream``: each holds a slice of the payload, and only the first one's flags are used.
    """

    def __init__(self, shape, depth: int):
        self.shape, self.depth = shape, depth
        self.stream_signature = stream_signature(shape)
        super().__init__({"i": In(self.stream_signature), "o": Out(self.stream_signature)})

    def elaborate(self, platform):
        m = Module()
        signature = self.stream_signature
        bounds = signature.bounds if isinstance(signature, WideSignature) else [(0, payload_width(self.shape))]
        slices = len(bounds)
        i_bits = self.i.payload.as_value()
        queues = []
        for k, (lo, hi) in enumerate(bounds):
            q = fifo.SyncFIFOBuffered(width=hi - lo, depth=self.depth)
            m.submodules[f"fifo{k}" if slices > 1 else "fifo"] = q
            m.d.comb += [q.w_data.eq(i_bits[lo:hi]), q.w_en.eq(self.i.valid), q.r_en.eq(self.o.ready)]
            queues.append(q)
        # The payload in one assignment: a netlist driver of slices is as wide as the signal.
        m.d.comb += [self.o.payload.eq(Cat(*(q.r_data for q in queues))),
                     self.i.ready.eq(queues[0].w_rdy), self.o.valid.eq(queues[0].r_rdy)]
        return m


class ParameterLoader(wiring.Component):
    """Reads weight sets, bias and multipliers on one AXI master and hands them out as items.

    Parameters
    ----------
    cfg : KernelConfig
    depth : int
        Assembled items buffered per output (weight sets read ahead of the mul stage).
    data_width : int
        Width of the AXI data bus.

    Members
    -------
    cmd : In(stream.Signature(weight_command_layout()))
        From the sequencer. Lengths are whole items of the command's kind.
    depthwise : In(1)
        Only with ``cfg.with_depthwise``: weight commands carry depthwise weights (see above).
        Constant while a call runs.
    weights, bias, mult : Out(weight_set_signature(cfg)), Out(bias_signature(cfg)), Out(mult_signature(cfg))
        From :mod:`hlsinf.gateware.lib.streams`.
    axi : Out(AXI4Signature)
        The ``gmem_w`` master (reads only).
    error : Out(1)
        Sticky: a read returned an error response.
    resp : Out(2)
        The first error response (SLVERR, DECERR).
    clear : In(1)
        Resets ``error`` and ``resp`` (at the start of a call).
    """

    #: Commands issued whose bytes have not all come back; bounds the kind FIFO.
    COMMANDS_IN_FLIGHT = 16

    def __init__(self, cfg: KernelConfig, *, depth: int = 2, data_width: int = DATA_WIDTH,
                 addr_width: int = ADDR_WIDTH, max_outstanding: int = 8):
        if not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f"ParameterLoader depth = {depth!r} is out of range: allowed >= 1")
        self.cfg, self.depth = cfg, depth
        self.master = ReadMaster(data_width=data_width, addr_width=addr_width, max_outstanding=max_outstanding)
        members = {
            "cmd": In(stream.Signature(weight_command_layout(cfg))),
            "weights": Out(weight_set_signature(cfg)),
            "bias": Out(bias_signature(cfg)),
            "mult": Out(mult_signature(cfg)),
        }
        if cfg.with_depthwise:
            members["depthwise"] = In(1)
        if "bn" in cfg.post_ops:     # post-op bn: its per-group parameters
            members["bn"] = Out(bn_signature(cfg))
        if "table" in cfg.post_ops:  # post-op table: its entries, once per call
            members["table"] = Out(table_signature(cfg))
        members.update({
            "axi": Out(self.master.axi.signature),
            "error": Out(1),
            "resp": Out(2),
            "clear": In(1),
        })
        super().__init__(members)
        self.data_width = data_width

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.master = master = self.master
        # The kind FIFO is wired by hand: it is written together with the master's command
        # (a fork of ``cmd``) and read on each command's last beat, not item by item.
        kind_shape = weight_kind_shape(cfg)
        m.submodules.kinds = kinds = fifo.SyncFIFOBuffered(width=Shape.cast(kind_shape).width,
                                                           depth=self.COMMANDS_IN_FLIGHT)
        word_layout = data.ArrayLayout(unsigned(32), cfg.cpo)
        converters = {
            WeightKind.WEIGHTS: BytesToItems(weight_set_layout(cfg), data_width=self.data_width),
            WeightKind.BIAS: BytesToItems(bias_layout(cfg), data_width=self.data_width),
            WeightKind.MULT: BytesToItems(word_layout, data_width=self.data_width),
        }
        buffers = {
            WeightKind.WEIGHTS: _ItemFifo(weight_set_layout(cfg), self.depth),
            WeightKind.BIAS: _ItemFifo(bias_layout(cfg), self.depth),
            WeightKind.MULT: _ItemFifo(mult_layout(cfg), self.depth),
        }
        if "bn" in cfg.post_ops:
            converters[BN_KIND] = BytesToItems(bn_layout(cfg), data_width=self.data_width)
            buffers[BN_KIND] = _ItemFifo(bn_layout(cfg), self.depth)
        dw_convert = None
        if cfg.with_depthwise:
            dw_layout = data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), 9), cfg.cpo)
            m.submodules.convert_depthwise = dw_convert = BytesToItems(dw_layout, data_width=self.data_width)
        if "table" in cfg.post_ops:     # no item FIFO: the stage takes every item at once
            converters[TABLE_KIND] = BytesToItems(table_layout(cfg), data_width=self.data_width)
        for kind in converters:
            label = kind.name.lower() if isinstance(kind, WeightKind) else {BN_KIND: "bn", TABLE_KIND: "table"}[kind]
            m.submodules[f"convert_{label}"] = converters[kind]
            if kind in buffers:
                m.submodules[f"buffer_{label}"] = buffers[kind]

        # Commands go to the master and their kinds to the FIFO, together.
        cmd = self.cmd
        m.d.comb += [
            master.cmd.payload.addr.eq(cmd.payload.addr),
            master.cmd.payload.length.eq(cmd.payload.length),
            master.cmd.valid.eq(cmd.valid & kinds.w_rdy),
            kinds.w_data.eq(cmd.payload.kind),
            kinds.w_en.eq(cmd.valid & master.cmd.ready),
            cmd.ready.eq(master.cmd.ready & kinds.w_rdy),
        ]

        # Beats of a command go to the converter of its kind; its last beat retires the kind.
        kind = Signal(WeightKind)
        m.d.comb += kind.eq(kinds.r_data)
        beat = master.o
        for k, converter in converters.items():
            if kind_shape is WeightKind:
                is_k = (kind == k) if isinstance(k, WeightKind) else (kinds.r_data == k)
            else:      # 3-bit kinds: compare all bits (``kind`` holds the low two)
                is_k = kinds.r_data == (k.value if isinstance(k, WeightKind) else k)
            if k == WeightKind.WEIGHTS and dw_convert is not None:
                is_dw = is_k & self.depthwise
                m.d.comb += [dw_convert.i.payload.eq(beat.payload),
                             dw_convert.i.valid.eq(beat.valid & kinds.r_rdy & is_dw)]
                with m.If(is_dw):
                    m.d.comb += beat.ready.eq(kinds.r_rdy & dw_convert.i.ready)
                is_k = is_k & ~self.depthwise
            m.d.comb += [converter.i.payload.eq(beat.payload),
                         converter.i.valid.eq(beat.valid & kinds.r_rdy & is_k)]
            with m.If(is_k):
                m.d.comb += beat.ready.eq(kinds.r_rdy & converter.i.ready)
        m.d.comb += kinds.r_en.eq(beat.valid & beat.ready & beat.payload.last)

        if dw_convert is None:
            wiring.connect(m, converters[WeightKind.WEIGHTS].o, buffers[WeightKind.WEIGHTS].i)
        else:
            # Dense sets pass as they are; depthwise weights go on the diagonal of a set.
            dense, dw_items, sets = converters[WeightKind.WEIGHTS].o, dw_convert.o, buffers[WeightKind.WEIGHTS].i
            dw = self.depthwise
            m.d.comb += [sets.valid.eq(Mux(dw, dw_items.valid, dense.valid)),
                         dense.ready.eq(sets.ready & ~dw), dw_items.ready.eq(sets.ready & dw)]
            lanes_layout = weight_set_layout(cfg).elem_shape        # [CPI][9] of one output lane
            for o in range(cfg.cpo):
                diagonal = Signal(lanes_layout, name=f"diagonal{o}")   # zero but for input lane o
                m.d.comb += [diagonal[o].eq(dw_items.payload[o]),
                             sets.payload[o].eq(Mux(dw, diagonal, dense.payload[o]))]
        wiring.connect(m, converters[WeightKind.BIAS].o, buffers[WeightKind.BIAS].i)
        # Multipliers are 32-bit words in memory; the relu stage takes mult_bits of each.
        words = converters[WeightKind.MULT].o
        mult_in = buffers[WeightKind.MULT].i
        m.d.comb += [mult_in.valid.eq(words.valid), words.ready.eq(mult_in.ready)]
        for lane in range(cfg.cpo):
            m.d.comb += mult_in.payload[lane].eq(words.payload[lane][:cfg.mult_bits])

        wiring.connect(m, buffers[WeightKind.WEIGHTS].o, wiring.flipped(self.weights))
        wiring.connect(m, buffers[WeightKind.BIAS].o, wiring.flipped(self.bias))
        wiring.connect(m, buffers[WeightKind.MULT].o, wiring.flipped(self.mult))
        if BN_KIND in converters:
            wiring.connect(m, converters[BN_KIND].o, buffers[BN_KIND].i)
            wiring.connect(m, buffers[BN_KIND].o, wiring.flipped(self.bn))
        if TABLE_KIND in converters:
            wiring.connect(m, converters[TABLE_KIND].o, wiring.flipped(self.table))
        wiring.connect(m, master.axi, wiring.flipped(self.axi))
        m.d.comb += [self.error.eq(master.error), self.resp.eq(master.resp), master.clear.eq(self.clear)]
        return m
