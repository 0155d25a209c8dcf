"""The DDR data formats of dwsep: the one place that says how bytes are laid out.

All formats are little-endian and follow docs/ARCHITECTURE.md ("Data formats in DDR" and
"Layer descriptor v2").
Notation: ``P`` = ``dw_lanes`` (= ``pw_rows``), ``Q`` = ``pw_cols``, ``C`` input channels,
``m`` depth multiplier, ``G = ceil(C / P)`` input groups, ``mid_groups = G * m``,
``C_out`` output channels, ``out_groups = ceil(C_out / Q)``.

Mid-channel order. The depthwise output ("mid") channel ``c*m + j`` is computed from input
channel ``c``. The hardware computes mid group ``q = g*m + j`` with lane ``i`` holding the
true mid channel ``(g*P + i)*m + j``; a lane whose input channel ``g*P + i >= C`` is padding
(weight 0, bias 0, mult 0, shift 0 and a zero pointwise weight row). :func:`mid_channel_map`
gives that order; the DW weight and table packers and the PW weight packer all apply it.
"""

from __future__ import annotations

import numpy as np

from ..hw.layout import (
    ADD_TABLE_ENTRIES,
    REQUANT_RECORD_FIELDS,
    table_record_bytes,
)

__all__ = [
    "IDENTITY_MULT", "IDENTITY_SHIFT",
    "padded",
    "pack_activations", "unpack_activations", "space_to_depth", "depth_to_space", "unpack_raw",
    "mid_channel_map", "to_mid_lanes",
    "fold_bias", "pack_dw_weights", "unpack_dw_weights", "pack_pw_weights",
    "pack_expand_weights", "pack_conv_weights", "pack_table", "unpack_table",
    "pack_add_table", "unpack_add_table",
]

#: ``(mult, shift)`` of an identity requantization: ``MBQM(x, 2**30, 1) == x`` for every int32
#: ``x`` with ``|x| < 2**30`` (the left shift doubles ``x``, SRDHM halves it exactly), used
#: with bias 0 and zero point 0 by the identity DW and PW stages
IDENTITY_MULT, IDENTITY_SHIFT = 1 << 30, 1


