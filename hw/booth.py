"""Radix-4 Booth digits: multiplications in LUTs (no multiplier cell for synthesis to put on a
DSP48E1), shared by the DW array's int8 products and the DW requantizer's high product."""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Value

__all__ = ["booth_digits"]


def booth_digits(a: Value, b: Value) -> list[tuple[Value, Value]]:
    """``a * b`` for ``b`` read as a two's-complement number of ``len(b)`` bits (even) as
    ``len(b) // 2`` digits ``(term, neg)``: digit ``k`` contributes ``term + (neg << 2k)``,
    ``term`` being ``0``, ``+-a`` or ``+-2a`` shifted left by ``2k`` (a negative one as its
    complement, ``~mag``, so that ``neg``'s ``+1`` completes the negation)."""
    digits = []
    prev = Const(0, 1)
    for k in range(len(b) // 2):
        b0, b1 = b[2 * k], b[2 * k + 1]
        one = b0 ^ prev
        two = (b1 & ~b0 & ~prev) | (~b1 & b0 & prev)
        mag = Mux(two, a.as_signed() << 1, Mux(one, a.as_signed(), 0))
        neg = b1 & (one | two)
        digits.append((Mux(neg, ~mag, mag).as_signed() << (2 * k), neg))
        prev = b1
    return digits
