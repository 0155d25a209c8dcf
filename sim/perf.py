"""Analytical cycle model of the accelerator (``hw/top.py``): cycles per layer and per program,
derived from the documented rates and latencies of the blocks and of the memory.

Cycle counts are those of the ``CYCLES`` register: every cycle the controller is not ``IDLE``.
A layer runs through the controller states

``FETCH_CMD -> FETCH_DATA -> SIZES -> CHECK -> 4 x (LOAD_CMD -> LOAD_DATA -> LOAD_FLUSH) ->
RUN_START -> RUN_CMDS -> RUN_WAIT -> NEXT``

and the model adds their lengths. Times inside a layer are cycle indices counted from the
layer's ``FETCH_CMD`` cycle (0). Every term names the block constant it comes from, so the
model follows the hardware when a latency changes.

Memory: the terms marked *mem* are those of the memory; :data:`AXI_RAM` holds the values
measured on cocotbext-axi ``AxiRam`` (the ``rtl`` backend's DDR) without backpressure:

* an AR handshake in cycle ``t`` gives the first R handshake in ``t + 2``, the beats of
  consecutive bursts then follow one per cycle with no gap (``AxiRam`` queues two ARs and two
  R beats);
* the last W handshake of a burst in cycle ``t`` gives the B handshake in ``t + 2``; W is
  taken one beat per cycle.

Both DMAs keep four bursts in flight, so with these latencies (and any read latency up to
``DMAReader``'s documented 47 cycles) each DMA moves one beat per cycle.

Accuracy: without backpressure the run is deterministic, and the model equals the ``CYCLES``
register of the Verilated design exactly on every layer measured (``tests/test_perf.py``; 55
layers with k 1..7, stride 1/2, dilation 1/2, m 1/2, H, W 4..39, C and C_out 1..64, DW-, PW-
and read-bound). It does not model AXI backpressure (random pauses only add cycles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dwsep.hw.config import BEAT_BYTES, AcceleratorConfig, get_config
from dwsep.hw.dma_reader import DMAReader
from dwsep.hw.dma_writer import DMAWriter
from dwsep.hw.dw_array import DepthwiseArray
from dwsep.hw.layout import DESCRIPTOR, DescFlag
from dwsep.hw.line_buffer import LineBuffer
from dwsep.hw.pw_array import TREE_LEVELS_PER_STAGE
from dwsep.hw.requant import Requantizer

__all__ = ["MemoryTiming", "AXI_RAM", "LayerEstimate", "layer_cycles", "program_cycles",
           "layer_macs", "ideal_cycles", "pw_latency", "LOADS"]

#: the four per-layer tables in the controller's load order, with their word sizes in bytes
#: as functions of ``(P, Q)`` (docs/ARCHITECTURE.md, "Data formats in DDR")
LOADS = {
    "dw_weights": lambda P, Q: P,
    "dw_table": lambda P, Q: 9 * P,
    "pw_weights": lambda P, Q: P * Q,
    "pw_table": lambda P, Q: 9 * Q,
}


@dataclass(frozen=True)
class MemoryTiming:
    """Latencies of the AXI4 subordinate (cycle 0 is the first handshake named).

    Parameters
    ----------
    read:
        AR handshake -> first R handshake of that burst.
    write_response:
        Last W handshake of a burst -> its B handshake.
    """
    read: int = 2
    write_response: int = 2


#: cocotbext-axi ``AxiRam`` without backpressure (measured, see the module docstring)
AXI_RAM = MemoryTiming(read=2, write_response=2)


@dataclass
class LayerEstimate:
    """Cycle breakdown of one layer (one descriptor).

    Attributes
    ----------
    fetch:
        ``FETCH_CMD`` .. ``CHECK``: the descriptor read and the two size cycles.
    loads:
        Cycles of each table load (``LOAD_CMD`` .. ``LOAD_FLUSH``), in load order.
    run:
        ``RUN_START`` .. ``NEXT``: the streamed layer.
    fill:
        Of ``run``: cycles before the first tap leaves the line buffer (commands, memory
        latency, the input rows the first output row needs).
    drain:
        Of ``run``: cycles after the last tap leaves the line buffer (DW, requant, PW,
        requant, serializer, write response, ``NEXT``).
    stage_cycles:
        Work of each stage in cycles at its declared rate: ``"read"`` input beats (one per
        cycle), ``"dw"`` taps (one per cycle), ``"pw"`` ``(og, q)`` steps (one per cycle),
        ``"write"`` output beats (one per cycle).
    bottleneck:
        The stage with the most work (the first in pipeline order on a tie): it sets the
        pace of the run phase.
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
    total: int = field(init=False)

    def __post_init__(self):
        self.total = self.fetch + sum(self.loads.values()) + self.run


