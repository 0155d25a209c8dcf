# amaranth: UnusedElaboratable=no
"""The 1x1 engine (expand and project jobs on one array) against its NumPy model
(``sim/models/engine.py``): random interleaved E and J pixels under random valid/ready, a
simulated expand FIFO returning credits, J-only layers, and the scheduler's timing on a
deterministic case."""

from __future__ import annotations

import dataclasses
import random
import sys

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from helpers import PYNQ_Z2, TINY, random_int8

from dwsep.hw.config import get_config
from dwsep.hw.engine import EXPAND, PROJECT, Engine
from dwsep.sim.models.engine import engine_model, pack_engine_weights
from dwsep.sim.streams import run_sim, send_all

# TINY: R = C = 8; PYNQ_Z2: R = 16, C = 24
WIDE = dataclasses.replace(TINY, name="wide", pw_cols=16)       # R = 8, C = 16
# pynq-z2's 16 x 24 array with small memories (fast to simulate)
PYNQ_SMALL = dataclasses.replace(PYNQ_Z2, name="pynq-small", mid_channels_max=128,
                                 out_channels_max=96, expand_channels_max=64,
                                 engine_weight_words=None)
# a 16 x 16 array with pynq-z2's lanes and small memories (fast to simulate)
LANES16 = dataclasses.replace(PYNQ_Z2, name="lanes16", pw_cols=16,
                              mid_channels_max=128, out_channels_max=64,
                              expand_channels_max=64, engine_weight_words=None,
                              engine_requant_lanes=None, engine_requant_lut_lanes=0)


def random_weights(rng: np.random.Generator, shape) -> np.ndarray:
    """Weights in the packed products' range -127..127, both extremes present."""
    a = rng.integers(-127, 128, size=shape, dtype=np.int8)
    flat = a.reshape(-1)
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = -127
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = 127
    return a


async def load_weights(ctx, dut, layer):
    """Both kinds' weight words through the write port, one word a cycle, from the layer's
    bases."""
    for base, side in ((layer.e_base, layer.e), (layer.j_base, layer.j)):
        for addr, word in enumerate(pack_engine_weights(side.w)):
            ctx.set(dut.wr.addr, base + addr)
            ctx.set(dut.wr.data.as_value(), word)
            ctx.set(dut.wr.en, 1)
            await ctx.tick()
    ctx.set(dut.wr.en, 0)


@dataclasses.dataclass
class Side:
    """One kind's operands in one layer."""
    in_groups: int
    out_groups: int
    x: np.ndarray
    w: np.ndarray

    @property
    def inputs(self) -> list[list[int]]:
        return [word.tolist() for pixel in self.x for word in pixel]

    @property
    def expected(self) -> list[tuple[list[int], int]]:
        return engine_model(self.x, self.w) if len(self.x) else []


class Layer:
    def __init__(self, config, seed: int, e: tuple[int, int, int], j: tuple[int, int, int],
                 e_on: bool = True):
        R, C = config.dw_lanes, config.pw_cols
        rng = np.random.default_rng(seed)

        def side(in_g, out_g, pixels):
            return Side(in_g, out_g, random_int8(rng, (pixels, in_g, R)),
                        random_weights(rng, (out_g, in_g, R, C)))

        self.e, self.j, self.e_on = side(*e), side(*j), e_on
        assert e_on or not len(self.e.x)
        # the two tables apart, anywhere in the weight memory, either one first
        sizes = [self.e.in_groups * self.e.out_groups, self.j.in_groups * self.j.out_groups]
        slack = config.engine_weight_depth - sum(sizes)
        first = int(rng.integers(0, slack + 1))
        second = first + sizes[0] + int(rng.integers(0, slack - first + 1))
        if rng.integers(2):
            self.e_base, self.j_base = first, second
        else:
            self.j_base, self.e_base = first, first + sizes[1] + (second - first - sizes[0])


async def setup_layer(ctx, dut, layer: Layer) -> None:
    """Set the counts, pulse ``start``, write both weight regions (one word per cycle)."""
    ctx.set(dut.e_in_groups, layer.e.in_groups)
    ctx.set(dut.e_out_groups, layer.e.out_groups)
    ctx.set(dut.j_in_groups, layer.j.in_groups)
    ctx.set(dut.j_out_groups, layer.j.out_groups)
    ctx.set(dut.e_on, layer.e_on)
    ctx.set(dut.e_wbase, layer.e_base)
    ctx.set(dut.j_wbase, layer.j_base)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    await load_weights(ctx, dut, layer)


