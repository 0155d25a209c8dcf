"""Compiler: :class:`~dwsep.host.graph.Graph` -> :class:`Program` (``LAYER`` descriptors,
packed blobs, DDR plan, host steps).

Pattern matching, in the model's operator order (docs/ARCHITECTURE.md, "Layer descriptor v2"):

* ``[PAD] + CONV_2D k x k`` (k > 1): one ``CONV`` descriptor, the PAD folded into the pads.
  A stem (stride 2, dilation 1, reading the model input, which nothing else reads, with
  ``4*C <= dw_lanes`` and padding with the input zero point) runs by space-to-depth: the host
  stores the input in 2x2 blocks (``TensorInfo.space_to_depth``,
  :func:`packing.space_to_depth`) and the descriptor is the equivalent stride-1 convolution
  (:func:`space_to_depth_conv`; 3x3 -> 2x2: 4 PW input words per pixel instead of 9, and a
  quarter of the input pixels). Limits are checked on that form; the report is the
  operator's;
* ``1x1 CONV_2D (expand) -> [PAD] -> DEPTHWISE_CONV_2D -> 1x1 CONV_2D (project) [-> ADD]``:
  one descriptor with ``EXPAND`` (and ``RESIDUAL`` when the ADD's other input is already in
  DDR and the output needs no tiling). When the expand does not fit the config
  (``expand_channels_max``) it runs as its own descriptor and the rest as a second one;
* ``[PAD] + DEPTHWISE_CONV_2D -> 1x1 CONV_2D [-> ADD]``: the same without ``EXPAND``;
* a standalone 1x1 ``CONV_2D``: identity DW (k = 1, weight 1, bias 0, identity requant);
* a ``DEPTHWISE_CONV_2D`` not followed by a 1x1 ``CONV_2D``: identity PW;
* ``AVERAGE_POOL_2D`` (VALID; global or square window) and ``MEAN`` over H, W: all-ones DW,
  fused with a following ``FULLY_CONNECTED`` (through ``RESHAPE``\\ s) as its PW with
  ``RAW_OUT`` when the FC's outputs fit one output tile, else an identity PW (the FC then
  runs alone over the pooled vector, so no FC tile re-reads and re-pools the pool's input);
* ``FULLY_CONNECTED`` (per pixel): identity DW + PW with ``RAW_OUT``; LiteRT requantizes FC
  in double precision, which the driver does after the run: the :class:`HostStep`
  ``fc_requant``, the only work done on the CPU;
* an ``ADD`` not fused into a block: identity DW + identity PW + ``RESIDUAL``;
* ``RESHAPE`` keeping the channel count: no operation (the layout is unchanged).

PW outputs wider than ``out_channels_max`` are tiled by output channels (one descriptor per
tile, ``out_pitch`` the whole tensor). A pool or FC input wider than ``mid_channels_max``
(or than the DW weight memory holds at the pool's window: ``dw_weight_words``), and a
pool without an FC wider than ``out_channels_max`` whose producer can, is stored as
separate channel slices (its producer's tiles) and pooled slice by slice; an FC's one-pixel
input is read in slices where it lies. The FC reduction is split over the slices: each
slice writes int32 partial sums that the ``fc_requant`` host step adds before requantizing
(:meth:`_Emitter.plan_slices`).

Anything the hardware cannot run raises :class:`UnsupportedModelError` with a one-line
message naming the operator (index, opcode, output tensor), the value and the limit; this
includes a requant-table channel whose requantizer input could leave
``REQUANT_INPUT_BITS`` for some int8 input (:func:`check_requant_inputs`) and a weight of the
expand or pointwise array outside ``-PACKED_WEIGHT_MAX..PACKED_WEIGHT_MAX``
(:func:`check_packed_weights`).

DDR plan (offsets relative to the base address given to :meth:`Program.link`, each region
64-byte aligned): descriptors at 0, then the weight and table blobs (identical blobs stored
once), then the activation buffers; a buffer is reused once the tensor it held is dead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..hw.config import REQUANT_INPUT_BITS, AcceleratorConfig, get_config
from ..hw.layout import (
    ADDRESS_FIELDS,
    DESCRIPTOR,
    PREFETCH_SEGMENTS,
    DescFlag,
    Opcode,
    expand_words,
)
from . import packing
from .graph import Graph, Operator, Tensor, UnsupportedModelError
from .numerics import (
    INT32_MIN,
    add_table,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requant_input_extremes,
    wrap_int32,
)
from .reference import (
    add_quant_params,
    conv_quant_params,
    fully_connected_params,
    fused_activation_range,
    mean_multiplier,
    padding_amounts,
    round_half_away,
)

__all__ = ["compile_model", "Program", "TensorInfo", "Blob", "HostStep",
           "UnsupportedModelError", "ADDRESS_FIELDS", "ALIGN", "exact_division_multiplier",
           "check_requant_inputs", "check_packed_weights", "PACKED_WEIGHT_MAX",
           "space_to_depth_conv"]

#: alignment of every region of the DDR image (and of the base address), bytes
ALIGN = 64
#: the largest weight magnitude of the expand and pointwise arrays: each DSP48E1 computes two
#: int8 products, the weights of two output channels packed as ``(w_hi << 17) + w_lo`` in its
#: 25-bit pre-adder and four packed products summed in a DSP cascade before the lanes are
#: separated; a -128 overflows both. TFLite's symmetric int8 weights lie in -127..127. (The
#: depthwise array multiplies one product per DSP and takes all of int8.)
PACKED_WEIGHT_MAX = 127
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
_PADS = ("PAD", "PADV2")


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _pixels(shape) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64))


# ---- the program -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as it sits in DDR.

    ``shape`` is the model's (batch 1) and ``channels`` its last dimension. With
    ``space_to_depth == 1`` the buffer at ``offset`` holds ``int8[pixels][padded_channels]``
    with ``pixels`` the product of all but the last dimension (see
    :func:`packing.pack_activations`). A model input whose stem is compiled by space-to-depth
    (:func:`space_to_depth_conv`) has ``space_to_depth == b`` (2): the buffer holds the
    ``[ceil(H/b), ceil(W/b), b*b*C]`` tensor of :func:`packing.space_to_depth` (the zero
    point past an odd edge), its channels padded to ``padded_channels``. ``offset`` is
    ``None`` for an output the host computes (:attr:`Program.output_step`).
    """
    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    channels: int
    padded_channels: int
    lanes: int
    offset: int | None
    space_to_depth: int = 1

    @property
    def pixels(self) -> int:
        return _pixels(self.shape)

    @property
    def stored_shape(self) -> tuple[int, int]:
        """``(pixels, channels)`` of the tensor in DDR, before the channel padding."""
        b = self.space_to_depth
        if b == 1:
            return self.pixels, self.channels
        h, w = self.shape[-3:-1]
        return -(-h // b) * -(-w // b), b * b * self.channels

    @property
    def nbytes(self) -> int:
        return self.stored_shape[0] * self.padded_channels

    def pack(self, x: np.ndarray) -> bytes:
        """An int8 array of the tensor's size (any shape ending in the channels) -> bytes."""
        x = np.asarray(x)
        b = self.space_to_depth
        if b > 1:
            x = packing.space_to_depth(x.reshape(*self.shape[-3:]), b, self.zero_point)
        return packing.pack_activations(x.reshape(1, *self.stored_shape), self.lanes)

    def unpack(self, raw: bytes) -> np.ndarray:
        """The buffer's bytes -> int8 array of :attr:`shape`."""
        a = packing.unpack_activations(raw, 1, *self.stored_shape, self.lanes)
        b = self.space_to_depth
        if b > 1:
            h, w = self.shape[-3:-1]
            a = packing.depth_to_space(a.reshape(-(-h // b), -(-w // b), -1), b, h, w)
        return a.reshape(self.shape)


@dataclass(frozen=True)
class Blob:
    """Constant bytes at ``offset`` of the DDR image."""
    name: str
    offset: int
    data: bytes


@dataclass(frozen=True, eq=False)
class HostStep:
    """Work the driver does on the CPU after the hardware run: the documented exceptions to
    "everything runs on the accelerator" (README table). One kind exists:

    ``fc_requant`` computes ``tensor``, a ``FULLY_CONNECTED`` output, from the int32
    ``RAW_OUT`` partial sums the hardware wrote: ``params["partials"]`` lists their DDR
    offsets (relative to the image base), each ``int32[rows][pitch]``; with ``bias`` the FC
    bias folded with ``-in_zp * sum(w)``, ``scale[o] = s_in * s_w[o] / s_out`` (float64)::

        acc = wrap32(sum of the partials + bias)
        y   = clamp(wrap32(int32(round(double(acc) * scale)) + out_zp), act_min, act_max)

    (``round`` half away from zero, out-of-range doubles give INT32_MIN), which is LiteRT's
    ``reference_integer_ops::FullyConnected`` requantization (``reference.fully_connected``).
    """
    kind: str
    tensor: str
    layer: int
    params: dict

    def apply(self, read: Callable[[int, int], bytes]) -> np.ndarray:
        """Run the step; ``read(offset, nbytes)`` reads the DDR image. Returns
        ``int8[rows, units]``."""
        if self.kind != "fc_requant":
            raise ValueError(f"unknown host step {self.kind!r}")
        p = self.params
        rows, units, cols = p["rows"], p["units"], p["cols"]
        acc = np.zeros((rows, units), np.int64)
        for offset in p["partials"]:
            raw = read(offset, 4 * rows * packing.padded(units, cols))
            acc += packing.unpack_raw(raw, rows, units, cols)
        acc = wrap_int32(acc + p["bias"])
        scaled = round_half_away(acc.astype(np.float64) * p["scale"])
        fits = (scaled >= INT32_MIN) & (scaled < 2.0**31)
        out = wrap_int32(np.where(fits, scaled, INT32_MIN).astype(np.int64) + p["out_zp"])
        return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


@dataclass
class Program:
    """A compiled model.

    ``descriptors`` are the descriptor field values with the :data:`ADDRESS_FIELDS` relative
    to the image base; :meth:`link` makes the DDR image for a given base address.
    ``layers`` is the per-layer report (plain dicts, JSON-ready; ``layers[i]["descriptors"]``
    is the ``[first, count]`` range of its descriptors); ``host_steps`` run after the
    hardware, and ``output_step`` (one of them, or ``None``) computes the model output.
    """
    config: AcceleratorConfig
    descriptors: list[dict[str, int]]
    blobs: list[Blob]
    input: TensorInfo
    output: TensorInfo
    size: int
    layers: list[dict] = field(default_factory=list)
    host_steps: list[HostStep] = field(default_factory=list)
    output_step: HostStep | None = None

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

    def read_output(self, read: Callable[[int, int], bytes]) -> np.ndarray:
        """The model output (int8, :attr:`output` ``.shape``) after a run: from its DDR buffer,
        or computed by :attr:`output_step`; ``read(offset, nbytes)`` reads the image."""
        if self.output_step is not None:
            return self.output_step.apply(read).reshape(self.output.shape)
        return self.output.unpack(read(self.output.offset, self.output.nbytes))

    def layer_of_descriptor(self, index: int) -> dict:
        """The ``layers`` entry descriptor ``index`` belongs to."""
        for r in self.layers:
            first, count = r["descriptors"]
            if first <= index < first + count:
                return r
        raise IndexError(f"no descriptor {index} in a program of {len(self.descriptors)}")

    @property
    def macs(self) -> int:
        return sum(layer["macs"] for layer in self.layers)

    def summary(self) -> str:
        """Human-readable per-layer report."""
        lines = [f"config {self.config.name!r}: {len(self.layers)} layer(s), "
                 f"{len(self.descriptors)} descriptor(s), {self.macs} MACs, DDR image "
                 f"{self.size} bytes"]
        for r in self.layers:
            first, count = r["descriptors"]
            span = f"{first}" if count == 1 else f"{first}-{first + count - 1}"
            h, w, c = r["input_shape"]
            extra = []
            if r["tiles"] > 1:
                extra.append(f"{r['tiles']} output tiles")
            if r["input_slices"] > 1:
                extra.append(f"{r['input_slices']} input slices")
            if r["host_step"]:
                extra.append(f"then {r['host_step']} on the host")
            if r["note"]:
                extra.append(r["note"])
            lines.append(
                f"  layer {r['layer']} [descriptor {span}] operators "
                f"{','.join(map(str, r['operators']))} {'+'.join(r['ops'])} -> "
                f"{'+'.join(r['stages'])}: {h}x{w}x{c} -> "
                f"{'x'.join(map(str, r['output_shape']))}, k{r['kernel']} s{r['stride']} "
                f"d{r['dilation']} m{r['depth_multiplier']}, {r['macs']} MACs"
                + "".join(f"; {e}" for e in extra))
        return "\n".join(lines)


# ---- checks ----------------------------------------------------------------------------------

def _name(op: Operator) -> str:
    return f"operator {op.index} {op.opcode} ({op.outputs[0]!r})"


def _fail(op: Operator, msg: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{_name(op)}: {msg}")


def _check_int8_activation(graph: Graph, name: str) -> Tensor:
    t = graph.tensor(name)
    if t.dtype != "int8":
        raise UnsupportedModelError(f"dwsep runs fully int8 models; tensor {name!r} is "
                                    f"{t.dtype}")
    return t


def _zero_point(op: Operator, t: Tensor) -> int:
    """The zero point of per-tensor quantized activation ``t``."""
    if t.dtype != "int8":
        raise UnsupportedModelError(f"dwsep runs fully int8 models; tensor {t.name!r} is "
                                    f"{t.dtype}")
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


def _fold(op: Operator, bias: np.ndarray, weight_sums: np.ndarray, zp: int) -> np.ndarray:
    try:
        return packing.fold_bias(bias, weight_sums, zp)
    except OverflowError:
        raise _fail(op, "a bias folded with the input zero point leaves int32") from None


def check_requant_inputs(w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                         shift: np.ndarray, stage: str) -> None:
    """Prove that no int8 input takes a requantizer past ``REQUANT_INPUT_BITS``.

    Channel ``c`` reduces ``acc = sum(x * w[c])`` over int8 ``x`` (the line buffer's padding
    is the zero point, also int8). The requantizer is exact (``MultiplyByQuantizedMultiplier``)
    only if both extremes of ``v = (acc + bias[c]) << max(shift[c], 0)``
    (:func:`dwsep.host.numerics.requant_input_extremes`) satisfy ``-2**(B-1) <= v < 2**(B-1)``
    with ``B = REQUANT_INPUT_BITS``, and ``0 <= mult[c] < 2**31``.

    Parameters
    ----------
    w:
        Integer weights ``[channels, taps]``: every product one channel sums.
    bias, mult, shift:
        The channels' requant-table entries (``bias`` folded with the input zero point).
    stage:
        The requantizer's name in the message (``expand``, ``depthwise``, ``pointwise``).

    Raises
    ------
    ValueError
        For the first channel that fails, naming it, the value and the limit.
    """
    mult = np.asarray(mult, np.int64)
    bad = np.flatnonzero((mult < 0) | (mult >= 1 << 31))
    if bad.size:
        c = int(bad[0])
        raise ValueError(f"{stage} output channel {c} has the requantizer multiplier "
                         f"{int(mult[c]):,}; the requantizer takes 0..{(1 << 31) - 1:,}")
    v_min, v_max = requant_input_extremes(w, bias, shift)
    bias = np.asarray(bias, np.int64)
    left = np.maximum(np.asarray(shift, np.int64), 0)
    lo, hi = -(1 << (REQUANT_INPUT_BITS - 1)), (1 << (REQUANT_INPUT_BITS - 1)) - 1
    over, under = (v_max > hi).astype(bool), (v_min < lo).astype(bool)
    bad = np.flatnonzero(over | under)
    if bad.size:
        c = int(bad[0])
        v = v_max[c] if over[c] else v_min[c]
        raise ValueError(f"{stage} output channel {c} can reach a requantizer input of {v:,} "
                         f"(bias {int(bias[c]):,} plus int8 products, shifted left by "
                         f"{int(left[c])}); the requantizer takes {lo:,}..{hi:,} "
                         f"(REQUANT_INPUT_BITS={REQUANT_INPUT_BITS})")


def check_packed_weights(w: np.ndarray, stage: str, zero_point: int = 0) -> None:
    """Check that the expand or pointwise array can multiply every weight of ``w``: each in
    ``-PACKED_WEIGHT_MAX..PACKED_WEIGHT_MAX`` (two weights share a DSP48E1's pre-adder).

    Parameters
    ----------
    w:
        The integers the array multiplies, output channels first: ``[C_out, C_in]`` (expand,
        pointwise, fully connected) or ``[C_out, k, k, C_in]`` (``CONV`` mode).
    stage:
        The array stage's name in the message (``expand``, ``pointwise``,
        ``fully connected``).
    zero_point:
        The weight zero point already subtracted from the stored weights to give ``w``
        (FULLY_CONNECTED's ``w - w_zp``); a nonzero one is named in the message with the
        stored weight.

    Raises
    ------
    ValueError
        For the first weight outside the range (output channels in order), naming its value,
        output channel, kernel position (``CONV`` mode) and input channel.
    """
    w = np.asarray(w, np.int64)
    bad = np.argwhere(np.abs(w) > PACKED_WEIGHT_MAX)
    if not bad.size:
        return
    at = tuple(int(i) for i in bad[0])
    v = int(w[at])
    stored = f" (stored {v + zero_point} minus zero point {zero_point})" if zero_point else ""
    tap = f", kernel position ({at[1]}, {at[2]})" if w.ndim == 4 else ""
    raise ValueError(f"{stage} weight {v}{stored} at output channel {at[0]}{tap}, input "
                     f"channel {at[-1]}; dwsep's 1x1 arrays take int8 weights in "
                     f"-{PACKED_WEIGHT_MAX}..{PACKED_WEIGHT_MAX} (TFLite's symmetric weight "
                     "range)")


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


# ---- matched layers ---------------------------------------------------------------------------

@dataclass
class _Stage:
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


def _identity_stage(op: Operator, w: np.ndarray, channels: int) -> _Stage:
    return _Stage(op, w, np.zeros(channels, np.int64),
                  np.full(channels, packing.IDENTITY_MULT),
                  np.full(channels, packing.IDENTITY_SHIFT))


@dataclass
class _Geometry:
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
class _SpaceToDepth:
    """A stem compiled by space-to-depth (:func:`space_to_depth_conv`): the model input is
    stored in ``block x block`` blocks, ``geo`` is the stride-1 convolution the descriptor
    runs over it with the rearranged weights ``w``, ``op_geo`` the operator's own geometry
    (the layer report's)."""
    block: int
    op_geo: _Geometry
    geo: _Geometry
    w: np.ndarray


def _add(q: dict, a: str, b: str) -> dict:
    """The ``add_*`` descriptor fields and the packed ADD table of a residual ADD whose
    ``add_quant_params`` are ``q``; ``a``, ``b``: which TFLite input (``"1"`` or ``"2"``) is
    the main path (the PW output) and which the residual."""
    table = add_table(q[f"in{a}_zp"], q[f"mult{a}"], q[f"shift{a}"], q[f"in{b}_zp"],
                      q[f"mult{b}"], q[f"shift{b}"], q["out_mult"])
    return dict(add_zp=q["out_zp"], add_min=q["act_min"], add_max=q["act_max"],
                add_out_shift=q["out_shift"], table=packing.pack_add_table(table))


@dataclass
class _Unit:
    """A matched layer: one or more descriptors (output tiles, input slices)."""
    ops: list[Operator]
    input: str
    output: str
    geo: _Geometry
    pw: _Stage
    depth_mult: int = 1
    conv: bool = False
    expand: _Stage | None = None
    dw: _Stage | None = None
    fc: dict | None = None          # RAW_OUT: the fc_requant host step's parameters
    residual: str | None = None
    add: dict | None = None         # RESIDUAL: the add_* fields and "table" (packed)
    out_shape: tuple[int, ...] = ()
    macs: int = 0
    note: str = ""
    slices: list[tuple[int, int]] | None = None   # input channel slices (pool / FC)
    in_c: int = 0                                   # channels of ``input`` (0: geo.c)
    stem: _SpaceToDepth | None = None               # a CONV over the s2d model input

    def __post_init__(self):
        self.in_c = self.in_c or self.geo.c

    @property
    def is_pool(self) -> bool:
        """An AVERAGE_POOL_2D or MEAN (its DW stage), with or without a fused FC."""
        return self.dw is not None and self.dw.op.opcode in ("AVERAGE_POOL_2D", "MEAN")

    @property
    def stages(self) -> list[str]:
        out = ["EXPAND"] if self.expand is not None else []
        out.append("CONV" if self.conv else "DW")
        out.append("PW")
        if self.fc is not None:
            out.append("RAW_OUT")
        if self.residual is not None:
            out.append("RESIDUAL")
        return out


class _Matcher:
    """Walks the graph in operator order and groups operators into :class:`_Unit` s."""

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
        self.units: list[_Unit] = []
        self.noops: list[Operator] = []     # RESHAPEs of the model input, not yet reported
        self.input_block = 1                # the model input stored space-to-depth if > 1

    # -- graph helpers --
    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def sole_consumer(self, name: str) -> Operator | None:
        """The one operator reading ``name``, if it is not also a model output."""
        ops = self.consumers.get(name, [])
        if len(ops) != 1 or name in self.graph.outputs:
            return None
        return ops[0]

    def _through_reshapes(self, name: str) -> tuple[Operator | None, list[Operator]]:
        """The sole consumer of ``name`` past single-consumer RESHAPEs, and those RESHAPEs."""
        reshapes = []
        op = self.sole_consumer(name)
        while op is not None and op.opcode == "RESHAPE":
            reshapes.append(op)
            op = self.sole_consumer(op.outputs[0])
        return op, reshapes

    def _is_pointwise(self, op: Operator | None) -> bool:
        if op is None or op.opcode != "CONV_2D":
            return False
        shape = self.graph.tensor(op.inputs[1]).shape
        return (len(shape) == 4 and tuple(shape[1:3]) == (1, 1)
                and _pair(op, "stride") == (1, 1))

    def claim(self, *ops: Operator) -> None:
        for op in ops:
            if op.index in self.claimed:
                raise _fail(op, "is matched twice (internal error)")
            self.claimed.add(op.index)

    def need_stored(self, op: Operator, name: str) -> str:
        name = self.resolve(name)
        if name in self.host:
            raise _fail(op, f"reads {name!r}, a FULLY_CONNECTED output the host computes "
                            "after the hardware run; only the model output may come from it")
        t = self.graph.tensor(name)
        if t.is_constant and t.dtype == "int8" and name not in self.stored:
            _zero_point(op, t)
            self.stored.add(name)   # a blob in the activation layout
        if name not in self.stored:
            raise _fail(op, f"input {name!r} is not computed before it (operators must be in "
                            "dependency order)")
        return name

    def image(self, op: Operator, name: str) -> tuple[int, int, int]:
        t = self.graph.tensor(name)
        shape = tuple(int(v) for v in t.shape)
        if len(shape) == 4 and shape[0] == 1:
            return shape[1], shape[2], shape[3]
        if len(shape) >= 1 and (len(shape) < 4) and _pixels(shape) == 1:
            return 1, 1, shape[-1]
        raise _fail(op, f"input {name!r} has shape {list(shape)}; dwsep runs batch-1 NHWC "
                        "tensors")

    # -- the walk --
    def run(self) -> list[_Unit]:
        ops = self.graph.operators
        if not ops:
            raise UnsupportedModelError("the model has no operators")
        handlers = {"RESHAPE": self._reshape, "PAD": self._pad, "PADV2": self._pad,
                    "CONV_2D": self._conv, "DEPTHWISE_CONV_2D": self._depthwise,
                    "AVERAGE_POOL_2D": self._pool, "MEAN": self._pool,
                    "FULLY_CONNECTED": self._fc, "ADD": self._add}
        for op in ops:
            if op.index in self.claimed:
                continue
            if op.opcode not in handlers:
                raise _fail(op, f"not supported; dwsep runs {', '.join(sorted(handlers))}")
            handlers[op.opcode](op)
        for op in ops:
            if op.index not in self.claimed:
                raise _fail(op, "is not part of any layer (internal error)")
        out = self.resolve(self.graph.outputs[0])
        if out not in self.stored and out not in self.host:
            raise UnsupportedModelError(f"the model output {self.graph.outputs[0]!r} is not "
                                        "computed by any operator")
        return self.units

    def _add_unit(self, unit: _Unit) -> None:
        unit.ops = self.noops + unit.ops
        self.noops = []
        self.units.append(unit)
        if unit.fc is not None:
            self.host[unit.output] = len(self.units) - 1
        else:
            self.stored.add(unit.output)

    # -- RESHAPE, PAD --
    def _reshape(self, op: Operator) -> None:
        src = self.resolve(op.inputs[0])
        a, b = self.graph.tensor(src).shape, self.graph.tensor(op.outputs[0]).shape
        if int(np.prod(a)) != int(np.prod(b)) or (a[-1] != b[-1] and _pixels(a) != 1):
            raise _fail(op, f"reshape {list(a)} -> {list(b)} changes the channel count of a "
                            "multi-pixel tensor; dwsep runs RESHAPE only as a no-op on the "
                            "channel-padded layout")
        if a[-1] != b[-1] and _pixels(b) != 1:
            raise _fail(op, f"reshape {list(a)} -> {list(b)} spreads channels over pixels; "
                            "dwsep runs RESHAPE only as a no-op on the channel-padded layout")
        self.claim(op)
        self.alias[op.outputs[0]] = src
        # reported with the layer that made its input (or, for the model input, the next)
        producer = next((u for u in self.units if u.output == src), None)
        (producer.ops if producer is not None else self.noops).append(op)

    def _pad(self, op: Operator) -> None:
        user = self.sole_consumer(op.outputs[0])
        if user is None or user.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            raise _fail(op, "dwsep folds PAD into the padding of the one CONV_2D or "
                            "DEPTHWISE_CONV_2D that reads it; its output has other readers")
        # claimed by that operator's layer

    def _pad_params(self, pad: Operator) -> tuple[int, int, int, int, int]:
        """``(top, bottom, left, right, value)`` of a foldable PAD."""
        p = self.graph.tensor(pad.inputs[1]).data
        if p is None or np.asarray(p).shape != (4, 2):
            raise _fail(pad, "paddings must be a constant [4, 2] tensor")
        p = np.asarray(p, np.int64)
        if p[0].any() or p[3].any() or (p < 0).any():
            raise _fail(pad, f"paddings {p.tolist()} pad the batch or channel dimension; "
                             "dwsep folds only height/width padding")
        out = self.graph.tensor(pad.outputs[0])
        value = _zero_point(pad, out)
        if pad.opcode == "PADV2" and len(pad.inputs) > 2 and pad.inputs[2] is not None:
            c = self.graph.tensor(pad.inputs[2])
            if c.data is None or c.data.size != 1:
                raise _fail(pad, "constant_values must be one constant int8 value")
            value = int(np.asarray(c.data).reshape(-1)[0])
        return int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]), value

    def geometry(self, op: Operator, k: int) -> _Geometry:
        """Line-buffer geometry of CONV_2D / DEPTHWISE_CONV_2D ``op`` with kernel ``k``,
        folding a PAD that only it reads, checked against the line buffer's limits and the
        output tensor's shape."""
        geo = self.window(op, k)
        self.check_window(op, geo)
        return geo

    def check_window(self, op: Operator, geo: _Geometry, form: str = "") -> None:
        """The line buffer's kernel and padding limits (``form`` names a transformed
        convolution in the message), then the output shape of ``op``."""
        cfg = self.cfg
        if geo.k > cfg.k_max:
            raise _fail(op, f"kernel {geo.k}x{geo.k}{form} exceeds k_max={cfg.k_max} of config "
                            f"{cfg.name!r}")
        limit = cfg.k_max * cfg.dilation_max
        for what, v in (("top", geo.pad_top), ("left", geo.pad_left)):
            if v >= limit:
                raise _fail(op, f"padding {what} {v}{form} reaches the line buffer's limit "
                                f"k_max*dilation_max={limit} of config {cfg.name!r}")
        y = self.graph.tensor(op.outputs[0])
        shape = [1, geo.out_h, geo.out_w, int(y.shape[-1])]
        if list(y.shape) != shape:
            raise _fail(op, f"output {y.name!r} has shape {list(y.shape)}, the layer computes "
                            f"{shape}")

    def window(self, op: Operator, k: int) -> _Geometry:
        """:meth:`geometry` without :meth:`check_window`."""
        cfg = self.cfg
        x_name = op.inputs[0]
        pad_op = self.producer.get(x_name)
        if pad_op is not None and pad_op.opcode not in _PADS:
            pad_op = None
        sh, sw = _pair(op, "stride")
        if sh != sw:
            raise _fail(op, f"stride {sh}x{sw} differs in height and width; dwsep needs equal "
                            "strides")
        if sh not in (1, 2):
            raise _fail(op, f"stride {sh} is not supported (1 or 2)")
        dh, dwl = _pair(op, "dilation")
        if dh != dwl:
            raise _fail(op, f"dilation {dh}x{dwl} differs in height and width; dwsep needs "
                            "equal dilations")
        if dh > cfg.dilation_max:
            raise _fail(op, f"dilation {dh} exceeds dilation_max={cfg.dilation_max} of config "
                            f"{cfg.name!r}")
        padding = op.options.get("padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise _fail(op, f"padding {padding} is not SAME or VALID")
        in_zp = _zero_point(op, self.graph.tensor(x_name))
        top = bottom = left = right = 0
        lb_zp = in_zp
        source = x_name
        if pad_op is not None:
            top, bottom, left, right, lb_zp = self._pad_params(pad_op)
            source = pad_op.inputs[0]
        h, w, c = self.image(op, source)
        hp, wp = h + top + bottom, w + left + right
        try:
            t2, b2, oh = padding_amounts(padding, hp, k, sh, dh)
            l2, r2, ow = padding_amounts(padding, wp, k, sh, dh)
        except UnsupportedModelError as e:
            raise _fail(op, str(e)) from None
        if pad_op is not None and lb_zp != in_zp and (t2 or b2 or l2 or r2):
            raise _fail(op, f"folding {pad_op.opcode} operator {pad_op.index} (value {lb_zp}) "
                            f"into SAME padding (value {in_zp}) needs two padding values")
        return _Geometry(source, h, w, c, k, sh, dh, top + t2, left + l2, oh, ow, lb_zp, pad_op)

    def claim_geometry(self, op: Operator, geo: _Geometry) -> str:
        """Claim ``op`` and its folded PAD; return the layer's input tensor (stored)."""
        self.claim(op)
        if geo.pad_op is not None:
            self.claim(geo.pad_op)
        return geo.source

    # -- stages --
    def conv_stage(self, op: Operator) -> _Stage:
        """CONV_2D / DEPTHWISE_CONV_2D weights with the bias folded with the input zero
        point: ``[C_out, C_in]`` (1x1), ``[C_out, k, k, C_in]`` (k x k), ``[k, k, C*m]``
        (depthwise)."""
        _activation(op)
        for name in (op.inputs[0], op.outputs[0]):
            _zero_point(op, self.graph.tensor(name))
        wt = self.graph.tensor(op.inputs[1])
        if op.opcode == "DEPTHWISE_CONV_2D":
            channels = int(wt.shape[3])
            w = _weights(self.graph, op, channels)[0]
            sums = w.astype(np.int64).sum(axis=(0, 1))
        else:
            channels = int(wt.shape[0])
            w = _weights(self.graph, op, channels)
            sums = w.astype(np.int64).sum(axis=(1, 2, 3))
            if w.shape[1:3] == (1, 1):
                w = w.reshape(channels, -1)
        q = conv_quant_params(self.graph, op)
        bias = _fold(op, _bias(self.graph, op, channels), sums, q["in_zp"])
        return _Stage(op, w, bias, q["mult"], q["shift"], q["out_zp"], q["act_min"],
                      q["act_max"])

    # -- convolutions --
    def _conv(self, op: Operator) -> None:
        wt = self.graph.tensor(op.inputs[1])
        if len(wt.shape) != 4:
            raise _fail(op, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                            "[C_out, k, k, C_in]")
        kh, kw = int(wt.shape[1]), int(wt.shape[2])
        if kh != kw:
            raise _fail(op, f"kernel {kh}x{kw} is not square; dwsep runs square kernels only")
        if kh == 1 and self._expand_block(op):
            return
        if kh == 1:
            self._standalone_pw(op)
        else:
            self._conv_mode(op, kh)

    def _conv_mode(self, op: Operator, k: int) -> None:
        cfg, P = self.cfg, self.cfg.dw_lanes
        geo = self.window(op, k)
        x = self.need_stored(op, self.claim_geometry(op, geo))
        if int(self.graph.tensor(op.inputs[1]).shape[3]) != geo.c:
            raise _fail(op, f"weights have {self.graph.tensor(op.inputs[1]).shape[3]} input "
                            f"channels for an input of {geo.c}")
        stage = self.conv_stage(op)
        stem = self._space_to_depth(op, geo, stage.w)
        run, form, note = geo, "", ""
        if stem is not None:
            run = stem.geo
            form = (f" (the space-to-depth form of the {k}x{k} stride-{stem.block} "
                    f"convolution over {geo.c} channels)")
            note = (f"input stored space-to-depth: runs as a {run.k}x{run.k} stride-1 CONV "
                    f"over {run.h}x{run.w}x{run.c}")
        self.check_window(op, run, form)
        groups = packing.padded(run.c, P) // P
        if run.k * run.k * groups > cfg.mid_groups_max:
            raise _fail(op, f"{run.k}x{run.k} convolution over {run.c} channels{form} needs "
                            f"k*k*ceil(C/{P}) = {run.k * run.k * groups} PW input words per "
                            f"pixel, more than mid_channels_max/dw_lanes={cfg.mid_groups_max} "
                            f"of config {cfg.name!r}")
        c_out = stage.w.shape[0]
        if stem is not None:
            self.input_block = stem.block
        self._add_unit(_Unit(
            [op] + ([geo.pad_op] if geo.pad_op else []), x, op.outputs[0], run, stage,
            conv=True, out_shape=(geo.out_h, geo.out_w, c_out),
            macs=geo.out_h * geo.out_w * k * k * geo.c * c_out, note=note, stem=stem))

    def _space_to_depth(self, op: Operator, geo: _Geometry, w: np.ndarray
                        ) -> _SpaceToDepth | None:
        """The stem ``op`` (``geo``, weights ``w``) as a stride-1 convolution over the model
        input stored space-to-depth in 2x2 blocks (:func:`space_to_depth_conv`), or ``None``
        where that does not apply: the transform needs stride 2 and dilation 1, the model
        input read by ``op`` (or the PAD folded into it) and nothing else, ``4*C <= P`` (the
        blocks fit one lane group) and padding with the input zero point (the host fills
        the blocks an odd edge cuts with it)."""
        b, name = 2, self.graph.inputs[0]
        reader = geo.pad_op or op
        readers = [r.index for r in self.consumers.get(name, [])]
        if (geo.stride != b or geo.dilation != 1 or geo.source != name
                or readers != [reader.index] or name in self.graph.outputs
                or b * b * geo.c > self.cfg.dw_lanes
                or geo.lb_zp != int(self.graph.tensor(name).zero_point[0])):
            return None
        w2, top, left = space_to_depth_conv(w, geo.pad_top, geo.pad_left, b)
        run = _Geometry(geo.source, -(-geo.h // b), -(-geo.w // b), b * b * geo.c,
                        w2.shape[1], 1, 1, top, left, geo.out_h, geo.out_w, geo.lb_zp,
                        geo.pad_op)
        return _SpaceToDepth(b, geo, run, w2)

    def _standalone_pw(self, op: Operator, note: str = "") -> None:
        geo = self.geometry(op, 1)
        x = self.need_stored(op, self.claim_geometry(op, geo))
        stage = self.conv_stage(op)
        c_out, c_in = stage.w.shape
        if c_in != geo.c:
            raise _fail(op, f"weights have {c_in} input channels for an input of {geo.c}")
        self._check_mid(op, geo.c, 1, "input channels")
        self._add_unit(_Unit(
            [op] + ([geo.pad_op] if geo.pad_op else []), x, op.outputs[0], geo, stage,
            dw=_identity_stage(op, np.ones((1, 1, geo.c), np.int8), geo.c),
            out_shape=(geo.out_h, geo.out_w, c_out),
            macs=geo.out_h * geo.out_w * c_in * c_out, note=note))

    def _check_mid(self, op: Operator, c: int, m: int, what: str, kernel: int = 1) -> None:
        cfg, P = self.cfg, self.cfg.dw_lanes
        mid = packing.padded(c, P) * m
        shown = f"{c}x{m}" if m > 1 else f"{c}"
        if mid > cfg.mid_channels_max:
            raise _fail(op, f"{what} {shown} (padded to {mid}) exceed mid_channels_max="
                            f"{cfg.mid_channels_max} of config {cfg.name!r}")
        if mid > cfg.dw_channels_max(kernel):
            raise _fail(op, f"{what} {shown} (padded to {mid}) of a {kernel}x{kernel} kernel "
                            f"need {cfg.dw_words(mid // P, kernel)} DW weight words, more than "
                            f"dw_weight_words={cfg.dw_weight_depth} of config {cfg.name!r} "
                            f"(at most {cfg.dw_channels_max(kernel)} channels at this kernel)")

    def _expand_block(self, e: Operator) -> bool:
        """Match ``e`` as the expand of ``e -> [PAD] -> DW -> 1x1 CONV_2D``; emit the block."""
        if _pair(e, "stride") != (1, 1) or self.producer.get(e.inputs[0], e).opcode in _PADS:
            return False
        user = self.sole_consumer(e.outputs[0])
        if user is not None and user.opcode in _PADS:
            user = self.sole_consumer(user.outputs[0])
        if user is None or user.opcode != "DEPTHWISE_CONV_2D":
            return False
        pw = self.sole_consumer(user.outputs[0])
        if not self._is_pointwise(pw):
            return False
        c_in = int(self.graph.tensor(e.inputs[1]).shape[3])
        groups = packing.padded(c_in, self.cfg.dw_lanes) // self.cfg.dw_lanes
        if groups > self.cfg.expand_in_groups_max:
            self._standalone_pw(e, note=f"expand of the block at operator {user.index} split: "
                                        f"{c_in} input channels exceed expand_channels_max="
                                        f"{self.cfg.expand_channels_max}")
            self._block(user, pw)
        else:
            self._block(user, pw, e)
        return True

    def _depthwise(self, op: Operator) -> None:
        pw = self.sole_consumer(op.outputs[0])
        if self._is_pointwise(pw):
            self._block(op, pw)
        else:
            self._dw_alone(op)

    def _dw_geometry(self, dw: Operator) -> tuple[_Geometry, int]:
        wt = self.graph.tensor(dw.inputs[1])
        if len(wt.shape) != 4 or wt.shape[0] != 1:
            raise _fail(dw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                            "[1, k, k, C*m]")
        kh, kw = int(wt.shape[1]), int(wt.shape[2])
        if kh != kw:
            raise _fail(dw, f"kernel {kh}x{kw} is not square; dwsep runs square kernels only")
        geo = self.geometry(dw, kh)
        if int(wt.shape[3]) % geo.c:
            raise _fail(dw, f"weights {wt.name!r} have shape {list(wt.shape)}; expected "
                            f"[1, k, k, {geo.c}*m]")
        m = int(wt.shape[3]) // geo.c
        self._check_mid(dw, geo.c, m, "depthwise output channels", kh)
        return geo, m

    def _block(self, dw: Operator, pw: Operator, e: Operator | None = None) -> None:
        geo, m = self._dw_geometry(dw)
        ops = [dw, pw]
        if e is not None:
            self.claim(e)
            ops.insert(0, e)
            expand = self.conv_stage(e)
            x = self.need_stored(e, e.inputs[0])
            eh, ew, ec = self.image(e, x)
            if expand.w.shape[1] != ec:
                raise _fail(e, f"weights have {expand.w.shape[1]} input channels for an input "
                               f"of {ec}")
            if (eh, ew, expand.w.shape[0]) != (geo.h, geo.w, geo.c):
                raise _fail(e, "expand output does not match the depthwise input")
            self.claim_geometry(dw, geo)
        else:
            expand = None
            x = self.need_stored(dw, self.claim_geometry(dw, geo))
        if geo.pad_op is not None:
            ops.insert(-1, geo.pad_op)
        self.claim(pw)
        dw_stage = self.conv_stage(dw)
        pw_stage = self.conv_stage(pw)
        c_mid = geo.c * m
        if pw_stage.w.shape[1] != c_mid:
            raise _fail(pw, f"weights have {pw_stage.w.shape[1]} input channels for the "
                            f"{c_mid} depthwise outputs")
        c_out = pw_stage.w.shape[0]
        pixels = geo.out_h * geo.out_w
        unit = _Unit(sorted(ops, key=lambda op: op.index), x, pw.outputs[0], geo, pw_stage,
                     depth_mult=m, expand=expand, dw=dw_stage,
                     in_c=expand.w.shape[1] if expand is not None else 0,
                     out_shape=(geo.out_h, geo.out_w, c_out),
                     macs=pixels * c_mid * (geo.k * geo.k + c_out)
                     + (geo.h * geo.w * expand.w.size if expand is not None else 0))
        self._fuse_residual(unit, pw)
        self._add_unit(unit)

    def _fuse_residual(self, unit: _Unit, pw: Operator) -> None:
        add = self.sole_consumer(pw.outputs[0])
        if add is None or add.opcode != "ADD" or len(add.inputs) != 2:
            return
        others = [n for n in add.inputs if n != pw.outputs[0]]
        if len(others) != 1:
            return
        other = self.resolve(others[0])
        y = self.graph.tensor(add.outputs[0])
        shapes = {tuple(self.graph.tensor(n).shape) for n in (pw.outputs[0], other,
                                                              add.outputs[0])}
        c_out = unit.out_shape[2]
        if (len(shapes) != 1 or other not in self.stored
                or packing.padded(c_out, self.cfg.pw_cols) > self.cfg.out_channels_max
                or not _fits_engine(self.cfg, unit, c_out)):
            return  # an ADD descriptor of its own (the residual stage cannot be tiled)
        _activation(add)
        _zero_point(add, y)
        q = add_quant_params(self.graph, add)
        a, b = ("1", "2") if add.inputs[0] == pw.outputs[0] else ("2", "1")
        unit.residual = other
        unit.add = _add(q, a, b)
        unit.ops.append(add)
        unit.output = add.outputs[0]
        self.claim(add)

    def _dw_alone(self, dw: Operator) -> None:
        geo, m = self._dw_geometry(dw)
        x = self.need_stored(dw, self.claim_geometry(dw, geo))
        stage = self.conv_stage(dw)
        c_mid = geo.c * m
        self._add_unit(_Unit(
            [dw] + ([geo.pad_op] if geo.pad_op else []), x, dw.outputs[0], geo,
            _identity_stage(dw, np.eye(c_mid, dtype=np.int8), c_mid), depth_mult=m,
            dw=stage,
            out_shape=(geo.out_h, geo.out_w, c_mid),
            macs=geo.out_h * geo.out_w * c_mid * geo.k * geo.k))

    # -- pools, FC, ADD --
    def _pool(self, op: Operator) -> None:
        cfg = self.cfg
        x = self.need_stored(op, op.inputs[0])
        h, w, c = self.image(op, x)
        x_t, y = self.graph.tensor(x), self.graph.tensor(op.outputs[0])
        in_zp, out_zp = _zero_point(op, x_t), _zero_point(op, y)
        if op.opcode == "AVERAGE_POOL_2D":
            o = op.options
            fh, fw = int(o["filter_h"]), int(o["filter_w"])
            sh, sw = _pair(op, "stride")
            if o.get("padding", "VALID") != "VALID":
                raise _fail(op, f"padding {o.get('padding')}: dwsep runs VALID average pools "
                                "(SAME divides by a count that varies at the edges)")
            if (fh, fw) == (h, w):
                k, stride, oh, ow = max(h, w), 1, 1, 1
            elif fh == fw and sh == sw and sh in (1, 2):
                k, stride = fh, sh
                try:
                    _, _, oh = padding_amounts("VALID", h, k, stride, 1)
                    _, _, ow = padding_amounts("VALID", w, k, stride, 1)
                except UnsupportedModelError as e:
                    raise _fail(op, str(e)) from None
            else:
                raise _fail(op, f"filter {fh}x{fw} stride {sh}x{sw} on a {h}x{w} input: dwsep "
                                "runs global pools and square windows with stride 1 or 2")
            n = fh * fw
            try:
                mult, shift = exact_division_multiplier(n)
            except ValueError as e:
                raise _fail(op, str(e)) from None
            lo, hi = fused_activation_range(_activation(op), float(y.scale[0]), out_zp,
                                            _name(op))
            bias, zp = 0, 0
        else:
            axes = self.graph.tensor(op.inputs[1]).data
            axes = sorted({int(a) % 4 for a in np.asarray(axes).reshape(-1)}) if (
                axes is not None) else None
            if axes != [1, 2] or len(x_t.shape) != 4:
                raise _fail(op, f"axes {axes} of a {len(x_t.shape)}-d input: dwsep runs MEAN "
                                "over height and width (axes 1, 2) of an NHWC tensor")
            k, stride, oh, ow, n = max(h, w), 1, 1, 1, h * w
            mult, shift = mean_multiplier(*quantize_multiplier(
                float(x_t.scale[0]) / float(y.scale[0])), n)
            bias, zp, lo, hi = -in_zp * n, out_zp, -128, 127
        if k > cfg.k_max:
            raise _fail(op, f"pooling window {h}x{w} needs a {k}x{k} kernel, more than k_max="
                            f"{cfg.k_max} of config {cfg.name!r}")
        self.claim(op)
        geo = _Geometry(x, h, w, c, k, stride, 1, 0, 0, oh, ow, 0)
        ones = np.zeros((k, k, c), np.int8)
        ones[:fh if op.opcode == "AVERAGE_POOL_2D" else h,
             :fw if op.opcode == "AVERAGE_POOL_2D" else w] = 1
        dw = _Stage(op, ones, np.full(c, bias, np.int64), np.full(c, mult), np.full(c, shift),
                    zp, lo, hi)
        unit = _Unit([op], x, op.outputs[0], geo,
                     _identity_stage(op, np.eye(c, dtype=np.int8), c), dw=dw,
                     out_shape=(oh, ow, c), macs=oh * ow * c * n)
        fc, reshapes = self._through_reshapes(op.outputs[0])
        if (fc is not None and fc.opcode == "FULLY_CONNECTED" and oh * ow == 1
                and self._fc_fits_one_tile(fc)):
            self.claim(*reshapes, fc)
            unit.ops += [*reshapes, fc]
            self._fc_stage(unit, fc, c)
        self._add_unit(unit)

    def _fc_fits_one_tile(self, fc: Operator) -> bool:
        """The outputs of FULLY_CONNECTED ``fc`` fit one output tile (``out_channels_max``).

        Only then is it fused into the pool before it: each output tile of a fused pool + FC
        re-reads the pool's input and pools it again, while a pool of its own writes the
        pooled vector once and the FC's tiles read only that."""
        return int(self.graph.tensor(fc.inputs[1]).shape[0]) <= self.cfg.out_channels_max

    def _fc_stage(self, unit: _Unit, fc: Operator, c: int) -> None:
        """Make ``unit``'s PW the FULLY_CONNECTED ``fc`` with ``RAW_OUT``."""
        try:
            p = fully_connected_params(self.graph, fc)
        except UnsupportedModelError as e:
            raise _fail(fc, str(e).split(": ", 1)[-1]) from None
        units, depth = p["w"].shape
        if depth != c:
            raise _fail(fc, f"weights of depth {depth} for an input of {c} channels per "
                            "pixel; dwsep runs FULLY_CONNECTED per pixel (or on one pixel)")
        w = p["w"].astype(np.int64) - p["w_zp"]   # range: _check_packed_weights
        bias = np.zeros(units, np.int64) if p["bias"] is None else np.asarray(p["bias"],
                                                                                  np.int64)
        pixels = unit.out_shape[0] * unit.out_shape[1]
        unit.pw = _Stage(fc, w, np.zeros(units, np.int64), None, None, w_zp=p["w_zp"])
        unit.fc = dict(bias=bias - p["in_zp"] * w.sum(axis=1), scale=np.asarray(p["scale"]),
                       out_zp=p["out_zp"], act_min=p["act_min"], act_max=p["act_max"],
                       rows=pixels, units=units)
        unit.output = fc.outputs[0]
        unit.out_shape = (*unit.out_shape[:2], units)
        unit.macs += pixels * c * units
        if not self._feeds_only_output(fc.outputs[0]):
            raise _fail(fc, "its output feeds other operators; FULLY_CONNECTED requantizes on "
                            "the host after the hardware run, so it must give the model output")

    def _feeds_only_output(self, name: str) -> bool:
        """``name`` reaches the model output only through RESHAPEs and feeds nothing else."""
        for op in self.consumers.get(name, []):
            if op.opcode != "RESHAPE" or not self._feeds_only_output(op.outputs[0]):
                return False
        return True

    def _fc(self, op: Operator) -> None:
        x = self.need_stored(op, op.inputs[0])
        h, w, c = self.image(op, x) if len(self.graph.tensor(x).shape) == 4 else (
            1, _pixels(self.graph.tensor(x).shape), int(self.graph.tensor(x).shape[-1]))
        self.claim(op)
        zp = _zero_point(op, self.graph.tensor(x))
        geo = _Geometry(x, h, w, c, 1, 1, 1, 0, 0, h, w, zp)
        unit = _Unit([op], x, op.outputs[0], geo,
                     _identity_stage(op, np.eye(c, dtype=np.int8), c),
                     dw=_identity_stage(op, np.ones((1, 1, c), np.int8), c), out_shape=(h, w, c))
        self._fc_stage(unit, op, c)
        self._add_unit(unit)

    def _add(self, op: Operator) -> None:
        if len(op.inputs) != 2:
            raise _fail(op, f"has {len(op.inputs)} inputs, not 2")
        a, b = (self.need_stored(op, n) for n in op.inputs)
        shapes = [tuple(self.graph.tensor(n).shape) for n in (a, b, op.outputs[0])]
        if len(set(shapes)) != 1:
            raise _fail(op, f"input shapes {[list(s) for s in shapes[:2]]}: dwsep runs ADD of "
                            "equal shapes (no broadcasting)")
        h, w, c = self.image(op, a)
        if packing.padded(c, self.cfg.pw_cols) > self.cfg.out_channels_max:
            raise _fail(op, f"residual ADD of {c} channels: the residual stage cannot be tiled "
                            f"and out_channels_max={self.cfg.out_channels_max} of config "
                            f"{self.cfg.name!r} is smaller (a residual ADD that does not fuse "
                            "is not supported beyond that)")
        self._check_mid(op, c, 1, "ADD channels")
        _activation(op)
        _zero_point(op, self.graph.tensor(op.outputs[0]))
        q = add_quant_params(self.graph, op)
        self.claim(op)
        geo = _Geometry(a, h, w, c, 1, 1, 1, 0, 0, h, w, 0)
        unit = _Unit([op], a, op.outputs[0], geo,
                     _identity_stage(op, np.eye(c, dtype=np.int8), c),
                     dw=_identity_stage(op, np.ones((1, 1, c), np.int8), c), out_shape=(h, w, c),
                     residual=b)
        if not _fits_engine(self.cfg, unit, c):
            raise _fail(op, f"residual ADD of {c} channels: its identity weights "
                            f"({(packing.padded(c, self.cfg.dw_lanes) // self.cfg.dw_lanes)} x "
                            f"{packing.padded(c, self.cfg.pw_cols) // self.cfg.pw_cols} words) "
                            f"exceed engine_weight_words={self.cfg.engine_weight_depth} of "
                            f"config {self.cfg.name!r}, and the residual stage cannot be tiled")
        unit.add = _add(q, "1", "2")
        self._add_unit(unit)


def _engine_words(cfg: AcceleratorConfig, u: _Unit, g_in: int) -> tuple[int, int, int]:
    """``(exp_groups, mid_groups, expand weight words)`` of unit ``u`` on ``g_in`` input
    groups: the line buffer's groups, the PW weight words per PW output group, and the
    expand weights beside them in the engine."""
    P = cfg.dw_lanes
    g_e = packing.padded(u.expand.w.shape[0], P) // P if u.expand is not None else g_in
    mid_groups = u.geo.k * u.geo.k * g_e if u.conv else g_e * u.depth_mult
    return g_e, mid_groups, expand_words(cfg, g_e) * g_in if u.expand is not None else 0


def _fits_engine(cfg: AcceleratorConfig, u: _Unit, out_channels: int) -> bool:
    """One descriptor of unit ``u`` with ``out_channels`` outputs has its expand and PW
    weights in the engine's weight memory together (``engine_weight_depth`` words)."""
    _, mid_groups, exp_words = _engine_words(
        cfg, u, packing.padded(u.in_c, cfg.dw_lanes) // cfg.dw_lanes)
    out_groups = packing.padded(out_channels, cfg.pw_cols) // cfg.pw_cols
    return exp_words + mid_groups * out_groups <= cfg.engine_weight_depth


# ---- emission ----------------------------------------------------------------------------------

@dataclass
class _Job:
    """One descriptor before the DDR plan: address fields hold ``(region key, byte offset)``."""
    fields: dict
    refs: dict[str, tuple[object, int]]
    reads: list[object]
    writes: list[object]


def _pad_to(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` (a vector, or weights by output channel along axis 0) with zeros up to ``n``
    entries along its first axis."""
    a = np.asarray(a)
    return np.pad(a, [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def _check_requantizers(u: _Unit) -> None:
    """Every requant table of ``u`` (the expand, DW and PW tables ``emit_unit`` writes, which
    slice, tile and lane-order these channels) passes :func:`check_requant_inputs`, each
    channel with the weights its array stage sums: an expand row (the input channels), a
    DW channel's ``k*k`` taps, a PW row (the mid channels; ``k*k*C_in`` in ``CONV`` mode)."""
    stages = []
    if u.expand is not None:
        stages.append(("expand", u.expand, u.expand.w))
    if u.dw is not None:
        stages.append(("depthwise", u.dw, u.dw.w.reshape(-1, u.dw.w.shape[-1]).T))
    if u.fc is None:
        stages.append(("pointwise", u.pw, u.pw.w.reshape(u.pw.w.shape[0], -1)))
    for what, stage, taps in stages:
        try:
            check_requant_inputs(taps, stage.bias, stage.mult, stage.shift, what)
        except ValueError as e:
            raise _fail(stage.op, str(e)) from None


def _check_packed_weights(u: _Unit) -> None:
    """Every weight ``u`` gives the expand and pointwise arrays passes
    :func:`check_packed_weights`: the expand's, the PW's (a 1x1 CONV_2D, the taps of a
    ``CONV``-mode k x k CONV_2D, the identity and pool matrices the compiler makes) and a
    FULLY_CONNECTED's ``w - w_zp``."""
    stages = [("expand", u.expand)] if u.expand is not None else []
    stages.append(("fully connected" if u.fc is not None else "pointwise", u.pw))
    for what, stage in stages:
        try:
            check_packed_weights(stage.w, what, stage.w_zp)
        except ValueError as e:
            raise _fail(stage.op, str(e)) from None


class _Emitter:
    def __init__(self, graph: Graph, cfg: AcceleratorConfig, units: list[_Unit],
                 model_input: TensorInfo):
        self.graph, self.cfg, self.units = graph, cfg, units
        self.model_input = model_input
        self.blobs: dict[bytes, str] = {}      # content -> key
        self.blob_order: list[tuple[str, bytes]] = []
        self.buffers: dict[object, int] = {}  # key -> bytes
        self.parts: dict[str, list[tuple[int, int]]] = {}  # sliced tensors
        self.jobs: list[_Job] = []
        self.host_steps: list[tuple[int, list[object]]] = []

    def blob(self, name: str, data: bytes) -> str:
        """The key of constant ``data`` (stored once however often it is used)."""
        if data not in self.blobs:
            self.blobs[data] = name
            self.blob_order.append((name, data))
        return self.blobs[data]

    def tensor_bytes(self, name: str, c0: int = 0, c1: int | None = None) -> int:
        if name == self.model_input.name:
            return self.model_input.nbytes
        t = self.graph.tensor(name)
        c1 = int(t.shape[-1]) if c1 is None else c1
        return _pixels(t.shape) * packing.padded(c1 - c0, self.cfg.dw_lanes)

    def buffer(self, name: str, part: int | None = None) -> object:
        """The region key of stored tensor ``name`` (or of its slice ``part``); a constant
        tensor is a blob."""
        t = self.graph.tensor(name)
        if t.is_constant:
            x = np.asarray(t.data, np.int8)
            return self.blob(f"const.{name}", packing.pack_activations(
                x.reshape(1, _pixels(x.shape), x.shape[-1]), self.cfg.dw_lanes))
        key = ("act", name) if part is None else ("act", name, part)
        if key not in self.buffers:
            if part is None:
                self.buffers[key] = self.tensor_bytes(name)
            else:
                self.buffers[key] = self.tensor_bytes(name, *self.parts[name][part])
        return key

    # -- slicing: pool and FC inputs in channel slices --
    def plan_slices(self) -> None:
        """Cut the inputs of pools and FCs into channel slices, each read by its own
        descriptors.

        A pool or FC input wider than ``M``, ``mid_channels_max`` or fewer where the DW weight
        memory holds fewer at its window (``AcceleratorConfig.dw_channels_max``), must be
        sliced. A pool without an FC wider than ``out_channels_max`` is sliced too when its
        producer can store the slices: its output tiles then read their own channels, not the
        whole input each. An FC input of one pixel is sliced where it lies (a slice of it is
        a contiguous run of bytes), ``M`` channels a slice. Any other input is stored as
        separate tensors of ``S = min(M, out_channels_max)`` channels rounded
        down to ``lcm(P, Q)`` (a pool's output slices then start on a PW output group),
        which its producer writes as its output tiles (``parts``).
        """
        cfg, P, Q = self.cfg, self.cfg.dw_lanes, self.cfg.pw_cols
        producers = {u.output: u for u in self.units}
        readers: dict[str, list[_Unit]] = {}
        for u in self.units:
            for name in (u.input, u.residual):
                if name is not None:
                    readers.setdefault(name, []).append(u)
        for u in self.units:
            c, op = u.geo.c, u.ops[0]
            most = cfg.mid_channels_max if u.conv else cfg.dw_channels_max(u.geo.k)
            wide = packing.padded(c, P) > most
            if wide and (u.conv or u.expand is not None or u.depth_mult != 1
                         or (u.fc is None and not u.is_pool)):
                raise _fail(op, f"{c} channels exceed mid_channels_max="
                                f"{cfg.mid_channels_max} of config {cfg.name!r}")
            if not wide and not (u.is_pool and u.fc is None and c > cfg.out_channels_max):
                continue
            if u.fc is not None and u.geo.h * u.geo.w == 1:
                u.slices = [(c0, min(c0 + most, c)) for c0 in range(0, c, most)]
                continue
            step = math.lcm(P, Q)
            size = min(most, cfg.out_channels_max) // step * step
            src = producers.get(u.input)
            if (src is None or src.residual is not None or src.fc is not None
                    or len(readers.get(u.input, [])) != 1
                    or self.graph.outputs[0] == u.input or src.slices is not None):
                if not wide:
                    continue    # the pool's output tiles read the whole input
                limit = (f"mid_channels_max={cfg.mid_channels_max}"
                         if most == cfg.mid_channels_max else
                         f"the {most} whose {u.geo.k}x{u.geo.k} DW weights fit "
                         f"dw_weight_words={cfg.dw_weight_depth}")
                raise _fail(op, f"input {u.input!r} has {c} channels, more than {limit} "
                                f"of config {cfg.name!r}, and cannot be stored in slices (it "
                                "is the model input or output, read twice, or made by an ADD)")
            # the producer's output tiles: sized as its own would be
            _, mid_groups, exp_words = _engine_words(cfg, src,
                                                     packing.padded(src.in_c, P) // P)
            u.slices = self.tiles(src, c, size, step, mid_groups, exp_words)
            self.parts[u.input] = u.slices

    # -- descriptors --
    def emit(self) -> list[dict]:
        reports = []
        for n, u in enumerate(self.units):
            first = len(self.jobs)
            tiles = self.emit_unit(n, u)
            reports.append(self.report(n, u, first, len(self.jobs) - first, tiles))
        return reports

    def out_tiles(self, u: _Unit, c_out: int, out_parts, mid_groups: int,
                  exp_words: int) -> list[tuple[int, int]]:
        """Output tiles ``(first, end)`` by channel (:meth:`tiles`): ``out_parts`` if the
        output is stored in parts, else tiles of at most ``out_channels_max`` channels.
        Not prefetch-sized for an FC (its tiles are short runs bound by their weights'
        reads, which a load through both ports does faster than a prefetch through one) nor
        beside a residual (the ADD reads the residual as one run: one tile)."""
        if out_parts is not None:
            return list(out_parts)
        return self.tiles(u, c_out, self.cfg.out_channels_max, self.cfg.pw_cols,
                          mid_groups, exp_words,
                          prefetch=u.fc is None and u.residual is None)

    def tiles(self, u: _Unit, c_out: int, most: int, step: int, mid_groups: int,
              exp_words: int, *, prefetch: bool = True) -> list[tuple[int, int]]:
        """``c_out`` output channels of unit ``u`` in tiles ``(first, end)`` of whole
        ``step``s (a multiple of ``pw_cols``), at most ``most`` channels each: as few as
        that allows, their sizes within one step of each other (a short last tile would
        repeat the expand and DW stages for little PW work), and, with ``prefetch``, for a
        unit without an expand stage (each tile of an expanding unit repeats its expand on
        the engine: more engine cycles than the prefetch saves on MobileNetV2's 14x14
        -> 7x7 block, 15 k of 1.43 M by the cycle model) and while the DW stage keeps up
        with the engine (a tile has at least as many PW groups as the DW takes cycles a
        word), more of them if that lets two consecutive tiles' PW weights (``mid_groups``
        words a PW group) fit in the engine's weight memory beside ``exp_words`` of expand
        weights: then each tile's weights are read while the one before runs
        (:func:`_plan_engine_weights`). Always as many as it takes for one tile's weights
        and the expand weights to fit the memory (``engine_weight_words``)."""
        cfg = self.cfg
        depth = cfg.engine_weight_depth
        steps, most_steps, groups = -(-c_out // step), most // step, step // cfg.pw_cols

        def pw_words(n: int) -> int:    # of the largest of n tiles
            return mid_groups * groups * -(-steps // n)

        n = -(-steps // most_steps)
        while n < steps and exp_words + pw_words(n) > depth:
            n += 1      # a tile's weights must fit the engine's memory
        if exp_words + pw_words(n) > depth:
            raise _fail(u.ops[0], f"{mid_groups} x {groups} PW weight words of one output "
                                  f"tile and {exp_words} expand words exceed "
                                  f"engine_weight_words={depth} of config {cfg.name!r}")
        dw_cycles = 1 if u.conv else cfg.dw_passes(u.geo.k) * u.geo.k
        while (prefetch and u.expand is None and n < steps
               and steps // (n + 1) * groups >= dw_cycles
               and exp_words + 2 * pw_words(n) > depth):
            n += 1
        tiles, a = [], 0
        for i in range(n):
            size = (steps // n + (i < steps % n)) * step
            tiles.append((a, min(a + size, c_out)))
            a += size
        return tiles

    def emit_unit(self, n: int, u: _Unit) -> int:
        P, Q = self.cfg.dw_lanes, self.cfg.pw_cols
        geo, m = u.geo, u.depth_mult
        slices = u.slices or [(0, geo.c)]
        _check_packed_weights(u)
        _check_requantizers(u)
        partials = []
        tiles_per_slice = 0
        for s, (c0, c1) in enumerate(slices):
            c = c1 - c0
            g_in = packing.padded(c if u.slices else u.in_c, P) // P
            g_e, mid_groups, exp_words = _engine_words(self.cfg, u, g_in)
            if u.slices is None:
                in_ref = (self.buffer(u.input), 0)
            elif u.input in self.parts:
                in_ref = (self.buffer(u.input, s), 0)
            else:       # a one-pixel input: the slice's channels where they lie
                in_ref = (self.buffer(u.input), c0)
            fields = dict(
                opcode=Opcode.LAYER, flags=0, kernel=geo.k, stride=geo.stride,
                dilation=geo.dilation, depth_mult=m, pad_top=geo.pad_top,
                pad_left=geo.pad_left, in_h=geo.h, in_w=geo.w, in_groups=g_in,
                out_h=geo.out_h, out_w=geo.out_w, lb_zp=geo.lb_zp,
                **dict.fromkeys(("exp_zp", "exp_min", "exp_max", "dw_zp", "dw_min", "dw_max",
                                 "pw_zp", "pw_min", "pw_max", "add_zp", "add_min", "add_max",
                                 "add_out_shift"), 0))
            refs = {"in_addr": in_ref}
            flags = 0
            tag = f"layer{n}" + (f".slice{s}" if u.slices else "")
            if u.expand is not None:
                e = u.expand
                flags |= DescFlag.EXPAND
                refs["exp_weights"] = (self.blob(f"{tag}.exp_weights",
                                                 packing.pack_expand_weights(e.w, P, Q)), 0)
                refs["exp_table"] = (self.blob(f"{tag}.exp_table", packing.pack_table(
                    *(_pad_to(a, expand_words(self.cfg, g_e) * Q)
                      for a in (e.bias, e.mult, e.shift)), self.cfg.erq_lanes)), 0)
                fields.update(exp_zp=e.zp, exp_min=e.lo, exp_max=e.hi)
            if u.conv:
                flags |= DescFlag.CONV
            else:
                d = u.dw
                w = d.w[..., c0 * m:c1 * m]
                refs["dw_weights"] = (self.blob(f"{tag}.dw_weights", packing.pack_dw_weights(
                    w, m, P, self.cfg.dw_taps)), 0)
                refs["dw_table"] = (self.blob(f"{tag}.dw_table", packing.pack_table(
                    *(packing.to_mid_lanes(a[c0 * m:c1 * m], c, m, P)
                      for a in (d.bias, d.mult, d.shift)), self.cfg.requant_lanes)), 0)
                fields.update(dw_zp=d.zp, dw_min=d.lo, dw_max=d.hi)
            # PW: the slice's columns, one descriptor per output tile
            if u.fc is not None:
                pw_w = u.pw.w[:, c0:c1]
                c_out = pw_w.shape[0]
                flags |= DescFlag.RAW_OUT
                key = ("raw", n, s)
                pixels = geo.out_h * geo.out_w
                self.buffers[key] = 4 * pixels * packing.padded(c_out, Q)
                partials.append(key)
                out_parts, out_base = None, 0
            elif u.slices is not None:      # a pool on one slice: identity PW of its channels
                pw_w = u.pw.w[c0:c1, c0:c1]
                c_out = c
                out_parts, out_base = [(0, c)], c0
            else:
                pw_w = u.pw.w
                c_out = pw_w.shape[0]
                out_parts = self.parts.get(u.output)
                out_base = 0
            if u.residual is not None:
                flags |= DescFlag.RESIDUAL
                add = dict(u.add)
                refs["add_table"] = (self.blob(f"{tag}.add_table", add.pop("table")), 0)
                fields.update(add)
                refs["res_addr"] = (self.buffer(u.residual), 0)
            if u.fc is None:
                fields.update(pw_zp=u.pw.zp, pw_min=u.pw.lo, pw_max=u.pw.hi)
            tiles = self.out_tiles(u, c_out, out_parts, mid_groups, exp_words)
            tiles_per_slice = len(tiles)
            conv_w = u.stem.w if u.stem is not None else pw_w
            for t, (a, b) in enumerate(tiles):
                # the channels stored (the engine's last word beyond them is dropped)
                parted = out_parts is not None and u.slices is None
                if u.fc is not None or (b < c_out and not parted):
                    end = b                                 # to the next tile; RAW_OUT
                elif parted:
                    end = a + packing.padded(b - a, P)      # a part: a tensor of its own
                else:
                    end = packing.padded(c_out, P)          # to the tensor's padding
                # the engine words of the tile's channels: the stored ones past the last
                # word (the padding to P) are filler beats
                og = packing.padded(b - a, Q) // Q
                packed = (packing.pack_conv_weights(_pad_to(conv_w[a:b], og * Q), P, Q)
                          if u.conv else packing.pack_pw_weights(_pad_to(pw_w[a:b], og * Q),
                                                                 m, P, Q))
                r = dict(refs)
                r["pw_weights"] = (self.blob(f"{tag}.pw_weights{t}", packed), 0)
                if u.fc is None:
                    r["pw_table"] = (self.blob(f"{tag}.pw_table{t}", packing.pack_table(
                        *(_pad_to(arr[a:b], og * Q) for arr in
                          (u.pw.bias, u.pw.mult, u.pw.shift)), self.cfg.erq_lanes)), 0)
                    beats = (end - a) // 8
                    if parted:
                        r["out_addr"] = (self.buffer(u.output, t), 0)
                        pitch = beats
                    else:
                        full = packing.padded(self.graph.tensor(u.output).shape[-1], P)
                        r["out_addr"] = (self.buffer(u.output), out_base + a)
                        pitch = full // 8
                else:
                    r["out_addr"] = (key, 4 * a)
                    pitch = 4 * packing.padded(c_out, Q) // 8
                    beats = og * Q // 2
                f = dict(fields, flags=flags, exp_groups=g_e, mid_groups=mid_groups,
                         out_groups=og, out_pitch=pitch, out_beats=beats,
                         exp_words=expand_words(self.cfg, g_e) if u.expand is not None
                         else g_e)
                reads = [r["in_addr"][0]] + ([r["res_addr"][0]] if "res_addr" in r else [])
                self.jobs.append(_Job(f, r, reads, [r["out_addr"][0]]))
        if u.fc is not None:
            self.host_steps.append((n, partials))
        return tiles_per_slice

    def report(self, n: int, u: _Unit, first: int, count: int, tiles: int) -> dict:
        """The layer as the model states it (a stem compiled by space-to-depth: its
        operator's geometry, the descriptor's in ``note``)."""
        geo = u.geo if u.stem is None else u.stem.op_geo
        in_c = u.in_c if u.stem is None else geo.c
        return {
            "layer": n, "operators": [op.index for op in u.ops],
            "ops": [op.opcode for op in u.ops], "stages": u.stages,
            "descriptors": [first, count], "runs_on": "accelerator" if u.fc is None
            else "accelerator + host", "host_step": "fc_requant" if u.fc is not None else None,
            "input": u.input, "output": u.output, "input_shape": [geo.h, geo.w, in_c],
            "output_shape": list(u.out_shape), "kernel": geo.k, "stride": geo.stride,
            "dilation": geo.dilation, "depth_multiplier": u.depth_mult,
            "pad_top": geo.pad_top, "pad_left": geo.pad_left,
            "mid_channels": (u.expand.w.shape[0] if u.expand is not None else geo.c)
            * u.depth_mult, "tiles": tiles, "input_slices": len(u.slices or [0]),
            "macs": int(u.macs), "note": u.note,
        }


# ---- the engine's weight memory ----------------------------------------------------------------

def _plan_engine_weights(jobs: list[_Job], cfg: AcceleratorConfig) -> None:
    """Place each descriptor's expand and PW weights in the engine's weight memory
    (``exp_wbase``, ``pw_wbase``) so that the next descriptor's go where this one's are not,
    and read them while this one runs (its prefetch segments; the next is flagged
    ``EXP_LOADED``/``PW_LOADED``).

    A table already in the memory (same blob, not overwritten since) is used where it is
    (flagged loaded, no read). Otherwise it is prefetched if the previous descriptor has a
    free segment and the words fit beside the previous descriptor's tables and this one's;
    else the controller loads it before the run,
    anywhere apart from this descriptor's other table. Descriptors alternate between the
    two ends of the memory (a descriptor near the bottom places the next one's tables
    from the top down), which leaves the next one the largest gap.
    """
    depth = cfg.engine_weight_depth
    for job in jobs:
        job.fields.update(dict.fromkeys(("exp_wbase", "pw_wbase", *(
            n for _, words, base in PREFETCH_SEGMENTS for n in (words, base))), 0))
    resident: dict[tuple, int] = {}   # (region key, offset, words) -> first word
    prev, prev_ranges = None, []

    for job in jobs:
        f = job.fields
        tables = [("pw", DescFlag.PW_LOADED, f["mid_groups"] * f["out_groups"])]
        if f["flags"] & DescFlag.EXPAND:
            tables.append(("exp", DescFlag.EXP_LOADED, f["exp_words"] * f["in_groups"]))
        tables.sort(key=lambda t: -t[2])
        ident = {name: (*job.refs[f"{name}_weights"], words) for name, _, words in tables}
        # the previous descriptor's free prefetch segments
        free = ([] if prev is None
                else [seg for seg in PREFETCH_SEGMENTS if not prev.fields[seg[1]]])
        low = bool(prev_ranges) and min(b for b, _ in prev_ranges) < depth - max(
            b + n for b, n in prev_ranges)
        # a table held where the other one cannot fit beside it is loaded again
        room = len(free)
        held = {name: resident[i] for name, i in ident.items() if i in resident}
        mine, plan = (_place_tables(depth, tables, held, room, prev_ranges, low)
                      or _place_tables(depth, tables, {}, room, prev_ranges, low))
        for name, flag, words, base, how in plan:
            f[f"{name}_wbase"] = base
            if how != "load":
                f["flags"] |= flag
            if how == "prefetch":
                seg_addr, seg_words, seg_base = free.pop(0)
                prev.fields.update({seg_words: words, seg_base: base})
                prev.refs[seg_addr] = job.refs[f"{name}_weights"]
            if how != "held":
                resident = {k: b for k, b in resident.items()
                            if b + k[-1] <= base or base + words <= b}
                resident[ident[name]] = base
        prev, prev_ranges = job, mine


def _place_tables(depth: int, tables: list[tuple], held: dict[str, int], room: int,
                  prev_ranges: list[tuple[int, int]], from_top: bool):
    """``(ranges, [(name, flag, words, base, how)])`` of one descriptor's engine tables
    (``how``: "held" at ``held[name]``, "prefetch" apart from ``prev_ranges`` while ``room``
    segments last, or "load"), or ``None`` if a table to load finds no room."""
    mine = [(held[name], words) for name, _, words in tables if name in held]
    plan = [(name, flag, words, held[name], "held")
            for name, flag, words in tables if name in held]
    for name, flag, words in tables:
        if name in held:
            continue
        base, how = None, "prefetch"
        if sum(p[-1] == "prefetch" for p in plan) < room:
            base = _fit(depth, words, prev_ranges + mine, from_top)
        if base is None:
            base, how = _fit(depth, words, mine, False), "load"
        if base is None:
            return None
        mine.append((base, words))
        plan.append((name, flag, words, base, how))
    return mine, plan


def _fit(depth: int, words: int, avoid: list[tuple[int, int]], from_top: bool) -> int | None:
    """The lowest (``from_top``: highest) first word of ``words`` words in ``0..depth`` apart
    from the ranges ``avoid`` (``(first, words)``), or ``None``."""
    starts = sorted({0, depth - words} | {b + n for b, n in avoid}
                    | {b - words for b, _ in avoid}, reverse=from_top)
    for at in starts:
        if 0 <= at <= depth - words and all(at + words <= b or b + n <= at for b, n in avoid):
            return at
    return None


# ---- DDR plan ---------------------------------------------------------------------------------

def _plan_buffers(jobs: list[_Job], sizes: dict[object, int], pinned: set) -> dict[object, int]:
    """Offsets (relative to the start of the activation area) of the buffers: a buffer lives
    from the first descriptor that touches it to the last; a dead buffer's space is reused
    (first fit). ``pinned`` buffers live for the whole program (model input and outputs,
    host-step inputs)."""
    first: dict[object, int] = {}
    last: dict[object, int] = {}
    for i, job in enumerate(jobs):
        for key in job.reads + job.writes:
            first.setdefault(key, i)
            last[key] = i
    for key in sizes:
        if key in pinned:
            first[key], last[key] = -1, len(jobs)
        first.setdefault(key, -1)
        last.setdefault(key, -1)
    live: list[tuple[int, int, object]] = []  # (offset, size, key)
    offsets: dict[object, int] = {}
    for key in sorted(sizes, key=lambda k: (first[k], str(k))):
        live = [entry for entry in live if last[entry[2]] >= first[key]]
        size = _align(max(sizes[key], 1))
        at = 0
        for offset, used, _ in sorted(live):
            if at + size <= offset:
                break
            at = max(at, offset + used)
        offsets[key] = at
        live.append((at, size, key))
    return offsets


def _tensor_info(graph: Graph, name: str, shape_of: str, lanes: int,
                 offset: int | None, block: int = 1) -> TensorInfo:
    t, s = graph.tensor(name), graph.tensor(shape_of)
    c = int(s.shape[-1])
    return TensorInfo(shape_of, tuple(int(v) for v in s.shape), float(t.scale[0]),
                      int(t.zero_point[0]), c, packing.padded(block * block * c, lanes), lanes,
                      offset, block)


def compile_model(graph: Graph, config: str | AcceleratorConfig) -> Program:
    """Compile ``graph`` for ``config``.

    Raises
    ------
    UnsupportedModelError
        The model uses an op, dtype, parameter or size the hardware does not run; the
        one-line message names the operator, the value and the limit.
    """
    cfg = get_config(config)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModelError(f"dwsep runs models with one input and one output, not "
                                    f"{len(graph.inputs)} and {len(graph.outputs)}")
    for name in (*graph.inputs, *graph.outputs):
        _check_int8_activation(graph, name)
    x = graph.input
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise UnsupportedModelError(f"the model input {x.name!r} has shape {list(x.shape)}; "
                                    "dwsep runs batch-1 NHWC inputs")
    matcher = _Matcher(graph, cfg)
    units = matcher.run()
    _check_units(cfg, units)
    model_input = _tensor_info(graph, graph.inputs[0], graph.inputs[0], cfg.dw_lanes, None,
                               matcher.input_block)
    emitter = _Emitter(graph, cfg, units, model_input)
    emitter.plan_slices()
    reports = emitter.emit()
    jobs = emitter.jobs
    jobs[-1].fields["flags"] |= DescFlag.LAST
    _plan_engine_weights(jobs, cfg)

    out_name = matcher.resolve(graph.outputs[0])
    input_key = emitter.buffer(graph.inputs[0])
    pinned = {input_key} | {k for _, keys in emitter.host_steps for k in keys}
    if out_name not in matcher.host:
        pinned.add(emitter.buffer(out_name))
    act = _plan_buffers(jobs, emitter.buffers, pinned)
    offsets: dict[object, int] = {}
    offset = _align(len(jobs) * DESCRIPTOR.size)
    blobs = []
    for name, data in emitter.blob_order:
        offsets[name] = offset
        blobs.append(Blob(name, offset, data))
        offset = _align(offset + len(data))
    for key, rel in act.items():
        offsets[key] = offset + rel
    size = offset + max((rel + _align(max(emitter.buffers[k], 1)) for k, rel in act.items()),
                        default=0)
    descriptors = []
    for job in jobs:
        f = dict(job.fields, **dict.fromkeys(ADDRESS_FIELDS, 0))
        for name, (key, extra) in job.refs.items():
            f[name] = offsets[key] + extra
        descriptors.append(f)

    steps = []
    for n, keys in emitter.host_steps:
        u = units[n]
        params = dict(u.fc, partials=[offsets[k] for k in keys], cols=cfg.pw_cols)
        steps.append(HostStep("fc_requant", u.output, n, params))
    output_step = next((s for s in steps if s.tensor == out_name), None)
    program = Program(
        config=cfg, descriptors=descriptors, blobs=blobs,
        input=replace(model_input, offset=offsets[input_key]),
        output=_tensor_info(graph, out_name, graph.outputs[0], cfg.dw_lanes,
                            None if output_step else offsets[emitter.buffer(out_name)]),
        size=size, layers=reports, host_steps=steps, output_step=output_step)
    program.descriptor_bytes(0)  # every field in range (raises ValueError otherwise)
    return program


def _check_units(cfg: AcceleratorConfig, units: list[_Unit]) -> None:
    """Limits shared by every descriptor of a layer: sizes and line-buffer rows."""
    P = cfg.dw_lanes
    for u in units:
        op, geo = u.ops[0], u.geo
        for what, v in (("input height", geo.h), ("input width", geo.w),
                        ("output height", geo.out_h), ("output width", geo.out_w)):
            if v > cfg.max_dim:
                raise _fail(op, f"{what} {v} exceeds max_dim={cfg.max_dim} of config "
                                f"{cfg.name!r}")
        c_lb = u.expand.w.shape[0] if u.expand is not None else geo.c
        if u.slices is not None:
            c_lb = max(c1 - c0 for c0, c1 in u.slices)
        row = geo.w * packing.padded(c_lb, P)
        cap = cfg.lb_row_capacity_words * P
        if row > cap:
            raise _fail(op, f"line-buffer row {geo.w}x{packing.padded(c_lb, P)} (width x "
                            f"channels padded to {P}) = {row} bytes exceeds the {cap} bytes "
                            f"(lb_width*lb_channels) of config {cfg.name!r}")

