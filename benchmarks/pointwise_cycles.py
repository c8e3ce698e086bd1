"""Cycles of 1x1 convolutions as pointwise calls (``KernelConfig.with_pointwise``): how full the
CPO x CPI x 9 MAC array is on 1x1 layers of MobileNetV2 and ResNet-50 size.

    PYTHONPATH=. python benchmarks/pointwise_cycles.py [--cpi 4 --cpo 4] [--latency 100] [--layers ...]

Each layer runs as ONE pointwise call (every input channel, every output group, ReLU) in the
generated Verilog under Verilator with the plain C++ harness (``hlsinf/sim/harness.py``: an
AXI4-Lite host and three AXI memories with ``--latency`` cycles from an address to its first
beat, one 512-bit beat per cycle per bundle), its output compared bit for bit with
``hlsinf.reference.kernel_call``.

Per layer:

* ``ideal`` = ``GS * H * W * GO`` (one super-pixel of 9*CPI lanes per cycle per output group,
  ``GS = ceil(I / (9 CPI))``);
* ``peak fraction`` = useful MACs / (cycles * CPO * CPI * 9), useful = ``H*W*I*O``: the share of
  the MAC array's peak the call reaches, channel padding counted as waste;
* ``3x3-slot ideal`` = ``ceil(I/CPI) * H * W * GO``, the ideal of the same layer in the 3x3 slot
  (centre tap only), the cycles a kernel without the option needs at least.

At CPI = 8 (int8) a super-pixel is 72 bytes against a 64-byte beat: the reader delivers
64/72 = 0.889 super-pixels a cycle, the bound of an 8x8 build (docs/performance.md).

Writes ``benchmarks/results/pointwise_cycles_<CPI>x<CPO>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hlsinf.config import KernelConfig         # noqa: E402
from hlsinf.reference import CallArgs          # noqa: E402
from hlsinf.sim import harness                 # noqa: E402

#: 1x1 layers (name, I, O, H = W): MobileNetV2 at 224x224 (expand and project convolutions of
#: its 14x14 and 28x28 blocks) and ResNet-50's bottleneck reduce / expand convolutions.
LAYERS = [
    ("mobilenetv2 14x14 expand 96->576", 96, 576, 14),
    ("mobilenetv2 14x14 project 576->96", 576, 96, 14),
    ("mobilenetv2 28x28 expand 32->192", 32, 192, 28),
    ("resnet50 28x28 reduce 512->128", 512, 128, 28),
    ("resnet50 14x14 reduce 1024->256", 1024, 256, 14),
    ("resnet50 7x7 reduce 2048->512", 2048, 512, 7),
]
#: Build limits: the largest 3x3-slot layer; a pointwise call takes up to 9x imax channels.
IMAX, HWMAX = 576, 28


def layer_args(cfg: KernelConfig, i: int, o: int, hw: int) -> CallArgs:
    shift = harness.requantize_shift(cfg, max(1, i // 9))   # sums of I products, not 9*I
    return CallArgs(H=hw, W=hw, rows=hw, I=i, O=o, relu=True, shift=shift, pointwise=True).validate(cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpi", type=int, default=4)
    parser.add_argument("--cpo", type=int, default=4)
    parser.add_argument("--latency", type=int, default=100)
    parser.add_argument("--layers", nargs="*", help="names (substrings) of the layers to run")
    parser.add_argument("--out", default="benchmarks/results")
    opts = parser.parse_args(argv)
    cfg = KernelConfig.from_format("int8", cpi=opts.cpi, cpo=opts.cpo, imax=IMAX, wmax=HWMAX, hmax=HWMAX,
                                   with_pointwise=True)
    started = time.monotonic()
    exe, build_s = harness.build(cfg, kernel_args={"input_cache_pixels": 0})
    print(f"{cfg.cpi}x{cfg.cpo} build: {build_s:.0f} s")
    rows = []
    for name, i, o, hw in LAYERS:
        if opts.layers and not any(s in name for s in opts.layers):
            continue
        args = layer_args(cfg, i, o, hw)
        with tempfile.TemporaryDirectory() as tmp:
            got = harness.run_call(exe, cfg, args, seed=1, workdir=Path(tmp), latency=opts.latency, label=name)
        cycles, ideal = int(got["cycles"]), int(got["ideal"])
        macs = hw * hw * i * o
        row = {"layer": name, "I": i, "O": o, "H": hw, "W": hw, "cycles": cycles, "ideal": ideal,
               "ideal_fraction": ideal / cycles,
               "peak_fraction": macs / (cycles * cfg.cpi * cfg.cpo * 9),
               "slot3x3_ideal": math.ceil(i / cfg.cpi) * hw * hw * math.ceil(o / cfg.cpo)}
        rows.append(row)
        print(f"{name:55s} cycles {cycles:8d}  ideal {ideal:8d}  ideal/cycles {row['ideal_fraction']:.3f}  "
              f"MAC peak {row['peak_fraction']:.3f}  (3x3-slot ideal {row['slot3x3_ideal']}, "
              f"{row['slot3x3_ideal'] / cycles:.1f}x)", flush=True)
    result = {"cpi": cfg.cpi, "cpo": cfg.cpo, "latency": opts.latency, "build_seconds": build_s,
              "seconds": time.monotonic() - started, "layers": rows}
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pointwise_cycles_{cfg.cpi}x{cfg.cpo}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
