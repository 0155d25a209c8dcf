"""The analytical cycle model (``sim/perf.py``) against the ``CYCLES`` register of the
Verilated accelerator (cocotbext-axi ``AxiRam``, no backpressure): equal to the cycle, since
without backpressure the run is deterministic and the model follows every latency.

Per-descriptor figures come from running each descriptor of a compiled program alone (its
``LAST`` flag set, ``PROGRAM.addr`` pointing at it): the driver's per-layer cycles come from
the bench's 256-cycle polling, only the total of a run is exact. Timing does not depend on
the data, so these runs use the image as linked (zero activations)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from helpers import P16Q24, PYNQ_Z2, TINY, calibration_photos, chain, network

from dwsep.host.driver import Accelerator
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    BlockSpec,
    InvertedResidualSpec,
    LayerSpec,
    MobileNetSpec,
    average_pool_model,
    dwsep_layer_model,
    inverted_residual_model,
    mean_model,
    mobilenet_like_model,
    pool_fc_model,
    single_op_model,
)
from dwsep.hw.config import AcceleratorConfig
from dwsep.hw.layout import ADDRESS_FIELDS, DESCRIPTOR, DescFlag
from dwsep.sim.ddr import MEMORIES
from dwsep.sim.oracle import litert_run
from dwsep.sim.perf import (
    BOUNDS,
    IDEAL,
    held_tables,
    ideal_cycles,
    layer_cycles,
    layer_macs,
    program_cycles,
)

pytestmark = pytest.mark.verilator

#: cycles the model may differ from the RTL: none (see the module docstring)
TOLERANCE = 0


def layer(h, w, c, k, *, s=1, d=1, m=1, c_out=8, padding="SAME", seed=0) -> LayerSpec:
    return LayerSpec(h=h, w=w, c=c, depth_multiplier=m, kernel=k, stride=s, dilation=d,
                     padding=padding, dw_activation="RELU6", c_out=c_out,
                     pw_activation="NONE", seed=seed)


#: (spec, the bottleneck the model must name): k 1/3/5/7, stride 1/2, dilation 1/2,
#: depth multiplier 1/2, C < 8 and C > 8, SAME and VALID
LAYERS = {
    "k3_small_c_dw_bound": (layer(8, 8, 5, 3, c_out=8), "dw"),
    "k1_pw_bound": (layer(12, 10, 16, 1, c_out=64, seed=1), "engine"),
    "k5_s2_c24": (layer(16, 16, 24, 5, s=2, c_out=16, seed=2), "dw"),
    "k7_d2_m2": (layer(9, 11, 8, 7, d=2, m=2, c_out=8, seed=3), "dw"),
    "k1_s2_read_bound": (layer(10, 12, 8, 1, s=2, c_out=8, seed=4), "ddr_read"),
    "k3_s2_valid_c64": (layer(20, 20, 64, 3, s=2, c_out=64, padding="VALID", seed=5),
                        "engine"),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_cycles_match_rtl(rtl, name):
    spec, bottleneck = LAYERS[name]
    model = dwsep_layer_model(spec)
    x = np.random.default_rng(len(name)).integers(-128, 128, (1, spec.h, spec.w, spec.c),
                                                  dtype=np.int8)
    rtl.run(model, x)
    total, (est,) = program_cycles("tiny", rtl.compile(model))
    print(f"{name}: rtl {rtl.last_stats['cycles']} model {total} {est}")
    assert abs(total - rtl.last_stats["cycles"]) <= TOLERANCE
    assert est.bottleneck == bottleneck
    assert est.total == est.fetch + sum(est.loads.values()) + est.run == total


def test_program_of_three_layers(rtl):
    """Layers follow each other through NEXT -> FETCH_CMD: the program is the sum."""
    g = chain(3, 7)
    x = np.random.default_rng(7).integers(-128, 128, g.input.shape, dtype=np.int8)
    rtl.run(g, x)
    total, layers = program_cycles("tiny", rtl.compile(g))
    assert len(layers) == 3
    assert abs(total - rtl.last_stats["cycles"]) <= TOLERANCE


# ---- every descriptor kind, each descriptor alone --------------------------------------------

def _cycles(device, size: int, image, first: int) -> tuple[int, int]:
    """Run ``image(base)`` (``size`` bytes linked at ``base``, a fresh buffer's address)
    from descriptor ``first``; returns ``(CYCLES, base)``."""
    buf = device.alloc(size)
    buf.write(0, image(buf.physical_address))
    device.write_register("STATUS", done=1, error=1)
    device.write_register("PROGRAM", addr=buf.physical_address + first * DESCRIPTOR.size)
    device.write_register("CTRL", start=1)
    status = device.wait_done(600.0)
    assert not status["error"], device.read_register("ERROR")
    lo = device.read_field("CYCLES_LO", "value")  # latches CYCLES_HI
    return device.read_field("CYCLES_HI", "value") << 32 | lo, buf.physical_address


def descriptor_cycles(device, program) -> list[tuple[int, int]]:
    """``(CYCLES, base)`` of each descriptor of ``program`` run alone, ``base`` the address
    its image was linked at."""
    out = []
    for i, d in enumerate(program.descriptors):
        def image(base, i=i, d=d):
            raw = bytearray(program.link(base))
            last = dict(d, flags=d["flags"] | DescFlag.LAST)
            raw[i * DESCRIPTOR.size:(i + 1) * DESCRIPTOR.size] = DESCRIPTOR.pack(
                **{k: v + base if k in ADDRESS_FIELDS else v for k, v in last.items()})
            return bytes(raw)
        out.append(_cycles(device, program.size, image, i))
    return out


def _block(h, w, c_in, expand, c_out, stride, seed=0) -> bytes:
    return inverted_residual_model(InvertedResidualSpec(
        h=h, w=w, c_in=c_in, block=BlockSpec(expand=expand, c_out=c_out, stride=stride),
        seed=seed))


def _stem(h, w, c_out, seed=0) -> bytes:
    spec = LayerSpec(h=h, w=w, c=3, depth_multiplier=1, kernel=3, stride=2, dilation=1,
                     padding="SAME", dw_activation="NONE", c_out=c_out,
                     pw_activation="RELU6", seed=seed)
    return single_op_model(spec, "CONV_2D")


_E, _C, _RES, _RAW = DescFlag.EXPAND, DescFlag.CONV, DescFlag.RESIDUAL, DescFlag.RAW_OUT
_POOL = DescFlag.POOL

#: name -> (model, flags some descriptor must have, pitched output expected, the bound the
#: model must name for each descriptor). On ``tiny`` (P = Q = 8, lb_rows 16, 64 output
#: channels per descriptor, ADD in 2 chunks).
KINDS = {
    # EXPAND + RESIDUAL: on 8x8 pixels the ADD table (512 beats) takes longer than the DW;
    # with 4 channels the ADD (2 cycles a word) outpaces the 1-step PW
    "expand_residual": (lambda: _block(8, 8, 8, 3, 8, 1), _E | _RES, False, ["table_load"]),
    "expand_residual_c4": (lambda: _block(9, 7, 4, 2, 4, 1, seed=1), _E | _RES, False,
                           ["table_load"]),
    "expand_s2": (lambda: _block(10, 10, 8, 2, 16, 2, seed=2), _E, False, ["expand"]),
    # 40 rows > lb_rows: the line buffer holds the expand stage back; expand and project
    # jobs of 32 steps each share the engine, which bounds the layer
    "expand_tall": (lambda: _block(40, 5, 32, 2, 32, 1, seed=3), _E | _RES, False,
                    ["engine"]),
    # expand input 72 > expand_channels_max 64: a standalone 1x1 (in three output tiles)
    # then DW + PW
    "expand_split": (lambda: _block(6, 6, 72, 2, 24, 1, seed=4), 0, True,
                     ["engine", "engine", "engine", "dw"]),
    "conv_stem": (lambda: _stem(16, 16, 16, seed=5), _C, False, ["engine"]),
    "conv_stem_tall": (lambda: _stem(48, 20, 8, seed=6), _C, False, ["line_buffer"]),
    # global pools stream every pixel's words through the DW requantizer, two cycles each
    # (its compute lanes are half a word), which sums them: 'dw' bound
    "average_pool": (lambda: average_pool_model((1, 7, 7, 32), (7, 7), (1, 1), "VALID",
                                                (0.05, 3)), _POOL, False, ["dw"]),
    "mean": (lambda: mean_model((1, 5, 6, 24), [1, 2], True, (0.05, 3), (0.04, -2)), _POOL,
             False, ["dw"]),
    # one group: each word waits for its group's sum of the pixel before (5 cycles)
    "mean_one_group": (lambda: mean_model((1, 9, 4, 8), [1, 2], True, (0.05, 3),
                                          (0.04, -2)), _POOL, False, ["dw"]),
    "average_pool_two_groups": (lambda: average_pool_model((1, 3, 11, 16), (3, 11), (1, 1),
                                                           "VALID", (0.05, 3)), _POOL, False,
                                ["dw"]),
    "average_pool_window": (lambda: average_pool_model((1, 9, 9, 16), (3, 3), (2, 2),
                                                       "VALID", (0.05, 3)), 0, False,
                            ["ddr_read"]),
    # RAW_OUT words are 4 beats: with 2 mid groups the raw serializer holds the PW back
    "pool_fc": (lambda: pool_fc_model(5, 5, 16, 64, seed=7), _RAW, False, ["table_load"]),
    "pool_fc_wide": (lambda: pool_fc_model(3, 4, 64, 24, seed=8), _RAW, False,
                     ["table_load"]),
    # 100 output channels: tiles of 64 + 36, one write command per pixel
    "tiles": (lambda: dwsep_layer_model(layer(20, 20, 16, 3, c_out=100, seed=9)), 0, True,
              ["engine", "engine"]),
    # tiles of 5 and 4 beats a pixel in a 9-beat pitch: one write burst per pixel
    "tiles_pixel_bursts": (lambda: dwsep_layer_model(layer(32, 32, 8, 1, c_out=72, seed=10)),
                           0, True, ["engine", "engine"]),
    "depth_multiplier_2": (lambda: dwsep_layer_model(layer(9, 11, 8, 7, d=2, m=2, seed=11)),
                           0, False, ["dw"]),
}


def _check_program(device, program, whole: bool, memory=IDEAL, tolerance=TOLERANCE):
    """Each descriptor alone (and with ``whole`` the whole program) against the model:
    ``tolerance`` cycles, or with a float that fraction of the RTL's cycles."""
    def limit(cycles):
        return tolerance * cycles if isinstance(tolerance, float) else tolerance

    for i, (cycles, base) in enumerate(descriptor_cycles(device, program)):
        est = layer_cycles(program.config, program.descriptors[i], memory=memory, base=base)
        print(f"descriptor {i} {DescFlag(program.descriptors[i]['flags'])!r}: rtl {cycles} "
              f"model {est.total} bound {est.bound} {est.stage_cycles}")
        assert abs(est.total - cycles) <= limit(cycles), (i, program.descriptors[i])
    if whole:
        cycles, base = _cycles(device, program.size, program.link, 0)
        total, _ = program_cycles(program.config, program, memory=memory, base=base)
        assert abs(total - cycles) <= limit(cycles)


@pytest.mark.parametrize("name", KINDS)
def test_descriptor_kind_matches_rtl(rtl, name):
    build, flags, pitched, bounds = KINDS[name]
    program = rtl.compile(build())
    descs = program.descriptors
    assert any(d["flags"] & flags == flags for d in descs), [DescFlag(d["flags"]) for d in descs]
    beats = [d["out_groups"] * (4 if d["flags"] & _RAW else 1) for d in descs]
    assert any(d["out_pitch"] != b for d, b in zip(descs, beats, strict=True)) == pitched
    assert [layer_cycles("tiny", d).bound for d in descs] == bounds
    _check_program(rtl.device, program, whole=False)


def test_held_tables_are_not_reloaded(rtl):
    """Output tiles of one layer share its DW weights and table: the controller loads them
    for the first tile only, and the whole program's cycles still match the model."""
    program = rtl.compile(KINDS["tiles"][0]())
    held = held_tables("tiny", program.descriptors)
    assert held == [frozenset(), frozenset({"dw_weights", "dw_table"})]
    alone = program_cycles("tiny", program)[1]
    # the second tile's PW weights were prefetched while the first ran
    assert program.descriptors[1]["flags"] & DescFlag.PW_LOADED
    second = program.descriptors[1]
    assert alone[0].bytes_read["prefetch"] == second["mid_groups"] * second["out_groups"] * 64
    assert alone[1].loads.keys() == {"pw_table", "skipped"}
    _check_program(rtl.device, program, whole=True)


def _network(seed: int) -> bytes:
    """A small random MobileNetV2-like network (stem, 1-3 blocks, head, pool, FC) on tiny,
    as tests/test_network.py draws them for the RTL (``helpers.network``)."""
    spec = network(TINY, seed, dict(max_hw=12, max_blocks=3))
    return mobilenet_like_model(dataclasses.replace(spec, seed=seed))


@pytest.mark.parametrize("seed", [0, 3])
def test_network_matches_rtl(rtl, seed):
    """Every descriptor, and the program's total (layers follow each other through NEXT ->
    FETCH_CMD)."""
    program = rtl.compile(_network(seed))
    _check_program(rtl.device, program, whole=True)


# ---- wider lanes (slow: a Verilator build of its own, about 4 minutes) ---------------------

#: P = Q = 16 (pynq-z2's lanes) with small memories: two-beat words in the packer and the
#: serializers, eight-beat RAW_OUT words, the ADD in four chunks
WIDE = AcceleratorConfig(name="wide16", dw_lanes=16, pw_rows=16, pw_cols=16, k_max=3,
                         lb_window=3, max_dim=32, lb_width=32, lb_channels=64,
                         mid_channels_max=128, out_channels_max=64, expand_channels_max=64)

WIDE_KINDS = {
    "expand_residual_add_bound": lambda: _block(9, 7, 8, 2, 8, 1, seed=20),
    "expand_residual_c48": lambda: _block(6, 6, 48, 2, 48, 1, seed=21),
    "expand_tall": lambda: _block(32, 5, 16, 2, 16, 1, seed=22),
    "pw_serializer_bound": lambda: dwsep_layer_model(layer(10, 10, 16, 1, c_out=64, seed=23)),
    "tiles_write_bound": lambda: dwsep_layer_model(layer(16, 16, 16, 1, c_out=80, seed=24)),
    "pool_fc": lambda: pool_fc_model(3, 3, 16, 64, seed=25),
    "depth_multiplier_2": lambda: dwsep_layer_model(layer(9, 11, 16, 3, m=2, c_out=16,
                                                          seed=26)),
}


@pytest.fixture(scope="module")
def wide_rtl():
    with Accelerator(WIDE, "rtl") as acc:
        yield acc


#: ``expand_tall`` on wide16: 32 rows of 5 pixels through 4 line-buffer slots, 8 credits of
#: expanded words. The model places an expand job whose credit waits on a row that the line
#: buffer lets in only at the end of an output row whose taps it has not followed yet after
#: the project job it is placing (``sim/perf.py``, ``_FillFromExpand``): measured +2.1 %
#: (1714 model, 1679 RTL); exact on every tiny descriptor, within 0.012 % on MobileNetV2.
EXPAND_TOLERANCE = {"expand_tall": 0.03,
                    # the engine's one requantizer (session 7 of issue 8): a project word
                    # held at the skid in front of the ADD holds the expand words behind it;
                    # the model's order of the two kinds there is 2 cycles of 1,174 off
                    # (1,176 model, 1,174 RTL), every tiny and P=8/C=16 descriptor exact;
                    # with the DW requantizer's pool stage (issue 13) 3 of 1,157 (1,160
                    # model, 1,157 RTL)
                    "expand_residual_add_bound": 0.003}


@pytest.mark.slow
@pytest.mark.parametrize("name", WIDE_KINDS)
def test_wide_lanes_match_rtl(wide_rtl, name):
    _check_program(wide_rtl.device, wide_rtl.compile(WIDE_KINDS[name]()), whole=False,
                   tolerance=EXPAND_TOLERANCE.get(name, TOLERANCE))


# ---- an engine wider than the DW lanes (P = 8, C = 16) ----------------------------------------

#: tiny with pw_cols 16: expand words of 16 channels enter the line buffer as 8-channel
#: groups (the last word's upper beat dropped when the groups are odd), outputs store
#: ``out_beats`` a pixel (the last word partly), the residual packer fills a partial word;
#: its engine requantizer has 8 lanes (3 with LUT high products) beside the DW one's 4, so
#: the engine's requant records differ in size from the DW ones
Q16 = dataclasses.replace(TINY, name="tiny-q16", pw_cols=16,
                          engine_requant_lanes=8, engine_requant_lut_lanes=3)

Q16_KINDS = {
    "expand_residual_odd_groups": lambda: _block(8, 8, 8, 3, 8, 1),
    # 24 channels: two engine words a pixel, the second half stored; the residual packer
    # fills a partial word
    "expand_residual_c24": lambda: _block(8, 8, 24, 2, 24, 1),
    "expand_s2": lambda: _block(10, 10, 8, 2, 16, 2, seed=2),
    "expand_tall": lambda: _block(40, 5, 32, 2, 24, 1, seed=3),
    "conv_stem": lambda: _stem(16, 16, 24, seed=5),
    "pool_fc": lambda: pool_fc_model(5, 5, 16, 40, seed=7),
    "tiles": lambda: dwsep_layer_model(layer(20, 20, 16, 3, c_out=100, seed=9)),
    "depth_multiplier_2": lambda: dwsep_layer_model(layer(9, 11, 8, 7, d=2, m=2, seed=11)),
}


@pytest.fixture(scope="module")
def q16_rtl():
    with Accelerator(Q16, "rtl") as acc:
        yield acc


def _matches_litert_and_the_model(acc, model: bytes, seed: int) -> None:
    """``model`` on ``acc``'s RTL: bit-exact against LiteRT on a random input, and the
    model to the cycle on every descriptor."""
    program = acc.compile(model)
    shape = read_tflite(model).input.shape
    x = np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)
    assert np.array_equal(acc.run(model, x), litert_run(model, x))
    _check_program(acc.device, program, whole=False)


