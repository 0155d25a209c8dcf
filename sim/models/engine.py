"""NumPy model of :class:`dwsep.hw.engine.Engine`, the 1x1 engine (expand and project jobs
on one ``R x C`` array), and the word format of its weight memory.

Notation as in docs/ARCHITECTURE.md: ``R`` = ``dw_lanes`` = ``pw_rows`` (input channels a
word), ``C`` = ``pw_cols`` (output channels a word).
"""

from __future__ import annotations

import numpy as np

__all__ = ["engine_model", "pack_engine_weights"]


def engine_model(x: np.ndarray, w: np.ndarray) -> list[tuple[list[int], int]]:
    """One job's output words: ``acc[p, og, o] = sum_{q, i} x[p, q, i] * w[og, q, i, o]``,
    computed exactly (an int64 matmul).

    Parameters
    ----------
    x:
        ``int8[pixels, in_groups, R]``, each pixel's input words.
    w:
        ``int8[out_groups, in_groups, R, C]``, the job's weights.

    Returns
    -------
    list of (acc, og):
        Per pixel, per output group ``og`` in order: the ``C`` sums and ``og``.
    """
    pixels, in_g, R = x.shape
    out_g, C = w.shape[0], w.shape[3]
    a = x.astype(np.int64).reshape(pixels, in_g * R)
    b = w.astype(np.int64).transpose(1, 2, 0, 3).reshape(in_g * R, out_g * C)
    acc = (a @ b).reshape(pixels, out_g, C)
    return [(acc[p, og].tolist(), og) for p in range(pixels) for og in range(out_g)]


def pack_engine_weights(w: np.ndarray) -> list[int]:
    """``int8[out_groups, in_groups, R, C]`` -> weight memory words from the job's base:
    word ``og*in_groups + q`` holds ``w[og, q]`` row-major (byte ``i*C + o``),
    little-endian."""
    out_g, in_g = w.shape[:2]
    return [int.from_bytes(w[og, q].tobytes(), "little")
            for og in range(out_g) for q in range(in_g)]
