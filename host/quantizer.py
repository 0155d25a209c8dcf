"""Post-training quantization of a float MobileNet (``host.mobilenet``) to a fully-int8
``.tflite``.

The model has int8 input and output tensors (no QUANTIZE/DEQUANTIZE) and only these ops:
PAD, CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED.

- Weights: per output channel, symmetric int8, ``s_w[c] = max|w[c]| / 127``,
  ``q = round(w / s_w[c])`` in [-127, 127], zero point 0; ``quantized_dimension`` 0 for
  CONV_2D ``[O, kh, kw, I]`` and FULLY_CONNECTED ``[O, I]``, 3 for DEPTHWISE_CONV_2D
  ``[1, kh, kw, C]``. ``s_w[c]`` is raised where needed so the bias fits int32.
- Bias: int32, ``round(b[c] / (s_in * s_w[c]))``, scale ``s_in * s_w[c]``, zero point 0.
- Activations: asymmetric int8 from the min/max over the calibration images of the float
  network (``host.mobilenet.Network.forward``) at that tensor, the range widened to include
  0: ``scale = (max - min) / 255``, ``zero_point = round(-128 - min / scale)``. A ReLU6
  output's range is thus within [0, 6]; the activation stays fused (``RELU6``).
- Padding as PyTorch's: stride-1 3x3 convolutions use SAME (pads (1, 1), as PyTorch); stride-2
  ones an explicit ``PAD [[0,0],[1,1],[1,1],[0,0]]`` (output quantized as its input, so it
  pads with the zero point) before a VALID convolution, because TFLite SAME would pad (0, 1).
- Residual: int8 ADD of the block input and the projection, output range calibrated.
- Head: global average pool as AVERAGE_POOL_2D over the whole final map (VALID, stride 1):
  int8 average pooling keeps its input's quantization on its output and is one integer sum
  and rounded division, where int8 MEAN would add a requantization (and LiteRT has several
  MEAN code paths); RESHAPE ``[1, 1, 1, C]`` -> ``[1, C]``; FULLY_CONNECTED to int8 logits.

The image preprocessing (``host.imagenet.Preprocessing``, including the input scale and zero
point) is stored as JSON in the model's ``description``, with the architecture and the
number of calibration images.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable

import numpy as np

from . import mobilenet
from .imagenet import Preprocessing, preprocess
from .tflite_writer import ModelBuilder

__all__ = ["quantize", "Ranges", "activation_quant", "weight_quant"]

#: Smallest calibrated range: a tensor that is constant over the calibration set still needs a
#: positive scale.
_MIN_SPAN = 1e-6
#: Largest |bias| in units of its scale: a margin below int32's limit.
_BIAS_LIMIT = 2**31 - 2**16


class Ranges:
    """Running min/max of every observed tensor (an observer for ``Network.forward``, called
    once per tensor per calibration image), and how well the images agree on them: see
    ``held_out_saturation``."""

    def __init__(self):
        self.bounds: dict[str, tuple[float, float]] = {}
        self._high: dict[str, _HeldOutMax] = {}
        self._low: dict[str, _HeldOutMax] = {}
        self._values = 0

    def __call__(self, name: str, y: np.ndarray) -> None:
        lo, hi = float(y.min()), float(y.max())
        if name in self.bounds:
            lo, hi = min(lo, self.bounds[name][0]), max(hi, self.bounds[name][1])
        self.bounds[name] = (lo, hi)
        flat = np.asarray(y, np.float32).ravel()
        self._high.setdefault(name, _HeldOutMax()).add(flat)
        self._low.setdefault(name, _HeldOutMax()).add(-flat)
        self._values += flat.size

    def quant(self, name: str) -> tuple[float, int]:
        return activation_quant(*self.bounds[name])

    def held_out_saturation(self) -> tuple[float, str, float] | None:
        """Leave one out: the share of all calibration activation values that lie outside
        the range (widened to include 0, as ``activation_quant`` does) calibrated on the
        *other* images, so that a model calibrated without that image would saturate them;
        with the tensor where the share is largest and its share. ``None`` below two images.

        An estimate of how often a new photo saturates: near 0 when the images agree
        (measured on MobileNetV2 with the 8 sample photos: 0.0066 %), large when one image
        is unlike the rest. Exact, in one pass: only the image holding a tensor's maximum
        can exceed the other images' maximum, so only its values above the runner-up are
        kept (``_HeldOutMax``), and likewise for the minimum."""
        if not self._high or min(t.images for t in self._high.values()) < 2:
            return None
        outside = {name: self._high[name].outside() + self._low[name].outside()
                   for name in self._high}
        worst = max(outside, key=lambda n: outside[n] / self._high[n].values)
        return (sum(outside.values()) / self._values, worst,
                outside[worst] / self._high[worst].values)


class _HeldOutMax:
    """One tensor's maximum over the images seen, the largest maximum of the *other* images
    (``runner``), and the values of the image holding the maximum above ``runner``."""

    def __init__(self):
        self.best = self.runner = -np.inf
        self.kept = np.empty(0, np.float32)
        self.images = self.values = 0

    def add(self, y: np.ndarray) -> None:
        m = float(y.max())
        if m > self.best:
            self.runner, self.best = self.best, m
            self.kept = y[y > self.runner]
        elif m > self.runner:
            self.runner = m
            self.kept = self.kept[self.kept > m]
        self.images += 1
        self.values += y.size

    def outside(self) -> int:
        """Values of the holder above ``max(runner, 0)``: the range widened to 0."""
        return int(np.count_nonzero(self.kept > max(self.runner, 0.0)))


def activation_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` covering ``[min(lo, 0), max(hi, 0)]``:
    ``scale = (hi - lo) / 255`` (as float32, what the file stores), ``zero_point =
    clamp(round(-128 - lo / scale), -128, 127)``, so 0.0 is exactly representable."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    hi = max(hi, lo + _MIN_SPAN)
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def weight_quant(w: np.ndarray, bias: np.ndarray, s_in: float,
                 axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 weights and int32 bias: ``(q_w, s_w, q_b)``.

    ``s_w[c] = max(max|w[c]| / 127, |b[c]| / (s_in * LIMIT))`` (the second term keeps
    ``q_b`` inside int32 where batch norm left a channel with tiny weights and a large bias;
    1.0 for an all-zero channel), ``q_w = clip(round(w / s_w[c]), -127, 127)``,
    ``q_b = round(b / (s_in * s_w[c]))``, both computed with the float32 scales stored.
    """
    w = np.asarray(w, np.float64)
    other = tuple(i for i in range(w.ndim) if i != axis)
    s_w = np.maximum(np.abs(w).max(axis=other) / 127.0,
                     np.abs(bias.astype(np.float64)) / (s_in * _BIAS_LIMIT))
    s_w = np.where(s_w > 0, s_w, 1.0).astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    q_w = np.clip(np.round(w / s_w.reshape(shape)), -127, 127).astype(np.int8)
    bias_scale = (np.float32(s_in) * s_w.astype(np.float32)).astype(np.float64)
    q_b = np.round(bias.astype(np.float64) / bias_scale).astype(np.int32)
    return q_w, s_w, q_b


