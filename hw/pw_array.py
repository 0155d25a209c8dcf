"""Pointwise PE array: ``P x Q`` int8 MACs reducing one pixel's mid groups per output group."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .ports import WritePortSignature

__all__ = ["PointwiseArray", "PWGeometry", "pw_acc_layout", "pw_weight_layout",
           "array_latency", "packed_products", "adder_tree", "reduction", "CHAIN",
           "LANE_SHIFT", "TREE_LEVELS_PER_STAGE"]

#: adder-tree levels between two pipeline registers (two narrow adds, < 24 bits, per cycle)
TREE_LEVELS_PER_STAGE = 2

#: Two int8 products per DSP48E1: the weights of output lanes ``2j`` and ``2j+1`` enter the
#: pre-adder as ``(w[2j+1] << LANE_SHIFT) + w[2j]`` (25 bits for weights in -127..127) and
#: multiply one activation.
LANE_SHIFT = 17

#: Rows whose packed products one DSP cascade sums before the lanes are separated: the low
#: lane's sum stays within 17 signed bits, ``|sum| <= CHAIN * 127 * 128 < 2**16``, so it is
#: the sign-extended low 17 bits and the high lane is the rest, exactly.
CHAIN = 4


def array_latency(rows: int) -> int:
    """:attr:`PointwiseArray.latency` for ``rows`` input lanes: read 1, pre-add 1, multiply
    1, the cascade ``CHAIN``, lane split 1, adder tree over the ``rows / CHAIN`` cascades
    ``ceil(ceil(log2(rows / CHAIN)) / TREE_LEVELS_PER_STAGE)``, accumulate 1."""
    levels = (rows // CHAIN - 1).bit_length()
    return 5 + CHAIN + -(-levels // TREE_LEVELS_PER_STAGE)


def _addr_bits(depth: int) -> int:
    """Bits of an index into ``depth`` entries (at least 1)."""
    return max(1, (depth - 1).bit_length())


@dataclass(frozen=True)
class PWGeometry:
    """Sizes of one pointwise array: ``rows`` (P) input lanes, ``cols`` (Q) output lanes,
    up to ``in_groups_max`` input words per pixel and ``out_groups_max`` output groups."""
    rows: int
    cols: int
    in_groups_max: int
    out_groups_max: int

    @property
    def weight_depth(self) -> int:
        return self.in_groups_max * self.out_groups_max

    @classmethod
    def project(cls, config: AcceleratorConfig) -> PWGeometry:
        """The main (project) array: mid groups in, PW output groups out."""
        return cls(config.pw_rows, config.pw_cols, config.mid_groups_max,
                   config.out_groups_max)

    @classmethod
    def expand(cls, config: AcceleratorConfig) -> PWGeometry:
        """The expand array in front of the line buffer: ``P x P``."""
        return cls(config.dw_lanes, config.dw_lanes, config.expand_in_groups_max,
                   config.mid_groups_max)


def _geometry(shape: AcceleratorConfig | PWGeometry) -> PWGeometry:
    return PWGeometry.project(shape) if isinstance(shape, AcceleratorConfig) else shape


def pw_weight_layout(shape: AcceleratorConfig | PWGeometry) -> data.ArrayLayout:
    """One PW weight word: ``int8[P][Q]``, element ``[i][o]`` at byte ``i*Q + o``."""
    g = _geometry(shape)
    return data.ArrayLayout(data.ArrayLayout(signed(8), g.cols), g.rows)


def pw_acc_layout(shape: AcceleratorConfig | PWGeometry) -> data.StructLayout:
    """Payload of the PW array -> requantizer stream (the requantizer's input layout)."""
    g = _geometry(shape)
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(32), g.cols),
        "group": unsigned(_addr_bits(g.out_groups_max)),
    })


