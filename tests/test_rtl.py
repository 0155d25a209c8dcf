"""The generated accelerator in Verilator, driven by the same driver code as the board:
random DW + PW layers from real ``.tflite`` files, bit-exact with LiteRT BUILTIN_REF, with
and without random backpressure on every AXI and AXI-Lite channel (the DDR model
``sim/ddr_model.sv`` as DDR, cocotbext-axi AxiLiteMaster for the registers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import chain

from dwsep.host.driver import Accelerator
from dwsep.host.tflite_writer import (
    LayerSpec,
    dwsep_layer_model,
    random_layer_spec,
    single_op_model,
)
from dwsep.sim.oracle import litert_run

pytestmark = pytest.mark.verilator

N_LAYERS = 24
BACKPRESSURE_EVERY = 4  # every 4th layer runs with random pauses on all AXI channels


def issue_layer(seed: int, *, small: bool) -> LayerSpec:
    """A random layer from the ranges the issue names: k in {1,3,5,7}, stride 1/2,
    dilation 1/2, SAME/VALID, NONE/RELU/RELU6, H, W 4..32, C 1..64, C_out 1..64 (smaller
    sizes for backpressure runs, where Python acts on every cycle)."""
    rng = np.random.default_rng(seed)
    max_hw, max_c = (12, 24) if small else (32, 64)
    spec = random_layer_spec(rng, k_choices=(1, 3, 5, 7), max_hw=max_hw, max_c=max_c,
                             max_c_out=max_c, max_depth_multiplier=2, extreme_fraction=0.1)
    lo = spec.effective_kernel if spec.padding == "VALID" else 4
    return dataclasses.replace(spec, h=max(spec.h, lo, 4), w=max(spec.w, lo, 4))


@pytest.mark.parametrize("seed", range(N_LAYERS))
def test_random_layer_bit_exact(rtl, reference, seed):
    backpressure = seed % BACKPRESSURE_EVERY == BACKPRESSURE_EVERY - 1
    spec = issue_layer(seed, small=backpressure)
    model = dwsep_layer_model(spec)
    x = np.random.default_rng(10_000 + seed).integers(-128, 128, (1, spec.h, spec.w, spec.c),
                                                      dtype=np.int8)
    expected = litert_run(model, x)
    rtl.device.backpressure_seed = seed if backpressure else None
    try:
        y = rtl.run(model, x)
    finally:
        rtl.device.backpressure_seed = None
    print(f"seed {seed} backpressure={backpressure} {spec} cycles={rtl.last_stats['cycles']}")
    assert np.array_equal(y, expected), (spec, np.argwhere(y != expected)[:5])
    assert np.array_equal(reference.run(model, x), expected), spec
    assert rtl.last_stats["cycles"] > 0


@pytest.mark.parametrize(("h", "w", "k", "padding"), [(15, 12, 3, "SAME"), (12, 9, 5, "VALID")])
def test_space_to_depth_stem_bit_exact(rtl, h, w, k, padding):
    """A stride-2 k x k CONV_2D on a 2-channel model input runs as the stride-1 conv over the
    input stored space-to-depth (4*2 channels fill tiny's 8 lanes): 3x3 -> 2x2, 5x5 -> 3x3."""
    spec = LayerSpec(h=h, w=w, c=2, depth_multiplier=1, kernel=k, stride=2, dilation=1,
                     padding=padding, dw_activation="NONE", c_out=12, pw_activation="RELU6",
                     seed=k)
    model = single_op_model(spec, "CONV_2D")
    program = rtl.compile(model)
    assert program.input.space_to_depth == 2
    assert program.descriptors[0]["kernel"] == (k + 1) // 2
    x = np.random.default_rng(k).integers(-128, 128, (1, h, w, 2), dtype=np.int8)
    assert np.array_equal(rtl.run(model, x), litert_run(model, x)), spec


@pytest.mark.parametrize("seed", range(2))
def test_program_of_three_layers(rtl, seed):
    """A three-descriptor program: layer outputs go through DDR into the next layer."""
    from dwsep.host.reference import run_graph

    g = chain(3, 100 + seed)
    x = np.random.default_rng(seed).integers(-128, 128, g.input.shape, dtype=np.int8)
    assert np.array_equal(rtl.run(g, x), run_graph(g, x))
    # per-layer cycles (from the bench's polling) add up to the CYCLES register
    layers = rtl.last_stats["layers"]
    assert len(layers) == 3 and all(r["cycles"] > 0 for r in layers)
    assert sum(r["cycles"] for r in layers) == rtl.last_stats["cycles"]


def test_hung_hardware_times_out():
    """A run still busy after the simulated-cycle budget is reported as a timeout (the budget
    is checked at each status poll, every ``bench_top.POLL_CYCLES`` = 2048 cycles: this layer
    takes far longer)."""
    from dwsep.host.driver import DeviceTimeoutError

    spec = LayerSpec(h=32, w=32, c=64, depth_multiplier=1, kernel=7, stride=1, dilation=1,
                     padding="SAME", dw_activation="NONE", c_out=64, pw_activation="NONE",
                     seed=0)
    model = dwsep_layer_model(spec)
    x = np.zeros((1, spec.h, spec.w, spec.c), np.int8)
    with Accelerator("tiny", "rtl", max_cycles=512) as acc, \
            pytest.raises(DeviceTimeoutError, match="still busy after 512 simulated cycles"):
        acc.run(model, x)


def test_cli_runs_on_rtl(tmp_path):
    """The installed ``dwsep`` command on the rtl backend: output and stats files."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    spec = issue_layer(5, small=True)
    model = tmp_path / "layer.tflite"
    model.write_bytes(dwsep_layer_model(spec))
    x = np.random.default_rng(5).integers(-128, 128, (1, spec.h, spec.w, spec.c), np.int8)
    np.save(tmp_path / "in.npy", x)
    dwsep = shutil.which("dwsep", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [dwsep, "run", str(model), "--input", str(tmp_path / "in.npy"), "--output",
         str(tmp_path / "out.npy"), "--backend", "rtl", "--config", "tiny", "--stats",
         str(tmp_path / "stats.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "out.npy"), litert_run(model.read_bytes(), x))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["backend"] == "rtl" and stats["cycles"] > 0 and len(stats["layers"]) == 1
