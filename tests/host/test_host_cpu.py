"""CPU layers in onnxruntime: how the plan's CPU steps become ONNX subgraphs, and their errors."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import CpuLayer, FpgaLayer, GraphError, Session, Transfer, to_fpga
from hlsinf.host.cpu import CpuPartition
from hlsinf.run import main

from tests.host.ort_reference import ort_run
from tests.host.test_host_pipeline import _quantize_static, _residual_model

CFG = KernelConfig(cpi=4, cpo=4, act_signed=True, imax=64, wmax=16, hmax=16)


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    rng = np.random.default_rng(12)
    calib = rng.uniform(0, 1, (8, 3, 10, 10)).astype(np.float32)
    qdq = _quantize_static(_residual_model(), calib, tmp_path_factory.mktemp("residual"), signed=True,
                           per_channel=True)
    return qdq, to_fpga(qdq, CFG)


def test_each_run_of_cpu_steps_between_accelerator_layers_is_one_subgraph(residual):
    qdq, plan = residual
    runs, current = [], []
    for step in plan.steps:
        if isinstance(step, FpgaLayer):
            runs.append(current)
            current = []
        elif isinstance(step, CpuLayer):
            current.append(step)
    runs = [r for r in runs + [current] if r]
    assert len(plan.partitions) == len(runs) == 3, plan.summary()
    assert f"in {len(runs)} onnxruntime subgraph(s)" in plan.summary()
    for k, (run, part) in enumerate(zip(runs, plan.partitions)):
        assert isinstance(part, CpuPartition) and {s.partition for s in run} == {k}
        assert [n.name for n in part.nodes] == [s.node.name for s in run]
        onnx.checker.check_model(part.model)
        assert [(o.domain, o.version) for o in part.model.opset_import] == [("", plan.graph.opset)]
        produced = {o for n in part.nodes for o in n.outputs}
        assert not set(part.inputs) & produced and set(part.outputs) <= produced
    first, middle, last = plan.partitions
    assert first.inputs == plan.graph.inputs and first.outputs == [plan.fpga_layers[0].input]
    # the skip branch's DequantizeLinear runs before conv3 and feeds the Add two layers later
    assert middle.outputs == last.inputs[1:] and last.outputs == plan.graph.outputs
    # quantised weights keep their DequantizeLinear inside the subgraph (onnxruntime fuses them)
    ops = [n.op_type for n in last.model.graph.node]
    assert ops.count("DequantizeLinear") > sum(n.op == "DequantizeLinear" for n in last.nodes)
    # transfers from the device come first in a run, so a run's CPU steps are consecutive
    for k, step in enumerate(plan.steps):
        if isinstance(step, Transfer) and step.direction == "from_device":
            assert not isinstance(plan.steps[k - 1], CpuLayer)


def test_a_subgraph_computes_what_onnxruntime_computes_in_the_whole_model(residual):
    """Fed onnxruntime's own values of its inputs, the last subgraph gives onnxruntime's output, and
    a tensor inside it can be fetched (a session with that extra output)."""
    qdq, plan = residual
    last = plan.partitions[-1]
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 10, 10)).astype(np.float32)
    want = ort_run(qdq, x, fetch=last.inputs + ["add"])
    got = last.session().run(last.outputs, {t: want[t] for t in last.inputs})
    np.testing.assert_allclose(got[0], want[plan.graph.outputs[0]], rtol=0, atol=1e-6)
    session = Session(plan)
    out = session.run(x, fetch=["add"])
    assert ("add",) in [extra for _, extra in session.cpu_sessions]
    assert out["add"].shape == want["add"].shape
    assert np.abs(out["add"] - want["add"]).max() <= 2 * float(
        numpy_helper.to_array(next(t for t in qdq.graph.initializer if t.name == "conv5_out_scale")))


def test_large_initializers_reach_onnxruntime_as_arrays_with_the_same_result(residual, monkeypatch):
    from hlsinf.host import cpu
    qdq, plan = residual
    monkeypatch.setattr(cpu, "EXTERNAL_ELEMENTS", 1)
    outside = to_fpga(qdq, CFG)
    last = outside.partitions[-1]
    assert last.external and all(t.data_location == onnx.TensorProto.EXTERNAL for t in last.model.graph.initializer)
    x = np.random.default_rng(4).uniform(0, 1, (2, 3, 10, 10)).astype(np.float32)
    fetch = [layer.output for layer in plan.fpga_layers]
    a, b = Session(plan).run(x, fetch=fetch), Session(outside).run(x, fetch=fetch)
    for name in fetch + plan.graph.outputs:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _int16_relu_model():
    nodes = [helper.make_node("Cast", ["input"], ["i16"], to=TensorProto.INT16, name="to_int16"),
             helper.make_node("Relu", ["i16"], ["r"], name="relu16"),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="to_float")]
    g = helper.make_graph(nodes, "int16relu", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_an_operator_onnxruntime_cannot_run_is_a_plan_time_error_naming_the_node(tmp_path, capsys):
    """ONNX allows Relu on int16; onnxruntime's CPU provider has no kernel for it."""
    model = _int16_relu_model()
    with pytest.raises(GraphError, match=r"node 'relu16' \(Relu\): onnxruntime cannot run it on the CPU"):
        to_fpga(model, CFG)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((1, 3, 4, 4), np.float32))
    assert main([str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: node 'relu16' (Relu): onnxruntime cannot run it") and "Traceback" not in err
