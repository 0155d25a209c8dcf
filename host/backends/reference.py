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
    ADD_TABLE_ENTRIES,
    ADDRESS_ALIGN,
    ADDRESS_FIELDS,
    DESCRIPTOR,
    PREFETCH_SEGMENTS,
    REGISTERS,
    DescFlag,
    ErrorCode,
    Opcode,
    capability_values,
    descriptor_extents,
    descriptor_param_checks,
    descriptor_product_checks,
    descriptor_products,
    table_record_bytes,
    window_checks,
)
from .. import numerics, packing
from ..driver import Buffer, Device

__all__ = ["ReferenceDevice", "ReferenceMemory", "EngineWeights", "execute_layer",
           "validate_descriptor", "check_descriptor", "BusError", "FULL_WINDOW"]

#: ``(WINDOW_LO, WINDOW_HI)`` after reset: the whole 32-bit address space
FULL_WINDOW = (REGISTERS["WINDOW_LO"].field("addr").reset,
               REGISTERS["WINDOW_HI"].field("addr").reset)


class BusError(Exception):
    """An access outside every mapped region (the AXI interconnect's DECERR); ``write``
    tells a write from a read, ``addr`` is the access's first byte."""

    def __init__(self, message: str, write: bool, addr: int = 0):
        super().__init__(message)
        self.write = write
        self.addr = addr


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
        raise BusError(f"no memory at {addr:#x}..{addr + nbytes:#x}", write, addr)

    def read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self._view(addr, nbytes, False))

    def write(self, addr: int, data: bytes) -> None:
        self._view(addr, len(data), True)[:] = data

    def write_pixels(self, addr: int, pitch: int, rows: np.ndarray) -> None:
        """Write row ``p`` of ``rows`` (``uint8[pixels, n]``) at ``addr + p*pitch``."""
        pixels, n = rows.shape
        if pitch == n:
            self.write(addr, rows.tobytes())
            return
        span = self._view(addr, (pixels - 1) * pitch + n, True)
        view = np.frombuffer(span, np.uint8)
        np.lib.stride_tricks.as_strided(view, (pixels, n), (pitch, 1))[:] = rows


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


def check_descriptor(d: dict[str, int], config: AcceleratorConfig,
                     window: tuple[int, int] = FULL_WINDOW) -> tuple[ErrorCode, str]:
    """The error the hardware raises for descriptor fields ``d`` in the DDR ``window``
    (``WINDOW_LO``, ``WINDOW_HI``), with the rule it breaks in words (``ErrorCode.NONE`` and
    ``""`` if none). Checked in the hardware's order: opcode, parameters against ``config``
    (:func:`descriptor_param_checks`), alignment of every address field (``ADDRESS_FIELDS``,
    used by the descriptor's flags or not), the conditions on products of fields
    (:func:`descriptor_product_checks`), then every region the descriptor reads or writes
    inside the window (:func:`window_checks`)."""
    if d["opcode"] != Opcode.LAYER:
        return ErrorCode.BAD_OPCODE, f"opcode {int(Opcode.LAYER)} (LAYER)"
    for rule, ok in descriptor_param_checks(d, config):
        if not ok:
            return ErrorCode.BAD_PARAMS, rule
    for f in ADDRESS_FIELDS:
        if d[f] % ADDRESS_ALIGN:
            return ErrorCode.MISALIGNED, f"{f} a multiple of {ADDRESS_ALIGN}"
    products = descriptor_products(d, config)
    for rule, ok in descriptor_product_checks(d, products, config):
        if not ok:
            return ErrorCode.BAD_PARAMS, rule
    for (name, ok), (_, _, nbytes) in zip(window_checks(d, products, config, *window),
                                          descriptor_extents(d, products, config), strict=True):
        if not ok:
            return ErrorCode.OUT_OF_WINDOW, (
                f"{name} region {d[name]:#x}..{d[name] + nbytes - 1:#x} inside the DDR window "
                f"{window[0]:#x}..{window[1]:#x}")
    return ErrorCode.NONE, ""


def validate_descriptor(d: dict[str, int], config: AcceleratorConfig,
                        window: tuple[int, int] = FULL_WINDOW) -> ErrorCode:
    """The error code of :func:`check_descriptor`."""
    return check_descriptor(d, config, window)[0]


