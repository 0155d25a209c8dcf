"""AXI4-Lite control/status register bank, generated from :data:`~.layout.REGISTERS`.

Nothing here names a register offset or a bit position: the bank iterates over
``REGISTERS`` and asks each field what drives it (``_FIELD_KINDS`` below, plus the constants
of :func:`~.layout.capability_values`). Adding a field to ``REGISTERS`` without giving it
hardware here, or giving hardware to a field that does not exist, fails at construction.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, Resp
from .config import AcceleratorConfig, ConfigError
from .layout import REGISTERS, ErrorCode, capability_values

__all__ = ["ControlRegisters"]

_DATA_BITS = 32  # AXI4-Lite data width: every register is one 32-bit word
_WORD_SHIFT = (_DATA_BITS // 8 - 1).bit_length()  # byte-address bits inside one word

# How each non-constant field reacts to the bus, by (register, field) name:
#   stored  -- flip-flops software writes (byte strobes honoured) and reads back
#   action  -- writing 1 triggers something; reads 0
#   sticky  -- set by a hardware event, cleared by writing 1 (and by start)
#   live    -- a value from the hardware; writes are ignored
_FIELD_KINDS = {
    ("CTRL", "start"): "action",
    ("CTRL", "irq_enable"): "stored",
    ("CTRL", "abort"): "action",
    ("STATUS", "busy"): "live",
    ("STATUS", "done"): "sticky",
    ("STATUS", "error"): "sticky",
    ("ERROR", "code"): "live",
    ("ERROR", "layer"): "live",
    ("ERROR_ADDR", "addr"): "live",
    ("PROGRAM", "addr"): "stored",
    ("WINDOW_LO", "addr"): "stored",
    ("WINDOW_HI", "addr"): "stored",
    ("LAYER", "index"): "live",
    ("CYCLES_LO", "value"): "live",
    ("CYCLES_HI", "value"): "live",
}
# Register access types each kind of field may sit in ("const" is a capability value).
_ACCESS = {"stored": {"rw"}, "action": {"rw"}, "sticky": {"rw1c"}, "live": {"ro", "rw1c"},
           "const": {"ro"}}


def _width(register: str, field: str) -> int:
    return REGISTERS[register].field(field).width


class ControlRegisters(wiring.Component):
    """The accelerator's control/status registers, an AXI4-Lite subordinate.

    Bus behaviour: AW and W are accepted independently (in either order or together) into
    one-entry holding registers; the write is performed, and B raised, once both are held.
    One transaction per direction is outstanding at a time; reads and writes are independent.
    Every ready is a flip-flop (no combinational path from any valid), and ``bvalid``/``rvalid``
    stay high until accepted. The response is always OKAY: unmapped addresses read 0 and
    ignore writes, as do writes to read-only fields (a SLVERR would raise a data abort on the
    Zynq PS for a harmless probe). Address bits below the word are ignored.

    Register behaviour (fields as named in ``REGISTERS``):

    * ``CTRL.start``: writing 1 while ``busy`` is low makes ``start`` pulse for one cycle
      (in the cycle ``bvalid`` of that write rises), clears ``STATUS.done``,
      ``STATUS.error`` and the cycle counter. Writing 1 while ``busy`` is high is ignored
      (the write itself completes with OKAY); reads 0.
    * ``CTRL.abort``: writing 1 while ``busy`` is high makes ``abort`` pulse for one cycle;
      ignored while idle; reads 0.
    * ``STATUS.done``/``STATUS.error``: set by the ``done``/``error`` pulses, cleared by
      writing 1 or by an accepted start; a pulse in the same cycle as a clear wins, so no
      event is lost.
    * ``ERROR``, ``ERROR_ADDR``: ``error_code``/``error_layer``/``error_addr`` captured on
      the ``error`` pulse; kept until the next error.
    * ``PROGRAM``, ``WINDOW_LO``, ``WINDOW_HI``: stored, from their fields' reset values.
    * ``CYCLES_LO``/``CYCLES_HI``: a 64-bit counter, cleared by an accepted start and
      incremented in every cycle ``busy`` is high. Reading ``CYCLES_LO`` returns the low
      word and latches the high word, which ``CYCLES_HI`` returns until the next
      ``CYCLES_LO`` read, so the pair is one consistent sample.
    * ``ID``, ``VERSION``, ``CAP_*``: the constants of ``capability_values(config)``.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator the capability registers describe.

    Members
    -------
    s_axil : ``In(AXI4LiteSignature(addr_width=REGISTERS.addr_width))``
        The register bus (subordinate side).
    start : ``Out(1)``
        One-cycle pulse: run the program at ``prog_addr``.
    abort : ``Out(1)``
        One-cycle pulse: stop the running program.
    prog_addr : ``Out(32)``
        ``PROGRAM.addr``.
    window_lo, window_hi : ``Out(32)``
        ``WINDOW_LO.addr``, ``WINDOW_HI.addr``: the DDR bytes a program may reach.
    irq : ``Out(1)``
        Level interrupt: ``CTRL.irq_enable & (STATUS.done | STATUS.error)``.
    busy : ``In(1)``
        A program is running (shown live in ``STATUS.busy``; gates ``start``).
    done : ``In(1)``
        Pulse: the program finished.
    error : ``In(1)``
        Pulse: the program stopped on an error; captures ``error_code`` and ``error_layer``.
    error_code : ``In(8)``
        An :class:`~.layout.ErrorCode`, valid with ``error``.
    error_layer : ``In(16)``
        Descriptor index of the error, valid with ``error``.
    error_addr : ``In(32)``
        ``ERROR_ADDR.addr``, valid with ``error``.
    layer : ``In(16)``
        Descriptor being executed, shown live in ``LAYER``.

    Attributes
    ----------
    cycles : Signal(64)
        The cycle counter (not a port; a testbench may preset it to reach the high word).
    """

    READ_LATENCY = 1   #: clock edges from the AR handshake to the first edge with rvalid high
    WRITE_LATENCY = 2  #: clock edges from the later of the AW/W handshakes to bvalid high

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"'config' must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self._const_words = self._constant_words(config)
        if max(ErrorCode) >> _width("ERROR", "code"):
            raise ValueError(f"ErrorCode {max(ErrorCode).name} does not fit the "
                             f"{_width('ERROR', 'code')}-bit ERROR.code field")
        self.cycles = Signal(_width("CYCLES_LO", "value") + _width("CYCLES_HI", "value"))
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=REGISTERS.addr_width)),
            "start": Out(1),
            "abort": Out(1),
            "prog_addr": Out(_width("PROGRAM", "addr")),
            "window_lo": Out(_width("WINDOW_LO", "addr"),
                             init=REGISTERS["WINDOW_LO"].field("addr").reset),
            "window_hi": Out(_width("WINDOW_HI", "addr"),
                             init=REGISTERS["WINDOW_HI"].field("addr").reset),
            "irq": Out(1),
            "busy": In(1),
            "done": In(1),
            "error": In(1),
            "error_code": In(_width("ERROR", "code")),
            "error_layer": In(_width("ERROR", "layer")),
            "error_addr": In(_width("ERROR_ADDR", "addr")),
            "layer": In(_width("LAYER", "index")),
        })

    @staticmethod
    def _constant_words(config: AcceleratorConfig) -> dict[str, int]:
        """Check that every field of ``REGISTERS`` has hardware (and only those) and encode
        the capability registers; returns ``{register name: word}`` for the constant ones."""
        consts = capability_values(config)
        kinds = dict(_FIELD_KINDS)
        kinds.update({(reg, f): "const" for reg, fs in consts.items() for f in fs})
        words = {}
        for reg in REGISTERS:
            for f in reg.fields:
                kind = kinds.pop((reg.name, f.name), None)
                if kind is None:
                    raise ValueError(f"register field {reg.name}.{f.name} has no hardware in "
                                     "ControlRegisters")
                if reg.access not in _ACCESS[kind]:
                    raise ValueError(f"register field {reg.name}.{f.name} is {kind} in "
                                     f"ControlRegisters but its register is {reg.access!r}")
                if kind == "const":
                    value = consts[reg.name][f.name]
                    try:
                        words[reg.name] = words.get(reg.name, 0) | f.encode(value)
                    except ValueError:
                        raise ConfigError(
                            f"config {config.name!r}: {reg.name}.{f.name} = {value} does not "
                            f"fit its {f.width}-bit register field") from None
        if kinds:
            names = ", ".join(f"{r}.{f}" for r, f in kinds)
            raise ValueError(f"ControlRegisters drives fields missing from REGISTERS: {names}")
        return words

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axil

        # ---- write channel: AW and W each held in a one-entry register until both are in.
        aw_full, w_full = Signal(), Signal()
        aw_word = Signal(len(bus.awaddr) - _WORD_SHIFT)
        w_data, w_strb = Signal(_DATA_BITS), Signal(_DATA_BITS // 8)
        write = Signal()  # the held write is performed in this cycle
        m.d.comb += [
            bus.awready.eq(~aw_full),
            bus.wready.eq(~w_full),
            bus.bresp.eq(Resp.OKAY),
            write.eq(aw_full & w_full & ~bus.bvalid),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_word.eq(bus.awaddr[_WORD_SHIFT:])]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        bit_mask = Cat(*(strobe.replicate(8) for strobe in w_strb))
        written = w_data & bit_mask  # the ones software wrote, under the byte strobes

        # ---- the state behind the fields
        irq_enable = Signal(_width("CTRL", "irq_enable"),
                            init=REGISTERS["CTRL"].field("irq_enable").reset)
        done_flag, error_flag = Signal(), Signal()
        err_code, err_layer = Signal.like(self.error_code), Signal.like(self.error_layer)
        err_addr = Signal.like(self.error_addr)
        lo_bits = _width("CYCLES_LO", "value")
        cycles_hi = Signal(_width("CYCLES_HI", "value"))
        start_req, abort_req = Signal(), Signal()
        signals = {
            ("CTRL", "start"): start_req,
            ("CTRL", "irq_enable"): irq_enable,
            ("CTRL", "abort"): abort_req,
            ("STATUS", "busy"): self.busy,
            ("STATUS", "done"): done_flag,
            ("STATUS", "error"): error_flag,
            ("ERROR", "code"): err_code,
            ("ERROR", "layer"): err_layer,
            ("ERROR_ADDR", "addr"): err_addr,
            ("PROGRAM", "addr"): self.prog_addr,
            ("WINDOW_LO", "addr"): self.window_lo,
            ("WINDOW_HI", "addr"): self.window_hi,
            ("LAYER", "index"): self.layer,
            ("CYCLES_LO", "value"): self.cycles[:lo_bits],
            ("CYCLES_HI", "value"): cycles_hi,
        }
        clears = {}  # sticky field -> written 1 in this cycle

        # ---- per register: its read word and the effect of a write to it
        read_words = {}
        for reg in REGISTERS:
            word = Signal(_DATA_BITS, name=f"{reg.name.lower()}_rdata")
            m.d.comb += word.eq(self._const_words.get(reg.name, 0))
            hit = Signal(name=f"{reg.name.lower()}_write")
            m.d.comb += hit.eq(write & (aw_word == reg.offset >> _WORD_SHIFT))
            read_words[reg.name] = word
            for f in reg.fields:
                key, bits = (reg.name, f.name), slice(f.lsb, f.lsb + f.width)
                kind = _FIELD_KINDS.get(key, "const")
                if kind == "const":
                    continue  # part of the constant assigned above
                sig = signals[key]
                if kind == "stored":
                    with m.If(hit):
                        m.d.sync += sig.eq((sig & ~bit_mask[bits]) | written[bits])
                elif kind == "action":
                    m.d.comb += sig.eq(hit & written[bits].any())
                    continue  # reads 0
                elif kind == "sticky":
                    clears[key] = hit & written[bits].any()
                m.d.comb += word[bits].eq(sig)

        # ---- start, sticky flags, error capture, cycle counter, irq
        start_accept = start_req & ~self.busy
        m.d.sync += [self.start.eq(start_accept), self.abort.eq(abort_req & self.busy)]
        for key, flag, event in ((("STATUS", "done"), done_flag, self.done),
                                 (("STATUS", "error"), error_flag, self.error)):
            with m.If(clears[key] | start_accept):
                m.d.sync += flag.eq(0)
            with m.If(event):
                m.d.sync += flag.eq(1)
        with m.If(self.error):
            m.d.sync += [err_code.eq(self.error_code), err_layer.eq(self.error_layer),
                         err_addr.eq(self.error_addr)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(start_accept):
            m.d.sync += self.cycles.eq(0)
        m.d.comb += self.irq.eq(irq_enable & (done_flag | error_flag))

        # ---- read channel: the addressed word is registered into rdata on the AR handshake.
        ar_word = bus.araddr[_WORD_SHIFT:]
        m.d.comb += [bus.arready.eq(~bus.rvalid), bus.rresp.eq(Resp.OKAY)]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += bus.rvalid.eq(1)
            with m.Switch(ar_word):
                for reg in REGISTERS:
                    with m.Case(reg.offset >> _WORD_SHIFT):
                        m.d.sync += bus.rdata.eq(read_words[reg.name])
                with m.Default():
                    m.d.sync += bus.rdata.eq(0)
            with m.If(ar_word == REGISTERS["CYCLES_LO"].offset >> _WORD_SHIFT):
                m.d.sync += cycles_hi.eq(self.cycles[lo_bits:])
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m
