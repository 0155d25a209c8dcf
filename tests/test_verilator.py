"""``sim/verilator.py``: where builds go, that a build says what it is doing, that builds
and runs leave the process environment alone, and that a stuck simulator is stopped."""

from __future__ import annotations

import os
import sys
import time

import pytest

from dwsep.sim.verilator import SimulationFailed, _runner, build_design, build_root

COUNTER = """
module counter(input clk, input rst, output reg [7:0] count);
  always @(posedge clk) count <= rst ? 8'd0 : count + 8'd1;
endmodule
"""


def test_build_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DWSEP_BUILD_DIR", str(tmp_path / "mine"))
    assert build_root() == tmp_path / "mine"
    monkeypatch.delenv("DWSEP_BUILD_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        assert build_root() == tmp_path / "cache" / "dwsep" / "build"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert build_root() == tmp_path / "home" / ".cache" / "dwsep" / "build"


@pytest.mark.verilator
def test_build_announces_itself_once(monkeypatch, tmp_path, capfd):
    """A build prints what it builds, where and how long to expect (the last build of the
    design under another key, if any), then its duration; the same design again, from
    another working directory, is found built and says nothing."""
    monkeypatch.setenv("DWSEP_BUILD_DIR", str(tmp_path / "builds"))
    earlier = tmp_path / "builds" / "counter-0123456789ab"  # an older version's build
    earlier.mkdir(parents=True)
    (earlier / "BUILD_OK").write_text("42.00")
    monkeypatch.chdir(tmp_path)
    design = build_design(COUNTER, "counter", tag="counter")
    err = capfd.readouterr().err
    assert (f"dwsep: building the Verilator simulation of counter (counter) in "
            f"{design.build_dir} once: the last build of this design took 42 s") in err
    assert "dwsep: built in " in err
    assert design.build_dir.parent == tmp_path / "builds" and design.build_dir != earlier
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = build_design(COUNTER, "counter", tag="counter")
    assert again.build_dir == design.build_dir and "dwsep:" not in capfd.readouterr().err


def test_first_build_estimate(monkeypatch, tmp_path, capfd):
    """Without an earlier build of the design the announcement gives the general range."""
    from dwsep.sim.verilator import _BuildProgress

    progress = _BuildProgress("counter", "counter", tmp_path / "counter-0123")
    progress.close(ok=False)
    assert capfd.readouterr().err == (
        f"dwsep: building the Verilator simulation of counter (counter) in "
        f"{tmp_path / 'counter-0123'} once: a first build takes one to several minutes\n")


class _ReadOnlyEnviron(dict):
    """``os.environ`` for a test: any change fails it."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("os.environ changed during a Verilator build or run")

    __setitem__ = __delitem__ = clear = update = pop = popitem = setdefault = _refuse


@pytest.mark.verilator
def test_build_and_run_leave_os_environ_alone(monkeypatch, tmp_path):
    """An RTL run goes on in a background thread while the driver's thread runs, so neither
    a build nor a run may change the process environment (the runner gets its own). The
    run's second bench checks the top-level bench's AXI-Lite transfer limit."""
    monkeypatch.setenv("DWSEP_BUILD_DIR", str(tmp_path / "builds"))
    environ = os.environ
    os.environ = _ReadOnlyEnviron(environ)  # noqa: B003 (pytest writes it between phases)
    try:
        design = build_design(COUNTER, "counter", tag="counter")
        design.run("bench_counter", test_dir=tmp_path)
    finally:
        os.environ = environ  # noqa: B003


def test_a_stuck_simulator_is_stopped(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(SimulationFailed, match=r"^sleep did not finish in 0.5 s \(in "):
        _runner(0.5)._execute_cmds([["sleep", "30"]], tmp_path)
    assert time.monotonic() - t0 < 10
