"""Pass 4 and 5, planning: :func:`plan_engine_weights` places each descriptor's expand and
PW weights in the engine's weight memory (what is held, prefetched or loaded);
:func:`plan_memory` lays out the DDR image and links the descriptors into the
:class:`.program.Program`.

DDR plan (offsets relative to the base address given to :meth:`.program.Program.link`, each
region 64-byte aligned): descriptors at 0, then the weight and table blobs (identical blobs
stored once), then the activation buffers; a buffer is reused once the tensor it held is
dead.
"""

from __future__ import annotations

from dataclasses import replace

from ...hw.config import AcceleratorConfig
from ...hw.layout import ADDRESS_FIELDS, DESCRIPTOR, PREFETCH_SEGMENTS, DescFlag
from ..graph import Graph
from .emit import Emitted, Job
from .program import Blob, HostStep, Program, align, tensor_info


def plan_engine_weights(jobs: list[Job], cfg: AcceleratorConfig) -> list[Job]:
    """``jobs`` with each descriptor's expand and PW weights placed in the engine's weight
    memory (``exp_wbase``, ``pw_wbase``) so that the next descriptor's go where this one's
    are not, and read while this one runs (its prefetch segments; the next is flagged
    ``EXP_LOADED``/``PW_LOADED``).

    A table already in the memory (same blob, not overwritten since) is used where it is
    (flagged loaded, no read). Otherwise it is prefetched if the previous descriptor has a
    free segment and the words fit beside the previous descriptor's tables and this one's;
    else the controller loads it before the run,
    anywhere apart from this descriptor's other table. Descriptors alternate between the
    two ends of the memory (a descriptor near the bottom places the next one's tables
    from the top down), which leaves the next one the largest gap.

    Returns new jobs; ``jobs`` are left as they are.
    """
    depth = cfg.engine_weight_depth
    jobs = [replace(job, fields=dict(job.fields), refs=dict(job.refs)) for job in jobs]
    for job in jobs:
        job.fields.update(dict.fromkeys(("exp_wbase", "pw_wbase", *(
            n for _, words, base in PREFETCH_SEGMENTS for n in (words, base))), 0))
    resident: dict[tuple, int] = {}   # (region key, offset, words) -> first word
    prev, prev_ranges = None, []

    for job in jobs:
        f = job.fields
        tables = [("pw", DescFlag.PW_LOADED, f["mid_groups"] * f["out_groups"])]
        if f["flags"] & DescFlag.EXPAND:
            tables.append(("exp", DescFlag.EXP_LOADED, f["exp_words"] * f["in_groups"]))
        tables.sort(key=lambda t: -t[2])
        ident = {name: (*job.refs[f"{name}_weights"], words) for name, _, words in tables}
        # the previous descriptor's free prefetch segments
        free = ([] if prev is None
                else [seg for seg in PREFETCH_SEGMENTS if not prev.fields[seg[1]]])
        low = bool(prev_ranges) and min(b for b, _ in prev_ranges) < depth - max(
            b + n for b, n in prev_ranges)
        # a table held where the other one cannot fit beside it is loaded again
        room = len(free)
        held = {name: resident[i] for name, i in ident.items() if i in resident}
        mine, plan = (_place_tables(depth, tables, held, room, prev_ranges, low)
                      or _place_tables(depth, tables, {}, room, prev_ranges, low))
        for name, flag, words, base, how in plan:
            f[f"{name}_wbase"] = base
            if how != "load":
                f["flags"] |= flag
            if how == "prefetch":
                seg_addr, seg_words, seg_base = free.pop(0)
                prev.fields.update({seg_words: words, seg_base: base})
                prev.refs[seg_addr] = job.refs[f"{name}_weights"]
            if how != "held":
                resident = {k: b for k, b in resident.items()
                            if b + k[-1] <= base or base + words <= b}
                resident[ident[name]] = base
        prev, prev_ranges = job, mine
    return jobs


def _place_tables(depth: int, tables: list[tuple], held: dict[str, int], room: int,
                  prev_ranges: list[tuple[int, int]], from_top: bool):
    """``(ranges, [(name, flag, words, base, how)])`` of one descriptor's engine tables
    (``how``: "held" at ``held[name]``, "prefetch" apart from ``prev_ranges`` while ``room``
    segments last, or "load"), or ``None`` if a table to load finds no room."""
    mine = [(held[name], words) for name, _, words in tables if name in held]
    plan = [(name, flag, words, held[name], "held")
            for name, flag, words in tables if name in held]
    for name, flag, words in tables:
        if name in held:
            continue
        base, how = None, "prefetch"
        if sum(p[-1] == "prefetch" for p in plan) < room:
            base = _fit(depth, words, prev_ranges + mine, from_top)
        if base is None:
            base, how = _fit(depth, words, mine, False), "load"
        if base is None:
            return None
        mine.append((base, words))
        plan.append((name, flag, words, base, how))
    return mine, plan


