"""Small shared port signatures."""

from __future__ import annotations

from amaranth.hdl import ShapeLike, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["ParamSignature", "WritePortSignature"]


class ParamSignature(wiring.Signature):
    """A signature fixed by a few parameters (the attributes named in ``_params``): equal to
    a signature of its class with equal parameters, and shown with them, as
    ``amaranth.lib.stream.Signature`` is."""

    _params: tuple[str, ...] = ()

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(other, p) == getattr(self, p) for p in self._params)

    def __repr__(self):
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params)
        return f"{type(self).__name__}({args})"


class WritePortSignature(ParamSignature):
    """A memory write port seen from the writer: ``data`` is written at ``addr`` in every
    cycle ``en`` is high (always ready). Blocks that own a weight or table memory take
    ``In(WritePortSignature(...))``; the top level fills it from DMA beats.

    Members
    -------
    addr : ``Out(unsigned(addr_width))``
    data : ``Out(data_shape)``
    en : ``Out(1)``
    """

    _params = ("addr_width", "data_shape")

    def __init__(self, addr_width: int, data_shape: ShapeLike):
        if not isinstance(addr_width, int) or addr_width < 1:
            raise TypeError(f"addr_width must be a positive int, not {addr_width!r}")
        self.addr_width = addr_width
        self.data_shape = data_shape
        super().__init__({"addr": Out(unsigned(addr_width)), "data": Out(data_shape),
                          "en": Out(1)})
