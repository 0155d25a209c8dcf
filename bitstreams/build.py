"""``dwsep build``: everything Vivado needs to build the dwsep overlay for a board.

    dwsep build [--board pynq-z2] [--config NAME] [--clock-mhz F] [--out DIR] [--jobs N]
                [--check] [--dry-run]

writes into ``DIR`` (default ``bitstreams/<board>/`` under the working directory):

* ``dwsep_top.v``: the accelerator (:func:`dwsep.sim.rtl.generate_verilog` of the config);
* ``dwsep_accelerator.v``: its Vivado shell (below);
* ``settings.tcl``: the config, the fabric clock, the AXI subordinate and manager ports and
  the block design's cell names, VLNVs and address windows (the constants below);
* ``build.tcl`` and the board's PS settings (``ps7_pynq_z2.tcl``), copied from
  ``bitstreams/pynq_z2/``, so the folder is complete on its own;
* with ``--check``: ``lint.txt`` (Verilator ``--lint-only -Wall`` of shell and accelerator)
  and ``resources.txt`` (the Yosys ``synth_xilinx`` report of :mod:`.synth` for the board's
  part);

and prints the one Vivado command that turns them into ``dwsep.bit`` and ``dwsep.hwh``
side by side in ``DIR`` (what ``pynq.Overlay`` loads). ``--dry-run`` lists what would be
written and writes nothing.

The shell exists because Vivado's IP packager infers AXI interfaces from
``<bus>_<signal>`` port names and ``X_INTERFACE_*`` attributes, while Amaranth names ports
``s_axil__awaddr`` and resets active high. It renames the ports, inverts ``aresetn`` into
``rst``, widens the register address to :data:`REG_ADDR_BITS` and declares the clock, reset,
every AXI bus and the level interrupt.

The block design's facts (cell names, VLNVs, address windows) are declared here once:
``settings.tcl`` hands them to ``build.tcl``, and :mod:`.hwh` describes the same design for
simulation.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dwsep.hw.config import get_config

__all__ = ["BOARDS", "Board", "HP_ORDER", "SHELL", "REG_ADDR_BITS", "VLNV", "BLOCK_DESIGN",
           "PS_CELL", "PS_VLNV", "ACCELERATOR_CELL", "REG_BUS", "REG_BLOCK", "REG_BASE",
           "REG_RANGE", "INTC_CELL", "INTC_VLNV", "INTC_BUS", "INTC_BASE", "INTC_RANGE",
           "buses", "shell_verilog", "settings_tcl", "plan", "write", "lint", "lint_summary",
           "vivado_command", "build_command"]

SHELL = "dwsep_accelerator"
#: Register window seen by the PS: 64 KiB, Vivado's usual AXI-Lite segment (the accelerator
#: decodes the low address bits; the rest alias).
REG_ADDR_BITS = 16
#: Must equal ``dwsep.host.backends.pynq.VLNV``: the PYNQ driver binds to it.
VLNV = "dwsep.org:dwsep:accelerator:1.0"
HERE = Path(__file__).resolve().parent
#: The accelerator's AXI4 managers in the order build.tcl gives them the PS7's 64-bit HP
#: ports, one each (S_AXI_HP0, HP1, HP2), as the PYNQ-Z2 memory model has them
#: (``dwsep.sim.ddr``): they share only the DRAM.
HP_ORDER = ("m_axi", "m_axi_res", "m_axi_pf")

# The block design (build.tcl reads these from settings.tcl).
#: its name, which Vivado also gives the hardware handoff (``dwsep.hwh``)
BLOCK_DESIGN = "dwsep"
PS_CELL = "ps7"
PS_VLNV = "xilinx.com:ip:processing_system7:5.5"
#: the accelerator's cell: the key of ``pynq.Overlay.ip_dict``
ACCELERATOR_CELL = "dwsep"
#: the accelerator's one AXI4-Lite subordinate bus, and the name of its address block (the
#: packager's default, which build.tcl also gives the block when it adds one)
REG_BUS = "s_axil"
REG_BLOCK = "reg0"
#: the registers on M_AXI_GP0: the start of the PS7's GP0 window
REG_BASE = 0x4000_0000
REG_RANGE = 1 << REG_ADDR_BITS
#: The AXI interrupt controller between the accelerator's ``irq`` and IRQ_F2P: pynq 4.0's
#: ``Interrupt`` finds interrupt pins only as inputs of an ``axi_intc`` (wired straight to
#: IRQ_F2P, ``irq`` is not an interrupt PYNQ knows). Its AXI4-Lite bus is ``s_axi``.
INTC_CELL = "axi_intc_0"
INTC_VLNV = "xilinx.com:ip:axi_intc:4.1"
INTC_BUS = "s_axi"
#: PYNQ's usual address for it (its base overlays put ``axi_intc_0`` there)
INTC_BASE = 0x4180_0000
INTC_RANGE = 0x1_0000


@dataclasses.dataclass(frozen=True)
class Board:
    """A board the overlay is built for: its part, default config and Vivado scripts."""
    name: str
    part: str
    config: str
    #: the folder of ``build.tcl`` and the PS settings it sources
    scripts: Path
    #: its key in :data:`dwsep.bitstreams.synth.PARTS` (the resource report's part)
    synth_part: str
    #: the fabric clock range the PS can give (MHz)
    clock_range: tuple[float, float]
    default_clock_mhz: float
    #: the PS7 PLL that FCLK_CLK0 is divided from (MHz)
    io_pll_mhz: float

    def check_clock(self, clock_mhz: float) -> None:
        """Raise ``ValueError`` unless the PS can give the fabric ``clock_mhz``."""
        lo, hi = self.clock_range
        if not lo <= clock_mhz <= hi:
            raise ValueError(f"--clock-mhz {clock_mhz:g}: the {self.name}'s fabric clock takes "
                             f"{lo:g}..{hi:g} MHz")


#: The PS7 derives FCLK_CLK0 from its IO PLL (1,000 MHz) by two dividers; 250 MHz is the
#: fabric clock's limit (UG585), 100 MHz a safe first build, 200 MHz the target
#: (docs/PERFORMANCE.md).
BOARDS = {"pynq-z2": Board("pynq-z2", "xc7z020clg400-1", "pynq-z2", HERE / "pynq_z2",
                           "xc7z020", (10.0, 250.0), 100.0, 1000.0)}


_PORT = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+?)__(\w+);", re.M)


def _ports(core_verilog: str) -> list[tuple[str, str, str, int]]:
    """``(bus, signal, direction, width)`` of every bus port (``<bus>__<signal>``) of module
    ``dwsep_top`` in its generated Verilog; ``clk``, ``rst`` and ``irq`` are wired by name."""
    start = core_verilog.index("module dwsep_top(")
    body = core_verilog[start:core_verilog.index("endmodule", start)]
    ports = [(bus, sig, direction, int(msb) + 1 if msb else 1)
             for direction, msb, bus, sig in _PORT.findall(body)]
    if not ports:
        raise ValueError("no <bus>__<signal> ports in module dwsep_top")
    return ports


def buses(core_verilog: str) -> dict[str, str]:
    """Each AXI bus of ``dwsep_top``: ``{name: "slave" | "master"}``, in port order. A bus
    whose ``arvalid`` is an input is a subordinate (register) port."""
    found = {}
    for bus, sig, direction, _ in _ports(core_verilog):
        if sig == "arvalid":
            found[bus] = "slave" if direction == "input" else "master"
    return found


def _bus_parameters(bus: str, signals: dict[str, int], slave: bool) -> str:
    """``X_INTERFACE_PARAMETER`` of one bus: protocol, widths, burst limit."""
    data = signals.get("rdata", signals.get("wdata"))
    if "arlen" not in signals:
        addr = REG_ADDR_BITS if slave else signals["araddr"]
        return f"PROTOCOL AXI4LITE, DATA_WIDTH {data}, ADDR_WIDTH {addr}"
    text = f"PROTOCOL AXI4, DATA_WIDTH {data}, ADDR_WIDTH {signals['araddr']}"
    if "arid" in signals:
        text += f", ID_WIDTH {signals['arid']}"
    return text + ", MAX_BURST_LENGTH 16"


def _range(width: int) -> str:
    return f"[{width - 1}:0] " if width > 1 else ""


def shell_verilog(core_verilog: str, config_name: str) -> str:
    """Verilog of module :data:`SHELL` wrapping ``dwsep_top`` (given as its generated
    Verilog) for Vivado. AXI4-Lite subordinate ports get a :data:`REG_ADDR_BITS`-bit
    address."""
    ports = _ports(core_verilog)
    kinds = buses(core_verilog)
    signals: dict[str, dict[str, int]] = {bus: {} for bus in kinds}
    for bus, sig, _, width in ports:
        signals.setdefault(bus, {})[sig] = width
    params = {bus: _bus_parameters(bus, signals[bus], kind == "slave")
              for bus, kind in kinds.items()}
    widened = {(bus, sig) for bus, kind in kinds.items() if kind == "slave"
               and "arlen" not in signals[bus] for sig in ("awaddr", "araddr")}
    decl = [
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)',
        '  (* X_INTERFACE_PARAMETER = "XIL_INTERFACENAME aclk, ASSOCIATED_BUSIF '
        f'{":".join(kinds)}, ASSOCIATED_RESET aresetn" *)',
        "  input wire aclk,",
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)',
        '  (* X_INTERFACE_PARAMETER = "XIL_INTERFACENAME aresetn, POLARITY ACTIVE_LOW" *)',
        "  input wire aresetn,",
        '  (* X_INTERFACE_INFO = "xilinx.com:signal:interrupt:1.0 irq INTERRUPT" *)',
        '  (* X_INTERFACE_PARAMETER = "XIL_INTERFACENAME irq, SENSITIVITY LEVEL_HIGH" *)',
        "  output wire irq,",
    ]
    conn = ["    .clk(aclk),", "    .rst(~aresetn),", "    .irq(irq),"]
    seen = set()
    for bus, sig, direction, width in ports:
        outer = REG_ADDR_BITS if (bus, sig) in widened else width
        decl.append(f'  (* X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 {bus} '
                    f'{sig.upper()}" *)')
        if bus not in seen:
            seen.add(bus)
            decl.append(f'  (* X_INTERFACE_PARAMETER = "XIL_INTERFACENAME {bus}, '
                        f'{params[bus]}" *)')
        decl.append(f"  {direction} wire {_range(outer)}{bus}_{sig},")
        inner = f"{bus}_{sig}[{width - 1}:0]" if outer != width else f"{bus}_{sig}"
        conn.append(f"    .{bus}__{sig}({inner}),")
    decl[-1] = decl[-1].rstrip(",")
    conn[-1] = conn[-1].rstrip(",")
    return "\n".join([
        f"// Generated by dwsep build for config '{config_name}'; do not edit.",
        "// Vivado shell of dwsep_top: AXI port names, active-low reset, interface attributes.",
        "`default_nettype none",
        f"module {SHELL} (",
        *decl,
        ");",
        "  dwsep_top core (",
        *conn,
        "  );",
        "endmodule",
        "`default_nettype wire",
        "",
    ])


@dataclasses.dataclass(frozen=True)
class _Output:
    """One file ``dwsep build`` writes, and what it is."""
    name: str
    what: str


def plan(board: Board, check: bool) -> list[_Output]:
    """The files :func:`write` writes into the output folder, in order."""
    files = [_Output("dwsep_top.v", "the accelerator's Verilog"),
             _Output(f"{SHELL}.v", "its Vivado shell (AXI interface names, active-low reset)"),
             _Output("settings.tcl",
                     "config, fabric clock, AXI ports, block design (sourced by build.tcl)")]
    files += [_Output(p.name, "Vivado script, copied") for p in sorted(board.scripts.glob("*.tcl"))]
    if check:
        files += [_Output("lint.txt", "Verilator lint of shell + accelerator"),
                  _Output("resources.txt", f"Yosys synth_xilinx resource report ({board.part})")]
    return files


def write(board: Board, config_name: str, clock_mhz: float, out: Path) -> list[Path]:
    """Write the accelerator's Verilog, its shell, ``settings.tcl`` and the board's Vivado
    scripts into ``out``; return their paths."""
    from dwsep.sim.rtl import TOPLEVEL, generate_verilog

    cfg = get_config(config_name)
    out.mkdir(parents=True, exist_ok=True)
    core = out / f"{TOPLEVEL}.v"
    verilog = generate_verilog(cfg)
    core.write_text(verilog)
    shell = out / f"{SHELL}.v"
    shell.write_text(shell_verilog(verilog, cfg.name))
    settings = out / "settings.tcl"
    settings.write_text(settings_tcl(board, cfg.name, clock_mhz, buses(verilog)))
    scripts = []
    for tcl in sorted(board.scripts.glob("*.tcl")):
        scripts.append(out / tcl.name)
        shutil.copyfile(tcl, scripts[-1])
    return [core, shell, settings, *scripts]


def settings_tcl(board: Board, config_name: str, clock_mhz: float,
                 kinds: dict[str, str]) -> str:
    """Text of ``settings.tcl``: the variables build.tcl takes from ``dwsep build``, for the
    accelerator whose AXI buses are ``kinds`` (:func:`buses`). Its buses must be
    :data:`REG_BUS` and the managers of :data:`HP_ORDER`: the block design has no place for
    others."""
    slaves = [b for b, k in kinds.items() if k == "slave"]
    masters = [b for b, k in kinds.items() if k == "master"]
    if slaves != [REG_BUS]:
        raise ValueError(f"the accelerator's AXI subordinates {slaves} are not the one "
                         f"register bus {REG_BUS!r}")
    if sorted(masters) != sorted(HP_ORDER):
        raise ValueError(f"the accelerator's AXI managers {masters} are not the HP ports' "
                         f"{list(HP_ORDER)}")
    variables = [
        ("config", config_name), ("part", board.part), ("fclk_mhz", f"{clock_mhz:g}"),
        ("slaves", f"{{{' '.join(slaves)}}}"), ("masters", f"{{{' '.join(HP_ORDER)}}}"),
        ("bd_name", BLOCK_DESIGN), ("ps_cell", PS_CELL), ("ps_vlnv", PS_VLNV),
        ("cell", ACCELERATOR_CELL), ("reg_block", REG_BLOCK), ("reg_base", f"{REG_BASE:#010x}"),
        ("reg_range", f"{REG_RANGE:#010x}"), ("intc_cell", INTC_CELL),
        ("intc_vlnv", INTC_VLNV), ("intc_bus", INTC_BUS),
        ("intc_base", f"{INTC_BASE:#010x}"), ("intc_range", f"{INTC_RANGE:#010x}"),
    ]
    return (f"# Written by dwsep build for board {board.name}; do not edit (rerun dwsep build).\n"
            + "".join(f"set dwsep_{name} {value}\n" for name, value in variables))


def lint(out: Path) -> str:
    """Verilator ``--lint-only -Wall`` of the shell over the accelerator in ``out``: its
    warnings (empty when clean); raises on an error."""
    from dwsep.sim.rtl import TOPLEVEL
    from dwsep.sim.verilator import tool_environment

    result = subprocess.run(
        ["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", SHELL,
         f"{SHELL}.v", f"{TOPLEVEL}.v"], cwd=out, capture_output=True, text=True,
        env=tool_environment(), timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"Verilator lint of {out / (SHELL + '.v')} failed:\n"
                           f"{result.stderr.strip()}")
    return result.stderr


def lint_summary(warnings: str) -> str:
    """One line: no errors, and the warnings by kind (Amaranth's Verilog has many width and
    unused-signal warnings: they are its style, not faults)."""
    kinds: dict[str, int] = {}
    for kind in re.findall(r"^%Warning-(\w+)", warnings, re.M):
        kinds[kind] = kinds.get(kind, 0) + 1
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"Verilator lint: no errors, {sum(kinds.values())} warning(s)" + (
        f" ({listed})" if listed else "")


def vivado_command(out: Path, jobs: int = 2) -> str:
    return f"vivado -mode batch -source {out / 'build.tcl'} -tclargs {jobs}"


def build_command(args) -> None:
    """Run ``dwsep build`` for the parsed arguments ``args`` (see :mod:`dwsep.host.cli`)."""
    board = BOARDS[args.board]
    config_name = get_config(args.config or board.config).name
    clock = board.default_clock_mhz if args.clock_mhz is None else args.clock_mhz
    board.check_clock(clock)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {args.jobs}")
    out = Path(f"bitstreams/{board.name}") if args.out is None else args.out
    files = plan(board, args.check)
    if args.dry_run:
        print(f"dwsep build --dry-run: would write into {out}/ (board {board.name}, part "
              f"{board.part}, config {config_name!r}, fabric clock {clock:g} MHz):")
        for f in files:
            print(f"  {f.name:22} {f.what}")
        print(f"then: {vivado_command(out, args.jobs)}")
        return
    print(f"dwsep build: generating the '{config_name}' accelerator for {board.name} "
          f"(a minute for pynq-z2)...", file=sys.stderr)
    for path in write(board, config_name, clock, out):
        print(f"wrote {path}")
    if args.check:
        from .synth import PARTS, format_report, run_yosys
        from .tools import Progress

        warnings = lint(out)
        (out / "lint.txt").write_text(f"{lint_summary(warnings)}\n\n{warnings}")
        print(f"wrote {out / 'lint.txt'} ({lint_summary(warnings)})")
        part = PARTS[board.synth_part]
        syn = run_yosys(get_config(config_name), part, progress=Progress())
        report = format_report(get_config(config_name), part, syn)
        (out / "resources.txt").write_text(report)
        verdict = re.search(r"^VERDICT: .*$", report, re.M)
        print(f"wrote {out / 'resources.txt'} ({verdict[0] if verdict else 'no verdict'})")
    print(f"then, where Vivado (2020.2 or later) is installed:\n"
          f"  {vivado_command(out, args.jobs)}\n"
          f"giving {out / 'dwsep.bit'} and {out / 'dwsep.hwh'} (copy both to the board)")
