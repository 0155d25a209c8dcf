"""The ``rtl`` backend: the driver's :class:`~dwsep.host.driver.Device` on the Verilated
accelerator.

The device keeps the DDR image in a ``bytearray`` and records register writes. The write
that sets ``CTRL.start`` starts one simulation in the background
(:class:`dwsep.sim.rtl.Simulation`): reset, the recorded writes through AXI4-Lite, the
program until ``STATUS.busy`` clears, then every register is read back and the DDR image
copied out. While it runs, ``STATUS`` reads busy and ``LAYER`` follows the bench's progress
reports; afterwards reads are served from the final snapshot. So the driver code, its
polling and its progress display are the same as for the board.
"""

from __future__ import annotations

from dwsep.host.compiler.program import align
from dwsep.host.driver import Buffer, Device, DeviceTimeoutError
from dwsep.hw.config import AcceleratorConfig
from dwsep.hw.layout import REGISTERS

from .ddr import MemoryModel, get_memory
from .rtl import JobResult, Simulation, simulate

__all__ = ["RtlDevice"]

_BASE = 0x1000  # leave page 0 unmapped-looking: a null address in a descriptor shows up


class _RtlBuffer(Buffer):
    def __init__(self, device: RtlDevice, addr: int, nbytes: int):
        super().__init__(addr, nbytes)
        self._device = device

    def _check(self, offset: int, nbytes: int) -> int:
        if offset < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"access of {nbytes} bytes at offset {offset} outside a buffer of "
                             f"{self.nbytes} bytes")
        return self.physical_address + offset

    def write(self, offset: int, data: bytes) -> None:
        addr = self._check(offset, len(data))
        self._device.memory[addr:addr + len(data)] = data

    def read(self, offset: int, nbytes: int) -> bytes:
        addr = self._check(offset, nbytes)
        return bytes(self._device.memory[addr:addr + nbytes])

    def free(self) -> None:
        """Memory is reclaimed when the device closes (runs are short-lived)."""


class RtlDevice(Device):
    """Verilator simulation of the accelerator behind the driver's device interface.

    Parameters
    ----------
    config:
        The accelerator configuration to build (one Verilator build per config, cached in
        ``dwsep.sim.verilator.build_root()``: ``$DWSEP_BUILD_DIR``, default the user's cache
        directory).
    backpressure_seed:
        If set, every AXI and AXI-Lite channel of the bench pauses at random (seeded).
    p_pause:
        Pause probability per channel and cycle when ``backpressure_seed`` is set.
    max_cycles:
        Simulated cycles after which a run that is still busy counts as hung.
    memory:
        The DDR the accelerator sees: a :data:`dwsep.sim.ddr.MEMORIES` name or a
        :class:`~dwsep.sim.ddr.MemoryModel` (default ``"ideal"``).
    clock_mhz:
        The accelerator's clock, at which the memory's latencies and rates are taken.
    """

    name = "rtl"
    counts_cycles = True
    #: simulated programs take minutes where the board takes milliseconds
    default_timeout_s = 3600.0
    poll_interval_s = 0.05

    def __init__(self, config: str | AcceleratorConfig, *, backpressure_seed: int | None = None,
                 p_pause: float = 0.3, max_cycles: int = 20_000_000,
                 memory: MemoryModel | str = "ideal", clock_mhz: float = 100.0):
        super().__init__(config)
        self.timing = get_memory(memory).at(clock_mhz)  # checks both now, not at the run
        self.memory_model = get_memory(memory)
        self.clock_mhz = clock_mhz
        self.backpressure_seed = backpressure_seed
        self.p_pause = p_pause
        self.max_cycles = max_cycles
        self.memory = bytearray(_BASE)
        self._writes: list[tuple[str, int]] = []
        self._snapshot: dict[str, int] | None = None
        self._running: Simulation | None = None
        self.last_job: JobResult | None = None

    # ---- memory ----
    def alloc(self, nbytes: int) -> Buffer:
        addr = align(len(self.memory))
        end = addr + nbytes
        self.memory.extend(bytes(-(-end // 4096) * 4096 - len(self.memory)))
        return _RtlBuffer(self, addr, nbytes)

    # ---- registers ----
    def write_word(self, offset: int, value: int) -> None:
        reg = _register_at(offset)
        self._finish()
        self._writes.append((reg.name, value))
        if reg.name == "CTRL" and reg.field("start").decode(value):
            self._running = Simulation(self.config, bytes(self.memory), self._writes,
                                       **self._options())
            self._writes = []

    def read_word(self, offset: int) -> int:
        reg = _register_at(offset)
        if self._running is not None and self._running.running():
            return self._live(reg)
        self._finish()
        if self._snapshot is None or self._writes:
            self._apply(simulate(self.config, self.memory, self._writes, wait=False,
                                 **self._options()))
        return self._snapshot[reg.name]

    def running(self) -> bool:
        """Whether a started program is still being simulated."""
        return self._running is not None and self._running.running()

    def join(self) -> None:
        """Wait until the simulation of a started program ends (the next register access
        collects its result)."""
        running = self._running
        if running is not None:
            running.join()

    def wait_done(self, timeout_s: float, poll_s: float = 1e-4,
                  on_layer=None) -> dict[str, int]:
        # a simulation advances slowly: poll the progress file, not the CPU
        return super().wait_done(timeout_s, max(poll_s, self.poll_interval_s), on_layer)

    def _live(self, reg) -> int:
        """A register while the simulation runs: busy, and the last reported layer."""
        if reg.name == "STATUS":
            return reg.field("busy").encode(1)
        if reg.name == "LAYER":
            return self._running.progress().get("LAYER", 0)
        return self._snapshot.get(reg.name, 0) if self._snapshot else 0

    def _finish(self) -> None:
        """Collect a finished (or wait for a running) simulation."""
        if self._running is None:
            return
        job, self._running = self._running.result(), None
        self._apply(job)
        if job.timed_out:
            raise DeviceTimeoutError(
                f"rtl: still busy after {self.max_cycles} simulated cycles (the bench then "
                f"wrote CTRL.abort; LAYER.index={job.registers['LAYER']})")

    def descriptor_cycles(self) -> dict[int, int] | None:
        """Cycle at which each descriptor of the last run started (exact)."""
        return self.last_job.layer_starts if self.last_job else None

    def _apply(self, job: JobResult) -> None:
        self.memory[:] = job.memory
        self._snapshot = job.registers
        self.last_job = job

    def _options(self) -> dict:
        return {"max_cycles": self.max_cycles, "backpressure_seed": self.backpressure_seed,
                "p_pause": self.p_pause, "memory_model": self.memory_model,
                "clock_mhz": self.clock_mhz}

    def close(self) -> None:
        if self._running is not None:
            self._running.result()
            self._running = None
        self.memory = bytearray()
        self._snapshot = None


def _register_at(offset: int):
    for reg in REGISTERS:
        if reg.offset == offset:
            return reg
    raise ValueError(f"no register at offset {offset}")
