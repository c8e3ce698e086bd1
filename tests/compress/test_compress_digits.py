"""Digits end to end, small: train, prune and fine-tune, compress, quantise, run on the reference device.

The bound: on the whole test split (540 images) the accelerator's error is at most 2 percentage
points above the float compressed model's, and the float model itself is a working classifier.
"""

import importlib.util
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from hlsinf import host  # noqa: E402

from hlsinf.compress import compress
from hlsinf.compress.finetune import ChannelPruner, prune_finetune
from hlsinf.compress.pipeline import quantize
from hlsinf.config import KernelConfig

QUANT_BOUND = 0.02


def example():
    path = Path(__file__).resolve().parents[2] / "examples" / "digits_compress.py"
    spec = importlib.util.spec_from_file_location("digits_compress", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("digits_compress", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quantised_pruned_digits_on_the_accelerator():
    t0 = time.perf_counter()
    ex = example()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train, val, (x_test, y_test) = ex.load_digits_split(0)
    model = ex.make_model(widths=(8, 8, 8))
    pruner = ChannelPruner(model, [(model[0], model[1]), (model[3], model[4]), (model[7], model[8])])
    train_epoch, validate = ex.trainer(model, train, val, lr=1e-2)
    exported = {}
    prune_finetune(model, pruner, train_epoch, validate, amounts=[0, 0.5], patience=2, max_epochs=12,
                   on_level=lambda a, m: exported.setdefault(a, ex.export_onnx(pruner.exportable())))
    slim, report = compress(exported[0.5], amount=0.5)
    assert report.removal.channels_after == 12  # 4 of 8 in each of the three Convs: nothing had to stay

    cfg = KernelConfig(cpi=4, cpo=4)
    qdq = quantize(slim, train[0][:32], cfg)
    plan = host.to_fpga(qdq, cfg, input_shape=(1, 1, 8, 8))
    assert len(plan.fpga_layers) == 3
    logits = host.Session(plan).run(x_test)[plan.graph.outputs[0]]
    float_error = ex.error(ex.ort_logits(slim, x_test), y_test)
    accel_error = ex.error(logits, y_test)
    assert float_error < 0.10, float_error
    assert accel_error <= float_error + QUANT_BOUND, (accel_error, float_error)
    assert time.perf_counter() - t0 < 60
