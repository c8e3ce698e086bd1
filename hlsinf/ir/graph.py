"""The graph IR itself: nodes in topological order, constant tensors as numpy arrays, shapes.

Plain Python objects, no protobuf: the planner, the CPU operators and the compression
passes read attributes as a dict and parameters as arrays. The queries (producer,
consumers) are indexed on first use; every edit made through the methods below drops
the index, so a pass that edits ``node.inputs`` or ``graph.nodes`` directly must call
:meth:`Graph.changed` afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GraphError", "Node", "Graph", "describe", "through_identity"]


class GraphError(ValueError):
    """The model cannot be imported, run or rewritten; the message names the file, node or tensor."""


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]            #: "" marks an omitted optional input
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    domain: str = ""             #: operator set domain ("" is the default ONNX domain)
    #: ONNX attribute types of imported attributes, so that an export keeps them (an empty list has no type)
    attr_types: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self):
        return f"node {self.name!r} ({self.op})"


def describe(node: Node) -> str:
    """``"Conv node 'conv1'"``: how the fold and the compression passes name a node in messages."""
    return f"{node.op} node {node.name!r}"


@dataclass
class Graph:
    """An imported model.

    ``shapes``/``dtypes`` cover the tensors whose type is known: every tensor for a
    static import (:func:`~hlsinf.ir.load_model`), with ``None`` for unknown dimensions
    in an editable one (``static=False``). ``source`` is the imported ``ModelProto``
    without nodes and initializers (editable imports only): :func:`~hlsinf.ir.to_onnx`
    writes the graph back into it, so opsets, metadata and declared input/output types
    survive a rewrite.
    """

    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple]
    dtypes: dict[str, np.dtype]
    opset: int = 13
    name: str = "model"
    source: object = field(default=None, repr=False, compare=False)
    _index: tuple | None = field(default=None, init=False, repr=False, compare=False)

    # Queries ------------------------------------------------------------------------------------

    def _producers_uses(self):
        if self._index is None:
            prod = {o: n for n in self.nodes for o in n.outputs}
            uses: dict[str, list[tuple[Node, int]]] = {}
            for n in self.nodes:
                for k, i in enumerate(n.inputs):
                    if i:
                        uses.setdefault(i, []).append((n, k))
            self._index = (prod, uses)
        return self._index

    def producer(self, tensor: str) -> Node | None:
        return self._producers_uses()[0].get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        """The node of each input reading ``tensor`` (a node reading it twice is listed twice)."""
        return [n for n, _ in self.uses(tensor)]

    def uses(self, tensor: str) -> list[tuple[Node, int]]:
        """Every ``(node, input index)`` reading ``tensor``, in graph order."""
        return self._producers_uses()[1].get(tensor, [])

    def is_output(self, tensor: str) -> bool:
        return tensor in self.outputs

    def use_count(self, tensor: str) -> int:
        """Node inputs reading ``tensor``, plus one if it is a graph output."""
        return len(self.uses(tensor)) + self.is_output(tensor)

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor (an initializer, possibly behind ``Identity`` nodes:
        see :func:`through_identity`), else None."""
        return self.initializers.get(through_identity(self, tensor))

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"no node named {name!r} in the graph")

    def nodes_of(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    def parameter(self, node: Node, index: int, what: str, required: bool = True) -> np.ndarray | None:
        """Input ``index`` of ``node``; it must be an initializer (or absent if not ``required``)."""
        if index >= len(node.inputs) or not node.inputs[index]:
            if required:
                raise GraphError(f"{describe(node)} has no {what} (input {index})")
            return None
        name = node.inputs[index]
        if name not in self.initializers:
            raise GraphError(f"{describe(node)}: its {what} {name!r} is computed in the graph, "
                             f"not a constant initializer, so the pass cannot rewrite it")
        return self.initializers[name]

    # Edits --------------------------------------------------------------------------------------

    def changed(self):
        """Drop the producer/consumer index after editing nodes directly."""
        self._index = None

    def copy(self) -> Graph:
        """A graph whose nodes, lists and dicts can be edited without touching this one (arrays are shared:
        replace them, never write into them)."""
        nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs),
                                     attr_types=dict(n.attr_types)) for n in self.nodes]
        return Graph(nodes, dict(self.initializers), list(self.inputs), list(self.outputs), dict(self.shapes),
                     dict(self.dtypes), self.opset, self.name, self.source)

    def remove_node(self, node: Node):
        self.nodes.remove(node)
        self.changed()

    def set_input(self, node: Node, index: int, tensor: str):
        """Make ``tensor`` input ``index`` of ``node`` (omitted inputs before it become "")."""
        while len(node.inputs) <= index:
            node.inputs.append("")
        node.inputs[index] = tensor
        self.changed()

    def set_output(self, node: Node, index: int, tensor: str):
        node.outputs[index] = tensor
        self.changed()

    def set_initializer(self, name: str, value):
        """Replace the value of an initializer, keeping its element type."""
        value = np.asarray(value).astype(self.initializers[name].dtype)
        self.initializers[name] = value
        self.shapes[name] = value.shape

    def add_initializer(self, hint: str, value) -> str:
        """Add an initializer under a fresh name based on ``hint``; return the name."""
        taken = set(self.initializers) | set(self.inputs) | {t for n in self.nodes for t in (*n.inputs, *n.outputs)}
        name, k = hint, 1
        while name in taken:
            name, k = f"{hint}_{k}", k + 1
        value = np.asarray(value)
        self.initializers[name] = value
        self.shapes[name], self.dtypes[name] = value.shape, value.dtype
        return name

    def drop_unused_initializers(self):
        """Forget initializers no node reads and no graph output names."""
        used = {t for n in self.nodes for t in n.inputs} | set(self.outputs)
        for t in [t for t in self.initializers if t not in used]:
            del self.initializers[t]
            self.shapes.pop(t, None)
            self.dtypes.pop(t, None)


def through_identity(graph: Graph, tensor: str) -> str:
    """The tensor an ``Identity`` chain starts from; ``tensor`` itself if no Identity produces it.

    torch's exporter shares identical initializers (a bias of zeros, tied weights) by
    writing ``Identity(first) -> second``; a constant behind such a chain is still a constant.
    (The static import already folds such chains; graphs built or edited in Python may not.)
    """
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        node = graph.producer(tensor)
        if node is None or node.op != "Identity" or not node.inputs or not node.inputs[0]:
            break
        tensor = node.inputs[0]
    return tensor
