"""Compiler: :class:`~dwsep.host.graph.Graph` -> :class:`Program` (descriptors, packed blobs,
DDR plan).

A model is a chain of layers, each a ``DEPTHWISE_CONV_2D`` followed by the 1x1 ``CONV_2D``
that is its output's only consumer; each pair becomes one ``Opcode.DWSEP`` descriptor, the DW
output stays on chip. Consecutive layers pass their activations through a DDR buffer.
Anything the hardware cannot run raises :class:`UnsupportedModelError` with a one-line
message naming the operator, the value and the limit.

DDR plan (offsets relative to the base address the driver gives :meth:`Program.link`, all
64-byte aligned): descriptors at offset 0, then per layer its DW weights, DW table, PW
weights and PW table, then the activation buffers (model input, intermediates, model output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hw.config import AcceleratorConfig, get_config
from ..hw.layout import DESCRIPTOR, DescFlag, Opcode
from . import packing
from .graph import Graph, Operator, Tensor, UnsupportedModelError
from .reference import conv_quant_params, padding_amounts

__all__ = ["compile_model", "Program", "TensorInfo", "Blob", "UnsupportedModelError",
           "ADDRESS_FIELDS", "ALIGN"]

#: alignment of every region of the DDR image (and of the base address), bytes
ALIGN = 64
#: descriptor fields holding DDR addresses (relative in :attr:`Program.descriptors`)
ADDRESS_FIELDS = ("in_addr", "out_addr", "dw_weights", "dw_table", "pw_weights", "pw_table")
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as it sits in DDR.

    ``shape`` is the model's (``(1, H, W, C)``); the buffer at ``offset`` holds
    ``int8[H][W][padded_channels]`` (see :func:`packing.pack_activations`).
    """
    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    channels: int
    padded_channels: int
    lanes: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.padded_channels

    def pack(self, x: np.ndarray) -> bytes:
        """``int8[H, W, C]`` -> the buffer's bytes."""
        return packing.pack_activations(x, self.lanes)

    def unpack(self, raw: bytes) -> np.ndarray:
        """The buffer's bytes -> ``int8[H, W, C]``."""
        return packing.unpack_activations(raw, self.shape[1], self.shape[2], self.channels,
                                          self.lanes)


@dataclass(frozen=True)
class Blob:
    """Constant bytes at ``offset`` of the DDR image."""
    name: str
    offset: int
    data: bytes


@dataclass
class Program:
    """A compiled model.

    ``descriptors`` are the descriptor field values with the :data:`ADDRESS_FIELDS` relative
    to the image base; :meth:`link` makes the DDR image for a given base address.
    ``layers`` is the per-layer report (plain dicts, JSON-ready).
    """
    config: AcceleratorConfig
    descriptors: list[dict[str, int]]
    blobs: list[Blob]
    input: TensorInfo
    output: TensorInfo
    size: int
    layers: list[dict] = field(default_factory=list)

    def descriptor_bytes(self, base: int) -> list[bytes]:
        """The descriptors packed with absolute addresses ``base + offset``."""
        return [DESCRIPTOR.pack(**{k: v + base if k in ADDRESS_FIELDS else v
                                   for k, v in d.items()}) for d in self.descriptors]

    def link(self, base: int) -> bytes:
        """The whole DDR image (``size`` bytes) for a region at physical address ``base``:
        descriptors at ``base`` (the value for ``PROGRAM.addr``), blobs, and zeroed
        activation buffers."""
        if base % ALIGN:
            raise ValueError(f"base address {base:#x} is not {ALIGN}-byte aligned")
        limit = 1 << min(32, self.config.axi_addr_width)
        if not 0 <= base <= limit - self.size:
            raise ValueError(f"image of {self.size} bytes at {base:#x} does not fit the "
                             f"{min(32, self.config.axi_addr_width)}-bit address space")
        image = bytearray(self.size)
        for i, raw in enumerate(self.descriptor_bytes(base)):
            image[i * DESCRIPTOR.size:(i + 1) * DESCRIPTOR.size] = raw
        for blob in self.blobs:
            image[blob.offset:blob.offset + len(blob.data)] = blob.data
        return bytes(image)

    @property
    def macs(self) -> int:
        return sum(layer["macs"] for layer in self.layers)

    def summary(self) -> str:
        """Human-readable per-layer report."""
        lines = [f"config {self.config.name!r}: {len(self.layers)} layer(s), "
                 f"{self.macs} MACs, DDR image {self.size} bytes"]
        for r in self.layers:
            h, w, c = r["input_shape"]
            oh, ow, co = r["output_shape"]
            lines.append(
                f"  layer {r['layer']}: operators {r['operators'][0]},{r['operators'][1]} "
                f"{r['opcode']} on the {r['runs_on']}: {h}x{w}x{c} -> dw {r['kernel']}x"
                f"{r['kernel']} s{r['stride']} d{r['dilation']} m{r['depth_multiplier']} "
                f"{r['padding']} -> {oh}x{ow}x{r['mid_channels']} -> pw -> {oh}x{ow}x{co}, "
                f"{r['macs']} MACs")
        return "\n".join(lines)


