"""Compress an ONNX model for the accelerator.

``python -m hlsinf.compress MODEL.onnx -o OUT.onnx [--prune AMOUNT] [--calibration C.npy --quantize]``

Folds BatchNormalization into the preceding Conv, zeroes the weakest Conv output channels
(``--prune``, L1 norm by default), deletes every all-zero channel from the graph (folding
its constant output into the next layer's bias), and with ``--quantize`` runs the host's
post-training quantiser on the calibration batch, writing a QDQ model. Errors are one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

from hlsinf.compress._model import CompressError
from hlsinf.compress.pipeline import compress
from hlsinf.compress.prune import CRITERIA, SCOPES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hlsinf.compress", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="float ONNX model")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed ONNX model")
    p.add_argument("--prune", type=float, metavar="AMOUNT",
                   help="fraction of Conv output channels to zero and remove, in [0, 1)")
    p.add_argument("--scope", choices=SCOPES, default="layer",
                   help="'layer': AMOUNT of every layer; 'global': AMOUNT of all channels, weakest first")
    p.add_argument("--criterion", choices=CRITERIA, default="l1", help="channel importance (default l1)")
    p.add_argument("--layers", help="comma-separated Conv node names to prune (default: every removable Conv)")
    p.add_argument("--no-fold", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--calibration", help=".npy float batch (N x C x H x W) for post-training quantisation")
    p.add_argument("--quantize", action="store_true", help="quantise with the host's PTQ (needs --calibration)")
    p.add_argument("--act-signed", action="store_true", help="int8 activations (default uint8)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.quantize != (args.calibration is not None):
            raise CompressError("--quantize and --calibration go together: quantisation needs a calibration batch, "
                                "and a calibration batch is only used to quantise")
        if not Path(args.model).is_file():
            raise CompressError(f"model file {args.model!r} does not exist")
        calibration = None
        if args.calibration:
            if not Path(args.calibration).is_file():
                raise CompressError(f"calibration file {args.calibration!r} does not exist")
            try:
                calibration = np.load(args.calibration)
            except Exception as e:
                raise CompressError(f"calibration file {args.calibration!r} is not a readable .npy array: {e}") from None
        layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
        model, report = compress(args.model, amount=args.prune, scope=args.scope, criterion=args.criterion,
                                 layers=layers, fold_bn=not args.no_fold, calibration=calibration,
                                 act_signed=args.act_signed or None)
        onnx.save(model, args.output)
    except (CompressError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
