"""benchmarks/budget.py (the planning estimate of engine shapes): its row for the built
pynq-z2 design counts the DSP48E1 the committed synthesis report found, and its blocks are
MobileNetV2-224's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _budget():
    spec = importlib.util.spec_from_file_location("budget", ROOT / "benchmarks" / "budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_built_row_counts_the_reported_dsp():
    budget = _budget()
    label, cols, dw_lanes, engine_lanes, _, dw_dsps, lut_lanes = budget.SHAPES[0]
    assert "built" in label
    report = json.loads((ROOT / "bitstreams" / "reports" / "pynq-z2.json").read_text())
    assert budget.dsps(cols, dw_lanes, engine_lanes, dw_dsps, lut_lanes,
                       budget.BUILT.pw_rows) == report["dsp"]


def test_blocks_are_mobilenet_v2():
    budget = _budget()
    blocks = budget.blocks()
    assert len(blocks) == 17 and sum(residual for *_, residual in blocks) == 10
    assert blocks[0][:5] == (112, 32, 32, 16, 1) and blocks[-1][:5] == (7, 160, 960, 320, 1)
    # the first block: 112x112, 32 -> 32 (no expand) -> 16; engine 112^2 * 2 * 1 steps,
    # DW 112^2 * 2 words of 3 cycles: DW-bound
    total, bounds = budget.estimate(16, 8, 16, 8)
    assert len(bounds) == 17 and bounds[0] == f"dw:{112 * 112 * 2 * 3 / 1000:.0f}k"
