"""The 1x1 engine: one packed-DSP array of ``R x C`` int8 MACs shared by the expand and the
project stage of a layer (docs/PLAN-pynq-z2.md, step 3)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .ports import WritePortSignature
from .requant import acc_layout

__all__ = ["Engine", "engine_out_layout", "engine_weight_layout", "pixel_buffer_words",
           "array_latency", "packed_products", "adder_tree", "reduction", "EXPAND", "PROJECT",
           "CHAIN", "LANE_SHIFT", "TREE_LEVELS_PER_STAGE"]

#: ``o.payload.kind`` of an expand job's words
EXPAND = 0
#: ``o.payload.kind`` of a project job's words
PROJECT = 1


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
    """``Engine.latency`` for ``rows`` input lanes: read 1, the read data registered 1,
    pre-add 1, multiply 1, the cascade ``CHAIN``, lane split 1, adder tree over the ``rows /
    CHAIN`` cascades ``ceil(ceil(log2(rows / CHAIN)) / TREE_LEVELS_PER_STAGE)``, accumulate
    1."""
    levels = (rows // CHAIN - 1).bit_length()
    return 6 + CHAIN + -(-levels // TREE_LEVELS_PER_STAGE)


def _addr_bits(depth: int) -> int:
    """Bits of an index into ``depth`` entries (at least 1)."""
    return max(1, (depth - 1).bit_length())


def pixel_buffer_words(in_groups_max: int) -> int:
    """Words of a ping-pong pixel buffer for pixels of up to ``in_groups_max`` words: two
    halves of a power of two (at least 2) words."""
    return 2 << _addr_bits(in_groups_max)


def _group_bits(config: AcceleratorConfig) -> int:
    """Bits of an output group index of either kind (expand: mid groups, project: out
    groups)."""
    return _addr_bits(max(config.mid_groups_max, config.out_groups_max))


def engine_out_layout(config: AcceleratorConfig, j_group_base: int = 0,
                      groups: int | None = None) -> data.StructLayout:
    """Payload of ``Engine.o``: the engine requantizer's input (``hw.requant.acc_layout``,
    ``{acc: int32[C], group, kind}``; kind 0 expand, 1 project; ``group`` wide enough for
    project groups numbered from ``j_group_base``, or for ``groups`` numbers)."""
    if groups is None:
        groups = max(config.mid_groups_max, j_group_base + config.out_groups_max)
    return acc_layout(config.pw_cols, groups, kinds=2)


def engine_weight_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """One weight word of the engine: ``int8[R][C]`` (``R = dw_lanes``, ``C = pw_cols``),
    element ``[i][o]`` at byte ``i*C + o``."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), config.pw_cols), config.dw_lanes)


