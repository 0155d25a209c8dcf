"""Words of ``lanes`` values computed ``compute_lanes`` at a time: the split and gather
stages shared by :class:`dwsep.hw.requant.Requantizer` and :class:`dwsep.hw.add.ResidualAdd`.

A word is split into ``chunks = lanes // compute_lanes`` chunks that go through the compute
lanes on consecutive moving cycles; the gather stage shifts the results into the output word
and offers it once all its chunks are in. Both stages move under the caller's global enable
``advance``, so the whole pipeline stalls together.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value

__all__ = ["check_lanes", "Splitter", "gather"]


def check_lanes(lanes, compute_lanes) -> int:
    """Validate a ``(lanes, compute_lanes)`` pair (``compute_lanes=None`` means ``lanes``);
    return ``compute_lanes``."""
    if not isinstance(lanes, int) or lanes <= 0 or lanes % 8:
        raise ValueError(f"'lanes' must be a positive multiple of 8, not {lanes!r}")
    if compute_lanes is None:
        return lanes
    if not isinstance(compute_lanes, int) or compute_lanes <= 0 or lanes % compute_lanes:
        raise ValueError(f"'compute_lanes' must be a positive divisor of lanes={lanes}, "
                         f"not {compute_lanes!r}")
    return compute_lanes


class Splitter:
    """The split stage: word registers that shift down one chunk per moving cycle.

    ``load`` is the caller's acceptance condition (its input handshake, which must include
    ``advance & free``); each ``(source, chunk_bits)`` of ``sources`` is loaded into a
    register when ``load`` is high and shifted right by ``chunk_bits`` on each later moving
    cycle of the word, so the current chunk is always in its low bits (a 2:1 mux per bit
    instead of a ``chunks``:1 mux). The next word loads as the last chunk leaves, so words
    follow back to back.

    Attributes
    ----------
    free : Value
        No word, or its last chunk is in the registers: a new word may load.
    busy : Signal
        The registers hold a chunk (the valid bit of the first compute stage).
    index : Signal
        Which chunk of its word is in the registers (0 first; meaningful while ``busy``).
    regs : list[Signal]
        One register per source.
    """

    def __init__(self, m: Module, advance: Value, chunks: int, load: Value,
                 sources: list[tuple[Value, int]]):
        self.busy = Signal()
        self.index = index = Signal(range(chunks))
        self.free = ~self.busy | (index == chunks - 1)
        self.regs = [Signal(len(Value.cast(src)), name=f"word{i}")
                     for i, (src, _) in enumerate(sources)]
        with m.If(advance):
            with m.If(load):
                m.d.sync += [self.busy.eq(1), index.eq(0)]
                m.d.sync += [reg.eq(src)
                             for reg, (src, _) in zip(self.regs, sources, strict=True)]
            with m.Elif(self.busy):
                m.d.sync += [self.busy.eq(~self.free), index.eq(index + 1)]
                m.d.sync += [reg.eq(reg >> bits)
                             for reg, (_, bits) in zip(self.regs, sources, strict=True)]


def gather(m: Module, advance: Value, chunks: int, last_valid: Value, results: list[Value],
           out_payload: Value, out_valid: Signal) -> None:
    """The gather stage: on each moving cycle with ``last_valid`` (the valid bit of the last
    compute stage), shift ``results`` (lane 0 first) into ``out_payload`` from the top; after
    ``chunks`` chunks the word's first chunk is at lane 0 and ``out_valid`` rises."""
    width = len(Cat(*results))
    count = Signal(range(chunks))
    with m.If(advance):
        m.d.sync += out_valid.eq(0)
        with m.If(last_valid):
            m.d.sync += [
                out_payload.eq(Cat(out_payload[width:], *results)),
                count.eq(Mux(count == chunks - 1, 0, count + 1)),
                out_valid.eq(count == chunks - 1),
            ]
