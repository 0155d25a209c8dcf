"""AXI4 read DMA: a stream of (address, beats) commands in, a stream of 64-bit beats out."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4ReadSignature, Burst, Resp
from .config import BEAT_BYTES

__all__ = ["DMAReader", "DMAEngine", "dma_command_layout", "next_burst_beats",
           "issue_bursts", "burst_addresses"]

PAGE_BEATS = 4096 // BEAT_BYTES  # an AXI burst must not cross a 4 KiB boundary (IHI 0022 A3.4.1)
AXCACHE = 0b0011  # normal non-cacheable bufferable, what Xilinx DMA IP issues on HP ports


def dma_command_layout(addr_width: int, max_beats_width: int) -> data.StructLayout:
    """Payload of a DMA ``cmd`` stream: transfer ``beats`` 64-bit beats from/to byte ``addr``."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": unsigned(max_beats_width)})


class DMAEngine(wiring.Component):
    """What :class:`DMAReader` and ``hw.dma_writer.DMAWriter`` share: their parameters,
    checked, and their members; ``data`` points out of the reader, into the writer, and
    ``axi`` is the read or the write half of an AXI4 manager (``axi_signature``).

    Parameters
    ----------
    addr_width : int
        AXI address width, 12..64.
    max_burst : int
        Longest burst in beats, 1..256 (16 for AXI3 ports such as Zynq-7000 HP).
    max_beats_width : int
        Width of ``cmd.beats``.
    max_outstanding : int
        Bursts in flight at most, 1..16.
    """

    def __init__(self, addr_width: int, max_burst: int, max_beats_width: int,
                 max_outstanding: int, *, data: wiring.Member, axi_signature: type):
        _check_dma_params(addr_width, max_burst, max_beats_width, max_outstanding)
        self.addr_width = addr_width
        self.max_burst = max_burst
        self.max_beats_width = max_beats_width
        self.max_outstanding = max_outstanding
        super().__init__({
            "cmd": In(stream.Signature(dma_command_layout(addr_width, max_beats_width))),
            "data": data,
            "axi": Out(axi_signature(addr_width=addr_width)),
            "busy": Out(1),
            "error": Out(1),
            "fault_addr": Out(addr_width),
            "clear": In(1),
            "drain": In(1),
        })


def _check_dma_params(addr_width, max_burst, max_beats_width, max_outstanding) -> None:
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise TypeError(f"'addr_width' must be an int in 12..64, not {addr_width!r}")
    if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
        raise TypeError(f"'max_burst' must be an int in 1..256 (AXI4 INCR limit; 16 for AXI3 "
                        f"ports), not {max_burst!r}")
    if not isinstance(max_beats_width, int) or not 1 <= max_beats_width <= 64:
        raise TypeError(f"'max_beats_width' must be an int in 1..64, not {max_beats_width!r}")
    if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 16:
        raise TypeError(f"'max_outstanding' must be an int in 1..16, not {max_outstanding!r}")


def next_burst_beats(m: Module, addr: Value, left: Value, max_burst: int) -> Signal:
    """Beats of the next burst at byte ``addr`` with ``left`` beats to go:
    ``min(left, max_burst, 512 - addr[3:12])`` (the last term stops it at the 4 KiB boundary).
    """
    to_page_end = Signal(range(PAGE_BEATS + 1))
    cap = Signal(range(max(max_burst, PAGE_BEATS) + 1))
    beats = Signal(range(max_burst + 1))
    m.d.comb += [
        to_page_end.eq(PAGE_BEATS - addr[3:12]),
        cap.eq(Mux(to_page_end < max_burst, to_page_end, max_burst)),
        beats.eq(Mux(left < cap, left, cap)),
    ]
    return beats


