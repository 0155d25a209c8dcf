// Exact per-descriptor cycle counts of the RTL bench: the cycles the CYCLES register counts
// (every cycle the controller is busy), attributed to the descriptor index the controller
// shows in that cycle. One line "<descriptor> <cycles>" per descriptor to +profile=FILE.
// The bench connects `busy` and `layer` to the accelerator's internals by hierarchical
// name (the controller's `layer` and the register bank's `busy` input).

module dwsep_profiler (
    input logic clk,
    input logic busy,
    input logic [15:0] layer
);
    int fd = 0;
    string file;
    initial if ($value$plusargs("profile=%s", file)) fd = $fopen(file, "w");

    logic was_busy = 0;
    logic [15:0] current = 0;
    longint unsigned count = 0;
    always_ff @(posedge clk) begin
        was_busy <= busy;
        if (busy) begin
            current <= layer;
            if (was_busy && layer != current) begin
                if (fd != 0) $fwrite(fd, "%0d %0d\n", current, count);
                count <= 1;
            end else begin
                count <= was_busy ? count + 1 : 1;
            end
        end else if (was_busy && fd != 0) begin
            $fwrite(fd, "%0d %0d\n", current, count);
            $fflush(fd);
        end
    end
endmodule
