# amaranth: UnusedElaboratable=no
"""BeatPacker: 64-bit beats -> words, first beat least significant, under random stalls."""

import random

import pytest
from amaranth.hdl import unsigned

from dwsep.hw.beat_packer import BeatPacker
from dwsep.sim.streams import pass_through, run_sim


@pytest.mark.parametrize("beats, seed", [(1, 1), (2, 2), (9, 3)])
def test_beats_become_little_endian_words(beats, seed):
    rng = random.Random(seed)
    dut = BeatPacker(unsigned(64 * beats))
    stream = [rng.getrandbits(64) for _ in range(40 * beats)]
    expected = [sum(b << (64 * k) for k, b in enumerate(stream[w:w + beats]))
                for w in range(0, len(stream), beats)]
    assert pass_through(dut, stream, len(expected), seed=seed) == expected


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


@pytest.mark.parametrize("beats, words, last, seed", [(3, 1, 2, 4), (3, 2, 1, 5), (2, 3, 2, 6),
                                                      (1, 2, 1, 7), (4, 3, 3, 8),
                                                      (2, 1, 1, 9), (3, 1, 4, 10),
                                                      (3, 2, 4, 11), (2, 3, 4, 12),
                                                      (1, 2, 2, 13)])
def test_pixels_end_in_a_partial_word_or_filler(beats, words, last, seed):
    """Pixels of ``words`` words: the last word of each is offered after ``last`` beats. With
    fewer than its beats they are its low bits (its other bits are don't-care); with more,
    the word is whole and the beats past it (a serializer's filler) are dropped."""
    rng = random.Random(seed)
    dut = BeatPacker(unsigned(64 * beats), max_words=4, max_last_beats=max(beats, last))
    pixels = 12
    sizes = [last if n % words == words - 1 else beats for n in range(pixels * words)]
    kept = [min(size, beats) for size in sizes]
    stream = [rng.getrandbits(64) for _ in range(sum(sizes))]
    expected, at = [], 0
    for size, keep in zip(sizes, kept, strict=True):
        expected.append(sum(b << (64 * k) for k, b in enumerate(stream[at:at + keep])))
        at += size
    got = pass_through(dut, stream, len(expected), seed=seed,
                       setup=lambda ctx: (ctx.set(dut.words, words),
                                          ctx.set(dut.last_beats, last)))
    assert [w & (2 ** (64 * keep) - 1) for w, keep in zip(got, kept, strict=True)] == \
        expected


def test_rejects_bad_max_words():
    with pytest.raises(ValueError, match="max_words must be a positive int or None, not -1"):
        BeatPacker(unsigned(128), max_words=-1)
    with pytest.raises(ValueError, match="max_last_beats needs max_words"):
        BeatPacker(unsigned(128), max_last_beats=3)
    with pytest.raises(ValueError, match="max_last_beats must be a positive int, not 0"):
        BeatPacker(unsigned(128), max_words=2, max_last_beats=0)


def test_no_empty_word_while_last_beats_is_zero():
    """A ``last_beats`` of 0 (a register not yet loaded) must not make the idle packer offer
    a word: it would pair with the wrong pixel downstream."""
    dut = BeatPacker(unsigned(128), max_words=2)
    offered = []

    async def bench(ctx):
        ctx.set(dut.words, 1)
        ctx.set(dut.last_beats, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range(8):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            offered.append(valid)

    run_sim(dut, bench, deadline_cycles=100)
    assert offered == [0] * 8