def _network_matches_litert_and_the_model(acc, seed: int) -> None:
    """A random MobileNet-like network within ``acc``'s config: bit-exact on the RTL, and
    the model to the cycle on every descriptor and the whole program."""
    spec = dataclasses.replace(network(acc.config, seed, dict(max_hw=12, max_blocks=3)),
                               seed=seed)
    model = mobilenet_like_model(spec)
    x = np.random.default_rng(seed).integers(-128, 128, (1, spec.h, spec.w, 3), np.int8)
    assert np.array_equal(acc.run(model, x), litert_run(model, x)), spec
    _check_program(acc.device, acc.compile(model), whole=True)


@pytest.mark.parametrize("name", Q16_KINDS)
def test_wider_engine_matches_litert_and_the_model(q16_rtl, name):
    """Bit-exact against LiteRT on the RTL, and the model (written for this hardware before
    the top level accepted pw_cols != dw_lanes) to the cycle."""
    _matches_litert_and_the_model(q16_rtl, Q16_KINDS[name](), len(name))


@pytest.mark.parametrize("seed", [400, 403])
def test_wider_engine_network(q16_rtl, seed):
    """A random MobileNet-like network on P = 8, C = 16."""
    _network_matches_litert_and_the_model(q16_rtl, seed)


# ---- pynq-z2's shape (P = 16, C = 24) with small memories ------------------------------------

