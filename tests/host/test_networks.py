"""Issue 10's four networks through the code of benchmarks/networks.py and examples/networks.py,
tiny (32x32, width 1/8), from both quantisers, on the 8x8 network build: the plan runs, every
accelerator layer alone agrees with onnxruntime's QDQ within 1 LSB, at least
:data:`MIN_MAC_SHARE` of the MACs run on the accelerator, the output tracks onnxruntime's (same
QDQ model and float model) and reaches :data:`MIN_COSINE` to the float model, the MAC count is
the model's, and the time projection is the plan's calls at their bus-bound cycles plus the
per-call cost.

MobileNetV2 at this size is the exception for the two whole-network cosines: its int8 model is
sensitive (docs/zoo.md: onnxruntime's own QDQ of it reaches 0.75-0.97 to float here, 0.986 at
224x224), so 1-LSB differences of single layers (fused residual adds round twice) move its
output by more than the others'. It is held to :data:`MOBILENET_VS_ORT` against onnxruntime's
QDQ output (measured 0.84-0.96 with 8-32 calibration images) and to no worse than onnxruntime's
QDQ against float; its 0.99 is measured at 224x224 by benchmarks/networks.py (docs/networks.md).
"""

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from hlsinf import zoo  # noqa: E402
from hlsinf.host import to_fpga  # noqa: E402
from hlsinf.host.evaluate import PER_CALL_CYCLES, coverage, network_build, project, quantize_ort  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: Issue 10's share of MACs on the accelerator (``HLSINF_MIN_MAC_SHARE`` overrides it).
MIN_MAC_SHARE = float(os.environ.get("HLSINF_MIN_MAC_SHARE", 0.95))
#: Issue 10's cosine of the output to the float model (``HLSINF_MIN_COSINE`` overrides it).
MIN_COSINE = float(os.environ.get("HLSINF_MIN_COSINE", 0.99))
#: Tiny MobileNetV2's whole-network cosine to onnxruntime's QDQ output (module docstring).
MOBILENET_VS_ORT = 0.8
#: Calibration images: the seeded images are 4x4 colour fields, 32 of them cover a new image's
#: activations (docs/zoo.md: with 8, the UNet's decoder saw 2x its calibrated range).
CALIBRATION_IMAGES = 32
RESOLUTION, WIDTH = 32, 0.125


def _load(relative: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("benchmarks/networks.py", "benchmarks_networks")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("networks")
    out = {}
    for name in ("resnet18", "mobilenet_v2", "vgg16", "unet"):
        path = zoo.export(name, resolution=RESOLUTION, width=WIDTH, seed=0, path=tmp / f"{name}.onnx")
        out[name] = (path, zoo.calibration(name, CALIBRATION_IMAGES, seed=0, resolution=RESOLUTION),
                     zoo.calibration(name, 2, seed=1, resolution=RESOLUTION), tmp)
    return out


@pytest.mark.parametrize("quantiser", ["hlsinf", "ort"])
@pytest.mark.parametrize("network", ["resnet18", "mobilenet_v2", "vgg16", "unet"])
def test_network_on_the_8x8_build(bench, exported, network, quantiser):
    path, cal, x, tmp = exported[network]
    r = bench.evaluate_network(network, quantiser, path, cal, x, [8], tmp, repeats=1)
    assert not r.get("failure"), r.get("failure")
    b = r["builds"][0]
    assert not b.get("failure"), b["failure"]
    # MACs: counted on the planned graph, they are the torch model's
    assert b["total_macs"] == zoo.stats(network, resolution=RESOLUTION, width=WIDTH)["macs"]
    assert b["accelerator_layers"] > 0 and 0 < b["share"] <= 1
    assert b["share"] >= MIN_MAC_SHARE, (b["share"], b["reasons"])
    assert b["total_ms"] == pytest.approx(b["accelerator_ms"] + b["cpu_ms"] + b["transfer_ms"])
    acc = r["accuracy"]
    alone = acc["layers_alone"]
    assert alone["layers"] > 0
    assert alone["max_lsb"] <= 1, alone         # issue 10: layer by layer within 1 LSB of onnxruntime
    # the whole network: the same QDQ model as onnxruntime's, 1-LSB ties propagating through depth
    assert acc["cosine_vs_ort_qdq"] >= (MOBILENET_VS_ORT if network == "mobilenet_v2" else 0.95), acc
    # against the float model: no worse than onnxruntime running the same QDQ model, give or take
    assert acc["cosine_vs_float"] >= acc["ort_qdq_cosine_vs_float"] - 0.05, acc
    if network != "mobilenet_v2":
        assert acc["cosine_vs_float"] >= MIN_COSINE, acc
    text = bench.report(dict(resolution=RESOLUTION, width=WIDTH, per_call_cycles=PER_CALL_CYCLES, clock_hz=300e6,
                             networks={network: dict(onnxruntime_ms=1.0, quantisers={quantiser: r})}))
    assert f"| {network} | {quantiser} |" in text


def test_projection_is_the_plans_ideal_cycles_plus_the_per_call_cost(exported):
    path, cal, _, tmp = exported["unet"]
    qdq = quantize_ort(path, cal, tmp / "unet_ort_projection.onnx")
    for n in (8, 16):
        plan = to_fpga(qdq, network_build(n), cpu_fallback=True)
        p = project(plan, per_call_cycles=100)
        calls = sum(len(layer.calls) for layer in plan.fpga_layers)
        assert p["ideal_cycles"] == plan.ideal_cycles() > 0
        # each call at its ideal cycles unless its input (9*CPI-lane super-pixels of a pointwise
        # call) or its weight sets (one per frame: binds on frames of a few pixels) need more
        # 64-byte beats than that
        want = 0
        for layer in plan.fpga_layers:
            cycles = 0.0
            for call in layer.calls:
                ideal = call.ideal_cycles(plan.cfg)
                pixel_bytes = (9 if layer.pointwise else 1) * n
                sets = call.frames_per_group(plan.cfg) * len(call.groups(plan.cfg))
                cycles += max(ideal, ideal * pixel_bytes / 64, sets * n * n * 9 / 64)
            want += math.ceil(cycles)
        assert p["projected_cycles"] == want + 100 * calls >= plan.ideal_cycles() + 100 * calls
        assert any(layer.pointwise for layer in plan.fpga_layers)       # the 1x1 classifier
        assert p["accelerator_ms"] == pytest.approx(p["projected_cycles"] / 300e6 * 1e3)
        # the UNet's nearest Upsample runs on the kernel's upsize stage: no Resize is left on the CPU
        assert not any(s.device == "cpu" and s.node.op == "Resize" for s in plan.steps)
        assert coverage(plan)["share"] == 1.0


def test_example_runs(capsys):
    example = _load("examples/networks.py", "examples_networks")
    example.main(["--network", "vgg16", "--quantiser", "ort", "--images", "1", "--calibration-images", "2"])
    out = capsys.readouterr().out
    assert "MACs on the accelerator" in out and "cosine to float" in out
    assert "max 1 LSB" in out or "max 0 LSB" in out
    assert np.isfinite(float(out.split("cosine to float ")[1].split()[0]))