def _matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer ``x @ w`` through float64 BLAS: every partial sum of int8 x int8
    products over fewer than ``2**37`` terms is an integer below ``2**53``."""
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


def _table(memory: ReferenceMemory, addr: int, channels: int, lanes: int):
    """``(bias, mult, shift)`` of ``channels`` channels from the requant table at ``addr``:
    records of ``lanes`` channels each (the requantizer's compute lanes: ``requant_lanes``
    for the DW table, ``erq_lanes`` for the engine's)."""
    records = channels // lanes
    raw = memory.read(addr, records * table_record_bytes(lanes))
    return (a.reshape(-1).astype(np.int64) for a in packing.unpack_table(raw, records, lanes))


class EngineWeights:
    """The 1x1 engine's weight memory (``config.engine_weight_depth`` words of ``dw_lanes x
    pw_cols`` bytes), which keeps its contents from one descriptor, and one run, to the
    next, as the hardware's does: a descriptor flagged ``EXP_LOADED`` or ``PW_LOADED`` uses
    what an earlier one left there."""

    def __init__(self, config: AcceleratorConfig):
        self.word_bytes = config.dw_lanes * config.pw_cols
        self.words = [bytes(self.word_bytes)] * config.engine_weight_depth

    def load(self, memory: ReferenceMemory, addr: int, base: int, words: int,
             word_bytes: int | None = None) -> None:
        """``words`` words from DDR at ``addr`` into words ``base..``; ``word_bytes``: the
        bytes of a table's word (expand weights: ``dw_lanes**2``) if not a whole one."""
        n = self.word_bytes if word_bytes is None else word_bytes
        raw = memory.read(addr, words * n)
        for i in range(words):
            self.words[base + i] = raw[i * n:(i + 1) * n]

    def read(self, base: int, words: int) -> np.ndarray:
        return np.frombuffer(b"".join(self.words[base:base + words]), np.int8)

    def prefetch(self, d: dict[str, int], memory: ReferenceMemory) -> None:
        """The descriptor's prefetch segments (read while it runs)."""
        for addr, words, base in PREFETCH_SEGMENTS:
            if d[words]:
                self.load(memory, d[addr], d[base], d[words])


def execute_layer(d: dict[str, int], memory: ReferenceMemory, config: AcceleratorConfig,
                  weights: EngineWeights | None = None) -> None:
    """Run one validated ``LAYER`` descriptor ``d`` on ``memory``; ``weights`` is the
    engine's weight memory (a fresh one when not given: then the ``*_LOADED`` flags find
    zeros).

    ``P`` lanes, ``Q`` PW columns, ``G = in_groups``, ``E = exp_groups``, ``M = mid_groups``,
    ``O = out_groups``, ``s``/``d``/``k``/``m`` stride, dilation, kernel, depth multiplier;
    every array is read from its packed DDR format (docs/ARCHITECTURE.md; the three requant
    tables in records of their requantizer's compute lanes) and every accumulator plus bias wraps
    in int32 as the hardware adders do::

        x[y, x, G*P]       = int8 input at in_addr (pixels contiguous)
        EXPAND:  u[y, x, e] = clamp(MBQM(sum_c x[y, x, c] * ew[c, e] + eb[e], em[e], es[e])
                                   + exp_zp, exp_min, exp_max)          (E*P channels;
                 the engine computes exp_words*Q, the line buffer keeps the first E*P)
        else     u = x                                               (E = G)
        t[oy, ox, ky, kx, c] = u[oy*s - pad_top + ky*d, ox*s - pad_left + kx*d, c],
                               lb_zp outside the image (any side)
        CONV:    mid[oy, ox, (g*k + ky)*k + kx, i] = t[oy, ox, ky, kx, g*P + i]   (M = k*k*E)
        else:    mid[oy, ox, q, i] = clamp(MBQM(sum_{ky,kx} t[.., ky, kx, (q // m)*P + i]
                                                * dw_w[q, ky, kx, i] + dw_b[q, i], ...)
                                           + dw_zp, dw_min, dw_max)       (M = E*m)
                 POOL: t over the in_h x in_w pixels (k = 1) and the sum over all of them
                 requantized: mid[0, 0, q, i] = clamp(MBQM(sum_{y,x} t[y, x, 0, 0, q*P + i]
                 * dw_w[q, 0, 0, i] + dw_b[q, i], ...) + dw_zp, dw_min, dw_max)
                 dw_w[q, ky, kx, i] = int8 at dw_weights + ((q*R + r)*k + kx)*T*P + t*P + i,
                 ky = r*T + t, T = dw_taps, R = dw_passes(k) (M*R*k words of T*P bytes,
                 all loaded; the bytes of rows ky >= k are 0 and not used)
        acc[oy, ox, o] = sum_{q, i} mid[oy, ox, q, i] * pw_w[o // Q, q, i, o % Q]
        RAW_OUT: z = wrap32(acc)                     (int32, no bias: pw_table is not read)
        else:    z = clamp(MBQM(acc + pw_b[o], ...) + pw_zp, pw_min, pw_max), its first
                 8*out_beats channels (the stored ones: the rest of the last word is dropped;
                 past O*Q channels, filler: 0)
        RESIDUAL: z = clamp(RDBPOT(floor((T[0, z & 255] + T[1, r & 255] + 2**30) / 2**31),
                                   -add_out_shift) + add_zp, add_min, add_max)
                  with r the int8 tensor at res_addr laid out as the output (contiguous),
                  over the first min(8*out_beats, O*Q) channels (the filler stays 0)
                  and T the ADD table at add_table (int64[2, 256], numerics.add_table)
        pixel p = oy*out_w + ox of z (8*out_beats int8, or O*Q little-endian int32) is written at
        out_addr + 8*p*out_pitch; the bytes between pixels are left alone.
    """
    P, Q = config.dw_lanes, config.pw_cols
    flags = d["flags"]
    k, s, dil, m = d["kernel"], d["stride"], d["dilation"], d["depth_mult"]
    G, E, MG, OG = d["in_groups"], d["exp_groups"], d["mid_groups"], d["out_groups"]
    EW, stored = d["exp_words"], 8 * d["out_beats"]
    H, W, oh, ow = d["in_h"], d["in_w"], d["out_h"], d["out_w"]
    pool = bool(flags & DescFlag.POOL)
    lh, lw = (H, W) if pool else (oh, ow)   # the line buffer's output pixels
    requantize = numerics.requantize

    def read(field: str, count: int) -> np.ndarray:
        return np.frombuffer(memory.read(d[field], count), np.int8)

    if weights is None:
        weights = EngineWeights(config)

    def engine(field: str, flag: DescFlag, words: int, word_bytes: int) -> np.ndarray:
        base = d[field.replace("weights", "wbase")]
        if not flags & flag:
            weights.load(memory, d[field], base, words, word_bytes)
        return weights.read(base, words)

    # loads in the hardware's order: expand, DW, PW weights and tables
    if flags & DescFlag.EXPAND:
        ew = engine("exp_weights", DescFlag.EXP_LOADED, EW * G, P * Q).reshape(EW, G, P, Q)
        et = _table(memory, d["exp_table"], EW * Q, config.erq_lanes)
    if not flags & DescFlag.CONV:
        T = config.dw_taps
        raw = memory.read(d["dw_weights"], MG * config.dw_passes(k) * k * T * P)
        dw_w = packing.unpack_dw_weights(raw, MG, k, P, T).astype(np.int64)
        dt = _table(memory, d["dw_table"], MG * P, config.requant_lanes)
    pw_w = engine("pw_weights", DescFlag.PW_LOADED, OG * MG, P * Q).reshape(OG, MG, P, Q)
    if not flags & DescFlag.RAW_OUT:
        pt = _table(memory, d["pw_table"], OG * Q, config.erq_lanes)
    if flags & DescFlag.RESIDUAL:
        raw = memory.read(d["add_table"], ADD_TABLE_ENTRIES * 8)
        add_table = packing.unpack_add_table(raw)
    weights.prefetch(d, memory)

    u = read("in_addr", H * W * G * P).reshape(H * W, G * P)
    if flags & DescFlag.EXPAND:
        b, mult, shift = et
        w2 = ew.transpose(1, 2, 0, 3).reshape(G * P, EW * Q)
        u = requantize(numerics.wrap_int32(_matmul(u, w2) + b), mult, shift, d["exp_zp"],
                       d["exp_min"], d["exp_max"])[:, :E * P]
    u = u.reshape(H, W, E, P)

    rows = max((lh - 1) * s + (k - 1) * dil + 1, d["pad_top"] + H)
    cols = max((lw - 1) * s + (k - 1) * dil + 1, d["pad_left"] + W)
    padded = np.full((rows, cols, E, P), d["lb_zp"], np.int64)
    padded[d["pad_top"]:d["pad_top"] + H, d["pad_left"]:d["pad_left"] + W] = u

    def taps(ky: int, kx: int) -> np.ndarray:
        return padded[ky * dil:ky * dil + (lh - 1) * s + 1:s,
                      kx * dil:kx * dil + (lw - 1) * s + 1:s]

    if flags & DescFlag.CONV:
        mid = np.stack([taps(ky, kx)[:, :, g] for g in range(E) for ky in range(k)
                        for kx in range(k)], axis=2)
    else:
        group_of = np.arange(MG) // m
        acc = np.zeros((lh, lw, MG, P), np.int64)
        for ky in range(k):
            for kx in range(k):
                acc += taps(ky, kx)[:, :, group_of] * dw_w[:, ky, kx]
        if pool:    # the DW requantizer sums the pixels first
            acc = acc.sum(axis=(0, 1), keepdims=True)
        b, mult, shift = dt
        mid = requantize(numerics.wrap_int32(acc.reshape(oh, ow, MG * P) + b), mult, shift,
                         d["dw_zp"], d["dw_min"], d["dw_max"])
    pixels = oh * ow
    acc = numerics.wrap_int32(_matmul(mid.reshape(pixels, MG * P),
                              pw_w.transpose(1, 2, 0, 3).reshape(MG * P, OG * Q)))
    if flags & DescFlag.RAW_OUT:
        z = acc.astype("<i4").view(np.uint8).reshape(pixels, -1)
    else:
        b, mult, shift = pt
        z = requantize(numerics.wrap_int32(acc + b), mult, shift, d["pw_zp"], d["pw_min"],
                       d["pw_max"])[:, :stored]
        if flags & DescFlag.RESIDUAL:
            r = read("res_addr", pixels * stored).reshape(pixels, stored)[:, :z.shape[1]]
            z = numerics.add_by_table(z, r, add_table, d["add_out_shift"], d["add_zp"],
                                      d["add_min"], d["add_max"])
        # the filler past the last engine word: zero bytes
        z = np.pad(z, ((0, 0), (0, stored - z.shape[1]))).view(np.uint8)
    memory.write_pixels(d["out_addr"], 8 * d["out_pitch"], z)


class ReferenceDevice(Device):
    """NumPy model of the accelerator: registers, DDR and the program semantics.

    Parameters
    ----------
    config:
        The config the modelled hardware was built with (its capability registers).
    memory:
        Address space to run on; a private one by default (the simulated PYNQ board gives its
        DDR, ``dwsep.sim.pynq_board``).
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
        self._regs = {reg.name: self._encode(reg.name, {f.name: f.reset for f in reg.fields})
                      for reg in REGISTERS if REGISTERS[reg.name].offset not in self._ro
                      and not reg.name.startswith("CYCLES")}
        self.weights = EngineWeights(self.config)

    @staticmethod
    def _encode(name: str, fields: dict[str, int]) -> int:
        reg = REGISTERS[name]
        word = 0
        for field, value in fields.items():
            word |= reg.field(field).encode(value)
        return word

    def _field(self, name: str, field: str) -> int:
        return REGISTERS[name].field(field).decode(self._regs[name])

    def read_word(self, offset: int) -> int:
        if offset in self._ro:
            return self._ro[offset]
        for name, word in self._regs.items():
            if REGISTERS[name].offset == offset:
                return word
        return 0  # CYCLES_* (no timing) and unmapped offsets

    def write_word(self, offset: int, value: int) -> None:
        """As the hardware's bank: ``CTRL.start`` runs the program at once (so the device is
        never busy, and ``CTRL.abort`` has nothing to stop), ``STATUS`` clears on 1s, the
        other ``rw`` registers store, the rest ignore writes."""
        reg = next((r for r in REGISTERS if r.offset == offset), None)
        if reg is None or reg.name not in self._regs:
            return
        if reg.name == "CTRL":
            self._regs["CTRL"] = value & reg.field("irq_enable").mask
            if reg.field("start").decode(value):
                self._run()
        elif reg.name == "STATUS":
            w1c = reg.field("done").mask | reg.field("error").mask
            self._regs["STATUS"] &= ~(value & w1c)
        elif reg.access == "rw":
            self._regs[reg.name] = value & 0xFFFF_FFFF

    def _set(self, name: str, **fields: int) -> None:
        self._regs[name] = self._encode(name, fields)

    def _run(self) -> None:
        """Execute the program at ``PROGRAM.addr`` to its LAST descriptor or an error."""
        addr = self._field("PROGRAM", "addr")
        window = (self._field("WINDOW_LO", "addr"), self._field("WINDOW_HI", "addr"))
        index = 0
        while True:
            self._set("LAYER", index=index)
            here = addr + index * DESCRIPTOR.size
            fault = here
            if here % ADDRESS_ALIGN:
                code = ErrorCode.MISALIGNED
            elif not window[0] <= here <= here + DESCRIPTOR.size - 1 <= window[1]:
                code = ErrorCode.OUT_OF_WINDOW
            else:
                try:
                    d = DESCRIPTOR.unpack(self.memory.read(here, DESCRIPTOR.size))
                    code = validate_descriptor(d, self.config, window)
                    if code == ErrorCode.NONE:
                        if self.on_descriptor is not None:
                            self.on_descriptor(index)
                        execute_layer(d, self.memory, self.config, self.weights)
                except BusError as e:
                    code = ErrorCode.AXI_WRITE if e.write else ErrorCode.AXI_READ
                    fault = e.addr
            if code != ErrorCode.NONE:
                self._set("ERROR", code=code, layer=index)
                self._set("ERROR_ADDR", addr=fault)
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
