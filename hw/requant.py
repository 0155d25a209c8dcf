"""Requantizer: int32 accumulators -> int8 activations, TFLite-exact, two DSP48E1 per
compute lane."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .booth import booth_digits
from .chunked import Splitter, check_lanes, gather
from .config import REQUANT_INPUT_BITS
from .layout import REQUANT_RECORD_FIELDS, scale
from .mbqm import rdbpot_nudge, srdhm_high
from .ports import WritePortSignature

__all__ = ["Requantizer", "acc_layout", "table_layout", "booth_pairs"]

#: the multiplier's low part: an unsigned 17-bit value is an 18-bit signed DSP operand
_MULT_LO_BITS = 17


def acc_layout(lanes: int, depth: int, kinds: int = 1) -> data.StructLayout:
    """Payload of a :class:`Requantizer`'s input ``i`` (the stream from the DW array or the
    engine): ``acc int32[lanes]``, the table ``group`` (``0 .. depth-1``) and, with
    ``kinds=2``, the word's ``kind``."""
    fields = {"acc": data.ArrayLayout(signed(32), lanes),
              "group": unsigned(ceil_log2(depth) or 1)}
    if kinds > 1:
        fields["kind"] = 1
    return data.StructLayout(fields)


def table_layout(lanes: int) -> data.StructLayout:
    """One requant-table record (``hw.layout.REQUANT_RECORD_FIELDS``): ``bias int32[lanes]``,
    ``mult int32[lanes]``, ``shift int8[lanes]``, in that order from bit 0.

    A :class:`Requantizer` holds records of ``table_layout(compute_lanes)``, one per chunk
    of a word. The bit order equals the DDR record (docs/ARCHITECTURE.md, "Requant tables"):
    the ``9*lanes`` little-endian bytes of a record, read as one little-endian integer, are
    the value of this layout, so a record assembled from 64-bit beats is written as is (the
    zero bytes that pad it to whole beats when ``9*lanes`` is not a multiple of 8 are above
    the layout's bits).
    """
    return data.StructLayout({name: data.ArrayLayout(signed(bits), lanes)
                              for name, bits in REQUANT_RECORD_FIELDS})