#: pynq-z2's lanes and arithmetic (16 x 24 engine, a 12-lane engine requantizer of which 4
#: lanes form their high product in LUTs, the DW requantizer's in LUTs) with small memories:
#: expanded words of three beats enter the line buffer in transfers of up to a 16-byte
#: line-buffer word, two a word
PYNQ_SHAPE = dataclasses.replace(
    PYNQ_Z2, name="pynq-shape", max_dim=32, lb_width=32,
    lb_channels=64, mid_channels_max=144, out_channels_max=48, expand_channels_max=32,
    engine_weight_words=None)

PYNQ_SHAPE_KINDS = {
    # 144 expanded channels: 6 engine words, 9 line-buffer words a pixel
    "expand_c24_residual": lambda: _block(8, 8, 24, 6, 24, 1, seed=30),
    "expand_s2": lambda: _block(10, 10, 16, 6, 24, 2, seed=31),
    # 48 expanded channels: 2 engine words, 3 line-buffer words
    "expand_c48": lambda: _block(6, 7, 16, 3, 16, 1, seed=32),
    "stem": lambda: _stem(16, 16, 32, seed=33),
}


@pytest.fixture(scope="module")
def pynq_shape_rtl():
    with Accelerator(PYNQ_SHAPE, "rtl") as acc:
        yield acc


