"""How well hlsinf.zoo's seeded networks survive int8: the float model's own sensitivity and PTQ.

Sensitivity (``--what sensitivity``): cosine of the float output (torch, eval mode) to itself under (a) Gaussian noise on the input
of 0.1 % and 1 % of the input's RMS, and (b) noise on every conv/linear weight equal in size
to int8 per-output-channel rounding (uniform in +-0.5 LSB, LSB = max|w_c| / 127; BN folding
scales a channel's weights by one factor, so this matches the rounding of the folded weights).
A network that is well conditioned, like a trained one, keeps both near 1; a chaotic one
amplifies them with depth and no int8 quantiser can reach cosine 0.99 on it.

Quantisation (``--what ptq``): cosine of the QDQ model's output (run by onnxruntime) to the
float model's (an exact onnxruntime session, :func:`hlsinf.host.onnxruntime_session`), on 2 images not in the calibration batch (the smaller of the two), for
hlsinf's PTQ (``quantize`` for a uint8 kernel with depthwise and residual_add) and for
onnxruntime's ``quantize_static`` with its defaults. Calibration: ``zoo.calibration`` batches
of 32 images (16 at 224x224; ``--calibration N``): the seeded images are 4 x 4 colour fields,
so a few of them do not cover another image's activation ranges.

    python benchmarks/zoo_quality.py [--what sensitivity ptq] [--networks resnet18 ...] [--sizes tiny 64 224]
"""

import argparse
import copy
import sys

import numpy as np

from hlsinf import zoo

SIZES = {"tiny": dict(resolution=32, width=0.125), "64": dict(resolution=64, width=0.125),
         "224": dict(resolution=224, width=1.0)}


VERBOSE = False


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def sensitivity(name, resolution, width, seed=0, images=2, trials=2):
    import torch
    from torch import nn
    torch.set_num_threads(1)
    model = zoo.build(name, resolution=resolution, width=width, seed=seed)
    x = torch.from_numpy(zoo.calibration(name, images, seed=1, resolution=resolution))
    g = torch.Generator().manual_seed(123)
    res = {}
    with torch.no_grad():
        y = model(x).numpy()
        for rel in (1e-3, 1e-2):
            cs = []
            for _ in range(trials):
                xn = x + rel * x.pow(2).mean().sqrt() * torch.randn(x.shape, generator=g)
                cs += [_cos(model(xn).numpy()[i], y[i]) for i in range(images)]
            res[f"input {rel:.1%}"] = min(cs)
        cs = []
        for _ in range(trials):
            m2 = copy.deepcopy(model)
            for m in m2.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    w = m.weight
                    lsb = w.abs().reshape(w.shape[0], -1).amax(1) / 127
                    u = torch.rand(w.shape, generator=g) - 0.5
                    w += u * lsb.reshape(-1, *[1] * (w.dim() - 1))
            yw = m2(x).numpy()
            cs += [_cos(yw[i], y[i]) for i in range(images)]
        res["int8 weights"] = min(cs)
    return res


CAL_IMAGES = None


def ptq(name, resolution, width, seed=0, tmp=None):
    import logging
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from hlsinf.config import KernelConfig
    from hlsinf.host import onnxruntime_session, quantize
    sys.path.insert(0, str(Path(__file__).parent))
    from zoo_coverage import quantize_ort

    logging.getLogger().setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    cfg = KernelConfig(cpi=8, cpo=8, with_depthwise=True, post_ops=("residual_add",))
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.export(name, resolution=resolution, width=width, seed=seed, path=Path(tmp) / "m.onnx")
        cal = zoo.calibration(name, CAL_IMAGES or (16 if resolution >= 224 else 32), seed=0, resolution=resolution)
        x = zoo.calibration(name, 2, seed=1, resolution=resolution)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1

        def run(model):
            sess = onnxruntime_session(model, opts)          # exact integer products (hlsinf/host/ort.py)
            return np.concatenate([sess.run(None, {"input": x[k:k + 1]})[0] for k in range(len(x))])

        want = run(str(path))
        res = {}
        for label, q in (("hlsinf PTQ", lambda: quantize(str(path), cal, cfg)),
                         ("ort defaults", lambda: quantize_ort(path, cal, cfg, Path(tmp) / "q.onnx"))):
            got = run(q())
            res[label] = min(_cos(got[i], want[i]) for i in range(len(x)))
            if VERBOSE:
                print(label, [round(_cos(got[i], want[i]), 4) for i in range(len(x))])
    return res


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--networks", nargs="+", default=["resnet18", "mobilenet_v2", "vgg16", "unet", "googlenet"])
    p.add_argument("--sizes", nargs="+", default=["tiny", "224"], choices=list(SIZES))
    p.add_argument("--calibration", type=int, help="images in the calibration batch")
    p.add_argument("--what", nargs="+", default=["sensitivity", "ptq"], choices=["sensitivity", "ptq"])
    args = p.parse_args(argv)
    global CAL_IMAGES
    CAL_IMAGES = args.calibration
    for size in args.sizes:
        for name in args.networks:
            r = {}
            if "sensitivity" in args.what:
                r.update(sensitivity(name, **SIZES[size]))
            if "ptq" in args.what:
                r.update(ptq(name, **SIZES[size]))
            print(f"{size:>4} {name:14s} " + "  ".join(f"{k}: {v:.4f}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
