"""NumPy TFLite int8 kernels, bit-exact with LiteRT's ``BUILTIN_REF`` reference kernels
(ai-edge-litert 2.3.0), for every operator of an int8 MobileNet V1/V2, and the elementwise
operators of MobileNetV3 and squeeze-and-excitation (HARD_SWISH, LOGISTIC, TANH, LEAKY_RELU,
RELU, RELU6, RELU_N1_TO_1, MUL), with every integer parameter explicit so the hardware models
and the compiler can share them; ``unary_table`` turns an int8 -> int8 elementwise operator
into a 256-entry lookup table.

Sources, in the LiteRT repository (``tflite/...``; TensorFlow has the same files under
``tensorflow/lite/...``): the kernels in ``kernels/internal/reference/integer_ops/`` and
``kernels/internal/reference/``, their ``Prepare`` logic in ``kernels/<op>.cc``. Each function
names the function it follows.

Convolutions (``reference_integer_ops::DepthwiseConvPerChannel`` / ``ConvPerChannel``): for each
output pixel ``(oy, ox)`` and output channel ``o``::

    acc[o] = bias[o] + sum over taps (ky, kx) inside the image, input channels i of
             (x[oy*sh - pad_top + ky*dh, ox*sw - pad_left + kx*dw, i] - in_zp) * w[..., o]
    y[o]   = clamp(MBQM(acc[o], mult[o], shift[o]) + out_zp, act_min, act_max)

``MBQM`` is ``numerics.multiply_by_quantized_multiplier``. Taps in the padding contribute 0,
which is the same as padding the input with ``in_zp``. Accumulators are int32 in C++: they are
computed here exactly in int64 and wrapped to int32 (two's complement), which is what the C++
code does on overflow in practice; valid models never get near it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import numpy as np

from .graph import Graph, Operator, Tensor, UnsupportedModelError
from .numerics import (
    ADD_LEFT_SHIFT,
    INT32_MIN,
    activation_range,
    downscale_multiplier16,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot16,
    saturating_doubling_high_mul16,
    saturating_left_shift16,
    srdhm16,
    wrap_int16,
    wrap_int32,
)

__all__ = [
    "padding_amounts", "depthwise_conv2d", "conv2d", "conv_quant_params",
    "fused_activation_range", "pad", "add", "add_quant_params", "average_pool2d",
    "mean_multiplier", "mean", "fully_connected", "fully_connected_params",
    "round_half_away", "quantize", "hard_swish_params", "hard_swish", "activation_table",
    "table_lookup", "leaky_relu_params", "leaky_relu", "relu_params", "relu_x",
    "mul_quant_params", "mul", "unary_table", "UNARY_OPS", "run_graph", "SUPPORTED_OPS",
]


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
    return requantize(wrap_int32(acc), np.asarray(mult, np.int64), np.asarray(shift, np.int64),
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
    right); ``act_min, act_max`` from ``fused_activation_range`` of the fused activation and
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
    act_min, act_max = fused_activation_range(op.options.get("activation", "NONE"), s_out,
                                              y.per_tensor_zero_point, f"{op.opcode} {op.index}")
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




# --------------------------------------------------------------------------------------------
# Quantization helpers


def fused_activation_range(activation: str, scale: float, zero_point: int,
                           what: str) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` (``kernels/kernel_util.cc``) for an int8 output,
    including the check its ``Quantize`` helper makes: each bound ``v`` of the activation
    (0 for RELU; 0 and 6 for RELU6; -1 and 1 for RELU_N1_TO_1) becomes
    ``TfLiteRound(float(v) / float(scale))``, and LiteRT refuses the model at prepare when that
    leaves int32. Such a model raises ``UnsupportedModelError`` (``what`` names the op in the
    message); otherwise the range is ``numerics.activation_range``.
    """
    bounds = {"NONE": (), "RELU": (0.0,), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    if activation not in bounds:
        raise UnsupportedModelError(f"{what}: fused activation {activation!r} is not supported;"
                                    f" allowed: {', '.join(bounds)}")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for v in bounds[activation]:
            t = abs(float(np.float32(v) / np.float32(scale)))
            if not math.floor(t + 0.5) < 2**31:
                raise UnsupportedModelError(
                    f"{what}: fused {activation} bound {v:g} / output scale {scale:g} = {t:g} "
                    "does not fit int32; LiteRT refuses such a model (use a larger output scale)")
    return activation_range(activation, scale, zero_point)


def _int8_quant(op: Operator, role: str, t: Tensor) -> tuple[float, int]:
    """``(scale, zero_point)`` of a per-tensor quantized int8 tensor."""
    if t.dtype != "int8":
        raise UnsupportedModelError(f"{op.opcode} {op.index}: {role} {t.name!r} is {t.dtype}, "
                                    "only int8 is supported")
    if t.scale.size == 0 or t.zero_point.size == 0:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: {role} {t.name!r} is not "
                                    "quantized")
    scale, zp = t.per_tensor_scale, t.per_tensor_zero_point
    if not scale > 0 or not -128 <= zp <= 127:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: {role} {t.name!r} has scale "
                                    f"{scale:g} and zero point {zp}; int8 tensors need a "
                                    "positive scale and a zero point in [-128, 127]")
    return scale, zp


def round_half_away(v) -> np.ndarray:
    """C's ``round()`` on doubles: nearest integer, ties away from zero, as float64.

    ``trunc(v) + (|v - trunc(v)| >= 0.5) * sign(v)``: the fraction ``v - trunc(v)`` is exact in
    floating point, unlike ``floor(|v| + 0.5)``, which rounds 0.49999999999999994 up.
    """
    v = np.asarray(v, np.float64)
    whole = np.trunc(v)
    return whole + np.where(np.abs(v - whole) >= 0.5, np.sign(v), 0.0)


# --------------------------------------------------------------------------------------------
# PAD, ADD, AVERAGE_POOL_2D, MEAN, FULLY_CONNECTED, QUANTIZE


