"""Runs in the ``pynq`` environment (``tests/pynq_env.py``), not in pytest: one job on a
simulated PYNQ-Z2 (``dwsep.sim.pynq_board``) through the real ``pynq`` package and the
unchanged ``Accelerator(backend="pynq")`` path.

    python pynq_board_runner.py WORKDIR

``WORKDIR/job.json``: ``{"config": NAME, "board_config": NAME (the overlay's; default
config), "model": "reference" | "rtl" (the accelerator behind the board), "runs":
[{"model": FILE, "input": FILE.npy}, ...], "drop": null | "flush" | "invalidate" (make
PynqBuffer's call a no-op), "wait": "irq" | "poll", "hang": bool (the IP never finishes),
"timeout_s": null | seconds, "bitstream": true (false: pass none)}``. Writes
``out<i>.npy`` per run and ``report.json``: the device and driver class, what the run did on
the board (counts of each logged event, flush before the start, invalidate after it, device
reads of unflushed bytes, interrupts raised), and the error, if any, as type and message.
The expected outputs are not computed here: the tests compare with LiteRT in their own
environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from dwsep.host.driver import Accelerator
from dwsep.hw.layout import REGISTERS
from dwsep.sim.pynq_board import AcceleratorModel, simulated_board


def main(workdir: Path) -> None:
    job = json.loads((workdir / "job.json").read_text())
    config = job["config"]
    board, bit = simulated_board(workdir / "overlay", job.get("board_config") or config,
                                 model=job.get("model", "reference"))
    if job.get("drop"):
        setattr(board, job["drop"], lambda *args: None)
    if job.get("hang"):
        AcceleratorModel.write = lambda self, offset, value: None
    report: dict = {"error": None, "outputs": [], "ip_name": None}
    kwargs = {"bitstream": str(bit)} if job.get("bitstream", True) else {}
    if job.get("timeout_s") is not None:
        kwargs["timeout_s"] = job["timeout_s"]
    t0 = time.monotonic()
    try:
        with Accelerator(config, "pynq", **kwargs) as acc:
            device = acc.device
            if job.get("wait") == "poll":
                device.irq, device.uses_irq = None, False
            report.update(device=type(device).__name__, ip_name=device.ip_name,
                          ip_class=type(device.ip).__name__,
                          bindto=list(type(device.ip).bindto), uses_irq=device.uses_irq,
                          overlay_device=type(device.overlay.device).__name__)
            for i, run in enumerate(job["runs"]):
                y = acc.run(str(workdir / run["model"]), np.load(workdir / run["input"]))
                np.save(workdir / f"out{i}.npy", y)
                report["outputs"].append(f"out{i}.npy")
                report.setdefault("stats", []).append(
                    {k: acc.last_stats[k] for k in ("backend", "descriptor_count")}
                    | {"host_steps": [s["kind"] for s in acc.last_stats["host_steps"]]})
    except Exception as e:  # reported, judged by the test
        report["error"] = {"type": type(e).__name__, "message": str(e)}
    report["seconds"] = time.monotonic() - t0
    kinds = [event[0] for event in board.log]
    report["log_counts"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    ctrl = REGISTERS["CTRL"]
    starts = [i for i, e in enumerate(board.log) if e[0] == "write"
              and e[1] == report["ip_name"] and e[2] == ctrl.offset
              and ctrl.field("start").decode(e[3])]
    report["starts"] = len(starts)
    report["irq_enabled_at_start"] = [bool(ctrl.field("irq_enable").decode(board.log[i][3]))
                                      for i in starts]
    if starts:
        report["flush_before_start"] = any(e[0] == "flush" for e in board.log[:starts[0]])
        report["invalidate_after_start"] = any(e[0] == "invalidate"
                                               for e in board.log[starts[0]:])
    report["stale_reads"] = len(board.stale_reads)
    report["irq_raised"] = sum(1 for e in board.log if e[0] == "irq" and e[2])
    board.deactivate()
    (workdir / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
