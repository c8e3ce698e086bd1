"""Verilog export of the kernel, without initialisers on all-zero memories.

Amaranth's RTLIL back-end writes an initialiser for every memory, an all-zero one too,
one net per bit: for the 66,564 x 256-bit accumulation buffer of the default 8x8 build
that is 17 million nets and about 100 s of export. An initialiser is also what keeps a
memory out of UltraRAM, which cannot be initialised. Every memory of the kernel is
written before it is read (FIFOs, line buffers, the accumulation buffer), so all-zero
initialisers are simply left out; the RTL tests run the Verilog with random initial
memory and register contents (Verilator ``--x-initial unique`` and
``+verilator+rand+reset+2``) so that a design that did rely on them would fail there.
"""

from __future__ import annotations

import contextlib

from amaranth.back import rtlil, verilog

__all__ = ["to_verilog"]


@contextlib.contextmanager
def _no_zero_memory_initialisers():
    original = rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    rtlil.ModuleEmitter.emit_memory = emit_memory
    try:
        yield
    finally:
        rtlil.ModuleEmitter.emit_memory = original


def to_verilog(component, *, name: str) -> str:
    """Verilog of ``component`` with top module ``name``; all-zero memories get no initialiser."""
    with _no_zero_memory_initialisers():
        return verilog.convert(component, name=name, emit_src=False)
