"""The RTL bench's AXI protocol monitors (``sim/axi_monitor.sv``) fire: each rule broken on
purpose is counted under its number, legal handshakes are not (``bench_axi_monitor``); and
the whole accelerator's bench runs them on every channel (any violation fails a job:
``dwsep.sim.rtl.AXIProtocolViolation``)."""

from __future__ import annotations

import pytest

from dwsep.sim.ddr import AXI_MONITOR_SV, MONITOR_RULES, monitor_checks
from dwsep.sim.rtl import generate_bench_verilog
from dwsep.sim.verilator import build_design

pytestmark = pytest.mark.verilator

#: one hold check and one outstanding check (limit 4) feeding the counters
WRAPPER = """
module monitor_bench (
    input clk, input rst, input valid, input ready, input [7:0] payload,
    input req_a, input req_b, input resp_valid, input resp_done,
    output [31:0] violations, output [7:0] first);
    wire drop, change, limit, orphan;
    wire [7:0] first_check;
    wire [63:0] first_cycle;
    dwsep_hold_check #(.W(8)) hold (.clk(clk), .rst(rst), .valid(valid), .ready(ready),
        .payload(payload), .bad_drop(drop), .bad_change(change));
    dwsep_outstanding_check #(.LIMIT(4)) flight (.clk(clk), .rst(rst), .req_a(req_a),
        .req_b(req_b), .resp_valid(resp_valid), .resp_done(resp_done), .bad_limit(limit),
        .bad_orphan(orphan));
    dwsep_violations #(.N(4)) count (.clk(clk), .rst(rst), .bad({orphan, limit, change, drop}),
        .rule({8'd4, 8'd3, 8'd2, 8'd1}), .violations(violations), .first(first),
        .first_check(first_check), .first_cycle(first_cycle));
endmodule
"""


def test_each_rule_is_caught(tmp_path):
    design = build_design(WRAPPER, "monitor_bench", tag="axi-monitor",
                          extra_sources=(AXI_MONITOR_SV,))
    design.run("bench_axi_monitor", test_dir=tmp_path)


def test_the_bench_monitors_every_channel():
    """Every channel of the three managers and of the register port has its two hold checks,
    each port pair its outstanding and orphan checks, in the order of the counters' bits."""
    verilog = generate_bench_verilog("tiny")
    checks = monitor_checks()
    assert {rule for _, rule in checks} == set(MONITOR_RULES)
    channels = {what for what, rule in checks if rule == 1}
    assert channels == {f"{p} {c}" for p in ("m_axi", "m_axi_res", "m_axi_pf")
                        for c in ("AR", "R")} | {f"m_axi {c}" for c in ("AW", "W", "B")} | {
        f"s_axil {c}" for c in ("AW", "W", "B", "AR", "R")}
    assert verilog.count("dwsep_hold_check #(") == len(channels)
    assert verilog.count("dwsep_outstanding_check #(") == 6
    assert f"dwsep_violations #(.N({len(checks)}))" in verilog
