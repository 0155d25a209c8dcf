"""The ``reference`` backend: a NumPy model of the accelerator behind the :class:`Device`
interface.

Registers behave as the hardware's (capabilities from :func:`capability_values`, ``STATUS``
with write-1-to-clear bits, ``ERROR``, ``LAYER``); writing ``CTRL.start`` runs the program
found in its DDR model, decoding each descriptor with :meth:`DESCRIPTOR.unpack` and computing
from the packed formats exactly what the hardware computes, so program and format bugs show
up without RTL. There is no timing: :attr:`counts_cycles` is False, ``CYCLES_*`` read 0.
"""

from __future__ import annotations

import numpy as np

from ...hw.config import AcceleratorConfig
from ...hw.layout import (
    DESCRIPTOR,
    REGISTERS,
    DescFlag,
    ErrorCode,
    Opcode,
    capability_values,
    descriptor_param_checks,
)
from .. import numerics, packing
from ..driver import Buffer, Device

__all__ = ["ReferenceDevice", "ReferenceMemory", "execute_dwsep", "validate_descriptor",
           "BusError"]

#: alignment the DMA engines need for every descriptor address
ADDR_ALIGN = 8


class BusError(Exception):
    """An access outside every mapped region (the AXI interconnect's DECERR); ``write``
    tells a write from a read."""

    def __init__(self, message: str, write: bool):
        super().__init__(message)
        self.write = write


class ReferenceMemory:
    """A physical address space made of mapped regions (``bytearray`` or ``uint8`` arrays)."""

    def __init__(self):
        self._regions: dict[int, memoryview] = {}

    def map(self, addr: int, backing) -> None:
        view = memoryview(backing).cast("B")
        for base, other in self._regions.items():
            if addr < base + len(other) and base < addr + len(view):
                raise ValueError(f"region at {addr:#x} overlaps the one at {base:#x}")
        self._regions[addr] = view

    def unmap(self, addr: int) -> None:
        del self._regions[addr]

    def _view(self, addr: int, nbytes: int, write: bool) -> memoryview:
        for base, view in self._regions.items():
            if base <= addr and addr + nbytes <= base + len(view):
                return view[addr - base:addr - base + nbytes]
        raise BusError(f"no memory at {addr:#x}..{addr + nbytes:#x}", write)

    def read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self._view(addr, nbytes, False))

    def write(self, addr: int, data: bytes) -> None:
        self._view(addr, len(data), True)[:] = data


class _ReferenceBuffer(Buffer):
    def __init__(self, memory: ReferenceMemory, addr: int, nbytes: int):
        super().__init__(addr, nbytes)
        self._memory = memory
        memory.map(addr, bytearray(nbytes))

    def write(self, offset: int, data: bytes) -> None:
        self._memory.write(self.physical_address + offset, data)

    def read(self, offset: int, nbytes: int) -> bytes:
        return self._memory.read(self.physical_address + offset, nbytes)

    def free(self) -> None:
        self._memory.unmap(self.physical_address)


