"""The DDR the accelerator sees: memory models in physical units, converted to cycles of the
accelerator clock, and the RTL bench that wires ``sim/ddr_model.sv`` to the design.

A :class:`MemoryModel` states a memory system as a datasheet would: bytes per second and
nanoseconds. :meth:`MemoryModel.at` turns it into :class:`MemoryCycles` for one accelerator
clock: what the Verilog model (``sim/ddr_model.sv``, through :meth:`MemoryCycles.plusargs`)
and the cycle model (:mod:`dwsep.sim.perf`) both take, so the two cannot disagree on a
number.

Named models (:data:`MEMORIES`):

``pynq-z2``
    The PYNQ-Z2's PS DDR3 as the programmable logic reaches it through a 64-bit AXI HP port:

    * DRAM: 16-bit DDR3 at 1050 MT/s (the PYNQ-Z2 base overlay's PS7 setting), 2.1 GB/s
      peak; the Zynq-7000 DDR controller reaches about 75 % of that (UG585, 22.3.2 "DDR
      Efficiency": "designed to have a maximum efficiency of approximately 75 %"), so about
      1.58 GB/s shared by every port, reads and writes together (the CPU's traffic is not
      modelled: an idle CPU is assumed).
    * Each HP port: 1.2 GB/s of reads and 1.2 GB/s of writes (UG585 Table 22-8, 64 bits at
      150 MHz); AXI3 bursts of at most 16 beats (UG585, "DDR Controller System Interface":
      "Burst length support from 1 to 16 data beats").
    * Latency: first read beat 200 ns after the AR handshake, write response 100 ns after
      the last W beat. These are estimates, not datasheet values: a DDR3-1066 row miss
      (tRP + tRCD + CL, about 40 ns at 7-7-7) plus the controller's queues and arbitration
      and the HP port's clock-crossing FIFOs. Change them with ``dataclasses.replace``.
    * The design's three AXI managers reach DDR through HP ports of their own, as
      ``bitstreams/pynq_z2/build.tcl`` wires them: ``m_axi`` (descriptors, tables, input,
      output) through ``S_AXI_HP0``, ``m_axi_res`` (the residual input, and half of every
      table load) through ``S_AXI_HP1``, ``m_axi_pf`` (the prefetch of the next layer's
      weights) through ``S_AXI_HP2``; they share only the DRAM.

``ideal``
    Unlimited bandwidth, reads answered 2 cycles after the AR handshake and writes 2 cycles
    after the last beat whatever the clock: the memory of every RTL figure before this model
    (cocotbext-axi ``AxiRam``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dwsep.hw.config import BEAT_BYTES

__all__ = ["MemoryModel", "MemoryCycles", "MEMORIES", "get_memory", "MIN_LATENCY",
           "RATE_ONE", "bench_verilog", "DDR_MODEL_SV", "READ_PORTS", "WRITE_PORTS",
           "BENCH_TOPLEVEL", "PROFILER_SV", "AXI_MONITOR_SV", "MONITOR_RULES",
           "monitor_checks", "image_to_hex", "hex_to_image", "pause_plusargs",
           "MemoryModelError"]

MIN_LATENCY = 2       #: cycles: the Verilog model's shortest read or write-response latency
RATE_ONE = 1 << 16    #: the Verilog model's rates are fixed point, beats per cycle * 2**16

#: AXI manager ports of ``hw.top.Top`` in the Verilog model's port order
READ_PORTS = ("m_axi", "m_axi_res", "m_axi_pf")
WRITE_PORTS = ("m_axi",)

BENCH_TOPLEVEL = "dwsep_bench"
DDR_MODEL_SV = Path(__file__).with_name("ddr_model.sv")
PROFILER_SV = Path(__file__).with_name("profiler.sv")
AXI_MONITOR_SV = Path(__file__).with_name("axi_monitor.sv")

#: The protocol rules ``sim/axi_monitor.sv`` checks, by number.
MONITOR_RULES = {
    1: "VALID dropped before READY",
    2: "payload changed while VALID waited for READY",
    3: "more requests outstanding than the limit",
    4: "a response with no request for it",
}
#: Payload signals of each channel the monitors hold stable: (channel, VALID, READY, payload)
_AXI4_READ = [("AR", "arvalid", "arready", ["arid", "araddr", "arlen", "arsize", "arburst"]),
              ("R", "rvalid", "rready", ["rid", "rdata", "rresp", "rlast"])]
_AXI4_WRITE = [("AW", "awvalid", "awready", ["awid", "awaddr", "awlen", "awsize", "awburst"]),
               ("W", "wvalid", "wready", ["wdata", "wstrb", "wlast"]),
               ("B", "bvalid", "bready", ["bid", "bresp"])]
_AXI4_LITE = [("AW", "awvalid", "awready", ["awaddr", "awprot"]),
              ("W", "wvalid", "wready", ["wdata", "wstrb"]),
              ("B", "bvalid", "bready", ["bresp"]),
              ("AR", "arvalid", "arready", ["araddr", "arprot"]),
              ("R", "rvalid", "rready", ["rdata", "rresp"])]
#: requests in flight a manager port may have (the DMA engines' ``max_outstanding``), and
#: an AXI4-Lite port
OUTSTANDING_LIMIT = 4


def monitor_checks() -> list[tuple[str, int]]:
    """The monitors' checks in the order of their bits: ``(what, rule)``."""
    out = []

    def hold(port, channels):
        for ch, *_ in channels:
            out.extend([(f"{port} {ch}", 1), (f"{port} {ch}", 2)])

    for port in READ_PORTS:
        hold(port, _AXI4_READ)
        out.extend([(f"{port} reads", 3), (f"{port} reads", 4)])
    for port in WRITE_PORTS:
        hold(port, _AXI4_WRITE)
        out.extend([(f"{port} writes", 3), (f"{port} writes", 4)])
    hold("s_axil", _AXI4_LITE)
    out.extend([("s_axil writes", 3), ("s_axil writes", 4), ("s_axil reads", 3),
                ("s_axil reads", 4)])
    return out


