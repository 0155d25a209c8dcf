# amaranth: UnusedElaboratable=no
"""Requantizer (hw/requant.py) against its NumPy model (sim/models/requant.py)."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from amaranth.lib import data

from dwsep.host import numerics
from dwsep.hw.config import REQUANT_INPUT_BITS
from dwsep.hw.requant import Requantizer, table_layout
from dwsep.sim.models.requant import pack_table, requant_model, table_records
from dwsep.sim.streams import recv_n, run_sim, send_all

INT32_MIN, INT32_MAX = numerics.INT32_MIN, numerics.INT32_MAX


# ---- helpers ----------------------------------------------------------------------------

def random_table(rng: np.random.Generator, depth: int, lanes: int) -> dict:
    """Multipliers mostly in QuantizeMultiplier's [2**30, 2**31), some 0 and some anywhere in
    [0, 2**31); shifts over the whole [-31, 30] range with extra weight on realistic right
    shifts; biases mostly small, some up to 2**23."""
    shape = (depth, lanes)
    mult = rng.integers(1 << 30, 1 << 31, shape)
    kind = rng.random(shape)
    mult = np.where(kind < 0.1, 0, mult)
    mult = np.where(kind > 0.85, rng.integers(0, 1 << 31, shape), mult)
    shift = np.where(rng.random(shape) < 0.7, rng.integers(-20, 1, shape),
                     rng.integers(-31, 31, shape))
    bias = np.where(rng.random(shape) < 0.8, rng.integers(-(1 << 10), 1 << 10, shape),
                    rng.integers(-(1 << 23), 1 << 23, shape))
    return {"bias": bias.astype(np.int32), "mult": mult.astype(np.int32),
            "shift": shift.astype(np.int8)}


def domain(shift: np.ndarray, bits: int = REQUANT_INPUT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: the inclusive range of ``acc + bias`` for which ``(acc + bias) <<
    max(shift, 0)`` fits ``bits`` signed bits (the requantizer's domain)."""
    left = np.maximum(shift.astype(np.int64), 0)
    half = np.int64(1 << (bits - 1))
    return -(half >> left), (half - 1) >> left


def random_acc(rng: np.random.Generator, table: dict, group: np.ndarray,
               bits: int = REQUANT_INPUT_BITS) -> np.ndarray:
    """Accumulators for the words of ``group``, with ``acc + bias`` in the domain: in 60% of
    the words each lane's magnitude is about ``2**(6 - shift)``, so its output lands mostly
    inside the int8 range; in 30% anywhere in the domain (clamping); in 10% at its ends."""
    shift = table["shift"][group].astype(np.int64)
    bias = table["bias"][group].astype(np.int64)
    lo, hi = domain(shift, bits)
    size = np.clip(rng.integers(3, 9, shift.shape) - shift, 1, bits - 1)
    fitted = np.clip(rng.integers(-(1 << size), 1 << size), lo, hi)
    anywhere = lo + (rng.random(shift.shape) * (hi - lo + 1)).astype(np.int64)
    ends = np.where(rng.random(shift.shape) < 0.5, lo, hi)
    kind = rng.random((len(group), 1))
    total = np.where(kind < 0.6, fitted, np.where(kind < 0.9, anywhere, ends))
    return (total - bias).astype(np.int32)


def random_act_range(rng: np.random.Generator) -> tuple[int, int, int]:
    """``(zp, act_min, act_max)``: no activation, RELU or a RELU6-style range."""
    zp = int(rng.integers(-128, 100))
    kind = rng.integers(3)
    if kind == 0:
        return zp, -128, 127
    return zp, zp, 127 if kind == 1 else int(rng.integers(zp, 128))


def plain_words(seed: int, depth: int, lanes: int, n: int, compute_lanes: int | None = None):
    """``n`` random words over a random table, with no activation (zp 0, -128..127):
    ``(acc, group, expected outputs, table records)`` (records of ``compute_lanes``)."""
    rng = np.random.default_rng(seed)
    table = random_table(rng, depth, lanes)
    group = rng.integers(0, depth, n)
    acc = random_acc(rng, table, group)
    return (acc, group, requant_model(acc, group, table, 0, -128, 127),
            table_records(table["bias"], table["mult"], table["shift"], compute_lanes))