def pad(x: np.ndarray, paddings, pad_value: int) -> np.ndarray:
    """TFLite int8 ``PAD`` / ``PADV2`` (``kernels/pad.cc`` ``EvalInt``, which calls
    ``PadImageStyle`` / ``Pad``): ``x`` with ``paddings[d] = (before, after)`` elements of
    ``pad_value`` added around dimension ``d``. Values are copied, not requantized (LiteRT does
    not compare input and output quantization); ``pad_value`` is the output zero point for PAD
    and the ``constant_values`` scalar for PADV2.
    """
    p = np.asarray(paddings, np.int64)
    if p.shape != (x.ndim, 2) or np.any(p < 0):
        raise ValueError(f"'paddings' must be {x.ndim} non-negative (before, after) pairs, "
                         f"not {p.tolist()}")
    return np.pad(x, p, constant_values=np.asarray(pad_value, x.dtype))


def add_quant_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of an int8 ADD, as ``kernels/add.cc`` ``Prepare`` computes them.

    ``left_shift = 20``; ``twice_max = 2 * max(s1, s2)`` (float32, then double);
    ``(mult_i, shift_i) = QuantizeMultiplierSmallerThanOneExp(s_i / twice_max)``,
    ``(out_mult, out_shift) = QuantizeMultiplierSmallerThanOneExp(twice_max / (2**20 * s_out))``
    (``kernels/internal/quantization_util.cc``: ``QuantizeMultiplier`` after a process-aborting
    ``TFLITE_CHECK`` that ``0 < real < 1`` and the shift is <= 0; such models raise
    ``UnsupportedModelError`` here). Returns ``dict(in1_zp, in2_zp, mult1, shift1, mult2,
    shift2, out_mult, out_shift, out_zp, act_min, act_max, left_shift)``.
    """
    (s1, zp1), (s2, zp2), (s_out, zp_out) = (
        _int8_quant(op, role, graph.tensor(name)) for role, name in
        (("input 1", op.inputs[0]), ("input 2", op.inputs[1]), ("output", op.outputs[0])))
    left_shift = ADD_LEFT_SHIFT
    twice_max = 2.0 * max(s1, s2)
    pairs = []
    for what, real in (("input 1", s1 / twice_max), ("input 2", s2 / twice_max),
                       ("output", twice_max / ((1 << left_shift) * s_out))):
        mult, shift = quantize_multiplier(real)
        if not 0.0 < real < 1.0 or shift > 0:
            raise UnsupportedModelError(
                f"ADD {op.index}: {what} rescale {real:g} must lie in (0, 1) after rounding "
                f"(LiteRT aborts otherwise); the output scale {s_out:g} must exceed "
                f"2 * max(input scales) / 2**20 = {twice_max / (1 << left_shift):g}")
        pairs.append((mult, shift))
    act_min, act_max = fused_activation_range(op.options.get("activation", "NONE"), s_out,
                                              zp_out, f"ADD {op.index}")
    (m1, sh1), (m2, sh2), (mo, sho) = pairs
    return dict(in1_zp=zp1, in2_zp=zp2, mult1=m1, shift1=sh1, mult2=m2, shift2=sh2,
                out_mult=mo, out_shift=sho, out_zp=zp_out, act_min=act_min, act_max=act_max,
                left_shift=left_shift)


def add(x1: np.ndarray, x2: np.ndarray, *, in1_zp: int, in2_zp: int, mult1: int, shift1: int,
        mult2: int, shift2: int, out_mult: int, out_shift: int, out_zp: int, act_min: int,
        act_max: int, left_shift: int = 20) -> np.ndarray:
    """TFLite int8 ``ADD``: ``reference_integer_ops::AddFunc``
    (``kernels/internal/reference/integer_ops/add.h``) on every element, with NumPy
    broadcasting (``BroadcastAdd6DSlow`` applies the same ``AddFunc`` to broadcast operands)::

        a_i = MBQM((x_i - zp_i) * 2**left_shift, mult_i, shift_i)       (i = 1, 2)
        y   = clamp(MBQM(a_1 + a_2, out_mult, out_shift) + out_zp, act_min, act_max)

    ``MBQM`` with a shift <= 0 is ``MultiplyByQuantizedMultiplierSmallerThanOneExp``:
    ``RoundingDivideByPOT(SRDHM(x, mult), -shift)``.
    """
    a1 = multiply_by_quantized_multiplier(
        (x1.astype(np.int64) - in1_zp) << left_shift, mult1, shift1)
    a2 = multiply_by_quantized_multiplier(
        (x2.astype(np.int64) - in2_zp) << left_shift, mult2, shift2)
    return requantize(a1 + a2, out_mult, out_shift, out_zp, act_min, act_max)


def average_pool2d(x: np.ndarray, *, filter_hw, stride, padding, act_min: int,
                   act_max: int) -> np.ndarray:
    """TFLite int8 ``AVERAGE_POOL_2D``: ``reference_integer_ops::AveragePool``
    (``kernels/internal/reference/integer_ops/pooling.h``), ``int8[Ho, Wo, C]``.

    ``x`` int8 ``[H, W, C]``, ``padding = (top, bottom, left, right)``. Per output pixel and
    channel, over the ``n`` window taps inside the image (padding counts for nothing)::

        s = sum of x (raw int8 values: zero points are not subtracted)
        y = clamp(s > 0 ? (s + n//2) / n : (s - n//2) / n, act_min, act_max)

    with C's division truncating toward zero: the mean rounded half away from zero.
    """
    fh, fw = filter_hw
    top, bottom, left, right = padding
    pads = ((top, bottom), (left, right), (0, 0))
    xs = np.pad(x.astype(np.int64), pads)
    inside = np.pad(np.ones((*x.shape[:2], 1), np.int64), pads)
    s = sum(tap for _, _, tap in _taps(xs, fh, fw, stride, (1, 1)))
    n = sum(tap for _, _, tap in _taps(inside, fh, fw, stride, (1, 1)))
    q = (np.abs(s) + n // 2) // n
    return np.clip(np.where(s > 0, q, -q), act_min, act_max).astype(np.int8)


def mean_multiplier(mult: int, shift: int, count: int) -> tuple[int, int]:
    """Fold ``1 / count`` into ``(mult, shift)`` as ``reference_ops::QuantizedMeanOrSum``
    (``kernels/internal/reference/reduce.h``) does::

        k      = min(floor(log2(count)), 32, 31 + shift)
        mult'  = (int64(mult) << k) / count      (integer division, truncated)
        shift' = shift - k
    """
    if count < 1:
        raise ValueError(f"'count' must be positive, not {count}")
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (mult << k) // count, shift - k


def mean(x: np.ndarray, axes, keep_dims: bool, *, in_zp: int, mult: int, shift: int,
         out_zp: int) -> np.ndarray:
    """TFLite int8 ``MEAN``: ``reference_ops::QuantizedMeanOrSum`` (``compute_sum=false``,
    ``kernels/internal/reference/reduce.h``), which ``kernels/reduce.cc`` ``EvalMean`` runs
    for every int8 MEAN under ``BUILTIN_REF``, equal input and output quantization or not.

    ``(mult, shift) = QuantizeMultiplier(double(s_in) / double(s_out))`` (``PrepareMeanOrSum``),
    ``axes`` the reduced dimensions (negative ones count from the end, repeats ignored), ``n``
    the number of elements each output reduces, ``(mult', shift') = mean_multiplier(mult,
    shift, n)``::

        y = clamp(MBQM(wrap32(sum x - in_zp * n), mult', shift') + out_zp, -128, 127)

    There is no fused activation. ``keep_dims`` keeps the reduced dimensions with size 1.
    """
    axes = tuple(sorted({a % x.ndim for a in axes}))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    m, s = mean_multiplier(mult, shift, count)
    total = x.astype(np.int64).sum(axis=axes, keepdims=keep_dims)
    return requantize(wrap_int32(total - in_zp * count), m, s, out_zp, -128, 127)


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, in_zp: int,
                    w_zp: int, scale, out_zp: int, act_min: int, act_max: int) -> np.ndarray:
    """TFLite int8 ``FULLY_CONNECTED`` as ``BUILTIN_REF`` runs it, ``int8[B, O]``.

    ``kernels/fully_connected.cc`` ``FullyConnectedInt8`` / ``FullyConnectedPerChannelInt8``
    call, for ``kReference``, the ``reference_integer_ops::FullyConnected`` /
    ``FullyConnectedPerChannel`` overloads that take float scales
    (``kernels/internal/reference/integer_ops/fully_connected.h``): they requantize in double
    precision, not with the fixed-point multiplier ``Prepare`` computes (which only the
    optimized kernels use). ``x`` int8 with ``D = w.shape[1]`` values per row, ``w`` int8
    ``[O, D]``, ``scale[o] = double(s_in) * double(s_w[o]) / double(s_out)`` (one ``s_w`` for
    per-tensor weights), per row ``b`` and unit ``o``::

        acc = wrap32(sum_d (x[b, d] - in_zp) * (w[o, d] - w_zp) + bias[o])
        y   = clamp(wrap32(int32(round(double(acc) * scale[o])) + out_zp), act_min, act_max)

    ``round`` is C's (ties away from zero); ``int32()`` of a double outside int32 gives
    INT32_MIN, as x86's ``cvttsd2si`` does. ``w_zp`` is 0 for per-channel weights (LiteRT
    ignores their zero points). The sums are float64 matrix products, exact since every
    partial sum is an integer below ``D * 255 * 255 < 2**53``.
    """
    o, d = w.shape
    if x.size % d:
        raise ValueError(f"input {list(x.shape)} does not split into rows of {d} values")
    if d * 255 * 255 >= 2**53:
        raise ValueError(f"{d} input values are too many for exact float64 sums")
    xs = x.reshape(-1, d).astype(np.float64) - in_zp
    acc = wrap_int32((xs @ (w.astype(np.float64) - w_zp).T).astype(np.int64))
    if bias is not None:
        acc = wrap_int32(acc + np.asarray(bias, np.int64))
    scaled = round_half_away(acc.astype(np.float64) * np.asarray(scale, np.float64))
    fits = (scaled >= INT32_MIN) & (scaled < 2.0**31)
    out = np.where(fits, scaled, INT32_MIN).astype(np.int64)
    return np.clip(wrap_int32(out + out_zp), act_min, act_max).astype(np.int8)


def fully_connected_params(graph: Graph, op: Operator) -> dict:
    """Parameters of an int8 FULLY_CONNECTED (``kernels/fully_connected.cc``): ``dict(w, bias,
    in_zp, w_zp, scale, out_zp, act_min, act_max)`` for ``fully_connected``.

    Weights are int8 ``[O, D]``, constant, per-tensor (any zero point) or per-channel along
    dimension 0 (zero points 0); ``scale`` is a float64 array of ``O`` (or 1) effective scales.
    As ``GetQuantizedConvolutionMultipler`` does, per-tensor weights with a bias need
    ``|s_in * s_w - s_bias| / s_out <= 0.02``.
    """
    x, w, y = (graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]),
               graph.tensor(op.outputs[0]))
    s_in, in_zp = _int8_quant(op, "input", x)
    s_out, out_zp = _int8_quant(op, "output", y)
    if w.dtype != "int8" or w.data is None or len(w.shape) != 2:
        raise UnsupportedModelError(f"FULLY_CONNECTED {op.index}: weights {w.name!r} must be "
                                    f"constant int8 [units, depth], are {w.dtype}"
                                    f"{list(w.shape)}")
    if w.scale.size not in (1, w.shape[0]) or w.zero_point.size != w.scale.size or (
            w.scale.size > 1 and w.quantized_dimension != 0):
        raise UnsupportedModelError(
            f"FULLY_CONNECTED {op.index}: weights {w.name!r} need one scale or one per unit "
            f"along dimension 0, have {w.scale.size} along dimension {w.quantized_dimension}")
    if w.scale.size > 1 and np.any(w.zero_point != 0):
        raise UnsupportedModelError(f"FULLY_CONNECTED {op.index}: per-channel weights "
                                    f"{w.name!r} need zero points 0 (LiteRT ignores them)")
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        b = graph.tensor(op.inputs[2])
        if b.dtype != "int32" or b.data is None or b.data.size != w.shape[0]:
            raise UnsupportedModelError(f"FULLY_CONNECTED {op.index}: bias {b.name!r} must be "
                                        f"a constant int32 tensor of {w.shape[0]} values, is "
                                        f"{b.dtype}{list(b.shape)}")
        if w.scale.size == 1 and b.scale.size == 1 and abs(
                s_in * float(w.scale[0]) - float(b.scale[0])) / s_out > 0.02:
            raise UnsupportedModelError(
                f"FULLY_CONNECTED {op.index}: bias scale {float(b.scale[0]):g} is not input "
                f"scale x weight scale {s_in * float(w.scale[0]):g}; LiteRT refuses the model")
        bias = b.data.reshape(-1)
    act_min, act_max = fused_activation_range(op.options.get("activation", "NONE"), s_out,
                                              out_zp, f"FULLY_CONNECTED {op.index}")
    scale = np.array([s_in * float(s) / s_out for s in w.scale], np.float64)
    w_zp = int(w.zero_point[0]) if w.scale.size == 1 else 0
    return dict(w=w.data, bias=bias, in_zp=in_zp, w_zp=w_zp, scale=scale, out_zp=out_zp,
                act_min=act_min, act_max=act_max)


def quantize(x: np.ndarray, *, in_zp: int, mult: int, shift: int, out_zp: int) -> np.ndarray:
    """TFLite ``QUANTIZE`` int8 -> int8: ``reference_ops::Requantize``
    (``kernels/internal/reference/requantize.h``) with ``(mult, shift) =
    QuantizeMultiplier(double(s_in) / double(s_out))`` (``kernels/quantize.cc`` ``Prepare``)::

        y = clamp(MBQM(x - in_zp, mult, shift) + out_zp, -128, 127)
    """
    return requantize(x.astype(np.int64) - in_zp, mult, shift, out_zp, -128, 127)


# --------------------------------------------------------------------------------------------
# Elementwise int8 ops of MobileNetV3 and squeeze-and-excitation: HARD_SWISH, LOGISTIC, TANH,
# LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1, MUL. Their ``Prepare`` code computes the rescaling
# factors in float32 (``float`` scales, ``float`` arithmetic) before ``QuantizeMultiplier`` sees
# them as doubles: ``_f32`` reproduces that.


def _f32(v) -> np.float32:
    return np.float32(v)


def _float_to_int32(v) -> np.ndarray:
    """C++ ``static_cast<int32_t>`` of floats: truncation, and INT32_MIN for values outside
    int32 and NaN, as x86's ``cvttss2si`` gives them (int64 array)."""
    v = np.asarray(v, np.float64)
    with np.errstate(invalid="ignore"):
        fits = (v >= -2.0**31) & (v < 2.0**31)
    return np.where(fits, np.trunc(np.where(fits, v, 0.0)), INT32_MIN).astype(np.int64)


def _multiplier(real, op: Operator, what: str,
                fix: str = "use a larger output scale") -> tuple[int, int]:
    """``QuantizeMultiplier(double(real))`` of a float32 rescale factor, refusing a shift above
    31 (a factor of 2**31 or more): the kernels shift an int32 left by it, which C++ leaves
    undefined from 32 bits on (x86 shifts by the amount modulo 32; LiteRT does not check)."""
    mult, shift = quantize_multiplier(float(real))
    if shift > 31:
        raise UnsupportedModelError(
            f"{op.opcode} {op.index}: {what} {float(real):g} needs a left shift of {shift} "
            f"bits, more than int32's 31 (LiteRT's result is undefined); {fix}")
    return mult, shift


def _unary_quant(graph: Graph, op: Operator) -> tuple[float, int, float, int]:
    """``(s_in, in_zp, s_out, out_zp)`` of an int8 -> int8 elementwise op."""
    s_in, in_zp = _int8_quant(op, "input", graph.tensor(op.inputs[0]))
    s_out, out_zp = _int8_quant(op, "output", graph.tensor(op.outputs[0]))
    return s_in, in_zp, s_out, out_zp


def hard_swish_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of an int8 HARD_SWISH, as ``kernels/activations.cc``
    ``HardSwishPrepare`` computes them, in float32::

        hires            = float32(1/128) * s_in
        (m, out_exp)     = QuantizeMultiplier(hires / s_out)
        (r, reluish_exp) = QuantizeMultiplier(hires / float32(3/32768))
        out_mult         = DownScaleInt32ToInt16Multiplier(m)      (Q31 -> Q15, rounded)
        reluish_mult     = DownScaleInt32ToInt16Multiplier(r)

    LiteRT refuses (at prepare) a model whose ``out_exp > 0``, an output scale at most
    ``s_in / 128``: such a model raises ``UnsupportedModelError``, as does an input scale of
    2.5e7 or more (``reluish_exp > 31``). Returns ``dict(in_zp, out_zp, out_mult, out_exp,
    reluish_mult, reluish_exp)``.
    """
    s_in, in_zp, s_out, out_zp = _unary_quant(graph, op)
    with np.errstate(over="ignore", under="ignore"):
        hires = _f32(1.0 / 128.0) * _f32(s_in)
        out_real, reluish_real = hires / _f32(s_out), hires / _f32(3.0 / 32768.0)
    out_mult, out_exp = quantize_multiplier(float(out_real))
    if out_exp > 0:
        raise UnsupportedModelError(
            f"HARD_SWISH {op.index}: output scale {s_out:g} must exceed input scale / 128 = "
            f"{float(hires):g} (LiteRT refuses the model: its output multiplier exponent "
            f"{out_exp} is above 0)")
    reluish_mult, reluish_exp = _multiplier(
        reluish_real, op, "relu-ish rescale",
        f"use an input scale below {2.0**31 * 128 * 3 / 32768:g}")
    return dict(in_zp=in_zp, out_zp=out_zp, out_mult=downscale_multiplier16(out_mult),
                out_exp=out_exp, reluish_mult=downscale_multiplier16(reluish_mult),
                reluish_exp=reluish_exp)


def hard_swish(x: np.ndarray, *, in_zp: int, out_zp: int, out_mult: int, out_exp: int,
               reluish_mult: int, reluish_exp: int) -> np.ndarray:
    """TFLite int8 ``HARD_SWISH``: ``reference_ops::HardSwish``
    (``kernels/internal/reference/hard_swish.h``), in int16 fixed point, elementwise::

        hires   = (x - in_zp) * 2**7
        pre_out = SRDHM16(hires, out_mult)
        r       = hires, times 2**(reluish_exp - 1) saturating (if reluish_exp > 0)
        r       = SRDHM16(r, reluish_mult)
        r       = r times 2 saturating (reluish_exp > 0) or RDBPOT16(r, -reluish_exp) (< 0)
        r       = (r + 2**15) >> 1                       (the "relu-ish" factor in [0, 1))
        y       = clamp(wrap16(RDBPOT16(SDHM16(r, pre_out), -out_exp) + out_zp), -128, 127)

    ``SRDHM16``, ``SDHM16`` (no rounding), ``RDBPOT16`` are ``numerics.srdhm16``,
    ``saturating_doubling_high_mul16``, ``rounding_divide_by_pot16`` (whose int16 mask makes
    exponents above 15 give +-1); ``wrap16`` is the C++ int16 addition's wrap.
    """
    hires = (np.asarray(x, np.int64) - in_zp) * (1 << 7)
    pre_out = srdhm16(hires, out_mult)
    reluish = hires
    if reluish_exp > 0:
        reluish = saturating_left_shift16(reluish, reluish_exp - 1)
    reluish = srdhm16(reluish, reluish_mult)
    if reluish_exp > 0:
        reluish = saturating_left_shift16(reluish, 1)
    elif reluish_exp < 0:
        reluish = rounding_divide_by_pot16(reluish, -reluish_exp)
    reluish = (reluish + (1 << 15)) >> 1
    out = rounding_divide_by_pot16(saturating_doubling_high_mul16(reluish, pre_out), -out_exp)
    return np.clip(wrap_int16(out + out_zp), -128, 127).astype(np.int8)


@functools.cache
def _libm() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("m"))


@functools.cache
def _c_float_function(name: str):
    """The C library's ``float f(float)`` ``name`` (``expf``, ``tanhf``): LiteRT calls these,
    and NumPy's own float32 ``exp`` and ``tanh`` differ from glibc's in the last bit for about
    a third of random inputs (NumPy 2.4, x86-64), enough to change a table entry now and
    then (tests/test_reference_ops.py has such quantizations)."""
    fn = getattr(_libm(), name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def _sigmoid_f32(v: np.ndarray) -> np.ndarray:
    expf = _c_float_function("expf")
    e = np.array([expf(float(t)) for t in -v], np.float32)
    return _f32(1.0) / (_f32(1.0) + e)


def _tanh_f32(v: np.ndarray) -> np.ndarray:
    tanhf = _c_float_function("tanhf")
    return np.array([tanhf(float(t)) for t in v], np.float32)


#: The float32 function of each table op, as ``kernels/activations.cc`` passes it to
#: ``LUTPopulate``.
_TABLE_FUNCTIONS = {"LOGISTIC": _sigmoid_f32, "TANH": _tanh_f32}

#: The int8 value at each index ``i`` of a 256-entry table: the value whose byte is ``i``.
_INT8_AT_INDEX = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8)


def activation_table(opcode: str, s_in: float, in_zp: int, s_out: float,
                     out_zp: int) -> np.ndarray:
    """The int8 LOGISTIC or TANH table, ``int8[256]`` indexed by ``v & 255`` for the int8
    input ``v``: ``LUTPopulate<int8_t>`` (``kernels/internal/common.h``), which
    ``kernels/activations.cc`` ``SigmoidPrepare`` / ``TanhPrepare`` build for ``kReference``
    (``BUILTIN_REF`` evaluates int8 LOGISTIC and TANH by this lookup, not in fixed point). In
    float32, with the C library's ``expf`` / ``tanhf``::

        d = float32(s_in) * float32(v - in_zp)
        t = 1.0f / (1.0f + expf(-d))    (LOGISTIC)   or   tanhf(d)    (TANH)
        y = clamp(int32(roundf(t * (1.0f / s_out)) + float32(out_zp)), -128, 127)

    ``roundf`` rounds half away from zero; ``int32()`` of a float beyond int32 is INT32_MIN
    (x86 ``cvttss2si``).
    """
    if opcode not in _TABLE_FUNCTIONS:
        raise ValueError(f"'opcode' must be one of {', '.join(_TABLE_FUNCTIONS)}, not "
                         f"{opcode!r}")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d = _f32(s_in) * (_INT8_AT_INDEX.astype(np.int64) - in_zp).astype(np.float32)
        t = _TABLE_FUNCTIONS[opcode](d)
        rescaled = round_half_away(t * (_f32(1.0) / _f32(s_out))).astype(np.float32)
        q = _float_to_int32(rescaled + _f32(out_zp))
    return np.clip(q, -128, 127).astype(np.int8)


def table_lookup(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[x & 255]`` for int8 ``x``: a 256-entry table (``activation_table``,
    ``unary_table``) applied elementwise, as ``LUTLookup`` does."""
    return table[np.asarray(x, np.int64) & 255]


def leaky_relu_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of an int8 LEAKY_RELU, as ``kernels/activations.cc``
    ``LeakyReluPrepare`` computes them, in float32::

        (mult_alpha, shift_alpha)       = QuantizeMultiplier(s_in * alpha / s_out)
        (mult_identity, shift_identity) = QuantizeMultiplier(s_in / s_out)

    A negative ``alpha`` gives a negative ``mult_alpha``; a factor of 2**31 or more raises
    ``UnsupportedModelError`` (LiteRT's shift would be undefined). Returns ``dict(in_zp,
    out_zp, mult_identity, shift_identity, mult_alpha, shift_alpha)``.
    """
    s_in, in_zp, s_out, out_zp = _unary_quant(graph, op)
    alpha = float(op.options.get("alpha", 0.0))
    with np.errstate(over="ignore", under="ignore"):
        alpha_real = _f32(s_in) * _f32(alpha) / _f32(s_out)
        identity_real = _f32(s_in) / _f32(s_out)
    mult_alpha, shift_alpha = _multiplier(alpha_real, op, "alpha rescale")
    mult_identity, shift_identity = _multiplier(identity_real, op, "rescale")
    return dict(in_zp=in_zp, out_zp=out_zp, mult_identity=mult_identity,
                shift_identity=shift_identity, mult_alpha=mult_alpha, shift_alpha=shift_alpha)


def leaky_relu(x: np.ndarray, *, in_zp: int, out_zp: int, mult_identity: int,
               shift_identity: int, mult_alpha: int, shift_alpha: int) -> np.ndarray:
    """TFLite int8 ``LEAKY_RELU``: ``reference_ops::QuantizeLeakyRelu``
    (``kernels/internal/reference/leaky_relu.h``), with ``v = x - in_zp``::

        y = clamp(out_zp + MBQM(v, mult_identity, shift_identity), -128, 127)     (v >= 0)
        y = clamp(out_zp + sign(mult_alpha) * MBQM(v, |mult_alpha|, shift_alpha),
                  -128, 127)                                                     (v < 0)

    A negative alpha is applied as the negation of the positive one's product (not the same
    as ``MBQM`` with the negative multiplier: SRDHM rounds ties upward).
    """
    v = np.asarray(x, np.int64) - in_zp
    identity = multiply_by_quantized_multiplier(v, mult_identity, shift_identity)
    scaled = multiply_by_quantized_multiplier(v, abs(mult_alpha), shift_alpha)
    out = np.where(v >= 0, identity, -scaled if mult_alpha < 0 else scaled)
    return np.clip(wrap_int32(out + out_zp), -128, 127).astype(np.int8)


#: The clamp of each standalone ReLU op as ``kernels/activations.cc`` passes it to
#: ``QuantizedReluX`` (``None``: no upper bound).
_RELU_BOUNDS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def relu_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of an int8 RELU, RELU6 or RELU_N1_TO_1, as ``kernels/activations.cc``
    ``ReluPrepare`` and ``QuantizedReluX`` compute them, in float32: ``(mult, shift) =
    QuantizeMultiplier(s_in / s_out)`` and, for the bounds ``lo``, ``hi`` of the op (0 and
    none, 0 and 6, -1 and 1)::

        act_min = max(-128, wrap32(out_zp + int32(roundf(lo / s_out))))
        act_max = 127 (RELU) or min(127, wrap32(out_zp + int32(roundf(hi / s_out))))

    Unlike a fused activation (``fused_activation_range``), LiteRT accepts bounds beyond int32:
    ``int32()`` gives INT32_MIN (x86 ``cvttss2si``) and the sum wraps, as here. A rescale
    ``s_in / s_out`` of 2**31 or more raises ``UnsupportedModelError`` (LiteRT's shift would be
    undefined). Returns ``dict(in_zp, mult, shift, out_zp, act_min, act_max)``.
    """
    s_in, in_zp, s_out, out_zp = _unary_quant(graph, op)
    lo, hi = _RELU_BOUNDS[op.opcode]
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        mult, shift = _multiplier(_f32(s_in) / _f32(s_out), op, "rescale")

        def bound(v: float) -> int:
            return int(wrap_int32(out_zp + _float_to_int32(round_half_away(
                _f32(v) / _f32(s_out)))))

        act_min = max(-128, bound(lo))
        act_max = 127 if hi is None else min(127, bound(hi))
    return dict(in_zp=in_zp, mult=mult, shift=shift, out_zp=out_zp, act_min=act_min,
                act_max=act_max)