def _monitor_verilog() -> list[str]:
    """The monitor instances of ``dwsep_bench`` (bits in :func:`monitor_checks` order)."""
    lines, bits = [], []

    def hs(p, ch):
        return f"({p}__{ch}valid && {p}__{ch}ready)"

    def hold(port, channels):
        for _, valid, ready, payload in channels:
            n = len(bits)
            cat = "{" + ", ".join(f"{port}__{sig}" for sig in payload) + "}"
            lines.append(f"    wire mon{n}, mon{n + 1};")
            lines.append(f"    dwsep_hold_check #(.W($bits({cat}))) hold{n} (.clk(clk), "
                         f".rst(rst), .valid({port}__{valid}), .ready({port}__{ready}), "
                         f".payload({cat}), .bad_drop(mon{n}), .bad_change(mon{n + 1}));")
            bits.extend([n, n + 1])

    def outstanding(name, req_a, req_b, resp_valid, resp_done):
        n = len(bits)
        lines.append(f"    wire mon{n}, mon{n + 1};")
        lines.append(f"    dwsep_outstanding_check #(.LIMIT({OUTSTANDING_LIMIT})) {name} "
                     f"(.clk(clk), .rst(rst), .req_a({req_a}), .req_b({req_b}), "
                     f".resp_valid({resp_valid}), .resp_done({resp_done}), "
                     f".bad_limit(mon{n}), .bad_orphan(mon{n + 1}));")
        bits.extend([n, n + 1])

    for p in READ_PORTS:
        hold(p, _AXI4_READ)
        outstanding(f"{p}_reads", hs(p, "ar"), hs(p, "ar"), f"{p}__rvalid",
                    f"({hs(p, 'r')} && {p}__rlast)")
    for p in WRITE_PORTS:
        hold(p, _AXI4_WRITE)
        outstanding(f"{p}_writes", hs(p, "aw"), f"({hs(p, 'w')} && {p}__wlast)",
                    f"{p}__bvalid", hs(p, "b"))
    hold("s_axil", _AXI4_LITE)
    outstanding("s_axil_writes", hs("s_axil", "aw"), hs("s_axil", "w"), "s_axil__bvalid",
                hs("s_axil", "b"))
    outstanding("s_axil_reads", hs("s_axil", "ar"), hs("s_axil", "ar"), "s_axil__rvalid",
                hs("s_axil", "r"))
    checks = monitor_checks()
    assert len(bits) == len(checks)
    rules = "{" + ", ".join(f"8'd{rule}" for _, rule in reversed(checks)) + "}"
    lines.append(f"    dwsep_violations #(.N({len(bits)})) monitors (.clk(clk), .rst(rst), "
                 f".bad({{{', '.join(f'mon{i}' for i in reversed(bits))}}}), "
                 f".rule({rules}), .violations(axi_violations), .first(axi_first_rule), "
                 f".first_check(axi_first_check), .first_cycle(axi_first_cycle));")
    return lines


