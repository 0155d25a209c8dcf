"""Checkpoint reader, float MobileNets and the int8 quantizer.

Oracles: synthetic checkpoints written here with the pickle module in torch's two formats
(no torch); torchvision's own logits for MobileNetV2 on ``grace_hopper.jpg`` (golden values
below); LiteRT ``BUILTIN_REF`` (``sim.oracle``) for the quantized models.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import sys
import time
import types
import zipfile

import numpy as np
import pytest
import tflite

from dwsep.host import imagenet, mobilenet, quantizer
from dwsep.host.checkpoint import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    STORAGE_DTYPES,
    CheckpointError,
    load_state_dict,
)
from dwsep.host.cli import main
from dwsep.host.tflite_reader import read_tflite
from dwsep.sim.oracle import litert_run

#: torchvision 0.28.0 (torch 2.13.0+cpu) ``mobilenet_v2`` with the weights of
#: ``mobilenet_v2-b0353104.pth`` on ``grace_hopper.jpg`` after ``Resize(256)``,
#: ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(ImageNet mean, std)``: the top-5 classes
#: and their logits. The classic "military uniform" (652) is second here; it is first only
#: when the whole photo is squashed to 224x224 without the centre crop.
TORCHVISION_TOP5 = [457, 652, 667, 834, 400]
TORCHVISION_LOGITS = [12.27663516998291, 11.237712860107422, 10.743766784667969,
                      10.124439239501953, 9.820752143859863]
#: Every op the quantizer may write.
ALLOWED_OPS = {"PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE",
               "FULLY_CONNECTED"}


# --------------------------------------------------------------------------------------------
# Synthetic checkpoints, written as torch.save does, through stand-in torch modules


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data
        self.type_name = next(n for n, d in STORAGE_DTYPES.items() if np.dtype(d) == data.dtype)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False,
                         collections.OrderedDict())


class _View:
    """A legacy-format view: elements ``[offset, offset + numel)`` of ``root``."""

    def __init__(self, key: str, root: _Storage, offset: int, numel: int):
        self.key, self.root, self.offset, self.numel = key, root, offset, numel


@pytest.fixture
def fake_torch(monkeypatch):
    """``torch`` and ``torch._utils`` modules with the globals a state dict pickles, so the
    pickle module writes the same opcodes as torch."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in STORAGE_DTYPES:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle(obj, torch, legacy: bool) -> bytes:
    def persistent_id(o):
        if isinstance(o, _Storage):
            pid = ("storage", getattr(torch, o.type_name), o.key, "cpu", o.data.size)
            return pid + (None,) if legacy else pid
        if isinstance(o, _View):
            return ("storage", getattr(torch, o.root.type_name), o.root.key, "cpu",
                    o.root.data.size, (o.key, o.offset, o.numel))
        return None

    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buf.getvalue()


def _write_legacy(path, obj, storages, torch):
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       dict(protocol_version=LEGACY_PROTOCOL, little_endian=True,
                            type_sizes=dict(short=2, int=4, long=4))):
            pickle.dump(header, f, protocol=2)
        f.write(_pickle(obj, torch, legacy=True))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(s.data.size.to_bytes(8, "little"))
            f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())


def _write_zip(path, obj, storages, torch):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle(obj, torch, legacy=False))
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.astype(s.data.dtype.newbyteorder("<"))
                       .tobytes())
        z.writestr("archive/version", "3\n")


