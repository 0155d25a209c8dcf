"""Device backends of the driver, by name; each module is imported only when used (``rtl``
needs the simulation extras, ``pynq`` a PYNQ image)."""

from __future__ import annotations

import importlib

from ..driver import BackendUnavailableError, Device

__all__ = ["BACKENDS", "device_class"]

#: backend name -> "module:class" of its :class:`~dwsep.host.driver.Device`
BACKENDS = {
    "reference": "dwsep.host.backends.reference:ReferenceDevice",
    "rtl": "dwsep.sim.rtl_device:RtlDevice",
    "pynq": "dwsep.host.backends.pynq:PynqDevice",
}


def device_class(name: str) -> type[Device]:
    """The Device class of backend ``name``.

    Raises
    ------
    BackendUnavailableError
        Unknown name, or its module cannot be imported here.
    """
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; known backends: "
                                      f"{', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} is not available: {e}") from e