def word_of(payload, cols: int) -> tuple[int, list[int], int]:
    return payload.kind, [payload.acc[o] for o in range(cols)], payload.group


def run_layers(config, layers: list[Layer], *, seed: int, p_e: float, p_j: float,
               p_out: float, p_drain: float, e_credits: int | None = None,
               abort: bool = False, j_group_base: int = 0):
    """Run ``layers`` back to back. The consumer of ``o`` models the expand FIFO of
    ``e_credits`` words: each expand word taken enters it (it must never overflow), one
    word leaves in a cycle with probability ``p_drain`` and pulses ``e_free``. Returns,
    per layer, ``{kind: [(acc, group), ...]}`` in arrival order and the FIFO's peak.

    With ``abort``, a layer is first left stuck (an E job of ``mid_groups_max`` groups
    issued, credit used up, J and E halves full, words in flight, an untaken ``o`` word)
    and ``start`` must clear it all."""
    dut = Engine(config, e_credits=e_credits, j_group_base=j_group_base)
    cap = dut.e_credits
    rng = random.Random(seed)
    ready: list[Layer] = []   # layers whose weights are loaded
    results: list[dict] = []
    peak = [0]

    async def control(ctx):
        if abort:
            for port, value in ((dut.e_in_groups, 1), (dut.e_out_groups, config.mid_groups_max),
                                (dut.j_in_groups, 1), (dut.j_out_groups, 2), (dut.e_on, 1),
                                (dut.start, 1)):
                ctx.set(port, value)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for port in (dut.e, dut.j):
                ctx.set(port.valid, 1)
                ctx.set(port.payload, [-128] * config.dw_lanes)
            ctx.set(dut.o.ready, 1)
            # J words in cycles 1, 2 and 9..: J jobs in 2..5, then the E job from 6
            await ctx.tick().repeat(2)
            ctx.set(dut.j.valid, 0)
            await ctx.tick().repeat(6)
            ctx.set(dut.j.valid, 1)
            await ctx.tick().repeat(4)
            ctx.set(dut.o.ready, 0)
            await ctx.tick().repeat(30)
            assert ctx.get(dut.o.valid)
            assert not ctx.get(dut.e.ready) and not ctx.get(dut.j.ready)
            for port in (dut.e, dut.j):
                ctx.set(port.valid, 0)
        for n, layer in enumerate(layers):
            await setup_layer(ctx, dut, layer)
            ready.append(layer)
            while len(results) <= n:
                await ctx.tick()

    def source(port, kind, p_stall):
        async def bench(ctx):
            for n, layer in enumerate(layers):
                while len(ready) <= n:
                    await ctx.tick()
                side = layer.e if kind == EXPAND else layer.j
                await send_all(ctx, port, side.inputs, rng=rng, p_stall=p_stall)
                while len(results) <= n:
                    await ctx.tick()
        return bench

    async def consumer(ctx):
        for n, layer in enumerate(layers):
            while len(ready) <= n:
                await ctx.tick()
            want = {EXPAND: len(layer.e.expected), PROJECT: len(layer.j.expected)}
            got = {EXPAND: [], PROJECT: []}
            fifo = 0
            while any(len(got[k]) < want[k] for k in got) or fifo:
                take = rng.random() >= p_out
                pop = fifo > 0 and rng.random() < p_drain
                ctx.set(dut.o.ready, take)
                ctx.set(dut.e_free, pop)
                *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid and take:
                    kind, acc, group = word_of(payload, config.pw_cols)
                    got[kind].append((acc, group))
                    assert len(got[kind]) <= want[kind], f"extra kind-{kind} word"
                    if kind == EXPAND:
                        fifo += 1   # counted before this cycle's pop: strict
                        assert fifo <= cap, f"expand FIFO overflow ({fifo} > {cap} words)"
                        peak[0] = max(peak[0], fifo)
                fifo -= pop
            ctx.set(dut.o.ready, 0)
            ctx.set(dut.e_free, 0)
            results.append(got)

    cycles = sum(len(pack_engine_weights(ly.e.w)) + len(pack_engine_weights(ly.j.w))
                 + 30 * (len(ly.e.expected) + len(ly.j.expected))
                 + 10 * (len(ly.e.inputs) + len(ly.j.inputs)) for ly in layers)
    # Amaranth's Python simulator compiles the 3,072-bit weight word of a 16 x 24 array into
    # one nested Python expression, deeper than the default recursion limit
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        run_sim(dut, control, source(dut.e, EXPAND, p_e), source(dut.j, PROJECT, p_j),
                consumer, deadline_cycles=cycles + 2000)
    finally:
        sys.setrecursionlimit(limit)
    return results, peak[0]


