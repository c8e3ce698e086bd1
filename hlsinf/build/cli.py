"""``python -m hlsinf.build``: one KernelConfig -> an output folder ready for the Vitis flow.

The folder holds the kernel Verilog, its Vitis RTL kernel packaging for the Alveo U200
(``kernel.xml``, ``package.tcl``, ``link.cfg``, ``README.md``), the JSON descriptor hosts
read, and on request a Yosys resource report and a Verilator lint. Every option of
:class:`~hlsinf.config.KernelConfig` is a flag, so the CLI cannot fall behind the config;
the config is validated before a single file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import threading
import time
from pathlib import Path

from hlsinf import __version__
from hlsinf.config import (NUMBER_FORMATS, OVERFLOW_MODES, POST_OPS, ROUNDING_MODES, ConfigError, KernelConfig)
from hlsinf.registers import register_map

__all__ = ["config_options", "make_parser", "config_from_args", "build", "register_map_markdown", "main"]

#: What each generated file is, by file name (used in the README and docs/build.md).
VERILOG_FILE = "{top}.v"
DESCRIPTOR_FILE = "descriptor.json"


def config_options() -> list[tuple[str, type, object, str]]:
    """``(field, type, default, doc)`` for every KernelConfig field, docs from its ``#:`` comments."""
    source = inspect.getsource(KernelConfig)
    docs = dict(re.findall(r"^\s+(\w+)\s*:\s*[\w|\[\], .]+=\s*[^#\n]*#:\s*(.*)$", source, re.M))
    options = []
    for f in dataclasses.fields(KernelConfig):
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        kind = {"int": int, "bool": bool, "str": str, "tuple[str, ...]": tuple}.get(type_name)
        if kind is None:
            raise TypeError(f"KernelConfig.{f.name}: the CLI knows int, str, bool and tuple fields, not {f.type}")
        options.append((f.name, kind, f.default, docs.get(f.name, "")))
    return options


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hlsinf.build",
        description="Generate the hlsinf kernel for one configuration: Verilog, Vitis RTL kernel "
                    "packaging for the Alveo U200 (kernel.xml, package.tcl, link.cfg, README.md) "
                    "and descriptor.json.",
        epilog="Example: python -m hlsinf.build --cpi 8 --cpo 8 --report --lint")
    config = parser.add_argument_group("kernel configuration (hlsinf.config.KernelConfig)")
    config.add_argument("--format", dest="format", default=None, metavar="NAME",
                        help="number format of the datapath, setting the fields it implies (the other "
                             "flags override them): int8, uint8, int4, uint4, int16, uint16, fixed<W,I> "
                             "(e.g. 'fixed<8,4>') or fp32 (default: the fields' own defaults, uint8 "
                             "activations and int8 weights)")
    # Config flags default to None ("not given"): the format's fields, then KernelConfig's
    # own defaults, fill what is not given.
    choices = {"number_format": NUMBER_FORMATS, "rounding": ROUNDING_MODES, "overflow": OVERFLOW_MODES}
    for name, kind, default, doc in config_options():
        if kind is bool:
            config.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                                default=None,
                                help=f"{doc} (default: {_flag(name) if default else '--no-' + _flag(name)[2:]})")
        elif kind is tuple:      # post_ops: comma-separated names, KernelConfig validates them
            config.add_argument(_flag(name), dest=name, type=_name_list, default=None, metavar="A,B",
                                help=f"{doc}, comma-separated, from {', '.join(POST_OPS)} "
                                     f"(default: {','.join(default) or 'none'})")
        elif kind is str:
            config.add_argument(_flag(name), dest=name, default=None, choices=choices.get(name),
                                help=f"{doc} (default: {default})")
        else:
            config.add_argument(_flag(name), dest=name, type=int, default=None, metavar="N",
                                help=f"{doc} (default: {default})")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder (default: build/hlsinf_<cpi>x<cpo>, with _<format> for a format "
                          "other than uint8, e.g. build/hlsinf_4x4_fp32)")
    out.add_argument("--report", action=argparse.BooleanOptionalAction, default=False,
                     help="also synthesise with Yosys (synth_xilinx -family xcup, needs the `yosys` "
                          "package) and write resources.json/.md; off by default because it takes "
                          "minutes for large kernels: about 3.5 min for 8x8 (default: --no-report)")
    out.add_argument("--lint", action="store_true", default=False,
                     help="also lint the Verilog with Verilator -Wall (waivers in <top>.vlt); "
                          "exit 1 on lint errors (default: off)")
    out.add_argument("--quiet", action="store_true", default=False, help="no progress output")
    out.add_argument("--print-register-map", action="store_true", default=False,
                     help="print the register map as a markdown table and exit")
    parser.add_argument("--version", action="version", version=f"hlsinf {__version__}")
    return parser


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> KernelConfig:
    """Build the KernelConfig; on a bad value exit 2 with a message naming the flag."""
    given = {name: getattr(args, name) for name, *_ in config_options() if getattr(args, name, None) is not None}
    try:
        if getattr(args, "format", None):
            return KernelConfig.from_format(args.format, **given)
        return KernelConfig(**given)
    except ConfigError as e:
        message = str(e)
        names = re.findall(r"KernelConfig\.(\w+(?:\s*\*\s*\w+)*)", message)
        flags = [_flag(n.strip()) for part in names[:1] for n in part.split("*")]
        if not flags and message.startswith("format "):
            flags = ["--format"]
        parser.error(f"{' '.join(flags) or 'configuration'}: {message}")


