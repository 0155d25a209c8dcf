"""NumPy model of :class:`dwsep.hw.requant.Requantizer` and its table format."""

from __future__ import annotations

import numpy as np

from dwsep.host import numerics, packing

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


def pack_table(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> bytes:
    """DDR bytes of a requant table: for each group ``g`` (row of the ``[groups, L]``
    arrays), ``bias[g]`` as ``<i4``, ``mult[g]`` as ``<i4``, ``shift[g]`` as ``i1``
    concatenated, ``9*L`` bytes per record (:func:`dwsep.host.packing.pack_table`)."""
    bias, mult, shift = _check_arrays(bias, mult, shift)
    return packing.pack_table(bias, mult, shift, bias.shape[1])


def table_records(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> list[int]:
    """Each record of :func:`pack_table` read as one little-endian integer: the value of
    ``dwsep.hw.requant.table_layout(L)`` to put on the requantizer's table write port."""
    bias, mult, shift = _check_arrays(bias, mult, shift)
    raw = pack_table(bias, mult, shift)
    size = packing.TABLE_RECORD_BYTES_PER_LANE * bias.shape[1]
    return [int.from_bytes(raw[k:k + size], "little") for k in range(0, len(raw), size)]