async def load_table(ctx, dut: Requantizer, records: list[int]) -> None:
    """Write ``records`` (:func:`table_records`, one per chunk) through the table write
    port, record ``k`` at address ``k``."""
    for addr, rec in enumerate(records):
        ctx.set(dut.wr.addr, addr)
        ctx.set(dut.wr.data.as_value(), rec)
        ctx.set(dut.wr.en, 1)
        await ctx.tick()
    ctx.set(dut.wr.en, 0)


def simulate(table: dict, acc: np.ndarray, group: np.ndarray, zp: int, act_min: int,
             act_max: int, *, seed: int, p_stall: float = 0.3,
             compute_lanes: int | None = None, lut_lanes: int = 0) -> np.ndarray:
    """Load ``table`` through the write port, stream ``acc``/``group`` through a
    Requantizer under seeded random valid/ready stalls, return the output words."""
    depth, lanes = table["bias"].shape
    dut = Requantizer(lanes, depth, compute_lanes, lut_lanes=lut_lanes)
    records = table_records(table["bias"], table["mult"], table["shift"], compute_lanes)
    words = [{"acc": [int(v) for v in a], "group": int(g)}
             for a, g in zip(acc, group, strict=True)]
    out = []

    async def producer(ctx):
        ctx.set(dut.zp, zp)
        ctx.set(dut.act_min, act_min)
        ctx.set(dut.act_max, act_max)
        await load_table(ctx, dut, records)
        await send_all(ctx, dut.i, words, rng=random.Random(seed), p_stall=p_stall)

    async def consumer(ctx):
        out.extend(await recv_n(ctx, dut.o, len(words), rng=random.Random(seed + 1),
                                p_stall=p_stall, convert=lambda p: [p[k] for k in range(lanes)]))

    run_sim(dut, producer, consumer, deadline_cycles=20 * len(words) + 1000)
    return np.array(out, np.int64).reshape(len(words), lanes)


def check(table, acc, group, zp, act_min, act_max, *, seed, p_stall=0.3,
          compute_lanes=None, lut_lanes=0) -> np.ndarray:
    got = simulate(table, acc, group, zp, act_min, act_max, seed=seed, p_stall=p_stall,
                   compute_lanes=compute_lanes, lut_lanes=lut_lanes)
    want = requant_model(acc, group, table, zp, act_min, act_max)
    bad = np.argwhere(got != want)
    assert not bad.size, (
        f"seed {seed}: {len(bad)} mismatches, first at word {bad[0][0]} lane {bad[0][1]}: "
        f"acc={acc[tuple(bad[0])]} group={group[bad[0][0]]} got {got[tuple(bad[0])]} "
        f"want {want[tuple(bad[0])]}")
    return want


# ---- model and format -------------------------------------------------------------------

def wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def test_model_matches_numerics():
    """requant_model equals the numerics primitives composed by hand, element by element."""
    rng = np.random.default_rng(7)
    table = random_table(rng, 3, 8)
    group = rng.integers(0, 3, 20)
    acc = random_acc(rng, table, group)
    zp, lo, hi = -5, -128, 100
    got = requant_model(acc, group, table, zp, lo, hi)
    assert got.dtype == np.int8
    for n in range(20):
        for lane in range(8):
            g = group[n]
            total = wrap32(int(acc[n, lane]) + int(table["bias"][g, lane]))
            shift = int(table["shift"][g, lane])
            x = int(numerics.srdhm(wrap32(total << max(shift, 0)), int(table["mult"][g, lane])))
            y = int(numerics.rounding_divide_by_pot(x, max(-shift, 0)))
            assert got[n, lane] == min(max(y + zp, lo), hi), (n, lane)


