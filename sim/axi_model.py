"""Testbench-side AXI4 subordinate memory for Amaranth-simulator unit benches.

:class:`AXI4Memory` serves the read channels (AR, R) and/or the write channels (AW, W, B) of a
manager port built from :mod:`dwsep.hw.axi` signatures, from a ``bytearray``, with seeded
random stalls on every channel it drives, random latencies, optional SLVERR injection, and
checks of the AXI rules it observes. Typical use::

    ram = AXI4Memory(1 << 16, rng=random.Random(seed), p_stall=0.3, read_latency=(1, 8))
    ram.mem[0:8] = bytes(range(8))
    run_sim(dut, testbench, processes=[ram.read_process(dut.axi), ram.write_process(dut.axi)])

A top-level port with all five channels (``AXI4Signature``) is passed to both methods. The
processes run in the background forever; a rule violation raises :class:`AXIProtocolError`
out of the simulation with the cycle and the offending values.

Rules checked on what the manager drives: AxSIZE equals the bus width, AxBURST is INCR,
``AxLEN + 1 <= max_burst``, the address is aligned to the bus width, a burst never crosses a
4 KiB boundary (IHI 0022 A3.4.1), ``wlast`` is high on exactly the last beat of each burst,
and while ``valid && !ready`` on AR, AW or W the next cycle still has ``valid`` high with the
same payload (A3.2.1); ARID is below ``read_ids``. By default R comes back in request order;
``read_order`` lets bursts of different ARIDs come back out of order, and interleaved beat by
beat (AXI4 allows read data interleaving between IDs), always in order within one ID and with
RID = ARID. The write side models one ID: B comes back in request order, BID = 0.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from dwsep.hw.axi import Burst, Resp

from .streams import LongStalls, stall_cycles

__all__ = ["AXI4Memory", "AXIProtocolError", "BurstRecord", "split_bursts"]


def split_bursts(addr: int, beats: int, max_burst: int) -> list[tuple[int, int]]:
    """Reference burst split of a DMA command, as ``(addr, beats)`` pairs:
    ``min(left, max_burst, beats to the next 4 KiB boundary)`` (64-bit beats)."""
    out = []
    while beats:
        n = min(beats, max_burst, (4096 - addr % 4096) // 8)
        out.append((addr, n))
        addr, beats = addr + 8 * n, beats - n
    return out


class AXIProtocolError(AssertionError):
    """The manager broke an AXI rule the model checks."""


@dataclass
class BurstRecord:
    """One burst the model accepted: byte address, beats, response it gave (``Resp``), AXI ID
    (ARID; 0 for writes)."""
    addr: int
    beats: int
    resp: int = Resp.OKAY
    id: int = 0


@dataclass
class _Read:
    due: int  # first cycle its R beats may be driven
    burst: BurstRecord
    sent: int = 0


@dataclass
class _WriteBurst:
    beats: list = field(default_factory=list)  # (wdata, wstrb) in order


class AXI4Memory:
    """AXI4 subordinate backed by ``mem`` (``bytearray``) mapped at byte address ``base``.

    Parameters
    ----------
    size : int
        Bytes of memory; ``mem`` starts zeroed.
    base : int
        Byte address of ``mem[0]``. Beats outside ``[base, base + size)`` get DECERR
        (reads return 0, writes are dropped).
    rng : random.Random or None
        Source of stalls and latencies; ``None`` means never stall and use the minimum
        latencies. Each process derives its own generator from it when created, so results do
        not depend on the order in which the simulator runs processes.
    p_stall : float
        Probability, per cycle, that a ready this model drives is low, and that a valid it
        could raise (R, B) stays low for one more cycle.
    read_latency, write_latency : tuple of int
        ``(min, max)`` cycles from the AR handshake cycle to the cycle the first R beat is
        offered, and from a burst's last W handshake (or its AW, if later) to B being offered;
        1 means the next cycle.
    max_burst : int
        Longest burst allowed (``AxLEN + 1``).
    error_ranges : sequence of (start, stop)
        Byte ranges ``[start, stop)``: a read beat in one gets RRESP = SLVERR; a write beat in
        one is not written and its burst gets BRESP = SLVERR.
    write_order : str
        ``"any"``: AW and W are accepted independently; ``"aw_first"``: W beats of a burst are
        accepted only after its AW (cocotbext-axi ``AxiRam`` behaves so); ``"w_first"``: an AW
        is accepted only after all W beats of its burst.
    read_ids : int
        ARID must be below this (checked).
    read_order : str
        Which R beat comes next among the bursts whose latency has passed. ``"in_order"``: the
        oldest burst's, whatever its ID. ``"by_id"``: a whole burst at a time, the burst picked
        at random (the oldest without ``rng``) among the oldest one of each ID. ``"interleaved"``:
        the same pick made for every beat, so bursts of different IDs interleave.
    data_width : int
        Bus width in bits.

    Attributes
    ----------
    mem : bytearray
    reads, writes : list of BurstRecord
        Every accepted burst, in order (writes in the order their B was scheduled).
    max_reads_in_flight, max_writes_in_flight : int
        Most bursts seen between AR handshake and last R beat / AW handshake and B.
    writes_acked : int
        B handshakes so far.
    """

    def __init__(self, size: int, *, base: int = 0, rng: random.Random | None = None,
                 p_stall: float = 0.0, read_latency: tuple[int, int] = (1, 1),
                 write_latency: tuple[int, int] = (1, 1), max_burst: int = 16,
                 error_ranges=(), write_order: str = "any", data_width: int = 64,
                 read_ids: int = 1, read_order: str = "in_order"):
        if write_order not in ("any", "aw_first", "w_first"):
            raise ValueError(f"write_order must be 'any', 'aw_first' or 'w_first', "
                             f"not {write_order!r}")
        if read_order not in ("in_order", "by_id", "interleaved"):
            raise ValueError(f"read_order must be 'in_order', 'by_id' or 'interleaved', "
                             f"not {read_order!r}")
        if not isinstance(read_ids, int) or read_ids < 1:
            raise ValueError(f"read_ids must be a positive int, not {read_ids!r}")
        for name, (lo, hi) in (("read_latency", read_latency), ("write_latency", write_latency)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 1 <= min <= max, "
                                 f"not {(lo, hi)!r}")
        if not isinstance(p_stall, LongStalls) and not 0.0 <= p_stall < 1.0:
            raise ValueError(f"p_stall must be in [0, 1) or a LongStalls, not {p_stall!r}")
        self._stalls: dict[int, int] = {}  # long stalls under way, by channel generator
        self.mem = bytearray(size)
        self.base = base
        self.rng = rng
        self.p_stall = p_stall
        self.read_latency = read_latency
        self.write_latency = write_latency
        self.max_burst = max_burst
        self.error_ranges = list(error_ranges)
        self.write_order = write_order
        self.read_ids = read_ids
        self.read_order = read_order
        self.beat_bytes = data_width // 8
        self.reads: list[BurstRecord] = []
        self.writes: list[BurstRecord] = []
        self.max_reads_in_flight = 0
        self.max_writes_in_flight = 0
        self.writes_acked = 0

    # -- helpers -----------------------------------------------------------------------------

    def _child_rng(self) -> random.Random | None:
        return None if self.rng is None else random.Random(self.rng.getrandbits(64))

    def _stall(self, rng) -> bool:
        """Whether the channel whose generator is ``rng`` stalls this cycle: with
        probability ``p_stall``, or, for a :class:`~dwsep.sim.streams.LongStalls` pattern,
        through each long stall it starts."""
        if rng is None:
            return False
        if not isinstance(self.p_stall, LongStalls):
            return rng.random() < self.p_stall
        left = self._stalls.get(id(rng), 0)
        if left == 0:
            left = stall_cycles(rng, self.p_stall)
            if left == 0:
                return False
        self._stalls[id(rng)] = left - 1
        return True

    @staticmethod
    def _latency(rng, bounds) -> int:
        return bounds[0] if rng is None else rng.randint(*bounds)

    def _beat_resp(self, addr: int) -> int:
        if not 0 <= addr - self.base <= len(self.mem) - self.beat_bytes:
            return Resp.DECERR
        end = addr + self.beat_bytes
        if any(start < end and addr < stop for start, stop in self.error_ranges):
            return Resp.SLVERR
        return Resp.OKAY

    def _check_request(self, cycle: int, ch: str, addr: int, length: int, size: int,
                       burst: int) -> BurstRecord:
        beats = length + 1
        where = f"cycle {cycle}: {ch} addr={addr:#x} len={length} size={size} burst={burst}"
        if 1 << size != self.beat_bytes:
            raise AXIProtocolError(f"{where}: {ch}SIZE must be {self.beat_bytes.bit_length() - 1}"
                                   f" (full bus width)")
        if burst != Burst.INCR:
            raise AXIProtocolError(f"{where}: only INCR bursts are modelled")
        if beats > self.max_burst:
            raise AXIProtocolError(f"{where}: {beats} beats exceed max_burst={self.max_burst}")
        if addr % self.beat_bytes:
            raise AXIProtocolError(f"{where}: address not aligned to {self.beat_bytes} bytes")
        if addr % 4096 + beats * self.beat_bytes > 4096:
            raise AXIProtocolError(f"{where}: burst crosses a 4 KiB boundary")
        return BurstRecord(addr, beats)

    @staticmethod
    def _check_stable(cycle: int, ch: str, held, valid: int, payload: tuple) -> None:
        """``held`` is the payload offered without handshake at the previous edge (or None)."""
        if held is not None and (not valid or payload != held):
            raise AXIProtocolError(f"cycle {cycle}: {ch} changed or dropped valid before ready "
                                   f"(was {held}, now valid={valid} {payload})")

    # -- read channels -----------------------------------------------------------------------

    def read_process(self, axi):
        """Async process serving AR/R of ``axi`` (add with ``Simulator.add_process``)."""
        rng = self._child_rng()

        async def process(ctx):
            pending: list[_Read] = []  # accepted bursts with R beats to come, in AR order
            driven = None  # the burst whose beat is on R
            held = None
            cycle = 0
            ctx.set(axi.arready, not self._stall(rng))
            async for (_, _, arvalid, arready, arid, araddr, arlen, arsize, arburst, rvalid,
                       rready) in ctx.tick().sample(axi.arvalid, axi.arready, axi.arid,
                                                    axi.araddr, axi.arlen, axi.arsize,
                                                    axi.arburst, axi.rvalid, axi.rready):
                cycle += 1
                ar = (arid, araddr, arlen, arsize, arburst)
                self._check_stable(cycle, "AR", held, arvalid, ar)
                held = ar if arvalid and not arready else None
                if arvalid and arready:
                    if arid >= self.read_ids:
                        raise AXIProtocolError(f"cycle {cycle}: ARID={arid} out of range for "
                                               f"read_ids={self.read_ids}")
                    rec = self._check_request(cycle, "AR", *ar[1:])
                    rec.id = arid
                    self.reads.append(rec)
                    pending.append(_Read(cycle + self._latency(rng, self.read_latency) - 1, rec))
                    self.max_reads_in_flight = max(self.max_reads_in_flight, len(pending))
                if rvalid and rready:
                    driven.sent += 1
                    if driven.sent == driven.burst.beats:
                        pending.remove(driven)
                    driven = None
                ctx.set(axi.arready, not self._stall(rng))
                if driven is None:
                    ready = self._r_candidates(pending, cycle)
                    if ready and not self._stall(rng):
                        driven = ready[0] if rng is None or len(ready) == 1 else rng.choice(ready)
                        self._drive_r(ctx, axi, driven)
                ctx.set(axi.rvalid, driven is not None)

        return process

    def _r_candidates(self, pending: list[_Read], cycle: int) -> list[_Read]:
        """Bursts that may supply the next R beat under ``read_order``, oldest first."""
        if self.read_order == "in_order":
            heads = pending[:1]
        else:
            heads, seen = [], set()
            for rd in pending:
                if rd.burst.id not in seen:
                    seen.add(rd.burst.id)
                    heads.append(rd)
            if self.read_order == "by_id":
                started = [rd for rd in heads if rd.sent]
                heads = started or heads
        return [rd for rd in heads if rd.due <= cycle]

    def _drive_r(self, ctx, axi, rd: _Read) -> None:
        addr = rd.burst.addr + rd.sent * self.beat_bytes
        resp = self._beat_resp(addr)
        if resp == Resp.DECERR:
            data = 0
        else:
            off = addr - self.base
            data = int.from_bytes(self.mem[off:off + self.beat_bytes], "little")
        if resp != Resp.OKAY:
            rd.burst.resp = resp
        ctx.set(axi.rdata, data)
        ctx.set(axi.rresp, resp)
        ctx.set(axi.rlast, rd.sent == rd.burst.beats - 1)
        ctx.set(axi.rid, rd.burst.id)

    # -- write channels ----------------------------------------------------------------------

    def write_process(self, axi):
        """Async process serving AW/W/B of ``axi`` (add with ``Simulator.add_process``)."""
        rng = self._child_rng()

        async def process(ctx):
            aws: deque[BurstRecord] = deque()  # accepted AWs whose W beats are incomplete
            ws: deque[_WriteBurst] = deque()  # complete W bursts whose AW has not come
            cur = _WriteBurst()
            bs: deque[tuple[int, BurstRecord]] = deque()  # (due cycle, burst) awaiting B
            held_aw = held_w = None
            b_valid = False
            cycle = 0
            async for (_, _, awvalid, awready, awaddr, awlen, awsize, awburst, wvalid, wready,
                       wdata, wstrb, wlast, bvalid, bready) in ctx.tick().sample(
                    axi.awvalid, axi.awready, axi.awaddr, axi.awlen, axi.awsize, axi.awburst,
                    axi.wvalid, axi.wready, axi.wdata, axi.wstrb, axi.wlast,
                    axi.bvalid, axi.bready):
                cycle += 1
                aw = (awaddr, awlen, awsize, awburst)
                w = (wdata, wstrb, wlast)
                self._check_stable(cycle, "AW", held_aw, awvalid, aw)
                self._check_stable(cycle, "W", held_w, wvalid, w)
                held_aw = aw if awvalid and not awready else None
                held_w = w if wvalid and not wready else None
                if awvalid and awready:
                    aws.append(self._check_request(cycle, "AW", *aw))
                if wvalid and wready:
                    cur.beats.append((wdata, wstrb))
                    # The AW of the burst being received is known once no complete W burst
                    # waits for an AW.
                    if not ws and aws:
                        beats = aws[0].beats
                        if wlast != (len(cur.beats) == beats):
                            raise AXIProtocolError(
                                f"cycle {cycle}: wlast={wlast} on W beat {len(cur.beats)} of a "
                                f"{beats}-beat burst at {aws[0].addr:#x}")
                    if wlast:
                        ws.append(cur)
                        cur = _WriteBurst()
                while aws and ws:
                    rec, wb = aws.popleft(), ws.popleft()
                    if len(wb.beats) != rec.beats:
                        raise AXIProtocolError(f"cycle {cycle}: W burst of {len(wb.beats)} "
                                               f"beats for AW of {rec.beats} at {rec.addr:#x}")
                    self._commit(rec, wb)
                    bs.append((cycle + self._latency(rng, self.write_latency) - 1, rec))
                if bvalid and bready:
                    b_valid = False
                    bs.popleft()
                    self.writes_acked += 1
                in_flight = len(aws) + len(bs)
                self.max_writes_in_flight = max(self.max_writes_in_flight, in_flight)

                aw_ok = self.write_order != "w_first" or len(ws) > 0
                w_ok = self.write_order != "aw_first" or (len(aws) > 0 and not ws)
                ctx.set(axi.awready, aw_ok and not self._stall(rng))
                ctx.set(axi.wready, w_ok and not self._stall(rng))
                if not b_valid and bs and bs[0][0] <= cycle and not self._stall(rng):
                    b_valid = True
                    ctx.set(axi.bresp, bs[0][1].resp)
                    ctx.set(axi.bid, 0)
                ctx.set(axi.bvalid, b_valid)

        return process

    def _commit(self, rec: BurstRecord, wb: _WriteBurst) -> None:
        for i, (data, strb) in enumerate(wb.beats):
            addr = rec.addr + i * self.beat_bytes
            resp = self._beat_resp(addr)
            rec.resp = max(rec.resp, resp)
            if resp != Resp.OKAY:
                continue
            off = addr - self.base
            for j in range(self.beat_bytes):
                if strb >> j & 1:
                    self.mem[off + j] = data >> (8 * j) & 0xFF
        self.writes.append(rec)
