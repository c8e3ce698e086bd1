"""A faster, bit-exact evaluation of one kernel call: what the ``reference`` device runs.

:func:`hlsinf.reference.kernel_call` stays the readable oracle; :func:`kernel_call_fast`
writes the same memory image (``tests/test_reference_fast.py`` compares them bit for bit
on random calls of every kind). What makes it faster:

* **Exact float32 matrix products.** The convolution is an im2col matrix product of
  integers. float32 BLAS computes it exactly as long as no partial sum leaves ``±2**24``
  (every product and every addition is then an integer float32 holds), in whatever order
  the additions happen. The input channels are split into chunks for which
  ``max|x| * max_o sum|w[o]|`` over the chunk is at most ``2**24``, with ``max|x|`` the
  largest activation magnitude of the configuration, so a chunk is exact for any input;
  chunks are summed in float64 (exact below ``2**53``). When one input channel alone could
  exceed ``2**24`` (16-bit data) everything is done in float64, and beyond ``2**53`` (or when
  ``acc * M`` could leave int64) the call is handed to the oracle.
* **Input channels whose weights are all zero** (the padding lanes of a 3-channel image in
  an 8-lane group) are left out of the products: they add nothing.
* **Max pooling before requantisation.** Bias add with saturation, ``(acc * M + r) >> s``
  with ``M >= 0`` and the clip are all non-decreasing in ``acc``, so the maximum of four
  requantised values is the requantised maximum of the four sums (with ``overflow='wrap'``,
  which is not monotonic, max pooling waits for the requantised values). Average pooling is
  done after requantisation, as in the kernel. Truncation (``rounding='trunc'``) only drops
  the rounding term.
* **Blocks.** Output rows are cut into blocks whose im2col matrix is a few MiB; each block
  goes from im2col through the product, pooling and requantisation to the output memory
  while it is in cache. Blocks (or, for small images, ranges of output groups) run on a
  thread pool, one BLAS thread each (through ``threadpoolctl`` when it is installed).
* **Depthwise calls** (``args.depthwise``) are nine vectorised multiply-adds over the taps
  in int64 (exact), then the oracle's own requantisation, post-op and pooling functions.
* **Prepared weights.** Chunks and their matrices are computed once by
  :func:`prepare_weights`; the reference device keeps them while the weight memory is not
  written.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.reference import (POOL_AVG, POOL_MAX, CallArgs, CallError, add_bias, kernel_call, kernel_call_elements,
                               pool2x2, post_ops, requantize, residual_operand, unpack_table, upsize, with_nibbles,
                               wrap)

__all__ = ["PreparedWeights", "prepare_weights", "kernel_call_fast"]

_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
#: elements of the im2col matrix of one block of output rows (4 MiB in float32)
_BLOCK_ELEMENTS = 1 << 20
#: multiply-accumulates of a call from which its blocks run on the thread pool
_PARALLEL_MACS = 1 << 25


@dataclass
class PreparedWeights:
    """The weights of the output groups of a call as matrices over chunks of input channels.

    ``channels`` are the input channels (of ``GI * CPI``) with a non-zero weight, or None for
    all of them; ``chunks[j] = (c0, c1)`` is a range of positions in that list and
    ``matrices[j]`` its ``(9 * (c1 - c0)) x (groups * CPO)`` matrix, row ``tap * (c1 - c0) + c``
    (tap ``ky * 3 + kx``), in ``dtype`` (float32, or float64 for wide data). ``chunks`` is
    None when even float64 is not exact for one channel.
    """

    key: tuple                          #: (go, gi, first group, last group + 1, cpi, cpo)
    dtype: type
    channels: np.ndarray | None
    chunks: list[tuple[int, int]] | None
    matrices: list[np.ndarray]
    abs_sum: int                        #: max over outputs of sum |w|: bounds |sum of products| / max|x|
    #: 8-bit data: the whole ``(9 * channels) x outputs`` matrix as ``w + 128`` in uint8 for
    #: onnxruntime's MatMulInteger (then ``chunks``/``matrices`` are not used)
    integer: np.ndarray | None = None
    signed: bool = False                #: int8 activations (fed as ``x + 128`` with zero point 128)
    _session: object = None

    def session(self):
        """onnxruntime ``MatMulInteger(a uint8 [M, K], w + 128 uint8 [K, N])``, int32 out; opened once."""
        if self._session is None:
            self._session = _matmul_integer_session(self.integer, 128 if self.signed else 0)
        return self._session


def _weights_key(cfg: KernelConfig, args: CallArgs) -> tuple:
    groups = args.groups(cfg)
    return (args.go(cfg), args.gi(cfg), groups.start, groups.stop, cfg.cpi, cfg.cpo)


def _chunks(cumulative: np.ndarray, xmax: int, limit: int) -> list[tuple[int, int]] | None:
    """Split channels into ranges whose products sum to at most ``limit`` in magnitude; None if one channel cannot.

    ``cumulative`` is ``(channels + 1) x outputs``: the running sum over channels of ``sum_taps |w|``."""
    count = cumulative.shape[0] - 1
    if xmax == 0 or count == 0:
        return [(0, count)]
    cap = limit // xmax
    out, start = [], 0
    while start < count:
        over = np.nonzero((cumulative[start + 1:] - cumulative[start]).max(axis=1) > cap)[0]
        stop = count if over.size == 0 else start + int(over[0])
        if stop == start:
            return None
        out.append((start, stop))
        start = stop
    return out


def prepare_weights(cfg: KernelConfig, args: CallArgs, w_mem: np.ndarray, *,
                    use_onnxruntime: bool = True) -> PreparedWeights:
    """The weight matrices of a call, from the ``[GO][GI][CPO][CPI][3][3]`` memory image.

    8-bit data go to onnxruntime's MatMulInteger when it is installed (``use_onnxruntime``);
    anything else to float BLAS in exact chunks."""
    key = _weights_key(cfg, args)
    go, gi, g0, g1, cpi, cpo = key
    w = np.asarray(w_mem).reshape(-1)[: go * gi * cpo * cpi * 9].reshape(go, gi, cpo, cpi, 9)[g0:g1]
    n = (g1 - g0) * cpo
    w = w.transpose(4, 1, 3, 0, 2).reshape(9, gi * cpi, n)            # tap, input channel, output
    per_channel = np.abs(w.astype(np.int64)).sum(axis=0)               # channels x outputs
    used = np.nonzero(per_channel.any(axis=1))[0]
    channels = None if used.size == gi * cpi else used
    if channels is not None:
        w, per_channel = w[:, channels], per_channel[channels]
    cumulative = np.zeros((per_channel.shape[0] + 1, n), np.int64)
    np.cumsum(per_channel, axis=0, out=cumulative[1:])
    amin, amax = cfg.act_range
    xmax = max(-amin, amax)
    rows = 9 * per_channel.shape[0]
    abs_sum = int(cumulative[-1].max(initial=0))
    if (use_onnxruntime and cfg.act_bits == 8 and cfg.weight_bits == 8 and rows * 255 * 255 < 1 << 31
            and _onnxruntime()):
        integer = np.ascontiguousarray((w.reshape(rows, n).astype(np.int16) + 128).astype(np.uint8))
        return PreparedWeights(key, np.uint8, channels, [(0, per_channel.shape[0])], [], abs_sum, integer,
                               cfg.act_signed)
    dtype, chunks = np.float32, _chunks(cumulative, xmax, _F32_EXACT)
    if chunks is None:
        dtype, chunks = np.float64, _chunks(cumulative, xmax, _F64_EXACT)
    matrices = [np.ascontiguousarray(w[:, c0:c1].reshape(9 * (c1 - c0), n), dtype=dtype) for c0, c1 in chunks or []]
    return PreparedWeights(key, dtype, channels, chunks, matrices, abs_sum)


def _onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _matmul_integer_session(b: np.ndarray, a_zero: int):
    """ONNX MatMulInteger computes ``sum (a - a_zero) * (b - 128)`` in int32, exactly. onnxruntime's
    kernels for uint8 x uint8 widen to 16 bits and add pairs of products in 32 bits (no int16
    saturation, unlike its uint8 x int8 kernels on x86 without VNNI); every sum fits int32 as
    ``K * 255 * 255 < 2**31`` (checked by :func:`prepare_weights`)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])], "conv",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", n])],
        [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(a_zero, np.uint8), "a_zero"),
         numpy_helper.from_array(np.array(128, np.uint8), "b_zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1                 # the blocks run in parallel instead
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                              # not on Linux
        return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None
_BLAS = None                                            # threadpoolctl controller; False if not installed


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="hlsinf-reference")
    return _POOL