class MemoryModelError(ValueError):
    """A memory model or clock that cannot be simulated."""


@dataclass(frozen=True)
class MemoryModel:
    """A memory system in physical units.

    Parameters
    ----------
    name:
        Preset name (``dwsep bench --memory NAME``).
    ddr_bytes_per_s:
        DRAM throughput shared by every port, reads and writes together (``None``:
        unlimited).
    port_read_bytes_per_s, port_write_bytes_per_s:
        Throughput of one link (an HP port) in each direction (``None``: unlimited).
    read_latency_ns:
        AR handshake to the first R beat of that burst (at least :data:`MIN_LATENCY`
        cycles).
    write_latency_ns:
        Last W beat of a burst to its B response (at least :data:`MIN_LATENCY` cycles).
    links:
        The link each AXI manager of the design is wired to (``{"m_axi": 0, ...}``): managers
        on one link share its throughput.
    max_burst:
        Longest burst the memory takes, in beats.
    """
    name: str
    ddr_bytes_per_s: float | None
    port_read_bytes_per_s: float | None
    port_write_bytes_per_s: float | None
    read_latency_ns: float
    write_latency_ns: float
    links: dict[str, int] = field(default_factory=lambda: {p: 0 for p in READ_PORTS})
    max_burst: int = 16

    def __post_init__(self):
        for name in ("ddr_bytes_per_s", "port_read_bytes_per_s", "port_write_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise MemoryModelError(f"memory '{self.name}': {name} must be > 0 or None "
                                       f"(unlimited), not {value!r}")
        for name in ("read_latency_ns", "write_latency_ns"):
            if not getattr(self, name) >= 0:
                raise MemoryModelError(f"memory '{self.name}': {name} must be >= 0, not "
                                       f"{getattr(self, name)!r}")
        unknown = set(self.links) - set(READ_PORTS) - set(WRITE_PORTS)
        if unknown:
            raise MemoryModelError(f"memory '{self.name}': links name unknown ports "
                                   f"{sorted(unknown)}; the design's AXI managers are "
                                   f"{sorted(set(READ_PORTS) | set(WRITE_PORTS))}")

    def at(self, clock_mhz: float) -> MemoryCycles:
        """This memory seen from an accelerator clocked at ``clock_mhz``."""
        if not (isinstance(clock_mhz, (int, float)) and math.isfinite(clock_mhz)
                and clock_mhz > 0):
            raise MemoryModelError(f"clock must be a positive number of MHz, not {clock_mhz!r}")
        hz = clock_mhz * 1e6

        def rate(bytes_per_s):
            return None if bytes_per_s is None else bytes_per_s / hz / BEAT_BYTES

        def latency(ns):
            return max(MIN_LATENCY, math.ceil(ns * clock_mhz / 1000 - 1e-9))

        return MemoryCycles(
            memory=self.name, clock_mhz=clock_mhz,
            read_latency=latency(self.read_latency_ns),
            write_latency=latency(self.write_latency_ns),
            ddr_rate=rate(self.ddr_bytes_per_s),
            read_rate=rate(self.port_read_bytes_per_s),
            write_rate=rate(self.port_write_bytes_per_s),
            read_links=tuple(self.links.get(p, 0) for p in READ_PORTS),
            write_links=tuple(self.links.get(p, 0) for p in WRITE_PORTS))


