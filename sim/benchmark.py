"""``dwsep bench``: cycles, MAC utilization, DDR traffic and frames per second of a network on
a config, from the cycle model (:mod:`dwsep.sim.perf`) and, with ``rtl=True``, from the
Verilated design on the DDR model (:mod:`dwsep.sim.ddr`) side by side.

Named models (``mobilenet_v2``, ``mobilenet_v1``) are quantized from random weights: cycles do
not depend on weight values, so no download is needed. A ``.tflite`` file is benchmarked as
it is.

Figures: per layer of the compiled program (a layer is one or more descriptors: output tiles,
input slices, a split expand), MACs are the model's (padding lanes excluded), MAC utilization
is ``MACs / (cycles x MAC units)`` with the config's MAC units (DW lanes x taps + expand + PW
arrays), DDR bytes are those the descriptors move (descriptor, tables, input, residual,
output).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dwsep.host.compiler import Program, compile_model
from dwsep.host.mobilenet import ARCHS
from dwsep.host.tflite_reader import read_tflite
from dwsep.hw.config import BEAT_BYTES, AcceleratorConfig, get_config

from . import perf
from .ddr import MemoryCycles, MemoryModel, get_memory

__all__ = ["NAMED_MODELS", "build_model", "Benchmark", "LayerFigures", "run_benchmark",
           "format_table", "to_json", "plot"]

#: The networks ``dwsep quantize --arch`` builds, by name.
NAMED_MODELS = ARCHS


def build_model(model: str | Path, *, width: float | None = None,
                resolution: int | tuple[int, int] | None = None,
                seed: int = 0) -> tuple[str, bytes]:
    """``(name, .tflite bytes)`` of a named model (random weights, calibrated on one random
    image) or of a ``.tflite`` file."""
    if str(model) in NAMED_MODELS:
        from dwsep.host import quantizer

        width = 1.0 if width is None else width
        h, w = ((224, 224) if resolution is None else (resolution, resolution)
                if isinstance(resolution, int) else resolution)
        if not width > 0:
            raise ValueError(f"--width must be > 0, not {width}")
        if not (32 <= h <= 1024 and 32 <= w <= 1024):
            raise ValueError(f"--resolution must be in 32..1024, not {h}x{w}")
        image = np.random.default_rng(seed).integers(0, 256, (h, w, 3),
                                                     dtype=np.uint8)
        tflite = quantizer.quantize(str(model), None, [image], width=width,
                                    input_size=(h, w), seed=seed)
        return f"{model}-{width:g}-{h if h == w else f'{h}x{w}'}", tflite
    path = Path(model)
    if path.suffix.lower() != ".tflite":
        raise ValueError(f"unknown model {str(model)!r}: give {', '.join(NAMED_MODELS)}, or "
                         f"a .tflite file")
    if width is not None or resolution is not None:
        raise ValueError(f"--width and --resolution apply to {', '.join(NAMED_MODELS)}, "
                         f"not to a .tflite file ({path})")
    return path.stem, path.read_bytes()


@dataclass
class LayerFigures:
    """One layer of the program: its descriptors' figures added up."""
    layer: int
    stages: str
    descriptors: tuple[int, int]  #: (first, count)
    macs: int
    model_cycles: int
    ddr_bytes_read: int
    ddr_bytes_written: int
    bound: str                    #: the bound of the descriptor with the most cycles
    rtl_cycles: int | None = None

    @property
    def cycles(self) -> int:
        """RTL cycles where measured, else the model's."""
        return self.model_cycles if self.rtl_cycles is None else self.rtl_cycles


@dataclass
class Benchmark:
    """What ``dwsep bench`` reports."""
    model: str
    config: AcceleratorConfig
    memory: MemoryCycles
    layers: list[LayerFigures]
    macs: int
    model_cycles: int
    ddr_bytes_read: int
    ddr_bytes_written: int
    model_seconds: float
    rtl_cycles: int | None = None
    rtl_ddr_bytes: int | None = None       #: bytes the DDR model moved (reads + writes)
    rtl_seconds: float | None = None       #: wall time of the RTL frame (build excluded)
    rtl_bit_exact: bool | None = None      #: RTL output equal to the reference backend's
    bounds: dict[str, int] = field(default_factory=dict)  #: cycles by bound

    @property
    def cycles(self) -> int:
        """Cycles per frame: the RTL's where measured, else the model's."""
        return self.model_cycles if self.rtl_cycles is None else self.rtl_cycles

    @property
    def ddr_bytes(self) -> int:
        return self.ddr_bytes_read + self.ddr_bytes_written

    @property
    def mac_utilization(self) -> float:
        return self.macs / (self.cycles * self.config.macs)

    @property
    def fps(self) -> float:
        return self.memory.clock_mhz * 1e6 / self.cycles


