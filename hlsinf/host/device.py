"""Devices that run kernel calls, behind one small interface shaped like the real card.

A device has byte-addressed memory and the kernel's control registers, exactly what a
host sees of an Alveo card through XRT: allocate a buffer (an address), copy bytes in and
out, write the argument registers (``{offset: 32-bit word}`` from
:func:`hlsinf.registers.encode_call`), start, wait. Nothing above this interface knows
whether a call ran in numpy, in Verilator or on an FPGA.

* :class:`ReferenceDevice` decodes the register words back into a call and runs it on views
  of its memory, so the register encoding is exercised on every call: with
  :func:`hlsinf.reference_fast.kernel_call_fast` (bit-exact with the oracle
  :func:`hlsinf.reference.kernel_call`, and much faster), or the oracle itself; an fp32
  kernel with :mod:`hlsinf.reference_float_fast` or :func:`hlsinf.reference_float.kernel_call`.
* An RTL device (Verilator) implements the same five methods against the simulated
  kernel's AXI memory model and AXI4-Lite port; see docs/host.md.
* An XRT device would map ``allocate`` to ``pyxrt.bo(device, nbytes, flags, kernel.group_id(arg))``
  (one bank per AXI bundle from the descriptor), ``write``/``read`` to ``bo.write``/``bo.sync``
  and ``bo.read``, and ``start``/``wait`` to ``ip.write_register`` + setting ``ap_start``
  and polling ``ap_done`` (or ``pyxrt.run`` with the same arguments).
"""

from __future__ import annotations


import numpy as np

from hlsinf.config import KernelConfig
from hlsinf.reference import AccBuffer, CallArgs, act_dtype, bias_dtype, kernel_call, mult_dtype, table_entries, weight_dtype
from hlsinf.reference_fast import kernel_call_fast, prepare_weights
from hlsinf.reference_float import kernel_call as kernel_call_float
from hlsinf.reference_float_fast import kernel_call_fast as kernel_call_float_fast
from hlsinf.registers import encode_call, register_map

__all__ = ["Device", "DeviceError", "FlatMemoryDevice", "ReferenceDevice", "decode_call", "ALIGNMENT"]

#: Buffer alignment in bytes (an AXI burst boundary; also keeps numpy views aligned).
ALIGNMENT = 4096


class DeviceError(RuntimeError):
    """A device operation failed; the message names the buffer, address or register."""


#: Registers that hold a CallArgs flag (decoded as bool).
_FLAGS = {"relu", "use_mult", "leaky_relu", "bn", "residual_add", "r_relu", "depthwise", "table", "pointwise",
          "acc_hold", "acc_resume"}


def decode_call(words: dict[int, int], cfg: KernelConfig | None = None) -> tuple[CallArgs, dict[str, int]]:
    """Inverse of :func:`~hlsinf.registers.encode_call`: register words -> (CallArgs, pointers).

    With ``cfg``, the registers of the post-operations and later stages it is built with are
    decoded too (a device must pass its own: without them a post-op's enable would be lost)."""
    values, pointers = {}, {}
    for reg in register_map(cfg):
        if reg.offset not in words:
            raise DeviceError(f"register {reg.name} (offset 0x{reg.offset:02x}) was not written")
        lo = words[reg.offset]
        if reg.kind == "pointer":
            pointers[reg.name] = lo | (words.get(reg.offset + 4, 0) << 32)
        else:
            values[reg.name] = lo - (1 << 32) if reg.signed and lo & 0x8000_0000 else lo
    args = CallArgs(**{k: bool(v) if k in _FLAGS else v for k, v in values.items()})
    return args, pointers


class Device:
    """The interface every device implements (memory + registers), plus a convenience ``call``."""

    cfg: KernelConfig
    #: True when ``wait`` returns the cycles the call took (simulated or measured hardware)
    measures_cycles = False

    def allocate(self, nbytes: int, name: str = "") -> int:
        """Reserve ``nbytes`` of device memory; return its byte address."""
        raise NotImplementedError

    def write(self, address: int, data: np.ndarray) -> None:
        """Copy the bytes of ``data`` to device memory at ``address``."""
        raise NotImplementedError

    def read(self, address: int, dtype, count: int) -> np.ndarray:
        """Copy ``count`` elements of ``dtype`` from device memory at ``address``."""
        raise NotImplementedError

    def start(self, registers: dict[int, int]) -> None:
        """Write the argument registers and set ap_start."""
        raise NotImplementedError

    def wait(self) -> int | None:
        """Block until ap_done; return the cycles of the call if the device counts them.
        Raises :class:`DeviceError` when the kernel reports AXI error responses (its status
        register); the reference device never does."""
        raise NotImplementedError

    def call(self, args: CallArgs, pointers: dict[str, int]) -> int | None:
        self.start(encode_call(args, self.cfg, pointers))
        return self.wait()

    def close(self) -> None:
        pass


