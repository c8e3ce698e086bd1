"""The streams the stages exchange: one definition of every payload layout and signature.

A producer and its consumer build their ports from the same function here, so they agree
by construction, and a change of a number format or of the lane count reaches both. Also
here: a FIFO put on a stream (:func:`fifo_on_stream`) and the frame counter several stages
share.

Payloads, with ``act`` the activation shape (:func:`act_shape`):

=================  ================================================  =====================
payload            layout                                            between
=================  ================================================  =====================
pixel              ``ArrayLayout(act, lanes)``: CPI lanes on the     read, input cache,
                   input side, CPO on the output side                padding, window/cvt;
                                                                     relu, pool, write
window             ``ArrayLayout(ArrayLayout(act, 9), CPI)``, tap    window/cvt -> mul
                   ``ky * 3 + kx`` of each lane
weight set         ``ArrayLayout(ArrayLayout(ArrayLayout(            loader -> mul
                   signed(weight_bits), 9), CPI), CPO)``
partial sums       ``ArrayLayout(signed(partial_bits), CPO)``        mul -> add
bias               ``ArrayLayout(signed(bias_bits), CPO)``           loader -> add
accumulators       ``ArrayLayout(signed(acc_bits), CPO)``            add -> relu
multipliers        ``ArrayLayout(unsigned(mult_bits), CPO)``         loader -> relu
=================  ================================================  =====================

With ``cfg.is_float`` (fp32) every lane of the partial sums, bias, accumulators and
batch-norm parameters is a binary32 bit pattern in a ``signed(32)`` lane
(:data:`FLOAT_LANE`), the shape fp32 activations and weights already have
(``act_bits = weight_bits = 32``, signed), so float streams connect to pixel streams.

Each has a ``*_layout(cfg)`` and a ``*_signature(cfg)``: a ``stream.Signature`` of it, or
for the parameter loader's three outputs (weight set, bias, multipliers)
:func:`~hlsinf.gateware.lib.wide_stream.stream_signature`, which slices a payload wider
than one wire as the loader's FIFOs do (in practice only a weight set: 73,728 bits at
32x32 int8).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ShapeCastable, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.wide_stream import payload_width, stream_signature

__all__ = [
    "FLOAT_LANE", "act_shape", "frame_pixels_shape",
    "pixel_layout", "window_layout", "weight_set_layout", "partial_layout", "bias_layout",
    "acc_layout", "mult_layout",
    "pixel_signature", "window_signature", "weight_set_signature", "partial_signature",
    "bias_signature", "acc_signature", "mult_signature", "bn_layout", "bn_signature",
    "TABLE_BANKS", "table_layout", "table_signature", "table_items",
    "fifo_on_stream", "frame_counter",
]


# Shapes ------------------------------------------------------------------------------------

#: The shape of one binary32 lane (bit pattern) on an fp32 kernel's streams.
FLOAT_LANE = signed(32)


def act_shape(cfg: KernelConfig):
    """Shape of one activation: ``signed`` or ``unsigned`` ``act_bits`` per ``cfg.act_signed``."""
    return signed(cfg.act_bits) if cfg.act_signed else unsigned(cfg.act_bits)


def frame_pixels_shape(cfg: KernelConfig):
    """Shape of a ``frame_pixels`` parameter: wide enough for ``cfg.max_frame_pixels``."""
    return unsigned(cfg.max_frame_pixels.bit_length())


# Payload layouts ---------------------------------------------------------------------------

def pixel_layout(cfg: KernelConfig, lanes: int) -> data.ArrayLayout:
    """A pixel of ``lanes`` activations (CPI lanes on the input side, CPO on the output side)."""
    return data.ArrayLayout(act_shape(cfg), lanes)


def window_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """A 3x3 window of CPI lanes: ``[lane][ky * 3 + kx]``."""
    return data.ArrayLayout(data.ArrayLayout(act_shape(cfg), 9), cfg.cpi)


def weight_set_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """The weights of one frame, ``[CPO][CPI][ky * 3 + kx]``: their layout in memory."""
    return data.ArrayLayout(data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), 9), cfg.cpi), cfg.cpo)


def partial_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """CPO partial sums: one window times one weight set (binary32 lanes on an fp32 kernel:
    ``cfg.partial_bits`` is the integer sum's width)."""
    return data.ArrayLayout(FLOAT_LANE if cfg.is_float else signed(cfg.partial_bits), cfg.cpo)


def bias_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """The CPO biases of an output group (binary32 lanes on an fp32 kernel)."""
    return data.ArrayLayout(FLOAT_LANE if cfg.is_float else signed(cfg.bias_bits), cfg.cpo)


def acc_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """CPO accumulators: partial sums over the input groups plus the bias, saturated
    (binary32 lanes, not saturated, on an fp32 kernel)."""
    return data.ArrayLayout(FLOAT_LANE if cfg.is_float else signed(cfg.acc_bits), cfg.cpo)


def mult_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """The CPO requantisation multipliers of an output group."""
    return data.ArrayLayout(unsigned(cfg.mult_bits), cfg.cpo)


def bn_layout(cfg: KernelConfig) -> data.StructLayout:
    """The batch-norm parameters of an output group (post-op ``bn``), as in memory: CPO
    int32 multiplier words (the low ``BN_MULT_BITS`` used, signed), then CPO int32 biases.
    On an fp32 kernel both are CPO binary32 words (:data:`FLOAT_LANE`), the whole word used."""
    if cfg.is_float:
        return data.StructLayout({"mult": data.ArrayLayout(FLOAT_LANE, cfg.cpo),
                                  "bias": data.ArrayLayout(FLOAT_LANE, cfg.cpo)})
    return data.StructLayout({"mult": data.ArrayLayout(signed(32), cfg.cpo),
                              "bias": data.ArrayLayout(signed(32), cfg.cpo)})


#: Entries of the post-op lookup table per loader item: the stage writes them into that many
#: banks in one cycle, so a 256-entry table loads in 64 cycles.
TABLE_BANKS = 4


def table_layout(cfg: KernelConfig) -> data.ArrayLayout:
    """``TABLE_BANKS`` consecutive entries of the post-op ``table``, as in memory."""
    return data.ArrayLayout(act_shape(cfg), TABLE_BANKS)


def table_items(cfg: KernelConfig) -> int:
    """Items of :func:`table_layout` in one table of ``2**act_bits`` entries."""
    return (1 << cfg.act_bits) // TABLE_BANKS


# Stream signatures (as seen by the producer: ``Out(...)`` on it, ``In(...)`` on the consumer)

def pixel_signature(cfg: KernelConfig, lanes: int) -> stream.Signature:
    return stream.Signature(pixel_layout(cfg, lanes))


def window_signature(cfg: KernelConfig) -> stream.Signature:
    return stream.Signature(window_layout(cfg))


def weight_set_signature(cfg: KernelConfig):
    """A ``stream.Signature``, or a sliced ``WideSignature`` when a weight set is wider than
    one wire (32x32 int8)."""
    return stream_signature(weight_set_layout(cfg))


def partial_signature(cfg: KernelConfig) -> stream.Signature:
    return stream.Signature(partial_layout(cfg))


def bias_signature(cfg: KernelConfig):
    return stream_signature(bias_layout(cfg))


def acc_signature(cfg: KernelConfig) -> stream.Signature:
    return stream.Signature(acc_layout(cfg))


def mult_signature(cfg: KernelConfig):
    return stream_signature(mult_layout(cfg))


def bn_signature(cfg: KernelConfig):
    return stream_signature(bn_layout(cfg))


def table_signature(cfg: KernelConfig):
    return stream_signature(table_layout(cfg))


# A FIFO on a stream ------------------------------------------------------------------------

def fifo_on_stream(m: Module, name: str, source, *, depth: int, buffered: bool = False):
    """Put a FIFO of ``depth`` items behind the stream ``source`` and return its read end.

    ``source`` drives the stream: a sub-component's output, or ``wiring.flipped(self.i)``
    for a component's own input. The FIFO (``fifo.SyncFIFO``, or ``fifo.SyncFIFOBuffered``
    with ``buffered``) becomes submodule ``name``; its ``w_stream`` is connected to
    ``source``, and its ``r_stream`` is returned as a stream interface with the payload
    shape of ``source`` (``payload`` a view of ``r_data``, ``valid`` = ``r_rdy``,
    ``ready`` = ``r_en``). A plain ``SyncFIFO`` of depth 2 in front of a stage makes the
    stage's ``ready`` a register and adds one cycle of latency.
    """
    shape = source.signature.members["payload"].shape
    queue = (fifo.SyncFIFOBuffered if buffered else fifo.SyncFIFO)(width=payload_width(shape), depth=depth)
    m.submodules[name] = queue
    wiring.connect(m, source, queue.w_stream)
    read = stream.Signature(shape).create(path=(name, "r_stream"))
    read.payload = shape(queue.r_data) if isinstance(shape, ShapeCastable) else queue.r_data
    read.valid, read.ready = queue.r_rdy, queue.r_en
    return read


# Positions inside a frame ------------------------------------------------------------------

def frame_counter(m: Module, step, length, name: str):
    """``(first, last)``: whether the next of every ``length`` items (``length`` >= 1) is the
    first or the last one; ``step`` takes an item.

    A ``first`` flag and a down-counter of the items still to come: the flags come from
    compares with constants, never from an adder followed by a compare, so the counter
    adds no long path before the stream handshakes it drives. ``length`` is only read
    when a run starts, so it may change between runs.
    """
    first = Signal(init=1, name=f"{name}_first")
    left = Signal.like(length, name=f"{name}_left")   # items after the previous one
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(Mux(first, length == 1, left == 1))
    with m.If(step):
        m.d.sync += [first.eq(last), left.eq(Mux(first, length - 1, left - 1))]
    return first, last