def _single_threaded_blas():
    """A context in which BLAS runs on one thread (the blocks run in parallel instead):
    through threadpoolctl when it is installed, else a no-op."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        except ImportError:
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


def kernel_call_fast(cfg: KernelConfig, args: CallArgs, x_mem: np.ndarray, w_mem: np.ndarray,
                     b_mem: np.ndarray, out_mem: np.ndarray, m_mem: np.ndarray | None = None,
                     prepared: PreparedWeights | None = None, *, n_mem: np.ndarray | None = None,
                     r_mem: np.ndarray | None = None, t_mem: np.ndarray | None = None,
                     acc=None) -> np.ndarray:
    """Same arguments and result as :func:`hlsinf.reference.kernel_call`, bit for bit
    (post-operations included: ``n_mem``, ``r_mem``, ``t_mem``; ``acc``, the device's
    :class:`~hlsinf.reference.AccBuffer`: ``acc_hold`` / ``acc_resume`` calls run the oracle,
    whose one matrix product per call is all they need).

    ``prepared`` (from :func:`prepare_weights`) saves preparing the weights again; it must
    have been made from the weights ``w_mem`` holds now. Every post-op runs here, vectorised,
    before the pooling as in the kernel.
    """
    if cfg.is_float:
        return kernel_call(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem)   # its error names the format
    if args.acc_hold or args.acc_resume:
        return kernel_call(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem, acc=acc)
    if acc is not None:
        args.validate(cfg)
        acc.after_ordinary_call(cfg, args)
    if 4 in (cfg.act_bits, cfg.weight_bits):
        if args.residual_add or args.table:
            return kernel_call(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem)
        # Bytes of two 4-bit lanes: unpacked to int64 elements (the float path), packed back.
        return with_nibbles(_elements, cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem=n_mem)
    return _elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, prepared, n_mem=n_mem, r_mem=r_mem, t_mem=t_mem)


def _elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem=None, prepared=None, *, n_mem=None, r_mem=None,
              t_mem=None):
    """:func:`kernel_call_fast` on element images (one array element per lane)."""
    args.validate(cfg)
    if args.pointwise:      # the oracle's pointwise path is already one matrix product
        return kernel_call_elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem)
    residual = residual_operand(r_mem, cfg, args) if args.residual_add else None
    cpi, cpo = cfg.cpi, cfg.cpo
    gi, go = args.gi(cfg), args.go(cfg)
    groups = args.groups(cfg)
    plane_in = args.H * args.W
    plane_out = args.plane_out()
    w_size = go * cpo * 9 if args.depthwise else go * gi * cpo * cpi * 9
    for name, arr, size in (("x_mem", x_mem, gi * plane_in * cpi), ("w_mem", w_mem, w_size),
                            ("b_mem", b_mem, go * cpo), ("m_mem", m_mem if args.use_mult else b_mem, go * cpo),
                            ("out_mem", out_mem, groups.stop * plane_out * cpo)):
        if arr is None or arr.size < size:
            raise CallError(f"memory image {name} holds {0 if arr is None else arr.size} elements, "
                            f"the call needs {size}")
    if args.depthwise:
        if args.leaky_relu or args.bn or args.table or args.residual_add:     # the oracle has them
            return kernel_call_elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem,
                                        t_mem=t_mem)
        return _depthwise_call(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem)
    if prepared is None or prepared.key != _weights_key(cfg, args):
        prepared = prepare_weights(cfg, args, w_mem)
    if prepared.chunks is None:
        return kernel_call_elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem)

    x = np.asarray(x_mem).reshape(-1)[: gi * plane_in * cpi].reshape(gi, plane_in, cpi)
    x = x[:, args.read_offset: args.read_offset + args.rows * args.W].reshape(gi, args.rows, args.W, cpi)
    xmax = max(int(x.max(initial=0)), -int(x.min(initial=0)))

    # Requantisation constants, and whether the accumulator can saturate or acc * M leave int64.
    channels = slice(groups.start * cpo, groups.stop * cpo)
    bias = np.asarray(b_mem).reshape(-1)[channels].astype(np.int64)
    amin, amax = cfg.acc_range
    bound = xmax * prepared.abs_sum + int(np.abs(bias).max(initial=0))
    saturate = bound > min(-amin, amax)
    shift = args.shift
    rounding = (1 << (shift - 1)) if shift > 0 and cfg.rounding == "round" else 0
    wrapping = cfg.overflow == "wrap"
    mult = np.asarray(m_mem).reshape(-1)[channels].astype(np.int64) if args.use_mult else None
    if mult is not None and min(bound, max(-amin, amax)) * int(mult.max(initial=0)) + rounding >= 1 << 62:
        return kernel_call_elements(cfg, args, x_mem, w_mem, b_mem, out_mem, m_mem, n_mem, r_mem=r_mem, t_mem=t_mem)
    if saturate:
        offset = None
    elif mult is not None:
        offset = bias * mult + rounding                  # (s + b) * M + r = s * M + (b * M + r)
    else:
        offset = bias + rounding
    lo, hi = args.clip_bounds(cfg)
    # Enabled post-operations run on the requantised values, so max pooling (which commutes with
    # the monotone requantisation only) waits until after them.
    post = bool(args.leaky_relu or args.bn or args.table or args.residual_add)
    if args.bn and (n_mem is None or np.asarray(n_mem).size < args.go(cfg) * 2 * cpo):
        raise CallError("memory image n_mem is missing or too small: the call enables bn")
    if args.table:
        unpack_table(t_mem if t_mem is not None else np.zeros(0, np.uint8), cfg)    # names t_mem if short

    # Zero-padded input tile, rows_p x cols_p x channels, in the products' type (int8 as x + 128).
    dtype = prepared.dtype
    integer = prepared.integer is not None
    rows_p = args.rows + args.pad_top + args.pad_bottom
    cols_p = args.W + args.pad_left + args.pad_right
    if integer and prepared.signed:
        xp = np.full((rows_p, cols_p, gi, cpi), 128, np.uint8)
        x = x.view(np.uint8) ^ np.uint8(0x80)
    else:
        xp = np.zeros((rows_p, cols_p, gi, cpi), dtype)
    xp[args.pad_top: args.pad_top + args.rows, args.pad_left: args.pad_left + args.W] = x.transpose(1, 2, 0, 3)
    xp = xp.reshape(rows_p, cols_p, gi * cpi)
    if prepared.channels is not None:
        xp = xp[:, :, prepared.channels]
    s = args.stride
    ho, wo = (rows_p - 3) // s + 1, (cols_p - 3) // s + 1
    n = len(groups) * cpo
    pool = args.pool
    if residual is not None:
        residual = residual.reshape(ho, wo, n)
    # Max pooling commutes with the monotone requantisation only: wrap-around and the
    # post-operations make it wait for the requantised (and post-processed) values.
    max_first = pool == POOL_MAX and not wrapping and not post
    step = 2 if pool else 1
    rows_used = ho // step * step
    wp = wo // step
    out = out_mem.reshape(-1)[: groups.stop * plane_out * cpo].reshape(groups.stop, plane_out, cpo)[groups.start:]
    chunks = list(zip(prepared.chunks, prepared.matrices))   # empty on the integer path
    widest = max([c1 - c0 for c0, c1 in prepared.chunks] + [1]) * 9

    def run(r0: int, r1: int, n0: int, n1: int):
        """Output rows [r0, r1) of the convolution (pairs when pooling), output channels [n0, n1)."""
        m = (r1 - r0) * wo
        buffer = np.empty(m * widest, dtype)
        sums = None
        if integer:                                      # onnxruntime MatMulInteger over all channels
            c = xp.shape[2]
            cols = buffer[: m * 9 * c].reshape(r1 - r0, wo, 9, c)
            for ky in range(3):
                for kx in range(3):
                    cols[:, :, ky * 3 + kx] = xp[r0 * s + ky: (r1 - 1) * s + ky + 1: s, kx: kx + s * (wo - 1) + 1: s]
            sums = prepared.session().run(["y"], {"a": cols.reshape(m, 9 * c)})[0] if c else np.zeros((m, n), np.int32)
        for (c0, c1), matrix in chunks:
            cols = buffer[: m * 9 * (c1 - c0)].reshape(r1 - r0, wo, 9, c1 - c0)
            for ky in range(3):
                for kx in range(3):
                    cols[:, :, ky * 3 + kx] = xp[r0 * s + ky: (r1 - 1) * s + ky + 1: s,
                                                 kx: kx + s * (wo - 1) + 1: s, c0:c1]
            product = cols.reshape(m, 9 * (c1 - c0)) @ matrix[:, n0:n1]
            if sums is None:
                sums = product if len(chunks) == 1 else product.astype(np.float64)
            else:
                sums += product
        if sums is None:                                 # no input channel has a weight
            sums = np.zeros((m, n1 - n0), dtype)
        sums = sums.reshape(r1 - r0, wo, n1 - n0)
        if max_first:
            q = sums[:, : wp * 2].reshape((r1 - r0) // 2, 2, wp, 2, n1 - n0)
            sums = np.maximum(np.maximum(q[:, 0, :, 0], q[:, 0, :, 1]), np.maximum(q[:, 1, :, 0], q[:, 1, :, 1]))
        acc = sums.astype(np.int64)
        if offset is None:
            acc += bias[n0:n1]
            np.clip(acc, amin, amax, out=acc)
            if mult is not None:
                acc *= mult[n0:n1]
            if rounding:
                acc += rounding
        else:
            if mult is not None:
                acc *= mult[n0:n1]
            acc += offset[n0:n1]
        if shift:
            acc >>= shift
        if wrapping:
            acc = wrap(acc, cfg.act_bits, cfg.act_signed)
        np.clip(acc, lo, hi, out=acc)
        if post:
            first_channel = groups.start * cpo
            acc = post_ops(acc, cfg, args, slice(first_channel + n0, first_channel + n1), n_mem,
                           None if residual is None else residual[r0:r1, :, n0:n1], t_mem)
        if pool == POOL_AVG:
            q = acc[:, : wp * 2].reshape((r1 - r0) // 2, 2, wp, 2, n1 - n0)
            acc = (q.sum(axis=(1, 3)) + 2) >> 2
        elif pool == POOL_MAX and not max_first:
            q = acc[:, : wp * 2].reshape((r1 - r0) // 2, 2, wp, 2, n1 - n0)
            acc = q.max(axis=(1, 3))
        if args.upsize > 1:
            acc = np.repeat(np.repeat(acc, args.upsize, axis=0), args.upsize, axis=1)
        y = acc.astype(out.dtype).reshape(-1, (n1 - n0) // cpo, cpo).transpose(1, 0, 2)
        first = args.write_offset + r0 // step * args.upsize * wp * args.upsize
        out[n0 // cpo: n1 // cpo, first: first + y.shape[1]] = y

    # Blocks of output rows (an even number when pooling); on the float path output-group ranges
    # too when there are fewer row blocks than cores. Small calls run in this thread: waking
    # workers costs more than the work.
    used = len(prepared.channels) if prepared.channels is not None else gi * cpi
    workers = _workers() if rows_used * wo * n * 9 * used >= _PARALLEL_MACS else 1
    block = max(step, min(-(-rows_used // workers), _BLOCK_ELEMENTS // (wo * widest)) // step * step)
    row_blocks = [(r0, min(rows_used, r0 + block)) for r0 in range(0, rows_used, block)]
    parts = 1 if len(row_blocks) >= workers or integer else min(workers, len(groups))
    col_blocks = [(len(groups) * k // parts * cpo, len(groups) * (k + 1) // parts * cpo) for k in range(parts)]
    items = [(r0, r1, n0, n1) for r0, r1 in row_blocks for n0, n1 in col_blocks]
    with contextlib.nullcontext() if integer else _single_threaded_blas():
        if workers == 1:
            for item in items:
                run(*item)
        else:
            for f in [_pool().submit(run, *item) for item in items]:
                f.result()
    return out_mem


def _depthwise_call(cfg: KernelConfig, args: CallArgs, x_mem, w_mem, b_mem, out_mem, m_mem) -> np.ndarray:
    """A depthwise call (validated, memory sizes checked): output channel c from input channel c only."""
    cpi, cpo = cfg.cpi, cfg.cpo
    groups = args.groups(cfg)
    plane_in, plane_out = args.H * args.W, args.plane_out()
    n = len(groups) * cpo
    channels = slice(groups.start * cpo, groups.stop * cpo)
    x = np.asarray(x_mem).reshape(-1)[: groups.stop * plane_in * cpi].reshape(groups.stop, plane_in, cpi)
    x = x[groups.start:, args.read_offset: args.read_offset + args.rows * args.W]
    rows_p = args.rows + args.pad_top + args.pad_bottom
    cols_p = args.W + args.pad_left + args.pad_right
    xp = np.zeros((rows_p, cols_p, n), np.int64)
    xp[args.pad_top: args.pad_top + args.rows, args.pad_left: args.pad_left + args.W] = \
        x.reshape(len(groups), args.rows, args.W, cpi).transpose(1, 2, 0, 3).reshape(args.rows, args.W, n)
    w = np.asarray(w_mem).reshape(-1)[: groups.stop * cpo * 9].reshape(-1, 9)[channels].astype(np.int64)
    s = args.stride
    ho, wo = (rows_p - 3) // s + 1, (cols_p - 3) // s + 1
    sums = np.zeros((ho, wo, n), np.int64)
    for ky in range(3):
        for kx in range(3):
            sums += xp[ky: ky + s * (ho - 1) + 1: s, kx: kx + s * (wo - 1) + 1: s] * w[:, ky * 3 + kx]
    acc = add_bias(sums, np.asarray(b_mem).reshape(-1)[channels], cfg)
    mult = np.asarray(m_mem).reshape(-1)[channels] if args.use_mult else 1
    y = requantize(acc, mult, args.shift, *args.clip_bounds(cfg))
    y = upsize(pool2x2(post_ops(y, cfg, args, channels), args.pool), args.upsize)
    hp, wp = y.shape[:2]
    out = out_mem.reshape(-1)[: groups.stop * plane_out * cpo].reshape(groups.stop, plane_out, cpo)
    out[groups.start:, args.write_offset: args.write_offset + hp * wp] = \
        y.reshape(hp * wp, len(groups), cpo).transpose(1, 0, 2).astype(out.dtype)
    return out_mem