def pw_latency(config: AcceleratorConfig) -> int:
    """``PointwiseArray.latency`` for ``config`` without building the component: read 1,
    multiply 1, adder tree ``ceil(ceil(log2 P) / TREE_LEVELS_PER_STAGE)``, accumulate 1."""
    levels = (config.pw_rows - 1).bit_length()
    return 3 + -(-levels // TREE_LEVELS_PER_STAGE)


def layer_macs(config: AcceleratorConfig | str, desc: dict) -> dict[str, int]:
    """MACs the arrays perform for one layer, padded lanes included (the compiler's
    ``Program.layers[i]["macs"]`` counts the model's true channels):
    ``dw = out_h*out_w * mid_groups*P * k*k`` and ``pw = out_h*out_w * mid_groups*P *
    out_groups*Q``."""
    config = get_config(config)
    pixels = desc["out_h"] * desc["out_w"]
    mid = desc["mid_groups"] * config.dw_lanes
    return {"dw": pixels * mid * desc["kernel"] ** 2,
            "pw": pixels * mid * desc["out_groups"] * config.pw_cols}


def ideal_cycles(macs: int, config: AcceleratorConfig | str) -> float:
    """``macs / config.macs`` (DW lanes + expand array + PW array): cycles if every MAC unit
    did useful work every cycle."""
    return macs / get_config(config).macs


def _read_cycles(beats: int, mem: MemoryTiming) -> int:
    """Cycles from a read command's handshake to the cycle its last beat is on the reader's
    ``data`` output: ``CMD_TO_AR`` to the first AR, the memory's read latency, ``R_TO_DATA``,
    then one beat per cycle (bursts back to back)."""
    return DMAReader.CMD_TO_AR + mem.read + DMAReader.R_TO_DATA + beats - 1


def _fetch_cycles(mem: MemoryTiming) -> int:
    """``FETCH_CMD`` (1, the reader takes the command at once) + ``FETCH_DATA`` (until the
    last descriptor beat is on ``data``) + ``SIZES`` (1) + ``CHECK`` (1)."""
    return 1 + _read_cycles(DESCRIPTOR.size // BEAT_BYTES, mem) + 2


def _load_cycles(beats: int, mem: MemoryTiming) -> int:
    """``LOAD_NEXT`` (1, the table is needed) + ``LOAD_CMD`` (1) + ``LOAD_DATA`` (until the
    last beat is on ``data``) + ``LOAD_FLUSH`` (1, the last word's write)."""
    return 1 + 1 + _read_cycles(beats, mem) + 1


#: tables of hw.top.Load a DW + PW layer does not load (``LOAD_NEXT`` skips each in a cycle)
_SKIPPED_TABLES = 2  # EXP_WEIGHTS, EXP_TABLE
_MODELLED_FLAGS = DescFlag.LAST


def _table_beats(config: AcceleratorConfig, desc: dict) -> dict[str, int]:
    """Beats of each table load: words x word bytes / 8, with words ``mid_groups*k*k`` (DW
    weights), ``mid_groups`` (DW table), ``mid_groups*out_groups`` (PW weights),
    ``out_groups`` (PW table), as ``CHECK`` computes them."""
    P, Q = config.dw_lanes, config.pw_cols
    words = {"dw_weights": desc["mid_groups"] * desc["kernel"] ** 2,
             "dw_table": desc["mid_groups"],
             "pw_weights": desc["mid_groups"] * desc["out_groups"],
             "pw_table": desc["out_groups"]}
    return {name: words[name] * LOADS[name](P, Q) // BEAT_BYTES for name in LOADS}


class _Fill:
    """Completion cycles of the input rows in the line buffer.

    Beats arrive from ``t_data`` (the first beat on the reader's ``data``) at one per cycle.
    The line buffer takes a beat of row ``y`` only while ``y < lb_rows`` or ``y < top +
    lb_rows`` (``top`` of the output row whose taps are being generated, updated in the cycle
    after the previous row's last tap issues) or after the last tap: so row ``y`` starts no
    earlier than ``allow(y)`` and the beats of a row follow each other without a gap. Row
    ``y`` is complete in cycle ``done(y) = max(done(y-1), allow(y) - 1) + beats_per_row``
    (with ``done(-1) = t_data - 1``).
    """

    def __init__(self, t_data: int, beats_per_row: int, lb_rows: int):
        self.beats_per_row = beats_per_row
        self.lb_rows = lb_rows
        self.done = [t_data - 1]  # done[y + 1]: cycle the last beat of row y is taken

    def complete(self, y: int, allow) -> int:
        while len(self.done) <= y + 1:
            row = len(self.done) - 1
            start = self.done[-1] if row < self.lb_rows else max(self.done[-1],
                                                                 allow(row) - 1)
            self.done.append(start + self.beats_per_row)
        return self.done[y + 1]


def _run_phase(config: AcceleratorConfig, d: dict, t_cmds: int, mem: MemoryTiming):
    """Cycles of the run phase; ``t_cmds`` is the ``RUN_CMDS`` cycle, in which both DMAs
    take their commands. Returns ``(end, first_tap, last_tap)``, ``end`` being the last
    ``RUN_WAIT`` cycle.

    1. Input: the first beat is on the reader's ``data`` in ``t_cmds + CMD_TO_AR + mem.read
       + R_TO_DATA``, then one per cycle; rows complete as :class:`_Fill` says.
    2. Taps, per output row ``oy`` (``top = oy*s - pad_top``): the line buffer issues the
       row's ``out_w*mid_groups*k*k`` taps one per cycle from ``start(oy) = max(end(oy-1) +
       1, done(need - 1) + 1)``, ``need = min(top + (k-1)*d + 1, in_h)`` rows (its row
       check sees a row in the cycle after its last beat).
    3. A pixel-group's DW word reaches the PW array ``LineBuffer.LATENCY +
       DepthwiseArray.LATENCY + Requantizer.LATENCY`` cycles after its last tap issues; a
       pixel is full the cycle after its last word. The PW array reduces pixel ``p`` from
       ``R(p) = max(full(p), R(p-1) + S)`` for ``S = out_groups*mid_groups`` steps (one per
       cycle; the ping-pong buffer fills the next pixel meanwhile, and when the PW array is
       the bottleneck it holds the DW side back without ever starving itself, as
       ``mid_groups*k*k <= S`` then).
    4. Output group ``j`` of pixel ``p`` leaves the PW array in ``R(p) + (j+1)*mid_groups -
       1 + latency`` and the PW requantizer ``Requantizer.LATENCY`` later; the serializer
       takes a word when it is offered and the previous word's ``Q/8`` beats are leaving:
       ``a(w) = max(offered(w), a(w-1) + Q/8)``; its beats leave in ``a+1 .. a+Q/8``.
    5. W carries a beat ``DATA_TO_W`` after the serializer; the last B comes
       ``mem.write_response`` after the last W, and the writer is idle ``B_TO_IDLE`` later.
       ``RUN_WAIT`` ends in that cycle (the reader and the line buffer finish earlier unless
       input rows no window reaches are still being read: then two cycles after the last
       fill beat, the reader's output register and the line buffer's ``busy``).
    """
    P, Q = config.dw_lanes, config.pw_cols
    k, s, dil = d["kernel"], d["stride"], d["dilation"]
    mid, og = d["mid_groups"], d["out_groups"]
    out_h, out_w, in_h = d["out_h"], d["out_w"], d["in_h"]
    span = (k - 1) * dil + 1
    taps_word = k * k
    taps_row = out_w * mid * taps_word
    beats_per_row = d["in_w"] * d["in_groups"] * P // BEAT_BYTES
    t_data = t_cmds + DMAReader.CMD_TO_AR + mem.read + DMAReader.R_TO_DATA
    fill = _Fill(t_data, beats_per_row, config.lb_rows)

    tops = [oy * s - d["pad_top"] for oy in range(out_h)]
    row_end: list[int] = []

    def allow(y: int) -> int:
        # first output row whose top lets row y in: its top is live the cycle after the
        # previous row's last tap issued
        for oy in range(out_h):
            if tops[oy] + config.lb_rows > y:
                return row_end[oy - 1] + 1 if oy else 0
        return row_end[-1] + 1  # after the last tap (gen_done)

    dw_to_pw = LineBuffer.LATENCY + DepthwiseArray.LATENCY + Requantizer.LATENCY
    S = og * mid
    l_pw = pw_latency(config)
    ser_beats = Q // BEAT_BYTES
    reduce_start = None
    ser_accept = -math.inf
    first_tap = None
    for oy in range(out_h):
        need = min(tops[oy] + span, in_h)
        start = row_end[-1] + 1 if row_end else 0
        if need > 0:
            start = max(start, fill.complete(need - 1, allow) + 1)
        row_end.append(start + taps_row - 1)
        first_tap = start if first_tap is None else first_tap
        for ox in range(out_w):
            last_tap = start + (ox + 1) * mid * taps_word - 1
            full = last_tap + dw_to_pw + 1
            reduce_start = full if reduce_start is None else max(full, reduce_start + S)
            for j in range(og):
                offered = reduce_start + (j + 1) * mid - 1 + l_pw + Requantizer.LATENCY
                ser_accept = max(offered, ser_accept + ser_beats)
    last_w = ser_accept + ser_beats + DMAWriter.DATA_TO_W
    end = last_w + mem.write_response + DMAWriter.B_TO_IDLE
    last_fill = fill.complete(in_h - 1, allow)
    end = max(end, last_fill + 2)
    return end, first_tap, row_end[-1]


def layer_cycles(config: AcceleratorConfig | str, desc: dict, *,
                 mem_latency: MemoryTiming = AXI_RAM) -> LayerEstimate:
    """Cycles of one ``DWSEP`` layer from its ``FETCH_CMD`` cycle to the next layer's
    ``FETCH_CMD`` (or ``IDLE``), without AXI backpressure.

    Parameters
    ----------
    config:
        The accelerator (named config or object).
    desc:
        Descriptor field values (``Program.descriptors`` entries; addresses unused).
    mem_latency:
        Memory latencies (default: cocotbext-axi ``AxiRam``).

    ``total = fetch + sum(loads) + run`` with

    * ``fetch = 1 + (CMD_TO_AR + mem.read + R_TO_DATA + DESCRIPTOR.size/8 - 1) + 2``;
    * ``load(n beats) = 2 + (CMD_TO_AR + mem.read + R_TO_DATA + n - 1) + 1`` for each table,
      plus one ``LOAD_NEXT`` cycle per skipped table (the two expand tables) and a last one;
    * ``run = RUN_START (1) + RUN_CMDS (1) + RUN_WAIT + NEXT (1)``, ``RUN_WAIT`` from the
      pipeline recurrences of :func:`_run_phase`.
    """
    config = get_config(config)
    if desc.get("flags", 0) & ~_MODELLED_FLAGS:
        raise NotImplementedError(
            f"the cycle model covers DW + PW layers; flags "
            f"{DescFlag(desc['flags'] & ~_MODELLED_FLAGS)!r} are not modelled yet")
    fetch = _fetch_cycles(mem_latency)
    loads = {name: _load_cycles(beats, mem_latency)
             for name, beats in _table_beats(config, desc).items()}
    # LOAD_NEXT: one cycle per skipped table, and one finding no table left
    loads["skipped"] = _SKIPPED_TABLES + 1
    t_run_start = fetch + sum(loads.values())
    t_cmds = t_run_start + 1
    end, first_tap, last_tap = _run_phase(config, desc, t_cmds, mem_latency)
    total_end = end + 2  # NEXT, then the next layer's FETCH_CMD (or IDLE)
    pixels = desc["out_h"] * desc["out_w"]
    stage_cycles = {
        "read": desc["in_h"] * desc["in_w"] * desc["in_groups"] * config.dw_lanes // BEAT_BYTES,
        "dw": pixels * desc["mid_groups"] * desc["kernel"] ** 2,
        "pw": pixels * desc["mid_groups"] * desc["out_groups"],
        "write": desc["out_h"] * desc["out_w"] * desc["out_groups"] * config.pw_cols
        // BEAT_BYTES,
    }
    bottleneck = max(stage_cycles, key=stage_cycles.get)
    return LayerEstimate(fetch=fetch, loads=loads, run=total_end - t_run_start,
                         fill=first_tap + LineBuffer.LATENCY - t_run_start,
                         drain=total_end - (last_tap + LineBuffer.LATENCY) - 1,
                         stage_cycles=stage_cycles, bottleneck=bottleneck)


def program_cycles(config: AcceleratorConfig | str, program, *,
                   mem_latency: MemoryTiming = AXI_RAM) -> tuple[int, list[LayerEstimate]]:
    """Cycles of a whole :class:`dwsep.host.compiler.Program` as ``CYCLES`` counts them: the
    sum of its layers (each layer's ``NEXT`` leads straight to the next ``FETCH_CMD``, the
    last one's to ``IDLE``). Returns ``(total, [LayerEstimate per descriptor])``."""
    layers = [layer_cycles(config, d, mem_latency=mem_latency) for d in program.descriptors]
    return sum(e.total for e in layers), layers
