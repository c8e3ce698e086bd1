"""binary32 operand pairs for the tests of FMul, FAdd and FDotTree: the special values, and
random pairs drawn so that every path of the units is taken often (ties, cancellation,
subnormal operands and results, overflow, the boundary at 2**-126)."""

from __future__ import annotations

import numpy as np

#: zeros, subnormals, the smallest and largest normals, values near 1, infinities and NaNs
#: (quiet, signalling, negative, with payloads)
SPECIALS = [
    0x00000000, 0x80000000,                     # +-0
    0x00000001, 0x80000001, 0x00000003,         # smallest subnormals
    0x00400000, 0x007FFFFF, 0x807FFFFF,         # 2**-127, largest subnormal
    0x00800000, 0x80800000, 0x00800001,         # smallest normal
    0x3F800000, 0xBF800000, 0x3F800001, 0x3F7FFFFF, 0x3FC00000, 0x3F000000, 0x40400000,
    0x33800000, 0x34000000, 0x1F800000, 0x5F800000,
    0x7F000000, 0x7F7FFFFF, 0xFF7FFFFF,         # 2**127, largest normal
    0x7F800000, 0xFF800000,                     # +-inf
    0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FBFFFFF,   # NaNs (quiet, negative, signalling)
]

_U32 = np.uint32


def pack(sign, exp, frac) -> np.ndarray:
    """Bit patterns from sign (0/1), biased exponent (0..255) and fraction (23 bits)."""
    sign, exp, frac = (np.asarray(v, np.int64) for v in (sign, exp, frac))
    return ((sign << 31) | (exp << 23) | (frac & 0x7FFFFF)).astype(_U32)


def _fracs(rng, n) -> np.ndarray:
    """Random fractions, half of them with a random number of trailing zeros (exact products
    and sums, and ties, become likely)."""
    frac = rng.integers(0, 1 << 23, n)
    zeros = rng.integers(0, 24, n)
    short = frac & ~((1 << zeros) - 1)
    return np.where(rng.random(n) < 0.5, short, frac)


def random_normals(rng, n, exp_lo=1, exp_hi=254) -> np.ndarray:
    return pack(rng.integers(0, 2, n), rng.integers(exp_lo, exp_hi + 1, n), _fracs(rng, n))


def _near(rng, bits, spread=3) -> np.ndarray:
    """``bits`` moved by a few units in the last place (staying finite and non-negative in
    magnitude)."""
    magnitude = (bits & 0x7FFFFFFF).astype(np.int64) + rng.integers(-spread, spread + 1, len(bits))
    magnitude = np.clip(magnitude, 0, 0x7F7FFFFF)
    return ((bits & 0x80000000) | magnitude.astype(_U32)).astype(_U32)


def mul_operands(rng, n) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs for a multiplier, an equal share of each kind, shuffled."""
    k = -(-n // 8)
    parts = []
    # any bit pattern (NaN, inf, zero and subnormal operands now and then)
    parts.append((rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(_U32),
                  rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(_U32)))
    # normal operands over the whole exponent range
    parts.append((random_normals(rng, k), random_normals(rng, k)))
    # products around 1 (ties at full precision)
    parts.append((random_normals(rng, k, 120, 134), random_normals(rng, k, 120, 134)))
    # subnormal and underflowing results: exponent fields summing to 94..134 (products
    # from 2**-160 to 2**-120), then overflowing ones: sums 378..384 (2**124 to 2**130)
    for lo, hi in ((94, 134), (378, 384)):
        total = rng.integers(lo, hi + 1, k)
        first = np.maximum(total - 254, 1)
        last = np.minimum(total - 1, 254)
        ea = first + (rng.random(k) * (last - first + 1)).astype(np.int64)
        parts.append((pack(rng.integers(0, 2, k), ea, _fracs(rng, k)),
                      pack(rng.integers(0, 2, k), total - ea, _fracs(rng, k))))
    # one subnormal operand, results from subnormal to normal
    sub = pack(rng.integers(0, 2, k), 0, np.maximum(_fracs(rng, k) >> rng.integers(0, 23, k), 1))
    parts.append((sub, random_normals(rng, k, 100, 254)))
    # products within a few units of 2**-126 and of the largest normal
    for target in (2.0 ** -126, 3.4028234663852886e38):
        a = random_normals(rng, k, 64, 190)
        with np.errstate(all="ignore"):
            b = (np.float32(target) / a.view(np.float32)).astype(np.float32).view(_U32)
        parts.append((a, _near(rng, b)))
    a = np.concatenate([p[0] for p in parts])[:n]
    b = np.concatenate([p[1] for p in parts])[:n]
    order = rng.permutation(len(a))
    swap = rng.random(len(a)) < 0.5
    a, b = a[order], b[order]
    return np.where(swap, b, a).astype(_U32), np.where(swap, a, b).astype(_U32)


def add_operands(rng, n) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs for an adder, an equal share of each kind, shuffled."""
    k = -(-n // 7)
    parts = []
    parts.append((rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(_U32),
                  rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(_U32)))
    parts.append((random_normals(rng, k), random_normals(rng, k)))
    # exponents at most 30 apart: every alignment shift, guard, round and sticky bits
    ea = rng.integers(0, 255, k)
    eb = np.clip(ea + rng.integers(-30, 31, k), 0, 254)
    parts.append((pack(rng.integers(0, 2, k), ea, _fracs(rng, k)), pack(rng.integers(0, 2, k), eb, _fracs(rng, k))))
    # (near) cancellation: b is -a moved by a few units in the last place
    a = random_normals(rng, k)
    parts.append((a, _near(rng, a ^ _U32(0x80000000), spread=40)))
    # subnormals and the smallest normals, either sign
    parts.append((random_normals(rng, k, 0, 2), random_normals(rng, k, 0, 2)))
    # the largest exponents (overflow when rounding or carrying)
    parts.append((random_normals(rng, k, 250, 254), random_normals(rng, k, 240, 254)))
    # sums near 2**-126 from normal operands
    a = random_normals(rng, k, 1, 8)
    parts.append((a, _near(rng, (a ^ _U32(0x80000000)), spread=1 << 23)))
    a = np.concatenate([p[0] for p in parts])[:n]
    b = np.concatenate([p[1] for p in parts])[:n]
    order = rng.permutation(len(a))
    return a[order], b[order]


def dot_values(rng, shape) -> np.ndarray:
    """Values for adder trees: mostly of similar magnitude with mixed signs (cancellation),
    some spread over a wide range, a few zeros, subnormals, infinities and NaNs."""
    n = int(np.prod(shape))
    values = pack(rng.integers(0, 2, n), rng.integers(118, 136, n), _fracs(rng, n))
    wide = rng.random(n) < 0.2
    values = np.where(wide, random_normals(rng, n, 60, 200), values)
    special = rng.random(n) < 0.01
    values = np.where(special, np.asarray(SPECIALS, _U32)[rng.integers(0, len(SPECIALS), n)], values)
    return values.astype(_U32).reshape(shape)
