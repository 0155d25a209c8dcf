"""Pass 1, matching: :func:`match_units` groups the graph's operators into units, in the
model's operator order (docs/ARCHITECTURE.md, "Layer descriptor v2"):

* ``[PAD] + CONV_2D k x k`` (k > 1): one ``CONV`` unit, the PAD folded into the pads.
  A stem (stride 2, dilation 1, reading the model input, which nothing else reads, with
  ``4*C <= dw_lanes`` and padding with the input zero point) runs by space-to-depth: the host
  stores the input in 2x2 blocks (``TensorInfo.space_to_depth``,
  :func:`packing.space_to_depth`) and the unit is the equivalent stride-1 convolution
  (:func:`.match_conv.space_to_depth_conv`; 3x3 -> 2x2: 4 PW input words per pixel instead
  of 9, and a quarter of the input pixels). Limits are checked on that form; the report is
  the operator's;
* ``1x1 CONV_2D (expand) -> [PAD] -> DEPTHWISE_CONV_2D -> 1x1 CONV_2D (project) [-> ADD]``:
  one unit with ``EXPAND`` (and ``RESIDUAL`` when the ADD's other input is already in
  DDR and the output needs no tiling). When the expand does not fit the config
  (``expand_channels_max``) it runs as its own unit and the rest as a second one;
* ``[PAD] + DEPTHWISE_CONV_2D -> 1x1 CONV_2D [-> ADD]``: the same without ``EXPAND``;
* a standalone 1x1 ``CONV_2D``: identity DW (k = 1, weight 1, bias 0, identity requant);
* a ``DEPTHWISE_CONV_2D`` not followed by a 1x1 ``CONV_2D``: identity PW;
* ``AVERAGE_POOL_2D`` (VALID; global or square window) and ``MEAN`` over H, W: all-ones DW,
  fused with a following ``FULLY_CONNECTED`` (through ``RESHAPE``\\ s) as its PW with
  ``RAW_OUT`` when the FC's outputs fit one output tile, else an identity PW (the FC then
  runs alone over the pooled vector, so no FC tile re-reads and re-pools the pool's input);
* ``FULLY_CONNECTED`` (per pixel): identity DW + PW with ``RAW_OUT``; LiteRT requantizes FC
  in double precision, which the driver does after the run: the :class:`.program.HostStep`
  ``fc_requant``, the only work done on the CPU;
* an ``ADD`` not fused into a block: identity DW + identity PW + ``RESIDUAL``;
* ``RESHAPE`` keeping the channel count: no operation (the layout is unchanged).

The handlers of the convolutions are in :mod:`.match_conv`, those of pools, FC and ADD in
:mod:`.match_pool`; they share a :class:`.walk.Walk`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import AcceleratorConfig
from .. import packing
from ..graph import Graph, Operator, UnsupportedModelError
from .checks import fail
from .match_conv import match_conv, match_depthwise
from .match_pool import match_add, match_fc, match_pool
from .program import pixel_count
from .units import Unit
from .walk import Walk


@dataclass(frozen=True)
class Matched:
    """What :func:`match_units` found.

    Attributes
    ----------
    units:
        The layers in execution order, without input slices (``slices is None``).
    output:
        The tensor holding the model output (the graph's output past no-op RESHAPEs).
    host:
        The tensors the host computes (``FULLY_CONNECTED`` outputs) -> the unit's index.
    input_block:
        The model input is stored space-to-depth in blocks of this side if > 1.
    """
    units: list[Unit]
    output: str
    host: dict[str, int]
    input_block: int


def match_units(graph: Graph, cfg: AcceleratorConfig) -> Matched:
    """Group ``graph``'s operators into units (the patterns above), every operator in one.

    Raises
    ------
    UnsupportedModelError
        An operator, dtype, parameter or size the hardware does not run.
    """
    _check_model_io(graph)
    walk = Walk(graph, cfg)
    ops = graph.operators
    if not ops:
        raise UnsupportedModelError("the model has no operators")
    handlers = {"RESHAPE": _reshape, "PAD": _pad, "PADV2": _pad, "CONV_2D": match_conv,
                "DEPTHWISE_CONV_2D": match_depthwise, "AVERAGE_POOL_2D": match_pool,
                "MEAN": match_pool, "FULLY_CONNECTED": match_fc, "ADD": match_add}
    for op in ops:
        if op.index in walk.claimed:
            continue
        if op.opcode not in handlers:
            raise fail(op, f"not supported; dwsep runs {', '.join(sorted(handlers))}")
        handlers[op.opcode](walk, op)
    for op in ops:
        if op.index not in walk.claimed:
            raise fail(op, "is not part of any layer (internal error)")
    out = walk.resolve(graph.outputs[0])
    if out not in walk.stored and out not in walk.host:
        raise UnsupportedModelError(f"the model output {graph.outputs[0]!r} is not "
                                    "computed by any operator")
    _check_units(cfg, walk.units)
    return Matched(walk.units, out, walk.host, walk.input_block)


def _check_model_io(graph: Graph) -> None:
    """One int8 input (batch-1 NHWC) and one int8 output."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModelError(f"dwsep runs models with one input and one output, not "
                                    f"{len(graph.inputs)} and {len(graph.outputs)}")
    for role, name in (("input", graph.inputs[0]), ("output", graph.outputs[0])):
        if graph.tensor(name).dtype != "int8":
            raise UnsupportedModelError(
                f"dwsep runs fully int8 models; the model {role} {name!r} is "
                f"{graph.tensor(name).dtype}: quantize the model to int8 with int8 input and "
                f"output ('dwsep quantize' for MobileNet V1/V2, or TFLite's converter with "
                f"inference_input_type and inference_output_type tf.int8)")
    x = graph.input
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise UnsupportedModelError(f"the model input {x.name!r} has shape {list(x.shape)}; "
                                    "dwsep runs batch-1 NHWC inputs")


