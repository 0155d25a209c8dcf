"""AXI4 read arbiter: ``n`` single-ID read managers (e.g. DMAReaders) share one AXI4 read port,
told apart by ARID/RID."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .axi import AXI4ReadSignature

__all__ = ["ReadArbiter"]

MAX_PORTS = 16  # the round-robin priority logic grows as n**2


class ReadArbiter(wiring.Component):
    """Share one AXI4 read channel (AR, R) between ``n`` read managers by AXI ID.

    AR: round-robin among the ports with ``arvalid`` high. The winner's request is copied into
    one output register with ``arid`` = its port index, and its ``arready`` is high in that
    same cycle. The register takes a new request whenever it is empty or the subordinate
    takes the one it holds (``~axi.arvalid | axi.arready``), so the arbiter forwards one AR
    per cycle while ports keep requesting. ``axi``'s AR payload changes only after its
    handshake (A3.2.1). A port that raises ``arvalid`` is granted after at most ``n - 1``
    grants to other ports (the port granted last has the lowest priority next). The ports'
    own ``arid`` is ignored (a DMAReader drives 0). A port's ``arready`` is combinational from
    the ports' ``arvalid`` and ``axi.arready`` (AXI lets ready wait for valid); ``axi.arvalid``
    comes from the register, so no path runs from a port's ``arvalid`` to ``axi.arvalid``.

    R: combinational pass-through, routed by ``axi.rid``: port ``i`` sees ``rvalid`` only for
    beats with ``rid == i``, every port sees ``rdata``/``rresp``/``rlast`` and ``rid`` = 0, and
    ``axi.rready`` is the ``rready`` of port ``axi.rid``. Beats of different IDs may thus come
    back in any order and interleaved beat by beat (as AXI4 allows), in order within one ID.
    ``axi.rready`` depends on ``axi.rid`` and the ports' ``rready``, never on ``axi.rvalid``,
    and no port's ``rready`` may depend on its ``rvalid`` (a DMAReader's does not), so no
    combinational loop closes through the arbiter. An RID of no port (``rid >= n``, possible
    only for ``n`` not a power of two) is never issued on AR, so a compliant subordinate
    never returns it; such a beat would stall R (``rready`` low).

    Latencies (cycle 0 is the handshake of the event named first):

    * ``AR_LATENCY`` = 1: a port's AR handshake in cycle ``t`` puts the request on
      ``axi`` in cycle ``t + 1``.
    * ``R_LATENCY`` = 0: an R beat on ``axi`` is on its port in the same cycle.

    Parameters
    ----------
    n : int
        Number of read ports, 1..16.
    addr_width : int
        AXI address width, 12..64.
    data_width : int
        AXI data width, a power of two 32..1024.

    Members
    -------
    ports : ``In(AXI4ReadSignature(addr_width=addr_width, data_width=data_width,
        id_width=1)).array(n)``
        Subordinate-side read ports; connect a manager with
        ``wiring.connect(m, reader.axi, arbiter.ports[i])``. Port ``i`` is AXI ID ``i``.
    axi : ``Out(AXI4ReadSignature(addr_width=addr_width, data_width=data_width,
        id_width=max(1, ceil_log2(n))))``
        To memory.
    """

    AR_LATENCY = 1
    R_LATENCY = 0

    def __init__(self, n: int, *, addr_width: int = 32, data_width: int = 64):
        if not isinstance(n, int) or not 1 <= n <= MAX_PORTS:
            raise TypeError(f"'n' must be an int in 1..{MAX_PORTS}, not {n!r}")
        self.n = n
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = max(1, ceil_log2(n))
        port = AXI4ReadSignature(addr_width=addr_width, data_width=data_width, id_width=1)
        super().__init__({
            "ports": In(port).array(n),
            "axi": Out(AXI4ReadSignature(addr_width=addr_width, data_width=data_width,
                                         id_width=self.id_width)),
        })

    def elaborate(self, platform):
        m = Module()
        axi, ports, n = self.axi, self.ports, self.n

        # -- AR: round-robin into one output register --
        last = Signal(range(n))  # port granted last: lowest priority now
        grant = Signal(range(n))
        with m.Switch(last):
            for lowest in range(n):
                with m.Case(lowest):
                    # Later assignments win: the port right after `lowest` has priority.
                    for k in range(n, 0, -1):
                        p = (lowest + k) % n
                        with m.If(ports[p].arvalid):
                            m.d.comb += grant.eq(p)
        requested = Signal()
        m.d.comb += requested.eq(Cat(port.arvalid for port in ports).any())

        load = Signal()
        m.d.comb += load.eq(requested & (~axi.arvalid | axi.arready))
        for i, port in enumerate(ports):
            m.d.comb += port.arready.eq(load & (grant == i))

        with m.If(load):
            m.d.sync += [axi.arvalid.eq(1), axi.arid.eq(grant), last.eq(grant)]
            with m.Switch(grant):
                for i, port in enumerate(ports):
                    with m.Case(i):
                        m.d.sync += [axi.araddr.eq(port.araddr), axi.arlen.eq(port.arlen),
                                     axi.arsize.eq(port.arsize), axi.arburst.eq(port.arburst),
                                     axi.arlock.eq(port.arlock), axi.arcache.eq(port.arcache),
                                     axi.arprot.eq(port.arprot)]
        with m.Elif(axi.arready):
            m.d.sync += axi.arvalid.eq(0)

        # -- R: route by RID --
        for i, port in enumerate(ports):
            m.d.comb += [port.rvalid.eq(axi.rvalid & (axi.rid == i)), port.rid.eq(0),
                         port.rdata.eq(axi.rdata), port.rresp.eq(axi.rresp),
                         port.rlast.eq(axi.rlast)]
        with m.Switch(axi.rid):
            for i, port in enumerate(ports):
                with m.Case(i):
                    m.d.comb += axi.rready.eq(port.rready)
        return m
