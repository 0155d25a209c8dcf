"""Run the accelerator's generated Verilog in Verilator: build once per config, then
simulate *jobs* (DDR image in, register writes, DDR image and registers out).

The simulated top level is ``dwsep_bench``: the accelerator with its AXI managers on the DDR
model ``sim/ddr_model.sv`` (:mod:`dwsep.sim.ddr`), so the memory's timing is simulated in
C++ and Python only writes registers and polls ``STATUS``. One build serves every memory
model and clock: their timing reaches the model as plusargs.

This is what the ``rtl`` backend stands on, and what the top-level tests use.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dwsep.hw.config import BEAT_BYTES, AcceleratorConfig, get_config

from .ddr import (
    AXI_MONITOR_SV,
    BENCH_TOPLEVEL,
    DDR_MODEL_SV,
    MONITOR_RULES,
    PROFILER_SV,
    MemoryModel,
    bench_verilog,
    get_memory,
    hex_to_image,
    image_to_hex,
    monitor_checks,
    pause_plusargs,
)
from .verilator import VerilatedDesign, build_design

__all__ = ["build_accelerator", "generate_verilog", "simulate", "Simulation", "JobResult",
           "TOPLEVEL", "AXIProtocolViolation"]

TOPLEVEL = "dwsep_top"
#: the DDR model holds 2**DDR_DEPTH_LOG2 words of 8 bytes (32 MiB)
DDR_DEPTH_LOG2 = 22
DDR_CAPACITY = 8 << DDR_DEPTH_LOG2
_HW_DIR = Path(__file__).resolve().parent.parent / "hw"


class AXIProtocolViolation(Exception):
    """The bench's monitors (``sim/axi_monitor.sv``) saw the accelerator, or the DDR model,
    break an AXI rule."""


def generate_verilog(config: AcceleratorConfig | str) -> str:
    """Verilog of :class:`dwsep.hw.top.Top` for ``config``."""
    return _convert(get_config(config))[0]


def generate_bench_verilog(config: AcceleratorConfig | str) -> str:
    """Verilog of the accelerator and of ``dwsep_bench`` around it (compiled with
    ``sim/ddr_model.sv``)."""
    verilog, top = _convert(get_config(config))
    return verilog + "\n" + bench_verilog(top, TOPLEVEL, depth_log2=DDR_DEPTH_LOG2)


def _convert(config: AcceleratorConfig):
    from amaranth.back import verilog

    from dwsep.hw.top import Top

    top = Top(config)
    return verilog.convert(top, name=TOPLEVEL, emit_src=False), top


def _hw_fingerprint(config: AcceleratorConfig) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for path in sorted([*_HW_DIR.glob("*.py"), Path(__file__).with_name("ddr.py")]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_built: dict[str, VerilatedDesign] = {}


def build_accelerator(config: AcceleratorConfig | str) -> VerilatedDesign:
    """Build (or reuse) the Verilated accelerator for ``config``. Verilog generation is
    skipped when a build for the same config and the same ``hw/`` sources exists."""
    config = get_config(config)
    key = _hw_fingerprint(config)
    if key not in _built:
        _built[key] = build_design(lambda: generate_bench_verilog(config), BENCH_TOPLEVEL,
                                   tag=f"{config.name}", key=key,
                                   extra_sources=(DDR_MODEL_SV, PROFILER_SV, AXI_MONITOR_SV))
    return _built[key]


@dataclass
class JobResult:
    memory: bytearray
    registers: dict[str, int]
    sim_cycles: int  #: cycles simulated after the register writes (polling granularity)
    wall_seconds: float
    #: ``(descriptor index, cycles)`` of each descriptor run, in order: exact, the cycles
    #: ``CYCLES`` counts (``sim/profiler.sv``)
    layer_cycles: list[tuple[int, int]]
    #: beats the DDR model moved, all ports together (8 bytes each)
    ddr_beats_read: int = 0
    ddr_beats_written: int = 0
    #: the ``read`` steps' values, in order: ``[(register name, word), ...]``
    reads: list = None
    #: a ``wait_idle`` step ran out of cycles (the bench then aborted the run)
    timed_out: bool = False

    @property
    def layer_starts(self) -> dict[int, int]:
        """Descriptor index -> the cycle (of ``CYCLES``) its first run began."""
        starts, t = {}, 0
        for layer, cycles in self.layer_cycles:
            starts.setdefault(layer, t)
            t += cycles
        return starts


def simulate(config: AcceleratorConfig | str, memory: bytes | bytearray, writes: list = (),
             *, steps: list | None = None, wait: bool = True, max_cycles: int = 50_000_000,
             backpressure_seed: int | None = None, p_pause: float = 0.3,
             progress: Path | None = None, memory_model: MemoryModel | str = "ideal",
             clock_mhz: float = 100.0) -> JobResult:
    """Simulate one job on the Verilated accelerator.

    Parameters
    ----------
    memory:
        DDR image; address 0 of the AXI masters is byte 0.
    writes:
        ``[(register_name, value), ...]`` written in order through AXI4-Lite.
    wait:
        Run until ``STATUS.busy`` clears (or ``max_cycles`` pass, then the run is aborted
        and ``timed_out`` set) before reading registers.
    steps:
        Instead of ``writes`` and ``wait``: the bench's steps (``dwsep.sim.bench_top.run_job``:
        writes, waits, register reads, fault injection), e.g. an abort in the middle of a
        run and a second run after it.
    backpressure_seed:
        If given, random pauses (probability ``p_pause`` per cycle) on every AXI channel.
    progress:
        A file the bench keeps replacing with ``{"LAYER": ..., "sim_cycles": ...}`` while
        the program runs.
    memory_model, clock_mhz:
        The DDR the accelerator sees (:data:`dwsep.sim.ddr.MEMORIES`) and the accelerator's
        clock, which converts the memory's nanoseconds and bytes per second to cycles.
    """
    if len(memory) > DDR_CAPACITY:
        raise ValueError(f"DDR image of {len(memory)} bytes exceeds the RTL bench's DDR model "
                         f"({DDR_CAPACITY} bytes, sim.rtl.DDR_DEPTH_LOG2={DDR_DEPTH_LOG2})")
    timing = get_memory(memory_model).at(clock_mhz)
    design = build_accelerator(config)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dwsep-job-") as tmp:
        tmp = Path(tmp)
        (tmp / "mem_in.hex").write_text(image_to_hex(memory))
        plusargs = [f"+ddr_image={tmp / 'mem_in.hex'}", f"+ddr_dump={tmp / 'mem_out.hex'}",
                    f"+profile={tmp / 'profile.txt'}",
                    f"+ddr_words={-(-len(memory) // BEAT_BYTES)}", *timing.plusargs()]
        if backpressure_seed is not None:
            plusargs += pause_plusargs(backpressure_seed, p_pause)
        if steps is None:
            steps = [["write", *w] for w in writes] + ([["wait_idle", max_cycles]]
                                                      if wait else [])
        job = {
            "result": str(tmp / "result.json"), "steps": [list(s) for s in steps],
            "backpressure_seed": backpressure_seed, "p_pause": p_pause,
            "progress": str(progress) if progress else None,
        }
        (tmp / "job.json").write_text(json.dumps(job))
        design.run("dwsep.sim.bench_top", test_dir=tmp, plusargs=plusargs,
                   extra_env={"DWSEP_JOB": str(tmp / "job.json"),
                              "COCOTB_LOG_LEVEL": "WARNING"})
        result = json.loads((tmp / "result.json").read_text())
        monitor = result["axi_monitor"]
        if monitor["violations"]:
            what, rule = monitor_checks()[monitor["check"]]
            raise AXIProtocolViolation(
                f"{monitor['violations']} AXI protocol violation(s); the first at cycle "
                f"{monitor['cycle']:,} on {what}: {MONITOR_RULES[rule]} (sim/axi_monitor.sv "
                f"rule {rule})")
        mem_out = hex_to_image((tmp / "mem_out.hex").read_text(), len(memory))
        profile = (tmp / "profile.txt").read_text().split() \
            if (tmp / "profile.txt").exists() else []
    return JobResult(mem_out, result["registers"], result["sim_cycles"],
                     time.monotonic() - t0,
                     [(int(a), int(b)) for a, b in zip(profile[::2], profile[1::2], strict=True)],
                     result["ddr_beats_read"], result["ddr_beats_written"],
                     [tuple(r) for r in result["reads"]], result["timed_out"])


class Simulation:
    """A :func:`simulate` job running in a background thread, with live progress."""

    def __init__(self, config, memory, writes, **options):
        self._dir = Path(tempfile.mkdtemp(prefix="dwsep-progress-"))
        self.progress_file = self._dir / "progress.json"
        self._result: JobResult | None = None
        self._error: BaseException | None = None

        def run():
            try:
                self._result = simulate(config, memory, writes,
                                        progress=self.progress_file, **options)
            except BaseException as e:  # handed to the caller of result()
                self._error = e

        self._thread = threading.Thread(target=run, name="dwsep-rtl", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        """Wait for the simulation to end."""
        self._thread.join()

    def progress(self) -> dict:
        """The bench's last progress report (empty before the first)."""
        try:
            return json.loads(self.progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def result(self) -> JobResult:
        """Wait for the simulation and return its result (or raise its error)."""
        self.join()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._error is not None:
            raise self._error
        return self._result
