"""dwsep.bitstreams: Yosys report parsing and verdict, the committed reports, the ECP5 report,
the Vivado shell and sources, TCL syntax, the block design and its simulated hardware handoff.

Fast tests only; the real synthesis runs are behind ``-m slow`` (tests/test_synth_cli.py has
the command line).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dwsep.bitstreams import build, hwh, synth
from dwsep.bitstreams import fmax_ecp5 as fmax
from dwsep.hw.config import get_config
from dwsep.hw.layout import REGISTERS

BITSTREAMS = Path(__file__).resolve().parent.parent / "bitstreams"
TCL_FILES = sorted(BITSTREAMS.rglob("*.tcl"))

# Excerpt of `stat -json -tech xilinx` from Yosys 0.70 on config 'tiny' (wire counts and some
# modules dropped). Its "design" section leaves FDRE, CARRY4, MUXF7 and RAM32M out of the
# sums, which is why the parser ignores it.
STAT_EXCERPT = r"""
{
   "creator": "Yosys 0.70 (git sha1 28ba3cb92, Release)",
   "invocation": "stat -json -tech xilinx ",
   "modules": {
      "\\dwsep_top": {
         "num_cells": 932,
         "num_cells_by_type": {
            "DSP48E1": 12, "INV": 48, "LUT1": 2, "LUT2": 147, "LUT3": 36, "LUT4": 19,
            "LUT5": 88, "LUT6": 178, "CARRY4": 50, "FDRE": 1251, "MUXF7": 33, "MUXF8": 14,
            "dwsep_top.dw_array": 1, "dwsep_top.engine": 1, "dwsep_top.writer": 1
         }
      },
      "\\dwsep_top.dw_array": {
         "num_cells_by_type": {
            "DSP48E1": 8, "LUT2": 1, "LUT3": 1, "LUT4": 1, "RAMB36E1": 4, "FDRE": 22
         }
      },
      "\\dwsep_top.engine": {
         "num_cells_by_type": {
            "DSP48E1": 64, "INV": 13, "LUT2": 425, "LUT3": 265, "LUT4": 4, "LUT5": 8,
            "LUT6": 12, "RAMB18E1": 15, "CARRY4": 195, "FDRE": 813, "MUXF7": 3, "MUXF8": 1,
            "RAM64M": 22
         }
      },
      "\\dwsep_top.writer": {
         "num_cells_by_type": {
            "INV": 32, "LUT1": 53, "LUT2": 8, "LUT3": 9, "LUT4": 14, "LUT5": 6, "LUT6": 85,
            "CARRY4": 24, "FDRE": 173, "MUXF7": 73, "MUXF8": 2,
            "dwsep_top.writer.lengths": 1
         }
      },
      "\\dwsep_top.writer.lengths": {
         "num_cells_by_type": {
            "LUT3": 1, "LUT4": 1, "LUT5": 5, "LUT6": 2, "CARRY4": 1, "FDRE": 7, "RAM32M": 2,
            "SRLC32E": 3
         }
      }
   },
   "design": {
      "num_cells_by_type": {"DSP48E1": 84, "FDRE": 1251}
   }
}
"""


def _syn(stat: str = STAT_EXCERPT):
    return synth.Synthesis(synth.parse_stat(stat), stat, "Yosys 0.70", "read_rtlil x\n",
                           12.0, 3.0)


def test_parse_stat_strips_backslash_and_keeps_local_counts():
    modules = synth.parse_stat(STAT_EXCERPT)
    assert sorted(modules) == ["dwsep_top", "dwsep_top.dw_array", "dwsep_top.engine",
                               "dwsep_top.writer", "dwsep_top.writer.lengths"]
    assert modules["dwsep_top"]["FDRE"] == 1251
    assert modules["dwsep_top.writer"]["dwsep_top.writer.lengths"] == 1


def test_module_resources_counts_lutram_as_luts():
    res = synth.module_resources(synth.parse_stat(STAT_EXCERPT)["dwsep_top.writer.lengths"])
    # 9 logic LUTs; RAM32M = 4 LUTs each, SRLC32E = 1 LUT each.
    assert (res.logic_luts, res.lutram_luts, res.luts) == (9, 2 * 4 + 3, 20)
    assert (res.ffs, res.dsps, res.ramb36, res.ramb18) == (7, 0, 0, 0)


def test_hierarchy_totals_sum_every_instance():
    stat = json.loads(STAT_EXCERPT)
    stat["modules"]["\\dwsep_top"]["num_cells_by_type"]["dwsep_top.dw_array"] = 3
    totals = synth.hierarchy_totals(synth.parse_stat(json.dumps(stat)))
    top = totals["dwsep_top"]
    # Hand sums of the excerpt, with dw_array instantiated three times.
    assert top.ffs == 1251 + 3 * 22 + 813 + 173 + 7
    assert top.dsps == 12 + 3 * 8 + 64
    assert top.ramb36 == 3 * 4 and top.ramb18 == 15 and top.bram36 == 12 + 7.5
    assert top.logic_luts == (48 + 2 + 147 + 36 + 19 + 88 + 178) + 3 * 3 + \
        (13 + 425 + 265 + 4 + 8 + 12) + (32 + 53 + 8 + 9 + 14 + 6 + 85) + 9
    assert top.lutram_luts == 22 * 4 + 2 * 4 + 3
    assert totals["dwsep_top.writer"].ffs == 173 + 7


def test_hierarchy_totals_rejects_missing_top():
    with pytest.raises(ValueError, match="top module 'dwsep_top' not in the Yosys statistics"):
        synth.hierarchy_totals({"other": {"FDRE": 1}})


@pytest.mark.parametrize("width, depth, expected", [
    (64, 8192, 16),      # line buffer of 'tiny': 8192 x 64 = 16 x (8K x 4)
    (2048, 512, 28.5),   # PW weights of 'pynq-z2': 57 RAMB18 (512 x 36)
    (72, 512, 1),        # one RAMB36 in 512 x 72
    (36, 512, 0.5),      # one RAMB18
    (1, 1, 0.5),
    (128, 16384, 60),    # line buffer of 'pynq-z2': 4 x 15 tiles of 4K x 9 (parity as data)
])
def test_bram36_estimate(width, depth, expected):
    assert synth.bram36_estimate(width, depth) == expected


def test_report_fits_and_lists_modules():
    report = synth.format_report(get_config("tiny"), synth.PARTS["xc7z020"], _syn())
    assert "VERDICT: FITS in xc7z020" in report
    assert re.search(r"^DSP\s+84\s+220\s+38%$", report, re.M)
    assert re.search(r"^writer\s+227\s+11\s+180\s+0\s+0\s+0  AXI write DMA", report, re.M)
    assert re.search(r"^total\s+", report, re.M)


def test_report_names_each_overflow_and_its_modules():
    small = synth.Part("toy", "xc7", luts=100_000, lutram=1_000, ffs=2_000, dsps=70, bram36=12)
    report = synth.format_report(get_config("tiny"), small, _syn())
    assert "VERDICT: DOES NOT FIT in toy" in report
    assert "DSP: 84 used > 70 available (120%); by module:" in report
    assert re.search(r"^    engine\s+64  DSP: P\*Q/2 \(two MACs each\)", report, re.M)
    assert re.search(r"^    dw_array\s+8 ", report, re.M)
    assert re.search(r"^    dwsep_top\s+12 ", report, re.M)
    assert "FF: 2,266 used > 2,000 available" in report
    assert "BRAM36:" not in report.split("resource")[0]  # 11.5 of 12
    assert "LUT:" not in report.split("resource")[0]


def test_report_bram_overflow_counts_halves():
    small = synth.Part("toy", "xc7", luts=100_000, lutram=1_000, ffs=9_000, dsps=999, bram36=11)
    report = synth.format_report(get_config("tiny"), small, _syn())
    assert "BRAM36: 11.5 used > 11 available" in report


def test_yosys_script_avoids_abc9():
    script = synth.yosys_script("d.il", "xc7")
    lines = script.splitlines()
    assert lines[0] == "read_rtlil d.il"
    assert not any("abc9" in line for line in lines)
    assert "abc -luts 2:2,3,6:5,10,20" in lines
    runs = [line for line in lines if line.startswith("synth_xilinx")]
    assert [r.split("-run ")[1] for r in runs] == [":map_luts", "finalize:"]
    assert all("-family xc7 -top dwsep_top -noiopad -noclkbuf" in r for r in runs)
    assert lines[-1].startswith("tee -q -o stat.json stat -json")
    with_netlist = synth.yosys_script("d.il", "xcup", netlist="n.json").splitlines()
    assert with_netlist[-1] == "write_json n.json" and "-family xcup" in with_netlist[1]


COMMITTED = [
    ("tiny", "tiny", []),
    ("pynq-z2", "pynq-z2", []),
    ("pynq-z2-p8q8", "pynq-z2", ["dw_lanes=8", "pw_rows=8", "pw_cols=8",
                                  "engine_weight_words=4096", "engine_requant_lanes=8"]),
]


@pytest.mark.parametrize("name, config, sets", COMMITTED)
def test_committed_report_follows_from_its_statistics(name, config, sets):
    report = (BITSTREAMS / "reports" / f"{name}.txt").read_text()
    stat = (BITSTREAMS / "reports" / f"{name}.stat.json").read_text()
    cfg = synth.override(get_config(config), sets)
    again = synth.format_report(cfg, synth.PARTS["xc7z020"], _syn(stat))
    # Up to the timing section (checked against the JSON below) and the config printout:
    # later config fields must not invalidate a measured report.
    assert re.split(r"\n(?:Timing estimate|Config: )", report)[0] == \
        re.split(r"\n(?:Timing estimate|Config: )", again)[0]


@pytest.mark.parametrize("name, config, sets", COMMITTED)
def test_committed_json_matches_its_report(name, config, sets):
    report = (BITSTREAMS / "reports" / f"{name}.txt").read_text()
    doc = json.loads((BITSTREAMS / "reports" / f"{name}.json").read_text())
    assert doc["config"] == synth.override(get_config(config), sets).name
    assert doc["overrides"] == sets
    assert re.search(rf"^DSP\s+{doc['dsp']:,}\s", report, re.M)
    assert re.search(rf"^FF\s+{doc['ff']:,}\s", report, re.M)
    assert f"VERDICT: {'FITS' if doc['fits'] else 'DOES NOT FIT'} in {doc['part']}" in report
    t = doc["timing"]
    assert (f"worst path: {t['lut_levels']} LUT levels, {t['carry4']} CARRY4 in series"
            in report)
    assert f"    from {t['start_module']}: {t['start']}\n    to   {t['end_module']}: " \
        f"{t['end']}\n" in report
    if "ecp5" in doc:
        e = doc["ecp5"]
        assert f"variant: {e['variant']}\n" in report
        assert f"Fmax {e['fmax_mhz']:.1f} MHz, {e['stage']}" in report
    stat = json.loads((BITSTREAMS / "reports" / f"{name}.stat.json").read_text())
    assert synth.parse_stat(json.dumps(stat)).keys() >= {"dwsep_top"}
    assert set(doc["modules"]) == {synth._short(m) for m in synth.parse_stat(json.dumps(stat))}


def test_override_applies_fields_and_renames():
    base = get_config("pynq-z2")
    assert synth.override(base, []) is base
    cfg = synth.override(base, ["dw_lanes=8", "pw_rows=8", "pw_cols=8",
                                "engine_weight_words=4096", "engine_requant_lanes=8"])
    assert (cfg.name, cfg.dw_lanes, cfg.pw_rows, cfg.pw_cols) == ("pynq-z2-custom", 8, 8, 8)
    assert cfg.lb_width == base.lb_width and cfg.mid_channels_max == base.mid_channels_max


@pytest.mark.parametrize("item", ["dw_lanes", "pw_cols=x", "pw_cols=-8", "=8"])
def test_override_rejects_malformed_assignments(item):
    with pytest.raises(ValueError, match=rf"^--set takes FIELD=N with N a non-negative "
                                         rf"integer, not '{item}'$"):
        synth.override(get_config("tiny"), [item])


@pytest.mark.parametrize("item", ["lanes=8", "name=3"])
def test_override_rejects_unknown_fields_and_lists_the_valid_ones(item):
    field = item.split("=")[0]
    with pytest.raises(ValueError, match=rf"^--set {item}: no config field '{field}'; "
                                         rf"fields: dw_lanes, pw_rows, pw_cols, k_max, "):
        synth.override(get_config("tiny"), [item])


def test_get_part():
    assert synth.get_part(None, "zcu104").name == "xczu7ev"
    assert synth.get_part(None, "tiny").name == "xc7z020"
    assert synth.get_part("xczu7ev", "tiny").dsps == 1728
    with pytest.raises(ValueError, match="^unknown part 'xc7a35t'; known parts: xc7z020, "
                                         "xczu7ev$"):
        synth.get_part("xc7a35t", "tiny")


def test_resources_dict_has_the_verdict_and_every_module():
    d = synth.resources_dict(synth.PARTS["xc7z020"], _syn())
    assert (d["part"], d["dsp"], d["fits"]) == ("xc7z020", 84, True)
    assert d["bram36"] == 4 + 15 / 2 and d["lutram"] == 22 * 4 + 2 * 4 + 3
    assert set(d["modules"]) == {"dwsep_top", "dw_array", "engine", "writer",
                                 "writer.lengths"}
    assert d["modules"]["writer"]["ff"] == 173 + 7
    assert d["modules"]["dwsep_top"]["dsp"] == 12  # the top module's own cells
    small = synth.Part("toy", "xc7", luts=100_000, lutram=1_000, ffs=2_000, dsps=70,
                       bram36=12)
    assert synth.resources_dict(small, _syn())["fits"] is False


def test_override_is_validated_by_the_config():
    from dwsep.hw.config import ConfigError
    with pytest.raises(ConfigError, match="pw_rows \\(16\\) must equal dw_lanes \\(8\\)"):
        synth.override(get_config("pynq-z2"), ["dw_lanes=8"])


# ---- Vivado sources -------------------------------------------------------------------------

def test_vlnv_matches_the_pynq_driver():
    from dwsep.host.backends.pynq import VLNV
    assert build.VLNV == VLNV
    tcl = (BITSTREAMS / "pynq_z2" / "build.tcl").read_text()
    vendor, library, name, version = VLNV.split(":")
    for var, value in [("ip_vendor", vendor), ("ip_library", library), ("ip_name", name),
                       ("ip_version", version)]:
        assert re.search(rf"^set {var} {re.escape(value)}$", tcl, re.M)


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory):
    out = tmp_path_factory.mktemp("pynq_z2_tiny")
    paths = build.write(build.BOARDS["pynq-z2"], "tiny", 142.5, out)
    return out, paths


def _settings(folder: Path) -> dict[str, str]:
    """The variables of ``folder/settings.tcl``, without their ``dwsep_`` prefix."""
    return dict(re.findall(r"^set dwsep_(\w+) (.*)$", (folder / "settings.tcl").read_text(),
                           re.M))


def test_write_tiny(tiny_sources):
    out, paths = tiny_sources
    assert [p.name for p in paths] == ["dwsep_top.v", "dwsep_accelerator.v", "settings.tcl",
                                       "build.tcl", "ps7_pynq_z2.tcl"]
    assert [f.name for f in build.plan(build.BOARDS["pynq-z2"], check=False)] == [
        p.name for p in paths]
    assert "module dwsep_top(" in paths[0].read_text()
    settings = (out / "settings.tcl").read_text()
    for line in ("set dwsep_config tiny", "set dwsep_part xc7z020clg400-1",
                 "set dwsep_fclk_mhz 142.5"):
        assert f"\n{line}\n" in settings
    # the block design's facts, as build.py declares them
    facts = _settings(out)
    assert {name: facts[name] for name in ("bd_name", "ps_cell", "ps_vlnv", "cell", "reg_block",
                                           "intc_cell", "intc_vlnv", "intc_bus")} == {
        "bd_name": build.BLOCK_DESIGN, "ps_cell": build.PS_CELL, "ps_vlnv": build.PS_VLNV,
        "cell": build.ACCELERATOR_CELL, "reg_block": build.REG_BLOCK,
        "intc_cell": build.INTC_CELL, "intc_vlnv": build.INTC_VLNV, "intc_bus": build.INTC_BUS}
    assert [int(facts[name], 16) for name in ("reg_base", "reg_range", "intc_base",
                                              "intc_range")] == [
        0x4000_0000, 64 * 1024, 0x4180_0000, 64 * 1024]
    assert build.REG_RANGE == 1 << build.REG_ADDR_BITS
    assert (out / "build.tcl").read_bytes() == (BITSTREAMS / "pynq_z2" / "build.tcl").read_bytes()
    assert build.vivado_command(out, 4) == f"vivado -mode batch -source {out / 'build.tcl'} " \
                                           "-tclargs 4"


def test_shell_connects_every_port_of_the_signature(tiny_sources):
    from amaranth.lib.wiring import In

    from dwsep.hw.top import Top
    _, (_, shell_path, *_) = tiny_sources
    shell = shell_path.read_text()
    top = Top(get_config("tiny"))
    top._MustUse__silence = True  # only the signature is needed; no elaboration
    for path, member, value in top.signature.flatten(top):
        flat = "_".join(path)
        direction = "input" if member.flow == In else "output"
        width = build.REG_ADDR_BITS if flat in ("s_axil_awaddr", "s_axil_araddr") \
            else len(value)
        rng = rf"\[{width - 1}:0\] " if width > 1 else ""
        assert re.search(rf"^  {direction} wire {rng}{flat},?$", shell, re.M), flat
        inner = rf"{flat}\[{len(value) - 1}:0\]" if width != len(value) else flat
        target = "__".join(path) if len(path) == 2 else flat
        assert re.search(rf"^    \.{target}\({inner}\),?$", shell, re.M), flat
    assert "    .rst(~aresetn)," in shell and "    .clk(aclk)," in shell
    assert 'XIL_INTERFACENAME m_axi, PROTOCOL AXI4, DATA_WIDTH 64, ADDR_WIDTH 32' in shell
    # settings.tcl lists the subordinate (In) and manager (Out) buses of the signature, the
    # managers in HP port order.
    kinds = {name: ("dwsep_slaves" if m.flow == In else "dwsep_masters")
             for name, m in top.signature.members.items() if m.is_signature}
    bus_tcl = (shell_path.parent / "settings.tcl").read_text()
    for var in ("dwsep_slaves", "dwsep_masters"):
        listed = re.search(rf"^set {var} \{{(.*)\}}$", bus_tcl, re.M).group(1).split()
        assert sorted(listed) == sorted(n for n, k in kinds.items() if k == var)
    assert re.search(r"^set dwsep_masters \{m_axi m_axi_res m_axi_pf\}$", bus_tcl, re.M)
    assert "XIL_INTERFACENAME s_axil, PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH 16" in shell


def test_shell_lints_with_verilator(tiny_sources):
    """``dwsep build --check``'s lint passes (Amaranth's Verilog has width and unused-signal
    warnings, no error); of the shell only the register address bits above the accelerator's
    decoder are unused."""
    out, (core, shell, *_) = tiny_sources
    warnings = build.lint(out)
    about_shell = [line for line in warnings.splitlines()
                   if line.startswith("%") and shell.name in line]
    assert len(about_shell) == 2, about_shell
    unused = f"[15:{REGISTERS.addr_width}]"  # the window is 64 KiB; the bank decodes less
    assert all("UNUSEDSIGNAL" in line and unused in line for line in about_shell), about_shell
    summary = build.lint_summary(warnings)
    assert summary.startswith("Verilator lint: no errors, ") and "UNUSEDSIGNAL" in summary


# ---- TCL ------------------------------------------------------------------------------------

# Splits a script into commands the way Tcl does (accumulate lines until `info complete`) and
# checks the body of every `proc` the same way.
_TCL_CHECK = r"""
proc check {text where} {
    set cmd ""
    set n 0
    foreach line [split $text "\n"] {
        incr n
        append cmd $line "\n"
        if {[info complete $cmd]} {
            set words [string trim $cmd]
            if {[string match "proc *" $words]} {
                if {[catch {llength $words} len] || $len != 4} {
                    puts "$where:$n: malformed proc"; exit 1
                }
                check [lindex $words 3] "$where:$n proc [lindex $words 1]"
            }
            set cmd ""
        }
    }
    if {[string trim $cmd] ne ""} { puts "$where: incomplete command at end"; exit 1 }
}
foreach f $argv {
    set fd [open $f]
    check [read $fd] $f
    close $fd
}
puts ok
"""


def test_tcl_files_exist():
    assert [p.relative_to(BITSTREAMS).as_posix() for p in TCL_FILES] == \
        ["pynq_z2/build.tcl", "pynq_z2/ps7_pynq_z2.tcl"]


def test_tcl_parses(tmp_path):
    checker = tmp_path / "check.tcl"
    checker.write_text(_TCL_CHECK)
    result = subprocess.run(["tclsh", str(checker), *map(str, TCL_FILES)],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_tcl_checker_catches_an_unbalanced_brace(tmp_path):
    checker = tmp_path / "check.tcl"
    checker.write_text(_TCL_CHECK)
    bad = tmp_path / "bad.tcl"
    bad.write_text("proc f {} {\n    if {1} {\n        puts x\n}\n")
    result = subprocess.run(["tclsh", str(checker), str(bad)], capture_output=True, text=True,
                            timeout=30)
    assert "incomplete command at end" in result.stdout


# Runs build.tcl with every Vivado command replaced by a recorder, so the Tcl logic (argument
# handling, procs, the order of the flow) runs for real. Block design cells, pins and address
# spaces stand for themselves by name (so the log shows what each connection connects),
# address segments are `segs(<interface pin>)`, other Vivado getters return a placeholder;
# get_property PROGRESS returns 100% so the flow goes on to the reports; it stops at the copy
# of the (missing) bitstream.
_TCL_DRY_RUN = r"""
set log [open [lindex $argv 0] w]
proc unknown {args} {
    global log
    puts $log $args
    switch -- [lindex $args 0] {
        get_property {
            switch -- [lindex $args 1] { PROGRESS { return 100% } SLACK { return 0.5 } }
        }
        ipx::get_memory_maps - ipx::get_address_blocks { return {} }
        make_wrapper { return /tmp/wrapper.v }
        create_bd_cell - get_bd_pins - get_bd_intf_pins - get_bd_addr_spaces {
            return [lindex $args end]
        }
        get_bd_addr_segs { return "segs([lindex $args end])" }
    }
    return stub
}
set script [lindex $argv 1]
set argv [lrange $argv 2 end]
set argc [llength $argv]
set rc [catch {source $script} msg]
puts $log "RESULT $rc $msg"
close $log
"""


def _dry_run(tmp_path: Path, folder: Path, *args: str) -> list[str]:
    """The Vivado commands ``folder/build.tcl`` runs under :data:`_TCL_DRY_RUN`, one per line,
    the last the script's ``RESULT``."""
    harness = tmp_path / "dry.tcl"
    harness.write_text(_TCL_DRY_RUN)
    log = tmp_path / "calls.log"
    subprocess.run(["tclsh", str(harness), str(log), str(folder / "build.tcl"), *args],
                   capture_output=True, text=True, timeout=30, check=True)
    return log.read_text().splitlines()