def _random_checkpoint(seed: int, legacy: bool):
    """Random storages (every dtype) and tensors on them with random offsets, shapes and
    strides (transposed, sliced, scalar, empty, two tensors sharing a storage, legacy views),
    and the arrays each must read back as, computed element by element."""
    rng = np.random.default_rng(seed)
    storages, obj, expected = [], collections.OrderedDict(), {}
    for i, (_, dtype) in enumerate(STORAGE_DTYPES.items()):
        n = int(rng.integers(1, 80))
        data = (rng.normal(0, 100, n) if np.dtype(dtype).kind == "f" else
                rng.integers(0, 2, n) if np.dtype(dtype).kind == "b" else
                rng.integers(-100, 100, n) if np.dtype(dtype).kind == "i" else
                rng.integers(0, 255, n)).astype(dtype)
        storage = _Storage(f"{seed}{i:03d}", data)
        storages.append(storage)
        for j in range(2):
            ndim = int(rng.integers(0, 4))
            size = tuple(int(rng.integers(0 if j else 1, 4)) for _ in range(ndim))
            stride = tuple(int(rng.integers(0, 5)) for _ in range(ndim))
            span = sum((a - 1) * b for a, b in zip(size, stride, strict=True)) if all(
                size) else 0
            ref, base, flat = storage, 0, data
            if legacy and j == 1 and n > 2:
                start = int(rng.integers(0, n // 2))
                ref = _View(f"{storage.key}v", storage, start, n - start)
                base, flat = start, data[start:]
            if span >= flat.size:
                size = stride = ()
                span = 0
            offset = int(rng.integers(0, flat.size - span))
            name = f"t{i}_{j}"
            obj[name] = _Tensor(ref, offset, size, stride)
            want = np.zeros(size, data.dtype)
            for idx in np.ndindex(*size):
                want[idx] = data[base + offset + sum(a * b for a, b in zip(idx, stride,
                                                                           strict=True))]
            expected[name] = want
    return obj, storages, expected


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("seed", range(4))
def test_checkpoint_synthetic(tmp_path, fake_torch, legacy, seed):
    obj, storages, expected = _random_checkpoint(seed, legacy)
    path = tmp_path / "ckpt.pth"
    (_write_legacy if legacy else _write_zip)(path, obj, storages, fake_torch)
    got = load_state_dict(path)
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=f"seed {seed} {name}")


def test_checkpoint_refuses_other_globals(tmp_path, fake_torch):
    # os.system is pickled by reference and must never be resolved, let alone called.
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": os.system}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load global posix\.system"):
        load_state_dict(path)


def test_checkpoint_errors(tmp_path, fake_torch):
    obj, storages, _ = _random_checkpoint(0, legacy=True)
    path = tmp_path / "ckpt.pth"
    _write_legacy(path, obj, storages, fake_torch)
    raw = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(tmp_path / "cut.pth")
    magic_len = len(pickle.dumps(LEGACY_MAGIC, protocol=2))
    (tmp_path / "magic.pth").write_bytes(pickle.dumps(12345, protocol=2) + raw[magic_len:])
    with pytest.raises(CheckpointError, match="legacy magic number is 12345"):
        load_state_dict(tmp_path / "magic.pth")
    _write_zip(tmp_path / "list.pth", [obj["t0_0"]], storages, fake_torch)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(tmp_path / "list.pth")


# --------------------------------------------------------------------------------------------
# The real checkpoint and the float networks


