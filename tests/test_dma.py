# amaranth: UnusedElaboratable=no
"""DMAReader / DMAWriter against the AXI4Memory model: random lengths and offsets across 4 KiB
boundaries, random stalls on every AXI channel and on the data streams, errors, declared
latencies; plus checks that the model's own rule checks fire."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from dwsep.hw.axi import AXI4ReadSignature, AXI4WriteSignature, Resp
from dwsep.hw.dma_reader import DMAReader, dma_command_layout
from dwsep.hw.dma_writer import DMAWriter
from dwsep.sim.axi_model import AXI4Memory, AXIProtocolError, split_bursts
from dwsep.sim.streams import LongStalls, recv_n, run_sim, send_all

BASE = 0x4000_0000
PAGE = 4096


def random_commands(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """``n`` non-overlapping (addr, beats), command ``i`` starting a little below the end of
    page ``i + 1`` so most cross a 4 KiB boundary; lengths 0..300 beats."""
    cmds = []
    for i in range(n):
        addr = BASE + (i + 1) * PAGE - 8 * rng.randint(0, 40)
        beats = rng.choice([0, 1, 2, rng.randint(3, 40), rng.randint(100, 300), 300])
        cmds.append((addr, beats))
    return cmds


def mem_size(n_cmds: int) -> int:
    return (n_cmds + 2) * PAGE


def cmd(addr: int, beats: int) -> dict:
    return {"addr": addr, "beats": beats}


def beats_at(mem: bytearray, addr: int, beats: int) -> list[int]:
    off = addr - BASE
    return [int.from_bytes(mem[off + 8 * i:off + 8 * i + 8], "little") for i in range(beats)]


async def wait_idle(ctx, dut) -> None:
    if ctx.get(dut.busy):
        await ctx.tick().until(~dut.busy)


def busy_monitor(dut, done_valid, done_ready, units):
    """Process checking, at every clock edge, that ``busy`` low means every command accepted
    before has completed: ``units(addr, beats)`` completions (``done_valid & done_ready``
    handshakes) are due per command."""
    async def process(ctx):
        due = done = 0
        async for (_, _, busy, cv, cr, addr, beats, dv, dr) in ctx.tick().sample(
                dut.busy, dut.cmd.valid, dut.cmd.ready, dut.cmd.payload.addr,
                dut.cmd.payload.beats, done_valid, done_ready):
            assert busy or done == due, f"busy low with {due - done} completions to come"
            if cv and cr and addr % 8 == 0:
                due += units(addr, beats)
            done += dv and dr
    return process


# -- reader ----------------------------------------------------------------------------------

#: Stall patterns of the idle x backpressure grid (as cocotbext-axi's own tests combine an
#: idle inserter on the sources with a backpressure inserter on the sinks): none, or rare
#: long stalls of tens of cycles
PATTERNS = {"none": 0.0, "long": LongStalls()}
GRID = [(idle, bp) for idle in PATTERNS for bp in PATTERNS]


@pytest.mark.parametrize("seed", range(1, 7))
def test_reader_random(seed):
    _reader_random(seed, idle=0.3, backpressure=0.3)


@pytest.mark.parametrize("idle,backpressure", GRID)
def test_reader_idle_and_backpressure(idle, backpressure):
    """Sources (commands) idle, sinks (memory channels, data consumer) push back: each
    combination of no stalls and long stalls."""
    _reader_random(7, idle=PATTERNS[idle], backpressure=PATTERNS[backpressure])


def _reader_random(seed, *, idle, backpressure):
    print(f"seed={seed} idle={idle} backpressure={backpressure}")
    rng = random.Random(seed)
    max_burst = rng.choice([4, 16])
    dut = DMAReader(max_burst=max_burst, max_outstanding=rng.choice([1, 2, 4]))
    cmds = random_commands(rng, 8)
    ram = AXI4Memory(mem_size(8), base=BASE, rng=rng, p_stall=backpressure,
                     read_latency=(1, 8), max_burst=max_burst)
    ram.mem[:] = rng.randbytes(len(ram.mem))
    expected = [b for a, n in cmds for b in beats_at(ram.mem, a, n)]

    async def commands(ctx):
        await send_all(ctx, dut.cmd, [cmd(*c) for c in cmds], rng=rng, p_stall=idle)

    async def consumer(ctx):
        got = await recv_n(ctx, dut.data, len(expected), rng=rng, p_stall=backpressure)
        assert got == expected
        await wait_idle(ctx, dut)
        for _ in range(5):  # nothing more comes out
            assert not ctx.get(dut.data.valid) and not ctx.get(dut.busy)
            await ctx.tick()
        assert ctx.get(dut.error) == 0

    monitor = busy_monitor(dut, dut.data.valid, dut.data.ready, lambda a, n: n)
    run_sim(dut, commands, consumer, processes=[ram.read_process(dut.axi), monitor],
            deadline_cycles=60_000)
    assert [(r.addr, r.beats) for r in ram.reads] == [
        b for c in cmds for b in split_bursts(*c, max_burst)]
    assert ram.max_reads_in_flight == dut.max_outstanding


def test_reader_errors():
    """SLVERR beats still arrive and set ``error``; a misaligned command is dropped and sets
    ``error``; ``clear`` resets it; later commands work."""
    rng = random.Random(7)
    print("seed=7")
    dut = DMAReader()
    bad = (BASE + PAGE + 64, BASE + PAGE + 72)  # one beat
    ram = AXI4Memory(3 * PAGE, base=BASE, rng=rng, p_stall=0.2, read_latency=(1, 4),
                     error_ranges=[bad])
    ram.mem[:] = rng.randbytes(len(ram.mem))

    async def tb(ctx):
        async def read(addr, beats):
            await send_all(ctx, dut.cmd, [cmd(addr, beats)])
            aligned = addr % 8 == 0
            got = await recv_n(ctx, dut.data, beats if aligned else 0, rng=rng, p_stall=0.2)
            await wait_idle(ctx, dut)
            return got

        async def clear():
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            await ctx.tick()
            assert ctx.get(dut.error) == 0

        assert await read(BASE + PAGE - 40, 10) == beats_at(ram.mem, BASE + PAGE - 40, 10)
        assert ctx.get(dut.error) == 0
        await read(BASE + PAGE, 20)  # covers the SLVERR beat
        assert ctx.get(dut.error) == 1
        assert ctx.get(dut.fault_addr) == BASE + PAGE  # the burst answered with SLVERR
        await read(BASE + PAGE + 64, 1)  # a second fault keeps the first one's address
        assert ctx.get(dut.fault_addr) == BASE + PAGE
        await ctx.tick().repeat(3)
        assert ctx.get(dut.error) == 1  # sticky
        await clear()
        n_reads = len(ram.reads)
        await read(BASE + 4, 3)  # misaligned: no data, no AR
        await ctx.tick().repeat(10)
        assert ctx.get(dut.error) == 1 and not ctx.get(dut.data.valid)
        assert ctx.get(dut.fault_addr) == BASE + 4
        assert len(ram.reads) == n_reads
        await clear()
        assert await read(BASE + 2 * PAGE, 5) == beats_at(ram.mem, BASE + 2 * PAGE, 5)
        assert ctx.get(dut.error) == 0

    run_sim(dut, tb, processes=[ram.read_process(dut.axi)], deadline_cycles=5_000)
    assert [r.resp for r in ram.reads] == [Resp.OKAY] * 2 + [Resp.SLVERR, Resp.OKAY,
                                                             Resp.SLVERR, Resp.OKAY]


async def drain(ctx, dut, holds, offered) -> None:
    """Raise ``drain`` until ``busy`` falls (within 400 cycles), checking ``holds(cycle)``
    in every cycle of it (cycle 1 is the first after a clock edge with ``drain`` high);
    then withdraw the ``offered`` stream's valid and lower ``drain``."""
    ctx.set(dut.drain, 1)
    for cycle in range(400):
        assert holds(cycle), f"cycle {cycle} of the drain"
        await ctx.tick()
        if not ctx.get(dut.busy):
            break
    assert not ctx.get(dut.busy), "the drain did not end"
    ctx.set(offered.valid, 0)
    ctx.set(dut.drain, 0)
    await ctx.tick()