@pytest.fixture(scope="module")
def dry_run_calls(tiny_sources, tmp_path_factory):
    out, _ = tiny_sources
    return _dry_run(tmp_path_factory.mktemp("dry_run"), out, "3")


def _nets(calls: list[str], command: str) -> list[list[str]]:
    """The objects each ``command`` (``connect_bd_net``, ``connect_bd_intf_net``) connects."""
    return [c.split()[1:] for c in calls if c.split()[0] == command]


def _addresses(calls: list[str]) -> dict[str, tuple[int, int]]:
    """``{segment: (offset, range)}`` of the PS's ``assign_bd_address`` calls."""
    return {seg: (int(offset, 16), int(size, 16)) for offset, size, space, seg in re.findall(
        r"^assign_bd_address -offset (\S+) -range (\S+) -target_address_space (\S+) (\S+)$",
        "\n".join(calls), re.M)}


def test_build_tcl_dry_run(tiny_sources, dry_run_calls):
    out, _ = tiny_sources
    calls = dry_run_calls
    names = [c.split()[0] for c in calls]
    assert calls[-1].startswith("RESULT 1 error copying"), calls[-1]
    order = ["create_project", "ipx::package_project", "ipx::save_core", "close_project",
             "create_project", "update_ip_catalog", "create_bd_design", "validate_bd_design",
             "make_wrapper", "launch_runs", "wait_on_run", "open_run",
             "report_timing_summary"]
    pos = 0
    for name in order:
        pos = names.index(name, pos) + 1
    text = "\n".join(calls)
    assert "create_bd_cell -type ip -vlnv dwsep.org:dwsep:accelerator:1.0 dwsep" in text
    assert "-vendor dwsep.org -library dwsep" in text
    assert "launch_runs impl_1 -to_step write_bitstream -jobs 3" in text
    cells = {c.split()[-1] for c in calls if c.startswith("create_bd_cell")}
    bus_kinds = build.buses((out / "dwsep_top.v").read_text())
    n_masters = sum(1 for kind in bus_kinds.values() if kind == "master")
    assert n_masters == 3  # m_axi, m_axi_res, m_axi_pf: one HP port each
    assert cells == {"ps7", "dwsep", "axi_intc_0", "rst_fclk0", "axi_ctrl", "axi_mem0",
                     "axi_mem1", "axi_mem2"}
    pins = [c.split()[1] for c in calls if c.split()[0] in ("get_bd_pins", "get_bd_intf_pins")]
    assert {p.split("/")[0] for p in pins} == cells
    shell = (out / "dwsep_accelerator.v").read_text()
    for pin in {p.split("/")[1] for p in pins if p.startswith("dwsep/")}:
        assert re.search(rf"(wire {pin},|XIL_INTERFACENAME {pin},)", shell), pin
    n_buses = len(build.buses((out / "dwsep_top.v").read_text()))
    # GP0 -> axi_ctrl, axi_ctrl -> each subordinate and the interrupt controller, each
    # manager -> its interconnect -> HP
    assert sum(c.startswith("connect_bd_intf_net") for c in calls) == \
        1 + n_buses + 1 + n_masters
    for hp in (1, 2):
        assert f"get_bd_intf_pins ps7/S_AXI_HP{hp}" in text
        assert f"get_bd_addr_segs ps7/S_AXI_HP{hp}/HP{hp}_DDR_LOWOCM" in text
    assert re.search(r"set_property -dict \{.*CONFIG.PCW_USE_S_AXI_HP0 1 "
                     r"CONFIG.PCW_S_AXI_HP0_DATA_WIDTH 64 CONFIG.PCW_USE_S_AXI_HP1 1 "
                     r"CONFIG.PCW_S_AXI_HP1_DATA_WIDTH 64 CONFIG.PCW_USE_S_AXI_HP2 1 "
                     r"CONFIG.PCW_S_AXI_HP2_DATA_WIDTH 64", text)
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ 142.5" in text
    assert "create_project -force dwsep " + str(out / "vivado") + " -part xc7z020clg400-1" \
        in text