def register_map_markdown(cfg: KernelConfig | None = None) -> str:
    """The s_axi_control register map as a markdown table (docs/build.md embeds it); with a
    ``cfg`` built with post-operations, their registers after the status register."""
    from hlsinf.build.platforms.vitis import CONTROL_REGISTERS, STATUS_REGISTER
    rows = ["| offset | name | bits | kind | bundle | meaning |", "|---:|---|---:|---|---|---|"]
    rows += [f"| 0x{offset:02X} | {name} | 32 | control |  | {doc} |" for name, offset, doc in CONTROL_REGISTERS]
    for reg in register_map():
        kind = reg.kind + (", signed" if reg.signed else "")
        rows.append(f"| 0x{reg.offset:02X} | {reg.name} | {reg.bits} | {kind} | {reg.bundle or ''} | {reg.doc} |")
    name, offset, doc = STATUS_REGISTER
    rows.append(f"| 0x{offset:02X} | {name} | 32 | status |  | {doc} |")
    for reg in register_map(cfg)[len(register_map()):]:
        kind = reg.kind + (", signed" if reg.signed else "")
        rows.append(f"| 0x{reg.offset:02X} | {reg.name} | {reg.bits} | {kind} | {reg.bundle or ''} | {reg.doc} |")
    return "\n".join(rows) + "\n"


def _say(quiet: bool, text: str):
    if not quiet:
        print(text, file=sys.stderr, flush=True)