class PointwiseArray(wiring.Component):
    """1x1 convolution of one pixel: ``acc[o] = sum_q sum_i x[q][i] * W[og*mid_groups + q][i][o]``
    for each output group ``og``, in 32-bit two's complement.

    A ping-pong pixel buffer (``2 x mid_groups_max`` words of ``P`` bytes) takes the next
    pixel's ``mid_groups`` words while the current pixel is reduced. The reduction issues one
    ``(og, q)`` step per cycle in the order ``og`` outer, ``q`` inner, so the weight address
    ``og*mid_groups + q`` is a plain step counter; it reads one pixel word and one weight word
    (block RAMs, registered reads), forms the ``P x Q`` products, sums them over ``i`` in a
    pipelined adder tree and accumulates over ``q`` in the output register. The reduction
    pipeline stalls as a whole while ``o`` holds a word that is not taken; the input side only
    waits for a free buffer half.

    Parameters
    ----------
    shape : AcceleratorConfig or PWGeometry
        A config gives the main array (``PWGeometry.project``): ``P = config.pw_rows``,
        ``Q = config.pw_cols``, ``config.pw_weight_depth`` weight words. A ``PWGeometry``
        sizes any other array (the expand stage).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(8), P)))``
        Requantized DW words: for each pixel, mid groups ``q = 0..mid_groups-1``.
    mid_groups : ``In(unsigned(bits of mid_groups_max))``
        Mid groups per pixel, ``1..mid_groups_max``; held while a layer runs.
    out_groups : ``In(unsigned(bits of out_groups_max))``
        Output groups per pixel, ``1..out_groups_max``; held while a layer runs.
    start : ``In(1)``
        Pulse before each layer: a synchronous reset of the array's state (pixel buffer
        emptied, counters cleared, words in flight and an untaken ``o`` word dropped), so it
        also aborts a layer cut short.
    wr : ``In(WritePortSignature(bits of pw_weight_depth, pw_weight_layout(config)))``
        Weight memory write port (always ready); word ``og*mid_groups + q``, element
        ``[i][o]`` = weight from mid lane ``(q, i)`` to output lane ``(og, o)``. Write only
        while the array is idle.
    o : ``Out(stream.Signature(pw_acc_layout(config)))``
        Per pixel, ``out_groups`` words ``{acc: int32[Q], group: og}``, ``og`` ascending.

    Attributes
    ----------
    latency : int
        The last ``(og, q)`` step of an output group issued in cycle ``t`` makes ``o.valid``
        high in cycle ``t + latency`` (when not stalled): read 1, multiply 1, adder tree
        ``ceil(ceil(log2 P) / TREE_LEVELS_PER_STAGE)``, accumulate 1.
    """

    def __init__(self, shape: AcceleratorConfig | PWGeometry):
        if not isinstance(shape, AcceleratorConfig | PWGeometry):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {shape!r}")
        self.geometry = g = _geometry(shape)
        if g.rows % CHAIN or g.cols % 2:
            raise ValueError(f"a pointwise array needs rows a multiple of {CHAIN} and an even "
                             f"number of cols, not {g.rows} x {g.cols}")
        self.latency = array_latency(g.rows)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(8), g.rows))),
            "mid_groups": In(unsigned(g.in_groups_max.bit_length())),
            "out_groups": In(unsigned(g.out_groups_max.bit_length())),
            "start": In(1),
            "wr": In(WritePortSignature(_addr_bits(g.weight_depth), pw_weight_layout(g))),
            "o": Out(stream.Signature(pw_acc_layout(g))),
        })

    def elaborate(self, platform):
        g = self.geometry
        P, Q, half_words = g.rows, g.cols, g.in_groups_max
        m = Module()

        m.submodules.pixels = pix = Memory(shape=data.ArrayLayout(signed(8), P),
                                           depth=2 * half_words, init=[])
        m.submodules.weights = wmem = Memory(shape=pw_weight_layout(g),
                                             depth=g.weight_depth, init=[])
        wp = wmem.write_port()
        m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en)]

        full = Signal(2)     # buffer half h holds a whole pixel not yet fully reduced
        filled = Signal(2)   # half that receives its last word this cycle
        drained = Signal(2)  # half whose last step is issued this cycle

        # ---- fill side: write the pixel words into the free half -------------------------
        wr_half = Signal()
        wr_q = Signal(range(half_words))
        pix_wp = pix.write_port()
        accept = self.i.valid & self.i.ready
        m.d.comb += [
            self.i.ready.eq(~Mux(wr_half, full[1], full[0])),
            pix_wp.addr.eq(Mux(wr_half, half_words, 0) + wr_q),
            pix_wp.data.eq(self.i.payload),
            pix_wp.en.eq(accept),
        ]
        with m.If(accept):
            with m.If(wr_q == self.mid_groups - 1):
                m.d.sync += [wr_q.eq(0), wr_half.eq(~wr_half)]
                m.d.comb += filled.eq(Mux(wr_half, 0b10, 0b01))
            with m.Else():
                m.d.sync += wr_q.eq(wr_q + 1)

        # ---- reduce side: one (og, q) step per cycle over the full half -------------------
        adv = Signal()  # global stall of the reduction pipeline
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        rd_half = Signal()
        q = Signal(range(half_words))
        og = Signal(range(g.out_groups_max))
        step = Signal(range(g.weight_depth))  # = og*mid_groups + q
        issue = Signal()
        q_last = q == self.mid_groups - 1
        m.d.comb += issue.eq(adv & Mux(rd_half, full[1], full[0]))

        pix_rp = pix.read_port()
        w_rp = wmem.read_port()
        m.d.comb += [pix_rp.addr.eq(Mux(rd_half, half_words, 0) + q), pix_rp.en.eq(adv),
                     w_rp.addr.eq(step), w_rp.en.eq(adv)]
        with m.If(issue):
            with m.If(~q_last):
                m.d.sync += [q.eq(q + 1), step.eq(step + 1)]
            with m.Elif(og != self.out_groups - 1):
                m.d.sync += [q.eq(0), og.eq(og + 1), step.eq(step + 1)]
            with m.Else():
                m.d.sync += [q.eq(0), og.eq(0), step.eq(0), rd_half.eq(~rd_half)]
                m.d.comb += drained.eq(Mux(rd_half, 0b10, 0b01))
        m.d.sync += full.eq((full | filled) & ~drained)

        with m.If(self.start):
            m.d.sync += [full.eq(0), wr_half.eq(0), wr_q.eq(0), rd_half.eq(0), q.eq(0),
                         og.eq(0), step.eq(0)]

        # ---- pipeline: read -> products -> adder tree -> accumulate -----------------------
        issued = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                           "group": og.shape()}))
        m.d.comb += [issued.valid.eq(issue), issued.first.eq(q == 0), issued.last.eq(q_last),
                     issued.group.eq(og)]
        reduction(m, adv=adv, start=self.start, issued=issued, x=pix_rp.data, w=w_rp.data,
                  rows=P, cols=Q, o=self.o)
        return m


