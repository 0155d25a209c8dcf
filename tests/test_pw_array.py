# amaranth: UnusedElaboratable=no
"""PointwiseArray against ``pw_array_model``: random pixels, weights, group counts and
valid/ready stalls, on square and non-square (P != Q) arrays."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from dwsep.hw.config import get_config
from dwsep.hw.pw_array import PointwiseArray
from dwsep.sim.models.arrays import (
    pack_pw_weight_words,
    pw_array_cycles,
    pw_array_model,
    words_from_bytes,
)
from dwsep.sim.streams import recv_n, run_sim, send_all

TINY = get_config("tiny")                                    # P = Q = 8
WIDE = dataclasses.replace(TINY, name="wide", pw_cols=16)    # P = 8, Q = 16
TALL = dataclasses.replace(TINY, name="tall", dw_lanes=16, pw_rows=16,
                           mid_channels_max=128)             # P = 16, Q = 8


def random_int8(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform int8 with both extremes (-128, 127) forced into random positions."""
    a = rng.integers(-128, 128, size=shape, dtype=np.int8)
    flat = a.reshape(-1)
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = -128
    flat[rng.integers(flat.size)] = 127
    return a


def random_weights(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform weights in the arrays' range -127..127 (``PointwiseArray``: two products per
    DSP48E1) with both extremes forced into random positions."""
    a = rng.integers(-127, 128, size=shape, dtype=np.int8)
    flat = a.reshape(-1)
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = -127
    flat[rng.integers(flat.size, size=max(2, flat.size // 16))] = 127
    return a


class Layer:
    """One layer's random operands, packed weight words and model outputs."""

    def __init__(self, config, seed: int, mid_groups: int, out_groups: int, pixels: int):
        P, Q = config.pw_rows, config.pw_cols
        rng = np.random.default_rng(seed)
        self.mid_groups, self.out_groups = mid_groups, out_groups
        self.w = random_weights(rng, (out_groups, mid_groups, P, Q))
        self.x = random_int8(rng, (pixels, mid_groups, P))
        self.words = words_from_bytes(pack_pw_weight_words(self.w), P * Q)
        self.inputs = [self.x[p, q].tolist() for p in range(pixels) for q in range(mid_groups)]
        acc, group = pw_array_model(self.x, self.w.reshape(-1, P, Q), mid_groups, out_groups)
        self.expected = list(zip(acc.tolist(), group.tolist(), strict=True))


async def setup_layer(ctx, dut, layer: Layer) -> None:
    """Pulse ``start``, set the group counts and load the weights (one word per cycle)."""
    ctx.set(dut.mid_groups, layer.mid_groups)
    ctx.set(dut.out_groups, layer.out_groups)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    for addr, word in enumerate(layer.words):
        ctx.set(dut.wr.addr, addr)
        ctx.set(dut.wr.data.as_value(), word)
        ctx.set(dut.wr.en, 1)
        await ctx.tick()
    ctx.set(dut.wr.en, 0)


def acc_of(payload, cols: int) -> tuple[list[int], int]:
    return [payload.acc[o] for o in range(cols)], payload.group


def run_layers(config, layers: list[Layer], *, seed: int, p_in: float, p_out: float,
               abort_words: int = 0) -> list[list]:
    """Run ``layers`` back to back (``start`` before each). Before the first, feed
    ``abort_words`` words of a 2 x 2-group layer with ``o`` not ready, so that its pixels
    sit in the buffer, the pipeline and ``o`` when ``start`` aborts it."""
    dut = PointwiseArray(config)
    rng = random.Random(seed)
    got: list[list] = []
    layer_ready = []  # one entry per layer whose weights are loaded

    async def source(ctx):
        if abort_words:
            ctx.set(dut.mid_groups, 2)
            ctx.set(dut.out_groups, 2)
            await send_all(ctx, dut.i, [[-128] * config.pw_rows] * abort_words)
            await ctx.tick().repeat(20)
            # Stuck mid-layer: an output waits; both halves are full unless a pixel is partial.
            assert ctx.get(dut.o.valid)
            assert ctx.get(dut.i.ready) == abort_words % 2
        for layer in layers:
            await setup_layer(ctx, dut, layer)
            layer_ready.append(layer)
            await send_all(ctx, dut.i, layer.inputs, rng=rng, p_stall=p_in)
            # The next layer starts only once this one has drained.
            while len(got) < len(layer_ready):
                await ctx.tick()

    async def sink(ctx):
        for n in range(len(layers)):
            while len(layer_ready) <= n:
                await ctx.tick()
            got.append(await recv_n(ctx, dut.o, len(layers[n].expected), rng=rng,
                                    p_stall=p_out, convert=lambda p: acc_of(p, config.pw_cols)))

    cycles = sum(len(ly.words) + 20 * len(ly.expected) + 10 * len(ly.inputs) for ly in layers)
    run_sim(dut, source, sink, deadline_cycles=cycles + 1000)
    return got


def check(got: list, layer: Layer) -> None:
    assert len(got) == len(layer.expected)
    for n, (g, e) in enumerate(zip(got, layer.expected, strict=True)):
        assert g == e, f"output word {n} (pixel {n // layer.out_groups}, og {e[1]})"


