"""BeatPacker: 64-bit beats -> words, first beat least significant, under random stalls."""

import random

import pytest
from amaranth.hdl import unsigned

from dwsep.hw.beat_packer import BeatPacker
from dwsep.sim.streams import recv_n, run_sim, send_all


@pytest.mark.parametrize("beats, seed", [(1, 1), (2, 2), (9, 3)])
def test_beats_become_little_endian_words(beats, seed):
    rng = random.Random(seed)
    dut = BeatPacker(unsigned(64 * beats))
    stream = [rng.getrandbits(64) for _ in range(40 * beats)]
    expected = [sum(b << (64 * k) for k, b in enumerate(stream[w:w + beats]))
                for w in range(0, len(stream), beats)]
    got = []

    async def producer(ctx):
        await send_all(ctx, dut.i, stream, rng=random.Random(seed + 100), p_stall=0.4)

    async def consumer(ctx):
        got.extend(await recv_n(ctx, dut.o, len(expected), rng=random.Random(seed + 200),
                                p_stall=0.4))

    run_sim(dut, producer, consumer, deadline_cycles=20_000)
    assert got == expected


def test_no_bubbles_at_full_rate():
    """Two-beat words: a steady beat stream with the consumer always ready loses no cycle."""
    dut = BeatPacker(unsigned(128))
    stream = list(range(1, 65))
    ready_trace = []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for beat in stream:
            ctx.set(dut.i.payload, beat)
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            ready_trace.append(ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)

    run_sim(dut, producer, consumer, deadline_cycles=1000)
    assert all(ready_trace)
