"""Element-wise activations after a convolution, as the kernel's post-op lookup table.

A function of one value (sigmoid, tanh, SiLU ``x * sigmoid(x)``, hard-swish, Mish
``x * tanh(softplus(x))``, ELU, ...) maps each of the 256 int8/uint8 codes of the
convolution's output to one output code, so the whole subgraph between the convolution's
QuantizeLinear and the next one becomes a 256-entry table (docs/stages/post.md, ``table``).

:func:`activation_region` finds that subgraph (an *activation region*): the nodes fed, directly
or through each other, by one tensor, all element-wise on single values (unary activations,
``Mul``/``Add``/``Sub``/``Div`` of region values or scalar constants, and in a QDQ model the
QuantizeLinear/DequantizeLinear pairs between them), closed (nothing outside reads an
intermediate value) and ending in one tensor. :func:`evaluate_region` runs it on an array of
values in float64, with every QuantizeLinear rounding half to even and saturating as
onnxruntime does.
"""

from __future__ import annotations

import numpy as np

from hlsinf.ir import Graph, Node

__all__ = ["ACTIVATION_OPS", "activation_region", "evaluate_region", "table_codes"]

#: Single-value activations a table replaces (besides Relu/Clip, which the kernel clips).
ACTIVATION_OPS = ("Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "Elu", "Softplus", "Mish",
                  "Selu", "Softsign")
_ARITH = ("Mul", "Add", "Sub", "Div")
_CLIPS = ("Relu", "Clip")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _scalar(graph: Graph, tensor: str):
    v = graph.const(tensor)
    return None if v is None or np.size(v) != 1 else np.asarray(v).reshape(())


def activation_region(graph: Graph, start: str, *, quantized: bool) -> tuple[list[Node], str] | None:
    """The largest activation region fed by ``start``: ``(nodes in graph order, output tensor)``,
    or None. ``quantized``: ``start`` is an integer tensor of a QDQ model, the region may hold
    Q/DQ nodes and must end with a QuantizeLinear; else it is float and holds none."""
    allowed = ACTIVATION_OPS + _ARITH + _CLIPS + (_QDQ if quantized else ())
    tensors, members = {start}, []
    for node in graph.nodes:
        ins = [i for i in node.inputs if i]
        if not any(i in tensors for i in ins) or node.op not in allowed:
            continue
        if node.op in _QDQ:
            ok = ins[0] in tensors and all(_scalar(graph, i) is not None for i in ins[1:])
        elif node.op == "Clip":
            ok = ins[0] in tensors and all(_scalar(graph, i) is not None for i in ins[1:])
        else:
            ok = all(i in tensors or _scalar(graph, i) is not None for i in ins)
        if ok and len([o for o in node.outputs if o]) == 1:
            members.append(node)
            tensors.add(node.outputs[0])
    best = None
    for k, cut in enumerate(members):
        if quantized and cut.op != "QuantizeLinear":
            continue
        # the cut's ancestors within the region
        need, chosen = {cut.outputs[0]}, []
        for node in reversed(members[:k + 1]):
            if node.outputs[0] in need:
                chosen.append(node)
                need.update(i for i in node.inputs if i)
        chosen.reverse()
        names = {n.name for n in chosen}
        produced = {n.outputs[0] for n in chosen} | {start}
        closed = all(c.name in names for t in produced - {cut.outputs[0]} for c in graph.consumers(t)) \
            and not (produced - {cut.outputs[0]}) & set(graph.outputs)
        if not closed or start not in need or not any(n.op in ACTIVATION_OPS for n in chosen):
            continue
        if best is None or len(chosen) > len(best[0]):
            best = (chosen, cut.outputs[0])
    return best


def _attr(node: Node, name: str, default: float) -> float:
    return float(node.attrs.get(name, default))


def evaluate_region(graph: Graph, nodes: list[Node], start: str, x: np.ndarray) -> np.ndarray:
    """The region's output for values ``x`` of ``start`` (float64 throughout; integer codes for
    the outputs of QuantizeLinear, which rounds half to even and saturates to its type)."""
    values = {start: np.asarray(x, np.float64)}

    def get(t):
        return values[t] if t in values else np.asarray(graph.const(t), np.float64).reshape(())

    for node in nodes:
        a = get(node.inputs[0])
        op = node.op
        if op == "QuantizeLinear":
            zp = graph.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros((), np.uint8)
            info = np.iinfo(np.asarray(zp).dtype)
            y = np.clip(np.rint(a / get(node.inputs[1])) + float(np.asarray(zp).reshape(())), info.min, info.max)
        elif op == "DequantizeLinear":
            zp = get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else 0.0
            y = (a - zp) * get(node.inputs[1])
        elif op == "Sigmoid":
            y = 1.0 / (1.0 + np.exp(-a))
        elif op == "Tanh":
            y = np.tanh(a)
        elif op == "Softplus":
            y = np.logaddexp(0.0, a)
        elif op == "Mish":
            y = a * np.tanh(np.logaddexp(0.0, a))
        elif op == "HardSigmoid":
            y = np.clip(_attr(node, "alpha", 0.2) * a + _attr(node, "beta", 0.5), 0.0, 1.0)
        elif op == "HardSwish":
            y = a * np.clip(a / 6.0 + 0.5, 0.0, 1.0)
        elif op == "LeakyRelu":
            y = np.where(a >= 0, a, _attr(node, "alpha", 0.01) * a)
        elif op == "Elu":
            y = np.where(a > 0, a, _attr(node, "alpha", 1.0) * np.expm1(np.minimum(a, 0.0)))
        elif op == "Selu":
            alpha, gamma = _attr(node, "alpha", 1.67326319217681884765625), _attr(node, "gamma", 1.05070102214813232421875)
            y = gamma * np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0.0)))
        elif op == "Softsign":
            y = a / (1.0 + np.abs(a))
        elif op == "Relu":
            y = np.maximum(a, 0.0)
        elif op == "Clip":
            lo = get(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attrs.get("min", -np.inf)
            hi = get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else node.attrs.get("max", np.inf)
            y = np.clip(a, lo, hi)
        else:
            b = get(node.inputs[1])
            y = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}[op](a, b)
        values[node.outputs[0]] = y
    return values[nodes[-1].outputs[0]]


def table_codes(graph: Graph, nodes: list[Node], start: str, codes: np.ndarray) -> np.ndarray:
    """The output codes (int64) of a quantised region for each integer code of ``start``."""
    return np.asarray(evaluate_region(graph, nodes, start, np.asarray(codes, np.float64)), np.float64).astype(np.int64)
