"""Estimate: MobileNetV2-224's inverted-residual blocks on engine shapes not built yet.

A planning aid for the ``pynq-z2`` datapath (docs/PLAN-pynq-z2.md, "The DSP and BRAM budget
of C = 24"): each of the 17 blocks is taken at the pace of its slowest stage, with no loads,
fills or drains, so the figures are lower bounds of what a design of that shape could do,
comparable with each other, not cycle counts (``dwsep bench`` gives those for the design
as built). Stages, per block of input ``H x H x c``, expansion ``m = t*c``, output ``c'``,
stride ``s``:

* engine: ``H^2 * ceil(c/R) * ceil(m/C)`` expand steps plus ``(H/s)^2 * ceil(m/R) *
  ceil(c'/C)`` project steps (``R x C`` MACs a step);
* DW: ``(H/s)^2 * ceil(m/16)`` words of ``3`` cycles (a 3x3 kernel column a cycle);
* DW requantizer: the same words at ``16 / lanes`` cycles each;
* engine requantizer (expand and project words merged): its words at ``C / lanes`` cycles;
* expand path into the line buffer: ``H^2 * m / fill`` cycles (``fill`` bytes a cycle);
* ADD: ``(H/s)^2 * c' / add_lanes`` cycles on residual blocks.

Usage: ``python benchmarks/budget.py``
"""

from __future__ import annotations

from dwsep.hw.config import get_config

#: the built config the first row describes
BUILT = get_config("pynq-z2")

#: MobileNetV2's blocks: (expansion t, output channels, repeats, first stride)
V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]

#: the shapes compared: (label, C, DW requant lanes, engine requant lanes, LB fill bytes,
#: DSP48E1 per DW requant lane, engine requant lanes with their high product in LUTs);
#: DSP48E1 by :func:`dsps`; the ADD by table needs none
SHAPES = [
    (f"{BUILT.pw_rows}x{BUILT.pw_cols} engine, one engine requantizer of "
     f"{BUILT.erq_lanes} ({BUILT.engine_requant_lut_lanes} with LUT high products), DW "
     f"{BUILT.requant_lanes} at {BUILT.dw_requant_dsps} DSP48E1 a lane (built: pynq-z2)",
     BUILT.pw_cols, BUILT.requant_lanes, BUILT.erq_lanes, 8, BUILT.dw_requant_dsps,
     BUILT.engine_requant_lut_lanes),
    ("16x16, one engine requantizer of 8, DW 8 (session 7's first step)", 16, 8, 8, 8, 2, 0),
    ("16x24, DW 8, exp/pw 8 + 8", 24, 8, 16, 8, 2, 0),
    ("16x24, DW 8 at 1, one engine requantizer of 8 (session 7)", 24, 8, 8, 8, 1, 0),
    ("16x24, DW 4, one engine requantizer of 8", 24, 4, 8, 8, 2, 0),
    ("16x24, DW 8, one engine requantizer of 6", 24, 8, 6, 8, 2, 0),
    ("16x24, DW 8, engine 8, line buffer filled a word a cycle", 24, 8, 8, 16, 2, 0),
    ("16x24, DW 8 at 1, engine 12 (4 LUT), line buffer filled a word a cycle", 24, 8, 12,
     16, 1, 4),
]


def dsps(cols: int, dw_lanes: int, engine_lanes: int, dw_dsps: int,
         engine_lut_lanes: int, rows: int = 16) -> int:
    """DSP48E1 of a shape: two 1x1 MACs each, ``dw_dsps`` per DW requant lane, two per
    engine requant lane but one for those with their high product in LUTs."""
    return rows * cols // 2 + dw_dsps * dw_lanes + 2 * engine_lanes - engine_lut_lanes


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def blocks() -> list[tuple[int, int, int, int, int, bool, bool]]:
    """``(H, c, m, c', s, expand, residual)`` of each MobileNetV2-224 block."""
    h, c, out = 112, 32, []
    for t, c_out, n, stride in V2_BLOCKS:
        for i in range(n):
            s = stride if i == 0 else 1
            out.append((h, c, t * c, c_out, s, t != 1, s == 1 and c == c_out))
            h, c = h // s, c_out
    return out


def estimate(cols: int, dw_lanes: int, engine_lanes: int, fill: int, rows: int = 16,
             add_lanes: int = 2) -> tuple[int, list[str]]:
    """Summed block cycles and each block's bound for one shape."""
    total, bounds = 0, []
    for h, c, m, c_out, s, expand, residual in blocks():
        pixels, out = h * h, (h // s) ** 2
        stages = {
            "engine": (pixels * _ceil(c, rows) * _ceil(m, cols) if expand else 0)
            + out * _ceil(m, rows) * _ceil(c_out, cols),
            "dw": out * _ceil(m, 16) * 3,
            "dw_requant": out * _ceil(m, 16) * 16 / dw_lanes,
            "engine_requant": ((pixels * _ceil(m, cols) if expand else 0)
                               + out * _ceil(c_out, cols)) * cols / engine_lanes,
            "expand_fill": pixels * m / fill if expand else 0,
            "add": out * c_out / add_lanes if residual else 0,
        }
        bound = max(stages, key=stages.get)
        total += stages[bound]
        bounds.append(f"{bound}:{stages[bound] / 1000:.0f}k")
    return int(total), bounds


def main() -> None:
    for label, cols, dw_lanes, engine_lanes, fill, dw_dsps, lut_lanes in SHAPES:
        total, bounds = estimate(cols, dw_lanes, engine_lanes, fill)
        dsp = dsps(cols, dw_lanes, engine_lanes, dw_dsps, lut_lanes)
        print(f"{label}: {total:,} cycles, {dsp} DSP48E1")
        print("    " + " ".join(bounds))


if __name__ == "__main__":
    main()