def issue_bursts(m: Module, engine, channel: str) -> tuple[Value, Value, Value, Value, Signal]:
    """The command side both DMA engines share: take a command once the previous one has
    issued its last burst, split it into bursts (:func:`next_burst_beats`) and present them on
    the AXI address channel ``channel`` (``"ar"`` or ``"aw"``) of ``engine.axi``, with at most
    ``engine.max_outstanding`` in flight.

    Returns ``(issue, beats, misaligned, splitting, in_flight)``: ``issue`` is high in a cycle
    a burst of ``beats`` beats is presented; ``misaligned`` flags a command dropped for an
    unaligned address; ``splitting`` that a command still has bursts to issue; ``in_flight``
    counts issued bursts not yet complete: the caller updates it with
    ``in_flight + issue - completion`` (a completion in the same cycle does not free a slot for
    that cycle's issue, which keeps the issue condition off the response path).
    """
    axi, cmd = engine.axi, engine.cmd

    def ax(name):
        return getattr(axi, channel + name)

    addr = Signal(engine.addr_width, name="addr")  # next burst's address
    left = Signal(engine.max_beats_width, name="left")  # beats not yet on the address channel
    in_flight = Signal(range(engine.max_outstanding + 1), name="in_flight")

    m.d.comb += cmd.ready.eq(left == 0)
    misaligned = cmd.valid & cmd.ready & (cmd.payload.addr[:3] != 0) & ~engine.drain
    with m.If(cmd.valid & cmd.ready & ~misaligned & ~engine.drain):
        m.d.sync += [addr.eq(cmd.payload.addr), left.eq(cmd.payload.beats)]

    m.d.comb += [ax("id").eq(0), ax("size").eq(3), ax("burst").eq(Burst.INCR),
                 ax("lock").eq(0), ax("cache").eq(AXCACHE), ax("prot").eq(0)]
    n = next_burst_beats(m, addr, left, engine.max_burst)
    issue = (left != 0) & (~ax("valid") | ax("ready")) & (in_flight < engine.max_outstanding)
    with m.If(issue):
        m.d.sync += [ax("valid").eq(1), ax("addr").eq(addr), ax("len").eq(n - 1),
                     addr.eq(addr + n * BEAT_BYTES), left.eq(left - n)]
    with m.Elif(ax("ready")):
        m.d.sync += ax("valid").eq(0)
    with m.If(engine.drain):  # no burst after this one: a burst on the channel stays there
        m.d.sync += left.eq(0)
    return issue, n, misaligned, left != 0, in_flight


def burst_addresses(m: Module, engine, channel: str, issue: Value, complete: Value) -> Value:
    """The first address of the oldest burst in flight (responses come in issue order: one
    ID): a ring of ``engine.max_outstanding`` addresses, written from the address register
    of ``engine.axi``'s channel ``channel`` (``"ar"`` or ``"aw"``, as for
    :func:`issue_bursts`) as ``issue`` loads it, read at the burst whose completion
    ``complete`` marks."""
    n = engine.max_outstanding
    ring = Array(Signal(engine.addr_width, name=f"burst_addr{i}") for i in range(n))
    wp, rp = Signal(range(n), name="burst_wp"), Signal(range(n), name="burst_rp")

    def step(p):
        return Mux(p == n - 1, 0, p + 1)

    channel_addr = getattr(engine.axi, channel + "addr")
    # the burst's address is the channel's register after the issue cycle: store it then
    stored = Signal(name="burst_issued")
    m.d.sync += stored.eq(issue)
    with m.If(stored):
        m.d.sync += [ring[wp].eq(channel_addr), wp.eq(step(wp))]
    with m.If(complete):
        m.d.sync += rp.eq(step(rp))
    return ring[rp]


def _record_fault(m: Module, engine, misaligned: Value, bad_response: Value,
                  burst_addr: Value) -> None:
    """``error`` (sticky until ``clear``) and ``fault_addr``: the first fault's address (the
    command's for a misaligned one, the burst's for an error response)."""
    with m.If(misaligned | bad_response):
        m.d.sync += engine.error.eq(1)
        with m.If(~engine.error):
            m.d.sync += engine.fault_addr.eq(Mux(misaligned, engine.cmd.payload.addr,
                                                 burst_addr))
    with m.Elif(engine.clear):
        m.d.sync += engine.error.eq(0)