def packed_products(m: Module, adv, x, w, rows: int, cols: int) -> list[list[Value]]:
    """``[o][c]``: the sum of ``x[i] * w[i][o]`` over the rows ``i`` of cascade ``c``,
    registered ``3 + CHAIN`` moving cycles after ``x`` and ``w``.

    One DSP48E1 per (row, pair of output lanes): pre-adder register ``(w_hi <<
    LANE_SHIFT) + w_lo``, activation register, multiplier register, and the cascade
    adder with its output register (row ``k`` of a cascade sees its inputs ``k`` cycles
    late, so it adds its product to row ``k-1``'s sum of the same step). The last
    row's sum splits into the low lane (its sign-extended low ``LANE_SHIFT`` bits) and
    the high lane (the rest, plus the borrow of a negative low lane)."""
    def late(value, cycles, name):
        for d in range(cycles):
            r = Signal.like(value, name=f"{name}_late{d}")
            with m.If(adv):
                m.d.sync += r.eq(value)
            value = r
        return value

    def reg(name, shape, value):
        r = Signal(shape, name=name)
        with m.If(adv):
            m.d.sync += r.eq(value)
        return r

    xs = [late(x[i], i % CHAIN, f"x{i}") for i in range(rows)]
    sums = [[] for _ in range(cols)]
    for c in range(rows // CHAIN):
        for j in range(cols // 2):
            total = None
            for i in range(c * CHAIN, (c + 1) * CHAIN):
                k = i % CHAIN
                lo = late(w[i][2 * j], k, f"w{i}_{2 * j}")
                hi = late(w[i][2 * j + 1], k, f"w{i}_{2 * j + 1}")
                ad = reg(f"ad{i}_{j}", signed(25), (hi << LANE_SHIFT) + lo)
                b = reg(f"b{i}_{j}", signed(8), xs[i])
                prod = reg(f"m{i}_{j}", signed(33), ad * b)
                total = reg(f"p{i}_{j}", signed(36),
                            prod if total is None else total + prod)
            low = total[:LANE_SHIFT].as_signed()
            sums[2 * j].append(reg(f"lo{c}_{j}", signed(LANE_SHIFT), low))
            sums[2 * j + 1].append(reg(f"hi{c}_{j}", signed(LANE_SHIFT),
                                       (total >> LANE_SHIFT) + total[LANE_SHIFT - 1]))
    return sums


def adder_tree(m: Module, adv, sums: list[list[Value]]) -> tuple[list[Value], int]:
    """Sum each column of ``sums`` (``[o][c]``, e.g. :func:`packed_products`' cascades) in a
    pipelined binary tree, a register after every ``TREE_LEVELS_PER_STAGE`` levels and after
    the last one (all moving with ``adv``). Returns ``([o] totals, register stages)``;
    ``stages = ceil(ceil(log2 len(sums[0])) / TREE_LEVELS_PER_STAGE)``."""
    level = stages = 0
    while len(sums[0]) > 1:
        sums = [[*(a + b for a, b in zip(col[::2], col[1::2], strict=False)),
                 *col[len(col) & ~1:]] for col in sums]
        level += 1
        if level % TREE_LEVELS_PER_STAGE == 0 or len(sums[0]) == 1:
            stages += 1
            regs = [[Signal(v.shape()) for v in col] for col in sums]
            with m.If(adv):
                m.d.sync += [r.eq(v) for rc, vc in zip(regs, sums, strict=True)
                             for r, v in zip(rc, vc, strict=True)]
            sums = regs
    return [col[0] for col in sums], stages


def reduction(m: Module, *, adv, start, issued, x, w, rows: int, cols: int, o) -> None:
    """The reduction pipeline shared by :class:`PointwiseArray` and the 1x1 engine
    (:class:`dwsep.hw.engine.Engine`): from a step issued in cycle ``t`` to the output
    register ``o``, :func:`array_latency` ``(rows)`` moving cycles later.

    ``issued`` is the step issued this cycle, a struct with ``valid``, ``first`` (the first
    ``q`` of an output group: the accumulator restarts), ``last`` (its last ``q``: the sum
    goes out) and tag fields, each copied into the field of ``o.payload`` with the same name
    (e.g. ``group``). ``x`` (``int8[rows]``) and ``w`` (``int8[rows][cols]``) are the pixel
    and weight words of that step, read from memories with a registered read enabled by
    ``adv`` (valid one moving cycle after ``issued``). Every register moves only with
    ``adv`` (the global stall); ``start`` drops the steps in flight and an untaken ``o``
    word. ``o.payload.acc[o]`` accumulates ``sum_i x[i] * w[i][o]`` over the steps of one
    output group (products by :func:`packed_products`, sums by :func:`adder_tree`)."""
    layout = issued.shape()
    tags = [name for name in layout.members if name not in ("valid", "first", "last")]

    def stage(ctrl_in):
        """Register ``ctrl_in`` into the next stage (moves only with ``adv``)."""
        ctrl_out = Signal(layout)
        with m.If(adv):
            m.d.sync += ctrl_out.eq(ctrl_in)
        with m.If(start):
            m.d.sync += ctrl_out.valid.eq(0)
        return ctrl_out

    ctrl = stage(issued)           # the memories' read
    for _ in range(3 + CHAIN):     # pre-add, multiply, the cascade, lane split
        ctrl = stage(ctrl)
    totals, stages = adder_tree(m, adv, packed_products(m, adv, x, w, rows, cols))
    for _ in range(stages):
        ctrl = stage(ctrl)

    # The accumulator is the output register.
    acc = o.payload.acc
    with m.If(adv):
        m.d.sync += o.valid.eq(ctrl.valid & ctrl.last)
        with m.If(ctrl.valid):
            m.d.sync += [getattr(o.payload, name).eq(getattr(ctrl, name)) for name in tags]
            m.d.sync += [acc[k].eq(Mux(ctrl.first, 0, acc[k]) + totals[k])
                         for k in range(cols)]
    with m.If(start):
        m.d.sync += o.valid.eq(0)
