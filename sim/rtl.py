"""Run the accelerator's generated Verilog in Verilator: build once per config, then
simulate *jobs* (DDR image in, register writes, DDR image and registers out).

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

from dwsep.hw.config import AcceleratorConfig, get_config

from .verilator import VerilatedDesign, build_design

__all__ = ["build_accelerator", "generate_verilog", "simulate", "Simulation", "JobResult",
           "TOPLEVEL"]

TOPLEVEL = "dwsep_top"
_HW_DIR = Path(__file__).resolve().parent.parent / "hw"


def generate_verilog(config: AcceleratorConfig | str) -> str:
    """Verilog of :class:`dwsep.hw.top.Accelerator` for ``config``."""
    from amaranth.back import verilog

    from dwsep.hw.top import Accelerator

    top = Accelerator(get_config(config))
    return verilog.convert(top, name=TOPLEVEL, emit_src=False)


def _hw_fingerprint(config: AcceleratorConfig) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for path in sorted(_HW_DIR.glob("*.py")):
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
        _built[key] = build_design(lambda: generate_verilog(config), TOPLEVEL,
                                   tag=f"{config.name}", key=key)
    return _built[key]


@dataclass
class JobResult:
    memory: bytearray
    registers: dict[str, int]
    sim_cycles: int  #: cycles simulated after the register writes (polling granularity)
    wall_seconds: float
    #: descriptor index -> cycle it was first seen running (to within ``POLL_CYCLES``)
    layer_starts: dict[int, int]


def simulate(config: AcceleratorConfig | str, memory: bytes | bytearray, writes: list,
             *, wait: bool = True, max_cycles: int = 50_000_000,
             backpressure_seed: int | None = None, p_pause: float = 0.3,
             progress: Path | None = None) -> JobResult:
    """Simulate one job on the Verilated accelerator.

    Parameters
    ----------
    memory:
        DDR image; address 0 of the AXI masters is byte 0.
    writes:
        ``[(register_name, value), ...]`` written in order through AXI4-Lite.
    wait:
        Run until ``STATUS.busy`` clears (or ``max_cycles`` pass) before reading registers.
    backpressure_seed:
        If given, random pauses (probability ``p_pause`` per cycle) on every AXI channel.
    progress:
        A file the bench keeps replacing with ``{"LAYER": ..., "sim_cycles": ...}`` while
        the program runs.
    """
    design = build_accelerator(config)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dwsep-job-") as tmp:
        tmp = Path(tmp)
        (tmp / "mem_in.bin").write_bytes(bytes(memory))
        job = {
            "memory_in": str(tmp / "mem_in.bin"), "memory_out": str(tmp / "mem_out.bin"),
            "result": str(tmp / "result.json"), "writes": [list(w) for w in writes],
            "wait": wait, "max_cycles": max_cycles,
            "backpressure_seed": backpressure_seed, "p_pause": p_pause,
            "progress": str(progress) if progress else None,
        }
        (tmp / "job.json").write_text(json.dumps(job))
        design.run("dwsep.sim.bench_top", test_dir=tmp,
                   extra_env={"DWSEP_JOB": str(tmp / "job.json"),
                              "COCOTB_LOG_LEVEL": "WARNING"})
        result = json.loads((tmp / "result.json").read_text())
        mem_out = bytearray((tmp / "mem_out.bin").read_bytes())
    return JobResult(mem_out, result["registers"], result["sim_cycles"],
                     time.monotonic() - t0,
                     {int(k): v for k, v in result.get("layer_starts", {}).items()})


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

    def progress(self) -> dict:
        """The bench's last progress report (empty before the first)."""
        try:
            return json.loads(self.progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def result(self) -> JobResult:
        """Wait for the simulation and return its result (or raise its error)."""
        self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._error is not None:
            raise self._error
        return self._result
