"""The ``pynq`` backend: the accelerator on a PYNQ board.

PYNQ conventions: ``pynq.Overlay`` loads the bitstream (with its ``.hwh`` beside it), the IP
gets a :class:`pynq.DefaultIP` subclass bound by VLNV (:data:`VLNV`), registers are reached
through the IP's ``read``/``write`` (offsets from :data:`dwsep.hw.layout.REGISTERS`), and
DDR buffers come from ``pynq.allocate`` (flushed after the CPU writes them, invalidated before
it reads what the accelerator wrote). A run waits on the IP's interrupt (``pynq.Interrupt``
on its ``irq`` pin, through the block design's AXI interrupt controller) where the overlay
has one and no event loop is already running (in Jupyter one is), else it polls ``STATUS``;
both with the run's timeout.

Tested with the real ``pynq`` 4.0 on a simulated board (:mod:`dwsep.sim.pynq_board`).

``pynq`` pins ``numpy<2`` and only makes sense on a board, so it is imported when a
:class:`PynqDevice` is made, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref

import numpy as np

from ..driver import BackendUnavailableError, Buffer, Device

__all__ = ["PynqDevice", "VLNV", "ip_driver_class", "fix_zynq7000_clocks"]

#: IP-XACT identifier of the packaged accelerator IP (vendor:library:name:version)
VLNV = "dwsep.org:dwsep:accelerator:1.0"

_MISSING = ("the pynq backend needs the 'pynq' package (a PYNQ board image has it): "
            "pip install 'dwsep[pynq]'")


def _import_pynq():
    try:
        import pynq
    except ImportError as e:
        raise BackendUnavailableError(_MISSING) from e
    return pynq


# One driver class per imported pynq module: DefaultIP registers subclasses by ``bindto`` as
# they are defined, and the class must exist before an Overlay assigns drivers.
_driver_classes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ip_driver_class(pynq) -> type:
    """The ``pynq.DefaultIP`` subclass bound to :data:`VLNV` (defined once per module)."""
    if pynq not in _driver_classes:
        class DwsepIP(pynq.DefaultIP):
            """PYNQ driver of the dwsep accelerator IP: register access through
            ``read``/``write`` (the driver names registers, see
            :class:`~dwsep.host.driver.Device`)."""
            bindto = [VLNV]

        _driver_classes[pynq] = DwsepIP
    return _driver_classes[pynq]


def fix_zynq7000_clocks() -> None:
    """Work around PYNQ 4.0.0 with pynqmetadata 0.2.0 on Zynq-7000: ``Overlay.download``
    sets every enabled fabric clock to the frequency pynqmetadata reads from the ``.hwh``
    under the Zynq UltraScale+ parameter name, which a ``processing_system7`` does not have,
    so the frequency is ``None`` and the download raises ``TypeError`` (``pynq/ps.py``).
    Point the Zynq-7000 model at the parameter Vivado writes for it,
    ``PCW_ACT_FPGA<i>_PERIPHERAL_FREQMHZ``; nothing changes where pynqmetadata is absent or
    already reads a Zynq-7000 name."""
    try:
        from pynqmetadata.models.zynq_proc_sys_core import ZynqProcSysCore
    except ImportError:
        return
    probe = ZynqProcSysCore.__new__(ZynqProcSysCore)
    try:
        name = ZynqProcSysCore.clk_freq_param_name(probe, 0)
    except Exception:
        name = None
    if name is None or name.startswith("PSU__"):
        ZynqProcSysCore.clk_freq_param_name = (
            lambda self, clk_id: f"PCW_ACT_FPGA{clk_id}_PERIPHERAL_FREQMHZ")


class _PynqBuffer(Buffer):
    """A ``pynq.allocate`` buffer of bytes."""

    def __init__(self, array):
        super().__init__(int(array.physical_address), int(array.nbytes))
        self._array = array

    def write(self, offset: int, data: bytes) -> None:
        self._array[offset:offset + len(data)] = np.frombuffer(data, np.uint8)
        self._array.flush()

    def read(self, offset: int, nbytes: int) -> bytes:
        self._array.invalidate()
        return self._array[offset:offset + nbytes].tobytes()

    def free(self) -> None:
        self._array.freebuffer()


class PynqDevice(Device):
    """The accelerator in a loaded PYNQ overlay.

    Parameters
    ----------
    config:
        The config the bitstream was built with.
    bitstream:
        Path of the ``.bit`` file (its ``.hwh`` beside it); loaded with ``pynq.Overlay``.
    overlay:
        An already loaded ``pynq.Overlay`` to use instead of ``bitstream``.
    ip_name:
        Name of the accelerator in ``overlay.ip_dict``; by default the one IP of type
        :data:`VLNV`.

    Raises
    ------
    BackendUnavailableError
        ``pynq`` is not installed, neither ``bitstream`` nor ``overlay`` was given, or the
        overlay holds no dwsep IP.
    """

    name = "pynq"

    def __init__(self, config, bitstream: str | os.PathLike | None = None, overlay=None,
                 ip_name: str | None = None):
        super().__init__(config)
        self._pynq = _import_pynq()
        ip_driver_class(self._pynq)
        if overlay is None:
            if bitstream is None:
                raise BackendUnavailableError(
                    "the pynq backend needs bitstream='dwsep.bit' (with its .hwh beside it) "
                    "or overlay=<a loaded pynq.Overlay>")
            fix_zynq7000_clocks()
            overlay = self._pynq.Overlay(str(bitstream))
        ours = [n for n, d in overlay.ip_dict.items() if d.get("type") == VLNV]
        if ip_name is None:
            if not ours:
                raise BackendUnavailableError(f"the overlay has no IP of type {VLNV}; its IPs: "
                                              f"{', '.join(overlay.ip_dict)}")
            if len(ours) > 1:
                raise BackendUnavailableError(f"the overlay has {len(ours)} IPs of type {VLNV} "
                                              f"({', '.join(ours)}); pass ip_name= to choose")
            ip_name = ours[0]
        self.overlay = overlay
        self.ip_name = ip_name
        self.ip = getattr(overlay, ip_name)
        #: ``pynq.Interrupt`` of the IP's ``irq`` pin, or None (no interrupt controller)
        self.irq = getattr(self.ip, "irq", None)
        #: runs wait on ``irq`` (where there is one); set False to poll, which also reports
        #: each layer's progress (``Accelerator.last_stats["layers"]``)
        self.uses_irq = self.irq is not None

    def pause(self, poll_s: float, deadline: float) -> None:
        """Wait on the interrupt for up to 0.1 s (so :meth:`wait_done` still reports
        ``LAYER.index`` and sees the deadline), or sleep ``poll_s`` where there is no
        interrupt or an event loop is already running (Jupyter's)."""
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
        if not self.uses_irq or self.irq is None or loop is None or loop.is_running():
            time.sleep(poll_s)
            return
        left = max(0.0, min(0.1, deadline - time.monotonic()))
        with contextlib.suppress(asyncio.TimeoutError):
            loop.run_until_complete(asyncio.wait_for(self.irq.wait(), left))

    def read_word(self, offset: int) -> int:
        return int(self.ip.read(offset))

    def write_word(self, offset: int, value: int) -> None:
        self.ip.write(offset, int(value))

    def alloc(self, nbytes: int) -> Buffer:
        return _PynqBuffer(self._pynq.allocate(shape=(nbytes,), dtype=np.uint8))

    def close(self) -> None:
        """The overlay stays loaded; buffers are freed by their owners."""
