"""``to_fpga``: turn an imported (quantised) graph into a plan of accelerator calls, CPU layers and transfers.

What the planner does, in order:

1. folds BatchNormalization into the preceding float convolution (before quantisation);
2. optionally quantises a float model with a calibration batch (:func:`.quantize.quantize`);
3. fuses each quantised convolution, ``Q -> DQ -> Conv(DQ w, DQ b) [-> Relu|Clip] -> Q``,
   with a following 2x2/stride-2 max or average pool (``DQ -> Pool -> Q`` at the same
   scale), into one accelerator layer; 1x1 and 2x2 kernels go into the 3x3 slot with
   adjusted padding; a depthwise convolution (group = input = output channels) is one too on
   a kernel built with depthwise (``KernelConfig.with_depthwise``); on a kernel built with
   ``KernelConfig.with_pointwise`` a 1x1 stride-1 unpadded convolution is a pointwise call instead
   (input in super-pixels, GIHWCPI with 9*CPI lanes, written by the host: a device-resident input
   makes a round trip through the host); the activation format is the kernel's, or the model's when the kernel
   leaves it open; each tensor gets an exact device encoding (:class:`ActEncoding`) and
   non-zero zero points go into the bias, with host padding where the input's matters
   (:func:`realise_input_zero_point`);
4. splits each layer into kernel calls: row tiles of at most ``hmax`` input rows (halo rows,
   per-tile padding, read/write offsets into full planes), column tiles when the input is
   wider than ``wmax`` (strip buffers with halo columns, copied by the runtime), and
   output-group ranges;
5. packs weights, bias and multipliers once, and places layout transforms (NCHW <->
   GIHWCPI) only where data crosses between the CPU and the accelerator, so consecutive
   accelerator layers exchange device buffers directly.

Anything else runs on the CPU, in onnxruntime: each run of CPU steps between accelerator
layers is one ONNX subgraph (:mod:`hlsinf.host.cpu`); a convolution on the CPU carries the
reason.

An fp32 kernel (``number_format='fp32'``) takes the float model as it is instead: steps 2-3
become :func:`_match_float_conv` / :func:`_build_float_layer` (``Conv [-> Relu|Clip]
[-> 2x2 pool]`` with float32 weights and bias, no scales), the tiling and the transfers are
the same; a quantised model or a calibration batch is a :class:`PlanError` there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.reference import (POOL_AVG, POOL_MAX, POOL_NONE, CallArgs, act_dtype, bias_dtype,
                         pack_channels, pack_depthwise_weights, pack_pointwise_weights, pack_table, pack_weights,
                         pointwise_imax, weight_dtype)
from hlsinf.host.activation import activation_region, table_codes
from hlsinf.host.cpu import make_partitions, run_node
from hlsinf.host.load import load_model
from hlsinf.ir import Graph, GraphError, Node, fold_batchnorm, through_identity
from hlsinf.host.quantize import QuantError, requant_params

__all__ = ["PlanError", "ColumnTile", "FpgaLayer", "CpuLayer", "Transfer", "Plan", "to_fpga", "load_kernel",
           "ActEncoding", "InputZeroPoint", "realise_input_zero_point", "activation_format"]


class PlanError(ValueError):
    """A layer cannot be mapped onto the kernel; the message names the node and the limit."""


# Activation formats and zero points ---------------------------------------------------------------

@dataclass(frozen=True)
class ActEncoding:
    """How one quantised activation tensor of the QDQ model is held in device memory.

    ``device value = model value + offset``, in the kernel's activation type. The offset is 0
    when the formats agree, +-128 between int8 and uint8 (a bijection, so exact), or 0 /
    ``-zero_point`` when the tensor's known value range (e.g. after a ReLU) fits the kernel's
    type that way. The real value is ``scale * (device value - device_zero_point)``.
    """

    dtype: np.dtype                     #: the model's integer type
    zero_point: int                     #: the model's zero point
    offset: int = 0

    @property
    def device_zero_point(self) -> int:
        return self.zero_point + self.offset

    def to_device(self, q: np.ndarray, act) -> np.ndarray:
        q = np.asarray(q)
        if q.dtype != self.dtype:
            raise GraphError(f"tensor is {q.dtype}; the plan expects {np.dtype(self.dtype)}")
        if self.offset == 0 and q.dtype == np.dtype(act):
            return q
        d = q.astype(np.int64) + self.offset
        info = np.iinfo(act)
        if d.size and (d.min() < info.min or d.max() > info.max):
            raise GraphError(f"values {int(q.min())}..{int(q.max())} do not fit the kernel's {np.dtype(act)} "
                             f"activations with offset {self.offset}")
        return d.astype(act)

    def to_host(self, d: np.ndarray) -> np.ndarray:
        return (np.asarray(d, np.int64) - self.offset).astype(self.dtype)


def _encoding(dtype, zero_point: int, values: tuple[int, int] | None, cfg: KernelConfig, what: str) -> ActEncoding:
    """The device encoding of a model tensor (``dtype``, ``zero_point``) whose values lie in ``values``
    (None: anywhere in the type's range).

    Only exact offsets are candidates (the shifted range must fit the kernel's type); of
    those, one that makes the device zero point 0, else the smallest."""
    dtype = np.dtype(dtype)
    act = np.dtype(act_dtype(cfg))
    if dtype.kind not in "iu":
        raise _NoMatch(f"{what} is {dtype}, not an integer type")
    amin, amax = cfg.act_range
    lo, hi = values if values is not None else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    half = 1 << (dtype.itemsize * 8 - 1)
    exact = [off for off in dict.fromkeys((0, -zero_point, half, -half)) if amin <= lo + off and hi + off <= amax]
    if not exact:
        raise _NoMatch(f"{what} is {dtype} (values {lo}..{hi}); the kernel takes {act} activations, "
                       f"which cannot hold them exactly")
    return ActEncoding(dtype, int(zero_point), min(exact, key=lambda off: (zero_point + off != 0, abs(off))))


@dataclass(frozen=True)
class InputZeroPoint:
    """How a layer realises its input's device zero point ``value`` (the real 0).

    In the interior ``sum w·(x - z) = sum w·x - z·sum w``: the term goes into the bias (always,
    exact). At padded borders the real padding value is ``z`` where the kernel pads with 0:
    the host writes the input with those rows/columns (``host_pads``: top, bottom, left,
    right) filled with ``z`` and the calls pad only what the 3x3 slot adds around a smaller
    kernel (multiplied by zero weights, so its value does not matter)."""

    value: int
    host_pads: tuple[int, int, int, int] = (0, 0, 0, 0)


#: Largest kernel side planned as a 3x3 convolution over shifted copies of its input
#: (:func:`stacked_copies`); 7x7 (ResNet, GoogLeNet stems) and 5x5 (Inception) need 9 and 4 copies.
MAX_STACKED_KERNEL = 11


def stacked_copies(kh: int, kw: int) -> tuple[tuple[int, int], ...]:
    """The shifts ``(dy, dx)`` of the input copies that turn a ``kh x kw`` convolution into a
    3x3 one: a copy per 3x3 block of the kernel, in block-row order.

    Block ``(i, j)`` covers kernel rows ``3i .. 3i+2`` and columns ``3j .. 3j+2``. Its copy is
    the (padded) input moved up by ``3i`` and left by ``3j``, so a 3x3 window of the copy at the
    output's position reads exactly the pixels that block multiplies, for any stride. Stacked
    as input channels (copy-major), one 3x3 call sums every block, and the weights beyond the
    kernel's edge are zero."""
    return tuple((3 * i, 3 * j) for i in range(-(-kh // 3)) for j in range(-(-kw // 3)))


def realise_input_zero_point(z: int, pads: tuple[int, int, int, int], caps: "_Caps") -> InputZeroPoint:
    """The one place that decides how a non-zero input zero point ``z`` is realised.

    ``pads`` (top, bottom, left, right) is the convolution's own padding. Today's kernel pads
    with 0 only, so the host pads the image with ``z`` (the call runs with padding 0 on an
    ``(H+pt+pb) x (W+pl+pr)`` image: that many more input pixels, i.e. cycles). A kernel with a
    run-time pad-value register would be described in ``caps`` and answered here with
    ``host_pads = 0`` (and the calls would carry the pad value)."""
    if z == 0 or not any(pads):
        return InputZeroPoint(int(z))
    return InputZeroPoint(int(z), tuple(int(p) for p in pads))


def _fold_output_zero_point(z: int, mult: np.ndarray, shift: int) -> tuple[np.ndarray, bool]:
    """Bias terms ``t[o]`` such that ``((acc + t)·M + 2^(s-1)) >> s`` is ``((acc·M + 2^(s-1)) >> s) + z``.

    ``t = z·2^s / M`` makes it exact when ``M[o]`` divides ``z·2^s`` (always for ``M = 1``);
    otherwise ``t`` is rounded and the value before rounding is off by at most
    ``M / 2^(s+1)`` (half the layer's real scale ``s_x·s_w/s_y``, a small fraction of an LSB):
    only a value that close to a rounding boundary moves, by one LSB. Returns ``(t, exact)``."""
    m = np.asarray(mult, np.int64).reshape(-1)
    if z == 0:
        return np.zeros(m.size, np.int64), True
    if np.any(m == 0):
        raise _NoMatch(f"output zero point {z}: a channel's multiplier is 0, so no bias can add it")
    num = z * (1 << shift)
    t = np.array([(2 * num + int(mo)) // (2 * int(mo)) for mo in m], np.int64)
    return t, bool(np.all(t * m == num))


def activation_format(graph: Graph) -> tuple[bool | None, str]:
    """The activation type of a QDQ model's quantised convolution inputs: ``(act_signed, why)``;
    ``None`` if no convolution reads a quantised tensor (a float model). Majority wins."""
    counts = {np.dtype(np.int8): 0, np.dtype(np.uint8): 0}
    for node in graph.nodes:
        if node.op != "Conv":
            continue
        dq = graph.producer(node.inputs[0])
        if dq is None or dq.op != "DequantizeLinear":
            continue
        # no zero point input: uint8, ONNX's default
        zp = _constant(graph, dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else np.zeros((), np.uint8)
        if zp is not None and np.asarray(zp).dtype in counts:
            counts[np.asarray(zp).dtype] += 1
    n8, nu8 = counts[np.dtype(np.int8)], counts[np.dtype(np.uint8)]
    if n8 == nu8 == 0:
        return None, "no quantised convolution input"
    signed = n8 > nu8
    name = "int8" if signed else "uint8"
    return signed, f"{n8 if signed else nu8} of {n8 + nu8} quantised convolution inputs are {name}"


# Plan steps ---------------------------------------------------------------------------------------

@dataclass
class ColumnTile:
    """Input columns ``[in_start, in_stop)`` (halo included) feed output columns ``[out_start, out_stop)``;
    the next ``calls`` calls of the layer compute it from a strip buffer of that width."""

    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    calls: int


@dataclass
class FpgaLayer:
    """One fused layer on the accelerator: packed parameters and the calls that compute it."""

    name: str
    nodes: list[str]                    #: ONNX nodes fused into this layer
    input: str                          #: device buffer read (CPI lanes): ``source``, or its host-padded copy
    output: str                         #: integer tensor written (device layout, CPO lanes)
    in_shape: tuple[int, int, int]      #: C, H, W of the device input (host padding included)
    out_shape: tuple[int, int, int]     #: O, Ho, Wo (after pooling)
    kernel: tuple[int, int]             #: original kernel size
    stride: int
    pads: tuple[int, int, int, int]     #: top, bottom, left, right the calls pad (3x3 slot)
    pool: int
    shift: int
    scale_error: float                  #: worst relative error of M / 2**shift vs the real scale
    weights: np.ndarray                 #: packed [GO][GI][CPO][CPI][3][3] ([G][CPO][3][3] when depthwise)
    bias: np.ndarray                    #: packed [GO*CPO]
    mult: np.ndarray                    #: packed [GO*CPO] uint32
    calls: list[CallArgs]
    row_tiles: int
    group_splits: int
    #: column tiles when the input is wider than wmax (empty: the calls read the whole width)
    columns: list["ColumnTile"] = field(default_factory=list)
    source: str = ""                    #: the model's integer tensor the layer reads
    #: device zero points of input and output (0: none); how the input's is realised
    in_zero_point: InputZeroPoint = InputZeroPoint(0)
    out_zero_point: int = 0
    out_zero_point_exact: bool = True   #: the output zero point is folded into the bias exactly
    #: largest offset (output LSB) the folded zero point puts before the rounding; a layer
    #: stays within ``floor(error) + 1`` LSB of onnxruntime (:func:`_fold_error`)
    out_zero_point_error: float = 0.0
    depthwise: bool = False             #: a depthwise convolution (calls with depthwise = 1)
    #: a 1x1 convolution as pointwise calls: ``input`` in super-pixels (9*CPI lanes), weights
    #: packed [GO][GS][CPO][CPI][9] (reference.pack_pointwise_weights)
    pointwise: bool = False
    #: post-op residual_add: the device tensor (CPO lanes, produced by an earlier layer) added
    #: before the pooling; "" when the layer has no fused Add
    residual: str = ""
    #: post-op table image (``reference.pack_table``: device output code by device input bit
    #: pattern) of the activation fused after the convolution; None: no table
    table: np.ndarray | None = None
    #: a kernel above 3x3: the host's shifted copies of the padded input (stacked_copies)
    input_copies: tuple[tuple[int, int], ...] = ()
    #: more input channels than imax (KernelConfig.with_acc_split): per chunk of input channels
    #: (channel count, byte offset of its first input plane in the input buffer, byte offset of
    #: its packed weights in ``weights``); empty: one chunk, the calls read x and w as they are
    in_chunks: tuple[tuple[int, int, int], ...] = ()
    #: the chunk of each call (parallel to ``calls``; empty when ``in_chunks`` is)
    call_chunks: list[int] = field(default_factory=list)
    device = "accelerator"

    def __post_init__(self):
        self.source = self.source or self.input

    def ideal_cycles(self, cfg: KernelConfig) -> int:
        return sum(c.ideal_cycles(cfg) for c in self.calls)

    def call_pointers(self, k: int, ptrs: dict[str, int]) -> dict[str, int]:
        """The pointers of call ``k`` given the layer's (``x`` and ``w`` moved to its input chunk)."""
        if not self.in_chunks:
            return ptrs
        _, x_off, w_off = self.in_chunks[self.call_chunks[k]]
        return {**ptrs, "x": ptrs["x"] + x_off, "w": ptrs["w"] + w_off}

    def in_lanes(self, cfg: KernelConfig) -> int:
        """Lanes of the input buffer: CPI, or 9*CPI (super-pixels) for a pointwise layer."""
        return 9 * cfg.cpi if self.pointwise else cfg.cpi

    def describe(self, cfg: KernelConfig) -> str:
        c, h, w = self.in_shape
        o, ho, wo = self.out_shape
        k = f"{self.kernel[0]}x{self.kernel[1]}" + ("" if self.kernel == (3, 3) or self.pointwise else " in 3x3")
        pool = {POOL_NONE: "", POOL_MAX: " +maxpool", POOL_AVG: " +avgpool"}[self.pool]
        kind = "dwconv" if self.depthwise else "pwconv" if self.pointwise else "conv"
        return (f"{kind} {k}/s{self.stride}{pool} {c}x{h}x{w} -> {o}x{ho}x{wo}, "
                f"{len(self.calls)} call(s) ({self.row_tiles} row tile(s) x "
                + (f"{len(self.columns)} column tile(s) x " if self.columns else "")
                + f"{self.group_splits} group range(s)), "
                + ("fp32" if cfg.is_float else f"shift {self.shift}")
                + (f", + {self.residual}" if self.residual else "")
                + (", activation table" if self.table is not None else "")
                + (f", {len(self.in_chunks)} input-channel chunks held on chip" if self.in_chunks else "")
                + (f", input as super-pixels of {9 * cfg.cpi} lanes (host layout)" if self.pointwise else "")
                + self._zero_points())

    @property
    def lsb_bound(self) -> int:
        """Most LSB this layer's output can differ from onnxruntime's, given the same integer input."""
        return int(np.floor(self.out_zero_point_error + 1e-9)) + 1

    def _zero_points(self) -> str:
        text = ""
        zin = self.in_zero_point
        if zin.value:
            text += f", input zero point {zin.value} in the bias"
            if any(zin.host_pads):
                text += f" + host pads {','.join(map(str, zin.host_pads))} with it"
        if self.out_zero_point:
            text += (f", output zero point {self.out_zero_point} in the bias"
                     + ("" if self.out_zero_point_exact else f" (within {self.lsb_bound} LSB)"))
        return text


@dataclass
class CpuLayer:
    node: Node
    reason: str | None = None           #: why a Conv did not go to the accelerator
    partition: int | None = None        #: index in ``Plan.partitions`` of the onnxruntime subgraph running it
    device = "cpu"

    @property
    def name(self):
        return self.node.name

    def describe(self, cfg=None) -> str:
        return f"{self.node.op}" + (f" ({self.reason})" if self.reason else "")


@dataclass
class Transfer:
    """Copy a tensor across the CPU <-> accelerator boundary, with the layout transform and the
    value encoding (:class:`ActEncoding`); to the device optionally into a padded image."""

    tensor: str
    direction: str                      #: "to_device" or "from_device"
    shape: tuple[int, int, int]         #: C, H, W of the device buffer (padding included)
    lanes: int
    encoding: ActEncoding | None = None  #: None: the values are copied as they are
    buffer: str = ""                    #: device buffer name (default: the tensor's)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)   #: to_device: top, bottom, left, right filled with the
                                        #: encoding's device zero point (the real 0)
    #: to_device: shifted copies of the padded image stacked as channels (stacked_copies),
    #: each cut to the buffer's H x W (beyond the image: the zero point)
    copies: tuple[tuple[int, int], ...] = ()
    device = "transfer"

    def __post_init__(self):
        self.buffer = self.buffer or self.tensor

    @property
    def name(self):
        return f"{self.direction}:{self.buffer}"

    def describe(self, cfg=None) -> str:
        c, h, w = self.shape
        arrow = "host NCHW -> device GIHWCPI" if self.direction == "to_device" else "device -> host NCHW"
        if cfg is not None and self.lanes == 9 * cfg.cpi:
            arrow += " (super-pixels of a pointwise layer)"
        text = f"{arrow}, {c}x{h}x{w}, {self.lanes} lanes"
        enc = self.encoding
        if enc is not None and enc.offset:
            text += f", {np.dtype(enc.dtype).name} {'+' if enc.offset > 0 else '-'} {abs(enc.offset)}"
        if any(self.pads):
            text += f", padded {','.join(map(str, self.pads))} with {enc.device_zero_point if enc else 0}"
        if self.copies:
            text += f", {len(self.copies)} shifted copies stacked"
        return text

    def device_image(self, img: np.ndarray, act) -> np.ndarray:
        """``C x H x W`` model integers -> the device's values (and padding) in type ``act``."""
        img = np.asarray(img)
        if self.encoding is None:
            if img.dtype != np.dtype(act):
                raise GraphError(f"tensor {self.tensor!r} is {img.dtype}; the kernel takes {np.dtype(act)}")
            d = img
        else:
            try:
                d = self.encoding.to_device(img, act)
            except GraphError as e:
                raise GraphError(f"tensor {self.tensor!r}: {e}") from None
        fill = self.encoding.device_zero_point if self.encoding else 0
        if any(self.pads):
            t, b, l, r = self.pads
            d = np.pad(d, ((0, 0), (t, b), (l, r)), constant_values=fill)
        if self.copies:
            _, h, w = self.shape
            dy_max, dx_max = max(dy for dy, _ in self.copies), max(dx for _, dx in self.copies)
            d = np.pad(d, ((0, 0), (0, max(0, h + dy_max - d.shape[1])), (0, max(0, w + dx_max - d.shape[2]))),
                       constant_values=fill)
            d = np.concatenate([d[:, dy:dy + h, dx:dx + w] for dy, dx in self.copies])
        return d

    def host_image(self, d: np.ndarray) -> np.ndarray:
        """Device values -> the model's integers."""
        return d if self.encoding is None else self.encoding.to_host(d)


@dataclass
class Plan:
    graph: Graph
    cfg: KernelConfig
    steps: list                          #: FpgaLayer | CpuLayer | Transfer in execution order
    #: (tensor, lanes) -> (C, H, W) of every buffer in device layout; a tensor has two when CPI != CPO
    device_tensors: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    descriptor: dict | None = None
    #: how each tensor that reaches the device is encoded there
    encodings: dict[str, ActEncoding] = field(default_factory=dict)
    #: where the activation format came from (set when the model chose it)
    format_note: str = ""
    #: the CPU steps grouped into onnxruntime subgraphs (:class:`hlsinf.host.cpu.CpuPartition`)
    partitions: list = field(default_factory=list)

    def host_value(self, tensor: str, device_values: np.ndarray) -> np.ndarray:
        """A device-resident tensor's values (as unpacked) -> the model's integers."""
        enc = self.encodings.get(tensor)
        return device_values if enc is None else enc.to_host(device_values)

    @property
    def fpga_layers(self) -> list[FpgaLayer]:
        return [s for s in self.steps if isinstance(s, FpgaLayer)]

    def ideal_cycles(self) -> int:
        return sum(s.ideal_cycles(self.cfg) for s in self.fpga_layers)

    def summary(self, measured: dict[str, float] | None = None) -> str:
        """One line per step: device, what it does, tiles, ideal (and measured) cycles."""
        cfg = self.cfg
        lines = [f"plan for {self.graph.name!r} on a kernel with CPI={cfg.cpi} CPO={cfg.cpo} "
                 + (f"fp32 (number_format='fp32'{', subnormals flushed' if not cfg.fp32_subnormals else ''})"
                    if cfg.is_float else f"{'int' if cfg.act_signed else 'uint'}{cfg.act_bits} activations")
                 + (f" ({self.format_note})" if self.format_note else "")
                 + f", wmax={cfg.wmax} hmax={cfg.hmax}"]
        for k, s in enumerate(self.steps):
            line = f"{k:3d} {s.device:11s} {s.name[:40]:40s} {s.describe(cfg)}"
            if isinstance(s, FpgaLayer):
                line += f", ideal {s.ideal_cycles(cfg)} cycles"
                if measured and s.name in measured:
                    line += f", measured {measured[s.name]:.0f}"
            lines.append(line)
        n_acc = len(self.fpga_layers)
        lines.append(f"{n_acc} accelerator layer(s), {sum(isinstance(s, CpuLayer) for s in self.steps)} CPU "
                     f"layer(s) in {len(self.partitions)} onnxruntime subgraph(s), "
                     f"{sum(isinstance(s, Transfer) for s in self.steps)} transfer(s); "
                     f"ideal accelerator cycles {self.ideal_cycles()}")
        return "\n".join(lines)


# Kernel description ------------------------------------------------------------------------------

def load_kernel(kernel) -> tuple[KernelConfig, dict | None]:
    """A ``KernelConfig``, a dict of its fields, or a build folder / ``descriptor.json`` path
    (``None``: the default configuration)."""
    if kernel is None:
        return KernelConfig(), None
    if isinstance(kernel, KernelConfig):
        return kernel, None
    if isinstance(kernel, dict):
        return KernelConfig.from_dict(kernel), None
    path = Path(kernel)
    if path.is_dir():
        path = path / "descriptor.json"
    if not path.is_file():
        raise PlanError(f"kernel descriptor {str(path)!r} does not exist")
    try:
        from hlsinf.build.descriptor import load_descriptor
    except ImportError:
        raise PlanError("reading a kernel descriptor needs hlsinf.build.descriptor, which this checkout lacks; "
                        "give the configuration instead (--cpi/--cpo)") from None
    return load_descriptor(path)


def _format_given(kernel) -> bool:
    """Whether ``kernel`` fixes the activation format: a ``KernelConfig`` or a built kernel does;
    ``None`` and a dict without ``act_signed`` leave it to the model."""
    if kernel is None:
        return False
    if isinstance(kernel, dict):
        return "act_signed" in kernel
    return True


@dataclass(frozen=True)
class _Caps:
    """What the kernel's convolution takes beyond KernelConfig: from the descriptor when there is one."""

    max_pad: int = MAX_PAD
    strides: tuple[int, ...] = (1, 2)

    @classmethod
    def of(cls, descriptor: dict | None) -> "_Caps":
        conv = ((descriptor or {}).get("operations") or {}).get("conv") or {}
        return cls(max_pad=min(int(conv.get("max_pad", MAX_PAD)), MAX_PAD),
                   strides=tuple(int(v) for v in conv.get("strides", (1, 2))))


# Pattern matching of one quantised convolution ---------------------------------------------------

@dataclass
class _Match:
    nodes: list[Node]
    x_q: str
    out: str
    s_x: float
    s_w: np.ndarray
    s_y: float
    w_q: np.ndarray
    b_q: np.ndarray
    clip: tuple[float | None, float | None]   # real-valued bounds of Relu/Clip
    pool: int
    x_type: tuple[np.dtype, int]              # the model's input type and zero point
    y_type: tuple[np.dtype, int]              # the model's output type and zero point
    q_clip: tuple[int, int]                   # output bounds in the model's integers (type range, Relu/Clip)
    upsize: int = 1                           # nearest upsampling factor after the pool (Resize)
    depthwise: bool = False                   # group = input = output channels: weights C x 1 x k x k
    residual: "_Residual | None" = None       # a fused Add(other) after the convolution
    #: activation fused as the post-op table: its output code for each code of the convolution's
    #: output type (from the type's minimum on), and the output's type and zero point
    table: np.ndarray | None = None
    z_type: tuple[np.dtype, int] | None = None


@dataclass
class _Residual:
    """``Conv -> Q -> DQ -> Add(DQ(operand)) [-> Relu|Clip] -> Q``: the Add runs in the kernel
    (post-op residual_add); ``operand`` is the other quantised tensor, with its scale and type."""

    operand: str
    s_r: float
    r_type: tuple[np.dtype, int]
    #: the model's quantised convolution output before the add: its real range (the kernel's
    #: must hold it, else the fused layer would saturate where the model does not)
    conv_range: tuple[float, float] = (0.0, 0.0)


class _NoMatch(Exception):
    """This convolution stays on the CPU; the message says why."""


def _constant(graph: Graph, tensor: str, _depth: int = 0) -> np.ndarray | None:
    """The value of ``tensor`` if it is a constant: an initializer or Constant node (also behind
    Identity), or computed from constants (e.g. ``QuantizeLinear(Identity(DequantizeLinear(w)))``,
    which quantize_static writes for weights torch tied through Identity); else None."""
    value = graph.const(tensor)
    if value is not None or _depth > 16:
        return value
    cache = graph.__dict__.setdefault("_plan_constants", {})
    if tensor in cache:
        return cache[tensor]
    node = graph.producer(tensor)
    if node is None or node.op == "Conv":
        return None
    ins = [_constant(graph, i, _depth + 1) if i else None for i in node.inputs]
    if any(v is None for v, i in zip(ins, node.inputs) if i):
        return None
    outs = run_node(graph, node, ins)
    cache.update((o, v) for o, v in zip(node.outputs, outs) if o)
    return cache[tensor]


def _scalar_qparams(graph: Graph, node: Node, what: str) -> tuple[float, int, np.dtype]:
    """Scale, zero point and integer type of a Quantize/DequantizeLinear with one scale."""
    scale = _constant(graph, node.inputs[1])
    zp = _constant(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros((), np.uint8)
    if scale is None or zp is None:
        raise _NoMatch(f"{what} scale or zero point is not a constant")
    if np.size(scale) != 1 or np.size(zp) != 1:
        raise _NoMatch(f"{what} is quantised per channel; activations need one scale")
    zp = np.asarray(zp)
    if zp.dtype.kind not in "iu":
        raise _NoMatch(f"{what} is {zp.dtype}, not an integer type")
    return float(np.asarray(scale, np.float64).reshape(())), int(zp.reshape(())), zp.dtype


def _only_consumer(graph: Graph, tensor: str, ops: tuple[str, ...]) -> Node | None:
    cons = graph.consumers(tensor)
    if len(cons) == 1 and cons[0].op in ops and tensor not in graph.outputs:
        return cons[0]
    return None


#: Matrix products planned as 1x1 convolutions of a 1x1 image (:func:`_match_gemm`).
_GEMM_OPS = ("Gemm", "MatMul")


def _match_conv(graph: Graph, conv: Node, cfg: KernelConfig, caps: "_Caps", fuse_residual: bool = True) -> _Match:
    if (4 in (cfg.act_bits, cfg.weight_bits) or cfg.number_format == "fixed" or cfg.overflow != "sat"
            or cfg.rounding != "round"):
        # The planner maps int8/uint8 QDQ layers (round half up, saturate, any shift); these
        # kernels are run through the device API (reference.kernel_call semantics, docs/numbers.md).
        raise _NoMatch(f"the planner maps QDQ layers onto int8/uint8 kernels with rounding='round', "
                       f"overflow='sat' only, not onto this {cfg.format_name} kernel "
                       f"(rounding={cfg.rounding!r}, overflow={cfg.overflow!r})")
    a = conv.attrs
    if conv.op in _GEMM_OPS:
        return _match_gemm(graph, conv, cfg, caps, fuse_residual)
    group = a.get("group", 1)
    if group != 1 and not cfg.with_depthwise:
        raise _NoMatch(f"grouped convolution (group={group}); a depthwise one needs a kernel built with "
                       f"depthwise (--with-depthwise)")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise _NoMatch(f"dilation {a['dilations']}")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _NoMatch(f"auto_pad={a['auto_pad']}")
    x_dq = graph.producer(conv.inputs[0])
    w_dq = graph.producer(through_identity(graph, conv.inputs[1]))   # torch shares tied weights via Identity
    if x_dq is None or x_dq.op != "DequantizeLinear" or w_dq is None or w_dq.op != "DequantizeLinear":
        raise _NoMatch("float convolution: not quantised (give a QDQ model or a calibration batch, "
                       "or plan the float model for an fp32 kernel)")
    s_x, z_x, t_x = _scalar_qparams(graph, x_dq, "input")
    w_q = _constant(graph, w_dq.inputs[0])
    s_w = _constant(graph, w_dq.inputs[1])
    w_zp = _constant(graph, w_dq.inputs[2]) if len(w_dq.inputs) > 2 and w_dq.inputs[2] else None
    if w_q is None or s_w is None:
        raise _NoMatch("weights are not constant")
    if w_q.dtype != np.dtype(weight_dtype(cfg)):
        raise _NoMatch(f"weights are {w_q.dtype}, the kernel takes {np.dtype(weight_dtype(cfg))}")
    if w_zp is not None and np.any(np.asarray(w_zp) != 0):
        # asymmetric weights (onnxruntime quantises weights that torch tied through Identity like
        # an activation): exact if w - zero point still fits the kernel's weights
        zw = np.asarray(w_zp, np.int64)
        centred = w_q.astype(np.int64) - (zw.reshape(-1, 1, 1, 1) if zw.size > 1 else zw.reshape(()))
        wlo, whi = cfg.weight_range
        if centred.min() < wlo or centred.max() > whi:
            raise _NoMatch(f"weight zero point is not 0 (asymmetric weights) and w - zero point spans "
                           f"{centred.min()}..{centred.max()}, beyond int{cfg.weight_bits}")
        w_q = centred.astype(weight_dtype(cfg))
    o = w_q.shape[0]
    if group != 1:
        c_in = graph.shapes[conv.inputs[0]][1] if len(graph.shapes.get(conv.inputs[0], ())) == 4 else None
        if not (w_q.ndim == 4 and w_q.shape[1] == 1 and group == c_in == o):
            raise _NoMatch(f"grouped convolution (group={group}) that is not depthwise "
                           f"(group = input channels = output channels)")
    s_w = np.asarray(s_w, np.float64).reshape(-1)
    if s_w.size == 1:
        s_w = np.full(o, s_w[0])
    elif s_w.size != o or w_dq.attrs.get("axis", 1) % 4 != 0:
        raise _NoMatch("weights are quantised per channel along an axis other than the output channels")
    kh, kw = w_q.shape[2:]
    if max(kh, kw) > MAX_STACKED_KERNEL:
        raise _NoMatch(f"kernel {kh}x{kw} is larger than {MAX_STACKED_KERNEL}x{MAX_STACKED_KERNEL} "
                       f"(kernels above 3x3 run as 3x3 over shifted copies of the input)")
    if group != 1 and max(kh, kw) > 3:
        raise _NoMatch(f"depthwise kernel {kh}x{kw}: the kernel's depthwise mode is 3x3 (no shifted copies)")
    strides = a.get("strides", [1, 1])
    if strides[0] != strides[1] or strides[0] not in caps.strides:
        raise _NoMatch(f"strides {strides} (the kernel does {' or '.join(map(str, caps.strides))} in both directions)")
    if len(w_q.shape) != 4 or graph.shapes[conv.inputs[0]][0] != 1:
        raise _NoMatch("not a 2-D convolution of a batch of one")
    return _match_tail(graph, conv, cfg, x_dq, w_dq, w_q, s_w, (s_x, z_x, t_x), fuse_residual,
                       conv.inputs[2] if len(conv.inputs) > 2 else "")


def _match_gemm(graph: Graph, node: Node, cfg: KernelConfig, caps: "_Caps", fuse_residual: bool) -> _Match:
    """A quantised ``Gemm`` (``alpha = beta = 1``, ``transA = 0``, B constant, either ``transB``)
    or ``MatMul`` (constant K x O weights) of a batch of one: a 1x1 convolution of a 1x1 image
    of K channels, the weights as O x K x 1 x 1 (``_match_tail`` does the rest as for a Conv)."""
    a = node.attrs
    if node.op == "Gemm" and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0)):
        raise _NoMatch(f"Gemm with alpha={a.get('alpha', 1.0)}, beta={a.get('beta', 1.0)}, "
                       f"transA={a.get('transA', 0)} (only alpha = beta = 1, transA = 0 map to a 1x1 convolution)")
    shape = tuple(graph.shapes.get(node.inputs[0], ()))
    if len(shape) != 2 or shape[0] != 1:
        raise _NoMatch(f"{node.op} of an input of shape {shape}: only a batch of one row (1 x K) is planned")
    x_dq = graph.producer(node.inputs[0])
    w_dq = graph.producer(through_identity(graph, node.inputs[1]))
    if x_dq is None or x_dq.op != "DequantizeLinear" or w_dq is None or w_dq.op != "DequantizeLinear":
        raise _NoMatch(f"float {node.op}: not quantised")
    s_x, z_x, t_x = _scalar_qparams(graph, x_dq, "input")
    w_q = _constant(graph, w_dq.inputs[0])
    s_w = _constant(graph, w_dq.inputs[1])
    w_zp = _constant(graph, w_dq.inputs[2]) if len(w_dq.inputs) > 2 and w_dq.inputs[2] else None
    if w_q is None or s_w is None or w_q.ndim != 2:
        raise _NoMatch(f"{node.op} weights are not a constant matrix")
    if w_q.dtype != np.dtype(weight_dtype(cfg)):
        raise _NoMatch(f"weights are {w_q.dtype}, the kernel takes {np.dtype(weight_dtype(cfg))}")
    if w_zp is not None and np.any(np.asarray(w_zp) != 0):
        raise _NoMatch(f"{node.op} weight zero point is not 0 (asymmetric weights)")
    out_axis = 0 if node.op == "Gemm" and a.get("transB", 0) else 1    # the axis of the output features
    o = w_q.shape[out_axis]
    s_w = np.asarray(s_w, np.float64).reshape(-1)
    if s_w.size == 1:
        s_w = np.full(o, s_w[0])
    elif s_w.size != o or w_dq.attrs.get("axis", 1) % 2 != out_axis:
        raise _NoMatch(f"{node.op} weights are quantised per channel along the input features")
    w_q = (w_q if out_axis == 0 else w_q.T).reshape(o, -1, 1, 1)
    return _match_tail(graph, node, cfg, x_dq, w_dq, w_q, s_w, (s_x, z_x, t_x), fuse_residual,
                       node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 else "")


def _match_tail(graph: Graph, conv: Node, cfg: KernelConfig, x_dq: Node, w_dq: Node, w_q: np.ndarray,
                s_w: np.ndarray, x_qparams, fuse_residual: bool, bias_input: str) -> _Match:
    """The bias, activation, output quantisation and what follows of a matched Conv or Gemm."""
    s_x, z_x, t_x = x_qparams
    o = w_q.shape[0]
    # bias: int32 at scale s_x * s_w, or anything that dequantises to a real value
    b_real = np.zeros(o)
    if bias_input:
        b_dq = graph.producer(through_identity(graph, bias_input))
        if b_dq is not None and b_dq.op == "DequantizeLinear":
            vals = [_constant(graph, i) if i else None for i in b_dq.inputs]
            if any(v is None for v, i in zip(vals, b_dq.inputs) if i):
                raise _NoMatch("bias is not constant")
            bq, bs = vals[0].astype(np.float64), np.asarray(vals[1], np.float64)
            bz = np.asarray(vals[2], np.float64) if len(vals) > 2 and vals[2] is not None else 0.0
            b_real = (bq - bz) * bs
        elif _constant(graph, bias_input) is not None:
            b_real = _constant(graph, bias_input).astype(np.float64)
        else:
            raise _NoMatch("bias is not constant")
    b_q = np.rint(b_real / (np.float64(np.float32(s_x)) * s_w))
    blo, bhi = cfg.bias_range
    if np.any(b_q < blo) or np.any(b_q > bhi):
        raise _NoMatch(f"bias does not fit int{cfg.bias_bits}")

    nodes = [x_dq, w_dq, conv]
    t = conv.outputs[0]
    clip = (None, None)
    act = _only_consumer(graph, t, ("Relu", "Clip"))
    if act is not None:
        nodes.append(act)
        clip = _clip_bounds(graph, act)
        t = act.outputs[0]
    q = _only_consumer(graph, t, ("QuantizeLinear",))
    if q is None:
        raise _NoMatch("output is not quantised (no QuantizeLinear follows)")
    nodes.append(q)
    s_y, z_y, t_y = _scalar_qparams(graph, q, "output")
    out = q.outputs[0]
    residual = None
    if fuse_residual and act is None:
        found = _match_residual(graph, out, cfg, (s_y, z_y, t_y))
        if found is not None:
            more, residual, clip, q = found
            nodes += more
            s_y, z_y, t_y = _scalar_qparams(graph, q, "output")
            out = q.outputs[0]

    # Absorb what follows at the same scale: DQ -> Relu|Clip|2x2 pool|nearest Resize -> Q.
    # Clipping is exact on the integers; a max pool commutes with it, so a Relu after a max
    # pool is still the kernel's clip before its pool; an average pool must come last; the
    # upsampling is the kernel's last step.
    def absorb(out, qparams, pool, upsize, clip, allow_clip):
        while True:
            dq2 = _only_consumer(graph, out, ("DequantizeLinear",))
            nxt = dq2 and _only_consumer(graph, dq2.outputs[0], ("Relu", "Clip", "MaxPool", "AveragePool", "Resize"))
            q2 = nxt and _only_consumer(graph, nxt.outputs[0], ("QuantizeLinear",))
            if not q2:
                break
            try:       # same scale, zero point and type: the step is exact on the integers
                same = _scalar_qparams(graph, dq2, "input") == _scalar_qparams(graph, q2, "output") == qparams
            except _NoMatch:
                same = False
            if not same:
                break
            if nxt.op in ("Relu", "Clip"):
                if pool == POOL_AVG or not allow_clip:
                    break
                try:
                    lo, hi = _clip_bounds(graph, nxt)
                except _NoMatch:
                    break
                clip = (lo if clip[0] is None else clip[0] if lo is None else max(lo, clip[0]),
                        hi if clip[1] is None else clip[1] if hi is None else min(hi, clip[1]))
            elif nxt.op == "Resize":
                # Nearest upsampling commutes with the clip; it is the kernel's last step.
                factor = _nearest_factor(graph, nxt)
                if (upsize > 1 or factor is None or factor > cfg.max_upsize
                        or graph.shapes[x_dq.inputs[0]][3] > cfg.wmax):
                    break
                upsize = factor
            else:
                mode = POOL_MAX if nxt.op == "MaxPool" else POOL_AVG
                built = cfg.with_maxpool if mode == POOL_MAX else cfg.with_avgpool
                if pool or upsize > 1 or not built or not _is_pool2x2(nxt):
                    break
                pool = mode
            nodes.extend([dq2, nxt, q2])
            out = q2.outputs[0]
        return out, pool, upsize, clip

    out, pool, upsize, clip = absorb(out, (s_y, z_y, t_y), POOL_NONE, 1, clip, True)
    # An element-wise activation next (Sigmoid, SiLU, ...): the kernel's post-op table, which
    # runs after the clip and before the pool; pools (and the upsampling) at the activation's
    # output scale follow.
    table = z_type = None
    table_after_add = residual is None or cfg.post_ops.index("residual_add") < cfg.post_ops.index("table") \
        if "table" in cfg.post_ops else False
    if "table" in cfg.post_ops and pool == POOL_NONE and upsize == 1 and table_after_add:
        region = activation_region(graph, out, quantized=True)
        if region is not None:
            rnodes, z_out = region
            try:
                _, z_z, t_z = _scalar_qparams(graph, rnodes[-1], "activation output")
            except _NoMatch:
                rnodes = None
            if rnodes and np.iinfo(t_z).bits == cfg.act_bits:
                info = np.iinfo(t_y)
                table = table_codes(graph, rnodes, out, np.arange(info.min, info.max + 1))
                z_type = (t_z, z_z)
                nodes.extend(rnodes)
                s_z = _scalar_qparams(graph, rnodes[-1], "activation output")
                out, pool, upsize, _ = absorb(z_out, s_z, POOL_NONE, 1, (None, None), False)
    # Relu/Clip in the model's integers: real 0 is z_y, so a ReLU's lower bound is the zero point
    tmin, tmax = int(np.iinfo(t_y).min), int(np.iinfo(t_y).max)
    lo, hi = clip
    q_lo = tmin if lo is None else min(tmax, max(tmin, int(np.rint(lo / s_y)) + z_y))
    q_hi = tmax if hi is None else max(tmin, min(tmax, int(np.rint(hi / s_y)) + z_y))
    return _Match(nodes, x_dq.inputs[0], out, s_x, s_w, s_y, w_q, b_q.astype(np.int64), clip, pool,
                  (t_x, z_x), (t_y, z_y), (q_lo, q_hi), upsize, depthwise=conv.attrs.get("group", 1) != 1, residual=residual,
                  table=table, z_type=z_type)


def _match_residual(graph: Graph, out: str, cfg: KernelConfig, conv_q: tuple[float, int, np.dtype]):
    """``out -> DQ -> Add(other) [-> Relu|Clip] -> Q`` with ``other = DQ(operand)``, the operand
    an activation of the output's shape: ``(nodes, _Residual, clip, Q node)``; else None.

    Only for a kernel built with post-op residual_add. The convolution's part of the sum is
    held in the activation type (at the output's scale, offset by the zero points) before the
    add; whether the model's range of it fits is checked when the layer is built (uint8 and
    int8 alike)."""
    if "residual_add" not in cfg.post_ops:
        return None
    dq = _only_consumer(graph, out, ("DequantizeLinear",))
    add = dq and _only_consumer(graph, dq.outputs[0], ("Add",))
    if not add or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
        return None
    other = add.inputs[1] if add.inputs[0] == dq.outputs[0] else add.inputs[0]
    odq = graph.producer(other)
    if odq is None or odq.op != "DequantizeLinear" or graph.shapes.get(other) != graph.shapes.get(add.outputs[0]):
        return None
    try:
        s_r, z_r, t_r = _scalar_qparams(graph, odq, "residual operand")
    except _NoMatch:
        return None
    nodes, t, clip = [dq, add], add.outputs[0], (None, None)
    act = _only_consumer(graph, t, ("Relu", "Clip"))
    if act is not None:
        try:
            clip = _clip_bounds(graph, act)
        except _NoMatch:
            return None
        nodes.append(act)
        t = act.outputs[0]
    q = _only_consumer(graph, t, ("QuantizeLinear",))
    if q is None:
        return None
    try:
        _scalar_qparams(graph, q, "output")
    except _NoMatch:
        return None
    nodes.append(q)
    s_c, z_c, t_c = conv_q
    info = np.iinfo(t_c)
    conv_range = (s_c * (int(info.min) - z_c), s_c * (int(info.max) - z_c))
    return nodes, _Residual(odq.inputs[0], s_r, (t_r, z_r), conv_range), clip, q


def _pending_conv(graph: Graph, operand: str, visited: set[str]) -> bool:
    """Whether ``operand`` is ``Q([Relu|Clip](Conv))`` of a convolution the planner has not visited yet."""
    q = graph.producer(operand)
    t = q.inputs[0] if q is not None and q.op == "QuantizeLinear" else None
    p = graph.producer(t) if t else None
    if p is not None and p.op in ("Relu", "Clip"):
        p = graph.producer(p.inputs[0])
    return p is not None and p.op == "Conv" and p.name not in visited


def _residual_conv_clip(conv_range: tuple[float, float], s_y: float, constant: float,
                        cfg: KernelConfig) -> tuple[int, int]:
    """Device bounds of a fused residual layer's convolution part ``v = conv/s_y + constant``
    that stand for the model's saturation of the convolution at its own Q (``conv_range``,
    real): ``round(lo/s_y + constant)..round(hi/s_y + constant)`` within the activation type.
    Rounding is monotone, so clipping after the rounding equals rounding the clamped value."""
    amin, amax = cfg.act_range
    lo, hi = conv_range
    c_lo = int(min(amax, max(amin, np.rint(lo / s_y + constant))))
    c_hi = int(min(amax, max(amin, np.rint(hi / s_y + constant))))
    return c_lo, c_hi


def _residual_scale(ratio: float, what: str) -> tuple[int, int]:
    """``(r_mult, r_shift)`` with ``r_mult / 2**r_shift`` closest to ``ratio`` (16-bit multiplier,
    shift 0..31, the most precise pair)."""
    from hlsinf.reference import R_MULT_BITS, R_SHIFT_MAX
    top = (1 << R_MULT_BITS) - 1
    shift = R_SHIFT_MAX
    while shift > 0 and round(ratio * 2.0 ** shift) > top:
        shift -= 1
    mult = round(ratio * 2.0 ** shift)
    if not 0 < mult <= top:
        raise _NoMatch(f"{what}: operand scale ratio {ratio:.4g} is outside what r_mult / 2**r_shift holds")
    return mult, shift


def _nearest_factor(graph: Graph, node: Node) -> int | None:
    """The factor of a Resize that repeats every pixel f x f times (nearest, the same integer
    factor on H and W, N and C unchanged), or None for any other Resize.

    With ``asymmetric`` coordinates the source pixel is ``x / f``, a repetition only when
    rounded down (``nearest_mode = floor``); with ``half_pixel`` it is ``(x + 0.5) / f - 0.5``,
    which never lies halfway between two pixels for an even f, so every rounding gives the
    repetition."""
    a = node.attrs
    if a.get("mode", "nearest") != "nearest" or a.get("antialias", 0) or a.get("keep_aspect_ratio_policy",
                                                                              "stretch") != "stretch":
        return None
    shape_in, shape_out = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.outputs[0])
    if not shape_in or not shape_out or len(shape_in) != 4 or len(shape_out) != 4:
        return None
    if any(not isinstance(v, int) for v in (*shape_in, *shape_out)) or shape_in[:2] != shape_out[:2]:
        return None
    if shape_out[2] % shape_in[2] or shape_out[3] % shape_in[3]:
        return None
    factor = shape_out[2] // shape_in[2]
    if factor != shape_out[3] // shape_in[3] or factor not in (2, 4):
        return None
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    if ctm == "asymmetric" and nearest_mode == "floor":
        return factor
    if ctm in ("half_pixel", "pytorch_half_pixel"):
        return factor
    return None


def _clip_bounds(graph: Graph, act: Node) -> tuple[float | None, float | None]:
    """Real-valued bounds of a Relu or Clip node (None: unbounded)."""
    if act.op == "Relu":
        return 0.0, None
    lo = _constant(graph, act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1] else act.attrs.get("min")
    hi = _constant(graph, act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2] else act.attrs.get("max")
    if (len(act.inputs) > 1 and act.inputs[1] and lo is None) or (len(act.inputs) > 2 and act.inputs[2] and hi is None):
        raise _NoMatch("Clip bounds are not constant")
    return None if lo is None else float(lo), None if hi is None else float(hi)


def _is_pool2x2(p: Node) -> bool:
    a = p.attrs
    return (list(a.get("kernel_shape", [])) == [2, 2] and list(a.get("strides", [1, 1])) == [2, 2]
            and not any(a.get("pads", [0, 0, 0, 0])) and not a.get("ceil_mode", 0)
            and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and all(d == 1 for d in a.get("dilations", [1, 1])))


# Mapping a matched convolution onto calls --------------------------------------------------------

def _row_tiles(conv_rows: int, tile: int) -> list[tuple[int, int]]:
    return [(r, min(r + tile, conv_rows)) for r in range(0, conv_rows, tile)]


def _fold_constant(c: float, mult: np.ndarray, shift: int) -> tuple[np.ndarray, bool]:
    """Bias terms ``t[o] = round(c·2^s / M[o])`` that add the real constant ``c`` (in output
    LSBs) before the requantisation's rounding: exact when ``M[o]`` divides ``c·2^s``, else
    within half the layer's real scale of a LSB, as :func:`_fold_output_zero_point`."""
    if float(c).is_integer():
        return _fold_output_zero_point(int(c), mult, shift)
    m = np.asarray(mult, np.int64).reshape(-1)
    if np.any(m == 0):
        raise _NoMatch(f"constant {c:.4g} before the residual add: a channel's multiplier is 0")
    t = np.rint(c * 2.0 ** shift / m).astype(np.int64)
    return t, False


def _fold_error(c: float, t: np.ndarray, mult: np.ndarray, shift: int) -> np.ndarray:
    """Per channel, the offset (output LSB) that bias terms ``t`` put before the rounding in
    place of the constant ``c``: ``|t·M - c·2^s| / 2^s``. Below 1 the layer stays within
    1 LSB of onnxruntime (a tie or this offset moves a value by one); at most
    ``M / 2^(s+1)``, half the layer's scale ``s_x·s_w/s_y``."""
    m = np.asarray(mult, np.float64).reshape(-1)
    return np.abs(np.asarray(t, np.float64) * m - c * 2.0 ** shift) / 2.0 ** shift


def _channel_factors(c: float, w_q: np.ndarray, pre: np.ndarray, real: np.ndarray, mult: np.ndarray, shift: int,
                     cfg: KernelConfig) -> np.ndarray:
    """Integer factors ``k[o]`` for the weights and bias of channels whose folded constant ``c``
    would be off by a whole LSB or more (:func:`_fold_error`; a layer scale above 2, e.g. a
    depthwise layer of per-tensor weights): ``k·w``, ``k·b`` and ``M / k`` compute the same
    value (up to M's rounding) on a ``k`` times finer accumulator, which divides the offset
    by about ``k``. ``pre`` is the bias before the constant (input zero point folded in);
    only where ``k·w`` and ``k·pre + t`` still fit the kernel's types; 1 elsewhere."""
    k = np.ones(mult.size, np.int64)
    if c == 0 or not cfg.with_multiplier:
        return k
    t, _ = _fold_constant(c, mult, shift)
    err = _fold_error(c, t, mult, shift)
    wmax = np.abs(w_q.astype(np.int64)).reshape(w_q.shape[0], -1).max(axis=1)
    whi = cfg.weight_range[1]
    blo, bhi = cfg.bias_range
    for o in np.nonzero(err >= 1 - 1e-9)[0]:
        best = (err[o], 1)
        for f in range(2, min(whi // max(int(wmax[o]), 1), 16) + 1):
            mo = np.rint(real[o] / f * 2.0 ** shift)
            if mo < 1:
                break
            to, _ = _fold_constant(c, np.array([mo]), shift)
            if not blo <= f * int(pre[o]) + int(to[0]) <= bhi:
                break
            e = float(_fold_error(c, to, np.array([mo]), shift)[0])
            if e < best[0] - 1e-9:
                best = (e, f)
            if e < 1 - 1e-9:
                break
        k[o] = best[1]
    return k


def _build_layer(graph: Graph, m: _Match, cfg: KernelConfig, caps: "_Caps", max_rows: int | None,
                 max_out_groups: int | None, max_cols: int | None = None, *,
                 x_enc: ActEncoding | None = None, y_enc: ActEncoding | None = None,
                 r_enc: ActEncoding | None = None, table: np.ndarray | None = None) -> FpgaLayer:
    x_enc = x_enc or ActEncoding(np.dtype(act_dtype(cfg)), 0)
    y_enc = y_enc or ActEncoding(np.dtype(act_dtype(cfg)), 0)
    conv = next(n for n in m.nodes if n.op in ("Conv",) + _GEMM_OPS)
    name = conv.name
    _, c, h, w = _image_shape(graph.shapes[m.x_q])
    o, _, kh, kw = m.w_q.shape
    a = conv.attrs
    pads = list(a.get("pads", [0, 0, 0, 0])) if a.get("auto_pad", "NOTSET") == "NOTSET" else [0, 0, 0, 0]
    stride = a.get("strides", [1, 1])[0]
    where = f"node {name!r} (Conv {c}x{h}x{w}, kernel {kh}x{kw})"
    copies = ()
    # A 1x1 stride-1 unpadded convolution as pointwise calls (whole rows only: no column tiles);
    # a strided or padded 1x1 stays in the 3x3 slot (docs/host.md).
    pointwise = (cfg.with_pointwise and (kh, kw) == (1, 1) and stride == 1 and not any(pads) and not m.depthwise
                 and w <= cfg.wmax and max_cols is None and (c <= pointwise_imax(cfg) or cfg.with_acc_split))
    if pointwise:
        zin = InputZeroPoint(int(x_enc.device_zero_point))
        w3 = m.w_q
        pt = pl = pb = pr = 0
    elif max(kh, kw) > 3:
        # Above 3x3: the host pads the input (with its zero point) and stacks shifted copies of
        # it as channels; the call is a 3x3 convolution without padding (stacked_copies).
        copies = stacked_copies(kh, kw)
        zin = InputZeroPoint(int(x_enc.device_zero_point), (pads[0], pads[2], pads[1], pads[3]))
        hp, wp = h + pads[0] + pads[2], w + pads[1] + pads[3]
        if hp < kh or wp < kw:
            raise PlanError(f"{where}: the output would be empty")
        h = ((hp - kh) // stride) * stride + 3
        w = ((wp - kw) // stride) * stride + 3
        w3 = np.zeros((o, len(copies), c, 3, 3), m.w_q.dtype)
        for k, (dy, dx) in enumerate(copies):
            block = m.w_q[:, :, dy:dy + 3, dx:dx + 3]
            w3[:, k, :, :block.shape[2], :block.shape[3]] = block
        w3 = w3.reshape(o, len(copies) * c, 3, 3)
        c = len(copies) * c
        pt = pl = pb = pr = 0
    else:
        # A non-zero input zero point: its padding may come from the host (the image grows)
        zin = realise_input_zero_point(x_enc.device_zero_point, (pads[0], pads[2], pads[1], pads[3]), caps)
        ht, hb, hl, hr = zin.host_pads
        pads = [pads[0] - ht, pads[1] - hl, pads[2] - hb, pads[3] - hr]
        h, w = h + ht + hb, w + hl + hr
        # 1x1 and 2x2 kernels in the 3x3 slot: centre them (offset (3-k)//2) and pad the rest
        oy, ox = (3 - kh) // 2, (3 - kw) // 2
        w3 = np.zeros((o, m.w_q.shape[1], 3, 3), m.w_q.dtype)
        w3[:, :, oy:oy + kh, ox:ox + kw] = m.w_q
        pt, pl, pb, pr = pads[0] + oy, pads[1] + ox, pads[2] + (3 - kh - oy), pads[3] + (3 - kw - ox)
    if max(pt, pb, pl, pr) > caps.max_pad:
        raise _NoMatch(f"padding {pads} needs {max(pt, pb, pl, pr)} zero rows/columns in the 3x3 slot, "
                       f"the kernel pads at most {caps.max_pad}")
    in_chunks, call_chunks = None, []
    # a depthwise output sums one channel's products, a pointwise one one product per channel
    call_imax = pointwise_imax(cfg) if pointwise else cfg.imax
    if c > call_imax and not m.depthwise:
        what = (f"{len(copies)} shifted copies of {c // len(copies)} channels are {c} input channels"
                if copies else f"{c} input channels")
        if not cfg.with_acc_split:
            if copies or conv.op in _GEMM_OPS:      # these never stopped a plan: the CPU runs them
                raise _NoMatch(f"{what}, more than the kernel's imax = {cfg.imax} (a kernel built with "
                               f"acc_split splits them: --with-acc-split)")
            raise PlanError(f"{where}: {what}, more than the kernel's imax = {cfg.imax}; splitting input "
                            "channels needs a kernel built with acc_split (--with-acc-split)")
        in_chunks = _input_chunks(cfg, c, w3, what, call_imax)
    real = np.float64(np.float32(m.s_x)) * m.s_w / m.s_y
    try:
        mult, shift, err = requant_params(real, cfg, f"node {name!r}")
    except QuantError as e:
        raise _NoMatch(str(e)) from None
    # Zero points into the bias: sum w·(x - zx) = sum w·x - zx·sum w (exact), and the output's
    # zy·2^s / M (exact when M divides zy·2^s, else off by _fold_error before the rounding).
    zy = y_enc.device_zero_point
    res = m.residual
    w_q, b_q = m.w_q, m.b_q
    if res is None and zy and cfg.with_multiplier:
        # channels whose zero point would be off by a whole LSB: a finer accumulator (_channel_factors)
        pre = b_q - zin.value * w_q.astype(np.int64).sum(axis=(1, 2, 3))
        k = _channel_factors(zy, w_q, pre, real, mult, shift, cfg)
        if np.any(k > 1):
            w_q = (w_q.astype(np.int64) * k.reshape(-1, 1, 1, 1)).astype(m.w_q.dtype)
            w3 = (w3.astype(np.int64) * k.reshape(-1, 1, 1, 1)).astype(w3.dtype)
            b_q = b_q * k
            if in_chunks:       # the held partial sums grow with k: check them again
                in_chunks = _input_chunks(cfg, c, w3, what, call_imax)
            mult = np.rint(real / k * 2.0 ** shift).astype(np.uint32)
            err = float(np.max(np.abs(mult.astype(np.float64) * k / 2.0 ** shift / real - 1)))
    fold_error = np.zeros(1)
    if res is not None:
        # Post-op residual_add: the kernel adds round(r·r_mult / 2^r_shift) to the requantised
        # convolution, so that holds conv/s_y + zy - zr·r_mult/2^r_shift (folded into the bias)
        # and the sum is the output's device value; the Relu/Clip after the Add are the stage's.
        r_mult, r_shift = _residual_scale(res.s_r / m.s_y, f"node {name!r}")
        zr = r_enc.device_zero_point
        constant = zy - zr * r_mult / 2.0 ** r_shift
        # The requantised convolution is held in the activation type before the add: it
        # covers [amin - constant, amax - constant] output LSBs. It must cover what the
        # model's own quantised convolution output covers, or it would saturate earlier.
        amin, amax = cfg.act_range
        lo, hi = res.conv_range
        if lo / m.s_y < amin - constant - 0.5 or hi / m.s_y > amax - constant + 0.5:
            raise _NoMatch(f"residual add: the convolution's range before the add, {lo:.4g}..{hi:.4g}, "
                           f"exceeds what the activation type holds at the output's scale "
                           f"({(amin - constant) * m.s_y:.4g}..{(amax - constant) * m.s_y:.4g})")
        t_y, out_exact = _fold_constant(constant, mult if cfg.with_multiplier else np.ones_like(mult), shift)
        if cfg.with_multiplier:
            fold_error = _fold_error(constant, t_y, mult, shift)
    else:
        t_y, out_exact = _fold_output_zero_point(zy, mult if cfg.with_multiplier else np.ones_like(mult), shift)
        if cfg.with_multiplier:
            fold_error = _fold_error(zy, t_y, mult, shift)
    bias = b_q - zin.value * w_q.astype(np.int64).sum(axis=(1, 2, 3)) + t_y
    blo, bhi = cfg.bias_range
    if np.any(bias < blo) or np.any(bias > bhi):
        raise _NoMatch(f"bias with the zero points folded in does not fit int{cfg.bias_bits}")
    # Clip bounds: the model's integer range (and Relu/Clip) in device values
    amin, amax = cfg.act_range
    dlo, dhi = m.q_clip[0] + y_enc.offset, m.q_clip[1] + y_enc.offset
    assert amin <= dlo and dhi <= amax, (dlo, dhi)      # the encoding was chosen so
    relu = cfg.with_relu and dlo == 0 and m.clip[0] is not None
    clip_lo = None if relu or dlo == amin else dlo
    clip_hi = None if dhi == amax else dhi
    residual_args = {}
    if res is not None:            # the bounds apply after the add; the convolution's part is not clipped
        r_relu = dlo == 0 and m.clip[0] is not None
        residual_args = dict(residual_add=True, r_mult=r_mult, r_shift=r_shift, r_relu=r_relu,
                             r_clip_lo=None if r_relu or dlo == amin else dlo, r_clip_hi=clip_hi)
        # The convolution's part saturates where the model's own Q of it does (onnxruntime
        # clamps the convolution to its type at its scale before the Add): the requantisation's
        # clip bounds are that range at the output's scale, in device values. Without them an
        # input beyond the calibrated range (the sum's codes span more than the convolution's)
        # gives the kernel a larger sum than onnxruntime's (docs/host.md, *Residual add*).
        relu = False
        c_lo, c_hi = _residual_conv_clip(res.conv_range, m.s_y, constant, cfg)
        clip_lo = None if c_lo == amin else c_lo
        clip_hi = None if c_hi == amax else c_hi

    if res is not None:
        k = 1 if pointwise else 3
        conv_rows = (h + pt + pb - k) // stride + 1
        conv_cols = (w + pl + pr - k) // stride + 1
        if tuple(graph.shapes[res.operand][1:]) != (o, conv_rows, conv_cols):
            raise _NoMatch(f"residual operand {res.operand!r} has shape {graph.shapes[res.operand]}, "
                           f"not the convolution output's {(1, o, conv_rows, conv_cols)}")
    calls, columns, row_tiles, group_splits, (out_rows, out_cols) = _tile_calls(
        cfg, where, (c, h, w), o, (pt, pb, pl, pr), stride, m.pool, max_rows, max_out_groups, max_cols,
        upsize=m.upsize, relu=relu, clip_lo=clip_lo, clip_hi=clip_hi, shift=shift, use_mult=cfg.with_multiplier,
        depthwise=m.depthwise, table=table is not None, in_chunks=in_chunks, call_chunks=call_chunks,
        **residual_args, **({"pointwise": True} if pointwise else {}))
    chunk_fields = {}
    if in_chunks:
        if columns:
            raise _NoMatch(f"{what} with column tiles (each strip would need its own chunks)")
        pack = pack_pointwise_weights if pointwise else pack_weights
        packed = [pack(w3[:, c0:c0 + n], cfg.cpi, cfg.cpo, weight_dtype(cfg)) for c0, n in in_chunks]
        w_offsets = np.cumsum([0] + [p.nbytes for p in packed])[:-1]
        plane_bytes = h * w * cfg.cpi * np.dtype(act_dtype(cfg)).itemsize
        chunk_fields = dict(
            in_chunks=tuple((n, c0 // cfg.cpi * plane_bytes, int(off)) for (c0, n), off in zip(in_chunks, w_offsets)),
            call_chunks=call_chunks)
    return FpgaLayer(
        name=name, nodes=[n.name for n in m.nodes], input=_padded_name(m.x_q, zin, copies, (h, w)), output=m.out,
        in_shape=(c, h, w), out_shape=(o, out_rows, out_cols), kernel=(kh, kw), stride=stride,
        pads=(pt, pb, pl, pr), pool=m.pool, shift=shift, scale_error=err,
        weights=(pack_depthwise_weights(w3, cfg.cpo, weight_dtype(cfg)) if m.depthwise
                 else np.concatenate(packed) if in_chunks
                 else pack_pointwise_weights(w3, cfg.cpi, cfg.cpo, weight_dtype(cfg)) if pointwise
                 else pack_weights(w3, cfg.cpi, cfg.cpo, weight_dtype(cfg))),
        bias=pack_channels(bias.astype(bias_dtype(cfg)), cfg.cpo),
        mult=pack_channels(mult.astype(np.uint32), cfg.cpo),
        calls=calls, row_tiles=row_tiles, group_splits=group_splits,
        columns=columns, source=m.x_q, in_zero_point=zin, input_copies=copies,
        out_zero_point=zy, out_zero_point_exact=out_exact, out_zero_point_error=float(fold_error.max()),
        depthwise=m.depthwise, pointwise=pointwise,
        residual=res.operand if res is not None else "", table=table, **chunk_fields)


#: Cost model of a Gemm/MatMul on the kernel (:func:`gemm_projection`): cycles per call beyond
#: its ideal cycles (hlsinf.host.evaluate.PER_CALL_CYCLES), the clock, and the bytes of
#: weights the 512-bit gmem_w master delivers per cycle.
GEMM_PER_CALL_CYCLES = 620
GEMM_CLOCK_HZ = 300e6
GEMM_WEIGHT_BYTES_PER_CYCLE = 64
#: onnxruntime's MAC rate on a quantised Gemm of one row (QDQ from quantize_static, CPU
#: provider, default threads): benchmarks/gemm_cpu_rate.py measured 4.3e9 MAC/s (25088 x
#: 4096, 100 MB of weights: memory-bound), 1.4e10 (4096 x 4096) and 3.1e10 (4096 x 1000) on
#: the shared 2-core development machine (docs/host.md). The smallest is taken, so the
#: kernel gets the benefit of the doubt.
CPU_GEMM_MACS_PER_S = 4e9


def gemm_projection(cfg: KernelConfig, k: int, o: int, max_out_groups: int | None = None) -> dict:
    """Projected times of a ``1 x k`` by ``k x o`` Gemm/MatMul planned as 1x1 convolutions of a
    1x1 image: on the kernel, each call takes the larger of its ideal cycles and the cycles its
    weight sets need on gmem_w (a 1-pixel frame uses a CPO x CPI x 3 x 3 set per cycle, which
    the bus brings in ``set bytes / 64`` cycles), plus :data:`GEMM_PER_CALL_CYCLES`; on the
    CPU, its MACs at :data:`CPU_GEMM_MACS_PER_S`. On a kernel with pointwise calls, the Gemm is
    pointwise calls whose sets hold nine groups' weights each (``ceil(GI/9)`` sets per output
    group), so it moves 1/9 of the 3x3 slot's bytes: one call when ``k <= pointwise_imax``, else
    (with split accumulation) one per chunk of ``pointwise_imax`` features. Seconds,
    and the figures behind them. (From the shapes alone, so a layer the CPU keeps is never packed.)"""
    set_bytes = cfg.cpo * cfg.cpi * 9 * cfg.weight_bits // 8
    go, gi = math.ceil(o / cfg.cpo), math.ceil(k / cfg.cpi)
    pw_imax = pointwise_imax(cfg)
    pointwise = cfg.with_pointwise and (k <= pw_imax or cfg.with_acc_split)
    if pointwise:       # a weight set carries 9 groups' weights, not 1 in 9 (_build_layer); chunks of pw_imax
        starts = range(0, k, pw_imax)
        gi, chunks = sum(math.ceil(min(pw_imax, k - c0) / (9 * cfg.cpi)) for c0 in starts), len(starts)
    else:
        chunks = math.ceil(k / (cfg.imax // cfg.cpi * cfg.cpi)) if cfg.imax >= cfg.cpi else 1
    per_call = min(go, max_out_groups or go, cfg.max_frame_pixels)
    calls = chunks * math.ceil(go / per_call)
    cycles = max(go * gi, go * gi * set_bytes / GEMM_WEIGHT_BYTES_PER_CYCLE) + calls * GEMM_PER_CALL_CYCLES
    return dict(macs=k * o, cycles=int(cycles), calls=calls, kernel_s=cycles / GEMM_CLOCK_HZ,
                cpu_s=k * o / CPU_GEMM_MACS_PER_S, pointwise=pointwise)


def _gemm_decision(m: "_Match", node: Node, cfg: KernelConfig, gemm: str, max_out_groups: int | None) -> None:
    """Keep a Gemm/MatMul on the CPU (``_NoMatch`` with the figures) unless the kernel is
    projected faster or ``gemm="kernel"`` forces it."""
    if gemm == "kernel":
        return
    if gemm == "cpu":
        raise _NoMatch(f"{node.op} kept on the CPU (to_fpga gemm='cpu')")
    o, k = m.w_q.shape[:2]
    p = gemm_projection(cfg, k, o, max_out_groups)
    if p["kernel_s"] >= p["cpu_s"]:
        raise _NoMatch(f"{node.op} {k} -> {o}: the CPU is projected faster, "
                       f"{p['cpu_s'] * 1e3:.3g} ms at {CPU_GEMM_MACS_PER_S:.2g} MAC/s against {p['kernel_s'] * 1e3:.3g} "
                       f"ms on the kernel ({p['calls']} calls, {p['cycles']:,} cycles at "
                       f"{GEMM_CLOCK_HZ / 1e6:.0f} MHz, bound by "
                       + ("pointwise weight sets" if p["pointwise"] else "3x3 weight sets") + " on gmem_w)")


def _image_shape(shape) -> tuple[int, ...]:
    """A tensor's shape as 1 x C x H x W: a 1 x K matrix row (Gemm, MatMul) is a 1x1 image of K channels."""
    shape = tuple(shape)
    return (shape[0], shape[1], 1, 1) if len(shape) == 2 else shape


def _input_chunks(cfg: KernelConfig, c: int, w3: np.ndarray, what: str, call_imax: int) -> list[tuple[int, int]]:
    """(first channel, channels) of each chunk of at most ``call_imax`` input channels (imax in
    whole groups of CPI; for pointwise calls ``pointwise_imax``, whole super-pixels, so a chunk's
    super-pixel planes start where its channels do), after checking that the partial sums the add stage holds between the chunks' calls
    stay exact: ``max|x| * sum |w|`` over every input channel of an output channel must fit
    the accumulator (the held rows keep acc_bits; the bias is added, saturating, at the end)."""
    if 4 in (cfg.act_bits, cfg.weight_bits):
        raise _NoMatch(f"{what}, more than imax = {cfg.imax}: split accumulation is not planned for 4-bit lanes")
    size = call_imax // cfg.cpi * cfg.cpi
    if size == 0:
        raise _NoMatch(f"{what}: imax = {cfg.imax} is less than one group of CPI = {cfg.cpi}")
    amin, amax = cfg.act_range
    bound = max(-amin, amax) * int(np.abs(w3.astype(np.int64)).sum(axis=(1, 2, 3)).max(initial=0))
    if bound > cfg.acc_range[1]:
        raise _NoMatch(f"{what}, more than imax = {cfg.imax}: split over calls, the partial sums can reach "
                       f"{bound}, beyond the {cfg.acc_bits}-bit accumulator the kernel holds between calls")
    return [(c0, min(size, c - c0)) for c0 in range(0, c, size)]


def _tile_calls(cfg: KernelConfig, where: str, in_shape: tuple[int, int, int], o: int,
                pads: tuple[int, int, int, int], stride: int, pool: int, max_rows: int | None,
                max_out_groups: int | None, max_cols: int | None, upsize: int = 1,
                in_chunks: list[tuple[int, int]] | None = None, call_chunks: list[int] | None = None,
                **fields):
    """The calls of one layer (integer or fp32): row tiles, column tiles and output-group ranges.

    ``in_shape`` is the device input (C, H, W), ``pads`` (top, bottom, left, right) what the
    calls pad in the 3x3 slot, ``upsize`` the nearest upsampling after the pool, ``fields``
    the per-layer call arguments (relu, clip, shift, ...). Returns ``(calls, columns, row
    tiles, group ranges, (output rows, output columns))``; ``columns`` is empty when the calls
    read the whole width. With ``in_chunks`` (first channel, channels), each call becomes one
    call per chunk (``acc_hold`` on all but the last, ``acc_resume`` on all but the first),
    with at most as many output groups as have rows of their own in the accumulation buffer;
    the chunk of each call is appended to ``call_chunks``."""
    c, h, w = in_shape
    pt, pb, pl, pr = pads
    k = 1 if fields.get("pointwise") else 3      # a pointwise call's window is one pixel
    conv_rows = (h + pt + pb - k) // stride + 1
    conv_cols = (w + pl + pr - k) // stride + 1
    if conv_rows < 1 or conv_cols < 1:
        raise PlanError(f"{where}: the output would be empty")
    pool_div = 2 if pool else 1
    up = upsize
    rows_used = conv_rows // pool_div * pool_div
    out_rows, out_cols = conv_rows // pool_div * up, conv_cols // pool_div * up
    if pool and (out_rows < 1 or out_cols < 1):
        raise _NoMatch("pooling of a single row or column")
    tile = (cfg.hmax - k) // stride + 1
    if max_rows is not None:
        tile = min(tile, max_rows)
    if pool:
        tile -= tile % 2
    if tile < pool_div:
        raise PlanError(f"{where}: no row tiling fits the kernel's hmax = {cfg.hmax} "
                        f"(stride {stride}{', pooling' if pool else ''})")
    # Column tiles only when the image is wider than the line buffers: each reads its own
    # narrower copy of the input (halo columns included) and writes its own output strip.
    whole_width = w <= cfg.wmax and max_cols is None
    if fields.get("residual_add") and not whole_width:
        raise _NoMatch("residual add with column tiles (the operand would need strips too)")
    if up > 1 and not whole_width:
        raise PlanError(f"{where}: an upsampled layer must be written in whole rows (width {w} <= wmax = "
                        f"{cfg.wmax}, no column tiles)")
    if whole_width:
        col_tiles = [(0, conv_cols // pool_div * pool_div)]
    else:
        ctile = (cfg.wmax - k) // stride + 1
        if max_cols is not None:
            ctile = min(ctile, max_cols)
        if pool:
            ctile -= ctile % 2
        if ctile < pool_div:
            raise PlanError(f"{where}: input width {w} is larger than the kernel's wmax = {cfg.wmax} "
                            f"and no column tiling fits it (stride {stride}{', pooling' if pool else ''})")
        col_tiles = _row_tiles(conv_cols // pool_div * pool_div, ctile)
    go = math.ceil(o / cfg.cpo)
    per_call = go if not max_out_groups else max(1, max_out_groups)
    if in_chunks:       # every group of a held call has rows of its own: o_count * frame <= max_frame_pixels
        frame = min(tile, rows_used) * (col_tiles[0][1] - col_tiles[0][0] if whole_width else ctile)
        per_call = min(per_call, max(1, cfg.max_frame_pixels // frame))
    group_ranges = [(g, min(per_call, go - g)) for g in range(0, go, per_call)]
    calls, columns = [], []
    for c0, c1 in col_tiles:
        cfirst = c0 * stride - pl
        clast = (c1 - 1) * stride - pl + k - 1
        left, right = max(0, -cfirst), max(0, clast - (w - 1))
        cstart, cstop = max(cfirst, 0), min(clast, w - 1)
        tw = cstop - cstart + 1
        tout = (c1 - c0) // pool_div
        if whole_width:                          # the whole width, read in place
            cstart, cstop, tw, left, right, tout = 0, w - 1, w, pl, pr, out_cols
        n_before = len(calls)
        for r0, r1 in _row_tiles(rows_used, tile):
            first = r0 * stride - pt
            last = (r1 - 1) * stride - pt + k - 1
            top, bottom = max(0, -first), max(0, last - (h - 1))
            start, stop = max(first, 0), min(last, h - 1)
            for g0, count in group_ranges:
                args = CallArgs(H=h, W=tw, rows=stop - start + 1, I=c, O=o, pad_top=top, pad_bottom=bottom,
                                pad_left=left, pad_right=right, stride=stride, o_first=g0,
                                o_count=None if len(group_ranges) == 1 else count, pool=pool, **fields,
                                read_offset=start * tw, write_offset=(r0 // pool_div) * up * tout,
                                out_plane=out_rows * tout, upsize=up)
                if fields.get("residual_add"):   # the operand has the convolution output's shape (before pooling)
                    args.r_offset, args.r_plane = r0 * conv_cols, conv_rows * conv_cols
                for chunk, (_, n) in enumerate(in_chunks or [(0, c)]):
                    call = args
                    if in_chunks:
                        call = dataclasses.replace(args, I=n, acc_hold=chunk < len(in_chunks) - 1, acc_resume=chunk > 0)
                        call_chunks.append(chunk)
                    try:
                        call.validate(cfg)
                    except ValueError as e:
                        raise PlanError(f"{where}: {e}") from None
                    assert call.conv_rows == r1 - r0 and call.out_cols == tout
                    calls.append(call)
        columns.append(ColumnTile(cstart, cstop + 1, c0 // pool_div, c0 // pool_div + tout, len(calls) - n_before))
    return (calls, [] if whole_width else columns, len(_row_tiles(rows_used, tile)), len(group_ranges),
            (out_rows, out_cols))


def _device_table(m: _Match, y_enc: ActEncoding, cfg: KernelConfig) -> tuple[ActEncoding, np.ndarray]:
    """The activation's output encoding and the post-op table in device values: entry of each
    device code the requantisation can give (the convolution's output, clipped) -> the device
    code of the activation's output."""
    t_y, _ = m.y_type
    t_z, z_z = m.z_type
    tmin = int(np.iinfo(t_y).min)
    lo, hi = m.q_clip
    used = m.table[lo - tmin: hi - tmin + 1]
    z_enc = _encoding(t_z, z_z, (int(used.min()), int(used.max())), cfg, "activation output")
    amin, amax = cfg.act_range
    codes = np.clip(np.arange(amin, amax + 1) - y_enc.offset, lo, hi)   # other codes never occur
    return z_enc, pack_table(m.table[codes - tmin] + z_enc.offset, cfg)


def _padded_name(tensor: str, zin: InputZeroPoint, copies=(), size=None) -> str:
    """The device buffer of ``tensor`` padded (and stacked in shifted copies) by the host
    (the tensor's own name when the host does neither)."""
    if not any(zin.host_pads) and not copies:
        return tensor
    name = f"{tensor}[padded {','.join(map(str, zin.host_pads))} with {zin.value}"
    if copies:
        name += f", {len(copies)} copies shifted by {' '.join(f'{dy}/{dx}' for dy, dx in copies)} " \
                f"cut to {size[0]}x{size[1]}"
    return name + "]"


# Float convolutions on an fp32 kernel -------------------------------------------------------------

@dataclass
class _FloatMatch:
    nodes: list[Node]
    x: str                                    # the float input tensor
    out: str                                  # the tensor the last fused node writes
    w: np.ndarray                             # float32 O x I x kh x kw
    b: np.ndarray                             # float32 O
    lo: float | None                          # lower clip bound (Relu: 0.0); None: none
    hi: float | None
    pool: int


def _check_conv_attrs(graph: Graph, conv: Node, caps: "_Caps") -> None:
    """What any convolution on the kernel needs, integer or fp32: 2-D, group 1, dilation 1,
    explicit padding or VALID, a stride the kernel does in both directions."""
    a = conv.attrs
    if a.get("group", 1) != 1:
        raise _NoMatch(f"grouped convolution (group={a['group']})")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise _NoMatch(f"dilation {a['dilations']}")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _NoMatch(f"auto_pad={a['auto_pad']}")
    if len(graph.shapes.get(conv.inputs[0], ())) != 4 or graph.shapes[conv.inputs[0]][0] != 1:
        raise _NoMatch("not a 2-D convolution of a batch of one")
    strides = a.get("strides", [1, 1])
    if strides[0] != strides[1] or strides[0] not in caps.strides:
        raise _NoMatch(f"strides {strides} (the kernel does {' or '.join(map(str, caps.strides))} in both directions)")


def _match_float_conv(graph: Graph, conv: Node, cfg: KernelConfig, caps: "_Caps") -> _FloatMatch:
    """``Conv [-> Relu|Clip]* [-> MaxPool 2x2/2 [-> Relu|Clip]* | -> AveragePool 2x2/2]`` on float32.

    ReLU and Clip are non-decreasing in the kernel's float order, so they commute with the
    max pool and are the kernel's clip before it; after an average pool they do not."""
    _check_conv_attrs(graph, conv, caps)
    for t in (conv.inputs[0], conv.outputs[0]):
        dt = graph.dtypes.get(t)
        if dt is not None and np.dtype(dt) != np.float32:
            raise _NoMatch(f"tensor {t!r} is {np.dtype(dt)}, the fp32 kernel takes float32")
    w = _constant(graph, conv.inputs[1])
    if w is None:
        raise _NoMatch("weights are not constant")
    if w.dtype != np.float32:
        raise _NoMatch(f"weights are {w.dtype}, the fp32 kernel takes float32")
    if w.ndim != 4:
        raise _NoMatch("not a 2-D convolution")
    o, _, kh, kw = w.shape
    if kh > 3 or kw > 3:
        raise _NoMatch(f"kernel {kh}x{kw} is larger than 3x3")
    b = np.zeros(o, np.float32)
    if len(conv.inputs) > 2 and conv.inputs[2]:
        b = _constant(graph, conv.inputs[2])
        if b is None:
            raise _NoMatch("bias is not constant")
        if b.dtype != np.float32:
            raise _NoMatch(f"bias is {b.dtype}, the fp32 kernel takes float32")
    nodes, t = [conv], conv.outputs[0]
    lo = hi = None
    pool = POOL_NONE
    while True:
        nxt = _only_consumer(graph, t, ("Relu", "Clip", "MaxPool", "AveragePool"))
        if nxt is None or any(graph.dtypes.get(o_) not in (None, np.dtype(np.float32)) for o_ in nxt.outputs[:1]):
            break
        if nxt.op in ("Relu", "Clip"):
            if pool == POOL_AVG:
                break
            try:
                a, z = _clip_bounds(graph, nxt)
            except _NoMatch:
                break
            new_lo = a if lo is None else lo if a is None else max(a, lo)
            new_hi = z if hi is None else hi if z is None else min(z, hi)
            if new_lo is not None and new_hi is not None and not new_lo <= new_hi:
                break
            lo, hi = new_lo, new_hi
        else:
            mode = POOL_MAX if nxt.op == "MaxPool" else POOL_AVG
            built = cfg.with_maxpool if mode == POOL_MAX else cfg.with_avgpool
            if pool or not built or not _is_pool2x2(nxt) or len([o_ for o_ in nxt.outputs if o_]) != 1:
                break
            pool = mode
        nodes.append(nxt)
        t = nxt.outputs[0]
    return _FloatMatch(nodes, conv.inputs[0], t, w, b.reshape(-1).astype(np.float32), lo, hi, pool)


def _build_float_layer(graph: Graph, m: _FloatMatch, cfg: KernelConfig, caps: "_Caps", max_rows: int | None,
                       max_out_groups: int | None, max_cols: int | None = None) -> FpgaLayer:
    """An fp32 layer: float32 weights and bias in the kernel layouts, no requantisation
    (shift 0, no multiplier), Relu as the kernel's ReLU and Clip bounds as binary32 bits."""
    from hlsinf.reference_float import float_bits
    conv = m.nodes[0]
    name = conv.name
    _, c, h, w = graph.shapes[m.x]
    o, _, kh, kw = m.w.shape
    a = conv.attrs
    pads = list(a.get("pads", [0, 0, 0, 0])) if a.get("auto_pad", "NOTSET") == "NOTSET" else [0, 0, 0, 0]
    stride = a.get("strides", [1, 1])[0]
    where = f"node {name!r} (Conv {c}x{h}x{w}, kernel {kh}x{kw})"
    oy, ox = (3 - kh) // 2, (3 - kw) // 2
    w3 = np.zeros((o, c, 3, 3), np.float32)
    w3[:, :, oy:oy + kh, ox:ox + kw] = m.w
    pt, pl, pb, pr = pads[0] + oy, pads[1] + ox, pads[2] + (3 - kh - oy), pads[3] + (3 - kw - ox)
    if max(pt, pb, pl, pr) > caps.max_pad:
        raise _NoMatch(f"padding {pads} needs {max(pt, pb, pl, pr)} zero rows/columns in the 3x3 slot, "
                       f"the kernel pads at most {caps.max_pad}")
    if c > cfg.imax:
        raise PlanError(f"{where}: {c} input channels, more than the kernel's imax = {cfg.imax}; "
                        "no tiling splits input channels")
    # ReLU (or a Clip at 0) as the kernel's relu: it clamps exactly the values with the sign bit set
    relu = cfg.with_relu and m.lo is not None and m.lo == 0.0
    clip_lo = None if relu or m.lo is None else float_bits(m.lo)
    clip_hi = None if m.hi is None else float_bits(m.hi)
    calls, columns, row_tiles, group_splits, (out_rows, out_cols) = _tile_calls(
        cfg, where, (c, h, w), o, (pt, pb, pl, pr), stride, m.pool, max_rows, max_out_groups, max_cols,
        relu=relu, clip_lo=clip_lo, clip_hi=clip_hi, shift=0, use_mult=False)
    return FpgaLayer(
        name=name, nodes=[n.name for n in m.nodes], input=m.x, output=m.out,
        in_shape=(c, h, w), out_shape=(o, out_rows, out_cols), kernel=(kh, kw), stride=stride,
        pads=(pt, pb, pl, pr), pool=m.pool, shift=0, scale_error=0.0,
        weights=pack_weights(w3, cfg.cpi, cfg.cpo, np.float32),
        bias=pack_channels(m.b, cfg.cpo, np.float32),
        mult=np.zeros(math.ceil(o / cfg.cpo) * cfg.cpo, np.uint32),
        calls=calls, row_tiles=row_tiles, group_splits=group_splits, columns=columns, source=m.x)


#: Nodes that make a model quantised (an fp32 kernel refuses such a model).
_QUANTISED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger",
                  "QLinearMatMul", "DynamicQuantizeLinear")


# The planner ------------------------------------------------------------------------------------

def to_fpga(model, kernel, *, calibration: np.ndarray | None = None, input_shape=None,
            max_rows: int | None = None, max_out_groups: int | None = None,
            max_cols: int | None = None, cpu_fallback: bool = False, gemm: str = "auto") -> Plan:
    """Plan a model for the kernel.

    ``model``: ONNX path, ``ModelProto`` or :class:`Graph`; a QDQ model runs its quantised
    convolutions on the accelerator. With ``calibration`` (an ``N x C x H x W`` float batch) a
    float model is first quantised by :func:`hlsinf.host.quantize.quantize`.
    ``kernel``: a :class:`KernelConfig`, a dict of its fields, or a build folder / descriptor
    JSON; ``None`` or a dict without ``act_signed`` leaves the activation format (uint8 or
    int8) to the model: the type most of its quantised convolution inputs have (uint8 for a
    float model). Tensors of the other type are mapped exactly where that is possible (int8
    ``q`` is uint8 ``q + 128``, and the same values when their range allows), else the layer
    runs on the CPU. Non-zero zero points are folded into the bias; see
    :func:`realise_input_zero_point` for the input's padding. ``max_rows`` caps the
    convolution output rows of one call (below what ``hmax`` allows), ``max_cols`` the output
    columns of a column tile (column tiles are made anyway when an input is wider than
    ``wmax``) and ``max_out_groups`` the output groups of one call. A layer the kernel cannot hold (too many input channels, no tile fits) raises
    :class:`PlanError`, or runs on the CPU with ``cpu_fallback=True``.

    A quantised Gemm or MatMul of one row is a 1x1 convolution of a 1x1 image: with
    ``gemm="auto"`` it runs on the accelerator only when :func:`gemm_projection` projects the
    kernel faster than onnxruntime (the plan says why not otherwise); ``"kernel"`` or ``"cpu"``
    force the choice.

    On an fp32 kernel the float model is planned as it is (float32 weights and bias, Relu/Clip
    and 2x2 pools fused, the same tiling); a QDQ model or a ``calibration`` batch is a
    :class:`PlanError`, since either would change the model the kernel computes.
    """
    cfg, descriptor = load_kernel(kernel)
    caps = _Caps.of(descriptor)
    if gemm not in ("auto", "kernel", "cpu"):
        raise PlanError(f"to_fpga gemm = {gemm!r} is out of range: 'auto', 'kernel' or 'cpu'")
    if cfg.is_float and calibration is not None:
        raise PlanError("the kernel is fp32: it runs the float model as it is; a calibration batch "
                        "(post-training quantisation) is for integer kernels")
    if calibration is not None:
        from hlsinf.host.quantize import quantize
        model = quantize(model, calibration, cfg)
    graph = model if isinstance(model, Graph) else load_model(model, input_shape)
    graph = fold_batchnorm(graph)
    format_note = ""
    if cfg.is_float:
        quantised = next((n for n in graph.nodes if n.op in _QUANTISED_OPS), None)
        if quantised is not None:
            raise PlanError(f"the kernel is fp32 and the model is quantised (node {quantised.name!r} is "
                            f"{quantised.op}): plan the float model for it, or this model for an integer kernel")
    elif not _format_given(kernel):
        signed, why = activation_format(graph)
        if signed is not None:
            cfg = dataclasses.replace(cfg, act_signed=signed)
            format_note = f"from the model: {why}"
    encodings: dict[str, ActEncoding] = {}

    fused: dict[str, FpgaLayer] = {}        # last fused node name -> layer
    produced: set[str] = set()              # tensors the accelerator layers so far write
    in_layer: set[str] = set()
    reasons: dict[str, str] = {}
    visited: set[str] = set()               # convolutions planned so far (accelerator or not)
    for node in graph.nodes:
        if node.op not in ("Conv",) + _GEMM_OPS or node.name in in_layer:
            continue
        visited.add(node.name)
        if cfg.is_float:
            if node.op != "Conv":
                continue
            try:
                fm = _match_float_conv(graph, node, cfg, caps)
                layer = _build_float_layer(graph, fm, cfg, caps, max_rows, max_out_groups, max_cols)
            except _NoMatch as e:
                reasons[node.name] = str(e)
                continue
            except PlanError as e:
                if not cpu_fallback:
                    raise
                reasons[node.name] = str(e)
                continue
            in_layer.update(layer.nodes)
            fused[fm.nodes[-1].name] = layer
            continue
        try:
            m = _match_conv(graph, node, cfg, caps)
            if node.op in _GEMM_OPS:
                _gemm_decision(m, node, cfg, gemm, max_out_groups)
            # a tensor keeps one encoding: the one its accelerator producer (or first consumer) chose
            t_x, z_x = m.x_type
            x_enc = encodings.get(m.x_q) or _encoding(t_x, z_x, None, cfg, "input")
            layer = None

            def build(m, **kw):
                t_y, z_y = m.y_type
                # A fused Add keeps the output's own zero point on the device (values=None: no
                # shift by the ReLU'd range), which is what leaves the convolution's part of the
                # sum room below the output's zero (residual add, docs/host.md).
                y_enc = _encoding(t_y, z_y, None if m.residual is not None else m.q_clip, cfg, "output")
                out_enc, table = y_enc, None
                if m.table is not None:
                    out_enc, table = _device_table(m, y_enc, cfg)
                return _build_layer(graph, m, cfg, caps, max_rows, max_out_groups, max_cols, x_enc=x_enc,
                                    y_enc=y_enc, table=table, **kw), out_enc

            if m.residual is not None and (next(n for n in m.nodes if n.op == "Add").name in in_layer
                                           or _pending_conv(graph, m.residual.operand, visited)):
                # the Add is another convolution's already, or its operand is a convolution's
                # output not planned yet (that one may carry the Add: ResNet's downsample)
                m = _match_conv(graph, node, cfg, caps, fuse_residual=False)
            if m.residual is not None:
                # the fused Add reads its operand from the device: an earlier layer's output
                add = next(n for n in m.nodes if n.op == "Add")
                r_enc = encodings.get(m.residual.operand)
                if r_enc is None and m.residual.operand not in produced:
                    # computed on the CPU (e.g. a 3x3 max pool): the host writes it to the device
                    # (CPO lanes) before the layer, in an exact encoding of its own
                    try:
                        r_enc = _encoding(*m.residual.r_type, None, cfg, "residual operand")
                    except _NoMatch as e:
                        reasons[add.name] = f"residual add not fused into {node.name!r}: {e}"
                if r_enc is None:
                    reasons.setdefault(add.name, f"residual add not fused into {node.name!r}: its operand "
                                       f"{m.residual.operand!r} has no device encoding")
                elif (np.dtype(r_enc.dtype), r_enc.zero_point) != (np.dtype(m.residual.r_type[0]), m.residual.r_type[1]):
                    reasons[add.name] = (f"residual add not fused into {node.name!r}: its operand's quantisation "
                                         f"differs from what its producer wrote")
                else:
                    try:
                        layer, out_enc = build(m, r_enc=r_enc)
                    except _NoMatch as e:
                        reasons[add.name] = f"residual add not fused into {node.name!r}: {e}"
                if layer is None:          # the Add stays on the CPU
                    m = _match_conv(graph, node, cfg, caps, fuse_residual=False)
            if layer is None:
                layer, out_enc = build(m)
        except _NoMatch as e:
            reasons[node.name] = str(e)
            continue
        except PlanError as e:
            if not cpu_fallback:
                raise
            reasons[node.name] = str(e)
            continue
        # a fused node's intermediate output must not be needed elsewhere (checked by _only_consumer);
        # the input DQ may feed other nodes, so it is only "fused" if the conv was its sole consumer
        names = [n.name for n in m.nodes]
        x_dq = m.nodes[0]
        if len(graph.consumers(x_dq.outputs[0])) > 1:
            names.remove(x_dq.name)
        w_dq = m.nodes[1]
        if len(graph.consumers(w_dq.outputs[0])) > 1 or w_dq.outputs[0] != node.inputs[1]:
            names.remove(w_dq.name)
        layer.nodes = names
        in_layer.update(names)
        fused[m.nodes[-1].name] = layer
        produced.add(layer.output)
        encodings.setdefault(m.x_q, x_enc)
        if m.residual is not None:
            encodings.setdefault(m.residual.operand, r_enc)
        encodings[m.out] = out_enc

    # Liveness: keep CPU nodes whose outputs something needs.
    needed = set(graph.outputs)
    keep = set()
    for node in reversed(graph.nodes):
        if node.name in fused:
            layer = fused[node.name]
            needed.add(layer.source)
            if layer.residual:
                needed.add(layer.residual)
            keep.add(node.name)
        elif node.name in in_layer:
            continue
        elif any(o in needed for o in node.outputs):
            keep.add(node.name)
            needed.update(i for i in node.inputs if i)

    # Steps with transfers at the CPU <-> accelerator boundaries.
    steps = []
    on_host = {graph.inputs[0]} | set(graph.initializers)
    on_device: dict[str, int] = {}          # tensor -> lanes
    device_tensors = {}
    constants: list[Node] = []              # nodes of constants only: folded by onnxruntime in the partitions
    const_out: set[str] = set()

    def chw(t):
        s = _image_shape(graph.shapes[t])
        if len(s) != 4 or s[0] != 1:
            raise PlanError(f"tensor {t!r} of shape {s} is not a 1xCxHxW image")
        return s[1:]

    def to_host(t):
        if t in on_device and t not in on_host:
            steps.append(Transfer(t, "from_device", chw(t), on_device[t], encodings.get(t)))
            on_host.add(t)

    for node in graph.nodes:
        if node.name not in keep:
            continue
        if node.name in fused:
            layer = fused[node.name]
            t = layer.source
            if layer.input != t:
                # the host writes a padded copy (input zero point at padded borders, see
                # realise_input_zero_point); a device-resident input makes a round trip
                if (layer.input, cfg.cpi) not in device_tensors:
                    to_host(t)
                    steps.append(Transfer(t, "to_device", layer.in_shape, cfg.cpi, encodings[t], layer.input,
                                          layer.in_zero_point.host_pads, layer.input_copies))
                    device_tensors[(layer.input, cfg.cpi)] = layer.in_shape
            elif layer.pointwise:
                # a pointwise layer's super-pixels (9*CPI lanes) are written by the host: a tensor on
                # the device in CPO lanes comes back to the host first, and keeps its CPO-lane buffer
                lanes = layer.in_lanes(cfg)
                if (t, lanes) not in device_tensors:
                    to_host(t)
                    steps.append(Transfer(t, "to_device", chw(t), lanes, encodings.get(t)))
                    device_tensors[(t, lanes)] = chw(t)
            elif on_device.get(t) != cfg.cpi:
                to_host(t)
                steps.append(Transfer(t, "to_device", chw(t), cfg.cpi, encodings.get(t)))
                on_device[t] = cfg.cpi
                device_tensors[(t, cfg.cpi)] = chw(t)
            if layer.residual and on_device.get(layer.residual) != cfg.cpo:
                # an operand the CPU computed (or one held at other lanes): the host writes it
                to_host(layer.residual)
                steps.append(Transfer(layer.residual, "to_device", chw(layer.residual), cfg.cpo,
                                      encodings.get(layer.residual)))
                on_device[layer.residual] = cfg.cpo
                device_tensors[(layer.residual, cfg.cpo)] = chw(layer.residual)
            steps.append(layer)
            on_device[layer.output] = cfg.cpo
            device_tensors[(layer.output, cfg.cpo)] = layer.out_shape
            if chw(layer.output) != layer.out_shape:
                raise PlanError(f"layer {layer.name!r}: planned output {layer.out_shape} differs from "
                                f"ONNX shape inference {chw(layer.output)}")
        elif all(not i or i in graph.initializers or i in const_out for i in node.inputs) and node.op != "Conv":
            # constant subgraph (e.g. DequantizeLinear of Gemm weights): part of the partitions that use it
            constants.append(node)
            const_out.update(o for o in node.outputs if o)
            on_host.update(o for o in node.outputs if o)
        else:
            for i in node.inputs:
                if i:
                    to_host(i)
            steps.append(CpuLayer(node, reasons.get(node.name)))
            on_host.update(o for o in node.outputs if o)
    for o in graph.outputs:
        to_host(o)
    steps, partitions = make_partitions(graph, steps, constants)
    return Plan(graph, cfg, steps, device_tensors, descriptor, encodings, format_note, partitions)
