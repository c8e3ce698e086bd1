"""ResNet-18, MobileNetV2, VGG16 and a UNet decoder, from two quantisers, on the accelerator.

    PYTHONPATH=. python examples/networks.py                          # all four, tiny (32x32, width 1/8)
    PYTHONPATH=. python examples/networks.py --network resnet18 --resolution 224 --width 1
    PYTHONPATH=. python examples/networks.py --network vgg16 --device rtl --cpi 2 --cpo 2 --imax 64 --wmax 32 --hmax 32

For each network (``hlsinf.zoo``: plain torch, seeded weights, exported to ONNX; nothing is
downloaded; needs ``pip install 'hlsinf[zoo]'`` for torch) and each quantiser:

1. quantise: ``hlsinf``, the library's post-training quantisation ``quantize(model,
   calibration, cfg)`` (what ``to_fpga(model, cfg, calibration=batch)`` does in one step), or
   ``ort``, onnxruntime's ``quantize_static`` with its defaults (QDQ, int8);
2. plan for the kernel ``hlsinf.host.evaluate.network_build(cpi)`` (depthwise, upsize x2,
   residual_add: what the four networks use) with ``to_fpga(qdq, cfg, cpu_fallback=True)``
   (a layer the kernel cannot run stays on the CPU, with the plan's reason);
3. run a few images on the device (``reference``: the bit-exact numpy model of the kernel;
   ``rtl``: the kernel's Verilog in Verilator, slow, for tiny networks on small builds);
4. print the share of multiply-accumulates on the accelerator, cosine and top-1 agreement
   of the output with onnxruntime's float model (and of onnxruntime's own QDQ output, for
   scale), every accelerator layer alone against onnxruntime's QDQ (same int8 input; in
   LSB), and the projected time per image (plan ideal cycles + a cost per call at 300 MHz,
   plus the host's CPU layers and transfers measured here; reference device only).

docs/networks.md has these figures at 224x224 for builds 8x8, 16x16 and 32x32
(``benchmarks/networks.py``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from hlsinf import zoo
from hlsinf.host import Session, quantize, to_fpga
from hlsinf.host.evaluate import coverage, measure_host, network_build, project, quantize_ort, run_plan

NETWORKS = ("resnet18", "mobilenet_v2", "vgg16", "unet")


def make_device(name: str, cfg):
    if name == "reference":
        return None                                 # Session's default: ReferenceDevice(cfg)
    from hlsinf.host.rtl import RtlDevice
    return RtlDevice(cfg)


def one(name: str, quantiser: str, path: Path, cal, x, cfg, device: str, show_plan: bool, tmp: Path) -> dict:
    t0 = time.perf_counter()
    qdq = quantize(str(path), cal, cfg) if quantiser == "hlsinf" else quantize_ort(path, cal, tmp / f"{name}_ort.onnx")
    t_quant = time.perf_counter() - t0
    plan = to_fpga(qdq, cfg, cpu_fallback=True)
    if show_plan:
        print(plan.summary())
    cov = coverage(plan)
    dev = make_device(device, plan.cfg)
    try:
        acc = run_plan(plan, qdq, x, float_model=path, device=dev, keep_output=True)
    finally:
        if dev is not None:
            dev.close()
    y = acc.pop("output")
    if device != "reference":                       # the same images on the reference device: bit-exact?
        ref = Session(plan).run(x)[plan.graph.outputs[0]]
        acc["bit_exact_with_reference"] = bool(np.array_equal(y, ref))
    proj = project(plan)
    print(f"{name}, {quantiser} quantiser (quantised in {t_quant:.1f} s):")
    print(f"  MACs on the accelerator: {100 * cov['share']:.1f} % of {cov['total_macs'] / 1e6:.1f} M "
          f"({cov['accelerator_layers']} accelerator layers, {cov['convs']} convolutions, "
          f"{cov['transfers']} transfers)")
    for key, r in sorted(cov["reasons"].items(), key=lambda kv: -kv[1]["macs"]):
        print(f"    on the CPU: {r['layers']} x {key} ({100 * r['macs'] / cov['total_macs']:.1f} % MACs)")
    alone = acc["layers_alone"]
    print(f"  {x.shape[0]} image(s) on the {device} device in {acc['seconds']:.1f} s: cosine to float "
          f"{acc['cosine_vs_float']:.4f} (onnxruntime QDQ {acc['ort_qdq_cosine_vs_float']:.4f}), top-1 "
          f"agreement with float {100 * acc['top1_vs_float']:.1f} % (onnxruntime QDQ "
          f"{100 * acc['ort_qdq_top1_vs_float']:.1f} %), cosine to onnxruntime QDQ {acc['cosine_vs_ort_qdq']:.5f}")
    if "bit_exact_with_reference" in acc:
        print(f"  {device} device output bit-exact with the reference device: {acc['bit_exact_with_reference']}")
    print(f"  each accelerator layer alone vs onnxruntime QDQ: max {alone['max_lsb']} LSB, "
          f"{100 * alone['differing']:.3f} % of values differ ({alone['layers']} layers)")
    line = (f"  projected accelerator time at {cfg.cpi}x{cfg.cpo}: {proj['ideal_cycles']:,} ideal cycles + "
            f"{proj['calls']} calls x {proj['per_call_cycles']} = {proj['accelerator_ms']:.2f} ms at 300 MHz")
    if device == "reference":
        host = measure_host(plan, x[:1], repeats=1)
        line += (f"; host (measured): CPU layers {host['cpu_ms']:.1f} ms + transfers {host['transfer_ms']:.1f} ms; "
                 f"total {proj['accelerator_ms'] + host['cpu_ms'] + host['transfer_ms']:.1f} ms per image")
    print(line, flush=True)
    return dict(coverage=cov, accuracy=acc, projection=proj)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    p.add_argument("--quantiser", nargs="+", choices=("hlsinf", "ort"), default=["hlsinf", "ort"])
    p.add_argument("--resolution", type=int, default=32, help="input height and width (224: the real size)")
    p.add_argument("--width", type=float, default=0.125, help="channel multiplier (1: the real networks)")
    p.add_argument("--cpi", type=int, default=8, help="CPI = CPO of the build (--cpo must match: depthwise)")
    p.add_argument("--cpo", type=int, default=None)
    p.add_argument("--imax", type=int, default=None, help="smaller build for --device rtl")
    p.add_argument("--wmax", type=int, default=None)
    p.add_argument("--hmax", type=int, default=None)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--calibration-images", type=int, default=16)
    p.add_argument("--device", choices=("reference", "rtl"), default="reference")
    p.add_argument("--plan", action="store_true", help="print every plan")
    args = p.parse_args(argv)
    if args.cpo not in (None, args.cpi):
        p.error("--cpo must equal --cpi (the build has depthwise convolutions)")
    sizes = {k: v for k, v in dict(imax=args.imax, wmax=args.wmax, hmax=args.hmax).items() if v is not None}
    try:
        cfg = network_build(args.cpi, **sizes)
    except ValueError as e:
        p.error(str(e))

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)     # quantize_static's advice to pre-process
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.network:
            try:
                path = zoo.export(name, resolution=args.resolution, width=args.width, seed=0, path=tmp / f"{name}.onnx")
            except ValueError as e:
                p.error(str(e))
            cal = zoo.calibration(name, args.calibration_images, seed=0, resolution=args.resolution)
            x = zoo.calibration(name, args.images, seed=1, resolution=args.resolution)
            for q in args.quantiser:
                one(name, q, path, cal, x, cfg, args.device, args.plan, tmp)


if __name__ == "__main__":
    main()