class FlatMemoryDevice(Device):
    """A device whose memory is one flat byte array (the card's DDR as one address space)."""

    def __init__(self, cfg: KernelConfig, capacity: int = 1 << 24):
        self.cfg = cfg
        self.memory = np.zeros(capacity, np.uint8)
        self.top = ALIGNMENT          # address 0 stays unused, so a null pointer is caught
        self.buffers: dict[int, tuple[int, str]] = {}
        self._pending = None
        self.calls = 0

    def allocate(self, nbytes: int, name: str = "") -> int:
        address = self.top
        self.top = (address + max(int(nbytes), 1) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        if self.top > self.memory.size:
            grown = np.zeros(max(self.top, 2 * self.memory.size), np.uint8)
            grown[: self.memory.size] = self.memory
            self.memory = grown
        self.buffers[address] = (int(nbytes), name)
        return address

    def _span(self, address: int, nbytes: int) -> slice:
        if address < ALIGNMENT or address + nbytes > self.top:
            raise DeviceError(f"device access of {nbytes} bytes at 0x{address:x} is outside allocated memory "
                              f"(0x{ALIGNMENT:x} to 0x{self.top:x})")
        return slice(address, address + nbytes)

    def write(self, address: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self.memory[self._span(address, raw.size)] = raw

    def read(self, address: int, dtype, count: int) -> np.ndarray:
        nbytes = int(count) * np.dtype(dtype).itemsize
        return self.memory[self._span(address, nbytes)].view(dtype).copy()

    def view(self, address: int, dtype, count: int | None = None) -> np.ndarray:
        """A typed view into device memory from ``address`` to the end of its buffer (no copy)."""
        for start, (nbytes, _) in self.buffers.items():
            if start <= address < start + nbytes:
                end = start + nbytes
                break
        else:
            raise DeviceError(f"address 0x{address:x} is not inside an allocated buffer")
        size = np.dtype(dtype).itemsize
        n = (end - address) // size if count is None else count
        return self.memory[address: address + n * size].view(dtype)


class ReferenceDevice(FlatMemoryDevice):
    """Kernel calls run by the bit-exact numpy model on a flat byte memory.

    ``oracle=True`` runs every call with :func:`hlsinf.reference.kernel_call` (slow, the
    readable definition); by default :func:`hlsinf.reference_fast.kernel_call_fast` runs
    them, with the weight matrix of each call prepared once and kept until its weight
    memory is written again. An fp32 kernel (``cfg.is_float``) runs
    :func:`hlsinf.reference_float.kernel_call` with ``oracle=True``, else
    :func:`hlsinf.reference_float_fast.kernel_call_fast` (the same bits, vectorised over
    input groups).
    """

    def __init__(self, cfg: KernelConfig, capacity: int = 1 << 24, oracle: bool = False):
        super().__init__(cfg, capacity)
        self.oracle = oracle
        #: The add stage's accumulation buffer, kept between calls (acc_hold / acc_resume).
        self.acc = AccBuffer(cfg) if cfg.with_acc_split else None
        self._prepared: dict[tuple, tuple[int, int, object]] = {}    # key -> (first byte, end byte, weights)

    def _forget(self, address: int, nbytes: int) -> None:
        """Drop prepared weights read from bytes that change."""
        end = address + nbytes
        for key, (lo, hi, _) in list(self._prepared.items()):
            if lo < end and address < hi:
                del self._prepared[key]

    def write(self, address: int, data: np.ndarray) -> None:
        super().write(address, data)
        if self._prepared:
            self._forget(address, np.asarray(data).nbytes)

    def start(self, registers: dict[int, int]) -> None:
        if self._pending is not None:
            raise DeviceError("start while the previous call has not been waited for")
        args, ptr = decode_call(registers, self.cfg)
        self._pending = (args, ptr)

    def wait(self) -> int | None:
        if self._pending is None:
            raise DeviceError("wait without a started call")
        args, ptr = self._pending
        self._pending = None
        cfg = self.cfg
        x, w, b, y = (self.view(ptr["x"], act_dtype(cfg)), self.view(ptr["w"], weight_dtype(cfg)),
                      self.view(ptr["b"], bias_dtype(cfg)), self.view(ptr["y"], act_dtype(cfg)))
        m = self.view(ptr["m"], mult_dtype(cfg)) if args.use_mult else None
        if cfg.is_float:            # binary32 data: the fp32 oracle, or its bit-identical fast form
            n = self.view(ptr["n"], np.float32) if args.bn and ptr.get("n") else None
            (kernel_call_float if self.oracle else kernel_call_float_fast)(cfg, args, x, w, b, y, None, n)
            return None
        n = self.view(ptr["n"], np.int32) if args.bn else None
        r = self.view(ptr["r"], act_dtype(cfg)) if args.residual_add else None
        t = self.view(ptr["t"], act_dtype(cfg), table_entries(cfg)) if args.table else None
        if self.oracle or args.acc_hold or args.acc_resume:
            kernel_call(cfg, args, x, w, b, y, m, n, r_mem=r, t_mem=t, acc=self.acc)
        elif args.depthwise or args.pointwise:   # nothing to prepare: nine multiply-adds per tap
            kernel_call_fast(cfg, args, x, w, b, y, m, n_mem=n, r_mem=r, t_mem=t)
        else:
            if self.acc is not None:
                self.acc.after_ordinary_call(cfg, args)
            gi, go = args.gi(cfg), args.go(cfg)
            groups = args.groups(cfg)
            key = (ptr["w"], go, gi, groups.start, groups.stop)
            entry = self._prepared.get(key)
            if entry is None and 4 not in (cfg.act_bits, cfg.weight_bits):   # 4-bit: unpacked per call
                nbytes = go * gi * cfg.cpo * cfg.cpi * 9 * w.itemsize
                if w.nbytes >= nbytes:          # else kernel_call_fast reports the short memory image
                    entry = (ptr["w"], ptr["w"] + nbytes, prepare_weights(cfg, args, w))
                    self._prepared[key] = entry
            kernel_call_fast(cfg, args, x, w, b, y, m, prepared=None if entry is None else entry[2], n_mem=n,
                             r_mem=r, t_mem=t)
            self._forget(ptr["y"], y.nbytes)      # the call may have written over cached weights
        self.calls += 1
        return None
