"""Compiler and DDR packing: format round trips, the mid-channel permutation, expand and
conv-mode weight words, the pool's exact division, descriptors, layer reports and the DDR
plan (buffer reuse never clobbers a live tensor), and the one-line UnsupportedModelError of
every hardware limit (requantizer input width, the packed arrays' weight range)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dwsep.host import numerics, packing
from dwsep.host.compiler import (
    ALIGN,
    PACKED_WEIGHT_MAX,
    check_packed_weights,
    check_requant_inputs,
    compile_model,
    exact_division_multiplier,
)
from dwsep.host.driver import Accelerator
from dwsep.host.graph import Graph, Operator, Tensor, UnsupportedModelError
from dwsep.host.reference import average_pool2d
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    BlockSpec,
    LayerSpec,
    MobileNetSpec,
    ModelBuilder,
    add_model,
    average_pool_model,
    dwsep_layer_model,
    fully_connected_model,
    mean_model,
    mobilenet_like_model,
    pool_fc_model,
    reshape_model,
    single_op_model,
)
from dwsep.hw.config import REQUANT_INPUT_BITS, get_config
from dwsep.hw.layout import ADDRESS_FIELDS, DESCRIPTOR, DescFlag, Opcode, table_record_bytes
from dwsep.sim.oracle import litert_run
from dwsep.sim.perf import held_tables

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


def test_table_records_of_four_lanes_are_padded():
    """Records of 4 lanes (tiny's requant_lanes): 36 bytes each, zero-padded to 40 (five
    beats); record r holds channels 4r..4r+3."""
    rng = np.random.default_rng(4)
    lanes, records = 4, 6
    bias = rng.integers(-2**31, 2**31, records * lanes)
    mult = rng.integers(0, 2**31, records * lanes)
    shift = rng.integers(-31, 8, records * lanes)
    raw = packing.pack_table(bias, mult, shift, lanes)
    assert table_record_bytes(lanes) == 40 and table_record_bytes(8) == 72
    assert len(raw) == records * 40
    # record 3, lane 1 (channel 13): bias at 120 + 4, mult at 120 + 16 + 4, shift at 120 + 33
    assert int.from_bytes(raw[124:128], "little", signed=True) == bias[13]
    assert int.from_bytes(raw[140:144], "little", signed=True) == mult[13]
    assert int.from_bytes(raw[153:154], "little", signed=True) == shift[13]
    assert all(raw[40 * r + 36:40 * r + 40] == bytes(4) for r in range(records))
    b, m, s = packing.unpack_table(raw, records, lanes)
    assert b.shape == (records, lanes)
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


def _readable_dw_weights(k: int) -> np.ndarray:
    """``int8[k, k, 4]`` for C=2 input channels, m=2: tens digit ``ky``, units digit ``kx``
    (plus 1), +50 for input channel 1 (mid channels 2, 3), negative for j=1 (mid 1, 3)."""
    ky, kx, mid = np.meshgrid(range(k), range(k), range(4), indexing="ij")
    return ((-1) ** mid * (50 * (mid // 2) + 10 * ky + kx + 1)).astype(np.int8)


def _lanes(*rows: tuple[int, int]) -> list[int]:
    """A DW weight word of T=3 rows of P=8 lanes whose lanes 0, 1 are ``rows[t]`` (lanes 2..7
    are the padding of C=2; rows past ``rows`` are the zero rows below the kernel)."""
    rows = list(rows) + [(0, 0)] * (3 - len(rows))
    return [v for a, b in rows for v in (a, b, 0, 0, 0, 0, 0, 0)]


# T=3, P=8, C=2, m=2: mid groups q=0 (mid channels 0, 2) and q=1 (mid channels 1, 3), each
# R = ceil(k/3) passes of k columns. Expected words written out by hand.
DW_WORDS = {
    1: {0: _lanes((1, 51)),                          # q=0: the tap, then two zero rows
        1: _lanes((-1, -51))},                       # q=1
    3: {0: _lanes((1, 51), (11, 61), (21, 71)),      # q=0, kx=0: rows 0, 1, 2
        2: _lanes((3, 53), (13, 63), (23, 73)),      # q=0, kx=2
        4: _lanes((-2, -52), (-12, -62), (-22, -72))},  # q=1, kx=1
    5: {4: _lanes((5, 55), (15, 65), (25, 75)),      # q=0, r=0, kx=4: rows 0, 1, 2
        5: _lanes((31, 81), (41, 91)),               # q=0, r=1, kx=0: rows 3, 4, zero row
        18: _lanes((-34, -84), (-44, -94)),          # q=1, r=1, kx=3
        19: _lanes((-35, -85), (-45, -95))},         # q=1, r=1, kx=4: the last word
}


@pytest.mark.parametrize("k", sorted(DW_WORDS))
def test_dw_weight_words_by_kernel_column(k):
    raw = packing.pack_dw_weights(_readable_dw_weights(k), 2, lanes=8, taps=3)
    words = np.frombuffer(raw, np.int8).reshape(-1, 3 * 8)
    assert len(words) == 2 * -(-k // 3) * k            # mid_groups * R * k
    for index, want in DW_WORDS[k].items():
        assert words[index].tolist() == want, index


@pytest.mark.parametrize("c,m,k,lanes,taps", [(5, 1, 3, 8, 3), (13, 3, 2, 8, 3),
                                              (9, 2, 1, 8, 3), (11, 2, 7, 8, 3),
                                              (20, 1, 5, 16, 2), (3, 3, 4, 8, 4),
                                              (7, 1, 3, 8, 1)])
def test_dw_weight_words(c, m, k, lanes, taps):
    rng = np.random.default_rng(c * m * k * taps)
    w = rng.integers(-128, 128, (k, k, c * m)).astype(np.int8)
    raw = packing.pack_dw_weights(w, m, lanes, taps)
    words = np.frombuffer(raw, np.int8)
    groups, passes = -(-c // lanes), -(-k // taps)
    assert words.size == groups * m * passes * k * taps * lanes
    unpacked = packing.unpack_dw_weights(raw, groups * m, k, lanes, taps)
    assert unpacked.shape == (groups * m, k, k, lanes)
    for g in range(groups):
        for j in range(m):
            q = g * m + j
            for r in range(passes):
                for kx in range(k):
                    word = words[((q * passes + r) * k + kx) * taps * lanes:][:taps * lanes]
                    for t in range(taps):
                        ky = r * taps + t
                        for i in range(lanes):
                            cin = g * lanes + i
                            want = w[ky, kx, cin * m + j] if cin < c and ky < k else 0
                            assert word[t * lanes + i] == want, (g, j, r, kx, t, i)
                            if ky < k:
                                assert unpacked[q, ky, kx, i] == want


def test_unpack_dw_weights_needs_all_words():
    raw = bytes(2 * 2 * 5 * 3 * 8 - 1)
    with pytest.raises(ValueError, match=r"depthwise weights of 2 mid groups, kernel 5x5 and 3 "
                                         r"taps need 480 bytes, got 479"):
        packing.unpack_dw_weights(raw, 2, 5, 8, 3)


def _packed_weights(rng, shape) -> np.ndarray:
    """Random weights of the expand / pointwise arrays: int8 without -128."""
    return rng.integers(-PACKED_WEIGHT_MAX, PACKED_WEIGHT_MAX + 1, shape).astype(np.int8)


@pytest.mark.parametrize("c,m,c_out,lanes,cols", [(5, 1, 3, 8, 8), (11, 3, 17, 8, 8),
                                                  (9, 2, 20, 16, 8)])
def test_pw_weight_words(c, m, c_out, lanes, cols):
    rng = np.random.default_rng(c + m + c_out)
    w = _packed_weights(rng, (c_out, c * m))
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


@pytest.mark.parametrize("ce,ci,lanes,cols", [(5, 3, 8, 8), (24, 17, 8, 8), (40, 16, 16, 16),
                                             (20, 17, 8, 16), (40, 16, 16, 24)])
def test_expand_weight_words(ce, ci, lanes, cols):
    """Words of ``lanes x cols`` bytes; the engine words cover the expanded channels padded
    to ``lanes`` (40 channels with P = 16, Q = 24: 48 channels, two words)."""
    rng = np.random.default_rng(ce * ci)
    w = _packed_weights(rng, (ce, ci))
    raw = np.frombuffer(packing.pack_expand_weights(w, lanes, cols), np.int8)
    g_e, g_i = -(-packing.padded(ce, lanes) // cols), -(-ci // lanes)
    assert raw.size == g_e * g_i * lanes * cols
    for oe in range(g_e):
        for gi in range(g_i):
            word = raw[(oe * g_i + gi) * lanes * cols:][:lanes * cols]
            for i in range(lanes):
                for o in range(cols):
                    co, cin = oe * cols + o, gi * lanes + i
                    want = w[co, cin] if co < ce and cin < ci else 0
                    assert word[i * cols + o] == want


@pytest.mark.parametrize("c_out,k,c_in,lanes,cols", [(5, 3, 3, 8, 8), (17, 2, 11, 8, 8),
                                                     (9, 1, 20, 16, 8)])
def test_conv_weight_words(c_out, k, c_in, lanes, cols):
    rng = np.random.default_rng(c_out + k + c_in)
    w = _packed_weights(rng, (c_out, k, k, c_in))
    raw = np.frombuffer(packing.pack_conv_weights(w, lanes, cols), np.int8)
    groups, og_n = -(-c_in // lanes), -(-c_out // cols)
    mid_groups = k * k * groups
    assert raw.size == og_n * mid_groups * lanes * cols
    for og in range(og_n):
        for g in range(groups):
            for ky in range(k):
                for kx in range(k):
                    t = (g * k + ky) * k + kx
                    word = raw[(og * mid_groups + t) * lanes * cols:][:lanes * cols]
                    for i in range(lanes):
                        for o in range(cols):
                            co, cin = og * cols + o, g * lanes + i
                            want = w[co, ky, kx, cin] if co < c_out and cin < c_in else 0
                            assert word[i * cols + o] == want


def test_unpack_raw():
    acc = np.array([[-(2**31), 5, 2**31 - 1], [7, -8, 9]], np.int64)
    raw = np.zeros((2, 8), "<i4")
    raw[:, :3] = acc
    raw[:, 3:] = 99  # padding channels, ignored
    assert (packing.unpack_raw(raw.tobytes(), 2, 3, 8) == acc).all()
    with pytest.raises(ValueError, match=r"raw output 2x3 \(padded to 8\) needs 64 bytes, got 60"):
        packing.unpack_raw(raw.tobytes()[:60], 2, 3, 8)


def test_identity_requant():
    x = np.arange(-(2**16), 2**16, 7)
    assert (numerics.multiply_by_quantized_multiplier(
        x, packing.IDENTITY_MULT, packing.IDENTITY_SHIFT) == x).all()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 9, 12, 16, 25, 35, 49, 64])
def test_exact_division_matches_average_pool(n):
    """The (mult, shift) reproduces reference.average_pool2d on windows whose sums cover
    every value in [-128n, 127n] (each sum built from n int8 values)."""
    mult, shift = exact_division_multiplier(n)
    sums = np.arange(-128 * n, 127 * n + 1)
    windows = np.full((sums.size, n), -128, np.int64)
    rest = sums + 128 * n  # distribute 0..255n over the n values, 255 at most each
    for j in range(n):
        take = np.minimum(rest, 255)
        windows[:, j] += take
        rest -= take
    x = windows.astype(np.int8).reshape(sums.size, 1, n, 1).transpose(2, 1, 0, 3)[:, :, :, 0]
    x = x.reshape(n, 1, sums.size)  # [H=n, W=1, C=windows]
    want = average_pool2d(x, filter_hw=(n, 1), stride=(1, 1), padding=(0, 0, 0, 0),
                          act_min=-128, act_max=127)[0, 0]
    got = np.clip(numerics.multiply_by_quantized_multiplier(sums, mult, shift), -128, 127)
    assert (got == want).all()


# ---- compiled program ------------------------------------------------------------------------

def test_descriptor_and_plan():
    s = spec(h=9, w=7, c=13, depth_multiplier=3, kernel=5, stride=2, dilation=2, c_out=17)
    g = graph_from_spec(s)
    prog = compile_model(g, "tiny")
    (d,) = prog.descriptors
    zp = {name: int(g.tensors[name].zero_point[0]) for name in ("input", "dw/out", "pw/out")}
    assert d["opcode"] == Opcode.LAYER and d["flags"] == DescFlag.LAST
    assert (d["kernel"], d["stride"], d["dilation"], d["depth_mult"]) == (5, 2, 2, 3)
    assert (d["in_h"], d["in_w"], d["out_h"], d["out_w"]) == (9, 7, 5, 4)
    assert (d["in_groups"], d["exp_groups"], d["mid_groups"], d["out_groups"]) == (2, 2, 6, 3)
    assert d["out_pitch"] == 3  # 24 channels, 3 beats per pixel
    # SAME, total padding (5-1)*2 + 4*2 + 1 - 9 = 8 rows and (4-1)*2 + 9 - 7 = 8 columns
    assert (d["pad_top"], d["pad_left"]) == (4, 4)
    assert (d["lb_zp"], d["dw_zp"], d["pw_zp"]) == (zp["input"], zp["dw/out"], zp["pw/out"])
    assert d["pw_min"] == -128 and d["pw_max"] == 127  # NONE
    assert d["dw_min"] == zp["dw/out"]  # RELU6
    unused = ("res_addr", "add_table", "exp_weights", "exp_table")
    assert all(d[f] == 0 for f in unused) and d["add_out_shift"] == d["exp_zp"] == 0

    base = 0x2000_0040
    image = prog.link(base)
    assert len(image) == prog.size
    raw = DESCRIPTOR.unpack(image[:DESCRIPTOR.size])
    assert raw["in_addr"] == base + d["in_addr"] and raw["pw_table"] == base + d["pw_table"]
    assert all(raw[f] == base for f in unused)
    regions = sorted([(b.offset, len(b.data)) for b in prog.blobs]
                     + [(prog.input.offset, prog.input.nbytes),
                        (prog.output.offset, prog.output.nbytes), (0, DESCRIPTOR.size)])
    for (o1, n1), (o2, _) in zip(regions, regions[1:], strict=False):
        assert o1 % ALIGN == 0 and o1 + n1 <= o2
    for blob in prog.blobs:
        assert image[blob.offset:blob.offset + len(blob.data)] == blob.data
    assert prog.input.nbytes == 9 * 7 * 16 and prog.output.nbytes == 5 * 4 * 24
    with pytest.raises(ValueError, match="not 64-byte aligned"):
        prog.link(base + 8)
    r = prog.layers[0]
    assert r["macs"] == 5 * 4 * 39 * 25 + 5 * 4 * 39 * 17
    assert r["stages"] == ["DW", "PW"] and r["descriptors"] == [0, 1]
    assert ("layer 0 [descriptor 0] operators 0,1 DEPTHWISE_CONV_2D+CONV_2D -> DW+PW: 9x7x13 "
            "-> 5x4x17, k5 s2 d2 m3") in prog.summary()
    assert prog.host_steps == [] and prog.output_step is None


def test_dw_table_folds_bias_in_lane_order():
    s = spec(c=10, depth_multiplier=2)
    g = graph_from_spec(s)
    prog = compile_model(g, "tiny")
    blob = next(b for b in prog.blobs if b.name == "layer0.dw_table")
    # 4 mid groups of 8 lanes in records of tiny's requant_lanes = 4 lanes (40 bytes each)
    assert len(blob.data) == 8 * 40
    bias, mult, shift = (a.reshape(4, 8) for a in packing.unpack_table(blob.data, 8, 4))
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


def _stages(desc: dict) -> DescFlag:
    """A descriptor's flags but those of the engine's weight plan (``*_LOADED``)."""
    return DescFlag(desc["flags"]) & ~(DescFlag.EXP_LOADED | DescFlag.PW_LOADED)


def test_chain_of_layers():
    prog = compile_model(_chain(3), "tiny")
    assert len(prog.descriptors) == 3
    # the first loads its PW weights; each of the others finds them prefetched by the one
    # before, at the other end of the engine's weight memory
    assert [d["flags"] for d in prog.descriptors] == [
        0, DescFlag.PW_LOADED, DescFlag.PW_LOADED | DescFlag.LAST]
    depth = get_config("tiny").engine_weight_depth
    for a, b in zip(prog.descriptors, prog.descriptors[1:], strict=False):
        assert a["out_addr"] == b["in_addr"]
        words = b["mid_groups"] * b["out_groups"]
        assert (a["pf0_addr"], a["pf0_words"], a["pf0_base"]) == (
            b["pw_weights"], words, b["pw_wbase"])
        assert a["pf1_words"] == 0
    assert [d["pw_wbase"] for d in prog.descriptors] == [
        0, depth - prog.descriptors[1]["mid_groups"] * prog.descriptors[1]["out_groups"], 0]
    assert prog.descriptors[2]["pf0_words"] == 0
    assert prog.descriptors[0]["in_addr"] == prog.input.offset
    assert prog.descriptors[2]["out_addr"] == prog.output.offset


def test_output_tiles():
    prog = compile_model(graph_from_spec(spec(c_out=70)), "tiny")  # out_channels_max 64
    a, b = prog.descriptors
    # nine groups in two tiles of balanced size (8 + 1 would repeat the DW for one group)
    assert (a["out_groups"], b["out_groups"]) == (5, 4)
    assert a["out_pitch"] == b["out_pitch"] == 9  # the whole tensor: 72 channels
    assert b["out_addr"] == a["out_addr"] + 40
    assert a["in_addr"] == b["in_addr"] and a["dw_weights"] == b["dw_weights"]
    assert a["pw_weights"] != b["pw_weights"] and prog.layers[0]["tiles"] == 2


def test_output_tiles_sized_for_the_prefetch():
    """Tiles are cut smaller when that lets two consecutive ones' PW weights share the
    engine's weight memory: the second's are then read while the first runs."""
    layer = graph_from_spec(spec(c=128, depth_multiplier=2, c_out=64))  # 32 mid groups
    assert len(compile_model(layer, "tiny").descriptors) == 1   # 8 x 32 words: one tile
    small = dataclasses.replace(get_config("tiny"), expand_channels_max=8)
    assert small.engine_weight_depth == 288 < 2 * 8 * 32
    a, b = compile_model(layer, small).descriptors
    assert (a["out_groups"], b["out_groups"]) == (4, 4)
    assert b["flags"] & DescFlag.PW_LOADED and a["pf0_words"] == 4 * 32
    assert a["pf0_base"] == b["pw_wbase"]


MOBILENET = MobileNetSpec(h=16, w=16, stem_channels=8,
                          blocks=(BlockSpec(1, 8, 1), BlockSpec(4, 12, 2), BlockSpec(3, 12, 1)),
                          head_channels=40, pool="MEAN", keep_dims=False, classes=10,
                          fc_per_channel=True, reshape=True, seed=3)


def test_mobilenet_like_report():
    g = read_tflite(mobilenet_like_model(MOBILENET))
    prog = compile_model(g, "tiny")
    r = prog.layers
    assert [x["stages"] for x in r] == [
        ["CONV", "PW"], ["DW", "PW", "RESIDUAL"], ["EXPAND", "DW", "PW"],
        ["EXPAND", "DW", "PW", "RESIDUAL"], ["DW", "PW"], ["POOL", "PW", "RAW_OUT"]]
    assert [x["ops"] for x in r] == [
        ["CONV_2D", "PAD"], ["DEPTHWISE_CONV_2D", "CONV_2D", "ADD"],
        ["CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D"],
        ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD"], ["CONV_2D"],
        ["MEAN", "FULLY_CONNECTED", "RESHAPE"]]
    assert sorted(i for x in r for i in x["operators"]) == list(range(len(g.operators)))
    assert r[0]["pad_top"] == r[0]["pad_left"] == 1 and r[0]["stride"] == 2
    assert r[2]["input_shape"] == [8, 8, 8] and r[2]["mid_channels"] == 32
    assert r[-1]["host_step"] == "fc_requant" and r[-1]["runs_on"] == "accelerator + host"
    (step,) = prog.host_steps
    assert step is prog.output_step and step.kind == "fc_requant" and step.layer == 5
    assert prog.output.offset is None and prog.output.shape == (1, 1, 1, 10)
    d = prog.descriptors
    assert _stages(d[1]) == DescFlag.RESIDUAL and d[1]["res_addr"] == d[1]["in_addr"]
    assert _stages(d[0]) == DescFlag.CONV and d[0]["mid_groups"] == 9
    assert _stages(d[2]) == DescFlag.EXPAND and (d[2]["in_groups"], d[2]["exp_groups"]) == (1, 4)
    assert _stages(d[5]) == DescFlag.POOL | DescFlag.RAW_OUT | DescFlag.LAST
    assert d[5]["out_pitch"] == 8 and (d[5]["in_h"], d[5]["out_h"], d[5]["kernel"]) == (4, 1, 1)
    assert step.params["partials"] == [d[5]["out_addr"]]
    summary = prog.summary()
    assert summary.startswith("config 'tiny': 6 layer(s), 6 descriptor(s), ")
    assert ("layer 5 [descriptor 5] operators 14,15,16 MEAN+FULLY_CONNECTED+RESHAPE -> "
            "POOL+PW+RAW_OUT: 4x4x40 -> 1x1x10, k1 s1 d1 m1") in summary
    assert summary.endswith("then fc_requant on the host")


def test_split_expand_and_slices():
    cfg = dataclasses.replace(get_config("tiny"), expand_channels_max=8, mid_channels_max=72,
                              out_channels_max=16)
    g = read_tflite(mobilenet_like_model(dataclasses.replace(MOBILENET, head_channels=80)))
    prog = compile_model(g, cfg)
    r = prog.layers
    split = [x for x in r if "split" in x["note"]]
    assert len(split) == 1 and split[0]["output_shape"] == [4, 4, 36]
    assert "12 input channels exceed expand_channels_max=8" in split[0]["note"]
    assert split[0]["tiles"] == 3  # 36 channels in tiles of 16
    head, pool = r[-2:]
    assert head["tiles"] == 5 and pool["input_slices"] == 5 and pool["tiles"] == 1
    first, count = pool["descriptors"]
    pool_d = prog.descriptors[first:first + count]
    head_d = prog.descriptors[head["descriptors"][0]:][:5]
    # each head tile is a separate contiguous tensor, pooled by its own descriptor
    assert [h["out_addr"] for h in head_d] == [p["in_addr"] for p in pool_d]
    assert [h["out_pitch"] for h in head_d] == [2] * 5
    assert [p["in_groups"] for p in pool_d] == [2] * 5
    assert len(set(p["out_addr"] for p in pool_d)) == 5
    assert prog.output_step.params["partials"] == [p["out_addr"] for p in pool_d]


def test_head_pools_once_then_fc():
    """An FC wider than one output tile is not fused into the pool (whose tiles would each
    re-read the pool's input): the pool runs once per channel slice (the head's output tiles,
    stored as separate tensors) into one pooled vector, every slice's tables the same blobs,
    held on chip after the first; the FC reads that vector in slices of at most
    mid_channels_max channels where it lies, each of its weights once."""
    cfg = dataclasses.replace(TINY, mid_channels_max=72, out_channels_max=16)
    model = mobilenet_like_model(dataclasses.replace(MOBILENET, head_channels=80, classes=40))
    g = read_tflite(model)
    prog = compile_model(g, cfg)
    head, pool, fc = prog.layers[-3:]
    assert head["tiles"] == 5
    assert pool["ops"] == ["MEAN"] and pool["stages"] == ["POOL", "PW"]
    assert (pool["input_slices"], pool["tiles"], pool["output_shape"]) == (5, 1, [1, 1, 80])
    assert fc["ops"] == ["FULLY_CONNECTED", "RESHAPE"] and fc["input_shape"] == [1, 1, 80]
    assert fc["stages"] == ["DW", "PW", "RAW_OUT"]
    assert (fc["input_slices"], fc["tiles"]) == (2, 3)
    d = prog.descriptors
    head_d, pool_d, fc_d = (d[r["descriptors"][0]:sum(r["descriptors"])]
                            for r in (head, pool, fc))
    assert [h["out_addr"] for h in head_d] == [p["in_addr"] for p in pool_d]
    pooled = pool_d[0]["out_addr"]
    assert [p["out_addr"] - pooled for p in pool_d] == [0, 16, 32, 48, 64]
    assert [p["out_pitch"] for p in pool_d] == [10] * 5
    tables = {"dw_weights", "dw_table", "pw_weights", "pw_table"}
    assert all(len({p[f] for p in pool_d}) == 1 for f in tables)
    held = held_tables(cfg, d)
    first = pool["descriptors"][0]
    # the controller holds the DW tables and PW table; the PW weights, prefetched while the
    # last head tile ran, stay where they are, each tile flagged to find them there
    assert held[first] == set() and held[first + 1:first + 5] == [tables - {"pw_weights"}] * 4
    assert d[first - 1]["pf0_addr"] == pool_d[0]["pw_weights"]
    assert all(p["flags"] & DescFlag.PW_LOADED for p in pool_d)
    assert len({p["pw_wbase"] for p in pool_d}) == 1
    assert [(f["in_addr"] - pooled, f["in_groups"], f["kernel"], f["out_groups"])
            for f in fc_d] == [(0, 9, 1, 2)] * 2 + [(0, 9, 1, 1)] + [(72, 1, 1, 2)] * 2 + [
                (72, 1, 1, 1)]
    assert len({f["pw_weights"] for f in fc_d}) == 6
    assert prog.output_step.params["partials"] == [fc_d[0]["out_addr"], fc_d[3]["out_addr"]]
    x = np.random.default_rng(1).integers(-128, 128, g.input.shape, np.int8)
    with Accelerator(cfg, "reference") as acc:
        assert np.array_equal(acc.run(g, x), litert_run(model, x))


@pytest.mark.parametrize("units,layers,tiles", [
    (20, [["AVERAGE_POOL_2D", "FULLY_CONNECTED"]], [1]),
    (70, [["AVERAGE_POOL_2D"], ["FULLY_CONNECTED"]], [2, 2])])
def test_pool_and_fc_over_the_model_input(units, layers, tiles):
    """A global pool over the model input, which cannot be stored in slices, of 100 channels
    on 'tiny' (out_channels_max 64): the FC fuses into it when its outputs fit one tile (one
    descriptor, nothing read twice); else the pool runs alone, its two output tiles each
    reading the whole input, and the FC's two tiles read the pooled vector."""
    model = pool_fc_model(3, 3, 100, units, seed=4)
    g = read_tflite(model)
    prog = compile_model(g, TINY)
    assert [r["ops"] for r in prog.layers] == layers
    assert [r["tiles"] for r in prog.layers] == tiles
    assert all(r["input_slices"] == 1 for r in prog.layers)
    d = prog.descriptors[:tiles[0]]
    assert all(x["in_addr"] == prog.input.offset and x["kernel"] == 1
               and x["flags"] & DescFlag.POOL for x in d)
    x = np.random.default_rng(2).integers(-128, 128, g.input.shape, np.int8)
    with Accelerator(TINY, "reference") as acc:
        assert np.array_equal(acc.run(g, x), litert_run(model, x))


