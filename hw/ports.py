"""Small shared port signatures."""

from __future__ import annotations

from amaranth.hdl import ShapeLike, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["WritePortSignature"]


class WritePortSignature(wiring.Signature):
    """A memory write port seen from the writer: ``data`` is written at ``addr`` in every
    cycle ``en`` is high (always ready). Blocks that own a weight or table memory take
    ``In(WritePortSignature(...))``; the top level fills it from DMA beats.

    Members
    -------
    addr : ``Out(unsigned(addr_width))``
    data : ``Out(data_shape)``
    en : ``Out(1)``
    """

    def __init__(self, addr_width: int, data_shape: ShapeLike):
        if not isinstance(addr_width, int) or addr_width < 1:
            raise TypeError(f"addr_width must be a positive int, not {addr_width!r}")
        self.addr_width = addr_width
        self.data_shape = data_shape
        super().__init__({"addr": Out(unsigned(addr_width)), "data": Out(data_shape),
                          "en": Out(1)})