def test_real_checkpoint_is_torchvision_mobilenet_v2(v2_state_dict):
    sd = v2_state_dict
    assert len(sd) == 314  # 52 conv + 52 x 5 batch norm + classifier weight and bias
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert sd["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert sd["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert sd["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"].shape == (1000, 1280)
    assert sd["features.18.1.num_batches_tracked"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in sd.items() if "num_batches" not in k)
    net = mobilenet.build("mobilenet_v2", sd)  # every key and shape the network expects
    assert len(net.convs()) == 52
    assert sum(isinstance(layer, mobilenet.Residual) for layer in net.layers) == 10
    with pytest.raises(ValueError, match=r"'features.0.0.weight' has shape \[32, 3, 3, 3\], "
                                         r"expected \[24, 3, 3, 3\]"):
        mobilenet.build("mobilenet_v2", sd, width=0.75)


def test_float_mobilenet_v2_matches_torchvision(v2_state_dict):
    net = mobilenet.build("mobilenet_v2", v2_state_dict)
    y = net.forward(imagenet.preprocess(imagenet.sample_images()["grace_hopper"]))[0]
    assert imagenet.top_k(y, 5) == TORCHVISION_TOP5
    # float32 sums in another order than PyTorch's: measured max difference 1.1e-5.
    np.testing.assert_allclose(y[TORCHVISION_TOP5], TORCHVISION_LOGITS, atol=1e-4)


@pytest.mark.parametrize("arch,width", [("mobilenet_v2", 0.5), ("mobilenet_v2", 1.4),
                                        ("mobilenet_v1", 0.25), ("mobilenet_v1", 0.75)])
def test_batch_norm_folding_is_exact(arch, width):
    seed = int(width * 100)
    sd = mobilenet.random_state_dict(arch, width, seed)
    x = np.random.default_rng(seed).normal(0, 1, (2, 40, 48, 3)).astype(np.float32)
    folded = mobilenet.build(arch, sd, width).forward(x)
    separate = mobilenet.build(arch, sd, width, fold_bn=False)
    assert all(c.bn is not None for c in separate.convs())
    # Same math in another order, float32 over ~50 layers; relative to logits of spread ~1.
    np.testing.assert_allclose(folded, separate.forward(x), atol=1e-4, rtol=1e-4,
                               err_msg=f"{arch} width {width} seed {seed}")


def test_architecture_channels():
    v2 = mobilenet.build("mobilenet_v2", mobilenet.random_state_dict("mobilenet_v2", 0.35),
                         0.35)
    # torchvision: _make_divisible(32 * 0.35) = 16 stem channels, last channel stays 1280.
    assert [c.out_channels for c in v2.convs()][:2] == [16, 16]
    assert v2.convs()[-1].out_channels == 1280
    v1 = mobilenet.build("mobilenet_v1", mobilenet.random_state_dict("mobilenet_v1", 0.25),
                         0.25)
    assert [c.out_channels for c in v1.convs()][::2] == [8, 16, 32, 32, 64, 64, 128, 128, 128,
                                                          128, 128, 128, 256, 256]
    assert [c.stride for c in v1.convs() if c.depthwise] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1,
                                                             2, 1]
    with pytest.raises(ValueError, match="'arch' must be one of mobilenet_v2, mobilenet_v1"):
        mobilenet.random_state_dict("resnet50")
    with pytest.raises(ValueError, match=r"'width' must be a multiplier in \(0, 4\], not 0"):
        mobilenet.random_state_dict("mobilenet_v1", 0)


@pytest.mark.parametrize("depthwise,stride,dilation", [(True, 1, 2), (True, 1, 3),
                                                      (False, 1, 2), (True, 2, 2)])
def test_dilated_conv_matches_a_direct_sum(depthwise, stride, dilation):
    """``Conv`` at dilation d against the definition, summed tap by tap: ``y[oy, ox] =
    sum x[oy*s - p + i*d, ox*s - p + j*d] * w[i, j]`` with zeros outside, ``p = d``."""
    rng = np.random.default_rng(dilation * 10 + stride)
    c, o, k = 3, 3 if depthwise else 4, 3
    x = rng.normal(0, 1, (1, 11, 9, c)).astype(np.float32)
    w = rng.normal(0, 1, (o, k, k, 1 if depthwise else c)).astype(np.float32)
    conv = mobilenet.Conv("c", w, np.zeros(o, np.float32), stride, depthwise, False,
                          dilation=dilation)
    y = conv(x)
    p = dilation
    oh, ow = (11 + 2 * p - 2 * dilation - 1) // stride + 1, (9 + 2 * p - 2 * dilation - 1) \
        // stride + 1
    assert y.shape == (1, oh, ow, o)
    for oy in range(oh):
        for ox in range(ow):
            acc = np.zeros(o)
            for i in range(k):
                for j in range(k):
                    yy, xx = oy * stride - p + i * dilation, ox * stride - p + j * dilation
                    if 0 <= yy < 11 and 0 <= xx < 9:
                        acc += (x[0, yy, xx] * w[:, i, j, 0] if depthwise
                                else w[:, i, j, :] @ x[0, yy, xx])
            np.testing.assert_allclose(y[0, oy, ox], acc, atol=1e-5)


