# amaranth: UnusedElaboratable=no
"""ReadArbiter: two and three DMAReaders sharing one AXI4 read port, against the AXI4Memory
model returning IDs out of order and interleaved; AR rate and round-robin order, R routing,
fairness bound, interface and the model's ID checks."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from dwsep.hw.axi import AXI4ReadSignature
from dwsep.hw.dma_reader import DMAReader
from dwsep.hw.read_arbiter import ReadArbiter
from dwsep.sim.axi_model import AXI4Memory, AXIProtocolError, split_bursts
from dwsep.sim.streams import recv_n, run_sim, send_all

BASE = 0x4000_0000
PAGE = 4096
PAGES = 8  # commands start in pages 1..PAGES-2; the memory spans PAGES + 1 pages


def beats_at(mem: bytearray, addr: int, beats: int) -> list[int]:
    off = addr - BASE
    return [int.from_bytes(mem[off + 8 * i:off + 8 * i + 8], "little") for i in range(beats)]


def random_commands(rng: random.Random, pages: list[int], n: int) -> list[tuple[int, int]]:
    """``n`` (addr, beats), each starting a little below the end of a page drawn from ``pages``
    (so most cross a 4 KiB boundary); lengths 0..300 beats."""
    cmds = []
    for _ in range(n):
        addr = BASE + (rng.choice(pages) + 1) * PAGE - 8 * rng.randint(0, 40)
        beats = rng.choice([0, 1, 2, rng.randint(3, 40), rng.randint(3, 40),
                            rng.randint(100, 300), rng.randint(100, 300)])
        cmds.append((addr, beats))
    return cmds


class _Bench(Elaboratable):
    """DMAReaders connected to the ports of one ReadArbiter."""

    def __init__(self, readers: list[DMAReader]):
        self.readers = readers
        self.arbiter = ReadArbiter(len(readers))

    def elaborate(self, platform):
        m = Module()
        m.submodules.arbiter = self.arbiter
        for i, reader in enumerate(self.readers):
            m.submodules[f"reader{i}"] = reader
            wiring.connect(m, reader.axi, self.arbiter.ports[i])
        return m


class _Monitor:
    """Process watching both sides of a ReadArbiter at every clock edge.

    Checks: at most one port AR handshake per cycle; a port with ``arvalid`` high waits at
    most ``n - 1`` grants to other ports; a port AR handshake in cycle ``t`` is on ``axi`` in
    cycle ``t + AR_LATENCY`` with ARID = port index; R is routed by RID with ``R_LATENCY`` = 0
    (``rvalid``, ``rdata``, ``rlast``, ``rid`` = 0 on the ports, ``rready`` from the addressed
    port). Counts R beats that interleave with another ID's unfinished burst, and bursts that
    finish before an older burst of another ID."""

    def __init__(self, arbiter: ReadArbiter):
        self.arb = arbiter
        self.grants: list[int] = []  # port AR handshakes, in order
        self.interleaved = 0
        self.out_of_order = 0

    def process(self):
        arb, n = self.arb, self.arb.n
        ports, axi = arb.ports, arb.axi
        port_signals = [s for p in ports for s in (p.arvalid, p.arready, p.araddr, p.arlen,
                                                   p.rvalid, p.rready, p.rdata, p.rlast, p.rid)]
        axi_signals = [axi.arvalid, axi.arready, axi.arid, axi.araddr, axi.arlen,
                       axi.rvalid, axi.rready, axi.rid, axi.rdata, axi.rlast]

        async def process(ctx):
            waits = [0] * n
            expect_ar = None  # (arid, araddr, arlen) due on axi this cycle
            outstanding: list[int] = []  # ARIDs of bursts on axi whose last beat is to come
            mid_burst: set[int] = set()
            async for sample in ctx.tick().sample(*port_signals, *axi_signals):
                ps = [sample[2 + 9 * i:2 + 9 * (i + 1)] for i in range(n)]
                (arvalid, arready, arid, araddr, arlen,
                 rvalid, rready, rid, rdata, rlast) = sample[2 + 9 * n:]

                if expect_ar is not None:
                    assert arvalid and (arid, araddr, arlen) == expect_ar, (
                        f"expected AR {expect_ar} on axi, got valid={arvalid} "
                        f"{(arid, araddr, arlen)}")
                granted = [i for i, p in enumerate(ps) if p[0] and p[1]]
                assert len(granted) <= 1, f"ports {granted} granted in one cycle"
                expect_ar = None
                if granted:
                    g = granted[0]
                    expect_ar = (g, ps[g][2], ps[g][3])
                    self.grants.append(g)
                    for j, p in enumerate(ps):
                        if j != g and p[0]:
                            waits[j] += 1
                            assert waits[j] <= n - 1, f"port {j} waited {waits[j]} grants"
                    waits[g] = 0
                if arvalid and arready:
                    outstanding.append(arid)

                for i, p in enumerate(ps):
                    assert p[4] == (rvalid and rid == i), f"port {i} rvalid={p[4]}"
                    assert p[6:] == (rdata, rlast, 0), f"port {i} R payload"
                if rid < n:
                    assert rready == ps[rid][5], f"rready={rready} for rid {rid}"
                if rvalid and rready:
                    self.interleaved += bool(mid_burst - {rid})
                    mid_burst.discard(rid) if rlast else mid_burst.add(rid)
                    if rlast:
                        k = outstanding.index(rid)
                        self.out_of_order += k > 0
                        del outstanding[k]

        return process


def run_readers(seed: int, n: int, overlap: bool, read_order: str) -> None:
    rng = random.Random(seed)
    readers = [DMAReader(max_burst=rng.choice([4, 16]), max_outstanding=rng.randint(1, 4))
               for _ in range(n)]
    print(f"seed={seed} n={n} overlap={overlap} read_order={read_order} (max_burst, "
          f"max_outstanding)={[(rd.max_burst, rd.max_outstanding) for rd in readers]}")
    dut = _Bench(readers)
    pages = list(range(PAGES - 1))
    cmds = [random_commands(rng, pages if overlap else pages[r::n], rng.randint(4, 8))
            for r in range(n)]
    ram = AXI4Memory((PAGES + 1) * PAGE, base=BASE, rng=rng, p_stall=0.3,
                     read_latency=(1, 12), read_ids=n, read_order=read_order)
    ram.mem[:] = rng.randbytes(len(ram.mem))
    monitor = _Monitor(dut.arbiter)

    def benches(r: int, reader: DMAReader):
        expected = [b for a, k in cmds[r] for b in beats_at(ram.mem, a, k)]

        async def commands(ctx):
            await send_all(ctx, reader.cmd, [{"addr": a, "beats": k} for a, k in cmds[r]],
                           rng=rng, p_stall=0.3)

        async def consumer(ctx):
            got = await recv_n(ctx, reader.data, len(expected), rng=rng, p_stall=0.3)
            assert got == expected, f"reader {r}: data differs"
            if ctx.get(reader.busy):
                await ctx.tick().until(~reader.busy)
            assert ctx.get(reader.error) == 0

        return commands, consumer

    tbs = [tb for r, reader in enumerate(readers) for tb in benches(r, reader)]
    run_sim(dut, *tbs, processes=[ram.read_process(dut.arbiter.axi), monitor.process()],
            deadline_cycles=40_000)

    for r, reader in enumerate(readers):
        assert [(b.addr, b.beats) for b in ram.reads if b.id == r] == [
            b for c in cmds[r] for b in split_bursts(*c, reader.max_burst)]
    assert {b.id for b in ram.reads} <= set(range(n))
    assert monitor.grants == [b.id for b in ram.reads]
    # The model did what read_order says, so the arbiter really saw it.
    if read_order == "interleaved":
        assert monitor.interleaved > 0 and monitor.out_of_order > 0
    elif read_order == "by_id":
        assert monitor.interleaved == 0 and monitor.out_of_order > 0
    else:
        assert monitor.interleaved == 0 and monitor.out_of_order == 0


@pytest.mark.parametrize("seed, n, overlap, read_order", [
    (1, 2, True, "interleaved"), (2, 2, False, "interleaved"), (3, 3, True, "interleaved"),
    (4, 3, False, "interleaved"), (5, 2, True, "by_id"), (6, 3, False, "by_id"),
    (7, 2, False, "in_order"), (8, 3, True, "interleaved"), (9, 2, True, "interleaved"),
    (10, 3, True, "by_id"), (11, 2, False, "interleaved"), (12, 3, False, "interleaved"),
])
def test_readers_random(seed, n, overlap, read_order):
    """Random commands (overlapping or disjoint regions across 4 KiB boundaries), random
    stalls on every AXI channel and on each reader's cmd and data streams, R out of order and
    interleaved: each reader's data bit for bit, its bursts in order under its ID."""
    run_readers(seed, n, overlap, read_order)


