"""Sources for the PYNQ-Z2 Vivado build: the accelerator's Verilog and a Vivado-facing shell.

    python bitstreams/build_pynq_z2.py [--config pynq-z2] [--out bitstreams/pynq_z2/out]

writes ``dwsep_top.v`` (:func:`dwsep.sim.rtl.generate_verilog`), ``dwsep_accelerator.v``
and ``buses.tcl`` into the output folder and prints the Vivado command that turns them into
``dwsep.bit`` and ``dwsep.hwh`` (bitstreams/pynq_z2/build.tcl).

The shell exists because Vivado's IP packager infers AXI interfaces from
``<bus>_<signal>`` port names and ``X_INTERFACE_*`` attributes, while Amaranth names ports
``s_axil__awaddr`` and resets active high. It renames the ports, inverts ``aresetn`` into
``rst``, widens the register address to :data:`REG_ADDR_BITS` and declares the clock, reset,
every AXI bus and the level interrupt.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dwsep.hw.config import AcceleratorConfig, get_config

__all__ = ["SHELL", "REG_ADDR_BITS", "VLNV", "buses", "shell_verilog", "write_sources",
           "vivado_command", "main"]

SHELL = "dwsep_accelerator"
#: Register window seen by the PS: 64 KiB, Vivado's usual AXI-Lite segment (the accelerator
#: decodes the low address bits; the rest alias).
REG_ADDR_BITS = 16
#: Must equal ``dwsep.host.backends.pynq.VLNV``: the PYNQ driver binds to it.
VLNV = "dwsep.org:dwsep:accelerator:1.0"
HERE = Path(__file__).resolve().parent
BUILD_TCL = HERE / "pynq_z2" / "build.tcl"



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
        f"// Generated by bitstreams/build_pynq_z2.py for config '{config_name}'; do not edit.",
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


def write_sources(config: AcceleratorConfig | str, out: Path) -> list[Path]:
    """Write ``dwsep_top.v``, the shell and ``buses.tcl`` (the AXI subordinate and manager
    ports, for build.tcl) into ``out``; return their paths."""
    from dwsep.sim.rtl import TOPLEVEL, generate_verilog

    cfg = get_config(config)
    out.mkdir(parents=True, exist_ok=True)
    core = out / f"{TOPLEVEL}.v"
    verilog = generate_verilog(cfg)
    core.write_text(verilog)
    shell = out / f"{SHELL}.v"
    shell.write_text(shell_verilog(verilog, cfg.name))
    kinds = buses(verilog)
    bus_tcl = out / "buses.tcl"
    bus_tcl.write_text(
        f"# Written by bitstreams/build_pynq_z2.py for config '{cfg.name}'.\n"
        f"set dwsep_slaves {{{' '.join(b for b, k in kinds.items() if k == 'slave')}}}\n"
        f"set dwsep_masters {{{' '.join(b for b, k in kinds.items() if k == 'master')}}}\n")
    (out / "config.txt").write_text(f"{cfg.name}\n")
    return [core, shell, bus_tcl]


def vivado_command(out: Path, jobs: int = 2) -> str:
    return (f"vivado -mode batch -source {BUILD_TCL} -tclargs {out.resolve()} {jobs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="pynq-z2", help="named config (default pynq-z2)")
    parser.add_argument("--out", type=Path, default=HERE / "pynq_z2" / "out",
                        help="output folder (default bitstreams/pynq_z2/out)")
    parser.add_argument("--jobs", type=int, default=2, help="Vivado parallel jobs")
    args = parser.parse_args(argv)
    for path in write_sources(args.config, args.out):
        print(f"wrote {path}")
    print("then, with Vivado (2020.2 or later) on the PATH:")
    print(f"  {vivado_command(args.out, args.jobs)}")
    print(f"giving {args.out.resolve() / 'dwsep.bit'} and dwsep.hwh beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
