"""TFLite integer arithmetic, exactly as LiteRT's reference kernels do it.

Every function works elementwise on NumPy arrays (int64 internally) and on Python ints.
Sources: ``tensorflow/lite/kernels/internal/quantization_util.cc`` (QuantizeMultiplier) and
``common.h`` / gemmlowp ``fixedpoint.h`` (SaturatingRoundingDoublingHighMul,
RoundingDivideByPOT, MultiplyByQuantizedMultiplier), and their int16 versions that
``reference_ops::HardSwish`` (``kernels/internal/reference/hard_swish.h``) uses.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "quantize_multiplier", "srdhm", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "requantize", "activation_range", "wrap_int32",
    "ADD_LEFT_SHIFT", "add_table", "add_by_table", "INT16_MIN", "INT16_MAX", "wrap_int16",
    "srdhm16", "saturating_doubling_high_mul16", "rounding_divide_by_pot16",
    "saturating_left_shift16", "downscale_multiplier16",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``QuantizeMultiplier``: ``real ~= q_fixed * 2**(shift - 31)``.

    ``frexp`` gives ``q`` in [0.5, 1) and the exponent; ``q_fixed = round(q * 2**31)`` with
    ties away from zero (C++ ``std::round``); if that reaches ``2**31`` it is halved and the
    shift incremented. Shifts below -31 flush to zero, as TFLite does.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))
    q_fixed = q_fixed if q >= 0 else -q_fixed
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def requant_input_extremes(w: np.ndarray, bias: np.ndarray, shift: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(v_min, v_max)`` per channel: the extremes over all int8 inputs ``x`` of a
    requantizer's input ``v = (sum(x * w[c]) + bias[c]) << max(shift[c], 0)``, as Python
    ints (object arrays: a shift up to 127 overflows int64).

    ``sum(x * w)`` lies between ``sum(-128*w for w > 0) + sum(127*w for w < 0)`` and
    ``sum(127*w for w > 0) + sum(-128*w for w < 0)``; ``w`` is ``[channels, taps]``.
    """
    w = np.asarray(w, np.int64)
    pos, neg = np.maximum(w, 0).sum(axis=1), np.minimum(w, 0).sum(axis=1)
    bias = np.asarray(bias, np.int64)
    left = np.maximum(np.asarray(shift, np.int64), 0).astype(object)
    v_max = (bias + 127 * pos - 128 * neg).astype(object) << left
    v_min = (bias - 128 * pos + 127 * neg).astype(object) << left
    return v_min, v_max


def srdhm(a, b):
    """``SaturatingRoundingDoublingHighMul(a, b)`` for int32 ``a``, ``b``:
    ``(a*b + nudge) / 2**31`` truncated toward zero, nudge ``2**30`` or ``1 - 2**30`` when
    ``a*b < 0``; saturates to INT32_MAX only for ``a == b == INT32_MIN``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C++ integer division truncates toward zero.
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    q = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)
    return q


def rounding_divide_by_pot(x, exponent):
    """``RoundingDivideByPOT(x, exponent)``: arithmetic shift right by ``exponent`` rounding
    half away from zero (remainder > mask/2, or >= for negative ``x``)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc, q_fixed, shift):
    """``MultiplyByQuantizedMultiplier(acc, q_fixed, shift)``:
    ``RDBPOT(SRDHM(acc * 2**max(shift, 0), q_fixed), max(-shift, 0))``.

    The left shift is done in int32 as in C++ (wraps on overflow, which valid models never
    reach since ``shift <= 0`` for scales below one).
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap_int32(acc << left)
    return rounding_divide_by_pot(srdhm(shifted, q_fixed), right)


def wrap_int32(x):
    """Two's-complement wrap to int32, as C++ int32 arithmetic does (values stay int64)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def wrap_int16(x):
    """Two's-complement wrap to int16, as a C++ conversion to ``int16_t`` does (values stay
    int64)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 15)) % (1 << 16)) - (1 << 15)


def _truncating_divide(num, divisor: int):
    """C++ integer division (truncates toward zero)."""
    return np.where(num >= 0, num // divisor, -((-num) // divisor))


def srdhm16(a, b):
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` for int16 ``a``, ``b``:
    ``(a*b + nudge) / 2**15`` truncated toward zero, nudge ``2**14`` or ``1 - 2**14`` when
    ``a*b < 0``; INT16_MAX for ``a == b == INT16_MIN``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    q = _truncating_divide(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, q)


def saturating_doubling_high_mul16(a, b):
    """``reference_ops::SaturatingDoublingHighMul`` (``hard_swish.h``), int16: ``a*b / 2**15``
    truncated toward zero (no rounding nudge, unlike :func:`srdhm16`); INT16_MAX for
    ``a == b == INT16_MIN``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    q = _truncating_divide(a * b, 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, q)


def rounding_divide_by_pot16(x, exponent: int):
    """gemmlowp's ``RoundingDivideByPOT`` instantiated for ``int16_t`` (``0 <= exponent <=
    31``), with its 16-bit mask ``int16(2**exponent - 1)``: the rounding shift of
    :func:`rounding_divide_by_pot` up to exponent 15; from 16 on, the mask wraps to -1 and
    the result is 1 for every ``x >= 0`` and -1 for every ``x < 0``, as in C++."""
    if not 0 <= exponent <= 31:
        raise ValueError(f"'exponent' must be in [0, 31], not {exponent}")
    x = np.asarray(x, dtype=np.int64)
    mask = int(wrap_int16((1 << exponent) - 1))
    remainder = wrap_int16(x & mask)
    threshold = wrap_int16((mask >> 1) + (x < 0))
    return wrap_int16((x >> exponent) + (remainder > threshold))


