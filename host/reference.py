"""NumPy TFLite int8 kernels, bit-exact with LiteRT's ``BUILTIN_REF`` reference kernels
(``reference_integer_ops::DepthwiseConvPerChannel`` / ``ConvPerChannel``), with every integer
parameter explicit so the hardware models and the compiler can share them.

For each output pixel ``(oy, ox)`` and output channel ``o``::

    acc[o] = bias[o] + sum over taps (ky, kx) inside the image, input channels i of
             (x[oy*sh - pad_top + ky*dh, ox*sw - pad_left + kx*dw, i] - in_zp) * w[..., o]
    y[o]   = clamp(MBQM(acc[o], mult[o], shift[o]) + out_zp, act_min, act_max)

``MBQM`` is ``numerics.multiply_by_quantized_multiplier``. Taps in the padding contribute 0,
which is the same as padding the input with ``in_zp``. ``acc`` is an int32 in C++: it is
computed here exactly in int64 and wrapped to int32 (two's complement), which is what the C++
code does on overflow in practice; valid models never get near it.
"""

from __future__ import annotations

import numpy as np

from .graph import Graph, Operator, UnsupportedModelError
from .numerics import activation_range, quantize_multiplier, requantize

__all__ = [
    "padding_amounts", "depthwise_conv2d", "conv2d", "conv_quant_params", "run_graph",
]