def test_build_tcl_interrupt_controller(tiny_sources, dry_run_calls):
    """dwsep/irq -> axi_intc_0/intr, axi_intc_0/irq -> ps7/IRQ_F2P; the controller on the
    last manager port of axi_ctrl, clocked and reset like the rest, at the address
    settings.tcl gives it."""
    out, _ = tiny_sources
    calls, facts = dry_run_calls, _settings(out)
    n_slaves = len(facts["slaves"].strip("{}").split())
    at = calls.index("create_bd_cell -type ip -vlnv xilinx.com:ip:axi_intc:4.1 axi_intc_0")
    assert calls[at + 1] == ("set_property -dict {CONFIG.C_IRQ_CONNECTION 1 "
                             "CONFIG.C_IRQ_IS_LEVEL 1} axi_intc_0")
    assert f"set_property -dict {{CONFIG.NUM_SI 1 CONFIG.NUM_MI {n_slaves + 1}}} axi_ctrl" \
        in calls
    assert [f"axi_ctrl/M{n_slaves:02d}_AXI", "axi_intc_0/s_axi"] in _nets(
        calls, "connect_bd_intf_net")
    nets = {net[0]: net[1:] for net in _nets(calls, "connect_bd_net")}
    assert nets["dwsep/irq"] == ["axi_intc_0/intr"]
    assert nets["axi_intc_0/irq"] == ["ps7/IRQ_F2P"]
    assert sum(net.count("ps7/IRQ_F2P") for net in nets.values()) == 1
    assert {"axi_intc_0/s_axi_aclk", f"axi_ctrl/M{n_slaves:02d}_ACLK"} <= set(
        nets["ps7/FCLK_CLK0"])
    assert {"axi_intc_0/s_axi_aresetn", f"axi_ctrl/M{n_slaves:02d}_ARESETN"} <= set(
        nets["rst_fclk0/peripheral_aresetn"])
    assert _addresses(calls) == {
        "segs(dwsep/s_axil)": (int(facts["reg_base"], 16), int(facts["reg_range"], 16)),
        "segs(axi_intc_0/s_axi)": (int(facts["intc_base"], 16), int(facts["intc_range"], 16))}
    assert "ps7/Data" in {c.split()[-2] for c in calls if c.startswith("assign_bd_address -off")}


