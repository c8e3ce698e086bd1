"""Speed of the host runtime's reference device against onnxruntime, side by side (issue 11).

    PYTHONPATH=. python benchmarks/host_speed.py [--size 224] [--repeats 10] [--oracle]

VGG16 (``hlsinf.host.models.vgg16``, seeded weights, one image) is quantised post-training
by the library (``--calibration-images`` seeded random images), planned for
``KernelConfig(cpi, cpo)`` and run three ways on the same input, interleaved, ``--repeats``
times each after one warm-up run:

* ``reference``: ``Session(plan, ReferenceDevice(cfg)).run(x)``: the accelerator layers
  emulated bit-exactly (``hlsinf.reference_fast``), the CPU layers in onnxruntime;
* ``onnxruntime QDQ``: the same QDQ model in ``hlsinf.host.onnxruntime_session`` (exact
  int8 arithmetic), onnxruntime's default threads;
* ``onnxruntime float``: the float model in a default onnxruntime CPU session.

The machine may be shared, so the fastest run of each is compared (other jobs only ever
slow a run down); medians are reported too, with the load average. ``--oracle`` also times
one run of the reference device with the readable oracle ``hlsinf.reference.kernel_call``
(``ReferenceDevice(cfg, oracle=True)``). Prints a table and writes JSON
(``benchmarks/results/host_speed.json`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from hlsinf.config import KernelConfig                                  # noqa: E402
from hlsinf.host import Profile, ReferenceDevice, Session, onnxruntime_session, quantize, to_fpga  # noqa: E402
from hlsinf.host.models import vgg16                                    # noqa: E402


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--cpi", type=int, default=8)
    p.add_argument("--cpo", type=int, default=8)
    p.add_argument("--calibration-images", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--oracle", action="store_true", help="also time one run with the oracle kernel_call")
    p.add_argument("--json", default="benchmarks/results/host_speed.json")
    args = p.parse_args(argv)

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    model = vgg16(args.size, args.size)
    cfg = KernelConfig(cpi=args.cpi, cpo=args.cpo)
    calibration = rng.uniform(0, 1, (args.calibration_images, 3, args.size, args.size)).astype(np.float32)
    x = rng.uniform(0, 1, (1, 3, args.size, args.size)).astype(np.float32)

    t0 = time.perf_counter()
    qdq = quantize(model, calibration, cfg)
    t_quantize = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = to_fpga(qdq, cfg)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    session = Session(plan, ReferenceDevice(cfg))
    t_session = time.perf_counter() - t0
    qdq_session = onnxruntime_session(qdq)
    float_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = plan.graph.outputs[0]

    runs = {
        "reference": lambda: session.run(x)[out],
        "onnxruntime QDQ": lambda: qdq_session.run([out], {"input": x})[0],
        "onnxruntime float": lambda: float_session.run([out], {"input": x})[0],
    }
    results = {name: fn() for name, fn in runs.items()}       # warm-up (first runs open kernels and pools)
    load_before = _load()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    load_after = _load()
    profile = Profile()
    session.run(x, profile=profile)

    best = {name: min(v) for name, v in times.items()}
    median = {name: statistics.median(v) for name, v in times.items()}
    ref, qdq_y, float_y = results["reference"], results["onnxruntime QDQ"], results["onnxruntime float"]
    report = {
        "network": f"vgg16 {args.size}x{args.size}, 1 image", "config": cfg.to_dict(), "repeats": args.repeats,
        "machine": {"cpu": _cpu_name(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after},
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        "best_s": best, "median_s": median, "runs_s": times,
        "ratio_reference_to_onnxruntime_qdq": best["reference"] / best["onnxruntime QDQ"],
        "ratio_reference_to_onnxruntime_float": best["reference"] / best["onnxruntime float"],
        "reference_split_s": profile.totals(),
        "setup_s": {"quantize": t_quantize, "plan": t_plan, "session": t_session},
        "agreement": {"top1_reference": int(ref.argmax()), "top1_onnxruntime_qdq": int(qdq_y.argmax()),
                      "top1_onnxruntime_float": int(float_y.argmax()),
                      "max_abs_diff_reference_vs_qdq": float(np.abs(ref - qdq_y).max()),
                      "max_abs_diff_reference_vs_float": float(np.abs(ref - float_y).max())},
    }
    if args.oracle:
        oracle = Session(plan, ReferenceDevice(cfg, oracle=True))
        t0 = time.perf_counter()
        y = oracle.run(x)[out]
        report["oracle_s"] = time.perf_counter() - t0
        report["agreement"]["oracle_equals_reference"] = bool(np.array_equal(y, ref))

    print(f"VGG16 {args.size}x{args.size}, one image, CPI={cfg.cpi} CPO={cfg.cpo}; {report['machine']['cpu']}, "
          f"{report['machine']['cores']} cores, load {load_before} -> {load_after}; best (median) of {args.repeats}")
    print("| run | best s | median s | vs onnxruntime QDQ |")
    print("|---|---:|---:|---:|")
    for name in runs:
        print(f"| {name} | {best[name]:.3f} | {median[name]:.3f} | {best[name] / best['onnxruntime QDQ']:.2f}x |")
    if args.oracle:
        print(f"| reference, oracle kernel_call (1 run) | {report['oracle_s']:.3f} | | "
              f"{report['oracle_s'] / best['onnxruntime QDQ']:.2f}x |")
    split = profile.totals()
    print(f"reference device split: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in split.items()))
    print(f"setup: quantise {t_quantize:.1f} s, plan {t_plan:.1f} s, "
          f"session {t_session:.1f} s; top-1 {report['agreement']}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {path}")
    return report


if __name__ == "__main__":
    main()
