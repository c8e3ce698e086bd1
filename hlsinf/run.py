"""Run an ONNX network on the accelerator (simulated): ``python -m hlsinf.run MODEL.onnx --input X.npy``.

Prints the plan (every step, its device, tiles and ideal cycles), runs the input through
it on the chosen device, writes the output, and with ``--profile`` prints how the time
splits between accelerator calls, CPU layers and transfers. Errors (missing files, bad
shapes, unsupported operators, layers no tiling can fit) are one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hlsinf.run", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="ONNX model: float (give --calibration for an integer kernel; as it is on an "
                                 "fp32 kernel) or QDQ-quantised")
    p.add_argument("--input", required=True, help=".npy input batch, N x C x H x W (or C x H x W)")
    p.add_argument("--calibration", help=".npy float batch for post-training quantisation of a float model")
    p.add_argument("--device", choices=("reference", "rtl"), default="reference")
    p.add_argument("--kernel", help="kernel build folder or its descriptor.json")
    p.add_argument("--format", help="number format of an in-process configuration: int8, uint8, fixed<W,I>, "
                                    "fp32 ... (as python -m hlsinf.build --format; default uint8/int8 from the model)")
    p.add_argument("--cpi", type=int, help="input channels per cycle (builds a configuration in-process)")
    p.add_argument("--cpo", type=int, help="output channels per cycle")
    p.add_argument("--act-signed", action=argparse.BooleanOptionalAction, default=None,
                   help="int8 (--act-signed) or uint8 (--no-act-signed) activations; default: the QDQ "
                        "model's activation type (uint8 for a float model)")
    p.add_argument("--wmax", type=int, help="kernel's largest input width (default from KernelConfig)")
    p.add_argument("--hmax", type=int, help="kernel's largest rows per call")
    p.add_argument("--imax", type=int, help="kernel's largest input channel count")
    p.add_argument("--post-ops", help="post-operations of the in-process kernel, comma-separated (e.g. "
                                      "residual_add: ResNet's Add(+Relu) in the convolution's call; table: "
                                      "activations such as Sigmoid/SiLU/Mish after a conv run in its call)")
    p.add_argument("--with-depthwise", action="store_true", help="in-process kernel with depthwise 3x3 calls")
    p.add_argument("--with-pointwise", action="store_true",
                   help="in-process kernel with pointwise calls (1x1 convolutions and Gemm on the whole MAC array)")
    p.add_argument("--with-acc-split", action="store_true",
                   help="in-process kernel with split accumulation (more input channels than imax, Gemm)")
    p.add_argument("--max-upsize", type=int, help="in-process kernel's largest nearest-upsize factor (2 or 4)")
    p.add_argument("--max-rows", type=int, help="cap convolution output rows per call (forces row tiling)")
    p.add_argument("--max-out-groups", type=int, help="cap output groups per call")
    p.add_argument("--cpu-fallback", action="store_true", default=True,
                   help="run layers the kernel cannot hold on the CPU (the default; kept for old scripts)")
    p.add_argument("--no-cpu-fallback", dest="cpu_fallback", action="store_false",
                   help="stop with an error instead when a convolution the kernel could run does not fit it")
    p.add_argument("--output", help="write the (first) model output here (.npy)")
    p.add_argument("--profile", action="store_true", help="print the time split accelerator/CPU/transfers")
    p.add_argument("--plot", help="with --profile: save a bar chart (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="do not print the plan")
    return p


def _kernel(args):
    from hlsinf.config import KernelConfig
    options = {"with_depthwise": args.with_depthwise, "with_pointwise": args.with_pointwise,
               "with_acc_split": args.with_acc_split}
    if args.kernel and (args.cpi or args.cpo or args.post_ops or args.format or args.max_upsize or any(options.values())):
        raise ValueError("give either --kernel or --cpi/--cpo/--post-ops/--format/--with-*/--max-upsize, not both")
    if args.kernel:
        return args.kernel
    fields = {"cpi": 8, "cpo": 8}
    if args.act_signed is not None:
        if args.format:
            raise ValueError("give either --format or --act-signed/--no-act-signed, not both")
        fields["act_signed"] = args.act_signed
    for name in ("cpi", "cpo", "wmax", "hmax", "imax"):
        value = getattr(args, name)
        if value is not None:
            if value <= 0:
                raise ValueError(f"--{name} {value}: must be a positive whole number")
            fields[name] = value
    if args.post_ops:
        fields["post_ops"] = tuple(p for p in args.post_ops.split(",") if p)
    fields.update({name: True for name, on in options.items() if on})
    if args.max_upsize is not None:
        fields["max_upsize"] = args.max_upsize
    if args.format:                          # a format fixes the activation type (and fp32 everything)
        from hlsinf.config import ConfigError
        try:
            return KernelConfig.from_format(args.format, **fields).to_dict()
        except ConfigError as e:
            raise ValueError(f"--format {args.format}: {e}") from None
    KernelConfig(**fields)                   # a bad value is an error here, before the model is read
    return fields                            # without act_signed: to_fpga takes the model's format


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {path!r} does not exist")
    try:
        return np.load(p)
    except Exception as e:
        raise ValueError(f"{what} file {path!r} is not a readable .npy array: {e}") from None


def _check_batch(x: np.ndarray, what: str) -> np.ndarray:
    """A float N x C x H x W batch (a C x H x W image gets N = 1) with N >= 1 and finite values."""
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{what} batch has shape {x.shape}; expected N x C x H x W or C x H x W")
    if x.shape[0] == 0:
        raise ValueError(f"{what} batch is empty (shape {x.shape})")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{what} batch holds {int((~np.isfinite(x)).sum())} NaN or infinite value(s), "
                         f"the first at index {tuple(int(i) for i in bad)}")
    return x


def _device(name: str, cfg):
    from hlsinf.host.device import ReferenceDevice
    if name == "reference":
        return ReferenceDevice(cfg)
    try:
        from hlsinf.host.rtl import RtlDevice
    except ImportError as e:
        raise ValueError(f"--device rtl needs the Verilator kernel harness, which is not available here ({e}); "
                         "see docs/host.md") from None
    return RtlDevice(cfg)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from hlsinf.host import Profile, Session, to_fpga
    try:
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"model file {args.model!r} does not exist")
        if args.output and not Path(args.output).resolve().parent.is_dir():
            raise FileNotFoundError(f"--output {args.output!r}: folder {str(Path(args.output).parent)!r} "
                                    "does not exist")
        x = _check_batch(_load_npy(args.input, "input"), "input")
        calibration = _load_npy(args.calibration, "calibration") if args.calibration else None
        if calibration is not None:
            calibration = _check_batch(calibration, "calibration")
        plan = to_fpga(args.model, _kernel(args), calibration=calibration, input_shape=(1,) + x.shape[1:],
                       max_rows=args.max_rows, max_out_groups=args.max_out_groups, cpu_fallback=args.cpu_fallback)
        if not args.quiet:
            print(plan.summary())
        device = _device(args.device, plan.cfg)
        profile = Profile()
        try:
            session = Session(plan, device)
            t0 = time.perf_counter()
            out = session.run(x, profile=profile, progress=sys.stderr.isatty())
            elapsed = time.perf_counter() - t0
        finally:
            device.close()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = plan.graph.outputs[0]
    y = out[name]
    print(f"ran {x.shape[0]} input(s) on the {args.device} device in {elapsed:.3f} s; "
          f"output {name!r} {y.shape} {y.dtype}")
    if y.ndim == 2:
        print("top-1:", y.argmax(axis=1).tolist())
    if profile.cycles:                      # devices that count cycles (rtl): measured next to ideal
        print(plan.summary(measured=profile.cycles_per_run()))
        total = sum(profile.cycles_per_run().values())
        print(f"measured accelerator cycles per image {total:.0f}, ideal {plan.ideal_cycles()} "
              f"({total / max(plan.ideal_cycles(), 1):.2f}x)")
    if args.profile:
        print(profile.report())
        if args.plot:
            print(f"plot written to {args.plot}" if profile.plot(args.plot) else "no plot: matplotlib is not installed")
    if args.output:
        np.save(args.output, y)
        print(f"output written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