def test_mobilenet_v2_os16_backbone(v2_state_dict):
    """DeepLabV3's MobileNetV2 at output stride 16: the first 160-channel block keeps stride
    16 (stride 1, dilation 1), the three depthwise layers after it run at dilation 2; the
    network ends with the 320-channel features, and torchvision's checkpoint loads."""
    net = mobilenet.build("mobilenet_v2_os16", v2_state_dict)
    dw = [c for c in net.convs() if c.depthwise]
    assert [c.stride for c in dw] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1] + [1] * 7
    assert [c.dilation for c in dw] == [1] * 14 + [2] * 3
    x = imagenet.preprocess(imagenet.sample_images()["grace_hopper"])
    assert net.forward(x).shape == (1, 14, 14, 320)
    assert set(mobilenet.random_state_dict("mobilenet_v2_os16")) < set(v2_state_dict)


# --------------------------------------------------------------------------------------------
# Quantized models


def _check_structure(model: bytes, n_stride2: int, n_dilated: int = 0) -> None:
    """Only the allowed ops; int8 in and out; per-channel symmetric weights along the
    schema's dimension; int32 biases scaled ``s_in * s_w``; every stride-2 convolution a
    VALID one fed by ``PAD (1, 1)`` that keeps its input's quantization; ``n_dilated``
    stride-1 convolutions at dilation 2, the others at 1."""
    g = read_tflite(model)
    assert {op.opcode for op in g.operators} <= ALLOWED_OPS
    assert g.input.dtype == g.output.dtype == "int8"
    producer = {out: op for op in g.operators for out in op.outputs}
    pads, dilations = 0, []
    for op in g.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            x, w, b = (g.tensor(n) for n in op.inputs)
            axis = 3 if op.opcode == "DEPTHWISE_CONV_2D" else 0
            assert w.dtype == "int8" and w.quantized_dimension == axis
            assert w.scale.size == w.shape[axis] and not w.zero_point.any()
            assert np.abs(w.data.astype(int)).max() <= 127
            assert b.dtype == "int32" and b.data.size == w.shape[axis]
            np.testing.assert_allclose(b.scale, x.scale[0] * w.scale, rtol=1e-6)
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.options["stride_h"] == 2:
            assert op.options["padding"] == "VALID"
            pad = producer[op.inputs[0]]
            assert pad.opcode == "PAD"
            np.testing.assert_array_equal(g.tensor(pad.inputs[1]).data,
                                          [[0, 0], [1, 1], [1, 1], [0, 0]])
            src, dst = g.tensor(pad.inputs[0]), g.tensor(pad.outputs[0])
            assert (src.scale, src.zero_point) == (dst.scale, dst.zero_point)
            pads += 1
        elif op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            k = g.tensor(op.inputs[1]).shape[1]
            assert op.options["padding"] == ("SAME" if k == 3 else "VALID")
            dilations.append(op.options["dilation_h"])
    assert pads == sum(op.opcode == "PAD" for op in g.operators) == n_stride2
    assert dilations.count(2) == n_dilated and set(dilations) <= {1, 2}


def test_quantized_mobilenet_v2_top1(v2_state_dict, v2_int8):
    _check_structure(v2_int8, n_stride2=5)
    g = read_tflite(v2_int8)
    ops = [op.opcode for op in g.operators]
    assert ops.count("ADD") == 10 and ops[-3:] == ["AVERAGE_POOL_2D", "RESHAPE",
                                                   "FULLY_CONNECTED"]
    assert sum(op.options.get("activation") == "RELU6" for op in g.operators) == 35
    photo = imagenet.sample_images()["grace_hopper"]
    x = imagenet.image_to_input(photo, v2_int8)
    start = time.perf_counter()
    y = litert_run(v2_int8, x)
    print(f"LiteRT BUILTIN_REF MobileNetV2-224: {time.perf_counter() - start:.2f} s")
    assert y.dtype == np.int8 and y.shape == (1, 1000)
    float_y = mobilenet.build("mobilenet_v2", v2_state_dict).forward(imagenet.preprocess(photo))
    assert imagenet.top_k(y, 1) == imagenet.top_k(float_y, 1) == [TORCHVISION_TOP5[0]]
    assert 652 in imagenet.top_k(y, 5)