def check(got: dict, layer: Layer, j_group_base: int = 0) -> None:
    for kind, side in ((EXPAND, layer.e), (PROJECT, layer.j)):
        base = j_group_base if kind == PROJECT else 0
        want = [(acc, og + base) for acc, og in side.expected]
        assert len(got[kind]) == len(want), f"kind {kind}: {len(got[kind])} words, not " \
                                            f"{len(want)}"
        for n, (g, e) in enumerate(zip(got[kind], want, strict=True)):
            assert g == e, (f"kind {kind} word {n} (pixel {n // side.out_groups}, "
                            f"group {e[1]})")


@pytest.mark.parametrize(
    ("seed", "config", "e", "j", "p_e", "p_j", "p_out", "p_drain", "e_credits"), [
        (1, TINY, (1, 2, 6), (2, 1, 6), 0.3, 0.3, 0.3, 0.5, None),
        (2, TINY, (2, 3, 5), (3, 2, 5), 0.0, 0.0, 0.0, 0.2, None),
        (3, TINY, (8, 1, 4), (1, 3, 8), 0.6, 0.1, 0.5, 0.8, None),
        # one E job takes all the credit: E jobs wait for the FIFO to drain completely
        (4, TINY, (1, 32, 3), (2, 2, 6), 0.2, 0.5, 0.2, 0.3, 32),
        (5, TINY, (3, 4, 4), (4, 3, 4), 0.5, 0.5, 0.7, 0.1, 40),
        (6, WIDE, (2, 2, 5), (3, 2, 5), 0.3, 0.3, 0.3, 0.4, None),
        (7, LANES16, (2, 3, 3), (4, 2, 3), 0.3, 0.3, 0.3, 0.5, None),
        (8, PYNQ_SMALL, (4, 4, 2), (5, 3, 3), 0.3, 0.3, 0.3, 0.5, None),
    ])
def test_random_interleaved(seed, config, e, j, p_e, p_j, p_out, p_drain, e_credits):
    print(f"seed={seed}")
    layer = Layer(config, seed, e, j)
    (got,), peak = run_layers(config, [layer], seed=seed, p_e=p_e, p_j=p_j, p_out=p_out,
                              p_drain=p_drain, e_credits=e_credits)
    check(got, layer)
    assert peak > 0


def test_project_groups_from_a_base():
    """``j_group_base``: project words number their groups from it (one requantizer table
    for both kinds), expand words from 0; the group field widens to hold them."""
    layer = Layer(TINY, 9, (2, 3, 4), (3, 2, 4))
    base = 2 * TINY.mid_groups_max
    assert len(Engine(TINY, j_group_base=base).o.payload.group) == \
        (base + TINY.out_groups_max - 1).bit_length()
    (got,), peak = run_layers(TINY, [layer], seed=9, p_e=0.3, p_j=0.3, p_out=0.3,
                              p_drain=0.5, j_group_base=base)
    check(got, layer, base)
    assert peak > 0


def test_layers_chain_and_j_only():
    """``start`` aborts a stuck layer (credit restored: the first layer's E jobs need all of
    it); layers back to back (``start`` between them): counts, weights and ``e_on``
    change; J-only layers (``e_on = 0``) produce only project words."""
    layers = [Layer(TINY, 29, (1, 32, 2), (2, 2, 3)),
              Layer(TINY, 30, (2, 2, 3), (2, 3, 3)),
              Layer(TINY, 31, (1, 1, 0), (3, 2, 5), e_on=False),
              Layer(TINY, 32, (4, 3, 4), (1, 4, 3)),
              Layer(TINY, 33, (1, 1, 0), (1, 1, 6), e_on=False)]
    got, _ = run_layers(TINY, layers, seed=30, p_e=0.4, p_j=0.4, p_out=0.4, p_drain=0.5,
                        abort=True)
    for g, layer in zip(got, layers, strict=True):
        check(g, layer)


