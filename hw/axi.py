"""AXI4 and AXI4-Lite interface signatures (AMBA AXI and ACE specification, ARM IHI 0022).

Member names are the AMBA signal names without the channel prefix of the port, so a port
called ``m_axi`` becomes ``m_axi__araddr`` etc. in Verilog, which cocotbext-axi finds with
``AxiBus.from_prefix(dut, "m_axi_")``. Directions are those of the *manager* (master); a
subordinate port uses ``.flip()``.
"""

from __future__ import annotations

from amaranth.lib.wiring import In, Out

from .ports import ParamSignature

__all__ = ["AXI4Signature", "AXI4ReadSignature", "AXI4WriteSignature", "AXI4LiteSignature",
           "Resp", "Burst"]


class Resp:
    """``xRESP`` encodings."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst:
    """``AxBURST`` encodings."""
    FIXED = 0
    INCR = 1
    WRAP = 2


def _read_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arlock": Out(1), "arcache": Out(4), "arprot": Out(3),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    }


def _write_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awlock": Out(1), "awcache": Out(4), "awprot": Out(3),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


def _check(addr_width: int, data_width: int, id_width: int) -> None:
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise TypeError(f"AXI address width must be an int in 12..64, not {addr_width!r}")
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise TypeError(f"AXI data width must be a power of two 32..1024, not {data_width!r}")
    if not isinstance(id_width, int) or not 1 <= id_width <= 16:
        raise TypeError(f"AXI ID width must be an int in 1..16, not {id_width!r}")


class _AXI4(ParamSignature):
    """An AXI4 manager's channels of :meth:`_members`, by address, data and ID widths."""

    _params = ("addr_width", "data_width", "id_width")

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, id_width: int = 1):
        _check(addr_width, data_width, id_width)
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__(self._members(addr_width, data_width, id_width))


class AXI4ReadSignature(_AXI4):
    """Read channels (AR, R) of an AXI4 manager."""

    _members = staticmethod(_read_members)


class AXI4WriteSignature(_AXI4):
    """Write channels (AW, W, B) of an AXI4 manager."""

    _members = staticmethod(_write_members)


class AXI4Signature(_AXI4):
    """All five channels of an AXI4 manager (what the top level exposes as ``m_axi``).

    Connect the read half of a DMA with ``AXI4ReadSignature`` members and the write half
    with ``AXI4WriteSignature`` members (same names)."""

    @staticmethod
    def _members(addr_width: int, data_width: int, id_width: int) -> dict:
        return {**_read_members(addr_width, data_width, id_width),
                **_write_members(addr_width, data_width, id_width)}


class AXI4LiteSignature(ParamSignature):
    """AXI4-Lite manager, 32-bit data. A register bank takes ``AXI4LiteSignature(...).flip()``."""

    _params = ("addr_width",)

    def __init__(self, *, addr_width: int):
        if not isinstance(addr_width, int) or not 2 <= addr_width <= 64:
            raise TypeError(f"AXI4-Lite address width must be an int in 2..64, "
                            f"not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })



