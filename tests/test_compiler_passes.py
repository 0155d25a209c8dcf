"""The compiler's passes, each run alone on a small graph (``host/compiler/__init__.py``):
matching (units found), slicing (channel slices and parts), emission (descriptors, blobs,
buffers, host steps), the engine's weight plan and the DDR plan (regions that never overlap
while live); each pure (its input left as it was) and checked by execution before and after:
the graph on the NumPy reference (``run_graph``) and the program completed from the pass's
output (:func:`finish`) on the ``reference`` device, bit-exact."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from dwsep.host import driver
from dwsep.host.compiler import (
    ALIGN,
    Emitted,
    Matched,
    Program,
    Sliced,
    compile_model,
    emit_descriptors,
    match_units,
    plan_engine_weights,
    plan_memory,
    plan_slices,
)
from dwsep.host.driver import Accelerator
from dwsep.host.graph import Graph
from dwsep.host.reference import run_graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import BlockSpec, MobileNetSpec, mobilenet_like_model
from dwsep.hw.config import AcceleratorConfig, get_config
from dwsep.hw.layout import ADDRESS_FIELDS, DESCRIPTOR, PREFETCH_SEGMENTS, DescFlag

TINY = get_config("tiny")
PYNQ_Z2 = get_config("pynq-z2")
#: a small mid memory and output tiles: the 80-channel head is stored in five parts, pooled
#: part by part, and the FC reads the pooled vector in two slices
SLICED = dataclasses.replace(TINY, name="tiny-sliced", mid_channels_max=72,
                             out_channels_max=16)
#: stem (PAD + 3x3 stride 2), a DW block with its residual ADD, an expanding block, one with
#: its residual, a 1x1 head, MEAN + FULLY_CONNECTED + RESHAPE
NET = MobileNetSpec(h=16, w=16, stem_channels=8,
                    blocks=(BlockSpec(1, 8, 1), BlockSpec(4, 12, 2), BlockSpec(3, 12, 1)),
                    head_channels=40, pool="MEAN", keep_dims=False, classes=10,
                    fc_per_channel=True, reshape=True, seed=3)
WIDE_HEAD = dataclasses.replace(NET, head_channels=80, classes=40)
CASES = [(TINY, NET), (PYNQ_Z2, NET), (SLICED, WIDE_HEAD)]
IDS = ["tiny", "pynq-z2-stem-s2d", "tiny-sliced-head"]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request) -> tuple[AcceleratorConfig, Graph]:
    cfg, spec = request.param
    return cfg, read_tflite(mobilenet_like_model(spec))


# ---- running the rest of the pipeline, and the program ------------------------------------

def finish(graph: Graph, cfg: AcceleratorConfig, *, matched: Matched | None = None,
           sliced: Sliced | None = None, emitted: Emitted | None = None,
           planned: bool = False) -> Program:
    """The program made from one pass's output by the passes after it (``compile_model``'s
    order): from ``matched`` (slicing on), ``sliced`` (emission on, with ``matched``),
    ``emitted`` (the engine's weight plan on; ``planned``: its jobs already placed)."""
    if emitted is None:
        matched = matched if matched is not None else match_units(graph, cfg)
        sliced = sliced if sliced is not None else plan_slices(graph, cfg, matched.units)
        emitted = emit_descriptors(graph, cfg, matched, sliced)
    if not planned:
        emitted = dataclasses.replace(emitted, jobs=plan_engine_weights(emitted.jobs, cfg))
    return plan_memory(graph, cfg, emitted)


def run_program(program: Program, graph: Graph, x: np.ndarray) -> np.ndarray:
    """``program``'s output for ``x`` on the ``reference`` device, through the driver (which
    is handed ``program`` instead of compiling ``graph``)."""
    with pytest.MonkeyPatch.context() as mp, Accelerator(program.config, "reference") as acc:
        mp.setattr(driver, "compile_model", lambda g, config: program)
        return acc.run(graph, x)


def check_by_execution(graph: Graph, program: Program, seed: int = 0) -> None:
    """``program`` computes what ``graph`` does: the program on the reference device and the
    graph on the NumPy reference ``run_graph`` (itself bit-exact with LiteRT), for a random
    input, give the same int8 output."""
    x = np.random.default_rng(seed).integers(-128, 128, graph.input.shape, np.int8)
    expected = run_graph(graph, x)
    got = run_program(program, graph, x)
    assert got.shape == expected.shape and np.array_equal(got, expected), program.summary()


def test_passes_are_compile_model(case):
    """The passes run by hand make the program ``compile_model`` makes, byte for byte."""
    cfg, g = case
    a, b = finish(g, cfg), compile_model(g, cfg)
    assert a.link(0) == b.link(0) and a.descriptors == b.descriptors and a.layers == b.layers


# ---- matching ----------------------------------------------------------------------------

def test_match_units(case):
    cfg, g = case
    m = match_units(g, cfg)
    stages = [u.stages for u in m.units]
    ops = [[op.index for op in u.ops] for u in m.units]
    assert stages[:4] == [["CONV", "PW"], ["DW", "PW", "RESIDUAL"], ["EXPAND", "DW", "PW"],
                          ["EXPAND", "DW", "PW", "RESIDUAL"]]
    assert ops[:5] == [[1, 0], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13]]
    if cfg is SLICED:   # the FC's 40 outputs are more than one tile: the pool runs alone
        assert stages[4:] == [["DW", "PW"], ["POOL", "PW"], ["DW", "PW", "RAW_OUT"]]
        assert ops[5:] == [[14], [15, 16]]
    else:
        assert stages[4:] == [["DW", "PW"], ["POOL", "PW", "RAW_OUT"]]
        assert ops[5:] == [[14, 15, 16]]
    # every operator in one unit, in order of the units' inputs being made
    assert sorted(i for o in ops for i in o) == list(range(len(g.operators)))
    made = {g.inputs[0]}
    for u in m.units:
        assert u.input in made and (u.residual is None or u.residual in made)
        made.add(u.output)
    # the model output is the FC's past the RESHAPE (a no-op), computed by the host
    fc, reshape = g.operators[-2:]
    assert g.outputs == reshape.outputs and m.output == fc.outputs[0]
    assert m.host == {m.output: len(m.units) - 1}
    # the stem by space-to-depth where 4 x 3 input channels fit the 16 DW lanes
    assert m.input_block == (2 if cfg is PYNQ_Z2 else 1)
    assert (m.units[0].stem is not None) == (cfg is PYNQ_Z2)
    assert all(u.slices is None for u in m.units)


def test_matched_units_run_bit_exact(case):
    cfg, g = case
    check_by_execution(g, finish(g, cfg, matched=match_units(g, cfg)))


def test_execution_sees_a_wrong_unit():
    """The check by execution fails for units that compute something else: here the stem's
    output zero point off by one."""
    g = read_tflite(mobilenet_like_model(NET))
    m = match_units(g, TINY)
    stem = dataclasses.replace(m.units[0], pw=dataclasses.replace(m.units[0].pw,
                                                                  zp=m.units[0].pw.zp + 1))
    wrong = dataclasses.replace(m, units=[stem, *m.units[1:]])
    with pytest.raises(AssertionError):
        check_by_execution(g, finish(g, TINY, matched=wrong))


# ---- slicing -----------------------------------------------------------------------------

def test_plan_slices_leaves_narrow_inputs_whole():
    g = read_tflite(mobilenet_like_model(NET))
    m = match_units(g, TINY)
    sliced = plan_slices(g, TINY, m.units)
    assert sliced.parts == {} and all(a is b for a, b in zip(sliced.units, m.units, strict=True))


def test_plan_slices_cuts_a_wide_head():
    """The 80-channel head is wider than ``out_channels_max`` = 16: stored in five parts of
    16 channels (its output tiles), each pooled alone; the pooled vector is one pixel, so
    the FC reads it where it lies in slices of ``mid_channels_max`` = 72 channels."""
    g = read_tflite(mobilenet_like_model(WIDE_HEAD))
    m = match_units(g, SLICED)
    before = copy.deepcopy(m.units)
    sliced = plan_slices(g, SLICED, m.units)
    head, pool, fc = sliced.units[-3:]
    parts = [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80)]
    assert sliced.parts == {head.output: parts}
    assert pool.slices == parts and fc.slices == [(0, 72), (72, 80)]
    assert all(u.slices is None for u in sliced.units[:-2])
    # pure: the matched units are as they were
    assert all(u.slices is None for u in m.units)
    assert [dataclasses.astuple(u.geo) for u in m.units] == [
        dataclasses.astuple(u.geo) for u in before]


def test_sliced_units_run_bit_exact(case):
    cfg, g = case
    m = match_units(g, cfg)
    check_by_execution(g, finish(g, cfg, matched=m, sliced=plan_slices(g, cfg, m.units)), 1)


# ---- emission ----------------------------------------------------------------------------

def _emit(cfg: AcceleratorConfig, g: Graph) -> tuple[Matched, Sliced, Emitted]:
    m = match_units(g, cfg)
    s = plan_slices(g, cfg, m.units)
    return m, s, emit_descriptors(g, cfg, m, s)


def test_emit_descriptors(case):
    cfg, g = case
    m, s, e = _emit(cfg, g)
    # each layer's descriptors: one per input slice and output tile, in order
    first = 0
    for r, u in zip(e.layers, s.units, strict=True):
        assert r["descriptors"] == [first, r["input_slices"] * r["tiles"]]
        assert r["input_slices"] == len(u.slices or [0])
        first += r["descriptors"][1]
    assert len(e.jobs) == first
    assert [j.fields["flags"] & DescFlag.LAST for j in e.jobs] == [0] * (first - 1) + [
        DescFlag.LAST]
    # every address field names a blob or a buffer; each blob's content is stored once
    blobs = dict(e.blobs)
    assert len({data for _, data in e.blobs}) == len(e.blobs)
    for job in e.jobs:
        assert set(job.refs) <= set(ADDRESS_FIELDS)
        for key, offset in job.refs.values():
            assert key in blobs or key in e.buffers, key
            assert offset % 8 == 0
        assert set(job.reads) | set(job.writes) <= set(e.buffers)
    # the model input and output, the host step's partial sums
    assert e.input_key in e.buffers and e.input.offset is None
    assert e.input.space_to_depth == m.input_block
    assert e.output == m.output and e.output_key is None   # the FC's output: host computed
    (step,) = e.host_steps
    assert step.kind == "fc_requant" and step.tensor == m.output
    partials = step.params["partials"]
    assert len(partials) == len(s.units[-1].slices or [0])
    assert all(k in e.buffers for k in partials)
    raw = [j for j in e.jobs if j.fields["flags"] & DescFlag.RAW_OUT]
    assert {j.refs["out_addr"][0] for j in raw} == set(partials)


