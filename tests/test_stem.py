"""The stem by space-to-depth: a stride-2 k x k CONV_2D on the model input compiled as a
stride-1 CONV over the input stored in 2x2 blocks (``packing.space_to_depth``,
``compiler.space_to_depth_conv``). The layout and the weight rearrangement against the
formulas and a direct NumPy convolution; whole models on the ``reference`` device bit-exact
with LiteRT BUILTIN_REF, on the conditions under which the compiler transforms and where it
keeps the direct form; MobileNetV2's first descriptor on pynq-z2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import PYNQ_Z2

from dwsep.host import packing, quantizer
from dwsep.host.compiler import TensorInfo, compile_model, space_to_depth_conv
from dwsep.host.graph import Operator, Tensor, UnsupportedModelError
from dwsep.host.reference import run_graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    LayerSpec,
    ModelBuilder,
    layer_tensors,
    random_layer_spec,
    single_op_model,
)
from dwsep.hw.layout import DescFlag
from dwsep.sim.oracle import litert_run

# ---- the input layout ------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(4, 6), (5, 7), (3, 4), (6, 1), (1, 1)])
def test_space_to_depth_layout(h, w):
    """``S[Y, X, (i*2 + j)*C + c] = x[2Y + i, 2X + j, c]``, the fill past an odd edge."""
    c, fill = 3, -7
    x = np.arange(h * w * c).reshape(h, w, c).astype(np.int8)
    s = packing.space_to_depth(x, 2, fill)
    assert s.shape == (-(-h // 2), -(-w // 2), 12) and s.dtype == np.int8
    for (y, xx, ch), v in np.ndenumerate(s):
        i, j, cc = ch // 6, ch // 3 % 2, ch % 3
        inside = 2 * y + i < h and 2 * xx + j < w
        assert v == (x[2 * y + i, 2 * xx + j, cc] if inside else fill), (y, xx, ch)
    assert (packing.depth_to_space(s, 2, h, w) == x).all()


def test_space_to_depth_checks_shapes():
    with pytest.raises(ValueError, match=r"space_to_depth takes \[H, W, C\] and a block >= 1, "
                                         r"not \[4, 4\] and 2"):
        packing.space_to_depth(np.zeros((4, 4), np.int8), 2, 0)
    with pytest.raises(ValueError, match=r"\[2, 2, 12\] is not the space-to-depth form \(2x2 "
                                         r"blocks\) of a 5x4 image"):
        packing.depth_to_space(np.zeros((2, 2, 12), np.int8), 2, 5, 4)


@pytest.mark.parametrize("h,w", [(5, 7), (6, 4)])
def test_tensor_info_packs_space_to_depth(h, w):
    """The driver writes ``TensorInfo.pack(x)``: the s2d tensor, channels padded with 0 to
    the lanes, the zero point in the sub-pixels past an odd edge."""
    zp, lanes = -9, 16
    info = TensorInfo("input", (1, h, w, 3), 0.1, zp, 3, 16, lanes, 0, 2)
    x = np.random.default_rng(h).integers(-128, 128, (1, h, w, 3)).astype(np.int8)
    raw = info.pack(x)
    rows, cols = -(-h // 2), -(-w // 2)
    assert info.nbytes == len(raw) == rows * cols * lanes
    assert info.stored_shape == (rows * cols, 12)
    a = np.frombuffer(raw, np.int8).reshape(rows, cols, lanes)
    assert (a[:, :, 12:] == 0).all()
    for y in range(2 * rows):
        for xx in range(2 * cols):
            sub = ((y % 2) * 2 + xx % 2) * 3
            want = x[0, y, xx] if y < h and xx < w else [zp] * 3
            assert (a[y // 2, xx // 2, sub:sub + 3] == want).all(), (y, xx)
    assert info.pack(x[0]) == raw
    assert (info.unpack(raw) == x).all()


# ---- the weight rearrangement ------------------------------------------------------------------

def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad_top: int, pad_left: int,
          out_hw: tuple[int, int], fill: int) -> np.ndarray:
    """``y[oy, ox, o] = sum_{ky, kx, c} xp[oy*s + ky, ox*s + kx, c] * w[o, ky, kx, c]``, ``xp``
    the input with ``pad_top``/``pad_left`` rows/columns before it and ``fill`` outside."""
    (oh, ow), k = out_hw, w.shape[1]
    rows = max((oh - 1) * stride + k, pad_top + x.shape[0])
    cols = max((ow - 1) * stride + k, pad_left + x.shape[1])
    xp = np.full((rows, cols, x.shape[2]), fill, np.int64)
    xp[pad_top:pad_top + x.shape[0], pad_left:pad_left + x.shape[1]] = x
    y = np.zeros((oh, ow, w.shape[0]), np.int64)
    for ky in range(k):
        for kx in range(k):
            taps = xp[ky:ky + (oh - 1) * stride + 1:stride, kx:kx + (ow - 1) * stride + 1:stride]
            y += taps @ w[:, ky, kx].T.astype(np.int64)
    return y


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
def test_space_to_depth_conv_matches_direct(k):
    """Every padding 0..k-1 on each axis, odd and even sizes: the stride-1 convolution of the
    rearranged weights over the s2d input (filled with the padding value) equals the
    stride-2 convolution."""
    rng = np.random.default_rng(k)
    c, c_out, fill = 3, 5, int(rng.integers(-128, 128))
    for pad_top in range(k):
        for pad_left in range(k):
            h, w = (int(v) for v in rng.integers(k, 12, 2))
            x = rng.integers(-128, 128, (h, w, c))
            wt = rng.integers(-127, 128, (c_out, k, k, c)).astype(np.int8)
            out_hw = ((h + pad_top - k) // 2 + 1 + int(rng.integers(0, 2)),
                      (w + pad_left - k) // 2 + 1 + int(rng.integers(0, 2)))
            w2, top, left = space_to_depth_conv(wt, pad_top, pad_left)
            assert (top, left) == (-(-pad_top // 2), -(-pad_left // 2))
            if k % 2:
                assert w2.shape == (c_out, (k + 1) // 2, (k + 1) // 2, 4 * c)
            assert sorted(w2[w2 != 0].tolist()) == sorted(wt[wt != 0].tolist())
            s = packing.space_to_depth(x, 2, fill)
            want = _conv(x, wt, 2, pad_top, pad_left, out_hw, fill)
            got = _conv(s, w2, 1, top, left, out_hw, fill)
            assert (got == want).all(), (k, pad_top, pad_left, h, w)


def test_space_to_depth_conv_3x3_by_hand():
    """3x3, padding 1 (PyTorch's stem): output (oy, ox) reads rows 2oy-1..2oy+1, i.e. s2d row
    oy-1 (sub-row 1) and row oy (sub-rows 0, 1): a 2x2 kernel, padding 1."""
    w = np.arange(1, 10, dtype=np.int8).reshape(1, 3, 3, 1)   # w[0, ky, kx, 0] = 3ky + kx + 1
    w2, top, left = space_to_depth_conv(w, 1, 1)
    assert (top, left) == (1, 1)
    # channel (i*2 + j): sub-row i, sub-column j
    assert w2[0, :, :, :].tolist() == [
        [[0, 0, 0, 1], [0, 0, 2, 3]],
        [[0, 4, 0, 7], [5, 6, 8, 9]]]
    w2, top, left = space_to_depth_conv(w, 0, 0)    # TFLite SAME on an even size: (0, 1)
    assert (top, left) == (0, 0) and w2.shape == (1, 2, 2, 4)
    assert w2[0, 0, 0].tolist() == [1, 2, 4, 5] and w2[0, 1, 1].tolist() == [9, 0, 0, 0]


# ---- models on the reference device, bit-exact with LiteRT ------------------------------------

def _stem_spec(h, w, c, k, padding, seed, *, stride=2, dilation=1, extreme=False):
    return LayerSpec(h=h, w=w, c=c, depth_multiplier=1, kernel=k, stride=stride,
                     dilation=dilation, padding=padding, dw_activation="NONE", c_out=20,
                     pw_activation="RELU6", seed=seed, extreme=extreme)


def _run(acc, model: bytes, seed: int) -> np.ndarray:
    g = read_tflite(model)
    x = np.random.default_rng(seed).integers(-128, 128, g.input.shape).astype(np.int8)
    y = acc.run(model, x)
    expected = litert_run(model, x)
    assert np.array_equal(y, expected), np.argwhere(y != expected)[:5]
    return y


#: (config, h, w, c, k, padding, s2d kernel): 3 channels on pynq-z2 (P = 16), 1 or 2 on tiny
#: (P = 8); odd and even sizes
STEMS = [
    ("pynq-z2", 16, 16, 3, 3, "SAME", 2), ("pynq-z2", 15, 13, 3, 3, "SAME", 2),
    ("pynq-z2", 16, 11, 3, 3, "VALID", 2), ("pynq-z2", 9, 12, 3, 3, "VALID", 2),
    ("pynq-z2", 14, 14, 3, 5, "SAME", 3), ("pynq-z2", 13, 17, 3, 5, "SAME", 3),
    ("pynq-z2", 12, 9, 3, 5, "VALID", 3), ("pynq-z2", 11, 11, 3, 7, "SAME", 4),
    ("pynq-z2", 10, 10, 3, 2, "SAME", 1), ("pynq-z2", 9, 8, 3, 4, "SAME", 3),
    ("pynq-z2", 19, 18, 3, 9, "SAME", 5),   # 9x9 > k_max = 7, but 5x5 in s2d form
    ("pynq-z2", 7, 7, 4, 3, "SAME", 2),
    ("tiny", 9, 10, 2, 3, "SAME", 2), ("tiny", 8, 7, 1, 5, "VALID", 3),
    ("tiny", 11, 11, 2, 3, "VALID", 2),
]


@pytest.mark.parametrize("config,h,w,c,k,padding,k2", STEMS,
                         ids=[f"{s[0]}-{s[1]}x{s[2]}x{s[3]}-k{s[4]}-{s[5]}" for s in STEMS])
def test_stem_matches_litert(accelerators, config, h, w, c, k, padding, k2):
    model = single_op_model(_stem_spec(h, w, c, k, padding, seed=h * 100 + w), "CONV_2D")
    acc = accelerators(config)
    prog = acc.compile(read_tflite(model))
    (d,) = prog.descriptors
    assert prog.input.space_to_depth == 2
    assert (d["kernel"], d["stride"], d["in_h"], d["in_w"]) == (k2, 1, -(-h // 2), -(-w // 2))
    assert d["in_groups"] == 1 and d["mid_groups"] == k2 * k2
    assert d["flags"] & DescFlag.CONV
    r = prog.layers[0]
    assert (r["kernel"], r["stride"], r["input_shape"]) == (k, 2, [h, w, c])
    assert r["macs"] == r["output_shape"][0] * r["output_shape"][1] * k * k * c * 20
    assert f"runs as a {k2}x{k2} stride-1 CONV" in r["note"]
    _run(acc, model, seed=h + w)


@pytest.mark.parametrize("seed", range(12))
def test_random_stem_matches_litert(accelerators, seed):
    """Random stride-2 convolutions on 1..3 channels, with extreme quantization at times."""
    spec = random_layer_spec(np.random.default_rng(seed), k_choices=(2, 3, 5), max_hw=20,
                             max_c=3, max_c_out=40, dilations=(1,), strides=(2,),
                             extreme_fraction=0.3)
    model = single_op_model(spec, "CONV_2D")
    acc = accelerators("pynq-z2")
    assert acc.compile(read_tflite(model)).input.space_to_depth == 2
    _run(acc, model, seed=1000 + seed)


def _conv_after(mb: ModelBuilder, x: int, in_scale: float, spec: LayerSpec, name: str,
                **options) -> int:
    """``spec``'s CONV_2D (its weights and output quantization) on tensor ``x`` of scale
    ``in_scale``; ``options`` override the window."""
    q = layer_tensors(spec)["conv"]
    w = mb.add_tensor(f"{name}/weights", q["w"].shape, "int8", q["scales"], 0, 0, q["w"])
    b = mb.add_tensor(f"{name}/bias", (spec.c_out,), "int32",
                      in_scale * q["scales"].astype(np.float64), 0, 0, q["bias"])
    y = mb.add_tensor(f"{name}/out", (1, *spec.dw_out_hw, spec.c_out), "int8", q["out_scale"],
                      q["out_zp"])
    window = dict(padding=spec.padding, stride_h=spec.stride, stride_w=spec.stride,
                  dilation_h=spec.dilation, dilation_w=spec.dilation)
    mb.add_operator("CONV_2D", [x, w, b], [y], activation="RELU6", **{**window, **options})
    return y


def _padded_stem(h, w, pads, *, constant=None, padding="VALID", seed=0) -> bytes:
    """input -> PAD (``pads`` = top, bottom, left, right; PADV2 with ``constant``) -> 3x3
    stride-2 CONV_2D with ``padding``."""
    t, b, left, r = pads
    spec = _stem_spec(h + t + b, w + left + r, 3, 3, padding, seed)
    p = layer_tensors(spec)
    quant = (p["in_scale"], p["in_zp"])
    mb = ModelBuilder("padded stem")
    x = mb.add_tensor("input", (1, h, w, 3), "int8", *quant)
    paddings = np.array([[0, 0], [t, b], [left, r], [0, 0]])
    inputs = [x, mb.add_tensor("paddings", (4, 2), "int32", data=paddings)]
    if constant is not None:
        inputs.append(mb.add_tensor("constant", (1,), "int8", *quant, data=np.array([constant])))
    xp = mb.add_tensor("padded", (1, h + t + b, w + left + r, 3), "int8", *quant)
    mb.add_operator("PAD" if constant is None else "PADV2", inputs, [xp])
    y = _conv_after(mb, xp, p["in_scale"], spec, "conv")
    mb.inputs, mb.outputs = [x], [y]
    return mb.finish()


@pytest.mark.parametrize("h,w,pads,padding", [
    (16, 16, (1, 1, 1, 1), "VALID"),    # PyTorch's stem: k // 2 on every side
    (15, 13, (1, 1, 1, 1), "VALID"),
    (12, 11, (0, 1, 2, 0), "SAME"),     # a PAD and SAME padding together
    (9, 10, (3, 0, 1, 2), "VALID"),
])
def test_stem_with_folded_pad(accelerators, h, w, pads, padding):
    model = _padded_stem(h, w, pads, padding=padding, seed=h * w)
    acc = accelerators("pynq-z2")
    prog = acc.compile(read_tflite(model))
    assert prog.input.space_to_depth == 2 and prog.descriptors[0]["kernel"] == 2
    assert prog.layers[0]["ops"] == ["CONV_2D", "PAD"]
    _run(acc, model, seed=h)


def test_padv2_constant_keeps_direct_form(accelerators):
    """A PADV2 constant other than the zero point: the line buffer pads with it, the host
    could not fill odd edges with it; the stem stays direct (and exact). Equal to the zero
    point, the transform applies."""
    acc = accelerators("pynq-z2")
    zp = int(read_tflite(_padded_stem(15, 12, (1, 1, 1, 1), seed=4)).input.zero_point[0])
    for constant, block in ((zp - 1 if zp > -128 else zp + 1, 1), (zp, 2)):
        model = _padded_stem(15, 12, (1, 1, 1, 1), constant=constant, seed=4)
        prog = acc.compile(read_tflite(model))
        assert prog.input.space_to_depth == block, constant
        assert prog.descriptors[0]["kernel"] == (3 if block == 1 else 2)
        _run(acc, model, seed=5)


def _conv_after_dw(seed: int) -> bytes:
    """input -> DEPTHWISE_CONV_2D 3x3 (3 channels) -> CONV_2D 3x3 stride 2: a stride-2 conv
    that does not read the model input."""
    spec = _stem_spec(12, 11, 3, 3, "SAME", seed)
    p = layer_tensors(spec)
    mb = ModelBuilder("conv after dw")
    x = mb.add_tensor("input", (1, 12, 11, 3), "int8", p["in_scale"], p["in_zp"])
    dw = p["dw"]
    w = mb.add_tensor("dw/weights", dw["w"].shape, "int8", dw["scales"], 0, 3, dw["w"])
    b = mb.add_tensor("dw/bias", (3,), "int32", p["in_scale"] * dw["scales"].astype(np.float64),
                      0, 0, dw["bias"])
    mid = mb.add_tensor("dw/out", (1, 12, 11, 3), "int8", dw["out_scale"], dw["out_zp"])
    mb.add_operator("DEPTHWISE_CONV_2D", [x, w, b], [mid], padding="SAME", stride_h=1,
                    stride_w=1, depth_multiplier=1, activation="RELU6")
    y = _conv_after(mb, mid, dw["out_scale"], spec, "conv")
    mb.inputs, mb.outputs = [x], [y]
    return mb.finish()


#: (config, model): stride-2 convolutions the compiler keeps in the direct form
DIRECT = {
    "stride-1": ("pynq-z2", single_op_model(_stem_spec(9, 8, 3, 3, "SAME", 1, stride=1),
                                            "CONV_2D")),
    "dilation-2": ("tiny", single_op_model(_stem_spec(13, 12, 3, 3, "SAME", 2, dilation=2),
                                           "CONV_2D")),
    "5-channels": ("pynq-z2", single_op_model(_stem_spec(10, 9, 5, 3, "SAME", 3), "CONV_2D")),
    "3-channels-on-tiny": ("tiny", single_op_model(_stem_spec(10, 9, 3, 3, "SAME", 4),
                                                   "CONV_2D")),
    "1x1": ("pynq-z2", single_op_model(_stem_spec(10, 9, 3, 1, "SAME", 5), "CONV_2D")),
    "not-the-model-input": ("pynq-z2", _conv_after_dw(6)),
}


@pytest.mark.parametrize("name", DIRECT)
def test_direct_form_where_the_transform_does_not_apply(accelerators, name):
    config, model = DIRECT[name]
    acc = accelerators(config)
    prog = acc.compile(read_tflite(model))
    assert prog.input.space_to_depth == 1
    assert prog.input.nbytes == prog.input.pixels * prog.input.padded_channels
    assert all("space-to-depth" not in r["note"] for r in prog.layers)
    last = prog.descriptors[-1]
    assert last["stride"] == 2 or name == "stride-1"
    _run(acc, model, seed=7)


def test_input_read_twice_keeps_direct_form(accelerators):
    """The model input also read by another operator (an ADD of it with itself): its buffer
    must hold the plain layout."""
    g = read_tflite(single_op_model(_stem_spec(10, 10, 3, 3, "SAME", 8), "CONV_2D"))
    assert compile_model(g, "pynq-z2").input.space_to_depth == 2
    t = g.tensors["input"]
    g.tensors["twice"] = Tensor("twice", t.shape, "int8", t.scale, t.zero_point)
    g.operators.append(Operator("ADD", ["input", "input"], ["twice"], {}, len(g.operators)))
    acc = accelerators("pynq-z2")
    prog = acc.compile(g)
    assert prog.input.space_to_depth == 1 and prog.descriptors[0]["kernel"] == 3
    x = np.random.default_rng(8).integers(-128, 128, g.input.shape).astype(np.int8)
    assert np.array_equal(acc.run(g, x), run_graph(g, x))


def test_limits_are_checked_on_the_transformed_conv():
    """The CONV-mode limit ``k*k*groups <= mid_groups_max`` and the line buffer's ``k_max``
    hold for the 2x2 (5x5, 8x8) s2d kernel, and the message names the original."""
    model = single_op_model(_stem_spec(10, 10, 3, 3, "SAME", 9), "CONV_2D")
    cfg = dataclasses.replace(PYNQ_Z2, name="small-mid", mid_channels_max=48)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(read_tflite(model), cfg)
    assert str(info.value) == (
        "operator 0 CONV_2D ('conv/out'): 2x2 convolution over 12 channels (the "
        "space-to-depth form of the 3x3 stride-2 convolution over 3 channels) needs "
        "k*k*ceil(C/16) = 4 PW input words per pixel, more than mid_channels_max/dw_lanes=3 "
        "of config 'small-mid'")
    model = single_op_model(_stem_spec(20, 20, 3, 15, "SAME", 9), "CONV_2D")
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(read_tflite(model), PYNQ_Z2)
    assert str(info.value) == (
        "operator 0 CONV_2D ('conv/out'): kernel 8x8 (the space-to-depth form of the 15x15 "
        "stride-2 convolution over 3 channels) exceeds k_max=7 of config 'pynq-z2'")


# ---- MobileNetV2 ----------------------------------------------------------------------------

def test_mobilenet_v2_stem_on_pynq_z2():
    """The 224x224x3 input stored as 112x112x12 (16 lanes: 200,704 bytes instead of 802,816);
    the stem a 2x2 stride-1 CONV of 4 PW words per pixel; the report still the 3x3 stride-2
    CONV_2D and its MACs."""
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    g = read_tflite(quantizer.quantize("mobilenet_v2", None, [image]))
    prog = compile_model(g, PYNQ_Z2)
    d = prog.descriptors[0]
    assert (d["in_groups"], d["kernel"], d["stride"], d["mid_groups"]) == (1, 2, 1, 4)
    assert (d["in_h"], d["in_w"], d["out_h"], d["out_w"]) == (112, 112, 112, 112)
    assert (d["pad_top"], d["pad_left"]) == (1, 1)    # PyTorch's padding 1 on every side
    assert prog.input.nbytes == 112 * 112 * 16 and prog.input.space_to_depth == 2
    r = prog.layers[0]
    assert r["ops"] == ["CONV_2D", "PAD"]
    assert (r["kernel"], r["stride"], r["input_shape"]) == (3, 2, [224, 224, 3])
    assert r["macs"] == 112 * 112 * 3 * 3 * 3 * 32 == 10_838_016
    assert ("224x224x3 -> 112x112x32, k3 s2 d1 m1, 10838016 MACs; input stored "
            "space-to-depth: runs as a 2x2 stride-1 CONV over 112x112x12") in prog.summary()
