"""Stage ``mul``: CPO x CPI x 9 multipliers and one adder tree per output lane.

Every cycle one 3x3 window of CPI input channels is multiplied by the weight set of the
current frame, and the CPI x 9 products of each output lane are summed into one partial
sum. The weight set for a frame arrives on its own stream and is taken in the same cycle
as the frame's first window, so a new ``(output group, input group)`` pair starts on the
cycle after the previous one ends (docs/architecture.md, "Weights paired with the first
window of a frame").

Pipeline (one register per line; the whole pipeline advances together when the output
register is empty or being read)::

    window, weight set  ->  operand registers   (a new weight set loads with a frame's first window)
    operands            ->  product registers   (the DSP48E2 M register)
    [packed only]       ->  + 2**17, register   (the DSP48E2 post-adder and P register)
    products            ->  adder tree, a register after every ``levels_per_register`` levels;
                            the last tree register drives ``o``

With 8-bit activations and weights, two products that share an activation come out of one
multiplier (:func:`multiply`), so a DSP48E2 does two multiplies; with 4-bit activations and
weights three (CPO = 4: one multiplier for three products, the fourth in the fabric).
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hlsinf.config import KernelConfig
from hlsinf.gateware.lib.streams import (frame_counter, frame_pixels_shape, partial_layout, partial_signature,
                                         weight_set_layout, weight_set_signature, window_layout,
                                         window_signature)

__all__ = ["Mul", "mul_params_layout", "operand_registers", "multiply", "product_registers", "PACK_SHIFT", "PACK_SHIFT_4"]


#: Bit position of the second product of a packed multiply. The low field holds a 16-bit
#: product (``uint8 x int8`` or ``int8 x int8``) with room to spare, and the packed operand
#: ``(w1 << 18) + w0`` is 27 bits: the width of the DSP48E2 pre-adder and A multiplier input.
PACK_SHIFT = 18

#: Added to a packed product to make its low field non-negative, so that it never borrows
#: from the high field (see :func:`multiply`).
_LOW_FIELD_OFFSET = 1 << (PACK_SHIFT - 1)


def mul_params_layout(cfg: KernelConfig) -> data.StructLayout:
    """Run-time parameters of :class:`Mul`: windows per frame (>= 1)."""
    return data.StructLayout({"frame_pixels": frame_pixels_shape(cfg)})


def product_registers(pack) -> int:
    """Registers between the operand registers and the products :func:`multiply` returns."""
    return 2 if pack else 1


#: Bit position of the second and third products of a triple-packed multiply (4-bit
#: operands): the 8-bit product plus one bit (see :func:`multiply`).
PACK_SHIFT_4 = 9


def multiply(activation, weights, register, *, pack) -> list:
    """The products of one activation with the weights that share it, one per weight, each
    after ``product_registers(pack)`` pipeline registers.

    This is the only place products are formed. ``register(value, name)`` returns a
    pipeline register loaded with ``value``. Amaranth's ``*`` of an unsigned and a signed
    value zero-extends the unsigned one, so uint8 activations need no special case, and
    every product has the shape of ``activation * weight``.

    With ``pack`` (``True`` or ``2``), weights are taken in pairs ``(w0, w1)`` and each pair
    costs one multiplier (one DSP48E2)::

        M = activation * ((w1 << 18) + w0)     pre-adder, 27 x 18 multiply, M register
        P = M + 2**17                          post-adder, P register
          = activation * w1 * 2**18  +  (activation * w0 + 2**17)

    ``|activation * w0| < 2**16``, so the second term lies in ``[0, 2**18)``: it fits
    the 18 low bits without a borrow, and ``P >> 18`` is exactly ``activation * w1``.
    The low bits are ``activation * w0`` modulo ``2**17``, so the product's own width
    (16 bits) of them, read as signed, is exactly ``activation * w0``. Without the offset
    the high field would be short by one whenever the low product is negative, and
    correcting that needs an adder after the multiplier; the offset is a constant on the
    DSP48E2's C input instead. Packing needs an even number of weights (CPO is a power of
    two, and CPO = 1 is not packed).

    With ``pack=3`` (4-bit activations and weights), three weights share one multiplier,
    fields of ``S = 9`` bits (``PACK_SHIFT_4``)::

        M = activation * ((w2 << 18) + (w1 << 9) + w0)       27 x 18 multiply
        P = M + 2**8 + 2**17                                 C input, post-adder
          = activation * w2 * 2**18 + (activation * w1 + 2**8) * 2**9 + (activation * w0 + 2**8)

    The product of a 4-bit activation (int4, or uint4 zero-extended to 5 bits) and an int4
    weight has the shape ``signed(8)``, and its value lies in ``[-120, 105]`` (uint4) or
    ``[-56, 64]`` (int4), so ``activation * wk + 2**8`` lies in ``[136, 376]``, inside
    ``[0, 2**9)``: neither low field borrows from (or carries into) the next, so bits
    ``[0, 9)`` are ``activation * w0 + 2**8``, bits ``[9, 18)`` are ``activation * w1 + 2**8``
    and ``P >> 18`` is exactly ``activation * w2``. Each low field modulo ``2**8`` is the
    product modulo ``2**8``, so its low 8 bits read as signed are the product, as in the
    pair. The packed weight operand is at most 22 bits signed (A input: 27) and the
    activation 5 (B input: 18). Three is the most one DSP48E2 takes: the products need
    fields of at least 8 bits (``|product| <= 120 < 2**7``, offset ``2**7``), so a fourth
    field would start at bit 24 at the earliest, and an int4 weight there needs 28 bits
    signed, beyond the 27-bit A input (and its pre-adder). ``S = 9`` (8-bit products plus the
    offset bit, as the pair's 18 is 16 plus two) costs nothing: the operand still fits.
    When the weights are not a multiple of three, two left over share one multiplier as a
    pair with the same 9-bit fields, and one left over is multiplied in the fabric (four
    shifted and added copies of the weight, no ``$mul``: a DSP48E2 for one 4 x 4 product
    would waste it); all with the same two registers.
    """
    if pack == 3:
        return _multiply_4bit(activation, weights, register)
    if not pack:
        return [register(activation * weight, f"product{k}") for k, weight in enumerate(weights)]
    if len(weights) % 2:
        raise ValueError(f"multiply: {len(weights)} weights cannot be packed in pairs: allowed an even number")
    products = []
    for k in range(0, len(weights), 2):
        w0, w1 = weights[k], weights[k + 1]
        shape = (activation * w0).shape()
        assert shape.signed and shape.width < PACK_SHIFT, shape
        operand = w1.shift_left(PACK_SHIFT) + w0
        product = register(activation * operand, f"pair{k // 2}_m")
        packed = register(product + _LOW_FIELD_OFFSET, f"pair{k // 2}_p")
        products += [packed[:shape.width].as_signed(),
                     packed[PACK_SHIFT:PACK_SHIFT + shape.width].as_signed()]
    return products


def _multiply_4bit(activation, weights, register) -> list:
    """``multiply(..., pack=3)``: triples, then a pair or a fabric product (see there)."""
    if activation.shape().width != 4 or any(w.shape() != signed(4) for w in weights):
        raise ValueError("multiply: pack=3 takes a 4-bit activation and int4 weights")
    shape = (activation * weights[0]).shape()
    assert shape == signed(8), shape
    s = PACK_SHIFT_4
    products = []
    k = 0
    while k < len(weights):
        group = weights[k:k + 3]
        if len(group) == 1:
            # The fabric: sum of the weight shifted by each set activation bit (the sign bit
            # of a signed activation weighs -8).
            a, w = activation, group[0]
            top = len(a) - 1
            terms = [Mux(a[i], w.as_signed().shift_left(i), 0) for i in range(top)]
            last = w.as_signed().shift_left(top)
            terms.append(Mux(a[top], -last if a.shape().signed else last, 0))
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            product = register(total, f"single{k}_m")
            products.append(register(product[:shape.width].as_signed(), f"single{k}_p"))
            break
        operand = group[0]
        offset = 0
        for j, w in enumerate(group[1:], start=1):
            operand = w.shift_left(j * s) + operand
            offset += 1 << (j * s - 1)
        product = register(activation * operand, f"pack{k}_m")
        packed = register(product + offset, f"pack{k}_p")
        products += [packed[j * s: j * s + shape.width].as_signed() for j in range(len(group))]
        k += 3
    return products


def operand_registers(m: Module, stage, cfg: KernelConfig):
    """The input side every MAC stage shares (:class:`Mul`, ``FloatMul``): a window and the
    weight set of its frame, registered together. Returns ``(advance, window, weight_set,
    valid)``: the whole pipeline moves one step when ``advance`` (the output register is
    free); ``window`` and ``weight_set`` (one register per output lane) hold the operands,
    ``valid`` says they are a window.

    The first window of a frame needs a weight set, and the weight set is held for the rest
    of the frame: it only changes when the frame's first window enters, so every older
    window has already left for the next pipeline stage.
    """
    advance = Signal()
    m.d.comb += advance.eq(~stage.o.valid | stage.o.ready)

    take = Signal()
    first, _ = frame_counter(m, take, stage.params.frame_pixels, "window")
    m.d.comb += [
        stage.i.ready.eq(advance & (~first | stage.weights.valid)),
        stage.weights.ready.eq(advance & first & stage.i.valid),
        take.eq(stage.i.valid & stage.i.ready),
    ]

    # Data registers (operands, products, sums) have no reset: only the valid bits say
    # what they hold. A reset on each of them costs one more assignment per register per
    # cycle in a Verilator model (16x16: ~14 % of the simulation time) and only adds reset
    # fanout to flip-flops whose contents are ignored until valid.
    window = Signal(stage.window_layout, reset_less=True)
    # One register per output channel: Amaranth's netlist holds at most 65,536 bits per
    # signal driver, and a 32x32 weight set is 73,728.
    weight_set = [Signal(stage.weights_layout.elem_shape, name=f"weights{o}", reset_less=True)
                  for o in range(cfg.cpo)]
    valid = Signal()
    with m.If(advance):
        m.d.sync += [valid.eq(take), window.eq(stage.i.payload)]
        with m.If(take & first):
            m.d.sync += [weight_set[o].eq(stage.weights.payload[o]) for o in range(cfg.cpo)]
    return advance, window, weight_set, valid


class Mul(wiring.Component):
    """Window x weight set -> CPO partial sums, one window per cycle.

    Parameters
    ----------
    cfg : KernelConfig
        Gives CPI, CPO and the number formats.
    levels_per_register : int
        Adder-tree levels between two registers (1 or 2). Two carry-chain adders in a row
        stay well under the ~6 LUT levels allowed at 300 MHz and save half the registers.
    pack_dsp : bool
        Two products per multiplier (:func:`multiply`) where possible: 8-bit activations
        and weights and CPO >= 2; three with 4-bit activations and weights. ``packs_dsp``
        says whether this build does, ``products_per_multiplier`` how many. Off keeps one
        product per multiplier, to compare the structures.

    Members
    -------
    params : In(mul_params_layout(cfg))
        ``frame_pixels``: windows per frame (>= 1), constant while a call runs.
    i : In(window_signature(cfg))
        Windows; tap ``ky * 3 + kx`` of each lane.
    weights : In(weight_set_signature(cfg))
        One weight set ``[cpo][cpi][tap]`` per frame, taken with the frame's first window.
    o : Out(partial_signature(cfg))
        ``reference.mul_partial`` of each window, in order.

    ``latency`` is the number of cycles from a window being taken to its partial sums
    being offered on ``o`` when nothing stalls.
    """

    def __init__(self, cfg: KernelConfig, *, levels_per_register: int = 2, pack_dsp: bool = True):
        if levels_per_register not in (1, 2):
            raise ValueError(f"Mul: levels_per_register = {levels_per_register!r} is out of range: 1 or 2")
        self._cfg = cfg
        self._levels_per_register = levels_per_register
        #: products per multiplier: 2 (8-bit operands, CPO >= 2), 3 (4-bit operands), else 1
        if not pack_dsp:
            self.products_per_multiplier = 1
        elif cfg.act_bits == 4 and cfg.weight_bits == 4:
            self.products_per_multiplier = 3
        elif cfg.act_bits == 8 and cfg.weight_bits == 8 and cfg.cpo >= 2:
            self.products_per_multiplier = 2
        else:
            self.products_per_multiplier = 1
        #: whether products share multipliers in this build
        self.packs_dsp = self.products_per_multiplier > 1
        self.window_layout = window_layout(cfg)
        self.weights_layout = weight_set_layout(cfg)
        self.partial_layout = partial_layout(cfg)
        self.params_layout = mul_params_layout(cfg)
        super().__init__({
            "params": In(self.params_layout),
            "i": In(window_signature(cfg)),
            "weights": In(weight_set_signature(cfg)),
            "o": Out(partial_signature(cfg)),
        })
        tree_levels = math.ceil(math.log2(cfg.cpi * 9))
        #: operand registers + product registers + adder-tree registers
        self.latency = (1 + product_registers(self.packs_dsp)
                        + math.ceil(tree_levels / levels_per_register))

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        advance, window, weight_set, valid = operand_registers(m, self, cfg)

        # Product registers: lane o sums nodes[o].
        nodes = [[] for _ in range(cfg.cpo)]
        for c in range(cfg.cpi):
            for tap in range(9):
                shared = multiply(window[c][tap], [weight_set[o][c][tap] for o in range(cfg.cpo)],
                                  _pipeline_register(m, advance, f"c{c}_tap{tap}"),
                                  pack=3 if self.products_per_multiplier == 3 else self.packs_dsp)
                for o, product in enumerate(shared):
                    nodes[o].append(product)
        for k in range(product_registers(self.packs_dsp)):
            _, valid = self._register(m, advance, valid, [], f"product{k}")

        # Adder tree: pairwise sums, a register every `levels_per_register` levels.
        stage = 0
        while len(nodes[0]) > 1:
            for _ in range(self._levels_per_register):
                nodes = [_add_pairs(lane) for lane in nodes]
            nodes, valid = self._register(m, advance, valid, nodes, f"sum{stage}")
            stage += 1
        assert 1 + product_registers(self.packs_dsp) + stage == self.latency

        m.d.comb += self.o.valid.eq(valid)
        for o in range(cfg.cpo):
            # Exact: the sum of CPI x 9 products fits partial_bits by construction.
            m.d.comb += self.o.payload[o].eq(nodes[o][0])
        return m

    @staticmethod
    def _register(m, advance, valid, lanes, name):
        """One pipeline register for every value of ``lanes`` plus the valid bit."""
        registered = []
        for o, values in enumerate(lanes):
            row = []
            for k, value in enumerate(values):
                reg = Signal(value.shape(), name=f"{name}_{o}_{k}", reset_less=True)
                with m.If(advance):
                    m.d.sync += reg.eq(value)
                row.append(reg)
            registered.append(row)
        next_valid = Signal(name=f"{name}_valid")
        with m.If(advance):
            m.d.sync += next_valid.eq(valid)
        return registered, next_valid


def _pipeline_register(m, advance, prefix: str):
    """``register(value, name)`` for :func:`multiply`: a register loaded with ``value`` when
    the pipeline advances, named ``{prefix}_{name}``."""
    def register(value, name):
        reg = Signal(value.shape(), name=f"{prefix}_{name}", reset_less=True)
        with m.If(advance):
            m.d.sync += reg.eq(value)
        return reg
    return register


def _add_pairs(values: list) -> list:
    """One adder-tree level: neighbours summed, an odd last value passed through."""
    sums = [values[k] + values[k + 1] for k in range(0, len(values) - 1, 2)]
    if len(values) % 2:
        sums.append(values[-1])
    return sums