@pytest.mark.parametrize("name", PYNQ_SHAPE_KINDS)
def test_pynq_shape_matches_litert_and_the_model(pynq_shape_rtl, name):
    """Bit-exact against LiteRT on the RTL, and the model to the cycle."""
    _matches_litert_and_the_model(pynq_shape_rtl, PYNQ_SHAPE_KINDS[name](), len(name))


@pytest.mark.parametrize("seed", [410])
def test_pynq_shape_network(pynq_shape_rtl, seed):
    """A random MobileNet-like network on pynq-z2's shape."""
    _network_matches_litert_and_the_model(pynq_shape_rtl, seed)


# ---- the model's terms ---------------------------------------------------------------------

def _desc(**over):
    d = dict(flags=0, kernel=3, stride=1, dilation=1, depth_mult=1, pad_top=1, pad_left=1,
             in_h=8, in_w=8, in_groups=1, exp_groups=1, mid_groups=1, out_h=8, out_w=8,
             out_groups=1, out_pitch=1)
    d.update(over)
    # tiny's P == Q == 8: the engine's expand words are the line buffer's groups, and a
    # pixel stores whole words of one beat (four with RAW_OUT)
    d.setdefault("exp_words", d["exp_groups"])
    d.setdefault("out_beats", d["out_groups"] * (4 if d["flags"] & DescFlag.RAW_OUT else 1))
    return d