@pytest.mark.parametrize("n", [2, 3])
def test_readers_share_bandwidth(n):
    """No stalls, every reader reading 256 beats at once: R runs at 1 beat/cycle and the
    readers finish together (round robin gives each burst turn in order)."""
    readers = [DMAReader(max_outstanding=4) for _ in range(n)]
    dut = _Bench(readers)
    ram = AXI4Memory((n + 1) * PAGE, base=BASE, read_latency=(8, 8), read_ids=n)
    ram.mem[:] = random.Random(n).randbytes(len(ram.mem))
    monitor = _Monitor(dut.arbiter)
    beats = 256
    done: list[tuple[int, int]] = [None] * n  # (first, last) data cycle per reader

    def bench(r: int, reader: DMAReader):
        async def tb(ctx):
            await send_all(ctx, reader.cmd, [{"addr": BASE + r * PAGE, "beats": beats}])
            ctx.set(reader.data.ready, 1)
            got, cycles, cycle = [], [], 1
            while len(got) < beats:
                _, _, valid, payload = await ctx.tick().sample(reader.data.valid,
                                                               reader.data.payload)
                if valid:
                    got.append(payload)
                    cycles.append(cycle)
                cycle += 1
            assert got == beats_at(ram.mem, BASE + r * PAGE, beats)
            done[r] = (cycles[0], cycles[-1])
        return tb

    run_sim(dut, *[bench(r, rd) for r, rd in enumerate(readers)],
            processes=[ram.read_process(dut.arbiter.axi), monitor.process()],
            deadline_cycles=5_000)
    first = min(f for f, _ in done)
    last = max(e for _, e in done)
    assert last - first + 1 == n * beats  # the shared R never idles
    # Bursts are granted in turn: the readers finish within one round of 16-beat bursts.
    assert last - min(e for _, e in done) < n * 16
    assert monitor.grants[:n * beats // 16] == [(1 + k) % n for k in range(n * beats // 16)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ar_rate_round_robin_and_r_routing(n):
    """Ports driven directly, all requesting 1-beat bursts continuously: one AR per cycle on
    ``axi`` in strict round robin starting at port 1 % n, each port's arready high every n-th
    cycle; R beats (interleaved, random port rready) reach the right port with its data."""
    seed = 20 + n
    print(f"seed={seed}")
    rng = random.Random(seed)
    dut = ReadArbiter(n)
    ram = AXI4Memory((n + 1) * PAGE, base=BASE, rng=random.Random(seed), read_latency=(1, 6),
                     read_ids=n, read_order="interleaved")
    ram.mem[:] = rng.randbytes(len(ram.mem))
    monitor = _Monitor(dut)
    per_port = 12

    async def tb(ctx):
        addrs = [[BASE + i * PAGE + 8 * rng.randrange(512) for _ in range(per_port)]
                 for i in range(n)]
        issued, got = [0] * n, [[] for _ in range(n)]
        for i, p in enumerate(dut.ports):
            ctx.set(p.arsize, 3)
            ctx.set(p.arburst, 1)
            ctx.set(p.araddr, addrs[i][0])
            ctx.set(p.arvalid, 1)
        cycle, ar_cycles = 0, []
        while any(len(g) < per_port for g in got):
            for p in dut.ports:
                ctx.set(p.rready, rng.random() < 0.7)
            sample = await ctx.tick().sample(dut.axi.arvalid, dut.axi.arready,
                                             *[s for p in dut.ports for s in (
                                                 p.arvalid, p.arready, p.rvalid, p.rready,
                                                 p.rdata, p.rlast)])
            cycle += 1
            if sample[2] and sample[3]:
                ar_cycles.append(cycle)
            for i, p in enumerate(dut.ports):
                arvalid, arready, rvalid, rready, rdata, rlast = sample[4 + 6 * i:10 + 6 * i]
                if arvalid and arready:
                    issued[i] += 1
                    if issued[i] == per_port:
                        ctx.set(p.arvalid, 0)
                    else:
                        ctx.set(p.araddr, addrs[i][issued[i]])
                if rvalid and rready:
                    assert rlast
                    got[i].append(rdata)
        for i in range(n):
            assert got[i] == [beats_at(ram.mem, a, 1)[0] for a in addrs[i]]
        # Port handshakes every cycle from the first edge on; axi one cycle later.
        assert ar_cycles == list(range(2, 2 + n * per_port))

    run_sim(dut, tb, processes=[ram.read_process(dut.axi), monitor.process()],
            deadline_cycles=2_000)
    assert monitor.grants == [(1 + k) % n for k in range(n * per_port)]
    if n > 1:
        assert monitor.interleaved == 0  # 1-beat bursts cannot interleave...
        assert monitor.out_of_order > 0  # ...but they do overtake each other


def test_interface_and_checks():
    for n, id_width in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4)]:
        arb = ReadArbiter(n, addr_width=40)
        assert len(arb.ports) == n
        for port in arb.ports:
            assert port.signature.members == AXI4ReadSignature(addr_width=40).flip().members
        assert arb.axi.signature.members == AXI4ReadSignature(addr_width=40,
                                                              id_width=id_width).members
    wide = ReadArbiter(2, data_width=128)
    assert wide.axi.signature.members == AXI4ReadSignature(data_width=128).members
    for bad in (0, 17, 2.0):
        with pytest.raises(TypeError, match=rf"'n' must be an int in 1..16, not {bad!r}"):
            ReadArbiter(bad)
    with pytest.raises(TypeError, match="AXI address width must be an int in 12..64, not 8"):
        ReadArbiter(2, addr_width=8)
    with pytest.raises(ValueError, match="read_order must be 'in_order', 'by_id' or "
                                         "'interleaved', not 'random'"):
        AXI4Memory(PAGE, read_order="random")
    with pytest.raises(ValueError, match="read_ids must be a positive int, not 0"):
        AXI4Memory(PAGE, read_ids=0)


def test_model_rejects_arid_out_of_range():
    """Port 2 of a 3-port arbiter issues ARID 2 to a memory that allows IDs 0..1."""
    dut = ReadArbiter(3)
    ram = AXI4Memory(PAGE, read_ids=2)

    async def tb(ctx):
        p = dut.ports[2]
        ctx.set(p.arsize, 3)
        ctx.set(p.arburst, 1)
        ctx.set(p.arvalid, 1)
        for _ in range(4):
            await ctx.tick()

    with pytest.raises(AXIProtocolError, match="ARID=2 out of range for read_ids=2"):
        run_sim(dut, tb, processes=[ram.read_process(dut.axi)], deadline_cycles=100)
