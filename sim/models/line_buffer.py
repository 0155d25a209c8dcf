"""NumPy model of :class:`dwsep.hw.line_buffer.LineBuffer`: the depthwise tap stream, and the
DDR beats of an activation tensor."""

from __future__ import annotations

import numpy as np

__all__ = ["tap_stream_model", "beats_from_tensor"]


def tap_stream_model(x: np.ndarray, *, lanes: int, taps: int, depth_mult: int, kernel: int,
                     stride: int, dilation: int, pad_top: int, pad_left: int, out_h: int,
                     out_w: int, in_zp: int, conv: bool = False) -> dict[str, np.ndarray]:
    """The ordered stream of tap columns a line buffer emits for input ``x``.

    With ``T = taps`` rows per column (1 with ``conv``) and ``R = ceil(k / T)`` passes, for
    ``oy < out_h, ox < out_w, g < G, j < m, r < R, kx < k`` in that order (``kx`` fastest),
    row ``t < T`` of the column is kernel row ``ky = r*T + t``, at ``iy = oy*s - pad_top +
    ky*d``, ``ix = ox*s - pad_left + kx*d``:

    * ``data[n, t, i] = x[iy, ix, g*P + i]`` if ``0 <= iy < H`` and ``0 <= ix < W``, else
      ``in_zp``; ``rows[n, t] = ky < k`` (with ``conv`` only row 0 counts): the hardware's
      bytes in the other rows are unspecified (they meet zero weights), the model's are 0;
    * ``waddr[n] = ((g*m + j)*R + r)*k + kx``, ``group[n] = g*m + j``;
    * ``first[n] = (r == 0 and kx == 0)``, ``last[n] = (r == R-1 and kx == k-1)``.

    Parameters
    ----------
    x:
        ``int8[H, W, G*P]``, channels already padded to a multiple of ``lanes``.
    lanes:
        ``P``, bytes per word (``dw_lanes``).
    taps:
        ``T`` (``dw_taps``).

    Returns
    -------
    dict with ``data`` (``int8[N, taps, P]``), ``rows`` (``bool[N, taps]``), ``first``,
    ``last`` (``bool[N]``), ``waddr``, ``group`` (``int64[N]``),
    ``N = out_h*out_w*G*m*R*k``.
    """
    if x.ndim != 3 or x.shape[2] % lanes:
        raise ValueError(f"x must be int8[H, W, G*{lanes}], not shape {x.shape}")
    h, w, c = x.shape
    groups = c // lanes
    m, k = depth_mult, kernel
    rows_per_pass = 1 if conv else taps
    passes = -(-k // rows_per_pass)
    oy, ox, g, j, r, kx = (a.ravel() for a in np.indices((out_h, out_w, groups, m, passes, k)))
    t = np.arange(taps)
    ky = r[:, None] * rows_per_pass + t[None, :]                   # [N, T]
    iy = oy[:, None] * stride - pad_top + ky * dilation
    ix = (ox * stride - pad_left + kx * dilation)[:, None]
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = (ky < k) & (t[None, :] < rows_per_pass)
    words = x.astype(np.int8).reshape(h, w, groups, lanes)
    gathered = words[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1), g[:, None]]
    data = np.where(inside[..., None], gathered, np.int8(in_zp))
    data = np.where(rows[..., None], data, 0).astype(np.int8)
    return {
        "data": data,
        "rows": rows,
        "first": (r == 0) & (kx == 0),
        "last": (r == passes - 1) & (kx == k - 1),
        "waddr": ((g * m + j) * passes + r) * k + kx,
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
