"""NumPy model of :class:`dwsep.hw.line_buffer.LineBuffer`: the depthwise tap stream, and the
DDR beats of an activation tensor."""

from __future__ import annotations

import numpy as np

__all__ = ["tap_stream_model", "beats_from_tensor"]


def tap_stream_model(x: np.ndarray, *, lanes: int, depth_mult: int, kernel: int, stride: int,
                     dilation: int, pad_top: int, pad_left: int, out_h: int, out_w: int,
                     in_zp: int) -> dict[str, np.ndarray]:
    """The ordered tap stream a line buffer emits for input ``x``.

    For ``oy < out_h, ox < out_w, g < G, j < m, ky < k, kx < k`` in that order (``kx``
    fastest), with ``iy = oy*s - pad_top + ky*d`` and ``ix = ox*s - pad_left + kx*d``:

    * ``data[n, i] = x[iy, ix, g*P + i]`` if ``0 <= iy < H`` and ``0 <= ix < W``, else
      ``in_zp``;
    * ``waddr[n] = ((g*m + j)*k + ky)*k + kx``, ``group[n] = g*m + j``;
    * ``first[n] = (ky == 0 and kx == 0)``, ``last[n] = (ky == k-1 and kx == k-1)``.

    Parameters
    ----------
    x:
        ``int8[H, W, G*P]``, channels already padded to a multiple of ``lanes``.
    lanes:
        ``P``, bytes per word (``dw_lanes``).

    Returns
    -------
    dict with ``data`` (``int8[N, P]``), ``first``, ``last`` (``bool[N]``), ``waddr``,
    ``group`` (``int64[N]``), ``N = out_h*out_w*G*m*k*k``.
    """
    if x.ndim != 3 or x.shape[2] % lanes:
        raise ValueError(f"x must be int8[H, W, G*{lanes}], not shape {x.shape}")
    h, w, c = x.shape
    groups = c // lanes
    m, k = depth_mult, kernel
    oy, ox, g, j, ky, kx = (a.ravel() for a in np.indices((out_h, out_w, groups, m, k, k)))
    iy = oy * stride - pad_top + ky * dilation
    ix = ox * stride - pad_left + kx * dilation
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    words = x.astype(np.int8).reshape(h, w, groups, lanes)
    gathered = words[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1), g]
    data = np.where(inside[:, None], gathered, np.int8(in_zp)).astype(np.int8)
    return {
        "data": data,
        "first": (ky == 0) & (kx == 0),
        "last": (ky == k - 1) & (kx == k - 1),
        "waddr": ((g * m + j) * k + ky) * k + kx,
        "group": g * m + j,
    }


def beats_from_tensor(x: np.ndarray) -> list[int]:
    """64-bit DDR beats of an int8 tensor stored in C order (e.g. NHWC with padded
    channels): beat ``n`` = ``sum(byte[8n + b] << 8b for b < 8)`` (little-endian), where
    ``byte`` is the tensor flattened in C order as two's-complement bytes."""
    raw = np.ascontiguousarray(x, dtype=np.int8).tobytes()
    if len(raw) % 8:
        raise ValueError(f"tensor of {len(raw)} bytes is not a whole number of 8-byte beats")
    return np.frombuffer(raw, dtype="<u8").tolist()