def validate_descriptor(d: dict[str, int], config: AcceleratorConfig) -> ErrorCode:
    """The error the hardware raises for descriptor fields ``d`` (``ErrorCode.NONE`` if
    none), checked in this order: opcode, parameters against ``config``, address
    alignment."""
    if d["opcode"] != Opcode.DWSEP:
        return ErrorCode.BAD_OPCODE
    ok = all(descriptor_param_checks(d, config))
    if not ok:
        return ErrorCode.BAD_PARAMS
    if any(d[f] % ADDR_ALIGN for f in ("in_addr", "out_addr", "dw_weights", "dw_table",
                                       "pw_weights", "pw_table")):
        return ErrorCode.MISALIGNED
    return ErrorCode.NONE


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def execute_dwsep(d: dict[str, int], memory: ReferenceMemory, config: AcceleratorConfig
                  ) -> None:
    """Run one validated ``DWSEP`` descriptor ``d`` on ``memory``.

    With ``P`` lanes, ``Q`` PW columns, ``s``/``d``/``k`` stride/dilation/kernel, ``m`` the
    depth multiplier and ``xp`` the input where out-of-image taps read ``in_zp``::

        acc[oy,ox,q,i] = sum_{ky,kx} xp[oy*s - pad_top + ky*d, ox*s - pad_left + kx*d,
                                        (q // m)*P + i] * dw_w[q, ky, kx, i]
        mid[oy,ox,q,i] = clamp(MBQM(acc + dw_bias[q,i], dw_mult[q,i], dw_shift[q,i])
                               + dw_zp, dw_min, dw_max)
        pacc[oy,ox,og,o] = sum_{q,i} mid[oy,ox,q,i] * pw_w[og, q, i, o]
        out[oy,ox,og*Q+o] = clamp(MBQM(pacc + pw_bias[og,o], ...) + pw_zp, pw_min, pw_max)

    with every array read from its packed DDR format (docs/ARCHITECTURE.md) and the
    accumulator plus bias wrapping in int32 as the hardware adder does.
    """
    P, Q = config.dw_lanes, config.pw_cols
    k, s, dil, m = d["kernel"], d["stride"], d["dilation"], d["depth_mult"]
    G, MG, OG = d["in_groups"], d["mid_groups"], d["out_groups"]
    H, W, oh, ow = d["in_h"], d["in_w"], d["out_h"], d["out_w"]

    def read(field: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(memory.read(d[field], int(np.prod(shape))), np.int8).reshape(shape)

    x = read("in_addr", (H, W, G, P))
    dw_w = read("dw_weights", (MG, k, k, P)).astype(np.int64)
    pw_w = read("pw_weights", (OG, MG, P, Q)).astype(np.int64)
    rec = packing.TABLE_RECORD_BYTES_PER_LANE
    dw_b, dw_m, dw_s = packing.unpack_table(memory.read(d["dw_table"], MG * rec * P), MG, P)
    pw_b, pw_m, pw_s = packing.unpack_table(memory.read(d["pw_table"], OG * rec * Q), OG, Q)

    rows = (oh - 1) * s + (k - 1) * dil + 1
    cols = (ow - 1) * s + (k - 1) * dil + 1
    xp = np.full((rows, cols, G, P), d["in_zp"], np.int64)
    ny = max(0, min(H, rows - d["pad_top"]))
    nx = max(0, min(W, cols - d["pad_left"]))
    xp[d["pad_top"]:d["pad_top"] + ny, d["pad_left"]:d["pad_left"] + nx] = x[:ny, :nx]
    group_of = np.arange(MG) // m
    acc = np.zeros((oh, ow, MG, P), np.int64)
    for ky in range(k):
        for kx in range(k):
            taps = xp[ky * dil:ky * dil + (oh - 1) * s + 1:s,
                      kx * dil:kx * dil + (ow - 1) * s + 1:s][:, :, group_of]
            acc += taps * dw_w[:, ky, kx]
    mid = numerics.requantize(_wrap_int32(acc + dw_b), dw_m, dw_s, d["dw_zp"], d["dw_min"],
                              d["dw_max"])
    w2 = pw_w.transpose(1, 2, 0, 3).reshape(MG * P, OG * Q)
    pacc = mid.reshape(oh * ow, MG * P).astype(np.int64) @ w2
    out = numerics.requantize(_wrap_int32(pacc + pw_b.reshape(-1)), pw_m.reshape(-1),
                              pw_s.reshape(-1), d["pw_zp"], d["pw_min"], d["pw_max"])
    memory.write(d["out_addr"], out.tobytes())


class ReferenceDevice(Device):
    """NumPy model of the accelerator: registers, DDR and the program semantics.

    Parameters
    ----------
    config:
        The config the modelled hardware was built with (its capability registers).
    memory:
        Address space to run on; a private one by default (tests share one with a fake
        board).
    base_address:
        Where :meth:`alloc` starts placing buffers.
    """

    name = "reference"
    counts_cycles = False
    _PAGE = 4096

    def __init__(self, config, *, memory: ReferenceMemory | None = None,
                 base_address: int = 0x1000_0000):
        super().__init__(config)
        self.memory = memory if memory is not None else ReferenceMemory()
        self._next = base_address
        caps = capability_values(self.config)
        self._ro = {REGISTERS[name].offset: self._encode(name, fields)
                    for name, fields in caps.items()}
        self._regs = {name: 0 for name in ("CTRL", "STATUS", "ERROR", "PROGRAM", "LAYER")}

    @staticmethod
    def _encode(name: str, fields: dict[str, int]) -> int:
        reg = REGISTERS[name]
        word = 0
        for field, value in fields.items():
            word |= reg.field(field).encode(value)
        return word

    def read_word(self, offset: int) -> int:
        if offset in self._ro:
            return self._ro[offset]
        for name, word in self._regs.items():
            if REGISTERS[name].offset == offset:
                return word
        return 0  # CYCLES_* (no timing) and unmapped offsets

    def write_word(self, offset: int, value: int) -> None:
        if offset == REGISTERS["CTRL"].offset:
            ctrl = REGISTERS["CTRL"]
            self._regs["CTRL"] = value & ctrl.field("irq_enable").mask
            if ctrl.field("start").decode(value):
                self._run()
        elif offset == REGISTERS["STATUS"].offset:
            status = REGISTERS["STATUS"]
            w1c = status.field("done").mask | status.field("error").mask
            self._regs["STATUS"] &= ~(value & w1c)
        elif offset == REGISTERS["PROGRAM"].offset:
            self._regs["PROGRAM"] = value & 0xFFFF_FFFF

    def _set(self, name: str, **fields: int) -> None:
        self._regs[name] = self._encode(name, fields)

    def _run(self) -> None:
        """Execute the program at ``PROGRAM.addr`` to its LAST descriptor or an error."""
        addr = self._regs["PROGRAM"]
        index = 0
        while True:
            self._set("LAYER", index=index)
            code = ErrorCode.MISALIGNED if addr % ADDR_ALIGN else ErrorCode.NONE
            if code == ErrorCode.NONE:
                try:
                    d = DESCRIPTOR.unpack(self.memory.read(addr + index * DESCRIPTOR.size,
                                                           DESCRIPTOR.size))
                    code = validate_descriptor(d, self.config)
                    if code == ErrorCode.NONE:
                        execute_dwsep(d, self.memory, self.config)
                except BusError as e:
                    code = ErrorCode.AXI_WRITE if e.write else ErrorCode.AXI_READ
            if code != ErrorCode.NONE:
                self._set("ERROR", code=code, layer=index)
                self._set("STATUS", error=1)
                return
            if d["flags"] & DescFlag.LAST:
                self._set("STATUS", done=1)
                return
            index += 1

    def alloc(self, nbytes: int) -> Buffer:
        buf = _ReferenceBuffer(self.memory, self._next, nbytes)
        self._next += -(-max(nbytes, 1) // self._PAGE) * self._PAGE
        return buf

    def close(self) -> None:
        """Nothing to release: the memory is Python objects."""