def _fit(depth: int, words: int, avoid: list[tuple[int, int]], from_top: bool) -> int | None:
    """The lowest (``from_top``: highest) first word of ``words`` words in ``0..depth`` apart
    from the ranges ``avoid`` (``(first, words)``), or ``None``."""
    starts = sorted({0, depth - words} | {b + n for b, n in avoid}
                    | {b - words for b, _ in avoid}, reverse=from_top)
    for at in starts:
        if 0 <= at <= depth - words and all(at + words <= b or b + n <= at for b, n in avoid):
            return at
    return None


# ---- DDR plan ---------------------------------------------------------------------------------

def _plan_buffers(jobs: list[Job], sizes: dict[object, int], pinned: set) -> dict[object, int]:
    """Offsets (relative to the start of the activation area) of the buffers: a buffer lives
    from the first descriptor that touches it to the last; a dead buffer's space is reused
    (first fit). ``pinned`` buffers live for the whole program (model input and outputs,
    host-step inputs)."""
    first: dict[object, int] = {}
    last: dict[object, int] = {}
    for i, job in enumerate(jobs):
        for key in job.reads + job.writes:
            first.setdefault(key, i)
            last[key] = i
    for key in sizes:
        if key in pinned:
            first[key], last[key] = -1, len(jobs)
        first.setdefault(key, -1)
        last.setdefault(key, -1)
    live: list[tuple[int, int, object]] = []  # (offset, size, key)
    offsets: dict[object, int] = {}
    for key in sorted(sizes, key=lambda k: (first[k], str(k))):
        live = [entry for entry in live if last[entry[2]] >= first[key]]
        size = align(max(sizes[key], 1))
        at = 0
        for offset, used, _ in sorted(live):
            if at + size <= offset:
                break
            at = max(at, offset + used)
        offsets[key] = at
        live.append((at, size, key))
    return offsets


def plan_memory(graph: Graph, cfg: AcceleratorConfig, emitted: Emitted) -> Program:
    """Lay out the DDR image of ``emitted`` (descriptors, blobs, activation buffers reused
    once dead) and link: the :class:`.program.Program` with every address field an offset
    in the image.

    Raises
    ------
    ValueError
        A descriptor field out of its range (the layout's message).
    """
    jobs = emitted.jobs
    pinned = {emitted.input_key} | {k for s in emitted.host_steps for k in s.params["partials"]}
    if emitted.output_key is not None:
        pinned.add(emitted.output_key)
    act = _plan_buffers(jobs, emitted.buffers, pinned)
    offsets: dict[object, int] = {}
    offset = align(len(jobs) * DESCRIPTOR.size)
    blobs = []
    for name, data in emitted.blobs:
        offsets[name] = offset
        blobs.append(Blob(name, offset, data))
        offset = align(offset + len(data))
    for key, rel in act.items():
        offsets[key] = offset + rel
    size = offset + max((rel + align(max(emitted.buffers[k], 1)) for k, rel in act.items()),
                        default=0)
    descriptors = []
    for job in jobs:
        f = dict(job.fields, **dict.fromkeys(ADDRESS_FIELDS, 0))
        for name, (key, extra) in job.refs.items():
            f[name] = offsets[key] + extra
        descriptors.append(f)

    steps = [HostStep(s.kind, s.tensor, s.layer,
                      dict(s.params, partials=[offsets[k] for k in s.params["partials"]]))
             for s in emitted.host_steps]
    output_step = next((s for s in steps if s.tensor == emitted.output), None)
    output_offset = None if output_step else offsets[emitted.output_key]
    program = Program(
        config=cfg, descriptors=descriptors, blobs=blobs,
        input=replace(emitted.input, offset=offsets[emitted.input_key]),
        output=tensor_info(graph, emitted.output, graph.outputs[0], cfg.dw_lanes,
                           output_offset),
        size=size, layers=emitted.layers, host_steps=steps, output_step=output_step)
    program.descriptor_bytes(0)  # every field in range (raises ValueError otherwise)
    return program
