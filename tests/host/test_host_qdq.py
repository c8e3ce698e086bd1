"""QDQ models as onnxruntime's tools and torch's exporter write them.

* Constants behind ``Identity`` nodes (torch's exporter shares identical initializers, e.g. two
  equal biases, or tied weights, through ``Identity``) and ``Constant`` nodes are constants.
"""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hlsinf.config import KernelConfig
from hlsinf.host import FpgaLayer, Session, onnxruntime_session, quantize, to_fpga

ort.set_default_logger_severity(3)


def _ort_run(model, x, fetch=()):
    """onnxruntime (exact integer products, see onnxruntime_session) on each image of a batch."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o.name for o in m.graph.output]
    for f in fetch:
        if f not in names:
            m.graph.output.append(helper.make_empty_tensor_value_info(f))
            names.append(f)
    sess = onnxruntime_session(m)
    inp = sess.get_inputs()[0].name
    runs = [sess.run(names, {inp: x[k:k + 1]}) for k in range(x.shape[0])]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


def _lsb(plan, qdq, x):
    """|accelerator - onnxruntime| in LSB over every tensor an accelerator layer writes."""
    fetch = [s.output for s in plan.steps if isinstance(s, FpgaLayer)]
    got, want = Session(plan).run(x, fetch=fetch), _ort_run(qdq, x, fetch)
    return np.concatenate([np.abs(got[f].astype(np.int64) - want[f].astype(np.int64)).ravel() for f in fetch])


def _layer_by_layer(plan, qdq, x):
    """Each accelerator layer alone, on onnxruntime's own int8/uint8 input to it, against
    onnxruntime's output: ``{layer name: |difference| in LSB}``. The layer is cut out of the QDQ
    model (its integer input tensor becomes the model input) and planned for the same kernel."""
    from onnx.utils import Extractor
    layers = plan.fpga_layers
    want = _ort_run(qdq, x, [t for l in layers for t in (l.input, l.output)])
    extractor = Extractor(onnx.shape_inference.infer_shapes(qdq))
    diffs = {}
    for layer in layers:
        sub = to_fpga(extractor.extract_model([layer.input], [layer.output]), plan.cfg)
        assert [l.name for l in sub.fpga_layers] == [layer.name], sub.summary()
        got = Session(sub).run(want[layer.input])[layer.output]
        diffs[layer.name] = np.abs(got.astype(np.int64) - want[layer.output].astype(np.int64))
    return diffs


def torch_style_model(h=10, w=10, seed=0):
    """Three 3x3 convs written the way ``torch.onnx.export(..., do_constant_folding=False)`` writes
    them: conv2's bias equals conv1's, so the exporter shares it as ``Identity(c1.bias) -> c2.bias``;
    conv3's weights are tied to conv2's (``Identity(c2.weight) -> c3.weight``); ReLU6's bounds are
    ``Constant`` nodes."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (6, 6, 3, 3)).astype(np.float32)
    b1 = np.full(6, 0.1, np.float32)
    b3 = rng.normal(0, 0.05, 6).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("c1.weight", w1), ("c1.bias", b1), ("c2.weight", w2), ("c3.bias", b3))]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
    nodes = [
        helper.make_node("Identity", ["c2.weight"], ["c3.weight"], name="Identity_0"),
        helper.make_node("Identity", ["c1.bias"], ["c2.bias"], name="Identity_1"),
        helper.make_node("Conv", ["input", "c1.weight", "c1.bias"], ["/c1/Conv_output_0"], name="/c1/Conv", **conv),
        helper.make_node("Relu", ["/c1/Conv_output_0"], ["/Relu_output_0"], name="/Relu"),
        helper.make_node("Conv", ["/Relu_output_0", "c2.weight", "c2.bias"], ["/c2/Conv_output_0"], name="/c2/Conv",
                         **conv),
        helper.make_node("Relu", ["/c2/Conv_output_0"], ["/Relu_1_output_0"], name="/Relu_1"),
        helper.make_node("Conv", ["/Relu_1_output_0", "c3.weight", "c3.bias"], ["/c3/Conv_output_0"],
                         name="/c3/Conv", **conv),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["/Constant_1_output_0"], name="/Constant_1",
                         value=numpy_helper.from_array(np.array(6, np.float32))),
        helper.make_node("Clip", ["/c3/Conv_output_0", "/Constant_output_0", "/Constant_1_output_0"],
                         ["/Clip_output_0"], name="/Clip"),
        helper.make_node("Flatten", ["/Clip_output_0"], ["output"], name="/Flatten", axis=1),
    ]
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [1, 3, h, w])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    return model


def test_library_ptq_of_a_torch_style_model_with_shared_initializers():
    """Used to fail with KeyError: 'c2.bias' (the bias is an Identity output, not an initializer)."""
    model = torch_style_model()
    rng = np.random.default_rng(1)
    calib = rng.uniform(0, 1, (6, 3, 10, 10)).astype(np.float32)
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16)
    qdq = quantize(model, calib, cfg)
    onnx.checker.check_model(qdq)
    plan = to_fpga(qdq, cfg)
    assert len(plan.fpga_layers) == 3, plan.summary()
    x = rng.uniform(0, 1, (4, 3, 10, 10)).astype(np.float32)
    assert all(d.max() <= 1 for d in _layer_by_layer(plan, qdq, x).values())
    diffs = _lsb(plan, qdq, x)           # end to end, a 1-LSB difference can grow by one downstream
    assert np.mean(diffs <= 1) >= 0.999 and np.mean(diffs == 0) >= 0.95
    # the float model agrees: ReLU6 (Constant bounds) became the clip of the last layer
    out = plan.graph.outputs[0]
    assert plan.fpga_layers[-1].calls[0].clip_hi is not None
    err = np.abs(Session(plan).run(x)[out] - _ort_run(model, x)[out])
    assert err.max() < 0.3 and err.mean() < 0.02, (err.max(), err.mean())     # of 0..6, 8-bit
