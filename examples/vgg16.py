"""VGG16 at 224x224 on the reference device, next to onnxruntime's float time on this machine.

    PYTHONPATH=. python examples/vgg16.py [--cpi 8 --cpo 8] [--calibration-images 2]

The network is built with ``onnx.helper`` and seeded random weights (nothing is
downloaded), quantised post-training by the library from a few random calibration images,
planned with ``to_fpga`` (plan printed) and run on the bit-exact reference device. The
output is compared with onnxruntime running the float model.
"""

from __future__ import annotations

import numpy as np

from hlsinf.host.models import vgg16
from network_demo import main


def compare(y, y_float) -> str:
    return (f"top-1 reference device {int(y.argmax())}, onnxruntime float {int(y_float.argmax())}; "
            f"max |softmax difference| {float(np.abs(y - y_float).max()):.2e}")


if __name__ == "__main__":
    main(__doc__.split("\n\n")[0], vgg16, compare, calibration_images=2)