def test_quantized_model_records_preprocessing(v2_int8):
    description = json.loads(tflite.Model.GetRootAs(v2_int8, 0).Description())
    assert (description["arch"], description["width"]) == ("mobilenet_v2", 1.0)
    assert description["calibration_images"] == 7
    pre = imagenet.model_preprocessing(v2_int8)
    g = read_tflite(v2_int8)
    assert (pre.scale, pre.zero_point) == (float(g.input.scale[0]), int(g.input.zero_point[0]))
    assert (pre.input_size, pre.resize, pre.mean, pre.std) == (
        224, 256, imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)


def _random_photos(rng, n: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (int(rng.integers(50, 130)), int(rng.integers(50, 130)), 3),
                         np.uint8) for _ in range(n)]


@pytest.mark.parametrize("arch,width,size,seed", [
    ("mobilenet_v1", 0.25, 64, 1), ("mobilenet_v1", 0.5, 96, 2), ("mobilenet_v1", 0.75, 72, 3),
    ("mobilenet_v2", 0.35, 64, 4), ("mobilenet_v2", 0.5, 96, 5), ("mobilenet_v2", 0.75, 70, 6),
    ("mobilenet_v2_os16", 0.5, 96, 7),
])
def test_random_weights_quantize_and_run(arch, width, size, seed):
    rng = np.random.default_rng(seed)
    photos = _random_photos(rng, 3)
    model = quantizer.quantize(arch, None, photos, width=width, input_size=size, seed=seed)
    os16 = arch == "mobilenet_v2_os16"
    _check_structure(model, n_stride2=4 if os16 else 5, n_dilated=3 if os16 else 0)
    net = mobilenet.build(arch, mobilenet.random_state_dict(arch, width, seed), width)
    pre = imagenet.model_preprocessing(model)
    out = read_tflite(model).output
    for photo in [photos[0], *_random_photos(rng, 1)]:
        x = imagenet.preprocess(photo, pre)
        y = litert_run(model, imagenet.quantize_input(x, pre.scale, pre.zero_point))[0]
        dequantized = (y.astype(np.float64) - out.zero_point[0]) * out.scale[0]
        # int8 noise through 28 (V1) or 52 (V2) layers. Measured over 8 seeds: V1 correlation
        # 0.998-0.9997; V2 0.944-0.989, its untrained residual sums growing block to block
        # so that calibrated ranges are wide; the OS16 backbone's features (each pixel's, no
        # pool averaging the noise) 0.84-0.93 (seeds 7-14).
        corr = np.corrcoef(dequantized.ravel(), net.forward(x)[0].ravel())[0, 1]
        limit = {"mobilenet_v1": 0.99, "mobilenet_v2": 0.9}.get(arch, 0.8)
        assert corr > limit, f"{arch} width {width} size {size} seed {seed}: corr {corr:.4f}"