def run_benchmark(name: str, tflite: bytes, config: AcceleratorConfig | str,
                  memory: MemoryModel | str = "pynq-z2", clock_mhz: float = 200.0, *,
                  rtl: bool = False, progress_for=None, seed: int = 0) -> Benchmark:
    """Benchmark one frame of ``tflite`` on ``config``.

    ``progress_for``: with ``rtl``, called with the compiled program; returns the progress
    display for the simulation: a callable ``(descriptors_done, count)`` (as the driver's
    ``run`` takes) with a ``close()`` method.
    """
    config = get_config(config)
    memory = get_memory(memory)
    timing = memory.at(clock_mhz)
    graph = read_tflite(tflite)
    program = compile_model(graph, config)
    t0 = time.monotonic()
    estimates = perf.program_cycles(config, program, memory=timing)[1]
    model_seconds = time.monotonic() - t0

    layers = []
    bounds: dict[str, int] = {}
    for r in program.layers:
        first, count = r["descriptors"]
        ests = estimates[first:first + count]
        for e in ests:
            bounds[e.bound] = bounds.get(e.bound, 0) + e.total
        layers.append(LayerFigures(
            layer=r["layer"], stages="+".join(r["stages"]), descriptors=(first, count),
            macs=r["macs"], model_cycles=sum(e.total for e in ests),
            ddr_bytes_read=sum(sum(e.bytes_read.values()) for e in ests),
            ddr_bytes_written=sum(e.bytes_written for e in ests),
            bound=max(ests, key=lambda e: e.total).bound if ests else "-"))
    bench = Benchmark(
        model=name, config=config, memory=timing, layers=layers, macs=program.macs,
        model_cycles=sum(e.total for e in estimates),
        ddr_bytes_read=sum(la.ddr_bytes_read for la in layers),
        ddr_bytes_written=sum(la.ddr_bytes_written for la in layers),
        model_seconds=model_seconds,
        bounds=dict(sorted(bounds.items(), key=lambda kv: -kv[1])))
    if rtl:
        _run_rtl(bench, graph, program, memory, clock_mhz, progress_for, seed)
    return bench


def _run_rtl(bench: Benchmark, graph, program: Program, memory: MemoryModel,
             clock_mhz: float, progress_for, seed: int) -> None:
    """One frame on the Verilated design, its output checked against the reference."""
    from dwsep.host.driver import Accelerator

    from .rtl import build_accelerator

    shape = program.input.shape
    x = np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)
    with Accelerator(bench.config, "reference") as ref:
        expected = ref.run(graph, x)
    build_accelerator(bench.config)  # a first build takes minutes: not part of the frame
    progress = progress_for(program) if progress_for is not None else None
    t0 = time.monotonic()
    try:
        with Accelerator(bench.config, "rtl", memory=memory, clock_mhz=clock_mhz) as acc:
            y = acc.run(graph, x, progress=progress)
            job = acc.device.last_job
            total = acc.last_stats["cycles"]
    finally:
        if progress is not None:
            progress.close()
    bench.rtl_seconds = time.monotonic() - t0
    bench.rtl_bit_exact = bool(np.array_equal(y, expected))
    bench.rtl_cycles = total
    bench.rtl_ddr_bytes = (job.ddr_beats_read + job.ddr_beats_written) * BEAT_BYTES
    per_descriptor: dict[int, int] = {}
    for index, cycles in job.layer_cycles:
        per_descriptor[index] = per_descriptor.get(index, 0) + cycles
    for la in bench.layers:
        first, count = la.descriptors
        la.rtl_cycles = sum(per_descriptor.get(i, 0) for i in range(first, first + count))


# ---- output ----

def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def format_table(b: Benchmark) -> str:
    """The per-layer table and the totals, as text."""
    rtl = b.rtl_cycles is not None
    units = b.config.macs
    head = (f"{b.model} on config '{b.config.name}' ({units} MAC units), memory "
            f"'{b.memory.memory}' at {b.memory.clock_mhz:g} MHz")
    cols = f"{'layer':>5} {'stages':24} {'MACs':>12} {'model cyc':>10}"
    cols += f" {'RTL cyc':>10} {'diff':>8}" if rtl else ""
    cols += f" {'MAC util':>8} {'DDR MB':>7} {'bound':>10}"
    lines = [head, "", cols]
    for la in b.layers:
        row = f"{la.layer:>5} {la.stages[:24]:24} {la.macs:>12,} {la.model_cycles:>10,}"
        if rtl:
            diff = (la.model_cycles - la.rtl_cycles) / la.rtl_cycles if la.rtl_cycles else 0
            row += f" {la.rtl_cycles:>10,} {diff:>+8.3%}"
        util = la.macs / (la.cycles * units) if la.cycles else 0
        row += f" {util:>8.1%} {_mb(la.ddr_bytes_read + la.ddr_bytes_written):>7} {la.bound:>10}"
        lines.append(row)
    lines += ["", f"cycles per frame   {b.model_cycles:,} (model)"]
    if rtl:
        diff = (b.model_cycles - b.rtl_cycles) / b.rtl_cycles
        lines += [f"                   {b.rtl_cycles:,} (RTL; model {diff:+.3%}; RTL frame "
                  f"{b.rtl_seconds:.0f} s wall, output "
                  f"{'bit-exact with' if b.rtl_bit_exact else 'DIFFERS from'} the reference)"]
    lines += [f"fps                {b.fps:.2f} at {b.memory.clock_mhz:g} MHz",
              f"MAC utilization    {b.mac_utilization:.1%} ({b.macs:,} MACs)",
              f"DDR per frame      {_mb(b.ddr_bytes)} MB ({_mb(b.ddr_bytes_read)} read, "
              f"{_mb(b.ddr_bytes_written)} written)"
              + (f"; the DDR model moved {_mb(b.rtl_ddr_bytes)} MB" if rtl else ""),
              "cycles by bound    " + ", ".join(
                  f"{k} {v / b.model_cycles:.0%}" for k, v in b.bounds.items())]
    return "\n".join(lines)