def quantize(arch: str, state_dict: dict[str, np.ndarray] | None,
             calibration_images: Iterable, *, width: float = 1.0,
             input_size: int | tuple[int, int] = 224,
             seed: int = 0, ranges: Ranges | None = None) -> bytes:
    """Quantize ``arch`` (one of ``host.mobilenet.ARCHS``) to the bytes of an int8
    ``.tflite``.

    ``state_dict``: float weights named as ``host.mobilenet.build`` expects (a torchvision
    checkpoint read by ``host.checkpoint.load_state_dict`` for V2), or ``None`` for random
    weights drawn from ``seed``. ``calibration_images``: an iterable of photos (paths, or
    uint8 RGB ``[H, W, 3]`` arrays), each preprocessed as ``host.imagenet.preprocess`` does
    at ``input_size`` (a side, or ``(height, width)``); it is consumed once (wrap it in a
    progress bar to show progress).
    ``ranges``: the observer to fill (pass one to read ``held_out_saturation`` after), or a
    new one.
    """
    if state_dict is None:
        state_dict = mobilenet.random_state_dict(arch, width, seed)
    net = mobilenet.build(arch, state_dict, width)
    pre = Preprocessing.for_size(*((input_size,) if isinstance(input_size, int)
                                   else input_size))
    ranges = Ranges() if ranges is None else ranges
    count = 0
    for image in calibration_images:
        x = preprocess(image, pre)
        ranges("input", x)
        net.forward(x, ranges)
        count += 1
    if count == 0:
        raise ValueError("quantization needs at least one calibration image")
    return _TfliteEmitter(net, ranges, pre, count).emit()