# ---- checks ----------------------------------------------------------------------------------

def _fail(op: Operator, msg: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"operator {op.index} {op.opcode}: {msg}")


def _check_int8_activation(graph: Graph, name: str) -> Tensor:
    t = graph.tensor(name)
    if t.dtype != "int8":
        raise UnsupportedModelError(f"dwsep runs fully int8 models; tensor {name!r} is "
                                    f"{t.dtype}")
    return t


def _per_tensor(op: Operator, t: Tensor) -> int:
    """The zero point of per-tensor quantized activation ``t``."""
    if t.scale.size != 1 or t.zero_point.size != 1:
        raise _fail(op, f"tensor {t.name!r} must be per-tensor quantized, has "
                        f"{t.scale.size} scales and {t.zero_point.size} zero points")
    if not t.scale[0] > 0:
        raise _fail(op, f"tensor {t.name!r} has scale {t.scale[0]}; it must be positive")
    return int(t.zero_point[0])


def _weights(graph: Graph, op: Operator, channels: int) -> np.ndarray:
    """The op's int8 weights (checked: constant, int8, zero point 0, one scale per channel
    or one for all)."""
    t = graph.tensor(op.inputs[1])
    if t.data is None:
        raise _fail(op, f"weights {t.name!r} are not constant")
    if t.dtype != "int8":
        raise _fail(op, f"weights {t.name!r} are {t.dtype}; dwsep needs int8 weights")
    if t.scale.size not in (1, channels) or t.zero_point.size not in (1, channels):
        raise _fail(op, f"weights {t.name!r} have {t.scale.size} scales for {channels} "
                        "channels")
    if np.any(t.zero_point != 0):
        raise _fail(op, f"weights {t.name!r} have a nonzero zero point; dwsep needs "
                        "symmetric (zero point 0) weights")
    return np.asarray(t.data, np.int8)


def _bias(graph: Graph, op: Operator, channels: int) -> np.ndarray:
    name = op.inputs[2] if len(op.inputs) > 2 else None
    if name is None:
        return np.zeros(channels, np.int64)
    t = graph.tensor(name)
    if t.data is None:
        raise _fail(op, f"bias {t.name!r} is not constant")
    if t.dtype != "int32":
        raise _fail(op, f"bias {t.name!r} is {t.dtype}; dwsep needs int32 bias")
    if t.data.size != channels:
        raise _fail(op, f"bias {t.name!r} has {t.data.size} values for {channels} channels")
    return np.asarray(t.data, np.int64).reshape(-1)


def _pair(op: Operator, what: str, default: int = 1) -> tuple[int, int]:
    return int(op.options.get(f"{what}_h", default)), int(op.options.get(f"{what}_w", default))


def _activation(op: Operator) -> str:
    act = op.options.get("activation", "NONE")
    if act not in ACTIVATIONS:
        raise _fail(op, f"fused activation {act} is not supported (allowed: "
                        f"{', '.join(ACTIVATIONS)})")
    return act


# ---- one layer -------------------------------------------------------------------------------

@dataclass
class _Layer:
    fields: dict[str, int]  # descriptor fields, addresses still missing
    blobs: dict[str, bytes]  # dw_weights, dw_table, pw_weights, pw_table
    input: str
    output: str
    report: dict


