"""The matching pass's state: :class:`Walk` follows the graph in operator order and holds
what the operator handlers (:mod:`.match`, :mod:`.match_conv`, :mod:`.match_pool`) share:
who reads and makes each tensor, which operators are claimed, which tensors are in DDR so
far, and the units found; with the helpers they use (a window's line-buffer geometry with a
PAD folded in, a convolution's weights and requantization as a :class:`.units.Stage`).
"""

from __future__ import annotations

import numpy as np

from ...hw.config import AcceleratorConfig
from .. import packing
from ..graph import Graph, Operator, UnsupportedModelError
from ..reference import conv_quant_params, padding_amounts
from .checks import (
    activation_zp,
    const_bias,
    const_weights,
    fail,
    folded_bias,
    fused_activation,
    pair_option,
)
from .program import pixel_count
from .units import Geometry, Stage, Unit

PADS = ("PAD", "PADV2")


class Walk:
    """The graph walked in operator order, grouping operators into :class:`.units.Unit` s."""

    def __init__(self, graph: Graph, cfg: AcceleratorConfig):
        self.graph, self.cfg = graph, cfg
        self.consumers: dict[str, list[Operator]] = {}
        for op in graph.operators:
            for name in op.inputs:
                if name is not None:
                    self.consumers.setdefault(name, []).append(op)
        self.producer = {out: op for op in graph.operators for out in op.outputs}
        self.alias: dict[str, str] = {}
        self.claimed: set[int] = set()
        self.stored = {graph.inputs[0]}     # tensors in DDR so far
        self.host: dict[str, int] = {}      # tensors the host computes -> unit index
        self.units: list[Unit] = []
        self.noops: list[Operator] = []     # RESHAPEs of the model input, not yet reported
        self.input_block = 1                # the model input stored space-to-depth if > 1

    # -- graph helpers --
    def resolve(self, name: str) -> str:
        """The tensor ``name`` stands for, past no-op RESHAPEs."""
        while name in self.alias:
            name = self.alias[name]
        return name

    def sole_consumer(self, name: str) -> Operator | None:
        """The one operator reading ``name``, if it is not also a model output."""
        ops = self.consumers.get(name, [])
        if len(ops) != 1 or name in self.graph.outputs:
            return None
        return ops[0]

    def through_reshapes(self, name: str) -> tuple[Operator | None, list[Operator]]:
        """The sole consumer of ``name`` past single-consumer RESHAPEs, and those RESHAPEs."""
        reshapes = []
        op = self.sole_consumer(name)
        while op is not None and op.opcode == "RESHAPE":
            reshapes.append(op)
            op = self.sole_consumer(op.outputs[0])
        return op, reshapes

    def is_pointwise(self, op: Operator | None) -> bool:
        """``op`` is a 1x1 stride-1 ``CONV_2D``."""
        if op is None or op.opcode != "CONV_2D":
            return False
        shape = self.graph.tensor(op.inputs[1]).shape
        return (len(shape) == 4 and tuple(shape[1:3]) == (1, 1)
                and pair_option(op, "stride") == (1, 1))

    def claim(self, *ops: Operator) -> None:
        """Mark ``ops`` as part of a unit (each exactly once)."""
        for op in ops:
            if op.index in self.claimed:
                raise fail(op, "is matched twice (internal error)")
            self.claimed.add(op.index)

    def need_stored(self, op: Operator, name: str) -> str:
        """``name`` past RESHAPEs, checked to be in DDR before ``op`` runs: the model input,
        an earlier unit's output, or a constant int8 tensor (then stored as a blob)."""
        name = self.resolve(name)
        if name in self.host:
            raise fail(op, f"reads {name!r}, a FULLY_CONNECTED output the host computes "
                           "after the hardware run; only the model output may come from it")
        t = self.graph.tensor(name)
        if t.is_constant and t.dtype == "int8" and name not in self.stored:
            activation_zp(op, t)
            self.stored.add(name)   # a blob in the activation layout
        if name not in self.stored:
            raise fail(op, f"input {name!r} is not computed before it (operators must be in "
                           "dependency order)")
        return name

    def image(self, op: Operator, name: str) -> tuple[int, int, int]:
        """``(H, W, C)`` of batch-1 NHWC tensor ``name`` (a one-pixel vector: ``1, 1, C``)."""
        t = self.graph.tensor(name)
        shape = tuple(int(v) for v in t.shape)
        if len(shape) == 4 and shape[0] == 1:
            return shape[1], shape[2], shape[3]
        if len(shape) >= 1 and (len(shape) < 4) and pixel_count(shape) == 1:
            return 1, 1, shape[-1]
        raise fail(op, f"input {name!r} has shape {list(shape)}; dwsep runs batch-1 NHWC "
                       "tensors")

    def add_unit(self, unit: Unit) -> None:
        """Record ``unit`` (with the RESHAPEs of the model input not yet reported); its
        output is then in DDR, or computed by the host (an FC)."""
        unit.ops = self.noops + unit.ops
        self.noops = []
        self.units.append(unit)
        if unit.fc is not None:
            self.host[unit.output] = len(self.units) - 1
        else:
            self.stored.add(unit.output)

    def pad_params(self, pad: Operator) -> tuple[int, int, int, int, int]:
        """``(top, bottom, left, right, value)`` of a foldable PAD."""
        p = self.graph.tensor(pad.inputs[1]).data
        if p is None or np.asarray(p).shape != (4, 2):
            raise fail(pad, "paddings must be a constant [4, 2] tensor")
        p = np.asarray(p, np.int64)
        if p[0].any() or p[3].any() or (p < 0).any():
            raise fail(pad, f"paddings {p.tolist()} pad the batch or channel dimension; "
                            "dwsep folds only height/width padding")
        out = self.graph.tensor(pad.outputs[0])
        value = activation_zp(pad, out)
        if pad.opcode == "PADV2" and len(pad.inputs) > 2 and pad.inputs[2] is not None:
            c = self.graph.tensor(pad.inputs[2])
            if c.data is None or c.data.size != 1:
                raise fail(pad, "constant_values must be one constant int8 value")
            value = int(np.asarray(c.data).reshape(-1)[0])
        return int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]), value

    def geometry(self, op: Operator, k: int) -> Geometry:
        """Line-buffer geometry of CONV_2D / DEPTHWISE_CONV_2D ``op`` with kernel ``k``,
        folding a PAD that only it reads, checked against the line buffer's limits and the
        output tensor's shape."""
        geo = self.window(op, k)
        self.check_window(op, geo)
        return geo

    def check_window(self, op: Operator, geo: Geometry, form: str = "") -> None:
        """The line buffer's kernel and padding limits (``form`` names a transformed
        convolution in the message), then the output shape of ``op``."""
        cfg = self.cfg
        if geo.k > cfg.k_max:
            raise fail(op, f"kernel {geo.k}x{geo.k}{form} exceeds k_max={cfg.k_max} of config "
                           f"{cfg.name!r}")
        if geo.dilation > cfg.dilation_limit(geo.k):
            rows = cfg.window_rows(geo.k, geo.dilation)
            raise fail(op, f"dilation {geo.dilation} of a {geo.k}x{geo.k} kernel{form} spans "
                           f"{rows} input rows, more than lb_window={cfg.lb_window} of config "
                           f"{cfg.name!r} (at most dilation {cfg.dilation_limit(geo.k)} at "
                           "this kernel)")
        limit = cfg.lb_window
        for what, v in (("top", geo.pad_top), ("left", geo.pad_left)):
            if v >= limit:
                raise fail(op, f"padding {what} {v}{form} reaches the line buffer's limit "
                               f"lb_window={limit} of config {cfg.name!r}")
        y = self.graph.tensor(op.outputs[0])
        shape = [1, geo.out_h, geo.out_w, int(y.shape[-1])]
        if list(y.shape) != shape:
            raise fail(op, f"output {y.name!r} has shape {list(y.shape)}, the layer computes "
                           f"{shape}")

    def window(self, op: Operator, k: int) -> Geometry:
        """:meth:`geometry` without :meth:`check_window`."""
        x_name = op.inputs[0]
        pad_op = self.producer.get(x_name)
        if pad_op is not None and pad_op.opcode not in PADS:
            pad_op = None
        sh, sw = pair_option(op, "stride")
        if sh != sw:
            raise fail(op, f"stride {sh}x{sw} differs in height and width; dwsep needs equal "
                           "strides")
        if sh not in (1, 2):
            raise fail(op, f"stride {sh} is not supported (1 or 2)")
        dh, dwl = pair_option(op, "dilation")
        if dh != dwl:
            raise fail(op, f"dilation {dh}x{dwl} differs in height and width; dwsep needs "
                           "equal dilations")
        if k == 1:
            dh = 1  # one tap: the dilation changes nothing
        padding = op.options.get("padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise fail(op, f"padding {padding} is not SAME or VALID")
        in_zp = activation_zp(op, self.graph.tensor(x_name))
        top = bottom = left = right = 0
        lb_zp = in_zp
        source = x_name
        if pad_op is not None:
            top, bottom, left, right, lb_zp = self.pad_params(pad_op)
            source = pad_op.inputs[0]
        h, w, c = self.image(op, source)
        hp, wp = h + top + bottom, w + left + right
        try:
            t2, b2, oh = padding_amounts(padding, hp, k, sh, dh)
            l2, r2, ow = padding_amounts(padding, wp, k, sh, dh)
        except UnsupportedModelError as e:
            raise fail(op, str(e)) from None
        if pad_op is not None and lb_zp != in_zp and (t2 or b2 or l2 or r2):
            raise fail(op, f"folding {pad_op.opcode} operator {pad_op.index} (value {lb_zp}) "
                           f"into SAME padding (value {in_zp}) needs two padding values")
        return Geometry(source, h, w, c, k, sh, dh, top + t2, left + l2, oh, ow, lb_zp, pad_op)

    def claim_geometry(self, op: Operator, geo: Geometry) -> str:
        """Claim ``op`` and its folded PAD; return the layer's input tensor (stored)."""
        self.claim(op)
        if geo.pad_op is not None:
            self.claim(geo.pad_op)
        return geo.source

    # -- stages --
    def conv_stage(self, op: Operator) -> Stage:
        """CONV_2D / DEPTHWISE_CONV_2D weights with the bias folded with the input zero
        point: ``[C_out, C_in]`` (1x1), ``[C_out, k, k, C_in]`` (k x k), ``[k, k, C*m]``
        (depthwise)."""
        fused_activation(op)
        for name in (op.inputs[0], op.outputs[0]):
            activation_zp(op, self.graph.tensor(name))
        wt = self.graph.tensor(op.inputs[1])
        if op.opcode == "DEPTHWISE_CONV_2D":
            channels = int(wt.shape[3])
            w = const_weights(self.graph, op, channels)[0]
            sums = w.astype(np.int64).sum(axis=(0, 1))
        else:
            channels = int(wt.shape[0])
            w = const_weights(self.graph, op, channels)
            sums = w.astype(np.int64).sum(axis=(1, 2, 3))
            if w.shape[1:3] == (1, 1):
                w = w.reshape(channels, -1)
        q = conv_quant_params(self.graph, op)
        bias = folded_bias(op, const_bias(self.graph, op, channels), sums, q["in_zp"])
        return Stage(op, w, bias, q["mult"], q["shift"], q["out_zp"], q["act_min"],
                     q["act_max"])

    def check_mid(self, op: Operator, c: int, m: int, what: str, kernel: int = 1) -> None:
        """``c`` channels times ``m`` (padded to the DW lanes) fit the mid memory and, at
        a ``kernel x kernel`` window, the DW weight memory; ``what`` names them."""
        cfg, P = self.cfg, self.cfg.dw_lanes
        mid = packing.padded(c, P) * m
        shown = f"{c}x{m}" if m > 1 else f"{c}"
        if mid > cfg.mid_channels_max:
            raise fail(op, f"{what} {shown} (padded to {mid}) exceed mid_channels_max="
                           f"{cfg.mid_channels_max} of config {cfg.name!r}")
        if mid > cfg.dw_channels_max(kernel):
            raise fail(op, f"{what} {shown} (padded to {mid}) of a {kernel}x{kernel} kernel "
                           f"need {cfg.dw_words(mid // P, kernel)} DW weight words, more than "
                           f"dw_weight_words={cfg.dw_weight_depth} of config {cfg.name!r} "
                           f"(at most {cfg.dw_channels_max(kernel)} channels at this kernel)")
