"""Driver: the :class:`Device` interface every backend implements and the user API
:class:`Accelerator`.

Two layers. A :class:`Device` gives register access by register and field name (offsets and
bit positions come from :data:`dwsep.hw.layout.REGISTERS`), DDR buffers with a physical
address, and a bounded wait for completion. :class:`Accelerator` runs models on any device
with the same code: check the capability registers against the config, compile, write the DDR
image, start, poll with a timeout, read the cycle counter and the output.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..hw.config import CONFIGS, AcceleratorConfig, get_config
from ..hw.layout import ADDRESS_FIELDS, DESCRIPTOR, REGISTERS, ErrorCode, capability_values
from .compiler import Program, compile_model
from .graph import Graph, UnsupportedModelError
from .tflite_reader import read_tflite

__all__ = [
    "DwsepError", "DeviceTimeoutError", "AcceleratorTimeout", "HardwareError",
    "CapabilityMismatchError",
    "InvalidInputError", "BackendUnavailableError", "Buffer", "Device", "Accelerator",
    "check_capabilities", "compile_for", "DEFAULT_CONFIG",
]


class DwsepError(Exception):
    """Base class of the errors the driver raises."""


class DeviceTimeoutError(DwsepError):
    """A wait for the device ran out of time."""


class AcceleratorTimeout(DeviceTimeoutError):
    """A run did not end within its timeout. The driver then aborted it (``CTRL.abort``):
    ``layer`` is the descriptor it was at, ``cycles`` the cycles it had run (``None`` on
    devices without timing), ``stopped`` whether the abort brought the accelerator back to
    idle (if not, only reloading the bitstream resets it)."""

    def __init__(self, message: str, layer: int, cycles: int | None, stopped: bool):
        super().__init__(message)
        self.layer = layer
        self.cycles = cycles
        self.stopped = stopped


class HardwareError(DwsepError):
    """The accelerator stopped with ``STATUS.error``; ``code`` is the :class:`ErrorCode` (or
    the raw value if the hardware reports one this host does not know), ``layer`` the
    descriptor index it stopped at, ``addr`` its ``ERROR_ADDR`` (the failing burst's address
    for a bus error), ``detail`` what the host found wrong with the descriptor (or ``""``)."""

    def __init__(self, code: ErrorCode | int, layer: int, addr: int = 0, detail: str = ""):
        self.code = code
        self.layer = layer
        self.addr = addr
        self.detail = detail
        name = code.name if isinstance(code, ErrorCode) else f"unknown error code {code}"
        where = (f" at address {addr:#010x}"
                 if code in (ErrorCode.AXI_READ, ErrorCode.AXI_WRITE) else "")
        super().__init__(f"accelerator stopped with {name} at descriptor {layer}{where}"
                         + (f": {detail}" if detail else ""))


class CapabilityMismatchError(DwsepError):
    """The hardware's ID/VERSION/CAP registers do not match the config the host compiles
    for."""


class InvalidInputError(DwsepError, ValueError):
    """The input array does not match the model input (dtype or shape)."""


class BackendUnavailableError(DwsepError):
    """A backend cannot be used here (unknown name, or a package it needs is missing)."""


class Buffer(ABC):
    """A DDR buffer the accelerator can reach at ``physical_address``."""

    def __init__(self, physical_address: int, nbytes: int):
        self.physical_address = physical_address
        self.nbytes = nbytes

    @abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Copy ``data`` to ``offset``; the device sees it when this returns."""

    @abstractmethod
    def read(self, offset: int, nbytes: int) -> bytes:
        """``nbytes`` at ``offset`` as the device last wrote them."""

    @abstractmethod
    def free(self) -> None:
        """Release the buffer."""