def test_build_tcl_takes_the_block_design_from_settings(tmp_path, tiny_sources):
    """No cell name, VLNV or address of the block design is spelled in build.tcl: other
    values in settings.tcl give another design."""
    out, _ = tiny_sources
    folder = tmp_path / "other"
    shutil.copytree(out, folder)
    other = {"bd_name": "bd2", "ps_cell": "zynq", "ps_vlnv": "v:l:ps:9.9", "cell": "acc",
             "intc_cell": "intc", "intc_vlnv": "v:l:intc:9.9", "reg_base": "0x43c00000",
             "intc_base": "0x41200000", "intc_range": "0x00001000"}
    settings = (folder / "settings.tcl").read_text()
    for name, value in other.items():
        settings = re.sub(rf"^set dwsep_{name} .*$", f"set dwsep_{name} {value}", settings,
                          flags=re.M)
    (folder / "settings.tcl").write_text(settings)
    calls = _dry_run(tmp_path, folder)
    design = calls[calls.index("create_bd_design bd2"):calls.index("validate_bd_design")]
    cells = {c.split()[-1]: c.split()[-2] for c in design if c.startswith("create_bd_cell")}
    assert {cells["zynq"], cells["acc"], cells["intc"]} == {"v:l:ps:9.9", build.VLNV,
                                                            "v:l:intc:9.9"}
    assert not [c for c in design if re.search(r"\bps7\b|axi_intc_0|\bdwsep/", c)]
    assert _addresses(design) == {"segs(acc/s_axil)": (0x43C0_0000, build.REG_RANGE),
                                  "segs(intc/s_axi)": (0x4120_0000, 0x1000)}
    assert "make_wrapper -files stub -top" in calls
    assert "set_property top bd2_wrapper stub" in calls