def test_breakdown_terms():
    """Fetch and loads follow the documented DMA and memory latencies; a slower memory
    costs its extra latency once per read command and once at the last write response."""
    cfg = TINY
    est = layer_cycles(cfg, _desc())
    # FETCH_CMD + (CMD_TO_AR 2 + read 2 + R_TO_DATA 1 + 16 beats - 1) + CHECK + CHECKED +
    # SIZES + CHECK_PRODUCTS + PRODUCTS_CHECKED; SIZES: two multiplier bits a cycle (in_w 8,
    # out_w 8, in_groups 1, out_beats 1, out_pitch 1, kernel 3, in_w 8, kernel_taps 9,
    # pad_left 1, dilation 1, depth_mult 1, in_groups 1, dw_cols 3, out_groups 1), then
    # `done`
    assert est.fetch == 1 + 20 + 2 + (2 + 2 + 1 + 1 + 1 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1
                                      + 1) + 2
    # 9 DW weight words of 1 beat, a DW table of 2 records of 4 lanes (requant_lanes) of 5
    # beats (36 bytes padded to 40), 1 PW word of 8 beats, 2 x 5 beats: LOAD_NEXT +
    # LOAD_SPLIT + LOAD_CMD + (CMD_TO_AR 2 + read 2 + R_TO_DATA 1 + beats - 1) + LOAD_FLUSH
    # (the two ports' beats, one a cycle); LOAD_NEXT skips the two expand tables and the ADD
    # table, then ends
    assert est.loads == {"dw_weights": 8 + 9, "dw_table": 8 + 10, "pw_weights": 8 + 8,
                         "pw_table": 8 + 10, "skipped": 4}
    slow = layer_cycles(cfg, _desc(),
                        memory=dataclasses.replace(IDEAL, read_latency=12, write_latency=7))
    assert slow.fetch == est.fetch + 10
    assert slow.loads == {k: v + (10 if k != "skipped" else 0) for k, v in est.loads.items()}
    assert slow.total == est.total + 6 * 10 + 5


