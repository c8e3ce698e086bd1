"""A faster fp32 kernel call that writes the same bits as :func:`hlsinf.reference_float.kernel_call`.

Float sums depend on their order, so no BLAS product can be used: the fp32 kernel's
result is defined by its adder tree (docs/numbers.md, "Summation order"). What this
module changes is only how much numpy does per operation:

* the oracle forms the products of one input group at a time (``mul_partial`` per group,
  256 output pixels per step) and sums them with :func:`~hlsinf.reference_float.dot_tree`
  on lists of arrays; here the products of **every input group** of a block of pixels are
  one array ``CPI*9 x GI x n x CPO`` (leaf first, so its slices are contiguous), and each
  level of the same tree is one numpy add of its even and odd leaves (an odd last leaf
  goes up unchanged), so a level costs one call whatever GI is;
* the partial sums are then accumulated over the groups left to right and the bias added
  last, as :func:`~hlsinf.reference_float.accumulate` does;
* blocks are sized by memory (1 MiB of products, cache-sized), not by a fixed pixel count;
  50-90 M multiply-adds per second on one core of this shared machine, 1.5-2x the oracle
  (a 64 -> 64 channel 28x28 call: 0.5 s against 0.9 s). Float sums in a fixed order leave
  numpy element-wise adds as the only tool, so it stays far from BLAS speed.

Every product and sum is still one float32 operation of numpy (or ``ftz_mul``/``ftz_add``
for a kernel that flushes subnormals), in the same tree positions, so the result is
bit-identical; ReLU, the clip, the post-operations and pooling are the oracle's own functions.
``tests/test_reference_float_fast.py`` compares the two bit for bit (NaN, infinities and
subnormals included).
"""

from __future__ import annotations

import numpy as np

from hlsinf.reference import CallError, windows
from hlsinf.reference_float import clip, fadd, fmul, memory_image, pool2x2, post_ops, relu

__all__ = ["kernel_call_fast", "tree_sum"]

#: Bytes of products one block holds: small enough to stay in cache (1 MiB was fastest here).
_BLOCK_BYTES = 1 << 20


def tree_sum(values: np.ndarray, *, subnormals: bool = True, axis: int = -1) -> np.ndarray:
    """:func:`hlsinf.reference_float.dot_tree` over ``axis``, one numpy add per level."""
    level = np.moveaxis(np.asarray(values, np.float32), axis, 0)
    if level.shape[0] == 0:
        raise ValueError("tree_sum: no values")
    while level.shape[0] > 1:
        n = level.shape[0]
        pairs = fadd(level[0:n - 1:2], level[1:n:2], subnormals=subnormals)
        level = np.concatenate([pairs, level[n - 1:]], axis=0) if n % 2 else pairs
    return level[0]


def kernel_call_fast(cfg, args, x_mem: np.ndarray, w_mem: np.ndarray, b_mem: np.ndarray,
                     out_mem: np.ndarray, m_mem=None, n_mem=None) -> np.ndarray:
    """Same arguments, checks and result as :func:`hlsinf.reference_float.kernel_call`."""
    if not cfg.is_float:
        raise CallError(f"reference_float_fast models number_format='fp32', not {cfg.number_format!r}")
    if args.shift or args.use_mult:
        raise CallError("kernel arguments shift and use_mult must be 0 on an fp32 kernel (no requantisation)")
    args.validate(cfg)
    lo_bits, hi_bits = args.clip_bounds(cfg)         # the register values (None: clips nothing)
    sub = cfg.fp32_subnormals
    cpi, cpo = cfg.cpi, cfg.cpo
    gi, go = args.gi(cfg), args.go(cfg)
    groups = args.groups(cfg)
    plane_in = args.H * args.W

    x = memory_image("x_mem", x_mem, gi * plane_in * cpi).reshape(gi, plane_in, cpi)
    w = memory_image("w_mem", w_mem, go * gi * cpo * cpi * 9).reshape(go, gi, cpo, cpi * 9)
    b = memory_image("b_mem", b_mem, go * cpo)
    plane_out = args.plane_out()
    if out_mem.size < groups.stop * plane_out * cpo:
        raise CallError(f"memory image out_mem holds {out_mem.size} elements, the call needs "
                        f"{groups.stop * plane_out * cpo}")

    x = x[:, args.read_offset: args.read_offset + args.rows * args.W]
    x = x.reshape(gi, args.rows, args.W, cpi).transpose(1, 2, 0, 3)
    padded = np.pad(x, ((args.pad_top, args.pad_bottom), (args.pad_left, args.pad_right), (0, 0), (0, 0)))
    cols = windows(padded.reshape(padded.shape[0], padded.shape[1], gi * cpi), args.stride)
    ho, wo = cols.shape[:2]
    # leaf (c*9 + tap, the tree's order) first, then input group, pixel, lane: every tree
    # level and every accumulation step is then an add of contiguous blocks
    cols = np.ascontiguousarray(cols.reshape(ho * wo, gi, cpi * 9).transpose(2, 1, 0))[..., None]
    wt = np.ascontiguousarray(w.transpose(0, 3, 1, 2))[:, :, :, None, :]          # GO x leaf x GI x 1 x CPO
    block = max(1, _BLOCK_BYTES // (gi * cpo * cpi * 9 * 4))

    out = out_mem.reshape(-1)
    out_view = out.view(np.float32) if out.dtype in (np.uint32, np.int32) else out
    with np.errstate(all="ignore"):
        for g in groups:
            acc = np.empty((ho * wo, cpo), np.float32)
            bias = b[g * cpo:(g + 1) * cpo]
            for start in range(0, ho * wo, block):
                products = fmul(cols[:, :, start:start + block], wt[g], subnormals=sub)   # leaf x GI x n x CPO
                partial = tree_sum(products, subnormals=sub, axis=0)                     # GI x n x CPO
                a = partial[0]
                for k in range(1, gi):
                    a = fadd(a, partial[k], subnormals=sub)
                acc[start:start + len(a)] = fadd(a, bias, subnormals=sub)
            y = relu(acc) if args.relu else acc
            y = clip(y, lo_bits, hi_bits)
            y = post_ops(y, cfg, args, range(g, g + 1), n_mem)
            y = pool2x2(y.reshape(ho, wo, cpo), args.pool, subnormals=sub)
            base = (g * plane_out + args.write_offset) * cpo
            out_view[base: base + y.size] = y.reshape(-1)
    return out_mem