@pytest.mark.parametrize("seed", range(4))
def test_reader_drain(seed):
    """``drain`` in the middle of a long read whose consumer has stalled: the bursts in
    flight are taken and dropped (the model checks every AXI rule), no beat shows on
    ``data``, ``busy`` falls; commands offered meanwhile are dropped. Then a read works."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    dut = DMAReader()
    ram = AXI4Memory(8 * PAGE, base=BASE, rng=rng, p_stall=0.3, read_latency=(1, 8))
    ram.mem[:] = rng.randbytes(len(ram.mem))

    async def tb(ctx):
        await send_all(ctx, dut.cmd, [cmd(BASE, 300)])
        got = await recv_n(ctx, dut.data, rng.randint(0, 40), rng=rng, p_stall=0.3)
        await ctx.tick().repeat(rng.randint(0, 30))  # the consumer stalls; bursts pile up
        ctx.set(dut.cmd.valid, 1)  # a command offered while draining is dropped
        ctx.set(dut.cmd.payload, {"addr": BASE + PAGE, "beats": 50})
        await drain(ctx, dut, lambda cycle: not ctx.get(dut.data.valid) or cycle == 0,
                    dut.cmd)
        assert got == beats_at(ram.mem, BASE, len(got))
        assert ctx.get(dut.error) == 0
        await send_all(ctx, dut.cmd, [cmd(BASE + 2 * PAGE, 40)])
        assert await recv_n(ctx, dut.data, 40) == beats_at(ram.mem, BASE + 2 * PAGE, 40)
        await wait_idle(ctx, dut)

    run_sim(dut, tb, processes=[ram.read_process(dut.axi)], deadline_cycles=10_000)
    assert all(r.addr < BASE + PAGE or r.addr >= BASE + 2 * PAGE for r in ram.reads)


@pytest.mark.parametrize("seed", range(4))
def test_writer_drain(seed):
    """``drain`` in the middle of a long write whose data has stopped coming: the bursts on
    AW get beats with no byte strobe, their B responses come back, ``busy`` falls, and
    memory holds exactly the beats sent before. Then a write works."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    dut = DMAWriter()
    ram = AXI4Memory(8 * PAGE, base=BASE, rng=rng, p_stall=0.3, write_latency=(1, 8))
    ram.mem[:] = rng.randbytes(len(ram.mem))
    expected = bytearray(ram.mem)

    async def tb(ctx):
        await send_all(ctx, dut.cmd, [cmd(BASE, 300)])
        sent = rng.randint(0, 40)
        await send_all(ctx, dut.data, [0x0101_0101_0101_0101 * (1 + i % 200)
                                       for i in range(sent)], rng=rng, p_stall=0.3)
        for i in range(sent):
            expected[8 * i:8 * i + 8] = bytes([1 + i % 200]) * 8
        await ctx.tick().repeat(rng.randint(0, 30))
        ctx.set(dut.data.valid, 1)  # data offered while draining is not taken
        await drain(ctx, dut, lambda cycle: not ctx.get(dut.data.ready), dut.data)
        assert ram.mem == expected
        await send_all(ctx, dut.cmd, [cmd(BASE + 4 * PAGE, 20)])
        await send_all(ctx, dut.data, [0x5A5A_5A5A_5A5A_5A5A] * 20)
        expected[4 * PAGE:4 * PAGE + 160] = b"\x5a" * 160
        await wait_idle(ctx, dut)
        assert ram.mem == expected and ctx.get(dut.error) == 0

    run_sim(dut, tb, processes=[ram.write_process(dut.axi)], deadline_cycles=10_000)