@pytest.mark.parametrize("acc, bias, mult, shift, want", [
    (-3, 0, 1 << 30, 0, -1),          # SRDHM tie -1.5: nudge 1 - 2**30, truncation -> -1
    (3, 0, 1 << 30, 0, 2),            # SRDHM tie 1.5 -> 2
    (-3, 0, INT32_MAX, -1, -2),       # RDBPOT tie -1.5 -> -2 (away from zero)
    (3, 0, INT32_MAX, -1, 2),         # RDBPOT tie 1.5 -> 2
    (INT32_MIN, 0, INT32_MIN, -25, 64),   # SRDHM saturates to INT32_MAX; 2**31 / 2**25
    (INT32_MAX, 1, INT32_MAX, -24, -128),  # acc + bias wraps to INT32_MIN
    (2, 0, 1 << 30, 30, -128),        # 2 << 30 wraps to INT32_MIN; SRDHM -> -2**30
    (1000, 0, 0, -3, 0),              # mult 0
])
def test_model_hand_values(acc, bias, mult, shift, want):
    """Values worked out by hand from TFLite's definitions (zp 0, no clamp beyond int8)."""
    table = {"bias": np.array([[bias]]), "mult": np.array([[mult]]),
             "shift": np.array([[shift]])}
    assert requant_model(np.array([[acc]]), np.array([0]), table, 0, -128, 127)[0, 0] == want


def test_pack_table_format():
    """Record bytes built independently with struct; the record integers are the values of
    table_layout (bias at bit 0, mult at 32*L, shift at 64*L)."""
    lanes = 8
    bias = np.arange(-8, 8, dtype=np.int32).reshape(2, lanes) * 1000003
    mult = (np.arange(16, dtype=np.int64).reshape(2, lanes) + (1 << 30)).astype(np.int32)
    shift = np.arange(-16, 0, dtype=np.int8).reshape(2, lanes)
    want = b"".join(struct.pack(f"<{lanes}i{lanes}i{lanes}b", *bias[g], *mult[g], *shift[g])
                    for g in range(2))
    assert pack_table(bias, mult, shift) == want
    assert pack_table(bias, mult, shift, lanes) == want
    recs = table_records(bias, mult, shift)
    layout = table_layout(lanes)
    assert layout.size == 9 * 8 * lanes
    for g, rec in enumerate(recs):
        view = data.Const(layout, rec)
        assert [view.bias[k] for k in range(lanes)] == list(bias[g])
        assert [view.mult[k] for k in range(lanes)] == list(mult[g])
        assert [view.shift[k] for k in range(lanes)] == list(shift[g])
    with pytest.raises(ValueError, match=r"must be \[groups, lanes\] arrays of one shape"):
        pack_table(bias, mult, shift[:1])


@pytest.mark.parametrize("compute_lanes", [4, 2])
def test_pack_table_chunk_records(compute_lanes):
    """With ``compute_lanes`` < L, record ``g*chunks + c`` holds lanes ``c*compute_lanes``..
    of group ``g``; a record of 4 lanes (36 bytes) is padded with zeros to 40 (whole beats),
    and its integer is the value of ``table_layout(compute_lanes)``."""
    lanes, cl = 8, compute_lanes
    chunks = lanes // cl
    bias = np.arange(-8, 8, dtype=np.int32).reshape(2, lanes) * 1000003
    mult = (np.arange(16, dtype=np.int64).reshape(2, lanes) + (1 << 30)).astype(np.int32)
    shift = np.arange(-16, 0, dtype=np.int8).reshape(2, lanes)
    pad = b"\0" * (-9 * cl % 8)
    want = b"".join(
        struct.pack(f"<{cl}i{cl}i{cl}b", *bias[g, c * cl:(c + 1) * cl],
                    *mult[g, c * cl:(c + 1) * cl], *shift[g, c * cl:(c + 1) * cl]) + pad
        for g in range(2) for c in range(chunks))
    assert len(want) == 2 * chunks * {4: 40, 2: 24}[cl]
    assert pack_table(bias, mult, shift, cl) == want
    recs = table_records(bias, mult, shift, cl)
    assert len(recs) == 2 * chunks
    layout = table_layout(cl)
    for r, rec in enumerate(recs):
        g, c = divmod(r, chunks)
        view = data.Const(layout, rec)
        lanes_of = slice(c * cl, (c + 1) * cl)
        assert [view.bias[k] for k in range(cl)] == list(bias[g, lanes_of])
        assert [view.mult[k] for k in range(cl)] == list(mult[g, lanes_of])
        assert [view.shift[k] for k in range(cl)] == list(shift[g, lanes_of])
    with pytest.raises(ValueError, match="'compute_lanes' must be a positive divisor of "
                                         "lanes=8, not 3"):
        table_records(bias, mult, shift, 3)


