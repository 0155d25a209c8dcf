"""ResidualAdd: TFLite int8 ADD of two activation streams by table, bit-exact, pipelined."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .chunked import Splitter, check_lanes, gather
from .layout import ADD_TABLE_ENTRIES
from .mbqm import rdbpot_nudge, srdhm_high
from .ports import WritePortSignature

__all__ = ["ResidualAdd", "add_params_layout", "TABLE_BITS"]

#: significant bits of an entry (signed; ``|entry| < 2**59``, see
#: ``dwsep.host.numerics.add_table``)
TABLE_BITS = 60


def add_params_layout() -> data.StructLayout:
    """The per-layer ADD parameters besides the table: output ``out_shift`` (TFLite's, in
    ``[-31, 0]``), ``out_zp`` and the clamp bounds ``act_min``, ``act_max``."""
    return data.StructLayout({
        "out_shift": signed(8), "out_zp": signed(8),
        "act_min": signed(8), "act_max": signed(8),
    })


class ResidualAdd(wiring.Component):
    """Element-wise TFLite int8 ADD ``o = a + b`` of two streams of int8 words, by table.

    The table (``dwsep.host.numerics.add_table``, written through ``wr``) holds, for each
    int8 value ``v`` of each input, ``T[v] = MBQM((v - zp) << 20, mult, shift) * out_mult``:
    the input's rescaled value times the output multiplier. Each lane computes::

        o = clamp(RDBPOT(floor((Ta[a] + Tb[b] + 2**30) / 2**31), -out_shift) + out_zp,
                  act_min, act_max)

    which is TFLite's ``MBQM(sa + sb, out_mult, out_shift)`` (SRDHM of the 64-bit product
    ``(sa + sb) * out_mult = Ta[a] + Tb[b]``, then RoundingDivideByPOT) exactly
    (``dwsep.host.numerics.add_by_table``): two table reads and additions, no multiplier.

    A word is taken from ``a`` and ``b`` together (join) and split into ``lanes //
    compute_lanes`` chunks of ``compute_lanes`` lanes, one chunk per cycle through the
    arithmetic; the output word is offered once all its chunks are done. Words leave in
    order, one per ``lanes // compute_lanes`` cycles at full rate. The pipeline has one global
    enable: it advances whenever ``o`` is empty or being taken and stalls as a whole
    otherwise.

    Parameters
    ----------
    lanes:
        int8 values per word, a positive multiple of 8.
    compute_lanes:
        Lanes computed per cycle, a divisor of ``lanes`` (default ``lanes``). Each compute
        lane reads both tables: a copy of each (distributed RAM, 256 x 60 bits) per lane.

    Members
    -------
    a : ``In(stream.Signature(ArrayLayout(signed(8), lanes)))``
        Main-path words (ADD input 1). ``a.ready`` depends on ``b.valid`` and ``o.ready``,
        not on ``a.valid``.
    b : ``In(stream.Signature(ArrayLayout(signed(8), lanes)))``
        Residual words (ADD input 2). ``b.ready`` depends on ``a.valid`` and ``o.ready``,
        not on ``b.valid``.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), lanes)))``
        Sums, in input order.
    wr : ``In(WritePortSignature(9, unsigned(64)))``
        Table write port (always ready): entry ``addr`` (``a``'s value ``v`` at ``v & 255``,
        ``b``'s at ``256 + (v & 255)``), the low :data:`TABLE_BITS` bits of ``data``.
    params : ``In(add_params_layout())``
        Held constant, and the table unchanged, while words are in flight;
        ``act_min <= act_max``.
    """

    #: Cycles from the cycle a word is accepted to the cycle it is offered on ``o`` (with
    #: ``o.ready`` high) when ``compute_lanes == lanes``: chunk register; table reads
    #: (registered); sum; SRDHM; rounding add; shift; zero point; clamp into the output
    #: word. A word of ``n`` chunks takes ``LATENCY + n - 1`` (:attr:`latency`).
    LATENCY = 8

    def __init__(self, lanes: int, compute_lanes: int | None = None):
        compute_lanes = check_lanes(lanes, compute_lanes)
        self.lanes = lanes
        self.compute_lanes = compute_lanes
        #: chunks per word = cycles per word at full rate
        self.chunks = lanes // compute_lanes
        #: this instance's latency from acceptance to output
        self.latency = self.LATENCY + self.chunks - 1
        word = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "a": In(stream.Signature(word)),
            "b": In(stream.Signature(word)),
            "o": Out(stream.Signature(word)),
            "wr": In(WritePortSignature(9, unsigned(64))),
            "params": In(add_params_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.compute_lanes
        width = 8 * L
        p = self.params

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Stage 0: join and split (:mod:`dwsep.hw.chunked`).
        load = Signal()
        split = Splitter(m, advance, self.chunks, load,
                         [(self.a.payload, width), (self.b.payload, width)])
        m.d.comb += [
            self.a.ready.eq(advance & split.free & self.b.valid),
            self.b.ready.eq(advance & split.free & self.a.valid),
            load.eq(self.a.valid & self.a.ready),
        ]

        # Stage 1: the tables, one per input, read at the chunk's values (registered read
        # ports, distributed RAM: 256 entries is too shallow to spend block RAM on). The
        # table changes only between layers, so the ports need not be transparent.
        entries = []
        for n, word in enumerate(split.regs):
            table = Memory(shape=signed(TABLE_BITS), depth=ADD_TABLE_ENTRIES // 2, init=[],
                           attrs={"ram_style": "distributed"})
            m.submodules[f"table_{'ab'[n]}"] = table
            wp = table.write_port()
            m.d.comb += [wp.addr.eq(self.wr.addr[:8]), wp.data.eq(self.wr.data[:TABLE_BITS]),
                         wp.en.eq(self.wr.en & (self.wr.addr[8] == n))]
            ports = [table.read_port(transparent_for=()) for _ in range(L)]
            for lane, rp in enumerate(ports):
                m.d.comb += [rp.addr.eq(word[8 * lane:8 * lane + 8]), rp.en.eq(advance)]
            entries.append([rp.data for rp in ports])

        # The output shift of RoundingDivideByPOT; params are static, so no pipelining.
        right = Signal(unsigned(5))
        m.d.comb += right.eq(Mux(p.out_shift < 0, -p.out_shift, 0))

        # Stages 2-6 of every compute lane, then the clamp shifted into the output word.
        valid = Signal(6)
        results = []
        with m.If(advance):
            m.d.sync += valid.eq(Cat(split.busy, valid[:-1]))
            for lane in range(L):
                results.append(self._lane(m, lane, entries[0][lane], entries[1][lane], right))
        gather(m, advance, self.chunks, valid[-1], results, self.o.payload.as_value(),
               self.o.valid)
        return m

    def _lane(self, m: Module, lane: int, ta, tb, right):
        """One compute lane, stages 2-6 (one ``m.d.sync`` register each, under the caller's
        enable); returns the clamped int8 value for the output word."""
        p = self.params

        def reg(name, shape, value):
            s = Signal(shape, name=f"l{lane}_{name}")
            m.d.sync += s.eq(value)
            return s

        # Stage 2: the product (sa + sb) * out_mult as the sum of the two entries (|sum| <
        # 2**60). Stage 3: its SRDHM (no saturation: the sum is never INT32_MIN), |high| <
        # 2**29. Stages 4-5: RDBPOT (the rounding addend reaches 2**30 for e = 31: 32 bits).
        # Stage 6: output zero point.
        total = reg("sum", signed(TABLE_BITS + 1), ta + tb)
        high = reg("high", signed(30), srdhm_high(total))
        rounded = reg("rounded", signed(32), high + rdbpot_nudge(high, right))
        scaled = reg("scaled", signed(30), rounded >> right)
        biased = reg("biased", signed(31), scaled + p.out_zp)

        # The clamp feeds the output word register directly.
        return Mux(biased < p.act_min, p.act_min,
                   Mux(biased > p.act_max, p.act_max, biased))[:8]