def stream_span(beats: int, burst: int, slots: int, slot_cycles: int) -> int:
    """Cycles from a command's first to its last data beat with no stalls, when each burst
    holds one of ``slots`` slots for ``slot_cycles`` cycles: one burst may start every
    ``max(burst, slot_cycles / slots)`` cycles (``slots`` = 1 or full rate only, which is what
    the timing tests use)."""
    n = beats // burst
    if slots * burst >= slot_cycles:
        return beats
    assert slots == 1
    return (n - 1) * slot_cycles + burst


@pytest.mark.parametrize("max_outstanding, latency", [(4, 8), (2, 1), (1, 8), (1, 1)])
def test_reader_timing(max_outstanding, latency):
    """Declared CMD_TO_AR, R_TO_DATA and SLOT_OVERHEAD (no stalls, R ``latency`` cycles after
    AR): 1 beat/cycle when ``max_outstanding * 16 >= 16 + latency + SLOT_OVERHEAD``, one burst
    per ``16 + latency + SLOT_OVERHEAD`` cycles with one slot."""
    dut = DMAReader(max_outstanding=max_outstanding)
    ram = AXI4Memory(2 * PAGE, base=BASE, read_latency=(latency, latency))
    beats = 128

    async def tb(ctx):
        ctx.set(dut.data.ready, 1)
        ctx.set(dut.cmd.payload, cmd(BASE, beats))
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        cycle, first_ar, first_r, data_cycles = 1, None, None, []
        while len(data_cycles) < beats:
            if first_ar is None and ctx.get(dut.axi.arvalid):
                first_ar = cycle
            _, _, rv, rr, dv = await ctx.tick().sample(dut.axi.rvalid, dut.axi.rready,
                                                       dut.data.valid)
            if first_r is None and rv and rr:
                first_r = cycle
            if dv:
                data_cycles.append(cycle)
            cycle += 1
        assert first_ar == DMAReader.CMD_TO_AR
        assert first_r == first_ar + latency
        assert data_cycles[0] == first_r + DMAReader.R_TO_DATA
        assert data_cycles[-1] - data_cycles[0] + 1 == stream_span(
            beats, 16, max_outstanding, 16 + latency + DMAReader.SLOT_OVERHEAD)

    run_sim(dut, tb, processes=[ram.read_process(dut.axi)], deadline_cycles=5_000)