def _compile_layer(graph: Graph, dw: Operator, pw: Operator, cfg: AcceleratorConfig,
                   number: int) -> _Layer:
    P, Q = cfg.dw_lanes, cfg.pw_cols
    x = _check_int8_activation(graph, dw.inputs[0])
    mid = _check_int8_activation(graph, dw.outputs[0])
    y = _check_int8_activation(graph, pw.outputs[0])
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise _fail(dw, f"input {x.name!r} has shape {list(x.shape)}; dwsep runs batch-1 "
                        "NHWC tensors")
    _, H, W, C = (int(v) for v in x.shape)
    zp_in, zp_mid, zp_out = _per_tensor(dw, x), _per_tensor(dw, mid), _per_tensor(pw, y)

    # Depthwise half.
    wt = graph.tensor(dw.inputs[1])
    if len(wt.shape) != 4 or wt.shape[0] != 1 or wt.shape[3] % C:
        raise _fail(dw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                        f"[1, k, k, {C}*m]")
    _, kh, kw, c_mid = (int(v) for v in wt.shape)
    m = c_mid // C
    if kh != kw:
        raise _fail(dw, f"kernel {kh}x{kw} is not square; dwsep runs square kernels only")
    k = kh
    if k > cfg.k_max:
        raise _fail(dw, f"kernel {k}x{k} exceeds k_max={cfg.k_max} of config {cfg.name!r}")
    sh, sw = _pair(dw, "stride")
    if sh != sw:
        raise _fail(dw, f"stride {sh}x{sw} differs in height and width; dwsep needs equal "
                        "strides")
    if sh not in (1, 2):
        raise _fail(dw, f"stride {sh} is not supported (1 or 2)")
    dh, dwl = _pair(dw, "dilation")
    if dh != dwl:
        raise _fail(dw, f"dilation {dh}x{dwl} differs in height and width; dwsep needs equal "
                        "dilations")
    if dh > cfg.dilation_max:
        raise _fail(dw, f"dilation {dh} exceeds dilation_max={cfg.dilation_max} of config "
                        f"{cfg.name!r}")
    padding = dw.options.get("padding", "VALID")
    if padding not in ("SAME", "VALID"):
        raise _fail(dw, f"padding {padding} is not SAME or VALID")
    if padding == "VALID" and (k - 1) * dh + 1 > min(H, W):
        raise _fail(dw, f"VALID {k}x{k} dilation {dh} on a {H}x{W} input leaves no output")
    top, _, oh = padding_amounts(padding, H, k, sh, dh)
    left, _, ow = padding_amounts(padding, W, k, sh, dh)
    for what, v in (("input height", H), ("input width", W), ("output height", oh),
                    ("output width", ow)):
        if v > cfg.max_dim:
            raise _fail(dw, f"{what} {v} exceeds max_dim={cfg.max_dim} of config "
                            f"{cfg.name!r}")
    c_pad = packing.padded(C, P)
    row = cfg.lb_width * cfg.lb_channels
    if W * c_pad > row:
        raise _fail(dw, f"input row {W}x{c_pad} (width x channels padded to {P}) = "
                        f"{W * c_pad} bytes exceeds the line buffer row of {row} bytes "
                        f"(lb_width*lb_channels) of config {cfg.name!r}")
    mid_groups = c_pad // P * m
    if mid_groups * P > cfg.mid_channels_max:
        raise _fail(dw, f"depthwise output channels {C}x{m} (padded to {mid_groups * P}) "
                        f"exceed mid_channels_max={cfg.mid_channels_max} of config "
                        f"{cfg.name!r}")
    if tuple(mid.shape) != (1, oh, ow, c_mid):
        raise _fail(dw, f"output {mid.name!r} has shape {list(mid.shape)}, the layer "
                        f"computes {[1, oh, ow, c_mid]}")
    dw_act = _activation(dw)
    w_dw = _weights(graph, dw, c_mid).reshape(k, k, c_mid)
    b_dw = _bias(graph, dw, c_mid)

    # Pointwise half.
    wt = graph.tensor(pw.inputs[1])
    if len(wt.shape) != 4 or wt.shape[3] != c_mid:
        raise _fail(pw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                        f"[C_out, 1, 1, {c_mid}]")
    c_out, pkh, pkw = (int(v) for v in wt.shape[:3])
    if (pkh, pkw) != (1, 1):
        raise _fail(pw, f"kernel {pkh}x{pkw} is not 1x1; dwsep fuses only a 1x1 pointwise "
                        "CONV_2D after a DEPTHWISE_CONV_2D")
    if _pair(pw, "stride") != (1, 1):
        raise _fail(pw, "stride {}x{} is not 1; the pointwise CONV_2D must have stride 1"
                    .format(*_pair(pw, "stride")))
    if _pair(pw, "dilation") != (1, 1):
        raise _fail(pw, "dilation {}x{} is not 1; the pointwise CONV_2D must have dilation 1"
                    .format(*_pair(pw, "dilation")))
    out_pad = packing.padded(c_out, Q)
    if out_pad > cfg.out_channels_max:
        raise _fail(pw, f"output channels {c_out} (padded to {out_pad}) exceed "
                        f"out_channels_max={cfg.out_channels_max} of config {cfg.name!r}")
    if tuple(y.shape) != (1, oh, ow, c_out):
        raise _fail(pw, f"output {y.name!r} has shape {list(y.shape)}, the layer computes "
                        f"{[1, oh, ow, c_out]}")
    pw_act = _activation(pw)
    w_pw = _weights(graph, pw, c_out).reshape(c_out, c_mid)
    b_pw = _bias(graph, pw, c_out)

    # Requant tables: fold the input zero point into the bias, permute/pad to lanes.
    try:
        fb_dw = packing.fold_bias(b_dw, w_dw.astype(np.int64).sum(axis=(0, 1)), zp_in)
        fb_pw = packing.fold_bias(b_pw, w_pw.astype(np.int64).sum(axis=1), zp_mid)
    except OverflowError:
        raise _fail(dw, "a bias folded with the input zero point leaves int32") from None
    qd, qp = conv_quant_params(graph, dw), conv_quant_params(graph, pw)
    lanes = [packing.to_mid_lanes(a, C, m, P) for a in (fb_dw, qd["mult"], qd["shift"])]
    dw_table = packing.pack_table(*lanes, P)
    pw_table = packing.pack_table(*(np.pad(a, (0, out_pad - c_out)) for a in
                                    (fb_pw, qp["mult"], qp["shift"])), Q)

    fields = dict(
        opcode=Opcode.DWSEP, flags=0, kernel=k, stride=sh, dilation=dh, depth_mult=m,
        pad_top=top, pad_left=left, in_h=H, in_w=W, in_groups=c_pad // P,
        mid_groups=mid_groups, out_h=oh, out_w=ow, out_groups=out_pad // Q, in_zp=zp_in,
        dw_zp=zp_mid, dw_min=qd["act_min"], dw_max=qd["act_max"], pw_zp=zp_out,
        pw_min=qp["act_min"], pw_max=qp["act_max"])
    blobs = {"dw_weights": packing.pack_dw_weights(w_dw, m, P), "dw_table": dw_table,
             "pw_weights": packing.pack_pw_weights(w_pw, m, P, Q), "pw_table": pw_table}
    dw_macs = oh * ow * c_mid * k * k
    pw_macs = oh * ow * c_mid * c_out
    report = {
        "layer": number, "operators": [dw.index, pw.index], "opcode": Opcode.DWSEP.name,
        "runs_on": "accelerator", "input_shape": [H, W, C], "mid_channels": c_mid,
        "output_shape": [oh, ow, c_out], "kernel": k, "stride": sh, "dilation": dh,
        "depth_multiplier": m, "padding": padding, "pad_top": top, "pad_left": left,
        "activations": [dw_act, pw_act], "dw_macs": dw_macs, "pw_macs": pw_macs,
        "macs": dw_macs + pw_macs,
    }
    return _Layer(fields, blobs, x.name, y.name, report)


