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
NaN results of the hardware are always ``0x7FC00000``, and so are those of :func:`fmul` and
:func:`fadd` (numpy may return another NaN, with the sign set: :func:`canonical_nan`), since
ReLU, clip, max pooling and leaky ReLU look at the sign bit of what the units return. NaN
inputs pass through ReLU/clip/pooling unchanged only where no unit touches them; compare
through :func:`to_bits` with ``canonical=True`` where that does not matter.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CANONICAL_NAN", "canonical_nan", "to_bits", "from_bits", "fmul", "fadd", "ftz_mul", "ftz_add", "flush_subnormals",
    "dot_tree", "mul_partial", "accumulate", "float_bits", "bits_float", "relu", "clip", "max_key",
    "pool2x2", "leaky_relu", "batch_norm", "pack_bn", "unpack_bn", "post_ops", "kernel_call", "memory_image",
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


_NAN = np.asarray(CANONICAL_NAN, np.uint32).view(np.float32)


def canonical_nan(x) -> np.ndarray:
    """``x`` with every NaN replaced by ``0x7FC00000``, the NaN the units return. numpy keeps
    an operand's NaN sign and payload; what follows a unit (ReLU, clip, max pooling, leaky
    ReLU) looks at the sign bit, so the model must carry the hardware's NaN."""
    x = np.asarray(x, np.float32)
    return np.where(np.isnan(x), _NAN, x).astype(np.float32)


def fmul(a, b, *, subnormals: bool = True) -> np.ndarray:
    """The product :class:`~hlsinf.gateware.lib.float32.FMul` computes, as float32 (a NaN
    result is ``0x7FC00000``)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not subnormals:
        return canonical_nan(ftz_mul(a, b))
    with np.errstate(all="ignore"):
        return canonical_nan(np.multiply(a, b, dtype=np.float32))


def fadd(a, b, *, subnormals: bool = True) -> np.ndarray:
    """The sum :class:`~hlsinf.gateware.lib.float32.FAdd` computes, as float32 (a NaN result
    is ``0x7FC00000``)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not subnormals:
        return canonical_nan(ftz_add(a, b))
    with np.errstate(all="ignore"):
        return canonical_nan(np.add(a, b, dtype=np.float32))


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



# The rest of the call: relu, clip, pool and the whole call ---------------------------------------

def float_bits(value) -> int:
    """The binary32 bits of ``value`` as a signed 32-bit integer: how a float register
    argument (``clip_lo``, ``clip_hi`` of an fp32 call) is written to its 32-bit register."""
    return int(np.asarray(value, np.float32).reshape(()).view(np.int32))


def bits_float(bits: int) -> np.float32:
    """The float32 a signed or unsigned 32-bit register word stands for (inverse of :func:`float_bits`)."""
    return np.asarray(int(bits) & 0xFFFFFFFF, np.uint32).view(np.float32)[()]


def max_key(x) -> np.ndarray:
    """A signed integer that orders binary32 values as the hardware compares them: by value,
    with ``-0 < +0`` and every NaN with the sign bit clear above ``+inf`` (the hardware's
    NaN, ``0x7FC00000``, is such a NaN). It is the bit pattern with the magnitude bits
    inverted when the sign is set: one comparator of 32-bit integers, no float unit."""
    bits = to_bits(x).astype(np.int64)
    signed = np.where(bits >= 1 << 31, bits - (1 << 32), bits)
    return np.where(signed < 0, signed ^ 0x7FFFFFFF, signed)


def relu(y) -> np.ndarray:
    """fp32 ReLU: a value with the sign bit set (``-0`` included) becomes ``+0``."""
    y = np.asarray(y, np.float32)
    return np.where(np.signbit(y), np.float32(0), y).astype(np.float32)


def clip(y, lo_bits: int | None, hi_bits: int | None) -> np.ndarray:
    """Clamp to ``[lo, hi]`` in the order of :func:`max_key` (bounds given as register bits;
    None: no bound). A NaN is above every bound, so an upper bound catches it."""
    y = np.asarray(y, np.float32)
    key = max_key(y)
    if lo_bits is not None:
        lo = bits_float(lo_bits)
        y = np.where(key < max_key(lo), lo, y)
        key = max_key(y)
    if hi_bits is not None:
        hi = bits_float(hi_bits)
        y = np.where(key > max_key(hi), hi, y)
    return np.asarray(y, np.float32)


