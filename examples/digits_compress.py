"""Prune, remove, quantise and run a small CNN on scikit-learn's digits, end to end.

    PYTHONPATH=. python examples/digits_compress.py            # about 30 s of compute on 2 cores
    PYTHONPATH=. python examples/digits_compress.py --no-doc   # print the tables only

Steps (seeded, so a rerun gives the same numbers):

1. digits (1797 8x8 images, 10 classes) split into train / validation / test (30 %);
2. a 3-conv CNN (Conv-BN-ReLU x 3, two 2x2 max pools, one Linear) trained in PyTorch until
   the validation loss stops improving for ``--patience`` epochs (PWE);
3. iterative pruning with fine-tuning (``hlsinf.compress.finetune``) to each ``--levels``
   amount; after each level the model is exported to ONNX (opset 13);
4. ``hlsinf.compress.compress``: BatchNormalization folding, L1 channel pruning at the
   level's amount (selecting the channels fine-tuning already holds at zero), channel
   removal -- checked against the pruned model in onnxruntime;
5. the host's post-training quantiser (int8 weights, int32 bias, multiplier + shift) on a
   calibration batch of training images, ``to_fpga`` and the reference device over the
   whole test split (and the RTL device on a few images, when it exists);
6. the analogue of the paper's Tables I and II, written to docs/compress.md.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

CLOCK_HZ = 300e6
DOC = Path(__file__).resolve().parents[1] / "docs" / "compress.md"
BEGIN, END = "<!-- digits-tables:begin -->", "<!-- digits-tables:end -->"


# Data and model -------------------------------------------------------------------------------

def load_digits_split(seed: int = 0):
    """(x, y) for train, validation and test: float32 N x 1 x 8 x 8 in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, random_state=seed,
                                                      stratify=y_rest)
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def make_model(widths=(16, 32, 32)):
    """Three 3x3 Conv-BN-ReLU blocks (pad 1: the accelerator's 3x3 slot), pools after the 2nd and 3rd."""
    import torch.nn as nn

    a, b, c = widths
    return nn.Sequential(
        nn.Conv2d(1, a, 3, padding=1), nn.BatchNorm2d(a), nn.ReLU(),
        nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(b, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c * 2 * 2, 10))


def trainer(model, train, val, *, lr=3e-3, batch=64, seed=0):
    """``train_epoch(model)`` and ``validate(model) -> loss`` closures for the loop hook."""
    import torch

    xt, yt = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    xv, yv = torch.from_numpy(val[0]), torch.from_numpy(val[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)

    def train_epoch(m):
        m.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch):
            opt.zero_grad()
            loss_fn(m(xt[idx]), yt[idx]).backward()
            opt.step()

    def validate(m):
        m.eval()
        with torch.no_grad():
            return float(loss_fn(m(xv), yv))

    return train_epoch, validate


def export_onnx(model) -> onnx.ModelProto:
    """TorchScript exporter (dynamo=False: the dynamo one needs onnxscript), opset 13, BN kept."""
    import torch

    model.eval()
    f = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), f, opset_version=13, dynamo=False,
                      do_constant_folding=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return onnx.load_from_string(f.getvalue())


# Measurements -------------------------------------------------------------------------------

def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    from hlsinf.host import onnxruntime_session

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return onnxruntime_session(model, opts)     # QDQ models: exact int8 products on any x86 CPU