class DMAReader(DMAEngine):
    """Read ``cmd.beats`` 64-bit beats from byte address ``cmd.addr`` over AXI4 and emit them
    on ``data`` in address order.

    A command is split into INCR bursts (``arsize`` = 3) of at most ``max_burst`` beats that
    never cross a 4 KiB boundary. Up to ``max_outstanding`` bursts may be in flight on AR
    (issued, last R beat not yet received). R beats pass through one output register, with
    ``rready = ~data.valid | data.ready``: a stalled ``data`` consumer stalls R, nothing is
    dropped. The next command is accepted as soon as the previous one has issued its last AR,
    so back-to-back commands overlap their R data with the next command's AR.

    Error behaviour: a command whose ``addr`` is not 8-byte aligned is accepted and dropped
    (no AXI traffic, no ``data`` beats) and sets ``error``. An R beat with ``rresp != OKAY`` is
    still delivered on ``data`` (its contents are whatever the subordinate returned) and sets
    ``error``; ``fault_addr`` holds the first fault's address (the command's, or the first
    address of the burst whose beat was answered with an error). ``error`` stays high until
    ``clear`` is high in a cycle with no new error event (a new error in the same cycle as
    ``clear`` wins). A command with ``beats == 0`` is accepted
    and completes at once. Addresses wrap modulo ``2**addr_width``.

    Performance (for the cycle model; cycle 0 is the handshake cycle of the event named first):

    Draining (``drain`` high, held until ``busy`` falls): commands are taken and dropped, no
    new burst is issued (one already on AR stays there until accepted), every R beat of the
    bursts in flight is taken and dropped, and ``data`` shows no beat.

    * ``CMD_TO_AR`` = 2: ``arvalid`` rises in cycle 2 after the ``cmd`` handshake.
    * ``R_TO_DATA`` = 1: an R beat accepted in cycle ``t`` is on ``data`` in cycle ``t + 1``.
    * ``SLOT_OVERHEAD`` = 1: a burst of ``B`` beats whose first R beat comes ``L`` cycles
      after its AR handshake holds one of the ``max_outstanding`` slots for ``B + L +
      SLOT_OVERHEAD`` cycles. With no stalls the rate is therefore ``min(1, max_outstanding *
      B / (B + L + SLOT_OVERHEAD))`` beats/cycle: 1 beat/cycle for 16-beat bursts and the
      default 4 slots up to ``L`` = 47.
    * AR issues at most one burst per cycle. A new command is accepted the cycle after the
      previous one has loaded its last AR (at best every 2 cycles for 1-burst commands); its
      R data then follows the previous command's without a gap.

    Parameters
    ----------
    addr_width, max_burst, max_beats_width, max_outstanding :
        As :class:`~dwsep.hw.dma_reader.DMAEngine`'s.

    Members
    -------
    cmd : ``In(stream.Signature(dma_command_layout(addr_width, max_beats_width)))``
    data : ``Out(stream.Signature(unsigned(64)))``
    axi : ``Out(AXI4ReadSignature(addr_width=addr_width))``
        ``arid`` = 0, ``arlock`` = 0, ``arcache`` = 0b0011, ``arprot`` = 0.
    busy : ``Out(1)``
        A command is being split, a burst is in flight, or a beat waits on ``data``.
    error : ``Out(1)``
        Sticky: RRESP != OKAY or a misaligned command since the last ``clear``.
    clear : ``In(1)``
        Clears ``error``.
    """

    CMD_TO_AR = 2
    R_TO_DATA = 1
    SLOT_OVERHEAD = 1

    def __init__(self, addr_width: int = 32, max_burst: int = 16, max_beats_width: int = 24,
                 *, max_outstanding: int = 4):
        super().__init__(addr_width, max_burst, max_beats_width, max_outstanding,
                         data=Out(stream.Signature(unsigned(64))),
                         axi_signature=AXI4ReadSignature)

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        # in_flight: bursts on AR whose last R beat is still to come
        issue, _, misaligned, splitting, in_flight = issue_bursts(m, self, "ar")

        # draining: R beats are taken and dropped
        m.d.comb += axi.rready.eq(~self.data.valid | self.data.ready | self.drain)
        r_beat = axi.rvalid & axi.rready
        with m.If(r_beat & ~self.drain):
            m.d.sync += [self.data.valid.eq(1), self.data.payload.eq(axi.rdata)]
        with m.Elif(self.data.ready | self.drain):
            m.d.sync += self.data.valid.eq(0)

        # both next counts formed before the R handshake is known, so that `data.ready`
        # (from the consumer's stall logic) reaches the counter through one LUT
        burst_done = r_beat & axi.rlast
        kept, less = Signal.like(in_flight), Signal.like(in_flight)
        m.d.comb += [kept.eq(in_flight + issue), less.eq(in_flight + issue - 1)]
        m.d.sync += in_flight.eq(Mux(burst_done, less, kept))

        m.d.comb += self.busy.eq(splitting | (in_flight != 0) | self.data.valid)
        burst_addr = burst_addresses(m, self, "ar", issue, burst_done)
        _record_fault(m, self, misaligned, r_beat & (axi.rresp != Resp.OKAY), burst_addr)
        return m
