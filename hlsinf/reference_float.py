"""Bit-exact numpy model of the fp32 datapath: products, the adder tree and the accumulation.

The fp32 units (``hlsinf/gateware/lib/float32.py``) round every product and every sum
to binary32 (nearest, ties to even), which is what numpy float32 does for ``a * b`` and
``a + b``. Float addition is not associative, so the model also fixes the order of the
sums; docs/numbers.md ("fp32") states it in words:

1. the ``CPI * 9`` products of one output value and one input group, indexed
   ``c * 9 + ky * 3 + kx`` (the order of the integer kernel's adder tree) are summed by
   :func:`dot_tree`: at each level neighbours ``(0, 1), (2, 3), ...`` are added and an odd
   last value goes up unchanged;
2. the partial sums of the input groups are accumulated left to right, group 0 first
   (:func:`accumulate`);
3. the bias is added last.

``subnormals=False`` selects the flush-to-zero arithmetic of the units built that way
(:func:`ftz_mul`, :func:`ftz_add`); by default subnormals are kept, as numpy keeps them.
NaN results of the hardware are always ``0x7FC00000``; numpy may return another NaN, so
compare through :func:`to_bits` with ``canonical=True`` (or compare NaN as NaN).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CANONICAL_NAN", "to_bits", "from_bits", "fmul", "fadd", "ftz_mul", "ftz_add", "flush_subnormals",
    "dot_tree", "mul_partial", "accumulate",
]

#: The NaN the hardware returns.
CANONICAL_NAN = 0x7FC00000

_MIN_NORMAL = np.float32(2.0 ** -126)


def to_bits(x, *, canonical: bool = False) -> np.ndarray:
    """The binary32 bit patterns of ``x`` as uint32; with ``canonical``, every NaN is ``0x7FC00000``."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32).copy()
    if canonical:
        bits[np.isnan(x)] = CANONICAL_NAN
    return bits


def from_bits(bits) -> np.ndarray:
    """float32 values from uint32 bit patterns."""
    return np.asarray(bits, np.uint32).view(np.float32)


def flush_subnormals(x) -> np.ndarray:
    """Subnormals replaced by a zero of their sign (x86 DAZ on operands, FTZ on results)."""
    x = np.asarray(x, np.float32)
    return np.where((x != 0) & (np.abs(x) < _MIN_NORMAL), np.copysign(np.float32(0), x), x).astype(np.float32)


def ftz_mul(a, b) -> np.ndarray:
    """``a * b`` with subnormal operands read as zeros and results flushed to zero.

    A result is flushed when the product rounded to 24 bits with an unbounded exponent is
    below ``2**-126`` in magnitude (IEEE tininess after rounding, as x86 FTZ decides). That
    is not ``flush_subnormals(a * b)``: a product just below ``2**-126`` that rounds up to
    it as a subnormal (numpy) can round down at 24 bits, and is then flushed. The exact
    product (float64) is scaled by ``2**150`` where small, so that float32 rounding of it
    is 24-bit rounding.
    """
    a, b = flush_subnormals(a), flush_subnormals(b)
    with np.errstate(all="ignore"):
        exact = a.astype(np.float64) * b.astype(np.float64)     # exact: 48 bits
        small = np.abs(exact) < 2.0 ** -120
        scaled = (np.where(small, exact, 0.0) * 2.0 ** 150).astype(np.float32)   # 24-bit rounding
        tiny = np.abs(scaled) < np.float32(2.0 ** 24)                            # below 2**-126
        small_result = np.where(tiny, np.copysign(np.float32(0), scaled),
                                (scaled.astype(np.float64) * 2.0 ** -150).astype(np.float32))
        return np.where(small, small_result, a * b).astype(np.float32)


def ftz_add(a, b) -> np.ndarray:
    """``a + b`` with subnormal operands read as zeros and results flushed to zero.

    A sum below ``2**-126`` of operands that are normal or zero is exact, so flushing
    numpy's result is the same as flushing after rounding at 24 bits.
    """
    a, b = flush_subnormals(a), flush_subnormals(b)
    with np.errstate(all="ignore"):
        return flush_subnormals(a + b)


def fmul(a, b, *, subnormals: bool = True) -> np.ndarray:
    """The product :class:`~hlsinf.gateware.lib.float32.FMul` computes, as float32."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not subnormals:
        return ftz_mul(a, b)
    with np.errstate(all="ignore"):
        return np.multiply(a, b, dtype=np.float32)


def fadd(a, b, *, subnormals: bool = True) -> np.ndarray:
    """The sum :class:`~hlsinf.gateware.lib.float32.FAdd` computes, as float32."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not subnormals:
        return ftz_add(a, b)
    with np.errstate(all="ignore"):
        return np.add(a, b, dtype=np.float32)


def dot_tree(values, *, subnormals: bool = True) -> np.ndarray:
    """Sum of ``values[..., 0:n]`` by the fixed adder tree of :class:`FDotTree`.

    Level by level: ``values[2k] + values[2k+1]``, each rounded to float32, and an odd last
    value passed up unchanged, until one value is left. ``n = 1`` returns the value.
    """
    level = [v for v in np.moveaxis(np.asarray(values, np.float32), -1, 0)]
    if not level:
        raise ValueError("dot_tree: no values")
    while len(level) > 1:
        sums = [fadd(level[k], level[k + 1], subnormals=subnormals) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            sums.append(level[-1])
        level = sums
    return np.asarray(level[0], np.float32)


def mul_partial(window, weights, *, subnormals: bool = True) -> np.ndarray:
    """The fp32 ``mul`` stage: per output lane, the tree sum of the ``CPI x 9`` rounded products.

    ``window`` is ``... x CPI x 9``, ``weights`` is ``CPO x CPI x 9`` (as in
    ``reference.mul_partial``); returns ``... x CPO`` float32. Product ``c * 9 + tap`` of a
    lane is leaf ``c * 9 + tap`` of :func:`dot_tree`.
    """
    window, weights = np.asarray(window, np.float32), np.asarray(weights, np.float32)
    cpo, cpi, taps = weights.shape
    products = fmul(window[..., None, :, :], weights, subnormals=subnormals)     # ... x CPO x CPI x 9
    return dot_tree(products.reshape(products.shape[:-2] + (cpi * taps,)), subnormals=subnormals)


def accumulate(partials, bias, *, subnormals: bool = True) -> np.ndarray:
    """Partial sums of the input groups, ``partials[..., g, :]`` for g = 0, 1, ..., added left
    to right (``((p0 + p1) + p2) + ...``), then the bias: ``... x GI x CPO`` -> ``... x CPO``."""
    partials = np.asarray(partials, np.float32)
    acc = partials[..., 0, :]
    for g in range(1, partials.shape[-2]):
        acc = fadd(acc, partials[..., g, :], subnormals=subnormals)
    return fadd(acc, np.asarray(bias, np.float32), subnormals=subnormals)