def relu_x(x: np.ndarray, *, in_zp: int, mult: int, shift: int, out_zp: int, act_min: int,
           act_max: int) -> np.ndarray:
    """TFLite int8 ``RELU`` / ``RELU6`` / ``RELU_N1_TO_1``: ``reference_ops::ReluX``
    (``kernels/internal/reference/reference_ops.h``, the ``ReluParams`` overload), which
    requantizes, elementwise::

        y = int8(min(max(wrap32(MBQM(x - in_zp, mult, shift) + out_zp), act_min), act_max))

    ``int8()`` keeps the low byte: it matters only when a wrapped bound lies outside int8.
    """
    v = multiply_by_quantized_multiplier(np.asarray(x, np.int64) - in_zp, mult, shift)
    out = np.minimum(np.maximum(wrap_int32(v + out_zp), act_min), act_max)
    return out.astype(np.int8)


def mul_quant_params(graph: Graph, op: Operator) -> dict:
    """Integer parameters of an int8 MUL, as ``kernels/mul.cc`` ``Prepare`` computes them:
    ``(mult, shift) = QuantizeMultiplier(s1 * s2 / s_out)`` in float32 (a factor of 2**31 or
    more raises ``UnsupportedModelError``: LiteRT's shift would be undefined), ``act_min,
    act_max`` from ``fused_activation_range``. Returns ``dict(in1_zp, in2_zp, mult, shift,
    out_zp, act_min, act_max)``.
    """
    (s1, zp1), (s2, zp2), (s_out, zp_out) = (
        _int8_quant(op, role, graph.tensor(name)) for role, name in
        (("input 1", op.inputs[0]), ("input 2", op.inputs[1]), ("output", op.outputs[0])))
    with np.errstate(over="ignore", under="ignore"):
        real = _f32(s1) * _f32(s2) / _f32(s_out)
    mult, shift = _multiplier(real, op, "rescale")
    act_min, act_max = fused_activation_range(op.options.get("activation", "NONE"), s_out,
                                              zp_out, f"MUL {op.index}")
    return dict(in1_zp=zp1, in2_zp=zp2, mult=mult, shift=shift, out_zp=zp_out,
                act_min=act_min, act_max=act_max)


