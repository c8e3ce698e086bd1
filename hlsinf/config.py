"""Design-time parameters of one kernel build, validated when constructed.

A :class:`KernelConfig` is the single source of truth the gateware, the reference model,
the build descriptor and the host planner all read, so a bad value is rejected here,
with the parameter, the value and the allowed range, before anything is generated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["ConfigError", "KernelConfig", "MAX_PAD", "POST_OPS", "U200_ONCHIP_RAM_BITS", "NUMBER_FORMATS",
           "ROUNDING_MODES", "OVERFLOW_MODES", "parse_format"]

#: Block RAM plus UltraRAM of the Alveo U200 (2,160 BRAM36 of 36 Kib, 960 URAM of 288 Kib).
U200_ONCHIP_RAM_BITS = 2160 * 36 * 1024 + 960 * 288 * 1024

#: Share of the on-chip RAM the accumulation buffer may take; the rest is left for line
#: buffers, FIFOs, weight buffers and the input cache.
ACCUMULATOR_RAM_SHARE = 0.5

_POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64)

#: Largest zero padding on any side of a call (run-time argument range).
MAX_PAD = 2

#: Element-wise post-operations a kernel can be built with (``KernelConfig.post_ops``), in
#: the order of issue 10. They run on the requantised activations, between the relu stage
#: and the pool stage, in the order the configuration lists them (docs/stages/post.md).
POST_OPS = ("leaky_relu", "bn", "residual_add", "table")

#: Number formats of the datapath (``KernelConfig.number_format``, docs/numbers.md):
#: ``int``: integers of act_bits / weight_bits with a per-layer scale handled by the host;
#: ``fixed``: fixed<W,I> two's complement (W = act_bits = weight_bits, I = int_bits), the
#: integer datapath with a fixed shift of W - I fractional bits; ``fp32``: IEEE-754 binary32.
NUMBER_FORMATS = ("int", "fixed", "fp32")
#: Requantisation rounding (integer and fixed formats): ``round`` adds half an LSB before the
#: right shift (round half up, HLSinf's AP_RND), ``trunc`` drops the bits (floor, AP_TRN).
ROUNDING_MODES = ("round", "trunc")
#: Requantisation overflow: ``sat`` clamps to the output range (AP_SAT), ``wrap`` keeps the
#: low act_bits bits as two's complement (AP_WRAP).
OVERFLOW_MODES = ("sat", "wrap")

_INT_WIDTHS = (4, 8, 16)


class ConfigError(ValueError):
    """A design-time parameter is out of range; the message names it."""


def _check(name: str, value, allowed: str, ok: bool):
    if not ok:
        raise ConfigError(f"KernelConfig.{name} = {value!r} is out of range: allowed {allowed}")


@dataclass(frozen=True)
class KernelConfig:
    """Every design-time parameter of the accelerator.

    Widths are in bits. Weights, bias, accumulator and the requantisation multiplier
    have fixed signedness (signed, signed, signed, unsigned); activations are uint8 by
    default (``act_signed=False``) or int8. Output activations use the input format, so
    layers chain without conversion.
    """

    cpi: int = 8                 #: input channels per cycle (lanes of an input pixel)
    cpo: int = 8                 #: output channels per cycle (lanes of an output pixel)
    act_bits: int = 8            #: activation width
    act_signed: bool = False     #: int8 activations if True, uint8 if False
    weight_bits: int = 8         #: weight width (signed)
    bias_bits: int = 32          #: bias width (signed)
    acc_bits: int = 32           #: accumulator width (signed); the bias add saturates to it
    mult_bits: int = 16          #: per-output-channel requantisation multiplier (unsigned)
    max_shift: int = 31          #: largest requantisation shift
    imax: int = 512              #: largest number of input channels of one call
    wmax: int = 256              #: largest input width held on chip (line buffers)
    hmax: int = 256              #: largest number of input rows of one call
    with_relu: bool = True       #: ReLU (clip at 0) built in
    with_multiplier: bool = True #: per-output-channel multiplier built in (else shift only)
    with_maxpool: bool = True    #: 2x2 stride-2 max pooling built in
    with_avgpool: bool = True    #: 2x2 stride-2 average pooling built in
    post_ops: tuple[str, ...] = ()  #: element-wise post-operations between relu and pool, in order
    number_format: str = "int"   #: datapath numbers: int, fixed (fixed<W,I>) or fp32 (see --format)
    int_bits: int = 0            #: fixed format only: integer bits I of fixed<W,I>, W = act_bits
    rounding: str = "round"      #: requantisation rounding of int/fixed: round (half up) or trunc (floor)
    overflow: str = "sat"        #: requantisation overflow of int/fixed: sat (saturate) or wrap
    fp32_subnormals: bool = True #: fp32 only: keep subnormals (IEEE, as numpy) or flush them to zero
    max_upsize: int = 1          #: largest nearest-upsize factor after pooling (1: not built, 2 or 4)
    with_depthwise: bool = False #: depthwise 3x3 calls (run-time register depthwise) built in; needs cpi == cpo
    with_acc_split: bool = False #: acc_hold/acc_resume calls built in: more than imax input channels over several calls
    with_pointwise: bool = False #: full-rate 1x1 calls (run-time register pointwise, super-pixel input) built in

    def __post_init__(self):
        post_ops = self.post_ops
        if isinstance(post_ops, str):
            post_ops = tuple(p for p in post_ops.split(",") if p)
        if isinstance(post_ops, list):
            post_ops = tuple(post_ops)
        object.__setattr__(self, "post_ops", post_ops)
        _check("post_ops", post_ops, f"a tuple of names from {POST_OPS}",
               isinstance(post_ops, tuple) and all(isinstance(p, str) for p in post_ops))
        for p in post_ops:
            _check("post_ops", post_ops, f"names from {POST_OPS} ({p!r} is not one)", p in POST_OPS)
        _check("post_ops", post_ops, "each name at most once", len(set(post_ops)) == len(post_ops))
        if "table" in post_ops:
            # 2**act_bits entries in CPO LUTRAM copies: 256 bytes each at 8 bits, 128 KiB at 16.
            _check("post_ops", post_ops, f"'table' only with act_bits = 8 (a 2**act_bits-entry lookup table; "
                   f"act_bits is {self.act_bits})", self.act_bits == 8)
        for name in ("cpi", "cpo"):
            v = getattr(self, name)
            _check(name, v, "a power of two from 1 to 64", isinstance(v, int) and v in _POWERS_OF_TWO)
        _check("number_format", self.number_format, f"one of {NUMBER_FORMATS}", self.number_format in NUMBER_FORMATS)
        _check("max_upsize", self.max_upsize, "1 (not built), 2 or 4", self.max_upsize in (1, 2, 4))
        _check("rounding", self.rounding, f"one of {ROUNDING_MODES}", self.rounding in ROUNDING_MODES)
        _check("overflow", self.overflow, f"one of {OVERFLOW_MODES}", self.overflow in OVERFLOW_MODES)
        if self.is_float:
            for name in ("act_bits", "weight_bits", "bias_bits", "acc_bits"):
                _check(name, getattr(self, name), "32 with number_format='fp32' (KernelConfig.from_format('fp32'))",
                       getattr(self, name) == 32)
            _check("with_multiplier", self.with_multiplier, "False with number_format='fp32' (no requantisation)",
                   not self.with_multiplier)
            _check("int_bits", self.int_bits, "0 with number_format='fp32'", self.int_bits == 0)
        else:
            for name in ("act_bits", "weight_bits"):
                v = getattr(self, name)
                _check(name, v, "4, 8 or 16", v in _INT_WIDTHS)
            _check("bias_bits", self.bias_bits, "16 or 32", self.bias_bits in (16, 32))
        if self.with_depthwise:
            # Output group g reads input group g lane for lane: the groups must be the same channels.
            _check("with_depthwise", self.with_depthwise, f"False unless cpi == cpo (cpi = {self.cpi}, cpo = {self.cpo})",
                   self.cpi == self.cpo)
            _check("with_depthwise", self.with_depthwise, "False with number_format='fp32' (not built for fp32 yet)",
                   not self.is_float)
        if self.with_acc_split:
            _check("with_acc_split", self.with_acc_split, "False with number_format='fp32' (not built for fp32 yet)",
                   not self.is_float)
        if self.with_pointwise:
            # A pointwise call feeds mul 9 channel groups per cycle (docs/kernel.md, "Pointwise calls").
            _check("with_pointwise", self.with_pointwise, "False with number_format='fp32' (not built for fp32 yet)",
                   not self.is_float)
            _check("with_pointwise", self.with_pointwise, "False with 4-bit activations or weights (not built yet)",
                   4 not in (self.act_bits, self.weight_bits))
        if self.number_format == "fixed":
            _check("act_signed", self.act_signed, "True with number_format='fixed' (fixed<W,I> is signed)",
                   self.act_signed)
            _check("weight_bits", self.weight_bits, f"equal to act_bits ({self.act_bits}) with number_format='fixed'",
                   self.weight_bits == self.act_bits)
            _check("int_bits", self.int_bits, f"0 to act_bits ({self.act_bits})",
                   isinstance(self.int_bits, int) and 0 <= self.int_bits <= self.act_bits)
        elif self.number_format == "int":
            _check("int_bits", self.int_bits, "0 unless number_format='fixed'", self.int_bits == 0)
        if self.act_bits == 4 or self.weight_bits == 4:
            # Memory images pack lanes into whole bytes: a pixel of 4-bit lanes needs an even lane count.
            for name in ("cpi", "cpo"):
                _check(name, getattr(self, name), "2 or more with 4-bit activations or weights",
                       getattr(self, name) >= 2)
        _check("mult_bits", self.mult_bits, "1 to 24", isinstance(self.mult_bits, int) and 1 <= self.mult_bits <= 24)
        _check("max_shift", self.max_shift, "0 to 47", isinstance(self.max_shift, int) and 0 <= self.max_shift <= 47)
        # 48 bits keeps every accumulator exact in float64 (the vectorised reference) and
        # within a DSP48E2's 48-bit post-adder.
        _check("acc_bits", self.acc_bits, f"{max(16, self.bias_bits)} to 48",
               isinstance(self.acc_bits, int) and max(16, self.bias_bits) <= self.acc_bits <= 48)
        _check("imax", self.imax, "1 to 65536", isinstance(self.imax, int) and 1 <= self.imax <= 65536)
        _check("wmax", self.wmax, "4 to 4096", isinstance(self.wmax, int) and 4 <= self.wmax <= 4096)
        _check("hmax", self.hmax, "2 to 4096", isinstance(self.hmax, int) and 2 <= self.hmax <= 4096)

        if self.is_float:
            lo, hi = self.acc_range     # float sums have no integer range to check
        else:
            lo, hi = self.sum_range
        amin, amax = self.acc_range
        _check("acc_bits", self.acc_bits,
               f">= {self.bits_needed(lo, hi)} (the sum of {self.max_products} products of "
               f"{'int' if self.act_signed else 'uint'}{self.act_bits} x int{self.weight_bits} "
               f"for imax={self.imax} spans [{lo}, {hi}])",
               amin <= lo and hi <= amax)

        buffer_bits = self.max_frame_pixels * self.cpo * self.acc_bits
        budget = int(U200_ONCHIP_RAM_BITS * ACCUMULATOR_RAM_SHARE)
        if buffer_bits > budget:
            raise ConfigError(
                f"KernelConfig.wmax * hmax * cpo = {self.wmax} * {self.hmax} * {self.cpo} is out of range: "
                f"its {self.acc_bits}-bit accumulation buffer needs {buffer_bits} bits, more than the "
                f"{budget} bits ({ACCUMULATOR_RAM_SHARE:.0%} of the U200's BRAM and URAM) allowed")

    # Number formats -----------------------------------------------------------------

    @property
    def is_float(self) -> bool:
        """True for the fp32 datapath."""
        return self.number_format == "fp32"

    @property
    def frac_bits(self) -> int:
        """Fractional bits F = W - I of a fixed<W,I> activation or weight (0 for int and fp32)."""
        return self.act_bits - self.int_bits if self.number_format == "fixed" else 0

    @property
    def format_name(self) -> str:
        """The ``--format`` spelling of this datapath: int8, uint8, int4, fixed<8,4>, fp32, ..."""
        if self.is_float:
            return "fp32"
        if self.number_format == "fixed":
            return f"fixed<{self.act_bits},{self.int_bits}>"
        sign = "int" if self.act_signed else "uint"
        name = f"{sign}{self.act_bits}"
        return name if self.weight_bits == self.act_bits else f"{name}xint{self.weight_bits}"

    @classmethod
    def from_format(cls, fmt: str, **overrides) -> "KernelConfig":
        """A config for the ``--format`` name ``fmt`` (see :func:`parse_format`); ``overrides``
        set any other field (or override one the format implies)."""
        values = parse_format(fmt)
        values.update(overrides)
        if values.get("number_format", "int") != "fp32" and "acc_bits" not in overrides:
            values["acc_bits"] = _auto_acc_bits(values)
        return cls(**values)

    # Number ranges ------------------------------------------------------------------

    @property
    def act_range(self) -> tuple[int, int]:
        """Smallest and largest activation value."""
        if self.act_signed:
            return -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1
        return 0, (1 << self.act_bits) - 1

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1

    @property
    def acc_range(self) -> tuple[int, int]:
        return -(1 << (self.acc_bits - 1)), (1 << (self.acc_bits - 1)) - 1

    @property
    def mult_range(self) -> tuple[int, int]:
        return 0, (1 << self.mult_bits) - 1

    @property
    def product_range(self) -> tuple[int, int]:
        """Range of one activation x weight product."""
        corners = [a * w for a in self.act_range for w in self.weight_range]
        return min(corners), max(corners)

    @property
    def max_products(self) -> int:
        """Products summed into one output before the bias: imax (in whole groups) x 9."""
        return math.ceil(self.imax / self.cpi) * self.cpi * 9

    @property
    def sum_range(self) -> tuple[int, int]:
        plo, phi = self.product_range
        return plo * self.max_products, phi * self.max_products

    @staticmethod
    def bits_needed(lo: int, hi: int) -> int:
        """Bits of the narrowest signed integer holding [lo, hi]."""
        return max(lo.bit_length() if lo >= 0 else (-lo - 1).bit_length(), hi.bit_length()) + 1

    @property
    def max_padded_rows(self) -> int:
        return self.hmax + 2 * MAX_PAD

    @property
    def max_padded_cols(self) -> int:
        return self.wmax + 2 * MAX_PAD

    @property
    def max_frame_pixels(self) -> int:
        """Most convolution outputs of one frame: the depth of the accumulation buffer."""
        return (self.max_padded_rows - 2) * (self.max_padded_cols - 2)

    @property
    def partial_bits(self) -> int:
        """Width of one mul-stage output lane: the sum of CPI x 9 products."""
        plo, phi = self.product_range
        n = self.cpi * 9
        return self.bits_needed(plo * n, phi * n)

    # Plain-data views ----------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON data (``post_ops`` as a list), equal to what a descriptor reads back."""
        data = asdict(self)
        data["post_ops"] = list(self.post_ops)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "KernelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"KernelConfig: unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