def to_json(b: Benchmark) -> dict:
    """The ``--json`` document."""
    out = {
        "model": b.model, "config": b.config.name, "memory": b.memory.memory,
        "clock_mhz": b.memory.clock_mhz, "mac_units": b.config.macs, "macs": b.macs,
        "cycles_per_frame": b.cycles, "mac_utilization": b.mac_utilization, "fps": b.fps,
        "ddr_bytes": b.ddr_bytes, "ddr_bytes_read": b.ddr_bytes_read,
        "ddr_bytes_written": b.ddr_bytes_written, "source": "rtl" if b.rtl_cycles else "model",
        "model_cycles_per_frame": b.model_cycles, "model_seconds": b.model_seconds,
        "cycles_by_bound": b.bounds,
        "layers": [{"layer": la.layer, "stages": la.stages, "descriptors": list(la.descriptors),
                    "macs": la.macs, "cycles": la.cycles, "model_cycles": la.model_cycles,
                    "rtl_cycles": la.rtl_cycles,
                    "mac_utilization": la.macs / (la.cycles * b.config.macs)
                    if la.cycles else 0.0,
                    "ddr_bytes_read": la.ddr_bytes_read,
                    "ddr_bytes_written": la.ddr_bytes_written, "bound": la.bound}
                   for la in b.layers],
    }
    if b.rtl_cycles is not None:
        out.update(rtl_cycles_per_frame=b.rtl_cycles, rtl_ddr_bytes=b.rtl_ddr_bytes,
                   rtl_seconds=b.rtl_seconds, rtl_bit_exact=b.rtl_bit_exact)
    return out


def plot(b: Benchmark, directory: Path) -> list[Path]:
    """Write ``roofline.png`` (attained ops/s per layer against the config's compute ceiling
    and the memory's bandwidth ceiling) and ``layers.png`` (cycles per layer, coloured by
    bound) into ``directory``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    hz = b.memory.clock_mhz * 1e6
    peak_ops = 2 * b.config.macs * hz
    rates = [r for r in (b.memory.ddr_rate, b.memory.read_rate) if r is not None]
    bandwidth = min([1.0, *rates]) * BEAT_BYTES * hz  # bytes/s one port can move
    title = (f"{b.model}, config {b.config.name}, memory {b.memory.memory} at "
             f"{b.memory.clock_mhz:g} MHz")

    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = np.logspace(-1, 4, 200)
    ax.plot(xs, np.minimum(peak_ops, xs * bandwidth), "k-", lw=1.5,
            label=f"ceilings: {peak_ops / 1e9:.1f} GOP/s, {bandwidth / 1e9:.2f} GB/s")
    bound_names = sorted({la.bound for la in b.layers})
    colours = dict(zip(bound_names, plt.cm.tab10.colors, strict=False))
    for name in bound_names:
        pts = [(2 * la.macs / max(1, la.ddr_bytes_read + la.ddr_bytes_written),
                2 * la.macs * hz / la.cycles) for la in b.layers
               if la.bound == name and la.macs and la.cycles]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, color=colours[name], label=name)
    ax.set(xscale="log", yscale="log", xlabel="operational intensity (ops per DDR byte)",
           ylabel="attained ops/s", title=f"Roofline: {title}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    roofline = directory / "roofline.png"
    fig.tight_layout()
    fig.savefig(roofline, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(8, len(b.layers) * 0.18), 5))
    idx = np.arange(len(b.layers))
    ax.bar(idx, [la.cycles for la in b.layers],
           color=[colours.get(la.bound, "grey") for la in b.layers])
    ax.set(xlabel="layer", ylabel="cycles", title=f"Cycles per layer: {title}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in bound_names]
    ax.legend(handles, bound_names, fontsize=8, title="bound")
    bars = directory / "layers.png"
    fig.tight_layout()
    fig.savefig(bars, dpi=120)
    plt.close(fig)
    return [roofline, bars]