@pytest.mark.parametrize(("j_in", "j_out", "pixels"), [(1, 1, 6), (3, 1, 3), (2, 3, 3)])
def test_j_only_cycles(j_in, j_out, pixels):
    """``e_on = 0`` with E words offered: no E job; J alone runs one step per cycle once
    the first pixel is in, ``j_in + pixels*j_in*j_out + latency``
    cycles from the first word offered to the last word out."""
    layer = Layer(TINY, 40 + j_in, (1, 1, 0), (j_in, j_out, pixels), e_on=False)
    dut = Engine(TINY)
    got, cycles = [], []
    e_words = [[1] * TINY.dw_lanes] * 4

    async def bench(ctx):
        await setup_layer(ctx, dut, layer)
        ctx.set(dut.o.ready, 1)
        sent = e_sent = n = 0
        inputs = layer.j.inputs
        while len(got) < len(layer.j.expected):
            ctx.set(dut.j.valid, sent < len(inputs))
            ctx.set(dut.e.valid, e_sent < len(e_words))
            if sent < len(inputs):
                ctx.set(dut.j.payload, inputs[sent])
            *_, j_ready, e_ready, valid, payload = await ctx.tick().sample(
                dut.j.ready, dut.e.ready, dut.o.valid, dut.o.payload)
            n += 1
            sent += sent < len(inputs) and j_ready
            e_sent += e_sent < len(e_words) and e_ready
            if valid:
                kind, acc, group = word_of(payload, TINY.pw_cols)
                assert kind == PROJECT
                got.append((acc, group))
        cycles.append(n)
        assert e_sent == 2   # both E halves filled, never drained
        await ctx.tick().repeat(20)
        assert not ctx.get(dut.o.valid)

    run_sim(dut, bench, deadline_cycles=5000)
    assert got == layer.j.expected
    assert cycles[0] == j_in + pixels * j_in * j_out + dut.latency


def test_scheduler_timing():
    """Deterministic: inputs always valid from cycle 1 (cycle 0 is ``start``), ``o`` always
    ready, in_groups = 1 for both kinds so each step is one output word, ``latency``
    cycles later. J: 3 pixels x 2 out groups; E: 4 pixels x 16 out groups; e_credits 32
    (two E jobs), then 16 ``e_free`` pulses in cycles 50..65 and 16 in 66..81.

    Hand schedule (cycle a step issues):
    - cycle 1: the first E and J words are accepted; nothing is full yet.
    - cycle 2: both an E and a J half are full: **J first** (steps 2, 3), then J pixel 1
      (4, 5) and J pixel 2 (6, 7; its word entered half 0 in cycle 4, freed by the step
      in 3): **back to back**, no bubble.
    - 8..23 E pixel 0, 24..39 E pixel 1 (credit 32 -> 16 -> 0).
    - 40..65: E pixel 2 is full (its word entered in cycle 24) but **waits for credit**;
      the pulses of 50..65 make credit 16 in cycle 66: steps 66..81.
    - the pulses of 66..81 make credit 1 + 15 = 16 in cycle 82: E pixel 3 at 82..97, back
      to back.
    """
    layer = Layer(TINY, 60, (1, 16, 4), (1, 2, 3))
    dut = Engine(TINY, e_credits=32)
    lat = dut.latency
    seen = []

    async def bench(ctx):
        ctx.set(dut.e_in_groups, 1)
        ctx.set(dut.e_out_groups, 16)
        ctx.set(dut.j_in_groups, 1)
        ctx.set(dut.j_out_groups, 2)
        ctx.set(dut.e_on, 1)
        ctx.set(dut.e_wbase, layer.e_base)
        ctx.set(dut.j_wbase, layer.j_base)
        await load_weights(ctx, dut, layer)
        ctx.set(dut.o.ready, 1)
        e_in, j_in = layer.e.inputs, layer.j.inputs
        e_sent = j_sent = 0
        for n in range(98 + lat + 5):
            ctx.set(dut.start, n == 0)
            ctx.set(dut.e_free, 50 <= n < 82)
            ctx.set(dut.e.valid, n >= 1 and e_sent < len(e_in))
            ctx.set(dut.j.valid, n >= 1 and j_sent < len(j_in))
            if e_sent < len(e_in):
                ctx.set(dut.e.payload, e_in[e_sent])
            if j_sent < len(j_in):
                ctx.set(dut.j.payload, j_in[j_sent])
            *_, e_ready, j_ready, valid, payload = await ctx.tick().sample(
                dut.e.ready, dut.j.ready, dut.o.valid, dut.o.payload)
            if n >= 1:
                e_sent += e_sent < len(e_in) and e_ready
                j_sent += j_sent < len(j_in) and j_ready
            if valid:
                kind, acc, group = word_of(payload, TINY.pw_cols)
                seen.append((n - lat, kind, group, acc))

    run_sim(dut, bench, deadline_cycles=1000)
    schedule = ([(2 + k, PROJECT, k % 2) for k in range(6)]
                + [(8 + k, EXPAND, k) for k in range(16)]
                + [(24 + k, EXPAND, k) for k in range(16)]
                + [(66 + k, EXPAND, k) for k in range(16)]
                + [(82 + k, EXPAND, k) for k in range(16)])
    assert [s[:3] for s in seen] == schedule
    assert [s[3] for s in seen if s[1] == PROJECT] == [a for a, _ in layer.j.expected]
    assert [s[3] for s in seen if s[1] == EXPAND] == [a for a, _ in layer.e.expected]