class Requantizer(wiring.Component):
    """Per-lane TFLite requantization with a per-group table of bias, multiplier and shift.

    For each lane ``l = c*compute_lanes + j`` of a word (chunk ``c``, compute lane ``j``)
    with ``rec = table[group*chunks + c]``::

        o[l] = clamp(MultiplyByQuantizedMultiplier(acc[l] + rec.bias[j], rec.mult[j],
                                                   rec.shift[j]) + zp, act_min, act_max)

    with TFLite's exact integer semantics (``dwsep.host.numerics``) for every input in its
    domain: ``(acc + bias) << max(shift, 0)`` must fit a signed ``input_bits``-bit integer
    (the compiler proves it per channel, so neither int32 wraparound nor the SRDHM
    saturation can occur), ``mult`` must be in ``[0, 2**31)`` (what ``QuantizeMultiplier``
    gives) and ``shift`` in ``[-31, 30]``; outside the domain the result is unspecified.

    The ``input_bits x 31``-bit product is two DSP48E1 products, ``v * mult[:17]`` and
    ``v * mult[17:]``, each with its multiplier and output register. A word is split into
    ``lanes // compute_lanes`` chunks that go through the compute lanes on consecutive
    cycles (:mod:`dwsep.hw.chunked`); words leave in order, one per ``chunks`` cycles at
    full rate. The pipeline has one global enable: it advances whenever its output register
    is empty or being taken, and stalls as a whole otherwise.

    The table holds one record of ``compute_lanes`` lanes per chunk, ``depth * chunks`` in
    all, so each cycle reads exactly the record of the chunk entering the compute lanes: no
    register holds a group's other chunks and no mux picks among them.

    With ``kinds=2`` it serves two streams of words that share its pipeline (the engine's
    expand and project words): each word carries its ``kind``, which picks its ``zp``,
    ``act_min`` and ``act_max`` and travels with it to ``o``. The caller gives each kind's
    words their own table groups (the engine numbers project groups from ``j_group_base``).

    Parameters
    ----------
    lanes:
        Values per word, a positive multiple of 8.
    depth:
        Lane groups in the table (of the largest layer): ``depth * chunks`` records.
    compute_lanes:
        Values computed per cycle, a divisor of ``lanes`` (default ``lanes``): 2 DSP48E1
        each.
    input_bits:
        Width of the domain above, 9..25 (default ``REQUANT_INPUT_BITS``); 25 bits is the
        DSP48E1's A port.
    kinds:
        1 (default) or 2: the streams of words that share the pipeline.
    lut_lanes:
        Compute lanes (the last ones, 0 by default) that form the high product ``v *
        mult[17:]`` in LUTs (:func:`booth_pairs`, in the same two pipeline stages as the
        DSP48E1's multiplier and output registers) instead of a DSP48E1: one DSP48E1 per
        such lane instead of two, for about 400 LUTs each.

    Members
    -------
    i : ``In(stream.Signature(acc_layout(lanes, depth, kinds)))``
        Accumulators and the lane group of their table records (``ceil_log2(depth) or 1``
        bits); with ``kinds=2`` also ``kind`` (1 bit). ``i.ready`` does not depend on
        ``i.valid``.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), lanes)))``
        With ``kinds=2``: ``StructLayout({"value": ArrayLayout(signed(8), lanes), "kind":
        1})``.
    wr : ``In(WritePortSignature(ceil_log2(depth*chunks) or 1, table_layout(compute_lanes)))``
        Table write port (always ready): record ``group*chunks + c`` holds lanes
        ``c*compute_lanes .. (c+1)*compute_lanes - 1`` of the group. Write the table only
        while no word is in flight.
    zp, act_min, act_max : ``In(signed(8))``
        Output zero point and clamp bounds, held constant while a layer runs; with
        ``kinds=2``, ``In(ArrayLayout(signed(8), 2))``, one per kind.
    """

    #: Cycles from the cycle a word is accepted on ``i`` to the cycle it is offered on ``o``
    #: (with ``o.ready`` high) when ``compute_lanes == lanes``: word register (table read);
    #: bias add; left shift; the two DSP products (multiplier and output registers); their
    #: sum; high-mul rounding; rounding-shift addend; rounding shift; zero point; clamp into
    #: the output word. A word of ``n`` chunks takes ``LATENCY + n - 1`` (:attr:`latency`).
    LATENCY = 11

    def __init__(self, lanes: int, depth: int, compute_lanes: int | None = None,
                 input_bits: int = REQUANT_INPUT_BITS, *, kinds: int = 1,
                 lut_lanes: int = 0):
        compute_lanes = check_lanes(lanes, compute_lanes)
        if kinds not in (1, 2):
            raise ValueError(f"'kinds' must be 1 or 2, not {kinds!r}")
        if not isinstance(depth, int) or depth <= 0:
            raise ValueError(f"'depth' must be a positive int, not {depth!r}")
        if not isinstance(input_bits, int) or not 9 <= input_bits <= 25:
            raise ValueError(f"'input_bits' must be an int in 9..25, not {input_bits!r}")
        if not isinstance(lut_lanes, int) or not 0 <= lut_lanes <= compute_lanes:
            raise ValueError(f"'lut_lanes' must be an int in 0..{compute_lanes}, not "
                             f"{lut_lanes!r}")
        self.lanes = lanes
        self.depth = depth
        self.compute_lanes = compute_lanes
        self.input_bits = input_bits
        #: chunks per word = cycles per word at full rate
        self.chunks = lanes // compute_lanes
        #: this instance's latency from acceptance to output
        self.latency = self.LATENCY + self.chunks - 1
        self.kinds = kinds
        self.lut_lanes = lut_lanes
        values = data.ArrayLayout(signed(8), lanes)
        param = signed(8)
        if kinds > 1:
            values = data.StructLayout({"value": values, "kind": 1})
            param = data.ArrayLayout(signed(8), kinds)
        super().__init__({
            "i": In(stream.Signature(acc_layout(lanes, depth, kinds))),
            "o": Out(stream.Signature(values)),
            "wr": In(WritePortSignature(ceil_log2(depth * self.chunks) or 1,
                                        table_layout(compute_lanes))),
            "zp": In(param),
            "act_min": In(param),
            "act_max": In(param),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.compute_lanes

        # A registered read port; the table changes only between layers, so it need not be
        # transparent. Distributed RAM (LUTRAM): the table is small (9 bytes a channel) but
        # wide, and block RAM is the scarcer resource: Yosys would put pynq-z2's 128 x 576
        # DW table in 8 RAMB36 used to a quarter of their depth.
        m.submodules.table = table = Memory(shape=table_layout(L),
                                            depth=self.depth * self.chunks, init=[],
                                            attrs={"ram_style": "distributed"})
        wp = table.write_port()
        rp = table.read_port(transparent_for=())
        m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data),
                     wp.en.eq(self.wr.en)]

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Stage 0: the word register. In each moving cycle the table is read at the record
        # of the chunk that will be in the split registers next: chunk 0 of the word being
        # accepted, or the next chunk of the word in the registers (its group registered
        # here). The record thus arrives with its chunk; a stalled word keeps its record.
        load = Signal()
        split = Splitter(m, advance, self.chunks, load, [(self.i.payload.acc, 32 * L)])
        group = Signal.like(self.i.payload.group, name="word_group")
        with m.If(load):
            m.d.sync += group.eq(self.i.payload.group)
        m.d.comb += [
            self.i.ready.eq(advance & split.free),
            load.eq(self.i.valid & self.i.ready),
            rp.addr.eq(Mux(split.free, self._record(self.i.payload.group, 0),
                           self._record(group, split.index + 1))),
            rp.en.eq(advance),
        ]
        (acc,) = split.regs

        valid = Signal(9)
        results = []
        with m.If(advance):
            m.d.sync += valid.eq(Cat(split.busy, valid[:-1]))
        params = self._params(m, advance, load, valid)
        with m.If(advance):
            for lane in range(L):
                rec = {name: getattr(rp.data, name)[lane] for name in ("bias", "mult", "shift")}
                results.append(self._lane(m, lane, acc[32 * lane:32 * lane + 32].as_signed(),
                                          rec, *params))
        out = self.o.payload if self.kinds == 1 else self.o.payload.value
        gather(m, advance, self.chunks, valid[-1], results, out.as_value(), self.o.valid)
        return m

    def _params(self, m: Module, advance, load, valid):
        """The zero point for stage 9's sum and the clamp bounds of the word in stage 9:
        the ports, or with two kinds the kind's, picked from the kind each chunk carries
        through the stages (the bounds registered with stage 9, so the clamp's path is as
        with one kind)."""
        if self.kinds == 1:
            return self.zp, self.act_min, self.act_max
        word_kind = Signal(name="word_kind")
        with m.If(load):
            m.d.sync += word_kind.eq(self.i.payload.kind)
        kinds = Signal(9)   # the kind of the chunk in stages 1..9
        lo, hi = Signal(signed(8), name="act_min_9"), Signal(signed(8), name="act_max_9")
        with m.If(advance):
            m.d.sync += [kinds.eq(Cat(word_kind, kinds[:-1])),
                         lo.eq(self.act_min[kinds[7]]), hi.eq(self.act_max[kinds[7]])]
            with m.If(valid[-1]):   # each chunk of the word gathered (all of one kind)
                m.d.sync += self.o.payload.kind.eq(kinds[8])
        return self.zp[kinds[7]], lo, hi

    def _record(self, group, chunk):
        """Table address ``group*chunks + chunk`` (``chunk < chunks``, an int or a value
        whose low bits are the chunk): a concatenation when ``chunks`` is a power of two,
        else shifts and adds (:func:`~dwsep.hw.layout.scale`); no multiplier either way."""
        if self.chunks & (self.chunks - 1) == 0:
            bits = exact_log2(self.chunks)
            return Cat(C(chunk, bits) if isinstance(chunk, int) else chunk[:bits], group)
        return scale(group, self.chunks) + chunk

    def _lane(self, m: Module, lane: int, acc, rec, zp, act_min, act_max):
        """One compute lane, stages 1-9 (one ``m.d.sync`` register each, under the caller's
        enable); returns the clamped int8 value for the output word (``zp`` is added in
        stage 9, ``act_min``/``act_max`` clamp its result)."""
        bits = self.input_bits

        def reg(name, shape, value):
            s = Signal(shape, name=f"l{lane}_{name}")
            m.d.sync += s.eq(value)
            return s

        # Stage 1: bias add (in the domain the sum fits `bits`).
        total = reg("total", signed(bits), acc + rec["bias"].as_signed())
        mult1 = reg("mult1", unsigned(31), rec["mult"][:31])
        shift = reg("shift", signed(8), rec["shift"].as_signed())

        # Stage 2: left shift by max(shift, 0); right amount max(-shift, 0).
        left = Mux(shift < 0, 0, shift[:5])
        value = reg("value", signed(bits), total << left)
        mult2 = reg("mult2", unsigned(31), mult1)
        right2 = reg("right2", unsigned(5), Mux(shift < 0, -shift, 0))

        # Stages 3-4: two DSP products (multiplier and output registers): value times the
        # low 17 and the high 14 bits of the multiplier.
        hi_shape = signed(bits + 31 - _MULT_LO_BITS + 1)
        lo = reg("lo", signed(bits + _MULT_LO_BITS + 1),
                 value * mult2[:_MULT_LO_BITS].as_unsigned())
        if lane >= self.compute_lanes - self.lut_lanes:
            # stage 3: the partial products summed in pairs; stage 4: their sum
            pairs = [reg(f"hi_pair{n}", hi_shape, term)
                     for n, term in enumerate(booth_pairs(value, mult2[_MULT_LO_BITS:]))]
            hi = reg("hi_p", hi_shape, _sum(pairs))
        else:
            hi = reg("hi", hi_shape, value * mult2[_MULT_LO_BITS:].as_unsigned())
            hi = reg("hi_p", hi.shape(), hi)
        right3 = reg("right3", unsigned(5), right2)
        lo = reg("lo_p", lo.shape(), lo)
        right4 = reg("right4", unsigned(5), right3)

        # Stage 5: the product. Stage 6: SRDHM (|high| < 2**(bits-1): no saturation).
        prod = reg("prod", signed(bits + 31), (hi << _MULT_LO_BITS) + lo)
        right5 = reg("right5", unsigned(5), right4)
        high = reg("high", signed(bits), srdhm_high(prod))
        right6 = reg("right6", unsigned(5), right5)

        # Stage 7: RDBPOT's rounding addend (up to 2**30 for e = 31: 32 bits). Stage 8: the
        # arithmetic shift; |scaled| <= |high| / 2**e + 1.
        rounded = reg("rounded", signed(32), high + rdbpot_nudge(high, right6))
        right7 = reg("right7", unsigned(5), right6)
        scaled = reg("scaled", signed(bits + 1), rounded >> right7)

        # Stage 9: zero point; the clamp feeds the output word register.
        biased = reg("biased", signed(bits + 2), scaled + zp)
        return Mux(biased < act_min, act_min, Mux(biased > act_max, act_max, biased))[:8]


def booth_pairs(a: Value, b: Value) -> list[Value]:
    """``a * b`` (``a`` signed, ``b`` unsigned) as radix-4 Booth partial products
    (:func:`~.booth.booth_digits`), summed two by two: their sum is the product. Each pair
    is one adder from the operands' bits, so a pipeline register after the pairs and one
    after their sum give the product in the two stages of a DSP48E1's multiplier and output
    registers."""
    digits = booth_digits(a, Cat(b, C(0, 2 - len(b) % 2)))  # a zero sign bit, whole digits
    # a digit's negation +1 goes into the next term's low bits, which are zero; the last
    # digit is never negative (b's top bit is the zero sign bit)
    terms = [term | (digits[k - 1][1] << (2 * k - 2)) if k else term
             for k, (term, _) in enumerate(digits)]
    return [terms[n] + terms[n + 1] if n + 1 < len(terms) else terms[n]
            for n in range(0, len(terms), 2)]


def _sum(values: list[Value]) -> Value:
    while len(values) > 1:
        values = [values[n] + values[n + 1] if n + 1 < len(values) else values[n]
                  for n in range(0, len(values), 2)]
    return values[0]
