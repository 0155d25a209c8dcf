"""Top level: register bank, program controller and the layer datapath."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXI4ReadSignature, AXI4Signature
from .config import BEAT_BYTES, AcceleratorConfig
from .csr import ControlRegisters
from .datapath import Datapath
from .dma_reader import DMAReader
from .dma_writer import DMAWriter
from .layout import (
    ADDRESS_ALIGN,
    ADDRESS_FIELDS,
    DESCRIPTOR,
    PREFETCH_SEGMENTS,
    REGISTERS,
    DescFlag,
    ErrorCode,
    Opcode,
    Table,
    descriptor_extents,
    descriptor_param_checks,
    descriptor_product_checks,
    out_last_beats_max,
    scale,
    table_loads,
)
from .products import DescriptorProducts

__all__ = ["Top", "Controller"]

_DESC_BEATS = DESCRIPTOR.size // BEAT_BYTES
_BEAT_BITS = 8 * BEAT_BYTES
#: low address bits that must be zero (``ADDRESS_ALIGN``)
_ALIGN_BITS = (ADDRESS_ALIGN - 1).bit_length()


class Top(wiring.Component):
    """The dwsep accelerator.

    Software writes a program address and sets ``CTRL.start``; the controller then walks the
    descriptor list (``hw.layout.DESCRIPTOR``, ``Opcode.LAYER``): for each layer it fetches
    the descriptor, checks it against the limits this instance was built with
    (``layout.descriptor_param_checks``), loads the weight and requant tables the layer's
    flags need into on-chip memories, and streams the input through

    ``[expand 1x1 -> requant -> FIFO] -> line buffer -> (DW -> requant | conv taps) ->
    project 1x1 -> (requant [-> residual ADD] | int32) -> DDR``

    with every intermediate on chip. ``STATUS.done`` (and ``irq`` when enabled) follows the
    descriptor flagged ``LAST``. Two components: the :class:`Controller` (registers,
    descriptor fetch and checks, table loads, the DMAs, sequencing) and the
    :class:`~dwsep.hw.datapath.Datapath` (the stages), joined by the datapath's signature.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    s_axil : ``In(AXI4LiteSignature)``
        Control registers (``hw.layout.REGISTERS``).
    m_axi : ``Out(AXI4Signature)``
        DDR: descriptors, tables, the layer input and the output; 64-bit, bursts of up to
        16 beats (AXI3-compatible lengths).
    m_axi_res : ``Out(AXI4ReadSignature)``
        DDR reads of the residual input, and the second half of every table load. A port
        of its own: on a shared read channel a stalled input stream would block the
        residual data the pipeline waits for.
    m_axi_pf : ``Out(AXI4ReadSignature)``
        DDR reads of the prefetch: the next descriptor's engine weights, read while this
        one runs (beside a residual too).
    irq : ``Out(1)``
        Level interrupt.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        super().__init__(_bus_signature(config))

    def elaborate(self, platform):
        m = Module()
        # CTRL.abort: the controller's DMAs drain their bursts, then one cycle of
        # `soft_reset` returns the controller and the datapath to their reset state (the
        # register bank keeps its values) and ends the run with ErrorCode.ABORTED
        aborting, soft_reset = Signal(), Signal()
        datapath = Datapath(self.config)
        controller = Controller(self.config, datapath)
        m.submodules.datapath = ResetInserter(soft_reset)(datapath)
        m.submodules.controller = ResetInserter(soft_reset)(controller)
        m.submodules.csr = csr = ControlRegisters(self.config)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        for name in ("m_axi", "m_axi_res", "m_axi_pf"):
            wiring.connect(m, getattr(controller, name), wiring.flipped(getattr(self, name)))
        m.d.comb += self.irq.eq(csr.irq)
        wiring.connect(m, controller.datapath, datapath)

        with m.If(csr.abort):
            m.d.sync += aborting.eq(1)
        m.d.sync += soft_reset.eq(0)
        with m.If(aborting & ~controller.dma_busy):
            m.d.sync += [aborting.eq(0), soft_reset.eq(1)]
        run = controller.run
        m.d.comb += [
            run.start.eq(csr.start), run.prog_addr.eq(csr.prog_addr),
            run.window_lo.eq(csr.window_lo), run.window_hi.eq(csr.window_hi),
            controller.drain.eq(aborting),
            csr.busy.eq(run.busy | aborting | soft_reset),
            csr.layer.eq(run.layer),
            csr.done.eq(run.done & ~aborting),
            csr.error.eq((run.error & ~aborting) | soft_reset),
            csr.error_code.eq(Mux(soft_reset, ErrorCode.ABORTED, run.error_code)),
            csr.error_layer.eq(run.layer),
            csr.error_addr.eq(Mux(soft_reset, run.desc_addr, run.error_addr)),
        ]
        return m