_FIXED_RE = __import__("re").compile(r"^fixed<\s*(\d+)\s*,\s*(-?\d+)\s*>$")


def parse_format(fmt: str) -> dict:
    """The KernelConfig fields a ``--format`` name implies.

    ``int8`` / ``int4`` / ``int16``: signed activations and weights of that width; ``uint8``
    (``uint4``, ``uint16``): unsigned activations, signed weights; ``fixed<W,I>``: the fixed
    format with W total and I integer bits; ``fp32``: IEEE-754 binary32 throughout.
    """
    if not isinstance(fmt, str):
        raise ConfigError(f"format {fmt!r} is not a name: allowed int8, uint8, int4, uint4, int16, uint16, "
                          f"fixed<W,I> or fp32")
    text = fmt.strip().lower()
    if text == "fp32":
        return dict(number_format="fp32", act_bits=32, weight_bits=32, bias_bits=32, acc_bits=32,
                    act_signed=True, with_multiplier=False)
    match = _FIXED_RE.match(text)
    if match:
        w, i = int(match.group(1)), int(match.group(2))
        return dict(number_format="fixed", act_bits=w, weight_bits=w, act_signed=True, int_bits=i)
    for sign, signed in (("uint", False), ("int", True)):
        if text.startswith(sign) and text[len(sign):].isdigit():
            bits = int(text[len(sign):])
            return dict(number_format="int", act_bits=bits, weight_bits=bits, act_signed=signed)
    raise ConfigError(f"format {fmt!r} is not known: allowed int8, uint8, int4, uint4, int16, uint16, "
                      f"fixed<W,I> (e.g. fixed<8,4>) or fp32")


def _auto_acc_bits(values: dict) -> int:
    """The accumulator width a format needs: 32 bits, or more where imax products overflow it."""
    probe = dict(values, acc_bits=48)
    try:
        cfg = KernelConfig(**probe)
    except ConfigError:
        return values.get("acc_bits", 32)
    lo, hi = cfg.sum_range
    return min(48, max(32, KernelConfig.bits_needed(lo, hi), cfg.bias_bits))
