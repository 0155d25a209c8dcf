"""What the passes pass on: a :class:`Unit` is a matched layer (one or more descriptors:
output tiles, input slices) with its :class:`Geometry` and array :class:`Stage`\\ s, made
by :func:`.match.match_units`, given its input slices by :func:`.tile.plan_slices` and
emitted by :func:`.emit.emit_descriptors`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import AcceleratorConfig
from ...hw.layout import expand_words
from .. import packing
from ..graph import Operator
from ..numerics import add_table


@dataclass
class Stage:
    """One array stage's weights (true channel order) and requantization; ``mult is None``
    for a ``RAW_OUT`` PW. ``op`` is the operator the stage computes (named in errors);
    ``w_zp`` the weight zero point already subtracted from ``w`` (FULLY_CONNECTED; named in
    errors)."""
    op: Operator
    w: np.ndarray
    bias: np.ndarray
    mult: np.ndarray | None
    shift: np.ndarray | None
    zp: int = 0
    lo: int = -128
    hi: int = 127
    w_zp: int = 0


def identity_stage(op: Operator, w: np.ndarray, channels: int) -> Stage:
    return Stage(op, w, np.zeros(channels, np.int64),
                 np.full(channels, packing.IDENTITY_MULT),
                 np.full(channels, packing.IDENTITY_SHIFT))


@dataclass
class Geometry:
    source: str          # tensor the line buffer reads (after folding a PAD)
    h: int
    w: int
    c: int
    k: int
    stride: int
    dilation: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    lb_zp: int
    pad_op: Operator | None = None


@dataclass
class SpaceToDepth:
    """A stem compiled by space-to-depth (:func:`space_to_depth_conv`): the model input is
    stored in ``block x block`` blocks, ``geo`` is the stride-1 convolution the descriptor
    runs over it with the rearranged weights ``w``, ``op_geo`` the operator's own geometry
    (the layer report's)."""
    block: int
    op_geo: Geometry
    geo: Geometry
    w: np.ndarray


def residual_fields(q: dict, a: str, b: str) -> dict:
    """The ``add_*`` descriptor fields and the packed ADD table of a residual ADD whose
    ``add_quant_params`` are ``q``; ``a``, ``b``: which TFLite input (``"1"`` or ``"2"``) is
    the main path (the PW output) and which the residual."""
    table = add_table(q[f"in{a}_zp"], q[f"mult{a}"], q[f"shift{a}"], q[f"in{b}_zp"],
                      q[f"mult{b}"], q[f"shift{b}"], q["out_mult"])
    return dict(add_zp=q["out_zp"], add_min=q["act_min"], add_max=q["act_max"],
                add_out_shift=q["out_shift"], table=packing.pack_add_table(table))


@dataclass
class Unit:
    """A matched layer: one or more descriptors (output tiles, input slices)."""
    ops: list[Operator]
    input: str
    output: str
    geo: Geometry
    pw: Stage
    depth_mult: int = 1
    conv: bool = False
    expand: Stage | None = None
    dw: Stage | None = None
    fc: dict | None = None          # RAW_OUT: the fc_requant host step's parameters
    residual: str | None = None
    add: dict | None = None         # RESIDUAL: the add_* fields and "table" (packed)
    out_shape: tuple[int, ...] = ()
    macs: int = 0
    note: str = ""
    slices: list[tuple[int, int]] | None = None   # input channel slices (pool / FC)
    in_c: int = 0                                   # channels of ``input`` (0: geo.c)
    stem: SpaceToDepth | None = None               # a CONV over the s2d model input
    pool_pixels: int = 0    # a global pool streamed over this many pixels (``POOL``)

    def __post_init__(self):
        self.in_c = self.in_c or self.geo.c

    @property
    def is_pool(self) -> bool:
        """An AVERAGE_POOL_2D or MEAN (its DW stage), with or without a fused FC."""
        return self.dw is not None and self.dw.op.opcode in ("AVERAGE_POOL_2D", "MEAN")

    @property
    def stages(self) -> list[str]:
        out = ["EXPAND"] if self.expand is not None else []
        out.append("CONV" if self.conv else "POOL" if self.pool_pixels else "DW")
        out.append("PW")
        if self.fc is not None:
            out.append("RAW_OUT")
        if self.residual is not None:
            out.append("RESIDUAL")
        return out


def engine_words(cfg: AcceleratorConfig, u: Unit, g_in: int) -> tuple[int, int, int]:
    """``(exp_groups, mid_groups, expand weight words)`` of unit ``u`` on ``g_in`` input
    groups: the line buffer's groups, the PW weight words per PW output group, and the
    expand weights beside them in the engine."""
    P = cfg.dw_lanes
    g_e = packing.padded(u.expand.w.shape[0], P) // P if u.expand is not None else g_in
    mid_groups = u.geo.k * u.geo.k * g_e if u.conv else g_e * u.depth_mult
    return g_e, mid_groups, expand_words(cfg, g_e) * g_in if u.expand is not None else 0


def fits_engine(cfg: AcceleratorConfig, u: Unit, out_channels: int) -> bool:
    """One descriptor of unit ``u`` with ``out_channels`` outputs has its expand and PW
    weights in the engine's weight memory together (``engine_weight_depth`` words)."""
    _, mid_groups, exp_words = engine_words(
        cfg, u, packing.padded(u.in_c, cfg.dw_lanes) // cfg.dw_lanes)
    out_groups = packing.padded(out_channels, cfg.pw_cols) // cfg.pw_cols
    return exp_words + mid_groups * out_groups <= cfg.engine_weight_depth