def _accesses(prog):
    """Per descriptor: the byte ranges ``(start, end)`` it reads at ``in_addr`` and writes
    (its output pixels), from the descriptor fields alone."""
    P = prog.config.dw_lanes
    out = []
    for d in prog.descriptors:
        read = (d["in_addr"], d["in_addr"] + d["in_h"] * d["in_w"] * d["in_groups"] * P)
        pixel = 8 * d["out_beats"]
        writes = [(d["out_addr"] + 8 * p * d["out_pitch"],
                   d["out_addr"] + 8 * p * d["out_pitch"] + pixel)
                  for p in range(d["out_h"] * d["out_w"])]
        out.append((read, writes))
    return out


@pytest.mark.parametrize("config", ["tiny", "pynq-z2"])
def test_buffer_reuse_never_clobbers_live_data(config):
    """Replaying the descriptors' reads and writes on the DDR image: every byte a layer reads
    was last written by the layer that produces its input tensor (or by the host: model
    input), so reusing a dead tensor's buffer never overwrote one still to be read."""
    g = read_tflite(mobilenet_like_model(dataclasses.replace(
        MOBILENET, blocks=MOBILENET.blocks * 2, head_channels=70)))
    prog = compile_model(g, config)
    producer = {r["output"]: r["layer"] for r in prog.layers}
    owner = np.full(prog.size, -1)  # layer that last wrote each byte (-1: the host)
    for i, ((a, b), writes) in enumerate(_accesses(prog)):
        layer = prog.layer_of_descriptor(i)
        assert set(owner[a:b].tolist()) == {producer.get(layer["input"], -1)}, i
        for a, b in writes:
            owner[a:b] = layer["layer"]
    blobs_end = max(b.offset + len(b.data) for b in prog.blobs)
    assert prog.size - blobs_end < sum(  # reuse made the activation area smaller
        int(np.prod(t.shape)) for t in g.tensors.values() if t.data is None)
    for f in ADDRESS_FIELDS:
        assert all(d[f] % 8 == 0 for d in prog.descriptors)