def test_build_tcl_requires_the_sources(tmp_path):
    harness = tmp_path / "dry.tcl"
    harness.write_text(_TCL_DRY_RUN)
    log = tmp_path / "calls.log"
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(BITSTREAMS / "pynq_z2" / "build.tcl", alone / "build.tcl")
    result = subprocess.run(["tclsh", str(harness), str(log), str(alone / "build.tcl")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"missing {alone / 'dwsep_top.v'}: run dwsep build --out {alone} first" \
        in result.stderr


@pytest.mark.slow
def test_synthesis_tiny():
    cfg = get_config("tiny")
    syn = synth.run_yosys(cfg, synth.PARTS["xc7z020"], timeout=900)
    report = synth.format_report(cfg, synth.PARTS["xc7z020"], syn)
    assert re.search(r"^VERDICT: (FITS|DOES NOT FIT) in xc7z020$", report, re.M)
    assert syn.source.startswith("hw/*.py sha256 ")
    totals = synth.hierarchy_totals(syn.modules)
    # Two 1x1 MACs per DSP48E1, two per requantizer compute lane (25 x 31-bit product on
    # 25x18 slices), none for the DW array (Booth products in LUTs).
    assert totals["dwsep_top.datapath.engine"].dsps == cfg.pw_rows * cfg.pw_cols // 2
    assert totals["dwsep_top.datapath.engine_requant"].dsps == (
        2 * cfg.erq_lanes - cfg.engine_requant_lut_lanes)
    assert totals["dwsep_top.datapath.dw_array"].dsps == 0
    assert totals["dwsep_top.datapath.line_buffer"].bram36 >= synth.bram36_estimate(
        8 * cfg.dw_lanes, cfg.lb_depth)


# ---- Fmax proxy -----------------------------------------------------------------------------

# nextpnr-ecp5 log excerpt: the estimate after placement, then the routed result with its
# critical path (the format of nextpnr 0.7 and later).
PNR_EXCERPT = """\
Info: Device utilisation:
Info: \t              DP16KD:      57/    208    27%
Info: \t          MULT18X18D:     154/    156    98%
Info: \t          TRELLIS_FF:   13375/  83640    15%
Info: \t        TRELLIS_COMB:   22805/  83640    27%
Info: Max frequency for clock 'clk': 38.64 MHz (FAIL at 100.00 MHz)
Info: Routing complete.
Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source dwsep_top.pw_requant.prod3_DFF_Q.Q
Info:    routing  1.10  1.62 Net dwsep_top.pw_requant.prod3[3] (12,34) -> (13,35)
Info:      logic  0.24  1.86 Source dwsep_top.pw_requant.sum_LUT4_Z.F
Info:      setup  0.06 24.10 Setup dwsep_top.pw_requant.out_DFF_Q.DI
Info: 9.2 ns logic, 14.9 ns routing

Info: Max frequency for clock 'clk': 41.49 MHz (FAIL at 100.00 MHz)
"""


def test_parse_fmax_keeps_the_last_report_per_clock():
    assert fmax.parse_fmax(PNR_EXCERPT) == [("clk", 41.49, False, 100.0)]
    assert fmax.parse_fmax("Info: Max frequency for clock 'a': 120.5 MHz (PASS at 100.00 MHz)"
                           ) == [("a", 120.5, True, 100.0)]


def test_critical_path_ends_and_split():
    assert [line.split()[-1] for line in fmax.critical_path(PNR_EXCERPT)[:2]] == \
        ["dwsep_top.pw_requant.prod3_DFF_Q.Q", "dwsep_top.pw_requant.out_DFF_Q.DI"]
    assert fmax.critical_path(PNR_EXCERPT)[2].strip() == "9.2 ns logic, 14.9 ns routing"
    assert fmax.critical_path("Info: no report") == []


def _ecp5_result(log: str, stage: str = "after routing") -> fmax.Ecp5Result:
    found = fmax.parse_fmax(log)
    return fmax.Ecp5Result(
        config="tiny", variant="tiny as configured", fmax_mhz=found[0][1] if found else None,
        target_mhz=100, stage=stage, critical_path=fmax.critical_path(log),
        utilisation=fmax.utilisation(log), seed=1, synth_seconds=128, pnr_seconds=900)


def test_fmax_report():
    text = fmax.format_report(_ecp5_result(PNR_EXCERPT))
    assert "Fmax 41.5 MHz, after routing (FAIL at 100 MHz)" in text
    assert "variant: tiny as configured" in text
    assert "MULT18X18D:     154/    156    98%" in text
    assert text.count("Source dwsep_top.pw_requant.prod3_DFF_Q.Q") == 1
    assert "Yosys synth_ecp5: 128 s; nextpnr: 900 s" in text
    assert "no Fmax: nextpnr stopped" in fmax.format_report(_ecp5_result("Info: placing"))
    d = _ecp5_result(PNR_EXCERPT).to_dict()
    assert (d["fmax_mhz"], d["variant"], len(d["critical_path"])) == (41.49,
                                                                       "tiny as configured", 3)


def test_ecp5_capacity_check():
    # synth_ecp5 statistics of 'tiny' (descriptor v2): the multipliers overflow.
    cells = {"CCU2C": 6939, "DP16KD": 72, "LUT4": 20887, "MULT18X18D": 285,
             "TRELLIS_DPR16X4": 738, "TRELLIS_FF": 23100}
    assert fmax.over_capacity(cells) == {"MULT18X18D": (285, 156)}
    cells.update(MULT18X18D=0, LUT4=80_000)
    assert fmax.over_capacity(cells) == {"TRELLIS_COMB": (80_000 + 2 * 6939 + 2 * 738,
                                                          83_640)}


# ---- dwsep build ----------------------------------------------------------------------------

def test_build_dry_run_writes_nothing(tmp_path, monkeypatch, capsys):
    from dwsep.host.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["build", "--dry-run", "--clock-mhz", "200"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("dwsep build --dry-run: would write into bitstreams/pynq-z2/ (board "
                      "pynq-z2, part xc7z020clg400-1, config 'pynq-z2', fabric clock 200 MHz):")
    assert [line.split()[0] for line in out[1:-1]] == [
        "dwsep_top.v", "dwsep_accelerator.v", "settings.tcl", "build.tcl", "ps7_pynq_z2.tcl"]
    assert out[-1] == "then: vivado -mode batch -source bitstreams/pynq-z2/build.tcl -tclargs 2"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--clock-mhz", "300"], "--clock-mhz 300: the pynq-z2's fabric clock takes 10..250 MHz"),
    (["--jobs", "0"], "--jobs must be at least 1, not 0"),
])
def test_build_errors(argv, message, tmp_path, capsys):
    from dwsep.host.cli import main

    assert main(["build", "--out", str(tmp_path / "o"), *argv]) == 2
    assert capsys.readouterr().err == f"dwsep: error: {message}\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_build_check_tiny(tmp_path, capsys):
    """``dwsep build --check``: lint and resource reports beside the scripts."""
    from dwsep.host.cli import main

    out = tmp_path / "overlay"
    assert main(["build", "--config", "tiny", "--check", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "lint.txt").read_text().startswith("Verilator lint: no errors, ")
    resources = (out / "resources.txt").read_text()
    verdict = re.search(r"^VERDICT: (FITS|DOES NOT FIT) in xc7z020$", resources, re.M)
    assert verdict and f"wrote {out / 'resources.txt'} ({verdict[0]})" in printed
    assert f"vivado -mode batch -source {out / 'build.tcl'} -tclargs 2" in printed


def test_settings_tcl_rejects_buses_the_block_design_lacks():
    kinds = {"s_axil": "slave", "s_dbg": "slave", **dict.fromkeys(build.HP_ORDER, "master")}
    with pytest.raises(ValueError, match=r"^the accelerator's AXI subordinates \['s_axil', "
                                         r"'s_dbg'\] are not the one register bus 's_axil'$"):
        build.settings_tcl(build.BOARDS["pynq-z2"], "tiny", 100, kinds)


# ---- simulated hardware handoff -------------------------------------------------------------

PYNQ_Z2 = build.BOARDS["pynq-z2"]


def _modules(root: ET.Element) -> dict[str, ET.Element]:
    return {m.get("INSTANCE"): m for m in root.iter("MODULE")}


def _parameters(module: ET.Element) -> dict[str, str]:
    return {p.get("NAME"): p.get("VALUE") for p in module.iter("PARAMETER")}


def _properties(element: ET.Element) -> dict[str, str]:
    return {p.get("NAME"): p.get("VALUE") for p in element.findall("PROPERTY")}


def test_hwh_agrees_with_build_tcl(tiny_sources, dry_run_calls):
    """The hwh's cells, VLNVs, GP0 windows, HP ports and interrupt path are those build.tcl
    creates from settings.tcl (the dry run's log)."""
    out, _ = tiny_sources
    facts, calls = _settings(out), dry_run_calls
    root = ET.fromstring(hwh.block_design_hwh(PYNQ_Z2, facts["config"],
                                              float(facts["fclk_mhz"])))
    assert root.tag == "EDKSYSTEM" and root.find("EXTERNALPORTS") is not None
    assert root.find("SYSTEMINFO").attrib == {"ARCH": "zynq", "DEVICE": "7z020",
                                              "NAME": facts["bd_name"], "PACKAGE": "clg400",
                                              "SPEEDGRADE": "-1"}
    assert f"create_bd_design {facts['bd_name']}" in calls
    modules = _modules(root)
    assert list(modules) == [facts["ps_cell"], facts["cell"], facts["intc_cell"]]
    created = {c.split()[-1]: c.split()[-2] for c in calls if c.startswith("create_bd_cell")}
    assert {name: m.get("VLNV") for name, m in modules.items()} == {
        name: created[name] for name in modules}
    assert created[facts["cell"]] == build.VLNV
    # the rest is what PYNQ does not read
    assert set(created) - set(modules) == {"rst_fclk0", "axi_ctrl", "axi_mem0", "axi_mem1",
                                           "axi_mem2"}

    # GP0: [base, high] of each subordinate, as assigned
    ps = modules[facts["ps_cell"]]
    gp0 = {f"segs({r.get('INSTANCE')}/{r.get('SLAVEBUSINTERFACE')})":
           (int(r.get("BASEVALUE"), 16), int(r.get("HIGHVALUE"), 16))
           for r in ps.iter("MEMRANGE") if r.get("MASTERBUSINTERFACE") == "M_AXI_GP0"}
    assert gp0 == {seg: (base, base + size - 1) for seg, (base, size) in _addresses(calls).items()}
    assert gp0 == {"segs(dwsep/s_axil)": (0x4000_0000, 0x4000_FFFF),
                   "segs(axi_intc_0/s_axi)": (0x4180_0000, 0x4180_FFFF)}
    assert [r.get("MEMTYPE") for r in ps.iter("MEMRANGE")] == ["REGISTER", "REGISTER"]
    reg = next(r for r in ps.iter("MEMRANGE") if r.get("INSTANCE") == facts["cell"])
    assert reg.get("ADDRESSBLOCK") == facts["reg_block"]

    # HP: each manager through its interconnect to its HP port, in HP_ORDER
    intf = _nets(calls, "connect_bd_intf_net")
    via = {a.split("/")[1]: b.split("/")[0] for a, b in intf
           if a.startswith(f"{facts['cell']}/") and b.startswith("axi_mem")}
    to_hp = {a.split("/")[0]: b.split("/")[1] for a, b in intf
             if a.startswith("axi_mem") and b.startswith(f"{facts['ps_cell']}/")}
    segments = {space.split("/")[1]: seg for space, seg in re.findall(
        r"^assign_bd_address -target_address_space (\S+) segs\((\S+)\)$", "\n".join(calls), re.M)}
    hp = [(r.get("MASTERBUSINTERFACE"), r.get("INSTANCE"), r.get("SLAVEBUSINTERFACE"),
           r.get("ADDRESSBLOCK"), r.get("MEMTYPE"))
          for r in modules[facts["cell"]].iter("MEMRANGE")]
    assert hp == [(bus, facts["ps_cell"], to_hp[via[bus]], segments[bus].split("/")[2],
                   "MEMORY") for bus in build.HP_ORDER]
    assert [h[2] for h in hp] == ["S_AXI_HP0", "S_AXI_HP1", "S_AXI_HP2"]

    # every MEMRANGE names a manager of its module and a subordinate of its target
    buses = {(name, b.get("NAME")): b.get("TYPE")
             for name, m in modules.items() for b in m.iter("BUSINTERFACE")}
    for module in modules.values():
        for r in module.iter("MEMRANGE"):
            assert buses[(module.get("INSTANCE"), r.get("MASTERBUSINTERFACE"))] == "MASTER"
            assert buses[(r.get("INSTANCE"), r.get("SLAVEBUSINTERFACE"))] == "SLAVE"

    # irq: the same nets, each listed on both ends, level high
    wires = {frozenset({f"{name}/{p.get('NAME')}", f"{c.get('INSTANCE')}/{c.get('PORT')}"})
             for name, m in modules.items() for p in m.iter("PORT") for c in p.iter("CONNECTION")}
    assert wires == {frozenset(net) for net in _nets(calls, "connect_bd_net")
                     if f"{facts['cell']}/irq" in net or f"{facts['intc_cell']}/irq" in net}
    assert wires == {frozenset({"dwsep/irq", "axi_intc_0/intr"}),
                     frozenset({"axi_intc_0/irq", "ps7/IRQ_F2P"})}
    ports = {(name, p.get("NAME")): (p.get("DIR"), p.get("SIGIS"), p.get("SENSITIVITY"))
             for name, m in modules.items() for p in m.iter("PORT")}
    assert ports == {("ps7", "IRQ_F2P"): ("I", "INTERRUPT", "LEVEL_HIGH"),
                     ("dwsep", "irq"): ("O", "INTERRUPT", "LEVEL_HIGH"),
                     ("axi_intc_0", "intr"): ("I", "INTERRUPT", "LEVEL_HIGH"),
                     ("axi_intc_0", "irq"): ("O", "INTERRUPT", "LEVEL_HIGH")}
    assert modules["axi_intc_0"].get("VLNV").split(":")[2] == "axi_intc"  # what PYNQ looks for
    assert _parameters(modules["axi_intc_0"]) == {"C_NUM_INTR_INPUTS": "1",
                                                  "C_IRQ_CONNECTION": "1", "C_IRQ_IS_LEVEL": "1"}


@pytest.mark.parametrize("clock, actual", [
    (100, "100.000000"),
    (200, "200.000000"),
    (142.5, "142.857143"),  # 1000/7: no product of two dividers is 7.0175
    (10, "10.000000"),
])
def test_hwh_fclk0_gives_the_clock(clock, actual):
    ps = _modules(ET.fromstring(hwh.block_design_hwh(PYNQ_Z2, "tiny", clock)))["ps7"]
    p = _parameters(ps)
    d0, d1 = int(p["PCW_FCLK0_PERIPHERAL_DIVISOR0"]), int(p["PCW_FCLK0_PERIPHERAL_DIVISOR1"])
    assert 1 <= d1 <= d0 <= 63
    assert p["PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ"] == actual == f"{1000 / (d0 * d1):.6f}"
    ratio = 1000 / clock
    assert all(abs(d0 * d1 - ratio) <= abs(a * b - ratio)
               for a in range(1, 64) for b in range(1, 64))
    assert p["PCW_FPGA0_PERIPHERAL_FREQMHZ"] == f"{clock:g}"  # what ps7_pynq_z2.tcl asks for
    assert (p["PCW_FPGA_FCLK0_ENABLE"], p["PCW_FCLK0_PERIPHERAL_CLKSRC"]) == ("1", "IO PLL")
    for i in (1, 2, 3):
        assert (p[f"PCW_FPGA_FCLK{i}_ENABLE"], p[f"PCW_FCLK{i}_PERIPHERAL_CLKSRC"],
                p[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0"],
                p[f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1"]) == ("0", "IO PLL", "1", "1")


def test_fclk_divisors():
    assert hwh.fclk_divisors(1000, 100) == (10, 1)
    assert hwh.fclk_divisors(1000, 10) == (50, 2)
    # 67 is prime: 66 and 68 are as close; the tie goes to the slower clock
    assert hwh.fclk_divisors(1000, 1000 / 67) == (34, 2)
    with pytest.raises(ValueError, match=r"^'clock_mhz' must be positive, not 0$"):
        hwh.fclk_divisors(1000, 0)


def test_hwh_register_map_is_the_layout():
    """Every register of ``hw.layout.REGISTERS`` with its offset and access, every field
    with its bits."""
    from dwsep.hw.layout import REGISTERS

    root = ET.fromstring(hwh.block_design_hwh(PYNQ_Z2, "pynq-z2", 100))
    (block,) = _modules(root)["dwsep"].iter("ADDRESSBLOCK")
    assert (block.get("INTERFACE"), block.get("NAME"), block.get("RANGE"),
            block.get("USAGE")) == ("s_axil", "reg0", "65536", "register")
    registers = {r.get("NAME"): r for r in block.iter("REGISTER")}
    assert list(registers) == [r.name for r in REGISTERS]
    for reg in REGISTERS:
        props = _properties(registers[reg.name])
        access = "read-only" if reg.access == "ro" else "read-write"
        assert (int(props["ADDRESS_OFFSET"], 16), props["SIZE"], props["ACCESS"],
                props["IS_ENABLED"], props["DESCRIPTION"]) == (reg.offset, "32", access,
                                                               "true", reg.doc)
        fields = {f.get("NAME"): _properties(f) for f in registers[reg.name].iter("FIELD")}
        assert {name: (int(f["BIT_OFFSET"]), int(f["BIT_WIDTH"]), f["ACCESS"])
                for name, f in fields.items()} == {
            f.name: (f.lsb, f.width, access) for f in reg.fields}, reg.name


def test_hwh_says_what_it_is():
    text = hwh.block_design_hwh(PYNQ_Z2, "tiny", 142.5)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n'
                           "<!-- Not written by Vivado: dwsep.bitstreams.hwh's stand-in for "
                           "dwsep.hwh (board pynq-z2, config 'tiny', fabric clock 142.5 MHz) "
                           "-->\n<EDKSYSTEM ")


@pytest.mark.parametrize("config, clock, message", [
    ("tiny", 300, "--clock-mhz 300: the pynq-z2's fabric clock takes 10..250 MHz"),
    ("nope", 100, "unknown accelerator config 'nope'; known configs: "),
])
def test_hwh_errors(config, clock, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        hwh.block_design_hwh(PYNQ_Z2, config, clock)