_REFERENCE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def padding_amounts(padding: str, in_size: int, k: int, stride: int,
                    dilation: int) -> tuple[int, int, int]:
    """TFLite's ``ComputePaddingHeightWidth`` for one dimension: ``(before, after, out_size)``.

    With ``k_eff = (k - 1) * dilation + 1``: SAME gives ``out = ceil(in / stride)``,
    ``total = max((out - 1) * stride + k_eff - in, 0)``, ``before = total // 2``,
    ``after = total - before`` (the odd pixel goes after); VALID gives
    ``out = (in - k_eff) // stride + 1`` and no padding.
    """
    for name, value in (("in_size", in_size), ("k", k), ("stride", stride),
                        ("dilation", dilation)):
        if value < 1:
            raise ValueError(f"'{name}' must be positive, not {value}")
    k_eff = (k - 1) * dilation + 1
    if padding == "SAME":
        out = -(-in_size // stride)
        total = max((out - 1) * stride + k_eff - in_size, 0)
        return total // 2, total - total // 2, out
    if padding == "VALID":
        if k_eff > in_size:
            raise UnsupportedModelError(
                f"VALID window of effective size {k_eff} (kernel {k}, dilation {dilation}) "
                f"does not fit input size {in_size}")
        return 0, 0, (in_size - k_eff) // stride + 1
    raise ValueError(f"'padding' must be 'SAME' or 'VALID', not {padding!r}")


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _padded_input(x: np.ndarray, in_zp: int, padding) -> np.ndarray:
    """``x - in_zp`` in int64, zero-padded: a padded tap then contributes nothing."""
    top, bottom, left, right = padding
    return np.pad(x.astype(np.int64) - in_zp, ((top, bottom), (left, right), (0, 0)))


def _taps(xs: np.ndarray, kh: int, kw: int, stride, dilation):
    """Yield ``(ky, kx, tap)``: ``tap[oy, ox] = xs[oy*sh + ky*dh, ox*sw + kx*dw]``."""
    sh, sw = stride
    dh, dw = dilation
    ho = (xs.shape[0] - (kh - 1) * dh - 1) // sh + 1
    wo = (xs.shape[1] - (kw - 1) * dw - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{kh}x{kw} window (dilation {dh}x{dw}) does not fit the padded "
                         f"input {xs.shape[0]}x{xs.shape[1]}")
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, xs[ky * dh:ky * dh + (ho - 1) * sh + 1:sh,
                             kx * dw:kx * dw + (wo - 1) * sw + 1:sw]


def _finish(acc: np.ndarray, bias, mult, shift, out_zp, act_min, act_max) -> np.ndarray:
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return requantize(_wrap_int32(acc), np.asarray(mult, np.int64), np.asarray(shift, np.int64),
                      out_zp, act_min, act_max)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, in_zp: int,
                     mult, shift, out_zp: int, act_min: int, act_max: int, stride=(1, 1),
                     dilation=(1, 1), padding=(0, 0, 0, 0), depth_multiplier: int = 1):
    """TFLite int8 ``DEPTHWISE_CONV_2D`` (per-channel), ``int8[Ho, Wo, C*m]``.

    ``x`` int8 ``[H, W, C]``, ``w`` int8 ``[kh, kw, C*m]``, ``bias`` int32 ``[C*m]`` or None,
    ``mult``/``shift`` per output channel, ``padding = (top, bottom, left, right)``. Output
    channel ``c*m + j`` reads input channel ``c``::

        acc[oy, ox, c*m+j] = bias[c*m+j] + sum_{ky,kx} (xp[oy*sh + ky*dh, ox*sw + kx*dw, c]
                                                       - in_zp) * w[ky, kx, c*m+j]

    where ``xp`` is ``x`` padded with ``in_zp``; then requantized as in the module docstring.
    """
    kh, kw, cm = w.shape
    if x.ndim != 3 or x.shape[2] * depth_multiplier != cm:
        raise ValueError(f"input {list(x.shape)} x depth multiplier {depth_multiplier} does "
                         f"not match weights {list(w.shape)}")
    xs = _padded_input(x, in_zp, padding)
    if depth_multiplier > 1:
        xs = np.repeat(xs, depth_multiplier, axis=2)
    w64 = w.astype(np.int64)
    acc = None
    for ky, kx, tap in _taps(xs, kh, kw, stride, dilation):
        term = tap * w64[ky, kx]
        acc = term if acc is None else acc + term
    return _finish(acc, bias, mult, shift, out_zp, act_min, act_max)


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, in_zp: int, mult, shift,
           out_zp: int, act_min: int, act_max: int, stride=(1, 1), dilation=(1, 1),
           padding=(0, 0, 0, 0)):
    """TFLite int8 ``CONV_2D`` (per-channel), ``int8[Ho, Wo, O]``.

    ``x`` int8 ``[H, W, I]``, ``w`` int8 ``[O, kh, kw, I]``, ``bias`` int32 ``[O]`` or None::

        acc[oy, ox, o] = bias[o] + sum_{ky,kx,i} (xp[oy*sh + ky*dh, ox*sw + kx*dw, i] - in_zp)
                                                 * w[o, ky, kx, i]

    then requantized as in the module docstring. Each tap's sum over ``i`` is a float64 matrix
    product: every partial sum is an integer below ``I * 255 * 128 < 2**53``, so it is exact
    whatever the summation order, and BLAS makes 1x1 layers with many channels fast.
    """
    o, kh, kw, i = w.shape
    if x.ndim != 3 or x.shape[2] != i:
        raise ValueError(f"input {list(x.shape)} does not match weights {list(w.shape)} "
                         "(grouped convolution is not supported)")
    if i * 255 * 128 >= 2**53:
        raise ValueError(f"{i} input channels are too many for exact float64 sums")
    xs = _padded_input(x, in_zp, padding).astype(np.float64)
    wf = w.astype(np.float64)
    acc = None
    for ky, kx, tap in _taps(xs, kh, kw, stride, dilation):
        term = (tap @ wf[:, ky, kx, :].T).astype(np.int64)
        acc = term if acc is None else acc + term
    return _finish(acc, bias, mult, shift, out_zp, act_min, act_max)


