"""Image front end: torchvision-equivalent preprocessing, input quantization, labels, sample
photos, and the preprocessing a quantized model records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dwsep.host import imagenet, quantizer
from dwsep.host.tflite_writer import LayerSpec, ModelBuilder, dwsep_layer_model

#: torchvision 0.28.0 ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``,
#: ``Normalize(ImageNet mean, std)`` of ``grace_hopper.jpg`` (PIL 12): the float64 sum of the
#: ``[1, 3, 224, 224]`` tensor and three pixels (all channels) at (row, column).
TORCHVISION_SUM = -74468.95353517961
TORCHVISION_PIXELS = {
    (0, 0): [0.9988012909889221, 0.8879552483558655, 0.9319391846656799],
    (111, 57): [1.7009161710739136, 0.5203081965446472, -0.6192591786384583],
    (223, 223): [-1.8610327243804932, -1.7731091976165771, -1.3687145709991455],
}
SKIMAGE_PHOTOS = {"astronaut", "chelsea", "coffee", "hubble_deep_field", "motorcycle_left",
                  "retina", "rocket"}


def test_preprocess_matches_torchvision():
    x = imagenet.preprocess(imagenet.sample_images()["grace_hopper"])
    assert x.dtype == np.float32 and x.shape == (1, 224, 224, 3)
    for (row, col), want in TORCHVISION_PIXELS.items():
        np.testing.assert_array_equal(x[0, row, col], np.float32(want))
    assert x.astype(np.float64).sum() == pytest.approx(TORCHVISION_SUM, abs=1e-6)


@pytest.mark.parametrize("h,w", [(300, 400), (400, 300), (256, 256), (100, 50)])
def test_preprocess_geometry(h, w):
    """A constant photo normalizes to ``(v / 255 - mean) / std`` everywhere, whatever its
    aspect; one bright row lands where torchvision's resize and crop put it: row centre
    ``(r + 0.5) * H' / H - 0.5 - top`` with ``H'`` the resized height and ``top =
    round((H' - 224) / 2)``, within a row (bilinear blur)."""
    rgb = np.full((h, w, 3), (10, 128, 250), np.uint8)
    x = imagenet.preprocess(rgb)
    want = (np.float32([10, 128, 250]) / np.float32(255) - np.float32(imagenet.IMAGENET_MEAN)
            ) / np.float32(imagenet.IMAGENET_STD)
    np.testing.assert_allclose(x[0], np.broadcast_to(want, (224, 224, 3)), atol=1e-6)
    rgb[h // 2] = 255
    new_h = 256 if h <= w else int(256 * h / w)
    centre = (h // 2 + 0.5) * new_h / h - 0.5 - round((new_h - 224) / 2)
    rows = np.flatnonzero(imagenet.preprocess(rgb)[0, :, 112, 0] > want[0] + 0.1)
    assert rows.size and abs(rows.mean() - centre) <= 1.0, (rows, centre)


def test_preprocessing_sizes():
    assert imagenet.Preprocessing.for_size(160).resize == 183
    assert imagenet.preprocess(np.zeros((90, 120, 3), np.uint8),
                               imagenet.Preprocessing.for_size(96)).shape == (1, 96, 96, 3)
    with pytest.raises(ValueError, match=r"'resize' \(100\) must be at least 'input_size'"):
        imagenet.Preprocessing(input_size=224, resize=100)
    with pytest.raises(ValueError, match=r"image must be uint8 RGB \[H, W, 3\], not float64"):
        imagenet.preprocess(np.zeros((10, 10, 3)))


def test_quantize_input_rounds_half_away_and_clamps():
    zp = 3
    # Exact halves in float64 (x / scale lands on .5 only up to rounding: use scale 0.5).
    scale = 0.5
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.49, -2.51, 1000.0, -1000.0]) * scale
    np.testing.assert_array_equal(imagenet.quantize_input(x, scale, zp),
                                  [1 + zp, -1 + zp, 2 + zp, -2 + zp, 2 + zp, -3 + zp, 127, -128])


def test_labels_and_top_k():
    names = imagenet.labels()
    assert len(names) == 1000
    assert (names[0], names[652], names[504]) == ("tench", "military uniform", "coffee mug")
    assert imagenet.top_k(np.array([[3, 7, 7, -1, 7]], np.int8), 4) == [1, 2, 4, 0]


def test_sample_images():
    found = imagenet.sample_images()
    assert {"grace_hopper", *SKIMAGE_PHOTOS} == set(found)
    for name, path in found.items():
        rgb = imagenet.load_image(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
        assert min(rgb.shape[:2]) >= 224, name


def test_model_preprocessing_round_trip():
    rng = np.random.default_rng(11)
    photos = [rng.integers(0, 256, (40, 50, 3), np.uint8) for _ in range(2)]
    model = quantizer.quantize("mobilenet_v1", None, photos, width=0.25, input_size=32)
    pre = imagenet.model_preprocessing(model)
    assert (pre.input_size, pre.resize) == (32, 37)
    x = imagenet.image_to_input(photos[0], model)
    assert x.dtype == np.int8 and x.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(
        x, imagenet.quantize_input(imagenet.preprocess(photos[0], pre), pre.scale,
                                   pre.zero_point))


def _tiny_model(description: str, scale: float = 0.5, zero_point: int = 1) -> bytes:
    mb = ModelBuilder(description)
    x = mb.add_tensor("input", (1, 8, 8, 3), "int8", scale, zero_point)
    mb.inputs = mb.outputs = [x]
    return mb.finish()


def test_model_preprocessing_errors():
    spec = LayerSpec(8, 8, 3, 1, 3, 1, 1, "SAME", "NONE", 4, "NONE", seed=0)
    with pytest.raises(ValueError, match="holds no image preprocessing"):
        imagenet.model_preprocessing(dwsep_layer_model(spec))
    pre = imagenet.Preprocessing(input_size=8, resize=9, scale=0.25, zero_point=1)
    tampered = _tiny_model(json.dumps({"preprocessing": pre.to_dict()}))
    with pytest.raises(ValueError, match="preprocessing says input scale 0.25 zero point 1, "
                                         "the input tensor has 0.5 and 1"):
        imagenet.model_preprocessing(tampered)
    good = _tiny_model(json.dumps({"preprocessing": {**pre.to_dict(), "scale": 0.5}}))
    assert imagenet.model_preprocessing(good).scale == 0.5
    wrong_size = _tiny_model(json.dumps({"preprocessing": {**pre.to_dict(), "input_size": 7,
                                                           "scale": 0.5}}))
    with pytest.raises(ValueError, match=r"input tensor \[1, 8, 8, 3\] is not"):
        imagenet.model_preprocessing(wrong_size)
