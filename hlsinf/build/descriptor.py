"""The JSON descriptor of a built kernel: what a host needs to drive it, read instead of hard-coded.

The build writes ``descriptor.json`` next to the Verilog. It holds the design-time
configuration, the register map with offsets and widths, the operations the kernel
supports, the memory layouts with their address formulas, the number formats, and
versions. A host calls :func:`load_descriptor`, which checks the file and gives back the
:class:`~hlsinf.config.KernelConfig` it was built from, so a host never guesses which
kernel is on the card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hlsinf import __version__
from hlsinf.config import MAX_PAD, ConfigError, KernelConfig
from hlsinf.reference_float import CANONICAL_NAN
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE, act_dtype, bias_dtype, mult_dtype, weight_dtype
from hlsinf.registers import (ARGS_BASE, CONTROL, CONTROL_BITS, GIE, IER, ISR, OPTION_SCALARS, POINTERS,
                        POST_OP_POINTERS, POST_OP_SCALARS, SCALARS, STATUS, STATUS_BITS, STATUS_RESP_SHIFT,
                        post_op_groups, register_map)

__all__ = ["DESCRIPTOR_FORMAT", "DESCRIPTOR_VERSION", "DescriptorError", "element_types",
           "build_descriptor", "write_descriptor", "load_descriptor"]

DESCRIPTOR_FORMAT = "hlsinf-kernel-descriptor"
#: Bumped when a field changes meaning or disappears; hosts refuse versions they do not know.
DESCRIPTOR_VERSION = 1


class DescriptorError(ValueError):
    """A descriptor file is malformed or does not describe a kernel this host can drive."""



def _requantize_formula(cfg) -> str:
    """The requantisation of this build in words (docs/numbers.md): rounding and overflow modes."""
    if cfg.rounding == "round":
        v = "(acc * M + 2**(s - 1)) >> s"
    else:
        v = "(acc * M) >> s"
    if cfg.overflow == "wrap":
        sign = "signed" if cfg.act_signed else "unsigned"
        return f"clip(wrap(v, {cfg.act_bits} bits, {sign}), lo, hi), v = {v}" + (
            ", s = 0: v = acc * M" if cfg.rounding == "round" else "")
    if cfg.rounding == "round":
        return "clip((acc * M + 2**(s - 1)) >> s, lo, hi), s = 0: clip(acc * M, lo, hi)"
    return "clip((acc * M) >> s, lo, hi)"

def element_types(cfg: KernelConfig) -> dict[str, str]:
    """numpy name of the element each pointer argument points at."""
    types = {"x": np.dtype(act_dtype(cfg)).name, "w": np.dtype(weight_dtype(cfg)).name,
             "b": np.dtype(bias_dtype(cfg)).name, "m": np.dtype(mult_dtype(cfg)).name,
             "y": np.dtype(act_dtype(cfg)).name}
    if "bn" in cfg.post_ops:
        types["n"] = "float32" if cfg.is_float else "int32"     # post-op bn parameters, [GO][2][CPO]
    if "residual_add" in cfg.post_ops:
        types["r"] = types["y"]       # post-op residual_add operand, GOHWCPO activations
    if "table" in cfg.post_ops:
        types["t"] = np.dtype(act_dtype(cfg)).name   # post-op table, 2**act_bits entries
    return types


def _pool_modes(cfg: KernelConfig) -> dict[str, int]:
    modes = {"none": POOL_NONE}
    if cfg.with_maxpool:
        modes["max"] = POOL_MAX
    if cfg.with_avgpool:
        modes["avg"] = POOL_AVG
    return modes


_POST_OP_FORMULAS = {
    "leaky_relu": "v >= 0: v; else clip((v * leaky_alpha_num + 2**(leaky_alpha_shift - 1)) >> leaky_alpha_shift, "
                  "amin, amax), leaky_alpha_shift = 0: clip(v * leaky_alpha_num, amin, amax); needs relu = 0",
    "bn": "clip((v * m[c] + b[c] + 2**(bn_shift - 1)) >> bn_shift, bn_clip_lo, bn_clip_hi), bn_shift = 0: "
          "clip(v * m[c] + b[c], bn_clip_lo, bn_clip_hi); m[c] int16, b[c] int32 from n",
    "residual_add": "t = clip(v + ((r * r_mult + 2**(r_shift - 1)) >> r_shift), r_clip_lo, r_clip_hi) "
                    "(r_shift = 0: no rounding term); r_relu: max(t, 0); r the operand pixel at the same "
                    "position of the convolution output (before pooling)",
    "table": "t[v & (2**act_bits - 1)]: the entry of v's bit pattern in the 2**act_bits-entry table at t",
}


_FLOAT_POST_OP_FORMULAS = {
    "leaky_relu": "sign bit clear: v; else fmul(v, alpha), alpha the binary32 bits in leaky_alpha_num; "
                  "needs relu = 0",
    "bn": "fadd(fmul(v, m[c]), b[c]), m[c] and b[c] binary32 from n; no clip",
}


def _format_sections(cfg: KernelConfig, regs) -> tuple[dict, dict]:
    """The operations that depend on the number format (the pool's arithmetic, the
    requantisation or the fp32 clip) and the ``formats`` entries: the number format, which
    registers hold binary32 bits, and each element's encoding."""
    number = {"format_name": cfg.format_name, "number_format": cfg.number_format,
              "fp32_subnormals": cfg.fp32_subnormals if cfg.is_float else None,
              "binary32_registers": [reg.name for reg in regs if reg.binary32]}
    if cfg.is_float:
        operations = {
            "pool": {"max_order": "reference_float.max_key: by value, -0 < +0, a NaN without the sign above +inf",
                     "avg_rounding": "((y00 + y01) + (y10 + y11)) * 0.25, each step rounded to binary32"},
            "requantize": None,
            "clip": {"formula": "relu (sign bit set -> +0) if relu; then y < clip_lo -> clip_lo; then y > clip_hi "
                                "-> clip_hi, in max_key order",
                     "registers": "binary32 bits", "no_bound": {"clip_lo": 0xFFFFFFFF, "clip_hi": 0x7FFFFFFF}},
            "arithmetic": {"rounding": "nearest, ties to even, every product and sum (no fused multiply-add)",
                           "order": "CPI*9 products of a group by the fixed adder tree (reference_float.dot_tree), "
                                    "input groups accumulated in order, then the bias",
                           "subnormals": "kept (IEEE)" if cfg.fp32_subnormals else "flushed to zero (operands "
                                         "and results)",
                           "nan": f"every NaN result is 0x{CANONICAL_NAN:08X}"},
        }
        element = {"bits": 32, "encoding": "IEEE-754 binary32"}
        formats = {"number": number, "activation": element, "weight": element, "bias": element,
                   "accumulator": dict(element, bias_add="rounded binary32 add")}
        return operations, formats
    amin, amax = cfg.act_range
    operations = {
        "pool": {"avg_rounding": "(a + b + c + d + 2) >> 2"},
        "requantize": {"formula": _requantize_formula(cfg), "rounding": cfg.rounding, "overflow": cfg.overflow,
                       "max_shift": cfg.max_shift, "clip_range": [amin, amax]},
    }
    formats = {
        "number": number,
        "activation": {"bits": cfg.act_bits, "signed": cfg.act_signed, "range": [amin, amax]},
        "weight": {"bits": cfg.weight_bits, "signed": True, "range": list(cfg.weight_range)},
        "bias": {"bits": cfg.bias_bits, "signed": True},
        "accumulator": {"bits": cfg.acc_bits, "signed": True, "bias_add": "saturating"},
        "multiplier": {"bits": cfg.mult_bits, "signed": False},
    }
    return operations, formats


