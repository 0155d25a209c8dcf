"""Requantizer: int32 accumulators -> int8 activations, TFLite-exact, one word per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .mbqm import rdbpot_nudge, srdhm_high
from .ports import WritePortSignature

__all__ = ["Requantizer", "table_layout"]

_INT32_MAX = (1 << 31) - 1


def table_layout(lanes: int) -> data.StructLayout:
    """One requant-table record: ``bias int32[lanes]``, ``mult int32[lanes]``,
    ``shift int8[lanes]``, in that order from bit 0.

    The bit order equals the DDR record (docs/ARCHITECTURE.md, "Requant tables"): the
    ``9*lanes`` little-endian bytes of a record, read as one little-endian integer, are the
    value of this layout, so a record assembled from 64-bit beats is written as is.
    """
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), lanes),
        "mult": data.ArrayLayout(signed(32), lanes),
        "shift": data.ArrayLayout(signed(8), lanes),
    })


class Requantizer(wiring.Component):
    """Per-lane TFLite requantization with a per-group table of bias, multiplier and shift.

    For each lane ``l`` of a word with ``rec = table[group]``::

        o[l] = clamp(MultiplyByQuantizedMultiplier(acc[l] + rec.bias[l], rec.mult[l],
                                                   rec.shift[l]) + zp, act_min, act_max)

    with TFLite's exact integer semantics (``dwsep.host.numerics``): ``acc + bias`` and the
    left shift by ``max(shift, 0)`` wrap in int32, SaturatingRoundingDoublingHighMul rounds
    half up and saturates ``INT32_MIN * INT32_MIN``, RoundingDivideByPOT by
    ``max(-shift, 0)`` rounds half away from zero. ``mult`` may be any int32; ``shift`` must
    be in ``[-31, 30]`` (outside it the result is unspecified).

    The pipeline has a fixed latency :attr:`LATENCY` and one global enable: it advances
    whenever its output register is empty or being taken, and stalls as a whole otherwise.

    Parameters
    ----------
    lanes:
        Values per word, a positive multiple of 8.
    depth:
        Records in the table (lane groups of the largest layer).

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"acc": int32[lanes], "group": unsigned(...)})))``
        Accumulators and the table record to use (``ceil_log2(depth) or 1`` bits).
        ``i.ready`` does not depend on ``i.valid``.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), lanes)))``
    wr : ``In(WritePortSignature(ceil_log2(depth) or 1, table_layout(lanes)))``
        Table write port (always ready). Write the table only while no word is in flight.
    zp, act_min, act_max : ``In(signed(8))``
        Output zero point and clamp bounds, held constant while a layer runs.
    """

    #: cycles from the cycle a word is accepted on ``i`` to the cycle it is offered on ``o``
    #: (with ``o.ready`` high): table read, bias add, left shift, multiply + 2 product
    #: registers, high-mul rounding, rounding-shift add, rounding shift, zero point, clamp.
    LATENCY = 10

    def __init__(self, lanes: int, depth: int):
        if not isinstance(lanes, int) or lanes <= 0 or lanes % 8:
            raise ValueError(f"'lanes' must be a positive multiple of 8, not {lanes!r}")
        if not isinstance(depth, int) or depth <= 0:
            raise ValueError(f"'depth' must be a positive int, not {depth!r}")
        self.lanes = lanes
        self.depth = depth
        addr_width = ceil_log2(depth) or 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(32), lanes),
                "group": unsigned(addr_width),
            }))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "wr": In(WritePortSignature(addr_width, table_layout(lanes))),
            "zp": In(signed(8)),
            "act_min": In(signed(8)),
            "act_max": In(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()

        # Block RAM with a registered read port; the table changes only between layers, so
        # the read port need not be transparent.
        m.submodules.table = table = Memory(shape=table_layout(self.lanes), depth=self.depth,
                                            init=[])
        wp = table.write_port()
        rp = table.read_port(transparent_for=())
        m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data),
                     wp.en.eq(self.wr.en)]

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
            rp.addr.eq(self.i.payload.group),
            rp.en.eq(advance),  # holds the record of a stalled word
        ]

        valid = Signal(self.LATENCY)
        with m.If(advance):
            m.d.sync += valid.eq(Cat(self.i.valid, valid[:-1]))
            for lane in range(self.lanes):
                self._lane(m, lane, rp.data)
        m.d.comb += self.o.valid.eq(valid[-1])
        return m

    def _lane(self, m: Module, lane: int, rec) -> None:
        """The datapath of one lane: one ``m.d.sync`` register per pipeline stage."""
        def reg(name, shape, value):
            s = Signal(shape, name=f"l{lane}_{name}")
            m.d.sync += s.eq(value)
            return s

        # Stage 0: the accumulator waits for the table read.
        acc = reg("acc", signed(32), self.i.payload.acc[lane])

        # Stage 1: bias add, truncated to 32 bits = C++ int32 wraparound.
        total = reg("total", signed(32), acc + rec.bias[lane])
        mult1 = reg("mult1", signed(32), rec.mult[lane])
        shift = reg("shift", signed(8), rec.shift[lane])

        # Stage 2: left shift by max(shift, 0), wrapping in int32; right amount max(-shift, 0).
        left = Mux(shift < 0, 0, shift[:5])
        shifted = reg("shifted", signed(32), (total << left)[:32])
        mult2 = reg("mult2", signed(32), mult1)
        right2 = reg("right2", unsigned(5), Mux(shift < 0, -shift, 0))

        # Stages 3-4: the 32x32 product plus a second register, so synthesis can build it
        # from pipelined DSP slices (25x18 on 7-series).
        prod3 = reg("prod3", signed(64), shifted * mult2)
        right3 = reg("right3", unsigned(5), right2)
        prod4 = reg("prod4", signed(64), prod3)
        right4 = reg("right4", unsigned(5), right3)

        # Stage 5: SRDHM; only INT32_MIN * INT32_MIN = 2**62 gives 2**31, which saturates.
        high = srdhm_high(prod4)
        hmul = reg("hmul", signed(32), Mux(high > _INT32_MAX, _INT32_MAX, high))
        right5 = reg("right5", unsigned(5), right4)

        # Stage 6: RDBPOT's rounding addend (33 bits: e = 31 adds up to 2**30).
        rounded = reg("rounded", signed(33), hmul + rdbpot_nudge(hmul, right5))
        right6 = reg("right6", unsigned(5), right5)

        # Stage 7: the arithmetic shift (signed >> is arithmetic in Amaranth).
        scaled = reg("scaled", signed(33), rounded >> right6)

        # Stage 8: zero point. Stage 9: clamp.
        biased = reg("biased", signed(34), scaled + self.zp)
        clamped = Mux(biased < self.act_min, self.act_min,
                      Mux(biased > self.act_max, self.act_max, biased))
        m.d.sync += self.o.payload[lane].eq(clamped[:8])
