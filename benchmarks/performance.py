"""Write docs/PERFORMANCE.md: today's design measured with the project's own instruments.

    python benchmarks/performance.py [--config pynq-z2] [--rtl] [--out docs/PERFORMANCE.md]

For MobileNetV2-1.0-224 and MobileNetV1-1.0-224 (random weights: cycles do not depend on
them) on the config, with the ``ideal`` and ``pynq-z2`` memories at 100, 150 and 200 MHz:
cycles per frame, fps, MAC utilization and DDR bytes from the cycle model (``dwsep bench``);
with ``--rtl`` also one Verilated frame of each network on the ``pynq-z2`` memory at 200 MHz
(model and RTL side by side, bit-exactness, wall time). Then where the cycles go (by bound),
the physical floors of the config (compute: MACs / MAC units; memory: DDR bytes / the
memory's bandwidth), and the resources and timing estimate of ``dwsep synth`` (read from
``bitstreams/reports/<config>.json``, which ``dwsep synth --config NAME --out
bitstreams/reports/NAME.txt`` writes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dwsep.hw.config import BEAT_BYTES, get_config
from dwsep.sim import benchmark
from dwsep.sim.ddr import get_memory

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {"MobileNetV2-1.0-224": "mobilenet_v2", "MobileNetV1-1.0-224": "mobilenet_v1"}
CLOCKS = (100, 150, 200)
MEMORIES = ("ideal", "pynq-z2")
RTL_POINT = ("pynq-z2", 200)


def _memory_floor(read: int, written: int, memory: str) -> float:
    """Seconds the memory needs for ``read`` and ``written`` DDR bytes at best: the reads
    through the read ports' links (both HP ports), the writes through the write port, and
    both through the DRAM, whichever takes longest."""
    m = get_memory(memory)
    links = len(set(m.links.values()))
    times = [0.0]
    read_rate = None if m.port_read_bytes_per_s is None else m.port_read_bytes_per_s * links
    for nbytes, rate in ((read, read_rate), (written, m.port_write_bytes_per_s),
                         (read + written, m.ddr_bytes_per_s)):
        if rate is not None:
            times.append(nbytes / rate)
    return max(times)


def _layer_floor(b: benchmark.Benchmark, memory: str, clock_mhz: float) -> float:
    """Cycles of a frame whose layers run one after another (as the accelerator runs them),
    each at least its compute floor (its MACs on every MAC unit) and its memory floor (its
    own DDR bytes)."""
    return sum(max(la.macs / b.config.macs,
                   _memory_floor(la.ddr_bytes_read, la.ddr_bytes_written, memory)
                   * clock_mhz * 1e6) for la in b.layers)


def _resources(config: str) -> list[str]:
    path = ROOT / "bitstreams" / "reports" / f"{config}.json"
    if not path.exists():
        return [f"(no `{path.relative_to(ROOT)}`: run `dwsep synth --config {config} --out "
                f"bitstreams/reports/{config}.txt`)"]
    r = json.loads(path.read_text())
    avail = r["available"]
    lines = [f"`dwsep synth --config {config}` (Yosys `synth_xilinx`, {r['part']}; from "
             f"`bitstreams/reports/{config}.json`): **{'FITS' if r['fits'] else 'DOES NOT FIT'}**",
             "", "| resource | used | available | utilization |", "|---|---:|---:|---:|"]
    for key, name in (("lut", "LUT"), ("lutram", "LUTRAM+SRL"), ("ff", "FF"), ("dsp", "DSP48"),
                      ("bram36", "BRAM36")):
        used, total = r[key], avail[key]
        lines.append(f"| {name} | {used:,} | {total:,} | {used / total:.0%} |")
    t = r["timing"]
    lines += ["", "Timing estimate (deepest register-to-register path of the xc7 netlist, "
              "`dwsep.bitstreams.timing`): "
              f"**{t['lut_levels']} LUT levels**, {t['carry4']} CARRY4 in series, from "
              f"`{t['start']}` ({t['start_module']}) to `{t['end']}` ({t['end_module']})."]
    for name in dict.fromkeys([config, "tiny"]):  # the config's own ECP5 run, else tiny's
        other = ROOT / "bitstreams" / "reports" / f"{name}.json"
        e = json.loads(other.read_text()).get("ecp5") if other.exists() else None
        if e:
            lines += ["", f"nextpnr-ecp5 (`dwsep synth --config {name} --ecp5`, "
                      f"`bitstreams/reports/{name}.txt`): **{e['fmax_mhz']} MHz**, {e['stage']}; "
                      f"variant: {e['variant']}."]
            break
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="pynq-z2")
    parser.add_argument("--rtl", action="store_true",
                        help="also run one Verilated frame per network (minutes each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    args = parser.parse_args(argv)
    config = get_config(args.config)
    t_start = time.monotonic()

    models = {title: benchmark.build_model(name) for title, name in NETWORKS.items()}
    results = {(title, mem, clk): benchmark.run_benchmark(name, tflite, config, mem, clk)
               for title, (name, tflite) in models.items()
               for mem in MEMORIES for clk in CLOCKS}
    rtl = {}
    if args.rtl:
        for title, (name, tflite) in models.items():
            print(f"RTL frame: {title} ...", file=sys.stderr)
            rtl[title] = benchmark.run_benchmark(name, tflite, config, *RTL_POINT, rtl=True)

    out = ["# Performance of the current design", "",
           f"Generated by `python benchmarks/performance.py --config {config.name}"
           f"{' --rtl' if args.rtl else ''}` (do not edit by hand). Config `{config.name}`: "
           f"{config.macs} MAC units ({config.dw_lanes}x{config.dw_taps} DW, a "
           f"{config.pw_rows}x{config.pw_cols} 1x1 engine shared by expand and project). "
           "Memories: "
           "`ideal` (unlimited bandwidth, 2-cycle latencies: the memory of every earlier RTL "
           "figure) and `pynq-z2` (the PYNQ-Z2's DDR3 through two HP ports, `dwsep.sim.ddr`). "
           "Cycles from the cycle model (`dwsep bench`), which equals the RTL exactly on the "
           "ideal memory; the RTL rows are Verilated frames on the DDR model.", ""]
    for title in NETWORKS:
        out += [f"## {title}", "",
                "| memory | clock | cycles/frame | fps | MAC utilization | DDR MB/frame |",
                "|---|---:|---:|---:|---:|---:|"]
        for mem in MEMORIES:
            for clk in CLOCKS:
                b = results[title, mem, clk]
                out.append(f"| {mem} | {clk} MHz | {b.cycles:,} | {b.fps:.1f} | "
                           f"{b.mac_utilization:.1%} | {b.ddr_bytes / 1e6:.2f} |")
        if title in rtl:
            b = rtl[title]
            err = (b.model_cycles - b.rtl_cycles) / b.rtl_cycles
            worst = max((abs(la.model_cycles - la.rtl_cycles) / la.rtl_cycles, la.layer)
                        for la in b.layers if la.rtl_cycles)
            out += ["", f"RTL, `dwsep bench --model {NETWORKS[title]} --config {config.name} "
                    f"--memory {RTL_POINT[0]} --clock-mhz {RTL_POINT[1]} --rtl`: "
                    f"**{b.rtl_cycles:,} cycles per frame** ({b.fps:.1f} fps, "
                    f"{b.mac_utilization:.1%} MAC utilization); model {err:+.3%} per frame, "
                    f"worst layer {worst[0]:.3%} (layer {worst[1]}); output "
                    f"{'bit-exact with' if b.rtl_bit_exact else 'DIFFERENT from'} the "
                    f"reference backend; the DDR model moved {b.rtl_ddr_bytes / 1e6:.2f} MB; "
                    f"{b.rtl_seconds:.0f} s of wall time."]
        b = results[(title, *RTL_POINT)]
        out += ["", f"Where the cycles go ({RTL_POINT[0]} memory, {RTL_POINT[1]} MHz, by each "
                "descriptor's bound):", "", "| bound | cycles | share |", "|---|---:|---:|"]
        for bound, cycles in b.bounds.items():
            out.append(f"| {bound} | {cycles:,} | {cycles / b.model_cycles:.1%} |")
        out += ["", "Physical floors of the config:", ""]
        compute = b.macs / config.macs
        for clk in CLOCKS:
            line = (f"- {clk} MHz: compute {compute:,.0f} cycles ({clk * 1e6 / compute:.0f} "
                    f"fps) if every MAC unit did useful work every cycle")
            mem_s = _memory_floor(b.ddr_bytes_read, b.ddr_bytes_written, "pynq-z2")
            line += (f"; memory (pynq-z2: {b.ddr_bytes_read / 1e6:.2f} MB read and "
                     f"{b.ddr_bytes_written / 1e6:.2f} MB written) {mem_s * 1e3:.2f} ms "
                     f"({1 / mem_s:.0f} fps, {mem_s * clk * 1e6:,.0f} cycles); layer by "
                     f"layer (each at least the larger of its own two floors, one after "
                     f"another) {_layer_floor(b, 'pynq-z2', clk):,.0f} cycles")
            out.append(line)
        out += ["", "Per layer (pynq-z2 memory, 200 MHz):", "", "```",
                benchmark.format_table(rtl.get(title) or results[(title, *RTL_POINT)]), "```", ""]
    out += ["## Resources and clock", "", *_resources(config.name), "",
            f"_Generated in {time.monotonic() - t_start:.0f} s; one beat = {BEAT_BYTES} "
            "bytes._", ""]
    args.out.write_text("\n".join(out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
