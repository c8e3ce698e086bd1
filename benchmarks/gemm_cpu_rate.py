"""Measure onnxruntime's MAC rate on a quantised (QDQ) Gemm of one row, the CPU side of the
planner's Gemm/MatMul decision (``hlsinf.host.plan.CPU_GEMM_MACS_PER_S``).

    PYTHONPATH=. python benchmarks/gemm_cpu_rate.py [--sizes 4096x4096 25088x4096 4096x1000]

Each size is a float ``Gemm(transB=1)`` of a 1 x K row quantised by onnxruntime's
``quantize_static`` (defaults: uint8 activations, int8 weights, QDQ), run by an
onnxruntime session with its default threads; prints the median of ``--repeats`` runs and
the MAC rate (K*O MACs / time).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def gemm_model(k: int, o: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.02, (o, k)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.02, o).astype(np.float32), "b")
    node = helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, o])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def measure(k: int, o: int, repeats: int) -> float:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    rng = np.random.default_rng(1)
    batch = [rng.uniform(0, 1, (1, k)).astype(np.float32) for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": x} for x in batch])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        onnx.save(gemm_model(k, o), src)
        quantize_static(str(src), str(dst), Reader())
        session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    x = batch[0]
    session.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["4096x4096", "25088x4096", "4096x1000", "1024x1000"])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    print("| K x O | ms (median) | MAC/s |\n|---|---|---|")
    for size in args.sizes:
        k, o = map(int, size.split("x"))
        t = measure(k, o, args.repeats)
        print(f"| {k} x {o} | {t * 1e3:.3f} | {k * o / t:.3g} |", flush=True)


if __name__ == "__main__":
    main()