@pytest.mark.parametrize("lanes, depth, compute_lanes, addr_bits, group_bits", [
    (8, 4, None, 2, 2), (16, 5, 8, 4, 3), (16, 5, 4, 5, 3), (24, 3, 8, 4, 2), (8, 1, 4, 1, 1)])
def test_table_port_per_chunk(lanes, depth, compute_lanes, addr_bits, group_bits):
    """The write port takes records of ``compute_lanes`` lanes, ``depth * chunks`` of them
    (20 records of 4 lanes: 5 address bits); the input's ``group`` still counts lane
    groups."""
    dut = Requantizer(lanes, depth, compute_lanes)
    assert dut.wr.data.shape() == table_layout(compute_lanes or lanes)
    assert len(dut.wr.addr) == addr_bits
    assert len(dut.i.payload.group) == group_bits


@pytest.mark.parametrize("args, msg", [
    ((5, 4), "'lanes' must be a positive multiple of 8, not 5"),
    ((0, 4), "'lanes' must be a positive multiple of 8, not 0"),
    ((8, 0), "'depth' must be a positive int, not 0"),
    ((8, 4, 3), "'compute_lanes' must be a positive divisor of lanes=8, not 3"),
    ((8, 4, 8, 26), "'input_bits' must be an int in 9..25, not 26"),
])
def test_constructor_checks(args, msg):
    with pytest.raises(ValueError, match=msg):
        Requantizer(*args)


# ---- hardware ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random(seed):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 9))
    table = random_table(rng, depth, 8)
    group = rng.integers(0, depth, 400)
    check(table, random_acc(rng, table, group), group, *random_act_range(rng), seed=seed)


@pytest.mark.parametrize("lanes, compute_lanes",
                         [(16, 16), (16, 8), (8, 1), (16, 4), (24, 8), (32, 8)])
def test_random_compute_lanes(lanes, compute_lanes):
    seed = 11 + compute_lanes
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    table = random_table(rng, 5, lanes)
    group = rng.integers(0, 5, 200)
    check(table, random_acc(rng, table, group), group, *random_act_range(rng), seed=seed,
          compute_lanes=compute_lanes)


@pytest.mark.parametrize("lanes, compute_lanes", [(8, 8), (8, 2), (16, 8), (24, 8)])
def test_full_rate(lanes, compute_lanes):
    """With ``o.ready`` high and words offered back to back, a word is taken every
    ``chunks`` cycles and the first leaves ``latency`` cycles after it was taken."""
    depth = 3
    dut = Requantizer(lanes, depth, compute_lanes)
    acc, group, want, records = plain_words(9, depth, lanes, 12, compute_lanes)
    taken, offered = [], []

    async def bench(ctx):
        ctx.set(dut.act_min, -128)
        ctx.set(dut.act_max, 127)
        await load_table(ctx, dut, records)
        ctx.set(dut.o.ready, 1)
        n = 0
        for cycle in range(200):
            if n < len(acc):
                ctx.set(dut.i.payload, {"acc": [int(v) for v in acc[n]],
                                        "group": int(group[n])})
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                taken.append(cycle)
                n += 1
            if ctx.get(dut.o.valid):
                offered.append((cycle, [ctx.get(dut.o.payload)[k] for k in range(lanes)]))
            await ctx.tick()

    run_sim(dut, bench, deadline_cycles=1000)
    assert np.diff(taken).tolist() == [dut.chunks] * (len(acc) - 1)
    assert offered[0][0] - taken[0] == dut.latency
    assert np.diff([c for c, _ in offered]).tolist() == [dut.chunks] * (len(acc) - 1)
    assert np.array_equal(np.array([w for _, w in offered]), want)


