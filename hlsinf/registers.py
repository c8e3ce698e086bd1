"""The kernel's register map on ``s_axi_control``: Vitis ``ap_ctrl_hs`` plus one register per argument.

One table serves the gateware (which decodes it), the build (which writes it into
``kernel.xml``, the ``package_xo`` script and the JSON descriptor) and the hosts (which
encode a :class:`~hlsinf.reference.CallArgs` with it), so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from hlsinf.reference import CallArgs

__all__ = ["Register", "CONTROL", "GIE", "IER", "ISR", "ARGS_BASE", "SCALARS", "POINTERS",
           "register_map", "encode_call", "CONTROL_BITS", "STATUS", "STATUS_BITS", "STATUS_RESP_SHIFT",
           "RESP_NAMES", "decode_status", "FLOAT_SCALARS", "post_op_groups", "POST_OP_SCALARS", "POST_OP_POINTERS",
           "POST_BASE", "OPTION_SCALARS"]

CONTROL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
ARGS_BASE = 0x10
#: Bits of the control register (Vitis ap_ctrl_hs).
CONTROL_BITS = {"ap_start": 0, "ap_done": 1, "ap_idle": 2, "ap_ready": 3, "auto_restart": 7}


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    bits: int                 #: 32 for scalars, 64 for pointers (two 32-bit words, low word first)
    kind: str                 #: "scalar" or "pointer"
    signed: bool = False
    bundle: str | None = None #: AXI master bundle of a pointer (port prefix m_axi_<bundle>_)
    doc: str = ""
    binary32: bool = False    #: the word holds the bits of a binary32 value (fp32 kernels' clip bounds)

    def to_dict(self) -> dict:
        return {"name": self.name, "offset": self.offset, "bits": self.bits, "kind": self.kind,
                "signed": self.signed, "bundle": self.bundle, "doc": self.doc, "binary32": self.binary32}


#: Scalar arguments, in register order; names are CallArgs fields.
SCALARS: tuple[tuple[str, bool, str], ...] = (
    ("H", False, "height of the input image in memory; an input plane is H*W pixels"),
    ("W", False, "width of the input image and of this call's tile"),
    ("rows", False, "input rows this call reads, from read_offset on"),
    ("I", False, "input channels"),
    ("O", False, "output channels of the layer (weights and bias hold ceil(O/CPO) groups)"),
    ("pad_top", False, "zero rows above the tile"),
    ("pad_bottom", False, "zero rows below the tile"),
    ("pad_left", False, "zero columns left of the tile"),
    ("pad_right", False, "zero columns right of the tile"),
    ("stride", False, "convolution stride, 1 or 2"),
    ("o_first", False, "first output group this call computes"),
    ("o_count", False, "number of output groups this call computes"),
    ("relu", False, "1: clip at 0 (ReLU)"),
    ("clip_lo", True, "lower saturation bound of the requantised output"),
    ("clip_hi", True, "upper saturation bound of the requantised output"),
    ("shift", False, "requantisation right shift s (rounds half up)"),
    ("use_mult", False, "1: multiply by the per-channel multipliers at m before the shift"),
    ("pool", False, "0 none, 1 max 2x2, 2 average 2x2 (stride 2)"),
    ("read_offset", False, "first input pixel of the tile within each input plane"),
    ("write_offset", False, "first output pixel within each output plane"),
    ("out_plane", False, "pixels per output plane"),
)

#: Scalars that hold binary32 bits in an fp32 kernel, with their meaning there.
FLOAT_SCALARS: dict[str, str] = {
    "clip_lo": "binary32 bits of the lower clip bound, compared in max_key order; 0xFFFFFFFF: none",
    "clip_hi": "binary32 bits of the upper clip bound, compared in max_key order; 0x7FFFFFFF: none",
    "leaky_alpha_num": "post-op: binary32 bits of the leaky ReLU slope (leaky_alpha_shift must be 0)",
}

#: Pointer arguments: name, AXI bundle, what they point at.
POINTERS: tuple[tuple[str, str, str], ...] = (
    ("x", "gmem_in", "input activations, GIHWCPI"),
    ("w", "gmem_w", "weights, [GO][GI][CPO][CPI][3][3]"),
    ("b", "gmem_w", "bias, [GO*CPO] words of bias_bits"),
    ("m", "gmem_w", "requantisation multipliers, [GO*CPO] 32-bit words"),
    ("y", "gmem_out", "output activations, GOHWCPO"),
)


#: Run-time registers of each post-operation (``KernelConfig.post_ops``), present only in a
#: kernel built with it: name (a CallArgs field), signed, meaning. The first is its enable.
POST_OP_SCALARS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "leaky_relu": (
        ("leaky_relu", False, "post-op: 1: leaky ReLU on (needs relu = 0)"),
        ("leaky_alpha_num", False, "post-op: leaky ReLU slope numerator, 0 to 65535"),
        ("leaky_alpha_shift", False, "post-op: leaky ReLU slope shift, 0 to 31: slope = num / 2**shift"),
    ),
    "bn": (
        ("bn", False, "post-op: 1: batch-norm affine on (per-channel multiplier and bias at n)"),
        ("bn_shift", False, "post-op: batch-norm right shift, 0 to 31 (rounds half up)"),
        ("bn_clip_lo", True, "post-op: batch-norm lower saturation bound"),
        ("bn_clip_hi", True, "post-op: batch-norm upper saturation bound"),
    ),
    "residual_add": (
        ("residual_add", False, "post-op: 1: residual add on (operand at r, added before pooling)"),
        ("r_mult", False, "post-op: residual operand multiplier, 0 to 65535"),
        ("r_shift", False, "post-op: residual operand right shift, 0 to 31 (rounds half up)"),
        ("r_relu", False, "post-op: 1: ReLU after the residual add"),
        ("r_clip_lo", True, "post-op: residual add lower saturation bound"),
        ("r_clip_hi", True, "post-op: residual add upper saturation bound"),
        ("r_offset", False, "post-op: first operand pixel within each operand plane"),
        ("r_plane", False, "post-op: pixels per operand plane (GOHWCPO, convolution output shape)"),
    ),
    "table": (
        ("table", False, "post-op: 1: y = t[y & (2**act_bits - 1)], the lookup table at t"),
    ),
}

#: Pointer arguments of the post-operations (after their scalars, 8-byte aligned).
#: Registers of the design-time stages after pooling (present when built): the same area as
#: the post-operations, after theirs.
POST_OP_SCALARS["upsize"] = (
    ("upsize", False, "nearest upsampling factor after pooling: 1 (none), 2 or 4 (up to max_upsize)"),
)

POST_OP_POINTERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "bn": (("n", "gmem_w", "post-op: batch-norm parameters, [GO][2][CPO] int32 words: "
                           "CPO multipliers (low 16 bits, signed), then CPO biases"),),
    "residual_add": (("r", "gmem_in", "post-op: residual operand, GOHWCPO activations of the "
                                      "convolution output's shape"),),
    "table": (("t", "gmem_w", "post-op: lookup table, 2**act_bits entries of act_bits: entry i is the "
                              "output for the input whose bit pattern is i"),),
}


def post_op_groups(cfg=None) -> tuple[str, ...]:
    """The keys of :data:`POST_OP_SCALARS` a kernel built with ``cfg`` has, in register order:
    its post-operations in their order, then the stages after pooling it is built with."""
    if cfg is None:
        return ()
    return tuple(cfg.post_ops) + (("upsize",) if cfg.max_upsize > 1 else ())


#: Run-time registers of design-time options (a ``KernelConfig`` bool field), present only in a
#: kernel built with the option, after every post-op register: option, then (name, signed, meaning).
OPTION_SCALARS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "with_depthwise": (
        ("depthwise", False, "1: depthwise 3x3 (output channel c convolves input channel c only; I = O); "
                             "weights [G][CPO][3][3] at w"),
    ),
    "with_acc_split": (
        ("acc_hold", False, "1: keep each output group's partial sums on chip (no bias, no output, no write, "
                            "no multiplier/post-op/residual reads); rows k*frame_pixels.. for group k"),
        ("acc_resume", False, "1: each output group's sum starts from its row held by the previous call "
                              "instead of 0"),
    ),
    "with_pointwise": (
        ("pointwise", False, "1: 1x1 convolution at full rate: input in super-pixels [GS][H][W][9][CPI] at x "
                             "(GS = ceil(I / (9 CPI))), weight sets [GO][GS][CPO][CPI][9]; stride 1, no padding; "
                             "I up to 9 x imax"),
    ),
}


def register_map(cfg=None) -> list[Register]:
    """Every argument register from ``ARGS_BASE``: 32-bit scalars, then 8-byte aligned pointers;
    then, for a ``cfg`` built with post-operations, their registers from :data:`POST_BASE`
    on, in the order of ``cfg.post_ops`` (so every other offset is the same for every build);
    then the registers of the design-time options it is built with (:data:`OPTION_SCALARS`)."""
    regs, offset = [], ARGS_BASE
    is_float = cfg is not None and cfg.is_float
    for name, signed, doc in SCALARS:
        if is_float and name in FLOAT_SCALARS:
            regs.append(Register(name, offset, 32, "scalar", signed=False, doc=FLOAT_SCALARS[name], binary32=True))
        else:
            regs.append(Register(name, offset, 32, "scalar", signed=signed, doc=doc))
        offset += 4
    offset = (offset + 7) // 8 * 8
    for name, bundle, doc in POINTERS:
        regs.append(Register(name, offset, 64, "pointer", bundle=bundle, doc=doc))
        offset += 8
    assert offset <= STATUS, "the argument registers run into the status register"
    offset = POST_BASE
    post_ops = post_op_groups(cfg)
    for op in post_ops:
        for name, signed, doc in POST_OP_SCALARS[op]:
            if is_float and name in FLOAT_SCALARS:
                regs.append(Register(name, offset, 32, "scalar", signed=False, doc=FLOAT_SCALARS[name],
                                     binary32=True))
            else:
                regs.append(Register(name, offset, 32, "scalar", signed=signed, doc=doc))
            offset += 4
    offset = (offset + 7) // 8 * 8
    for op in post_ops:
        for name, bundle, doc in POST_OP_POINTERS.get(op, ()):
            regs.append(Register(name, offset, 64, "pointer", bundle=bundle, doc=doc))
            offset += 8
    for option, scalars in OPTION_SCALARS.items():
        if cfg is not None and getattr(cfg, option, False):
            for name, signed, doc in scalars:
                regs.append(Register(name, offset, 32, "scalar", signed=signed, doc=doc))
                offset += 4
    return regs


#: Read-only status word of the last call, right after the pointer arguments (0x90). Cleared
#: when a call starts, final once ``ap_done`` is set. Bit ``STATUS_BITS[bundle]`` is set when
#: that bundle's AXI master saw a response other than OKAY (an R response on ``gmem_in`` or
#: ``gmem_w``, a B response on ``gmem_out``); bits ``STATUS_RESP_SHIFT[bundle]`` + 1..0 hold
#: the first such response (2 SLVERR, 3 DECERR, 1 EXOKAY). 0 means a clean call.
STATUS = 0x90
STATUS_BITS = {"gmem_in": 0, "gmem_w": 1, "gmem_out": 2}
STATUS_RESP_SHIFT = {"gmem_in": 8, "gmem_w": 10, "gmem_out": 12}
RESP_NAMES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}
#: First register of the post-operations, right after the status register.
POST_BASE = STATUS + 4


def decode_status(word: int) -> dict[str, str]:
    """The bundles whose master saw an error in a status word, with the first response:
    ``{"gmem_w": "SLVERR"}``; empty for a clean call."""
    return {bundle: RESP_NAMES[(word >> STATUS_RESP_SHIFT[bundle]) & 3]
            for bundle, bit in STATUS_BITS.items() if word >> bit & 1}


def encode_call(args: CallArgs, cfg, pointers: dict[str, int]) -> dict[int, int]:
    """The 32-bit words a host writes for one call: ``{offset: value}``, defaults resolved.

    ``pointers`` maps each of x, w, b, m, y to a byte address. Arguments are validated
    against ``cfg`` first, so a host never starts the kernel with a bad call.
    """
    args.validate(cfg)
    lo, hi = args.clip_bounds(cfg)
    values = args.to_dict()
    bn_lo, bn_hi = args.bn_bounds(cfg)
    values.update(bn_clip_lo=bn_lo, bn_clip_hi=bn_hi)
    r_lo, r_hi = args.r_bounds(cfg)
    r_offset, r_plane = args.residual_geometry()
    values.update(r_clip_lo=r_lo, r_clip_hi=r_hi, r_offset=r_offset, r_plane=r_plane,
                  residual_add=int(args.residual_add), r_relu=int(args.r_relu))
    values.update(o_count=len(args.groups(cfg)), clip_lo=lo, clip_hi=hi,
                  relu=int(args.relu), use_mult=int(args.use_mult), out_plane=args.plane_out(),
                  depthwise=int(args.depthwise), pointwise=int(args.pointwise), acc_hold=int(args.acc_hold),
                  acc_resume=int(args.acc_resume))
    words = {}
    for reg in register_map(cfg):
        if reg.kind == "pointer":
            if reg.name not in pointers and reg.offset > STATUS:
                pointers = {**pointers, reg.name: 0}     # a post-op's, unused by this call
            if reg.name not in pointers:
                raise ValueError(f"encode_call: pointer argument {reg.name!r} missing")
            address = int(pointers[reg.name])
            words[reg.offset] = address & 0xFFFF_FFFF
            words[reg.offset + 4] = (address >> 32) & 0xFFFF_FFFF
        else:
            words[reg.offset] = int(values[reg.name]) & 0xFFFF_FFFF
    return words