def mul(x1: np.ndarray, x2: np.ndarray, *, in1_zp: int, in2_zp: int, mult: int, shift: int,
        out_zp: int, act_min: int, act_max: int) -> np.ndarray:
    """TFLite int8 ``MUL``: ``reference_integer_ops::MulElementwise``
    (``kernels/internal/reference/integer_ops/mul.h``) on every element, with NumPy
    broadcasting (``BroadcastMul6DSlow`` applies the same formula to broadcast operands)::

        y = clamp(wrap32(out_zp + MBQM((x1 - in1_zp) * (x2 - in2_zp), mult, shift)),
                  act_min, act_max)
    """
    prod = (np.asarray(x1, np.int64) - in1_zp) * (np.asarray(x2, np.int64) - in2_zp)
    out = wrap_int32(multiply_by_quantized_multiplier(prod, mult, shift) + out_zp)
    return np.clip(out, act_min, act_max).astype(np.int8)


# --------------------------------------------------------------------------------------------
# Operators of a graph: each returns the output with the batch dimension


def _constant(graph: Graph, op: Operator, k: int, role: str, dtypes) -> np.ndarray:
    if len(op.inputs) <= k or op.inputs[k] is None:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: the {role} input is missing")
    t = graph.tensor(op.inputs[k])
    if t.data is None or t.dtype not in dtypes:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: {role} {t.name!r} must be a "
                                    f"constant {'/'.join(dtypes)} tensor, is {t.dtype}"
                                    f"{'' if t.data is not None else ' (not constant)'}")
    return t.data