class Device(ABC):
    """Register, memory and completion access to one accelerator.

    Backends implement :meth:`read_word`, :meth:`write_word` and :meth:`alloc`; callers use
    the name-based :meth:`read_register`, :meth:`read_field`, :meth:`write_register`.
    ``counts_cycles`` is False for devices without timing (their cycle count is ``None``).
    ``default_timeout_s`` is the wait a run gets unless the caller sets one; ``uses_irq``
    says whether a run enables the interrupt.
    ``on_descriptor``, when set, is called with a descriptor's index as the device starts
    it: devices that execute a program synchronously inside the ``CTRL.start`` write (the
    reference model) report progress this way; the others through ``LAYER.index``, which
    :meth:`wait_done` polls.
    """

    name = "device"
    counts_cycles = True
    default_timeout_s = 10.0
    #: how long an abort may take to drain and reset (microseconds on the board)
    abort_timeout_s = 1.0
    #: True for devices whose :meth:`wait_done` waits on the interrupt: runs start with
    #: ``CTRL.irq_enable`` set.
    uses_irq = False

    def __init__(self, config: str | AcceleratorConfig):
        self.config = get_config(config)
        self.on_descriptor: Callable[[int], None] | None = None

    @abstractmethod
    def read_word(self, offset: int) -> int:
        """Read the 32-bit register at byte ``offset`` (backends only)."""

    @abstractmethod
    def write_word(self, offset: int, value: int) -> None:
        """Write the 32-bit register at byte ``offset`` (backends only)."""

    @abstractmethod
    def alloc(self, nbytes: int) -> Buffer:
        """A DDR buffer of ``nbytes``, aligned to at least ``compiler.ALIGN`` (64) bytes (a
        program image is linked at such an address: :meth:`Program.link`)."""

    def read_register(self, name: str) -> dict[str, int]:
        """All fields of register ``name``."""
        reg = REGISTERS[name]
        word = self.read_word(reg.offset)
        return {f.name: f.decode(word) for f in reg.fields}

    def read_field(self, name: str, field: str) -> int:
        reg = REGISTERS[name]
        return reg.field(field).decode(self.read_word(reg.offset))

    def write_register(self, name: str, **fields: int) -> None:
        """Write register ``name``; fields not given are written as 0."""
        reg = REGISTERS[name]
        word = 0
        for field, value in fields.items():
            word |= reg.field(field).encode(int(value))
        self.write_word(reg.offset, word)

    def wait_done(self, timeout_s: float, poll_s: float = 1e-4,
                  on_layer: Callable[[int], None] | None = None) -> dict[str, int]:
        """Poll ``STATUS`` until ``done`` or ``error``; return its fields. While busy,
        ``on_layer`` (if given) gets ``LAYER.index`` after every poll.

        Raises
        ------
        DeviceTimeoutError
            Neither bit came up within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.read_register("STATUS")
            if status["done"] or status["error"]:
                return status
            if on_layer is not None:
                on_layer(self.read_field("LAYER", "index"))
            if time.monotonic() >= deadline:
                raise DeviceTimeoutError(
                    f"{self.name}: no done after {timeout_s} s (STATUS busy={status['busy']}, "
                    f"LAYER.index={self.read_field('LAYER', 'index')})")
            self.pause(poll_s, deadline)

    def pause(self, poll_s: float, deadline: float) -> None:
        """Between two looks at ``STATUS`` in :meth:`wait_done`: sleep ``poll_s`` (devices
        with an interrupt wait on it instead, until ``deadline`` at most)."""
        time.sleep(poll_s)

    def descriptor_cycles(self) -> dict[int, int] | None:
        """Cycle (from start) at which each descriptor of the last run began, for devices
        that can tell (the simulated RTL); ``None`` otherwise."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the device."""


def check_capabilities(device: Device, config: AcceleratorConfig) -> None:
    """Compare the device's ID, VERSION and CAP_* registers with ``config``.

    Raises
    ------
    CapabilityMismatchError
        Naming the first register field that differs.
    """
    for reg, fields in capability_values(config).items():
        got = device.read_register(reg)
        for field, want in fields.items():
            if got[field] != want:
                raise CapabilityMismatchError(
                    f"{reg}.{field}: the {device.name} device reads {got[field]:#x}, config "
                    f"{config.name!r} expects {want:#x}")


#: the config a model is compiled for unless another is named: the PYNQ-Z2 board's
DEFAULT_CONFIG = "pynq-z2"


def compile_for(graph: Graph, config: str | AcceleratorConfig) -> Program:
    """:func:`compile_model`, whose :class:`UnsupportedModelError` also names the configs
    (:data:`~dwsep.hw.config.CONFIGS`) that the model compiles for, if any."""
    config = get_config(config)
    try:
        return compile_model(graph, config)
    except UnsupportedModelError as e:
        fits = []
        for name, other in CONFIGS.items():
            if other.name == config.name:
                continue
            try:
                compile_model(graph, other)
            except UnsupportedModelError:
                continue
            fits.append(repr(name))
        hint = (f"it fits config {' and '.join(fits)}" if fits else
                f"no config of {', '.join(map(repr, CONFIGS))} runs it")
        raise UnsupportedModelError(f"{e}; {hint}") from None


