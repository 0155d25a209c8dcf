# amaranth: UnusedElaboratable=no
# (the model builds hw blocks only to read their constants; it never elaborates them)
"""Analytical cycle model of the accelerator (``hw/top.py``): cycles per layer and per program,
derived from the documented rates and latencies of the blocks and of the memory.

Cycle counts are those of the ``CYCLES`` register: every cycle the controller is not ``IDLE``.
A layer runs through the controller states

``FETCH_CMD -> FETCH_DATA -> CHECK -> CHECKED -> SIZES -> CHECK_PRODUCTS -> PRODUCTS_CHECKED
-> 6 x LOAD_NEXT
[-> LOAD_CMD -> LOAD_DATA -> LOAD_FLUSH] -> LOAD_NEXT -> RUN_START -> RUN_CMDS -> RUN_WAIT -> NEXT``

and the model adds their lengths: three phases, *fetch*, the table *loads* (in series, each
one DMA read) and the *run*, kept apart in :class:`LayerEstimate` so that a memory model with
limited bandwidth can bound each from below by its bytes / rate. Times inside a layer are
cycle indices counted from the layer's ``FETCH_CMD`` cycle (0). Every term names the block
constant it comes from, so the model follows the hardware when a latency changes.

The run phase is a chain of streams (docs/ARCHITECTURE.md, "Layer descriptor v2"):

``reader -> [in_packer -> engine (E jobs) -> engine_fifo -> engine_requant => exp_fifo =>
exp_serializer] -> line buffer -> (DW => dw_requant => | conv taps) -> engine (J jobs) ->
(engine_fifo -> engine_requant => [ADD
<= res_packer <- res_reader =>] out_serializer | raw_serializer) => writer``

(``=>``: a ``SkidBuffer``, :class:`_Skid`. ``engine_fifo``, ``engine_requant`` and the skid
after it are one path that both kinds of engine word pass in the order the engine emits
them: :func:`_engine_requant`.)

Most of these blocks are pipelines with one global enable: they move in every cycle except
those in which their output register holds a word the next block does not take (the block is
*frozen*). The model follows each word (a mid word, a project output group, an expanded
word) through the chain in order; a word's times depend only on earlier words, so one pass
gives them all (:class:`_Frozen` keeps each block's frozen intervals). The recurrences are
those of the blocks' flow control, stated where they are used. The one block that two
chains share is the 1x1 engine (``hw/engine.py``) of an ``EXPAND`` layer: its expand jobs
feed the line buffer and its project jobs drain the DW stage, so the model places the jobs
in the order the engine's scheduler issues them (:class:`_Engine`,
:meth:`_FillFromExpand.run_until`). Beside the chain, a layer may read the next layer's 1x1
weights through the prefetch port (the prefetch segments, ``PREFETCH_SEGMENTS``):
a stream taken as it comes, followed after the chain (it sees the chain's beats in the
memory's credits) and then the chain again seeing its beats; the next layer skips those
loads (``EXP_LOADED``, ``PW_LOADED``).

Memory: a :class:`dwsep.sim.ddr.MemoryCycles` (a memory model at the accelerator's clock),
the same numbers the RTL bench's DDR model ``sim/ddr_model.sv`` takes:

* an AR handshake in cycle ``t`` lets the memory move the burst's first beat into its R
  register in ``t + read_latency - 1`` (on R in ``t + read_latency``); a stalled R channel
  resumes without a bubble;
* the last W handshake of a burst in cycle ``t`` gives B in ``t + write_latency``;
* a beat moves only in a cycle its link's and the DRAM's credit counters hold a beat of
  credit (:class:`_Credit`: ``rate`` beats accrue per cycle, capped at two); ports that want
  one counter in the same cycle ask in a priority order that rotates every cycle. Without
  rate limits (``ideal``) each port moves one beat per cycle.

Both DMAs keep four bursts in flight: a read burst's slot is free again two cycles after its
last R handshake, a write burst's the cycle after its B (:class:`_ReadStream`,
:class:`_Writer`). With the ``ideal`` memory, and with any read latency up to 47 cycles
without a rate limit, a DMA moves one beat per cycle on long commands; short write commands
(one per pixel for an output tile with a pixel pitch) are limited by the four slots.

Constants derived here, not declared by a block: ``Engine.latency`` is an instance
attribute (``array_latency(dw_lanes)``, its formula); the controller's one-cycle states
(``FETCH_CMD``, ``CHECK``, ``CHECKED``, ``CHECK_PRODUCTS``, ``PRODUCTS_CHECKED``,
``LOAD_NEXT``, ``LOAD_CMD``,
``LOAD_FLUSH``, ``RUN_START``, the ``settle`` cycle of ``RUN_WAIT``, ``NEXT``); the line
buffer's ``busy`` falling two cycles after its last fill beat; ``BeatPacker``/
``BeatSerializer`` timing and ``DMAWriter``'s command rate, which their docstrings state in
words only.

Accuracy, ideal memory: without backpressure the run is deterministic, and the model equals
the ``CYCLES`` register of the Verilated design exactly on every descriptor measured
(``tests/test_perf.py`` on ``tiny``: plain DW + PW, EXPAND with and without RESIDUAL, the
split expand, the CONV stem, average pool, MEAN, pool + FC with RAW_OUT, pitched output
tiles, depth multiplier 2 and whole random networks, each descriptor alone and the programs'
totals; and, marked slow, a 16-lane config with two-beat words, where one EXPAND layer of
short rows through 4 line-buffer slots is 2.1 % slow: :class:`_FillFromExpand`). AXI
backpressure (random pauses) is not modelled.

Accuracy, rate-limited memory (``pynq-z2``; not exact): a port alone on its counters (the
descriptor fetch, the reader, residual reader or writer of a layer whose other ports are
idle) is followed exactly. Ports that draw on one counter (all three share the DRAM, the
table loads' two readers too; a memory may put the input and residual readers on one link)
are followed one after the other,
each in its own view of the counter (:class:`_Credit`), in which the other ports' beats
recorded so far ask in their cycles and every cycle is arbitrated as ``ddr_model.sv`` does.
That matters beyond who waits: the counter holds two beats at most, so a cycle with less
than two in which two ports ask moves one beat and the credit above the cap is lost. Two
ports that both want every cycle get 1.5 beats a cycle out of the DRAM's 1.97 at 100 MHz
(1.25 of 1.31 at 150 MHz), and a port followed first would otherwise see the full rate.
What the views cannot do is delay a port's beats already followed when a port followed later
wins their cycles: the one error left is there, and it makes the model fast. Measured
against the profiler's exact per-descriptor counts of one frame, pynq-z2 config and memory,
model minus RTL (the slow test in ``tests/test_perf.py`` runs 200 MHz; measured when the
two readers shared one HP link, before the table loads used both; the slow test checks the
current design):

=================  ======  ===========================  =============
network            clock   worst descriptor             frame
=================  ======  ===========================  =============
MobileNetV2-224    100     -0.002 %                     -0.0004 %
MobileNetV2-224    150     -0.006 %                     -0.001 %
MobileNetV2-224    200     -0.011 %                     -0.002 %
MobileNetV1-224    100     +0.05 % (DW s2, 112x112x64)  +0.002 %
MobileNetV1-224    150     0 (every descriptor)         0
MobileNetV1-224    200     +0.03 % (DW s2, 14x14x512)   +0.0004 %
=================  ======  ===========================  =============

Without the arbitration (each port seeing the others' beats only in the cycles before its
own, so both moved in a contested cycle), MobileNetV1's stride-2 DW layers were up to 9.6 %
under the RTL at 150 MHz: their reader (two input rows per output row, 1792 beats in 2016
DW cycles) and writer want the DRAM together, and the reader loses cycles to the writer and
to the cap. Where the error is left, on ``tiny``: a PW- or write-bound 1x1 layer whose writer
(one beat per cycle) is followed before the reads of the later input rows, which win their
cycles in the RTL (32x32x8 -> 64 channels: -8.9 % at 100 MHz, -16 % at 150 MHz, -1.2 % at
200 MHz).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field

from dwsep.hw.add import ResidualAdd
from dwsep.hw.config import BEAT_BYTES, AcceleratorConfig, get_config
from dwsep.hw.datapath import Datapath
from dwsep.hw.dma_reader import PAGE_BEATS, DMAReader
from dwsep.hw.dma_writer import DMAWriter
from dwsep.hw.dw_array import DepthwiseArray
from dwsep.hw.engine import Engine, array_latency
from dwsep.hw.layout import (
    DESCRIPTOR,
    PREFETCH_SEGMENTS,
    DescFlag,
    Table,
    descriptor_products,
    table_loads,
)
from dwsep.hw.line_buffer import LineBuffer
from dwsep.hw.products import product_cycles
from dwsep.hw.requant import Requantizer

from .ddr import MEMORIES, RATE_ONE, READ_PORTS, WRITE_PORTS, MemoryCycles

__all__ = ["IDEAL", "LayerEstimate", "layer_cycles", "program_cycles", "layer_macs",
           "layer_bytes", "ideal_cycles", "held_tables", "LOADS", "BOUNDS"]

#: the per-layer tables in the controller's load order (``hw.layout.Table``), by their
#: descriptor address field, with their word sizes in bytes as functions of the config
LOADS = {t.field: t.word_bytes for t in Table}

#: what :attr:`LayerEstimate.bound` may name: a run-phase stage (see
#: :attr:`LayerEstimate.stage_cycles`) or the table loads
BOUNDS = ("ddr_read", "expand", "line_buffer", "dw", "engine", "add", "ddr_write",
          "table_load")

#: the DMA engines as ``hw.top`` builds them (constructor defaults): their ``max_burst`` and
#: ``max_outstanding`` split and pace the commands
_READER = DMAReader()
_WRITER = DMAWriter()
PAGE_BYTES = PAGE_BEATS * BEAT_BYTES
#: the longest read latency at which the reader's slots cover a 16-beat burst's round trip
#: at one beat per cycle (DMAReader: ``B + L + SLOT_OVERHEAD <= max_outstanding * B`` with
#: one slot's burst still draining)
_READ_LATENCY_LIMIT = ((_READER.max_outstanding - 1) * _READER.max_burst
                       - DMAReader.SLOT_OVERHEAD)


#: the default memory: the ``ideal`` model (2-cycle latencies, no rate limit) at 100 MHz
IDEAL = MEMORIES["ideal"].at(100.0)


@dataclass
class LayerEstimate:
    """Cycle breakdown, work and traffic of one layer (one descriptor).

    Attributes
    ----------
    fetch:
        ``FETCH_CMD`` .. ``PRODUCTS_CHECKED``: the descriptor read, the checks and the
        products of fields (:func:`dwsep.hw.products.product_cycles`).
    loads:
        Cycles of each table load in load order (``LOAD_NEXT`` .. ``LOAD_FLUSH``; only the
        tables the flags need, names as :data:`LOADS`), and ``"skipped"``: one ``LOAD_NEXT``
        cycle per table not needed plus the last one.
    run:
        ``RUN_START`` .. ``NEXT``: the streamed layer.
    fill:
        Of ``run``: cycles before the first tap leaves the line buffer (commands, memory
        latency, the expand stage, the input rows the first output row needs).
    drain:
        Of ``run``: cycles after the last tap leaves the line buffer (DW, requant, PW,
        requant, ADD, serializer, write responses, ``NEXT``).
    stage_cycles:
        Work of each run-phase stage in cycles at its full rate: ``"ddr_read"`` input beats
        (and, on its own port, residual beats: the larger), ``"expand"`` per input pixel its
        expanded words x the requantizer's chunks or its fill transfers (up to a line-buffer
        word each), whichever is more (the path into the line buffer), ``"line_buffer"``
        conv-mode taps (straight into the engine), ``"dw"`` DW taps, ``"engine"`` the 1x1
        engine's ``(og, q)`` steps of both kinds (expand and project), ``"add"`` ADD words x
        chunks, ``"ddr_write"`` output beats (or, with a pixel pitch, the per-pixel bursts' time in
        the writer's slots).
    bottleneck:
        The stage with the most work (the first in pipeline order on a tie): it sets the
        pace of the run phase.
    bound:
        ``bottleneck``, or ``"table_load"`` when the loads take more cycles than that stage's
        work (one of :data:`BOUNDS`).
    macs:
        ``{"expand", "dw", "pw"}``: MACs the arrays perform, padded lanes included
        (:func:`layer_macs`).
    bytes_read:
        DDR bytes read: ``"descriptor"``, each loaded table (names as :data:`LOADS`),
        ``"input"``, ``"residual"`` (:func:`layer_bytes`).
    bytes_written:
        DDR bytes written (the output; with a pixel pitch only the data, not the gaps).
    total:
        ``fetch + sum(loads) + run``.
    """
    fetch: int
    loads: dict[str, int]
    run: int
    fill: int
    drain: int
    stage_cycles: dict[str, int]
    bottleneck: str
    macs: dict[str, int] = field(default_factory=dict)
    bytes_read: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0
    bound: str = field(init=False)
    total: int = field(init=False)

    def __post_init__(self):
        self.total = self.fetch + sum(self.loads.values()) + self.run
        load = sum(v for k, v in self.loads.items() if k != "skipped")
        self.bound = ("table_load" if load > self.stage_cycles[self.bottleneck]
                      else self.bottleneck)


def _flags(desc: dict) -> DescFlag:
    return DescFlag(desc.get("flags", 0))


def layer_macs(config: AcceleratorConfig | str, desc: dict) -> dict[str, int]:
    """MACs the arrays perform for one layer, padded lanes included (the compiler's
    ``Program.layers[i]["macs"]`` counts the model's true channels):
    ``expand = in_h*in_w * in_groups*P * exp_groups*P`` (``EXPAND``), ``dw = out_h*out_w *
    mid_groups*P * k*k`` (0 with ``CONV``: the taps go to the engine; ``in_h*in_w`` pixels
    with ``POOL``) and ``pw = out_h*out_w * mid_groups*P * out_groups*Q``."""
    config = get_config(config)
    P, Q = config.dw_lanes, config.pw_cols
    flags = _flags(desc)
    pixels = desc["out_h"] * desc["out_w"]
    mid = desc["mid_groups"] * P
    expand = 0
    if flags & DescFlag.EXPAND:
        expand = desc["in_h"] * desc["in_w"] * desc["in_groups"] * P * desc["exp_groups"] * P
    dw_pixels = desc["in_h"] * desc["in_w"] if flags & DescFlag.POOL else pixels
    dw = 0 if flags & DescFlag.CONV else dw_pixels * mid * desc["kernel"] ** 2
    return {"expand": expand, "dw": dw, "pw": pixels * mid * desc["out_groups"] * Q}


class _WordBeats:
    """Beats of consecutive words of a pixel: ``beats`` each, ``last`` for the last of
    every ``words`` (the channels of a pixel's last engine word past those it stores are
    dropped: ``pw_cols != dw_lanes``)."""

    def __init__(self, beats: int, words: int = 1, last: int | None = None):
        self.beats, self.words = beats, words
        self.last = beats if last is None else last
        self.count = 0

    @classmethod
    def stored(cls, config: AcceleratorConfig, stored: int, words: int) -> _WordBeats:
        """Engine words (``Q/8`` beats) of which a pixel stores ``stored`` beats."""
        beats = config.pw_cols // BEAT_BYTES
        return cls(beats, words, stored - (words - 1) * beats)

    def next(self) -> int:
        self.count += 1
        return self.last if self.count % self.words == 0 else self.beats


def _table_words(config: AcceleratorConfig, desc: dict) -> dict[str, int]:
    """Words of each table the layer needs (``hw.layout.table_loads``, the controller's
    ``CHECK_PRODUCTS`` counts), by name as :data:`LOADS`; the engine's weights also when its
    flags say they are loaded already (:func:`_table_beats` drops them)."""
    flags = _flags(desc)
    plain = dict(desc, flags=flags & ~(DescFlag.EXP_LOADED | DescFlag.PW_LOADED))
    loads = table_loads(plain, descriptor_products(plain, config), config)
    return {t.field: words for t, (needed, words) in zip(Table, loads, strict=True)
            if needed and words}


def _table_beats(config: AcceleratorConfig, desc: dict,
                 held: frozenset[str] = frozenset()) -> dict[str, int]:
    """Beats of each table the layer loads: those it needs (:func:`_table_words` x word
    bytes / 8) but not those in ``held`` nor the engine weights it is flagged to find loaded
    (``EXP_LOADED``, ``PW_LOADED``)."""
    flags = _flags(desc)
    return {name: words * LOADS[name](config) // BEAT_BYTES
            for name, words in _table_words(config, desc).items()
            if name not in held and not (name in _LOADED and flags & _LOADED[name])}


def held_tables(config: AcceleratorConfig | str, descriptors: list[dict]
                ) -> list[frozenset[str]]:
    """For each descriptor of a program, the tables it needs that the controller holds on
    chip already (``hw.top``: same address and length as the last load into that table's
    memory since ``start``), which it does not read again. The engine's weights are not
    held by address: their descriptors' flags say whether they are loaded."""
    config = get_config(config)
    last: dict[str, tuple[int, int]] = {}
    out = []
    for desc in descriptors:
        words = _table_words(config, desc)
        held = frozenset(n for n, w in words.items()
                         if n not in _LOADED and last.get(n) == (desc.get(n, 0), w))
        last.update({n: (desc.get(n, 0), w) for n, w in words.items()
                     if n not in held and n not in _LOADED})
        out.append(held)
    return out


#: the engine's weight tables, which the controller does not hold by address: the compiler
#: places them and flags those it finds in the memory already (``hw.layout.DescFlag``)
_LOADED = {"exp_weights": DescFlag.EXP_LOADED, "pw_weights": DescFlag.PW_LOADED}


def _prefetch(config: AcceleratorConfig, desc: dict) -> list[tuple[int, int]]:
    """``(address, beats)`` of the descriptor's prefetch segments (those with words)."""
    word_beats = LOADS["pw_weights"](config) // BEAT_BYTES
    return [(desc.get(addr, 0), desc[words] * word_beats)
            for addr, words, _ in PREFETCH_SEGMENTS if desc.get(words, 0)]


def _dw_columns(config: AcceleratorConfig, desc: dict) -> int:
    """Tap columns the line buffer emits per pixel-group: ``dw_passes(k)*k``, or one per
    conv-mode tap (``CONV``: one PW input word each)."""
    if _flags(desc) & DescFlag.CONV:
        return 1
    return config.dw_passes(desc["kernel"]) * desc["kernel"]


def layer_bytes(config: AcceleratorConfig | str, desc: dict,
                held: frozenset[str] = frozenset()) -> tuple[dict[str, int], int]:
    """DDR traffic of one layer: ``({"descriptor", <each loaded table>, "input",
    "residual"}, bytes written)``. Input ``in_h*in_w*in_groups*P``, residual and output
    ``out_h*out_w`` pixels of ``out_beats*8`` bytes; the tables in ``held``
    (:func:`held_tables`) are not read; ``"prefetch"``: the next descriptor's weights read
    while this one runs."""
    config = get_config(config)
    read = {"descriptor": DESCRIPTOR.size}
    read.update({k: v * BEAT_BYTES for k, v in _table_beats(config, desc, held).items()})
    read["input"] = desc["in_h"] * desc["in_w"] * desc["in_groups"] * config.dw_lanes
    out = desc["out_h"] * desc["out_w"] * desc["out_beats"] * BEAT_BYTES
    read["residual"] = out if _flags(desc) & DescFlag.RESIDUAL else 0
    read["prefetch"] = sum(beats for _, beats in _prefetch(config, desc)) * BEAT_BYTES
    return read, out


def ideal_cycles(macs: int, config: AcceleratorConfig | str) -> float:
    """``macs / config.macs`` (DW lanes x taps + the 1x1 engine): cycles if every MAC unit
    did useful work every cycle."""
    return macs / get_config(config).macs


def _fetch_cycles(config: AcceleratorConfig, desc: dict, mem: MemoryCycles, addr: int) -> int:
    """``FETCH_CMD`` (1, the reader takes the command at once) + ``FETCH_DATA`` (until the
    last descriptor beat is on ``data``) + ``CHECK`` (1) + ``CHECKED`` (1) + ``SIZES``
    (the products) + ``CHECK_PRODUCTS`` (1) + ``PRODUCTS_CHECKED`` (1)."""
    return (1 + _read_cycles(DESCRIPTOR.size // BEAT_BYTES, addr % PAGE_BYTES, mem) + 2
            + product_cycles(desc, config) + 2)


def _load_cycles(words: int, word_beats: int, addr: int, mem: MemoryCycles) -> int:
    """``LOAD_NEXT`` (1, the table is needed) + ``LOAD_SPLIT`` (1) + ``LOAD_CMD`` (1, both
    commands taken) + ``LOAD_DATA`` (until the last beat is taken,
    :func:`_split_read_cycles`) + ``LOAD_FLUSH`` (1, the last word's write)."""
    return 1 + 1 + 1 + _split_read_cycles(words, word_beats, addr % PAGE_BYTES, mem) + 1


@functools.lru_cache(maxsize=4096)
def _split_read_cycles(words: int, word_beats: int, page_offset: int,
                       mem: MemoryCycles) -> int:
    """Cycles from the load commands' handshake (cycle 0) to the cycle the loader takes the
    table's last beat: the first ``ceil(words/2)`` words come through ``m_axi`` (port
    ``read0``), the others through ``m_axi_res`` (``read1``), both commands taken in cycle
    0; the loader takes one beat a cycle in all, and when both ports offer one, from the
    port it did not take the last beat from (``hw/top.py``, ``LOAD_DATA``)."""
    half = words - words // 2
    parts = [(page_offset, half * word_beats),
             (page_offset + half * word_beats * BEAT_BYTES, (words - half) * word_beats)]
    credits = _port_credits(mem, ("read0", "read1"))
    streams = [_ReadStream(0, addr, beats, mem, credits[port])
               for (addr, beats), port in zip(parts, ("read0", "read1"), strict=True)]
    left = [beats for _, beats in parts]
    t, took_first = -math.inf, False
    while any(left):
        offer = [s.peek() if n else math.inf for s, n in zip(streams, left, strict=True)]
        c = max(t + 1, min(offer))
        second = offer[1] <= c and (offer[0] > c or took_first)
        port = 1 if second else 0
        t = streams[port].take(c)
        left[port] -= 1
        took_first = port == 0
    return t


@functools.lru_cache(maxsize=4096)
def _read_cycles(beats: int, page_offset: int, mem: MemoryCycles) -> int:
    """Cycles from a read command's handshake (cycle 0) to the cycle its last beat is on the
    reader's ``data``, the controller taking every beat at once and the memory idle before
    (its credit full): :class:`_ReadStream` (``CMD_TO_AR + read_latency + R_TO_DATA + beats
    - 1`` without a rate limit)."""
    stream = _ReadStream(0, page_offset, beats, mem, _port_credits(mem, ("read0",))["read0"])
    t = 0
    for _ in range(beats):
        t = stream.take(-math.inf)
    return t


def _bursts(addr: int, beats: int) -> list[int]:
    """Burst lengths of one DMA command (``dma_reader.next_burst_beats``): at most
    ``max_burst`` beats (16 for both engines), never across a 4 KiB page."""
    out = []
    while beats:
        n = min(beats, _WRITER.max_burst, PAGE_BEATS - (addr // BEAT_BYTES) % PAGE_BEATS)
        out.append(n)
        addr += n * BEAT_BYTES
        beats -= n
    return out


_CREDIT_CAP = 2 * RATE_ONE  # ddr_model.sv: credit is capped at two beats
_REQUESTERS = len(READ_PORTS) + len(WRITE_PORTS)  # ddr_model.sv: NP, the priority's period


class _Credit:
    """One credit counter of ``sim/ddr_model.sv`` (a link's or the DRAM's) as one port sees
    it: ``rate``/65536 beats accrue every cycle up to two beats, ``c(t+1) = min(c(t) -
    used(t) + rate, 2)``; in each cycle the ports that want a beat ask in a priority order
    that rotates every cycle (port ``(t + i) mod NP`` asks ``i``-th), and each gets one if
    the counter still holds a beat.

    Ports that share the counter (:func:`_port_credits`) each keep a view of it, in which
    the other ports' beats recorded so far (``shared``: each port's beat cycles, in order)
    are wants: a beat recorded in ``g`` asks from ``g``, and from the cycle after the same
    port's previous beat moved or was refused, in this view. So the view arbitrates every
    cycle as the Verilog model does, the credit lost at the cap when a port is refused
    included; what it cannot do is delay the other port's beat itself (it was followed
    earlier, the model follows the ports one after the other, not cycle by cycle). A beat
    recorded after the view has passed its cycle is a late debit.
    """

    __slots__ = ("rate", "t", "c", "full", "mine", "shared", "port", "others")

    def __init__(self, rate: int, shared: dict[int, list[int]] | None = None, port: int = 0):
        self.rate = rate
        self.t = -math.inf     # the state: credit c at the start of cycle t, cycles < t done
        self.c = _CREDIT_CAP
        self.full = -math.inf  # the last cycle the counter was full, as far as seen
        self.shared = {port: []} if shared is None else shared
        self.port = port
        self.mine = self.shared.setdefault(port, [])
        # each other port: [port, its beats, beats accounted here, first cycle the next asks]
        self.others: list[list] = []

    def _accrue(self, t: int) -> None:
        """Idle cycles up to ``t``."""
        if t > self.t:
            c = self.c + (t - self.t) * self.rate
            if c >= _CREDIT_CAP:
                self.full = max(self.full, t if self.c >= _CREDIT_CAP else
                                self.t + -(-(_CREDIT_CAP - self.c) // self.rate))
                c = _CREDIT_CAP
            self.c, self.t = c, t

    def _first(self, p: int, t: int) -> bool:
        """Port ``p`` asks before this one in cycle ``t``."""
        return (p - t) % _REQUESTERS < (self.port - t) % _REQUESTERS

    def _heads(self) -> list[tuple[int, list]]:
        """``(cycle, other)``: the cycle each other port's next recorded beat asks in (from
        ``self.t`` on: the beats of cycles this view has passed are debited late)."""
        if len(self.others) < len(self.shared) - 1:
            known = {o[0] for o in self.others}
            self.others += [[p, beats, 0, -math.inf] for p, beats in self.shared.items()
                            if p != self.port and p not in known]
        heads = []
        for o in self.others:
            beats, n, wait = o[1], o[2], o[3]
            while n < len(beats):
                e = beats[n] if beats[n] > wait else wait
                if e >= self.t:
                    heads.append((e, o))
                    break
                if e >= self.full:  # the cap absorbed it if the counter filled since
                    self.c -= RATE_ONE
                n += 1
            o[2] = n
        return heads

    def _cycle(self, t: int, asking: list[list], me: bool) -> None:
        """Arbitrate cycle ``t`` (``self.t``) between the other ports ``asking`` (in the
        cycle's priority order) and this one if ``me`` (:meth:`ready` made sure it gets a
        beat)."""
        c = self.c
        for o in asking:
            if me and not self._first(o[0], t):
                c -= RATE_ONE
                me = False
            o[3] = t + 1
            if c >= RATE_ONE:
                c -= RATE_ONE
                o[2] += 1
        if me:
            c -= RATE_ONE
        c = min(c + self.rate, _CREDIT_CAP)
        if c >= _CREDIT_CAP:
            self.full = t + 1
        self.c, self.t = c, t + 1

    def _before(self, t: int) -> list[list]:
        """Arbitrate every cycle before ``t`` in which another port asks; returns the other
        ports asking in cycle ``t`` (``max(t, self.t)``), in its priority order."""
        while True:
            heads = self._heads()
            e = min((e for e, _ in heads), default=math.inf)
            t = max(t, self.t)
            if e >= t:
                self._accrue(t)
                asking = [o for e, o in heads if e == t]
                if len(asking) > 1:
                    asking.sort(key=lambda o: (o[0] - t) % _REQUESTERS)
                return asking
            self._accrue(e)
            asking = [o for h, o in heads if h == e]
            if len(asking) > 1:
                asking.sort(key=lambda o: (o[0] - e) % _REQUESTERS)
            self._cycle(e, asking, False)

    def ready(self, t: int) -> int:
        """The first cycle ``>= t`` in which this port would get a beat."""
        while True:
            asking = self._before(t)
            t = self.t
            c = self.c
            for o in asking:
                if not self._first(o[0], t):
                    break
                if c >= RATE_ONE:
                    c -= RATE_ONE
            if c >= RATE_ONE:
                return t
            # other ports' beats only take credit: no earlier cycle can do
            t += -(-(RATE_ONE - c) // self.rate)

    def use(self, t: int) -> None:
        """This port moves a beat in cycle ``t`` (one :meth:`ready` returned)."""
        self._cycle(t, self._before(t), True)
        self.mine.append(t)


def _requester(port: str) -> int:
    """``ddr_model.sv``'s index of a port (``"read0"``, ...): read ports, then write ports."""
    i = int(port[-1])
    return i if port.startswith("read") else len(READ_PORTS) + i


def _port_credits(mem: MemoryCycles, ports: tuple[str, ...]) -> dict[str, list[_Credit]]:
    """The credit counters each of ``ports`` (``"read0"``, ``"read1"``, ``"write0"``: the
    memory's read and write ports, active together) needs for a beat: its link's and the
    DRAM's, those that can hold it back. A counter of rate ``r`` limits ``n`` ports that
    draw on it when ``r < n`` beats per cycle, or ``n > 2`` (it holds two beats at most)."""
    links = {p: (p[:-1], (mem.read_links if p.startswith("read") else mem.write_links)
                 [int(p[-1])]) for p in ports}
    counters = {("ddr",): (mem.ddr_rate, ports)}
    for link in dict.fromkeys(links.values()):
        users = tuple(q for q in ports if links[q] == link)
        counters[link] = (mem.read_rate if link[0] == "read" else mem.write_rate, users)
    credits: dict[str, list[_Credit]] = {p: [] for p in ports}
    for rate, users in counters.values():
        fixed = MemoryCycles.fixed(rate)
        if fixed and (fixed < len(users) * RATE_ONE or len(users) > 2):
            shared: dict[int, list[int]] = {}
            for q in users:
                credits[q].append(_Credit(fixed, shared, _requester(q)))
    return credits


def _ready(credits: list[_Credit], t: int) -> int:
    """First cycle ``>= t`` in which every counter of ``credits`` has a beat, and use it."""
    while True:
        t0 = t
        for c in credits:
            t = c.ready(t)
        if t == t0:
            break
    for c in credits:
        c.use(t)
    return t


class _ReadStream:
    """The beats of one ``DMAReader`` command on its ``data`` output, taken one by one.

    The command is taken in ``t_cmd`` and split into bursts (:func:`_bursts`). Burst ``j``'s
    AR handshake is ``ar(j) = max(t_cmd + CMD_TO_AR | ar(j-1) + 1, rlast(j - max_outstanding)
    + 2)`` (a slot frees the cycle after the burst's last R handshake, the AR register loads
    in the next); the memory may move its first beat from ``ar(j) + read_latency - 1``.
    Beat ``k`` moves (is granted: into the memory's R register) in ``g(k) = max(r(k-1),
    due, credit)``: the R register is free from the cycle its beat is handshaken, and the
    link's and the DRAM's counters must hold a beat (:class:`_Credit`). Its R handshake is
    ``r(k) = max(g(k) + 1, taken(k-1))`` (``rready`` is ``~data.valid | data.ready``), it is
    on ``data`` from ``r(k) + R_TO_DATA`` and taken in ``max(that, ready)``.

    Without a rate limit and with a read latency the four slots cover (see
    :func:`layer_cycles`), this reduces to beat ``k`` being on ``data`` from ``t_cmd +
    CMD_TO_AR + read_latency + R_TO_DATA + k`` and after the previous beat was taken.

    ``more``: commands ``(addr, beats)`` offered after this one, each taken the cycle after
    the previous one loaded its last AR, so its first AR is ``ar(last) + 2``.
    """

    def __init__(self, t_cmd: int, addr: int, beats: int, mem: MemoryCycles,
                 credits: list[_Credit], more: list[tuple[int, int]] = ()):
        self.t_data = t_cmd + DMAReader.CMD_TO_AR + mem.read_latency + DMAReader.R_TO_DATA
        self.k = 0
        self.taken = -math.inf
        self.t_cmd = t_cmd
        self.fast = not credits and mem.read_latency <= _READ_LATENCY_LIMIT and not more
        if self.fast:
            return
        self.credits = credits
        self.latency = mem.read_latency
        self.bursts = _bursts(addr, beats)
        self.starts = {0}   # bursts that begin a command
        for a, n in more:
            self.starts.add(len(self.bursts))
            self.bursts += _bursts(a, n)
        self.ar: list[int] = []
        self.rlast: list[int] = []
        self.left = 0          # beats of the current burst still to move
        self.due = 0
        self.r = -math.inf     # R handshake of the previous beat
        self.pending = None    # the next beat's first cycle on ``data``, once followed

    def peek(self) -> int:
        """First cycle the next beat is on ``data``: its grant and R handshake follow from
        the beats before it and the cycle the previous one was taken, so they are fixed
        (and the memory's credits used) before the consumer decides when to take it."""
        if self.fast:
            return max(self.t_data + self.k, self.taken + 1)
        if self.pending is not None:
            return self.pending
        if self.left == 0:
            j = len(self.ar)
            a = (self.t_cmd + DMAReader.CMD_TO_AR if not j
                 else self.ar[-1] + (2 if j in self.starts else 1))
            if j >= _READER.max_outstanding:
                a = max(a, self.rlast[j - _READER.max_outstanding] + 2)
            self.ar.append(a)
            self.left = self.bursts[j]
            self.due = a + self.latency - 1
        g = max(self.r, self.due)
        if self.credits:
            g = _ready(self.credits, g)
        r = max(g + 1, self.taken)
        self.r = r
        self.left -= 1
        if self.left == 0:
            self.rlast.append(r)
        self.pending = r + DMAReader.R_TO_DATA
        return self.pending

    def last_command(self) -> int:
        """Cycle the last command was taken (once its first burst's AR is known)."""
        if self.fast:
            return self.t_cmd
        return self.ar[max(self.starts)] - DMAReader.CMD_TO_AR

    def take(self, ready: int) -> int:
        """Cycle the next beat is taken from ``data`` by a consumer ready from ``ready``."""
        t = max(self.peek(), ready)
        if self.fast:
            self.k += 1
        else:
            self.pending = None
        self.taken = t
        return t

    def take_run(self, beats: int, ready: int) -> int:
        """Take ``beats`` beats, the first from ``ready``, the others as they come; returns
        the cycle the last is taken."""
        t = self.take(ready)
        if self.fast:
            self.k += beats - 1
            self.taken = t = t + beats - 1
        else:
            for _ in range(beats - 1):
                t = self.take(-math.inf)
        return t


class _Frozen:
    """The frozen cycles of one global-enable pipeline, as disjoint half-open intervals
    ``[start, end)`` in increasing order (a block freezes while its output register holds a
    word that is not taken, i.e. from the cycle the word is offered to the one it is taken;
    words leave in order, so the intervals come in order)."""

    def __init__(self):
        self.starts: list[int] = []
        self.ends: list[int] = []

    def freeze(self, offered: int, taken: int) -> None:
        if taken > offered:
            self.starts.append(offered)
            self.ends.append(taken)

    def active(self, t: int, n: int = 1) -> int:
        """The ``n``-th cycle ``>= t`` in which the block moves (``n >= 1``)."""
        i = bisect.bisect_right(self.ends, t)
        c = t
        while True:
            if i < len(self.starts) and self.starts[i] <= c:
                c = self.ends[i]
                i += 1
                continue
            room = self.starts[i] - c if i < len(self.starts) else math.inf
            if n <= room:
                return c + n - 1
            n -= room
            c = self.ends[i]
            i += 1

    def through(self, entered: int, latency: int) -> int:
        """Cycle a word that entered in ``entered`` (a moving cycle) is offered at the output
        of a pipeline of ``latency`` stages: after ``latency`` moving cycles."""
        return self.active(entered, latency) + 1


class _Writer:
    """``DMAWriter`` behind the controller's write commands (one for a contiguous output, one
    per pixel with a pitch), taking beats as they are offered.

    Burst ``n`` (``_bursts`` of each command): its AW issues in ``aw(n) = max(first:
    cmd(c) + 1 | aw(n-1) + 1, B(n - max_outstanding) + 1)`` (the command is split the cycle
    after its handshake; a burst slot frees the cycle after its B); command ``c+1`` is taken
    in ``aw(last burst of c) + 1``. Its beats are taken from ``aw(n) + 1`` (its length is
    then at the head of the length FIFO), one per cycle and no earlier than the W handshake
    of the previous beat (the W register is free from then). A beat taken in ``t`` is on W
    from ``t + DATA_TO_W``; the memory takes it in the first cycle from then in which the
    write link's and the DRAM's counters hold a beat (:class:`_Credit`), and answers the
    burst's last W with B ``write_latency`` later.
    """

    def __init__(self, commands: list[tuple[int, int]], t_cmds: int, mem: MemoryCycles,
                 credits: list[_Credit]):
        self.latency = mem.write_latency
        self.credits = credits
        self.bursts: list[int] = []      # beats of each burst
        self.first: list[bool] = []      # the first burst of its command
        for addr, beats in commands:
            b = _bursts(addr, beats)
            self.bursts += b
            self.first += [True] + [False] * (len(b) - 1)
        self.cmd_taken = [t_cmds]        # handshake cycle of each command
        self.aw: list[int] = []
        self.b: list[int] = []
        self.burst = 0                   # burst of the next beat
        self.left = self.bursts[0] if self.bursts else 0
        self.last_take = -math.inf
        self.last_w = -math.inf          # W handshake of the last beat

    def _issue(self, n: int) -> int:
        if self.first[n]:
            if n:
                self.cmd_taken.append(self.aw[n - 1] + 1)
            t = self.cmd_taken[-1] + 1
        else:
            t = self.aw[n - 1] + 1
        if n >= _WRITER.max_outstanding:
            t = max(t, self.b[n - _WRITER.max_outstanding] + DMAWriter.B_TO_IDLE)
        return t

    def take(self, offered: int) -> int:
        """Cycle the next beat, offered from ``offered``, is taken."""
        n = self.burst
        if len(self.aw) == n:
            self.aw.append(self._issue(n))
        t = max(offered, self.aw[n] + 1, self.last_take + 1, self.last_w)
        self.last_take = t
        w = t + DMAWriter.DATA_TO_W
        if self.credits:
            w = _ready(self.credits, w)
        self.last_w = w
        self.left -= 1
        if self.left == 0:
            self.b.append(w + self.latency)
            self.burst += 1
            if self.burst < len(self.bursts):
                self.left = self.bursts[self.burst]
        return t

    def done(self) -> tuple[int, int]:
        """After the last beat: ``(last command handshake, first cycle with busy low)``."""
        return self.cmd_taken[-1], self.b[-1] + DMAWriter.B_TO_IDLE


class _Skid:
    """``SkidBuffer`` in front of ``take``: takes word ``n`` in the first cycle from its
    offer in which the buffer is empty, i.e. after the cycle word ``n-1`` was taken by the
    sink (the buffer holds a word from the cycle after it came in, unless the sink took it
    at once, to the cycle the sink takes it), and offers it to the sink in that cycle.
    ``sink`` overrides ``take`` for one word (a skid whose words go to two consumers)."""

    def __init__(self, take=None):
        self.next = take
        self.taken = -math.inf  # cycle the sink took the previous word

    def take(self, offered: int, sink=None) -> int:
        a = max(offered, self.taken + 1)
        self.taken = (sink or self.next)(a)
        return a


class _Serializer:
    """``BeatSerializer``: takes a word in the cycle it is offered if it holds none, or in
    the cycle its last transfer leaves; transfer ``i`` is offered from ``a + 1`` (``a`` the
    take cycle) or the cycle after the previous one left; a word's beats as ``beats`` gives
    them (the others are dropped), one a transfer, or with ``max_beats`` up to that many,
    cut at a grid of ``max_beats`` beats over the stream (``sink`` then also gets the
    transfer's beats)."""

    def __init__(self, beats: _WordBeats, sink, max_beats: int | None = None):
        self.beats = beats
        self.sink = sink  # transfer offered in cycle t (, beats) -> cycle it is taken
        self.max_beats = max_beats
        self.phase = 0    # beats emitted, modulo max_beats
        self.free = -math.inf

    def take(self, offered: int) -> int:
        a = max(offered, self.free)
        t = a
        beats = self.beats.next()
        if self.max_beats is None:
            for _ in range(beats):
                t = self.sink(t + 1)
        else:
            for n in _cut(beats, self.phase, self.max_beats):
                t = self.sink(t + 1, n)
            self.phase = (self.phase + beats) % self.max_beats
        self.free = t
        return a


def _cut(beats: int, phase: int, grid: int) -> list[int]:
    """The transfers of a word of ``beats`` beats that starts ``phase`` beats into a cell of
    a grid of ``grid`` beats: each fills the rest of its cell or of the word."""
    sizes = []
    while beats:
        n = min(beats, grid - phase)
        sizes.append(n)
        phase, beats = (phase + n) % grid, beats - n
    return sizes


class _Requant:
    """A ``Requantizer`` of ``lanes`` values (global enable, ``compute_lanes`` compute
    lanes) feeding ``take``: takes a word in a moving cycle at least ``chunks - 1``
    moving cycles after the previous take (its split stage) and offers it ``latency``
    moving cycles later. ``sink`` overrides ``take`` for one word: the engine's
    requantizer, whose expand and project words share the pipeline and leave to their
    own consumers (:func:`_engine_requant`).

    ``pooling``: the DW requantizer, built to sum global pools (one stage more); ``pool``:
    ``(pixels, groups)`` of the layer's pool: the words come a pixel's groups at a time,
    only the last pixel's go on, and with ``(groups - 1) * chunks < 3`` a word is taken
    only after the previous one left stage 1p (``chunks + 2`` moving cycles after its
    take)."""

    def __init__(self, lanes: int, compute_lanes: int, take=None, *, pooling: bool = False,
                 pool: tuple[int, int] | None = None):
        self.rq = Requantizer(lanes, 1, compute_lanes, max_pool_pixels=int(pooling))
        self.frozen = _Frozen()
        self.next = take
        self.last = None
        self.pool = pool
        self.words = 0

    def take(self, offered: int, sink=None) -> int:
        t = offered
        if self.last is not None:
            t = max(t, _after_split(self.frozen, self.last, self.rq.chunks))
        if self.pool is not None:
            pixels, groups = self.pool
            pixel = self.words // groups
            self.words += 1
            if (groups - 1) * self.rq.chunks < 3 and self.last is not None:
                t = max(t, self.frozen.active(self.last + 1, self.rq.chunks + 2) + 1)
        a = self.frozen.active(t)
        self.last = a
        if self.pool is not None and pixel < pixels - 1:
            return a        # summed: only the last pixel's words go on
        out = self.frozen.through(a, self.rq.latency)
        self.frozen.freeze(out, (sink or self.next)(out))
        return a


class _Fifo:
    """``SyncFIFOBuffered`` of ``depth`` words between two streams: its memory holds
    ``depth - 1``, its output register one. Word ``n`` is taken (``w_rdy``, the memory's
    level) in ``w = max(offered, m[n - depth + 1] + 1)``, moves into the output register in
    ``m = max(w + 1, e)`` (``e``: the cycle the word before left it, ``r_en``), and is
    offered from ``m + 1``."""

    def __init__(self, depth: int):
        self.depth = depth
        self.moves: list[int] = []
        self.left = -math.inf

    def take(self, offered: int, consumer) -> int:
        n = len(self.moves)
        w = offered if n < self.depth - 1 else max(offered, self.moves[n - self.depth + 1] + 1)
        self.moves.append(max(w + 1, self.left))
        self.left = consumer(self.moves[-1] + 1)
        return w


def _engine_requant(config: AcceleratorConfig):
    """``engine_fifo``, ``engine_requant`` and the skid after it, shared by the engine's
    expand and project words in the order the engine emits them: returns ``route(sink)``,
    the take of a word that goes on to ``sink``."""
    fifo = _Fifo(Datapath.ENGINE_FIFO_WORDS)
    skid = _Skid()
    requant = _Requant(config.pw_cols, config.erq_lanes)

    def route(sink):
        return lambda offered: fifo.take(
            offered, lambda t: requant.take(t, lambda u: skid.take(u, sink)))
    return route


def _after_split(frozen: _Frozen, last: int, chunks: int) -> int:
    """Earliest cycle a chunked block (:mod:`dwsep.hw.chunked`) that took a word in ``last``
    can take the next: its split stage holds a word for ``chunks`` moving cycles."""
    return frozen.active(last + 1, chunks - 1) + 1 if chunks > 1 else last + 1


class _Add:
    """``ResidualAdd``: takes an ``a`` word with its ``b`` word in a moving cycle at least
    ``chunks - 1`` moving cycles after the previous take (its split stage), offers the sum
    ``latency`` moving cycles later.

    The ``b`` words: ``res_packer`` takes the residual reader's beats (``residual``, a
    :class:`_ReadStream`) as they come, the first beat of word ``w`` no earlier than the
    cycle word ``w-1`` leaves it, and offers the word the cycle after its last beat, to
    ``res_skid`` (:class:`_Skid`: it takes the word from the cycle after the ADD took word
    ``w-1``, and offers it to the ADD in the same cycle).
    """

    def __init__(self, add: ResidualAdd, residual: _ReadStream, beats: _WordBeats, take):
        self.add = add
        self.frozen = _Frozen()
        self.residual, self.beats = residual, beats
        self.next = take
        self.last = None
        self.packed = -math.inf  # cycle the previous word left the packer (into the skid)

    def _b_word(self) -> int:
        """Cycle the next ``b`` word is offered to the ADD."""
        word = self.residual.take_run(self.beats.next(), self.packed) + 1
        self.packed = word if self.last is None else max(word, self.last + 1)
        return self.packed

    def take(self, offered: int) -> int:
        t = max(offered, self._b_word())
        if self.last is not None:
            t = max(t, _after_split(self.frozen, self.last, self.add.chunks))
        a = self.frozen.active(t)
        out = self.frozen.through(a, self.add.latency)
        self.frozen.freeze(out, self.next(out))
        self.last = a
        return a


class _Engine:
    """What the two kinds of job share on the 1x1 engine (``hw/engine.py``): one global
    enable (``frozen``: a word of either kind not taken at ``o`` stops both) and the step
    issue, ``free`` being the cycle after the last placed job's last step.

    Jobs are placed in the order the hardware's scheduler issues them (append only): at a
    job boundary the J job whose pixel is full wins, else an E job that is ready
    (:meth:`_FillFromExpand.run_until` places the E jobs that win boundaries before a J
    job)."""

    def __init__(self):
        self.frozen = _Frozen()
        self.free = -math.inf

    def issue(self, ready: int) -> int:
        """First step cycle of a job ready from ``ready``: the first moving cycle from then
        and from ``free``."""
        return self.frozen.active(max(ready, self.free))


class _EngineJobs:
    """The jobs of one kind on the 1x1 engine (``hw/engine.py``): ``mid`` input words per
    pixel reduced into ``og`` output words.

    Input side: pixel ``p``'s words go to buffer half ``p % 2``, free from ``drain(p-2) + 1``;
    the pixel is full the cycle after its last word. Reduce side: the job of pixel ``p``
    issues its first step in the first moving cycle from ``full(p)`` and from the engine's
    ``free`` (:class:`_Engine`), after the jobs of the other kind that ``before(full)``
    places; one ``(og, q)`` step per moving cycle; the last step of an output group issued
    in ``s`` offers the word ``latency`` moving cycles later, and the engine freezes until
    ``take`` takes it. With ``reduce_now=False`` (E jobs) the caller places the jobs
    (:meth:`place`).
    """

    def __init__(self, mid: int, og: int, latency: int, take, engine: _Engine, *,
                 before=None, reduce_now: bool = True):
        self.mid, self.og, self.latency = mid, og, latency
        self.engine = engine
        self.frozen = engine.frozen
        self.next = take
        self.before = before
        self.reduce_now = reduce_now
        self.drains: list[int] = []
        self.fulls: list[int] = []
        self.last_accept = -math.inf
        self.count = 0  # words of the current pixel taken

    def accept(self, offered: int) -> int:
        """Cycle an input word offered in ``offered`` is written; reduces the pixel when it
        is the last one (with ``reduce_now``)."""
        p = len(self.fulls)
        t = max(offered, self.last_accept + 1)
        if self.count == 0 and p >= 2:
            t = max(t, self.drains[p - 2] + 1)
        self.last_accept = t
        self.count += 1
        if self.count == self.mid:
            self.count = 0
            self.fulls.append(t + 1)
            if self.reduce_now:
                if self.before is not None:
                    self.before(t + 1)
                self.place(t + 1)
        return t

    def place(self, ready: int) -> None:
        """Issue the next job (its pixel full) from ``ready``."""
        s = self.engine.issue(ready)
        for _ in range(self.og):
            s = self.frozen.active(s, self.mid)
            out = self.frozen.through(s, self.latency)
            self.frozen.freeze(out, self.next(out))
            s += 1
        self.engine.free = s
        self.drains.append(s - 1)


def _run_phase(config: AcceleratorConfig, d: dict, t_cmds: int, mem: MemoryCycles,
               base: int, pf_seed: list[int] | None = None):
    """Cycles of the run phase; ``t_cmds`` is the ``RUN_CMDS`` cycle, in which the DMAs
    take their (first) commands. Returns ``(end, first_tap, last_tap, pf_grants)``, ``end``
    being the last ``RUN_WAIT`` cycle, ``pf_grants`` the cycles the prefetch's beats moved
    (with a rate-limited memory; else empty).

    The prefetch is followed after the other streams, so that it sees their beats in the
    memory's credits; ``pf_seed``, its beats from a first pass, lets them see its beats too
    (:func:`layer_cycles` makes the two passes).

    The blocks are built back to front (writer, serializer, [ADD], PW requantizer, the
    engine's project jobs, spatial stage); then the taps are followed word by word (a word:
    a pixel-group's ``dw_passes(k)*k`` tap columns, or one conv-mode tap), each pushed on
    through the chain as far as it goes:

    1. Rows: the taps of output row ``oy`` (``top = oy*s - pad_top``) need input rows
       ``< need = min(top + (k-1)*d + 1, in_h)``; the line buffer sees a row the cycle after
       its last beat, so the row's first tap issues no earlier than ``gate(oy) =
       done(need - 1) + 1`` (:class:`_FillFromReader`, :class:`_FillFromExpand`, which draw
       on the input lazily, row by row).
    2. The line buffer is a two-stage pipeline with one global enable, frozen while its
       output holds a column not taken: a column issues in its first moving cycle from the
       cycle after the previous column's issue (and from ``gate(oy)`` at a row start) and
       is offered ``LineBuffer.LATENCY`` moving cycles later.
    3. DW mode: the DW array takes a column in each of its moving cycles; the word leaves
       ``DepthwiseArray.LATENCY`` moving cycles after its last column was taken, into the
       DW requantizer, then the engine's project input. Conv mode: the taps go straight to
       the engine's project input. ``POOL``: the line buffer's output is the input's
       ``in_h x in_w`` pixels (kernel 1) and the DW requantizer sums them: only the last
       pixel's words go on (:class:`_Requant`).
    4. The engine's project jobs, requantizer, [ADD], serializer and writer:
       :class:`_EngineJobs`, :class:`_Requant`, :class:`_Add`, :class:`_Serializer`,
       :class:`_Writer`. With ``EXPAND``, before each project job the expand jobs that the
       engine's scheduler issues first (:meth:`_FillFromExpand.run_until`).
    5. ``RUN_WAIT`` is entered the cycle after the last write command (with ``settle``) and
       left in the first cycle the writer (busy until the cycle after its last B) and the
       line buffer (its busy falls two cycles after the last fill beat: ``fill_done``, then
       ``busy``) are idle; the input and residual readers finish earlier. The prefetch
       segments' reader is idle the cycle after its last beat, and ``RUN_WAIT`` is
       entered no earlier than two cycles after it took the last segment's command.
    """
    P, Q = config.dw_lanes, config.pw_cols
    flags = _flags(d)
    expand, conv = bool(flags & DescFlag.EXPAND), bool(flags & DescFlag.CONV)
    residual, raw = bool(flags & DescFlag.RESIDUAL), bool(flags & DescFlag.RAW_OUT)
    k, s, dil = d["kernel"], d["stride"], d["dilation"]
    mid, og = d["mid_groups"], d["out_groups"]
    out_h, out_w, in_h, in_w = d["out_h"], d["out_w"], d["in_h"], d["in_w"]
    pool = bool(flags & DescFlag.POOL)
    lb_h, lb_w = (in_h, in_w) if pool else (out_h, out_w)   # the line buffer's output
    in_beats = in_h * in_w * d["in_groups"] * P // BEAT_BYTES
    prefetch = _prefetch(config, d)
    credits = _port_credits(mem, ("read0", "write0") + ("read1",) * residual
                            + ("read2",) * bool(prefetch))
    if pf_seed:
        for c in credits["read2"]:
            c.mine.extend(pf_seed)
    reader = _ReadStream(t_cmds, base + d.get("in_addr", 0), in_beats, mem, credits["read0"])

    # ---- back: writer <- serializer <- [ADD <- residual] <- PW requant <- engine (J) ----
    pixel_beats = d["out_beats"]
    pixels = out_h * out_w
    out_addr = base + d.get("out_addr", 0)
    if pixel_beats == d["out_pitch"]:
        commands = [(out_addr, pixels * pixel_beats)]
    else:
        commands = [(out_addr + p * d["out_pitch"] * BEAT_BYTES, pixel_beats)
                    for p in range(pixels)]
    writer = _Writer(commands, t_cmds, mem, credits["write0"])
    serializer = _Serializer(_WordBeats(4 * Q // BEAT_BYTES) if raw  # whole int32 words
                             else _WordBeats.stored(config, pixel_beats, og),
                             _Skid(writer.take).take)
    if raw:
        take_pw = serializer.take
    else:
        take_rq = serializer.take
        if residual:
            res = _ReadStream(t_cmds, base + d.get("res_addr", 0), pixels * pixel_beats, mem,
                              credits["read1"])
            take_rq = _Add(ResidualAdd(Q, config.add_lanes), res,
                           _WordBeats.stored(config, pixel_beats, og),
                           _Skid(serializer.take).take).take
    route = _engine_requant(config)
    if not raw:
        take_pw = route(take_rq)
    engine = _Engine()
    fill = None if not expand else _FillFromExpand(config, d, reader, engine, route)
    pw = _EngineJobs(mid, og, array_latency(P), take_pw, engine,
                     before=fill.run_until if expand else None)

    # ---- spatial stage: taps -> (DW -> requant | conv) -> the engine's project input ----
    if not conv:
        dw_frozen = _Frozen()
        dwq = _Requant(P, config.requant_lanes, _Skid(pw.accept).take, pooling=True,
                       pool=(in_h * in_w, mid) if pool else None)
        dw_skid = _Skid(dwq.take)

    # ---- front: the line buffer's fill ----
    if not expand:
        fill = _FillFromReader(reader, in_w * d["in_groups"] * P // BEAT_BYTES,
                               config.lb_rows)

    span = (k - 1) * dil + 1
    tops = [oy * s - d["pad_top"] for oy in range(lb_h)]
    row_end: list[int] = []

    def allow(y: int) -> int | None:
        # first output row whose top lets row y in: its top is live the cycle after the
        # previous row's last tap issued (None: that row's taps are not followed yet)
        for oy in range(lb_h):
            if tops[oy] + config.lb_rows > y:
                if not oy:
                    return -math.inf
                return row_end[oy - 1] + 1 if len(row_end) >= oy else None
        # after the last tap (gen_done)
        return row_end[-1] + 1 if len(row_end) == lb_h else None

    taps_word = _dw_columns(config, d)
    lb = _Frozen()    # the line buffer's pipeline: frozen while a tap waits
    issue = -math.inf  # cycle the last tap column issued
    first_tap = None
    for oy in range(lb_h):
        need = min(tops[oy] + span, in_h)
        gate = t_cmds
        if need > 0:
            gate = max(gate, fill.complete(need - 1, allow) + 1)
        words = lb_w * mid
        for word in range(words):
            for column in range(taps_word):
                t = max(gate, issue + 1) if word == 0 and column == 0 else issue + 1
                issue = lb.active(t)
                if first_tap is None:
                    first_tap = issue
                if word == words - 1 and column == taps_word - 1:
                    # the row's end is known before its last tap moves on: the expand
                    # jobs placed meanwhile may need the rows it lets in (`allow`)
                    row_end.append(issue)
                offered = lb.through(issue, LineBuffer.LATENCY)
                taken = pw.accept(offered) if conv else dw_frozen.active(offered)
                lb.freeze(offered, taken)
            if not conv:
                out = dw_frozen.through(taken, DepthwiseArray.LATENCY)
                dw_frozen.freeze(out, dw_skid.take(out))
    done_cmd, writer_idle = writer.done()
    last_fill = fill.complete(in_h - 1, allow)
    pf_end, pf_grants = -math.inf, []
    if prefetch:
        # the next descriptor's weights through the prefetch port, taken as they come
        for c in credits["read2"]:
            c.mine.clear()      # the seed: the other ports have seen it
        (addr, beats), *more = ((base + a, n) for a, n in prefetch)
        pf = _ReadStream(t_cmds, addr, beats, mem, credits["read2"], more)
        pf_last = pf.take_run(sum(n for _, n in prefetch), -math.inf)
        pf_end = max(pf_last + 1, pf.last_command() + 2)
        if credits["read2"]:
            pf_grants = list(credits["read2"][0].mine)
    end = max(done_cmd + 2, writer_idle, last_fill + 2, pf_end)
    return end, first_tap, row_end[-1], pf_grants


class _FillFromReader:
    """Completion cycles of the input rows in the line buffer, fed by the reader.

    The line buffer takes a beat of row ``y`` only while ``y < lb_rows`` or ``y < top +
    lb_rows`` (``top`` of the output row whose taps are being generated, updated in the cycle
    after the previous row's last tap issues) or after the last tap: so row ``y``'s first
    beat is taken no earlier than ``allow(y)``, the others as the reader delivers them
    (:class:`_ReadStream`). Without a rate limit row ``y`` is complete in cycle ``done(y) =
    max(done(y-1), allow(y) - 1) + beats_per_row`` (``done(-1)``: the cycle before the
    first beat is on ``data``).
    """

    def __init__(self, reader: _ReadStream, beats_per_row: int, lb_rows: int):
        self.reader = reader
        self.beats_per_row = beats_per_row
        self.lb_rows = lb_rows
        self.done: list[int] = []  # done[y]: cycle the last beat of row y is taken

    def complete(self, y: int, allow) -> int:
        while len(self.done) <= y:
            row = len(self.done)
            self.done.append(self.reader.take_run(
                self.beats_per_row, allow(row) if row >= self.lb_rows else -math.inf))
        return self.done[y]


class _FillFromExpand:
    """Completion cycles of the input rows in the line buffer, fed by the expand stage:
    reader -> ``in_packer`` (``P/8`` beats a word, offered the cycle after its last beat;
    it takes the next beat in the cycle its word leaves) -> the engine's E jobs
    (``in_groups`` words in, ``exp_groups`` out per pixel; :class:`_EngineJobs`) ->
    ``engine_requant`` -> ``exp_fifo`` => ``exp_serializer`` -> the line buffer's fill, which
    takes row ``y``'s beats from ``allow(y)`` (see :class:`_FillFromReader`). The packer
    takes the reader's beats (:class:`_ReadStream`) as they come while it is not full.

    The FIFO (``SyncFIFOBuffered`` of one entry more than the engine's credits, so it never
    refuses a word) offers a word written in ``w`` from ``max(w + 2, previous exit + 1)``;
    its exit is the cycle the skid in front of the serializer takes it. The words' exits are
    followed as far as the rows' ``allow`` cycles are known (:meth:`_drain`). E job ``p`` is
    ready from its pixel's ``full`` and, for the credit (the FIFO has room for all its
    words), from the second cycle after the exit of expanded word ``(p + 1)*exp_groups -
    e_credits - 1`` (the top level registers the engine's ``e_free``).

    E jobs are placed on the engine as the line buffer needs rows (:meth:`complete`) and
    before a J job whose boundary they win (:meth:`run_until`). Where an E job's credit
    waits on a row whose ``allow`` cycle is not known yet (its output row's taps are not
    followed), the model lets the J job go first: the one approximation of the EXPAND
    model (``_run_phase``). It shows where short rows pass through few line-buffer slots:
    the 16-lane bench config's 32 x 5-pixel expand layer through 4 slots, +2.1 %
    (``tests/test_perf.py``, ``EXPAND_TOLERANCE``); MobileNetV2 on pynq-z2 (8 slots, rows of
    7 to 112 pixels) is within 0.012 % per descriptor.
    """

    def __init__(self, config: AcceleratorConfig, d: dict, reader: _ReadStream,
                 engine: _Engine, route):
        P = config.dw_lanes
        self.lb_rows = config.lb_rows
        self.word_beats = P // BEAT_BYTES           # of an input word
        self.row_words = d["in_w"] * d["exp_words"]  # engine words of a row
        self.row_beats = d["in_w"] * d["exp_groups"] * P // BEAT_BYTES
        self.words_pixel = d["in_groups"]
        self.out_words = d["exp_words"]
        self.pixels = d["in_h"] * d["in_w"]
        self.credits = Engine.default_credits(config)
        self.engine = engine
        self.allow = None                   # set by complete(): the rows' allow cycles
        self.done: list[int] = []
        self.beats = 0                      # fill beats taken
        self.row_allow = -math.inf
        self.last_fill = -math.inf
        self.reader = reader
        self.packer_free = -math.inf        # cycle the packer can take a beat
        self.writes: list[int] = []         # cycle each expanded word entered the FIFO
        self.exits: list[int] = []          # cycle each expanded word left the FIFO
        self.serializer = _Serializer(_WordBeats.stored(
            config, d["exp_groups"] * P // BEAT_BYTES, d["exp_words"]), self._fill,
            max_beats=self.word_beats)
        self.skid = _Skid(self.serializer.take)   # exp_fifo_skid
        self.expand = _EngineJobs(d["in_groups"], d["exp_words"], array_latency(P),
                                  route(self._fifo), engine, reduce_now=False)

    def _fifo(self, offered: int) -> int:
        self.writes.append(offered)
        return offered

    def _drain(self) -> None:
        """Follow the FIFO's words into the line buffer as far as the rows' ``allow``
        cycles are known."""
        while len(self.exits) < len(self.writes):
            n = len(self.exits)
            row = n // self.row_words
            if n % self.row_words == 0:
                if row >= self.lb_rows:
                    allow = self.allow(row) if self.allow is not None else None
                    if allow is None:
                        return
                    self.row_allow = allow
                else:
                    self.row_allow = -math.inf
            out = self.writes[n] + 2
            if self.exits:
                out = max(out, self.exits[-1] + 1)
            self.exits.append(self.skid.take(out))

    def _fill(self, offered: int, beats: int) -> int:
        t = max(offered, self.last_fill + 1, self.row_allow)
        self.last_fill = t
        self.beats += beats
        if self.beats % self.row_beats == 0:
            self.done.append(t)
        return t

    def _next_ready(self) -> int | None:
        """Cycle the next E job is ready (its pixel written into the engine's buffer, the
        credit for its words); None if there is none or its credit is not known yet."""
        jobs = self.expand
        p = len(jobs.drains)
        if p == self.pixels:
            return None
        if len(jobs.fulls) == p:  # its pixel through the packer (half p % 2 is free)
            for _ in range(self.words_pixel):
                t = self.reader.take_run(self.word_beats, self.packer_free)
                self.packer_free = jobs.accept(t + 1)
        ready = jobs.fulls[p]
        n = (p + 1) * self.out_words - self.credits - 1
        if n >= 0:
            self._drain()
            if n >= len(self.exits):
                return None
            ready = max(ready, self.exits[n] + 2)
        return ready

    def run_until(self, j_ready: int) -> None:
        """Place the E jobs that issue before a J job ready from ``j_ready``: those whose
        boundary (the first moving cycle from their ready cycle and the engine's ``free``)
        comes earlier than the J job's."""
        engine = self.engine
        while True:
            ready = self._next_ready()
            if ready is None or engine.issue(ready) >= engine.issue(j_ready):
                return
            self.expand.place(ready)

    def complete(self, y: int, allow) -> int:
        self.allow = allow
        while True:
            self._drain()
            if len(self.done) > y:
                return self.done[y]
            ready = self._next_ready()
            if ready is None:
                raise AssertionError(f"row {y} of the expand stage cannot complete")
            self.expand.place(ready)


def layer_cycles(config: AcceleratorConfig | str, desc: dict, *,
                 memory: MemoryCycles = IDEAL, base: int = 0,
                 held: frozenset[str] = frozenset()) -> LayerEstimate:
    """Cycles of one layer from its ``FETCH_CMD`` cycle to the next layer's ``FETCH_CMD``
    (or ``IDLE``), without AXI backpressure.

    Parameters
    ----------
    config:
        The accelerator (named config or object).
    desc:
        Descriptor field values (``Program.descriptors`` entries).
    memory:
        The memory at the accelerator's clock (``dwsep.sim.ddr.MemoryModel.at``; default
        :data:`IDEAL`).
    base:
        Address the descriptor's addresses are relative to (``Program.link``'s base): only
        where the 4 KiB pages fall matters (per-pixel output bursts that cross one split).
    held:
        Tables the controller holds already (:func:`held_tables`): skipped like unused ones.

    ``total = fetch + sum(loads) + run`` with, ``L`` the read latency and without a rate
    limit (with one, the beats follow :class:`_ReadStream`):

    * ``fetch = 1 + (CMD_TO_AR + L + R_TO_DATA + DESCRIPTOR.size/8 - 1) + 2 + products +
      2`` (:func:`_fetch_cycles`);
    * ``load = 3 + (CMD_TO_AR + L + R_TO_DATA + n - 1) + 1`` for each table of ``n``
      beats the flags need and the controller does not hold (read through both ports, one
      beat a cycle: :func:`_split_read_cycles`), plus one ``LOAD_NEXT`` cycle per table
      skipped and a last one;
    * ``run = RUN_START (1) + RUN_CMDS .. RUN_WAIT + NEXT (1)`` from the pipeline
      recurrences of :func:`_run_phase`.
    """
    config = get_config(config)
    fetch = _fetch_cycles(config, desc, memory, 0)
    table_beats = _table_beats(config, desc, held)
    words = _table_words(config, desc)
    loads = {name: _load_cycles(words[name], LOADS[name](config) // BEAT_BYTES,
                                base + desc.get(name, 0), memory)
             for name in table_beats}
    # LOAD_NEXT: one cycle per skipped table, and one finding no table left
    loads["skipped"] = len(LOADS) - len(table_beats) + 1
    t_run_start = fetch + sum(loads.values())
    t_cmds = t_run_start + 1
    end, first_tap, last_tap, pf_grants = _run_phase(config, desc, t_cmds, memory, base)
    if pf_grants:   # again, the other streams seeing the prefetch's beats
        end, first_tap, last_tap, _ = _run_phase(config, desc, t_cmds, memory, base,
                                                 pf_grants)
    total_end = end + 2  # NEXT, then the next layer's FETCH_CMD (or IDLE)
    bytes_read, bytes_written = layer_bytes(config, desc, held)
    stage_cycles = _stage_cycles(config, desc, memory, base, held)
    bottleneck = max(stage_cycles, key=stage_cycles.get)
    return LayerEstimate(fetch=fetch, loads=loads, run=total_end - t_run_start,
                         fill=first_tap + LineBuffer.LATENCY - t_run_start,
                         drain=total_end - (last_tap + LineBuffer.LATENCY) - 1,
                         stage_cycles=stage_cycles, bottleneck=bottleneck,
                         macs=layer_macs(config, desc), bytes_read=bytes_read,
                         bytes_written=bytes_written)


def _stage_cycles(config: AcceleratorConfig, d: dict, mem: MemoryCycles,
                  base: int, held: frozenset[str]) -> dict[str, int]:
    """Each run-phase stage's work in cycles at its full rate (:attr:`LayerEstimate.
    stage_cycles`), in pipeline order."""
    Q = config.pw_cols
    flags = _flags(d)
    in_pixels, pixels = d["in_h"] * d["in_w"], d["out_h"] * d["out_w"]
    pool = bool(flags & DescFlag.POOL)
    taps = (in_pixels if pool else pixels) * d["mid_groups"] * _dw_columns(config, d)
    read, written = layer_bytes(config, d, held)
    pixel_beats = d["out_beats"]
    write = written // BEAT_BYTES
    if pixel_beats != d["out_pitch"]:
        # per-pixel commands: at most one every two cycles (a command is taken the cycle
        # after its AW), and each burst holds one of the writer's slots from its AW to the
        # cycle after its B
        out_addr = base + d.get("out_addr", 0)
        slots = sum(n + 1 + DMAWriter.DATA_TO_W + mem.write_latency + DMAWriter.B_TO_IDLE
                    for p in range(pixels)
                    for n in _bursts(out_addr + p * d["out_pitch"] * BEAT_BYTES, pixel_beats))
        write = max(write, 2 * pixels, -(-slots // _WRITER.max_outstanding))
    # the rate limits: a port moves at most one beat per cycle, ports on one link share its
    # rate, and the DRAM's rate is shared by all (here split as reads and writes use it)
    # (each read port's beats, in READ_PORTS order)
    ports = [read[name] // BEAT_BYTES for name in ("input", "residual", "prefetch")]
    rd, wr, ddr = (MemoryCycles.fixed(r) / RATE_ONE if r else math.inf
                   for r in (mem.read_rate, mem.write_rate, mem.ddr_rate))
    on_link: dict[int, int] = {}
    for beats, link in zip(ports, mem.read_links, strict=True):
        on_link[link] = on_link.get(link, 0) + beats
    read_cycles = max(*ports, *(math.ceil(n / rd) for n in on_link.values()),
                      math.ceil(sum(ports) / ddr))
    write = max(write, math.ceil(written // BEAT_BYTES / min(wr, ddr)))
    add = ResidualAdd(Q, config.add_lanes)
    expand = bool(flags & DescFlag.EXPAND)
    chunks = Requantizer(Q, 1, config.erq_lanes).chunks   # the engine requantizer's
    return {
        "ddr_read": read_cycles,
        "expand": in_pixels * max(d["exp_words"] * chunks, _fill_transfers(config, d))
        if expand else 0,
        "line_buffer": taps if flags & DescFlag.CONV else 0,
        # a pool's words take the DW requantizer's chunks each
        "dw": 0 if flags & DescFlag.CONV else
        taps * (Requantizer(config.dw_lanes, 1, config.requant_lanes).chunks if pool else 1),
        "engine": pixels * d["mid_groups"] * d["out_groups"]
        + (in_pixels * d["exp_words"] * d["in_groups"] if expand else 0),
        "add": pixels * d["out_groups"] * add.chunks if flags & DescFlag.RESIDUAL else 0,
        "ddr_write": write,
    }


def _fill_transfers(config: AcceleratorConfig, d: dict) -> int:
    """Transfers of one pixel's expanded words into the line buffer (``exp_serializer``:
    up to a line-buffer word of ``P/8`` beats each, none across a word's end)."""
    grid = config.dw_lanes // BEAT_BYTES
    words = _WordBeats.stored(config, d["exp_groups"] * grid, d["exp_words"])
    phase = count = 0
    for _ in range(d["exp_words"]):
        beats = words.next()
        count += len(_cut(beats, phase, grid))
        phase = (phase + beats) % grid
    return count


def program_cycles(config: AcceleratorConfig | str, program, *,
                   memory: MemoryCycles = IDEAL,
                   base: int = 0) -> tuple[int, list[LayerEstimate]]:
    """Cycles of a whole :class:`dwsep.host.compiler.Program` as ``CYCLES`` counts them: the
    sum of its layers (each layer's ``NEXT`` leads straight to the next ``FETCH_CMD``, the
    last one's to ``IDLE``). ``base``: the address the program is linked at (see
    :func:`layer_cycles`). Returns ``(total, [LayerEstimate per descriptor])``."""
    held = held_tables(config, program.descriptors)
    layers = [layer_cycles(config, d, memory=memory, base=base, held=h)
              for d, h in zip(program.descriptors, held, strict=True)]
    return sum(e.total for e in layers), layers
