"""Design-time parameters of one kernel build, validated when constructed.

A :class:`KernelConfig` is the single source of truth the gateware, the reference model,
the build descriptor and the host planner all read, so a bad value is rejected here,
with the parameter, the value and the allowed range, before anything is generated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["ConfigError", "KernelConfig", "MAX_PAD", "POST_OPS", "U200_ONCHIP_RAM_BITS"]

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
POST_OPS = ("leaky_relu", "bn")


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
        for name in ("cpi", "cpo"):
            v = getattr(self, name)
            _check(name, v, "a power of two from 1 to 64", isinstance(v, int) and v in _POWERS_OF_TWO)
        for name in ("act_bits", "weight_bits"):
            v = getattr(self, name)
            _check(name, v, "8 or 16", v in (8, 16))
        _check("bias_bits", self.bias_bits, "16 or 32", self.bias_bits in (16, 32))
        _check("mult_bits", self.mult_bits, "1 to 24", isinstance(self.mult_bits, int) and 1 <= self.mult_bits <= 24)
        _check("max_shift", self.max_shift, "0 to 47", isinstance(self.max_shift, int) and 0 <= self.max_shift <= 47)
        # 48 bits keeps every accumulator exact in float64 (the vectorised reference) and
        # within a DSP48E2's 48-bit post-adder.
        _check("acc_bits", self.acc_bits, f"{max(16, self.bias_bits)} to 48",
               isinstance(self.acc_bits, int) and max(16, self.bias_bits) <= self.acc_bits <= 48)
        _check("imax", self.imax, "1 to 65536", isinstance(self.imax, int) and 1 <= self.imax <= 65536)
        _check("wmax", self.wmax, "4 to 4096", isinstance(self.wmax, int) and 4 <= self.wmax <= 4096)
        _check("hmax", self.hmax, "2 to 4096", isinstance(self.hmax, int) and 2 <= self.hmax <= 4096)

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