def _load_graph(model: str | os.PathLike | bytes | Graph) -> tuple[object, Graph | None]:
    """Cache key of ``model`` and, for a Graph, the graph itself."""
    if isinstance(model, Graph):
        return ("graph", id(model)), model
    if isinstance(model, (bytes, bytearray)):
        return ("bytes", hashlib.sha256(model).hexdigest()), None
    path = Path(model)
    st = path.stat()
    return ("path", str(path.resolve()), st.st_mtime_ns, st.st_size), None


class _Loaded:
    """A compiled model with its DDR buffer (allocated on first run)."""

    def __init__(self, graph: Graph, program: Program):
        self.graph = graph  # keeps id(graph) of the cache key alive
        self.program = program
        self.buffer: Buffer | None = None


class Accelerator:
    """Run int8 TFLite models on a dwsep accelerator.

    Parameters
    ----------
    config:
        Name of an :data:`~dwsep.hw.config.CONFIGS` entry or an ``AcceleratorConfig``
        (default :data:`DEFAULT_CONFIG`, the PYNQ-Z2's); must match the hardware (checked
        against its capability registers).
    backend:
        ``"reference"`` (NumPy), ``"rtl"`` (Verilator), ``"pynq"`` (board), or a
        :class:`Device` instance.
    timeout_s:
        Longest wait for one run; ``None`` takes the device's ``default_timeout_s``.
    **backend_options:
        Passed to the backend's device class.

    Attributes
    ----------
    last_stats:
        After :meth:`run`: ``{"backend", "config", "cycles" (int, or None without timing),
        "macs", "descriptor_count", "seconds", "layers": [per-layer report dicts, each with
        "cycles" (where the device reports descriptor start cycles: the simulated RTL, exact),
        "seconds" (wall time from its first descriptor's start to the next layer's, where
        the device reported progress, else None)], "host_steps": [{"kind", "tensor",
        "seconds"}]}``.
    """

    #: Before each run, set the DDR window (``WINDOW_LO``, ``WINDOW_HI``) to the program's
    #: own buffer, so that no descriptor reaches memory outside it (tests switch it off to
    #: put a bad address on the bus).
    restrict_window = True

    def __init__(self, config: str | AcceleratorConfig = DEFAULT_CONFIG,
                 backend: str | Device = "reference", *, timeout_s: float | None = None,
                 **backend_options):
        self.config = get_config(config)
        if isinstance(backend, Device):
            self.device = backend
        else:
            from .backends import device_class
            self.device = device_class(backend)(self.config, **backend_options)
        self.timeout_s = self.device.default_timeout_s if timeout_s is None else timeout_s
        check_capabilities(self.device, self.config)
        self._cache: dict[object, _Loaded] = {}
        self.last_stats: dict | None = None
        self._running = threading.Lock()

    def compile(self, model: str | os.PathLike | bytes | Graph) -> Program:
        """Compile ``model`` (a ``.tflite`` path, its bytes or a Graph), cached."""
        return self._load(model).program

    def _load(self, model) -> _Loaded:
        key, graph = _load_graph(model)
        if key not in self._cache:
            if graph is None:
                graph = read_tflite(model)
            self._cache[key] = _Loaded(graph, compile_for(graph, self.config))
        return self._cache[key]

    def run(self, model: str | os.PathLike | bytes | Graph, x: np.ndarray, *,
            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Run ``model`` on ``x`` (int8, NHWC with batch 1 or HWC); returns the int8 output
        with the same batch convention (the model's output shape, or without its leading 1).

        ``progress(descriptor, count)`` is called as the device reaches each descriptor
        (in increasing order, each once) and with ``(count, count)`` when the run is done;
        ``Program.layer_of_descriptor`` names the layer.

        Runs on one Accelerator go one at a time: a run started while another is going on
        (from another thread) raises :class:`DwsepError` at once.

        Raises
        ------
        UnsupportedModelError, InvalidInputError, HardwareError, DeviceTimeoutError,
        DwsepError
        """
        if not self._running.acquire(blocking=False):
            raise DwsepError(f"{self.device.name}: a run is already going on on this "
                             f"accelerator (from another thread); runs go one at a time")
        try:
            return self._run(model, x, progress)
        finally:
            self._running.release()

    def _run(self, model, x, progress) -> np.ndarray:
        loaded = self._load(model)
        prog = loaded.program
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise InvalidInputError(f"input must be int8, not {x.dtype} (quantize with scale "
                                    f"{prog.input.scale:g}, zero point {prog.input.zero_point})")
        if x.shape not in (prog.input.shape, prog.input.shape[1:]):
            raise InvalidInputError(f"input has shape {list(x.shape)}, the model takes "
                                    f"{list(prog.input.shape)}")
        batched = x.ndim == 4
        if loaded.buffer is None:
            loaded.buffer = self.device.alloc(prog.size)
            loaded.buffer.write(0, prog.link(loaded.buffer.physical_address))
        buf = loaded.buffer
        buf.write(prog.input.offset, prog.input.pack(x))

        count = len(prog.descriptors)
        starts: dict[int, float] = {}

        def reached(index: int) -> None:
            for i in range(len(starts), min(index, count - 1) + 1):
                starts[i] = time.monotonic()
                if progress is not None:
                    progress(i, count)

        dev = self.device
        if dev.read_field("STATUS", "busy"):
            raise DwsepError(f"{dev.name}: the accelerator is busy with a run this program "
                             f"did not start (another process, or a run left over)")
        dev.write_register("STATUS", done=1, error=1)
        dev.write_register("PROGRAM", addr=buf.physical_address)
        if self.restrict_window:  # the program reaches its own buffer and nothing else
            dev.write_register("WINDOW_LO", addr=buf.physical_address)
            dev.write_register("WINDOW_HI", addr=buf.physical_address + prog.size - 1)
        t0 = time.monotonic()
        dev.on_descriptor = reached
        try:
            dev.write_register("CTRL", start=1, irq_enable=int(dev.uses_irq))
            status = dev.wait_done(self.timeout_s, on_layer=reached)
        except DeviceTimeoutError as e:
            raise self._abort_after_timeout(e, prog) from None
        finally:
            dev.on_descriptor = None
        t_end = time.monotonic()
        if status["error"]:
            raise self._hardware_error(prog, buf)
        reached(count - 1)
        if progress is not None:
            progress(count, count)
        cycles = self._cycles()
        results, steps = {}, []
        for step in prog.host_steps:
            t = time.monotonic()
            results[step.tensor] = step.apply(buf.read)
            steps.append({"kind": step.kind, "tensor": step.tensor,
                          "seconds": time.monotonic() - t})
        if prog.output_step is not None:
            out = results[prog.output_step.tensor].reshape(prog.output.shape)
        else:
            out = prog.output.unpack(buf.read(prog.output.offset, prog.output.nbytes))
        cycle_starts = dev.descriptor_cycles()
        self.last_stats = {
            "backend": dev.name, "config": self.config.name, "cycles": cycles,
            "macs": prog.macs, "descriptor_count": count, "seconds": t_end - t0,
            "layers": [dict(r, seconds=_layer_seconds(r, starts, t_end),
                            cycles=_layer_cycles(r, cycle_starts, cycles))
                       for r in prog.layers],
            "host_steps": steps}
        return out if batched or out.shape[0] != 1 else out[0]

    def _cycles(self) -> int | None:
        dev = self.device
        if not dev.counts_cycles:
            return None
        lo = dev.read_field("CYCLES_LO", "value")  # latches CYCLES_HI
        return dev.read_field("CYCLES_HI", "value") << 32 | lo

    def _abort_after_timeout(self, timeout: DeviceTimeoutError,
                             prog: Program) -> AcceleratorTimeout:
        """After a run's timeout: abort it (if still busy) and say where it was."""
        dev = self.device
        layer, cycles = dev.read_field("LAYER", "index"), self._cycles()
        stopped, aborted = True, False
        if dev.read_field("STATUS", "busy"):
            dev.write_register("CTRL", abort=1)
            try:
                dev.wait_done(dev.abort_timeout_s)
            except DeviceTimeoutError:
                stopped = False
        err = dev.read_register("ERROR")
        if stopped and dev.read_field("STATUS", "error") and err["code"] == ErrorCode.ABORTED:
            layer, aborted = err["layer"], True  # where the abort found it (LAYER is back at 0)
        where = _descriptor_name(prog, layer)
        after = (f"{cycles:,} cycles" if cycles is not None else f"{self.timeout_s} s")
        if not stopped:
            outcome = "the abort did not stop it either: reload the bitstream to reset it"
        elif aborted:
            outcome = "the run was aborted; the accelerator is ready for the next"
        else:
            outcome = ("the accelerator is idle but reported neither done nor an error: the "
                       "start did not reach it, or something reset it")
        return AcceleratorTimeout(f"{timeout}; stopped at {where} after {after}: {outcome}",
                                  layer, cycles, stopped)

    def _hardware_error(self, prog: Program, buf: Buffer) -> HardwareError:
        """The error the accelerator reports, with what is wrong with its descriptor (read
        back from DDR as the accelerator saw it, and checked as the hardware checks it)."""
        from .backends.reference import check_descriptor

        dev = self.device
        err = dev.read_register("ERROR")
        addr = dev.read_field("ERROR_ADDR", "addr")
        try:
            code = ErrorCode(err["code"])
        except ValueError:
            code = err["code"]
        layer, detail = err["layer"], ""
        if code in (ErrorCode.BAD_OPCODE, ErrorCode.BAD_PARAMS, ErrorCode.MISALIGNED,
                    ErrorCode.OUT_OF_WINDOW):
            window = (dev.read_field("WINDOW_LO", "addr"), dev.read_field("WINDOW_HI", "addr"))
            offset = addr - buf.physical_address
            if addr % DESCRIPTOR.size == buf.physical_address % DESCRIPTOR.size and \
                    0 <= offset <= buf.nbytes - DESCRIPTOR.size:
                d = DESCRIPTOR.unpack(buf.read(offset, DESCRIPTOR.size))
                found, rule = check_descriptor(d, self.config, window)
                if found == code:
                    values = "" if code == ErrorCode.OUT_OF_WINDOW else _values(d, rule)
                    detail = f"{_descriptor_name(prog, layer)} needs {rule}{values}"
            if not detail:
                detail = (f"the descriptor at {addr:#010x} lies outside the DDR window "
                          f"{window[0]:#010x}..{window[1]:#010x}")
        elif code == ErrorCode.ABORTED:
            detail = "CTRL.abort stopped it"
        return HardwareError(code, layer, addr, detail)

    def close(self) -> None:
        """Free the buffers and the device."""
        for loaded in self._cache.values():
            if loaded.buffer is not None:
                loaded.buffer.free()
        self._cache.clear()
        self.device.close()

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _descriptor_name(prog: Program, index: int) -> str:
    """``descriptor N (layer NAME)`` where the program names it."""
    try:
        r = prog.layer_of_descriptor(index)
    except IndexError:
        return f"descriptor {index}"
    return f"descriptor {index} (layer {r['layer']}: {' + '.join(r['ops'])} -> {r['output']})"


def _values(d: dict[str, int], rule: str) -> str:
    """``"; it has kernel = 9"``: the values of the descriptor fields ``rule`` names."""
    named = [w for w in dict.fromkeys(re.findall(r"[a-z][a-z0-9_]*", rule)) if w in d]
    shown = [f"{n} = {d[n]:#x}" if n in ADDRESS_FIELDS else f"{n} = {d[n]}" for n in named]
    return f"; it has {', '.join(shown)}" if named else ""


def _layer_cycles(report: dict, starts: dict[int, int] | None, total: int | None) -> int | None:
    """Cycles from a layer's first descriptor to the one after its last (or the end), where
    the device reports descriptor start cycles."""
    first, n = report["descriptors"]
    if starts is None or total is None or first not in starts:
        return None
    return starts.get(first + n, total) - starts[first]


def _layer_seconds(report: dict, starts: dict[int, float], end: float) -> float | None:
    """Wall time from the start of a layer's first descriptor to the start of the descriptor
    after its last one (or the end of the run); ``None`` if the device did not report it."""
    first, n = report["descriptors"]
    if first not in starts:
        return None
    return starts.get(first + n, end) - starts[first]