def test_single_operator_layers():
    """Operators without a partner get identity stages: a lone DW (identity PW), a kxk
    CONV_2D (conv mode), pools, MEAN, FC (identity DW + RAW_OUT), ADD with a constant."""
    rng = np.random.default_rng(0)
    q = (0.05, 3)
    s = spec(c=5, depth_multiplier=2, c_out=6)
    cases = {
        "dw": (single_op_model(s, "DEPTHWISE_CONV_2D"), ["DW", "PW"]),
        "conv": (single_op_model(s, "CONV_2D"), ["CONV", "PW"]),
        "avg": (average_pool_model((1, 9, 9, 13), (3, 3), (2, 2), "VALID", q), ["DW", "PW"]),
        "mean": (mean_model((1, 6, 3, 20), [1, 2], True, q, (0.02, -7)), ["POOL", "PW"]),
        "fc": (fully_connected_model((1, 1, 1, 30), rng.integers(-100, 100, (12, 30)).astype(
            np.int8), [0.01], None, q, (0.2, 1), w_zp=7), ["DW", "PW", "RAW_OUT"]),
        "add": (add_model((1, 5, 6, 11), q, rng.integers(-128, 128, (1, 5, 6, 11)).astype(
            np.int8), (0.07, -5), (0.1, 2)), ["DW", "PW", "RESIDUAL"]),
    }
    for name, (model, stages) in cases.items():
        prog = compile_model(read_tflite(model), "tiny")
        assert [r["stages"] for r in prog.layers] == [stages], name
    d = compile_model(read_tflite(cases["dw"][0]), "tiny").descriptors[0]
    dw_table = d["dw_table"]
    assert d["depth_mult"] == 2 and d["pw_zp"] == 0 and (d["pw_min"], d["pw_max"]) == (-128, 127)
    assert dw_table > 0
    prog = compile_model(read_tflite(cases["avg"][0]), "tiny")
    (d,) = prog.descriptors
    assert (d["kernel"], d["stride"], d["lb_zp"], d["dw_zp"]) == (3, 2, 0, 0)
    table = next(b for b in prog.blobs if b.offset == d["dw_table"])
    bias, mult, shift = packing.unpack_table(table.data, 4, 4)  # 2 groups of 8, records of 4
    assert (mult[0, 0], shift[0, 0]) == exact_division_multiplier(9) and (bias == 0).all()


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


