"""Benchmark: representative depthwise-separable layers on the Verilated accelerator.

For each layer it prints the MACs, the ideal cycles (MACs / MAC units), the ``CYCLES``
register of an RTL run (the ``ideal`` DDR model, no backpressure), the analytical model's
cycles (``dwsep.sim.perf``), the efficiency ideal / RTL and what bounds the layer (its
bottleneck stage, or the table loads); then the
Verilator build time (a fresh build in a temporary ``DWSEP_BUILD_DIR``), the wall time of each
RTL run and the simulated cycles per second. Each RTL output is checked against the NumPy
reference backend.

Usage: ``python benchmarks/layers.py [--config tiny] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from dwsep.host.driver import Accelerator
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model
from dwsep.hw.config import get_config
from dwsep.sim.perf import ideal_cycles, program_cycles


def _layer(name, h, w, c, k, *, s=1, d=1, c_out, seed) -> tuple[str, LayerSpec]:
    return name, LayerSpec(h=h, w=w, c=c, depth_multiplier=1, kernel=k, stride=s, dilation=d,
                           padding="SAME", dw_activation="RELU6", c_out=c_out,
                           pw_activation="NONE", seed=seed)


#: within the ``tiny`` limits (H, W <= 64, C <= 64, C_out <= 64)
LAYERS = [
    _layer("mobilenet", 32, 32, 32, 3, c_out=64, seed=1),
    _layer("strided", 32, 32, 64, 3, s=2, c_out=64, seed=2),
    _layer("dilated", 16, 16, 64, 5, d=2, c_out=32, seed=3),
]


def _shape(spec: LayerSpec) -> str:
    extra = (f" s{spec.stride}" if spec.stride > 1 else "") + \
        (f" d{spec.dilation}" if spec.dilation > 1 else "")
    return f"{spec.h}x{spec.w}x{spec.c} k{spec.kernel}{extra} -> {spec.c_out}"


def run(config_name: str) -> dict:
    """Build the accelerator fresh, run every layer; return the figures."""
    from dwsep.sim.rtl import build_accelerator

    config = get_config(config_name)
    saved = os.environ.get("DWSEP_BUILD_DIR")
    with tempfile.TemporaryDirectory(prefix="dwsep-bench-build-") as build_dir:
        # sim.verilator reads the build root from the environment at build time
        os.environ["DWSEP_BUILD_DIR"] = build_dir
        try:
            t0 = time.monotonic()
            build_accelerator(config)
            build_seconds = time.monotonic() - t0
        finally:
            if saved is None:
                del os.environ["DWSEP_BUILD_DIR"]
            else:
                os.environ["DWSEP_BUILD_DIR"] = saved
        rows = []
        with Accelerator(config, "rtl") as rtl, Accelerator(config, "reference") as ref:
            for name, spec in LAYERS:
                model = dwsep_layer_model(spec)
                x = np.random.default_rng(spec.seed).integers(
                    -128, 128, (1, spec.h, spec.w, spec.c), dtype=np.int8)
                t0 = time.monotonic()
                y = rtl.run(model, x)
                wall = time.monotonic() - t0
                if not np.array_equal(y, ref.run(model, x)):
                    raise SystemExit(f"{name}: RTL output differs from the reference backend")
                cycles = rtl.last_stats["cycles"]
                program = rtl.compile(model)
                model_cycles, (est,) = program_cycles(config, program)
                macs = program.macs
                ideal = ideal_cycles(macs, config)
                rows.append({
                    "layer": name, "shape": _shape(spec), "macs": macs,
                    "ideal_cycles": round(ideal), "rtl_cycles": cycles,
                    "model_cycles": model_cycles, "efficiency": ideal / cycles,
                    "bottleneck": est.bottleneck, "bound": est.bound,
                    "stage_cycles": est.stage_cycles, "bytes_read": est.bytes_read,
                    "bytes_written": est.bytes_written,
                    "breakdown": {"fetch": est.fetch, "loads": est.loads, "run": est.run,
                                  "fill": est.fill, "drain": est.drain},
                    "wall_seconds": wall, "sim_cycles_per_second": cycles / wall,
                })
    return {"config": config.name, "mac_units": config.macs,
            "build_seconds": build_seconds, "layers": rows}


def format_table(result: dict) -> str:
    head = (f"{'layer':<10} {'shape':<24} {'MACs':>9} {'ideal':>7} {'RTL':>7} {'model':>7} "
            f"{'eff':>6} {'bound':<10} {'wall s':>6} {'cyc/s':>8}")
    lines = [f"config {result['config']!r}: {result['mac_units']} MAC units "
             f"(dw_lanes + pw_rows*pw_cols); no AXI backpressure", head, "-" * len(head)]
    for r in result["layers"]:
        lines.append(
            f"{r['layer']:<10} {r['shape']:<24} {r['macs']:>9} {r['ideal_cycles']:>7} "
            f"{r['rtl_cycles']:>7} {r['model_cycles']:>7} {r['efficiency']:>6.1%} "
            f"{r['bound']:<10} {r['wall_seconds']:>6.2f} "
            f"{r['sim_cycles_per_second']:>8.0f}")
    lines.append("")
    lines.append("stage work (cycles at each stage's rate) and model breakdown:")
    for r in result["layers"]:
        b = r["breakdown"]
        lines.append(f"  {r['layer']:<10} {r['stage_cycles']}  fetch {b['fetch']} loads "
                     f"{sum(b['loads'].values())} run {b['run']} (fill {b['fill']}, "
                     f"drain {b['drain']})")
    lines.append("")
    lines.append(f"Verilator build (fresh, {result['config']}): {result['build_seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="accelerator config (default tiny)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.config)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