# ---- the model -------------------------------------------------------------------------------

def _consumers(graph: Graph) -> dict[str, list[Operator]]:
    out: dict[str, list[Operator]] = {}
    for op in graph.operators:
        for name in op.inputs:
            if name is not None:
                out.setdefault(name, []).append(op)
    return out


def _match_pairs(graph: Graph) -> list[tuple[Operator, Operator]]:
    """Split the operator list into (DEPTHWISE_CONV_2D, 1x1 CONV_2D) pairs."""
    consumers = _consumers(graph)
    ops = graph.operators
    if not ops:
        raise UnsupportedModelError("the model has no operators")
    pairs = []
    for n in range(0, len(ops), 2):
        dw = ops[n]
        if dw.opcode == "CONV_2D":
            raise _fail(dw, "dwsep runs CONV_2D only as the 1x1 pointwise half of a "
                            "DEPTHWISE_CONV_2D -> CONV_2D pair")
        if dw.opcode != "DEPTHWISE_CONV_2D":
            raise _fail(dw, "not supported; dwsep runs chains of DEPTHWISE_CONV_2D followed "
                            "by a 1x1 CONV_2D")
        if n + 1 == len(ops):
            raise _fail(dw, "must be followed by a 1x1 CONV_2D (dwsep runs them fused)")
        pw = ops[n + 1]
        if pw.opcode != "CONV_2D":
            raise _fail(pw, f"follows DEPTHWISE_CONV_2D operator {dw.index}; dwsep needs a 1x1 "
                            "CONV_2D there")
        mid = dw.outputs[0]
        if pw.inputs[0] != mid:
            raise _fail(pw, f"input {pw.inputs[0]!r} is not the output {mid!r} of "
                            f"DEPTHWISE_CONV_2D operator {dw.index}")
        others = [op.index for op in consumers.get(mid, []) if op is not pw]
        if others or mid in graph.outputs:
            where = f"operator {others[0]}" if others else "the model output"
            raise _fail(dw, f"output {mid!r} is also used by {where}; dwsep keeps it on chip "
                            "and needs the 1x1 CONV_2D to be its only consumer")
        pairs.append((dw, pw))
    return pairs


