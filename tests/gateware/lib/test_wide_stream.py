"""Payloads wider than one netlist wire: a 32x32 weight set (73,728 bits) travels in slices.

The slice width is lowered here (``MAX_WIRE_BITS``) so small, fast configurations take the
sliced path, and their streams are checked bit for bit against the same oracles as the
unsliced ones (``test_weights``, ``test_mul``).
"""

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.lib import data, stream
from amaranth.sim import Simulator

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib import wide_stream
from hlsinf.gateware.lib.streams import weight_set_layout
from hlsinf.gateware.memory.weights import ParameterLoader
from hlsinf.gateware.lib.wide_stream import WideSignature, stream_signature

from tests.gateware.stages import test_mul
from tests.gateware.memory import test_weights


def test_signature_slices_cover_the_payload():
    layout = weight_set_layout(KernelConfig(cpi=32, cpo=32))
    assert layout.size == 73728
    sig = stream_signature(layout)
    assert isinstance(sig, WideSignature)
    assert sig.bounds[0][0] == 0 and sig.bounds[-1][1] == layout.size
    assert all(hi - lo <= wide_stream.MAX_WIRE_BITS for lo, hi in sig.bounds)
    assert all(a[1] == b[0] for a, b in zip(sig.bounds, sig.bounds[1:]))
    assert isinstance(stream_signature(weight_set_layout(KernelConfig(cpi=16, cpo=16))), stream.Signature)


def test_payload_view_reads_and_assigns_every_slice():
    sig = WideSignature(data.ArrayLayout(8, 10000))          # 80,000 bits in 3 slices
    port = sig.create()
    assert len(sig.bounds) == 3
    values = [(7 * k + 3) % 256 for k in range(10000)]
    seen = {}

    async def bench(ctx):
        ctx.set(port.payload, values)
        whole = sum(v << (8 * k) for k, v in enumerate(values))
        seen["slices"] = [ctx.get(getattr(port, f"payload{k}")) for k in range(3)]
        seen["want"] = [(whole >> lo) & ((1 << (hi - lo)) - 1) for lo, hi in sig.bounds]
        seen["lane"] = ctx.get(port.payload[9999])

    sim = Simulator(Module())
    sim.add_testbench(bench)
    sim.run()
    assert seen["slices"] == seen["want"]
    assert seen["lane"] == values[9999]


def test_32x32_weight_loader_converts():
    # Before slicing, Amaranth's netlist stopped here with an AssertionError (a 73,728-bit
    # memory port and signal). The RTLIL must also stay under the back end's wire limit.
    text = rtlil.convert(ParameterLoader(KernelConfig(cpi=32, cpo=32)))
    widths = [int(line.split()[2]) for line in text.splitlines() if line.strip().startswith("wire width")]
    assert max(widths) <= 1 << 16


@pytest.fixture
def narrow_wires(monkeypatch):
    monkeypatch.setattr(wide_stream, "MAX_WIRE_BITS", 100)


def test_weight_loader_with_sliced_sets(narrow_wires):
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    assert isinstance(stream_signature(weight_set_layout(cfg)), WideSignature)   # 1,152 bits, 12 slices
    test_weights.test_items_match_memory(cfg, True, 0.3)


def test_mul_with_sliced_sets(narrow_wires):
    cfg = test_mul.small_config(4, 4, True)
    rng = np.random.default_rng(7)
    windows, weights = test_mul.make_frames(cfg, 3, frames=6, rng=rng)
    got, _, dut = test_mul.simulate(cfg, windows, weights, stall=0.3, seed=3)
    assert isinstance(dut.weights.signature.flip(), WideSignature)
    np.testing.assert_array_equal(got, test_mul.expected_partials(windows, weights))


@pytest.mark.slow
def test_32x32_kernel_exports():
    # The whole 32x32 kernel (a minute of export): every wire within the Verilog limit.
    from hlsinf.gateware.kernel import kernel_verilog
    text = kernel_verilog(KernelConfig(cpi=32, cpo=32))
    widths = [int(w) for w in re.findall(r"^\s*(?:wire|reg|input|output)\s*(?:signed\s*)?\[(\d+):0\]", text, re.M)]
    assert widths and max(widths) < 1 << 16
