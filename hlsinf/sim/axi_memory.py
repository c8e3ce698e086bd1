"""A Python AXI4 slave memory for Amaranth async testbenches.

:class:`AXIMemory` serves AR/R and AW/W/B from a numpy byte array, with a fixed response
latency and random stalls on every channel, and checks the master's side of the protocol
as it goes: VALID held until READY with a stable payload, INCR bursts of full-width beats,
at most 256 beats, never across 4 KiB, WLAST on the last beat of each burst. It records
every burst and the largest number of bursts in flight, so tests can assert on the burst
policy and on outstanding transactions.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AXIMemory", "Burst", "ProtocolError", "run"]


@dataclass
class Burst:
    addr: int
    beats: int
    accepted: int                    #: cycle the address was accepted
    finished: int | None = None      #: cycle of the last R beat / the B response
    strobes: list = field(default_factory=list)


class ProtocolError(AssertionError):
    pass


class AXIMemory:
    """``mem[i]`` is the byte at address ``base + i``.

    ``latency``: cycles from an accepted AR (or the last W beat of a burst) to its first R
    beat (or B). ``stall``: probability that a READY or VALID driven by the memory drops
    for a cycle (each channel independently); ``stalls`` may override it per channel
    (``ar``, ``r``, ``aw``, ``w``, ``b``).
    """

    def __init__(self, mem: np.ndarray, *, base: int = 0, data_width: int = 512, latency: int = 0,
                 stall: float = 0.0, stalls: dict | None = None, seed: int = 0,
                 error_ranges=()):
        self.mem, self.base = mem, base
        self.beat_bytes = data_width // 8
        self.latency = latency
        self.stalls = {ch: stall for ch in ("ar", "r", "aw", "w", "b")}
        self.stalls.update(stalls or {})
        self.rng = random.Random(seed)
        self.reads: list[Burst] = []
        self.writes: list[Burst] = []
        self.max_reads_in_flight = 0
        self.max_writes_in_flight = 0
        self.cycle = 0
        #: bursts touching one of these ``(first, end)`` address ranges get an SLVERR response
        self.error_ranges = list(error_ranges)

    # -- helpers ------------------------------------------------------------------------

    def _go(self, ch):
        return not (self.stalls[ch] and self.rng.random() < self.stalls[ch])

    def _check_burst(self, kind, addr, length, size, burst):
        beats = length + 1
        if burst != 1:
            raise ProtocolError(f"{kind} burst type {burst} at {addr:#x}: expected INCR (1)")
        if (1 << size) != self.beat_bytes:
            raise ProtocolError(f"{kind} size {size} at {addr:#x}: expected full-width beats")
        if addr % self.beat_bytes:
            raise ProtocolError(f"{kind} address {addr:#x} not aligned to the beat")
        if beats > 256:
            raise ProtocolError(f"{kind} burst of {beats} beats at {addr:#x}")
        if addr // 4096 != (addr + beats * self.beat_bytes - 1) // 4096:
            raise ProtocolError(f"{kind} burst {addr:#x}+{beats} beats crosses a 4 KiB boundary")
        lo = addr - self.base
        if lo < 0 or lo + beats * self.beat_bytes > len(self.mem):
            raise ProtocolError(f"{kind} burst {addr:#x}+{beats} beats outside the memory")
        return beats

    def _resp(self, burst):
        end = burst.addr + burst.beats * self.beat_bytes
        return 2 if any(lo < end and burst.addr < hi for lo, hi in self.error_ranges) else 0

    def _beat(self, addr):
        lo = addr - self.base
        return int.from_bytes(self.mem[lo:lo + self.beat_bytes].tobytes(), "little")

    def _hold(self, name, valid_now, payload_now, state):
        """VALID must stay high with a stable payload until READY."""
        prev = state.get(name)
        if prev is not None and (not valid_now or payload_now != prev):
            raise ProtocolError(f"{name}: VALID dropped or payload changed before READY "
                                f"({prev} -> {payload_now if valid_now else 'not valid'})")

    # -- the process --------------------------------------------------------------------

    async def serve(self, ctx, axi):
        """Run forever as the slave of ``axi`` (add with ``sim.add_process`` or as a testbench
        that is never awaited to completion)."""
        bb = self.beat_bytes
        r_queue = deque()        # (ready_cycle, data, last, burst)
        aw_queue = deque()       # bursts waiting for W data: [Burst, beats_received]
        b_queue = deque()        # (ready_cycle, burst)
        pending = {}             # VALID-hold checks: name -> payload seen while not accepted
        reads_in_flight = []
        writes_in_flight = []
        while True:
            arready = self._go("ar")
            awready = self._go("aw")
            wready = self._go("w")
            ctx.set(axi.arready, arready)
            ctx.set(axi.awready, awready)
            ctx.set(axi.wready, wready)
            r_head = r_queue[0] if r_queue and r_queue[0][0] <= self.cycle and self._go("r") else None
            ctx.set(axi.rvalid, r_head is not None)
            if r_head is not None:
                ctx.set(axi.rdata, r_head[1])
                ctx.set(axi.rlast, r_head[2])
                ctx.set(axi.rresp, self._resp(r_head[3]))
                ctx.set(axi.rid, 0)
            b_head = b_queue[0] if b_queue and b_queue[0][0] <= self.cycle and self._go("b") else None
            ctx.set(axi.bvalid, b_head is not None)
            if b_head is not None:
                ctx.set(axi.bresp, self._resp(b_head[1]))
                ctx.set(axi.bid, 0)

            (_, _, arvalid, araddr, arlen, arsize, arburst, rready,
             awvalid, awaddr, awlen, awsize, awburst, wvalid, wdata, wstrb, wlast, bready) = \
                await ctx.tick().sample(axi.arvalid, axi.araddr, axi.arlen, axi.arsize, axi.arburst,
                                        axi.rready, axi.awvalid, axi.awaddr, axi.awlen, axi.awsize,
                                        axi.awburst, axi.wvalid, axi.wdata, axi.wstrb, axi.wlast,
                                        axi.bready)

            # AR
            ar = (araddr, arlen, arsize, arburst)
            self._hold("AR", arvalid, ar, pending)
            pending.pop("AR", None)
            if arvalid and arready:
                beats = self._check_burst("read", araddr, arlen, arsize, arburst)
                burst = Burst(araddr, beats, self.cycle)
                self.reads.append(burst)
                reads_in_flight.append(burst)
                start = self.cycle + 1 + self.latency
                for k in range(beats):
                    r_queue.append((start, self._beat(araddr + k * bb), k == beats - 1, burst))
            elif arvalid:
                pending["AR"] = ar
            self.max_reads_in_flight = max(self.max_reads_in_flight, len(reads_in_flight))

            # R
            if r_head is not None:
                if rready:
                    r_queue.popleft()
                    if r_head[2]:
                        r_head[3].finished = self.cycle
                        reads_in_flight.remove(r_head[3])

            # AW
            aw = (awaddr, awlen, awsize, awburst)
            self._hold("AW", awvalid, aw, pending)
            pending.pop("AW", None)
            if awvalid and awready:
                beats = self._check_burst("write", awaddr, awlen, awsize, awburst)
                burst = Burst(awaddr, beats, self.cycle)
                self.writes.append(burst)
                writes_in_flight.append(burst)
                aw_queue.append([burst, 0])
            elif awvalid:
                pending["AW"] = aw
            self.max_writes_in_flight = max(self.max_writes_in_flight, len(writes_in_flight))

            # W (this model needs the AW first; the masters under test never send W before AW)
            w = (wdata, wstrb, wlast)
            self._hold("W", wvalid, w, pending)
            pending.pop("W", None)
            if wvalid and wready:
                if not aw_queue:
                    raise ProtocolError("W beat before its AW")
                entry = aw_queue[0]
                burst, k = entry
                last = k == burst.beats - 1
                if bool(wlast) != last:
                    raise ProtocolError(f"WLAST={wlast} on beat {k} of a {burst.beats}-beat burst at {burst.addr:#x}")
                lo = burst.addr - self.base + k * bb
                old = self.mem[lo:lo + bb]
                new = np.frombuffer(int(wdata).to_bytes(bb, "little"), np.uint8)
                strb = np.array([(wstrb >> i) & 1 for i in range(bb)], bool)
                self.mem[lo:lo + bb] = np.where(strb, new, old)
                burst.strobes.append(int(wstrb))
                entry[1] += 1
                if last:
                    aw_queue.popleft()
                    b_queue.append((self.cycle + 1 + self.latency, burst))
            elif wvalid:
                pending["W"] = w

            # B
            if b_head is not None and bready:
                b_queue.popleft()
                b_head[1].finished = self.cycle
                writes_in_flight.remove(b_head[1])

            self.cycle += 1


def run(dut, testbenches, memories=(), *, max_cycles: int = 100_000, vcd: str | None = None):
    """Simulate ``dut`` until every testbench has finished; ``memories`` are ``(model,
    interface)`` pairs served in the background. Fails after ``max_cycles`` (deadlock)."""
    from hlsinf.sim.streams import run_stage

    def server(model, interface):
        async def serve(ctx):
            await model.serve(ctx, interface)
        return serve

    run_stage(dut, testbenches, background=[server(m, i) for m, i in memories],
              deadline_cycles=max_cycles, vcd=vcd)