# -- writer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, write_order",
                         [(seed, order) for seed, order in enumerate(["any", "aw_first",
                                                                       "w_first"] * 3, 1)])
def test_writer_random(seed, write_order):
    _writer_random(seed, write_order, idle=0.3, backpressure=0.3)


@pytest.mark.parametrize("idle,backpressure", GRID)
def test_writer_idle_and_backpressure(idle, backpressure):
    """Sources (commands, data) idle, the memory's channels push back: each combination of
    no stalls and long stalls."""
    _writer_random(7, "any", idle=PATTERNS[idle], backpressure=PATTERNS[backpressure])


def _writer_random(seed, write_order, *, idle, backpressure):
    print(f"seed={seed} write_order={write_order} idle={idle} backpressure={backpressure}")
    rng = random.Random(seed)
    max_burst = rng.choice([4, 16])
    dut = DMAWriter(max_burst=max_burst, max_outstanding=rng.choice([1, 2, 4]))
    cmds = random_commands(rng, 8)
    ram = AXI4Memory(mem_size(8), base=BASE, rng=rng, p_stall=backpressure,
                     write_latency=(1, 8), max_burst=max_burst, write_order=write_order)
    ram.mem[:] = rng.randbytes(len(ram.mem))  # every byte outside the targets is a guard
    expected = bytearray(ram.mem)
    words = []
    for addr, beats in cmds:
        ws = [rng.getrandbits(64) for _ in range(beats)]
        words += ws
        off = addr - BASE
        expected[off:off + 8 * beats] = b"".join(w.to_bytes(8, "little") for w in ws)
    bursts = [b for c in cmds for b in split_bursts(*c, max_burst)]

    async def commands(ctx):
        await send_all(ctx, dut.cmd, [cmd(*c) for c in cmds], rng=rng, p_stall=idle)

    async def producer(ctx):
        await send_all(ctx, dut.data, words, rng=rng, p_stall=idle)
        await wait_idle(ctx, dut)
        # busy falls only after the last B: everything is in memory now
        assert ram.writes_acked == len(bursts)
        assert ram.mem == expected
        assert ctx.get(dut.error) == 0

    monitor = busy_monitor(dut, dut.axi.bvalid, dut.axi.bready,
                           lambda a, n: len(split_bursts(a, n, max_burst)))
    run_sim(dut, commands, producer, processes=[ram.write_process(dut.axi), monitor],
            deadline_cycles=60_000)
    assert [(w.addr, w.beats) for w in ram.writes] == bursts
    # A "w_first" subordinate holds each AW until its data is in: fewer bursts reach it.
    assert (ram.max_writes_in_flight == dut.max_outstanding if write_order != "w_first"
            else 1 <= ram.max_writes_in_flight <= dut.max_outstanding)