def saturating_left_shift16(x, amount: int):
    """``reference_ops::SaturatingLeftShift`` (``hard_swish.h``): ``x * (1 << amount)`` in
    int64 (``1 << amount`` an int32), saturated to int16."""
    if amount < 0:
        raise ValueError(f"'amount' must be non-negative, not {amount}")
    x = np.asarray(x, dtype=np.int64)
    return np.clip(x * int(wrap_int32(1 << amount)), INT16_MIN, INT16_MAX)


def downscale_multiplier16(q_fixed: int) -> int:
    """``DownScaleInt32ToInt16Multiplier`` (``kernels/internal/common.h``): the int16 Q15
    multiplier nearest an int32 Q31 one, ``(q_fixed + 2**15) >> 16``, or INT16_MAX when
    ``q_fixed >= INT32_MAX - 2**15``."""
    if q_fixed < 0:
        raise ValueError(f"'q_fixed' must be non-negative, not {q_fixed}")
    if q_fixed >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (q_fixed + (1 << 15)) >> 16


def requantize(acc, q_fixed, shift, zero_point, act_min, act_max):
    """Requantize int32 accumulators (bias already added) to int8:
    ``clamp(MBQM(acc, q_fixed, shift) + zero_point, act_min, act_max)``."""
    out = multiply_by_quantized_multiplier(acc, q_fixed, shift) + zero_point
    return np.clip(out, act_min, act_max).astype(np.int8)


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8: the clamp of a fused activation.

    ``activation`` is ``"NONE"``, ``"RELU"``, ``"RELU6"`` or ``"RELU_N1_TO_1"``; bounds are
    ``zero_point + round(v / scale)`` clipped to [-128, 127], the division in float32 as in
    C++ (``float`` scale) and ``TfLiteRound`` rounding half away from zero.
    """
    def q(v: float) -> int:
        t = float(np.float32(v) / np.float32(scale))
        return zero_point + int(math.floor(abs(t) + 0.5)) * (1 if t >= 0 else -1)

    lo, hi = -128, 127
    if activation == "RELU":
        lo = max(lo, q(0.0))
    elif activation == "RELU6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif activation == "RELU_N1_TO_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    elif activation != "NONE":
        raise ValueError(f"unsupported fused activation {activation!r}; "
                         "allowed: NONE, RELU, RELU6, RELU_N1_TO_1")
    return lo, hi


#: ``left_shift`` of TFLite's 8-bit ADD: inputs are scaled by ``2**20`` before rescaling.
ADD_LEFT_SHIFT = 20


def add_table(a_zp: int, a_mult: int, a_shift: int, b_zp: int, b_mult: int, b_shift: int,
              out_mult: int) -> np.ndarray:
    """The residual ADD's table (``int64[2, 256]``): for input 0 (``a``) and 1 (``b``) and
    each int8 value ``v`` at index ``v & 255``, the input's rescaled value times the output
    multiplier, ``MBQM((v - zp) * 2**20, mult, shift) * out_mult``, exactly.

    TFLite's int8 ``ADD`` (``reference_integer_ops::AddElementwise``) computes
    ``MBQM(sa + sb, out_mult, out_shift)``, whose first step is SRDHM of the 64-bit product
    ``(sa + sb) * out_mult = T[0][a] + T[1][b]``: with the table the ADD is two lookups and
    additions (:func:`add_by_table`), no multiplication, and exact for every ``(a, b)`` by
    construction. ``|T| < 2**59``: ``|sa| <= 255 * 2**20`` and ``|out_mult| <= 2**31``.
    Shifts must be in ``[-31, 0]`` (TFLite's ``QuantizeMultiplierSmallerThanOneExp``)."""
    for name, shift in (("a_shift", a_shift), ("b_shift", b_shift)):
        if not -31 <= shift <= 0:
            raise ValueError(f"ADD {name} must be in [-31, 0], not {shift}")
    v = np.arange(256, dtype=np.int64)
    v = np.where(v > 127, v - 256, v)       # the int8 value at each index
    return np.stack([
        multiply_by_quantized_multiplier((v - zp) << ADD_LEFT_SHIFT, mult, shift)
        * np.int64(out_mult)
        for zp, mult, shift in ((a_zp, a_mult, a_shift), (b_zp, b_mult, b_shift))])


def add_by_table(a, b, table: np.ndarray, out_shift: int, out_zp: int, act_min: int,
                 act_max: int) -> np.ndarray:
    """TFLite int8 ``ADD`` of int8 ``a`` and ``b`` with an :func:`add_table`:
    ``clamp(RDBPOT(floor((T[0][a] + T[1][b] + 2**30) / 2**31), -out_shift) + out_zp)``,
    the floor being SRDHM's rounding for both signs (see
    ``dwsep.hw.mbqm.srdhm_high``); never saturates (the sum is not ``INT32_MIN**2``)."""
    if not -31 <= out_shift <= 0:
        raise ValueError(f"ADD out_shift must be in [-31, 0], not {out_shift}")
    ia = np.asarray(a, np.int64) & 255
    ib = np.asarray(b, np.int64) & 255
    high = (table[0][ia] + table[1][ib] + (1 << 30)) >> 31
    out = rounding_divide_by_pot(high, -out_shift) + out_zp
    return np.clip(out, act_min, act_max).astype(np.int8)
