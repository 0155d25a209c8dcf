"""Top level: register bank, program controller and the DW -> PW datapath."""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXI4Signature
from .beat_serializer import BeatSerializer
from .config import AcceleratorConfig
from .csr import ControlRegisters
from .dma_reader import DMAReader
from .dma_writer import DMAWriter
from .dw_array import DepthwiseArray
from .layout import (
    DESCRIPTOR,
    REGISTERS,
    DescFlag,
    ErrorCode,
    Opcode,
    descriptor_param_checks,
)
from .line_buffer import LineBuffer
from .pw_array import PointwiseArray
from .requant import Requantizer

__all__ = ["Accelerator"]

_DESC_BEATS = DESCRIPTOR.size // 8


class Load(enum.IntEnum):
    """Per-layer tables, loaded in this order before the layer runs."""
    DW_WEIGHTS = 0
    DW_TABLE = 1
    PW_WEIGHTS = 2
    PW_TABLE = 3


class Accelerator(wiring.Component):
    """The dwsep accelerator.

    Software writes a program address and sets ``CTRL.start``; the controller then walks the
    descriptor list: for each layer it fetches the descriptor, checks it against the limits
    this instance was built with, loads the DW and PW weight and requant tables into on-chip
    memories, and streams the input through line buffer -> DW array -> requant -> PW array
    -> requant -> DDR, with the DW output kept on chip. ``STATUS.done`` (and ``irq`` when
    enabled) follows the descriptor flagged ``LAST``.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    s_axil : ``In(AXI4LiteSignature)``
        Control registers (``hw.layout.REGISTERS``).
    m_axi : ``Out(AXI4Signature)``
        DDR access, 64-bit, bursts of up to 16 beats (AXI3-compatible lengths).
    irq : ``Out(1)``
        Level interrupt.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=REGISTERS.addr_width)),
            "m_axi": Out(AXI4Signature(addr_width=config.axi_addr_width)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        P, Q = cfg.dw_lanes, cfg.pw_cols
        m = Module()

        m.submodules.csr = csr = ControlRegisters(cfg)
        m.submodules.reader = reader = DMAReader(addr_width=cfg.axi_addr_width)
        m.submodules.writer = writer = DMAWriter(addr_width=cfg.axi_addr_width)
        m.submodules.line_buffer = lb = LineBuffer(cfg)
        m.submodules.dw_array = dw = DepthwiseArray(cfg)
        m.submodules.dw_requant = dwq = Requantizer(P, cfg.mid_groups_max)
        m.submodules.pw_array = pw = PointwiseArray(cfg)
        m.submodules.pw_requant = pwq = Requantizer(Q, cfg.out_groups_max)
        m.submodules.serializer = ser = BeatSerializer(pwq.o.payload.shape())

        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        m.d.comb += self.irq.eq(csr.irq)
        for dma in (reader, writer):
            for name, member in dma.axi.signature.members.items():
                ours, theirs = getattr(self.m_axi, name), getattr(dma.axi, name)
                m.d.comb += (ours.eq(theirs) if member.flow == Out else theirs.eq(ours))

        # ---- datapath: line buffer -> DW -> requant -> PW -> requant -> beats -> DDR ----
        self._connect_stream(m, lb.taps, dw.taps)
        self._connect_stream(m, dw.o, dwq.i)
        self._connect_stream(m, dwq.o, pw.i)
        self._connect_stream(m, pw.o, pwq.i)
        wiring.connect(m, pwq.o, ser.i)
        wiring.connect(m, ser.o, writer.data)

        # ---- the current descriptor ----
        desc = Signal(8 * DESCRIPTOR.size)

        def field(name):
            f = DESCRIPTOR[name]
            value = desc[f.lsb:f.lsb + f.width]
            return value.as_signed() if f.signed else value

        for name in lb.params.shape().members:
            m.d.comb += getattr(lb.params, name).eq(field(name))
        m.d.comb += [
            pw.mid_groups.eq(field("mid_groups")), pw.out_groups.eq(field("out_groups")),
            dwq.zp.eq(field("dw_zp")), dwq.act_min.eq(field("dw_min")),
            dwq.act_max.eq(field("dw_max")),
            pwq.zp.eq(field("pw_zp")), pwq.act_min.eq(field("pw_min")),
            pwq.act_max.eq(field("pw_max")),
        ]

        # ---- sizes derived from the descriptor (computed over two cycles) ----
        aw = cfg.axi_addr_width
        in_pixels, out_pixels, taps = Signal(32), Signal(32), Signal(8)
        in_beats, out_beats = Signal(32), Signal(32)
        load_words = [Signal(32, name=f"words_{ld.name.lower()}") for ld in Load]
        load_beats_per_word = [P // 8, 9 * P // 8, P * Q // 8, 9 * Q // 8]
        load_addr = [field("dw_weights"), field("dw_table"), field("pw_weights"),
                     field("pw_table")]
        load_ports = [dw.wr, dwq.wr, pw.wr, pwq.wr]

        # ---- controller ----
        desc_addr = Signal(aw)
        layer = Signal(16)
        beat_count = Signal(range(_DESC_BEATS + 1))
        error_code = Signal(8)
        load = Signal(range(len(Load)))
        reader_cmd_sent = Signal()
        writer_cmd_sent = Signal()
        settle = Signal()

        # loader: beats shift into `buf` from the top; a word of n beats is the top n*64 bits
        max_word = max(b * 64 for b in load_beats_per_word)
        buf = Signal(max_word)
        word_beat = Signal(range(max(load_beats_per_word) + 1))
        word_addr = Signal(32)
        write_en = Signal()
        write_addr = Signal(32)

        for i, port in enumerate(load_ports):
            width = load_beats_per_word[i] * 64
            m.d.comb += [
                port.data.eq(buf[max_word - width:]),
                port.addr.eq(write_addr),
                port.en.eq(write_en & (load == i)),
            ]

        m.d.comb += [
            csr.layer.eq(layer),
            csr.error_code.eq(error_code),
            csr.error_layer.eq(layer),
            lb.fill.payload.eq(reader.data.payload),
        ]
        m.d.sync += [csr.done.eq(0), csr.error.eq(0), write_en.eq(0),
                     lb.start.eq(0), pw.start.eq(0), reader.clear.eq(0), writer.clear.eq(0)]

        def fail(code):
            m.d.sync += [error_code.eq(code), csr.error.eq(1)]
            m.next = "IDLE"

        n_word = Mux(load == Load.DW_WEIGHTS, load_beats_per_word[0],
                     Mux(load == Load.DW_TABLE, load_beats_per_word[1],
                         Mux(load == Load.PW_WEIGHTS, load_beats_per_word[2],
                             load_beats_per_word[3])))
        cur_words = Mux(load == Load.DW_WEIGHTS, load_words[0],
                        Mux(load == Load.DW_TABLE, load_words[1],
                            Mux(load == Load.PW_WEIGHTS, load_words[2], load_words[3])))
        cur_addr = Mux(load == Load.DW_WEIGHTS, load_addr[0],
                       Mux(load == Load.DW_TABLE, load_addr[1],
                           Mux(load == Load.PW_WEIGHTS, load_addr[2], load_addr[3])))

        with m.FSM(name="ctrl") as fsm:
            m.d.comb += csr.busy.eq(~fsm.ongoing("IDLE"))
            with m.State("IDLE"), m.If(csr.start):
                m.d.sync += [desc_addr.eq(csr.prog_addr), layer.eq(0),
                             error_code.eq(ErrorCode.NONE),
                             reader.clear.eq(1), writer.clear.eq(1)]
                with m.If(csr.prog_addr[:3] != 0):
                    fail(ErrorCode.MISALIGNED)
                with m.Else():
                    m.next = "FETCH_CMD"

            with m.State("FETCH_CMD"):
                m.d.comb += [reader.cmd.valid.eq(1),
                             reader.cmd.payload.addr.eq(desc_addr),
                             reader.cmd.payload.beats.eq(_DESC_BEATS)]
                with m.If(reader.cmd.ready):
                    m.d.sync += beat_count.eq(0)
                    m.next = "FETCH_DATA"

            with m.State("FETCH_DATA"):
                m.d.comb += reader.data.ready.eq(1)
                with m.If(reader.data.valid):
                    m.d.sync += [desc.eq(Cat(desc[64:], reader.data.payload)),
                                 beat_count.eq(beat_count + 1)]
                    with m.If(beat_count == _DESC_BEATS - 1):
                        m.next = "SIZES"

            with m.State("SIZES"):
                m.d.sync += [
                    in_pixels.eq(field("in_h") * field("in_w")),
                    out_pixels.eq(field("out_h") * field("out_w")),
                    taps.eq(field("kernel") * field("kernel")),
                ]
                m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [
                    in_beats.eq(in_pixels * field("in_groups") * (P // 8)),
                    out_beats.eq(out_pixels * field("out_groups") * (Q // 8)),
                    load_words[Load.DW_WEIGHTS].eq(field("mid_groups") * taps),
                    load_words[Load.DW_TABLE].eq(field("mid_groups")),
                    load_words[Load.PW_WEIGHTS].eq(field("mid_groups") * field("out_groups")),
                    load_words[Load.PW_TABLE].eq(field("out_groups")),
                    load.eq(Load.DW_WEIGHTS),
                ]
                addrs = [field(n) for n in ("in_addr", "out_addr", "dw_weights", "dw_table",
                                            "pw_weights", "pw_table")]
                with m.If(field("opcode") != Opcode.DWSEP):
                    fail(ErrorCode.BAD_OPCODE)
                with m.Elif(~self._params_ok(field)):
                    fail(ErrorCode.BAD_PARAMS)
                with m.Elif(Cat(a[:3] for a in addrs).any()):
                    fail(ErrorCode.MISALIGNED)
                with m.Else():
                    m.next = "LOAD_CMD"

            with m.State("LOAD_CMD"):
                m.d.comb += [reader.cmd.valid.eq(1),
                             reader.cmd.payload.addr.eq(cur_addr),
                             reader.cmd.payload.beats.eq(cur_words * n_word)]
                with m.If(reader.cmd.ready):
                    m.d.sync += [word_beat.eq(0), word_addr.eq(0)]
                    m.next = "LOAD_DATA"

            with m.State("LOAD_DATA"):
                m.d.comb += reader.data.ready.eq(1)
                with m.If(reader.data.valid):
                    m.d.sync += buf.eq(Cat(buf[64:], reader.data.payload))
                    with m.If(word_beat == n_word - 1):
                        m.d.sync += [word_beat.eq(0), word_addr.eq(word_addr + 1),
                                     write_en.eq(1), write_addr.eq(word_addr)]
                        with m.If(word_addr == cur_words - 1):
                            m.next = "LOAD_FLUSH"
                    with m.Else():
                        m.d.sync += word_beat.eq(word_beat + 1)

            with m.State("LOAD_FLUSH"):
                # the last word's write happens in this cycle
                with m.If(reader.error):
                    fail(ErrorCode.AXI_READ)
                with m.Elif(load == Load.PW_TABLE):
                    m.next = "RUN_START"
                with m.Else():
                    m.d.sync += load.eq(load + 1)
                    m.next = "LOAD_CMD"

            with m.State("RUN_START"):
                m.d.sync += [lb.start.eq(1), pw.start.eq(1),
                             reader_cmd_sent.eq(0), writer_cmd_sent.eq(0)]
                m.next = "RUN_CMDS"

            with m.State("RUN_CMDS"):
                m.d.comb += [
                    reader.cmd.valid.eq(~reader_cmd_sent),
                    reader.cmd.payload.addr.eq(field("in_addr")),
                    reader.cmd.payload.beats.eq(in_beats),
                    writer.cmd.valid.eq(~writer_cmd_sent),
                    writer.cmd.payload.addr.eq(field("out_addr")),
                    writer.cmd.payload.beats.eq(out_beats),
                ]
                r_done = reader_cmd_sent | reader.cmd.ready
                w_done = writer_cmd_sent | writer.cmd.ready
                m.d.sync += [reader_cmd_sent.eq(r_done), writer_cmd_sent.eq(w_done)]
                with m.If(r_done & w_done):
                    m.d.sync += settle.eq(1)
                    m.next = "RUN_WAIT"

            with m.State("RUN_WAIT"):
                m.d.sync += settle.eq(0)
                with m.If(~settle & ~writer.busy & ~reader.busy & ~lb.busy):
                    with m.If(reader.error):
                        fail(ErrorCode.AXI_READ)
                    with m.Elif(writer.error):
                        fail(ErrorCode.AXI_WRITE)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(field("flags") & DescFlag.LAST):
                    m.d.sync += csr.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [desc_addr.eq(desc_addr + DESCRIPTOR.size),
                                 layer.eq(layer + 1)]
                    m.next = "FETCH_CMD"

        # While a layer runs, the reader's beats are the input tensor for the line buffer.
        with m.If(fsm.ongoing("RUN_CMDS") | fsm.ongoing("RUN_WAIT")):
            m.d.comb += [lb.fill.valid.eq(reader.data.valid),
                         reader.data.ready.eq(lb.fill.ready)]
        return m

    @staticmethod
    def _connect_stream(m, src, dst):
        """Connect streams whose payloads carry the same fields (widths may differ)."""
        m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
        dst_shape = dst.payload.shape()
        if hasattr(dst_shape, "members") and hasattr(src.payload.shape(), "members"):
            for name in dst_shape.members:
                m.d.comb += getattr(dst.payload, name).eq(getattr(src.payload, name))
        else:
            m.d.comb += dst.payload.eq(src.payload)

    def _params_ok(self, field):
        names = {f.name: field(f.name) for f in DESCRIPTOR}
        ok = Const(1)
        for cond in descriptor_param_checks(names, self.config):
            ok = ok & cond
        return ok
