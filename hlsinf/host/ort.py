"""onnxruntime as an exact reference and CPU engine: the session settings every use shares.

The CPU layers of a plan (:mod:`hlsinf.host.cpu`), the quantiser's calibration and the tests'
reference runs all open onnxruntime sessions through :func:`onnxruntime_session`, so that
onnxruntime computes what ONNX defines (see its docstring for the two settings that matter).
"""

from __future__ import annotations

__all__ = ["ORT_X64_QUANT_PRECISION", "ORT_DISABLED_OPTIMIZERS", "onnxruntime_session"]

#: onnxruntime's ``kOrtSessionOptionsAvx2PrecisionMode``: exact U8U8 products in place of U8S8.
ORT_X64_QUANT_PRECISION = "session.x64quantprecision"


#: onnxruntime graph optimisers that change what a model computes (see :func:`onnxruntime_session`).
ORT_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def onnxruntime_session(model, options=None):
    """An onnxruntime CPU ``InferenceSession`` that runs a QDQ model with exact integer arithmetic.

    ``model`` is a ``ModelProto``, its serialised bytes or a path; ``options`` an optional
    ``onnxruntime.SessionOptions`` (it is changed: the entry below is added).

    onnxruntime fuses ``DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear`` into
    QLinearConv, QGemm, .... Its x86 kernels for uint8 activations x int8 weights (int8
    activations are shifted to uint8 first) add each pair of neighbouring products with
    ``VPMADDUBSW``, in *saturating 16-bit* arithmetic, before accumulating in 32 bits: two products
    of 255 x 127 make 64770, clamped to 32767. Only VNNI kernels add them in 32 bits, so on AVX2
    (and AVX-512 without VNNI) CPUs the default session computes something else than ONNX's
    QLinearConv/QDQ semantics (int32 accumulation, no intermediate saturation) and than the
    kernel, which accumulates exactly. Whether it shows depends on the CPU, not the model file:
    ``quantize_static``'s symmetric int8 weights reach +-127 and uint8 activations 255.
    ``session.x64quantprecision = 1`` makes onnxruntime turn the int8 weights into uint8 (zero
    point + 128) and use its exact U8U8 kernels; on other CPUs it changes nothing.

    The graph optimiser ``WeightBiasQuantization`` (:data:`ORT_DISABLED_OPTIMIZERS`) is off: it
    quantises the float weights and bias of a Conv fed by a DequantizeLinear, which turns a
    mixed QDQ/float model (a float depthwise conv after quantised layers) into another model
    (139 % of the largest output apart on a small MobileNetV2; 2.5e-7 with it off).
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        model = str(model)
    options = options if options is not None else ort.SessionOptions()
    options.add_session_config_entry(ORT_X64_QUANT_PRECISION, "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=ORT_DISABLED_OPTIMIZERS)
