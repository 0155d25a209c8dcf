# amaranth: UnusedElaboratable=no
"""DepthwiseArray against ``dw_array_model``: random taps, weights and valid/ready stalls."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from helpers import TINY, random_int8

from dwsep.hw.config import get_config
from dwsep.hw.dw_array import DepthwiseArray, dw_weight_layout, lut_multiply
from dwsep.hw.line_buffer import tap_layout
from dwsep.sim.models.dw_array import (
    dw_array_cycles,
    dw_array_model,
    pack_dw_weight_words,
    words_from_bytes,
)
from dwsep.sim.streams import recv_n, run_sim, send_all

P16 = dataclasses.replace(TINY, name="p16", dw_lanes=16, pw_rows=16)


def line_buffer_taps(rng, config, k: int, mid_groups: int, pixels: int) -> dict:
    """Tap columns in the line buffer's order: pixel, mid group ``q``, column ``c = r*k +
    kx`` (``R = dw_passes(k)`` passes of ``T`` rows); random data in every row."""
    cols = config.dw_passes(k) * k
    c = np.tile(np.arange(cols), pixels * mid_groups)
    q = np.repeat(np.tile(np.arange(mid_groups), pixels), cols)
    return {"data": random_int8(rng, (c.size, config.dw_taps, config.dw_lanes)),
            "first": c == 0, "last": c == cols - 1, "waddr": q * cols + c, "group": q}


def word_bytes(config) -> int:
    return config.dw_taps * config.dw_lanes


def tap_payloads(taps: dict) -> list[dict]:
    return [{"data": taps["data"][n].tolist(), "first": int(taps["first"][n]),
             "last": int(taps["last"][n]), "waddr": int(taps["waddr"][n]),
             "group": int(taps["group"][n])} for n in range(len(taps["data"]))]


async def load_weights(ctx, wr, words: dict[int, int]) -> None:
    """Write ``{address: word}`` through the always-ready write port, one word per cycle."""
    for addr, word in words.items():
        ctx.set(wr.addr, addr)
        ctx.set(wr.data.as_value(), word)
        ctx.set(wr.en, 1)
        await ctx.tick()
    ctx.set(wr.en, 0)


def acc_of(payload, lanes: int) -> tuple[list[int], int]:
    return [payload.acc[i] for i in range(lanes)], payload.group


def run_dw(config, taps: dict, words: dict[int, int], *, seed: int, p_in: float,
           p_out: float) -> list[tuple[list[int], int]]:
    dut = DepthwiseArray(config)
    n_out = int(np.count_nonzero(taps["last"]))
    rng = random.Random(seed)
    got = []

    async def source(ctx):
        await load_weights(ctx, dut.wr, words)
        await send_all(ctx, dut.taps, tap_payloads(taps), rng=rng, p_stall=p_in)

    async def sink(ctx):
        got.extend(await recv_n(ctx, dut.o, n_out, rng=rng, p_stall=p_out,
                                convert=lambda p: acc_of(p, config.dw_lanes)))

    run_sim(dut, source, sink, deadline_cycles=20 * len(taps["data"]) + 5000)
    return got


def check(got, taps, weights):
    acc, group = dw_array_model(taps, weights)
    assert len(got) == len(acc)
    for n, (g_acc, g_group) in enumerate(got):
        assert g_acc == acc[n].tolist(), f"pixel-group {n}"
        assert g_group == group[n], f"pixel-group {n}"


@pytest.mark.parametrize(("seed", "config", "k", "mid_groups", "pixels", "p_in", "p_out"), [
    (1, TINY, 1, 4, 12, 0.5, 0.5),
    (2, TINY, 2, 1, 12, 0.0, 0.7),
    (3, TINY, 3, 3, 6, 0.7, 0.0),
    (4, TINY, 4, 2, 6, 0.3, 0.3),
    (5, TINY, 5, 2, 4, 0.5, 0.8),
    (6, TINY, 6, 1, 4, 0.2, 0.6),
    (7, TINY, 7, 2, 3, 0.4, 0.4),
    (8, TINY, 7, 4, 2, 0.9, 0.9),
    (9, P16, 3, 4, 4, 0.5, 0.5),
])
def test_line_buffer_order_with_stalls(seed, config, k, mid_groups, pixels, p_in, p_out):
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    w = random_int8(rng, (mid_groups * config.dw_passes(k) * k, config.dw_taps,
                          config.dw_lanes))
    words = dict(enumerate(words_from_bytes(pack_dw_weight_words(w), word_bytes(config))))
    taps = line_buffer_taps(rng, config, k, mid_groups, pixels)
    got = run_dw(config, taps, words, seed=seed, p_in=p_in, p_out=p_out)
    check(got, taps, w)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_arbitrary_addresses_and_groups(seed):
    """Columns may name any weight word (the top address included) and any group;
    pixel-groups of 1..7 columns; back-to-back single-column groups stress the first/last
    handling."""
    print(f"seed={seed}")
    cfg, P, T = TINY, TINY.dw_lanes, TINY.dw_taps
    rng = np.random.default_rng(seed)
    addrs = np.unique(np.r_[0, cfg.dw_weight_depth - 1,
                            rng.integers(cfg.dw_weight_depth, size=40)])
    weights = np.zeros((cfg.dw_weight_depth, T, P), np.int8)
    weights[addrs] = random_int8(rng, (addrs.size, T, P))
    lengths = rng.integers(1, 8, size=120)
    lengths[5:10] = 1
    t = np.concatenate([np.arange(n) for n in lengths])
    ends = np.r_[t[1:] == 0, True]
    taps = {"data": random_int8(rng, (t.size, T, P)), "first": t == 0, "last": ends,
            "waddr": rng.choice(addrs, size=t.size),
            "group": rng.integers(cfg.mid_groups_max, size=t.size)}
    words = dict(zip(addrs.tolist(), words_from_bytes(weights[addrs].tobytes(), T * P),
                     strict=True))
    got = run_dw(cfg, taps, words, seed=seed, p_in=0.4, p_out=0.4)
    check(got, taps, weights)


@pytest.mark.parametrize(("k", "mid_groups", "pixels"), [(1, 1, 5), (3, 2, 2), (7, 1, 1)])
def test_cycles_without_stalls(k, mid_groups, pixels):
    """One column per cycle: ``N`` columns take exactly ``N + LATENCY`` cycles to the last
    output."""
    cfg, P = TINY, TINY.dw_lanes
    rng = np.random.default_rng(100 + k)
    w = random_int8(rng, (mid_groups * cfg.dw_passes(k) * k, cfg.dw_taps, P))
    words = dict(enumerate(words_from_bytes(pack_dw_weight_words(w), word_bytes(cfg))))
    taps = line_buffer_taps(rng, cfg, k, mid_groups, pixels)
    payloads = tap_payloads(taps)
    n_out = pixels * mid_groups
    dut = DepthwiseArray(cfg)
    got, cycles = [], []

    async def bench(ctx):
        await load_weights(ctx, dut.wr, words)
        ctx.set(dut.o.ready, 1)
        sent = n = 0
        while len(got) < n_out:
            ctx.set(dut.taps.valid, sent < len(payloads))
            if sent < len(payloads):
                ctx.set(dut.taps.payload, payloads[sent])
            *_, ready, valid, payload = await ctx.tick().sample(
                dut.taps.ready, dut.o.valid, dut.o.payload)
            n += 1
            sent += sent < len(payloads) and ready
            if valid:
                got.append(acc_of(payload, P))
        cycles.append(n)

    run_sim(dut, bench, deadline_cycles=5000)
    check(got, taps, w)
    assert cycles[0] == dw_array_cycles(len(payloads), DepthwiseArray.LATENCY)


def test_signature_matches_contract():
    dut = DepthwiseArray(TINY)
    word = data.ArrayLayout(data.ArrayLayout(signed(8), 8), 3)  # T = 3 rows of P = 8
    assert dw_weight_layout(TINY) == word
    assert tap_layout(TINY) == data.StructLayout({
        "data": word, "first": 1, "last": 1,
        "waddr": unsigned(10),  # 672 = 32 groups * 3 passes * 7 columns
        "group": unsigned(5),   # groups 0..31
    })
    assert dut.taps.payload.shape() == tap_layout(TINY)
    # accumulators of 21 bits: a 7x7 window of int8 products, 49 * 128 * 128 < 2**20
    assert dut.o.payload.shape() == data.StructLayout(
        {"acc": data.ArrayLayout(signed(21), 8), "group": unsigned(5)})
    assert dut.wr.addr.shape() == unsigned(10)
    assert dut.wr.data.shape() == word


def test_rejects_non_config():
    with pytest.raises(TypeError, match="'config' must be an AcceleratorConfig, not 'tiny'"):
        DepthwiseArray("tiny")


def test_model_and_packer_against_loops():
    """The vectorized model and the packer against the contract written as plain loops."""
    rng = np.random.default_rng(7)
    w = random_int8(rng, (6, 3, 8))  # mid_groups 3, k = 2: one pass of 2 columns each
    raw = pack_dw_weight_words(w)
    for n, t, i in np.ndindex(w.shape):
        assert (raw[(n * 3 + t) * 8 + i] ^ 0x80) - 0x80 == w[n, t, i]
    taps = line_buffer_taps(rng, TINY, 2, 3, 2)
    acc, group = dw_array_model(taps, w)
    want, run = [], None
    for n in range(len(taps["data"])):
        prods = [sum(int(taps["data"][n, t, i]) * int(w[taps["waddr"][n], t, i])
                     for t in range(3)) for i in range(8)]
        run = prods if taps["first"][n] else [a + b for a, b in zip(run, prods, strict=True)]
        if taps["last"][n]:
            want.append(run)
    assert acc.tolist() == want
    assert group.tolist() == [0, 1, 2, 0, 1, 2]


def test_lut_multiply_exhaustive():
    """Every signed 8 x 8-bit product of the Booth multiplier (the DW products in LUTs)."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    a, b, o = Signal(signed(8)), Signal(signed(8)), Signal(signed(16))
    m = Module()
    m.d.comb += o.eq(lut_multiply(a, b))
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for x in range(-128, 128):
            ctx.set(a, x)
            for y in range(-128, 128):
                ctx.set(b, y)
                if ctx.get(o) != x * y:
                    bad.append((x, y))

    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{len(bad)} wrong products, first {bad[0]}"


@pytest.mark.parametrize("name", ["tiny", "pynq-z2", "zcu104"])
def test_layouts_match_neighbours(name):
    """The line buffer's ``taps`` are the DW array's; ``o`` is the DW requantizer's input:
    the datapath joins them with ``wiring.connect`` (or one payload assignment)."""
    from dwsep.hw.dw_array import dw_acc_bits
    from dwsep.hw.line_buffer import LineBuffer
    from dwsep.hw.requant import Requantizer

    cfg = get_config(name)
    assert LineBuffer(cfg).taps.signature == DepthwiseArray(cfg).taps.signature.flip()
    requant = Requantizer(cfg.dw_lanes, cfg.mid_groups_max, acc_bits=dw_acc_bits(cfg))
    assert DepthwiseArray(cfg).o.signature == requant.i.signature.flip()
