"""Split wide words into 64-bit AXI beats."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BeatSerializer"]


class BeatSerializer(wiring.Component):
    """Emit each ``i`` word as ``width // 64`` beats, least significant beat first (the
    little-endian DDR order of the word's bytes).

    Parameters
    ----------
    shape:
        Shape of the input word; its width must be a multiple of 64.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(unsigned(64)))``
        One beat per cycle while ``o.ready``; a new word is taken in the cycle its last beat
        leaves, so a stream of words flows without bubbles.
    """

    def __init__(self, shape):
        width = Shape.cast(shape).width
        if width % 64:
            raise TypeError(f"word width must be a multiple of 64, not {width}")
        self._shape = shape
        self.beats = width // 64
        super().__init__({"i": In(stream.Signature(shape)),
                          "o": Out(stream.Signature(unsigned(64)))})

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.beats * 64)
        left = Signal(range(self.beats + 1))  # beats of `word` not yet sent

        m.d.comb += [self.o.payload.eq(word[:64]), self.o.valid.eq(left != 0)]
        last_leaving = (left == 1) & self.o.ready
        m.d.comb += self.i.ready.eq((left == 0) | last_leaving)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(Value.cast(self.i.payload)), left.eq(self.beats)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += [word.eq(word >> 64), left.eq(left - 1)]
        return m
