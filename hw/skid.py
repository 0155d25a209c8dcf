"""Skid buffer: a stream link whose ``ready`` toward the source is a register."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Cuts the combinational ``ready`` path of a stream link without costing throughput
    or forward latency.

    While the buffer is empty a word passes straight through (``o`` shows ``i``); a word
    offered while ``o.ready`` is low is caught in the buffer, and ``i.ready`` (a register,
    ``~full``) falls from the next cycle until the buffered word is taken. So the source
    sees the sink's stall one cycle late, and the sink sees no bubble when it resumes:
    word ``n``, accepted in cycle ``a`` and taken by the sink in ``d >= a``, lets word
    ``n+1`` in no earlier than ``d + 1``.

    Parameters
    ----------
    shape : the payload shape

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    """

    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        buffer = Signal.like(self.i.payload)
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(full | self.i.valid),
            self.o.payload.eq(Mux(full, buffer, self.i.payload)),
        ]
        with m.If(full):
            m.d.sync += full.eq(~self.o.ready)
        with m.Elif(self.i.valid & ~self.o.ready):
            m.d.sync += [full.eq(1), buffer.eq(self.i.payload)]
        return m
