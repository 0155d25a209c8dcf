"""The layer datapath: every stage between the DMA readers and the DMA writer."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .add import ResidualAdd
from .beat_packer import BeatPacker
from .beat_serializer import BeatSerializer
from .config import BEAT_BYTES, AcceleratorConfig
from .dw_array import DepthwiseArray, dw_acc_bits
from .engine import EXPAND, PROJECT, Engine
from .layout import DESCRIPTOR, DescFlag, expand_words, out_last_beats_max
from .line_buffer import PARAM_SOURCES, LineBuffer
from .products import product_layout
from .requant import Requantizer
from .skid import SkidBuffer

__all__ = ["Datapath"]

#: a DDR beat: the readers' and the writer's stream payload
BEAT = unsigned(64)


class Datapath(wiring.Component):
    """The stages a layer streams through, steered by its descriptor:

    ``input -> [expand 1x1 -> requant -> FIFO] -> line buffer -> (DW -> requant | conv taps)
    -> project 1x1 -> (requant [-> residual ADD] | int32) -> output``

    Both 1x1 stages run on one array, the :class:`~dwsep.hw.engine.Engine`, as jobs of two
    kinds; the FIFO in front of the line buffer holds ``engine.e_credits`` expanded words and
    returns a credit per word leaving it, so an expand job issues only when all its words
    have room (see the engine's docstring: a full line buffer never stalls the engine).
    The controller (:class:`~dwsep.hw.top.Controller`) holds the descriptor and its
    products, fills the stages' tables through their write ports, feeds ``input`` and
    ``residual`` while the layer runs and writes ``output`` to DDR.

    Members
    -------
    desc : ``In(unsigned(8 * DESCRIPTOR.size))``
        The current descriptor, static while the layer runs.
    prod : ``In(product_layout())``
        Its products of fields (:class:`~dwsep.hw.products.DescriptorProducts`).
    exp_last, out_last : ``In(...)``
        Beats of a pixel's last engine word that are stored: of the expand stage's (the
        serializer drops the rest) and of the output's (with its filler beats after it).
    start : ``In(1)``
        Starts the line buffer and the engine on the descriptor.
    busy : ``Out(1)``
        The line buffer is still taking or emitting the layer's rows.
    input : ``In(stream.Signature(unsigned(64)))``
        The layer input's DDR beats.
    residual : ``In(stream.Signature(unsigned(64)))``
        The residual's DDR beats (``RESIDUAL``).
    output : ``Out(stream.Signature(unsigned(64)))``
        The output's DDR beats.
    engine_wr, engine_requant_wr, dw_wr, dw_requant_wr, add_wr : ``In(WritePortSignature)``
        The write ports of the stages' weight and table memories.
    """

    #: engine words (both kinds but RAW_OUT ones) queued in front of the engine's
    #: requantizer (``SyncFIFOBuffered``: one in its output register): the engine runs a
    #: project job while the requantizer works off the expand job's words before it
    ENGINE_FIFO_WORDS = 8

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        cfg, P, Q = config, config.dw_lanes, config.pw_cols
        # one requantizer for the engine's expand and project words (`kinds=2`): its table
        # holds the expand records (groups 0 ..), then the project ones (from
        # `exp_words_max`, where the engine numbers project groups from)
        self.exp_words_max = exp_words_max = expand_words(cfg, cfg.mid_groups_max)
        groups = exp_words_max + cfg.out_groups_max
        self.engine = Engine(cfg, j_group_base=exp_words_max, groups=groups)
        self.engine_requant = Requantizer(
            Q, groups, cfg.erq_lanes, kinds=2,
            lut_lanes=cfg.engine_requant_lut_lanes)
        # the engine's words reach its requantizer through a FIFO of their bits: one payload
        if self.engine.o.payload.shape() != self.engine_requant.i.payload.shape():
            raise ValueError(f"config {cfg.name!r}: the engine's output "
                             f"{self.engine.o.payload.shape()!r} is not its requantizer's input "
                             f"{self.engine_requant.i.payload.shape()!r}")
        self.dw_array = DepthwiseArray(cfg)
        # it sums a global pool's pixels (`DescFlag.POOL`) before requantizing them
        self.dw_requant = Requantizer(
            P, cfg.mid_groups_max, cfg.requant_lanes,
            lut_lanes=cfg.requant_lanes if cfg.dw_requant_dsps == 1 else 0,
            max_pool_pixels=cfg.max_dim ** 2, acc_bits=dw_acc_bits(cfg))
        self.add = ResidualAdd(Q, cfg.add_lanes)
        # the write ports of the stages' memories, as the stages take them
        self._tables = {"engine_wr": self.engine, "engine_requant_wr": self.engine_requant,
                        "dw_wr": self.dw_array, "dw_requant_wr": self.dw_requant,
                        "add_wr": self.add}
        super().__init__({
            "desc": In(unsigned(8 * DESCRIPTOR.size)),
            "prod": In(product_layout()),
            "exp_last": In(range(Q // BEAT_BYTES + 1), init=Q // BEAT_BYTES),
            "out_last": In(range(out_last_beats_max(cfg) + 1), init=Q // BEAT_BYTES),
            "start": In(1),
            "busy": Out(1),
            "input": In(stream.Signature(BEAT)),
            "residual": In(stream.Signature(BEAT)),
            "output": Out(stream.Signature(BEAT)),
            **{name: In(unit.signature.members["wr"].signature.flip())
               for name, unit in self._tables.items()},
        })

    def elaborate(self, platform):
        cfg = self.config
        P, Q = cfg.dw_lanes, cfg.pw_cols
        m = Module()

        m.submodules.engine = engine = self.engine
        m.submodules.engine_requant = erq = self.engine_requant
        m.submodules.dw_array = dw = self.dw_array
        m.submodules.dw_requant = dwq = self.dw_requant
        m.submodules.add = add = self.add
        m.submodules.in_packer = in_packer = BeatPacker(_int8_words(P))
        # the engine's expand words (Q channels) into the line buffer's groups (P channels):
        # a pixel's `exp_words` words, of the last of which the serializer keeps the beats
        # up to `exp_groups` groups, in transfers of up to a line-buffer word (P/8 beats)
        # one entry more than the credits: the FIFO never refuses a word (a word written
        # while the output register is being emptied would find the inner memory full)
        m.submodules.exp_fifo = exp_fifo = SyncFIFOBuffered(width=8 * Q,
                                                             depth=engine.e_credits + 1)
        m.submodules.exp_serializer = exp_ser = BeatSerializer(
            erq.o.payload.value.shape(), max_words=self.exp_words_max, max_beats=P // BEAT_BYTES)
        m.submodules.line_buffer = lb = LineBuffer(cfg)
        # a pixel's stored `out_beats` in `out_groups` engine words, the last one partly, or
        # followed by filler beats up to the pixel's padding to P channels
        last_max = out_last_beats_max(cfg)
        m.submodules.res_packer = res_packer = BeatPacker(
            _int8_words(Q), max_words=cfg.out_groups_max, max_last_beats=last_max)
        m.submodules.out_serializer = out_ser = BeatSerializer(
            erq.o.payload.value.shape(), max_words=cfg.out_groups_max, max_last_beats=last_max)
        m.submodules.raw_serializer = raw_ser = BeatSerializer(engine.o.payload.acc.shape())

        for name, unit in self._tables.items():
            wiring.connect(m, wiring.flipped(getattr(self, name)), unit.wr)
        m.d.comb += [lb.start.eq(self.start), engine.start.eq(self.start),
                     self.busy.eq(lb.busy)]

        def field(name):
            return DESCRIPTOR.value(self.desc, name)

        def flag(bit):
            return (field("flags") & bit) != 0

        expand_on, conv_on = flag(DescFlag.EXPAND), flag(DescFlag.CONV)
        residual_on, raw_on = flag(DescFlag.RESIDUAL), flag(DescFlag.RAW_OUT)
        pool_on = flag(DescFlag.POOL)
        prod = self.prod

        # layer parameters (static while a layer runs); a global pool's line buffer emits
        # every input pixel (its output is the input's size)
        pool_sources = {"out_h": "in_h", "out_w": "in_w"}
        for name in lb.params.shape().members:
            if name != "conv":
                source = PARAM_SOURCES.get(name, name)
                value = (getattr(prod, source) if source in prod.shape().members
                         else field(source))
                if name in pool_sources:
                    value = Mux(pool_on, field(pool_sources[name]), value)
                m.d.comb += getattr(lb.params, name).eq(value)
        m.d.comb += lb.params.conv.eq(conv_on)
        m.d.comb += [
            engine.e_in_groups.eq(field("in_groups")), engine.e_out_groups.eq(field("exp_words")),
            engine.j_in_groups.eq(field("mid_groups")),
            engine.j_out_groups.eq(field("out_groups")), engine.e_on.eq(expand_on),
            engine.e_wbase.eq(field("exp_wbase")), engine.j_wbase.eq(field("pw_wbase")),
        ]
        m.d.comb += [dwq.zp.eq(field("dw_zp")), dwq.act_min.eq(field("dw_min")),
                     dwq.act_max.eq(field("dw_max")), dwq.pool_on.eq(pool_on),
                     dwq.pool_pixels.eq(prod.in_pixels), dwq.pool_groups.eq(field("mid_groups"))]
        for k, prefix in ((EXPAND, "exp"), (PROJECT, "pw")):
            m.d.comb += [erq.zp[k].eq(field(f"{prefix}_zp")),
                         erq.act_min[k].eq(field(f"{prefix}_min")),
                         erq.act_max[k].eq(field(f"{prefix}_max"))]
        add_fields = {"out_shift": "add_out_shift", "out_zp": "add_zp", "act_min": "add_min",
                      "act_max": "add_max"}
        for name in add.params.shape().members:
            m.d.comb += getattr(add.params, name).eq(field(add_fields[name]))
        m.d.comb += [exp_ser.words.eq(field("exp_words")), exp_ser.last_beats.eq(self.exp_last),
                     *(c for unit in (out_ser, res_packer)
                       for c in (unit.words.eq(field("out_groups")),
                                 unit.last_beats.eq(self.out_last)))]

        # Skid buffers after the requantizers, the ADD and before the writer: each cuts a
        # chain of combinational `ready` through the pipelines' global enables (the
        # timing estimate's longest paths ran from the writer to the PW array).
        def skid(name, source):
            m.submodules[name] = buf = SkidBuffer(source.payload.shape())
            wiring.connect(m, source, buf.i)
            return buf.o

        rq_out, dw_out, add_out = (
            skid(f"{name}_skid", rq.o) for name, rq in
            (("engine_requant", erq), ("dw", dwq), ("add", add)))
        m.submodules.write_skid = write_skid = SkidBuffer(BEAT)
        wiring.connect(m, write_skid.o, wiring.flipped(self.output))

        # the engine's words: RAW_OUT project words -> raw serializer, the others ->
        # engine_requant, whose words go by kind: expand -> exp_out, project -> pw_out
        # (through `engine_fifo`: the engine goes on with project jobs while the requantizer
        # works through the expand words of the jobs before, two cycles a word on pynq-z2)
        o, kind = engine.o, engine.o.payload.kind
        raw_word = (kind == PROJECT) & raw_on
        m.submodules.engine_fifo = fifo = SyncFIFOBuffered(
            width=erq.i.payload.shape().size, depth=self.ENGINE_FIFO_WORDS)
        m.d.comb += [
            fifo.w_data.eq(o.payload), fifo.w_en.eq(o.valid & ~raw_word),
            erq.i.payload.eq(fifo.r_data), erq.i.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(erq.i.ready),
            raw_ser.i.valid.eq(o.valid & raw_word),
            raw_ser.i.payload.eq(o.payload.acc),
            o.ready.eq(Mux(raw_word, raw_ser.i.ready, fifo.w_rdy)),
        ]
        words = stream.Signature(rq_out.payload.value.shape())
        exp_out, pw_out = words.create(path=("exp_out",)), words.create(path=("pw_out",))
        rq_expand = rq_out.payload.kind == EXPAND
        m.d.comb += [
            exp_out.valid.eq(rq_out.valid & rq_expand), pw_out.valid.eq(rq_out.valid & ~rq_expand),
            exp_out.payload.eq(rq_out.payload.value), pw_out.payload.eq(rq_out.payload.value),
            rq_out.ready.eq(Mux(rq_expand, exp_out.ready, pw_out.ready)),
        ]

        # expand: input words -> engine (E jobs) -> requant -> FIFO => beats -> line buffer;
        # a word leaving the FIFO returns its credit to the engine. The skid after the FIFO
        # keeps the line buffer's fill-ready logic off the FIFO's read side, the register
        # on `e_free` off the engine's credit. Without an expand stage the input beats go
        # straight into the line buffer.
        wiring.connect(m, in_packer.o, engine.e)
        m.submodules.exp_fifo_skid = fifo_skid = SkidBuffer(exp_ser.i.payload.shape())
        wiring.connect(m, fifo_skid.o, exp_ser.i)
        m.d.comb += [
            exp_fifo.w_en.eq(exp_out.valid), exp_fifo.w_data.eq(exp_out.payload),
            exp_out.ready.eq(exp_fifo.w_rdy),
            fifo_skid.i.valid.eq(exp_fifo.r_rdy), fifo_skid.i.payload.eq(exp_fifo.r_data),
            exp_fifo.r_en.eq(fifo_skid.i.ready),
        ]
        m.d.sync += engine.e_free.eq(exp_fifo.r_rdy & fifo_skid.i.ready)
        m.d.comb += [
            in_packer.i.valid.eq(self.input.valid & expand_on),
            in_packer.i.payload.eq(self.input.payload),
            lb.fill.valid.eq(Mux(expand_on, exp_ser.o.valid, self.input.valid)),
            lb.fill.payload.data.eq(Mux(expand_on, exp_ser.o.payload.data,
                                        self.input.payload)),
            lb.fill.payload.beats.eq(Mux(expand_on, exp_ser.o.payload.beats, 1)),
            exp_ser.o.ready.eq(lb.fill.ready & expand_on),
            self.input.ready.eq(Mux(expand_on, in_packer.i.ready, lb.fill.ready)),
        ]

        # spatial stage: DW (+ requant) or the taps themselves (conv mode) into the engine;
        # a skid between the DW array and its requantizer keeps the line buffer's tap
        # counters off the requantizer's stall logic
        wiring.connect(m, skid("dw_acc_skid", dw.o), dwq.i)
        m.d.comb += [
            dw.taps.payload.eq(lb.taps.payload),
            dw.taps.valid.eq(lb.taps.valid & ~conv_on),
            lb.taps.ready.eq(Mux(conv_on, engine.j.ready, dw.taps.ready)),
            engine.j.valid.eq(Mux(conv_on, lb.taps.valid, dw_out.valid)),
            engine.j.payload.eq(Mux(conv_on, lb.taps.payload.data[0], dw_out.payload)),
            dw_out.ready.eq(engine.j.ready & ~conv_on),
        ]

        # project output: int32 accumulators (RAW_OUT), or requant [-> residual ADD]; the
        # residual words reach the ADD through a skid (the ADD's joint a/b handshake stays
        # off the residual reader's ready)
        m.d.comb += [res_packer.i.valid.eq(self.residual.valid & residual_on),
                     res_packer.i.payload.eq(self.residual.payload),
                     self.residual.ready.eq(res_packer.i.ready)]
        res_out = skid("res_skid", res_packer.o)
        m.d.comb += [
            add.b.payload.eq(res_out.payload),
            add.b.valid.eq(res_out.valid),
            res_out.ready.eq(add.b.ready),
            add.a.payload.eq(pw_out.payload),
            add.a.valid.eq(pw_out.valid & residual_on),
            out_ser.i.valid.eq(Mux(residual_on, add_out.valid, pw_out.valid)),
            out_ser.i.payload.eq(Mux(residual_on, add_out.payload, pw_out.payload)),
            pw_out.ready.eq(Mux(residual_on, add.a.ready, out_ser.i.ready)),
            add_out.ready.eq(out_ser.i.ready & residual_on),
        ]
        m.d.comb += [
            write_skid.i.valid.eq(Mux(raw_on, raw_ser.o.valid, out_ser.o.valid)),
            write_skid.i.payload.eq(Mux(raw_on, raw_ser.o.payload, out_ser.o.payload)),
            raw_ser.o.ready.eq(write_skid.i.ready & raw_on),
            out_ser.o.ready.eq(write_skid.i.ready & ~raw_on),
        ]
        return m


def _int8_words(lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(8), lanes)

