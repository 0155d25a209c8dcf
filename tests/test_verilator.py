"""``sim/verilator.py``: where builds go, and that a build says what it is doing."""

from __future__ import annotations

import sys

import pytest

from dwsep.sim.verilator import build_design, build_root

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
    """A build prints what it builds, where and how long to expect, then its duration; the
    same design again is found built and says nothing; another working directory finds it
    too."""
    monkeypatch.setenv("DWSEP_BUILD_DIR", str(tmp_path / "builds"))
    monkeypatch.chdir(tmp_path)
    design = build_design(COUNTER, "counter", tag="counter")
    err = capfd.readouterr().err
    assert (f"dwsep: building the Verilator simulation of counter (counter) in "
            f"{design.build_dir} once: a first build takes one to several minutes") in err
    assert "dwsep: built in " in err
    assert design.build_dir.parent == tmp_path / "builds"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = build_design(COUNTER, "counter", tag="counter")
    assert again.build_dir == design.build_dir and "dwsep:" not in capfd.readouterr().err
    other = build_design(COUNTER.replace("8'd1", "8'd2"), "counter", tag="counter")
    err = capfd.readouterr().err
    assert other.build_dir != design.build_dir
    assert f"the last build of this design took {design.build_seconds:.0f} s" in err