def test_weight_quant_keeps_bias_in_int32():
    # A batch-norm-killed channel: weights ~0 with a large bias must not overflow int32.
    w = np.array([[1e-12, -1e-12], [0.5, -0.25]])
    q_w, s_w, q_b = quantizer.weight_quant(w, np.array([3.0, 0.1]), 0.02, axis=0)
    assert abs(int(q_b[0])) < 2**31 - 1
    np.testing.assert_allclose(q_b * 0.02 * s_w, [3.0, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(q_w[1], [127, -64])
    assert quantizer.activation_quant(0.0, 6.0) == (pytest.approx(6 / 255), -128)
    scale, zp = quantizer.activation_quant(-1.0, 3.0)
    assert zp == -64 and scale == pytest.approx(4 / 255)


def test_cli_quantize(tmp_path, capsys):
    rng = np.random.default_rng(7)
    calib = tmp_path / "calib"
    calib.mkdir()
    from PIL import Image

    for i, photo in enumerate(_random_photos(rng, 2)):
        Image.fromarray(photo).save(calib / f"{i}.png")
    out = tmp_path / "v1.tflite"
    argv = ["quantize", "--arch", "mobilenet_v1", "--width", "0.25", "--input-size", "48",
            "--calib", str(calib), "-o", str(out)]
    assert main(argv) == 2  # no ImageNet weights are installed for this one
    err = capsys.readouterr().err
    assert err == ("dwsep: error: no ImageNet weights are installed for mobilenet_v1 width "
                   "0.25: give --weights FILE.pth, or --random-weights\n")
    assert main([*argv, "--random-weights"]) == 0
    captured = capsys.readouterr()
    assert "warning: --random-weights: mobilenet_v1 gets random weights" in captured.err
    assert ("warning: 2 calibration image(s): with fewer than 8 the activation ranges fit "
            "these photos only") in captured.err
    assert "calibrating" in captured.err and "2 calibration images" in captured.out
    x = np.zeros((1, 48, 48, 3), np.int8)
    assert litert_run(out.read_bytes(), x).shape == (1, 1000)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", "--arch", "mobilenet_v2", "--calib", str(empty), "-o",
                 str(out)]) == 2
    assert "no .jpg/.jpeg/.png" in capsys.readouterr().err


def test_cli_quantize_other_archs_and_sizes(tmp_path, capsys, grace_hopper):
    """``--input-size HxW`` (a non-square input, its preprocessing recorded) and the OS16
    backbone from torchvision's MobileNetV2 weights (its first 18 blocks, by default);
    an image size that is neither N nor HxW is refused naming it."""
    out = tmp_path / "v1.tflite"
    assert main(["quantize", "--arch", "mobilenet_v1", "--width", "0.25", "--random-weights",
                 "--input-size", "64x48", "-o", str(out)]) == 0
    assert "input 64x48" in capsys.readouterr().out
    pre = imagenet.model_preprocessing(out.read_bytes())
    assert (pre.input_hw, pre.resize) == ((64, 48), 73)
    x = imagenet.image_to_input(grace_hopper, out.read_bytes())
    assert x.shape == (1, 64, 48, 3)
    assert litert_run(out.read_bytes(), x).shape == (1, 1000)
    out = tmp_path / "os16.tflite"
    assert main(["quantize", "--arch", "mobilenet_v2_os16", "--input-size", "96", "-o",
                 str(out)]) == 0
    captured = capsys.readouterr()
    assert f"weights {mobilenet.torchvision_weights_path()}" in captured.err
    assert "mobilenet_v2_os16 width 1, input 96x96" in captured.out
    assert read_tflite(out.read_bytes()).output.shape == (1, 6, 6, 320)
    with pytest.raises(SystemExit):
        main(["quantize", "--arch", "mobilenet_v1", "--input-size", "64x", "-o", str(out)])
    assert ("argument --input-size: an image size is N or HxW with positive integers, e.g. "
            "224 or 256x192; not '64x'") in capsys.readouterr().err