def _max_pool(g):
    g.tensors["z"] = Tensor("z", g.output.shape, "int8", np.ones(1, np.float32),
                            np.zeros(1, np.int64))
    g.operators.append(Operator("MAX_POOL_2D", ["pw/out"], ["z"], {}, 2))
    g.outputs = ["z"]


def _pw_first(g):
    g.operators.reverse()
    g.operators[0].index, g.operators[1].index = 0, 1


LIMITS = [
    (spec(kernel=7), _set("dw/weights", shape=(1, 9, 9, 24)),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): kernel 9x9 exceeds k_max=7 of config 'tiny'"),
    (spec(), _set("dw/weights", shape=(1, 3, 5, 24)),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): kernel 3x5 is not square; dwsep runs square "
     "kernels only"),
    (spec(), _opt(0, stride_h=3, stride_w=3),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): stride 3 is not supported (1 or 2)"),
    (spec(), _opt(0, stride_w=2),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): stride 1x2 differs in height and width"),
    (spec(), _opt(0, dilation_h=7, dilation_w=7),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): dilation 7 of a 3x3 kernel spans 15 input "
     "rows, more than lb_window=13 of config 'tiny' (at most dilation 6 at this kernel)"),
    (spec(), _opt(0, dilation_h=2),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): dilation 2x1 differs in height and width"),
    (spec(h=65), None,
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): input height 65 exceeds max_dim=64 of config "
     "'tiny'"),
    (spec(w=64, c=72, depth_multiplier=1), None,
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): line-buffer row 64x72 (width x channels padded "
     "to 8) = 4608 bytes exceeds the 4096 bytes (lb_width*lb_channels) of config 'tiny'"),
    (spec(c=100, depth_multiplier=3), None,
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): depthwise output channels 100x3 (padded to 312) "
     "exceed mid_channels_max=256 of config 'tiny'"),
    (spec(), _opt(0, activation="TANH"),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): fused activation TANH is not supported "
     "(allowed: NONE, RELU, RELU6, RELU_N1_TO_1)"),
    (spec(), _opt(1, activation="SIGN_BIT"),
     "operator 1 CONV_2D ('pw/out'): fused activation SIGN_BIT is not supported"),
    (spec(), _set("input", dtype="float32"),
     "dwsep runs fully int8 models; the model input 'input' is float32: quantize the model "
     "to int8 with int8 input and output ('dwsep quantize' for MobileNet V1/V2, or TFLite's "
     "converter with inference_input_type and inference_output_type tf.int8)"),
    (spec(), _set("pw/out", dtype="float32"),
     "dwsep runs fully int8 models; the model output 'pw/out' is float32: quantize"),
    (spec(), _set("dw/out", dtype="int16"),
     "dwsep runs fully int8 models; tensor 'dw/out' is int16"),
    (spec(), _set("dw/weights", dtype="float32"),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): weights 'dw/weights' are float32; dwsep needs "
     "int8"),
    (spec(), _set("pw/weights", zero_point=np.ones(10, np.int64)),
     "operator 1 CONV_2D ('pw/out'): weights 'pw/weights' have a nonzero zero point"),
    (spec(), _set("dw/bias", dtype="int64"),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): bias 'dw/bias' is int64; dwsep needs int32 bias"),
    (spec(), _set("dw/out", scale=np.full(24, 0.1, np.float32)),
     "operator 0 DEPTHWISE_CONV_2D ('dw/out'): tensor 'dw/out' must be per-tensor quantized, "
     "has 24 scales"),
    (spec(), _opt(1, stride_h=2, stride_w=2),
     "operator 1 CONV_2D ('pw/out'): output 'pw/out' has shape [1, 8, 8, 10], the layer "
     "computes [1, 4, 4, 10]"),
    (spec(), _max_pool,
     "operator 2 MAX_POOL_2D ('z'): not supported; dwsep runs ADD, AVERAGE_POOL_2D, CONV_2D, "
     "DEPTHWISE_CONV_2D, FULLY_CONNECTED, MEAN, PAD, PADV2, RESHAPE"),
    (spec(), _pw_first,
     "operator 0 CONV_2D ('pw/out'): input 'dw/out' is not computed before it"),
    (spec(), _set("input", shape=(2, 8, 8, 12)),
     "the model input 'input' has shape [2, 8, 8, 12]; dwsep runs batch-1 NHWC inputs"),
]


