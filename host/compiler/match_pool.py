"""Matching pools, ``FULLY_CONNECTED`` and ``ADD`` (:func:`.match.match_units`): an
``AVERAGE_POOL_2D`` or ``MEAN`` as an all-ones DW dividing exactly
(:func:`exact_division_multiplier`): a global one (any ``H x W``) streamed through a 1x1 DW
whose requantizer sums every pixel (``DescFlag.POOL``), a square window with stride 1 or 2
as a ``k x k`` DW; with a following ``FULLY_CONNECTED`` fused as its ``RAW_OUT`` PW when the
FC's outputs fit one output tile; an FC alone (identity DW); an ADD not fused into a block
(identity DW and PW, ``RESIDUAL``).
"""

from __future__ import annotations

import numpy as np

from .. import packing
from ..graph import Operator, UnsupportedModelError
from ..numerics import multiply_by_quantized_multiplier, quantize_multiplier
from ..reference import (
    add_quant_params,
    fully_connected_params,
    fused_activation_range,
    mean_multiplier,
    padding_amounts,
)
from .checks import activation_zp, fail, fused_activation, op_name, pair_option
from .program import pixel_count
from .units import Geometry, Stage, Unit, fits_engine, identity_stage, residual_fields
from .walk import Walk


def exact_division_multiplier(n: int) -> tuple[int, int]:
    """``(mult, shift)`` with ``MBQM(s, mult, shift) == round_half_away(s / n)`` for every
    ``s`` in ``[-128*n, 127*n]`` (the sums of a window of ``n`` int8 values), verified
    exhaustively: the average pool's division (``reference.average_pool2d``) as a requant.

    Candidates are ``mult ~ 2**(31+r) / n`` with a right shift ``r`` (shift ``-r``), nearest
    values first; ``n = 1`` is the identity ``(2**30, 1)``. Raises ``ValueError`` if none
    fits.
    """
    if n < 1:
        raise ValueError(f"'n' must be positive, not {n}")
    if n == 1:
        return packing.IDENTITY_MULT, packing.IDENTITY_SHIFT
    s = np.arange(-128 * n, 127 * n + 1, dtype=np.int64)
    q = (np.abs(s) + n // 2) // n
    want = np.where(s > 0, q, -q)
    for r in range(0, 32):
        ideal = (1 << (31 + r)) / n
        if ideal >= 1 << 31:
            break
        base = int(ideal)
        for mult in sorted(range(base - 2, base + 4), key=lambda v: abs(v - ideal)):
            if 0 < mult < 1 << 31 and np.array_equal(
                    multiply_by_quantized_multiplier(s, mult, -r), want):
                return mult, -r
    raise ValueError(f"no (mult, shift) divides every window sum by {n} as TFLite rounds")


def match_pool(walk: Walk, op: Operator) -> None:
    """An ``AVERAGE_POOL_2D`` or ``MEAN`` (all-ones DW, identity PW; global: streamed,
    ``POOL``), with the ``FULLY_CONNECTED`` after it as its PW if that fits one output
    tile."""
    cfg = walk.cfg
    x = walk.need_stored(op, op.inputs[0])
    h, w, c = walk.image(op, x)
    x_t, y = walk.graph.tensor(x), walk.graph.tensor(op.outputs[0])
    in_zp, out_zp = activation_zp(op, x_t), activation_zp(op, y)
    if op.opcode == "AVERAGE_POOL_2D":
        o = op.options
        fh, fw = int(o["filter_h"]), int(o["filter_w"])
        sh, sw = pair_option(op, "stride")
        if o.get("padding", "VALID") != "VALID":
            raise fail(op, f"padding {o.get('padding')}: dwsep runs VALID average pools "
                           "(SAME divides by a count that varies at the edges)")
        if (fh, fw) == (h, w):
            k, stride, oh, ow = 1, 1, 1, 1      # streamed: the requantizer sums the pixels
        elif fh == fw and sh == sw and sh in (1, 2):
            k, stride = fh, sh
            try:
                _, _, oh = padding_amounts("VALID", h, k, stride, 1)
                _, _, ow = padding_amounts("VALID", w, k, stride, 1)
            except UnsupportedModelError as e:
                raise fail(op, str(e)) from None
        else:
            raise fail(op, f"filter {fh}x{fw} stride {sh}x{sw} on a {h}x{w} input: dwsep "
                           "runs global pools and square windows with stride 1 or 2")
        n = fh * fw
        try:
            mult, shift = exact_division_multiplier(n)
        except ValueError as e:
            raise fail(op, str(e)) from None
        lo, hi = fused_activation_range(fused_activation(op), float(y.scale[0]), out_zp,
                                        op_name(op))
        bias, zp = 0, 0
    else:
        axes = walk.graph.tensor(op.inputs[1]).data
        axes = sorted({int(a) % 4 for a in np.asarray(axes).reshape(-1)}) if (
            axes is not None) else None
        if axes != [1, 2] or len(x_t.shape) != 4:
            raise fail(op, f"axes {axes} of a {len(x_t.shape)}-d input: dwsep runs MEAN "
                           "over height and width (axes 1, 2) of an NHWC tensor")
        k, stride, oh, ow, n = 1, 1, 1, 1, h * w
        mult, shift = mean_multiplier(*quantize_multiplier(
            float(x_t.scale[0]) / float(y.scale[0])), n)
        bias, zp, lo, hi = -in_zp * n, out_zp, -128, 127
    if k > cfg.k_max:
        raise fail(op, f"pooling window {k}x{k} exceeds k_max={cfg.k_max} of config "
                       f"{cfg.name!r}")
    walk.claim(op)
    geo = Geometry(x, h, w, c, k, stride, 1, 0, 0, oh, ow, 0)
    dw = Stage(op, np.ones((k, k, c), np.int8), np.full(c, bias, np.int64), np.full(c, mult),
               np.full(c, shift), zp, lo, hi)
    unit = Unit([op], x, op.outputs[0], geo,
                identity_stage(op, np.eye(c, dtype=np.int8), c), dw=dw,
                out_shape=(oh, ow, c), macs=oh * ow * c * n,
                pool_pixels=h * w if (oh, ow) == (1, 1) and k == 1 else 0)
    fc, reshapes = walk.through_reshapes(op.outputs[0])
    if (fc is not None and fc.opcode == "FULLY_CONNECTED" and oh * ow == 1
            and _fc_fits_one_tile(walk, fc)):
        walk.claim(*reshapes, fc)
        unit.ops += [*reshapes, fc]
        _fc_stage(walk, unit, fc, c)
    walk.add_unit(unit)


def _fc_fits_one_tile(walk: Walk, fc: Operator) -> bool:
    """The outputs of FULLY_CONNECTED ``fc`` fit one output tile (``out_channels_max``).

    Only then is it fused into the pool before it: each output tile of a fused pool + FC
    re-reads the pool's input and pools it again, while a pool of its own writes the
    pooled vector once and the FC's tiles read only that."""
    return int(walk.graph.tensor(fc.inputs[1]).shape[0]) <= walk.cfg.out_channels_max


def _fc_stage(walk: Walk, unit: Unit, fc: Operator, c: int) -> None:
    """Make ``unit``'s PW the FULLY_CONNECTED ``fc`` with ``RAW_OUT``."""
    try:
        p = fully_connected_params(walk.graph, fc)
    except UnsupportedModelError as e:
        raise fail(fc, str(e).split(": ", 1)[-1]) from None
    units, depth = p["w"].shape
    if depth != c:
        raise fail(fc, f"weights of depth {depth} for an input of {c} channels per "
                       "pixel; dwsep runs FULLY_CONNECTED per pixel (or on one pixel)")
    w = p["w"].astype(np.int64) - p["w_zp"]   # range: _check_packed_weights
    bias = np.zeros(units, np.int64) if p["bias"] is None else np.asarray(p["bias"],
                                                                              np.int64)
    pixels = unit.out_shape[0] * unit.out_shape[1]
    unit.pw = Stage(fc, w, np.zeros(units, np.int64), None, None, w_zp=p["w_zp"])
    unit.fc = dict(bias=bias - p["in_zp"] * w.sum(axis=1), scale=np.asarray(p["scale"]),
                   out_zp=p["out_zp"], act_min=p["act_min"], act_max=p["act_max"],
                   rows=pixels, units=units)
    unit.output = fc.outputs[0]
    unit.out_shape = (*unit.out_shape[:2], units)
    unit.macs += pixels * c * units
    if not _feeds_only_output(walk, fc.outputs[0]):
        raise fail(fc, "its output feeds other operators; FULLY_CONNECTED requantizes on "
                       "the host after the hardware run, so it must give the model output")


def _feeds_only_output(walk: Walk, name: str) -> bool:
    """``name`` reaches the model output only through RESHAPEs and feeds nothing else."""
    for op in walk.consumers.get(name, []):
        if op.opcode != "RESHAPE" or not _feeds_only_output(walk, op.outputs[0]):
            return False
    return True


def match_fc(walk: Walk, op: Operator) -> None:
    """A ``FULLY_CONNECTED`` alone: identity DW, the FC as a ``RAW_OUT`` PW."""
    x = walk.need_stored(op, op.inputs[0])
    h, w, c = walk.image(op, x) if len(walk.graph.tensor(x).shape) == 4 else (
        1, pixel_count(walk.graph.tensor(x).shape), int(walk.graph.tensor(x).shape[-1]))
    walk.claim(op)
    zp = activation_zp(op, walk.graph.tensor(x))
    geo = Geometry(x, h, w, c, 1, 1, 1, 0, 0, h, w, zp)
    unit = Unit([op], x, op.outputs[0], geo,
                identity_stage(op, np.eye(c, dtype=np.int8), c),
                dw=identity_stage(op, np.ones((1, 1, c), np.int8), c), out_shape=(h, w, c))
    _fc_stage(walk, unit, op, c)
    walk.add_unit(unit)


def match_add(walk: Walk, op: Operator) -> None:
    """An ``ADD`` no block fused: identity DW and PW, ``RESIDUAL``."""
    if len(op.inputs) != 2:
        raise fail(op, f"has {len(op.inputs)} inputs, not 2")
    a, b = (walk.need_stored(op, n) for n in op.inputs)
    shapes = [tuple(walk.graph.tensor(n).shape) for n in (a, b, op.outputs[0])]
    if len(set(shapes)) != 1:
        raise fail(op, f"input shapes {[list(s) for s in shapes[:2]]}: dwsep runs ADD of "
                       "equal shapes (no broadcasting)")
    h, w, c = walk.image(op, a)
    if packing.padded(c, walk.cfg.pw_cols) > walk.cfg.out_channels_max:
        raise fail(op, f"residual ADD of {c} channels: the residual stage cannot be tiled "
                       f"and out_channels_max={walk.cfg.out_channels_max} of config "
                       f"{walk.cfg.name!r} is smaller (a residual ADD that does not fuse "
                       "is not supported beyond that)")
    walk.check_mid(op, c, 1, "ADD channels")
    fused_activation(op)
    activation_zp(op, walk.graph.tensor(op.outputs[0]))
    q = add_quant_params(walk.graph, op)
    walk.claim(op)
    geo = Geometry(a, h, w, c, 1, 1, 1, 0, 0, h, w, 0)
    unit = Unit([op], a, op.outputs[0], geo,
                identity_stage(op, np.eye(c, dtype=np.int8), c),
                dw=identity_stage(op, np.ones((1, 1, c), np.int8), c), out_shape=(h, w, c),
                residual=b)
    if not fits_engine(walk.cfg, unit, c):
        raise fail(op, f"residual ADD of {c} channels: its identity weights "
                       f"({(packing.padded(c, walk.cfg.dw_lanes) // walk.cfg.dw_lanes)} x "
                       f"{packing.padded(c, walk.cfg.pw_cols) // walk.cfg.pw_cols} words) "
                       f"exceed engine_weight_words={walk.cfg.engine_weight_depth} of "
                       f"config {walk.cfg.name!r}, and the residual stage cannot be tiled")
    unit.add = residual_fields(q, "1", "2")
    walk.add_unit(unit)
