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


def acc_layout(lanes: int, depth: int, kinds: int = 1, acc_bits: int = 32) -> data.StructLayout:
    """Payload of a :class:`Requantizer`'s input ``i`` (the stream from the DW array or the
    engine): ``acc`` (``lanes`` signed ``acc_bits``-bit accumulators: int32, or as wide as
    the DW array's sums get), the table ``group`` (``0 .. depth-1``) and, with ``kinds=2``,
    the word's ``kind``."""
    fields = {"acc": data.ArrayLayout(signed(acc_bits), lanes),
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

    With ``max_pool_pixels`` (a global average pool or MEAN streamed through the DW stage) and
    ``pool_on`` high, the words are ``pixels`` pixels of ``groups`` words each (groups ``0 ..
    groups-1`` in order) and each lane's requantizer input is the sum over the pixels::

        o[l] = clamp(MBQM(sum_p acc_p[l] + rec.bias[j], ...) + zp, act_min, act_max)

    one output word per group, after the last pixel's. The partial sums (``acc + bias`` of
    the first pixel, plus each later pixel's ``acc``) live in a memory of one record of
    ``compute_lanes`` sums per chunk (``depth * chunks`` records, block RAM), read with the
    table and added in a stage of their own (stage 1p: the memory's output is registered
    first, and the bias is added there too); a word of a group must not be read before the
    sum of its group's previous word is written: with ``(groups - 1) * chunks >= 3`` that
    never happens at full rate, and a pool of fewer groups takes a word only when stages
    0 to 1p are empty (``chunks + 3`` cycles a word). The sum must stay in the
    domain of ``input_bits`` bits at every pixel: the compiler proves it from the extremes.

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
    acc_bits:
        Width of the input accumulators (default 32); the DW array's are narrower.
    lut_lanes:
        Compute lanes (the last ones, 0 by default) that form the high product ``v *
        mult[17:]`` in LUTs (:func:`booth_pairs`, in the same two pipeline stages as the
        DSP48E1's multiplier and output registers) instead of a DSP48E1: one DSP48E1 per
        such lane instead of two, for about 400 LUTs each.
    max_pool_pixels:
        The most pixels a pooled stream has (0, the default: no pooling); with ``kinds=1``
        only.

    Members
    -------
    i : ``In(stream.Signature(acc_layout(lanes, depth, kinds, acc_bits)))``
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
    pool_on, pool_pixels, pool_groups : ``In(1)``, ``In(range(max_pool_pixels + 1))``,
    ``In(range(depth + 1))``
        With ``max_pool_pixels``: sum the words of ``pool_pixels`` pixels of ``pool_groups``
        groups (``pool_on``), held constant while a layer runs. The pixel count restarts
        after each pool's last word (and at reset).
    """

    #: Cycles from the cycle a word is accepted on ``i`` to the cycle it is offered on ``o``
    #: (with ``o.ready`` high) when ``compute_lanes == lanes``: word register (table read);
    #: bias add; left shift; the two DSP products (multiplier and output registers); their
    #: sum; high-mul rounding; rounding-shift addend; rounding shift; zero point; clamp into
    #: the output word. A word of ``n`` chunks takes ``LATENCY + n - 1`` (:attr:`latency`),
    #: one more with ``max_pool_pixels`` (the pool add, stage 1p).
    LATENCY = 11

    def __init__(self, lanes: int, depth: int, compute_lanes: int | None = None,
                 input_bits: int = REQUANT_INPUT_BITS, *, kinds: int = 1,
                 lut_lanes: int = 0, max_pool_pixels: int = 0, acc_bits: int = 32):
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
        if not isinstance(max_pool_pixels, int) or max_pool_pixels < 0:
            raise ValueError(f"'max_pool_pixels' must be a non-negative int, not "
                             f"{max_pool_pixels!r}")
        if max_pool_pixels and kinds > 1:
            raise ValueError("a requantizer that pools serves one kind of word (kinds=1)")
        if not isinstance(acc_bits, int) or not 8 <= acc_bits <= 32:
            raise ValueError(f"'acc_bits' must be an int in 8..32, not {acc_bits!r}")
        self.max_pool_pixels = max_pool_pixels
        self.acc_bits = acc_bits
        self.lanes = lanes
        self.depth = depth
        self.compute_lanes = compute_lanes
        self.input_bits = input_bits
        #: chunks per word = cycles per word at full rate
        self.chunks = lanes // compute_lanes
        #: this instance's latency from acceptance to output
        self.latency = self.LATENCY + self.chunks - 1 + (1 if max_pool_pixels else 0)
        self.kinds = kinds
        self.lut_lanes = lut_lanes
        values = data.ArrayLayout(signed(8), lanes)
        param = signed(8)
        if kinds > 1:
            values = data.StructLayout({"value": values, "kind": 1})
            param = data.ArrayLayout(signed(8), kinds)
        super().__init__({
            "i": In(stream.Signature(acc_layout(lanes, depth, kinds, acc_bits))),
            "o": Out(stream.Signature(values)),
            "wr": In(WritePortSignature(ceil_log2(depth * self.chunks) or 1,
                                        table_layout(compute_lanes))),
            "zp": In(param),
            "act_min": In(param),
            "act_max": In(param),
            **({"pool_on": In(1), "pool_pixels": In(range(max_pool_pixels + 1)),
                "pool_groups": In(range(depth + 1))} if max_pool_pixels else {}),
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
        a = self.acc_bits
        split = Splitter(m, advance, self.chunks, load, [(self.i.payload.acc, a * L)])
        group = Signal.like(self.i.payload.group, name="word_group")
        with m.If(load):
            m.d.sync += group.eq(self.i.payload.group)
        pooling = bool(self.max_pool_pixels)
        valid = Signal(10 if pooling else 9)   # a chunk in stage 1, [1p,] 2, ..., 9
        hazard = self._pool_hazard(m, load, split, valid) if pooling else 0
        m.d.comb += [
            self.i.ready.eq(advance & split.free & ~hazard),
            load.eq(self.i.valid & self.i.ready),
            rp.addr.eq(Mux(split.free, self._record(self.i.payload.group, 0),
                           self._record(group, split.index + 1))),
            rp.en.eq(advance),
        ]
        (acc,) = split.regs

        pool = self._pool_sums(m, advance, rp.addr) if pooling else None
        results = []
        with m.If(advance):
            m.d.sync += valid.eq(Cat(split.busy, valid[:-1]))
            if pooling:
                # past stage 1p only the chunks of a pool's last pixel go on
                m.d.sync += valid[2].eq(valid[1] & (~self.pool_on | pool["last"]))
        params = self._params(m, advance, load, valid)
        with m.If(advance):
            for lane in range(L):
                rec = {name: getattr(rp.data, name)[lane] for name in ("bias", "mult", "shift")}
                results.append(self._lane(m, lane, acc[a * lane:a * lane + a].as_signed(),
                                          rec, *params, pool=pool))
        if pooling:
            # stage 1p's sums back into the memory at their record
            wp = pool["memory"].write_port()
            m.d.comb += [wp.addr.eq(pool["rec"]), wp.en.eq(valid[1] & self.pool_on),
                         wp.data.eq(Cat(*pool["lanes"]))]
        out = self.o.payload if self.kinds == 1 else self.o.payload.value
        gather(m, advance, self.chunks, valid[-1], results, out.as_value(), self.o.valid)
        return m

    def _pool_hazard(self, m: Module, load, split, valid):
        """The pixel count of the pooled stream, the first/last-pixel flags of the word in
        the split stage (``self._word_first``, ``self._word_last``), and the hazard: a pool
        of so few groups that a group's next word could come before its sum is written
        (fewer than 3 moving cycles from its last chunk leaving stage 0 to the next word's
        first: ``(groups - 1) * chunks < 3``) while a chunk is in stage 0, 1 or 1p. It
        depends on registers and layer parameters only, not on the offered word."""
        pixel = Signal(range(self.max_pool_pixels + 1), name="pool_pixel")
        self._word_first = first = Signal(name="word_first")
        self._word_last = last = Signal(name="word_last")
        g = self.i.payload.group
        pixel_last = pixel == self.pool_pixels - 1
        with m.If(load & self.pool_on):
            m.d.sync += [first.eq(pixel == 0), last.eq(pixel_last)]
            with m.If(g == self.pool_groups - 1):
                m.d.sync += pixel.eq(Mux(pixel_last, 0, pixel + 1))
        few = self.pool_groups <= -(-3 // self.chunks)
        return self.pool_on & few & (split.busy | valid[0] | valid[1])

    def _pool_sums(self, m: Module, advance, addr):
        """The partial-sum memory, read at the table's address and registered in stage 1,
        and the chunk tags of stages 1 and 1p (record, first and last pixel)."""
        L = self.compute_lanes
        m.submodules.pool_sums = sums = Memory(
            shape=data.ArrayLayout(signed(self.input_bits), L),
            depth=self.depth * self.chunks, init=[])
        rp = sums.read_port(transparent_for=())
        m.d.comb += [rp.addr.eq(addr), rp.en.eq(advance)]
        rec0 = Signal.like(addr, name="pool_rec0")
        with m.If(advance):
            m.d.sync += rec0.eq(addr)       # the record of the chunk in stage 0
        tags = {}
        for name, value, shape in (("rec", rec0, len(addr)), ("first", self._word_first, 1),
                                   ("last", self._word_last, 1)):
            s1 = Signal(shape, name=f"pool_{name}1")
            s1p = Signal(shape, name=f"pool_{name}1p")
            with m.If(advance):
                m.d.sync += [s1.eq(value), s1p.eq(s1)]
            tags[name + "1"], tags[name] = s1, s1p
        sum1 = Signal.like(rp.data, name="pool_sum1")
        with m.If(advance):
            m.d.sync += sum1.eq(rp.data)
        return dict(tags, sum1=sum1, memory=sums, lanes=[])

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

    def _lane(self, m: Module, lane: int, acc, rec, zp, act_min, act_max, *, pool=None):
        """One compute lane, stages 1-9 (and 1p when pooling; one ``m.d.sync`` register
        each, under the caller's enable); returns the clamped int8 value for the output word
        (``zp`` is added in stage 9, ``act_min``/``act_max`` clamp its result)."""
        bits = self.input_bits

        def reg(name, shape, value):
            s = Signal(shape, name=f"l{lane}_{name}")
            m.d.sync += s.eq(value)
            return s

        mult1 = reg("mult1", unsigned(31), rec["mult"][:31])
        shift = reg("shift", signed(8), rec["shift"].as_signed())
        if pool is None:
            # Stage 1: bias add (in the domain the sum fits `bits`).
            total = reg("total", signed(bits), acc + rec["bias"].as_signed())
        else:
            # Stage 1: the operands registered (the sums' memory is read meanwhile). Stage
            # 1p: the bias add, or, past a pool's first pixel, the add of its sum so far
            # (bias included), written back.
            acc1 = reg("acc1", signed(bits), acc)    # in the domain: no bits lost
            bias1 = reg("bias1", signed(bits), rec["bias"][:bits])
            earlier = Mux(self.pool_on & ~pool["first1"], pool["sum1"][lane], bias1)
            total = reg("pooled", signed(bits), acc1 + earlier)
            pool["lanes"].append(total)
            mult1 = reg("mult1p", unsigned(31), mult1)
            shift = reg("shift1p", signed(8), shift)

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