def ort_logits(model, x) -> np.ndarray:
    """Logits of a batch (image by image if the model has a fixed batch of 1, as QDQ models do)."""
    sess = ort_session(model)
    inp = sess.get_inputs()[0]
    if inp.shape[0] == 1:
        return np.concatenate([sess.run(None, {inp.name: x[k:k + 1]})[0] for k in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


def cpu_ms_per_image(model, x, repeats: int = 3) -> float:
    """onnxruntime float, one thread, batch 1: the best of ``repeats`` passes over ``x``, per image."""
    sess = ort_session(model)
    name = sess.get_inputs()[0].name
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k in range(len(x)):
            sess.run(None, {name: x[k:k + 1]})
        best = min(best, (time.perf_counter() - t0) / len(x))
    return best * 1e3


def conv_channels(model) -> int:
    from onnx import numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    return sum(numpy_helper.to_array(inits[n.input[1]]).shape[0] for n in model.graph.node if n.op_type == "Conv")


def error(logits, labels) -> float:
    return float(np.mean(np.argmax(logits, axis=1) != labels))


@dataclass
class Row:
    name: str
    amount: float
    channels: int              #: remaining Conv output channels
    channels_dense: int
    fp32_bytes: int
    fp32_error: float
    int8_bytes: int
    int8_error: float          #: the accelerator (reference device) over the test split
    qdq_error: float           #: the same QDQ model in onnxruntime
    cycles: int                #: ideal accelerator cycles per inference after removal
    cycles_pruned_only: int    #: ... if the zeroed channels were left in the graph
    cpu_ms: float              #: onnxruntime float per image
    fpga_layers: int
    cpu_layers: int
    rtl: str = "-"


def evaluate_level(name, amount, exported, test, calibration, cfg, *, scope="layer", rtl_samples=0,
                   log=print) -> Row:
    from hlsinf.compress import compress, parameter_bytes, prune, fold_batchnorm
    from hlsinf.compress.pipeline import quantize
    from hlsinf.compress.remove import zero_channels
    from onnx import numpy_helper
    from hlsinf.host import Session, to_fpga

    x_test, y_test = test
    dense_channels = conv_channels(exported)
    slim, report = compress(exported, amount=amount if amount > 0 else None, scope=scope)
    log(str(report))
    # The ONNX pass re-selects exactly the channels fine-tuning holds at zero.
    pruned = fold_batchnorm(exported)[0]
    if amount > 0:
        inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
        at_zero = {n.name: zero_channels(inits[n.input[1]]).tolist() for n in pruned.graph.node if n.op_type == "Conv"}
        for layer in report.prune.layers:
            if layer.pruned != at_zero[layer.name]:
                raise AssertionError(f"{name}: {layer.name} pruned {layer.pruned}, fine-tuning zeroed {at_zero[layer.name]}")
        pruned = prune(pruned, amount, scope=scope)[0]
    # Removal is exact: the slim model computes what the pruned (zeroed, not removed) model computes.
    diff = float(np.max(np.abs(ort_logits(slim, x_test) - ort_logits(pruned, x_test))))
    if diff > 1e-4:
        raise AssertionError(f"{name}: the slim model differs from the pruned one by {diff}")

    qdq = quantize(slim, calibration, cfg)
    plan = to_fpga(qdq, cfg, input_shape=(1, 1, 8, 8))
    log(plan.summary())
    t0 = time.perf_counter()
    out = Session(plan).run(x_test)[plan.graph.outputs[0]]
    log(f"reference device: {len(x_test)} images in {time.perf_counter() - t0:.1f} s")
    plan_pruned = to_fpga(quantize(pruned, calibration, cfg), cfg, input_shape=(1, 1, 8, 8))

    rtl = "-"
    if rtl_samples:
        rtl = run_rtl(plan, x_test[:rtl_samples], out[:rtl_samples], log)
    return Row(name, amount, conv_channels(slim), dense_channels, parameter_bytes(slim),
               error(ort_logits(slim, x_test), y_test), parameter_bytes(qdq), error(out, y_test),
               error(ort_logits(qdq, x_test), y_test), plan.ideal_cycles(), plan_pruned.ideal_cycles(),
               cpu_ms_per_image(slim, x_test[:200]), len(plan.fpga_layers),
               sum(1 for s in plan.steps if type(s).__name__ == "CpuLayer"), rtl)


def run_rtl(plan, x, expected, log) -> str:
    """Bit-exactness of the RTL device against the reference device on a few images, if it exists."""
    from hlsinf.host import Session
    try:
        from hlsinf.host.rtl import RtlDevice
        device = RtlDevice(plan.cfg)
    except (ImportError, RuntimeError) as e:  # no rtl module yet, or no kernel / sim folder to build
        log(f"RTL device not available ({e}); skipped")
        return "not run (RTL device not available)"
    from hlsinf.host import Profile
    profile = Profile()
    try:
        got = Session(plan, device).run(x, profile=profile)[plan.graph.outputs[0]]
    finally:
        device.close()
    same = [bool(np.array_equal(got[k], expected[k])) for k in range(len(x))]
    measured = sum(profile.cycles.values()) / len(x)
    log(f"RTL device on {len(x)} images: {sum(same)} bit-exact vs the reference device; "
        f"{measured:.0f} measured cycles per inference (ap_start to ap_done), ideal {plan.ideal_cycles()}")
    if not all(same):
        raise AssertionError("the RTL device differs from the reference device")
    return (f"{len(x)}/{len(x)} test images bit-exact on the RTL device (Verilator), "
            f"{measured:.0f} measured kernel cycles per inference vs {plan.ideal_cycles()} ideal")


# Tables -----------------------------------------------------------------------------------

def tables(rows: list[Row], cfg, dense_cpu_ms: float, meta: str) -> str:
    kb = lambda b: f"{b / 1024:.1f}"
    lines = [meta, "",
             "**Table I (analogue).** Error on the test split; parameter memory in KiB "
             "(int8: the QDQ model's initializers: int8 Conv weights, int32 biases, scales; the Gemm stays float32 "
             "on the CPU).", "",
             "| model | pruned | remaining channels | FP32 mem | FP32 error | int8 mem | int8 error (accelerator) "
             "| int8 error (onnxruntime QDQ) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.amount:.0%} | {r.channels}/{r.channels_dense} "
                     f"({r.channels / r.channels_dense:.0%}) | {kb(r.fp32_bytes)} | {r.fp32_error:.2%} | "
                     f"{kb(r.int8_bytes)} | {r.int8_error:.2%} | {r.qdq_error:.2%} |")
    lines += ["", f"**Table II (analogue).** Time per inference (batch 1). CPU: onnxruntime float32, one thread, "
              f"this machine. FPGA: ideal accelerator cycles from the plan (CPI = {cfg.cpi}, CPO = {cfg.cpo}, "
              f"one CPI-wide pixel per cycle) projected at {CLOCK_HZ / 1e6:.0f} MHz; transfers and the CPU layers "
              "(quantise input, Flatten, Gemm) are not included. Speed-up against the dense model on the CPU.", "",
              "| model | device | cycles | cycles if channels were only zeroed | inference (µs) | FPS | speed-up |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        speedup = "-" if r is rows[0] else f"{dense_cpu_ms / r.cpu_ms:.2f}x"
        lines.append(f"| {r.name} | CPU (float32) | - | - | {r.cpu_ms * 1e3:.2f} | {1e3 / r.cpu_ms:,.0f} | {speedup} |")
    for r in rows:
        ms = r.cycles / CLOCK_HZ * 1e3
        lines.append(f"| {r.name}-int8 | FPGA (projected) | {r.cycles:,} | {r.cycles_pruned_only:,} | {ms * 1e3:.2f} | "
                     f"{1e3 / ms:,.0f} | {dense_cpu_ms / ms:.1f}x |")
    return "\n".join(lines)


def write_doc(text: str, path: Path = DOC):
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to replace")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", doc, flags=re.S)
    path.write_text(new)


# Main -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="0,0.5,0.75,0.9", help="pruning amounts, increasing, comma-separated")
    p.add_argument("--scope", choices=("layer", "global"), default="layer")
    p.add_argument("--patience", type=int, default=3, help="PWE: epochs without improvement before pruning")
    p.add_argument("--epochs", type=int, default=40, help="epochs of dense training at most")
    p.add_argument("--finetune-epochs", type=int, default=15, help="epochs of fine-tuning per level at most")
    p.add_argument("--cpi", type=int, default=4)
    p.add_argument("--cpo", type=int, default=4)
    p.add_argument("--calibration", type=int, default=64, help="training images used to calibrate PTQ")
    p.add_argument("--rtl-samples", type=int, default=4, help="test images to run on the RTL device (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/compress.md")
    p.add_argument("--save", help="folder to keep the exported and compressed ONNX models in")
    args = p.parse_args(argv)

    import torch
    from hlsinf.compress.finetune import ChannelPruner, prune_finetune
    from hlsinf.config import KernelConfig

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)  # this tiny model trains 10x slower on 2 threads of a shared machine
    levels = [float(v) for v in args.levels.split(",")]
    cfg = KernelConfig(cpi=args.cpi, cpo=args.cpo)
    train, val, test = load_digits_split(args.seed)
    calibration = train[0][np.random.default_rng(args.seed).choice(len(train[0]), args.calibration, replace=False)]
    model = make_model()
    # All three convolutions feed something channel removal handles (Conv, or Flatten -> Gemm), so
    # all of them are pruned (the default would skip the last Conv), each with its BatchNorm masked.
    pruner = ChannelPruner(model, [(model[0], model[1]), (model[3], model[4]), (model[7], model[8])],
                           scope=args.scope)
    train_epoch, validate = trainer(model, train, val, seed=args.seed)
    rows, exported_models = [], {}

    def on_level(amount, m):
        exported_models[amount] = export_onnx(pruner.exportable())

    # Dense training, then the pruning levels with shorter fine-tuning; masks accumulate across calls.
    dense, pruned = [a for a in levels if a == 0], [a for a in levels if a > 0]
    results = []
    for amounts, epochs in ((dense, args.epochs), (pruned, args.finetune_epochs)):
        results += prune_finetune(model, pruner, train_epoch, validate, amounts=amounts, patience=args.patience,
                                  max_epochs=epochs, min_delta=1e-3, on_level=on_level)
    for r in results:
        print(f"level {r.amount:.0%}: {r.epochs} epochs, best validation loss {r.best_loss:.4f}")
    t_train = time.perf_counter() - t_start

    for amount in levels:
        name = "CNN" if amount == 0 else f"CNN-P{round(amount * 100)}"
        print(f"\n== {name} ==")
        rows.append(evaluate_level(name, amount, exported_models[amount], test, calibration, cfg,
                                   scope=args.scope, rtl_samples=args.rtl_samples if amount == levels[-1] else 0))
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            onnx.save(exported_models[amount], Path(args.save) / f"{name}.onnx")
    meta = (f"Generated by `examples/digits_compress.py` (seed {args.seed}, levels {args.levels}, {args.scope} "
            f"scope, PWE patience {args.patience}, at most {args.epochs} dense and {args.finetune_epochs} fine-tuning "
            f"epochs per level; "
            f"{len(train[0])}/{len(val[0])}/{len(test[0])} train/validation/test images; "
            f"training {t_train:.0f} s, total {time.perf_counter() - t_start:.0f} s on this machine, "
            f"including the RTL build). RTL check on the most pruned model: {rows[-1].rtl}.")
    text = tables(rows, cfg, rows[0].cpu_ms, meta)
    print("\n" + text)
    if not args.no_doc:
        write_doc(text)
        print(f"\ntables written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
