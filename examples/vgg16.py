"""VGG16 at 224x224 on the reference device, next to onnxruntime's float time on this machine.

    PYTHONPATH=. python examples/vgg16.py [--cpi 8 --cpo 8] [--calibration-images 2]

The network is built with ``onnx.helper`` and seeded random weights (nothing is
downloaded), quantised post-training by the library from a few random calibration images,
planned with ``to_fpga`` (plan printed) and run on the bit-exact reference device. The
output is compared with onnxruntime running the float model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.host import Profile, Session, quantize, to_fpga
from hlsinf.host.models import vgg16


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpi", type=int, default=8)
    p.add_argument("--cpo", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--calibration-images", type=int, default=2)
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    model = vgg16(args.size, args.size)
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
    print(f"\nquantisation (calibration on {args.calibration_images} images, numpy) {t_quant:.1f} s, planning {t_plan:.1f} s")
    print(f"reference device, 1 image: {t_ref:.2f} s  |  onnxruntime float, 1 image: {t_ort:.3f} s")
    print(profile.report())
    print(f"ideal accelerator cycles {cycles} = {cycles / 300e6 * 1e3:.1f} ms at 300 MHz "
          f"(CPI={cfg.cpi}, CPO={cfg.cpo})")
    print(f"top-1 reference device {int(y.argmax())}, onnxruntime float {int(y_float.argmax())}; "
          f"max |softmax difference| {float(np.abs(y - y_float).max()):.2e}")


if __name__ == "__main__":
    main()
