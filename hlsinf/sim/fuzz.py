"""Seeded random kernel calls in the C++ Verilator harness, checked bit for bit.

Call ``i`` of a run with seed ``s`` is drawn from ``np.random.default_rng([s, i])`` alone, so
any call can be drawn again (:func:`draw`) without the calls before it: every argument the
kernel takes (:func:`random_call`) and the memory and host behaviour of the call
(:func:`random_axi`: per-burst latencies, pauses on every AXI channel, now and then an
injected SLVERR/DECERR or a reset in the middle of the call). The calls run back to back on
one simulated kernel per build (:class:`hlsinf.sim.harness.Server`), as on a card, so a call
also checks that the one before it (an error, a reset) left the kernel clean. Used by
``benchmarks/fuzz.py`` and the CI slice ``tests/sim/test_fuzz.py``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hlsinf.config import MAX_PAD, KernelConfig
from hlsinf.reference import POOL_AVG, POOL_MAX, POOL_NONE, CallArgs, CallError
from hlsinf.sim import harness

__all__ = ["BUILDS", "Build", "build_exe", "random_call", "random_axi", "draw", "run", "FuzzResult"]


@dataclass(frozen=True)
class Build:
    """A kernel build the fuzz runs: a name, its configuration and its Kernel arguments."""
    name: str
    cfg: KernelConfig
    kernel_args: dict = field(default_factory=dict)


#: Small builds: CPI = CPO = 4, line buffers for 32 columns, 32 rows, 64 input channels and
#: an input cache of 64 pixels (tiles that fit are replayed, larger ones are read again), the
#: configuration of tests/gateware/test_kernel_rtl.py; uint8 and int8 activations.
_SMALL = dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)
BUILDS = {
    "u8": Build("u8", KernelConfig(**_SMALL), {"input_cache_pixels": 64}),
    "i8": Build("i8", KernelConfig(**_SMALL, act_signed=True), {"input_cache_pixels": 64}),
    "u8-8x4": Build("u8-8x4", KernelConfig(cpi=8, cpo=4, imax=64, wmax=32, hmax=32), {"input_cache_pixels": 64}),
    # the other datapath: no input cache (every tile read again per output group) and
    # padding -> cvt instead of the window stage
    "u8-cvt": Build("u8-cvt", KernelConfig(**_SMALL), {"input_cache_pixels": 0, "window_stage": False}),
}

#: C++ optimisation of the fuzz builds: the simulation is a small part of a fuzz call's time
#: (data, reference, files), and -O1 compiles in less time than -O2.
CXX_OPT = "-O1"
#: Largest ideal cycles of one fuzz call (bigger draws are drawn again): keeps a call short.
MAX_IDEAL = 20_000
#: Chance that a call gets an injected AXI error response, and a reset in its middle.
ERROR_RATE = 0.06
RESET_RATE = 0.06


def _small(rng, lo: int, hi: int, typical: int) -> int:
    """An integer in lo..hi: one of the two ends (8% each), up to ``typical`` (54%), else
    anywhere."""
    r = rng.random()
    if r < 0.08:
        return hi
    if r < 0.16:
        return lo
    if r < 0.7:
        return int(rng.integers(lo, min(hi, max(lo, typical)) + 1))
    return int(rng.integers(lo, hi + 1))


def build_exe(build: Build) -> Path:
    """The harness executable of ``build`` (compiled once, then cached)."""
    return harness.build(build.cfg, kernel_args=build.kernel_args, cxx_opt=CXX_OPT)[0]


def random_call(cfg: KernelConfig, rng: np.random.Generator) -> CallArgs:
    """A valid call over every argument of the kernel: image and tile shape (``H``, ``W``,
    ``rows``, ``read_offset`` anywhere in the plane), channel counts with partial groups,
    ``o_first``/``o_count``, padding 0..MAX_PAD on each side, stride 1/2, ReLU, clip bounds,
    multiplier, shift, pooling, ``write_offset``/``out_plane``; at most ``MAX_IDEAL`` ideal
    cycles."""
    amin, amax = cfg.act_range
    while True:
        pads = [int(rng.integers(0, MAX_PAD + 1)) for _ in range(4)]
        pt, pb, pl, pr = pads
        stride = int(rng.choice([1, 2]))
        W = _small(rng, max(1, 3 - pl - pr), cfg.wmax, 16)
        rows = _small(rng, max(1, 3 - pt - pb), cfg.hmax, 12)
        H = rows + (0 if rng.random() < 0.4 else _small(rng, 1, 16, 4))
        read_offset = int(rng.integers(0, (H - rows) * W + 1))
        I = _small(rng, 1, cfg.imax, 3 * cfg.cpi)
        O = _small(rng, 1, 6 * cfg.cpo, 2 * cfg.cpo + 1)
        go = math.ceil(O / cfg.cpo)
        o_first = int(rng.integers(0, go))
        o_count = None if rng.random() < 0.3 else int(rng.integers(1, go - o_first + 1))
        pool = int(rng.choice([POOL_NONE, POOL_MAX, POOL_AVG], p=[0.5, 0.25, 0.25]))
        relu = bool(rng.random() < 0.5)
        use_mult = bool(cfg.with_multiplier and rng.random() < 0.4)
        clip_lo = clip_hi = None
        if rng.random() < 0.4:
            a, b = sorted(int(v) for v in rng.integers(amin, amax + 1, 2))
            clip_lo, clip_hi = (a if rng.random() < 0.7 else None), (b if rng.random() < 0.7 else None)
        if rng.random() < 0.15:
            shift = int(rng.integers(0, cfg.max_shift + 1))
        else:
            shift = harness.requantize_shift(cfg, I) + (cfg.mult_bits if use_mult else 0) + int(rng.integers(-3, 4))
            shift = max(0, min(cfg.max_shift, shift))
        args = CallArgs(H=H, W=W, rows=rows, I=I, O=O, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr,
                        stride=stride, o_first=o_first, o_count=o_count, relu=relu, clip_lo=clip_lo,
                        clip_hi=clip_hi, shift=shift, use_mult=use_mult, pool=pool, read_offset=read_offset)
        if args.conv_rows < 1 or args.conv_cols < 1 or (pool and (args.conv_rows < 2 or args.conv_cols < 2)):
            continue
        out_pixels = args.out_rows * args.out_cols
        write_offset = 0 if rng.random() < 0.4 else _small(rng, 1, 200, 20)
        out_plane = None if rng.random() < 0.4 and write_offset == 0 else \
            write_offset + out_pixels + (0 if rng.random() < 0.5 else _small(rng, 1, 100, 10))
        args = CallArgs(**{**args.to_dict(), "write_offset": write_offset, "out_plane": out_plane})
        try:
            args.validate(cfg)
        except CallError:
            continue
        if args.ideal_cycles(cfg) <= MAX_IDEAL:
            return args


def _latency(rng) -> tuple[int, int]:
    kind = rng.random()
    if kind < 0.2:
        lo = int(rng.integers(0, 4))                 # an on-chip memory
    elif kind < 0.8:
        lo = int(rng.integers(20, 200))              # DDR-like
    else:
        lo = int(rng.integers(200, 600))             # a congested interconnect
    return lo, lo + (0 if rng.random() < 0.3 else int(rng.integers(1, 150)))


def random_axi(cfg: KernelConfig, args: CallArgs, rng: np.random.Generator) -> harness.AxiOptions:
    """Memory and host behaviour of one call: read and write latencies per burst (0..750
    cycles), a pause probability on every AXI channel (none for a quarter of the calls, else
    0..0.6 per channel, 0..0.9 for a tenth of them) and on the AXI4-Lite host (0..0.5); with ``ERROR_RATE`` an SLVERR or
    DECERR on one of the first bursts of one or two bundles; with ``RESET_RATE`` (never with
    an error) ``ap_rst_n`` low for 1..40 cycles somewhere in the call."""
    quiet = rng.random() < 0.25
    top = 0.9 if rng.random() < 0.1 else 0.6          # now and then a memory that is nearly stuck
    pause = (lambda: 0.0) if quiet else (lambda: 0.0 if rng.random() < 0.3 else float(rng.uniform(0, top)))
    options = harness.AxiOptions(
        seed=int(rng.integers(1, 1 << 62)), read_latency=_latency(rng), write_latency=_latency(rng),
        pause_ar=pause(), pause_r=pause(), pause_aw=pause(), pause_w=pause(), pause_b=pause(),
        pause_host=0.0 if quiet else float(rng.uniform(0, 0.5)))
    if rng.random() < ERROR_RATE:
        bundles = ["gmem_in", "gmem_w", "gmem_out"]
        for bundle in rng.choice(bundles, size=int(rng.integers(1, 3)), replace=False):
            options.errors[str(bundle)] = (int(rng.integers(0, 4)), int(rng.choice([2, 3])))
    elif rng.random() < RESET_RATE:
        expected = 2 * args.ideal_cycles(cfg) + 2 * options.read_latency[1] + options.write_latency[1] + 100
        options.reset = (int(rng.integers(0, expected)), int(rng.integers(1, 41)))
    return options


def draw(build: Build, seed: int, index: int) -> tuple[CallArgs, harness.AxiOptions, int]:
    """Call ``index`` of the fuzz run ``seed`` on ``build``: (arguments, AXI options, data seed)."""
    rng = np.random.default_rng([seed, index])
    args = random_call(build.cfg, rng)
    return args, random_axi(build.cfg, args, rng), int(rng.integers(0, 1 << 31))


@dataclass
class FuzzResult:
    calls: int = 0
    mismatches: int = 0
    failures: list = field(default_factory=list)     #: one dict per failed call
    errors_injected: int = 0                          #: calls whose status named an injected error
    resets: int = 0
    cycles: int = 0
    ideal: int = 0
    seconds: float = 0.0
    sim_seconds: float = 0.0
    per_build: dict = field(default_factory=dict)


def replay_command(seed: int, index: int, build: str) -> str:
    return f"PYTHONPATH=. python benchmarks/fuzz.py --seed {seed} --builds {build} --replay {index}"


def run(builds: list[Build], calls: int, seed: int, *, first: int = 0, part: tuple[int, int] = (0, 1),
        log=None, workdir: Path | None = None, stop_after: int = 10) -> FuzzResult:
    """Run calls ``first .. first+calls-1`` of fuzz run ``seed``, call ``i`` on
    ``builds[i % len(builds)]``, each build on its own served kernel. ``part = (p, n)`` runs
    only the calls with ``(i // len(builds)) % n == p`` (one of ``n`` processes). A failed call
    (wrong output or status, hang, broken AXI rule, a register not reset) is recorded with its
    arguments and the command that replays it, and its kernel restarted; the run stops after
    ``stop_after`` failures. ``log(line)`` gets a line per failure."""
    exes = {b.name: build_exe(b) for b in builds}
    servers = {b.name: harness.Server(exes[b.name], b.cfg) for b in builds}
    tmp = Path(tempfile.mkdtemp(prefix="hlsinf-fuzz-", dir=workdir))
    result = FuzzResult()
    started = time.monotonic()
    try:
        for index in range(first, first + calls):
            if (index // len(builds)) % part[1] != part[0]:
                continue
            build = builds[index % len(builds)]
            args, options, data_seed = draw(build, seed, index)
            folder = tmp / build.name
            stats = result.per_build.setdefault(build.name, {"calls": 0, "mismatches": 0, "cycles": 0, "ideal": 0})
            result.calls += 1
            stats["calls"] += 1
            try:
                got = servers[build.name].run(args, data_seed, folder, options=options,
                                              label=f"fuzz call {index} ({build.name})")
            except harness.HarnessError as error:
                result.mismatches += 1
                stats["mismatches"] += 1
                failure = {"index": index, "build": build.name, "error": str(error), "args": args.to_dict(),
                           "axi": options.text().strip().splitlines(), "data_seed": data_seed,
                           "replay": replay_command(seed, index, build.name)}
                result.failures.append(failure)
                if log:
                    log(f"MISMATCH {error}\n  {args}\n  axi: {'; '.join(failure['axi'])}\n  replay: {failure['replay']}")
                if len(result.failures) >= stop_after:
                    break
                continue
            result.errors_injected += bool(got["status"])
            result.resets += got["reset"]
            if not got["status"]:
                result.cycles += got["cycles"]
                result.ideal += got["ideal"]
                stats["cycles"] += got["cycles"]
                stats["ideal"] += got["ideal"]
            result.sim_seconds += got["seconds"]
    finally:
        for server in servers.values():
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result
