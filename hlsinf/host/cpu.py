"""CPU layers on onnxruntime: the plan's CPU nodes, grouped into ONNX subgraphs.

Everything the accelerator does not take (classifier heads, softmax, upsampling, layers
the kernel cannot run) runs in onnxruntime, the library made for it. The plan's CPU steps
are grouped into partitions: every maximal run of CPU steps between two accelerator layers
becomes one ONNX model (its nodes, the constant nodes and initializers they use; inputs are
the tensors it reads from outside, outputs the tensors something outside needs or the graph
outputs), built once per plan and run by one onnxruntime session. Sessions are opened with
:func:`hlsinf.host.ort.onnxruntime_session`, so int8 QDQ / QLinear arithmetic on the CPU
is exact (int32 accumulation) on every x86 CPU.

What stays in numpy is what must be bit-exact with the kernel or is the runtime's own glue:
the kernel emulation of the reference device and the transfers (layout transforms between
NCHW and the kernel's GIHWCPI, column strips).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hlsinf.ir import Graph, GraphError, Node

__all__ = ["CpuPartition", "operator_problem", "export", "make_partitions", "graph_runner", "evaluate", "run_node"]


# Which operators onnxruntime runs ----------------------------------------------------------------

_KERNELS: dict[str, list[tuple[int, int]]] | None = None


def _cpu_kernels() -> dict[str, list[tuple[int, int]]]:
    """``{op: [(first opset, last opset), ...]}`` of onnxruntime's CPU kernels in the ONNX domain ({} if unknown)."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = {}
        try:
            from onnxruntime.capi import _pybind_state
            defs = _pybind_state.get_all_opkernel_def()
        except (ImportError, AttributeError):      # an onnxruntime without the registry: sessions check instead
            return _KERNELS
        for d in defs:
            if d.provider == "CPUExecutionProvider" and d.domain in ("", "ai.onnx"):
                _KERNELS.setdefault(d.op_name, []).append(tuple(d.version_range))
    return _KERNELS


def operator_problem(op: str, domain: str, opset: int) -> str | None:
    """Why onnxruntime's CPU provider cannot run ``op`` at ``opset``, or None if it can.

    Known from ONNX's operator schemas and onnxruntime's kernel registry (an operator with an
    ONNX function body is expanded by onnxruntime). Types are checked when the partition's
    session is opened (:meth:`CpuPartition.session`)."""
    import onnx.defs

    if domain not in ("", "ai.onnx"):
        return f"operators of domain {domain!r} do not run here (only the standard ONNX domain)"
    if op == "Constant":
        return None
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return f"ONNX has no operator {op} in opset {opset}"
    kernels = _cpu_kernels()
    if not kernels or any(lo <= schema.since_version <= hi for lo, hi in kernels.get(op, ())):
        return None
    if schema.has_function or schema.has_context_dependent_function:
        return None
    import onnxruntime
    return (f"onnxruntime {onnxruntime.__version__} has no CPU kernel for {op} version {schema.since_version} "
            f"(the model's opset is {opset})")


# Export of IR nodes to an ONNX model ---------------------------------------------------------------

def _attribute(node: Node, name: str, value, opset: int):
    from onnx import defs, helper, numpy_helper

    kind = None
    try:
        schema = defs.get_schema(node.op, opset, "")
        if name in schema.attributes:
            kind = int(schema.attributes[name].type)
    except defs.SchemaError:
        pass
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    return helper.make_attribute(name, value, attr_type=kind)


def _value_info(graph: Graph, tensor: str):
    from onnx import helper

    if tensor not in graph.dtypes:
        raise GraphError(f"tensor {tensor!r}: its element type is unknown, so it cannot cross into onnxruntime")
    shape = graph.shapes.get(tensor)
    return helper.make_tensor_value_info(tensor, helper.np_dtype_to_tensor_dtype(np.dtype(graph.dtypes[tensor])),
                                         None if shape is None else list(shape))


#: Initializers of at least this many elements are handed to onnxruntime as arrays
#: (``add_external_initializers``) instead of being copied into the protobuf model.
EXTERNAL_ELEMENTS = 1 << 16
_IN_MEMORY = "hlsinf-in-memory"