def _bus_signature(config: AcceleratorConfig) -> dict:
    """The accelerator's ports: its register bank and its AXI managers, and the interrupt."""
    return {"s_axil": In(AXI4LiteSignature(addr_width=REGISTERS.addr_width)),
            **_manager_signature(config), "irq": Out(1)}


def _manager_signature(config: AcceleratorConfig) -> dict:
    """The AXI managers: DDR reads and writes, the residual's and the prefetch's reads."""
    aw = config.axi_addr_width
    return {
        "m_axi": Out(AXI4Signature(addr_width=aw)),
        "m_axi_res": Out(AXI4ReadSignature(addr_width=aw)),
        "m_axi_pf": Out(AXI4ReadSignature(addr_width=aw)),
    }


#: What the controller exchanges with the register bank: a run's start and address and the
#: DDR window in; its progress and its end (``done``, or ``error`` with a code and an
#: address, one-cycle pulses) out.
RunSignature = wiring.Signature({
    "start": In(1), "prog_addr": In(32), "window_lo": In(32), "window_hi": In(32),
    "busy": Out(1), "layer": Out(16), "desc_addr": Out(32),
    "done": Out(1), "error": Out(1), "error_code": Out(8), "error_addr": Out(32),
})


class Controller(wiring.Component):
    """The program controller: the descriptor fetch and checks, the products of fields, the
    table loads (through both read ports), the prefetch, the DMAs and the sequencing of a
    layer's run on the :class:`~dwsep.hw.datapath.Datapath`.

    Parameters
    ----------
    config : AcceleratorConfig
    datapath : Datapath
        The datapath it drives: its signature, and its tables' record sizes.

    Members
    -------
    m_axi, m_axi_res, m_axi_pf
        As :class:`Top`'s.
    run : ``Out(RunSignature)``
        To and from the register bank (:class:`~dwsep.hw.run.ControlRegisters`).
    drain : ``In(1)``
        Abort: every DMA drains its bursts (:class:`~dwsep.hw.dma_reader.DMAEngine`), held
        until ``dma_busy`` falls; then :class:`Top` resets the controller.
    dma_busy : ``Out(1)``
        A DMA has a command or a burst in flight.
    datapath : ``In(datapath.signature)``
        The datapath's members seen from the controller: the descriptor, its products and
        the start it drives; the input, residual and table words it feeds; the output it
        writes to DDR.
    """

    def __init__(self, config: AcceleratorConfig, datapath: Datapath):
        self.config = config
        self._exp_words_max = datapath.exp_words_max
        self._erq = datapath.engine_requant
        super().__init__({**_manager_signature(config), "run": Out(RunSignature),
                          "drain": In(1), "dma_busy": Out(1),
                          "datapath": In(datapath.signature)})

    def elaborate(self, platform):
        cfg = self.config
        P, Q = cfg.dw_lanes, cfg.pw_cols
        aw = cfg.axi_addr_width
        m = Module()
        dp = self.datapath
        erq, exp_words_max = self._erq, self._exp_words_max

        run = self.run
        m.submodules.sizes = products = DescriptorProducts(cfg)
        m.submodules.reader = reader = DMAReader(addr_width=aw)
        m.submodules.res_reader = res_reader = DMAReader(addr_width=aw)
        m.submodules.pf_reader = pf_reader = DMAReader(addr_width=aw)
        m.submodules.writer = writer = DMAWriter(addr_width=aw)

        dmas = (reader, writer, res_reader, pf_reader)
        m.d.comb += [*(dma.drain.eq(self.drain) for dma in dmas),
                     self.dma_busy.eq(_any(dma.busy for dma in dmas))]
        for port, dma in ((self.m_axi, reader), (self.m_axi, writer),
                          (self.m_axi_res, res_reader), (self.m_axi_pf, pf_reader)):
            for name, member in dma.axi.signature.members.items():
                ours, theirs = getattr(port, name), getattr(dma.axi, name)
                m.d.comb += (ours.eq(theirs) if member.flow == Out else theirs.eq(ours))

        # ---- the current descriptor ----
        desc = Signal(8 * DESCRIPTOR.size)

        def field(name):
            return DESCRIPTOR.value(desc, name)

        def flag(bit):
            return (field("flags") & bit) != 0

        residual_on = flag(DescFlag.RESIDUAL)
        prod = products.products
        m.d.comb += [products.desc.eq(desc), dp.desc.eq(desc), dp.prod.eq(prod)]
        wiring.connect(m, wiring.flipped(dp.output), writer.data)

        # ---- sizes derived from the descriptor: `products` (hw/products.py) forms the
        # products of fields, CHECK_PRODUCTS scales them by constants into these registers
        in_beats = Signal(32)
        # beats of a pixel's last engine word that are stored (the serializers drop the
        # rest; all of them when Q == P; the output's filler beats after them): the
        # expand stage's and the output's
        exp_last = Signal(range(Q // BEAT_BYTES + 1), init=Q // BEAT_BYTES)
        out_last = Signal(range(out_last_beats_max(cfg) + 1), init=Q // BEAT_BYTES)
        out_beats, pixel_beats = prod.out_total_beats, field("out_beats")
        m.d.comb += [dp.exp_last.eq(exp_last), dp.out_last.eq(out_last)]
        # a requant-table word is one record of its requantizer's compute lanes, padded to
        # whole beats (`Table.word_bytes`); the padding, at the top of the word, falls off
        # the narrower record on the table's write port
        load_beats_per_word = [t.word_bytes(cfg) // BEAT_BYTES for t in Table]
        load_beats = [Signal(32, name=f"beats_{ld.name.lower()}") for ld in Table]
        # a table is read through both read ports: its first ceil(n/2) words through `reader`,
        # the rest through `res_reader` (`m_axi_res`, on a second HP port of the PS)
        half_words = [Signal(32, name=f"half_{ld.name.lower()}") for ld in Table]
        load_addr = [field(t.field) for t in Table]
        load_ports = [dp.engine_wr, dp.engine_requant_wr, dp.dw_wr, dp.dw_requant_wr,
                      dp.engine_wr, dp.engine_requant_wr, dp.add_wr]
        # the engine's weight tables go where the descriptor places them, unless it finds
        # them there already (EXP_LOADED, PW_LOADED: an earlier load or the prefetch)
        # (the PW requant records follow the expand ones in engine_requant's table)
        pw_records = exp_words_max * erq.chunks
        load_base = [field("exp_wbase"), 0, 0, 0, field("pw_wbase"), pw_records, 0]
        engine_loads = (Table.EXP_WEIGHTS, Table.PW_WEIGHTS)
        load_needed, load_words = zip(*table_loads(self._fields(field), prod, cfg), strict=True)

        # ---- controller ----
        desc_addr = Signal(aw)
        layer = Signal(16)
        beat_count = Signal(range(_DESC_BEATS + 1))
        error_code = Signal(8)
        load = Signal(range(len(Table) + 1))
        reader_cmd_sent = Signal()
        res_cmd_sent = Signal()
        out_pixel = Signal(32)      # next pixel whose write command is issued
        out_addr = Signal(aw)       # its address
        settle = Signal()
        opcode_ok, aligned = Signal(), Signal()
        params_ok = Signal(len(descriptor_param_checks(self._fields(field), cfg)))
        products_ok = Signal(len(descriptor_product_checks(self._fields(field), prod, cfg)))
        running = Signal()          # RUN_CMDS or RUN_WAIT: the reader's beats are the input

        # loader: two lanes, one per read port; each shifts its port's beats into its `buf`
        # from the top (a word of n beats is the top n*64 bits) and writes a word as it
        # completes. One beat a cycle in all: when both ports offer one, the lane that did
        # not take the last beat takes this one.
        max_word = max(b * _BEAT_BITS for b in load_beats_per_word)
        lanes = []
        for n, dma in enumerate((reader, res_reader)):
            lanes.append(dict(
                dma=dma, buf=Signal(max_word, name=f"load_buf{n}"),
                beat=Signal(range(max(load_beats_per_word) + 1), name=f"load_beat{n}"),
                word=Signal(32, name=f"load_word{n}"),
                last=Signal(32, name=f"load_last{n}"),      # its last word's index
                done=Signal(name=f"load_done{n}"),           # every word of its part taken
                take=Signal(name=f"load_take{n}")))
        took_first = Signal()    # the last beat came from the first lane
        write_en = Signal()
        write_lane = Signal()    # the lane whose completed word is written
        write_addr = Signal(32)
        # LOAD_SPLIT: its first word
        write_base = Signal(range(max(cfg.engine_weight_depth, pw_records + 1)))
        write_data = Mux(write_lane, lanes[1]["buf"], lanes[0]["buf"])
        for port in dict.fromkeys(load_ports):
            index = [i for i, p in enumerate(load_ports) if p is port]
            width = max(load_beats_per_word[i] for i in index) * _BEAT_BITS
            m.d.comb += [
                port.data.eq(write_data[max_word - width:]),
                port.addr.eq(write_addr),
                port.en.eq(write_en & (_any(load == i for i in index)
                                       | (running if port is dp.engine_wr else 0))),
            ]
        # LOAD_SPLIT: the two commands (first lane: `cmd0_beats` from the table's address;
        # second lane: the rest)
        cmd0_beats, cmd1_beats, cmd1_addr = Signal(32), Signal(32), Signal(aw)

        def by_load(values):
            """``values[load]`` as a mux chain."""
            out = values[-1]
            for i in reversed(range(len(values) - 1)):
                out = Mux(load == i, values[i], out)
            return out

        # LOAD_SPLIT registers the current table's last beat and word indices for LOAD_DATA
        last_beat = Signal(range(max(load_beats_per_word)))
        cur_addr = by_load(load_addr)
        cmd_sent = Signal(2)
        load_wanted = Signal(len(Table))  # needed and not held: set in CHECK_PRODUCTS

        # Tables held on chip: a table whose address and length equal the last load into its
        # memory (in this run) is not read again, e.g. the DW weights of the output tiles of
        # one layer. A program's tables do not change while it runs; `start` forgets them.
        # (Not the engine's weights: the descriptor says where they are and whether loaded.)
        holdable = [ld for ld in Table if ld not in engine_loads]
        held = {ld: Signal(name=f"held_{ld.name.lower()}") for ld in holdable}
        held_addr = {ld: Signal(aw, name=f"held_addr_{ld.name.lower()}") for ld in holdable}
        held_words = {ld: Signal(32, name=f"held_words_{ld.name.lower()}") for ld in holdable}
        held_now = [held[ld] & (held_addr[ld] == load_addr[ld])
                    & (held_words[ld] == load_words[ld]) if ld in held else Const(0)
                    for ld in Table]

        # Prefetch (while a layer runs): the segments' commands go to `pf_reader` one after
        # the other; the second lane assembles their beats into engine words written from
        # `pf_dst` on (segment 0's words, then segment 1's)
        pf_sent = Signal(2)       # segment's command taken (or it has no words)
        pf_dst = Signal(range(cfg.engine_weight_depth))
        pf_left = Signal(16)      # words of the current segment still to come
        (pf0_addr, pf0_words, pf0_base), (pf1_addr, pf1_words, pf1_base) = (
            [field(name) for name in seg] for seg in PREFETCH_SEGMENTS)
        engine_word_beats = P * Q // BEAT_BYTES

        error_addr = Signal(32)
        m.d.comb += [run.layer.eq(layer), run.error_code.eq(error_code),
                     run.error_addr.eq(error_addr), run.desc_addr.eq(desc_addr)]
        m.d.sync += [run.done.eq(0), run.error.eq(0), write_en.eq(0), dp.start.eq(0),
                     *(dma.clear.eq(0) for dma in (reader, writer, res_reader, pf_reader))]

        def fail(code, addr=desc_addr):
            m.d.sync += [error_code.eq(code), error_addr.eq(addr), run.error.eq(1)]
            m.next = "IDLE"

        def fault_addr(*dmas):
            """The fault address of the first of ``dmas`` with an error."""
            out = dmas[-1].fault_addr
            for dma in reversed(dmas[:-1]):
                out = Mux(dma.error, dma.fault_addr, out)
            return out

        # the DDR window: a descriptor's regions (`descriptor_extents`) end (exclusive) at
        # `region_end` (registered in CHECK_PRODUCTS), compared with the window's end in
        # PRODUCTS_CHECKED into `in_window`, which LOAD_NEXT checks before any table or data
        # moves; the next descriptor's place is compared in CHECK, for NEXT. Exclusive ends
        # against `hi_end` = WINDOW_HI + 1 (a register: the window does not change while a
        # run goes on) keep each end a sum of two terms.
        lo = run.window_lo
        hi_end = Signal(33, init=REGISTERS["WINDOW_HI"].field("addr").reset + 1)
        m.d.sync += hi_end.eq(run.window_hi + 1)
        extents = descriptor_extents(self._fields(field), prod, cfg)
        region_end = [Signal(aw + 8, name=f"end_{name}") for name, _, _ in extents]
        in_window = Signal(len(extents))
        next_desc_in_window = Signal()
        prog_end = run.prog_addr + DESCRIPTOR.size

        with m.FSM(name="ctrl") as fsm:
            m.d.comb += run.busy.eq(~fsm.ongoing("IDLE"))
            with m.State("IDLE"), m.If(run.start):
                m.d.sync += [desc_addr.eq(run.prog_addr), layer.eq(0),
                             *(h.eq(0) for h in held.values()),
                             error_code.eq(ErrorCode.NONE),
                             *(dma.clear.eq(1)
                               for dma in (reader, writer, res_reader, pf_reader))]
                with m.If(run.prog_addr[:_ALIGN_BITS] != 0):
                    fail(ErrorCode.MISALIGNED, run.prog_addr)
                with m.Elif((run.prog_addr < lo) | (prog_end > hi_end)):
                    fail(ErrorCode.OUT_OF_WINDOW, run.prog_addr)
                with m.Else():
                    m.next = "FETCH_CMD"

            with m.State("FETCH_CMD"):
                m.d.comb += [reader.cmd.valid.eq(1),
                             reader.cmd.payload.addr.eq(desc_addr),
                             reader.cmd.payload.beats.eq(_DESC_BEATS)]
                with m.If(reader.cmd.ready):
                    m.d.sync += beat_count.eq(0)
                    m.next = "FETCH_DATA"

            with m.State("FETCH_DATA"), m.If(reader.data.valid):
                m.d.sync += [desc.eq(Cat(desc[_BEAT_BITS:], reader.data.payload)),
                             beat_count.eq(beat_count + 1)]
                with m.If(beat_count == _DESC_BEATS - 1):
                    m.next = "CHECK"

            with m.State("CHECK"):
                # each condition into a register; CHECKED combines them
                addrs = [field(n) for n in ADDRESS_FIELDS]
                m.d.sync += [
                    opcode_ok.eq(field("opcode") == Opcode.LAYER),
                    params_ok.eq(Cat(ok for _, ok
                                     in descriptor_param_checks(self._fields(field), cfg))),
                    aligned.eq(~Cat(a[:_ALIGN_BITS] for a in addrs).any()),
                    next_desc_in_window.eq(desc_addr + 2 * DESCRIPTOR.size <= hi_end),
                ]
                m.next = "CHECKED"

            with m.State("CHECKED"):
                with m.If(reader.error):  # the descriptor's own read
                    fail(ErrorCode.AXI_READ, reader.fault_addr)
                with m.Elif(~opcode_ok):
                    fail(ErrorCode.BAD_OPCODE)
                with m.Elif(~params_ok.all()):
                    fail(ErrorCode.BAD_PARAMS)
                with m.Elif(~aligned):
                    fail(ErrorCode.MISALIGNED)
                with m.Else():
                    m.d.comb += products.start.eq(1)
                    m.next = "SIZES"

            with m.State("SIZES"), m.If(products.done):
                m.next = "CHECK_PRODUCTS"

            with m.State("CHECK_PRODUCTS"):
                m.d.sync += [
                    in_beats.eq(scale(prod.in_words, P // BEAT_BYTES)),
                    exp_last.eq(scale(field("exp_groups"), P // BEAT_BYTES) + Q // BEAT_BYTES
                                - scale(field("exp_words"), Q // BEAT_BYTES)),
                    out_last.eq(field("out_beats") + Q // BEAT_BYTES
                                - scale(field("out_groups"), Q // BEAT_BYTES)),
                    *(beats.eq(scale(words, per_word)) for beats, words, per_word
                      in zip(load_beats, load_words, load_beats_per_word, strict=True)),
                    *(half.eq((words + 1) >> 1)
                      for half, words in zip(half_words, load_words, strict=True)),
                    load.eq(0),
                    load_wanted.eq(Cat(need & ~h for need, h
                                       in zip(load_needed, held_now, strict=True))),
                ]
                m.d.sync += products_ok.eq(Cat(
                    ok for _, ok in descriptor_product_checks(self._fields(field), prod, cfg)))
                m.d.sync += [end.eq(field(name) + nbytes)
                             for end, (name, _, nbytes) in zip(region_end, extents, strict=True)]
                m.next = "PRODUCTS_CHECKED"

            with m.State("PRODUCTS_CHECKED"):
                m.d.sync += in_window.eq(Cat(
                    (used == 0) | ((field(name) >= lo) & (end <= hi_end))
                    for end, (name, used, _) in zip(region_end, extents, strict=True)))
                with m.If(~products_ok.all()):
                    fail(ErrorCode.BAD_PARAMS)
                with m.Else():
                    m.next = "LOAD_NEXT"

            with m.State("LOAD_NEXT"):
                # skip the tables this layer does not use or that are held already
                with m.If(~in_window.all()):
                    fail(ErrorCode.OUT_OF_WINDOW)
                with m.Elif(load == len(Table)):
                    m.next = "RUN_START"
                with m.Elif(load_wanted.bit_select(load, 1)):
                    m.next = "LOAD_SPLIT"
                with m.Else():
                    m.d.sync += load.eq(load + 1)

            with m.State("LOAD_SPLIT"):
                half = by_load(half_words)
                split = list(zip(half_words, load_beats_per_word, strict=True))
                m.d.sync += [
                    last_beat.eq(by_load([Const(b - 1) for b in load_beats_per_word])),
                    write_base.eq(by_load([Const(b) if isinstance(b, int) else b
                                           for b in load_base])),
                    cmd0_beats.eq(by_load([scale(h, b) for h, b in split])),
                    cmd1_beats.eq(by_load([scale(w - h, b) for w, (h, b)
                                           in zip(load_words, split, strict=True)])),
                    cmd1_addr.eq(cur_addr + by_load([scale(h, BEAT_BYTES * b) for h, b in split])),
                    lanes[0]["last"].eq(half - 1),
                    lanes[1]["last"].eq(by_load(load_words) - 1),
                    cmd_sent.eq(0),
                ]
                m.next = "LOAD_CMD"

            with m.State("LOAD_CMD"):
                m.d.comb += [reader.cmd.valid.eq(~cmd_sent[0]),
                             reader.cmd.payload.addr.eq(cur_addr),
                             reader.cmd.payload.beats.eq(cmd0_beats),
                             res_reader.cmd.valid.eq(~cmd_sent[1] & (cmd1_beats != 0)),
                             res_reader.cmd.payload.addr.eq(cmd1_addr),
                             res_reader.cmd.payload.beats.eq(cmd1_beats)]
                sent = Cat(cmd_sent[0] | reader.cmd.ready,
                           cmd_sent[1] | res_reader.cmd.ready | (cmd1_beats == 0))
                m.d.sync += cmd_sent.eq(sent)
                with m.If(sent.all()):
                    m.d.sync += [took_first.eq(0),
                                 lanes[0]["beat"].eq(0), lanes[0]["word"].eq(0),
                                 lanes[0]["done"].eq(0),
                                 lanes[1]["beat"].eq(0), lanes[1]["word"].eq(lanes[0]["last"] + 1),
                                 lanes[1]["done"].eq(cmd1_beats == 0)]
                    for ld in holdable:
                        with m.If(load == ld):  # its memory is being overwritten
                            m.d.sync += held[ld].eq(0)
                    m.next = "LOAD_DATA"

            with m.State("LOAD_DATA"):
                first, second = lanes
                offer = [lane["dma"].data.valid & ~lane["done"] for lane in lanes]
                m.d.comb += [
                    second["take"].eq(offer[1] & (~offer[0] | took_first)),
                    first["take"].eq(offer[0] & ~second["take"]),
                ]
                for n, lane in enumerate(lanes):
                    other_done = lanes[1 - n]["done"]
                    with m.If(lane["take"]):
                        m.d.sync += [lane["buf"].eq(Cat(lane["buf"][_BEAT_BITS:],
                                                        lane["dma"].data.payload)),
                                     took_first.eq(n == 0)]
                        with m.If(lane["beat"] == last_beat):
                            m.d.sync += [lane["beat"].eq(0), lane["word"].eq(lane["word"] + 1),
                                         write_en.eq(1), write_lane.eq(n),
                                         write_addr.eq(lane["word"] + write_base)]
                            with m.If(lane["word"] == lane["last"]):
                                m.d.sync += lane["done"].eq(1)
                                with m.If(other_done):
                                    m.next = "LOAD_FLUSH"
                        with m.Else():
                            m.d.sync += lane["beat"].eq(lane["beat"] + 1)

            with m.State("LOAD_FLUSH"):
                # the last word's write happens in this cycle
                with m.If(reader.error | res_reader.error):
                    fail(ErrorCode.AXI_READ, fault_addr(reader, res_reader))
                with m.Else():
                    m.d.sync += load.eq(load + 1)
                    for ld in holdable:
                        with m.If(load == ld):
                            m.d.sync += [held[ld].eq(1), held_addr[ld].eq(load_addr[ld]),
                                         held_words[ld].eq(load_words[ld])]
                    m.next = "LOAD_NEXT"

            with m.State("RUN_START"):
                m.d.sync += [dp.start.eq(1), running.eq(1),
                             reader_cmd_sent.eq(0), res_cmd_sent.eq(~residual_on),
                             out_pixel.eq(0), out_addr.eq(field("out_addr")),
                             pf_sent.eq(Cat(pf0_words == 0, pf1_words == 0)),
                             pf_dst.eq(Mux(pf0_words != 0, pf0_base, pf1_base)),
                             pf_left.eq(Mux(pf0_words != 0, pf0_words, pf1_words)),
                             lanes[1]["beat"].eq(0)]
                m.next = "RUN_CMDS"

            with m.State("RUN_CMDS"):
                contiguous = pixel_beats == field("out_pitch")
                m.d.comb += [
                    reader.cmd.valid.eq(~reader_cmd_sent),
                    reader.cmd.payload.addr.eq(field("in_addr")),
                    reader.cmd.payload.beats.eq(in_beats),
                    res_reader.cmd.valid.eq(~res_cmd_sent),
                    res_reader.cmd.payload.addr.eq(field("res_addr")),
                    res_reader.cmd.payload.beats.eq(out_beats),
                    pf_reader.cmd.valid.eq(~pf_sent.all()),
                    pf_reader.cmd.payload.addr.eq(Mux(pf_sent[0], pf1_addr, pf0_addr)),
                    pf_reader.cmd.payload.beats.eq(
                        scale(Mux(pf_sent[0], pf1_words, pf0_words), engine_word_beats)),
                    writer.cmd.valid.eq(out_pixel != prod.out_pixels),
                    writer.cmd.payload.addr.eq(out_addr),
                    # one command for a contiguous output, else one per pixel
                    writer.cmd.payload.beats.eq(Mux(contiguous, out_beats, pixel_beats)),
                ]
                r_done = reader_cmd_sent | reader.cmd.ready
                res_done = res_cmd_sent | res_reader.cmd.ready
                # the prefetch's commands: segment 0's, then segment 1's
                pf_now = Cat(pf_sent[0] | pf_reader.cmd.ready,
                             pf_sent[1] | (pf_sent[0] & pf_reader.cmd.ready))
                m.d.sync += pf_sent.eq(pf_now)
                w_step = writer.cmd.valid & writer.cmd.ready
                with m.If(w_step):
                    m.d.sync += [out_pixel.eq(Mux(contiguous, prod.out_pixels, out_pixel + 1)),
                                 out_addr.eq(out_addr + (field("out_pitch") << 3))]
                w_done = (out_pixel == prod.out_pixels) | (
                    w_step & (contiguous | (out_pixel == prod.out_pixels - 1)))
                m.d.sync += [reader_cmd_sent.eq(r_done), res_cmd_sent.eq(res_done)]
                with m.If(r_done & res_done & pf_now.all() & w_done):
                    m.d.sync += settle.eq(1)
                    m.next = "RUN_WAIT"

            with m.State("RUN_WAIT"):
                m.d.sync += settle.eq(0)
                idle = ~(writer.busy | reader.busy | res_reader.busy | pf_reader.busy | dp.busy)
                with m.If(~settle & idle):
                    m.d.sync += running.eq(0)
                    with m.If(reader.error | res_reader.error | pf_reader.error):
                        fail(ErrorCode.AXI_READ, fault_addr(reader, res_reader, pf_reader))
                    with m.Elif(writer.error):
                        fail(ErrorCode.AXI_WRITE, writer.fault_addr)
                    with m.Else():
                        m.next = "NEXT"

            with m.State("NEXT"):
                with m.If(flag(DescFlag.LAST)):
                    m.d.sync += run.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [desc_addr.eq(desc_addr + DESCRIPTOR.size),
                                 layer.eq(layer + 1)]
                    m.next = "FETCH_CMD"
                    with m.If(~next_desc_in_window):
                        fail(ErrorCode.OUT_OF_WINDOW, desc_addr + DESCRIPTOR.size)

        # the prefetch: the second lane takes every beat of `pf_reader` while a layer runs,
        # a word each `engine_word_beats` beats
        pf_lane = lanes[1]
        with m.If(running & pf_reader.data.valid):
            m.d.sync += pf_lane["buf"].eq(Cat(pf_lane["buf"][_BEAT_BITS:], pf_reader.data.payload))
            with m.If(pf_lane["beat"] == engine_word_beats - 1):
                m.d.sync += [pf_lane["beat"].eq(0), write_en.eq(1), write_lane.eq(1),
                             write_addr.eq(pf_dst), pf_dst.eq(pf_dst + 1),
                             pf_left.eq(pf_left - 1)]
                with m.If(pf_left == 1):
                    m.d.sync += [pf_dst.eq(pf1_base), pf_left.eq(pf1_words)]
            with m.Else():
                m.d.sync += pf_lane["beat"].eq(pf_lane["beat"] + 1)

        # While a layer runs, the main reader's beats are the datapath's input, the residual
        # reader's its residual (table words in LOAD_DATA, the descriptor in FETCH_DATA).
        # (`ready` as an OR of terms, each gated by a register or a state: the line buffer's
        # fill-ready logic reaches the readers through one level)
        fetching, loading = fsm.ongoing("FETCH_DATA"), fsm.ongoing("LOAD_DATA")
        m.d.comb += [
            reader.data.ready.eq(fetching | (loading & lanes[0]["take"])
                                 | (running & dp.input.ready)),
            res_reader.data.ready.eq((loading & lanes[1]["take"])
                                     | (running & dp.residual.ready)),
            pf_reader.data.ready.eq(running),
            dp.input.valid.eq(reader.data.valid & running),
            dp.input.payload.eq(reader.data.payload),
            dp.residual.valid.eq(res_reader.data.valid & running),
            dp.residual.payload.eq(res_reader.data.payload),
        ]
        return m

    @staticmethod
    def _fields(field):
        return {f.name: field(f.name) for f in DESCRIPTOR}


def _any(conditions):
    out = Const(0)
    for cond in conditions:
        out = out | cond
    return out