def test_writer_errors():
    """BRESP SLVERR sets ``error``; a misaligned command is dropped (no AXI traffic, no data
    taken) and sets ``error``; ``clear`` resets it; later commands work."""
    rng = random.Random(11)
    print("seed=11")
    dut = DMAWriter()
    bad = (BASE + PAGE + 64, BASE + PAGE + 72)
    ram = AXI4Memory(3 * PAGE, base=BASE, rng=rng, p_stall=0.2, write_latency=(1, 4),
                     error_ranges=[bad])
    ram.mem[:] = rng.randbytes(len(ram.mem))
    expected = bytearray(ram.mem)

    async def tb(ctx):
        async def write(addr, beats, fill):
            off = addr - BASE
            if off % 8 == 0:
                expected[off:off + 8 * beats] = bytes([fill]) * (8 * beats)
            await send_all(ctx, dut.cmd, [cmd(addr, beats)])
            if off % 8 == 0:
                await send_all(ctx, dut.data, [int.from_bytes(bytes([fill]) * 8)] * beats,
                               rng=rng, p_stall=0.2)
            await wait_idle(ctx, dut)

        async def clear():
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            await ctx.tick()
            assert ctx.get(dut.error) == 0

        await write(BASE + PAGE - 40, 10, 0x11)
        assert ctx.get(dut.error) == 0 and ram.mem == expected
        await write(BASE + PAGE + 32, 20, 0x22)  # covers the SLVERR beat, which is not written
        expected[bad[0] - BASE:bad[1] - BASE] = ram.mem[bad[0] - BASE:bad[1] - BASE]
        assert ctx.get(dut.error) == 1 and ram.mem == expected
        assert ctx.get(dut.fault_addr) == BASE + PAGE + 32  # the burst answered with SLVERR
        await ctx.tick().repeat(3)
        assert ctx.get(dut.error) == 1
        await clear()
        n_writes = len(ram.writes)
        await write(BASE + 2 * PAGE + 4, 3, 0x33)  # misaligned
        ctx.set(dut.data.valid, 1)  # a beat offered now must not be taken
        for _ in range(10):
            assert not ctx.get(dut.data.ready) and not ctx.get(dut.axi.awvalid)
            await ctx.tick()
        ctx.set(dut.data.valid, 0)
        assert ctx.get(dut.error) == 1 and len(ram.writes) == n_writes
        assert ctx.get(dut.fault_addr) == BASE + 2 * PAGE + 4
        await clear()
        await write(BASE + 2 * PAGE, 5, 0x44)
        assert ctx.get(dut.error) == 0 and ram.mem == expected

    run_sim(dut, tb, processes=[ram.write_process(dut.axi)], deadline_cycles=5_000)
    assert [w.resp for w in ram.writes] == [Resp.OKAY] * 2 + [Resp.SLVERR] + [Resp.OKAY] * 2