def test_emitted_program_runs_bit_exact(case):
    cfg, g = case
    check_by_execution(g, finish(g, cfg, emitted=_emit(cfg, g)[2]), 2)


# ---- the engine's weight memory ------------------------------------------------------------

def test_plan_engine_weights(case):
    cfg, g = case
    e = _emit(cfg, g)[2]
    before = copy.deepcopy(e.jobs)
    jobs = plan_engine_weights(e.jobs, cfg)
    # pure: new jobs, the emitted ones as they were
    assert [(j.fields, j.refs) for j in e.jobs] == [(j.fields, j.refs) for j in before]
    assert all("pw_wbase" not in j.fields for j in e.jobs)
    depth = cfg.engine_weight_depth
    for i, job in enumerate(jobs):
        f = job.fields
        pw = (f["pw_wbase"], f["mid_groups"] * f["out_groups"])
        ranges = [pw]
        if f["flags"] & DescFlag.EXPAND:
            ranges.append((f["exp_wbase"], f["exp_words"] * f["in_groups"]))
        assert all(0 <= b <= depth - n for b, n in ranges)
        if len(ranges) == 2:   # the expand and PW weights apart
            (a, n), (b, k) = ranges
            assert a + n <= b or b + k <= a
        # a table the descriptor finds loaded was prefetched by the one before or is held
        for addr, words, base in PREFETCH_SEGMENTS:
            if f[words]:
                nxt = jobs[i + 1]
                fetched = job.refs[addr]
                table = "pw" if fetched == nxt.refs["pw_weights"] else "exp"
                assert fetched == nxt.refs[f"{table}_weights"]
                assert f[base] == nxt.fields[f"{table}_wbase"]
    assert any(j.fields["flags"] & DescFlag.PW_LOADED for j in jobs)


def _planned(cfg: AcceleratorConfig, g: Graph) -> Emitted:
    """The emitted descriptors with their engine weights placed."""
    e = _emit(cfg, g)[2]
    return dataclasses.replace(e, jobs=plan_engine_weights(e.jobs, cfg))


def test_planned_jobs_run_bit_exact(case):
    cfg, g = case
    check_by_execution(g, finish(g, cfg, emitted=_planned(cfg, g), planned=True), 3)


# ---- the DDR plan --------------------------------------------------------------------------

def _regions(prog: Program, emitted: Emitted) -> dict[object, tuple[int, int]]:
    """Each activation region's ``(start, end)`` in the image, from the descriptors that
    address it (the buffer keys are those of ``emitted``, in the same job order)."""
    out = {}
    for job, d in zip(emitted.jobs, prog.descriptors, strict=True):
        for name, (key, offset) in job.refs.items():
            if key in emitted.buffers:
                start = d[name] - offset
                out[key] = (start, start + emitted.buffers[key])
    return out


def test_plan_memory(case):
    cfg, g = case
    planned = _planned(cfg, g)
    prog = plan_memory(g, cfg, planned)
    n = len(prog.descriptors)
    assert n == len(planned.jobs) and prog.layers == planned.layers
    # descriptors at 0, then the blobs, then the activations: every region aligned, apart
    blobs = sorted((b.offset, b.offset + len(b.data)) for b in prog.blobs)
    assert blobs[0][0] == -(-n * DESCRIPTOR.size // ALIGN) * ALIGN
    assert all(a % ALIGN == 0 for a, _ in blobs)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(blobs, blobs[1:], strict=False))
    regions = _regions(prog, planned)
    assert all(start % ALIGN == 0 and start >= blobs[-1][1] and end <= prog.size
               for start, end in regions.values())
    # two buffers share bytes only if one is dead before the other is first touched
    live = {}
    for i, job in enumerate(planned.jobs):
        for key in job.reads + job.writes:
            first, _ = live.get(key, (i, i))
            live[key] = (first, i)
    pinned = {planned.input_key, *planned.host_steps[0].params["partials"]}
    for key in pinned:
        live[key] = (-1, n)
    for a, (sa, ea) in regions.items():
        for b, (sb, eb) in regions.items():
            if a != b and sa < eb and sb < ea:
                assert live[a][1] < live[b][0] or live[b][1] < live[a][0], (a, b)
    assert prog.input.offset == regions[planned.input_key][0]
    assert prog.output_step.params["partials"] == [
        regions[k][0] for k in planned.host_steps[0].params["partials"]]


def test_program_runs_bit_exact(case):
    cfg, g = case
    check_by_execution(g, compile_model(g, cfg), 4)
