"""The fp32 reference model (hlsinf/reference_float.py) against independent computations:
exact Python-integer rounding for products and sums (with and without subnormals), and
plain loops over np.float32 scalars for the summation order."""

import math

import numpy as np
import pytest

from hlsinf import reference_float as rf

from .gateware.lib.float_operands import SPECIALS, add_operands, dot_values, mul_operands, random_normals


# Exact rounding with Python integers ---------------------------------------------------------

def _decode(bits: int, subnormals: bool):
    """(sign, integer mantissa, exponent) with value = mantissa * 2**exponent, finite only."""
    sign, exp, frac = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    assert exp != 0xFF
    if exp == 0:
        return sign, (frac if subnormals else 0), 1 - 150
    return sign, frac | (1 << 23), exp - 150


def _round(sign: int, num: int, exp2: int, subnormals: bool) -> int:
    """The binary32 pattern of sign * num * 2**exp2 rounded to nearest even: subnormals as
    IEEE 754, or flushed to zero when the rounding at 24 bits is below 2**-126."""
    if num == 0:
        return sign << 31
    top = num.bit_length() - 1 + exp2                       # exponent of the leading bit
    lsb = (max(top, -126) if subnormals else top) - 23       # exponent of the last kept bit
    if lsb <= exp2:
        q = num << (exp2 - lsb)
    else:
        s = lsb - exp2
        q, rest, half = num >> s, num & ((1 << s) - 1), 1 << (s - 1)
        q += rest > half or (rest == half and q & 1)
    if q == 1 << 24:
        q, lsb = q >> 1, lsb + 1
    if q >= 1 << 23:
        biased, frac = lsb + 150, q - (1 << 23)
        if biased < 1:                                       # only without subnormals
            return sign << 31
    else:
        biased, frac = 0, q
    if biased >= 255:
        return (sign << 31) | 0x7F800000
    return (sign << 31) | (biased << 23) | frac


def exact_mul(a: int, b: int, subnormals: bool) -> int:
    sa, ma, ea = _decode(a, subnormals)
    sb, mb, eb = _decode(b, subnormals)
    return _round(sa ^ sb, ma * mb, ea + eb, subnormals)


def exact_add(a: int, b: int, subnormals: bool) -> int:
    sa, ma, ea = _decode(a, subnormals)
    sb, mb, eb = _decode(b, subnormals)
    low = min(ea, eb)
    total = (-1) ** sa * (ma << (ea - low)) + (-1) ** sb * (mb << (eb - low))
    if total == 0:
        return (sa & sb) << 31                              # +0 unless both are -0
    return _round(int(total < 0), abs(total), low, subnormals)


def finite(a, b):
    keep = ((a & 0x7F800000) != 0x7F800000) & ((b & 0x7F800000) != 0x7F800000)
    return a[keep], b[keep]


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
@pytest.mark.parametrize("kind", ["mul", "add"])
def test_against_exact_rounding(kind, subnormals):
    """numpy (with subnormals) and ftz_mul/ftz_add (without) equal exact integer rounding on
    finite operands of every kind the hardware tests use, and on the special values."""
    rng = np.random.default_rng(3)
    a, b = finite(*(mul_operands if kind == "mul" else add_operands)(rng, 20_000))
    pairs = np.array([(x, y) for x in SPECIALS for y in SPECIALS], np.uint32)
    sa, sb = finite(pairs[:, 0], pairs[:, 1])
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    op, exact = (rf.fmul, exact_mul) if kind == "mul" else (rf.fadd, exact_add)
    got = rf.to_bits(op(rf.from_bits(a), rf.from_bits(b), subnormals=subnormals))
    want = np.array([exact(int(x), int(y), subnormals) for x, y in zip(a, b)], np.uint32)
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, [(hex(a[k]), hex(b[k]), hex(got[k]), hex(want[k])) for k in bad[:5]]