def _edge_table_and_words():
    """Directed cases: each row is (acc, bias, mult, shift) for one lane, all in the
    domain (``D = 2**24``: ``acc + bias`` in ``[-D, D)`` after the left shift)."""
    D = 1 << (REQUANT_INPUT_BITS - 1)
    cases = [
        # the ends of the domain, with and without a bias, extreme mults and shifts
        (D - 1, 0, INT32_MAX, -31), (-D, 0, INT32_MAX, -31), (D - 1, 0, INT32_MAX, 0),
        (-D, 0, INT32_MAX, -24), (D - 1, 0, 1 << 30, -23), (-D, 0, 1 << 30, -23),
        (D - 101, 100, INT32_MAX, -24), (-D + 200, -200, 1 << 30, -25),
        (-D, 0, INT32_MAX, 0), (D - 1, 0, 1 << 30, -1),
        # the multiplier's two DSP halves: bit 17 and the carries between the products
        (D - 1, 0, (1 << 17) - 1, 0), (-D, 0, 1 << 17, 0), (D - 1, 0, (1 << 31) - (1 << 17), -5),
        (-D, 0, (1 << 31) - 1 - (1 << 17), -6), (-12345, 0, (1 << 17) + 1, 0),
        (7777777, 0, 0x5555_5555, -20), (-7777777, 0, 0x2AAA_AAAA, -20),
        # mult 0, small values, shift 0
        (12345, 0, 0, -3), (-99999, 7, 0, 0), (100, 0, INT32_MAX, 0), (-100, 0, 1 << 30, 0),
        # left shifts up to the domain's edge
        (1, 0, 1 << 30, 23), (-1, 0, 1 << 30, 23), (3, 0, INT32_MAX, 22),
        (-2, 0, INT32_MAX, 23), (5, 0, (1 << 31) - 3, 21), ((D >> 1) - 1, 0, INT32_MAX, 1),
        (-(D >> 1), 0, INT32_MAX, 1), (-(D >> 2) + 3, -3, 1 << 30, 2),
        # ties: mult 2**30 halves exactly (SRDHM tie), odd values then hit RDBPOT ties
        (-3, 0, 1 << 30, 0), (3, 0, 1 << 30, 0), (-1, 0, 1 << 30, 0), (1, 0, 1 << 30, 0),
        (-3, 0, INT32_MAX, -1), (3, 0, INT32_MAX, -1), (-1, 0, INT32_MAX, -1),
        (-5, 0, 1 << 30, -1), (-6, 0, 1 << 30, -1), (-12, 0, 1 << 30, -3),
        (-20, 0, 1 << 30, -3), (20, 0, 1 << 30, -3), (-7, 0, INT32_MAX, -2),
        (-6, 0, INT32_MAX, -2), (6, 0, INT32_MAX, -2), (-(3 << 20), 0, 1 << 30, -21),
        # one step either side of a tie: the product is 2**30 +- 1 in magnitude
        (-1, 0, (1 << 30) + 1, 0), (1, 0, (1 << 30) + 1, 0), (-1, 0, (1 << 30) - 1, 0),
        (1, 0, (1 << 30) - 1, 0),
        # RDBPOT just around ties: x = +-1, +-2, +-3 over 4
        (-1, 0, INT32_MAX, -2), (-2, 0, INT32_MAX, -2), (-3, 0, INT32_MAX, -2),
        (1, 0, INT32_MAX, -2), (2, 0, INT32_MAX, -2), (3, 0, INT32_MAX, -2),
    ]
    lanes = 8
    cases += [(0, 0, 0, 0)] * (-len(cases) % lanes)
    n = len(cases) // lanes
    arr = np.array(cases, np.int64).reshape(n, lanes, 4)
    table = {"bias": arr[..., 1].astype(np.int32), "mult": arr[..., 2].astype(np.int32),
             "shift": arr[..., 3].astype(np.int8)}
    return table, arr[..., 0].astype(np.int32), np.arange(n)


@pytest.mark.parametrize("zp, act_min, act_max", [
    (0, -128, 127),      # no activation: the raw MBQM results
    (-20, -128, 127),
    (-128, -128, -128 + 47),  # RELU6-style: [zp, zp + round(6 / scale)]
    (10, 10, 127),       # RELU
])
def test_edge_cases(zp, act_min, act_max):
    table, acc, group = _edge_table_and_words()
    # repeat the words in a shuffled order so each record is read back-to-back and apart
    order = np.random.default_rng(5).permutation(np.tile(group, 3))
    check(table, acc[order], order, zp, act_min, act_max, seed=17)
    check(table, acc[order], order, zp, act_min, act_max, seed=18, compute_lanes=2)


