"""What the compiler checks of an operator's operands, shared by the passes: the one-line
:class:`UnsupportedModelError` naming the operator, the value and the limit; int8
per-tensor activations and constant symmetric int8 weights; and the two proofs every
array stage's tables pass before they are emitted, :func:`check_requant_inputs` (no int8
input takes a requantizer past ``REQUANT_INPUT_BITS``) and :func:`check_packed_weights`
(every weight of the packed expand and pointwise arrays within ``PACKED_WEIGHT_MAX``).
"""

from __future__ import annotations

import numpy as np

from ...hw.config import REQUANT_INPUT_BITS
from .. import packing
from ..graph import Graph, Operator, Tensor, UnsupportedModelError
from ..numerics import requant_input_extremes

#: the largest weight magnitude of the expand and pointwise arrays: each DSP48E1 computes two
#: int8 products, the weights of two output channels packed as ``(w_hi << 17) + w_lo`` in its
#: 25-bit pre-adder and four packed products summed in a DSP cascade before the lanes are
#: separated; a -128 overflows both. TFLite's symmetric int8 weights lie in -127..127. (The
#: depthwise array multiplies one product per DSP and takes all of int8.)
PACKED_WEIGHT_MAX = 127
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def op_name(op: Operator) -> str:
    return f"operator {op.index} {op.opcode} ({op.outputs[0]!r})"


def fail(op: Operator, msg: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{op_name(op)}: {msg}")


def check_int8_activation(graph: Graph, name: str) -> Tensor:
    t = graph.tensor(name)
    if t.dtype != "int8":
        raise UnsupportedModelError(f"dwsep runs fully int8 models; tensor {name!r} is "
                                    f"{t.dtype}")
    return t


def activation_zp(op: Operator, t: Tensor) -> int:
    """The zero point of per-tensor quantized activation ``t``."""
    if t.dtype != "int8":
        raise UnsupportedModelError(f"dwsep runs fully int8 models; tensor {t.name!r} is "
                                    f"{t.dtype}")
    if t.scale.size != 1 or t.zero_point.size != 1:
        raise fail(op, f"tensor {t.name!r} must be per-tensor quantized, has "
                       f"{t.scale.size} scales and {t.zero_point.size} zero points")
    if not t.scale[0] > 0:
        raise fail(op, f"tensor {t.name!r} has scale {t.scale[0]}; it must be positive")
    return int(t.zero_point[0])


def const_weights(graph: Graph, op: Operator, channels: int) -> np.ndarray:
    """The op's int8 weights (checked: constant, int8, zero point 0, one scale per channel
    or one for all)."""
    t = graph.tensor(op.inputs[1])
    if t.data is None:
        raise fail(op, f"weights {t.name!r} are not constant")
    if t.dtype != "int8":
        raise fail(op, f"weights {t.name!r} are {t.dtype}; dwsep needs int8 weights")
    if t.scale.size not in (1, channels) or t.zero_point.size not in (1, channels):
        raise fail(op, f"weights {t.name!r} have {t.scale.size} scales for {channels} "
                       "channels")
    if np.any(t.zero_point != 0):
        raise fail(op, f"weights {t.name!r} have a nonzero zero point; dwsep needs "
                       "symmetric (zero point 0) weights")
    return np.asarray(t.data, np.int8)


def const_bias(graph: Graph, op: Operator, channels: int) -> np.ndarray:
    name = op.inputs[2] if len(op.inputs) > 2 else None
    if name is None:
        return np.zeros(channels, np.int64)
    t = graph.tensor(name)
    if t.data is None:
        raise fail(op, f"bias {t.name!r} is not constant")
    if t.dtype != "int32":
        raise fail(op, f"bias {t.name!r} is {t.dtype}; dwsep needs int32 bias")
    if t.data.size != channels:
        raise fail(op, f"bias {t.name!r} has {t.data.size} values for {channels} channels")
    return np.asarray(t.data, np.int64).reshape(-1)


def pair_option(op: Operator, what: str, default: int = 1) -> tuple[int, int]:
    return int(op.options.get(f"{what}_h", default)), int(op.options.get(f"{what}_w", default))


def fused_activation(op: Operator) -> str:
    act = op.options.get("activation", "NONE")
    if act not in ACTIVATIONS:
        raise fail(op, f"fused activation {act} is not supported (allowed: "
                       f"{', '.join(ACTIVATIONS)})")
    return act


def folded_bias(op: Operator, bias: np.ndarray, weight_sums: np.ndarray, zp: int) -> np.ndarray:
    try:
        return packing.fold_bias(bias, weight_sums, zp)
    except OverflowError:
        raise fail(op, "a bias folded with the input zero point leaves int32") from None


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