@pytest.mark.parametrize("max_outstanding, latency", [(4, 8), (2, 1), (1, 8), (1, 1)])
def test_writer_timing(max_outstanding, latency):
    """Declared CMD_TO_AW, CMD_TO_DATA, DATA_TO_W, SLOT_OVERHEAD and B_TO_IDLE (no stalls, B
    ``latency`` cycles after the last W)."""
    dut = DMAWriter(max_outstanding=max_outstanding)
    ram = AXI4Memory(2 * PAGE, base=BASE, write_latency=(latency, latency))
    beats = 128

    async def tb(ctx):
        ctx.set(dut.data.valid, 1)
        ctx.set(dut.data.payload, 0x0123_4567_89AB_CDEF)
        ctx.set(dut.cmd.payload, cmd(BASE, beats))
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        cycle, first_aw, data_cycles, first_w, last_b = 1, None, [], None, None
        while ctx.get(dut.busy):
            if first_aw is None and ctx.get(dut.axi.awvalid):
                first_aw = cycle
            if first_w is None and ctx.get(dut.axi.wvalid):
                first_w = cycle
            _, _, dv, dr, bv = await ctx.tick().sample(dut.data.valid, dut.data.ready,
                                                       dut.axi.bvalid)
            if dv and dr:
                data_cycles.append(cycle)
                if len(data_cycles) == beats:
                    ctx.set(dut.data.valid, 0)
            if bv:
                last_b = cycle
            cycle += 1
        assert first_aw == DMAWriter.CMD_TO_AW
        assert data_cycles[0] == DMAWriter.CMD_TO_DATA
        assert first_w == data_cycles[0] + DMAWriter.DATA_TO_W
        assert data_cycles[-1] - data_cycles[0] + 1 == stream_span(
            beats, 16, max_outstanding, 16 + latency + DMAWriter.SLOT_OVERHEAD)
        assert last_b == data_cycles[-1] + DMAWriter.DATA_TO_W + latency
        assert cycle == last_b + DMAWriter.B_TO_IDLE  # first cycle with busy low

    run_sim(dut, tb, processes=[ram.write_process(dut.axi)], deadline_cycles=5_000)
    assert ram.mem[:8 * beats] == (0x0123_4567_89AB_CDEF).to_bytes(8, "little") * beats


@pytest.mark.parametrize("cls", [DMAReader, DMAWriter])
def test_back_to_back_commands_are_gapless(cls):
    """With no stalls, the data of consecutive commands (1-beat ones included) flows at
    1 beat/cycle across command boundaries, as the docstrings declare."""
    cmds = [(BASE, 32), (BASE + 512, 1), (BASE + 1024, 3), (BASE + 2048, 40)]
    total = sum(n for _, n in cmds)
    dut = cls()
    ram = AXI4Memory(3 * PAGE, base=BASE, read_latency=(4, 4), write_latency=(4, 4))
    cycles = []

    async def commands(ctx):
        await send_all(ctx, dut.cmd, [cmd(*c) for c in cmds])

    async def data(ctx):
        ctx.set(dut.data.valid if cls is DMAWriter else dut.data.ready, 1)
        cycle = 0
        while len(cycles) < total:
            _, _, valid, ready = await ctx.tick().sample(dut.data.valid, dut.data.ready)
            cycle += 1
            if valid and ready:
                cycles.append(cycle)
        ctx.set(dut.data.valid if cls is DMAWriter else dut.data.ready, 0)
        await wait_idle(ctx, dut)

    process = ram.write_process if cls is DMAWriter else ram.read_process
    run_sim(dut, commands, data, processes=[process(dut.axi)], deadline_cycles=1_000)
    assert cycles[-1] - cycles[0] + 1 == total


