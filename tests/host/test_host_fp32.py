"""Float ONNX models planned and run directly on an fp32 kernel (no quantisation).

Per accelerator layer the device output must equal ``reference_float.kernel_call`` on the
same input, bit for bit (the plan's calls, run by the oracle directly, not through the
device); the whole network must be close to onnxruntime float32. It cannot be equal: the
kernel sums the CPI x 9 products of a group by its fixed adder tree and the groups left to
right (docs/numbers.md), onnxruntime by MLAS's blocked sgemm order, and its average pool
divides where the kernel multiplies by 0.25. Each order rounds about log2(terms) times at
float32's 2^-24, so a value differs by a few ulps of the largest partial sum; we require
|got - want| <= 1e-4 * |want| + 1e-5 * max|want| (relative 1e-4, and an absolute floor for
values that cancel to near zero, where a relative bound means nothing).
"""

import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice, Session, to_fpga
from hlsinf.host.plan import CpuLayer, FpgaLayer, PlanError
from hlsinf.reference import pack_activations, unpack_activations
from hlsinf.reference_float import kernel_call, to_bits

from tests.host.ort_reference import ort_run

torch = pytest.importorskip("torch")

CFG = KernelConfig.from_format("fp32", cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
RTOL, ATOL_SHARE = 1e-4, 1e-5


def assert_close(got, want, what=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bound = RTOL * np.abs(want) + ATOL_SHARE * max(np.abs(want).max(), 1e-30)
    worst = np.abs(got - want) - bound
    assert worst.max() <= 0, f"{what}: {np.sum(worst > 0)} values beyond the bound, worst excess {worst.max():.3g}"


class SmallFloatCNN(torch.nn.Module):
    """Channels that are not multiples of 4; conv/relu/maxpool, stride 2 + clip, 1x1,
    pad 2 + average pool, a 2x2 kernel, then Flatten + Gemm (CPU)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.c2 = nn.Conv2d(5, 6, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(6, 7, 1)
        self.c4 = nn.Conv2d(7, 9, 3, padding=2)
        self.c5 = nn.Conv2d(9, 6, 2)
        self.fc = nn.Linear(6 * 3 * 3, 10)

    def forward(self, x):
        F = torch.nn.functional
        x = F.max_pool2d(F.relu(self.c1(x)), 2)          # 5 x 10 x 10
        x = torch.clamp(self.c2(x), -1.0, 2.0)           # 6 x 5 x 5 (Clip)
        x = F.relu(self.c3(x))                           # 7 x 5 x 5 (1x1 in the 3x3 slot)
        x = F.avg_pool2d(self.c4(x), 2)                  # 9 x 7 x 7 -> 9 x 3 x 3
        x = F.relu(self.c5(F.pad(x, (0, 1, 0, 1))))      # 2x2 kernel: 6 x 3 x 3
        return self.fc(torch.flatten(x, 1))


def export(model, shape, folding=True) -> onnx.ModelProto:
    torch.manual_seed(0)
    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), torch.zeros(shape), f, opset_version=13, dynamo=False,
                          do_constant_folding=folding, input_names=["input"], output_names=["output"])
    return onnx.load_from_string(f.getvalue())


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return export(SmallFloatCNN(), (1, 3, 20, 20))


def oracle_layer(layer: FpgaLayer, cfg: KernelConfig, x: np.ndarray) -> np.ndarray:
    """The layer's calls run by ``reference_float.kernel_call`` on a C x H x W float32 input."""
    assert not layer.columns
    o, ho, wo = layer.out_shape
    x_mem = pack_activations(np.asarray(x, np.float32), cfg.cpi, np.float32)
    out = np.zeros(-(-o // cfg.cpo) * cfg.cpo * ho * wo, np.float32)
    for args in layer.calls:
        kernel_call(cfg, args, x_mem, layer.weights, layer.bias, out)
    return unpack_activations(out, o, ho, wo, cfg.cpo)


def conv_macs(plan):
    """(MACs of all Conv nodes, MACs of those inside accelerator layers)."""
    g = plan.graph
    on_acc = {n for layer in plan.fpga_layers for n in layer.nodes}
    total = acc = 0
    for node in g.nodes:
        if node.op != "Conv":
            continue
        o, i, kh, kw = g.initializers[node.inputs[1]].shape if node.inputs[1] in g.initializers else \
            g.const(node.inputs[1]).shape
        _, _, ho, wo = g.shapes[node.outputs[0]]
        macs = o * i * kh * kw * ho * wo
        total += macs
        acc += macs if node.name in on_acc else 0
    return total, acc


def check_plan_against_oracle_and_ort(model, plan, x, cfg=CFG):
    """Per layer bit-exact against the oracle on the device's own inputs; outputs close to onnxruntime."""
    fetch = [layer.output for layer in plan.fpga_layers]
    inputs = [layer.source for layer in plan.fpga_layers if layer.source != plan.graph.inputs[0]]
    got = Session(plan, ReferenceDevice(cfg)).run(x, fetch=list(dict.fromkeys(fetch + inputs)))
    got[plan.graph.inputs[0]] = x
    want = ort_run(model, x, fetch=fetch)
    for k in range(x.shape[0]):
        for layer in plan.fpga_layers:
            exact = oracle_layer(layer, cfg, got[layer.source][k])
            np.testing.assert_array_equal(to_bits(got[layer.output][k], canonical=True),
                                          to_bits(exact, canonical=True), err_msg=f"{layer.name}, image {k}")
    for layer in plan.fpga_layers:
        assert_close(got[layer.output], want[layer.output], layer.name)
    for name in plan.graph.outputs:
        assert_close(got[name], want[name], name)
    return got


def test_small_float_cnn_runs_on_the_fp32_kernel(small_model):
    plan = to_fpga(small_model, CFG)
    print(plan.summary())
    assert len(plan.fpga_layers) == 5
    total, acc = conv_macs(plan)
    assert total == acc > 0                                # 100 % of the conv MACs on the accelerator
    cpu_ops = {s.node.op for s in plan.steps if isinstance(s, CpuLayer)}
    assert "Gemm" in cpu_ops and "Conv" not in cpu_ops
    # the layers fused what follows them: relu+maxpool, clip, relu, avgpool, relu
    pools = [layer.pool for layer in plan.fpga_layers]
    assert pools == [1, 0, 0, 2, 0]
    assert plan.fpga_layers[0].calls[0].relu and plan.fpga_layers[1].calls[0].clip_lo is not None
    assert plan.fpga_layers[2].kernel == (1, 1) and plan.fpga_layers[4].kernel == (2, 2)
    assert plan.fpga_layers[1].stride == 2
    assert "fp32" in plan.summary()
    # the padding before the 2x2 conv is its own Pad node on the CPU (torch exports F.pad so)
    x = np.random.default_rng(1).standard_normal((2, 3, 20, 20)).astype(np.float32)
    check_plan_against_oracle_and_ort(small_model, plan, x)


def test_row_tiles_column_tiles_and_group_ranges_give_the_same_bits(small_model):
    """Tiling changes which call computes a value, never how: every output is the same tree sum."""
    x = np.random.default_rng(2).standard_normal((1, 3, 20, 20)).astype(np.float32)
    whole = to_fpga(small_model, CFG)
    tiled = to_fpga(small_model, CFG, max_rows=2, max_cols=4, max_out_groups=1)
    assert any(layer.columns for layer in tiled.fpga_layers)
    assert sum(len(layer.calls) for layer in tiled.fpga_layers) > 3 * len(tiled.fpga_layers)
    fetch = [layer.output for layer in whole.fpga_layers]
    a = Session(whole, ReferenceDevice(CFG)).run(x, fetch=fetch)
    b = Session(tiled, ReferenceDevice(CFG)).run(x, fetch=fetch)
    for name in fetch + whole.graph.outputs:
        np.testing.assert_array_equal(to_bits(a[name]), to_bits(b[name]), err_msg=name)


def test_the_oracle_device_gives_the_fast_devices_bits(small_model):
    plan = to_fpga(small_model, CFG, max_rows=3)
    x = np.random.default_rng(3).standard_normal((1, 3, 20, 20)).astype(np.float32)
    fetch = [layer.output for layer in plan.fpga_layers]
    a = Session(plan, ReferenceDevice(CFG)).run(x, fetch=fetch)
    b = Session(plan, ReferenceDevice(CFG, oracle=True)).run(x, fetch=fetch)
    for name in fetch:
        np.testing.assert_array_equal(to_bits(a[name]), to_bits(b[name]), err_msg=name)


def test_torch_export_without_constant_folding_plans_the_same():
    torch.manual_seed(0)
    model = export(SmallFloatCNN(), (1, 3, 20, 20), folding=False)
    plan = to_fpga(model, CFG)
    total, acc = conv_macs(plan)
    assert total == acc > 0
    x = np.random.default_rng(4).standard_normal((1, 3, 20, 20)).astype(np.float32)
    check_plan_against_oracle_and_ort(model, plan, x)


# ONNX node-test style graphs ---------------------------------------------------------------------

def graph_model(nodes, inits, in_shape, out_name, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m)
    m.graph.output[0].CopyFrom(next(v for v in inferred.graph.value_info if v.name == out_name)
                               if out_name not in [o.name for o in inferred.graph.output] or
                               not inferred.graph.output[0].type.tensor_type.HasField("shape")
                               else inferred.graph.output[0])
    onnx.checker.check_model(m)
    return m


def _w(rng, o, i, k):
    return rng.standard_normal((o, i, k, k)) * np.sqrt(2 / (i * k * k))


def test_maxpool_then_relu_and_clip_fuse_before_the_pool():
    """Relu/Clip after a max pool commute with it (non-decreasing), so they fuse; Clip with
    only a lower bound (opset 11+ inputs) and Clip with both."""
    rng = np.random.default_rng(5)
    inits = {"w1": _w(rng, 6, 3, 3), "b1": rng.standard_normal(6) * 0.1, "lo": np.float32(-0.5),
             "w2": _w(rng, 5, 6, 3), "hi": np.float32(0.75), "lo2": np.float32(-0.25)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p1"], ["r1"]),
             helper.make_node("Clip", ["r1", "lo"], ["k1"]),
             helper.make_node("Conv", ["k1", "w2"], ["c2"], pads=[0, 1, 2, 1], strides=[2, 2]),
             helper.make_node("Clip", ["c2", "lo2", "hi"], ["y"])]
    model = graph_model(nodes, inits, (1, 3, 13, 11), "y")
    plan = to_fpga(model, CFG)
    assert [len(layer.nodes) for layer in plan.fpga_layers] == [4, 2]
    assert plan.fpga_layers[0].pool == 1 and plan.fpga_layers[0].calls[0].relu
    assert conv_macs(plan)[0] == conv_macs(plan)[1]
    x = np.random.default_rng(6).standard_normal((2, 3, 13, 11)).astype(np.float32)
    check_plan_against_oracle_and_ort(model, plan, x)


def test_relu_after_an_average_pool_stays_on_the_cpu_and_unsupported_convs_say_why():
    rng = np.random.default_rng(7)
    inits = {"w1": _w(rng, 4, 2, 3), "w2": _w(rng, 4, 4, 5), "w3": _w(rng, 4, 2, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[2, 2, 2, 2]),          # 5x5: CPU
             helper.make_node("Conv", ["c2", "w3"], ["y"], pads=[1, 1, 1, 1], group=2)]  # grouped: CPU
    model = graph_model(nodes, inits, (1, 2, 8, 8), "y")
    plan = to_fpga(model, CFG)
    assert len(plan.fpga_layers) == 1 and plan.fpga_layers[0].pool == 2
    reasons = {s.node.op + ":" + (s.reason or "") for s in plan.steps if isinstance(s, CpuLayer)}
    assert any("Relu" in r for r in reasons)
    assert any("5x5 is larger than 3x3" in r for r in reasons) and any("group=2" in r for r in reasons)
    x = np.random.default_rng(8).standard_normal((1, 2, 8, 8)).astype(np.float32)
    check_plan_against_oracle_and_ort(model, plan, x)


def test_1x1_with_padding_goes_in_the_slot_up_to_pad_1():
    """A 1x1 conv with padding 1 needs 2 zero rows in the 3x3 slot (fits); padding 2 needs 3."""
    rng = np.random.default_rng(9)
    inits = {"w1": _w(rng, 3, 3, 1), "w2": _w(rng, 3, 3, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["y"], pads=[2, 2, 2, 2])]
    model = graph_model(nodes, inits, (1, 3, 6, 6), "y")
    plan = to_fpga(model, CFG)
    assert len(plan.fpga_layers) == 1
    assert "the kernel pads at most 2" in next(s.reason for s in plan.steps if isinstance(s, CpuLayer))
    x = np.random.default_rng(10).standard_normal((1, 3, 6, 6)).astype(np.float32)
    check_plan_against_oracle_and_ort(model, plan, x)


def test_too_many_input_channels_is_a_plan_error_or_the_cpu():
    rng = np.random.default_rng(11)
    model = graph_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                        {"w": _w(rng, 4, 80, 3)}, (1, 80, 4, 4), "y")
    with pytest.raises(PlanError, match="80 input channels, more than the kernel's imax = 64"):
        to_fpga(model, CFG)
    plan = to_fpga(model, CFG, cpu_fallback=True)
    assert not plan.fpga_layers


# What an fp32 kernel does not take, and the integer kernel with a float model ------------------

def test_quantised_model_or_calibration_on_an_fp32_kernel_is_an_error(small_model):
    from hlsinf.host import quantize
    cal = np.random.default_rng(12).standard_normal((2, 3, 20, 20)).astype(np.float32)
    with pytest.raises(PlanError, match="the kernel is fp32: it runs the float model as it is"):
        to_fpga(small_model, CFG, calibration=cal)
    qdq = quantize(small_model, cal, KernelConfig(cpi=4, cpo=4, act_signed=True))
    with pytest.raises(PlanError, match="the kernel is fp32 and the model is quantised .*QuantizeLinear"):
        to_fpga(qdq, CFG)


def test_a_float_model_on_an_integer_kernel_runs_its_convs_on_the_cpu(small_model):
    plan = to_fpga(small_model, KernelConfig(cpi=4, cpo=4))
    assert not plan.fpga_layers
    reasons = [s.reason for s in plan.steps if isinstance(s, CpuLayer) and s.node.op == "Conv"]
    assert len(reasons) == 5 and all("not quantised" in r and "fp32 kernel" in r for r in reasons)


# Command line ---------------------------------------------------------------------------------

def test_cli_runs_a_float_model_on_an_fp32_descriptor(tmp_path, small_model):
    from hlsinf.build.descriptor import write_descriptor
    build = tmp_path / "hlsinf_fp32_4x4"
    build.mkdir()
    write_descriptor(build / "descriptor.json", CFG)
    onnx.save(small_model, tmp_path / "m.onnx")
    x = np.random.default_rng(13).standard_normal((2, 3, 20, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    want = Session(to_fpga(small_model, CFG), ReferenceDevice(CFG)).run(x)["output"]
    for kernel in (["--kernel", str(build)], ["--kernel", str(build / "descriptor.json")],
                   ["--format", "fp32", "--cpi", "4", "--cpo", "4", "--imax", "64", "--wmax", "32", "--hmax", "32"]):
        out = tmp_path / "y.npy"
        r = subprocess.run([sys.executable, "-m", "hlsinf.run", str(tmp_path / "m.onnx"), "--input",
                            str(tmp_path / "x.npy"), "--device", "reference", "--output", str(out), *kernel],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "fp32" in r.stdout and "5 accelerator layer(s)" in r.stdout
        np.testing.assert_array_equal(to_bits(np.load(out)), to_bits(want))
    r = subprocess.run([sys.executable, "-m", "hlsinf.run", str(tmp_path / "m.onnx"), "--input",
                        str(tmp_path / "x.npy"), "--calibration", str(tmp_path / "x.npy"), "--kernel", str(build)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "error: the kernel is fp32" in r.stderr
    r = subprocess.run([sys.executable, "-m", "hlsinf.run", str(tmp_path / "m.onnx"), "--input",
                        str(tmp_path / "x.npy"), "--format", "fp33"], capture_output=True, text=True)
    assert r.returncode == 2 and "fp33" in r.stderr
    assert json.loads((build / "descriptor.json").read_text())["config"]["number_format"] == "fp32"
