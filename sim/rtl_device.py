"""The ``rtl`` backend: the driver's :class:`~dwsep.host.driver.Device` on the Verilated
accelerator.

The device keeps the DDR image in a ``bytearray`` and records register writes. The write
that sets ``CTRL.start`` runs one simulation (:func:`dwsep.sim.rtl.simulate`): reset, the
recorded writes through AXI4-Lite, the program until ``STATUS.busy`` clears, then every
register is read back and the DDR image copied out. Register reads are served from that
snapshot, so the driver code is the same as for the board.
"""

from __future__ import annotations

from dwsep.host.driver import Buffer, Device, DeviceTimeoutError
from dwsep.hw.config import AcceleratorConfig
from dwsep.hw.layout import REGISTERS

from .rtl import JobResult, simulate

__all__ = ["RtlDevice"]

_ALIGN = 64
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
        ``$DWSEP_BUILD_DIR``, default ``./build``).
    backpressure_seed:
        If set, every AXI and AXI-Lite channel of the bench pauses at random (seeded).
    p_pause:
        Pause probability per channel and cycle when ``backpressure_seed`` is set.
    max_cycles:
        Simulated cycles after which a run that is still busy counts as hung.
    """

    name = "rtl"
    counts_cycles = True

    def __init__(self, config: str | AcceleratorConfig, *, backpressure_seed: int | None = None,
                 p_pause: float = 0.3, max_cycles: int = 20_000_000):
        super().__init__(config)
        self.backpressure_seed = backpressure_seed
        self.p_pause = p_pause
        self.max_cycles = max_cycles
        self.memory = bytearray(_BASE)
        self._writes: list[tuple[str, int]] = []
        self._snapshot: dict[str, int] | None = None
        self.last_job: JobResult | None = None

    # ---- memory ----
    def alloc(self, nbytes: int) -> Buffer:
        addr = -(-len(self.memory) // _ALIGN) * _ALIGN
        end = addr + nbytes
        self.memory.extend(bytes(-(-end // 4096) * 4096 - len(self.memory)))
        return _RtlBuffer(self, addr, nbytes)

    # ---- registers ----
    def write_word(self, offset: int, value: int) -> None:
        reg = _register_at(offset)
        self._writes.append((reg.name, value))
        if reg.name == "CTRL" and reg.field("start").decode(value):
            self._simulate(wait=True)

    def read_word(self, offset: int) -> int:
        reg = _register_at(offset)
        if self._snapshot is None or self._writes:
            self._simulate(wait=False)
        return self._snapshot[reg.name]

    def wait_done(self, timeout_s: float, poll_s: float = 1e-4) -> dict[str, int]:
        status = self.read_register("STATUS")
        if status["busy"] and not (status["done"] or status["error"]):
            raise DeviceTimeoutError(
                f"rtl: still busy after {self.max_cycles} simulated cycles "
                f"(LAYER.index={self.read_field('LAYER', 'index')})")
        return super().wait_done(timeout_s, poll_s)

    def _simulate(self, *, wait: bool) -> None:
        job = simulate(self.config, self.memory, self._writes, wait=wait,
                       max_cycles=self.max_cycles, backpressure_seed=self.backpressure_seed,
                       p_pause=self.p_pause)
        self._writes = []
        self.memory[:] = job.memory
        self._snapshot = job.registers
        self.last_job = job

    def close(self) -> None:
        self.memory = bytearray()
        self._snapshot = None


def _register_at(offset: int):
    for reg in REGISTERS:
        if reg.offset == offset:
            return reg
    raise ValueError(f"no register at offset {offset}")
