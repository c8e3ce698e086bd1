"""An AXI4 memory for cocotb with DDR-like latency and a bandwidth limit.

cocotbext-axi's ``AxiRam`` answers a read burst on the cycle after its address and has no
latency setting, which hides every prefetching weakness of a master. ``LatencyAxiRam`` is the
same memory (``cocotbext.axi.Memory``, the ``read``/``write`` helpers the benches use) whose
channels are wrapped so that

* a read burst's first data beat leaves no earlier than ``read_latency`` cycles after its
  address was accepted; addresses keep being accepted meanwhile (up to ``max_outstanding``
  bursts in flight), so a master that issues ahead sees the latency once, as on a DDR
  controller, and one that waits for each burst sees it every time;
* a write burst's response leaves no earlier than ``write_latency`` cycles after its last
  data beat (writes are posted; the response latency only matters to a master that limits
  its outstanding writes, and to the end of a call);
* data beats flow at most ``beats_per_cycle`` (<= 1) per cycle in each direction. One beat
  per cycle is one 512-bit beat at 300 MHz, 19.2 GB/s: exactly one DDR4-2400 64-bit
  channel. The model is per bundle: the U200 flow of HLSinf (and ``hlsinf.build.platforms``)
  connects each bundle to its own DDR bank, so bundles do not share bandwidth.

Latency is counted in clock cycles of ``clock_period_ns`` from the simulation time, so the
model adds no per-cycle coroutine of its own.
"""

from __future__ import annotations

import collections

import cocotb
from cocotb.triggers import ClockCycles, Event
from cocotb.utils import get_sim_time
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.memory import Memory

__all__ = ["LatencyAxiRam"]


class _Clock:
    def __init__(self, clock, period_ns: float):
        self.clock, self.period_ns = clock, period_ns

    def now(self) -> int:
        return int(get_sim_time(unit="ns") // self.period_ns)

    async def until(self, cycle: int):
        wait = cycle - self.now()
        if wait > 0:
            await ClockCycles(self.clock, wait)


class _Throttle:
    """At most ``rate`` (<= 1) sends per cycle through ``channel.send``."""

    def __init__(self, channel, clock: _Clock, rate: float):
        self._channel, self._clock, self._rate, self._next = channel, clock, rate, 0.0

    def __getattr__(self, name):
        return getattr(self._channel, name)

    async def send(self, item):
        if self._rate < 1:
            now = self._clock.now()
            await self._clock.until(int(self._next + 0.999999))
            self._next = max(self._next, now) + 1 / self._rate
        await self._channel.send(item)


class _DelayedAddresses:
    """Stands for the AR sink: ``recv`` hands an address over ``latency`` cycles after the
    real sink accepted it. A stamping task drains the sink as addresses arrive."""

    def __init__(self, sink, clock: _Clock, latency: int, max_outstanding: int):
        self._sink, self._clock, self._latency, self._max = sink, clock, latency, max_outstanding
        self._pending = collections.deque()
        self._arrived, self._taken = Event(), Event()
        self._task = cocotb.start_soon(self._stamp())

    def __getattr__(self, name):
        return getattr(self._sink, name)

    def clear(self):
        self._pending.clear()
        self._sink.clear()

    async def _stamp(self):
        while True:
            while len(self._pending) >= self._max:
                self._taken.clear()
                await self._taken.wait()
            item = await self._sink.recv()
            self._pending.append((self._clock.now() + self._latency, item))
            self._arrived.set()

    async def recv(self):
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        due, item = self._pending.popleft()
        self._taken.set()
        await self._clock.until(due)
        return item


class _DelayedResponses:
    """Stands for the B source: ``send`` returns at once and the response leaves ``latency``
    cycles later (responses keep their order)."""

    def __init__(self, source, clock: _Clock, latency: int):
        self._source, self._clock, self._latency = source, clock, latency
        self._pending = collections.deque()
        self._arrived = Event()
        self._task = cocotb.start_soon(self._drain())

    def __getattr__(self, name):
        return getattr(self._source, name)

    def clear(self):
        self._pending.clear()
        self._source.clear()

    async def send(self, item):
        self._pending.append((self._clock.now() + self._latency, item))
        self._arrived.set()

    async def _drain(self):
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            due, item = self._pending.popleft()
            await self._clock.until(due)
            await self._source.send(item)


class LatencyAxiRam(Memory):
    """``AxiRam`` with read/write latency and a per-bundle beat rate (see the module docstring).

    ``pause_everything``-style pause generators still work on ``write_if.*_channel`` and
    ``read_if.*_channel`` (the wrappers pass every other attribute through).
    """

    def __init__(self, bus, clock, reset=None, reset_active_level=True, size=2**64, mem=None, *,
                 clock_period_ns: float, read_latency: int = 100, write_latency: int = 100,
                 beats_per_cycle: float = 1.0, max_outstanding: int = 64, **kwargs):
        if not 0 < beats_per_cycle <= 1:
            raise ValueError(f"LatencyAxiRam beats_per_cycle = {beats_per_cycle} is out of range: allowed (0, 1]")
        if read_latency < 1 or write_latency < 1:
            raise ValueError(f"LatencyAxiRam latencies ({read_latency}, {write_latency}) must be >= 1 cycle")
        super().__init__(size, mem, **kwargs)
        self.read_latency, self.write_latency, self.beats_per_cycle = read_latency, write_latency, beats_per_cycle
        timer = _Clock(clock, clock_period_ns)
        self.write_if = AxiRamWrite(bus.write, clock, reset, reset_active_level, mem=self.mem)
        self.read_if = AxiRamRead(bus.read, clock, reset, reset_active_level, mem=self.mem)
        self.read_if.ar_channel = _DelayedAddresses(self.read_if.ar_channel, timer, read_latency, max_outstanding)
        self.read_if.r_channel = _Throttle(self.read_if.r_channel, timer, beats_per_cycle)
        self.write_if.b_channel = _DelayedResponses(self.write_if.b_channel, timer, write_latency)
        if beats_per_cycle < 1:
            self.write_if.w_channel.set_pause_generator(self._w_pauses(beats_per_cycle))

    @staticmethod
    def _w_pauses(rate: float):
        """W ready at ``rate`` of the cycles, evenly spread."""
        credit = 0.0
        while True:
            credit += rate
            if credit >= 1:
                credit -= 1
                yield False
            else:
                yield True
