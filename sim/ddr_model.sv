// DDR model of the RTL benches: AXI4 subordinate ports over one byte array, with the
// timing of a shared DRAM behind per-port links (the Zynq-7000 HP ports).
//
// The memory and the timing live in the simulator, so Python is off the per-cycle path.
// Every timing value is read at time 0 from plusargs written by dwsep.sim.ddr
// (``MemoryModel.plusargs``): the same build serves every clock and memory preset.
//
//   +ddr_image=FILE       $readmemh image, one 64-bit word per line (word 0 = bytes 0..7)
//   +ddr_words=N          words in the image; accesses past it answer DECERR
//   +ddr_rd_latency=N     AR handshake in cycle t -> first R beat of that burst in t+N (>= 2)
//   +ddr_wr_latency=N     last W handshake in cycle t -> B in t+N (>= 2)
//   +ddr_rate=R           DRAM beats per cycle shared by all ports, reads and writes,
//                         in 1/65536 beat (0 = unlimited)
//   +ddr_rd_rate=R        read beats per cycle of one link (HP port), same unit
//   +ddr_wr_rate=R        write beats per cycle of one link
//   +ddr_rd_link<i>=L     link of read port i (ports on one link share its rate)
//   +ddr_wr_link<i>=L     link of write port i
//   +ddr_pause=P          backpressure: per cycle, each channel pauses with probability
//   +ddr_seed=S             P/65536 (AR, R, AW, W, B), from a seeded xorshift generator
//
// A beat moves when its link and the DRAM both have a beat of credit. Credit accrues at the
// rate every cycle and is capped at two beats, so an idle port cannot save up a burst.
// Ports take credit in a priority order that rotates every cycle.
//
// AXI checks (a violation stops the simulation with $fatal): INCR bursts of 64-bit beats,
// at most 16 beats (AXI3, as the HP ports), never across 4 KiB.
//
// Fault injection (from the bench, at run time): while ``fault_on`` is high, an R beat of
// the 8-byte word at byte address ``fault_addr`` answers SLVERR with zero data, and a write
// burst covering it leaves that word unwritten and answers SLVERR.

