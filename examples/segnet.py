"""A SegNet-like encoder-decoder at 224x224 on the reference device, next to onnxruntime float.

    PYTHONPATH=. python examples/segnet.py [--cpi 8 --cpo 8] [--calibration-images 1]

The network (VGG-style encoder with max pools and batch norm, nearest-upsampling decoder,
1x1 classifier, per-pixel softmax) is built with ``onnx.helper`` and seeded random weights
(nothing is downloaded), quantised post-training by the library from a few random
calibration images, planned with ``to_fpga`` (plan printed) and run on the bit-exact
reference device. The output is compared with onnxruntime running the float model.
"""

from __future__ import annotations

import numpy as np

from hlsinf.host.models import segnet
from network_demo import main


def compare(y, y_float) -> str:
    agree = float(np.mean(y.argmax(axis=1) == y_float.argmax(axis=1)))
    return (f"per-pixel class agreement with onnxruntime float: {agree:.3f}; "
            f"max |softmax difference| {float(np.abs(y - y_float).max()):.2e}")


if __name__ == "__main__":
    main(__doc__.split("\n\n")[0], segnet, compare, calibration_images=1)