def test_latency_and_throughput():
    """With o.ready high: a lone word appears LATENCY cycles after acceptance, and a burst
    of words is taken and delivered one per cycle."""
    lanes, depth = 8, 2
    dut = Requantizer(lanes, depth)
    acc, group, want, records = plain_words(3, depth, lanes, 30)

    async def bench(ctx):
        ctx.set(dut.act_min, -128)
        ctx.set(dut.act_max, 127)
        await load_table(ctx, dut, records)
        ctx.set(dut.o.ready, 1)

        ctx.set(dut.i.payload, {"acc": [int(v) for v in acc[0]], "group": int(group[0])})
        ctx.set(dut.i.valid, 1)
        assert ctx.get(dut.i.ready)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        cycles = 1
        while not ctx.get(dut.o.valid):
            assert cycles < 50, "no output"
            await ctx.tick()
            cycles += 1
        assert cycles == Requantizer.LATENCY
        assert [ctx.get(dut.o.payload)[k] for k in range(lanes)] == list(want[0])
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

        outputs = []
        for cycle in range(29 + Requantizer.LATENCY):
            if cycle < 29:
                ctx.set(dut.i.payload, {"acc": [int(v) for v in acc[cycle + 1]],
                                        "group": int(group[cycle + 1])})
                ctx.set(dut.i.valid, 1)
                assert ctx.get(dut.i.ready)
            else:
                ctx.set(dut.i.valid, 0)
            if cycle >= Requantizer.LATENCY:
                assert ctx.get(dut.o.valid), f"bubble in the output at cycle {cycle}"
                outputs.append([ctx.get(dut.o.payload)[k] for k in range(lanes)])
            await ctx.tick()
        assert np.array_equal(np.array(outputs), want[1:])

    run_sim(dut, bench, deadline_cycles=1000)


def test_stall_holds_output():
    """While o.ready is low the offered word stays put and i.ready drops once it is full."""
    lanes, depth = 8, 1
    dut = Requantizer(lanes, depth)
    table = {"bias": np.zeros((1, lanes), np.int32),
             "mult": np.full((1, lanes), INT32_MAX, np.int32),
             "shift": np.zeros((1, lanes), np.int8)}
    (rec,) = table_records(table["bias"], table["mult"], table["shift"])

    async def bench(ctx):
        ctx.set(dut.act_min, -128)
        ctx.set(dut.act_max, 127)
        ctx.set(dut.wr.data.as_value(), rec)
        ctx.set(dut.wr.en, 1)
        await ctx.tick()
        ctx.set(dut.wr.en, 0)
        ctx.set(dut.i.payload, {"acc": list(range(lanes)), "group": 0})
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.payload, {"acc": list(range(10, 10 + lanes)), "group": 0})
        for _ in range(Requantizer.LATENCY - 1):
            await ctx.tick()
        assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
            assert [ctx.get(dut.o.payload)[k] for k in range(lanes)] == list(range(lanes))
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 0)
        assert ctx.get(dut.o.valid)
        assert [ctx.get(dut.o.payload)[k] for k in range(lanes)] == list(range(10, 10 + lanes))

    run_sim(dut, bench, deadline_cycles=200)


@pytest.mark.parametrize("lanes, compute_lanes, seed", [(16, 8, 31), (24, 8, 32), (8, 8, 33)])
def test_two_kinds_share_the_pipeline(lanes, compute_lanes, seed):
    """``kinds=2`` (the engine's expand and project words): words of both kinds interleaved
    at random, each requantized with its kind's zero point and bounds (table groups of its
    own), under random stalls; each output word carries its kind."""
    rng = np.random.default_rng(seed)
    depth = 6
    table = random_table(rng, depth, lanes)
    params = [random_act_range(rng), (int(rng.integers(-128, 0)), -128, 127)]
    n = 150
    kind = rng.integers(0, 2, n)
    group = np.where(kind == 0, rng.integers(0, 2, n), rng.integers(2, depth, n))
    acc = random_acc(rng, table, group)
    want = np.stack([requant_model(acc[i:i + 1], group[i:i + 1], table, *params[k])[0]
                     for i, k in enumerate(kind)])
    dut = Requantizer(lanes, depth, compute_lanes, kinds=2)
    records = table_records(table["bias"], table["mult"], table["shift"], compute_lanes)
    words = [{"acc": [int(v) for v in a], "group": int(g), "kind": int(k)}
             for a, g, k in zip(acc, group, kind, strict=True)]
    out = []

    async def producer(ctx):
        for k, (zp, lo, hi) in enumerate(params):
            ctx.set(dut.zp[k], zp)
            ctx.set(dut.act_min[k], lo)
            ctx.set(dut.act_max[k], hi)
        await load_table(ctx, dut, records)
        await send_all(ctx, dut.i, words, rng=random.Random(seed), p_stall=0.3)

    async def consumer(ctx):
        out.extend(await recv_n(ctx, dut.o, n, rng=random.Random(seed + 1), p_stall=0.3,
                                convert=lambda p: ([p.value[j] for j in range(lanes)],
                                                   p.kind)))

    run_sim(dut, producer, consumer, deadline_cycles=30 * n + 1000)
    assert [k for _, k in out] == kind.tolist()
    assert np.array_equal(np.array([v for v, _ in out]), want)


