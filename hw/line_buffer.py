"""Line buffer: the input rows of a depthwise layer, re-read as convolution taps."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .beat_serializer import beats_layout
from .config import BEAT_BYTES, AcceleratorConfig
from .layout import scale

__all__ = ["LineBuffer", "line_buffer_params_layout", "tap_layout"]


def _bits(n: int) -> int:
    """Bits of an unsigned value that holds ``0..n`` inclusive."""
    return max(1, n.bit_length())


#: Descriptor field or product (``hw.layout.DESCRIPTOR_PRODUCTS``) each parameter comes from
#: where the names differ: the line buffer's input is the expand stage's output when there
#: is one.
PARAM_SOURCES = {"in_groups": "exp_groups", "in_zp": "lb_zp", "row_words": "lb_row_words",
                 "left_words": "lb_left_words", "dil_words": "lb_dil_words"}


def line_buffer_params_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Per-layer parameters of :class:`LineBuffer`, named as the ``hw.layout.DESCRIPTOR``
    fields they come from (``conv``: the ``CONV`` flag), sized by ``config``."""
    pad_max = config.lb_window - 1
    return data.StructLayout({
        "in_h": unsigned(config.dim_bits),
        "in_w": unsigned(config.dim_bits),
        # narrow, deep rows (W=7, C=960) use more groups than lb_channels / P
        "in_groups": unsigned(_bits(config.lb_width * config.lb_channels // config.dw_lanes)),
        "depth_mult": unsigned(_bits(config.mid_groups_max)),
        "kernel": unsigned(_bits(config.k_max)),
        "stride": unsigned(2),
        "dilation": unsigned(_bits(config.dilation_max)),
        "pad_top": unsigned(_bits(pad_max)),
        "pad_left": unsigned(_bits(pad_max)),
        "out_h": unsigned(config.dim_bits),
        "out_w": unsigned(config.dim_bits),
        "in_zp": signed(8),
        "conv": 1,
        # products of the fields above (the controller forms them without a multiplier)
        "row_words": unsigned(_bits(config.lb_row_capacity_words)),  # in_w * in_groups
        "left_words": unsigned(_bits(pad_max * config.lb_row_capacity_words)),  # pad_left * G
        "dil_words": unsigned(_bits(config.dilation_max * config.lb_row_capacity_words)),
    })


def tap_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the line buffer -> DW array stream (and, in conv mode, of its first row
    into the engine): one tap column of ``T = dw_taps`` kernel rows of ``dw_lanes`` channels.

    ``data``: ``T`` rows of ``P`` input bytes; ``first``/``last``: first/last column of a
    pixel-group; ``waddr``: DW weight word of this column (``(q*R + r)*k + kx``); ``group``:
    mid group ``q``.
    """
    return data.StructLayout({
        "data": data.ArrayLayout(data.ArrayLayout(signed(8), config.dw_lanes),
                                 config.dw_taps),
        "first": 1,
        "last": 1,
        "waddr": unsigned(_bits(config.dw_weight_depth - 1)),
        "group": unsigned(_bits(config.mid_groups_max - 1)),
    })


class LineBuffer(wiring.Component):
    """Holds the last ``config.lb_rows`` input rows and emits the depthwise taps, a column of
    ``T = config.dw_taps`` kernel rows at a time.

    Storage is one block RAM per row slot, ``config.lb_row_words`` words of ``P = dw_lanes``
    bytes each: input word ``(y, x, g)`` lives in slot ``y mod lb_rows`` at word ``x*G + g``.
    Fill beats are written as they arrive (64-bit write granularity, so no packing register)
    into the word of their row. Every slot is read at the same word each cycle, so the rows
    of a column come out together. Tap columns are generated in the order of
    docs/ARCHITECTURE.md: ``oy, ox, g, j, r, kx`` (``kx`` fastest) with ``r`` the pass over
    kernel rows ``ky = r*T + t``, ``t < T``: row ``t`` of the column holds the input at
    ``(iy, ix) = (oy*s - pad_top + ky*d, ox*s - pad_left + kx*d)``, ``in_zp`` in every lane
    outside the image; rows with ``ky >= k`` (the last pass of a kernel that ``T`` does not
    divide) hold unspecified bytes, to meet zero weights. With ``conv`` set, a column is one
    kernel row (``T`` is taken as 1: ``k`` passes, row 0 of the column), the tap order of the
    conv-mode PW input.

    Flow control, with ``top = oy*s - pad_top`` of the output row being generated:

    * taps of row ``oy`` are issued only once input rows ``< min(top + (k-1)*d + 1, in_h)``
      are completely written;
    * fill beats of input row ``y`` are accepted only while ``y < max(top, 0) + lb_rows``
      (its slot holds no row that row ``oy`` or a later one needs), or without limit once
      every tap has been issued, so rows no window reaches are still drained.

    As ``(k-1)*d + 1 <= lb_rows``, the rows being read and the row being written never share
    a slot, and the two rules cannot wait on each other.

    Pipeline of three stages with one global enable (``~taps.valid | taps.ready``): the tap
    counters address the read ports (issue); their registered outputs (held by the read
    enable while the pipeline is stalled) are registered again, every slot's word, so that
    block RAM outputs drive only registers; then a per-row slot mux and the zero-point mux
    into the output registers, the ``taps`` payload. A column issued in a moving cycle is
    offered after three moving cycles (``LATENCY``). One column per cycle while
    ``taps.ready`` is high and the rows are there.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    params : ``In(line_buffer_params_layout(config))``
        Layer parameters; sampled at ``start`` and must be held until ``busy`` falls.
    start : ``In(1)``
        Pulse: begin a layer (resets every counter). Must not be raised while ``busy``.
    busy : ``Out(1)``
        High from ``start`` until the last tap has been accepted and every fill beat of the
        layer (``in_h * in_w * in_groups * P/8``) has been consumed.
    fill : ``In(stream.Signature(beats_layout(P // BEAT_BYTES)))``
        Input tensor beats in DDR order (NHWC, channels padded to ``G*P``, ``P/8`` beats per
        word, byte ``b`` of a beat = channel ``8*beat + b`` of the group), up to a word's
        ``P/8`` beats a transfer, none of which crosses into the next word (the expand
        stage's serializer cuts its transfers so). Not ready outside a layer.
    taps : ``Out(stream.Signature(tap_layout(config)))``
        The tap columns; ``waddr = ((g*m + j)*R + r)*k + kx`` (``R = dw_passes(k)``, or
        ``k`` with ``conv``), ``group = g*m + j``.
    """

    #: moving cycles from a tap column's issue to its ``taps.valid`` (the read ports'
    #: registers, the slots' data registers, the output registers)
    LATENCY = 3

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        self.config = config
        super().__init__({
            "params": In(line_buffer_params_layout(config)),
            "start": In(1),
            "busy": Out(1),
            "fill": In(stream.Signature(beats_layout(config.dw_lanes // BEAT_BYTES))),
            "taps": Out(stream.Signature(tap_layout(config))),
        })

    def elaborate(self, platform):
        cfg = self.config
        P, T = cfg.dw_lanes, cfg.dw_taps
        beats_per_word = P // BEAT_BYTES
        rows_log2 = (cfg.lb_rows - 1).bit_length()
        col_log2 = (cfg.lb_row_words - 1).bit_length()
        prm = self.params
        m = Module()

        slots = []
        for n in range(cfg.lb_rows):
            mem = Memory(shape=unsigned(8 * P), depth=cfg.lb_row_words, init=[])
            m.submodules[f"row{n}"] = mem
            slots.append((mem.write_port(granularity=64), mem.read_port()))

        # Row/column coordinates may be negative (padding) or past the image (bottom/right
        # padding, stride leftovers): signed, wide enough for 2*max_dim + a window.
        coord = signed(max(cfg.dim_bits, cfg.lb_window.bit_length()) + 3)
        # Word offsets inside a row slot: only needed modulo lb_row_words (in-image taps are
        # < lb_row_words), so they wrap freely and negative starts are fine.
        colw = unsigned(max(1, col_log2))

        busy = Signal()
        m.d.comb += self.busy.eq(busy | self.start)

        # ---- per-layer constants, registered at start (see the end) ----
        k1 = Signal.like(prm.kernel)         # k - 1
        r1 = Signal.like(prm.kernel)         # passes - 1
        span = Signal(coord)                 # (k-1)*d + 1: input rows one output row needs
        pass_rows = Signal(coord)            # rows per pass * d: iy step between passes
        s_g = Signal(colw)                   # s*G: word step between output pixels
        d_g = Signal(colw)                   # d*G: word step between kx taps
        left_g = Signal(colw)                # -pad_left*G: word offset of ox=0, kx=0, g=0
        row_words = Signal(range(cfg.lb_row_words + 1))   # in_w * G

        # ---- tap generator state ----
        oy = Signal.like(prm.out_h)
        ox = Signal.like(prm.out_w)
        g = Signal.like(prm.in_groups)
        j = Signal.like(prm.depth_mult)
        r = Signal.like(prm.kernel)
        kx = Signal.like(prm.kernel)
        top = Signal(coord)                  # oy*s - pad_top
        slots_end = Signal((top + cfg.lb_rows).shape())  # max(top, 0) + lb_rows, registered
        left = Signal(coord)                 # ox*s - pad_left
        pix_w = Signal(colw)                 # left*G (word offset of g=0)
        iy = Signal(coord)                   # top + r*T*d: row t = 0 of the column
        ix = Signal(coord)                   # left + kx*d
        xw = Signal(colw)                    # left*G + g + kx*d*G (mod lb_row_words)
        waddr = Signal.like(self.taps.payload.waddr)
        group = Signal.like(self.taps.payload.group)
        gen_done = Signal()                  # every tap issued

        # ---- fill state ----
        fill_y = Signal.like(prm.in_h)       # row being written = rows completely written
        fill_w = Signal.like(row_words)      # word of that row
        fill_b = Signal(range(beats_per_word))
        fill_done = Signal()

        # ---- flow control ----
        row_ok = (fill_y >= prm.in_h) | (fill_y >= top + span)
        slot_free = (fill_y < slots_end) | gen_done
        m.d.comb += self.fill.ready.eq(busy & ~fill_done & slot_free)

        # ---- fill: write each transfer's beats into their 64-bit lanes of the word of its
        # row's slot, from lane fill_b on ----
        fill_slot = fill_y[:rows_log2] if rows_log2 else 0
        take = self.fill.valid & self.fill.ready
        n_beats = self.fill.payload.beats
        lanes = self.fill.payload.data
        for b in range(1, beats_per_word):   # the transfer's first beat to lane fill_b
            lanes = Mux(fill_b == b, self.fill.payload.data << (64 * b), lanes)
        mask = Signal(beats_per_word)
        for k in range(1, beats_per_word + 1):
            with m.If(n_beats == k):
                m.d.comb += mask.eq(Const(2 ** k - 1, beats_per_word) << fill_b)
        for n, (wr, _) in enumerate(slots):
            m.d.comb += [wr.addr.eq(fill_w[:col_log2]), wr.data.eq(lanes[:8 * P])]
            with m.If(take & (fill_slot == n)):
                m.d.comb += wr.en.eq(mask)
        with m.If(take):
            next_b = fill_b + n_beats
            word_end = next_b == beats_per_word
            m.d.sync += fill_b.eq(Mux(word_end, 0, next_b))
            with m.If(word_end):
                with m.If(fill_w == row_words - 1):
                    m.d.sync += [fill_w.eq(0), fill_y.eq(fill_y + 1)]
                    with m.If(fill_y == prm.in_h - 1):
                        m.d.sync += fill_done.eq(1)
                with m.Else():
                    m.d.sync += fill_w.eq(fill_w + 1)

        # ---- stage 1: the read ports' registers, each row's slot and inside flag; stage 2:
        # every slot's read data registered (the block RAM outputs drive only registers);
        # stage 3: the output registers (the `taps` payload), after the slot and zp muxes ----
        out_valid = Signal()                 # stage 1 holds a column
        out_slot = [Signal(range(cfg.lb_rows), name=f"out_slot{t}") for t in range(T)]
        out_inside = Signal(T)
        out_first = Signal()
        out_last = Signal()
        out_waddr = Signal.like(waddr)
        out_group = Signal.like(group)
        taps = Signal.like(self.taps.payload)
        taps_valid = Signal()
        adv = Signal()                       # the pipeline moves
        issue = Signal()
        m.d.comb += [
            adv.eq(~taps_valid | self.taps.ready),
            issue.eq(busy & ~gen_done & row_ok & adv),
            self.taps.valid.eq(taps_valid),
            self.taps.payload.eq(taps),
        ]
        for _, rd in slots:
            m.d.comb += [rd.en.eq(issue), rd.addr.eq(xw[:col_log2])]
        zp_word = prm.in_zp.as_unsigned().replicate(P)
        s2_valid = Signal()
        s2_data = [Signal(8 * P, name=f"slot{n}_data") for n in range(cfg.lb_rows)]
        s2_slot = [Signal.like(out_slot[t], name=f"s2_slot{t}") for t in range(T)]
        s2_inside = Signal.like(out_inside)
        s2_first, s2_last = Signal(), Signal()
        s2_waddr, s2_group = Signal.like(waddr), Signal.like(group)
        with m.If(adv):
            m.d.sync += [s2_valid.eq(out_valid), s2_inside.eq(out_inside),
                         s2_first.eq(out_first), s2_last.eq(out_last),
                         s2_waddr.eq(out_waddr), s2_group.eq(out_group),
                         *(a.eq(b) for a, b in zip(s2_slot, out_slot, strict=True)),
                         *(d.eq(rd.data) for d, (_, rd) in zip(s2_data, slots, strict=True))]
            m.d.sync += [taps_valid.eq(s2_valid), taps.first.eq(s2_first),
                         taps.last.eq(s2_last), taps.waddr.eq(s2_waddr),
                         taps.group.eq(s2_group)]
            for t in range(T):
                word = Array(s2_data)[s2_slot[t]]
                m.d.sync += taps.data[t].eq(Mux(s2_inside[t], word, zp_word))

        kx_last = kx == k1
        r_last = r == r1
        x_inside = (ix >= 0) & (ix < prm.in_w)
        with m.If(issue):
            m.d.sync += [
                out_valid.eq(1),
                out_first.eq((kx == 0) & (r == 0)),
                out_last.eq(kx_last & r_last),
                out_waddr.eq(waddr),
                out_group.eq(group),
            ]
            for t in range(T):
                row = iy + scale(prm.dilation, t) if t else iy
                m.d.sync += [out_slot[t].eq(row[:rows_log2] if rows_log2 else 0),
                             out_inside[t].eq(x_inside & (row >= 0) & (row < prm.in_h))]
        with m.Elif(adv):
            m.d.sync += out_valid.eq(0)

        # ---- tap counters: advance on issue, kx fastest ----
        with m.If(issue):
            m.d.sync += waddr.eq(waddr + 1)
            with m.If(~kx_last):
                m.d.sync += [kx.eq(kx + 1), ix.eq(ix + prm.dilation), xw.eq(xw + d_g)]
            with m.Elif(~r_last):
                m.d.sync += [kx.eq(0), ix.eq(left), xw.eq(pix_w + g),
                             r.eq(r + 1), iy.eq(iy + pass_rows)]
            with m.Else():
                m.d.sync += [kx.eq(0), r.eq(0), ix.eq(left), iy.eq(top), group.eq(group + 1)]
                with m.If(j != prm.depth_mult - 1):
                    m.d.sync += [j.eq(j + 1), xw.eq(pix_w + g)]
                with m.Elif(g != prm.in_groups - 1):
                    m.d.sync += [j.eq(0), g.eq(g + 1), xw.eq(pix_w + g + 1)]
                with m.Else():
                    m.d.sync += [j.eq(0), g.eq(0), group.eq(0), waddr.eq(0)]
                    with m.If(ox != prm.out_w - 1):
                        m.d.sync += [ox.eq(ox + 1), left.eq(left + prm.stride),
                                     ix.eq(left + prm.stride),
                                     pix_w.eq(pix_w + s_g), xw.eq(pix_w + s_g)]
                    with m.Else():
                        m.d.sync += [ox.eq(0), left.eq(-prm.pad_left), ix.eq(-prm.pad_left),
                                     pix_w.eq(left_g), xw.eq(left_g)]
                        with m.If(oy != prm.out_h - 1):
                            m.d.sync += [oy.eq(oy + 1), top.eq(top + prm.stride),
                                         iy.eq(top + prm.stride),
                                         slots_end.eq(Mux((top + prm.stride) < 0, 0,
                                                          top + prm.stride) + cfg.lb_rows)]
                        with m.Else():
                            m.d.sync += gen_done.eq(1)

        with m.If(busy & gen_done & ~out_valid & ~s2_valid & ~taps_valid & fill_done):
            m.d.sync += busy.eq(0)

        # Start last: it overrides every update above.
        with m.If(self.start):
            neg_left_g = -prm.left_words
            passes = Array(Const(cfg.dw_passes(k) if k else 1, prm.kernel.shape())
                           for k in range(2 ** len(prm.kernel)))[prm.kernel]
            m.d.sync += [
                busy.eq(1),
                k1.eq(prm.kernel - 1),
                r1.eq(Mux(prm.conv, prm.kernel, passes) - 1),
                span.eq(_narrow_mul(prm.kernel - 1, prm.dilation) + 1),
                pass_rows.eq(Mux(prm.conv, prm.dilation, scale(prm.dilation, T))),
                s_g.eq(Mux(prm.stride == 2, prm.in_groups << 1, prm.in_groups)),
                d_g.eq(prm.dil_words),
                left_g.eq(neg_left_g),
                row_words.eq(prm.row_words),
                oy.eq(0), ox.eq(0), g.eq(0), j.eq(0), r.eq(0), kx.eq(0),
                top.eq(-prm.pad_top), iy.eq(-prm.pad_top),
                slots_end.eq(cfg.lb_rows),     # top = -pad_top <= 0
                left.eq(-prm.pad_left), ix.eq(-prm.pad_left),
                pix_w.eq(neg_left_g), xw.eq(neg_left_g),
                waddr.eq(0), group.eq(0), gen_done.eq(0), out_valid.eq(0), s2_valid.eq(0),
                taps_valid.eq(0),
                fill_y.eq(0), fill_w.eq(0), fill_b.eq(0), fill_done.eq(0),
            ]
        return m


def _narrow_mul(x, y):
    """``x * y`` for a narrow ``y`` (a few bits), as a sum of shifted copies of ``x``: no
    multiplier cell (Yosys would give any product wider than 8 bits a DSP48E1)."""
    total = Mux(y[0], x, 0)
    for i in range(1, len(y)):
        total = total + Mux(y[i], x << i, 0)
    return total