def test_signature_and_latency():
    dut = Engine(TINY)
    assert dut.latency == 11 and Engine(LANES16).latency == 11
    assert (dut.rows, dut.cols, dut.e_credits) == (8, 8, 32)
    assert dut.e.payload.shape() == data.ArrayLayout(signed(8), 8)
    assert dut.j.payload.shape() == data.ArrayLayout(signed(8), 8)
    # tiny: expand 8 in groups, 32 mid groups, 8 out groups
    assert dut.e_in_groups.shape() == unsigned(4)
    assert dut.e_out_groups.shape() == unsigned(6)
    assert dut.j_in_groups.shape() == unsigned(6)
    assert dut.j_out_groups.shape() == unsigned(4)
    assert dut.wr.addr.shape() == unsigned(9)   # 256 expand + 256 project words
    assert dut.wr.data.shape() == data.ArrayLayout(data.ArrayLayout(signed(8), 8), 8)
    wide = Engine(WIDE)
    assert wide.wr.data.shape() == data.ArrayLayout(data.ArrayLayout(signed(8), 16), 8)
    assert wide.o.payload.shape() == data.StructLayout(
        {"acc": data.ArrayLayout(signed(32), 16), "group": unsigned(5), "kind": 1})
    pz = Engine(PYNQ_Z2)
    assert (pz.rows, pz.cols, pz.e_credits) == (16, 24, 64)
    assert pz.wr.addr.shape() == unsigned(10)   # engine_weight_words 1024
    assert pz.o.payload.shape().members["group"] == unsigned(6)   # og < 64
    # the top level's: project groups from 43 (the expand words of 64 mid groups of 16
    # channels in 24-channel words), 11 of them: still below 64
    assert Engine(PYNQ_Z2, j_group_base=43).o.payload.shape().members["group"] == unsigned(6)


@pytest.mark.parametrize("name", ["tiny", "pynq-z2", "zcu104"])
def test_layouts_match_neighbours(name):
    """``j`` takes the DW requantizer's output word; ``o`` carries the input fields of the
    engine's requantizer as the top level builds them (``acc`` and ``kind`` as they are,
    ``group`` as wide as its table's groups: the expand words', then the project ones')."""
    from dwsep.hw.layout import expand_words
    from dwsep.hw.requant import Requantizer

    cfg = get_config(name)
    base = expand_words(cfg, cfg.mid_groups_max)
    dut = Engine(cfg, j_group_base=base)
    dw_out = Requantizer(cfg.dw_lanes, cfg.mid_groups_max).o.payload.shape()
    assert dut.j.payload.shape() == dut.e.payload.shape() == dw_out
    o = dut.o.payload.shape().members
    i = Requantizer(cfg.pw_cols, base + cfg.out_groups_max, kinds=2).i.payload.shape().members
    assert o["acc"] == i["acc"] and o["kind"] == i["kind"]
    assert o["group"] == i["group"]


def test_constructor_errors():
    with pytest.raises(TypeError, match="'config' must be an AcceleratorConfig, not 'tiny'"):
        Engine("tiny")
    with pytest.raises(ValueError, match=r"e_credits \(31\) must be at least mid_groups_max "
                                         r"\(32\)"):
        Engine(TINY, e_credits=31)
    with pytest.raises(TypeError, match="e_credits must be an int"):
        Engine(TINY, e_credits=32.0)
    assert Engine(TINY, e_credits=100).e_credits == 100
