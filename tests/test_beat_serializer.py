# amaranth: UnusedElaboratable=no
"""BeatSerializer: words -> 64-bit beats, least significant first, under random stalls."""

import random

import pytest
from amaranth.hdl import unsigned

from dwsep.hw.beat_serializer import BeatSerializer
from dwsep.sim.streams import pass_through, run_sim, send_all


@pytest.mark.parametrize("beats, seed", [(1, 1), (2, 2), (8, 3)])
def test_words_come_out_as_little_endian_beats(beats, seed):
    rng = random.Random(seed)
    dut = BeatSerializer(unsigned(64 * beats))
    words = [rng.getrandbits(64 * beats) for _ in range(40)]
    expected = [(w >> (64 * b)) & (2**64 - 1) for w in words for b in range(beats)]
    assert pass_through(dut, words, len(expected), seed=seed) == expected


def test_full_rate_without_stalls():
    """A word of two beats every two cycles: the beats leave back to back, no bubbles."""
    dut = BeatSerializer(unsigned(128))
    words = list(range(1, 33))
    valid_trace = []

    async def producer(ctx):
        await send_all(ctx, dut.i, words)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        while sum(valid_trace) < 2 * len(words):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            valid_trace.append(valid)

    run_sim(dut, producer, consumer, deadline_cycles=1000)
    first = valid_trace.index(1)
    assert valid_trace[first:] == [1] * (2 * len(words))


def test_rejects_width_not_multiple_of_64():
    with pytest.raises(TypeError, match="multiple of 64, not 72"):
        BeatSerializer(unsigned(72))


@pytest.mark.parametrize("beats, words, last, seed", [(3, 1, 2, 4), (3, 2, 1, 5), (2, 3, 2, 6),
                                                      (1, 2, 1, 7), (4, 3, 3, 8)])
def test_pixels_drop_the_last_words_other_beats(beats, words, last, seed):
    """Pixels of ``words`` words: all beats of each word but the last, whose first ``last``
    beats only leave (a 24-channel engine word of which a pixel stores 16 channels)."""
    rng = random.Random(seed)
    dut = BeatSerializer(unsigned(64 * beats), max_words=4)
    pixels = 12
    data = [rng.getrandbits(64 * beats) for _ in range(pixels * words)]
    expected = [(w >> (64 * b)) & (2**64 - 1) for n, w in enumerate(data)
                for b in range(last if n % words == words - 1 else beats)]
    got = pass_through(dut, data, len(expected), seed=seed,
                       setup=lambda ctx: (ctx.set(dut.words, words),
                                          ctx.set(dut.last_beats, last)))
    assert got == expected


def test_rejects_bad_max_words():
    with pytest.raises(ValueError, match="max_words must be a positive int or None, not 0"):
        BeatSerializer(unsigned(128), max_words=0)