class Engine(wiring.Component):
    """1x1 convolutions of two kinds of pixel on one array of ``R = dw_lanes`` rows by
    ``C = pw_cols`` columns of packed MACs (two int8 products per DSP48E1, cascades of
    ``CHAIN`` rows: :func:`packed_products`).

    A *job* is one pixel of one kind, reduced into, for each output group ``og``
    (ascending), the word
    ``acc[o] = sum_q sum_i x[q][i] * W[base + og*in_groups + q][i][o]``
    (32-bit two's complement), one ``(og, q)`` step per cycle, ``og`` outer, ``q`` inner.

    - **Expand (E, kind 0)**: the pixel is ``e_in_groups`` words from ``e``, ``e_out_groups``
      output words, weights from ``base = e_wbase``.
    - **Project (J, kind 1)**: ``j_in_groups`` words from ``j``, ``j_out_groups`` output
      words, weights from ``base = j_wbase``.

    Each kind has its own ping-pong pixel buffer (two halves of a power of two >= its
    largest ``in_groups`` words), filled from its stream: a
    half takes the words of one pixel while it is free; the word that completes a pixel
    makes the half *full* from the next cycle; ``e.ready`` / ``j.ready`` are registered
    (high while the half being filled is not full).

    Scheduler
    ---------
    A cycle is a *job boundary* when no job is in progress: every cycle after ``start``
    until a job issues, and the cycle after the one in which a job's last step issued. At
    a boundary, from registered state only:

    1. a **J job** if the J buffer's next half is full;
    2. else an **E job** if ``e_on``, the E buffer's next half is full and
       ``credit >= e_out_groups``;
    3. else nothing (the next cycle is again a boundary).

    The chosen job's first step issues in the boundary cycle itself when the pipeline
    moves (``adv``), so jobs run back to back without a bubble: a job issued in cycle
    ``b`` issues its ``in_groups * out_groups`` steps in the next that many moving cycles
    and the next job's first step issues in the moving cycle right after its last. If the
    pipeline is stalled at a boundary nothing is committed: the choice is made again in the
    next cycle (where a J half that became full meanwhile wins). J (project) has priority
    because its words drain towards DDR and because the DW stage, which produces them,
    waits on it.

    Credits
    -------
    The expand words go (after the requantizer) into a FIFO in front of the line buffer,
    which takes them only as it frees rows, i.e. as the DW stage advances, and the DW
    stage's output is the J input of this same engine. Were an expand job issued without
    room for all its words, a word stuck at a full FIFO would stall ``o``, hence the whole
    engine, so the J jobs that the DW stage waits on (to free line-buffer rows) would never
    run: a deadlock. So an E job issues only when the FIFO has room for all of its
    ``e_out_groups`` words: ``credit`` is ``e_credits`` (the FIFO's depth) after ``start``,
    loses ``e_out_groups`` in the cycle an E job's first step issues and gains one for each
    cycle ``e_free`` is high (a word has left the FIFO); both take effect in the next
    cycle. Expand words therefore never wait at the FIFO, and an E job never waits on the
    line buffer once issued.

    Timing (the cycle model follows it)
    -----------------------------------
    - Cycle ``t`` *moves* when ``adv = ~o.valid | o.ready``: one global stall of the whole
      reduction pipeline.
    - A pixel whose last word is accepted in cycle ``t`` can be a job from cycle ``t + 1``.
      A half whose job's last step issues in cycle ``t`` takes words again from ``t + 1``.
    - The last step of output group ``og`` issued in cycle ``t`` makes ``o.valid`` high
      with that word ``latency`` moving cycles later (cycle ``t + latency`` without
      stalls); ``latency = array_latency(R)``.
    - ``credit`` in cycle ``b`` counts the E jobs issued and the ``e_free`` pulses of the
      cycles before ``b`` (since ``start``).

    Parameters
    ----------
    config : AcceleratorConfig
    e_credits : int
        Depth (words) of the FIFO that the expand words go into; default and minimum
        ``config.mid_groups_max`` (an E job of that many output groups must be able to
        issue).
    j_group_base : int
        Added to a project word's ``og`` in its ``group`` (default 0).
    groups : int
        The ``group`` numbers ``o`` carries, ``0 .. groups-1``: the depth of the
        requantizer table it feeds (at least ``j_group_base + out_groups_max``; its user
        keeps the expand jobs' output groups below ``j_group_base``). Default: room for
        ``mid_groups_max`` expand and ``j_group_base + out_groups_max`` project groups.

    Members
    -------
    e : ``In(stream.Signature(data.ArrayLayout(signed(8), R)))``
        Expand input: per pixel ``e_in_groups`` words, group ``q`` ascending.
    j : ``In(stream.Signature(data.ArrayLayout(signed(8), R)))``
        Project input: per pixel ``j_in_groups`` words.
    e_in_groups, e_out_groups, j_in_groups, j_out_groups : ``In(unsigned(...))``
        Group counts: expand ``1..expand_in_groups_max`` in, ``1..mid_groups_max`` out;
        project ``1..mid_groups_max`` in, ``1..out_groups_max`` out. Read through registers:
        set them no later than the ``start`` cycle and hold them while the layer runs.
    e_on : ``In(1)``
        The layer has an expand stage; when low no E job issues.
    start : ``In(1)``
        Pulse before each layer: a synchronous reset of all state (both buffers emptied,
        the job in progress and the words in flight dropped, an untaken ``o`` word
        dropped, ``credit = e_credits``; an ``e_free`` pulse in that cycle is ignored).
    e_wbase, j_wbase : ``In(unsigned(bits of config.engine_weight_depth))``
        First word of the layer's expand and project weights in the weight memory (read
        through registers, like the group counts).
    wr : ``In(WritePortSignature(bits of engine_weight_depth, engine_weight_layout(config)))``
        The weight memory of ``config.engine_weight_depth`` words: expand weights at address
        ``e_wbase + og*e_in_groups + q``, element ``[i][o]`` = weight from input lane ``(q,
        i)`` to expanded lane ``(og, o)``; project weights at ``j_wbase + og*j_in_groups +
        q``. It may be written while a layer runs, at words the layer does not read (the
        next layer's weights: the controller's prefetch).
    o : ``Out(stream.Signature(engine_out_layout(config, j_group_base, groups)))``
        Per job, ``out_groups`` words ``{acc, group, kind}``, ``og`` ascending, jobs in
        issue order; ``group`` is ``og``, plus ``j_group_base`` for project words (so that
        one requantizer's table holds both kinds' records, ``Requantizer(kinds=2)``).
    e_free : ``In(1)``
        High for one cycle per expand word that has left the consumer's FIFO.

    Attributes
    ----------
    latency : int
        ``array_latency(R)``: see Timing.
    rows, cols, e_credits : int
    """

    def __init__(self, config: AcceleratorConfig, *, e_credits: int | None = None,
                 j_group_base: int = 0, groups: int | None = None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        R, C = config.dw_lanes, config.pw_cols
        if R % CHAIN or C % 2:
            raise ValueError(f"the engine needs dw_lanes a multiple of {CHAIN} and an even "
                             f"pw_cols, not {R} x {C}")
        if e_credits is None:
            e_credits = self.default_credits(config)
        if not isinstance(e_credits, int) or isinstance(e_credits, bool):
            raise TypeError(f"e_credits must be an int, not {e_credits!r}")
        if e_credits < config.mid_groups_max:
            raise ValueError(f"e_credits ({e_credits}) must be at least mid_groups_max "
                             f"({config.mid_groups_max}): an expand job of that many output "
                             "groups could never issue")
        if not isinstance(j_group_base, int) or j_group_base < 0:
            raise ValueError(f"j_group_base must be a non-negative int, not {j_group_base!r}")
        if groups is not None and (not isinstance(groups, int)
                                   or groups < j_group_base + config.out_groups_max):
            raise ValueError(f"groups must be an int of at least j_group_base + "
                             f"out_groups_max = {j_group_base + config.out_groups_max}, not "
                             f"{groups!r}")
        self.config = config
        self.rows, self.cols, self.e_credits = R, C, e_credits
        self.j_group_base = j_group_base
        self.latency = array_latency(R)
        word = stream.Signature(data.ArrayLayout(signed(8), R))
        super().__init__({
            "e": In(word),
            "j": In(word),
            "e_in_groups": In(unsigned(config.expand_in_groups_max.bit_length())),
            "e_out_groups": In(unsigned(config.mid_groups_max.bit_length())),
            "j_in_groups": In(unsigned(config.mid_groups_max.bit_length())),
            "j_out_groups": In(unsigned(config.out_groups_max.bit_length())),
            "e_on": In(1),
            "e_wbase": In(unsigned(_addr_bits(config.engine_weight_depth))),
            "j_wbase": In(unsigned(_addr_bits(config.engine_weight_depth))),
            "start": In(1),
            "wr": In(WritePortSignature(_addr_bits(config.engine_weight_depth),
                                        engine_weight_layout(config))),
            "o": Out(stream.Signature(engine_out_layout(config, j_group_base, groups))),
            "e_free": In(1),
        })

    @staticmethod
    def default_credits(config: AcceleratorConfig) -> int:
        """``e_credits`` when none is given: ``config.mid_groups_max``, the least that lets
        an expand job of the most output groups issue."""
        return config.mid_groups_max

    def elaborate(self, platform):
        cfg = self.config
        R, C = self.rows, self.cols
        depth = cfg.engine_weight_depth
        qw = _addr_bits(max(cfg.expand_in_groups_max, cfg.mid_groups_max))
        ow = _group_bits(cfg)
        m = Module()

        # ---- layer constants through registers (counts - 1, - 2, == 1) -------------------
        def held(name, value, width):
            r = Signal(width, name=name)
            m.d.sync += r.eq(value[:width] if len(value) > width else value)
            return r

        def counts(prefix, n, width):
            return (held(f"{prefix}_m1", n - 1, width), held(f"{prefix}_m2", n - 2, width),
                    held(f"{prefix}_one", n == 1, 1))

        e_in_m1, e_in_m2, e_in_one = counts("e_in", self.e_in_groups, qw)
        j_in_m1, j_in_m2, j_in_one = counts("j_in", self.j_in_groups, qw)
        _, e_out_m2, e_out_one = counts("e_out", self.e_out_groups, ow)
        _, j_out_m2, j_out_one = counts("j_out", self.j_out_groups, ow)
        e_out = held("e_out", self.e_out_groups, len(self.e_out_groups))
        e_base = held("e_base", self.e_wbase, len(self.e_wbase))
        j_base = held("j_base", self.j_wbase, len(self.j_wbase))

        # ---- one weight memory: each kind's weights from its base -----------------------
        m.submodules.weights = wmem = Memory(shape=engine_weight_layout(cfg), depth=depth, init=[])
        wp = wmem.write_port()
        m.d.comb += [wp.en.eq(self.wr.en), wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data)]

        adv = Signal()  # global stall of the reduction pipeline
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        q = Signal(qw)
        resets = []  # applied by `start`, after every other assignment

        # ---- the two ping-pong pixel buffers ---------------------------------------------
        def pingpong(name, port, in_groups_max, in_m1):
            """Buffer of two halves of ``2**hb`` words; returns (full, rd_half, drained,
            read data)."""
            hb = _addr_bits(in_groups_max)
            mem = Memory(shape=data.ArrayLayout(signed(8), R),
                         depth=pixel_buffer_words(in_groups_max), init=[])
            m.submodules[f"{name}_pixels"] = mem
            full = Signal(2, name=f"{name}_full")        # half holds a pixel not yet reduced
            filled = Signal(2, name=f"{name}_filled")    # half gets its last word this cycle
            drained = Signal(2, name=f"{name}_drained")  # half's last step issues this cycle
            wr_half = Signal(name=f"{name}_wr_half")
            wr_q = Signal(hb, name=f"{name}_wr_q")
            rd_half = Signal(name=f"{name}_rd_half")
            mwp = mem.write_port()
            accept = port.valid & port.ready
            m.d.comb += [
                port.ready.eq(~Mux(wr_half, full[1], full[0])),
                mwp.addr.eq(Cat(wr_q, wr_half)), mwp.data.eq(port.payload), mwp.en.eq(accept),
            ]
            with m.If(accept):
                with m.If(wr_q == in_m1):
                    m.d.sync += [wr_q.eq(0), wr_half.eq(~wr_half)]
                    m.d.comb += filled.eq(Mux(wr_half, 0b10, 0b01))
                with m.Else():
                    m.d.sync += wr_q.eq(wr_q + 1)
            m.d.sync += full.eq((full | filled) & ~drained)
            resets.extend([full.eq(0), wr_half.eq(0), wr_q.eq(0), rd_half.eq(0)])
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(Cat(q[:hb], rd_half)), rp.en.eq(adv)]
            return full, rd_half, drained, rp.data

        e_full, e_rd_half, e_drained, e_x = pingpong("e", self.e, cfg.expand_in_groups_max,
                                                     e_in_m1)
        j_full, j_rd_half, j_drained, j_x = pingpong("j", self.j, cfg.mid_groups_max, j_in_m1)

        # ---- scheduler and step counters --------------------------------------------------
        busy = Signal()      # a job is in progress (its next step issues when adv)
        kind = Signal()      # its kind
        og = Signal(ow)
        step = Signal(range(depth))   # weight address: base + og*in_groups + q
        q_last = Signal()    # (busy) the next step is the last q of its og
        og_last = Signal()   # (busy) the next step's og is the last
        credit = Signal(range(self.e_credits + 1), init=self.e_credits)
        credit_ok = Signal(init=1)    # credit >= e_out_groups

        j_ready = Mux(j_rd_half, j_full[1], j_full[0])
        e_ready = Mux(e_rd_half, e_full[1], e_full[0]) & credit_ok & self.e_on
        cur_kind = Signal()
        cur_q_last, cur_og_last = Signal(), Signal()
        cur_step = Signal.like(step)
        issue, e_job = Signal(), Signal()
        m.d.comb += [
            cur_kind.eq(Mux(busy, kind, j_ready)),
            cur_q_last.eq(Mux(busy, q_last, Mux(j_ready, j_in_one, e_in_one))),
            cur_og_last.eq(Mux(busy, og_last, Mux(j_ready, j_out_one, e_out_one))),
            cur_step.eq(Mux(busy, step, Mux(j_ready, j_base, e_base))),
            issue.eq(adv & (busy | j_ready | e_ready)),
            e_job.eq(adv & ~busy & ~j_ready & e_ready),   # an E job's first step issues
        ]
        in_m2 = Mux(cur_kind, j_in_m2, e_in_m2)
        out_m2 = Mux(cur_kind, j_out_m2, e_out_m2)
        in_one = Mux(cur_kind, j_in_one, e_in_one)

        with m.If(issue):
            m.d.sync += [kind.eq(cur_kind), busy.eq(~(cur_q_last & cur_og_last))]
            with m.If(~cur_q_last):
                m.d.sync += [q.eq(q + 1), step.eq(cur_step + 1), q_last.eq(q == in_m2),
                             og_last.eq(cur_og_last)]
            with m.Elif(~cur_og_last):
                m.d.sync += [q.eq(0), og.eq(og + 1), step.eq(cur_step + 1),
                             q_last.eq(in_one), og_last.eq(og == out_m2)]
            with m.Else():
                m.d.sync += [q.eq(0), og.eq(0), step.eq(0)]
                with m.If(cur_kind):
                    m.d.sync += j_rd_half.eq(~j_rd_half)
                    m.d.comb += j_drained.eq(Mux(j_rd_half, 0b10, 0b01))
                with m.Else():
                    m.d.sync += e_rd_half.eq(~e_rd_half)
                    m.d.comb += e_drained.eq(Mux(e_rd_half, 0b10, 0b01))

        # credit: both outcomes computed from registers, the issue picks one
        keep = Signal(range(self.e_credits + 2))
        take = Signal(range(self.e_credits + 2))
        m.d.comb += [keep.eq(credit + self.e_free), take.eq(keep - e_out)]
        m.d.sync += [credit.eq(Mux(e_job, take, keep)),
                     credit_ok.eq(Mux(e_job, take >= e_out, keep >= e_out))]

        with m.If(self.start):
            m.d.sync += [*resets, busy.eq(0), q.eq(0), og.eq(0), step.eq(0),
                         credit.eq(self.e_credits), credit_ok.eq(1)]

        # ---- reads and the reduction pipeline ---------------------------------------------
        w_rp = wmem.read_port()
        m.d.comb += [w_rp.addr.eq(cur_step), w_rp.en.eq(adv)]
        read_kind = Signal()  # kind of the step whose words the memories output
        with m.If(adv):
            m.d.sync += read_kind.eq(cur_kind)
        x = Signal(data.ArrayLayout(signed(8), R))
        m.d.comb += x.eq(Mux(read_kind, j_x, e_x))

        issued = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                           "group": self.o.payload.group.shape(), "kind": 1}))
        group = og if not self.j_group_base else Mux(cur_kind, og + self.j_group_base, og)
        m.d.comb += [issued.valid.eq(issue), issued.first.eq(q == 0),
                     issued.last.eq(cur_q_last), issued.group.eq(group),
                     issued.kind.eq(cur_kind)]
        reduction(m, adv=adv, start=self.start, issued=issued, x=x, w=w_rp.data, rows=R,
                  cols=C, o=self.o)
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
    """The engine's reduction pipeline: from a step issued in cycle ``t`` to the output
    register ``o``, :func:`array_latency` ``(rows)`` moving cycles later.

    ``issued`` is the step issued this cycle, a struct with ``valid``, ``first`` (the first
    ``q`` of an output group: the accumulator restarts), ``last`` (its last ``q``: the sum
    goes out) and tag fields, each copied into the field of ``o.payload`` with the same name
    (e.g. ``group``). ``x`` (``int8[rows]``) and ``w`` (``int8[rows][cols]``) are the pixel
    and weight words of that step, read from memories with a registered read enabled by
    ``adv`` (valid one moving cycle after ``issued``), registered again before any logic.
    Every register moves only with ``adv`` (the global stall); ``start`` drops the steps in
    flight and an untaken ``o`` word. ``o.payload.acc[o]`` accumulates ``sum_i x[i] *
    w[i][o]`` over the steps of one output group (products by :func:`packed_products`, sums
    by :func:`adder_tree`)."""
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
    ctrl = stage(ctrl)             # their data registered
    for _ in range(3 + CHAIN):     # pre-add, multiply, the cascade, lane split
        ctrl = stage(ctrl)
    # block RAM outputs drive only registers: the pre-adder and the pixel mux come after
    x_reg, w_reg = Signal.like(x, name="x_reg"), Signal.like(w, name="w_reg")
    with m.If(adv):
        m.d.sync += [x_reg.eq(x), w_reg.eq(w)]
    totals, stages = adder_tree(m, adv, packed_products(m, adv, x_reg, w_reg, rows, cols))
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