def test_zero_beats_and_interface():
    """``beats == 0`` is accepted and completes at once; the signatures are as documented."""
    rd, wr = DMAReader(addr_width=40), DMAWriter(addr_width=40)
    assert rd.axi.signature == AXI4ReadSignature(addr_width=40)
    assert wr.axi.signature == AXI4WriteSignature(addr_width=40)
    assert rd.axi.signature != AXI4ReadSignature(addr_width=32)
    assert rd.axi.signature != AXI4WriteSignature(addr_width=40)
    assert wr.data.signature == stream.Signature(unsigned(64)).flip()
    assert repr(rd.axi.signature) == "AXI4ReadSignature(addr_width=40, data_width=64, id_width=1)"
    assert rd.cmd.payload.shape() == dma_command_layout(40, 24)
    for dut in (rd, wr):
        async def tb(ctx, dut=dut):
            await send_all(ctx, dut.cmd, [cmd(BASE, 0), cmd(BASE + 8, 0)])
            for _ in range(5):
                assert not ctx.get(dut.busy) and ctx.get(dut.cmd.ready)
                await ctx.tick()
            assert ctx.get(dut.error) == 0
        run_sim(dut, tb, deadline_cycles=100)


@pytest.mark.parametrize("cls", [DMAReader, DMAWriter])
def test_constructor_checks(cls):
    with pytest.raises(TypeError, match=r"'max_burst' must be an int in 1..256 .*not 0"):
        cls(max_burst=0)
    with pytest.raises(TypeError, match=r"'addr_width' must be an int in 12..64, not 8"):
        cls(addr_width=8)
    with pytest.raises(TypeError, match=r"'max_beats_width' must be an int in 1..64, not 0"):
        cls(max_beats_width=0)
    with pytest.raises(TypeError, match=r"'max_outstanding' must be an int in 1..16, not 0"):
        cls(max_outstanding=0)


# -- the model's own checks ------------------------------------------------------------------

class _ReadPort(wiring.Component):
    """A subordinate-facing AXI read port driven by the testbench (to feed the model bad
    requests)."""

    def __init__(self):
        super().__init__({"axi": wiring.Out(AXI4ReadSignature())})

    def elaborate(self, platform):
        m = Module()
        tick = Signal()  # gives the design a sync domain to clock
        m.d.sync += tick.eq(~tick)
        return m


@pytest.mark.parametrize("request_fields, message", [
    ({"araddr": PAGE - 8, "arlen": 1}, "crosses a 4 KiB boundary"),
    ({"araddr": 0, "arlen": 16}, "17 beats exceed max_burst=16"),
    ({"araddr": 0, "arlen": 0, "arsize": 2}, "SIZE must be 3"),
    ({"araddr": 4, "arlen": 0}, "not aligned"),
])
def test_model_rejects_bad_requests(request_fields, message):
    port = _ReadPort()
    ram = AXI4Memory(2 * PAGE)

    async def tb(ctx):
        ctx.set(port.axi.arsize, 3)
        ctx.set(port.axi.arburst, 1)
        for name, value in request_fields.items():
            ctx.set(getattr(port.axi, name), value)
        ctx.set(port.axi.arvalid, 1)
        for _ in range(3):
            await ctx.tick()

    sim = Simulator(port)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(ram.read_process(port.axi))
    with pytest.raises(AXIProtocolError, match=message):
        sim.run()


def test_model_rejects_unstable_valid():
    port = _ReadPort()
    ram = AXI4Memory(PAGE, rng=random.Random(0), p_stall=0.99)  # arready almost never high

    async def tb(ctx):
        ctx.set(port.axi.arsize, 3)
        ctx.set(port.axi.arburst, 1)
        ctx.set(port.axi.arvalid, 1)
        for _ in range(2):
            await ctx.tick()
        ctx.set(port.axi.araddr, 8)
        for _ in range(2):
            await ctx.tick()

    sim = Simulator(port)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(ram.read_process(port.axi))
    with pytest.raises(AXIProtocolError, match="AR changed or dropped valid before ready"):
        sim.run()
