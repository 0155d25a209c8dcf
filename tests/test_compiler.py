"""Compiler and DDR packing: format round trips, the mid-channel permutation, descriptors and
DDR plan, and the one-line UnsupportedModelError of every hardware limit."""

from __future__ import annotations

import numpy as np
import pytest

from dwsep.host import packing
from dwsep.host.compiler import ALIGN, compile_model
from dwsep.host.graph import Graph, Operator, Tensor, UnsupportedModelError
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model
from dwsep.hw.config import get_config
from dwsep.hw.layout import DESCRIPTOR, DescFlag, Opcode

TINY = get_config("tiny")


def graph_from_spec(spec: LayerSpec) -> Graph:
    """The Graph of the writer's one-layer model (tensor names ``input``, ``dw/weights``,
    ``dw/bias``, ``dw/out``, ``pw/weights``, ``pw/bias``, ``pw/out``)."""
    return read_tflite(dwsep_layer_model(spec))


def spec(**kw) -> LayerSpec:
    base = dict(h=8, w=8, c=12, depth_multiplier=2, kernel=3, stride=1, dilation=1,
                padding="SAME", dw_activation="RELU6", c_out=10, pw_activation="NONE", seed=7)
    return LayerSpec(**{**base, **kw})


# ---- packing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_activation_round_trip(seed):
    rng = np.random.default_rng(seed)
    h, w, c = (int(v) for v in rng.integers(1, 20, 3))
    lanes = int(rng.choice([8, 16]))
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    raw = packing.pack_activations(x, lanes)
    c_pad = packing.padded(c, lanes)
    assert len(raw) == h * w * c_pad
    a = np.frombuffer(raw, np.int8).reshape(h, w, c_pad)
    assert (a[:, :, c:] == 0).all()
    assert (packing.unpack_activations(raw, h, w, c, lanes) == x).all()


def test_table_round_trip_and_layout():
    rng = np.random.default_rng(3)
    lanes, groups = 8, 3
    bias = rng.integers(-2**31, 2**31, groups * lanes)
    mult = rng.integers(0, 2**31, groups * lanes)
    shift = rng.integers(-31, 8, groups * lanes)
    raw = packing.pack_table(bias, mult, shift, lanes)
    assert len(raw) == groups * 9 * lanes
    # group 1, lane 2: bias at 72 + 4*2, mult at 72 + 32 + 4*2, shift at 72 + 64 + 2
    base = 9 * lanes
    assert int.from_bytes(raw[base + 8:base + 12], "little", signed=True) == bias[lanes + 2]
    assert int.from_bytes(raw[base + 40:base + 44], "little", signed=True) == mult[lanes + 2]
    assert int.from_bytes(raw[base + 66:base + 67], "little", signed=True) == shift[lanes + 2]
    b, m, s = packing.unpack_table(raw, groups, lanes)
    assert (b.reshape(-1) == bias).all() and (m.reshape(-1) == mult).all()
    assert (s.reshape(-1) == shift).all()


def test_mid_channel_map_example():
    # C=10, m=2, P=8: groups 0 (channels 0..7) and 1 (channels 8, 9 and 6 padding lanes).
    cmap = packing.mid_channel_map(10, 2, 8)
    assert cmap.shape == (4, 8)
    assert list(cmap[0]) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert list(cmap[1]) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert list(cmap[2]) == [16, 18] + [-1] * 6
    assert list(cmap[3]) == [17, 19] + [-1] * 6