@pytest.mark.parametrize("layer,edit,message", LIMITS, ids=[m[:70] for _, _, m in LIMITS])
def test_unsupported(layer, edit, message):
    g = graph_from_spec(layer)
    if edit is not None:
        edit(g)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def _stem_pad(g):
    return next(op for op in g.operators if op.opcode == "PAD")


def _pad_two_readers(g):
    pad = _stem_pad(g)
    g.tensors["z"] = Tensor("z", g.tensors[pad.outputs[0]].shape, "int8",
                            np.ones(1, np.float32), np.zeros(1, np.int64))
    g.operators.append(Operator("ADD", [pad.outputs[0]] * 2, ["z"], {}, len(g.operators)))


def _pad_channels(g):
    g.tensors[_stem_pad(g).inputs[1]].data = np.array([[0, 0], [1, 1], [1, 1], [0, 2]])


def _pad_rows(g):
    g.tensors[_stem_pad(g).inputs[1]].data = np.array([[0, 0], [15, 1], [1, 1], [0, 0]])


def _fc_feeds_add(g):
    fc = next(op for op in g.operators if op.opcode == "FULLY_CONNECTED")
    y = g.tensors[fc.outputs[0]]
    g.tensors["z"] = Tensor("z", y.shape, "int8", y.scale, y.zero_point)
    g.operators.append(Operator("ADD", [fc.outputs[0]] * 2, ["z"], {}, len(g.operators)))
    g.outputs = ["z"]