def pool2x2(y, mode: int, *, subnormals: bool = True) -> np.ndarray:
    """fp32 2x2 stride-2 pooling of ``Ho x Wo x lanes`` (odd edges dropped).

    Max: the largest by :func:`max_key`, of ``(y00, y01)`` then ``(y10, y11)`` then the two
    winners. Average: ``((y00 + y01) + (y10 + y11)) * 0.25``, each step rounded to float32.
    """
    from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE, CallError
    y = np.asarray(y, np.float32)
    if mode == POOL_NONE:
        return y
    h, w = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
    quads = y[:h, :w].reshape(h // 2, 2, w // 2, 2, *y.shape[2:])
    y00, y01, y10, y11 = quads[:, 0, :, 0], quads[:, 0, :, 1], quads[:, 1, :, 0], quads[:, 1, :, 1]
    if mode == POOL_MAX:
        def larger(a, b):
            return np.where(max_key(b) > max_key(a), b, a).astype(np.float32)
        return larger(larger(y00, y01), larger(y10, y11))
    if mode == POOL_AVG:
        top = fadd(y00, y01, subnormals=subnormals)
        bottom = fadd(y10, y11, subnormals=subnormals)
        return fmul(fadd(top, bottom, subnormals=subnormals), np.float32(0.25), subnormals=subnormals)
    raise CallError(f"kernel argument pool = {mode!r} is out of range: 0 (none), 1 (max) or 2 (avg)")


def leaky_relu(y, alpha_bits: int, *, subnormals: bool = True) -> np.ndarray:
    """fp32 post-op ``leaky_relu``: ``y`` where the sign bit is clear, else ``fmul(y, alpha)``
    with ``alpha`` the binary32 value of the 32-bit register word ``alpha_bits``. The test is
    the sign bit, so ``-0`` and a NaN with the sign set go through the multiplier (giving
    ``-0 * alpha`` and the canonical NaN) and a positive subnormal passes unflushed."""
    y = np.asarray(y, np.float32)
    return np.where(np.signbit(y), fmul(y, bits_float(alpha_bits), subnormals=subnormals), y).astype(np.float32)


def batch_norm(y, m, b, *, subnormals: bool = True) -> np.ndarray:
    """fp32 post-op ``bn``: ``fadd(fmul(y, m), b)`` per channel (channels last), the product
    and the sum each rounded (no fused multiply-add, no clip)."""
    y = np.asarray(y, np.float32)
    return fadd(fmul(y, np.asarray(m, np.float32), subnormals=subnormals), np.asarray(b, np.float32),
                subnormals=subnormals)


def pack_bn(mult, bias, cpo: int) -> np.ndarray:
    """Per-channel float batch-norm multipliers and biases -> the ``n`` image, ``[GO][2][CPO]``
    binary32 words as uint32 (channels zero-padded to whole groups)."""
    mult, bias = np.asarray(mult, np.float32).reshape(-1), np.asarray(bias, np.float32).reshape(-1)
    if mult.shape != bias.shape:
        raise ValueError(f"pack_bn: {mult.size} multipliers but {bias.size} biases")
    groups = -(-mult.size // cpo)
    padded = np.zeros((2, groups * cpo), np.float32)
    padded[0, :mult.size], padded[1, :bias.size] = mult, bias
    return to_bits(padded.reshape(2, groups, cpo).transpose(1, 0, 2).reshape(-1))


def unpack_bn(n_mem, cpo: int, groups: range) -> tuple[np.ndarray, np.ndarray]:
    """The float32 batch-norm multipliers and biases of output groups ``groups`` from an ``n``
    image laid out ``[GO][2][CPO]`` binary32 words (CPO multipliers, then CPO biases), each
    ``len(groups) * CPO`` long."""
    from hlsinf.reference import CallError
    arr = np.asarray(n_mem).reshape(-1)
    need = groups.stop * 2 * cpo
    if arr.size < need:
        raise CallError(f"memory image n_mem holds {arr.size} elements, the call needs {need}")
    words = arr[:need].view(np.float32) if arr.dtype in (np.uint32, np.int32) else arr[:need].astype(np.float32)
    words = words.reshape(-1, 2, cpo)[groups.start:groups.stop]
    return words[:, 0].reshape(-1), words[:, 1].reshape(-1)


def post_ops(y, cfg, args, groups: range, n_mem=None) -> np.ndarray:
    """The post-operations of ``cfg.post_ops`` that ``args`` enables, in the configured order,
    on fp32 values ``y`` (``... x channels``, the channels of output groups ``groups``)."""
    from hlsinf.reference import CallError
    y = np.asarray(y, np.float32)
    sub = cfg.fp32_subnormals
    for op in cfg.post_ops:
        if op == "leaky_relu" and args.leaky_relu:
            y = leaky_relu(y, args.leaky_alpha_num, subnormals=sub)
        if op == "bn" and args.bn:
            if n_mem is None:
                raise CallError("memory image n_mem is missing: the call enables bn")
            m, b = unpack_bn(n_mem, cfg.cpo, groups)
            y = batch_norm(y, m, b, subnormals=sub)
    return y


def memory_image(name: str, arr, size: int) -> np.ndarray:
    """The first ``size`` float32 elements of memory image ``name``: binary32 bit patterns
    (uint32 or int32) are viewed as floats, anything else converted; a short image is a
    :class:`~hlsinf.reference.CallError` naming it."""
    from hlsinf.reference import CallError
    if arr is None or np.asarray(arr).size < size:
        raise CallError(f"memory image {name} holds {0 if arr is None else np.asarray(arr).size} elements, "
                        f"the call needs {size}")
    arr = np.asarray(arr).reshape(-1)[:size]
    return arr.view(np.float32) if arr.dtype in (np.uint32, np.int32) else arr.astype(np.float32, copy=False)


#: Output pixels whose products one step of :func:`kernel_call` forms at once (memory bound).
_PIXELS_PER_STEP = 256


def kernel_call(cfg, args, x_mem: np.ndarray, w_mem: np.ndarray, b_mem: np.ndarray,
                out_mem: np.ndarray, m_mem: np.ndarray | None = None, n_mem: np.ndarray | None = None) -> np.ndarray:
    """One call of an fp32 kernel on float32 memory images (the layouts of the integer
    :func:`hlsinf.reference.kernel_call`); writes into ``out_mem`` and returns it.

    Per output value: the ``CPI x 9`` products of each input group summed by :func:`dot_tree`,
    the groups accumulated in order (:func:`accumulate`), the bias added last; then ReLU
    (:func:`relu`), the clip bounds ``clip_lo`` / ``clip_hi`` (binary32 bits; None: none,
    written to the registers as ``CallArgs.clip_bounds`` encodes it),
    the post-operations ``cfg.post_ops`` the call enables, in that order (:func:`post_ops`:
    ``leaky_relu`` with ``leaky_alpha_num`` the slope's binary32 bits, ``bn`` with float32
    parameters in ``n_mem``), and pooling (:func:`pool2x2`). ``shift`` and ``use_mult`` must be 0: there is no
    requantisation. Bit-exact with the fp32 kernel (compare with :func:`to_bits`,
    ``canonical=True``).
    """
    from hlsinf.reference import CallError, windows
    if not cfg.is_float:
        raise CallError(f"reference_float.kernel_call models number_format='fp32', not {cfg.number_format!r}")
    if args.shift or args.use_mult:
        raise CallError("kernel arguments shift and use_mult must be 0 on an fp32 kernel (no requantisation)")
    args.validate(cfg)
    # The register values, as the kernel sees them: None is the no-bound encoding, which
    # clips nothing (CallArgs.clip_bounds).
    lo_bits, hi_bits = args.clip_bounds(cfg)
    sub = cfg.fp32_subnormals
    cpi, cpo = cfg.cpi, cfg.cpo
    gi, go = args.gi(cfg), args.go(cfg)
    groups = args.groups(cfg)
    plane_in = args.H * args.W

    x = memory_image("x_mem", x_mem, gi * plane_in * cpi).reshape(gi, plane_in, cpi)
    w = memory_image("w_mem", w_mem, go * gi * cpo * cpi * 9).reshape(go, gi, cpo, cpi, 9)
    b = memory_image("b_mem", b_mem, go * cpo)
    plane_out = args.plane_out()
    if out_mem.size < groups.stop * plane_out * cpo:
        raise CallError(f"memory image out_mem holds {out_mem.size} elements, the call needs "
                        f"{groups.stop * plane_out * cpo}")

    x = x[:, args.read_offset: args.read_offset + args.rows * args.W]
    x = x.reshape(gi, args.rows, args.W, cpi).transpose(1, 2, 0, 3)                # rows x W x GI x CPI
    padded = np.pad(x, ((args.pad_top, args.pad_bottom), (args.pad_left, args.pad_right), (0, 0), (0, 0)))
    cols = windows(padded.reshape(padded.shape[0], padded.shape[1], gi * cpi), args.stride)
    ho, wo = cols.shape[:2]
    cols = cols.reshape(ho * wo, gi, cpi, 9)

    out = out_mem.reshape(-1)
    out_view = out.view(np.float32) if out.dtype in (np.uint32, np.int32) else out
    for g in groups:
        acc = np.empty((ho * wo, cpo), np.float32)
        for start in range(0, ho * wo, _PIXELS_PER_STEP):
            part = cols[start:start + _PIXELS_PER_STEP]                          # n x GI x CPI x 9
            partials = np.stack([mul_partial(part[:, k], w[g, k], subnormals=sub) for k in range(gi)], axis=-2)
            acc[start:start + len(part)] = accumulate(partials, b[g * cpo:(g + 1) * cpo], subnormals=sub)
        y = relu(acc) if args.relu else acc
        y = clip(y, lo_bits, hi_bits)
        y = post_ops(y, cfg, args, range(g, g + 1), n_mem)
        y = pool2x2(y.reshape(ho, wo, cpo), args.pool, subnormals=sub)
        base = (g * plane_out + args.write_offset) * cpo
        out_view[base: base + y.size] = y.reshape(-1)
    return out_mem