module dwsep_ddr #(
    parameter int AW = 32,          // address width
    parameter int IDW = 1,          // ID width
    parameter int NR = 2,           // read ports
    parameter int NW = 1,           // write ports
    parameter int DEPTH_LOG2 = 22,  // 2**DEPTH_LOG2 words of 8 bytes
    parameter int QDEPTH = 8        // accepted bursts per port (AR and AW queues)
) (
    input  logic clk,
    input  logic rst,
    input  logic dump,              // rising: $writememh the image to +ddr_dump
    input  logic fault_on,          // fault injection: the word at fault_addr answers SLVERR
    input  logic [AW-1:0] fault_addr,
    // read ports
    input  logic [NR-1:0][IDW-1:0] arid,
    input  logic [NR-1:0][AW-1:0]  araddr,
    input  logic [NR-1:0][7:0]     arlen,
    input  logic [NR-1:0][2:0]     arsize,
    input  logic [NR-1:0][1:0]     arburst,
    input  logic [NR-1:0]          arvalid,
    output logic [NR-1:0]          arready,
    output logic [NR-1:0][IDW-1:0] rid,
    output logic [NR-1:0][63:0]    rdata,
    output logic [NR-1:0][1:0]     rresp,
    output logic [NR-1:0]          rlast,
    output logic [NR-1:0]          rvalid,
    input  logic [NR-1:0]          rready,
    // write ports
    input  logic [NW-1:0][IDW-1:0] awid,
    input  logic [NW-1:0][AW-1:0]  awaddr,
    input  logic [NW-1:0][7:0]     awlen,
    input  logic [NW-1:0][2:0]     awsize,
    input  logic [NW-1:0][1:0]     awburst,
    input  logic [NW-1:0]          awvalid,
    output logic [NW-1:0]          awready,
    input  logic [NW-1:0][63:0]    wdata,
    input  logic [NW-1:0][7:0]     wstrb,
    input  logic [NW-1:0]          wlast,
    input  logic [NW-1:0]          wvalid,
    output logic [NW-1:0]          wready,
    output logic [NW-1:0][IDW-1:0] bid,
    output logic [NW-1:0][1:0]     bresp,
    output logic [NW-1:0]          bvalid,
    input  logic [NW-1:0]          bready,
    // statistics
    output logic [63:0]            beats_read,
    output logic [63:0]            beats_written
);
    localparam int ONE = 65536;     // one beat of credit
    localparam int NP = NR + NW;    // requesters of DRAM credit
    localparam int QW = $clog2(QDEPTH);
    localparam logic [1:0] OKAY = 2'b00, SLVERR = 2'b10, DECERR = 2'b11;

    logic [63:0] mem [0:(1 << DEPTH_LOG2) - 1];

    // ---- run-time parameters ----
    string image, dump_file;
    longint unsigned words;
    int rd_latency, wr_latency, ddr_rate, rd_rate, wr_rate, pause, seed;
    int rd_link [NR];
    int wr_link [NW];
    initial begin
        string key;
        words = 0; rd_latency = 2; wr_latency = 2; ddr_rate = 0; rd_rate = 0; wr_rate = 0;
        pause = 0; seed = 1;
        void'($value$plusargs("ddr_words=%d", words));
        void'($value$plusargs("ddr_rd_latency=%d", rd_latency));
        void'($value$plusargs("ddr_wr_latency=%d", wr_latency));
        void'($value$plusargs("ddr_rate=%d", ddr_rate));
        void'($value$plusargs("ddr_rd_rate=%d", rd_rate));
        void'($value$plusargs("ddr_wr_rate=%d", wr_rate));
        void'($value$plusargs("ddr_pause=%d", pause));
        void'($value$plusargs("ddr_seed=%d", seed));
        for (int i = 0; i < NR; i++) begin
            rd_link[i] = i;
            key = $sformatf("ddr_rd_link%0d=%%d", i);
            void'($value$plusargs(key, rd_link[i]));
        end
        for (int i = 0; i < NW; i++) begin
            wr_link[i] = i;
            key = $sformatf("ddr_wr_link%0d=%%d", i);
            void'($value$plusargs(key, wr_link[i]));
        end
        if (rd_latency < 2 || wr_latency < 2)
            $fatal(1, "dwsep_ddr: latencies must be >= 2 cycles (read %0d, write %0d)",
                   rd_latency, wr_latency);
        if (words > (64'd1 << DEPTH_LOG2))
            $fatal(1, "dwsep_ddr: image of %0d words exceeds the model's %0d", words,
                   64'd1 << DEPTH_LOG2);
        if ($value$plusargs("ddr_image=%s", image) && words != 0)
            $readmemh(image, mem, 0, 32'(words - 1));
        if (!$value$plusargs("ddr_dump=%s", dump_file)) dump_file = "";
    end

    logic dump_q;
    always_ff @(posedge clk) begin
        dump_q <= dump;
        if (dump && !dump_q && dump_file != "" && words != 0)
            $writememh(dump_file, mem, 0, 32'(words - 1));
    end

    // ---- time, pauses ----
    longint unsigned now;
    logic [31:0] rng;
    logic [4:0] paused;  // AR, R, AW, W, B: this cycle's pause of each channel kind
    always_ff @(posedge clk) begin
        if (rst) begin
            now <= 0;
            rng <= (seed == 0) ? 32'd1 : 32'(seed);
        end else begin
            now <= now + 1;
            rng <= xorshift(xorshift(rng));
        end
    end
    function automatic logic [31:0] xorshift(logic [31:0] x);
        x = x ^ (x << 13); x = x ^ (x >> 17); x = x ^ (x << 5);
        return x;
    endfunction
    always_comb begin
        logic [31:0] r;
        r = rng;
        for (int c = 0; c < 5; c++) begin
            r = xorshift(r);
            paused[c] = (pause != 0) && ({16'b0, r[15:0]} < 32'(pause));
        end
    end

    // ---- credit ----
    // in 1/65536 beats; rate 0 = unlimited
    int ddr_credit;
    int rd_credit [NR];  // indexed by link (a link number is < NR)
    int wr_credit [NW];
    function automatic int accrue(int credit, int rate, int used);
        int c;
        c = credit - used * ONE + rate;
        return (c > 2 * ONE) ? 2 * ONE : c;
    endfunction

    // ---- read ports ----
    logic [AW-1:0]  ar_addr [NR][QDEPTH];
    logic [7:0]     ar_len  [NR][QDEPTH];
    logic [IDW-1:0] ar_id   [NR][QDEPTH];
    longint unsigned ar_due [NR][QDEPTH];
    logic [QW:0] ar_wp [NR], ar_rp [NR];
    logic [7:0] r_beat [NR];
    logic [NR-1:0] r_want, r_grant;
    // ---- write ports ----
    logic [AW-1:0]  aw_addr [NW][QDEPTH];
    logic [7:0]     aw_len  [NW][QDEPTH];
    logic [IDW-1:0] aw_id   [NW][QDEPTH];
    logic [QW:0] aw_wp [NW], aw_rp [NW];
    logic [7:0] w_beat [NW];
    logic [NW-1:0] w_want, w_grant;
    logic [1:0]     b_resp [NW][QDEPTH];
    logic [IDW-1:0] b_id   [NW][QDEPTH];
    longint unsigned b_due [NW][QDEPTH];
    logic [QW:0] b_wp [NW], b_rp [NW];
    logic [QW:0] b_out [NW];  // B entries answered (bvalid handshakes)
    logic [NW-1:0] aw_err;    // the head write burst lies outside the image
    logic [NW-1:0] w_fault;   // a beat of the head write burst hit the injected fault

    logic [$clog2(NP + 1)-1:0] first;  // rotating priority
    always_comb begin
        for (int i = 0; i < NR; i++)
            r_want[i] = (ar_wp[i] != ar_rp[i]) && now >= ar_due[i][ar_rp[i][QW-1:0]]
                        && (!rvalid[i] || rready[i]) && !paused[1];
        for (int i = 0; i < NW; i++)
            w_want[i] = (aw_wp[i] != aw_rp[i]) && wvalid[i] && !paused[3]
                        // room for the burst's B
                        && (b_wp[i] - b_out[i]) < (QW+1)'(QDEPTH);
    end
    always_comb begin
        int d, lr [NR], lw [NW], p, n;
        d = ddr_credit;
        for (int i = 0; i < NR; i++) lr[i] = rd_credit[i];
        for (int i = 0; i < NW; i++) lw[i] = wr_credit[i];
        r_grant = '0;
        w_grant = '0;
        for (int k = 0; k < NP; k++) begin
            p = (int'(first) + k) % NP;
            if (p < NR) begin
                n = rd_link[p];
                if (r_want[p] && (ddr_rate == 0 || d >= ONE)
                        && (rd_rate == 0 || lr[n] >= ONE)) begin
                    r_grant[p] = 1;
                    d -= ONE;
                    lr[n] -= ONE;
                end
            end else begin
                n = wr_link[p - NR];
                if (w_want[p - NR] && (ddr_rate == 0 || d >= ONE)
                        && (wr_rate == 0 || lw[n] >= ONE)) begin
                    w_grant[p - NR] = 1;
                    d -= ONE;
                    lw[n] -= ONE;
                end
            end
        end
    end
    assign wready = w_grant;

    always_ff @(posedge clk) begin
        int used_d, used_r [NR], used_w [NW];
        if (rst) begin
            first <= 0;
            ddr_credit <= 0;
            for (int i = 0; i < NR; i++) rd_credit[i] <= 0;
            for (int i = 0; i < NW; i++) wr_credit[i] <= 0;
        end else begin
            first <= (int'(first) == NP - 1) ? 0 : first + 1;
            used_d = $countones(r_grant) + $countones(w_grant);
            for (int i = 0; i < NR; i++) used_r[i] = 0;
            for (int i = 0; i < NW; i++) used_w[i] = 0;
            for (int i = 0; i < NR; i++) if (r_grant[i]) used_r[rd_link[i]] += 1;
            for (int i = 0; i < NW; i++) if (w_grant[i]) used_w[wr_link[i]] += 1;
            if (ddr_rate != 0) ddr_credit <= accrue(ddr_credit, ddr_rate, used_d);
            for (int i = 0; i < NR; i++)
                if (rd_rate != 0) rd_credit[i] <= accrue(rd_credit[i], rd_rate, used_r[i]);
            for (int i = 0; i < NW; i++)
                if (wr_rate != 0) wr_credit[i] <= accrue(wr_credit[i], wr_rate, used_w[i]);
        end
    end

    // beat `beat` of the burst at `addr` is the word with the injected fault
    function automatic logic faulty(logic [AW-1:0] addr, logic [7:0] beat);
        return fault_on && (64'(addr) >> 3) + 64'(beat) == (64'(fault_addr) >> 3);
    endfunction

    function automatic logic in_image(logic [AW-1:0] addr, logic [7:0] len);
        return (64'(addr) >> 3) + 64'(len) < words;
    endfunction

    task automatic check_burst(string kind, int port, logic [AW-1:0] addr, logic [7:0] len,
                               logic [2:0] size, logic [1:0] burst);
        if (burst != 2'b01 || size != 3'd3)
            $fatal(1, "dwsep_ddr: %s port %0d: burst type %0d size %0d; the model takes INCR bursts of 8-byte beats",
                   kind, port, burst, size);
        if (len > 15)
            $fatal(1, "dwsep_ddr: %s port %0d: %0d beats at 0x%0h; the HP ports take at most 16 (AXI3)",
                   kind, port, len + 1, addr);
        if (addr[2:0] != 0)
            $fatal(1, "dwsep_ddr: %s port %0d: address 0x%0h is not 8-byte aligned", kind,
                   port, addr);
        if ((64'(addr) & 64'hfff) + (64'(len) + 1) * 8 > 64'h1000)
            $fatal(1, "dwsep_ddr: %s port %0d: %0d beats at 0x%0h cross a 4 KiB boundary",
                   kind, port, len + 1, addr);
    endtask

    for (genvar i = 0; i < NR; i++) begin : rd
        wire [QW-1:0] head = ar_rp[i][QW-1:0];
        assign arready[i] = (ar_wp[i] - ar_rp[i]) != (QW+1)'(QDEPTH) && !paused[0];
        always_ff @(posedge clk) begin
            if (rst) begin
                ar_wp[i] <= 0; ar_rp[i] <= 0; r_beat[i] <= 0; rvalid[i] <= 0;
            end else begin
                if (arvalid[i] && arready[i]) begin
                    check_burst("read", i, araddr[i], arlen[i], arsize[i], arburst[i]);
                    ar_addr[i][ar_wp[i][QW-1:0]] <= araddr[i];
                    ar_len[i][ar_wp[i][QW-1:0]] <= arlen[i];
                    ar_id[i][ar_wp[i][QW-1:0]] <= arid[i];
                    // the beat register loads in t+N-1 and shows in t+N
                    ar_due[i][ar_wp[i][QW-1:0]] <= now + 64'(rd_latency - 1);
                    ar_wp[i] <= ar_wp[i] + 1;
                end
                if (r_grant[i]) begin
                    rvalid[i] <= 1;
                    rid[i] <= ar_id[i][head];
                    rlast[i] <= r_beat[i] == ar_len[i][head];
                    if (faulty(ar_addr[i][head], r_beat[i])) begin
                        rdata[i] <= '0;
                        rresp[i] <= SLVERR;
                    end else if (in_image(ar_addr[i][head], ar_len[i][head])) begin
                        rdata[i] <= mem[(DEPTH_LOG2)'((64'(ar_addr[i][head]) >> 3)
                                                     + 64'(r_beat[i]))];
                        rresp[i] <= OKAY;
                    end else begin
                        rdata[i] <= '0;
                        rresp[i] <= DECERR;
                    end
                    if (r_beat[i] == ar_len[i][head]) begin
                        r_beat[i] <= 0;
                        ar_rp[i] <= ar_rp[i] + 1;
                    end else begin
                        r_beat[i] <= r_beat[i] + 1;
                    end
                end else if (rready[i]) begin
                    rvalid[i] <= 0;
                end
            end
        end
    end

    for (genvar i = 0; i < NW; i++) begin : wr
        wire [QW-1:0] head = aw_rp[i][QW-1:0];
        wire [QW-1:0] b_head = b_rp[i][QW-1:0];
        assign awready[i] = (aw_wp[i] - aw_rp[i]) != (QW+1)'(QDEPTH) && !paused[2];
        assign aw_err[i] = !in_image(aw_addr[i][head], aw_len[i][head]);
        always_ff @(posedge clk) begin
            if (rst) begin
                aw_wp[i] <= 0; aw_rp[i] <= 0; w_beat[i] <= 0; w_fault[i] <= 0;
                b_wp[i] <= 0; b_rp[i] <= 0; b_out[i] <= 0; bvalid[i] <= 0;
            end else begin
                if (awvalid[i] && awready[i]) begin
                    check_burst("write", i, awaddr[i], awlen[i], awsize[i], awburst[i]);
                    aw_addr[i][aw_wp[i][QW-1:0]] <= awaddr[i];
                    aw_len[i][aw_wp[i][QW-1:0]] <= awlen[i];
                    aw_id[i][aw_wp[i][QW-1:0]] <= awid[i];
                    aw_wp[i] <= aw_wp[i] + 1;
                end
                if (w_grant[i]) begin
                    if (wlast[i] != (w_beat[i] == aw_len[i][head]))
                        $fatal(1, "dwsep_ddr: write port %0d: WLAST %0d on beat %0d of %0d",
                               i, wlast[i], w_beat[i] + 1, aw_len[i][head] + 1);
                    if (faulty(aw_addr[i][head], w_beat[i])) w_fault[i] <= 1;
                    if (!aw_err[i] && !faulty(aw_addr[i][head], w_beat[i]))
                        for (int b = 0; b < 8; b++)
                            if (wstrb[i][b])
                                mem[(DEPTH_LOG2)'((64'(aw_addr[i][head]) >> 3)
                                                  + 64'(w_beat[i]))][8*b +: 8]
                                    <= wdata[i][8*b +: 8];
                    if (wlast[i]) begin
                        w_beat[i] <= 0;
                        aw_rp[i] <= aw_rp[i] + 1;
                        b_resp[i][b_wp[i][QW-1:0]] <= aw_err[i] ? DECERR
                            : (w_fault[i] || faulty(aw_addr[i][head], w_beat[i])) ? SLVERR : OKAY;
                        w_fault[i] <= 0;
                        b_id[i][b_wp[i][QW-1:0]] <= aw_id[i][head];
                        b_due[i][b_wp[i][QW-1:0]] <= now + 64'(wr_latency - 1);
                        b_wp[i] <= b_wp[i] + 1;
                    end else begin
                        w_beat[i] <= w_beat[i] + 1;
                    end
                end
                // B: a register like R, loaded when due
                if (b_wp[i] != b_rp[i] && now >= b_due[i][b_head] && (!bvalid[i] || bready[i])
                        && !paused[4]) begin
                    bvalid[i] <= 1;
                    bid[i] <= b_id[i][b_head];
                    bresp[i] <= b_resp[i][b_head];
                    b_rp[i] <= b_rp[i] + 1;
                end else if (bready[i]) begin
                    bvalid[i] <= 0;
                end
                if (bvalid[i] && bready[i]) b_out[i] <= b_out[i] + 1;
            end
        end
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            beats_read <= 0;
            beats_written <= 0;
        end else begin
            beats_read <= beats_read + 64'($countones(r_grant));
            beats_written <= beats_written + 64'($countones(w_grant));
        end
    end
endmodule