NETWORK_LIMITS = [
    (MOBILENET, _pad_two_readers,
     "operator 0 PAD ('pad1/out'): dwsep folds PAD into the padding of the one CONV_2D or "
     "DEPTHWISE_CONV_2D that reads it; its output has other readers"),
    (MOBILENET, _pad_channels,
     "operator 0 PAD ('pad1/out'): paddings [[0, 0], [1, 1], [1, 1], [0, 2]] pad the batch or "
     "channel dimension; dwsep folds only height/width padding"),
    (MOBILENET, _pad_rows,
     "operator 1 CONV_2D ('conv_2d2/out'): padding top 15 reaches the line buffer's limit "
     "lb_window=13 of config 'tiny'"),
    (MOBILENET, _fc_feeds_add,
     "operator 15 FULLY_CONNECTED ('fully_connected16/out'): its output feeds other operators; "
     "FULLY_CONNECTED requantizes on the host after the hardware run"),
    (dataclasses.replace(MOBILENET, stem_channels=72, blocks=(BlockSpec(1, 72, 1),)), None,
     "operator 4 ADD ('add5/out'): residual ADD of 72 channels: the residual stage cannot be "
     "tiled and out_channels_max=64 of config 'tiny' is smaller"),
]


@pytest.mark.parametrize("net,edit,message", NETWORK_LIMITS,
                         ids=[m[:70] for _, _, m in NETWORK_LIMITS])
def test_unsupported_network(net, edit, message):
    g = read_tflite(mobilenet_like_model(net))
    if edit is not None:
        edit(g)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model,message", [
    (single_op_model(spec(c=30, kernel=5), "CONV_2D"),
     "operator 0 CONV_2D ('conv/out'): 5x5 convolution over 30 channels needs k*k*ceil(C/8) = "
     "100 PW input words per pixel, more than mid_channels_max/dw_lanes=32 of config 'tiny'"),
    (average_pool_model((1, 9, 9, 4), (3, 3), (1, 1), "SAME", (0.1, 0)),
     "operator 0 AVERAGE_POOL_2D ('output'): padding SAME: dwsep runs VALID average pools"),
    (mean_model((1, 4, 4, 8), [3], True, (0.1, 0), (0.1, 0)),
     "operator 0 MEAN ('output'): axes [3] of a 4-d input: dwsep runs MEAN over height and "
     "width"),
    (mean_model((1, 2, 2, 300), [1, 2], True, (0.1, 0), (0.1, 0)),
     "operator 0 MEAN ('output'): input 'input' has 300 channels, more than "
     "mid_channels_max=256 of config 'tiny', and cannot be stored in slices (it is the model "
     "input or output, read twice, or made by an ADD)"),
    (reshape_model((1, 4, 4, 8), (1, 4, 32), (0.1, 0)),
     "operator 0 RESHAPE ('output'): reshape [1, 4, 4, 8] -> [1, 4, 32] changes the channel "
     "count of a multi-pixel tensor"),
])
def test_unsupported_operator(model, message):
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(read_tflite(model), "tiny")
    assert str(info.value).startswith(message)


def test_dw_weight_words_bound_a_stage_by_its_kernel():
    """``dw_weight_words`` (tiny at its least, 96: a 3x3 stage of 256 channels) holds
    ``dw_passes(k) * k`` words a group: a 5x5 depthwise stage of 104 channels (130 words) is
    refused, one of 72 (90) runs; a 7x7 pooling window over 80 channels of the model input
    (21 words a group: 32 channels fit; the input cannot be sliced) is refused. A global
    pool streams its pixels through a 1x1 DW (one word a group): 80 channels in one
    descriptor, bit-exact."""
    cfg = dataclasses.replace(TINY, dw_weight_words=96)
    assert (cfg.dw_channels_max(3), cfg.dw_channels_max(5), cfg.dw_channels_max(7)) == (
        256, 72, 32)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(graph_from_spec(spec(c=100, depth_multiplier=1, kernel=5)), cfg)
    assert str(info.value) == (
        "operator 0 DEPTHWISE_CONV_2D ('dw/out'): depthwise output channels 100 (padded to "
        "104) of a 5x5 kernel need 130 DW weight words, more than dw_weight_words=96 of "
        "config 'tiny' (at most 72 channels at this kernel)")
    prog = compile_model(graph_from_spec(spec(c=72, depth_multiplier=1, kernel=5)), cfg)
    assert prog.descriptors[0]["mid_groups"] * cfg.dw_passes(5) * 5 == 90

    model = mobilenet_like_model(dataclasses.replace(MOBILENET, h=28, w=28, head_channels=80))
    g = read_tflite(model)
    prog = compile_model(g, cfg)
    pool = next(r for r in prog.layers if r["ops"][0] == "MEAN")
    assert pool["input_shape"] == [7, 7, 80] and pool["input_slices"] == 1
    assert pool["stages"][0] == "POOL"
    x = np.random.default_rng(3).integers(-128, 128, g.input.shape, np.int8)
    with Accelerator(cfg, "reference") as acc:
        assert np.array_equal(acc.run(g, x), litert_run(model, x))

    q = (0.05, 3)
    model = average_pool_model((1, 9, 9, 80), (7, 7), (1, 1), "VALID", q)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(read_tflite(model), cfg)
    assert str(info.value) == (
        "operator 0 AVERAGE_POOL_2D ('output'): input 'input' has 80 channels, more than the "
        "32 whose 7x7 DW weights fit dw_weight_words=96 of config 'tiny', and cannot be "
        "stored in slices (it is the model input or output, read twice, or made by an ADD)")


@pytest.mark.parametrize("shape, kind", [((1, 64, 50, 8), "mean"), ((1, 40, 24, 20), "avg"),
                                         ((1, 1, 64, 12), "avg"), ((1, 9, 9, 70), "mean")])
def test_global_pools_of_any_size(shape, kind):
    """A global AVERAGE_POOL_2D or MEAN over any H x W up to max_dim (square or not, one
    row, wider than a tile) streams every pixel through one POOL descriptor (per output
    tile), bit-exact: the DW requantizer sums the pixels, then divides as TFLite rounds."""
    q = (0.05, 3)
    model = (mean_model(shape, [1, 2], True, q, (0.03, -5)) if kind == "mean" else
             average_pool_model(shape, shape[1:3], (1, 1), "VALID", q))
    prog = compile_model(read_tflite(model), TINY)
    assert [r["stages"] for r in prog.layers] == [["POOL", "PW"]]
    assert all(d["flags"] & DescFlag.POOL and (d["in_h"], d["in_w"]) == shape[1:3]
               and (d["kernel"], d["out_h"], d["out_w"]) == (1, 1, 1) for d in prog.descriptors)
    x = np.random.default_rng(sum(shape)).integers(-128, 128, shape, np.int8)
    with Accelerator(TINY, "reference") as acc:
        assert np.array_equal(acc.run(model, x), litert_run(model, x))


