"""Gather 64-bit AXI beats into wide words."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from .beat_serializer import WordBeats, pixel_word_counter

__all__ = ["BeatPacker"]


class BeatPacker(WordBeats):
    """Collect ``width // 64`` beats into one ``o`` word, the first beat in the least
    significant bits (the little-endian DDR order of the word's bytes); the inverse of
    :class:`~.beat_serializer.BeatSerializer`.

    With ``max_words``, beats come in pixels of ``words`` words, and the last word of each
    pixel is offered after ``last_beats`` beats: with fewer than a word's beats, its other
    bits are left from earlier words (a stored pixel whose channels fill only part of the
    last engine word); with more (``max_last_beats``), the beats past the word are dropped
    (the filler a :class:`~.beat_serializer.BeatSerializer` added).

    Parameters
    ----------
    shape:
        Shape of the output word; its width must be a multiple of 64.
    max_words:
        The most words a pixel has; ``None`` (the default): every word is whole.
    max_last_beats:
        As :class:`~.beat_serializer.BeatSerializer`'s.

    Members
    -------
    i : ``In(stream.Signature(unsigned(64)))``
    o : ``Out(stream.Signature(shape))``
        A word is offered the cycle after its last beat arrived; the next word's first beat
        is taken in the same cycle the word leaves, so a steady beat stream loses no cycle.
    words, last_beats :
        As :class:`~.beat_serializer.BeatSerializer`'s (only with ``max_words``).
    """

    def __init__(self, shape, *, max_words: int | None = None,
                 max_last_beats: int | None = None):
        super().__init__(shape, max_words, max_last_beats,
                         i=In(stream.Signature(unsigned(64))), o=Out(stream.Signature(shape)))

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.beats * 64)
        # beats taken for `word` (past its own, the filler's: dropped)
        count = Signal(range(max(self.beats, self.max_last_beats) + 1))
        leaving = self.o.valid & self.o.ready
        taking = self.i.valid & self.i.ready
        if self.max_words is None:
            full = count == self.beats
            new_word = Cat(word[64:], self.i.payload)  # word[64:] is empty for one-beat words
        else:
            last = pixel_word_counter(m, self.words, leaving)
            # never an empty word, whatever `last_beats` holds
            full = (count != 0) & (count == Mux(last, self.last_beats, self.beats))
            # beat k of a word into its bits [64k, 64k + 64): a partial word's beats are
            # its low ones (a filler beat's k is past the word: written nowhere)
            new_word = Signal.like(word)
            index = Mux(leaving, 0, count)
            m.d.comb += new_word.eq(word)
            m.d.comb += new_word.word_select(index, 64).eq(self.i.payload)

        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(word),
                     self.i.ready.eq(~full | self.o.ready)]
        with m.If(taking):
            m.d.sync += word.eq(new_word)
            m.d.sync += count.eq(Mux(leaving, 1, count + 1))
        with m.Elif(leaving):
            m.d.sync += count.eq(0)
        return m
