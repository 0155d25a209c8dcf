"""Amaranth-simulator testbench helpers for ``amaranth.lib.stream`` interfaces.

Every helper takes an optional ``random.Random`` and a stall pattern, so unit benches run
under random valid/ready patterns (print the seed you used). A pattern is a probability
``p_stall`` (each cycle, stall one more cycle with that probability: short random stalls)
or a :class:`LongStalls` (now and then a stall of tens of cycles).
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "send_all", "recv_n", "run_sim", "LongStalls",
           "stall_cycles"]


class LongStalls:
    """A stall pattern of rare long stalls: before a transfer (or in a cycle, for a memory
    model's channel), with probability ``p`` a stall of ``cycles[0]..cycles[1]`` cycles."""

    def __init__(self, p: float = 0.03, cycles: tuple[int, int] = (20, 120)):
        self.p, self.cycles = p, cycles

    def __repr__(self) -> str:
        return f"LongStalls(p={self.p}, cycles={self.cycles})"


def stall_cycles(rng: random.Random | None, pattern: float | LongStalls) -> int:
    """Cycles to stall before the next transfer under ``pattern``."""
    if rng is None:
        return 0
    if isinstance(pattern, LongStalls):
        return rng.randint(*pattern.cycles) if rng.random() < pattern.p else 0
    n = 0
    while rng.random() < pattern:
        n += 1
    return n


async def _stall(ctx, rng: random.Random | None, p_stall: float | LongStalls) -> None:
    n = stall_cycles(rng, p_stall)
    if n:
        await ctx.tick().repeat(n)


async def stream_put(ctx, stream, payload, *, rng=None, p_stall=0.0) -> None:
    """Offer ``payload`` on ``stream`` (after random idle cycles) until it is accepted."""
    await _stall(ctx, rng, p_stall)
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, p_stall=0.0):
    """Accept one payload from ``stream`` (after random cycles of holding ready low)."""
    await _stall(ctx, rng, p_stall)
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def send_all(ctx, stream, payloads, *, rng=None, p_stall=0.0) -> None:
    for p in payloads:
        await stream_put(ctx, stream, p, rng=rng, p_stall=p_stall)


async def recv_n(ctx, stream, n: int, *, rng=None, p_stall=0.0, convert=None) -> list:
    """Receive ``n`` payloads; ``convert`` maps each sampled payload to a Python value
    (default: ``int`` for plain values)."""
    out = []
    for _ in range(n):
        p = await stream_get(ctx, stream, rng=rng, p_stall=p_stall)
        out.append(convert(p) if convert else p)
    return out


def pass_through(dut, payloads, n: int, *, seed: int, p_stall: float = 0.4,
                 setup=None, deadline_cycles: int = 20_000) -> list:
    """Send ``payloads`` into ``dut.i`` and receive ``n`` payloads from ``dut.o``, each side
    stalling at random with ``p_stall`` (seeds ``seed + 100`` and ``seed + 200``); ``setup``,
    if given, sets the DUT's other inputs one cycle before the first payload."""
    got = []

    async def producer(ctx):
        if setup is not None:
            setup(ctx)
            await ctx.tick()
        await send_all(ctx, dut.i, payloads, rng=random.Random(seed + 100), p_stall=p_stall)

    async def consumer(ctx):
        got.extend(await recv_n(ctx, dut.o, n, rng=random.Random(seed + 200),
                                p_stall=p_stall))

    run_sim(dut, producer, consumer, deadline_cycles=deadline_cycles)
    return got


def run_sim(dut, *testbenches, processes=(), vcd: str | None = None,
            deadline_cycles: int = 1_000_000) -> None:
    """Simulate ``dut`` (1 MHz clock) until every testbench returns. A bench still running
    after ``deadline_cycles`` fails the test instead of hanging it."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    for p in processes:
        sim.add_process(p)

    def advance_all() -> None:
        deadline_fs = deadline_cycles * 10**9  # 1 us per cycle, in femtoseconds
        while sim.advance():
            if sim._engine.now > deadline_fs:  # no public clock readout in Amaranth 0.5
                raise AssertionError(f"simulation still running after {deadline_cycles} "
                                     "cycles (hung handshake?)")

    if vcd:
        with sim.write_vcd(vcd):
            advance_all()
    else:
        advance_all()