def test_pooling_window_limit():
    q = (0.05, 3)
    with pytest.raises(UnsupportedModelError, match=r"^operator 0 AVERAGE_POOL_2D \('output'\): "
                       r"pooling window 9x9 exceeds k_max=7 of config 'tiny'$"):
        compile_model(read_tflite(average_pool_model((1, 12, 12, 8), (9, 9), (1, 1), "VALID",
                                                     q)), TINY)


def test_limits_follow_the_config():
    g = graph_from_spec(spec(c=100, depth_multiplier=3, c_out=70))
    assert compile_model(g, "pynq-z2").descriptors[0]["mid_groups"] == 7 * 3


# ---- requantizer input width -----------------------------------------------------------------

B24 = 1 << 24
RANGE = "the requantizer takes -16,777,216..16,777,215 (REQUANT_INPUT_BITS=25)"


def test_requant_input_bits_is_25():
    """The hand-computed limits below are those of REQUANT_INPUT_BITS = 25."""
    assert REQUANT_INPUT_BITS == 25


def _check(w, bias, shift=-5, mult=1 << 30, stage="pointwise"):
    n = len(bias)
    check_requant_inputs(np.array(w), np.array(bias), np.full(n, mult), np.full(n, shift),
                         stage)


def test_requant_inputs_boundary():
    # taps [2, -3] over int8 x: acc in [2*-128 + -3*127, 2*127 + -3*-128] = [-637, 638]
    w = [[2, -3]]
    _check(w, [B24 - 1 - 638])       # v_max = 2**24 - 1
    _check(w, [-B24 + 637])          # v_min = -2**24
    with pytest.raises(ValueError, match=(
            r"^pointwise output channel 0 can reach a requantizer input of 16,777,216 \(bias "
            r"16,776,578 plus int8 products, shifted left by 0\); the requantizer takes "
            r"-16,777,216\.\.16,777,215 \(REQUANT_INPUT_BITS=25\)$")):
        _check(w, [B24 - 638])
    with pytest.raises(ValueError, match=r"^pointwise output channel 0 can reach a requantizer "
                                         r"input of -16,777,217 \(bias -16,776,580 plus"):
        _check(w, [-B24 + 636])


def test_requant_inputs_left_shift():
    # taps [1], shift 3: v = (bias + x) * 8 with x in [-128, 127]
    _check([[1]], [2_097_024], shift=3)        # v_max = (2**21 - 1) * 8 = 16,777,208
    _check([[1]], [-2_097_024], shift=3)       # v_min = -2**21 * 8 = -2**24
    with pytest.raises(ValueError, match=r"input of 16,777,216 \(bias 2,097,025 plus int8 "
                                         r"products, shifted left by 3\)"):
        _check([[1]], [2_097_025], shift=3)
    with pytest.raises(ValueError, match=r"input of -16,777,224 \(bias -2,097,025 plus int8 "
                                         r"products, shifted left by 3\)"):
        _check([[1]], [-2_097_025], shift=3)
    # a table shift far past int64 is still computed exactly
    with pytest.raises(ValueError, match=f"input of {(1 + 127) << 100:,} "):
        _check([[1]], [1], shift=100)


def test_requant_inputs_names_the_first_failing_channel():
    # channel 0 a padding lane (zero weights and table entry), channel 1 fits, 2 and 3 do not
    w = [[0, 0], [127, -128], [1, 0], [0, 1]]
    bias, mult, shift = np.array([0, 0, B24, -B24]), np.array([0, 1 << 30, 1, 1]), np.zeros(4)
    with pytest.raises(ValueError, match=r"^depthwise output channel 2 can reach a requantizer "
                                         r"input of 16,777,343 "):
        check_requant_inputs(np.array(w), bias, mult, shift, "depthwise")
    check_requant_inputs(np.array(w[:2]), bias[:2], mult[:2], shift[:2], "depthwise")


@pytest.mark.parametrize("mult", [-1, 1 << 31])
def test_requant_inputs_refuse_a_multiplier_outside_31_bits(mult):
    _check([[1]], [0], mult=(1 << 31) - 1)
    with pytest.raises(ValueError, match=(
            f"^expand output channel 0 has the requantizer multiplier {mult:,}; the "
            "requantizer takes 0..2,147,483,647$")):
        _check([[1]], [0], mult=mult, stage="expand")


def _set_channel(g, name, channel, value):
    t = g.tensors[name]
    t.data = np.array(t.data)
    t.data[..., channel] = value


def test_pointwise_requant_input_at_the_limit():
    """Output channel 5 with zero weights: v is its bias, shifted left by 0 (shift < 0)."""
    g = graph_from_spec(spec())
    g.tensors["pw/weights"].data = np.array(g.tensors["pw/weights"].data)
    g.tensors["pw/weights"].data[5] = 0
    _set_channel(g, "pw/bias", 5, B24 - 1)
    compile_model(g, "tiny")
    _set_channel(g, "pw/bias", 5, B24)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value) == (
        "operator 1 CONV_2D ('pw/out'): pointwise output channel 5 can reach a requantizer "
        f"input of 16,777,216 (bias 16,777,216 plus int8 products, shifted left by 0); {RANGE}")


#: (model, operator, output channel, bias): the channel's bias set so far out that an int8
#: input takes the requantizer input past 25 bits (its shift is negative in these models)
BIG_BIAS = [
    (dwsep_layer_model(spec()), 1, 5, B24, "pointwise"),
    # mid channel 19 = input channel 9, j = 1 (depth multiplier 2)
    (dwsep_layer_model(spec(c=10, depth_multiplier=2)), 0, 19, -B24, "depthwise"),
    (mobilenet_like_model(MOBILENET), 1, 3, -B24, "pointwise"),  # CONV stem: 3x3x3 taps
    (mobilenet_like_model(MOBILENET), 5, 7, B24, "expand"),
    (mobilenet_like_model(MOBILENET), 10, 30, B24, "depthwise"),  # after an expand
]


@pytest.mark.parametrize("model,index,channel,bias,stage", BIG_BIAS,
                         ids=[f"op{i}-{s}" for _, i, _, _, s in BIG_BIAS])
def test_requant_input_overflow_is_refused(model, index, channel, bias, stage):
    g = read_tflite(model)
    op = g.operators[index]
    _set_channel(g, op.inputs[2], channel, bias)
    w = np.asarray(g.tensors[op.inputs[1]].data, np.int64)
    taps = w[..., channel] if op.opcode == "DEPTHWISE_CONV_2D" else w[channel]
    folded = bias - int(g.tensors[op.inputs[0]].zero_point[0]) * int(taps.sum())
    pos, neg = int(taps[taps > 0].sum()), int(taps[taps < 0].sum())
    v = folded + 127 * pos - 128 * neg if bias > 0 else folded - 128 * pos + 127 * neg
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value) == (
        f"operator {index} {op.opcode} ({op.outputs[0]!r}): {stage} output channel {channel} "
        f"can reach a requantizer input of {v:,} (bias {folded:,} plus int8 products, shifted "
        f"left by 0); {RANGE}")


