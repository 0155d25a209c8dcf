"""The analytical cycle model (``sim/perf.py``) against the ``CYCLES`` register of the
Verilated accelerator (cocotbext-axi ``AxiRam``, no backpressure): equal to the cycle, since
without backpressure the run is deterministic and the model follows every latency."""

from __future__ import annotations

import numpy as np
import pytest

from dwsep.host.driver import Accelerator
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model
from dwsep.hw.config import get_config
from dwsep.sim.perf import (
    MemoryTiming,
    ideal_cycles,
    layer_cycles,
    layer_macs,
    program_cycles,
)

pytestmark = pytest.mark.verilator

#: cycles the model may differ from the RTL: none (see the module docstring)
TOLERANCE = 0


def layer(h, w, c, k, *, s=1, d=1, m=1, c_out=8, padding="SAME", seed=0) -> LayerSpec:
    return LayerSpec(h=h, w=w, c=c, depth_multiplier=m, kernel=k, stride=s, dilation=d,
                     padding=padding, dw_activation="RELU6", c_out=c_out,
                     pw_activation="NONE", seed=seed)


#: (spec, the bottleneck the model must name): k 1/3/5/7, stride 1/2, dilation 1/2,
#: depth multiplier 1/2, C < 8 and C > 8, SAME and VALID
LAYERS = {
    "k3_small_c_dw_bound": (layer(8, 8, 5, 3, c_out=8), "dw"),
    "k1_pw_bound": (layer(12, 10, 16, 1, c_out=64, seed=1), "pw"),
    "k5_s2_c24": (layer(16, 16, 24, 5, s=2, c_out=16, seed=2), "dw"),
    "k7_d2_m2": (layer(9, 11, 8, 7, d=2, m=2, c_out=8, seed=3), "dw"),
    "k1_s2_read_bound": (layer(10, 12, 8, 1, s=2, c_out=8, seed=4), "read"),
    "k3_s2_valid_c64": (layer(20, 20, 64, 3, s=2, c_out=64, padding="VALID", seed=5), "dw"),
}


@pytest.fixture(scope="module")
def rtl():
    with Accelerator("tiny", "rtl") as acc:
        yield acc


@pytest.mark.parametrize("name", LAYERS)
def test_layer_cycles_match_rtl(rtl, name):
    spec, bottleneck = LAYERS[name]
    model = dwsep_layer_model(spec)
    x = np.random.default_rng(len(name)).integers(-128, 128, (1, spec.h, spec.w, spec.c),
                                                  dtype=np.int8)
    rtl.run(model, x)
    total, (est,) = program_cycles("tiny", rtl.compile(model))
    print(f"{name}: rtl {rtl.last_stats['cycles']} model {total} {est}")
    assert abs(total - rtl.last_stats["cycles"]) <= TOLERANCE
    assert est.bottleneck == bottleneck
    assert est.total == est.fetch + sum(est.loads.values()) + est.run == total


def test_program_of_three_layers(rtl):
    """Layers follow each other through NEXT -> FETCH_CMD: the program is the sum."""
    from test_driver import chain

    g = chain(3, 7)
    x = np.random.default_rng(7).integers(-128, 128, g.input.shape, dtype=np.int8)
    rtl.run(g, x)
    total, layers = program_cycles("tiny", rtl.compile(g))
    assert len(layers) == 3
    assert abs(total - rtl.last_stats["cycles"]) <= TOLERANCE


def _desc(**over):
    d = dict(kernel=3, stride=1, dilation=1, depth_mult=1, pad_top=1, pad_left=1, in_h=8,
             in_w=8, in_groups=1, mid_groups=1, out_h=8, out_w=8, out_groups=1)
    d.update(over)
    return d


def test_breakdown_terms():
    """Fetch and loads follow the documented DMA and memory latencies; a slower memory
    costs its extra latency once per read command and once at the last write response."""
    cfg = get_config("tiny")
    est = layer_cycles(cfg, _desc())
    # FETCH_CMD + (CMD_TO_AR 2 + read 2 + R_TO_DATA 1 + 16 beats - 1) + SIZES + CHECK
    assert est.fetch == 1 + 20 + 2
    # 9 DW weight words of 1 beat, 1 DW record of 9 beats, 1 PW word of 8 beats, 9 beats,
    # each with its LOAD_NEXT cycle; LOAD_NEXT skips the two expand tables, then ends
    assert est.loads == {"dw_weights": 16, "dw_table": 16, "pw_weights": 15, "pw_table": 16,
                         "skipped": 3}
    slow = layer_cycles(cfg, _desc(), mem_latency=MemoryTiming(read=12, write_response=7))
    assert slow.fetch == est.fetch + 10
    assert slow.loads == {k: v + (10 if k != "skipped" else 0) for k, v in est.loads.items()}
    assert slow.total == est.total + 6 * 10 + 5


def test_bottleneck_and_ideal():
    cfg = get_config("tiny")
    pw_bound = layer_cycles(cfg, _desc(kernel=1, pad_top=0, pad_left=0, out_groups=8))
    assert pw_bound.bottleneck == "pw"
    assert pw_bound.stage_cycles == {"read": 64, "dw": 64, "pw": 512, "write": 512}
    assert layer_macs(cfg, _desc()) == {"dw": 64 * 8 * 9, "pw": 64 * 8 * 8}
    assert ideal_cycles(72 * 9, cfg) == 72 * 9 / cfg.macs
