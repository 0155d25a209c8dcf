"""ResidualAdd: TFLite int8 ADD of two activation streams, bit-exact, pipelined."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .chunked import Splitter, check_lanes, gather
from .mbqm import rdbpot_nudge, srdhm_high

__all__ = ["ResidualAdd", "add_params_layout"]

#: TFLite's 8-bit ADD scales both inputs by 2**LEFT_SHIFT before rescaling them.
LEFT_SHIFT = 20

#: operands split here into DSP48E1-sized parts: an unsigned 17-bit low part is an 18-bit
#: signed operand
_LO_BITS = 17


def add_params_layout() -> data.StructLayout:
    """The per-layer ADD parameters (``dwsep.sim.models.add.add_params`` computes them):
    zero points ``a_zp``, ``b_zp``, ``out_zp``; multipliers ``a_mult``, ``b_mult``,
    ``out_mult`` (int32); shifts ``a_shift``, ``b_shift``, ``out_shift`` (TFLite's
    ``*_shift``, ``<= 0``); clamp bounds ``act_min``, ``act_max``."""
    return data.StructLayout({
        "a_zp": signed(8), "b_zp": signed(8),
        "a_mult": signed(32), "b_mult": signed(32), "out_mult": signed(32),
        "a_shift": signed(8), "b_shift": signed(8), "out_shift": signed(8),
        "out_zp": signed(8), "act_min": signed(8), "act_max": signed(8),
    })


class ResidualAdd(wiring.Component):
    """Element-wise TFLite int8 ADD ``o = a + b`` of two streams of int8 words.

    For each lane, with ``p = params`` and MBQM TFLite's
    ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (SRDHM, then RoundingDivideByPOT by
    ``-shift``)::

        sa = MBQM((a - p.a_zp) << 20, p.a_mult, p.a_shift)
        sb = MBQM((b - p.b_zp) << 20, p.b_mult, p.b_shift)
        o  = clamp(MBQM(sa + sb, p.out_mult, p.out_shift) + p.out_zp, p.act_min, p.act_max)

    exactly (``dwsep.sim.models.add.add_model``). Shifts must be in ``[-31, 0]`` (TFLite
    never produces others); multipliers may be any int32. No step can overflow or saturate:
    ``|a - a_zp| <= 255``, so ``(a - a_zp) << 20`` is never INT32_MIN and
    ``|sa|, |sb| <= 255 * 2**20``. The ``<< 20`` is taken out of the input products:
    ``SRDHM(d << 20, m) = floor((d*m + 2**10) / 2**11)``, a 9 x 32-bit product.

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
        Lanes computed per cycle, a divisor of ``lanes`` (default ``lanes``). Fewer compute
        lanes cost fewer multipliers (three per compute lane: 9x32, 9x32 and 30x32 bits
        signed, 8 DSP48E1 in Yosys ``synth_xilinx``) and divide the throughput.

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
    params : ``In(add_params_layout())``
        Held constant while words are in flight; ``act_min <= act_max``.
    """

    #: Cycles from the cycle a word is accepted to the cycle it is offered on ``o`` (with
    #: ``o.ready`` high) when ``compute_lanes == lanes``: chunk register; zero point;
    #: input products (multiplier and output registers, their sum); SRDHM; rounding add;
    #: shift; sum; output product (multiplier and output registers, two adder stages);
    #: SRDHM; rounding add; shift; zero point; clamp into the output word.
    #: A word of ``n`` chunks takes ``LATENCY + n - 1`` (:attr:`latency`).
    LATENCY = 19

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
            "params": In(add_params_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        width = 8 * self.compute_lanes
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
        word_a, word_b = split.regs

        # Right-shift amounts of the three RDBPOTs; params are static, so no pipelining.
        def right(shift):
            amount = Signal(unsigned(5))
            m.d.comb += amount.eq(Mux(shift < 0, -shift, 0))
            return amount
        rights = right(p.a_shift), right(p.b_shift), right(p.out_shift)

        # Stages 1-17 of every compute lane, then the clamp shifted into the output word.
        valid = Signal(17)
        results = []
        with m.If(advance):
            m.d.sync += valid.eq(Cat(split.busy, valid[:-1]))
            for lane in range(self.compute_lanes):
                chunk = slice(8 * lane, 8 * lane + 8)
                results.append(self._lane(m, lane, word_a[chunk].as_signed(),
                                          word_b[chunk].as_signed(), rights))
        gather(m, advance, self.chunks, valid[-1], results, self.o.payload.as_value(),
               self.o.valid)
        return m

    def _lane(self, m: Module, lane: int, xa, xb, rights):
        """One compute lane, stages 1-17 (one ``m.d.sync`` register each, under the
        caller's enable); returns the clamped int8 value for the output word."""
        p = self.params
        right_a, right_b, right_out = rights

        def reg(name, shape, value):
            s = Signal(shape, name=f"l{lane}_{name}")
            m.d.sync += s.eq(value)
            return s

        def dsp_product(tag, x, y, lo_bits):
            """``x * y`` from DSP48E1 products, each with its multiplier and output
            registers: ``x`` times the low ``lo_bits`` and the high bits of ``y``, then
            their sum (3 stages); an ``x`` wider than the A port (25 bits) is split too,
            and the four products join in two adder stages (5 stages). ``x`` and ``y`` are
            registers of the stage before (the DSP's input registers)."""
            y_lo, y_hi = y[:lo_bits].as_unsigned(), y[lo_bits:].as_signed()
            if len(x) <= 25:
                lo = reg(f"{tag}_lo", signed(len(x) + lo_bits + 1), x * y_lo)
                hi = reg(f"{tag}_hi", signed(len(x) + len(y_hi)), x * y_hi)
                lo, hi = reg(f"{tag}_lo_p", lo.shape(), lo), reg(f"{tag}_hi_p", hi.shape(), hi)
                return reg(f"{tag}_prod", signed(len(x) + len(y)), (hi << lo_bits) + lo)
            # x too wide for the A port: four partial products
            x_lo, x_hi = x[:lo_bits].as_unsigned(), x[lo_bits:].as_signed()
            parts = {"ll": x_lo * y_lo, "lh": x_lo * y_hi, "hl": x_hi * y_lo, "hh": x_hi * y_hi}
            regs = {k: reg(f"{tag}_{k}", signed(len(v) + 1), v) for k, v in parts.items()}
            regs = {k: reg(f"{tag}_{k}_p", v.shape(), v) for k, v in regs.items()}
            mid = reg(f"{tag}_mid", signed(len(x) + len(y) - lo_bits + 2), regs["lh"] + regs["hl"])
            hh = reg(f"{tag}_hh_d", regs["hh"].shape(), regs["hh"])
            ll = reg(f"{tag}_ll_d", regs["ll"].shape(), regs["ll"])
            upper = reg(f"{tag}_upper", signed(len(x) + len(y) - lo_bits + 2),
                        (hh << lo_bits) + mid)
            ll = reg(f"{tag}_ll_d2", ll.shape(), ll)
            return reg(f"{tag}_prod", signed(len(x) + len(y) + 1), (upper << lo_bits) + ll)

        def rescale_input(tag, x, zp, mult, right):
            # Stage 1: zero point (and the multiplier beside it, the DSP's B register).
            # Stages 2-4: the 9 x 32 product (|d * mult| <= 255 * 2**31, 40 bits), two DSP
            # products and their sum. Stage 5: SRDHM of (d << 20) * mult, i.e. of d * mult
            # with 11 fraction bits; |high| <= 255 * 2**20 fits 29 bits. Stages 6-7: RDBPOT
            # (the rounding addend reaches 2**30 for e = 31: 32 bits).
            d = reg(f"{tag}_d", signed(9), x - zp)
            m_in = reg(f"{tag}_mult", signed(32), mult)
            prod = dsp_product(tag, d, m_in, _LO_BITS)[:40].as_signed()
            high = reg(f"{tag}_high", signed(29), srdhm_high(prod, 31 - LEFT_SHIFT))
            rounded = reg(f"{tag}_rounded", signed(32), high + rdbpot_nudge(high, right))
            return reg(f"{tag}_scaled", signed(29), rounded >> right)

        scaled_a = rescale_input("a", xa, p.a_zp, p.a_mult, right_a)
        scaled_b = rescale_input("b", xb, p.b_zp, p.b_mult, right_b)

        # Stage 8: the sum, |sum| <= 255 * 2**21 (30 bits). Stages 9-13: the 30 x 32
        # product (61 bits) as four DSP products and two adder stages. Stage 14: SRDHM (no
        # saturation: the sum is never INT32_MIN), |high| <= 255 * 2**21. Stages 15-16:
        # RDBPOT. Stage 17: output zero point.
        total = reg("sum", signed(30), scaled_a + scaled_b)
        out_mult = reg("out_mult", signed(32), p.out_mult)
        prod = dsp_product("out", total, out_mult, _LO_BITS)[:61].as_signed()
        high = reg("out_high", signed(30), srdhm_high(prod))
        rounded = reg("out_rounded", signed(32), high + rdbpot_nudge(high, right_out))
        scaled = reg("out_scaled", signed(30), rounded >> right_out)
        biased = reg("biased", signed(30), scaled + p.out_zp)

        # The clamp feeds the output word register directly.
        return Mux(biased < p.act_min, p.act_min,
                   Mux(biased > p.act_max, p.act_max, biased))[:8]