# ---- packed weights: the expand and pointwise arrays take -127..127 ---------------------------

PACKED = ("dwsep's 1x1 arrays take int8 weights in -127..127 (TFLite's symmetric weight "
          "range)")


def test_packed_weight_max_is_127():
    """The hand-written limits below are those of PACKED_WEIGHT_MAX = 127."""
    assert PACKED_WEIGHT_MAX == 127


def test_packed_weights_boundary():
    check_packed_weights(np.array([[127, -127], [0, 1]]), "pointwise")
    for v in (-128, 128):
        w = np.array([[127, -127, 0], [0, 1, 2], [3, v, -v]])
        with pytest.raises(ValueError) as info:
            check_packed_weights(w, "expand")
        assert str(info.value) == (f"expand weight {v} at output channel 2, input channel 1; "
                                   f"{PACKED}")


def test_packed_weights_name_the_kernel_position_and_zero_point():
    w = np.zeros((4, 3, 3, 5), np.int64)
    w[2, 1, 0, 4], w[3, 0, 0, 0] = -128, 200
    with pytest.raises(ValueError, match=r"^pointwise weight -128 at output channel 2, kernel "
                                         r"position \(1, 0\), input channel 4; "):
        check_packed_weights(w, "pointwise")
    with pytest.raises(ValueError, match=r"^fully connected weight -128 \(stored -121 minus "
                                         r"zero point 7\) at output channel 0, input channel 1; "):
        check_packed_weights(np.array([[-127, -128]]), "fully connected", 7)


#: (model, operator, weight index, message after the operator's name): one weight set to -128
MINUS_128 = [
    # a 1x1 CONV_2D after a depthwise (mid channel 17 of 24)
    (dwsep_layer_model(spec()), 1, (3, 0, 0, 17),
     "pointwise weight -128 at output channel 3, input channel 17"),
    # a 1x1 CONV_2D alone (identity DW)
    (single_op_model(spec(kernel=1), "CONV_2D"), 0, (9, 0, 0, 11),
     "pointwise weight -128 at output channel 9, input channel 11"),
    # the CONV-mode stem: its 3x3x3 taps go into the pointwise array
    (mobilenet_like_model(MOBILENET), 1, (5, 1, 2, 0),
     "pointwise weight -128 at output channel 5, kernel position (1, 2), input channel 0"),
    (mobilenet_like_model(MOBILENET), 5, (7, 0, 0, 3),
     "expand weight -128 at output channel 7, input channel 3"),
    (mobilenet_like_model(MOBILENET), 15, (2, 33),
     "fully connected weight -128 at output channel 2, input channel 33"),
]


@pytest.mark.parametrize("model,index,at,message", MINUS_128,
                         ids=[m.split(" weight")[0] + f"-op{i}" for _, i, _, m in MINUS_128])
def test_packed_weight_minus_128_is_refused(model, index, at, message):
    g = read_tflite(model)
    op = g.operators[index]
    w = g.tensors[op.inputs[1]]
    w.data = np.array(w.data)
    w.data[at] = -127
    compile_model(g, "tiny")
    w.data[at] = -128
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(g, "tiny")
    assert str(info.value) == (f"operator {index} {op.opcode} ({op.outputs[0]!r}): {message}; "
                               f"{PACKED}")


@pytest.mark.parametrize("stored,w_zp,ok", [
    (-120, 7, True), (-121, 7, False),      # w - w_zp = -127 / -128
    (126, -1, True), (127, -1, False),      # 127 / 128
    (-128, 20, False),                      # -148: beyond int8 too
])
def test_fully_connected_weight_minus_zero_point(stored, w_zp, ok):
    """FULLY_CONNECTED's array weights are ``w - w_zp`` (per-tensor weights with a zero
    point): refused when that reaches -128 (or 128) though the stored int8 is in range."""
    w = np.random.default_rng(0).integers(-100, 100, (12, 30)).astype(np.int8)
    w[4, 11] = stored
    model = fully_connected_model((1, 1, 1, 30), w, [0.01], None, (0.05, 3), (0.2, 1),
                                  w_zp=w_zp)
    if ok:
        compile_model(read_tflite(model), "tiny")
        return
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(read_tflite(model), "tiny")
    assert str(info.value) == (
        f"operator 0 FULLY_CONNECTED ('output'): fully connected weight {stored - w_zp} (stored "
        f"{stored} minus zero point {w_zp}) at output channel 4, input channel 11; {PACKED}")


def _depthwise_minus_128_model(c_out: int | None) -> bytes:
    """int8 ``[1, 9, 7, 5]`` -> 3x3 DEPTHWISE_CONV_2D (multiplier 2, SAME) whose mid channel 3
    has nine -128 taps and others some -> [1x1 CONV_2D to ``c_out``, weights in -127..127]."""
    rng = np.random.default_rng(11)
    mb = ModelBuilder("depthwise with -128 weights")
    s_in, c, m = 0.05, 5, 2
    x = mb.add_tensor("input", (1, 9, 7, c), "int8", s_in, -3)
    w = rng.integers(-128, 128, (1, 3, 3, c * m)).astype(np.int8)
    w[..., 3] = -128
    w[0, 0, 2, 8] = w[0, 2, 1, 0] = -128
    s_w = rng.uniform(0.002, 0.004, c * m).astype(np.float32)
    dw_w = mb.add_tensor("dw/weights", w.shape, "int8", s_w, 0, 3, w)
    dw_b = mb.add_tensor("dw/bias", (c * m,), "int32", s_in * s_w.astype(np.float64), 0, 0,
                         rng.integers(-2000, 2000, c * m))
    y = mb.add_tensor("dw/out", (1, 9, 7, c * m), "int8", 0.03, 4)
    mb.add_operator("DEPTHWISE_CONV_2D", [x, dw_w, dw_b], [y], padding="SAME",
                    depth_multiplier=m)
    if c_out is not None:
        pw = _packed_weights(rng, (c_out, 1, 1, c * m))
        pw_w = mb.add_tensor("pw/weights", pw.shape, "int8", 0.01, 0, 0, pw)
        pw_b = mb.add_tensor("pw/bias", (c_out,), "int32", 0.03 * 0.01, 0, 0,
                             rng.integers(-1000, 1000, c_out))
        dw_out = y
        y = mb.add_tensor("pw/out", (1, 9, 7, c_out), "int8", 0.5, -2)
        mb.add_operator("CONV_2D", [dw_out, pw_w, pw_b], [y])
    mb.inputs, mb.outputs = [x], [y]
    return mb.finish()


@pytest.mark.parametrize("c_out", [None, 6], ids=["alone", "with-pointwise"])
def test_depthwise_minus_128_runs_bit_exact(c_out):
    """The depthwise array multiplies one product per DSP and takes all of int8: a -128
    depthwise weight compiles and runs on the reference backend equal to LiteRT."""
    model = _depthwise_minus_128_model(c_out)
    x = np.random.default_rng(12).integers(-128, 128, (1, 9, 7, 5)).astype(np.int8)
    x[0, :3, :3] = -128      # the extreme product -128 * -128 over a whole window
    with Accelerator("tiny", "reference") as acc:
        y = acc.run(model, x)
        assert [r["stages"] for r in acc.compile(model).layers] == [["DW", "PW"]]
    want = litert_run(model, x)
    assert np.array_equal(y, want)
    assert len(np.unique(want)) > 20   # not saturated to a few values