def test_loads_follow_flags():
    """EXPAND adds the expand weights (P*P bytes a word) and table; CONV drops the DW
    tables; RAW_OUT drops the PW table."""
    cfg = TINY
    exp = layer_cycles(cfg, _desc(flags=DescFlag.EXPAND, in_groups=2, exp_groups=3,
                                  mid_groups=3))
    # 6 words of 8 beats, 3 groups = 6 records of 5 beats: LOAD_NEXT + LOAD_SPLIT +
    # LOAD_CMD + 5 + beats - 1 + FLUSH
    assert exp.loads["exp_weights"] == 9 + 48 - 1 and exp.loads["exp_table"] == 9 + 30 - 1
    assert exp.loads["skipped"] == 2   # the ADD table, and the end
    res = layer_cycles(cfg, _desc(flags=DescFlag.RESIDUAL))
    # the ADD table: 512 entries of one beat (half through each port, one beat a cycle)
    assert res.loads["add_table"] == 8 + 512 and res.loads["skipped"] == 3
    conv = layer_cycles(cfg, _desc(flags=DescFlag.CONV, mid_groups=9))
    assert set(conv.loads) == {"pw_weights", "pw_table", "skipped"}
    assert conv.loads["skipped"] == 6   # expand (2), DW (2), ADD tables, and the end
    raw = layer_cycles(cfg, _desc(flags=DescFlag.RAW_OUT, kernel=1, pad_top=0, pad_left=0,
                                  out_pitch=4))
    assert "pw_table" not in raw.loads and raw.bytes_written == 64 * 32


def test_bottleneck_bound_and_ideal():
    cfg = TINY
    pw_bound = layer_cycles(cfg, _desc(kernel=1, pad_top=0, pad_left=0, out_groups=8,
                                       out_pitch=8))
    assert pw_bound.bottleneck == pw_bound.bound == "engine"
    assert pw_bound.stage_cycles == {"ddr_read": 64, "expand": 0, "line_buffer": 0, "dw": 64,
                                     "engine": 512, "add": 0, "ddr_write": 512}
    # a 1x1 pixel with many tables: the loads take longer than the run's stages
    tiny_run = layer_cycles(cfg, _desc(in_h=1, in_w=1, out_h=1, out_w=1, mid_groups=4,
                                       in_groups=4, exp_groups=4))
    assert tiny_run.bound == "table_load" and tiny_run.bottleneck == "dw"
    assert {pw_bound.bound, tiny_run.bound} <= set(BOUNDS)
    assert layer_macs(cfg, _desc()) == {"expand": 0, "dw": 64 * 8 * 9, "pw": 64 * 8 * 8}
    assert layer_macs(cfg, _desc(flags=DescFlag.EXPAND, in_groups=2, exp_groups=3,
                                 mid_groups=3))["expand"] == 64 * 16 * 24
    assert ideal_cycles(72 * 9, cfg) == 72 * 9 / cfg.macs


def test_bytes():
    cfg = TINY
    est = layer_cycles(cfg, _desc(flags=DescFlag.RESIDUAL, in_groups=2, exp_groups=2,
                                  mid_groups=2, out_groups=3, out_pitch=3))
    # tables: 2 and 3 groups of 8 lanes in records of 4 lanes, 40 bytes each; the ADD
    # table's 512 int64
    assert est.bytes_read == {"descriptor": DESCRIPTOR.size, "dw_weights": 18 * 8,
                              "dw_table": 4 * 40, "pw_weights": 6 * 64, "pw_table": 6 * 40,
                              "add_table": 512 * 8, "input": 64 * 16, "residual": 64 * 24,
                              "prefetch": 0}
    assert est.bytes_written == 64 * 24
    est = layer_cycles(cfg, _desc(pf0_words=3, pf1_words=2))   # engine words of 8 x 8 bytes
    assert est.bytes_read["prefetch"] == 5 * 64


