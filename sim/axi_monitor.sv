// AXI protocol monitors of the RTL bench (dwsep_bench, written by dwsep.sim.ddr), on every
// channel of the accelerator's three AXI4 managers and of its AXI4-Lite subordinate port.
// The DDR model (ddr_model.sv) checks the bursts themselves (INCR, 64-bit beats, at most 16
// beats, no 4 KiB crossing, WLAST on the last beat); these modules check the handshakes:
//
//   rule 1  VALID, once high, stays high until READY            (IHI 0022 A3.2.1)
//   rule 2  the payload stays stable while VALID waits for READY (IHI 0022 A3.2.1)
//   rule 3  at most LIMIT requests outstanding (bursts in flight) on a channel pair
//   rule 4  a response only for a request made: BVALID after both the AW and the W
//           handshake of that write, RVALID after the AR handshake (IHI 0022 A3.3.1)
//
// A violation is counted (``violations``), the first one's rule and cycle kept (``first``,
// ``first_cycle``) and printed; the bench reports them and dwsep.sim.rtl fails the job.

// Rules 1 and 2 on one channel.
module dwsep_hold_check #(parameter int W = 1) (
    input  logic clk, rst, valid, ready,
    input  logic [W-1:0] payload,
    output logic bad_drop,    // this cycle breaks rule 1
    output logic bad_change   // this cycle breaks rule 2
);
    logic waiting;
    logic [W-1:0] held;
    always_ff @(posedge clk) begin
        if (rst) waiting <= 0;
        else waiting <= valid && !ready;
        held <= payload;
    end
    assign bad_drop = !rst && waiting && !valid;
    assign bad_change = !rst && waiting && valid && payload != held;
endmodule

// Rules 3 and 4 for a pair of request channels (A and B: AW and W of AXI4-Lite, or the same
// channel twice) and their response channel: `req_*` are handshakes, `resp_valid` the
// response's VALID, `resp_done` its last handshake (RLAST for AXI4 reads).
module dwsep_outstanding_check #(parameter int LIMIT = 4) (
    input  logic clk, rst,
    input  logic req_a, req_b, resp_valid, resp_done,
    output logic bad_limit, bad_orphan
);
    int unsigned a, b;  // handshakes before this cycle without their response yet
    always_ff @(posedge clk) begin
        if (rst) begin
            a <= 0; b <= 0;
        end else begin
            a <= a + 32'(req_a) - 32'(resp_done);
            b <= b + 32'(req_b) - 32'(resp_done);
        end
    end
    assign bad_limit = !rst && (a > LIMIT || b > LIMIT);
    assign bad_orphan = !rst && resp_valid && (a == 0 || b == 0);
endmodule

// Collects the checks' `bad` bits into the counters the bench reads.
module dwsep_violations #(parameter int N = 1) (
    input  logic clk, rst,
    input  logic [N-1:0] bad,     // per check
    input  logic [N-1:0][7:0] rule,
    output logic [31:0] violations,
    output logic [7:0] first,     // the first violation's rule (0: none)
    output logic [7:0] first_check,
    output logic [63:0] first_cycle
);
    longint unsigned now;
    always_ff @(posedge clk) begin
        if (rst) begin
            now <= 0; violations <= 0; first <= 0; first_check <= 0; first_cycle <= 0;
        end else begin
            now <= now + 1;
            violations <= violations + 32'($countones(bad));
            for (int i = N - 1; i >= 0; i--)
                if (bad[i] && first == 0) begin
                    first <= rule[i]; first_check <= 8'(i); first_cycle <= now;
                end
            for (int i = 0; i < N; i++)
                if (bad[i]) $display("dwsep_axi_monitor: cycle %0d: check %0d breaks rule %0d",
                                     now, i, rule[i]);
        end
    end
endmodule
