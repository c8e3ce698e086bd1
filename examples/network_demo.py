"""The flow the network examples share: quantise, plan, run on the reference device, time
onnxruntime float on the same input, and print the plan, the times and the agreement.

Used by examples/vgg16.py and examples/segnet.py; each passes its model builder and how
to compare outputs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.host import Profile, Session, quantize, to_fpga


def main(description: str, build_model, compare, *, calibration_images: int, argv=None):
    """``build_model(h, w) -> onnx.ModelProto``; ``compare(y, y_float) -> str`` says how well they agree."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cpi", type=int, default=8)
    p.add_argument("--cpo", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--calibration-images", type=int, default=calibration_images)
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    model = build_model(args.size, args.size)
    cfg = KernelConfig(cpi=args.cpi, cpo=args.cpo)
    calibration = rng.uniform(0, 1, (args.calibration_images, 3, args.size, args.size)).astype(np.float32)
    x = rng.uniform(0, 1, (1, 3, args.size, args.size)).astype(np.float32)

    t0 = time.perf_counter()
    qdq = quantize(model, calibration, cfg)
    t_quant = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = to_fpga(qdq, cfg)
    t_plan = time.perf_counter() - t0
    print(plan.summary())
    session = Session(plan)
    profile = Profile()
    t0 = time.perf_counter()
    y = session.run(x, profile=profile)[plan.graph.outputs[0]]
    t_ref = time.perf_counter() - t0

    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})                      # warm-up
    t0 = time.perf_counter()
    y_float = sess.run(None, {"input": x})[0]
    t_ort = time.perf_counter() - t0

    cycles = plan.ideal_cycles()
    print(f"\nquantisation (calibration on {args.calibration_images} images, onnxruntime) {t_quant:.1f} s, "
          f"planning {t_plan:.1f} s")
    print(f"reference device, 1 image: {t_ref:.2f} s  |  onnxruntime float, 1 image: {t_ort:.3f} s")
    print(profile.report())
    print(f"ideal accelerator cycles {cycles} = {cycles / 300e6 * 1e3:.1f} ms at 300 MHz "
          f"(CPI={cfg.cpi}, CPO={cfg.cpo})")
    print(compare(y, y_float))