@dataclass(frozen=True)
class MemoryCycles:
    """A :class:`MemoryModel` at one clock: latencies in cycles, rates in beats (8 bytes)
    per cycle (``None``: unlimited; a rate of 1 or more never limits a port, which moves at
    most one beat per cycle)."""
    memory: str
    clock_mhz: float
    read_latency: int
    write_latency: int
    ddr_rate: float | None
    read_rate: float | None
    write_rate: float | None
    read_links: tuple[int, ...]
    write_links: tuple[int, ...]

    @staticmethod
    def fixed(rate: float | None) -> int:
        """A rate as the Verilog model takes it: beats per cycle in 1/:data:`RATE_ONE` beat,
        0 for unlimited."""
        return 0 if rate is None else max(1, round(rate * RATE_ONE))

    def plusargs(self) -> list[str]:
        """The Verilog model's timing plusargs (rates rounded to its fixed point)."""
        fixed = self.fixed
        args = [f"+ddr_rd_latency={self.read_latency}", f"+ddr_wr_latency={self.write_latency}",
                f"+ddr_rate={fixed(self.ddr_rate)}", f"+ddr_rd_rate={fixed(self.read_rate)}",
                f"+ddr_wr_rate={fixed(self.write_rate)}"]
        args += [f"+ddr_rd_link{i}={link}" for i, link in enumerate(self.read_links)]
        args += [f"+ddr_wr_link{i}={link}" for i, link in enumerate(self.write_links)]
        return args


def pause_plusargs(seed: int, probability: float) -> list[str]:
    """Plusargs of the Verilog model's random backpressure: every AXI channel pauses with
    ``probability`` per cycle, from a generator seeded with ``seed``."""
    return [f"+ddr_seed={seed % (1 << 31) or 1}", f"+ddr_pause={round(probability * RATE_ONE)}"]


MEMORIES = {
    "pynq-z2": MemoryModel(
        "pynq-z2", ddr_bytes_per_s=1050e6 * 2 * 0.75, port_read_bytes_per_s=1.2e9,
        port_write_bytes_per_s=1.2e9, read_latency_ns=200, write_latency_ns=100,
        links={"m_axi": 0, "m_axi_res": 1, "m_axi_pf": 2}),
    "ideal": MemoryModel(
        "ideal", ddr_bytes_per_s=None, port_read_bytes_per_s=None,
        port_write_bytes_per_s=None, read_latency_ns=0, write_latency_ns=0,
        links={"m_axi": 0, "m_axi_res": 0, "m_axi_pf": 0}),
}


def get_memory(memory: MemoryModel | str) -> MemoryModel:
    """A memory model by name (or the model itself)."""
    if isinstance(memory, MemoryModel):
        return memory
    try:
        return MEMORIES[memory]
    except KeyError:
        raise MemoryModelError(f"unknown memory model {memory!r}; known: "
                               f"{', '.join(MEMORIES)}") from None


# ---- the bench's top level ----

