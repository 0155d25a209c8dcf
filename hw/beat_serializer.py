"""Split wide words into 64-bit AXI beats."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["BeatSerializer", "WordBeats", "beats_layout", "check_pixel_words", "pixel_members",
           "pixel_word_counter"]


def beats_layout(max_beats: int) -> data.StructLayout:
    """Up to ``max_beats`` consecutive 64-bit beats in one transfer: ``data`` holds them from
    bit 0 (the first beat lowest), ``beats`` says how many (``1..max_beats``)."""
    return data.StructLayout({"data": unsigned(64 * max_beats),
                              "beats": unsigned(max_beats.bit_length())})


class WordBeats(wiring.Component):
    """What :class:`BeatSerializer` and ``hw.beat_packer.BeatPacker`` share: words of
    ``shape`` (a whole number of 64-bit :attr:`beats`) on one side of ``i`` -> ``o``, beats on
    the other; with ``max_words``, the pixel members ``words`` and ``last_beats``."""

    def __init__(self, shape, max_words: int | None, max_last_beats: int | None, *,
                 i: wiring.Member, o: wiring.Member):
        width = Shape.cast(shape).width
        if width % 64:
            raise TypeError(f"word width must be a multiple of 64, not {width}")
        self.beats = width // 64
        self.max_words = max_words
        self.max_last_beats = check_pixel_words(max_words, max_last_beats, self.beats)
        members = {"i": i, "o": o}
        if max_words is not None:
            members.update(pixel_members(max_words, self.max_last_beats))
        super().__init__(members)


class BeatSerializer(WordBeats):
    """Emit each ``i`` word as ``width // 64`` beats, least significant beat first (the
    little-endian DDR order of the word's bytes).

    With ``max_words``, words come in pixels of ``words`` words, and the last word of each
    pixel emits ``last_beats`` beats: its first ones (the rest of it is dropped: an engine
    word of ``pw_cols`` channels whose last channels lie past what a pixel stores), then,
    with ``max_last_beats`` above a word's beats, zero beats (filler: a pixel stores its
    channels padded to ``dw_lanes``, which can end past its last engine word).

    With ``max_beats``, a transfer carries up to ``max_beats`` beats of one word, cut at a
    grid of ``max_beats`` beats counted over all the beats emitted (the line buffer's words
    of ``dw_lanes`` bytes): each transfer fills the rest of a grid cell or the rest of the
    word, whichever is less. A stream's beats must end on the grid (a pixel's stored beats
    are whole line-buffer words), as the count starts at 0 and never resets.

    Parameters
    ----------
    shape:
        Shape of the input word; its width must be a multiple of 64.
    max_words:
        The most words a pixel has; ``None`` (the default): every word is emitted whole.
    max_last_beats:
        The most beats a pixel's last word emits (only with ``max_words``); the default: a
        word's beats (no filler).
    max_beats:
        A power of two: beats per transfer, at most (``o`` then carries
        :func:`beats_layout`); ``None`` (the default): one beat a transfer, ``o`` carries
        ``unsigned(64)``.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(unsigned(64)))``
        One beat (with ``max_beats``: one :func:`beats_layout` transfer) per cycle while
        ``o.ready``; a new word is taken in the cycle its last transfer leaves, so a stream
        of words flows without bubbles.
    words : ``In(range(1, max_words + 1))``
        Words per pixel (only with ``max_words``). Held, with ``last_beats``, from at least
        one cycle before a pixel's first word is taken to its last; the pixel count resets
        only at a pixel's end, so a stream must end on one.
    last_beats : ``In(range(1, max_last_beats + 1))``
        Beats emitted of a pixel's last word (only with ``max_words``).
    """

    def __init__(self, shape, *, max_words: int | None = None, max_beats: int | None = None,
                 max_last_beats: int | None = None):
        if max_beats is not None and (not isinstance(max_beats, int) or max_beats < 1
                                      or max_beats & (max_beats - 1)):
            raise ValueError(f"max_beats must be a power of two or None, not {max_beats!r}")
        self._shape = shape
        self.max_beats = max_beats
        out = unsigned(64) if max_beats is None else beats_layout(max_beats)
        super().__init__(shape, max_words, max_last_beats,
                         i=In(stream.Signature(shape)), o=Out(stream.Signature(out)))

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.beats * 64)
        # beats of `word` not yet sent (after its own, the filler's: `word` shifts in zeros)
        left = Signal(range(max(self.beats, self.max_last_beats) + 1))
        full = Signal()   # left != 0, a register: `o.valid` starts no path of logic
        B = self.max_beats or 1
        transfer = self.o.valid & self.o.ready

        # n: the beats of the transfer at hand (the rest of the grid cell or of the word),
        # a register: the next one is cut as `left` and the grid position change
        if self.max_beats is None:
            n = 1
            m.d.comb += self.o.payload.eq(word[:64])
        else:
            phase = Signal(range(B))          # beats emitted, modulo B
            n = Signal(range(B + 1))
            m.d.comb += [self.o.payload.data.eq(word[:64 * B]), self.o.payload.beats.eq(n)]
            phase_next = Mux(transfer, (phase + n)[:exact_log2(B)], phase)
            m.d.sync += phase.eq(phase_next)

            def cut(beats):
                room = B - phase_next
                return Mux(beats < room, beats, room)
        m.d.comb += self.o.valid.eq(full)
        last_leaving = (left == n) & self.o.ready
        m.d.comb += self.i.ready.eq(~full | last_leaving)
        taking = self.i.valid & self.i.ready
        new_left = self.beats
        if self.max_words is not None:
            new_left = Mux(pixel_word_counter(m, self.words, taking), self.last_beats, self.beats)
        rest = word >> 64
        for k in range(2, B + 1):
            rest = Mux(n == k, word >> (64 * k), rest)
        with m.If(taking):
            m.d.sync += [word.eq(Value.cast(self.i.payload)), left.eq(new_left), full.eq(1)]
            if self.max_beats is not None:
                m.d.sync += n.eq(cut(new_left))
        with m.Elif(transfer):
            m.d.sync += [word.eq(rest), left.eq(left - n), full.eq(left != n)]
            if self.max_beats is not None:
                m.d.sync += n.eq(cut(left - n))
        return m


def check_pixel_words(max_words, max_last_beats, beats: int) -> int:
    """Check ``max_words`` and ``max_last_beats`` of a serializer or packer of words of
    ``beats`` beats; return ``max_last_beats`` (default: ``beats``)."""
    if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
        raise ValueError(f"max_words must be a positive int or None, not {max_words!r}")
    if max_last_beats is None:
        return beats
    if max_words is None:
        raise ValueError("max_last_beats needs max_words")
    if not isinstance(max_last_beats, int) or max_last_beats < 1:
        raise ValueError(f"max_last_beats must be a positive int, not {max_last_beats!r}")
    return max_last_beats


def pixel_members(max_words: int, max_last_beats: int) -> dict:
    """The ``words`` and ``last_beats`` members of a serializer or packer of pixels."""
    return {"words": In(range(1, max_words + 1)),
            "last_beats": In(range(1, max_last_beats + 1))}


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
