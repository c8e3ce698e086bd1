"""Streams whose payload is wider than one netlist wire.

Amaranth's RTLIL back end refuses a wire of more than 65,536 bits (the vector size Verilog
guarantees), and a 32x32 int8 weight set is 73,728 bits. :func:`stream_signature` returns
the usual :class:`amaranth.lib.stream.Signature` when the payload fits in
:data:`MAX_WIRE_BITS`, and otherwise a :class:`WideSignature` whose payload is carried by
several signals (``payload0``, ``payload1``, ...) and presented as one ``payload`` value or
view over their concatenation, so a stage reads and drives it exactly as a normal stream's.

Every signal that holds a whole payload must be split the same way: a register or FIFO of a
weight set keeps one signal per slice (see ``hlsinf/gateware/memory/weights.py``,
``hlsinf/gateware/stages/mul.py``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Shape
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_WIRE_BITS", "payload_width", "stream_signature", "WideSignature", "WideInterface"]

#: Widest payload carried by one signal; wider ones are cut into slices of at most this many
#: bits (half the back end's limit, so a slice plus a few bits of logic never reaches it).
MAX_WIRE_BITS = 1 << 15


def payload_width(shape) -> int:
    """Bits of a payload of ``shape`` (a shape or an ``amaranth.lib.data`` layout)."""
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


def stream_signature(payload_shape):
    """A stream signature for ``payload_shape``: ``stream.Signature`` when it fits in one wire."""
    if payload_width(payload_shape) <= MAX_WIRE_BITS:
        return stream.Signature(payload_shape)
    return WideSignature(payload_shape)


class WideSignature(wiring.Signature):
    """A valid/ready stream whose payload travels in ``len(bounds)`` slices.

    Members
    -------
    payload0 .. payloadN-1 : Out(unsigned)
        Bits ``bounds[k][0]`` to ``bounds[k][1] - 1`` of the payload.
    valid : Out(1)
    ready : In(1)
    """

    def __init__(self, payload_shape):
        self._payload_shape = payload_shape
        width = payload_width(payload_shape)
        slices = -(-width // MAX_WIRE_BITS)
        self.bounds = [(k * width // slices, (k + 1) * width // slices) for k in range(slices)]
        members = {f"payload{k}": Out(hi - lo) for k, (lo, hi) in enumerate(self.bounds)}
        members.update(valid=Out(1), ready=In(1))
        super().__init__(members)

    @property
    def payload_shape(self):
        return self._payload_shape

    def __eq__(self, other):
        return type(other) is type(self) and other._payload_shape == self._payload_shape

    def create(self, *, path=None, src_loc_at=0):
        return WideInterface(self, path=path, src_loc_at=1 + src_loc_at)

    def __repr__(self):
        return f"WideSignature({self._payload_shape!r})"


class WideInterface:
    """The interface of a :class:`WideSignature`: its members, and ``payload`` over the slices."""

    def __init__(self, signature: WideSignature, *, path=None, src_loc_at=0):
        self._signature = signature
        self.__dict__.update(signature.members.create(path=path, src_loc_at=1 + src_loc_at))

    @property
    def signature(self):
        return self._signature

    @property
    def payload(self):
        """The whole payload: readable, and assignable (each slice gets its own driver)."""
        bits = Cat(*(getattr(self, f"payload{k}") for k in range(len(self._signature.bounds))))
        shape = self._signature.payload_shape
        if isinstance(shape, data.Layout) or isinstance(shape, type) and issubclass(shape, data.Struct):
            return data.View(shape, bits)
        return bits

    @property
    def p(self):
        return self.payload