def build_descriptor(cfg: KernelConfig, *, kernel_name: str = "hlsinf_kernel", platform=None,
                     interface=None) -> dict:
    """The descriptor of a kernel built from ``cfg`` as a plain dict (JSON-ready).

    ``platform`` (an :class:`~hlsinf.build.platforms.alveo_u200.AlveoU200Platform`) and
    ``interface`` (a :class:`~hlsinf.build.platforms.vitis.KernelInterface`) add the part, clock,
    DDR banks and AXI widths when known.
    """
    regs = register_map(cfg)
    bundles = {}
    for reg in regs:
        if reg.kind == "pointer":
            entry = bundles.setdefault(reg.bundle, {"port": f"m_axi_{reg.bundle}", "args": []})
            entry["args"].append(reg.name)
            if interface is not None:
                entry.update(interface.master(reg.bundle))
            if platform is not None:
                entry["bank"] = platform.bank_of(reg.bundle)       # v++ sp= tag, e.g. DDR[0:1]
    operations, formats = _format_sections(cfg, regs)
    descriptor = {
        "format": DESCRIPTOR_FORMAT,
        "format_version": DESCRIPTOR_VERSION,
        "hlsinf_version": __version__,
        "kernel": {"name": kernel_name, "control_protocol": "ap_ctrl_hs"},
        "config": cfg.to_dict(),
        "control": {
            "registers": {"CTRL": CONTROL, "GIER": GIE, "IP_IER": IER, "IP_ISR": ISR, "STATUS": STATUS},
            "ctrl_bits": dict(CONTROL_BITS),
            "status": {"offset": STATUS, "access": "read-only", "valid": "once ap_done is set; cleared at ap_start",
                       "error_bits": dict(STATUS_BITS), "resp_shift": dict(STATUS_RESP_SHIFT),
                       "resp": {"2": "SLVERR", "3": "DECERR"},
                       "on_error": "the call runs to its end; its output is not valid"},
            "args_base": ARGS_BASE,
            "word_bits": 32,
            "pointer_words": "low word at offset, high word at offset + 4",
        },
        "registers": [reg.to_dict() for reg in regs],
        "bundles": bundles,
        "operations": {
            "conv": {"kernel": [3, 3], "strides": [1, 2], "max_pad": MAX_PAD,
                     "pad_sides": ["pad_top", "pad_bottom", "pad_left", "pad_right"]},
            **({"depthwise": {"kernel": [3, 3], "strides": [1, 2], "max_pad": MAX_PAD, "register": "depthwise",
                              "requires": "I == O; output group g reads input group g (CPI == CPO)"}}
               if cfg.with_depthwise else {}),
            **({"acc_split": {"registers": ["acc_hold", "acc_resume"],
                              "requires": "o_count * conv_rows * conv_cols <= max_frame_pixels while either is on; "
                                          "held sums must fit acc_bits",
                              "max_frame_pixels": cfg.max_frame_pixels}}
               if cfg.with_acc_split else {}),
            **({"pointwise": {"kernel": [1, 1], "strides": [1], "max_pad": 0, "register": "pointwise",
                              "requires": "input in super-pixels (layouts.superpixels), weights as "
                                          "layouts.pointwise_weights"}}
               if cfg.with_pointwise else {}),
            "relu": cfg.with_relu,
            "multiplier": cfg.with_multiplier,
            "pool": {"modes": _pool_modes(cfg), "size": 2, "stride": 2, **operations.pop("pool")},
            **operations,
            "limits": {"imax": cfg.imax, "wmax": cfg.wmax, "hmax": cfg.hmax},
            # Element-wise post-operations, in the order the kernel applies them (between the
            # requantisation and the pooling); each with its registers (the first: enable).
            "post_ops": [{"name": op, "registers": [name for name, _, _ in POST_OP_SCALARS[op]]
                          + [name for name, _, _ in POST_OP_POINTERS.get(op, ())],
                          "formula": (_FLOAT_POST_OP_FORMULAS if cfg.is_float else _POST_OP_FORMULAS)[op]}
                         for op in cfg.post_ops],
            # Nearest upsampling after pooling: register "upsize" holds the factor.
            "upsize": {"factors": [f for f in (1, 2, 4) if f <= cfg.max_upsize], "mode": "nearest",
                       "after": "pool", "register": "upsize" if cfg.max_upsize > 1 else None},
        },
        "layouts": {
            "activations": {"name": "GIHWCPI", "group": cfg.cpi,
                            "address": "(c // CPI) * plane * CPI + (h * W + w) * CPI + c % CPI",
                            "note": "plane = H * W pixels; channels zero-padded to whole groups of CPI"},
            "outputs": {"name": "GOHWCPO", "group": cfg.cpo,
                        "address": "(o // CPO) * out_plane * CPO + (write_offset + r * out_cols + q) * CPO + o % CPO",
                        "note": "channels zero-padded to whole groups of CPO"},
            "weights": {"name": "GO GI CPO CPI 3 3",
                        "address": "((((o // CPO) * GI + c // CPI) * CPO + o % CPO) * CPI + c % CPI) * 9 + ky * 3 + kx",
                        "note": "GI = ceil(I / CPI), GO = ceil(O / CPO); zero-padded"},
            **({"depthwise_weights": {"name": "G CPO 3 3", "address": "((c // CPO) * CPO + c % CPO) * 9 + ky * 3 + kx",
                                      "note": "calls with depthwise = 1; G = ceil(C / CPO); zero-padded"}}
               if cfg.with_depthwise else {}),
            **({"superpixels": {"name": "GS H W 9 CPI", "group": 9 * cfg.cpi,
                                "address": "(c // (9 * CPI)) * plane * 9 * CPI + (h * W + w) * 9 * CPI + c % (9 * CPI)",
                                "note": "input of calls with pointwise = 1; GS = ceil(I / (9 * CPI)); zero-padded"},
                "pointwise_weights": {"name": "GO GS CPO CPI 9",
                                      "address": "((((o // CPO) * GS + c // (9 * CPI)) * CPO + o % CPO) * CPI + c % CPI)"
                                                 " * 9 + (c // CPI) % 9",
                                      "note": "calls with pointwise = 1; zero-padded"}}
               if cfg.with_pointwise else {}),
            "bias": {"name": "GO*CPO", "address": "o"},
            "multipliers": {"name": "GO*CPO", "address": "o", "note": f"32-bit words, low {cfg.mult_bits} bits used"},
            **({"bn": {"name": "GO 2 CPO", "address": "((o // CPO) * 2 + k) * CPO + o % CPO",
                       "note": "binary32 words; k = 0: multiplier, k = 1: bias" if cfg.is_float else
                               "int32 words; k = 0: multiplier (low 16 bits, signed), k = 1: bias"}}
               if "bn" in cfg.post_ops else {}),
            **({"residual": {"name": "GOHWCPO", "address": "((o // CPO) * r_plane + r_offset + h * conv_cols + w) "
                                                           "* CPO + o % CPO",
                             "note": "the convolution output's shape (before pooling); on gmem_in"}}
               if "residual_add" in cfg.post_ops else {}),
            **({"table": {"name": "2**act_bits", "address": "v & (2**act_bits - 1)",
                          "note": "entry i: the output for the input of bit pattern i, an activation"}}
               if "table" in cfg.post_ops else {}),
        },
        "formats": {"pointers": element_types(cfg), **formats},
    }
    if platform is not None:
        descriptor["platform"] = {"board": type(platform).__name__, "part": platform.part,
                                  "vitis_platform": platform.vitis_platform,
                                  "clock_hz": int(platform.default_clk_frequency)}
    return descriptor


