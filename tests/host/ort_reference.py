"""onnxruntime as the tests' reference: the exact session on each image of a batch."""

import numpy as np
import onnx

from hlsinf.host import onnxruntime_session


def ort_run(model, x, fetch=()):
    """onnxruntime (exact integer products, see ``onnxruntime_session``) on each image of a
    batch; returns ``{name: batch}`` for the model's outputs and the tensors in ``fetch``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o.name for o in m.graph.output]
    for f in fetch:
        if f not in names:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(f))
            names.append(f)
    sess = onnxruntime_session(m)
    inp = sess.get_inputs()[0].name
    runs = [sess.run(names, {inp: x[k:k + 1]}) for k in range(x.shape[0])]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}