def test_cli_quantize_defaults(tmp_path, capsys, grace_hopper):
    """``dwsep quantize --arch mobilenet_v2 -o M``: the installed ImageNet weights and the 8
    bundled sample photos, no warning; the model classifies grace_hopper as torchvision
    does (its top-1, and class 652 in its top 5)."""
    out = tmp_path / "mnv2.tflite"
    assert main(["quantize", "--arch", "mobilenet_v2", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "calibrating with the 8 bundled sample photos" in captured.err
    assert f"weights {mobilenet.torchvision_weights_path()}" in captured.err
    assert "warning" not in captured.err and "8 calibration images" in captured.out
    y = litert_run(out.read_bytes(), imagenet.image_to_input(grace_hopper, out.read_bytes()))
    assert imagenet.top_k(y, 1) == [TORCHVISION_TOP5[0]] and 652 in imagenet.top_k(y, 5)


def test_float_and_int8_agree_on_sample_photos(v2_state_dict, v2_int8):
    """The report: float vs int8 top-1 and top-5 on every sample photo (all but
    ``grace_hopper`` were the calibration set). Measured: top-1 equal on 7 of 8 (rocket's
    three best float logits lie within 0.9 of each other), top-5 overlap 3-5 of 5."""
    net = mobilenet.build("mobilenet_v2", v2_state_dict)
    names = imagenet.labels()
    agree = 0
    for name, photo in imagenet.sample_images().items():
        float_top = imagenet.top_k(net.forward(imagenet.preprocess(photo)), 5)
        int8_top = imagenet.top_k(litert_run(v2_int8, imagenet.image_to_input(photo, v2_int8)),
                                  5)
        overlap = len(set(float_top) & set(int8_top))
        agree += float_top[0] == int8_top[0]
        print(f"{name:18} float {float_top} ({names[float_top[0]]}) int8 {int8_top} "
              f"({names[int8_top[0]]}) top-5 overlap {overlap}/5")
        assert overlap >= 3, name
    assert agree >= 7


@pytest.mark.parametrize("images", [1, 2, 3, 9])
def test_held_out_saturation_is_leave_one_out(images):
    """``Ranges.held_out_saturation`` (one pass) equals the brute-force leave-one-out count:
    each image's values outside ``[min(lo, 0), max(hi, 0)]`` of the *other* images; ties at
    the maximum count nothing."""
    rng = np.random.default_rng(images)
    data = [{"a": rng.normal(0.5 * i, 1 + i % 3, (4, 5)).astype(np.float32),
             "b": rng.uniform(0.5, 2 + i, 7).astype(np.float32)} for i in range(images)]
    data[-1]["a"][0, 0] = max(d["a"].max() for d in data)   # a tied maximum
    ranges = quantizer.Ranges()
    for image in data:
        for name, y in image.items():
            ranges(name, y)
    got = ranges.held_out_saturation()
    if images == 1:
        assert got is None
        return
    outside = {}
    for name in ("a", "b"):
        count = 0
        for i, image in enumerate(data):
            others = [d[name] for j, d in enumerate(data) if j != i]
            lo = min(0.0, min(float(y.min()) for y in others))
            hi = max(0.0, max(float(y.max()) for y in others))
            count += int(((image[name] < lo) | (image[name] > hi)).sum())
        outside[name] = count / (images * data[0][name].size)
    total = sum(outside[n] * data[0][n].size for n in outside) / (20 + 7)
    worst = max(outside, key=outside.get)
    assert got == (pytest.approx(total), worst, pytest.approx(outside[worst]))
    assert outside[worst] > 0   # the case is not vacuous


def test_cli_quantize_warns_when_calibration_images_disagree(tmp_path, capsys):
    """Seven black images and one photo: 4.3 % of the input's calibration values lie outside
    the range the other images give it, more than 1 %, so ``dwsep quantize`` warns (the 8
    sample photos stay below: ``test_cli_quantize_defaults``)."""
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(7):
        Image.new("RGB", (224, 224)).save(calib / f"black{i}.png")
    photo = sorted(imagenet.sample_images().values())[0]
    (calib / photo.name).write_bytes(photo.read_bytes())
    assert main(["quantize", "--arch", "mobilenet_v2", "--calib", str(calib),
                 "-o", str(tmp_path / "m.tflite")]) == 0
    err = capsys.readouterr().err
    assert ("dwsep: warning: 4.3% of tensor 'input''s calibration values lie outside the "
            "range the other images give it (more than 1%): photos unlike these saturate; "
            "calibrate with more, and more typical, photos\n") in err
    assert "fewer than 8" not in err