def test_read_rate_terms():
    """A read command's beats move as the link's credit allows (``sim/ddr_model.sv``): from a
    full counter (two beats) at half a beat per cycle, beat ``k`` moves ``max(k, 2(k-1))``
    cycles after the first, so ``n`` beats take ``n - 3`` cycles more than at one per cycle;
    a lone port at one beat per cycle or more is not held back."""
    cfg = TINY
    est = layer_cycles(cfg, _desc())
    half = layer_cycles(cfg, _desc(), memory=dataclasses.replace(IDEAL, read_rate=0.5))
    assert half.fetch == est.fetch + 16 - 3
    # (the two tables of 10 beats read through both ports, which share the link here: one
    # cycle less than a lone port, as the memory's priority rotates over its four requesters)
    assert half.loads == {"dw_weights": 17 + 9 - 3, "dw_table": 18 + 10 - 4,
                          "pw_weights": 16 + 8 - 3, "pw_table": 18 + 10 - 4, "skipped": 4}
    # a table load reads its first ceil(n/2) words through m_axi, the rest through m_axi_res:
    # on two links of half a beat a cycle each, a table of two or more words moves at one
    # beat a cycle; the one-word PW table all through m_axi, at half
    two = dataclasses.replace(IDEAL, read_rate=0.5, read_links=(0, 1, 2))
    assert layer_cycles(cfg, _desc(), memory=two).loads == {**est.loads,
                                                            "pw_weights": half.loads[
                                                                "pw_weights"]}
    # the DRAM's rate limits the same way; the tighter of the two counters wins
    both = dataclasses.replace(IDEAL, read_rate=0.75, ddr_rate=0.5)
    assert layer_cycles(cfg, _desc(), memory=both).loads == half.loads
    fast = dataclasses.replace(IDEAL, read_rate=1.5, write_rate=1.0, ddr_rate=1.0)
    assert layer_cycles(cfg, _desc(), memory=fast).total == est.total
    # the stages' work at the memory's rates: input + residual share the read link
    res = _desc(flags=DescFlag.RESIDUAL, kernel=1, pad_top=0, pad_left=0)
    assert layer_cycles(cfg, res).stage_cycles["ddr_read"] == 64
    assert layer_cycles(cfg, res, memory=dataclasses.replace(
        IDEAL, read_rate=0.5)).stage_cycles["ddr_read"] == 256


# ---- a bandwidth-limited memory (sim/ddr.py "pynq-z2") --------------------------------------

#: fraction of the RTL's cycles the model may differ by with a rate-limited memory, per
#: descriptor and per program. The model follows each port's beats through its own link and
#: DRAM credit counters exactly; what it leaves out is two ports drawing on one counter in
#: the same cycles (the input and residual readers share an HP link, all four ports the
#: DRAM), which the Verilog model arbitrates with a priority rotating over its requesters.
#: 0.03 with two read ports; since the third (``m_axi_pf``, four requesters) the table
#: loads of ``pool_fc_wide`` (both load ports on the DRAM's counter, taken alternately) are
#: 3.4 % fast at 200 MHz (1,027 model, 1,063 RTL cycles). See perf.py's docstring for the
#: errors measured on whole networks.
RATE_TOLERANCE = 0.04
FRAME_TOLERANCE = 0.01

#: descriptors that move many beats per cycle of work (read, write and table-load bound,
#: residual reads sharing the input's link), and a whole network
PYNQ_MEMORY_CASES = {
    "k1_s2_read_bound": lambda: dwsep_layer_model(LAYERS["k1_s2_read_bound"][0]),
    "k1_pw_bound": lambda: dwsep_layer_model(LAYERS["k1_pw_bound"][0]),
    "expand_residual_c4": KINDS["expand_residual_c4"][0],
    "expand_tall": KINDS["expand_tall"][0],
    "conv_stem": KINDS["conv_stem"][0],
    "pool_fc_wide": KINDS["pool_fc_wide"][0],
    "tiles_pixel_bursts": KINDS["tiles_pixel_bursts"][0],
    # a read and a write beat per pixel and cycle: the two ports want the DRAM's credit in
    # the same cycles, and a refused port loses the credit accrued over the two-beat cap
    # (at 100 MHz 1.97 beats a cycle, 1.5 when both want every cycle). The model without
    # the rotating priority let both move: 23 % (100 MHz), 32 % (150 MHz) under the RTL.
    "k1_read_write_contend": lambda: dwsep_layer_model(layer(32, 32, 8, 1, c_out=8,
                                                             seed=12)),
}


@pytest.fixture(scope="module", params=[200.0, 100.0], ids=["200MHz", "100MHz"])
def pynq_memory_rtl(request):
    with Accelerator("tiny", "rtl", memory="pynq-z2", clock_mhz=request.param) as acc:
        yield acc, MEMORIES["pynq-z2"].at(request.param)


