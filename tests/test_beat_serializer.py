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


def _valid_from_first(dut, words: list[int], transfers: int) -> list[int]:
    """``o.valid`` from its first high cycle until ``transfers`` transfers have left, the
    words offered back to back and ``o.ready`` always high."""
    valid_trace = []

    async def producer(ctx):
        await send_all(ctx, dut.i, words)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        while sum(valid_trace) < transfers:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            valid_trace.append(valid)

    run_sim(dut, producer, consumer, deadline_cycles=1000)
    return valid_trace[valid_trace.index(1):]


def test_full_rate_without_stalls():
    """A word of two beats every two cycles: the beats leave back to back, no bubbles."""
    words = list(range(1, 33))
    assert _valid_from_first(BeatSerializer(unsigned(128)), words, 2 * len(words)) == \
        [1] * (2 * len(words))


def test_rejects_width_not_multiple_of_64():
    with pytest.raises(TypeError, match="multiple of 64, not 72"):
        BeatSerializer(unsigned(72))


@pytest.mark.parametrize("beats, words, last, seed", [(3, 1, 2, 4), (3, 2, 1, 5), (2, 3, 2, 6),
                                                      (1, 2, 1, 7), (4, 3, 3, 8),
                                                      (3, 1, 4, 16), (3, 2, 4, 17),
                                                      (2, 2, 3, 18), (1, 3, 2, 19)])
def test_pixels_drop_the_last_words_other_beats(beats, words, last, seed):
    """Pixels of ``words`` words: all beats of each word but the last, whose first ``last``
    beats only leave (a 24-channel engine word of which a pixel stores 16 channels), or,
    with ``last`` past its beats, all of them and then zero beats (a pixel of 24
    channels stored padded to 32)."""
    rng = random.Random(seed)
    dut = BeatSerializer(unsigned(64 * beats), max_words=4, max_last_beats=max(beats, last))
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
    with pytest.raises(ValueError, match="max_last_beats needs max_words"):
        BeatSerializer(unsigned(128), max_last_beats=3)


def _cut(beats: list[int], grid: int) -> list[tuple[int, int]]:
    """``(data, beats)`` transfers of a beat stream cut at a grid of ``grid`` beats and at
    its words' ends (the model of ``max_beats``): built from the expected beats."""
    out, phase = [], 0
    for word in beats:
        i = 0
        while i < len(word):
            n = min(len(word) - i, grid - phase)
            out.append((sum(b << (64 * k) for k, b in enumerate(word[i:i + n])), n))
            phase, i = (phase + n) % grid, i + n
    return out


@pytest.mark.parametrize("beats, grid, words, last, seed", [
    (3, 2, 4, 1, 11),   # pynq-z2: 24-channel words into 16-byte line-buffer words
    (3, 2, 2, 3, 12), (2, 2, 3, 2, 13), (3, 4, 4, 3, 14), (1, 2, 2, 1, 15),
    (3, 2, 1, 4, 16)])  # with a filler beat
def test_transfers_cut_at_the_grid_and_the_words(beats, grid, words, last, seed):
    """``max_beats``: a word's beats leave in transfers of up to ``grid`` beats, each ending
    at the grid (counted over the stream) or at the word's end, whichever comes first."""
    rng = random.Random(seed)
    dut = BeatSerializer(unsigned(64 * beats), max_words=4, max_beats=grid,
                         max_last_beats=max(beats, last))
    pixels = 8
    data = [rng.getrandbits(64 * beats) for _ in range(pixels * words)]
    kept = [[(w >> (64 * b)) & (2**64 - 1)
             for b in range(last if n % words == words - 1 else beats)]
            for n, w in enumerate(data)]
    assert sum(map(len, kept)) % grid == 0   # a stream ends on the grid
    expected = _cut(kept, grid)
    got = pass_through(dut, data, len(expected), seed=seed,
                       setup=lambda ctx: (ctx.set(dut.words, words),
                                          ctx.set(dut.last_beats, last)))
    mask = [(1 << (64 * n)) - 1 for _, n in expected]
    assert [(p["data"] & k, p["beats"]) for p, k in zip(got, mask, strict=True)] == expected


def test_transfers_full_rate():
    """Words of 3 beats on a grid of 2: two transfers a word, back to back, no bubbles."""
    words = list(range(1, 33))
    dut = BeatSerializer(unsigned(192), max_beats=2)
    assert _valid_from_first(dut, words, 2 * len(words)) == [1] * (2 * len(words))


def test_rejects_bad_max_beats():
    with pytest.raises(ValueError, match="max_beats must be a power of two or None, not 3"):
        BeatSerializer(unsigned(192), max_beats=3)