def _reshape(walk: Walk, op: Operator) -> None:
    src = walk.resolve(op.inputs[0])
    a, b = walk.graph.tensor(src).shape, walk.graph.tensor(op.outputs[0]).shape
    if int(np.prod(a)) != int(np.prod(b)) or (a[-1] != b[-1] and pixel_count(a) != 1):
        raise fail(op, f"reshape {list(a)} -> {list(b)} changes the channel count of a "
                       "multi-pixel tensor; dwsep runs RESHAPE only as a no-op on the "
                       "channel-padded layout")
    if a[-1] != b[-1] and pixel_count(b) != 1:
        raise fail(op, f"reshape {list(a)} -> {list(b)} spreads channels over pixels; "
                       "dwsep runs RESHAPE only as a no-op on the channel-padded layout")
    walk.claim(op)
    walk.alias[op.outputs[0]] = src
    # reported with the layer that made its input (or, for the model input, the next)
    producer = next((u for u in walk.units if u.output == src), None)
    (producer.ops if producer is not None else walk.noops).append(op)


def _pad(walk: Walk, op: Operator) -> None:
    user = walk.sole_consumer(op.outputs[0])
    if user is None or user.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        raise fail(op, "dwsep folds PAD into the padding of the one CONV_2D or "
                       "DEPTHWISE_CONV_2D that reads it; its output has other readers")
    # claimed by that operator's layer


def _check_units(cfg: AcceleratorConfig, units: list[Unit]) -> None:
    """Limits shared by every descriptor of a layer: sizes and line-buffer rows."""
    P = cfg.dw_lanes
    for u in units:
        op, geo = u.ops[0], u.geo
        for what, v in (("input height", geo.h), ("input width", geo.w),
                        ("output height", geo.out_h), ("output width", geo.out_w)):
            if v > cfg.max_dim:
                raise fail(op, f"{what} {v} exceeds max_dim={cfg.max_dim} of config "
                               f"{cfg.name!r}")
        c_lb = u.expand.w.shape[0] if u.expand is not None else geo.c
        if u.slices is not None:
            c_lb = max(c1 - c0 for c0, c1 in u.slices)
        row = geo.w * packing.padded(c_lb, P)
        cap = cfg.lb_row_capacity_words * P
        if row > cap:
            raise fail(op, f"line-buffer row {geo.w}x{packing.padded(c_lb, P)} (width x "
                           f"channels padded to {P}) = {row} bytes exceeds the {cap} bytes "
                           f"(lb_width*lb_channels) of config {cfg.name!r}")
