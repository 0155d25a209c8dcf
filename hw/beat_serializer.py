"""Split wide words into 64-bit AXI beats."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BeatSerializer", "pixel_word_counter"]


class BeatSerializer(wiring.Component):
    """Emit each ``i`` word as ``width // 64`` beats, least significant beat first (the
    little-endian DDR order of the word's bytes).

    With ``max_words``, words come in pixels of ``words`` words, and the last word of each
    pixel emits only its first ``last_beats`` beats (the rest of it is dropped): an engine
    word of ``pw_cols`` channels whose last channels lie past what a pixel stores.

    Parameters
    ----------
    shape:
        Shape of the input word; its width must be a multiple of 64.
    max_words:
        The most words a pixel has; ``None`` (the default): every word is emitted whole.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(unsigned(64)))``
        One beat per cycle while ``o.ready``; a new word is taken in the cycle its last beat
        leaves, so a stream of words flows without bubbles.
    words : ``In(range(1, max_words + 1))``
        Words per pixel (only with ``max_words``). Held, with ``last_beats``, from at least
        one cycle before a pixel's first word is taken to its last; the pixel count resets
        only at a pixel's end, so a stream must end on one.
    last_beats : ``In(range(1, width // 64 + 1))``
        Beats emitted of a pixel's last word (only with ``max_words``).
    """

    def __init__(self, shape, *, max_words: int | None = None):
        width = Shape.cast(shape).width
        if width % 64:
            raise TypeError(f"word width must be a multiple of 64, not {width}")
        if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
            raise ValueError(f"max_words must be a positive int or None, not {max_words!r}")
        self._shape = shape
        self.beats = width // 64
        self.max_words = max_words
        members = {"i": In(stream.Signature(shape)), "o": Out(stream.Signature(unsigned(64)))}
        if max_words is not None:
            members.update(words=In(range(1, max_words + 1)),
                           last_beats=In(range(1, self.beats + 1)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.beats * 64)
        left = Signal(range(self.beats + 1))  # beats of `word` not yet sent

        m.d.comb += [self.o.payload.eq(word[:64]), self.o.valid.eq(left != 0)]
        last_leaving = (left == 1) & self.o.ready
        m.d.comb += self.i.ready.eq((left == 0) | last_leaving)
        taking = self.i.valid & self.i.ready
        new_left = self.beats
        if self.max_words is not None:
            new_left = Mux(pixel_word_counter(m, self.words, taking), self.last_beats, self.beats)
        with m.If(taking):
            m.d.sync += [word.eq(Value.cast(self.i.payload)), left.eq(new_left)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += [word.eq(word >> 64), left.eq(left - 1)]
        return m


def pixel_word_counter(m: Module, words, step) -> Value:
    """Whether the word at hand is the last of its pixel of ``words`` words; each ``step``
    moves on to the next word. From registers only: the word's index in its pixel and
    ``words - 1`` (registered from ``words``)."""
    words_m1 = Signal.like(words, name="words_m1")
    pos = Signal.like(words, name="pos")   # index of the word at hand in its pixel
    m.d.sync += words_m1.eq(words - 1)
    last = pos == words_m1
    with m.If(step):
        m.d.sync += pos.eq(Mux(last, 0, pos + 1))
    return last
