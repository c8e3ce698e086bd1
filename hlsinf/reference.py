"""Bit-exact numpy model of one kernel call: the oracle of every test and the ``reference`` device.

The model works on the same memory images and run-time arguments as the hardware. It is
written twice over on purpose: one small function per dataflow stage (``pad``,
``windows``, ``mul_partial``, ``add_bias``, ``requantize``, ``pool2x2``), which the stage
tests use as their golden model, and :func:`kernel_call`, which composes the same
semantics vectorised over a whole call (a float64 matrix product, exact because every
sum fits the 53-bit mantissa; see ``KernelConfig.acc_bits``).

Memory layouts (docs/numbers.md):

* activations "GIHWCPI": element ``(c, h, w)`` of a ``C x H x W`` image sits at
  ``(c // CPI) * plane * CPI + (h * W + w) * CPI + c % CPI``; ``plane`` is ``H * W`` pixels
  unless a call says otherwise; channels are zero-padded to whole groups. Outputs use CPO.
* weights ``[GO][GI][CPO][CPI][3][3]``, zero-padded; bias and multipliers ``[GO * CPO]``.
* depthwise weights (calls with ``depthwise``): ``[G][CPO][3][3]``, channel ``c``'s nine taps at
  ``((c // CPO) * CPO + c % CPO) * 9``, i.e. ``[C][3][3]`` zero-padded to whole groups.
* pointwise calls (``pointwise``): input in super-pixels ``[GS][H][W][9][CPI]``
  (:func:`pack_superpixels`), weight sets ``[GO][GS][CPO][CPI][9]`` (:func:`pack_pointwise_weights`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hlsinf.config import MAX_PAD, KernelConfig

__all__ = [
    "CallArgs", "CallError", "POOL_NONE", "POOL_MAX", "POOL_AVG",
    "AccBuffer", "held_sums",
    "pad", "windows", "mul_partial", "add_bias", "requantize", "pool2x2", "saturate", "wrap",
    "shift_round", "Modes",
    "leaky_relu", "batch_norm", "pack_bn", "unpack_bn", "residual_add", "residual_operand", "post_ops",
    "table_lookup", "make_table", "pack_table", "unpack_table", "table_entries",
    "kernel_call", "conv_output_size",
    "pack_activations", "unpack_activations", "pack_weights", "unpack_weights",
    "pack_depthwise_weights", "unpack_depthwise_weights", "mul_depthwise",
    "pack_superpixels", "unpack_superpixels", "pack_pointwise_weights", "unpack_pointwise_weights",
    "pointwise_imax",
    "pack_channels", "act_dtype", "weight_dtype", "bias_dtype", "mult_dtype",
    "pack_nibbles", "unpack_nibbles", "with_nibbles", "kernel_call_elements",
]

POOL_NONE, POOL_MAX, POOL_AVG = 0, 1, 2
#: Largest leaky ReLU slope numerator (16 bits, unsigned) and shift.
LEAKY_ALPHA_NUM_MAX, LEAKY_ALPHA_SHIFT_MAX = (1 << 16) - 1, 31
#: Batch-norm post-op: multiplier bits (signed, low bits of an int32 word) and largest shift.
BN_MULT_BITS, BN_SHIFT_MAX = 16, 31
#: Residual-add post-op: operand multiplier bits (unsigned) and largest shift.
R_MULT_BITS, R_SHIFT_MAX = 16, 31
_POOL_NAMES = {POOL_NONE: "none", POOL_MAX: "max", POOL_AVG: "avg"}


def pointwise_imax(cfg: KernelConfig) -> int:
    """Most input channels of a pointwise call: ``9 * ceil(imax/CPI) * CPI``. Each output then sums
    at most ``cfg.max_products`` products, like a 3x3 call of ``imax`` channels (one per channel
    instead of nine), and ``GS`` is at most ``ceil(imax/CPI)``, the width of the kernel's group counters."""
    return 9 * math.ceil(cfg.imax / cfg.cpi) * cfg.cpi


class CallError(ValueError):
    """A run-time argument of a kernel call is out of range; the message names it."""


# Memory element types ---------------------------------------------------------------------

def act_dtype(cfg: KernelConfig):
    """numpy type of an activation memory image: 4-bit lanes are bytes of two lanes each;
    fp32 kernels: activations, weights and biases are binary32."""
    if cfg.is_float:
        return np.float32
    return {(4, False): np.uint8, (4, True): np.uint8, (8, False): np.uint8, (8, True): np.int8,
            (16, False): np.uint16, (16, True): np.int16}[cfg.act_bits, cfg.act_signed]


def weight_dtype(cfg: KernelConfig):
    if cfg.is_float:
        return np.float32
    return {4: np.uint8, 8: np.int8, 16: np.int16}[cfg.weight_bits]


def bias_dtype(cfg: KernelConfig):
    if cfg.is_float:
        return np.float32
    return {16: np.int16, 32: np.int32}[cfg.bias_bits]


def mult_dtype(cfg: KernelConfig):
    """Multipliers are stored as 32-bit words whatever ``mult_bits`` is."""
    return np.uint32


# Run-time arguments -----------------------------------------------------------------------

def conv_output_size(size: int, pad_before: int, pad_after: int, stride: int) -> int:
    """Outputs of a 3-tap convolution along one axis (0 if the padded input is too short)."""
    padded = size + pad_before + pad_after
    return 0 if padded < 3 else (padded - 3) // stride + 1


#: ``clip_lo`` / ``clip_hi`` bits of an fp32 call that clip nothing: the smallest and the
#: largest key of ``reference_float.max_key`` (a NaN with the sign set, a NaN without).
FLOAT_NO_LOWER_BOUND = 0xFFFFFFFF
FLOAT_NO_UPPER_BOUND = 0x7FFFFFFF


def _int32(bits: int) -> int:
    """A 32-bit register word as a signed integer."""
    bits = int(bits) & 0xFFFFFFFF
    return bits - (1 << 32) if bits >> 31 else bits


def _float_key(bits: int) -> int:
    """``reference_float.max_key`` of binary32 bits, on a plain int."""
    signed = _int32(bits)
    return signed ^ 0x7FFFFFFF if signed < 0 else signed