def _tensor_info(graph: Graph, name: str, lanes: int, offset: int) -> TensorInfo:
    t = graph.tensor(name)
    c = int(t.shape[-1])
    return TensorInfo(name, tuple(int(v) for v in t.shape), float(t.scale[0]),
                      int(t.zero_point[0]), c, packing.padded(c, lanes), lanes, offset)


def compile_model(graph: Graph, config: str | AcceleratorConfig) -> Program:
    """Compile ``graph`` for ``config``.

    Raises
    ------
    UnsupportedModelError
        The model uses an op, dtype, parameter or size the hardware does not run; the
        one-line message names the operator, the value and the limit.
    """
    cfg = get_config(config)
    for name in (*graph.inputs, *graph.outputs):
        _check_int8_activation(graph, name)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModelError(f"dwsep runs models with one input and one output, not "
                                    f"{len(graph.inputs)} and {len(graph.outputs)}")
    consumers = _consumers(graph)
    layers = [_compile_layer(graph, dw, pw, cfg, n)
              for n, (dw, pw) in enumerate(_match_pairs(graph))]
    if layers[0].input != graph.inputs[0]:
        raise UnsupportedModelError(f"the model input {graph.inputs[0]!r} must feed the first "
                                    f"DEPTHWISE_CONV_2D, which reads {layers[0].input!r}")
    if layers[-1].output != graph.outputs[0]:
        raise UnsupportedModelError(f"the model output {graph.outputs[0]!r} must be the last "
                                    f"CONV_2D's output {layers[-1].output!r}")
    for prev, nxt in zip(layers, layers[1:], strict=False):
        op = graph.operators[2 * nxt.report["layer"]]
        if nxt.input != prev.output:
            raise _fail(op, f"input {nxt.input!r} is not the previous layer's output "
                            f"{prev.output!r}; dwsep runs one chain of layers")
        if len(consumers[prev.output]) != 1:
            raise _fail(op, f"tensor {prev.output!r} has {len(consumers[prev.output])} "
                            "consumers; dwsep runs one chain of layers")
        c = int(graph.tensor(prev.output).shape[-1])
        if packing.padded(c, cfg.pw_cols) != packing.padded(c, cfg.dw_lanes):
            raise _fail(op, f"{c} channels pad to {packing.padded(c, cfg.pw_cols)} as a "
                            f"pointwise output but {packing.padded(c, cfg.dw_lanes)} as a "
                            f"depthwise input in config {cfg.name!r}")

    # DDR plan.
    offset = _align(len(layers) * DESCRIPTOR.size)
    blobs = []
    for n, layer in enumerate(layers):
        for key, data in layer.blobs.items():
            blobs.append(Blob(f"layer{n}.{key}", offset, data))
            layer.fields[key] = offset
            offset = _align(offset + len(data))
    act_offsets = {}
    for name in [layers[0].input] + [layer.output for layer in layers]:
        t = graph.tensor(name)
        act_offsets[name] = offset
        offset = _align(offset + t.shape[1] * t.shape[2]
                        * packing.padded(int(t.shape[3]), cfg.dw_lanes if name == layers[0].input
                                         else cfg.pw_cols))
    for layer in layers:
        layer.fields["in_addr"] = act_offsets[layer.input]
        layer.fields["out_addr"] = act_offsets[layer.output]
    layers[-1].fields["flags"] = DescFlag.LAST
    program = Program(
        config=cfg, descriptors=[layer.fields for layer in layers], blobs=blobs,
        input=_tensor_info(graph, layers[0].input, cfg.dw_lanes, act_offsets[layers[0].input]),
        output=_tensor_info(graph, layers[-1].output, cfg.pw_cols,
                            act_offsets[layers[-1].output]),
        size=offset, layers=[layer.report for layer in layers])
    program.descriptor_bytes(0)  # every field in range (raises ValueError otherwise)
    return program
