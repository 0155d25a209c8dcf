"""Expression builders for TFLite's MultiplyByQuantizedMultiplier pipeline stages, shared by
the requantizer (:mod:`dwsep.hw.requant`) and the residual adder (:mod:`dwsep.hw.add`).

Each builder is the combinational logic of one pipeline stage; the caller registers the
result. Semantics are those of :mod:`dwsep.host.numerics`.
"""

from __future__ import annotations

from amaranth.hdl import Const, Value

__all__ = ["srdhm_high", "rdbpot_nudge"]


def srdhm_high(prod: Value, frac_bits: int = 31) -> Value:
    """``floor((prod + 2**(frac_bits - 1)) / 2**frac_bits)`` of a signed product.

    With ``frac_bits = 31`` and ``prod = a * b`` this is SaturatingRoundingDoublingHighMul
    without its saturation: TFLite adds ``2**30`` (``1 - 2**30`` below zero) and truncates
    toward zero, which for both signs equals ``floor((ab + 2**30) / 2**31)``, computed here
    as ``floor((floor(ab / 2**30) + 1) / 2)``. Only ``INT32_MIN * INT32_MIN`` gives ``2**31``;
    callers that can see it saturate. A smaller ``frac_bits`` serves a product whose factor
    ``2**(31 - frac_bits)`` was taken out of the multiplication (exact, as it is a shift).
    """
    return (prod[frac_bits - 1:].as_signed() + 1) >> 1


def rdbpot_nudge(x: Value, exponent: Value) -> Value:
    """The addend ``n`` with ``RoundingDivideByPOT(x, e) == (x + n) >> e``.

    RDBPOT rounds up when the remainder is ``>= 2**(e-1)`` (``+1`` when ``x < 0``), i.e. it
    is ``floor((x + 2**(e-1) - (x < 0)) / 2**e)`` for ``e > 0`` and ``x`` for ``e = 0``.
    ``exponent`` is unsigned; the sum needs one bit more than ``x`` when ``e`` can reach the
    width of ``x``.
    """
    half = (Const(1, 1) << exponent) >> 1
    return half - ((x < 0) & (exponent != 0))