def _external_tensor(name: str, value: np.ndarray):
    from onnx import TensorProto, helper

    t = TensorProto()
    t.name = name
    t.dims.extend(value.shape)
    t.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", _IN_MEMORY
    return t


def export(graph: Graph, nodes: list[Node], inputs: list[str], outputs: list[str], name: str,
           external: dict[str, np.ndarray] | None = None):
    """An ``onnx.ModelProto`` of ``nodes`` (in order) with the initializers they use, the given
    inputs and outputs, the graph's opset and the element types and shapes of the import.

    With ``external`` (a dict), initializers of at least :data:`EXTERNAL_ELEMENTS` elements are
    not copied into the model: they are marked as external data and put in ``external``, for
    :func:`_open` to hand to onnxruntime (a VGG16 classifier is 120 M weights)."""
    from onnx import helper, numpy_helper

    protos = []
    for n in nodes:
        p = helper.make_node(n.op, n.inputs, n.outputs, name=n.name)
        p.attribute.extend(_attribute(n, k, v, graph.opset) for k, v in n.attrs.items())
        protos.append(p)
    used = dict.fromkeys(i for n in nodes for i in n.inputs if i and i in graph.initializers)
    inits = []
    for t in used:
        value = np.asarray(graph.initializers[t])
        if external is not None and value.size >= EXTERNAL_ELEMENTS and value.dtype != object:
            external[t] = value if value.flags.c_contiguous else value.copy(order="C")
            inits.append(_external_tensor(t, value))
        else:
            inits.append(numpy_helper.from_array(value, t))
    g = helper.make_graph(protos, name, [_value_info(graph, t) for t in inputs],
                          [_value_info(graph, t) for t in outputs], inits)
    return helper.make_model_gen_version(g, opset_imports=[helper.make_opsetid("", graph.opset)],
                                         producer_name="hlsinf.host")


#: Below this many multiply-accumulates a partition runs on one onnxruntime thread: a thread pool
#: costs more to create and to wake than the work.
SMALL_WORK = 1 << 20

_HEAVY = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum", "LSTM", "GRU", "RNN"}


def work_estimate(graph: Graph, nodes: list[Node]) -> int:
    """Rough multiply-accumulates of ``nodes``: output elements times the reduction length for
    convolutions and matrix products, output elements for everything else."""
    total = 0
    for n in nodes:
        out = sum(int(np.prod(graph.shapes.get(o, ()))) for o in n.outputs if o)
        reduce = 1
        if n.op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
            w = graph.shapes.get(n.inputs[3 if n.op == "QLinearConv" else 1], ())
            reduce = int(np.prod(w[1:])) if len(w) > 1 else 1
        elif n.op in _HEAVY:
            a = graph.shapes.get(n.inputs[0], ())
            reduce = int(a[-1]) if a else 1
        total += out * max(reduce, 1)
    return total


