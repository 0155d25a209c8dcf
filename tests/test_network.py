"""Whole networks compiled to one program and run on the ``reference`` device: random
MobileNet-like graphs (every cutting rule of the compiler: fused blocks, split expands, output
tiles, input slices, lone ADDs, a pool fused with its FC or run once before it, the FC host
step), the real int8 MobileNetV2 (torchvision's ImageNet weights) and MobileNetV1, each
bit-exact with LiteRT ``BUILTIN_REF`` and the NumPy reference ``run_graph``."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from helpers import P16Q24, PYNQ_Z2, SLICED, TINY, calibration_photos, network

from dwsep.host import imagenet, quantizer
from dwsep.host.compiler import compile_model
from dwsep.host.driver import Accelerator
from dwsep.host.reference import run_graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    BlockSpec,
    MobileNetSpec,
    mobilenet_like_model,
)
from dwsep.hw.config import get_config
from dwsep.hw.layout import DescFlag
from dwsep.sim.oracle import litert_run

#: tiny with a small expand memory and PW output: blocks split their expand, outputs tile
SPLIT = dataclasses.replace(TINY, name="tiny-split", expand_channels_max=16,
                            out_channels_max=32)
#: tiny with an engine weight memory of 160 words: the compiler cuts output tiles to what
#: fits beside the expand weights, and a residual whose PW does not fit runs as its own ADD
SMALL_ENGINE = dataclasses.replace(TINY, name="tiny-engine", expand_channels_max=32,
                                   engine_weight_words=160)
#: engine words wider than the DW lanes (pw_cols != dw_lanes, the 16 x 24 engine's shape):
#: expand and PW outputs in whole engine words, the channels past a tensor's padding to
#: dw_lanes dropped (on the RTL: tests/test_perf.py's Q16 benches)
Q16 = dataclasses.replace(TINY, name="tiny-q16", pw_cols=16)

#: (config, seeds, random_mobilenet_spec limits)
NETWORKS = [
    (TINY, range(24), {}),
    (SPLIT, range(100, 106), dict(max_channels=32, max_expand=4)),
    (SLICED, range(200, 204), dict(max_channels=16, max_expand=4)),
    (SMALL_ENGINE, range(300, 304), dict(max_channels=32, max_expand=4)),
    (Q16, range(400, 406), {}),
    (P16Q24, range(500, 508), {}),
]


@pytest.mark.parametrize("config,seed,limits",
                         [(c, s, lim) for c, seeds, lim in NETWORKS for s in seeds],
                         ids=[f"{c.name}-{s}" for c, seeds, _ in NETWORKS for s in seeds])
def test_random_network(accelerators, config, seed, limits):
    spec = network(config, seed, limits)
    model = mobilenet_like_model(spec)
    g = read_tflite(model)
    acc = accelerators(config)
    prog = acc.compile(g)
    x = np.random.default_rng(seed).integers(-128, 128, g.input.shape, np.int8)
    y = acc.run(g, x)
    expected = litert_run(model, x)
    assert y.dtype == np.int8 and y.shape == expected.shape, spec
    assert np.array_equal(y, expected), (spec, prog.summary())
    assert np.array_equal(run_graph(g, x), expected), spec
    # every operator is accounted for, once
    done = sorted(i for r in prog.layers for i in r["operators"])
    assert done == list(range(len(g.operators))), prog.summary()


@pytest.mark.parametrize("words, stages", [
    (128, ["CONV+PW", "EXPAND+DW+PW+RESIDUAL", "DW+PW", "POOL+PW+RAW_OUT"]),
    (127, ["CONV+PW", "EXPAND+DW+PW", "DW+PW+RESIDUAL", "DW+PW", "POOL+PW+RAW_OUT"]),
])
def test_tiles_and_residual_fit_the_engine_memory(words, stages):
    """A block of 16 -> 256 -> 16 channels needs 32 x 2 expand and 32 x 2 PW weight words:
    fused with its residual in an engine of 128 words; in 127 the PW runs in two tiles of
    one group (each tile's 64 + 32 words fit) and the ADD as its own descriptor. Bit-exact
    either way."""
    net = MobileNetSpec(h=8, w=8, stem_channels=16, blocks=(BlockSpec(16, 16, 1),),
                        head_channels=16, pool="MEAN", keep_dims=False, classes=10,
                        fc_per_channel=True, reshape=True, seed=3)
    model = mobilenet_like_model(net)
    g = read_tflite(model)
    cfg = dataclasses.replace(TINY, name=f"tiny-{words}", expand_channels_max=16,
                              engine_weight_words=words)
    with Accelerator(cfg, "reference") as acc:
        prog = acc.compile(g)
        assert ["+".join(r["stages"]) for r in prog.layers] == stages
        assert prog.layers[1]["tiles"] == 1 + (words < 128)
        for d in prog.descriptors:
            exp = d["exp_groups"] * d["in_groups"] if d["flags"] & DescFlag.EXPAND else 0
            assert exp + d["mid_groups"] * d["out_groups"] <= words
        x = np.random.default_rng(words).integers(-128, 128, g.input.shape, np.int8)
        assert np.array_equal(acc.run(g, x), litert_run(model, x))


def test_random_networks_cover_every_rule():
    """The sample above exercises each way the compiler cuts a graph."""
    seen: dict[str, int] = {}
    for config, seeds, limits in NETWORKS:
        for seed in seeds:
            prog = compile_model(read_tflite(mobilenet_like_model(network(config, seed,
                                                                          limits))), config)
            for r in prog.layers:
                keys = ["+".join(r["stages"]), *r["ops"]]
                keys += ["tiles"] * (r["tiles"] > 1) + ["slices"] * (r["input_slices"] > 1)
                keys += ["split"] * ("split" in r["note"])
                if "FULLY_CONNECTED" in r["ops"]:
                    alone = not {"MEAN", "AVERAGE_POOL_2D"} & set(r["ops"])
                    keys += ["FC alone" if alone else "pool+FC"]
                    keys += ["FC slices"] * (alone and r["input_slices"] > 1)
                for key in keys:
                    seen[key] = seen.get(key, 0) + 1
    for key in ("CONV+PW", "EXPAND+DW+PW", "EXPAND+DW+PW+RESIDUAL", "DW+PW+RESIDUAL",
                "DW+PW", "DW+PW+RAW_OUT", "POOL+PW+RAW_OUT", "MEAN", "AVERAGE_POOL_2D",
                "RESHAPE", "PAD",
                "tiles", "slices", "split", "pool+FC", "FC alone", "FC slices"):
        assert seen.get(key, 0) >= 2, (key, seen)


# ---- real networks --------------------------------------------------------------------------

@pytest.mark.parametrize("config", [PYNQ_Z2, get_config("zcu104")],
                         ids=["pynq-z2", "zcu104"])
def test_mobilenet_v2_bit_exact(v2_int8, grace_hopper, config):
    x = imagenet.image_to_input(grace_hopper, v2_int8)
    expected = litert_run(v2_int8, x)
    with Accelerator(config, "reference") as acc:
        start = time.perf_counter()
        y = acc.run(v2_int8, x)
        print(f"MobileNetV2-224 on the reference device ({config.name}, "
              f"{acc.last_stats['descriptor_count']} descriptors): "
              f"{time.perf_counter() - start:.2f} s")
    assert y.shape == (1, 1000) and np.array_equal(y, expected)
    # the float model's top-1 (torchvision's, with the centre crop) and the classic label
    assert imagenet.top_k(y, 1) == [457] and 652 in imagenet.top_k(y, 5)


def test_mobilenet_v2_compiles_to(v2_int8):
    """What runs where: all 17 blocks fused on zcu104, the pool + FC in one descriptor; on
    pynq-z2 (16 x 24 engine, 1,024 weight words, tiles of at most 264 channels) the
    96 -> 576 -> 160 block runs in one tile (a second would repeat its expand), the
    160-channel blocks split their expand (960 channels in four tiles), the 960 -> 320
    projection runs in two tiles (two tiles of 7 words x 60 mid groups fit the 1,024 words
    together), the head in six 48-channel-aligned parts of at most 240 channels (P = 16 and
    C = 24 both divide a part's start), one pool per part, and the FC reads the pooled
    vector in two input slices: 1,024 channels (tiles of at most 11 words: 64 x 11 = 704
    weight words) and 256, each of its weights once."""
    g = read_tflite(v2_int8)
    big = compile_model(g, "zcu104")
    assert len(big.descriptors) == len(big.layers) == 20
    stages = ["+".join(r["stages"]) for r in big.layers]
    assert stages[0] == "CONV+PW" and stages[1] == "DW+PW"
    assert stages.count("EXPAND+DW+PW+RESIDUAL") == 10 and stages.count("EXPAND+DW+PW") == 6
    assert stages[-2:] == ["DW+PW", "POOL+PW+RAW_OUT"]
    assert [s.kind for s in big.host_steps] == ["fc_requant"]
    assert big.macs == 300_836_992

    prog = compile_model(g, PYNQ_Z2)
    assert len(prog.descriptors) == 51 and len(prog.layers) == 24
    assert prog.layers[14]["output_shape"] == [7, 7, 160] and prog.layers[14]["tiles"] == 1
    split = [r for r in prog.layers if "split" in r["note"]]
    assert [r["output_shape"] for r in split] == [[7, 7, 960]] * 3
    assert all(r["tiles"] == 4 for r in split)
    assert prog.layers[20]["output_shape"] == [7, 7, 320] and prog.layers[20]["tiles"] == 2
    head, pool, fc = prog.layers[-3:]
    assert head["output_shape"] == [7, 7, 1280] and head["tiles"] == 6
    assert pool["ops"] == ["AVERAGE_POOL_2D", "RESHAPE"] and pool["stages"] == ["POOL", "PW"]
    assert (pool["input_slices"], pool["tiles"], pool["output_shape"]) == (6, 1, [1, 1, 1280])
    assert fc["ops"] == ["FULLY_CONNECTED"] and fc["input_shape"] == [1, 1, 1280]
    assert (fc["input_slices"], fc["tiles"], fc["host_step"]) == (2, 4, "fc_requant")
    assert prog.macs == big.macs
    summary = prog.summary()
    assert "layer 22 [descriptor 37-42]" in summary and "layer 23 [descriptor 43-50]" in summary
    d = prog.descriptors
    pooled = d[37]["out_addr"]
    assert [x["out_addr"] - pooled for x in d[37:43]] == [0, 240, 480, 720, 912, 1104]
    assert all(x["out_addr"] % 48 == pooled % 48 for x in d[37:43])
    assert [(x["in_addr"] - pooled, x["in_groups"], x["out_groups"]) for x in d[43:51]] == \
        [(0, 64, 11)] * 2 + [(0, 64, 10)] * 2 + [(1024, 16, 11)] * 2 + [(1024, 16, 10)] * 2
    assert len({x["pw_weights"] for x in d[43:51]}) == 8


@pytest.mark.parametrize("width,config", [(0.5, "pynq-z2"), (1.0, PYNQ_Z2)],
                         ids=["0.5-pynq-z2", "1.0-pynq-z2"])
def test_mobilenet_v1_bit_exact(grace_hopper, width, config):
    model = quantizer.quantize("mobilenet_v1", None, calibration_photos()[:2], width=width,
                               seed=5)
    x = imagenet.image_to_input(grace_hopper, model)
    with Accelerator(config, "reference") as acc:
        y = acc.run(model, x)
        layers = acc.last_stats["layers"]
    assert np.array_equal(y, litert_run(model, x))
    assert [r["stages"] for r in layers[:2]] == [["CONV", "PW"], ["DW", "PW"]]
    assert len(layers) == 16 and layers[-1]["host_step"] == "fc_requant"
    assert [r["ops"] for r in layers[-2:]] == [["AVERAGE_POOL_2D", "RESHAPE"],
                                               ["FULLY_CONNECTED"]]


@pytest.fixture(scope="module")
def v2_os16_int8() -> bytes:
    """MobileNetV2's DeepLabV3 backbone at output stride 16 (random weights, calibrated on
    two sample photos): three 3x3 depthwise layers at dilation 2 on 14x14 maps."""
    return quantizer.quantize("mobilenet_v2_os16", None, calibration_photos()[:2], seed=3)


def test_mobilenet_v2_os16_bit_exact(v2_os16_int8, grace_hopper):
    """The atrous backbone on pynq-z2: its dilated layers run in the line buffer's window of 7
    rows (a 3x3 kernel at dilation 2 spans 5), fused with their 1x1 like any other block."""
    x = imagenet.image_to_input(grace_hopper, v2_os16_int8)
    with Accelerator(PYNQ_Z2, "reference") as acc:
        y = acc.run(v2_os16_int8, x)
        layers = acc.last_stats["layers"]
    assert y.shape == (1, 14, 14, 320) and np.array_equal(y, litert_run(v2_os16_int8, x))
    dilated = [r for r in layers if r["dilation"] == 2]
    assert [(r["stages"], r["output_shape"]) for r in dilated] == [
        (["DW", "PW", "RESIDUAL"], [14, 14, 160]), (["DW", "PW", "RESIDUAL"], [14, 14, 160]),
        (["DW", "PW"], [14, 14, 320])]
    assert not any(r["host_step"] for r in layers)


@pytest.fixture(scope="module")
def v2_sizes() -> dict:
    """MobileNetV2-1.0 (random weights, calibrated on two sample photos) at 320x320 (a
    detection backbone's size: a 10x10 head pool) and 256x192 (non-square: an 8x6 pool)."""
    photos = calibration_photos()[:2]
    return {size: quantizer.quantize("mobilenet_v2", None, photos, input_size=size, seed=6)
            for size in ((320, 320), (256, 192))}


@pytest.mark.parametrize("size", [(320, 320), (256, 192)], ids=["320", "256x192"])
def test_mobilenet_v2_other_sizes_bit_exact(v2_sizes, grace_hopper, size):
    """MobileNetV2 at other input sizes on pynq-z2: the head's global pool, 10x10 or 8x6,
    streams its pixels through the DW requantizer (POOL), wider than any k x k window."""
    model = v2_sizes[size]
    x = imagenet.image_to_input(grace_hopper, model)
    assert x.shape == (1, *size, 3)
    with Accelerator(PYNQ_Z2, "reference") as acc:
        y = acc.run(model, x)
        layers = acc.last_stats["layers"]
    assert y.shape == (1, 1000) and np.array_equal(y, litert_run(model, x))
    pool = next(r for r in layers if r["stages"][0] == "POOL")
    assert pool["input_shape"] == [size[0] // 32, size[1] // 32, 1280]
    assert [r["host_step"] for r in layers if r["host_step"]] == ["fc_requant"]


# ---- the same on the Verilated RTL (run before resolving; the RTL is built per config) -------

@pytest.mark.verilator
@pytest.mark.parametrize("seed", range(4))
def test_random_network_rtl(seed):
    spec = dataclasses.replace(network(TINY, seed, dict(max_hw=12, max_blocks=3)), seed=seed)
    model = mobilenet_like_model(spec)
    x = np.random.default_rng(seed).integers(-128, 128, (1, spec.h, spec.w, 3), np.int8)
    with Accelerator("tiny", "rtl") as acc:
        y = acc.run(model, x)
        print(f"seed {seed} {spec}: {acc.last_stats['cycles']} cycles")
    assert np.array_equal(y, litert_run(model, x)), spec


@pytest.mark.slow
@pytest.mark.verilator
def test_mobilenet_v2_rtl(v2_int8, grace_hopper):
    """The issue's acceptance run: MobileNetV2-224 on the pynq-z2 RTL equals LiteRT."""
    x = imagenet.image_to_input(grace_hopper, v2_int8)
    with Accelerator(PYNQ_Z2, "rtl") as acc:
        start = time.perf_counter()
        y = acc.run(v2_int8, x)
        stats = acc.last_stats
    print(f"MobileNetV2-224 on the RTL: {stats['cycles']} cycles, "
          f"{time.perf_counter() - start:.0f} s wall")
    for r in stats["layers"]:
        print(f"  layer {r['layer']:2} {'+'.join(r['stages']):24} {r['cycles']:>9} cycles "
              f"{r['macs']:>11} MACs  {r['seconds']:.1f} s")
    assert np.array_equal(y, litert_run(v2_int8, x))
    assert imagenet.top_k(y, 1) == [457]
    assert sum(r["cycles"] for r in stats["layers"]) == stats["cycles"]


def _rtl_frame_equals_litert(model: bytes, photo, what: str) -> None:
    """One frame of ``model`` on ``photo`` on the pynq-z2 RTL (its cycles and wall time
    printed) equals LiteRT."""
    x = imagenet.image_to_input(photo, model)
    with Accelerator(PYNQ_Z2, "rtl") as acc:
        start = time.perf_counter()
        y = acc.run(model, x)
        cycles = acc.last_stats["cycles"]
    print(f"{what} on the RTL: {cycles} cycles, {time.perf_counter() - start:.0f} s wall")
    assert np.array_equal(y, litert_run(model, x))


@pytest.mark.slow
@pytest.mark.verilator
def test_mobilenet_v2_os16_rtl(v2_os16_int8, grace_hopper):
    """The atrous MobileNetV2 backbone (output stride 16) on the pynq-z2 RTL equals LiteRT."""
    _rtl_frame_equals_litert(v2_os16_int8, grace_hopper, "MobileNetV2-OS16 backbone")


@pytest.mark.networks
@pytest.mark.verilator
@pytest.mark.parametrize("size", [(320, 320), (256, 192)], ids=["320", "256x192"])
def test_mobilenet_v2_other_sizes_rtl(v2_sizes, grace_hopper, size):
    """MobileNetV2 at 320x320 and 256x192 on the pynq-z2 RTL equals LiteRT."""
    _rtl_frame_equals_litert(v2_sizes[size], grace_hopper, f"MobileNetV2 {size[0]}x{size[1]}")


@pytest.mark.slow
@pytest.mark.verilator
def test_mobilenet_v1_rtl(grace_hopper):
    """MobileNetV1 (width 0.5, random weights) on the pynq-z2 RTL equals LiteRT."""
    model = quantizer.quantize("mobilenet_v1", None, calibration_photos()[:2], width=0.5,
                               seed=5)
    _rtl_frame_equals_litert(model, grace_hopper, "MobileNetV1-0.5-224")
