"""A simulated PYNQ-Z2 for the real ``pynq`` package (4.0): the board code path of dwsep
(``pynq.Overlay``, PYNQ's ``.hwh`` parser, driver binding by VLNV, ``pynq.allocate``, MMIO,
``pynq.Interrupt``) runs unmodified with no board, no root and on any CPU.

:class:`SimDevice` is a ``pynq.Device`` subclass. Made the active device (:meth:`activate`):

* ``pynq.Overlay(path.bit)``: the ``.hwh`` beside the ``.bit`` is parsed by PYNQ's own parser
  (``pynqmetadata``'s ``RuntimeMetadataParser``, as PYNQ's ``EmbeddedDevice`` does); the
  ``.bit`` is never read. ``download`` records the call and runs ``Device.post_download``.
* MMIO: capability ``REGISTER_RW`` makes ``pynq.MMIO`` call ``read_registers`` /
  ``write_registers``; each 32-bit access goes by address to a model: the one registered for
  the IP's VLNV (:class:`AcceleratorModel` for dwsep), an AXI INTC model, a plain register
  file for other IP, or the Zynq SLCR (``pynq.Clocks`` sets the fabric clocks there). An
  address nothing is mapped at raises :class:`BoardBusError`.
* ``pynq.allocate`` returns real ``pynq.buffer.PynqBuffer`` objects (``coherent=False``) with
  physical addresses in a simulated DDR (:class:`SimDDR`). Each buffer has its own CPU view:
  ``flush`` copies it to DDR and ``invalidate`` back, so a missing flush gives the
  accelerator stale bytes (recorded in ``stale_reads``) and a missing invalidate gives the
  host stale results. DDR is filled with ``0xA5`` at allocation.
* Interrupts: a model drives its pin (``set_irq``) -> AXI INTC model -> the PS's IRQ_F2P line
  -> a pseudo-terminal standing in for ``/dev/uioN``, which PYNQ's own ``UioController``
  opens and waits on. The one patch of PYNQ: ``pynq.interrupt.get_uio_irq`` (it scans
  ``/proc/interrupts`` and ``/sys/class/uio``) returns that pseudo-terminal.

:func:`simulated_board` sets up a folder with a ``dwsep.bit`` stand-in and the block design's
``dwsep.hwh`` (:func:`dwsep.bitstreams.hwh.block_design_hwh`) and activates a device whose
dwsep IP is the reference model over the simulated DDR.

Needs ``pynq`` (which pins NumPy 1.x): the tests run this in an environment of its own
(``tests/pynq_env.py``). Python 3.10 compatible, like the board's image.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import tty
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pynq
from pynq.buffer import PynqBuffer

__all__ = ["SimDevice", "SimDDR", "SimAxiIntc", "RegisterFile", "BoardBusError",
           "AcceleratorModel", "simulated_board", "write_dummy_bit"]


class BoardBusError(Exception):
    """An access to an address nothing is mapped at (a board would take a data abort)."""


# --------------------------------------------------------------------------------------------
# simulated DDR and buffers
# --------------------------------------------------------------------------------------------

class SimDDR:
    """``size`` bytes of DDR at physical ``base`` as a NumPy byte array (the device's view)."""

    def __init__(self, base: int, size: int, fill: int = 0):
        self.base, self.size = base, size
        self.data = np.full(size, fill, np.uint8)

    def _index(self, addr: int, nbytes: int) -> int:
        if not (self.base <= addr and addr + nbytes <= self.base + self.size):
            raise BoardBusError(f"DDR access 0x{addr:08x}+{nbytes} outside "
                           f"0x{self.base:08x}..0x{self.base + self.size:08x}")
        return addr - self.base

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        i = self._index(addr, nbytes)
        return self.data[i:i + nbytes]

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.view(addr, nbytes).tobytes()

    def write(self, addr: int, data) -> None:
        src = np.frombuffer(bytes(data), np.uint8)
        self.view(addr, len(src))[:] = src


class SimBO:
    """What a simulated buffer passes as ``bo``: its physical range, its CPU view (``host``)
    and that view as of the last flush or invalidate (``synced``): where ``host`` differs
    from ``synced`` the CPU wrote bytes it has not flushed yet."""

    def __init__(self, phys: int, nbytes: int, host: np.ndarray):
        self.phys, self.nbytes, self.host, self.freed = phys, nbytes, host, False
        self.synced = host.copy()

    def __repr__(self):
        return f"SimBO(0x{self.phys:08x}, {self.nbytes})"


class SimMemory:
    """The PS DDR as a pynq memory: ``allocate`` like ``XrtMemory.allocate``
    (pynq/pl_server/xrt_device.py:59-88, 113-126), first-fit in the simulated DDR."""

    ALIGN = 4096  # CMA buffers are page aligned

    def __init__(self, device: SimDevice, ddr: SimDDR, poison: int | None = 0xA5):
        self.device, self.ddr, self.poison = device, ddr, poison
        self.live: dict[int, SimBO] = {}  # phys -> bo

    def _place(self, nbytes: int) -> int:
        size = -(-max(nbytes, 1) // self.ALIGN) * self.ALIGN
        addr = self.ddr.base
        for start in sorted(self.live):
            if start - addr >= size:
                break
            bo = self.live[start]
            addr = start + -(-max(bo.nbytes, 1) // self.ALIGN) * self.ALIGN
        if addr + size > self.ddr.base + self.ddr.size:
            raise RuntimeError(f"simulated DDR full: {nbytes} bytes requested")
        return addr

    def allocate(self, shape, dtype, cacheable: int = 1, **kwargs) -> PynqBuffer:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if np.ndim(shape) else int(shape)
        nbytes = count * dtype.itemsize
        with self.device.lock:
            phys = self._place(nbytes)
            host = np.zeros(max(nbytes, 1), np.uint8)  # the CPU's (cached) view
            bo = SimBO(phys, nbytes, host)
            self.live[phys] = bo
            if self.poison is not None and nbytes:  # what the device sees before a flush
                self.ddr.view(phys, nbytes)[:] = self.poison
        buf = PynqBuffer(shape, dtype, buffer=host, device=self.device, device_address=phys,
                         bo=bo, coherent=False)
        # PynqBuffer.freebuffer (pynq/buffer.py:65-82) calls return_to.return_pointer(pointer)
        # when memory/pointer/return_to are set; without them it would call libc.munmap,
        # which pynq/buffer.py only defines on a board (ON_TARGET).
        # freed=True keeps a second freebuffer (explicit, then __del__) off the munmap branch.
        buf.memory, buf.pointer, buf.return_to, buf.freed = self, bo, self, True
        self.device.log.append(("allocate", phys, nbytes))
        return buf

    def return_pointer(self, bo: SimBO) -> None:
        with self.device.lock:
            if not bo.freed:
                bo.freed = True
                self.live.pop(bo.phys, None)
                self.device.log.append(("free", bo.phys, bo.nbytes))


# --------------------------------------------------------------------------------------------
# register-mapped models
# --------------------------------------------------------------------------------------------

class RegisterFile:
    """Plain read/write 32-bit registers (a dict), optionally with reset values."""

    def __init__(self, reset: dict[int, int] | None = None):
        self.regs = dict(reset or {})

    def read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.regs[offset] = value


class SimAxiIntc:
    """AXI INTC (PG099) register subset pynq's _InterruptController uses
    (pynq/interrupt.py:168-233): ISR 0x00, IPR 0x04, IER 0x08, IAR 0x0C, SIE 0x10, CIE 0x14,
    IVR 0x18, MER 0x1C. Level inputs; ISR bits latch while an input is high."""

    def __init__(self, on_output: Callable[[bool], None]):
        self.on_output = on_output
        self.inputs = self.isr = self.ier = self.mer = 0
        self.output = False

    def set_input(self, index: int, level: bool) -> None:
        self.inputs = (self.inputs | (1 << index)) if level else (self.inputs & ~(1 << index))
        self._update()

    def _update(self) -> None:
        self.isr |= self.inputs
        out = bool((self.mer & 3) == 3 and (self.isr & self.ier))
        if out != self.output:
            self.output = out
            self.on_output(out)

    def read(self, offset: int) -> int:
        ipr = self.isr & self.ier
        return {0x00: self.isr, 0x04: ipr, 0x08: self.ier, 0x1C: self.mer,
                0x18: (ipr & -ipr).bit_length() - 1 if ipr else 0xFFFFFFFF}.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        if offset == 0x08:
            self.ier = value
        elif offset == 0x0C:
            self.isr &= ~value
        elif offset == 0x10:
            self.ier |= value
        elif offset == 0x14:
            self.ier &= ~value
        elif offset == 0x1C:
            self.mer = value & 3
        self._update()


class SimUio:
    """A ``/dev/uioN`` stand-in for one PS interrupt line (uio_pdrv_genirq semantics): a
    pseudo-terminal in raw mode. pynq's UioController opens the slave path, writes a 4-byte
    irq_on (enable) and reads a 4-byte count when readable (pynq/uio.py:64-92). The
    simulated kernel delivers one count per enable while the line is high."""

    def __init__(self, raw_irq: int):
        self.raw_irq = raw_irq
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass through unchanged
        self.path = os.ttyname(slave)
        self._slave = slave  # keep the pty alive
        fcntl.fcntl(self.master, fcntl.F_SETFL, fcntl.fcntl(self.master, fcntl.F_GETFL)
                    | os.O_NONBLOCK)
        self.level = self.armed = False
        self.count = 0

    def _drain(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        for i in range(0, len(data) - 3, 4):
            self.armed = data[i:i + 4] != b"\0\0\0\0"  # pynq writes bytes([0, 0, 0, 1])

    def update(self, level: bool | None = None) -> None:
        if level is not None:
            self.level = level
        self._drain()
        if self.armed and self.level:
            self.count += 1
            self.armed = False  # the kernel handler masks the irq until the next enable
            os.write(self.master, struct.pack("<I", self.count))

    def close(self) -> None:
        if os.getsid(0) == os.getpid():
            # A session leader without a terminal acquires this pty as its controlling tty when
            # pynq opens it (no O_NOCTTY); closing the master would then SIGHUP the process.
            _KEPT_PTYS.append((self.master, self._slave))
            return
        os.close(self.master)
        os.close(self._slave)


_KEPT_PTYS: list[tuple[int, int]] = []


# PYNQ-Z2-like SLCR contents (PS_CLK 50 MHz): IO PLL x20 = 1000 MHz, ARM PLL x26, DDR PLL x21;
# FCLK0..3 from the IO PLL / 20 / 1 = 50 MHz at reset, so Overlay.download's reprogramming
# (to the hwh's 100 MHz) is visible. pynq.ps._ClocksZynq reads/writes these.
ZYNQ_SLCR_BASE = 0xF800_0000
ZYNQ_SLCR_RESET = {0x100: 26 << 12, 0x104: 21 << 12, 0x108: 20 << 12, 0x120: 0x1F000200,
                   0x170: 0x00101400, 0x180: 0x00101400, 0x190: 0x00101400, 0x1A0: 0x00101400}


def write_dummy_bit(path) -> None:
    """A ``.bit`` pynq accepts: only its existence is checked (pynq/bitstream.py:15-25)."""
    Path(path).write_bytes(b"dummy bitstream for a simulated PYNQ device\n")


# --------------------------------------------------------------------------------------------
# the device
# --------------------------------------------------------------------------------------------

ModelFactory = Callable[["SimDevice", str, dict], object]


class SimDevice(pynq.Device):
    """A simulated Zynq-7000 PYNQ board.

    models: VLNV (``vendor:library:name:version`` or without the version) -> factory
        ``f(device, ip_name, ip_dict_entry)`` returning an object with ``read(offset) -> int``
        and ``write(offset, value)``; the model reaches DDR through ``device.ddr`` and raises
        its interrupt with ``device.set_irq('<ip_name>/<pin>', level)``.
    """

    def __init__(self, models: dict[str, ModelFactory] | None = None, *,
                 ddr_base: int = 0x1800_0000, ddr_size: int = 32 << 20,
                 poison: int | None = 0xA5, tag: str = "sim0"):
        super().__init__(tag)
        self.name = "sim_pynq_z2"  # Bitstream looks up <name>.bit in <bit>.d directories
        self.arch = "armv7l"        # pynq.Clocks picks _ClocksZynq (pynq/ps.py:408)
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.models = dict(models or {})
        self.bitfile_name = None
        self.timestamp = ""
        self.lock = threading.RLock()
        self.log: list[tuple] = []
        self.stale_reads: list[tuple] = []
        self.ddr = SimDDR(ddr_base, ddr_size)
        self._memory = SimMemory(self, self.ddr, poison)
        self.regions: list[tuple[int, int, str, object]] = []
        self.slcr = RegisterFile(ZYNQ_SLCR_RESET)
        self._map(ZYNQ_SLCR_BASE, 0x1000, "slcr", self.slcr)
        self.ip_models: dict[str, object] = {}
        self.uio: dict[int, SimUio] = {}
        self._pins: dict[str, tuple[str, int]] = {}
        self._saved: dict = {}

    # ---- registration ----------------------------------------------------------------------
    def activate(self) -> SimDevice:
        """Make this the device pynq uses by default, and route pynq's UIO lookup here."""
        import pynq.interrupt as pi
        import pynq.ps as ps
        if not self._saved:
            self._saved = {"get_uio_irq": pi.get_uio_irq}
        pynq.Device.active_device = self  # DeviceMeta.active_device setter (device.py:75-77)
        pi.get_uio_irq = self.get_uio_irq  # the one patch (interrupt.py:15-42, 144)
        # process-wide caches that would otherwise keep a previous device's objects
        ps.Clocks.__dict__.get("_real_instance") and delattr(ps.Clocks, "_real_instance")
        ps.Clocks.device = self
        pi._InterruptController._controllers.clear()
        pi._InterruptController._uio_devices.clear()
        pi._InterruptController._last_timestamp = None
        return self

    def deactivate(self) -> None:
        import pynq.interrupt as pi
        if self._saved:
            pi.get_uio_irq = self._saved.pop("get_uio_irq")
        if pynq.Device.__dict__.get("_active_device") is self:
            del pynq.Device._active_device
        for u in self.uio.values():
            u.close()
        self.uio.clear()

    # ---- metadata, download ------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False):
        """The parser EmbeddedDevice builds (embedded_device.py:248-266) without the xclbin
        step (``_create_xclbin`` runs ``xclbinutil``)."""
        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError("Unable to find metadata for bitstream")  # as EmbeddedDevice
        if partial:
            from pynq.pl_server.hwh_parser import HWH
            parser = HWH(hwh_data=hwh.read_text(encoding="utf-8"))
        else:
            from pynqmetadata.frontends import Metadata
            from pynqmetadata.views.runtime import RuntimeMetadataParser
            parser = RuntimeMetadataParser(Metadata(input=str(hwh)))
            parser.refresh_hierarchy_dict()
        parser.bin_data = parser.xclbin_data = parser.dtbo_data = None
        return parser

    def set_bitfile_name(self, bitfile_name: str) -> None:
        """Called by Overlay.__init__ (overlay.py:323) whether or not it downloads: parse,
        then build the simulated address map and interrupt wiring from the parsed dicts."""
        with self.lock:
            super().set_bitfile_name(bitfile_name)
            self._wire()

    def download(self, bitstream, parser=None) -> None:
        """Bitstream.download -> here (bitstream.py:168). Nothing is read from the .bit."""
        with self.lock:
            self.log.append(("download", bitstream.bitfile_name))
            if parser is not None and parser is not self.parser:
                self.parser = parser
                self._wire()
            self.post_download(bitstream, parser)  # sets timestamps, resets the dicts

    def gen_cache(self, bitstream, parser=None) -> None:
        """Overlay(..., download=False, gen_cache=True) calls this; EmbeddedDevice would write
        a pickle and JSON state into site-packages/pynq/pl_server."""

    def shutdown(self) -> None:  # Device.shutdown reads /sys/class/fpga_manager
        pass

    def insert_device_tree(self, abs_dtbo) -> None:  # Device's writes configfs (needs root)
        self.log.append(("insert_dtbo", abs_dtbo))

    def remove_device_tree(self, abs_dtbo) -> None:
        self.log.append(("remove_dtbo", abs_dtbo))

    def close(self) -> None:  # Device.close only warns that the PL server is deprecated
        pass

    def _map(self, base: int, size: int, name: str, handler) -> None:
        for b, s, n, _ in self.regions:
            if base < b + s and b < base + size:
                raise ValueError(f"{name} at 0x{base:08x} overlaps {n}")
        self.regions.append((base, size, name, handler))

    def _wire(self) -> None:
        self.regions = [r for r in self.regions if r[2] == "slcr"]
        self.ip_models = {}
        intcs: dict[str, SimAxiIntc] = {}
        for name, d in self.ip_dict.items():
            if d.get("phys_addr") is None:
                continue  # the PS itself
            vlnv = d["type"] or ""
            factory = self.models.get(vlnv) or self.models.get(vlnv.rpartition(":")[0])
            if factory is not None:
                model = factory(self, name, d)
            elif vlnv.startswith("xilinx.com:ip:axi_intc:"):
                model = intcs[name] = SimAxiIntc(self._intc_output(name))
            else:
                model = RegisterFile()
            self.ip_models[name] = model
            self._map(d["phys_addr"], d["addr_range"], name, model)
        self._pins = {pin: (d["controller"], d["index"])
                      for pin, d in self.interrupt_pins.items()}
        self._intcs = intcs

    def _intc_output(self, name: str):
        def output(level: bool) -> None:
            parent = self.interrupt_controllers.get(name)
            if parent is None:
                return
            if parent["parent"] == "":  # straight to the PS: IRQ_F2P -> GIC -> UIO
                self._ps_irq(parent["raw_irq"], level)
            else:
                self._intcs[parent["parent"]].set_input(parent["index"], level)
        return output

    # ---- interrupts ------------------------------------------------------------------------
    def set_irq(self, pin: str, level: bool) -> None:
        """A model drives its interrupt output ``'<ip>/<pin>'``."""
        with self.lock:
            self.log.append(("irq", pin, int(level)))
            if pin in self._pins:
                controller, index = self._pins[pin]
                self._intcs[controller].set_input(index, level)
            # else: no interrupt controller between the pin and the PS; pynq cannot wait on it

    def _ps_irq(self, raw_irq: int, level: bool) -> None:
        self.uio_for(raw_irq).update(level)

    def uio_for(self, raw_irq: int) -> SimUio:
        if raw_irq not in self.uio:
            self.uio[raw_irq] = SimUio(raw_irq)
        return self.uio[raw_irq]

    def get_uio_irq(self, irq: int) -> str:
        """Replacement for pynq.interrupt.get_uio_irq: the path of the simulated UIO."""
        return self.uio_for(irq).path

    def _poll_uio(self) -> None:
        for u in self.uio.values():
            u.update()

    # ---- REGISTER_RW hooks (pynq/mmio.py:14-23, 74-78) ---------------------------------------
    def _region(self, addr: int):
        for base, size, name, handler in self.regions:
            if base <= addr < base + size:
                return base, name, handler
        raise BoardBusError(f"no IP at 0x{addr:08x}")

    def read_registers(self, address: int, length: int) -> bytes:
        with self.lock:
            out = bytearray()
            for a in range(address, address + length, 4):
                base, name, handler = self._region(a)
                out += (handler.read(a - base) & 0xFFFFFFFF).to_bytes(4, "little")
            return bytes(out[:length])

    def write_registers(self, address: int, data: bytes) -> None:
        with self.lock:
            for i in range(0, len(data), 4):
                a = address + i
                base, name, handler = self._region(a)
                value = int.from_bytes(data[i:i + 4], "little")
                if name != "slcr":
                    self.log.append(("write", name, a - base, value))
                handler.write(a - base, value)
            self._poll_uio()

    # ---- memory ------------------------------------------------------------------------------
    @property
    def default_memory(self) -> SimMemory:
        return self._memory

    def get_memory(self, description) -> SimMemory:
        return self._memory

    def flush(self, bo: SimBO, offset: int, ptr: int, size: int) -> None:
        """PynqBuffer.flush (buffer.py:104-107): CPU view -> DDR for [offset, offset+size)."""
        with self.lock:
            self.ddr.view(bo.phys + offset, size)[:] = bo.host[offset:offset + size]
            bo.synced[offset:offset + size] = bo.host[offset:offset + size]
            self.log.append(("flush", bo.phys + offset, size))

    def invalidate(self, bo: SimBO, offset: int, ptr: int, size: int) -> None:
        """PynqBuffer.invalidate (buffer.py:109-114): DDR -> CPU view."""
        with self.lock:
            bo.host[offset:offset + size] = self.ddr.view(bo.phys + offset, size)
            bo.synced[offset:offset + size] = bo.host[offset:offset + size]
            self.log.append(("invalidate", bo.phys + offset, size))

    def note_device_read(self, addr: int, nbytes: int) -> None:
        """Record (in ``stale_reads``) the parts of [addr, addr+nbytes) the device reads
        while the CPU has written them and not flushed: bytes of a live buffer's CPU view
        that differ from both its last synced state and DDR."""
        with self.lock:
            for bo in self._memory.live.values():
                lo, hi = max(addr, bo.phys), min(addr + nbytes, bo.phys + bo.nbytes)
                if lo >= hi:
                    continue
                cpu = bo.host[lo - bo.phys:hi - bo.phys]
                dirty = (cpu != bo.synced[lo - bo.phys:hi - bo.phys]) & (
                    cpu != self.ddr.view(lo, hi - lo))
                if dirty.any():
                    self.stale_reads.append((lo, hi - lo))


# --------------------------------------------------------------------------------------------
# the dwsep accelerator on the simulated board
# --------------------------------------------------------------------------------------------

class _BoardMemory:
    """The accelerator's AXI managers' view of the board: the simulated DDR, each read checked
    for bytes the CPU wrote but did not flush (``SimDevice.stale_reads``)."""

    def __init__(self, board: SimDevice):
        from dwsep.host.backends.reference import ReferenceMemory

        self.board = board
        self._memory = ReferenceMemory()
        self._memory.map(board.ddr.base, board.ddr.data)

    def read(self, addr: int, nbytes: int) -> bytes:
        data = self._memory.read(addr, nbytes)  # the reference's BusError outside DDR
        self.board.note_device_read(addr, nbytes)
        return data

    def write(self, addr: int, data: bytes) -> None:
        self._memory.write(addr, data)

    def write_pixels(self, addr: int, pitch: int, rows: np.ndarray) -> None:
        self._memory.write_pixels(addr, pitch, rows)


class AcceleratorModel:
    """The dwsep IP of the simulated board: the reference device (``dwsep.host.backends.
    reference``, bit-exact with the RTL and LiteRT) behind ``s_axil``, its bus managers on the
    simulated DDR, ``irq`` = (``STATUS.done`` or ``.error``) and ``CTRL.irq_enable``, as the
    hardware drives it."""

    def __init__(self, board: SimDevice, ip_name: str, description: dict, config: str):
        from dwsep.host.backends.reference import ReferenceDevice

        self.board, self.pin = board, f"{ip_name}/irq"
        self.device = ReferenceDevice(config, memory=_BoardMemory(board))

    def read(self, offset: int) -> int:
        return self.device.read_word(offset)

    def write(self, offset: int, value: int) -> None:
        self.device.write_word(offset, value)
        status = self.device.read_register("STATUS")
        enabled = self.device.read_field("CTRL", "irq_enable")
        self.board.set_irq(self.pin, bool((status["done"] or status["error"]) and enabled))


class RtlAcceleratorModel:
    """The dwsep IP of the simulated board as the Verilated RTL (``dwsep.sim.rtl_device``):
    a start copies the simulated DDR into the simulation's memory and runs the program in
    the background; when it ends, a watcher thread copies the memory back and raises ``irq``
    (if ``CTRL.irq_enable``), as the hardware would, whether or not the host is reading
    registers meanwhile. The DDR must start at a small address: the simulation's memory
    image spans from address 0 to the end of DDR."""

    def __init__(self, board: SimDevice, ip_name: str, description: dict, config: str, *,
                 memory: str = "pynq-z2", clock_mhz: float = 100.0):
        from dwsep.sim.rtl_device import RtlDevice

        self.board, self.pin = board, f"{ip_name}/irq"
        self.device = RtlDevice(config, memory=memory, clock_mhz=clock_mhz)
        self.device.memory = bytearray(board.ddr.base + board.ddr.size)
        self._pending = False

    def read(self, offset: int) -> int:
        with self.board.lock:
            self._sync()
            return self.device.read_word(offset)

    def write(self, offset: int, value: int) -> None:
        with self.board.lock:
            self._sync()
            ddr = self.board.ddr
            self.device.memory[ddr.base:ddr.base + ddr.size] = ddr.data.tobytes()
            self.device.write_word(offset, value)
            if self.device.running():
                self._pending = True
                threading.Thread(target=self._watch, daemon=True,
                                 name="dwsep-board-irq").start()
            else:
                self._update_irq()

    def _watch(self) -> None:
        self.device.join()
        with self.board.lock:
            self._sync()

    def _sync(self) -> None:
        """After a run ends: its memory back into the simulated DDR, then the interrupt."""
        if not self._pending or self.device.running():
            return
        self._pending = False
        self.device.read_field("STATUS", "busy")  # collects the run (RtlDevice._finish)
        ddr = self.board.ddr
        ddr.data[:] = np.frombuffer(self.device.memory, np.uint8)[ddr.base:ddr.base + ddr.size]
        self._update_irq()

    def _update_irq(self) -> None:
        status = self.device.read_register("STATUS")
        enabled = self.device.read_field("CTRL", "irq_enable")
        self.board.set_irq(self.pin, bool((status["done"] or status["error"]) and enabled))


def simulated_board(folder: str | os.PathLike, config: str, *, model: str = "reference",
                    clock_mhz: float = 100.0) -> tuple[SimDevice, Path]:
    """Activate a simulated PYNQ-Z2 running the dwsep overlay of ``config`` and write its
    ``dwsep.bit`` stand-in and ``dwsep.hwh`` (the block design of ``dwsep build``) into
    ``folder``; return the device and the ``.bit`` path for ``pynq.Overlay`` or
    ``Accelerator(config, "pynq", bitstream=...)``. ``model``: ``"reference"`` (the NumPy
    model: 64 MiB of DDR at 0x1800_0000, where PYNQ-Z2 images keep their buffers) or
    ``"rtl"`` (the Verilated accelerator with the PYNQ-Z2 memory model at ``clock_mhz``;
    16 MiB of DDR at 0x10_0000, since each run copies the memory image)."""
    from dwsep.bitstreams.build import BOARDS, VLNV
    from dwsep.bitstreams.hwh import block_design_hwh

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bit = folder / "dwsep.bit"
    write_dummy_bit(bit)
    bit.with_suffix(".hwh").write_text(block_design_hwh(BOARDS["pynq-z2"], config, clock_mhz))
    if model == "reference":
        def factory(board, name, desc):
            return AcceleratorModel(board, name, desc, config)
        ddr_base, ddr_size = 0x1800_0000, 64 << 20
    elif model == "rtl":
        def factory(board, name, desc):
            return RtlAcceleratorModel(board, name, desc, config, clock_mhz=clock_mhz)
        ddr_base, ddr_size = 0x10_0000, 16 << 20
    else:
        raise ValueError(f"model {model!r}: 'reference' or 'rtl'")
    device = SimDevice({VLNV: factory}, ddr_base=ddr_base, ddr_size=ddr_size)
    return device.activate(), bit