@pytest.mark.parametrize("name", PYNQ_MEMORY_CASES)
def test_pynq_memory_matches_rtl(pynq_memory_rtl, name):
    acc, memory = pynq_memory_rtl
    _check_program(acc.device, acc.compile(PYNQ_MEMORY_CASES[name]()), whole=False,
                   memory=memory, tolerance=RATE_TOLERANCE)


def test_pynq_memory_network_matches_rtl(pynq_memory_rtl):
    acc, memory = pynq_memory_rtl
    _check_program(acc.device, acc.compile(_network(3)), whole=True, memory=memory,
                   tolerance=RATE_TOLERANCE)
    # (the whole program's own bound, FRAME_TOLERANCE, is checked on MobileNets below)


# ---- MobileNets on pynq-z2 with its memory (slow: a pynq-z2 build, minutes per frame) ------

def _mobilenet(arch: str) -> bytes:
    """``arch``-1.0-224 with random weights (cycles do not depend on them)."""
    from dwsep.host import quantizer

    return quantizer.quantize(arch, None, calibration_photos()[:2], width=1.0, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v1"])
def test_mobilenet_pynq_memory_matches_rtl(arch):
    """Every descriptor of a whole frame within RATE_TOLERANCE of the RTL's exact count
    (``sim/profiler.sv``), the frame within FRAME_TOLERANCE, the output bit-exact."""
    from dwsep.host import imagenet

    model = _mobilenet(arch)
    x = imagenet.image_to_input(imagenet.sample_images()["grace_hopper"], model)
    clock = 200.0
    with Accelerator("pynq-z2", "reference") as ref:
        expected = ref.run(model, x)
    with Accelerator("pynq-z2", "rtl", memory="pynq-z2", clock_mhz=clock,
                     max_cycles=100_000_000) as acc:
        y = acc.run(model, x)
        program = acc.compile(model)
        rtl = dict(acc.device.last_job.layer_cycles)
        base = acc.device.read_field("PROGRAM", "addr")
        wall = acc.last_stats["seconds"]
    assert np.array_equal(y, expected)
    t0 = time.perf_counter()
    total, layers = program_cycles("pynq-z2", program, memory=MEMORIES["pynq-z2"].at(clock),
                                   base=base)
    seconds = time.perf_counter() - t0
    frame = sum(rtl.values())
    print(f"{arch}-224 on pynq-z2, pynq-z2 memory at {clock:g} MHz: RTL {frame} cycles "
          f"({wall:.0f} s wall), model {total} ({(total - frame) / frame:+.3%}, "
          f"{seconds:.1f} s)")
    errors = []
    for i, est in enumerate(layers):
        errors.append((est.total - rtl[i]) / rtl[i])
        print(f"  descriptor {i:3} {DescFlag(program.descriptors[i]['flags'])!r:32} rtl "
              f"{rtl[i]:>8} model {est.total:>8} {errors[-1]:+.2%} bound {est.bound}")
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    assert abs(errors[worst]) <= RATE_TOLERANCE, (worst, program.descriptors[worst])
    assert abs(total - frame) <= FRAME_TOLERANCE * frame


def test_model_follows_engines_wider_than_the_dw_lanes():
    """With ``pw_cols != dw_lanes`` (16 x 24, not yet in the top level) the model follows
    the planned hardware: the expand words of 24 channels enter the line buffer as the
    pixel's 16-channel groups, the last word's other beats dropped, and the output stores
    ``out_beats`` a pixel. Every descriptor of a MobileNet-like program completes (before,
    the expand stage's rows never did) and runs at least as long as its busiest stage."""
    from dwsep.host.compiler import compile_model

    cfg = P16Q24
    spec = MobileNetSpec(h=16, w=16, stem_channels=16,
                         blocks=(BlockSpec(1, 16, 1), BlockSpec(4, 24, 2),
                                 BlockSpec(6, 24, 1), BlockSpec(6, 40, 2)),
                         head_channels=72, pool="MEAN", keep_dims=False, classes=10,
                         fc_per_channel=True, reshape=True, seed=5)
    prog = compile_model(read_tflite(mobilenet_like_model(spec)), cfg)
    descs = prog.descriptors
    assert any(d["flags"] & DescFlag.EXPAND and d["exp_words"] * 24 > d["exp_groups"] * 16
               for d in descs)
    assert any(d["flags"] & DescFlag.RESIDUAL and d["out_beats"] < d["out_groups"] * 3
               for d in descs)
    for d in descs:
        est = layer_cycles(cfg, d)
        assert est.run >= max(est.stage_cycles.values()), d
        assert est.bytes_written == d["out_h"] * d["out_w"] * d["out_beats"] * 8