def _image(op: Operator, x: np.ndarray) -> np.ndarray:
    """``x`` as ``[H, W, C]``: operators on images take one NHWC image."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: input must be one NHWC image "
                                    f"[1, H, W, C], is {list(x.shape)}")
    return x[0]


def _op_conv(graph: Graph, op: Operator, inputs) -> np.ndarray:
    return _run_conv(graph, op, _image(op, inputs[0]))[None]


def _op_pad(graph: Graph, op: Operator, inputs) -> np.ndarray:
    x = inputs[0]
    _int8_quant(op, "input", graph.tensor(op.inputs[0]))
    y = graph.tensor(op.outputs[0])
    s_out, pad_value = _int8_quant(op, "output", y)
    paddings = _constant(graph, op, 1, "paddings", ("int32", "int64"))
    if paddings.shape != (x.ndim, 2) or np.any(paddings < 0):
        raise UnsupportedModelError(f"{op.opcode} {op.index}: paddings {paddings.tolist()} "
                                    f"must be {x.ndim} non-negative (before, after) pairs")
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] is not None:
        value = _constant(graph, op, 2, "constant_values", ("int8",))
        c = graph.tensor(op.inputs[2])
        if value.size != 1 or c.scale.size != 1 or c.zero_point.size != 1 or (
                float(c.scale[0]), int(c.zero_point[0])) != (s_out, pad_value):
            raise UnsupportedModelError(
                f"PADV2 {op.index}: constant_values {c.name!r} must be one int8 value "
                "quantized like the output")
        pad_value = int(value.reshape(-1)[0])
    return pad(x, paddings, pad_value)


def _check_broadcast(op: Operator, inputs) -> None:
    """The two inputs of a binary op broadcast (NumPy's rules, which TFLite's follow)."""
    try:
        np.broadcast_shapes(inputs[0].shape, inputs[1].shape)
    except ValueError:
        raise UnsupportedModelError(f"{op.opcode} {op.index}: input shapes "
                                    f"{list(inputs[0].shape)} and {list(inputs[1].shape)} do "
                                    "not broadcast") from None


def _op_add(graph: Graph, op: Operator, inputs) -> np.ndarray:
    _check_broadcast(op, inputs)
    return add(inputs[0], inputs[1], **add_quant_params(graph, op))


def _op_average_pool(graph: Graph, op: Operator, inputs) -> np.ndarray:
    """int8 AVERAGE_POOL_2D. ``kernels/pooling.cc`` only ``TFLITE_DCHECK``s that input and
    output quantization are equal (the converter makes them so), a check release builds such
    as LiteRT's drop: a model where they differ gets the raw integer mean, clamped by the
    output's activation range, as here."""
    x = _image(op, inputs[0])
    _int8_quant(op, "input", graph.tensor(op.inputs[0]))
    s_out, zp_out = _int8_quant(op, "output", graph.tensor(op.outputs[0]))
    o = op.options
    fh, fw, sh, sw = o["filter_h"], o["filter_w"], o["stride_h"], o["stride_w"]
    top, bottom, _ = padding_amounts(o["padding"], x.shape[0], fh, sh, 1)
    left, right, _ = padding_amounts(o["padding"], x.shape[1], fw, sw, 1)
    act_min, act_max = fused_activation_range(o.get("activation", "NONE"), s_out, zp_out,
                                              f"AVERAGE_POOL_2D {op.index}")
    return average_pool2d(x, filter_hw=(fh, fw), stride=(sh, sw),
                          padding=(top, bottom, left, right), act_min=act_min,
                          act_max=act_max)[None]