def conv_quant_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of a CONV_2D / DEPTHWISE_CONV_2D, as TFLite's
    ``PopulateConvolutionQuantizationParams`` computes them.

    Per output channel ``c``: ``(mult[c], shift[c]) = QuantizeMultiplier(double(s_in) *
    double(s_w[c]) / double(s_out))`` (the scales are float32, the arithmetic double, left to
    right); ``act_min, act_max`` from ``numerics.activation_range`` of the fused activation and
    the output quantization. Returns ``dict(in_zp, out_zp, mult, shift, act_min, act_max)``,
    ``mult``/``shift`` int64 arrays.
    """
    x, w, y = (graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]),
               graph.tensor(op.outputs[0]))
    for role, t, dtype in (("input", x, "int8"), ("weights", w, "int8"), ("output", y, "int8")):
        if t.dtype != dtype:
            raise UnsupportedModelError(f"{op.opcode} {op.index}: {role} {t.name!r} is "
                                        f"{t.dtype}, only {dtype} is supported")
    if w.scale.size == 0:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: weights {w.name!r} are not "
                                    "quantized")
    if np.any(w.zero_point != 0):
        raise UnsupportedModelError(f"{op.opcode} {op.index}: weights {w.name!r} have nonzero "
                                    "zero points; int8 weights must be symmetric (zero point 0)")
    channels = w.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else w.shape[0]
    if w.scale.size not in (1, channels):
        raise UnsupportedModelError(f"{op.opcode} {op.index}: weights {w.name!r} have "
                                    f"{w.scale.size} scales for {channels} output channels")
    s_in, s_out = float(x.per_tensor_scale), float(y.per_tensor_scale)
    scales = np.broadcast_to(w.scale, (channels,))
    pairs = [quantize_multiplier(s_in * float(s) / s_out) for s in scales]
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), s_out,
                                        y.per_tensor_zero_point)
    return dict(in_zp=x.per_tensor_zero_point, out_zp=y.per_tensor_zero_point,
                mult=np.array([m for m, _ in pairs], np.int64),
                shift=np.array([s for _, s in pairs], np.int64),
                act_min=act_min, act_max=act_max)


def _run_conv(graph: Graph, op: Operator, x: np.ndarray) -> np.ndarray:
    """One CONV_2D / DEPTHWISE_CONV_2D on ``x`` int8 ``[H, W, C]``."""
    w = graph.tensor(op.inputs[1])
    if w.data is None:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: weights {w.name!r} must be "
                                    "constant")
    bias_name = op.inputs[2] if len(op.inputs) > 2 else None
    bias = None
    if bias_name is not None:
        b = graph.tensor(bias_name)
        if b.dtype != "int32" or b.data is None:
            raise UnsupportedModelError(f"{op.opcode} {op.index}: bias {b.name!r} must be a "
                                        f"constant int32 tensor, is {b.dtype}")
        bias = b.data
    opts = op.options
    kh, kw = w.shape[1], w.shape[2]
    stride = (opts.get("stride_h", 1), opts.get("stride_w", 1))
    dilation = (opts.get("dilation_h", 1), opts.get("dilation_w", 1))
    top, bottom, _ = padding_amounts(opts["padding"], x.shape[0], kh, stride[0], dilation[0])
    left, right, _ = padding_amounts(opts["padding"], x.shape[1], kw, stride[1], dilation[1])
    q = conv_quant_params(graph, op)
    common = dict(in_zp=q["in_zp"], mult=q["mult"], shift=q["shift"], out_zp=q["out_zp"],
                  act_min=q["act_min"], act_max=q["act_max"], stride=stride,
                  dilation=dilation, padding=(top, bottom, left, right))
    if op.opcode == "CONV_2D":
        return conv2d(x, w.data, bias, **common)
    m = w.shape[3] // x.shape[2]
    if m * x.shape[2] != w.shape[3] or opts.get("depth_multiplier", m) not in (0, m):
        raise UnsupportedModelError(
            f"DEPTHWISE_CONV_2D {op.index}: weights {list(w.shape)} and depth_multiplier "
            f"{opts.get('depth_multiplier')} do not fit an input of {x.shape[2]} channels")
    return depthwise_conv2d(x, w.data[0], bias, depth_multiplier=m, **common)


def run_graph(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Execute ``graph`` on the int8 input ``x`` (shape of ``graph.input``, batch 1) operator
    by operator and return its first output (with the batch dimension)."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.shape != graph.input.shape:
        raise ValueError(f"input must be int8{list(graph.input.shape)}, "
                         f"not {x.dtype}{list(x.shape)}")
    values = {graph.inputs[0]: x}
    for op in graph.operators:
        if op.opcode not in _REFERENCE_OPS:
            raise UnsupportedModelError(
                f"reference cannot run {op.opcode} (operator {op.index}); it runs "
                f"{', '.join(_REFERENCE_OPS)}")
        name = op.inputs[0]
        if name not in values:
            raise UnsupportedModelError(f"{op.opcode} {op.index}: input {name!r} is neither "
                                        "the graph input nor computed by an earlier operator")
        y = _run_conv(graph, op, values[name][0])[None]
        expected = graph.tensor(op.outputs[0]).shape
        if y.shape != expected:
            raise UnsupportedModelError(f"{op.opcode} {op.index}: computed output shape "
                                        f"{list(y.shape)}, the model says {list(expected)}")
        values[op.outputs[0]] = y
    return values[graph.outputs[0]]
