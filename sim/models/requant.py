"""NumPy model of :class:`dwsep.hw.requant.Requantizer` and its table format."""

from __future__ import annotations

import numpy as np

from dwsep.host import numerics, packing
from dwsep.hw.chunked import check_lanes
from dwsep.hw.layout import TABLE_RECORD_BYTES_PER_LANE, table_record_bytes

__all__ = ["requant_model", "pack_table", "table_records"]


def requant_model(acc: np.ndarray, group: np.ndarray, table: dict, zp: int, act_min: int,
                  act_max: int) -> np.ndarray:
    """The requantizer's output words ``int8[N, L]``:

    ``out[n, l] = clamp(MBQM(wrap32(acc[n, l] + bias[g, l]), mult[g, l], shift[g, l]) + zp,
    act_min, act_max)`` with ``g = group[n]``, ``wrap32`` the C++ int32 wraparound and MBQM
    TFLite's ``MultiplyByQuantizedMultiplier`` (:mod:`dwsep.host.numerics`).

    Parameters
    ----------
    acc:
        ``int32[N, L]`` accumulators.
    group:
        ``int[N]`` table record of each word.
    table:
        ``{"bias": int32[depth, L], "mult": int32[depth, L], "shift": int8[depth, L]}``.
    zp, act_min, act_max:
        Output zero point and clamp bounds.
    """
    acc = np.asarray(acc, np.int64)
    group = np.asarray(group, np.int64)
    bias, mult, shift = (np.asarray(table[k], np.int64)[group]
                         for k in ("bias", "mult", "shift"))
    total = (acc + bias + (1 << 31)) % (1 << 32) - (1 << 31)
    return numerics.requantize(total, mult, shift, zp, act_min, act_max)


def _check_arrays(bias, mult, shift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bias, mult, shift = (np.asarray(a) for a in (bias, mult, shift))
    if bias.ndim != 2 or mult.shape != bias.shape or shift.shape != bias.shape:
        raise ValueError(f"bias, mult and shift must be [groups, lanes] arrays of one shape, "
                         f"not {list(bias.shape)}, {list(mult.shape)}, {list(shift.shape)}")
    return bias, mult, shift


def pack_table(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
               compute_lanes: int | None = None) -> bytes:
    """DDR bytes of a requant table for a requantizer of ``L`` lanes (the ``[groups, L]``
    arrays) that computes ``compute_lanes`` at a time (default ``L``): record ``g*chunks +
    c`` (``chunks = L // compute_lanes``) holds lanes ``c*compute_lanes ..
    (c+1)*compute_lanes - 1`` of group ``g``, their ``bias`` as ``<i4``, ``mult`` as
    ``<i4``, ``shift`` as ``i1`` concatenated (:func:`dwsep.host.packing.pack_table`)."""
    bias, mult, shift = _check_arrays(bias, mult, shift)
    return packing.pack_table(bias, mult, shift, check_lanes(bias.shape[1], compute_lanes))


def table_records(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                  compute_lanes: int | None = None) -> list[int]:
    """Each record of :func:`pack_table` read as one little-endian integer (without the
    padding to whole beats): the value of ``dwsep.hw.requant.table_layout(compute_lanes)``
    to write at that record's address on the requantizer's table write port."""
    bias, mult, shift = _check_arrays(bias, mult, shift)
    lanes = check_lanes(bias.shape[1], compute_lanes)
    raw = pack_table(bias, mult, shift, lanes)
    size = table_record_bytes(lanes)
    data = TABLE_RECORD_BYTES_PER_LANE * lanes
    return [int.from_bytes(raw[k:k + data], "little") for k in range(0, len(raw), size)]