def _open(model, nodes: list[Node], what: str, threads: int = 0, external: dict[str, np.ndarray] | None = None):
    """An exact onnxruntime session for ``model`` (``threads`` intra-op threads, 0: onnxruntime's
    default), its threads not spinning between runs (the kernel emulation and the other
    partitions need the cores), with the ``external`` initializers of :func:`export`; a load
    failure names the node it is about."""
    import re

    from hlsinf.host.ort import onnxruntime_session
    try:
        import onnxruntime as ort
    except ImportError:
        raise GraphError(f"{what} runs in onnxruntime, which is not installed (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    values = []
    if external:
        names = list(external)
        values = [ort.OrtValue.ortvalue_from_numpy(external[t]) for t in names]
        options.add_external_initializers(names, values)
    try:
        session = onnxruntime_session(model, options)
        session.hlsinf_external = values          # the arrays onnxruntime reads stay alive with the session
        return session
    except Exception as e:                        # onnxruntime raises its own exception types
        message = str(e).strip()
        by_name = {n.name: n for n in nodes}
        for found in re.findall(r"node with name '([^']*)'|[Nn]ode \(([^)]*)\)|node_name: ?([^\s,]+)", message):
            name = next((f for f in found if f), None)
            if name in by_name:
                n = by_name[name]
                raise GraphError(f"node {n.name!r} ({n.op}): onnxruntime cannot run it on the CPU: {message}") from None
        listed = ", ".join(f"{n.name!r} ({n.op})" for n in nodes[:8]) + (", ..." if len(nodes) > 8 else "")
        raise GraphError(f"{what} (nodes {listed}): onnxruntime cannot run it: {message}") from None


# Partitions of a plan -------------------------------------------------------------------------------

@dataclass(eq=False)
class CpuPartition:
    """One run of CPU steps between accelerator layers, as one ONNX model run by one onnxruntime session."""

    name: str
    nodes: list[Node]                   #: the plan's CPU nodes, in order (constant nodes they need come first in ``model``)
    inputs: list[str]                   #: tensors read from outside (graph input, accelerator outputs, earlier partitions)
    outputs: list[str]                  #: tensors needed outside (later steps, graph outputs)
    model: object = field(repr=False)   #: onnx.ModelProto (large initializers as external data, in ``external``)
    threads: int = 0                    #: onnxruntime intra-op threads (0: its default, 1: small partitions)
    external: dict = field(default_factory=dict, repr=False)   #: initializer name -> array, outside ``model``
    _sessions: dict = field(default_factory=dict, repr=False)

    def session(self, extra_outputs: tuple[str, ...] = ()):
        """The onnxruntime session (opened once); with ``extra_outputs``, one that also returns
        those tensors of the partition (for ``Session.run(fetch=...)``)."""
        key = tuple(extra_outputs)
        if key not in self._sessions:
            model = self.model
            if key:
                import onnx
                model = onnx.ModelProto()
                model.CopyFrom(self.model)
                have = {o.name for o in model.graph.output}
                model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in key if t not in have)
            self._sessions[key] = _open(model, self.nodes, f"CPU partition {self.name!r}", self.threads,
                                        self.external)
        return self._sessions[key]

    def internal(self) -> set[str]:
        """Tensors computed inside the partition."""
        return {o for n in self.nodes for o in n.outputs if o}

    def __getstate__(self):                  # sessions are not picklable: reopened on demand
        state = dict(self.__dict__)
        state["_sessions"] = {}
        return state