def padded(channels: int, lanes: int) -> int:
    """``channels`` rounded up to a multiple of ``lanes``."""
    return -(-channels // lanes) * lanes


def pack_activations(x: np.ndarray, lanes: int) -> bytes:
    """Activations ``int8[H, W, C]`` -> ``int8[H][W][ceil(C/lanes)*lanes]`` bytes.

    NHWC with the channels zero-padded to a multiple of ``lanes``: byte
    ``(y*W + x)*C_pad + c`` is ``x[y, x, c]`` for ``c < C`` and 0 for ``C <= c < C_pad``.
    """
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 3:
        raise ValueError(f"activations must be int8[H, W, C], not {x.dtype}{list(x.shape)}")
    h, w, c = x.shape
    out = np.zeros((h, w, padded(c, lanes)), np.int8)
    out[:, :, :c] = x
    return out.tobytes()


def unpack_activations(raw: bytes, h: int, w: int, c: int, lanes: int) -> np.ndarray:
    """Inverse of :func:`pack_activations`: the first ``h*w*C_pad`` bytes of ``raw`` ->
    ``int8[h, w, c]`` (padding channels dropped, whatever they hold)."""
    c_pad = padded(c, lanes)
    n = h * w * c_pad
    if len(raw) < n:
        raise ValueError(f"activations {h}x{w}x{c} (padded to {c_pad}) need {n} bytes, "
                         f"got {len(raw)}")
    a = np.frombuffer(bytes(raw[:n]), np.int8).reshape(h, w, c_pad)
    return a[:, :, :c].copy()


def space_to_depth(x: np.ndarray, block: int, fill: int) -> np.ndarray:
    """``int8[H, W, C]`` -> ``int8[ceil(H/b), ceil(W/b), b*b*C]`` (``b = block``): each
    ``b x b`` block of pixels becomes one pixel::

        S[Y, X, (i*b + j)*C + c] = x[b*Y + i, b*X + j, c]   (i, j < b)
                                 = fill  where b*Y + i >= H or b*X + j >= W

    (the blocks an odd edge cuts). The layout in which the host stores the input of a stem
    compiled by space-to-depth (``compiler.space_to_depth_conv``); ``fill`` is the input zero
    point, the value the convolution's padding taps hold.
    """
    x = np.asarray(x)
    if x.ndim != 3 or block < 1:
        raise ValueError(f"space_to_depth takes [H, W, C] and a block >= 1, not "
                         f"{list(x.shape)} and {block}")
    h, w, c = x.shape
    rows, cols = -(-h // block), -(-w // block)
    full = np.full((rows * block, cols * block, c), fill, x.dtype)
    full[:h, :w] = x
    blocks = full.reshape(rows, block, cols, block, c).transpose(0, 2, 1, 3, 4)  # [Y,X,i,j,c]
    return blocks.reshape(rows, cols, block * block * c)


def depth_to_space(s: np.ndarray, block: int, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`space_to_depth`: ``[ceil(h/b), ceil(w/b), b*b*C]`` -> ``[h, w, C]``
    (the fill past an odd edge dropped)."""
    s = np.asarray(s)
    rows, cols, cb = s.shape
    if (rows, cols) != (-(-h // block), -(-w // block)) or cb % (block * block):
        raise ValueError(f"{list(s.shape)} is not the space-to-depth form ({block}x{block} "
                         f"blocks) of a {h}x{w} image")
    c = cb // (block * block)
    full = s.reshape(rows, cols, block, block, c).transpose(0, 2, 1, 3, 4)
    return full.reshape(rows * block, cols * block, c)[:h, :w].copy()


def unpack_raw(raw: bytes, pixels: int, channels: int, cols: int) -> np.ndarray:
    """``RAW_OUT`` output (``int32[pixels][ceil(channels/cols)*cols]`` little-endian, pixels
    contiguous) -> ``int64[pixels, channels]`` (padding channels dropped)."""
    c_pad = padded(channels, cols)
    n = 4 * pixels * c_pad
    if len(raw) < n:
        raise ValueError(f"raw output {pixels}x{channels} (padded to {c_pad}) needs {n} bytes, "
                         f"got {len(raw)}")
    a = np.frombuffer(bytes(raw[:n]), "<i4").reshape(pixels, c_pad)
    return a[:, :channels].astype(np.int64)


def mid_channel_map(channels: int, depth_multiplier: int, lanes: int) -> np.ndarray:
    """True mid channel of each hardware mid lane: ``int64[mid_groups, lanes]``.

    ``map[g*m + j, i] = (g*P + i)*m + j`` when ``g*P + i < C``, else -1 (a padding lane).
    """
    groups = padded(channels, lanes) // lanes
    g, j, i = np.meshgrid(np.arange(groups), np.arange(depth_multiplier), np.arange(lanes),
                          indexing="ij")
    cin = g * lanes + i
    out = np.where(cin < channels, cin * depth_multiplier + j, -1)
    return out.reshape(groups * depth_multiplier, lanes).astype(np.int64)


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[..., index]`` with 0 where ``index < 0`` (padding lanes)."""
    out = np.take(values, np.maximum(index, 0), axis=-1)
    return np.where(index >= 0, out, 0).astype(values.dtype)


def to_mid_lanes(values: np.ndarray, channels: int, depth_multiplier: int, lanes: int
                 ) -> np.ndarray:
    """Per-mid-channel ``values[C*m]`` (true TFLite order) -> hardware lane order
    ``values[map].reshape(-1)`` of length ``mid_groups*lanes``, 0 on padding lanes."""
    cmap = mid_channel_map(channels, depth_multiplier, lanes)
    return _gather(np.asarray(values), cmap).reshape(-1)


def fold_bias(bias: np.ndarray, weight_sums: np.ndarray, zp_in: int) -> np.ndarray:
    """``bias' = bias - zp_in * sum(w)`` per channel, so the hardware multiplies raw int8
    inputs: ``sum((x - zp_in) * w) + bias == sum(x * w) + bias'``. Raises ``OverflowError``
    if a folded bias leaves int32."""
    folded = np.asarray(bias, np.int64) - int(zp_in) * np.asarray(weight_sums, np.int64)
    if folded.size and (folded.min() < -(1 << 31) or folded.max() >= 1 << 31):
        raise OverflowError("folded bias leaves int32")
    return folded


def pack_dw_weights(w: np.ndarray, depth_multiplier: int, lanes: int, taps: int) -> bytes:
    """Depthwise weights ``int8[k, k, C*m]`` (TFLite's ``[1, k, k, C*m]`` without the 1) ->
    ``mid_groups*R*k`` words of ``taps*lanes`` bytes, ``R = ceil(k/taps)`` passes of ``taps``
    kernel rows (``T = taps``, ``P = lanes``): one word is the column of ``T`` taps the DW
    array multiplies in one cycle.

    Word ``(q*R + r)*k + kx`` (mid group ``q``, pass ``r``, kernel column ``kx``), byte
    ``t*P + i`` = ``w[r*T + t, kx, map[q, i]]``; 0 when ``r*T + t >= k`` (the last pass's
    rows below the kernel) and on padding lanes; ``map`` from :func:`mid_channel_map`.
    """
    w = np.asarray(w, np.int8)
    k = w.shape[0]
    if w.ndim != 3 or w.shape[1] != k or w.shape[2] % depth_multiplier:
        raise ValueError(f"depthwise weights must be int8[k, k, C*m], not {list(w.shape)}")
    cmap = mid_channel_map(w.shape[2] // depth_multiplier, depth_multiplier, lanes)
    lanes_w = _gather(w, cmap).transpose(2, 0, 1, 3)  # [ky, kx, q, i] -> [q, ky, kx, i]
    return np.ascontiguousarray(_dw_rows_to_words(lanes_w, taps)).tobytes()


def unpack_dw_weights(raw: bytes, mid_groups: int, kernel: int, lanes: int, taps: int
                      ) -> np.ndarray:
    """The first ``mid_groups*R*k*taps*lanes`` bytes of ``raw`` (:func:`pack_dw_weights`'
    words) -> ``int8[mid_groups, k, k, lanes]``, ``[q, ky, kx, i]`` = weight of hardware mid
    lane ``(q, i)`` at tap ``(ky, kx)``. The bytes of rows ``ky >= k`` are dropped."""
    k, rows = kernel, padded(kernel, taps)
    n = mid_groups * rows * k * lanes
    if len(raw) < n:
        raise ValueError(f"depthwise weights of {mid_groups} mid groups, kernel {k}x{k} and "
                         f"{taps} taps need {n} bytes, got {len(raw)}")
    words = np.frombuffer(bytes(raw[:n]), np.int8).reshape(mid_groups, rows // taps, k, taps,
                                                            lanes)  # [q, r, kx, t, i]
    w = words.transpose(0, 1, 3, 2, 4).reshape(mid_groups, rows, k, lanes)
    return w[:, :k].copy()


def _dw_rows_to_words(w: np.ndarray, taps: int) -> np.ndarray:
    """``[q, ky, kx, i]`` -> ``[q, r, kx, t, i]`` with ``ky = r*taps + t``, rows past the
    kernel zero: the word order of :func:`pack_dw_weights`."""
    groups, k, _, lanes = w.shape
    rows = np.zeros((groups, padded(k, taps), k, lanes), w.dtype)
    rows[:, :k] = w
    return rows.reshape(groups, -1, taps, k, lanes).transpose(0, 1, 3, 2, 4)


def pack_pw_weights(w: np.ndarray, depth_multiplier: int, lanes: int, cols: int) -> bytes:
    """Pointwise weights ``int8[C_out, C*m]`` (TFLite's ``[C_out, 1, 1, C*m]`` squeezed) ->
    ``out_groups*mid_groups`` words of ``lanes*cols`` bytes.

    Word ``og*mid_groups + q``, byte ``i*cols + o`` = ``w[og*cols + o, map[q, i]]``: the
    weight from hardware mid lane ``(q, i)`` to output channel ``og*cols + o``; 0 when the
    lane is padding or ``og*cols + o >= C_out``.
    """
    w = np.asarray(w, np.int8)
    if w.ndim != 2 or w.shape[1] % depth_multiplier:
        raise ValueError(f"pointwise weights must be int8[C_out, C*m], not {list(w.shape)}")
    c_out, c_mid = w.shape
    cmap = mid_channel_map(c_mid // depth_multiplier, depth_multiplier, lanes)  # [q, i]
    wp = np.zeros((padded(c_out, cols), c_mid), np.int8)
    wp[:c_out] = w
    rows = _gather(wp, cmap)  # [C_out_pad, q, i]
    og = wp.shape[0] // cols
    words = rows.reshape(og, cols, *cmap.shape).transpose(0, 2, 3, 1)  # [og, q, i, o]
    return np.ascontiguousarray(words).tobytes()


def pack_expand_weights(w: np.ndarray, lanes: int, cols: int) -> bytes:
    """Expand (1x1) weights ``int8[C_e, C_in]`` -> ``exp_words*ceil(C_in/P)`` words of
    ``P*Q`` bytes (``P = lanes``, ``Q = cols``; ``exp_words = ceil(padded(C_e, P)/Q)``: the
    engine words that cover the line buffer's ``P``-channel groups).

    Word ``oe*in_groups + gi``, byte ``i*Q + o`` = ``w[oe*Q + o, gi*P + i]``: the weight from
    input channel ``gi*P + i`` to expanded channel ``oe*Q + o``; 0 for padding channels.
    """
    w = np.asarray(w, np.int8)
    if w.ndim != 2:
        raise ValueError(f"expand weights must be int8[C_e, C_in], not {list(w.shape)}")
    ce, ci = w.shape
    wp = np.zeros((padded(padded(ce, lanes), cols), padded(ci, lanes)), np.int8)
    wp[:ce, :ci] = w
    words = wp.reshape(-1, cols, wp.shape[1] // lanes, lanes)  # [oe, o, gi, i]
    return np.ascontiguousarray(words.transpose(0, 2, 3, 1)).tobytes()  # [oe, gi, i, o]


def pack_conv_weights(w: np.ndarray, lanes: int, cols: int) -> bytes:
    """``CONV``-mode weights ``int8[C_out, k, k, C_in]`` (TFLite's ``CONV_2D`` layout) ->
    ``out_groups * mid_groups`` words of ``lanes*cols`` bytes, ``mid_groups = k*k*G``,
    ``G = ceil(C_in/lanes)``.

    Word ``og*mid_groups + t`` with ``t = (g*k + ky)*k + kx`` (the line buffer's tap order
    with ``m = 1``), byte ``i*cols + o`` = ``w[og*cols + o, ky, kx, g*lanes + i]``; 0 for
    padding channels.
    """
    w = np.asarray(w, np.int8)
    if w.ndim != 4 or w.shape[1] != w.shape[2]:
        raise ValueError(f"conv weights must be int8[C_out, k, k, C_in], not {list(w.shape)}")
    c_out, k, _, c_in = w.shape
    wp = np.zeros((padded(c_out, cols), k, k, padded(c_in, lanes)), np.int8)
    wp[:c_out, :, :, :c_in] = w
    og, g = wp.shape[0] // cols, wp.shape[3] // lanes
    words = wp.reshape(og, cols, k, k, g, lanes)  # [og, o, ky, kx, g, i]
    return np.ascontiguousarray(words.transpose(0, 4, 2, 3, 5, 1)).tobytes()


#: a requant record's fields (``hw.layout.REQUANT_RECORD_FIELDS``) as little-endian NumPy types
_RECORD_DTYPES = [(name, f"<i{bits // 8}") for name, bits in REQUANT_RECORD_FIELDS]


def pack_table(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, lanes: int) -> bytes:
    """Requant table: one record per ``lanes`` consecutive channels (arrays already in
    hardware lane order and padded to a multiple of ``lanes``), each record ``bias
    int32[lanes]``, ``mult int32[lanes]``, ``shift int8[lanes]`` concatenated
    (``hw.layout.REQUANT_RECORD_FIELDS``, ``9*lanes`` bytes) and zero bytes up to
    :func:`~dwsep.hw.layout.table_record_bytes`. The compiler packs records of a
    requantizer's compute lanes: one per chunk it computes in a cycle."""
    arrays = {"bias": bias, "mult": mult, "shift": shift}
    arrays = {k: np.asarray(a).reshape(-1) for k, a in arrays.items()}
    n = arrays["bias"].size
    if n % lanes or any(a.size != n for a in arrays.values()):
        raise ValueError(f"table arrays must have one equal length that is a multiple of "
                         f"{lanes}, not {', '.join(str(a.size) for a in arrays.values())}")
    records = n // lanes
    out = np.zeros((records, table_record_bytes(lanes)), np.uint8)
    at = 0
    for name, dtype in _RECORD_DTYPES:
        raw = arrays[name].astype(dtype).reshape(records, lanes).view(np.uint8)
        out[:, at:at + raw.shape[1]] = raw
        at += raw.shape[1]
    return out.tobytes()


def unpack_table(raw: bytes, records: int, lanes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_table`: ``(bias, mult, shift)``, each ``[records, lanes]``."""
    size = table_record_bytes(lanes)
    rec = np.frombuffer(bytes(raw[:records * size]), np.uint8).reshape(records, size)
    fields, at = {}, 0
    for name, dtype in _RECORD_DTYPES:
        width = np.dtype(dtype).itemsize * lanes
        fields[name] = rec[:, at:at + width].copy().view(dtype).astype(dtype[1:])
        at += width
    return fields["bias"], fields["mult"], fields["shift"]


def pack_add_table(table: np.ndarray) -> bytes:
    """The residual ADD's table (``dwsep.host.numerics.add_table``, ``int64[2, 256]``) in
    DDR: :data:`~dwsep.hw.layout.ADD_TABLE_ENTRIES` (512) little-endian int64, input
    ``a``'s 256 entries then ``b``'s, each entry one beat (the ADD's table memory keeps its
    low 60 bits: ``|entry| < 2**59``)."""
    table = np.asarray(table)
    if table.shape != (2, 256) or np.abs(table).max(initial=0) >= 1 << 59:
        raise ValueError(f"an ADD table is int64[2, 256] with entries below 2**59 in "
                         f"magnitude, not {table.dtype}{list(table.shape)}")
    return table.astype("<i8").tobytes()


def unpack_add_table(raw: bytes) -> np.ndarray:
    """Inverse of :func:`pack_add_table`."""
    return np.frombuffer(bytes(raw[:ADD_TABLE_ENTRIES * 8]), "<i8").reshape(2, -1).astype(
        np.int64)
