"""AXI4 write DMA: a stream of (address, beats) commands and a stream of 64-bit beats in."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In

from .axi import AXI4WriteSignature, Resp
from .dma_reader import DMAEngine, _record_fault, burst_addresses, issue_bursts

__all__ = ["DMAWriter"]


class DMAWriter(DMAEngine):
    """Write the next ``cmd.beats`` beats of ``data`` to byte address ``cmd.addr`` over AXI4.

    A command is split into INCR bursts (``awsize`` = 3, ``wstrb`` all ones, ``wlast`` on each
    burst's last beat) of at most ``max_burst`` beats that never cross a 4 KiB boundary. A
    burst's AW is presented as soon as the command is split, whether or not its data has
    arrived, and its length is queued for the W side at the same moment; W beats then flow as
    ``data`` delivers them. AW and W are thus independent: neither a subordinate that waits for
    AW before taking W (cocotbext-axi ``AxiRam``) nor one that waits for W before taking AW can
    deadlock it. Up to ``max_outstanding`` bursts may be in flight (AW presented, B not yet
    received); ``bready`` is always high. The next command is accepted as soon as the previous
    one has presented its last AW.

    Error behaviour: a command whose ``addr`` is not 8-byte aligned is accepted and dropped (no
    AXI traffic, no ``data`` beats consumed: the producer must not send its beats) and sets
    ``error``. A B response with ``bresp != OKAY`` sets ``error``. ``error`` stays high until
    ``clear`` is high in a cycle with no new error event; ``fault_addr`` holds the first
    fault's address (the command's, or the first address of the burst answered with an
    error). ``beats == 0`` completes at once.

    Draining (``drain`` high, held until ``busy`` falls): commands are taken and dropped, no
    new burst is issued (one already on AW stays there until accepted), ``data`` is not taken,
    and the bursts on AW are completed with beats whose ``wstrb`` is 0 (they write nothing);
    then their B responses are awaited.
    Addresses wrap modulo ``2**addr_width``.

    Performance (for the cycle model; cycle 0 is the handshake cycle of the event named first):

    * ``CMD_TO_AW`` = 2: ``awvalid`` rises in cycle 2 after the ``cmd`` handshake.
    * ``CMD_TO_DATA`` = 2: the first ``data`` beat of a command is taken at the earliest in
      cycle 2 after the ``cmd`` handshake (its burst length is queued when AW is loaded).
    * ``DATA_TO_W`` = 1: a ``data`` beat accepted in cycle ``t`` is on W in cycle ``t + 1``.
    * ``SLOT_OVERHEAD`` = 2: a burst of ``B`` beats whose B response comes ``L`` cycles after
      its last W handshake holds one of the ``max_outstanding`` slots for ``B + L +
      SLOT_OVERHEAD`` cycles when data and ``wready`` never stall. The rate is therefore
      ``min(1, max_outstanding * B / (B + L + SLOT_OVERHEAD))`` beats/cycle: 1 beat/cycle
      for 16-beat bursts and the default 4 slots up to ``L`` = 46.
    * ``B_TO_IDLE`` = 1: ``busy`` is low in the cycle after the last B handshake.
    * A new command is accepted the cycle after the previous one has loaded its last AW; its
      data then follows the previous command's without a gap.

    Parameters
    ----------
    addr_width, max_burst, max_beats_width, max_outstanding :
        As :class:`~dwsep.hw.dma_reader.DMAEngine`'s.

    Members
    -------
    cmd : ``In(stream.Signature(dma_command_layout(addr_width, max_beats_width)))``
    data : ``In(stream.Signature(unsigned(64)))``
    axi : ``Out(AXI4WriteSignature(addr_width=addr_width))``
        ``awid`` = 0, ``awlock`` = 0, ``awcache`` = 0b0011, ``awprot`` = 0.
    busy : ``Out(1)``
        Low only when every accepted command has received all its B responses, i.e. its data
        is in memory.
    error : ``Out(1)``
        Sticky: BRESP != OKAY or a misaligned command since the last ``clear``.
    clear : ``In(1)``
        Clears ``error``.
    """

    CMD_TO_AW = 2
    CMD_TO_DATA = 2
    DATA_TO_W = 1
    SLOT_OVERHEAD = 2
    B_TO_IDLE = 1

    def __init__(self, addr_width: int = 32, max_burst: int = 16, max_beats_width: int = 24,
                 *, max_outstanding: int = 4):
        super().__init__(addr_width, max_burst, max_beats_width, max_outstanding,
                         data=In(stream.Signature(unsigned(64))),
                         axi_signature=AXI4WriteSignature)

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        # in_flight: bursts on AW whose B is still to come
        issue, n, misaligned, splitting, in_flight = issue_bursts(m, self, "aw")

        # awlen of every burst whose W beats are not all sent yet; it never holds more than
        # in_flight <= max_outstanding entries, so it cannot overflow.
        m.submodules.lengths = lengths = SyncFIFO(width=8, depth=self.max_outstanding)

        m.d.comb += [lengths.w_en.eq(issue), lengths.w_data.eq(n - 1)]

        sent = Signal(8)  # W beats already loaded of the burst at the head of `lengths`
        w_free = ~axi.wvalid | axi.wready
        # draining: the bursts on AW get beats with no byte strobe (they write nothing)
        fill = self.drain & lengths.r_rdy & w_free
        m.d.comb += self.data.ready.eq(lengths.r_rdy & w_free & ~self.drain)
        with m.If((self.data.valid & self.data.ready) | fill):
            last = sent == lengths.r_data
            # (a filler beat's data is whatever the data stream shows: no byte is written)
            m.d.sync += [axi.wvalid.eq(1), axi.wlast.eq(last), sent.eq(sent + 1),
                         axi.wdata.eq(self.data.payload), axi.wstrb.eq(Mux(self.drain, 0, ~0))]
            with m.If(last):
                m.d.sync += sent.eq(0)
                m.d.comb += lengths.r_en.eq(1)
        with m.Elif(axi.wready):
            m.d.sync += axi.wvalid.eq(0)

        m.d.comb += axi.bready.eq(1)
        b_beat = axi.bvalid & axi.bready
        m.d.sync += in_flight.eq(in_flight + issue - b_beat)

        m.d.comb += self.busy.eq(splitting | (in_flight != 0))
        burst_addr = burst_addresses(m, self, "aw", issue, b_beat)
        _record_fault(m, self, misaligned, b_beat & (axi.bresp != Resp.OKAY), burst_addr)
        return m