def write_descriptor(path, cfg: KernelConfig, **kwargs) -> dict:
    """Write :func:`build_descriptor` as indented JSON to ``path``; return the dict."""
    descriptor = build_descriptor(cfg, **kwargs)
    Path(path).write_text(json.dumps(descriptor, indent=2) + "\n")
    return descriptor


def _need(path, ok: bool, what: str):
    if not ok:
        raise DescriptorError(f"{path}: {what}")


def load_descriptor(path) -> tuple[KernelConfig, dict]:
    """Read and check a descriptor; return ``(KernelConfig, descriptor dict)``.

    Checks: the format name and version, the configuration (through ``KernelConfig``),
    and the register map: every argument this host encodes is present once, 32-bit
    scalars and 64-bit pointers at 4-byte aligned, non-overlapping offsets from
    ``args_base`` on. Errors name the file and the field.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DescriptorError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise DescriptorError(f"{path}: not JSON: {e}") from None
    _need(path, isinstance(data, dict) and data.get("format") == DESCRIPTOR_FORMAT,
          f"'format' is not {DESCRIPTOR_FORMAT!r}: not an hlsinf kernel descriptor")
    version = data.get("format_version")
    _need(path, version == DESCRIPTOR_VERSION,
          f"format_version {version!r} is not supported: this hlsinf ({__version__}) reads version {DESCRIPTOR_VERSION}")
    _need(path, isinstance(data.get("config"), dict), "'config' is missing or not an object")
    try:
        cfg = KernelConfig.from_dict(data["config"])
    except (ConfigError, TypeError) as e:
        raise DescriptorError(f"{path}: config: {e}") from None

    regs = data.get("registers")
    _need(path, isinstance(regs, list) and regs, "'registers' is missing or empty")
    base = data.get("control", {}).get("args_base", ARGS_BASE)
    expected = {name: "scalar" for name, _, _ in SCALARS} | {name: "pointer" for name, _, _ in POINTERS}
    expected |= {name: "scalar" for op in post_op_groups(cfg) for name, _, _ in POST_OP_SCALARS[op]}
    expected |= {name: "pointer" for op in post_op_groups(cfg) for name, _, _ in POST_OP_POINTERS.get(op, ())}
    expected |= {name: "scalar" for option, scalars in OPTION_SCALARS.items() if getattr(cfg, option)
                 for name, _, _ in scalars}
    seen = {}
    for i, reg in enumerate(regs):
        _need(path, isinstance(reg, dict) and {"name", "offset", "bits", "kind"} <= set(reg),
              f"registers[{i}] needs name, offset, bits and kind")
        name = reg["name"]
        _need(path, name in expected, f"register {name!r} is not an argument this host knows: {sorted(expected)}")
        _need(path, name not in seen, f"register {name!r} appears twice")
        _need(path, reg["kind"] == expected[name], f"register {name!r} has kind {reg['kind']!r}, expected {expected[name]!r}")
        bits = 64 if reg["kind"] == "pointer" else 32
        _need(path, reg["bits"] == bits, f"register {name!r} is {reg['bits']} bits wide, expected {bits}")
        offset = reg["offset"]
        _need(path, isinstance(offset, int) and offset >= base and offset % 4 == 0,
              f"register {name!r} offset {offset!r} must be a multiple of 4 from args_base 0x{base:x} on")
        for other, (lo, hi) in seen.items():
            _need(path, offset + bits // 8 <= lo or offset >= hi, f"register {name!r} overlaps {other!r}")
        seen[name] = (offset, offset + bits // 8)
        if reg["kind"] == "pointer":
            _need(path, bool(reg.get("bundle")), f"pointer register {name!r} has no bundle")
    missing = sorted(set(expected) - set(seen))
    _need(path, not missing, f"registers {missing} are missing")

    modes = data.get("operations", {}).get("pool", {}).get("modes", {})
    _need(path, ("max" in modes) == cfg.with_maxpool and ("avg" in modes) == cfg.with_avgpool,
          f"operations.pool.modes {sorted(modes)} disagree with config with_maxpool/with_avgpool")
    return cfg, data