def _op_mean(graph: Graph, op: Operator, inputs) -> np.ndarray:
    x = inputs[0]
    s_in, in_zp = _int8_quant(op, "input", graph.tensor(op.inputs[0]))
    s_out, out_zp = _int8_quant(op, "output", graph.tensor(op.outputs[0]))
    axes = _constant(graph, op, 1, "axis", ("int32",)).reshape(-1).tolist()
    if not axes or any(not -x.ndim <= a < x.ndim for a in axes):
        raise UnsupportedModelError(f"MEAN {op.index}: axes {axes} are not dimensions of an "
                                    f"input of rank {x.ndim}")
    mult, shift = quantize_multiplier(s_in / s_out)
    return mean(x, axes, bool(op.options.get("keep_dims", False)), in_zp=in_zp, mult=mult,
                shift=shift, out_zp=out_zp)


def _op_fully_connected(graph: Graph, op: Operator, inputs) -> np.ndarray:
    """int8 FULLY_CONNECTED; the output shape follows ``UpdateOutputSize``
    (``kernels/fully_connected.cc``): ``keep_num_dims`` keeps the input's leading dimensions
    (and needs its last one to be the weights' depth), else ``[rows, units]``."""
    p = fully_connected_params(graph, op)
    x = inputs[0]
    units, depth = p["w"].shape
    keep = op.options.get("keep_num_dims", False)
    if keep and x.shape[-1] != depth:
        raise UnsupportedModelError(f"FULLY_CONNECTED {op.index}: keep_num_dims needs the "
                                    f"input's last dimension ({x.shape[-1]}) to equal the "
                                    f"weights' depth {depth}")
    y = fully_connected(x, **p)
    return y.reshape(*x.shape[:-1], units) if keep else y


