"""Whole-network time projections for VGG16 and the SegNet-like model (issue 6, item 1b).

For each network (224x224, ``--quick``: 64x64) and each build ``KernelConfig(cpi=n, cpo=n)``,
n = 4, 8, 16, 32 (8-bit, every other field at its default):

* the float model (``hlsinf.host.models``, seeded weights) is quantised once, post-training,
  from seeded random calibration images (the QDQ model depends only on the activation
  format, which all four builds share, so one quantisation serves them all);
* ``to_fpga`` plans it; per accelerator layer: calls, ideal cycles, projected cycles
  ``ideal + calls * A`` with ``A = PER_CALL_CYCLES``, and that time at 300 MHz;
* the plan runs on the reference device with a ``Profile`` (``--repeats`` times, fastest by
  CPU time); only its CPU layers and transfers are kept (the reference device's own time is numpy, not an FPGA time);
* total = projected accelerator time + measured CPU-layer time + measured transfer time.

Printed as markdown tables next to the paper's Table II and onnxruntime's float time on
this machine; the figures also go to JSON.

    python benchmarks/networks.py [--quick] [--json benchmarks/results/networks.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


from hlsinf.config import KernelConfig                  # noqa: E402
from hlsinf.host import Profile, Session, quantize, to_fpga  # noqa: E402
from hlsinf.host.models import segnet, vgg16            # noqa: E402

#: Fixed cost of one kernel call on top of its ideal cycles: the largest measured by
#: ``benchmarks/whole_layers.py`` (every VGG16 and SegNet-decoder conv layer as one whole call
#: in Verilator, 100-cycle read and write latency, one 512-bit beat per cycle per bundle, at
#: 4x4, 8x8, 16x16 and 32x32; docs/performance.md): 620 cycles, conv1_1 at 4x4. A whole
#: layer costs 278-620 cycles over its ideal at every size, whatever its groups and frames.
PER_CALL_CYCLES = 620
CLOCK_HZ = 300e6
BUILDS = (4, 8, 16, 32)

#: The paper's Table II (ms per image; its CPU is an i7-7800X running 12 threads).
PAPER = {
    "vgg16": [("CPU (i7-7800X, 12 threads)", 1430.29), ("FPGA fp32 4x4", 552.28), ("FPGA int8", 229.93),
              ("FPGA pruned (HA)", 99.33), ("FPGA pruned (HCR)", 15.09)],
    "segnet": [("CPU (i7-7800X, 12 threads)", 3165.97), ("FPGA", 757.22), ("FPGA pruned", 282.23)],
}
NETWORKS = {"vgg16": (vgg16, 2), "segnet": (segnet, 1)}      # builder, calibration images


def cycles_to_ms(cycles: float) -> float:
    return cycles / CLOCK_HZ * 1e3


def onnxruntime_ms(model, x, repeats: int) -> float:
    """Fastest wall time of onnxruntime (default threads) on the float model, after a warm-up."""
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def project_build(qdq, n: int, x: np.ndarray, repeats: int) -> dict:
    """Plan for an n x n build, project the accelerator layers, measure the CPU side (fastest of ``repeats`` runs)."""
    cfg = KernelConfig(cpi=n, cpo=n)
    plan = to_fpga(qdq, cfg)
    layers = []
    for layer in plan.fpga_layers:
        ideal = layer.ideal_cycles(cfg)
        projected = ideal + len(layer.calls) * PER_CALL_CYCLES
        c, h, w = layer.in_shape
        o, ho, wo = layer.out_shape
        layers.append(dict(name=layer.name, shape=f"{c}x{h}x{w} -> {o}x{ho}x{wo}", calls=len(layer.calls),
                           ideal_cycles=ideal, projected_cycles=projected,
                           projected_ms=cycles_to_ms(projected)))
    session = Session(plan)
    profiles, reference_s = [], []
    for _ in range(repeats):
        profiles.append(Profile())
        t0 = time.perf_counter()
        session.run(x, profile=profiles[-1])
        reference_s.append(time.perf_counter() - t0)
    # the fastest run by CPU-layer time (other jobs on a shared machine only ever slow a run
    # down); its CPU, transfer and per-step figures are reported together
    profile = min(profiles, key=lambda pr: pr.totals()["cpu"])
    totals = profile.totals()
    cpu_steps = sorted(((k, v) for k, v in profile.seconds.items() if profile.category[k] == "cpu"),
                       key=lambda kv: -kv[1])
    transfer_bytes = sum(int(np.prod(s.shape)) for s in plan.steps if s.device == "transfer")
    ideal = sum(r["ideal_cycles"] for r in layers)
    projected = sum(r["projected_cycles"] for r in layers)
    accel_ms = cycles_to_ms(projected)
    cpu_ms, transfer_ms = totals["cpu"] * 1e3, totals["transfer"] * 1e3
    return dict(build=f"{n}x{n}", config=cfg.to_dict(), layers=layers,
                accelerator_layers=len(layers), calls=sum(r["calls"] for r in layers),
                cpu_layers=sum(s.device == "cpu" for s in plan.steps),
                transfers=sum(s.device == "transfer" for s in plan.steps), transfer_elements=transfer_bytes,
                ideal_cycles=ideal, projected_cycles=projected, ideal_ms=cycles_to_ms(ideal),
                accelerator_ms=accel_ms, cpu_ms=cpu_ms, transfer_ms=transfer_ms,
                total_ms=accel_ms + cpu_ms + transfer_ms,
                cpu_ms_runs=[pr.totals()["cpu"] * 1e3 for pr in profiles],
                slowest_cpu_steps_ms={k: v * 1e3 for k, v in cpu_steps[:5]},
                reference_device_s=min(reference_s),
                reference_accelerator_s=totals["accelerator"])


def layer_table(builds: list[dict]) -> str:
    """One row per accelerator layer, calls / ideal / projected cycles for every build."""
    head = "| layer | shape | " + " | ".join(f"{b['build']} calls | {b['build']} ideal | {b['build']} projected"
                                             for b in builds) + " |"
    lines = [head, "|---|---|" + "---:|" * (3 * len(builds))]
    for k, first in enumerate(builds[0]["layers"]):
        cells = []
        for b in builds:
            r = b["layers"][k]
            assert r["name"] == first["name"], "builds planned different layers"
            cells += [f"{r['calls']}", f"{r['ideal_cycles']:,}", f"{r['projected_cycles']:,}"]
        lines.append(f"| {first['name']} | {first['shape']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def totals_table(net: str, result: dict) -> str:
    lines = ["| build / source | calls | ideal Mcycles | projected Mcycles | accelerator ms | CPU layers ms "
             "(measured) | transfers ms (measured) | **total ms** |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in result["builds"]:
        lines.append(f"| hlsinf {b['build']} int8 (projected) | {b['calls']} | {b['ideal_cycles'] / 1e6:.2f} | "
                     f"{b['projected_cycles'] / 1e6:.2f} | {b['accelerator_ms']:.1f} | {b['cpu_ms']:.1f} | "
                     f"{b['transfer_ms']:.1f} | **{b['total_ms']:.1f}** |")
    lines.append(f"| onnxruntime float, this machine ({result['size']}x{result['size']}) | | | | | | | "
                 f"**{result['onnxruntime_ms']:.1f}** |")
    for name, ms in PAPER[net]:
        lines.append(f"| paper Table II: {name} (224x224) | | | | | | | {ms:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64x64 images instead of 224x224")
    p.add_argument("--json", default="benchmarks/results/networks.json", help="where to write the figures")
    p.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    p.add_argument("--builds", nargs="+", type=int, default=list(BUILDS), help="CPI = CPO of each build")
    p.add_argument("--repeats", type=int, default=3, help="reference-device runs per build (the fastest by CPU-layer time is kept)")
    args = p.parse_args(argv)
    size = 64 if args.quick else 224
    for n in args.builds:
        try:
            KernelConfig(cpi=n, cpo=n)
        except ValueError as e:
            p.error(f"--builds {n}: {e}")
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")

    out = dict(size=size, per_call_cycles=PER_CALL_CYCLES, clock_hz=CLOCK_HZ, networks={})
    for net in args.networks:
        build_model, n_cal = NETWORKS[net]
        rng = np.random.default_rng(0)
        model = build_model(size, size)
        calibration = rng.uniform(0, 1, (n_cal, 3, size, size)).astype(np.float32)
        x = rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32)
        t0 = time.perf_counter()
        qdq = quantize(model, calibration, KernelConfig())
        t_quant = time.perf_counter() - t0
        print(f"{net}: quantised in {t_quant:.1f} s ({n_cal} calibration image(s))", file=sys.stderr)
        builds = []
        for n in args.builds:
            b = project_build(qdq, n, x, args.repeats)
            print(f"{net} {b['build']}: {b['calls']} calls, projected {b['accelerator_ms']:.1f} ms, CPU "
                  f"{b['cpu_ms']:.1f} ms, transfers {b['transfer_ms']:.1f} ms (reference device run "
                  f"{b['reference_device_s']:.1f} s)", file=sys.stderr)
            builds.append(b)
        ort_ms = onnxruntime_ms(model, x, repeats=3)
        result = dict(size=size, calibration_images=n_cal, quantize_s=t_quant, onnxruntime_ms=ort_ms,
                      paper_ms=dict(PAPER[net]), builds=builds)
        out["networks"][net] = result
        print(f"\n### {net}, {size}x{size}: totals (A = {PER_CALL_CYCLES} cycles per call, "
              f"{CLOCK_HZ / 1e6:.0f} MHz)\n")
        print(totals_table(net, result))
        print(f"\n### {net}, {size}x{size}: accelerator layers (cycles)\n")
        print(layer_table(builds))
        print(flush=True)

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"figures written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