def test_kinds_checked():
    with pytest.raises(ValueError, match="'kinds' must be 1 or 2, not 3"):
        Requantizer(8, 2, kinds=3)


@pytest.mark.parametrize("seed, lanes, compute, lut_lanes", [
    (41, 16, 8, 8), (42, 16, 8, 3), (43, 24, 12, 4)])
def test_high_product_in_luts(seed, lanes, compute, lut_lanes):
    """``lut_lanes``: the 25 x 14-bit high product by Booth partial products in LUTs in
    the last ``lut_lanes`` compute lanes (all, or some beside DSP48E1 lanes as pynq-z2's
    engine requantizer: 4 of 12), the same results over random tables and accumulators (the
    domain's ends included) and the same latency."""
    rng = np.random.default_rng(seed)
    table = random_table(rng, 4, lanes)
    group = rng.integers(0, 4, 300)
    check(table, random_acc(rng, table, group), group, *random_act_range(rng), seed=seed,
          compute_lanes=compute, lut_lanes=lut_lanes)
    assert (Requantizer(lanes, 4, compute, lut_lanes=lut_lanes).latency
            == Requantizer(lanes, 4, compute).latency)


def test_lut_lanes_checked():
    with pytest.raises(ValueError, match="'lut_lanes' must be an int in 0..8, not 9"):
        Requantizer(16, 2, 8, lut_lanes=9)


@pytest.mark.parametrize("zp, act_min, act_max", [(0, -128, 127), (-5, -5, 127)])
def test_high_product_in_luts_edges(zp, act_min, act_max):
    table, acc, group = _edge_table_and_words()
    check(table, acc, group, zp, act_min, act_max, seed=44,
          lut_lanes=table["bias"].shape[1])


# ---- global pooling (max_pool_pixels) ----------------------------------------------------

def pool_words(rng: np.random.Generator, table: dict, groups: int, pixels: int,
               pools: int) -> tuple[list[dict], np.ndarray]:
    """``pools`` pools of ``pixels`` pixels of ``groups`` words (group order 0..groups-1 in
    each pixel) whose sums plus bias lie in the requantizer's domain, and every partial sum
    (bias plus the pixels so far) in its ``REQUANT_INPUT_BITS`` bits: ``(words, expected
    output words)``, one output word per group and pool."""
    words, want = [], []
    lanes = table["bias"].shape[1]
    limit = 1 << (REQUANT_INPUT_BITS - 1)
    for _ in range(pools):
        group = np.arange(groups)
        while True:
            total = random_acc(rng, table, group).astype(np.int64)    # [groups, lanes]
            noise = rng.integers(-300, 301, (pixels, groups, lanes))
            noise -= noise.sum(axis=0) // pixels
            noise[-1] -= noise.sum(axis=0)
            parts = total // pixels + noise
            parts[-1] += total - parts.sum(axis=0)
            partial = table["bias"][group].astype(np.int64) + np.cumsum(parts, axis=0)
            if (np.abs(parts) < (1 << 31)).all() and (-limit <= partial).all() \
                    and (partial < limit).all():
                break
        words += [{"acc": [int(v) for v in parts[p, g]], "group": int(g)}
                  for p in range(pixels) for g in range(groups)]
        want.append(requant_model(total, group, table, 0, -128, 127))
    return words, np.concatenate(want)