class _TfliteEmitter:
    """Writes the int8 graph of ``net`` layer by layer, tracking the current tensor."""

    def __init__(self, net: mobilenet.Network, ranges: Ranges, pre: Preprocessing,
                 count: int):
        self.net, self.ranges = net, ranges
        scale, zp = ranges.quant("input")
        pre = dataclasses.replace(pre, scale=scale, zero_point=zp)
        description = dict(generator="dwsep quantize", arch=net.arch, width=net.width,
                           calibration_images=count, preprocessing=pre.to_dict())
        self.mb = ModelBuilder(json.dumps(description))
        h, w = pre.input_hw
        self.x = self.mb.add_tensor("input", (1, h, w, 3), "int8", scale, zp)
        self.shape = (1, h, w, 3)
        self.quant = (scale, zp)
        self.mb.inputs = [self.x]

    def emit(self) -> bytes:
        for layer in self.net.layers:
            if isinstance(layer, mobilenet.Conv):
                self._conv(layer)
            elif isinstance(layer, mobilenet.Residual):
                self._residual(layer)
            elif isinstance(layer, mobilenet.GlobalAvgPool):
                self._global_pool(layer)
            else:
                self._linear(layer)
        self.mb.outputs = [self.x]
        return self.mb.finish()

    def _activation(self, name: str, shape, quant: tuple[float, int]) -> int:
        self.shape, self.quant = tuple(shape), quant
        self.x = self.mb.add_tensor(name, shape, "int8", *quant)
        return self.x

    def _conv(self, conv: mobilenet.Conv) -> None:
        _, h, w, c = self.shape
        x, (s_in, _) = self.x, self.quant
        p = conv.padding
        if p and conv.stride > 1:
            paddings = self.mb.add_tensor(f"{conv.name}/paddings", (4, 2), "int32",
                                          data=np.array([[0, 0], [p, p], [p, p], [0, 0]]))
            padded = self._activation(f"{conv.name}/pad", (1, h + 2 * p, w + 2 * p, c),
                                      self.quant)
            self.mb.add_operator("PAD", [x, paddings], [padded])
            x, padding = padded, "VALID"
        else:
            # Stride 1, odd kernel: SAME pads d * (k // 2) on each side, as PyTorch does.
            padding = "SAME" if p else "VALID"
        if conv.depthwise:
            opcode, axis = "DEPTHWISE_CONV_2D", 3
            weight = conv.weight.transpose(3, 1, 2, 0)  # [C, k, k, 1] -> [1, k, k, C]
            options = dict(depth_multiplier=1)
        else:
            opcode, axis, weight, options = "CONV_2D", 0, conv.weight, {}
        q_w, s_w, q_b = weight_quant(weight, conv.bias, s_in, axis)
        w_t = self.mb.add_tensor(f"{conv.name}/weights", q_w.shape, "int8", s_w, 0, axis, q_w)
        b_t = self.mb.add_tensor(f"{conv.name}/bias", q_b.shape, "int32",
                                 np.float32(s_in) * s_w.astype(np.float32), 0, 0, q_b)
        out_hw = conv.out_size(h), conv.out_size(w)
        y = self._activation(conv.name, (1, *out_hw, conv.out_channels),
                             self.ranges.quant(conv.name))
        if conv.dilation > 1:
            options.update(dilation_h=conv.dilation, dilation_w=conv.dilation)
        self.mb.add_operator(opcode, [x, w_t, b_t], [y], padding=padding, stride_h=conv.stride,
                             stride_w=conv.stride,
                             activation="RELU6" if conv.relu6 else "NONE", **options)

    def _residual(self, block: mobilenet.Residual) -> None:
        shortcut = self.x
        for conv in block.body:
            self._conv(conv)
        body = self.x
        y = self._activation(block.name, self.shape, self.ranges.quant(block.name))
        self.mb.add_operator("ADD", [shortcut, body], [y])

    def _global_pool(self, pool: mobilenet.GlobalAvgPool) -> None:
        _, h, w, c = self.shape
        x = self.x
        pooled = self._activation(f"{pool.name}/avg", (1, 1, 1, c), self.quant)
        self.mb.add_operator("AVERAGE_POOL_2D", [x], [pooled], filter_h=h, filter_w=w)
        shape = self.mb.add_tensor(f"{pool.name}/shape", (2,), "int32", data=np.array([1, c]))
        flat = self._activation(pool.name, (1, c), self.quant)
        self.mb.add_operator("RESHAPE", [pooled, shape], [flat], new_shape=[1, c])

    def _linear(self, fc: mobilenet.Linear) -> None:
        x, (s_in, _) = self.x, self.quant
        q_w, s_w, q_b = weight_quant(fc.weight, fc.bias, s_in, 0)
        w_t = self.mb.add_tensor(f"{fc.name}/weights", q_w.shape, "int8", s_w, 0, 0, q_w)
        b_t = self.mb.add_tensor(f"{fc.name}/bias", q_b.shape, "int32",
                                 np.float32(s_in) * s_w.astype(np.float32), 0, 0, q_b)
        y = self._activation(fc.name, (1, fc.weight.shape[0]), self.ranges.quant(fc.name))
        self.mb.add_operator("FULLY_CONNECTED", [x, w_t, b_t], [y])
