"""Gather 64-bit AXI beats into wide words."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BeatPacker"]


class BeatPacker(wiring.Component):
    """Collect ``width // 64`` beats into one ``o`` word, the first beat in the least
    significant bits (the little-endian DDR order of the word's bytes); the inverse of
    :class:`~.beat_serializer.BeatSerializer`.

    Parameters
    ----------
    shape:
        Shape of the output word; its width must be a multiple of 64.

    Members
    -------
    i : ``In(stream.Signature(unsigned(64)))``
    o : ``Out(stream.Signature(shape))``
        A word is offered the cycle after its last beat arrived; the next word's first beat
        is taken in the same cycle the word leaves, so a steady beat stream loses no cycle.
    """

    def __init__(self, shape):
        width = Shape.cast(shape).width
        if width % 64:
            raise TypeError(f"word width must be a multiple of 64, not {width}")
        self.beats = width // 64
        super().__init__({"i": In(stream.Signature(unsigned(64))),
                          "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.beats * 64)
        count = Signal(range(self.beats + 1))  # beats collected in `word`
        full = count == self.beats
        leaving = self.o.valid & self.o.ready

        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(word),
                     self.i.ready.eq(~full | self.o.ready)]
        taking = self.i.valid & self.i.ready
        new_word = Cat(word[64:], self.i.payload)  # word[64:] is empty for one-beat words
        with m.If(taking):
            m.d.sync += word.eq(new_word)
            m.d.sync += count.eq(Mux(leaving, 1, count + 1))
        with m.Elif(leaving):
            m.d.sync += count.eq(0)
        return m

