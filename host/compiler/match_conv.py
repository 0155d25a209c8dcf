"""Matching the convolutions (:func:`.match.match_units`): a ``k x k`` ``CONV_2D`` in
``CONV`` mode (a stem by space-to-depth, :func:`space_to_depth_conv`), the blocks
``[expand ->] [PAD ->] DEPTHWISE_CONV_2D -> 1x1 CONV_2D [-> ADD]`` (an expand too wide for
the config split off as its own unit), a lone 1x1 ``CONV_2D`` (identity DW) and a lone
``DEPTHWISE_CONV_2D`` (identity PW).
"""

from __future__ import annotations

import numpy as np

from .. import packing
from ..graph import Operator
from ..reference import add_quant_params
from .checks import activation_zp, fail, fused_activation, pair_option
from .units import Geometry, SpaceToDepth, Unit, fits_engine, identity_stage, residual_fields
from .walk import PADS, Walk


def space_to_depth_conv(w: np.ndarray, pad_top: int, pad_left: int, block: int = 2
                        ) -> tuple[np.ndarray, int, int]:
    """A stride-``b`` (``b = block``), dilation-1 convolution as a stride-1 one over the
    input's :func:`packing.space_to_depth` form: ``(w2, pad_top2, pad_left2)``.

    Output ``(oy, ox)`` of the original reads row ``y = b*oy - pad_top + ky`` (``ky < k``),
    which is row ``Y = floor(y/b)``, sub-row ``i = y mod b`` of the space-to-depth input;
    ``Y = oy - pad_top2 + KY`` with ``pad_top2 = ceil(pad_top/b)`` and ``KY =
    floor((ky - pad_top)/b) + pad_top2``, the same for columns (``j``, ``KX``). So::

        w2[o, KY, KX, (i*b + j)*C + c] = w[o, ky, kx, c]   for every ky, kx < k,
        w2 = 0 elsewhere (input positions no original tap reads),

    a square ``k2 x k2`` kernel, ``k2`` the larger of the row and column extents
    ``floor((k - 1 - pad)/b) + ceil(pad/b) + 1`` (``ceil((k+1)/2)`` for an odd ``k`` and
    ``b = 2``: 3x3 -> 2x2, 5x5 -> 3x3). Taps outside either image hold the padding value
    in both forms, and ``w2`` has the same nonzero weights (so the same bias folding and
    requantizer bounds): the outputs are identical.

    Parameters
    ----------
    w:
        ``[C_out, k, k, C]`` (TFLite ``CONV_2D`` layout).
    pad_top, pad_left:
        The original convolution's padding before the first row and column.
    block:
        The original stride ``b``.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[1] != w.shape[2] or block < 1 or min(pad_top, pad_left) < 0:
        raise ValueError(f"space_to_depth_conv takes weights [C_out, k, k, C], a block >= 1 "
                         f"and pads >= 0, not {list(w.shape)}, {block}, ({pad_top}, "
                         f"{pad_left})")
    c_out, k, _, c = w.shape
    top, left = -(-pad_top // block), -(-pad_left // block)
    rows = [divmod(ky - pad_top + block * top, block) for ky in range(k)]    # (KY, i)
    cols = [divmod(kx - pad_left + block * left, block) for kx in range(k)]  # (KX, j)
    k2 = 1 + max(rows[-1][0], cols[-1][0])
    w2 = np.zeros((c_out, k2, k2, block * block * c), w.dtype)
    for ky, (y, i) in enumerate(rows):
        for kx, (x, j) in enumerate(cols):
            sub = (i * block + j) * c
            w2[:, y, x, sub:sub + c] = w[:, ky, kx]
    return w2, top, left


def match_conv(walk: Walk, op: Operator) -> None:
    """A ``CONV_2D``: the expand of a block, a lone 1x1 (identity DW), or ``k x k`` in
    ``CONV`` mode."""
    wt = walk.graph.tensor(op.inputs[1])
    if len(wt.shape) != 4:
        raise fail(op, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                       "[C_out, k, k, C_in]")
    kh, kw = int(wt.shape[1]), int(wt.shape[2])
    if kh != kw:
        raise fail(op, f"kernel {kh}x{kw} is not square; dwsep runs square kernels only")
    if kh == 1 and _expand_block(walk, op):
        return
    if kh == 1:
        _standalone_pw(walk, op)
    else:
        _conv_mode(walk, op, kh)


def _conv_mode(walk: Walk, op: Operator, k: int) -> None:
    cfg, P = walk.cfg, walk.cfg.dw_lanes
    geo = walk.window(op, k)
    x = walk.need_stored(op, walk.claim_geometry(op, geo))
    if int(walk.graph.tensor(op.inputs[1]).shape[3]) != geo.c:
        raise fail(op, f"weights have {walk.graph.tensor(op.inputs[1]).shape[3]} input "
                       f"channels for an input of {geo.c}")
    stage = walk.conv_stage(op)
    stem = _space_to_depth(walk, op, geo, stage.w)
    run, form, note = geo, "", ""
    if stem is not None:
        run = stem.geo
        form = (f" (the space-to-depth form of the {k}x{k} stride-{stem.block} "
                f"convolution over {geo.c} channels)")
        note = (f"input stored space-to-depth: runs as a {run.k}x{run.k} stride-1 CONV "
                f"over {run.h}x{run.w}x{run.c}")
    walk.check_window(op, run, form)
    groups = packing.padded(run.c, P) // P
    if run.k * run.k * groups > cfg.mid_groups_max:
        raise fail(op, f"{run.k}x{run.k} convolution over {run.c} channels{form} needs "
                       f"k*k*ceil(C/{P}) = {run.k * run.k * groups} PW input words per "
                       f"pixel, more than mid_channels_max/dw_lanes={cfg.mid_groups_max} "
                       f"of config {cfg.name!r}")
    c_out = stage.w.shape[0]
    if stem is not None:
        walk.input_block = stem.block
    walk.add_unit(Unit(
        [op] + ([geo.pad_op] if geo.pad_op else []), x, op.outputs[0], run, stage,
        conv=True, out_shape=(geo.out_h, geo.out_w, c_out),
        macs=geo.out_h * geo.out_w * k * k * geo.c * c_out, note=note, stem=stem))


def _space_to_depth(walk: Walk, op: Operator, geo: Geometry, w: np.ndarray
                    ) -> SpaceToDepth | None:
    """The stem ``op`` (``geo``, weights ``w``) as a stride-1 convolution over the model
    input stored space-to-depth in 2x2 blocks (:func:`space_to_depth_conv`), or ``None``
    where that does not apply: the transform needs stride 2 and dilation 1, the model
    input read by ``op`` (or the PAD folded into it) and nothing else, ``4*C <= P`` (the
    blocks fit one lane group) and padding with the input zero point (the host fills
    the blocks an odd edge cuts with it)."""
    b, name = 2, walk.graph.inputs[0]
    reader = geo.pad_op or op
    readers = [r.index for r in walk.consumers.get(name, [])]
    if (geo.stride != b or geo.dilation != 1 or geo.source != name
            or readers != [reader.index] or name in walk.graph.outputs
            or b * b * geo.c > walk.cfg.dw_lanes
            or geo.lb_zp != int(walk.graph.tensor(name).zero_point[0])):
        return None
    w2, top, left = space_to_depth_conv(w, geo.pad_top, geo.pad_left, b)
    run = Geometry(geo.source, -(-geo.h // b), -(-geo.w // b), b * b * geo.c,
                   w2.shape[1], 1, 1, top, left, geo.out_h, geo.out_w, geo.lb_zp,
                   geo.pad_op)
    return SpaceToDepth(b, geo, run, w2)


def _standalone_pw(walk: Walk, op: Operator, note: str = "") -> None:
    geo = walk.geometry(op, 1)
    x = walk.need_stored(op, walk.claim_geometry(op, geo))
    stage = walk.conv_stage(op)
    c_out, c_in = stage.w.shape
    if c_in != geo.c:
        raise fail(op, f"weights have {c_in} input channels for an input of {geo.c}")
    walk.check_mid(op, geo.c, 1, "input channels")
    walk.add_unit(Unit(
        [op] + ([geo.pad_op] if geo.pad_op else []), x, op.outputs[0], geo, stage,
        dw=identity_stage(op, np.ones((1, 1, geo.c), np.int8), geo.c),
        out_shape=(geo.out_h, geo.out_w, c_out),
        macs=geo.out_h * geo.out_w * c_in * c_out, note=note))


def _expand_block(walk: Walk, e: Operator) -> bool:
    """Match ``e`` as the expand of ``e -> [PAD] -> DW -> 1x1 CONV_2D``; emit the block."""
    if pair_option(e, "stride") != (1, 1) or walk.producer.get(e.inputs[0], e).opcode in PADS:
        return False
    user = walk.sole_consumer(e.outputs[0])
    if user is not None and user.opcode in PADS:
        user = walk.sole_consumer(user.outputs[0])
    if user is None or user.opcode != "DEPTHWISE_CONV_2D":
        return False
    pw = walk.sole_consumer(user.outputs[0])
    if not walk.is_pointwise(pw):
        return False
    c_in = int(walk.graph.tensor(e.inputs[1]).shape[3])
    groups = packing.padded(c_in, walk.cfg.dw_lanes) // walk.cfg.dw_lanes
    if groups > walk.cfg.expand_in_groups_max:
        _standalone_pw(walk, e, note=f"expand of the block at operator {user.index} split: "
                                     f"{c_in} input channels exceed expand_channels_max="
                                     f"{walk.cfg.expand_channels_max}")
        _block(walk, user, pw)
    else:
        _block(walk, user, pw, e)
    return True


def match_depthwise(walk: Walk, op: Operator) -> None:
    """A ``DEPTHWISE_CONV_2D``: a block with the 1x1 ``CONV_2D`` reading it, else alone
    (identity PW)."""
    pw = walk.sole_consumer(op.outputs[0])
    if walk.is_pointwise(pw):
        _block(walk, op, pw)
    else:
        _dw_alone(walk, op)


def _dw_geometry(walk: Walk, dw: Operator) -> tuple[Geometry, int]:
    wt = walk.graph.tensor(dw.inputs[1])
    if len(wt.shape) != 4 or wt.shape[0] != 1:
        raise fail(dw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                       "[1, k, k, C*m]")
    kh, kw = int(wt.shape[1]), int(wt.shape[2])
    if kh != kw:
        raise fail(dw, f"kernel {kh}x{kw} is not square; dwsep runs square kernels only")
    geo = walk.geometry(dw, kh)
    if int(wt.shape[3]) % geo.c:
        raise fail(dw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                       f"[1, k, k, {geo.c}*m]")
    m = int(wt.shape[3]) // geo.c
    walk.check_mid(dw, geo.c, m, "depthwise output channels", kh)
    return geo, m


def _block(walk: Walk, dw: Operator, pw: Operator, e: Operator | None = None) -> None:
    geo, m = _dw_geometry(walk, dw)
    ops = [dw, pw]
    if e is not None:
        walk.claim(e)
        ops.insert(0, e)
        expand = walk.conv_stage(e)
        x = walk.need_stored(e, e.inputs[0])
        eh, ew, ec = walk.image(e, x)
        if expand.w.shape[1] != ec:
            raise fail(e, f"weights have {expand.w.shape[1]} input channels for an input "
                          f"of {ec}")
        if (eh, ew, expand.w.shape[0]) != (geo.h, geo.w, geo.c):
            raise fail(e, "expand output does not match the depthwise input")
        walk.claim_geometry(dw, geo)
    else:
        expand = None
        x = walk.need_stored(dw, walk.claim_geometry(dw, geo))
    if geo.pad_op is not None:
        ops.insert(-1, geo.pad_op)
    walk.claim(pw)
    dw_stage = walk.conv_stage(dw)
    pw_stage = walk.conv_stage(pw)
    c_mid = geo.c * m
    if pw_stage.w.shape[1] != c_mid:
        raise fail(pw, f"weights have {pw_stage.w.shape[1]} input channels for the "
                       f"{c_mid} depthwise outputs")
    c_out = pw_stage.w.shape[0]
    pixels = geo.out_h * geo.out_w
    unit = Unit(sorted(ops, key=lambda op: op.index), x, pw.outputs[0], geo, pw_stage,
                depth_mult=m, expand=expand, dw=dw_stage,
                in_c=expand.w.shape[1] if expand is not None else 0,
                out_shape=(geo.out_h, geo.out_w, c_out),
                macs=pixels * c_mid * (geo.k * geo.k + c_out)
                + (geo.h * geo.w * expand.w.size if expand is not None else 0))
    _fuse_residual(walk, unit, pw)
    walk.add_unit(unit)


def _fuse_residual(walk: Walk, unit: Unit, pw: Operator) -> None:
    add = walk.sole_consumer(pw.outputs[0])
    if add is None or add.opcode != "ADD" or len(add.inputs) != 2:
        return
    others = [n for n in add.inputs if n != pw.outputs[0]]
    if len(others) != 1:
        return
    other = walk.resolve(others[0])
    y = walk.graph.tensor(add.outputs[0])
    shapes = {tuple(walk.graph.tensor(n).shape) for n in (pw.outputs[0], other,
                                                          add.outputs[0])}
    c_out = unit.out_shape[2]
    if (len(shapes) != 1 or other not in walk.stored
            or packing.padded(c_out, walk.cfg.pw_cols) > walk.cfg.out_channels_max
            or not fits_engine(walk.cfg, unit, c_out)):
        return  # an ADD descriptor of its own (the residual stage cannot be tiled)
    fused_activation(add)
    activation_zp(add, y)
    q = add_quant_params(walk.graph, add)
    a, b = ("1", "2") if add.inputs[0] == pw.outputs[0] else ("2", "1")
    unit.residual = other
    unit.add = residual_fields(q, a, b)
    unit.ops.append(add)
    unit.output = add.outputs[0]
    walk.claim(add)


def _dw_alone(walk: Walk, dw: Operator) -> None:
    geo, m = _dw_geometry(walk, dw)
    x = walk.need_stored(dw, walk.claim_geometry(dw, geo))
    stage = walk.conv_stage(dw)
    c_mid = geo.c * m
    walk.add_unit(Unit(
        [dw] + ([geo.pad_op] if geo.pad_op else []), x, dw.outputs[0], geo,
        identity_stage(dw, np.eye(c_mid, dtype=np.int8), c_mid), depth_mult=m,
        dw=stage,
        out_shape=(geo.out_h, geo.out_w, c_mid),
        macs=geo.out_h * geo.out_w * c_mid * geo.k * geo.k))