def _op_reshape(graph: Graph, op: Operator, inputs) -> np.ndarray:
    shape = graph.tensor(op.outputs[0]).shape
    if int(np.prod(shape, dtype=np.int64)) != inputs[0].size:
        raise UnsupportedModelError(f"RESHAPE {op.index}: cannot reshape "
                                    f"{list(inputs[0].shape)} to {list(shape)}")
    return inputs[0].reshape(shape)


def _op_quantize(graph: Graph, op: Operator, inputs) -> np.ndarray:
    s_in, in_zp = _int8_quant(op, "input", graph.tensor(op.inputs[0]))
    s_out, out_zp = _int8_quant(op, "output", graph.tensor(op.outputs[0]))
    mult, shift = quantize_multiplier(s_in / s_out)
    return quantize(inputs[0], in_zp=in_zp, mult=mult, shift=shift, out_zp=out_zp)


def _op_hard_swish(graph: Graph, op: Operator, inputs) -> np.ndarray:
    return hard_swish(inputs[0], **hard_swish_params(graph, op))


def _op_table(graph: Graph, op: Operator, inputs) -> np.ndarray:
    """int8 LOGISTIC / TANH by their ``activation_table``. ``SigmoidPrepare`` refuses an int8
    LOGISTIC whose output scale is not exactly 1/256 (it does not check the zero point, -128
    by convention, under ``BUILTIN_REF``); ``TanhPrepare`` checks no output quantization."""
    s_in, in_zp, s_out, out_zp = _unary_quant(graph, op)
    if op.opcode == "LOGISTIC" and s_out != 1.0 / 256:
        raise UnsupportedModelError(f"LOGISTIC {op.index}: output scale {s_out!r} must be "
                                    "exactly 1/256 (LiteRT refuses other output scales)")
    return table_lookup(inputs[0], activation_table(op.opcode, s_in, in_zp, s_out, out_zp))