@dataclass
class CallArgs:
    """The scalar arguments of one kernel call, as written to the register map.

    The call reads ``rows`` input rows of width ``W`` starting at pixel ``read_offset`` of
    every input-group plane (a plane is ``H * W`` pixels: ``H`` is the height of the whole
    image in memory), convolves them with 3x3 weights, requantises, optionally pools, and
    writes output groups ``o_first .. o_first + o_count - 1`` at pixel ``write_offset`` of
    output planes of ``out_plane`` pixels.
    """

    H: int
    W: int
    rows: int
    I: int
    O: int
    pad_top: int = 0
    pad_bottom: int = 0
    pad_left: int = 0
    pad_right: int = 0
    stride: int = 1
    o_first: int = 0
    o_count: int | None = None        #: None: every output group from o_first on
    relu: bool = False
    clip_lo: int | None = None        #: None: the smallest activation value
    clip_hi: int | None = None        #: None: the largest activation value
    shift: int = 0
    use_mult: bool = False
    pool: int = POOL_NONE
    read_offset: int = 0              #: pixels into each input plane
    write_offset: int = 0             #: pixels into each output plane
    out_plane: int | None = None      #: pixels per output plane; None: this call's output size
    # Post-operations (only in a kernel built with them: KernelConfig.post_ops).
    leaky_relu: bool = False          #: leaky ReLU on the requantised activations
    leaky_alpha_num: int = 0          #: its slope is leaky_alpha_num / 2**leaky_alpha_shift
    leaky_alpha_shift: int = 0
    bn: bool = False                  #: batch-norm affine, per-channel parameters at n
    bn_shift: int = 0
    bn_clip_lo: int | None = None     #: None: the smallest activation value
    bn_clip_hi: int | None = None     #: None: the largest activation value
    residual_add: bool = False        #: add the operand at r (output-shaped, GOHWCPO), before pooling
    r_mult: int = 1                   #: operand scale: r * r_mult / 2**r_shift (rounded half up)
    r_shift: int = 0
    r_relu: bool = False              #: ReLU after the add
    r_clip_lo: int | None = None      #: None: the smallest activation value
    r_clip_hi: int | None = None      #: None: the largest activation value
    r_offset: int | None = None       #: pixels into each operand plane; None: as the output's (see residual_geometry)
    r_plane: int | None = None        #: pixels per operand plane; None: as the output's (see residual_geometry)
    table: bool = False               #: y = t[y]: the 2**act_bits-entry lookup table at t
    upsize: int = 1                   #: nearest upsampling factor after pooling (KernelConfig.max_upsize)
    # Design-time options (only in a kernel built with them).
    depthwise: bool = False           #: depthwise 3x3: output channel c uses input channel c only (I = O)
    acc_hold: bool = False            #: keep the partial sums on chip for the next call (no output: AccBuffer)
    acc_resume: bool = False          #: start from the sums the previous acc_hold call kept (AccBuffer)
    pointwise: bool = False           #: 1x1 at full rate: super-pixel input [GS][H][W][9][CPI] (see pack_superpixels)

    # Derived sizes ------------------------------------------------------------------------

    def gi(self, cfg: KernelConfig) -> int:
        return math.ceil(self.I / cfg.cpi)

    def gs(self, cfg: KernelConfig) -> int:
        """Super-pixel groups of a pointwise call: 9 input groups of CPI channels each."""
        return math.ceil(self.I / (9 * cfg.cpi))

    def go(self, cfg: KernelConfig) -> int:
        return math.ceil(self.O / cfg.cpo)

    def groups(self, cfg: KernelConfig) -> range:
        count = self.go(cfg) - self.o_first if self.o_count is None else self.o_count
        return range(self.o_first, self.o_first + count)

    @property
    def conv_rows(self) -> int:
        if self.pointwise:      # 1x1, stride 1, no padding
            return self.rows
        return conv_output_size(self.rows, self.pad_top, self.pad_bottom, self.stride)

    @property
    def conv_cols(self) -> int:
        if self.pointwise:
            return self.W
        return conv_output_size(self.W, self.pad_left, self.pad_right, self.stride)

    @property
    def out_rows(self) -> int:
        """Rows written per output group: after pooling, times the upsize factor."""
        return (self.conv_rows // 2 if self.pool else self.conv_rows) * self.upsize

    @property
    def out_cols(self) -> int:
        return (self.conv_cols // 2 if self.pool else self.conv_cols) * self.upsize

    def plane_out(self) -> int:
        return self.out_rows * self.out_cols if self.out_plane is None else self.out_plane

    def clip_bounds(self, cfg: KernelConfig) -> tuple[int, int]:
        """The ``clip_lo`` / ``clip_hi`` register values. Integer kernels: bounds in activation
        units, ReLU raising the lower one to 0. fp32 kernels: binary32 bits as signed 32-bit
        words, ``None`` written as the two ends of ``reference_float.max_key``'s order
        (``0xFFFFFFFF``, ``0x7FFFFFFF``), which clip nothing; ReLU is applied before the clip by
        its own flag (docs/numbers.md, "fp32")."""
        if cfg.is_float:
            lo = FLOAT_NO_LOWER_BOUND if self.clip_lo is None else self.clip_lo
            hi = FLOAT_NO_UPPER_BOUND if self.clip_hi is None else self.clip_hi
            return _int32(lo), _int32(hi)
        amin, amax = cfg.act_range
        lo = amin if self.clip_lo is None else self.clip_lo
        hi = amax if self.clip_hi is None else self.clip_hi
        if self.relu:
            lo = max(lo, 0)
        return lo, hi

    def bn_bounds(self, cfg: KernelConfig) -> tuple[int, int]:
        amin, amax = cfg.act_range
        return (amin if self.bn_clip_lo is None else self.bn_clip_lo,
                amax if self.bn_clip_hi is None else self.bn_clip_hi)

    def frames_per_group(self, cfg: KernelConfig) -> int:
        """Input frames streamed per output group: GI, 1 for a depthwise call (group g reads input group g),
        GS for a pointwise call (frames of super-pixels)."""
        if self.pointwise:
            return self.gs(cfg)
        return 1 if self.depthwise else self.gi(cfg)

    def r_bounds(self, cfg: KernelConfig) -> tuple[int, int]:
        amin, amax = cfg.act_range
        return (amin if self.r_clip_lo is None else self.r_clip_lo,
                amax if self.r_clip_hi is None else self.r_clip_hi)

    def residual_geometry(self) -> tuple[int, int]:
        """``(r_offset, r_plane)`` with the defaults resolved. The operand has the shape of the
        convolution output (before pooling) and is addressed like the output: without pooling
        the defaults are ``write_offset`` and the output plane, so a row tile reads exactly
        the operand pixels of the output pixels it writes; with pooling (the add applies
        before the pool) they are 0 and ``conv_rows * conv_cols``."""
        if self.pool:
            offset, plane = 0, self.conv_rows * self.conv_cols
        else:
            offset, plane = self.write_offset, self.plane_out()
        return (offset if self.r_offset is None else self.r_offset,
                plane if self.r_plane is None else self.r_plane)

    def ideal_cycles(self, cfg: KernelConfig) -> int:
        """The paper's model: one input pixel of CPI lanes per cycle, per input frame of each output group."""
        return self.frames_per_group(cfg) * self.rows * self.W * len(self.groups(cfg))

    def to_dict(self) -> dict:
        return asdict(self)

    # Validation ---------------------------------------------------------------------------

    def validate(self, cfg: KernelConfig) -> "CallArgs":
        """Raise :class:`CallError` naming the first argument out of range; return self."""

        def need(name, ok, allowed):
            if not ok:
                raise CallError(f"kernel argument {name} = {getattr(self, name)!r} is out of range: {allowed}")

        need("W", 1 <= self.W <= cfg.wmax, f"1 to wmax = {cfg.wmax}")
        need("rows", 1 <= self.rows <= cfg.hmax, f"1 to hmax = {cfg.hmax}")
        need("H", self.H >= 1, ">= 1")
        # imax bounds the sum over input channels; a depthwise output sums 9 products of one channel,
        # a pointwise one 1 product per channel: up to 9x imax (in whole groups) channels.
        if self.pointwise:
            need("I", 1 <= self.I <= pointwise_imax(cfg),
                 f"1 to {pointwise_imax(cfg)} in a pointwise call (9 x imax, in whole groups of CPI)")
        need("I", 1 <= self.I and (self.depthwise or self.pointwise or self.I <= cfg.imax),
             ">= 1 (depthwise)" if self.depthwise else f"1 to imax = {cfg.imax}")
        need("O", self.O >= 1, ">= 1")
        for name in ("pad_top", "pad_bottom", "pad_left", "pad_right"):
            need(name, 0 <= getattr(self, name) <= MAX_PAD, f"0 to {MAX_PAD}")
        need("stride", self.stride in (1, 2), "1 or 2")
        need("rows", self.conv_rows >= 1,
             f"at least {3 - self.pad_top - self.pad_bottom} rows with this padding")
        need("W", self.conv_cols >= 1, f"at least {3 - self.pad_left - self.pad_right} columns with this padding")
        need("pool", self.pool in _POOL_NAMES, "0 (none), 1 (max) or 2 (avg)")
        if self.pool == POOL_MAX:
            need("pool", cfg.with_maxpool, "max pooling is not built into this kernel")
        if self.pool == POOL_AVG:
            need("pool", cfg.with_avgpool, "average pooling is not built into this kernel")
        if self.pool:
            need("rows", self.conv_rows >= 2, "pooling needs at least 2 convolution output rows")
            need("W", self.conv_cols >= 2, "pooling needs at least 2 convolution output columns")
        need("o_first", 0 <= self.o_first < self.go(cfg), f"0 to {self.go(cfg) - 1} (output groups of O = {self.O})")
        if self.o_count is not None:
            need("o_count", 1 <= self.o_count <= self.go(cfg) - self.o_first,
                 f"1 to {self.go(cfg) - self.o_first}")
        need("relu", not self.relu or cfg.with_relu, "ReLU is not built into this kernel")
        need("use_mult", not self.use_mult or cfg.with_multiplier, "the multiplier is not built into this kernel")
        need("shift", 0 <= self.shift <= cfg.max_shift, f"0 to max_shift = {cfg.max_shift}")
        if cfg.number_format == "fixed":
            # fixed<W,I> in, fixed<W,I> out: products carry 2F fractional bits, the output F.
            need("shift", self.shift == cfg.frac_bits,
                 f"{cfg.frac_bits} (the fractional bits F of {cfg.format_name}: products have 2F, outputs F)")
            need("use_mult", not self.use_mult, f"0 with {cfg.format_name} (the requantisation is the shift by F)")
        amin, amax = cfg.act_range
        if cfg.is_float:
            need("shift", self.shift == 0, "0 on an fp32 kernel (no requantisation)")
            for name in ("clip_lo", "clip_hi"):
                value = getattr(self, name)
                need(name, value is None or (isinstance(value, (int, np.integer)) and -(1 << 31) <= value < 1 << 32),
                     "None or the 32 bits of a binary32 value (reference_float.float_bits)")
            lo, hi = self.clip_bounds(cfg)
            need("clip_hi", _float_key(hi) >= _float_key(lo),
                 f">= the lower clip bound (binary32 bits {lo & 0xFFFFFFFF:#010x}) in max_key order")
        else:
            if self.clip_lo is not None:
                need("clip_lo", amin <= self.clip_lo <= amax, f"{amin} to {amax}")
            if self.clip_hi is not None:
                need("clip_hi", amin <= self.clip_hi <= amax, f"{amin} to {amax}")
            lo, hi = self.clip_bounds(cfg)
            need("clip_hi", lo <= hi, f">= the lower clip bound {lo}")
        need("read_offset", 0 <= self.read_offset and self.read_offset + self.rows * self.W <= self.H * self.W,
             f"0 to {self.H * self.W - self.rows * self.W} (rows x W must lie inside the H x W plane)")
        need("leaky_relu", not self.leaky_relu or "leaky_relu" in cfg.post_ops,
             "leaky ReLU is not built into this kernel (KernelConfig.post_ops)")
        if self.leaky_relu:
            need("relu", not self.relu, "0 when leaky_relu is on (leaky ReLU needs the negative values)")
        if cfg.is_float:
            # fp32: the slope is a binary32 value, its 32 bits in the leaky_alpha_num register.
            need("leaky_alpha_num", -(1 << 31) <= self.leaky_alpha_num < 1 << 32,
                 "the 32 bits of a binary32 slope on an fp32 kernel (reference_float.float_bits)")
            need("leaky_alpha_shift", self.leaky_alpha_shift == 0,
                 "0 on an fp32 kernel (the slope is the binary32 value in leaky_alpha_num)")
        else:
            need("leaky_alpha_num", 0 <= self.leaky_alpha_num <= LEAKY_ALPHA_NUM_MAX,
                 f"0 to {LEAKY_ALPHA_NUM_MAX} (a 32-bit binary32 slope only on an fp32 kernel)")
            need("leaky_alpha_shift", 0 <= self.leaky_alpha_shift <= LEAKY_ALPHA_SHIFT_MAX,
                 f"0 to {LEAKY_ALPHA_SHIFT_MAX}")
        need("bn", not self.bn or "bn" in cfg.post_ops, "batch-norm is not built into this kernel (KernelConfig.post_ops)")
        if cfg.is_float:
            need("bn_shift", self.bn_shift == 0, "0 on an fp32 kernel (its bn is fadd(fmul(y, m), b): no shift)")
            need("bn_clip_lo", self.bn_clip_lo is None, "None on an fp32 kernel (its bn does not clip)")
            need("bn_clip_hi", self.bn_clip_hi is None, "None on an fp32 kernel (its bn does not clip)")
        need("bn_shift", 0 <= self.bn_shift <= BN_SHIFT_MAX, f"0 to {BN_SHIFT_MAX}")
        if self.bn_clip_lo is not None:
            need("bn_clip_lo", amin <= self.bn_clip_lo <= amax, f"{amin} to {amax}")
        if self.bn_clip_hi is not None:
            need("bn_clip_hi", amin <= self.bn_clip_hi <= amax, f"{amin} to {amax}")
        blo, bhi = self.bn_bounds(cfg)
        need("bn_clip_hi", blo <= bhi, f">= the lower bound {blo}")
        need("depthwise", not self.depthwise or cfg.with_depthwise,
             "depthwise convolution is not built into this kernel (KernelConfig.with_depthwise)")
        if self.depthwise:
            need("O", self.O == self.I, f"equal to I = {self.I} in a depthwise call")
        for name in ("acc_hold", "acc_resume"):
            need(name, not getattr(self, name) or cfg.with_acc_split,
                 "split accumulation is not built into this kernel (KernelConfig.with_acc_split)")
            need(name, not (getattr(self, name) and self.depthwise), "0 in a depthwise call")
        if self.acc_hold or self.acc_resume:
            fp = self.conv_rows * self.conv_cols
            need("o_count", len(self.groups(cfg)) * fp <= cfg.max_frame_pixels,
                 f"at most {cfg.max_frame_pixels // fp} output groups of {fp} convolution outputs with acc_hold/"
                 f"acc_resume (each holds its own rows of the {cfg.max_frame_pixels}-row accumulation buffer)")
        need("pointwise", not self.pointwise or cfg.with_pointwise,
             "pointwise (1x1) calls are not built into this kernel (KernelConfig.with_pointwise)")
        if self.pointwise:
            need("pointwise", not self.depthwise, "0 when depthwise is on (a call is one or the other)")
            need("stride", self.stride == 1, "1 in a pointwise call (subsample a strided 1x1 on the host)")
            for name in ("pad_top", "pad_bottom", "pad_left", "pad_right"):
                need(name, getattr(self, name) == 0, "0 in a pointwise call (a 1x1 convolution has no padding)")
        need("residual_add", not self.residual_add or "residual_add" in cfg.post_ops,
             "the residual add is not built into this kernel (KernelConfig.post_ops)")
        need("r_mult", 0 <= self.r_mult < 1 << R_MULT_BITS, f"0 to {(1 << R_MULT_BITS) - 1}")
        need("r_shift", 0 <= self.r_shift <= R_SHIFT_MAX, f"0 to {R_SHIFT_MAX}")
        for name in ("r_clip_lo", "r_clip_hi"):
            if getattr(self, name) is not None:
                need(name, amin <= getattr(self, name) <= amax, f"{amin} to {amax}")
        rlo, rhi = self.r_bounds(cfg)
        need("r_clip_hi", rlo <= rhi, f">= the lower bound {rlo}")
        r_offset, r_plane = self.residual_geometry()
        need("r_offset", r_offset >= 0, ">= 0")
        need("r_plane", r_offset + self.conv_rows * self.conv_cols <= r_plane,
             f">= r_offset + {self.conv_rows * self.conv_cols} operand pixels (the convolution output, before pooling)")
        need("table", not self.table or "table" in cfg.post_ops,
             "the lookup table is not built into this kernel (KernelConfig.post_ops)")
        need("upsize", self.upsize in (1, 2, 4) and self.upsize <= cfg.max_upsize,
             f"1 (none) or a factor built into this kernel: 1 to max_upsize = {cfg.max_upsize}, a power of two")
        need("write_offset", 0 <= self.write_offset, ">= 0")
        need("out_plane", self.out_plane is None or
             self.write_offset + self.out_rows * self.out_cols <= self.out_plane,
             f">= write_offset + {self.out_rows * self.out_cols} output pixels")
        return self


# One function per stage ---------------------------------------------------------------------

def saturate(x, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def pad(frame: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Stage ``padding``: zero rows and columns around a ``rows x W x lanes`` frame."""
    return np.pad(np.asarray(frame), ((top, bottom), (left, right), (0, 0)))


def windows(padded: np.ndarray, stride: int) -> np.ndarray:
    """Stage ``cvt``: the 3x3 windows of a padded ``Hp x Wp x lanes`` frame.

    Returns ``Ho x Wo x lanes x 9``; tap ``ky * 3 + kx`` of lane ``c`` of window ``(y, x)``
    is ``padded[y * stride + ky, x * stride + kx, c]``.
    """
    view = sliding_window_view(np.asarray(padded), (3, 3), axis=(0, 1))  # Hp-2, Wp-2, lanes, 3, 3
    view = view[::stride, ::stride]
    return view.reshape(view.shape[0], view.shape[1], view.shape[2], 9)


def mul_partial(window: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Stage ``mul``: per output lane, the sum of CPI x 9 products.

    ``window`` is ``... x CPI x 9``, ``weights`` is ``CPO x CPI x 9``; returns ``... x CPO``.
    """
    return np.einsum("...ck,ock->...o", np.asarray(window, np.int64), np.asarray(weights, np.int64))


def mul_depthwise(window: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Stage ``mul`` in a depthwise call: output lane ``c`` is the sum of lane ``c``'s 9 taps times its
    9 weights (the diagonal of a weight set). ``window`` is ``... x CPI x 9``, ``weights`` ``CPO x 9``
    (CPO = CPI); returns ``... x CPO``."""
    return np.einsum("...ck,ck->...c", np.asarray(window, np.int64), np.asarray(weights, np.int64))


def add_bias(sum_of_partials, bias, cfg: KernelConfig) -> np.ndarray:
    """Stage ``add``, last step: sum over input groups (exact) plus bias, saturated to the accumulator."""
    lo, hi = cfg.acc_range
    return saturate(np.asarray(sum_of_partials, np.int64) + np.asarray(bias, np.int64), lo, hi)


class AccBuffer:
    """The add stage's accumulation buffer as a device keeps it from one call to the next
    (``KernelConfig.with_acc_split``): ``max_frame_pixels`` rows of CPO accumulators, and
    whether each row holds what an ``acc_hold`` call left there (an ordinary call of several
    input frames overwrites rows with partial sums this model does not keep: resuming from
    them is an error, not a guess)."""

    def __init__(self, cfg: KernelConfig):
        self.rows = np.zeros((cfg.max_frame_pixels, cfg.cpo), np.int64)
        self.defined = np.zeros(cfg.max_frame_pixels, bool)

    def after_ordinary_call(self, cfg: KernelConfig, args: "CallArgs") -> None:
        """An ordinary call (neither flag) of several frames per group writes rows 0.. back."""
        if args.frames_per_group(cfg) > 1:
            self.defined[: args.conv_rows * args.conv_cols] = False


def held_sums(cfg: KernelConfig, args: "CallArgs", sums: np.ndarray, last, acc: AccBuffer | None):
    """Stage ``add`` with ``acc_hold`` / ``acc_resume``: the sums to add the bias to, or None
    when the call holds them.

    ``sums`` are the call's exact sums (``pixels x groups*CPO``, pixel-major), ``last()`` the
    share of the call's last input frame (called only when needed). Output group ``k`` of
    the call owns rows ``k * pixels ..`` of ``acc``. Rows hold sums modulo ``2**acc_bits``
    (each frame's write keeps acc_bits), so a resumed group emits
    ``saturate(wrap(row + sums - last) + last + bias)``: exactly ``saturate(total + bias)``
    whenever the partial sums fit, which the host checks before it splits a layer."""
    hold, resume = args.acc_hold, args.acc_resume
    if not (hold or resume):
        if acc is not None:
            acc.after_ordinary_call(cfg, args)
        return sums
    if acc is None:
        raise CallError("acc_hold/acc_resume need the accumulation buffer a device keeps between calls "
                        "(reference.AccBuffer, argument acc)")
    cpo, fp = cfg.cpo, sums.shape[0]
    n = sums.shape[1] // cpo
    rows = acc.rows[: n * fp].reshape(n, fp, cpo).transpose(1, 0, 2).reshape(fp, n * cpo)
    total = np.asarray(sums, np.int64)
    if resume:
        if not acc.defined[: n * fp].all():
            raise CallError(f"acc_resume: accumulation rows 0 to {n * fp - 1} were not all left by an acc_hold call "
                            f"(the calls of a split layer must follow each other with the same geometry)")
        total = total + rows
    if hold:
        acc.rows[: n * fp] = wrap(total, cfg.acc_bits, True).reshape(fp, n, cpo).transpose(1, 0, 2).reshape(n * fp, cpo)
        acc.defined[: n * fp] = True
        return None
    if args.frames_per_group(cfg) > 1:      # the frames before the last wrote their sums back
        acc.defined[: n * fp] = False
    share = np.asarray(last(), np.int64)
    return wrap(total - share, cfg.acc_bits, True) + share


@dataclass(frozen=True)
class Modes:
    """How a requantising right shift rounds and how its result fits the activation format
    (``KernelConfig.rounding`` / ``overflow``; docs/numbers.md). The defaults are round half
    up and saturate. ``bits``/``signed`` are the activation format, used by ``wrap``."""

    rounding: str = "round"
    overflow: str = "sat"
    bits: int = 8
    signed: bool = True

    @classmethod
    def of(cls, cfg: KernelConfig) -> "Modes":
        return cls(cfg.rounding, cfg.overflow, cfg.act_bits, cfg.act_signed)

    def fit(self, v, lo: int, hi: int) -> np.ndarray:
        """Saturate ``v`` to ``[lo, hi]``, or with ``overflow='wrap'`` keep its low ``bits`` bits
        in the activation format and then clip that to ``[lo, hi]`` (explicit clip or ReLU
        bounds still apply to the wrapped value)."""
        if self.overflow == "wrap":
            v = wrap(v, self.bits, self.signed)
        return np.clip(v, lo, hi).astype(np.int64)


DEFAULT_MODES = Modes()


def wrap(v, bits: int, signed: bool) -> np.ndarray:
    """The low ``bits`` bits of ``v``, read as two's complement (``signed``) or unsigned: AP_WRAP."""
    v = np.asarray(v)
    low = (v & ((1 << bits) - 1)).astype(np.int64)
    if signed:
        low = low - ((low >> (bits - 1)) << bits)
    return low


def shift_round(x, shift: int, rounding: str = "round"):
    """``x >> shift`` (arithmetic) after adding ``2**(shift-1)`` for ``rounding='round'`` (half
    up, AP_RND; no term for ``shift = 0``), floor for ``'trunc'`` (AP_TRN)."""
    if rounding == "round" and shift > 0:
        x = x + (1 << (shift - 1))
    return x >> shift


def requantize(acc, mult, shift: int, lo: int, hi: int, modes: Modes = DEFAULT_MODES) -> np.ndarray:
    """Stage ``relu``: ``fit((acc * M + 2**(shift-1)) >> shift, lo, hi)``; by default round half
    up and saturate (:class:`Modes` for truncation and wrap-around)."""
    acc = np.asarray(acc, np.int64)
    mult = np.asarray(mult, np.int64)
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    biggest = (int(np.abs(acc).max(initial=0)) * int(np.abs(mult).max(initial=0))) + rounding
    if biggest >= 1 << 62:
        # acc_bits + mult_bits can exceed 63 (48 + 24): use exact Python integers.
        acc, mult = acc.astype(object), mult.astype(object)
    product = acc * mult
    return modes.fit(shift_round(product, shift, modes.rounding), lo, hi)


def pool2x2(y: np.ndarray, mode: int) -> np.ndarray:
    """Stage ``pool``: 2x2, stride 2 over a ``Ho x Wo x lanes`` frame; odd edges are dropped.

    Max takes the largest; average is ``(a + b + c + d + 2) >> 2`` (round half up).
    """
    y = np.asarray(y, np.int64)
    if mode == POOL_NONE:
        return y
    h, w = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
    quads = y[:h, :w].reshape(h // 2, 2, w // 2, 2, *y.shape[2:])
    if mode == POOL_MAX:
        return quads.max(axis=(1, 3))
    if mode == POOL_AVG:
        return (quads.sum(axis=(1, 3)) + 2) >> 2
    raise CallError(f"kernel argument pool = {mode!r} is out of range: 0 (none), 1 (max) or 2 (avg)")


def upsize(y: np.ndarray, factor: int) -> np.ndarray:
    """Stage ``upsize``: nearest upsampling of a ``rows x cols x lanes`` frame by ``factor``
    (every pixel ``factor`` times along a row, every row ``factor`` times)."""
    if factor == 1:
        return y
    return np.repeat(np.repeat(y, factor, axis=0), factor, axis=1)


def leaky_relu(v, alpha_num: int, alpha_shift: int, lo: int, hi: int, modes: Modes = DEFAULT_MODES) -> np.ndarray:
    """Post-op ``leaky_relu``: ``v`` if ``v >= 0``, else
    ``fit((v * alpha_num + 2**(alpha_shift-1)) >> alpha_shift, lo, hi)`` (no rounding term
    for ``alpha_shift = 0``): by default round half up, saturate to the activation range
    ``[lo, hi]`` (:class:`Modes` for truncation and wrap-around)."""
    v = np.asarray(v, np.int64)
    scaled = modes.fit(shift_round(v * int(alpha_num), alpha_shift, modes.rounding), lo, hi)
    return np.where(v >= 0, v, scaled).astype(np.int64)


def batch_norm(v, mult, bias, shift: int, lo: int, hi: int, modes: Modes = DEFAULT_MODES) -> np.ndarray:
    """Post-op ``bn``: ``fit((v * mult + bias + 2**(shift-1)) >> shift, lo, hi)`` per channel
    (channels last; no rounding term for ``shift = 0``): by default round half up, saturate
    (:class:`Modes` for truncation and wrap-around)."""
    v = np.asarray(v, np.int64)
    x = v * np.asarray(mult, np.int64) + np.asarray(bias, np.int64)
    return modes.fit(shift_round(x, shift, modes.rounding), lo, hi)


def unpack_bn(n_mem, cfg: KernelConfig, channels: slice) -> tuple[np.ndarray, np.ndarray]:
    """The batch-norm multipliers and biases of ``channels`` from an ``n`` image ([GO][2][CPO] int32)."""
    words = np.asarray(n_mem).reshape(-1).view(np.int32) if np.asarray(n_mem).dtype != np.int32 \
        else np.asarray(n_mem).reshape(-1)
    groups = words[: words.size // (2 * cfg.cpo) * 2 * cfg.cpo].reshape(-1, 2, cfg.cpo)
    mult = groups[:, 0].reshape(-1).astype(np.int64)
    mult = ((mult & ((1 << BN_MULT_BITS) - 1)) ^ (1 << (BN_MULT_BITS - 1))) - (1 << (BN_MULT_BITS - 1))
    return mult[channels], groups[:, 1].reshape(-1).astype(np.int64)[channels]


def pack_bn(mult, bias, cpo: int) -> np.ndarray:
    """Per-channel batch-norm multipliers (int16 range) and biases (int32) -> [GO][2][CPO] int32 words."""
    mult, bias = pack_channels(np.asarray(mult), cpo, np.int64), pack_channels(np.asarray(bias), cpo, np.int64)
    lo, hi = -(1 << (BN_MULT_BITS - 1)), (1 << (BN_MULT_BITS - 1)) - 1
    if mult.size and (mult.min() < lo or mult.max() > hi):
        raise ValueError(f"pack_bn: multipliers must lie in [{lo}, {hi}]")
    return np.stack([mult.reshape(-1, cpo), bias.reshape(-1, cpo)], axis=1).reshape(-1).astype(np.int32)


def residual_add(v, r, mult: int, shift: int, relu: bool, lo: int, hi: int) -> np.ndarray:
    """Post-op ``residual_add``: ``clip(v + ((r * mult + 2**(shift-1)) >> shift), lo, hi)``
    (no rounding term for ``shift = 0``: round half up), then ``max(., 0)`` when ``relu``."""
    v, r = np.asarray(v, np.int64), np.asarray(r, np.int64)
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    y = np.clip(v + ((r * int(mult) + rounding) >> shift), lo, hi)
    return (np.maximum(y, 0) if relu else y).astype(np.int64)


def residual_operand(r_mem, cfg: KernelConfig, args: "CallArgs") -> np.ndarray:
    """The operand pixels a call adds, ``(conv_rows * conv_cols) x (groups * CPO)``: per
    output group ``o``, ``conv_rows * conv_cols`` pixels from pixel ``r_offset`` of plane
    ``o`` (``r_plane`` pixels each) of the GOHWCPO image ``r_mem``."""
    groups = args.groups(cfg)
    pixels = args.conv_rows * args.conv_cols
    r_offset, r_plane = args.residual_geometry()
    need = groups.stop * r_plane * cfg.cpo
    flat = None if r_mem is None else np.asarray(r_mem).reshape(-1)
    if flat is None or flat.size < need:
        raise CallError(f"memory image r_mem holds {0 if flat is None else flat.size} elements, the call needs {need}")
    planes = flat[: need].reshape(groups.stop, r_plane, cfg.cpo)[groups.start:, r_offset: r_offset + pixels]
    return planes.transpose(1, 0, 2).reshape(pixels, len(groups) * cfg.cpo).astype(np.int64)


def table_entries(cfg: KernelConfig) -> int:
    """Entries of a post-op ``table``: one per activation bit pattern."""
    return 1 << cfg.act_bits


def table_lookup(v, table) -> np.ndarray:
    """Post-op ``table``: ``table[v & (len(table) - 1)]``, the entry of ``v``'s two's-complement
    bit pattern (``table`` as :func:`unpack_table` returns it)."""
    table = np.asarray(table, np.int64)
    return table[np.asarray(v, np.int64) & (table.size - 1)]


def unpack_table(t_mem, cfg: KernelConfig) -> np.ndarray:
    """The ``2**act_bits`` entries of a ``t`` image as activation values (int64), by input bit pattern."""
    n = table_entries(cfg)
    raw = np.asarray(t_mem).reshape(-1)
    if raw.size * raw.itemsize < n * cfg.act_bits // 8:
        raise CallError(f"memory image t_mem holds {raw.size * raw.itemsize} bytes, the table needs "
                        f"{n * cfg.act_bits // 8}")
    return np.frombuffer(raw.tobytes(), act_dtype(cfg), count=n).astype(np.int64)


def pack_table(outputs, cfg: KernelConfig) -> np.ndarray:
    """The ``t`` image (``act_dtype`` entries, by input bit pattern) of ``outputs[k]``, the output
    for input value ``amin + k`` (the activations in increasing order)."""
    amin, amax = cfg.act_range
    outputs = np.asarray(outputs, np.int64).reshape(-1)
    if outputs.size != amax - amin + 1:
        raise ValueError(f"pack_table: {outputs.size} outputs, the table needs {amax - amin + 1}")
    if outputs.min() < amin or outputs.max() > amax:
        raise ValueError(f"pack_table: outputs must lie in [{amin}, {amax}]")
    table = np.zeros(table_entries(cfg), np.int64)
    table[np.arange(amin, amax + 1) & (table.size - 1)] = outputs
    return table.astype(act_dtype(cfg))


def make_table(fn, cfg: KernelConfig) -> np.ndarray:
    """The ``t`` image of an integer function ``fn`` (vectorised over an int64 array of inputs)."""
    amin, amax = cfg.act_range
    return pack_table(fn(np.arange(amin, amax + 1, dtype=np.int64)), cfg)


def post_ops(y, cfg: KernelConfig, args: "CallArgs", channels: slice | None = None,
             n_mem=None, r=None, t_mem=None) -> np.ndarray:
    """The post-operations of ``cfg.post_ops`` that ``args`` enables, in the configured order,
    on requantised activations ``y`` (``... x channels``, channels last; ``channels`` are
    the layer channels they are, for the per-channel parameters in ``n_mem``; ``r`` the
    residual operand of the same shape as ``y``, see :func:`residual_operand`; ``t_mem`` is
    the lookup table's image)."""
    y = np.asarray(y, np.int64)
    for op in cfg.post_ops:
        if op == "leaky_relu" and args.leaky_relu:
            y = leaky_relu(y, args.leaky_alpha_num, args.leaky_alpha_shift, *cfg.act_range, Modes.of(cfg))
        if op == "bn" and args.bn:
            if n_mem is None:
                raise CallError("memory image n_mem is missing: the call enables bn")
            mult, bias = unpack_bn(n_mem, cfg, channels)
            y = batch_norm(y, mult, bias, args.bn_shift, *args.bn_bounds(cfg), Modes.of(cfg))
        if op == "residual_add" and args.residual_add:
            if r is None:
                raise CallError("memory image r_mem is missing: the call enables residual_add")
            y = residual_add(y, np.asarray(r).reshape(y.shape), args.r_mult, args.r_shift, args.r_relu,
                             *args.r_bounds(cfg))
        if op == "table" and args.table:
            if t_mem is None:
                raise CallError("memory image t_mem is missing: the call enables table")
            y = table_lookup(y, unpack_table(t_mem, cfg))
    return y


# The whole call -------------------------------------------------------------------------------

def kernel_call(cfg: KernelConfig, args: CallArgs, x_mem: np.ndarray, w_mem: np.ndarray,
                b_mem: np.ndarray, out_mem: np.ndarray, m_mem: np.ndarray | None = None,
                n_mem: np.ndarray | None = None, *, r_mem: np.ndarray | None = None,
                t_mem: np.ndarray | None = None, acc: AccBuffer | None = None) -> np.ndarray:
    """Run one kernel call on memory images; writes into ``out_mem`` and returns it.

    ``x_mem`` holds the input in GIHWCPI with planes of ``H * W`` pixels (a pointwise call's
    in super-pixels, :func:`pack_superpixels`, and its weights as :func:`pack_pointwise_weights`), ``w_mem`` the
    weights of every output group of the layer, ``b_mem`` (and ``m_mem`` when
    ``use_mult``) one word per output channel of the layer; ``n_mem`` the bn parameters and
    ``r_mem`` the residual operand (GOHWCPO, :func:`residual_operand`) when the call uses
    them. Only the output pixels the call computes are written. ``acc`` is the device's
    accumulation buffer (:class:`AccBuffer`), needed by ``acc_hold`` / ``acc_resume`` calls;
    an ``acc_hold`` call writes nothing to ``out_mem``.
    """
    if cfg.is_float:
        raise CallError("reference.kernel_call is the integer model: use hlsinf.reference_float.kernel_call "
                        "for number_format='fp32'")
    if cfg.act_bits == 4 or cfg.weight_bits == 4:
        if args.residual_add or args.table:
            raise CallError("the residual add and the table are not modelled for 4-bit activations or weights")
        return with_nibbles(kernel_call_elements, cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem=n_mem,
                            acc=acc)
    return kernel_call_elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem,
                                acc=acc)


def kernel_call_elements(cfg: KernelConfig, args: CallArgs, x_mem: np.ndarray, w_mem: np.ndarray,
                         b_mem: np.ndarray, out_mem: np.ndarray, m_mem: np.ndarray | None = None,
                         n_mem: np.ndarray | None = None, *, r_mem: np.ndarray | None = None,
                         t_mem: np.ndarray | None = None, acc: AccBuffer | None = None) -> np.ndarray:
    """:func:`kernel_call` on images of one array element per activation and weight (what
    every format but the 4-bit ones stores; :func:`with_nibbles` unpacks those)."""
    args.validate(cfg)
    cpi, cpo = cfg.cpi, cfg.cpo
    gi, go = args.gi(cfg), args.go(cfg)
    groups = args.groups(cfg)
    plane_in = args.H * args.W

    def need_size(name, arr, size):
        if arr is None or arr.size < size:
            raise CallError(f"memory image {name} holds {0 if arr is None else arr.size} elements, "
                            f"the call needs {size}")

    gs = args.gs(cfg)
    if args.pointwise:   # frames of super-pixels, 9 input groups each; one weight set per frame
        need_size("x_mem", x_mem, gs * 9 * plane_in * cpi)
        need_size("w_mem", w_mem, go * gs * cpo * cpi * 9)
    else:
        need_size("x_mem", x_mem, gi * plane_in * cpi)
        need_size("w_mem", w_mem, go * cpo * 9 if args.depthwise else go * gi * cpo * cpi * 9)
    need_size("b_mem", b_mem, go * cpo)
    if args.use_mult:
        need_size("m_mem", m_mem, go * cpo)
    plane_out = args.plane_out()
    need_size("out_mem", out_mem, (groups.stop) * plane_out * cpo)

    # Input tile: GI planes -> (GI*CPI) x rows x W, channel c = g * CPI + lane.
    if args.pointwise:
        # Super-pixels [GS][H][W][9][CPI]: channel (s*9 + t)*CPI + lane, one 1x1 tap each.
        x = np.asarray(x_mem).reshape(-1)[: gs * plane_in * 9 * cpi].reshape(gs, plane_in, 9 * cpi)
        x = x[:, args.read_offset: args.read_offset + args.rows * args.W]
        x = x.transpose(1, 0, 2).reshape(args.rows * args.W, gs * 9 * cpi)
        ho, wo = args.rows, args.W
        # Weight set (o, s), tap t of lane c multiplies channel (s*9 + t)*CPI + c.
        w = np.asarray(w_mem).reshape(-1)[: go * gs * cpo * cpi * 9].reshape(go, gs, cpo, cpi, 9)
        w = w[groups.start: groups.stop].transpose(0, 2, 1, 4, 3).reshape(len(groups) * cpo, gs * 9 * cpi)
        sums = np.rint(x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
        tail = (gs - 1) * 9 * cpi                 # columns of the last super-pixel frame

        def last():
            return np.rint(x[:, tail:].astype(np.float64) @ w[:, tail:].astype(np.float64).T).astype(np.int64)
        sums = held_sums(cfg, args, sums, last, acc)
        if sums is None:                           # acc_hold: kept on chip, nothing written
            return out_mem
    else:
        x = np.asarray(x_mem).reshape(-1)[: gi * plane_in * cpi].reshape(gi, plane_in, cpi)
        x = x[:, args.read_offset: args.read_offset + args.rows * args.W]
        x = x.reshape(gi, args.rows, args.W, cpi).transpose(1, 2, 0, 3).reshape(args.rows, args.W, gi * cpi)
        cols = windows(pad(x, args.pad_top, args.pad_bottom, args.pad_left, args.pad_right), args.stride)
        ho, wo = cols.shape[:2]

    if args.pointwise:
        pass
    elif args.depthwise:
        # Output group g sees input group g only: channel c's window times channel c's 9 weights.
        w = np.asarray(w_mem).reshape(-1)[: go * cpo * 9].reshape(go * cpo, 9)
        channels = slice(groups.start * cpo, groups.stop * cpo)
        sums = mul_depthwise(cols.reshape(ho * wo, gi * cpi, 9)[:, channels], w[channels])
    else:
        cols = cols.reshape(ho * wo, gi * cpi * 9).astype(np.float64)
        # Weights of the selected output groups: (n_groups*CPO) x (GI*CPI*9), same column order.
        w = np.asarray(w_mem).reshape(-1)[: go * gi * cpo * cpi * 9].reshape(go, gi, cpo, cpi, 9)
        w = w[groups.start: groups.stop].transpose(0, 2, 1, 3, 4).reshape(len(groups) * cpo, gi * cpi * 9)
        sums = np.rint(cols @ w.astype(np.float64).T).astype(np.int64)       # (ho*wo) x (groups*CPO)
        tail = (gi - 1) * cpi * 9                 # columns of the last input frame

        def last():
            return np.rint(cols[:, tail:] @ w[:, tail:].astype(np.float64).T).astype(np.int64)
        sums = held_sums(cfg, args, sums, last, acc)
        if sums is None:                           # acc_hold: kept on chip, nothing written
            return out_mem

    channels = slice(groups.start * cpo, groups.stop * cpo)
    acc = add_bias(sums, np.asarray(b_mem).reshape(-1)[channels], cfg)
    mult = np.asarray(m_mem).reshape(-1)[channels] if args.use_mult else 1
    y = requantize(acc, mult, args.shift, *args.clip_bounds(cfg), Modes.of(cfg))
    if args.bn:
        need_size("n_mem", n_mem, go * 2 * cpo)
    r = residual_operand(r_mem, cfg, args) if args.residual_add else None
    y = post_ops(y, cfg, args, channels, n_mem, r, t_mem)
    y = upsize(pool2x2(y.reshape(ho, wo, len(groups) * cpo), args.pool), args.upsize)

    out = out_mem.reshape(-1)
    hp, wp = y.shape[:2]
    y = y.reshape(hp * wp, len(groups), cpo).transpose(1, 0, 2)          # groups x pixels x CPO
    for k, g in enumerate(groups):
        base = (g * plane_out + args.write_offset) * cpo
        out[base: base + hp * wp * cpo] = y[k].reshape(-1)
    return out_mem


def with_nibbles(call, cfg: KernelConfig, args: CallArgs, x_mem, w_mem, b_mem, out_mem, m_mem=None, **kw):
    """``call`` (a model taking element images) on the lanes of 4-bit memory images (bytes of
    two lanes, docs/memory.md): unpacked to one int64 per lane, the output packed back into
    ``out_mem``."""
    args.validate(cfg)
    x = unpack_nibbles(x_mem, cfg.act_signed) if cfg.act_bits == 4 else x_mem
    w = unpack_nibbles(w_mem, True) if cfg.weight_bits == 4 else w_mem
    out = unpack_nibbles(out_mem, cfg.act_signed) if cfg.act_bits == 4 else out_mem
    call(cfg, args, x, w, b_mem, out, m_mem, **kw)
    if cfg.act_bits == 4:
        out_mem.reshape(-1).view(np.uint8)[:] = pack_nibbles(out)
    return out_mem


# Packing between NCHW arrays and the kernel layouts ---------------------------------------------

def pack_nibbles(values) -> np.ndarray:
    """4-bit lanes, two per byte: element ``2j`` in the low nibble of byte ``j``, ``2j + 1``
    in the high nibble (little end first, docs/memory.md); two's complement for negative
    values. An odd count is padded with a zero nibble."""
    v = np.asarray(values).reshape(-1).astype(np.int64)
    if v.size and (v.min() < -8 or v.max() > 15):
        raise ValueError(f"pack_nibbles: values must lie in [-8, 15] (int4 or uint4), got [{v.min()}, {v.max()}]")
    v = v & 0xF
    if v.size % 2:
        v = np.append(v, 0)
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(mem, signed: bool) -> np.ndarray:
    """Bytes of two 4-bit lanes (see :func:`pack_nibbles`) -> one int64 per lane."""
    b = np.asarray(mem).reshape(-1).view(np.uint8).astype(np.int64)
    v = np.empty(2 * b.size, np.int64)
    v[0::2], v[1::2] = b & 0xF, b >> 4
    if signed:
        v -= (v >> 3) << 4
    return v


def pack_activations(x: np.ndarray, lanes: int, dtype=None, bits: int = 8) -> np.ndarray:
    """``C x H x W`` -> flat GIHWCPI image with ``lanes`` channels per group (zero-padded);
    ``bits=4``: bytes of two lanes (:func:`pack_nibbles`)."""
    if bits == 4:
        return pack_nibbles(pack_activations(x, lanes, np.int64))
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"pack_activations expects a C x H x W array, got shape {x.shape}")
    c, h, w = x.shape
    g = math.ceil(c / lanes)
    padded = np.zeros((g * lanes, h, w), dtype=dtype or x.dtype)
    padded[:c] = x
    return padded.reshape(g, lanes, h, w).transpose(0, 2, 3, 1).reshape(-1)


def unpack_activations(mem: np.ndarray, channels: int, h: int, w: int, lanes: int,
                       plane: int | None = None, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Flat GIHWCPI image (planes of ``plane`` pixels, default ``h * w``) -> ``channels x h x w``;
    ``bits=4``: from bytes of two lanes, ``signed`` or not."""
    if bits == 4:
        mem = unpack_nibbles(mem, signed)
    plane = h * w if plane is None else plane
    g = math.ceil(channels / lanes)
    planes = np.asarray(mem).reshape(-1)[: g * plane * lanes].reshape(g, plane, lanes)[:, : h * w]
    return planes.reshape(g, h, w, lanes).transpose(0, 3, 1, 2).reshape(g * lanes, h, w)[:channels]


def pack_weights(w: np.ndarray, cpi: int, cpo: int, dtype=None, bits: int = 8) -> np.ndarray:
    """``O x I x 3 x 3`` -> flat ``[GO][GI][CPO][CPI][3][3]`` (zero-padded); ``bits=4``: bytes
    of two weights (:func:`pack_nibbles`)."""
    if bits == 4:
        return pack_nibbles(pack_weights(w, cpi, cpo, np.int64))
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"pack_weights expects an O x I x 3 x 3 array, got shape {w.shape}")
    o, i = w.shape[:2]
    go, gi = math.ceil(o / cpo), math.ceil(i / cpi)
    padded = np.zeros((go * cpo, gi * cpi, 3, 3), dtype=dtype or w.dtype)
    padded[:o, :i] = w
    return padded.reshape(go, cpo, gi, cpi, 3, 3).transpose(0, 2, 1, 3, 4, 5).reshape(-1)


def unpack_weights(mem: np.ndarray, o: int, i: int, cpi: int, cpo: int, bits: int = 8) -> np.ndarray:
    if bits == 4:
        mem = unpack_nibbles(mem, True)
    go, gi = math.ceil(o / cpo), math.ceil(i / cpi)
    w = np.asarray(mem).reshape(go, gi, cpo, cpi, 3, 3).transpose(0, 2, 1, 3, 4, 5)
    return w.reshape(go * cpo, gi * cpi, 3, 3)[:o, :i]


def pack_depthwise_weights(w: np.ndarray, cpo: int, dtype=None) -> np.ndarray:
    """``C x 1 x 3 x 3`` (ONNX depthwise, group = C) or ``C x 3 x 3`` -> flat ``[G][CPO][3][3]`` (zero-padded)."""
    w = np.asarray(w)
    if w.ndim == 4 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 3 or w.shape[1:] != (3, 3):
        raise ValueError(f"pack_depthwise_weights expects a C x 1 x 3 x 3 or C x 3 x 3 array, got shape {w.shape}")
    c = w.shape[0]
    padded = np.zeros((math.ceil(c / cpo) * cpo, 3, 3), dtype=dtype or w.dtype)
    padded[:c] = w
    return padded.reshape(-1)


def unpack_depthwise_weights(mem: np.ndarray, channels: int, cpo: int) -> np.ndarray:
    """Flat ``[G][CPO][3][3]`` -> ``channels x 1 x 3 x 3``."""
    g = math.ceil(channels / cpo)
    return np.asarray(mem).reshape(-1)[: g * cpo * 9].reshape(g * cpo, 1, 3, 3)[:channels]


def pack_superpixels(x: np.ndarray, cpi: int, dtype=None) -> np.ndarray:
    """``C x H x W`` -> flat super-pixel image ``[GS][H][W][9][CPI]`` of a pointwise call
    (``GS = ceil(C / (9 CPI))``): slot ``t`` of super-pixel group ``s`` is channel group
    ``s*9 + t``, zero beyond ``C``. It is the GIHWCPI image with groups taken nine at a time
    and interleaved pixel by pixel, so the reader gets ``9 * CPI`` lanes from one place."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"pack_superpixels expects a C x H x W array, got shape {x.shape}")
    c, h, w = x.shape
    gs = math.ceil(c / (9 * cpi))
    padded = np.zeros((gs * 9 * cpi, h, w), dtype=dtype or x.dtype)
    padded[:c] = x
    return padded.reshape(gs, 9, cpi, h, w).transpose(0, 3, 4, 1, 2).reshape(-1)


def unpack_superpixels(mem: np.ndarray, channels: int, h: int, w: int, cpi: int) -> np.ndarray:
    """Flat ``[GS][H][W][9][CPI]`` (see :func:`pack_superpixels`) -> ``channels x h x w``."""
    gs = math.ceil(channels / (9 * cpi))
    x = np.asarray(mem).reshape(-1)[: gs * h * w * 9 * cpi].reshape(gs, h, w, 9, cpi)
    return x.transpose(0, 3, 4, 1, 2).reshape(gs * 9 * cpi, h, w)[:channels]


def pack_pointwise_weights(w: np.ndarray, cpi: int, cpo: int, dtype=None) -> np.ndarray:
    """``O x I`` or ``O x I x 1 x 1`` -> flat weight sets ``[GO][GS][CPO][CPI][9]`` of a
    pointwise call: tap ``t`` of lane ``c`` in set ``(o, s)`` is the weight of input channel
    ``(s*9 + t)*CPI + c``. The same bytes as :func:`pack_weights` of a 3x3 layer, so the
    loader reads them unchanged."""
    w = np.asarray(w)
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w[:, :, 0, 0]
    if w.ndim != 2:
        raise ValueError(f"pack_pointwise_weights expects an O x I or O x I x 1 x 1 array, got shape {w.shape}")
    o, i = w.shape
    go, gs = math.ceil(o / cpo), math.ceil(i / (9 * cpi))
    padded = np.zeros((go * cpo, gs * 9 * cpi), dtype=dtype or w.dtype)
    padded[:o, :i] = w
    return padded.reshape(go, cpo, gs, 9, cpi).transpose(0, 2, 1, 4, 3).reshape(-1)


def unpack_pointwise_weights(mem: np.ndarray, o: int, i: int, cpi: int, cpo: int) -> np.ndarray:
    """Flat ``[GO][GS][CPO][CPI][9]`` (see :func:`pack_pointwise_weights`) -> ``O x I x 1 x 1``."""
    go, gs = math.ceil(o / cpo), math.ceil(i / (9 * cpi))
    w = np.asarray(mem).reshape(-1)[: go * gs * cpo * cpi * 9].reshape(go, gs, cpo, cpi, 9)
    w = w.transpose(0, 2, 1, 4, 3).reshape(go * cpo, gs * 9 * cpi)
    return w[:o, :i, None, None]


def pack_channels(v: np.ndarray, lanes: int, dtype=None) -> np.ndarray:
    """Per-channel vector (bias or multipliers) zero-padded to whole groups of ``lanes``."""
    v = np.asarray(v).reshape(-1)
    out = np.zeros(math.ceil(v.size / lanes) * lanes, dtype=dtype or v.dtype)
    out[: v.size] = v
    return out
