"""NumPy model of :class:`dwsep.hw.dw_array.DepthwiseArray`, its cycle count, and the DDR
byte format of its weight memory (the 1x1 engine's model: ``engine.py``).

Notation as in docs/ARCHITECTURE.md: ``P`` = ``dw_lanes`` = ``pw_rows``, ``Q`` = ``pw_cols``.
The weight packers here take weights already in hardware order (mid groups and lanes as the
hardware computes them); ``dwsep.host.packing`` maps TFLite tensors to that order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dw_array_model", "dw_array_cycles", "pack_dw_weight_words", "words_from_bytes"]


def _wrap_int32(a: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of an int64 array to int32 (the hardware's 32-bit adders)."""
    return a.astype(np.int64).astype(np.int32)


def dw_array_model(taps: dict, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise array: ``acc[n, i] = sum_{c in group n} sum_t data[c, t, i] *
    weights[waddr[c], t, i]``.

    Parameters
    ----------
    taps:
        ``{"data": int8[N, T, P], "first": [N], "last": [N], "waddr": [N], "group": [N]}``;
        the tap columns form consecutive pixel-groups, each from a column with ``first`` to
        the next column with ``last`` (one column may be both).
    weights:
        ``int8[depth, T, P]``, the DW weight memory.

    Returns
    -------
    acc, group:
        ``int32[M, P]`` (sums wrapped to 32 bits) and ``int64[M]``, the ``group`` of each
        pixel-group's last tap, for the ``M`` pixel-groups in order.
    """
    x = np.asarray(taps["data"], np.int64)
    first = np.asarray(taps["first"], bool)
    last = np.asarray(taps["last"], bool)
    n = len(x)
    starts = np.flatnonzero(first)
    # Well-formed: a group starts exactly at tap 0 and after every `last`.
    if n == 0 or not last[-1] or not np.array_equal(first, np.r_[True, last[:-1]]):
        raise ValueError("taps must form whole pixel-groups: 'first' on tap 0 and on every "
                         "tap after a 'last', 'last' on the final tap")
    prod = (x * np.asarray(weights, np.int64)[np.asarray(taps["waddr"], np.int64)]).sum(axis=1)
    acc = np.add.reduceat(prod, starts, axis=0)
    group = np.asarray(taps["group"], np.int64)[last]
    return _wrap_int32(acc), group


def dw_array_cycles(columns: int, latency: int) -> int:
    """Cycles of the DW array alone from the first tap column to the last output word, with
    columns always valid and the output always ready: one column per cycle, plus the
    pipeline ``latency``: ``columns + latency``."""
    return columns + latency


def pack_dw_weight_words(w: np.ndarray) -> bytes:
    """DW weights in hardware order ``int8[words, T, P]`` -> DDR bytes.

    Word ``n`` is ``T*P`` bytes, byte ``t*P + i`` = ``w[n, t, i]``, the weight of lane ``i``
    for row ``t`` of the tap column that reads word ``n`` (``waddr``):
    ``words*T*P`` bytes in all.
    """
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 3:
        raise ValueError(f"DW weights must be int8[words, T, P], not "
                         f"{w.dtype}{list(w.shape)}")
    return np.ascontiguousarray(w).tobytes()


def words_from_bytes(raw: bytes, word_bytes: int) -> list[int]:
    """Split ``raw`` into little-endian unsigned words of ``word_bytes`` bytes (the value a
    memory word holds after the loader packs DDR beats into it)."""
    if len(raw) % word_bytes:
        raise ValueError(f"{len(raw)} bytes are not a whole number of {word_bytes}-byte words")
    return [int.from_bytes(raw[a:a + word_bytes], "little")
            for a in range(0, len(raw), word_bytes)]