@pytest.mark.parametrize("lanes, compute_lanes, groups, pixels, p_stall, seed", [
    (16, 8, 1, 5, 0.0, 40),    # one group of two chunks: each word waits for the last sum
    (16, 8, 1, 9, 0.3, 41),
    (16, 8, 2, 7, 0.0, 42),    # the next word of a group comes four chunks later
    (16, 8, 5, 4, 0.3, 43),
    (8, 8, 1, 6, 0.0, 44),     # one chunk a word
    (8, 8, 3, 3, 0.3, 45),
    (24, 8, 4, 1, 0.3, 46),    # a pool of one pixel
    (32, 8, 6, 10, 0.2, 47),
])
def test_pool_sums_pixels(lanes, compute_lanes, groups, pixels, p_stall, seed):
    """With ``pool_on`` the requantizer sums each lane over a pool's pixels (the bias once)
    and emits one word per group after the last pixel: three pools back to back (the pixel
    count restarts), then plain words through the same pipeline with ``pool_on`` low."""
    rng = np.random.default_rng(seed)
    depth = max(groups, 3)
    table = random_table(rng, depth, lanes)
    words, want = pool_words(rng, table, groups, pixels, pools=3)
    plain = rng.integers(0, depth, 20)
    plain_acc = random_acc(rng, table, plain)
    dut = Requantizer(lanes, depth, compute_lanes, max_pool_pixels=16)
    records = table_records(table["bias"], table["mult"], table["shift"], compute_lanes)
    out = []

    async def producer(ctx):
        ctx.set(dut.zp, 0)
        ctx.set(dut.act_min, -128)
        ctx.set(dut.act_max, 127)
        ctx.set(dut.pool_pixels, pixels)
        ctx.set(dut.pool_groups, groups)
        await load_table(ctx, dut, records)
        ctx.set(dut.pool_on, 1)
        await send_all(ctx, dut.i, words, rng=random.Random(seed), p_stall=p_stall)
        while len(out) < len(want):     # the pool's words leave before pool_on falls
            await ctx.tick()
        ctx.set(dut.pool_on, 0)
        await send_all(ctx, dut.i, [{"acc": [int(v) for v in a], "group": int(g)}
                                    for a, g in zip(plain_acc, plain, strict=True)],
                       rng=random.Random(seed + 2), p_stall=p_stall)

    async def consumer(ctx):
        for n, s in ((len(want), seed + 1), (len(plain), seed + 3)):
            out.extend(await recv_n(ctx, dut.o, n, rng=random.Random(s), p_stall=p_stall,
                                    convert=lambda p: [p[k] for k in range(lanes)]))

    run_sim(dut, producer, consumer, deadline_cycles=20 * len(words) + 2000)
    got = np.array(out, np.int64)
    assert np.array_equal(got[:len(want)], want)
    assert np.array_equal(got[len(want):], requant_model(plain_acc, plain, table, 0, -128, 127))


def test_pool_throughput():
    """With two chunks a word, a pool of one or two groups takes a word only when stages 0
    to 1p are empty (5 cycles a word: a group's sum is written before its next word is
    read); three or more groups run at full rate (2 cycles)."""
    lanes, compute_lanes = 16, 8
    for groups, pattern in ((1, [5]), (2, [5]), (3, [2]), (4, [2])):
        rng = np.random.default_rng(groups)
        table = random_table(rng, groups, lanes)
        words, _ = pool_words(rng, table, groups, 6, pools=1)
        dut = Requantizer(lanes, groups, compute_lanes, max_pool_pixels=8)
        taken = []

        async def bench(ctx, dut=dut, words=words, groups=groups, taken=taken):
            ctx.set(dut.pool_pixels, 6)
            ctx.set(dut.pool_groups, groups)
            ctx.set(dut.pool_on, 1)
            ctx.set(dut.o.ready, 1)
            cycle = 0
            for word in words:
                ctx.set(dut.i.payload, word)
                ctx.set(dut.i.valid, 1)
                while not ctx.get(dut.i.ready):
                    await ctx.tick()
                    cycle += 1
                taken.append(cycle)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 0)

        run_sim(dut, bench, deadline_cycles=len(words) * 8 + 100)
        gaps = np.diff(taken).tolist()
        assert gaps == (pattern * len(gaps))[:len(gaps)], (groups, gaps)