def test_flush_to_zero_differs_from_numpy_only_near_subnormals():
    """Where flush to zero and IEEE differ: subnormal operands, subnormal results, and a
    product just below 2**-126 that numpy rounds up to it (a subnormal tie) but that is
    exact at 24 bits, hence tiny and flushed, so ftz_mul is not flush_subnormals(a * b)."""
    f = rf.from_bits
    with np.errstate(all="ignore"):
        cases = [  # (a, b, numpy a*b, ftz_mul)
            (0x00000001, 0x7F000000, 0x34800000, 0x00000000),   # subnormal operand, normal result
            (0x1C800000, 0x1C800000, 0x00000200, 0x00000000),   # 2^-70 * 2^-70 = 2^-140: subnormal result
            (0x7F800000, 0x00000001, 0x7F800000, 0x7FC00000),   # inf * subnormal: inf, or inf * 0
            (0x00800000, 0x3F7FFFFF, 0x00800000, 0x00000000),   # the tie at 2^-126
        ]
        for a, b, ieee, ftz in cases:
            assert rf.to_bits(f(a) * f(b)) == ieee
            assert rf.to_bits(rf.ftz_mul(f(a), f(b)), canonical=True) == ftz
        assert rf.to_bits(rf.flush_subnormals(f(0x00800000) * f(0x3F7FFFFF))) == 0x00800000
        # sums: subnormal operands and results
        assert rf.to_bits(rf.ftz_add(f(0x007FFFFF), f(0x00000001))) == 0x00000000
        assert rf.to_bits(rf.ftz_add(f(0x00800001), f(0x80800000))) == 0x00000000
        assert rf.to_bits(rf.ftz_add(f(0x80800001), f(0x00800000))) == 0x80000000

        # Elsewhere they agree: normal operands, and numpy results that are zero or larger
        # than 2**-126 in magnitude. At exactly 2**-126 some products are flushed.
        rng = np.random.default_rng(4)
        for kind, gen, op, ftz in (("mul", mul_operands, np.multiply, rf.ftz_mul),
                                   ("add", add_operands, np.add, rf.ftz_add)):
            a, b = (f(v) for v in gen(rng, 50_000))
            ieee, flushed = op(a, b, dtype=np.float32), ftz(a, b)
            normal = lambda x: ~np.isnan(x) & ((np.abs(x) >= np.float32(2.0 ** -126)) | (x == 0))
            boundary = np.abs(ieee) == np.float32(2.0 ** -126)
            keep = normal(a) & normal(b) & normal(ieee) & ~boundary
            assert keep.sum() > 20_000
            assert np.array_equal(rf.to_bits(flushed[keep]), rf.to_bits(ieee[keep])), kind
            assert np.count_nonzero(rf.to_bits(flushed[~keep], canonical=True)
                                    != rf.to_bits(ieee[~keep], canonical=True)) > 100
            differ_at_boundary = np.count_nonzero(boundary & normal(a) & normal(b) & (flushed == 0))
            assert (differ_at_boundary > 0) == (kind == "mul"), (kind, differ_at_boundary)


def test_to_bits_canonical():
    x = rf.from_bits(np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x3F800000, 0x80000000], np.uint32))
    assert list(rf.to_bits(x)) == [0x7FC00000, 0xFFC00001, 0x7F800001, 0x3F800000, 0x80000000]
    assert list(rf.to_bits(x, canonical=True)) == [0x7FC00000] * 3 + [0x3F800000, 0x80000000]


# Summation order ------------------------------------------------------------------------------

def tree_by_halves(values: list):
    """The pairing order of dot_tree stated another way: the first 2**(ceil(log2 n) - 1)
    values and the rest, each summed the same way, then added."""
    if len(values) == 1:
        return values[0]
    half = 1 << (math.ceil(math.log2(len(values))) - 1)
    return np.float32(tree_by_halves(values[:half]) + tree_by_halves(values[half:]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 9, 18, 27, 36, 72, 100])
def test_dot_tree_pairs_by_halves(n):
    rng = np.random.default_rng(n)
    values = rf.from_bits(dot_values(rng, (50, n)))
    with np.errstate(all="ignore"):
        want = [rf.to_bits(tree_by_halves(list(row)), canonical=True) for row in values]
        assert list(rf.to_bits(rf.dot_tree(values), canonical=True)) == want


def test_the_order_changes_the_sum():
    """Why the order is fixed: the tree, a left-to-right sum and numpy's own sum of the same
    36 values of mixed signs differ in the last bits of many sums."""
    rng = np.random.default_rng(0)
    values = rf.from_bits(random_normals(rng, 500 * 36, 120, 135).reshape(500, 36))
    tree = rf.to_bits(rf.dot_tree(values))
    sequential = values[:, 0]
    for k in range(1, 36):
        sequential = sequential + values[:, k]
    assert np.count_nonzero(tree != rf.to_bits(sequential)) > 100
    assert np.count_nonzero(tree != rf.to_bits(values.sum(axis=1, dtype=np.float32))) > 100


@pytest.mark.parametrize("subnormals", [True, False], ids=["subnormals", "ftz"])
def test_mul_partial_and_accumulate_by_loops(subnormals):
    """mul_partial: products in the order c * 9 + tap into the tree; accumulate: groups left
    to right, then the bias; both against loops over np.float32 scalars."""
    rng = np.random.default_rng(9)
    cpi, cpo, groups, pixels = 4, 3, 3, 20
    window = rf.from_bits(dot_values(rng, (groups, pixels, cpi, 9)))
    weights = rf.from_bits(dot_values(rng, (groups, cpo, cpi, 9)))
    bias = rf.from_bits(dot_values(rng, (cpo,)))
    mul = lambda x, y: rf.fmul(x, y, subnormals=subnormals)[()]
    add = lambda x, y: rf.fadd(x, y, subnormals=subnormals)[()]

    def tree(values):
        if len(values) == 1:
            return values[0]
        half = 1 << (math.ceil(math.log2(len(values))) - 1)
        return add(tree(values[:half]), tree(values[half:]))

    partials = np.stack([rf.mul_partial(window[g], weights[g], subnormals=subnormals) for g in range(groups)], axis=1)
    out = rf.accumulate(partials, bias, subnormals=subnormals)
    for p in range(pixels):
        for o in range(cpo):
            acc = None
            for g in range(groups):
                part = tree([mul(window[g, p, c, t], weights[g, o, c, t]) for c in range(cpi) for t in range(9)])
                assert rf.to_bits(part, canonical=True) == rf.to_bits(partials[p, g, o], canonical=True)
                acc = part if acc is None else add(acc, part)
            acc = add(acc, bias[o])
            assert rf.to_bits(acc, canonical=True) == rf.to_bits(out[p, o], canonical=True)