class _Ticker:
    """Shows that a long step without progress hooks (Amaranth's Verilog conversion) is alive:
    elapsed seconds rewritten in place on a terminal, a line every 30 s in a log."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet = label, quiet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        tty, start = sys.stderr.isatty(), time.monotonic()
        while not self._stop.wait(1 if tty else 30):
            elapsed = time.monotonic() - start
            if tty:
                print(f"\r\033[K  {self.label}: {elapsed:.0f} s", end="", file=sys.stderr, flush=True)
            else:
                print(f"  {self.label}: still running after {elapsed:.0f} s", file=sys.stderr, flush=True)
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    def __enter__(self):
        if not self.quiet:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _kernel_verilog(cfg: KernelConfig) -> str:
    try:
        from hlsinf.gateware.kernel import kernel_verilog
    except ImportError as e:
        raise RuntimeError(f"cannot generate the kernel: hlsinf.gateware.kernel.kernel_verilog is not available ({e})") from None
    return kernel_verilog(cfg)


def build(cfg: KernelConfig, out_dir, *, platform=None, report: bool = False, lint: bool = False,
          quiet: bool = False, verilog: str | None = None) -> dict:
    """Write the output folder for ``cfg``; return ``{role: Path}`` of every file written.

    ``verilog`` replaces the generated kernel (tests use it to package small designs).
    Raises ``RuntimeError`` when the lint fails (after writing its output to ``lint.log``).
    """
    from hlsinf.build.descriptor import element_types, write_descriptor
    from hlsinf.build.platforms.alveo_u200 import AlveoU200Platform
    from hlsinf.build.platforms.vitis import KernelInterface, write_packaging

    platform = platform or AlveoU200Platform()
    out = Path(out_dir)
    start = time.monotonic()
    _say(quiet, f"hlsinf.build: generating the {cfg.cpi}x{cfg.cpo} kernel ...")
    with _Ticker("elaborating and writing Verilog", quiet or verilog is not None):
        text = _kernel_verilog(cfg) if verilog is None else verilog
    interface = KernelInterface.from_verilog(text)
    regs = register_map(cfg)
    interface.check(regs)           # before any file is written
    out.mkdir(parents=True, exist_ok=True)

    files = {"verilog": out / VERILOG_FILE.format(top=interface.name)}
    files["verilog"].write_text(text)
    _say(quiet, f"  Verilog: {files['verilog']} ({len(text.splitlines())} lines, "
                f"{time.monotonic() - start:.1f} s)")
    files["descriptor"] = out / DESCRIPTOR_FILE
    write_descriptor(files["descriptor"], cfg, kernel_name=interface.name, platform=platform,
                     interface=interface)
    extra = {"JSON descriptor for hosts (config, register map, layouts)": DESCRIPTOR_FILE}
    if report:
        extra["resource report (Yosys)"] = "resources.md"
    if lint:
        extra["Verilator lint waivers, each with its reason"] = f"{interface.name}.vlt"
    files.update(write_packaging(out, platform, interface, regs, element_types(cfg),
                                 files["verilog"].name, extra))

    if lint:
        from hlsinf.build.lint import lint as run_lint
        _say(quiet, "  lint: verilator --lint-only -Wall ...")
        lint_start = time.monotonic()
        with _Ticker("lint", quiet):
            result = run_lint(files["verilog"], interface.name)
        files["lint_waivers"] = files["verilog"].with_suffix(".vlt")
        files["lint_log"] = out / "lint.log"
        files["lint_log"].write_text(" ".join(result.command) + "\n" + result.output)
        if not result.ok:
            raise RuntimeError("lint failed:\n" + "\n".join(result.messages[:40]))
        _say(quiet, f"  lint: clean ({time.monotonic() - lint_start:.1f} s)")

    if report:
        from hlsinf.build.resources import resource_report, write_report
        _say(quiet, "  resources: yosys synth_xilinx ...")
        rep = resource_report(files["verilog"], interface.name, platform.fabric, out,
                              family=platform.yosys_family, progress=not quiet)
        paths = write_report(rep, out)
        files["resources_json"], files["resources_md"] = paths["json"], paths["markdown"]
        files["yosys_log"] = out / "yosys.log"
        _say(quiet, "  resources: " + ", ".join(
            f"{k} {rep.counts[k]:g} ({100 * rep.shares[k]:.1f} %)" for k in platform.fabric)
             + f"; {rep.depth['lut_levels']} LUT levels")
    _say(quiet, f"hlsinf.build: wrote {len(files)} files to {out} in {time.monotonic() - start:.1f} s")
    return files


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args, parser)
    if args.print_register_map:
        print(register_map_markdown(cfg), end="")
        return 0
    suffix = "" if cfg.format_name == "uint8" else "_" + re.sub(r"[^a-z0-9]+", "_", cfg.format_name).strip("_")
    out = args.out or Path("build") / f"hlsinf_{cfg.cpi}x{cfg.cpo}{suffix}"
    try:
        build(cfg, out, report=args.report, lint=args.lint, quiet=args.quiet)
    except Exception as e:     # tool failures: one clear line, not a traceback
        if not isinstance(e, (RuntimeError, ValueError, OSError)):
            raise
        print(f"hlsinf.build: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
