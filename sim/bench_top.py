"""cocotb bench of the whole accelerator (``dwsep_bench``: the accelerator with its AXI
managers on the DDR model ``sim/ddr_model.sv``), ``AxiLiteMaster`` for the registers.
Runs one *job* (written by :mod:`dwsep.sim.rtl`): the DDR model loads its image and timing
from plusargs, the bench replays the driver's register writes, lets the program run until
the accelerator is no longer busy, reads every register back and has the model write its
image out.

The job file is named by the ``DWSEP_JOB`` environment variable (JSON, see
:func:`dwsep.sim.rtl.simulate`). Python stays off the per-cycle path: the memory and its
backpressure are simulated in C++; Python wakes once every ``POLL_CYCLES`` to poll
``STATUS``, and on the AXI-Lite transfers.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, SimTimeoutError, Timer, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from dwsep.hw.layout import REGISTERS

# cocotbext-axi 0.1.28 still calls cocotb 1.x APIs that cocotb 2.1 deprecates (kill(),
# setimmediatevalue, Event.data); they work, the warnings would only bury the log.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")

CLOCK_NS = 10  # the bench's clock period; cycles, not nanoseconds, are what it reports
POLL_CYCLES = 2048  # cycles between STATUS polls (per-descriptor cycles come from sim/profiler.sv)
PROGRESS_POLLS = 8  # polls between progress reports (LAYER.index to the progress file)
#: One AXI-Lite transfer's limit: it takes a few cycles, tens with random pauses; an
#: accelerator that never answers fails the run instead of hanging it.
AXIL_TIMEOUT_CYCLES = 10_000


def _pauses(rng: random.Random, p_pause: float):
    while True:
        yield rng.random() < p_pause


def _apply_backpressure(axil: AxiLiteMaster, seed: int, p_pause: float) -> None:
    """Random pauses on the AXI-Lite channels (the DDR model pauses the AXI ones)."""
    rng = random.Random(seed)
    channels = [axil.write_if.aw_channel, axil.write_if.w_channel, axil.write_if.b_channel,
                axil.read_if.ar_channel, axil.read_if.r_channel]
    for ch in channels:
        ch.set_pause_generator(_pauses(random.Random(rng.getrandbits(32)), p_pause))


async def within_limit(transfer, what: str):
    """Await one AXI-Lite ``transfer``; fail if it takes over ``AXIL_TIMEOUT_CYCLES``."""
    try:
        return await with_timeout(transfer, AXIL_TIMEOUT_CYCLES * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise AssertionError(f"AXI-Lite {what}: no response in {AXIL_TIMEOUT_CYCLES:,} "
                             f"cycles") from None


async def _write(axil: AxiLiteMaster, name: str, value: int) -> None:
    await within_limit(axil.write_dword(REGISTERS[name].offset, value), f"write of {name}")


async def _read(axil: AxiLiteMaster, name: str) -> int:
    return await within_limit(axil.read_dword(REGISTERS[name].offset), f"read of {name}")


def _report(path: Path, values: dict) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values))
    tmp.replace(path)


#: cycles an abort may take after a run's cycle limit: the drain of a few bursts
ABORT_CYCLES = 100_000


async def _wait_idle(dut, axil: AxiLiteMaster, limit: int, progress: str | None) -> int:
    """Poll ``STATUS`` every ``POLL_CYCLES`` until ``busy`` falls or ``limit`` cycles pass;
    returns the cycles waited."""
    busy = REGISTERS["STATUS"].field("busy")
    waited = polls = 0
    while waited < limit:
        # one timer, not POLL_CYCLES clock-edge triggers: Python sleeps meanwhile
        step = min(POLL_CYCLES, limit - waited)
        await Timer(step * CLOCK_NS, unit="ns")
        waited += step
        if not busy.decode(await _read(axil, "STATUS")):
            break
        polls += 1
        if progress and polls % PROGRESS_POLLS == 0:
            layer = await _read(axil, "LAYER")
            _report(Path(progress), {"LAYER": layer, "sim_cycles": waited})
    return waited


@cocotb.test()
async def run_job(dut):
    """The job's ``steps``, in order: ``["write", register, value]``, ``["cycles", n]`` (let
    ``n`` cycles pass), ``["wait_idle", limit]`` (until ``STATUS.busy`` falls; past ``limit``
    cycles the run counts as timed out: the bench writes ``CTRL.abort`` and waits up to
    ``ABORT_CYCLES`` for it), ``["read", register]`` (kept in the result's ``reads``),
    ``["fault", address or None]`` (the DDR model's fault injection on that word, or off)."""
    job = json.loads(Path(os.environ["DWSEP_JOB"]).read_text())
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.ddr_dump.value = 0
    dut.ddr_fault_on.value = 0
    dut.ddr_fault_addr.value = 0

    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
    if job.get("backpressure_seed") is not None:
        _apply_backpressure(axil, job["backpressure_seed"], job.get("p_pause", 0.3))

    # a full 0 -> 1 -> 0 reset pulse: cocotbext-axi reacts to reset edges (cocotbext-axi #116)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)

    busy = REGISTERS["STATUS"].field("busy")
    cycles_run, reads, timed_out = 0, [], False
    for op, *args in job["steps"]:
        if op == "write":
            await _write(axil, *args)
        elif op == "cycles":
            await ClockCycles(dut.clk, args[0])
            cycles_run += args[0]
        elif op == "wait_idle":
            cycles_run += await _wait_idle(dut, axil, args[0], job.get("progress"))
            if busy.decode(await _read(axil, "STATUS")):
                timed_out = True
                await _write(axil, "CTRL", REGISTERS["CTRL"].field("abort").encode(1))
                cycles_run += await _wait_idle(dut, axil, ABORT_CYCLES, None)
        elif op == "read":
            reads.append([args[0], await _read(axil, args[0])])
        elif op == "fault":
            dut.ddr_fault_on.value = args[0] is not None
            dut.ddr_fault_addr.value = args[0] or 0
        else:
            raise ValueError(f"unknown job step {op!r}")

    registers = {}
    for reg in REGISTERS:  # in map order: CYCLES_LO is read before CYCLES_HI (latch)
        registers[reg.name] = await _read(axil, reg.name)
    dut.ddr_dump.value = 1  # the model writes its image on this edge
    await ClockCycles(dut.clk, 2)
    Path(job["result"]).write_text(json.dumps({
        "registers": registers, "sim_cycles": cycles_run, "reads": reads,
        "timed_out": timed_out,
        "axi_monitor": {"violations": int(dut.axi_violations.value),
                        "rule": int(dut.axi_first_rule.value),
                        "check": int(dut.axi_first_check.value),
                        "cycle": int(dut.axi_first_cycle.value)},
        "ddr_beats_read": int(dut.ddr_beats_read.value),
        "ddr_beats_written": int(dut.ddr_beats_written.value)}))
