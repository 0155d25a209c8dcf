"""NumPy model of :class:`dwsep.hw.add.ResidualAdd` (TFLite int8 ``ADD``) and its parameters.

Source: ``tensorflow/lite/kernels/add.cc`` (``Prepare``, the int8/uint8 general-rescaling
path) and ``kernels/internal/reference/integer_ops/add.h`` (``AddElementwise``). Checked
against LiteRT ``BUILTIN_REF`` by ``tests/test_add.py``.
"""

from __future__ import annotations

import numpy as np

from dwsep.host import numerics

__all__ = ["LEFT_SHIFT", "PARAM_FIELDS", "add_params", "add_model"]

#: ``left_shift`` of TFLite's 8-bit ADD: inputs are scaled by ``2**20`` before rescaling.
LEFT_SHIFT = numerics.ADD_LEFT_SHIFT

#: The keys of :func:`add_params`: the hardware takes ``out_shift``, ``out_zp`` and the clamp
#: bounds as ``dwsep.hw.add.add_params_layout()``, the rest as its table
#: (``dwsep.host.numerics.add_table``).
PARAM_FIELDS = ("a_zp", "b_zp", "a_mult", "b_mult", "out_mult", "a_shift", "b_shift",
                "out_shift", "out_zp", "act_min", "act_max")


def _quantize_multiplier_smaller_than_one(real: float, what: str) -> tuple[int, int]:
    """``QuantizeMultiplierSmallerThanOneExp``: ``QuantizeMultiplier`` for ``0 < real < 1``,
    whose shift is then ``<= 0`` (TFLite ``CHECK``-fails otherwise: the model does not load)."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"ADD {what} multiplier {real!r} must be in (0, 1); TFLite rejects "
                         "such scales")
    mult, shift = numerics.quantize_multiplier(real)
    if shift > 0:
        raise ValueError(f"ADD {what} multiplier {real!r} rounds to 1.0; TFLite rejects such "
                         "scales")
    return mult, shift


def add_params(s1: float, zp1: int, s2: float, zp2: int, s_out: float, zp_out: int,
               activation: str = "NONE") -> dict[str, int]:
    """The integer parameters TFLite's ``Prepare`` derives for an int8 ADD ``a + b``.

    Scales are the float32 values stored in the model; as in ``add.cc`` the arithmetic is
    in double: ``twice_max = 2 * max(s1, s2)``, ``real_a = s1 / twice_max``,
    ``real_b = s2 / twice_max``, ``real_out = twice_max / (2**20 * s_out)``, each turned into
    ``(mult, shift)`` by ``QuantizeMultiplierSmallerThanOneExp`` (``mult`` in
    ``[2**30, 2**31)`` or 0, ``shift`` in ``[-31, 0]``). The clamp is the fused activation's
    range (``CalculateActivationRangeQuantized``).

    Parameters
    ----------
    s1, zp1:
        Scale and zero point of input 1 (``a``, the main path).
    s2, zp2:
        Scale and zero point of input 2 (``b``, the residual).
    s_out, zp_out:
        Scale and zero point of the output.
    activation:
        Fused activation: ``"NONE"``, ``"RELU"``, ``"RELU6"`` or ``"RELU_N1_TO_1"``.

    Returns
    -------
    dict
        ``{name: int}`` for every name of :data:`PARAM_FIELDS`.
    """
    s1, s2, s_out = (float(np.float32(s)) for s in (s1, s2, s_out))
    for name, s in (("s1", s1), ("s2", s2), ("s_out", s_out)):
        if not s > 0.0:
            raise ValueError(f"ADD scale {name}={s!r} must be positive")
    for name, zp in (("zp1", zp1), ("zp2", zp2), ("zp_out", zp_out)):
        if not -128 <= zp <= 127:
            raise ValueError(f"ADD zero point {name}={zp!r} must be in [-128, 127]")
    # float * 2 and float * 2**20 are exact, so float-vs-double order does not matter here.
    twice_max = 2.0 * max(s1, s2)
    a_mult, a_shift = _quantize_multiplier_smaller_than_one(s1 / twice_max, "input 1")
    b_mult, b_shift = _quantize_multiplier_smaller_than_one(s2 / twice_max, "input 2")
    out_mult, out_shift = _quantize_multiplier_smaller_than_one(
        twice_max / ((1 << LEFT_SHIFT) * s_out), "output")
    act_min, act_max = numerics.activation_range(activation, s_out, zp_out)
    return {"a_zp": int(zp1), "b_zp": int(zp2), "a_mult": a_mult, "b_mult": b_mult,
            "out_mult": out_mult, "a_shift": a_shift, "b_shift": b_shift,
            "out_shift": out_shift, "out_zp": int(zp_out), "act_min": act_min,
            "act_max": act_max}


def add_model(a: np.ndarray, b: np.ndarray, params: dict) -> np.ndarray:
    """TFLite int8 ADD of ``a`` and ``b`` (same shape) with :func:`add_params` parameters:

    ``sa = MBQM((a - a_zp) * 2**20, a_mult, a_shift)``,
    ``sb = MBQM((b - b_zp) * 2**20, b_mult, b_shift)``,
    ``out = clamp(MBQM(sa + sb, out_mult, out_shift) + out_zp, act_min, act_max)``

    with MBQM TFLite's ``MultiplyByQuantizedMultiplierSmallerThanOneExp``, i.e.
    ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, mult), -shift)``, which is
    :func:`dwsep.host.numerics.multiply_by_quantized_multiplier` for ``shift <= 0``. Shifts
    must be in ``[-31, 0]``; multipliers may be any int32. No intermediate overflows int32:
    ``|a - a_zp| <= 255`` so the shifted inputs fit in 29 bits, and ``|sa|, |sb| <= 255 * 2**20``.
    """
    p = {k: np.int64(params[k]) for k in PARAM_FIELDS}
    for k in ("a_shift", "b_shift", "out_shift"):
        if not -31 <= p[k] <= 0:
            raise ValueError(f"ADD '{k}' must be in [-31, 0], not {int(p[k])}")
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    mbqm = numerics.multiply_by_quantized_multiplier
    sa = mbqm((a - p["a_zp"]) << LEFT_SHIFT, p["a_mult"], p["a_shift"])
    sb = mbqm((b - p["b_zp"]) << LEFT_SHIFT, p["b_mult"], p["b_shift"])
    out = mbqm(sa + sb, p["out_mult"], p["out_shift"]) + p["out_zp"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)
