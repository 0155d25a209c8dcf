"""``dwsep synth``: resources, timing estimate and (``--ecp5``) an Fmax proxy of a config.

    dwsep synth --config NAME [--part xc7z020|xczu7ev] [--set FIELD=N ...] [--json] [--ecp5]
                [--out FILE] [--paths N] [--timeout SECONDS]

One Yosys ``synth_xilinx`` run gives the resource report (:mod:`.synth`) and the netlist the
timing estimate reads (:mod:`.timing`); ``--ecp5`` adds a place-and-route run on an ECP5
(:mod:`.fmax_ecp5`). The text report, or with ``--json`` one JSON document, goes to stdout;
progress goes to stderr. ``--out FILE`` also writes the text report to FILE and Yosys'
``stat -json`` beside it (``FILE`` with suffix ``.stat.json``), as in bitstreams/reports/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dwsep.hw.config import get_config

from .synth import format_report, get_part, override, resources_dict, run_yosys
from .timing import analyze
from .tools import Progress

__all__ = ["synth_command"]


def synth_command(args) -> None:
    """Run ``dwsep synth`` for the parsed arguments ``args`` (see :mod:`dwsep.host.cli`)."""
    base = get_config(args.config)
    cfg = override(base, args.set)
    part = get_part(args.part, base.name)
    if args.paths < 1:
        raise ValueError(f"--paths must be at least 1, not {args.paths}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, not {args.timeout:g}")
    progress = Progress()
    syn = run_yosys(cfg, part, netlist=True, timeout=args.timeout, progress=progress)
    timing = analyze(syn.netlist, n_paths=args.paths)
    syn.netlist = None  # hundreds of MB for the bigger configs; not needed any more
    report = format_report(cfg, part, syn, timing)
    ecp5 = None
    if args.ecp5:
        from .fmax_ecp5 import format_report as format_ecp5
        from .fmax_ecp5 import run_ecp5

        ecp5 = run_ecp5(cfg, timeout=args.timeout, progress=progress)
        report += "\n" + format_ecp5(ecp5)
    if args.out is not None:
        _write_report(args.out, report, syn.stat_json)
    if args.json:
        document = {"config": cfg.name, **resources_dict(part, syn),
                    "timing": timing.to_dict(),
                    "overrides": list(args.set), "tool": syn.yosys_version,
                    "hardware": syn.source, "yosys_seconds": round(syn.seconds, 1),
                    "elaborate_seconds": round(syn.elaborate_seconds, 1)}
        if ecp5 is not None:
            document["ecp5"] = ecp5.to_dict()
        print(json.dumps(document, indent=2))
    else:
        print(report)


def _write_report(out: Path, report: str, stat_json: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    out.with_suffix(".stat.json").write_text(stat_json)
    print(f"dwsep synth: report written to {out}, Yosys statistics to "
          f"{out.with_suffix('.stat.json')}", file=sys.stderr)