def _op_leaky_relu(graph: Graph, op: Operator, inputs) -> np.ndarray:
    return leaky_relu(inputs[0], **leaky_relu_params(graph, op))


def _op_relu(graph: Graph, op: Operator, inputs) -> np.ndarray:
    return relu_x(inputs[0], **relu_params(graph, op))


def _op_mul(graph: Graph, op: Operator, inputs) -> np.ndarray:
    _check_broadcast(op, inputs)
    return mul(inputs[0], inputs[1], **mul_quant_params(graph, op))


#: Per op: the kernel and how many leading inputs it takes as arrays (computed tensors or
#: constants); it reads the others (weights, paddings, axes) from the graph.
_KERNELS = {
    "ADD": (_op_add, 2), "AVERAGE_POOL_2D": (_op_average_pool, 1), "CONV_2D": (_op_conv, 1),
    "DEPTHWISE_CONV_2D": (_op_conv, 1), "FULLY_CONNECTED": (_op_fully_connected, 1),
    "HARD_SWISH": (_op_hard_swish, 1), "LEAKY_RELU": (_op_leaky_relu, 1),
    "LOGISTIC": (_op_table, 1), "MEAN": (_op_mean, 1), "MUL": (_op_mul, 2),
    "PAD": (_op_pad, 1), "PADV2": (_op_pad, 1), "QUANTIZE": (_op_quantize, 1),
    "RELU": (_op_relu, 1), "RELU6": (_op_relu, 1), "RELU_N1_TO_1": (_op_relu, 1),
    "RESHAPE": (_op_reshape, 1), "TANH": (_op_table, 1),
}
#: The builtin operators ``run_graph`` executes.
SUPPORTED_OPS = tuple(sorted(_KERNELS))
#: The int8 -> int8 elementwise operators ``unary_table`` tabulates.
UNARY_OPS = ("HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "QUANTIZE", "RELU", "RELU6",
             "RELU_N1_TO_1", "TANH")


def unary_table(graph: Graph, op: Operator) -> np.ndarray:
    """The int8 -> int8 elementwise operator ``op`` (one of ``UNARY_OPS``) as a lookup table:
    ``int8[256]`` whose entry ``i`` is the output for the int8 input whose byte is ``i``
    (``i`` for ``i < 128``, ``i - 256`` above), so ``y = table[x & 255]``
    (``table_lookup``): the order of LiteRT's own int8 tables, and the raw byte addresses a
    hardware table. Computed by running the operator's kernel on all 256 inputs, so it raises
    the kernel's ``UnsupportedModelError`` for a model LiteRT refuses.
    """
    if op.opcode not in UNARY_OPS:
        raise UnsupportedModelError(f"{op.opcode} {op.index} is not an int8 -> int8 "
                                    f"elementwise operator; tables exist for "
                                    f"{', '.join(UNARY_OPS)}")
    y = _KERNELS[op.opcode][0](graph, op, [_INT8_AT_INDEX.copy()])
    return np.asarray(y, np.int8).reshape(256)


def run_graph(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Execute ``graph`` on the int8 input ``x`` (shape of ``graph.input``, batch 1) and return
    its first output.

    Operators run in a dependency order, each once its inputs are known (the graph input,
    constants, outputs of operators already run), so a tensor may feed several operators
    (a residual ADD reading a block's input) and the model's operator order does not matter.
    Every computed shape is checked against the model's.

    Raises
    ------
    UnsupportedModelError
        An operator outside ``SUPPORTED_OPS`` (named with its index), unsupported parameters, or
        an input no operator produces.
    """
    x = np.asarray(x)
    if x.dtype != np.int8 or x.shape != graph.input.shape:
        raise ValueError(f"input must be int8{list(graph.input.shape)}, "
                         f"not {x.dtype}{list(x.shape)}")
    for op in graph.operators:
        if op.opcode not in _KERNELS:
            raise UnsupportedModelError(
                f"reference cannot run {op.opcode} (operator {op.index}); it runs "
                f"{', '.join(SUPPORTED_OPS)}")
    values = {graph.inputs[0]: x}
    values.update((name, t.data) for name, t in graph.tensors.items() if t.is_constant)
    pending = list(graph.operators)
    while pending:
        op = next((op for op in pending if all(
            name in values for name in op.inputs[:_KERNELS[op.opcode][1]])), None)
        if op is None:
            op = pending[0]
            name = next(n for n in op.inputs[:_KERNELS[op.opcode][1]] if n not in values)
            raise UnsupportedModelError(
                f"{op.opcode} {op.index}: input {name!r} is neither the graph input, a "
                "constant nor computed by another operator (or the operators form a cycle)")
        pending.remove(op)
        kernel, n_activations = _KERNELS[op.opcode]
        y = kernel(graph, op, [values[name] for name in op.inputs[:n_activations]])
        expected = graph.tensor(op.outputs[0]).shape
        if y.shape != expected:
            raise UnsupportedModelError(f"{op.opcode} {op.index}: computed output shape "
                                        f"{list(y.shape)}, the model says {list(expected)}")
        values[op.outputs[0]] = y
    if graph.outputs[0] not in values:
        raise UnsupportedModelError(f"graph output {graph.outputs[0]!r} is not computed by any "
                                    "operator")
    return values[graph.outputs[0]]