@pytest.mark.parametrize("c,m,lanes", [(1, 1, 8), (13, 3, 8), (24, 2, 8), (33, 3, 16)])
def test_mid_channel_map_is_a_permutation(c, m, lanes):
    cmap = packing.mid_channel_map(c, m, lanes)
    assert sorted(cmap[cmap >= 0]) == list(range(c * m))
    assert (cmap >= 0).sum(axis=1).tolist() == [min(lanes, c - g * lanes)
                                                for g in range(cmap.shape[0] // m)
                                                for _ in range(m)]


@pytest.mark.parametrize("c,m,k,lanes", [(5, 1, 3, 8), (13, 3, 2, 8), (9, 2, 1, 8)])
def test_dw_weight_words(c, m, k, lanes):
    rng = np.random.default_rng(c * m * k)
    w = rng.integers(-128, 128, (k, k, c * m)).astype(np.int8)
    words = np.frombuffer(packing.pack_dw_weights(w, m, lanes), np.int8)
    groups = -(-c // lanes)
    assert words.size == groups * m * k * k * lanes
    for g in range(groups):
        for j in range(m):
            for ky in range(k):
                for kx in range(k):
                    q = g * m + j
                    word = words[(q * k * k + ky * k + kx) * lanes:][:lanes]
                    for i in range(lanes):
                        cin = g * lanes + i
                        want = w[ky, kx, cin * m + j] if cin < c else 0
                        assert word[i] == want, (g, j, ky, kx, i)


@pytest.mark.parametrize("c,m,c_out,lanes,cols", [(5, 1, 3, 8, 8), (11, 3, 17, 8, 8),
                                                  (9, 2, 20, 16, 8)])
def test_pw_weight_words(c, m, c_out, lanes, cols):
    rng = np.random.default_rng(c + m + c_out)
    w = rng.integers(-128, 128, (c_out, c * m)).astype(np.int8)
    raw = np.frombuffer(packing.pack_pw_weights(w, m, lanes, cols), np.int8)
    groups, og_n = -(-c // lanes), -(-c_out // cols)
    mid_groups = groups * m
    assert raw.size == og_n * mid_groups * lanes * cols
    for og in range(og_n):
        for g in range(groups):
            for j in range(m):
                q = g * m + j
                word = raw[(og * mid_groups + q) * lanes * cols:][:lanes * cols]
                for i in range(lanes):
                    for o in range(cols):
                        cin, co = g * lanes + i, og * cols + o
                        want = w[co, cin * m + j] if cin < c and co < c_out else 0
                        assert word[i * cols + o] == want


def test_fold_bias():
    assert list(packing.fold_bias([10, -5], [3, -4], -2)) == [16, -13]
    with pytest.raises(OverflowError):
        packing.fold_bias([2**31 - 10], [1], -20)


# ---- compiled program ------------------------------------------------------------------------

def test_descriptor_and_plan():
    s = spec(h=9, w=7, c=13, depth_multiplier=3, kernel=5, stride=2, dilation=2, c_out=17)
    g = graph_from_spec(s)
    prog = compile_model(g, "tiny")
    (d,) = prog.descriptors
    zp = {name: int(g.tensors[name].zero_point[0]) for name in ("input", "dw/out", "pw/out")}
    assert d["opcode"] == Opcode.DWSEP and d["flags"] == DescFlag.LAST
    assert (d["kernel"], d["stride"], d["dilation"], d["depth_mult"]) == (5, 2, 2, 3)
    assert (d["in_h"], d["in_w"], d["out_h"], d["out_w"]) == (9, 7, 5, 4)
    assert (d["in_groups"], d["mid_groups"], d["out_groups"]) == (2, 6, 3)
    # SAME, total padding (5-1)*2 + 4*2 + 1 - 9 = 8 rows and (4-1)*2 + 9 - 7 = 8 columns
    assert (d["pad_top"], d["pad_left"]) == (4, 4)
    assert (d["in_zp"], d["dw_zp"], d["pw_zp"]) == (zp["input"], zp["dw/out"], zp["pw/out"])
    assert d["pw_min"] == -128 and d["pw_max"] == 127  # NONE
    assert d["dw_min"] == zp["dw/out"]  # RELU6

    base = 0x2000_0040
    image = prog.link(base)
    assert len(image) == prog.size
    raw = DESCRIPTOR.unpack(image[:DESCRIPTOR.size])
    assert raw["in_addr"] == base + d["in_addr"] and raw["pw_table"] == base + d["pw_table"]
    regions = sorted([(b.offset, len(b.data)) for b in prog.blobs]
                     + [(prog.input.offset, prog.input.nbytes),
                        (prog.output.offset, prog.output.nbytes), (0, DESCRIPTOR.size)])
    for (o1, n1), (o2, _) in zip(regions, regions[1:], strict=False):
        assert o1 % ALIGN == 0 and o1 + n1 <= o2
    for blob in prog.blobs:
        assert image[blob.offset:blob.offset + len(blob.data)] == blob.data
    assert prog.input.offset < prog.output.offset
    assert prog.input.nbytes == 9 * 7 * 16 and prog.output.nbytes == 5 * 4 * 24
    with pytest.raises(ValueError, match="not 64-byte aligned"):
        prog.link(base + 8)
    r = prog.layers[0]
    assert r["macs"] == 5 * 4 * 39 * 25 + 5 * 4 * 39 * 17
    assert "9x7x13 -> dw 5x5 s2 d2 m3 SAME -> 5x4x39 -> pw -> 5x4x17" in prog.summary()


def test_dw_table_folds_bias_in_lane_order():
    s = spec(c=10, depth_multiplier=2)
    g = graph_from_spec(s)
    prog = compile_model(g, "tiny")
    blob = next(b for b in prog.blobs if b.name == "layer0.dw_table")
    bias, mult, shift = packing.unpack_table(blob.data, 4, 8)
    # mid group 3 = input group 1, j = 1; lane 1 is input channel 9 -> mid channel 19
    zp_in = int(g.tensors["input"].zero_point[0])
    want = (int(g.tensors["dw/bias"].data[19])
            - zp_in * int(g.tensors["dw/weights"].data[..., 19].astype(int).sum()))
    assert bias[3, 1] == want
    assert mult[3, 1] > 0 and (bias[3, 2:] == 0).all() and (mult[3, 2:] == 0).all()
    assert (shift[3, 2:] == 0).all()


def _chain(n: int) -> Graph:
    """``n`` layers of spec(): the PW output of one is the next one's input."""
    tensors, ops = {}, []
    prev = None
    for i in range(n):
        g = graph_from_spec(spec(c=10, c_out=10, seed=i))
        rename = {name: f"l{i}/{name}" for name in g.tensors}
        if prev is not None:
            rename["input"] = prev
        for name, t in g.tensors.items():
            if name != "input" or prev is None:
                t.name = rename[name]
                tensors[t.name] = t
        for op in g.operators:
            ops.append(Operator(op.opcode, [rename[x] for x in op.inputs],
                                [rename[x] for x in op.outputs], op.options, len(ops)))
        prev = rename["pw/out"]
    return Graph(tensors, ops, ["l0/input"], [prev])


def test_chain_of_layers():
    prog = compile_model(_chain(3), "tiny")
    assert len(prog.descriptors) == 3
    assert [d["flags"] for d in prog.descriptors] == [0, 0, DescFlag.LAST]
    for a, b in zip(prog.descriptors, prog.descriptors[1:], strict=False):
        assert a["out_addr"] == b["in_addr"]
    assert prog.descriptors[0]["in_addr"] == prog.input.offset
    assert prog.descriptors[2]["out_addr"] == prog.output.offset


# ---- unsupported models ----------------------------------------------------------------------

def _set(name, **kw):
    def edit(g):
        for k, v in kw.items():
            setattr(g.tensors[name], k, v)
    return edit


def _opt(index, **kw):
    def edit(g):
        g.operators[index].options.update(kw)
    return edit


def _add_op(g):
    g.tensors["z"] = Tensor("z", g.output.shape, "int8", np.ones(1, np.float32),
                            np.zeros(1, np.int64))
    g.operators.append(Operator("ADD", ["pw/out", "pw/out"], ["z"], {}, 2))
    g.outputs = ["z"]


def _mid_is_output(g):
    g.outputs = ["dw/out"]


def _pw_first(g):
    g.operators.reverse()
    g.operators[0].index, g.operators[1].index = 0, 1


LIMITS = [
    (spec(kernel=7), _set("dw/weights", shape=(1, 9, 9, 24)),
     "operator 0 DEPTHWISE_CONV_2D: kernel 9x9 exceeds k_max=7 of config 'tiny'"),
    (spec(), _set("dw/weights", shape=(1, 3, 5, 24)),
     "operator 0 DEPTHWISE_CONV_2D: kernel 3x5 is not square; dwsep runs square kernels only"),
    (spec(), _opt(0, stride_h=3, stride_w=3),
     "operator 0 DEPTHWISE_CONV_2D: stride 3 is not supported (1 or 2)"),
    (spec(), _opt(0, stride_w=2),
     "operator 0 DEPTHWISE_CONV_2D: stride 1x2 differs in height and width"),
    (spec(), _opt(0, dilation_h=3, dilation_w=3),
     "operator 0 DEPTHWISE_CONV_2D: dilation 3 exceeds dilation_max=2 of config 'tiny'"),
    (spec(), _opt(0, dilation_h=2),
     "operator 0 DEPTHWISE_CONV_2D: dilation 2x1 differs in height and width"),
    (spec(h=65), None,
     "operator 0 DEPTHWISE_CONV_2D: input height 65 exceeds max_dim=64 of config 'tiny'"),
    (spec(w=64, c=72, depth_multiplier=1), None,
     "operator 0 DEPTHWISE_CONV_2D: input row 64x72 (width x channels padded to 8) = 4608 "
     "bytes exceeds the line buffer row of 4096 bytes (lb_width*lb_channels) of config 'tiny'"),
    (spec(c=100, depth_multiplier=3), None,
     "operator 0 DEPTHWISE_CONV_2D: depthwise output channels 100x3 (padded to 312) exceed "
     "mid_channels_max=256 of config 'tiny'"),
    (spec(c_out=70), None,
     "operator 1 CONV_2D: output channels 70 (padded to 72) exceed out_channels_max=64 of "
     "config 'tiny'"),
    (spec(), _opt(0, activation="TANH"),
     "operator 0 DEPTHWISE_CONV_2D: fused activation TANH is not supported (allowed: NONE, "
     "RELU, RELU6, RELU_N1_TO_1)"),
    (spec(), _opt(1, activation="SIGN_BIT"),
     "operator 1 CONV_2D: fused activation SIGN_BIT is not supported"),
    (spec(), _set("input", dtype="float32"),
     "dwsep runs fully int8 models; tensor 'input' is float32"),
    (spec(), _set("dw/out", dtype="int16"),
     "dwsep runs fully int8 models; tensor 'dw/out' is int16"),
    (spec(), _set("dw/weights", dtype="float32"),
     "operator 0 DEPTHWISE_CONV_2D: weights 'dw/weights' are float32; dwsep needs int8"),
    (spec(), _set("pw/weights", zero_point=np.ones(10, np.int64)),
     "operator 1 CONV_2D: weights 'pw/weights' have a nonzero zero point"),
    (spec(), _set("dw/bias", dtype="int64"),
     "operator 0 DEPTHWISE_CONV_2D: bias 'dw/bias' is int64; dwsep needs int32 bias"),
    (spec(), _set("dw/out", scale=np.full(24, 0.1, np.float32)),
     "operator 0 DEPTHWISE_CONV_2D: tensor 'dw/out' must be per-tensor quantized, has 24 "
     "scales"),
    (spec(), _set("pw/weights", shape=(10, 3, 3, 24)),
     "operator 1 CONV_2D: kernel 3x3 is not 1x1"),
    (spec(), _opt(1, stride_h=2, stride_w=2),
     "operator 1 CONV_2D: stride 2x2 is not 1; the pointwise CONV_2D must have stride 1"),
    (spec(), _opt(1, dilation_h=2, dilation_w=2),
     "operator 1 CONV_2D: dilation 2x2 is not 1"),
    (spec(), _add_op, "operator 2 ADD: not supported; dwsep runs chains of DEPTHWISE_CONV_2D"),
    (spec(), _pw_first, "operator 0 CONV_2D: dwsep runs CONV_2D only as the 1x1 pointwise half"),
    (spec(), _mid_is_output,
     "operator 0 DEPTHWISE_CONV_2D: output 'dw/out' is also used by the model output"),
    (spec(), _set("input", shape=(2, 8, 8, 12)),
     "operator 0 DEPTHWISE_CONV_2D: input 'input' has shape [2, 8, 8, 12]; dwsep runs batch-1"),
]


@pytest.mark.parametrize("layer,edit,message", LIMITS, ids=[m[:60] for _, _, m in LIMITS])
def test_unsupported(layer, edit, message):
    g = graph_from_spec(layer)
    if edit is not None:
        edit(g)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_limits_follow_the_config():
    g = graph_from_spec(spec(c=100, depth_multiplier=3, c_out=70))
    assert compile_model(g, "pynq-z2").descriptors[0]["mid_groups"] == 7 * 3
