"""Post-op stage ``table``: any element-wise function of one activation, as a lookup table.

Per lane, on a requantised activation ``v`` (``reference.table_lookup``)::

    t[v & (2**act_bits - 1)]          when the call's ``table`` register is 1, else v

The table (``2**act_bits`` entries of ``act_bits``, loaded from the ``t`` pointer on
``gmem_w`` once per call) is written into CPO copies, one per lane, so every lane reads
its own entry each cycle: a pixel per cycle. Each copy is ``TABLE_BANKS`` memories of
``2**act_bits / TABLE_BANKS`` entries with an asynchronous read (LUTRAM: 64-deep banks
are one RAM64X1 per bit), entry ``e`` in bank ``e % TABLE_BANKS`` at ``e // TABLE_BANKS``,
so an item of ``TABLE_BANKS`` entries from the loader is written in one cycle (the table
loads in ``2**act_bits / TABLE_BANKS`` cycles) and a lane reads all banks at ``v // banks``
then picks one by ``v % banks``.

``start`` (the control slave's pulse when a call is accepted) marks the table as not
loaded; pixels of a call with ``table`` on wait at the input until its last item has been
written (the new call's pixels may reach the stage before the loader has delivered all of
its table). Tables arrive only after ``start`` and the previous call's pixels have all left
by then (``ap_done`` waits for the output writes), so no pixel is ever looked up in a
half-written table. With ``table`` off the stage never waits and takes no items.

Pipeline: 2-entry input FIFO (``ready`` a register), step 1 the activation and the enable,
step 2 the output register (the bank reads and the bank mux in front of it); a global stall.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import (act_shape, fifo_on_stream, pixel_layout, pixel_signature,
                                         table_items, table_signature, TABLE_BANKS)

__all__ = ["Table", "table_params_layout"]


def table_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Table`: its enable register."""
    return data.StructLayout({"table": 1})


class Table(wiring.Component):
    """Lookup-table post-op: activations in, activations out, one item per cycle.

    Members
    -------
    params : In(table_params_layout(cfg))
    start : In(1)
        A call begins: the next ``table_items(cfg)`` items are its table.
    entries : In(table_signature(cfg))
        The table, ``TABLE_BANKS`` entries an item, in entry order; always accepted.
    i : In(pixel_signature(cfg, cfg.cpo))
    o : Out(pixel_signature(cfg, cfg.cpo))

    ``latency``: cycles from an item offered on ``i`` to its result taken from ``o``
    (unstalled, table loaded): the input FIFO plus two steps.
    """

    latency = 3

    def __init__(self, cfg: KernelConfig):
        self.cfg = cfg
        self.params_layout = table_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "start": In(1),
            "entries": In(table_signature(cfg)),
            "i": In(pixel_signature(cfg, cfg.cpo)),
            "o": Out(pixel_signature(cfg, cfg.cpo)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        cpo, banks = cfg.cpo, TABLE_BANKS
        bank_bits = exact_log2(banks)
        depth = table_items(cfg)
        m = Module()

        # Loading: one item of `banks` entries a cycle, at the next address.
        address = Signal(range(depth))
        loaded = Signal()
        m.d.comb += self.entries.ready.eq(1)
        mems = []
        for b in range(banks):
            mem = memory.Memory(shape=act_shape(cfg), depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(address), wp.data.eq(self.entries.payload[b]),
                         wp.en.eq(self.entries.valid)]
            mems.append(mem)
        with m.If(self.entries.valid):
            m.d.sync += address.eq(Mux(address == depth - 1, 0, address + 1))
            with m.If(address == depth - 1):
                m.d.sync += loaded.eq(1)
        with m.If(self.start):
            m.d.sync += [address.eq(0), loaded.eq(0)]

        # Lookups.
        pixels = fifo_on_stream(m, "in_fifo", wiring.flipped(self.i), depth=2)
        advance = Signal()
        take = Signal()
        on = self.params.table
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready),
                     take.eq(advance & pixels.valid & (~on | loaded)),
                     pixels.ready.eq(take)]
        s1_valid = Signal()
        s1_v = Signal(pixel_layout(cfg, cpo))
        s1_on = Signal()
        with m.If(advance):
            m.d.sync += [s1_valid.eq(take), s1_v.eq(pixels.payload), s1_on.eq(on),
                         self.o.valid.eq(s1_valid)]
        for k in range(cpo):
            bits = Value.cast(s1_v[k])
            reads = []
            for b, mem in enumerate(mems):
                rp = mem.read_port(domain="comb")
                m.d.comb += rp.addr.eq(bits[bank_bits:])
                reads.append(rp.data)
            entry = Signal(act_shape(cfg), name=f"entry{k}")
            with m.Switch(bits[:bank_bits]):
                for b in range(banks):
                    with m.Case(b):
                        m.d.comb += entry.eq(reads[b])
            with m.If(advance):
                m.d.sync += self.o.payload[k].eq(Mux(s1_on, entry, s1_v[k]))
        return m