def bench_verilog(component, top_name: str, *, depth_log2: int) -> str:
    """Verilog of ``dwsep_bench``: the accelerator ``top_name`` (an instance of ``component``'s
    generated Verilog) with its AXI managers on ``dwsep_ddr`` and a ``dwsep_profiler``
    (``sim/profiler.sv``). The bench's ports are the accelerator's others (clock, reset,
    ``s_axil``, ``irq``) plus ``ddr_dump`` (a rising edge writes the image out),
    ``ddr_fault_on``/``ddr_fault_addr`` (the model's fault injection) and the model's beat
    counters."""
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    aw = component.config.axi_addr_width
    members = list(component.signature.members.flatten())
    outer, inner = [], []
    for path, member in members:
        if member.is_signature:
            continue
        name = "__".join(str(p) for p in path)
        width = Shape.cast(member.shape).width
        rng = f"[{width - 1}:0] " if width > 1 else ""
        (inner if path[0] in READ_PORTS + WRITE_PORTS else outer).append((name, member, rng))

    ports = ["input clk", "input rst", "input ddr_dump", "input ddr_fault_on",
             f"input [{aw - 1}:0] ddr_fault_addr", "output [31:0] axi_violations",
             "output [7:0] axi_first_rule", "output [7:0] axi_first_check",
             "output [63:0] axi_first_cycle",
             "output [63:0] ddr_beats_read", "output [63:0] ddr_beats_written"]
    ports += [f"{'input' if m.flow == In else 'output'} {rng}{n}" for n, m, rng in outer]
    lines = [f"module {BENCH_TOPLEVEL} (", ",\n".join(f"    {p}" for p in ports), ");"]
    lines += [f"    wire {rng}{n};" for n, _, rng in inner]
    conns = [".clk(clk)", ".rst(rst)"] + [f".{n}({n})" for n, _, _ in outer + inner]
    lines.append(f"    {top_name} accelerator (\n        " + ",\n        ".join(conns)
                 + "\n    );")

    def cat(ports, sig):
        return "{" + ", ".join(f"{p}__{sig}" for p in reversed(ports)) + "}"

    rd = ["arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "arready", "rid", "rdata",
          "rresp", "rlast", "rvalid", "rready"]
    wr = ["awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "awready", "wdata",
          "wstrb", "wlast", "wvalid", "wready", "bid", "bresp", "bvalid", "bready"]
    ddr_conns = [".clk(clk)", ".rst(rst)", ".dump(ddr_dump)", ".fault_on(ddr_fault_on)",
                 ".fault_addr(ddr_fault_addr)",
                 ".beats_read(ddr_beats_read)", ".beats_written(ddr_beats_written)"]
    ddr_conns += [f".{s}({cat(READ_PORTS, s)})" for s in rd]
    ddr_conns += [f".{s}({cat(WRITE_PORTS, s)})" for s in wr]
    lines.append(f"    dwsep_ddr #(.AW({aw}), .IDW(1), .NR({len(READ_PORTS)}), "
                 f".NW({len(WRITE_PORTS)}), .DEPTH_LOG2({depth_log2})) ddr (\n        "
                 + ",\n        ".join(ddr_conns) + "\n    );")
    # the controller's descriptor index and the register bank's busy input, by name
    lines.append("    dwsep_profiler profiler (.clk(clk), "
                 ".busy(accelerator.csr.busy), .layer(accelerator.controller.layer));")
    lines += _monitor_verilog()
    lines.append("endmodule\n")
    return "\n".join(lines)


# ---- memory images ($readmemh / $writememh text, one 64-bit word per line) ----

def _reverse_words(data: bytes) -> bytearray:
    """``data`` with the bytes of each 8-byte word reversed: little-endian words to the
    most-significant-first order of ``$readmemh`` lines, and back."""
    out = bytearray(data)
    for i in range(BEAT_BYTES):
        out[i::BEAT_BYTES] = data[BEAT_BYTES - 1 - i::BEAT_BYTES]
    return out


def image_to_hex(memory: bytes | bytearray) -> str:
    """``memory`` (padded with zeros to whole words) as ``$readmemh`` text."""
    text = _reverse_words(bytes(memory) + bytes(-len(memory) % BEAT_BYTES)).hex()
    step = 2 * BEAT_BYTES
    return "\n".join(text[i:i + step] for i in range(0, len(text), step)) + "\n"


def hex_to_image(text: str, nbytes: int) -> bytearray:
    """The bytes of ``$writememh`` text, cut to ``nbytes``."""
    lines = [ln for ln in text.split() if not ln.startswith("//")]
    data = bytes.fromhex("".join(ln.rjust(2 * BEAT_BYTES, "0") for ln in lines))
    return _reverse_words(data)[:nbytes]