@pytest.mark.parametrize(("seed", "config", "mid_groups", "out_groups", "pixels", "p_in",
                          "p_out"), [
    (1, TINY, 1, 1, 12, 0.5, 0.5),
    (2, TINY, 2, 3, 6, 0.0, 0.7),
    (3, TINY, 3, 2, 6, 0.7, 0.0),
    (4, TINY, 4, 1, 8, 0.3, 0.3),
    (5, TINY, 4, 3, 4, 0.9, 0.9),
    (6, WIDE, 3, 2, 5, 0.5, 0.5),
    (7, WIDE, 1, 3, 6, 0.3, 0.6),
    (8, WIDE, 4, 1, 5, 0.6, 0.2),
    (9, TALL, 2, 3, 4, 0.5, 0.5),
])
def test_layer_with_stalls(seed, config, mid_groups, out_groups, pixels, p_in, p_out):
    print(f"seed={seed}")
    layer = Layer(config, seed, mid_groups, out_groups, pixels)
    (got,) = run_layers(config, [layer], seed=seed, p_in=p_in, p_out=p_out)
    check(got, layer)


# 7 or 8 words: the pipeline takes the steps of 2.5 pixels before the untaken output stalls it
@pytest.mark.parametrize(("seed", "abort_words"), [(21, 7), (22, 8)])
def test_start_aborts_and_layers_chain(seed, abort_words):
    """``start`` drops a stuck layer (full buffer halves, a partial pixel, words in flight,
    an untaken output); group counts and weights change from layer to layer."""
    print(f"seed={seed}")
    layers = [Layer(WIDE, seed, 3, 2, 3), Layer(WIDE, seed + 100, 2, 3, 4),
              Layer(WIDE, seed + 200, 1, 1, 3)]
    got = run_layers(WIDE, layers, seed=seed, p_in=0.3, p_out=0.3, abort_words=abort_words)
    for g, layer in zip(got, layers, strict=True):
        check(g, layer)


@pytest.mark.parametrize(("config", "mid_groups", "out_groups", "pixels"), [
    (TINY, 1, 1, 6), (TINY, 4, 1, 3), (TINY, 2, 3, 3), (WIDE, 3, 2, 3), (TALL, 4, 3, 2),
])
def test_cycles_without_stalls(config, mid_groups, out_groups, pixels):
    """One (og, q) step per cycle after the first pixel is buffered, exactly
    ``pw_array_cycles`` (input always valid, output always ready)."""
    layer = Layer(config, 50 + mid_groups * out_groups, mid_groups, out_groups, pixels)
    dut = PointwiseArray(config)
    got, cycles = [], []

    async def bench(ctx):
        await setup_layer(ctx, dut, layer)
        ctx.set(dut.o.ready, 1)
        sent = n = 0
        while len(got) < len(layer.expected):
            ctx.set(dut.i.valid, sent < len(layer.inputs))
            if sent < len(layer.inputs):
                ctx.set(dut.i.payload, layer.inputs[sent])
            *_, ready, valid, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            n += 1
            sent += sent < len(layer.inputs) and ready
            if valid:
                got.append(acc_of(payload, config.pw_cols))
        cycles.append(n)

    run_sim(dut, bench, deadline_cycles=5000)
    check(got, layer)
    assert cycles[0] == pw_array_cycles(pixels, mid_groups, out_groups, dut.latency)


def test_latency_and_signature():
    # read, pre-add, multiply, cascade of 4, lane split, tree over 2 cascades, accumulate
    assert PointwiseArray(TINY).latency == 10
    assert PointwiseArray(TALL).latency == 10   # a 2-level tree over 4 cascades in 1 stage
    dut = PointwiseArray(WIDE)
    assert dut.i.payload.shape() == data.ArrayLayout(signed(8), 8)
    assert dut.o.payload.shape() == data.StructLayout(
        {"acc": data.ArrayLayout(signed(32), 16), "group": unsigned(2)})  # og 0..3
    assert dut.wr.data.shape() == data.ArrayLayout(data.ArrayLayout(signed(8), 16), 8)
    assert dut.wr.addr.shape() == unsigned(7)   # 4 out groups * 32 mid groups
    assert dut.mid_groups.shape() == unsigned(6)   # 1..32
    assert dut.out_groups.shape() == unsigned(3)   # 1..4


def test_rejects_non_config():
    with pytest.raises(TypeError, match="'config' must be an AcceleratorConfig, not 'tiny'"):
        PointwiseArray("tiny")


def test_model_and_packer_against_loops():
    """The einsum model and the packer against the contract written as plain loops."""
    rng = np.random.default_rng(9)
    og_n, q_n, P, Q, pixels = 2, 3, 8, 16, 2
    w = random_int8(rng, (og_n, q_n, P, Q))
    raw = pack_pw_weight_words(w)
    for og, q, i, o in np.ndindex(w.shape):
        assert (raw[(og * q_n + q) * P * Q + i * Q + o] ^ 0x80) - 0x80 == w[og, q, i, o]
    x = random_int8(rng, (pixels, q_n, P))
    acc, group = pw_array_model(x, w.reshape(-1, P, Q), q_n, og_n)
    for p, og, o in np.ndindex(pixels, og_n, Q):
        want = sum(int(x[p, q, i]) * int(w[og, q, i, o]) for q in range(q_n) for i in range(P))
        assert acc[p * og_n + og, o] == want
    assert group.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("name", ["tiny", "pynq-z2", "zcu104"])
def test_layouts_match_neighbours(name):
    """``i`` takes the DW requantizer's output word; ``o`` is the PW requantizer's input."""
    from dwsep.hw.requant import Requantizer

    cfg = get_config(name)
    dut = PointwiseArray(cfg)
    assert (dut.i.payload.shape()
            == Requantizer(cfg.dw_lanes, cfg.mid_groups_max).o.payload.shape())
    assert (dut.o.payload.shape()
            == Requantizer(cfg.pw_cols, cfg.out_groups_max).i.payload.shape())