def make_partitions(graph: Graph, steps: list, constants: list[Node]) -> tuple[list, list[CpuPartition]]:
    """Group the plan's CPU steps into onnxruntime partitions.

    ``steps`` are the planner's steps in execution order; ``constants`` the nodes whose inputs
    are all constant (not steps: they go into the partitions that use them, and onnxruntime folds
    them or, for the ``DequantizeLinear`` of quantised weights, fuses them into integer kernels).
    Within each run of steps between accelerator layers the transfers from the device move to the
    front (they only read accelerator outputs computed before the run), so the run's CPU nodes
    form one partition. Every ``CpuLayer`` gets the index of its partition; the partitions' sessions
    are opened here, so an operator onnxruntime cannot run is an error at plan time. A constant
    tensor needed outside the partitions (a transfer, a graph output) is computed once, here.
    """
    # Steps are told apart by their ``device`` ("accelerator", "cpu", "transfer"), so this
    # module needs nothing of the planner's (which imports it).
    def is_cpu(s):
        return s.device == "cpu"

    def is_transfer(s, from_device: bool):
        return s.device == "transfer" and (s.direction == "from_device") == from_device

    ordered, runs, current = [], [], []

    def close_run():
        ordered.extend(s for s in current if is_transfer(s, True))
        cpu = [s for s in current if is_cpu(s)]
        ordered.extend(cpu)
        ordered.extend(s for s in current if is_transfer(s, False))
        if cpu:
            runs.append(cpu)

    for step in steps:
        if step.device == "accelerator":
            close_run()
            current = []
            ordered.append(step)
        else:
            current.append(step)
    close_run()

    const_of = {o: n for n in constants for o in n.outputs if o}
    run_of: dict[str, int] = {}
    for k, run in enumerate(runs):
        for s in run:
            s.partition = k
            for o in s.node.outputs:
                if o:
                    run_of[o] = k
    # who reads each tensor: partitions by index, anything else as None
    readers: dict[str, set] = {}
    for k, run in enumerate(runs):
        for s in run:
            for i in s.node.inputs:
                if i:
                    readers.setdefault(i, set()).add(k)
    for s in ordered:
        if s.device == "transfer" and s.direction == "to_device":
            readers.setdefault(s.tensor, set()).add(None)
    for o in graph.outputs:
        readers.setdefault(o, set()).add(None)

    def constant_closure(tensors) -> list[Node]:
        need, stack = set(), [t for t in tensors if t in const_of]
        while stack:
            n = const_of[stack.pop()]
            if n.name not in need:
                need.add(n.name)
                stack.extend(i for i in n.inputs if i in const_of)
        return [n for n in constants if n.name in need]

    partitions = []
    for k, run in enumerate(runs):
        nodes = [s.node for s in run]
        produced = {o for n in nodes for o in n.outputs if o}
        inputs = list(dict.fromkeys(i for n in nodes for i in n.inputs
                                    if i and i not in produced and i not in graph.initializers and i not in const_of))
        outputs = [o for n in nodes for o in n.outputs if o and readers.get(o, set()) - {k}]
        consts = constant_closure(i for n in nodes for i in n.inputs if i)
        name = nodes[0].name if len(nodes) == 1 else f"{nodes[0].name}..{nodes[-1].name}"
        external: dict[str, np.ndarray] = {}
        model = export(graph, consts + nodes, inputs, outputs, f"{graph.name}_cpu{k}", external)
        part = CpuPartition(name, nodes, inputs, outputs, model,
                            threads=1 if work_estimate(graph, consts + nodes) < SMALL_WORK else 0, external=external)
        part.session()
        partitions.append(part)

    # constant tensors something other than a partition reads: computed once
    wanted = [t for t, who in readers.items() if t in const_of and None in who]
    if wanted:
        consts = constant_closure(wanted)
        external = {}
        model = export(graph, consts, [], wanted, f"{graph.name}_constants", external)
        values = _open(model, consts, "constant subgraph", threads=1, external=external).run(wanted, {})
        graph.initializers.update(zip(wanted, values))
    return ordered, partitions


# Whole graphs (calibration, tests) -------------------------------------------------------------------

def graph_runner(graph: Graph, keep: bool = False):
    """A function running a whole graph in onnxruntime (one session): ``x -> {tensor: value}``
    of the graph outputs, or with ``keep`` of every node output and the input as well."""
    outputs = list(graph.outputs)
    if keep:
        outputs += [o for n in graph.nodes for o in n.outputs if o and o not in graph.outputs]
    external: dict[str, np.ndarray] = {}
    model = export(graph, graph.nodes, list(graph.inputs), outputs, graph.name, external)
    session = _open(model, graph.nodes, f"graph {graph.name!r}", external=external)
    dtype = graph.dtypes.get(graph.inputs[0], np.dtype(np.float32))

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype)
        values = dict(zip(outputs, session.run(outputs, {graph.inputs[0]: x})))
        if keep:
            values[graph.inputs[0]] = x
        return values

    return run


def evaluate(graph: Graph, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Run a whole graph in onnxruntime once: see :func:`graph_runner`."""
    return graph_runner(graph, keep)(x)


def run_node(graph: Graph, node: Node, values: list) -> list[np.ndarray]:
    """The outputs of ``node`` for the given input ``values`` (``None`` where an optional input
    is absent), computed by onnxruntime: for the planner, which reads a weight or a scale that
    the model computes from constants (``QuantizeLinear(DequantizeLinear(w))`` and the like)."""
    inputs = [i for i in node.inputs if i]
    outputs = [o for o in node.outputs if o]
    feeds = {i: np.asarray(v) for i, v in zip(node.inputs, values) if i}
    pure = Graph([node], {}, inputs, outputs, graph.shapes, graph.dtypes, graph.opset, graph.name)
    session = _open(export(pure, [node], inputs, outputs, f"constant {node.name}"), [node], f"node {node.name!r}",
                    threads=1)
    got = dict(zip(outputs, session.run(outputs, feeds)))
    return [got.get(o) for o in node.outputs]
