"""The NumPy reference (host.reference, host.numerics) against hand-derived values and, bit for
bit, against LiteRT BUILTIN_REF (sim.oracle) on random layers."""

import itertools

import numpy as np
import pytest

from dwsep.host.graph import UnsupportedModelError
from dwsep.host.numerics import (
    INT32_MAX,
    INT32_MIN,
    activation_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    srdhm,
)
from dwsep.host.reference import (
    conv2d,
    conv_quant_params,
    depthwise_conv2d,
    padding_amounts,
    run_graph,
)
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    LayerSpec,
    dwsep_layer_model,
    random_layer_spec,
    single_op_model,
)
from dwsep.sim.oracle import litert_run, litert_run_all

# --------------------------------------------------------------------------------------------
# numerics: expected values derived by hand from the C++ definitions quoted in the docstrings


@pytest.mark.parametrize("real, expected", [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)),                   # frexp(0.5) = (0.5, 0)
    (1.0, (1 << 30, 1)),                   # frexp(1.0) = (0.5, 1)
    (0.75, (3 << 29, 0)),
    (-0.75, (-(3 << 29), 0)),              # sign kept in the multiplier
    (0.5 + 2.0**-32, ((1 << 30) + 1, 0)),  # q * 2**31 = 2**30 + 0.5: tie rounds away from 0
    (1 - 2.0**-40, (1 << 30, 1)),          # rounds up to 2**31: halved, shift + 1
    (2.0**-32, (1 << 30, -31)),            # smallest shift kept
    (2.0**-33, (0, 0)),                    # shift -32 < -31: flushed to zero
    (2.0**-32 * (1 - 2.0**-40), (1 << 30, -31)),  # frexp shift -32, rounds up into -31: kept
    (5.0, (5 << 28, 3)),                   # 5 = 0.625 * 2**3
])
def test_quantize_multiplier(real, expected):
    assert quantize_multiplier(real) == expected


@pytest.mark.parametrize("a, b, expected", [
    (INT32_MIN, INT32_MIN, INT32_MAX),     # the only saturating case
    (INT32_MIN, INT32_MAX, INT32_MIN + 1),  # (-2**62 + 2**30 + 1) / 2**31 truncated
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),  # (2**62 - 2**32 + 1 + 2**30) / 2**31 ~ 2**31 - 1.5
    (1 << 30, 1 << 30, 1 << 29),           # (2**60 + 2**30) / 2**31 = 2**29 + 0.5 truncated
    (1, 1 << 30, 1),                       # +0.5 rounds up
    (3, 1 << 30, 2),                       # +1.5 rounds up
    (-1, 1 << 30, 0),                      # -0.5: nudge 1 - 2**30, truncation gives 0
    (-3, 1 << 30, -1),                     # -1.5 -> -1 (negative ties go toward zero)
    (-5, 3 << 29, -4),                     # -3.75 -> -4
    (0, INT32_MIN, 0),
])
def test_srdhm(a, b, expected):
    assert srdhm(a, b) == expected


@pytest.mark.parametrize("x, exponent, expected", [
    (5, 1, 3), (-5, 1, -3),                # +-2.5: ties away from zero
    (-4, 1, -2), (6, 2, 2), (-6, 2, -2),   # +-1.5
    (-7, 2, -2), (-5, 2, -1), (7, 2, 2), (5, 2, 1),
    (-9, 0, -9),                           # exponent 0 leaves x alone
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (-(1 << 30), 31, -1), ((1 << 30) - 1, 31, 0),
])
def test_rounding_divide_by_pot(x, exponent, expected):
    assert rounding_divide_by_pot(x, exponent) == expected


@pytest.mark.parametrize("acc, mult, shift, expected", [
    (100, 1 << 30, -1, 25),                # 100 * 0.5 / 2
    (-3, 1 << 30, 0, -1),                  # SRDHM -1.5 -> -1 (not -2)
    (-5, 1 << 30, -1, -1),                 # SRDHM -2.5 -> -2, then RDBPOT -1.0 -> -1
    (-7, 1 << 30, -1, -2),                 # SRDHM -3.5 -> -3, then -1.5 -> -2 (double rounding)
    (3, 1 << 30, 1, 3),                    # left shift: 6 * 0.5
    (1 << 30, 1 << 30, 2, 0),              # 2**30 << 2 wraps to 0 in int32
    (12345, 0, 0, 0),                      # flushed multiplier
])
def test_multiply_by_quantized_multiplier(acc, mult, shift, expected):
    assert multiply_by_quantized_multiplier(acc, mult, shift) == expected


@pytest.mark.parametrize("activation, scale, zp, expected", [
    ("NONE", 0.1, 3, (-128, 127)),
    ("RELU", 0.1, -20, (-20, 127)),
    ("RELU", 0.1, -130, (-128, 127)),       # zero point below range: lower bound stays -128
    ("RELU6", 4.0, 0, (0, 2)),              # 6 / 4 = 1.5 rounds away from zero
    ("RELU6", 0.05, -10, (-10, 110)),       # float32: 6 / 0.05f rounds to 120.0f
    ("RELU6", 0.01, 0, (0, 127)),           # 600 clipped
    ("RELU_N1_TO_1", 2.0, 5, (4, 6)),       # -0.5 -> -1, 0.5 -> 1
    ("RELU_N1_TO_1", 0.4, 0, (-3, 3)),      # 1 / 0.4f rounds to 2.5f in float32, then -> 3
])
def test_activation_range(activation, scale, zp, expected):
    assert activation_range(activation, scale, zp) == expected


# --------------------------------------------------------------------------------------------
# padding and small kernels by hand


@pytest.mark.parametrize("args, expected", [
    (("SAME", 5, 3, 2, 1), (1, 1, 3)),      # out 3, total (3-1)*2 + 3 - 5 = 2
    (("SAME", 4, 3, 2, 1), (0, 1, 2)),      # total 1: the odd pixel goes after
    (("SAME", 1, 7, 1, 2), (6, 6, 1)),      # k_eff 13
    (("SAME", 8, 1, 2, 1), (0, 0, 4)),      # total would be -1: clamped to 0
    (("VALID", 7, 3, 1, 2), (0, 0, 3)),     # k_eff 5
    (("VALID", 6, 3, 2, 1), (0, 0, 2)),
    (("VALID", 5, 5, 3, 1), (0, 0, 1)),
])
def test_padding_amounts(args, expected):
    assert padding_amounts(*args) == expected


def test_padding_amounts_rejects_window_larger_than_input():
    with pytest.raises(UnsupportedModelError, match="effective size 5 .* input size 4"):
        padding_amounts("VALID", 4, 3, 1, 2)


def test_depthwise_by_hand():
    # acc = (1-1)*1 + (4-1)*1 + bias 10 = 13; 13 * 0.5 = 6.5 -> 7; + out_zp -2 -> 5.
    x = np.array([[[1], [2]], [[3], [4]]], np.int8)
    w = np.array([[[1], [0]], [[0], [1]]], np.int8)
    y = depthwise_conv2d(x, w, np.array([10], np.int32), in_zp=1, mult=[1 << 30], shift=[0],
                         out_zp=-2, act_min=-128, act_max=127)
    assert y.tolist() == [[[5]]]


def test_depthwise_padding_holds_input_zero_point():
    # SAME 3x3 on a 1x1 image: the 8 padded taps add nothing, only the centre tap counts;
    # depth multiplier 2 gives channels (c0*w0, c0*w1).
    x = np.array([[[7]]], np.int8)
    w = np.full((3, 3, 2), 100, np.int8)
    w[1, 1] = [2, -3]
    y = depthwise_conv2d(x, w, None, in_zp=5, mult=[1 << 30, 1 << 30], shift=[1, 1], out_zp=0,
                         act_min=-128, act_max=127, padding=(1, 1, 1, 1), depth_multiplier=2)
    assert y.tolist() == [[[4, -6]]]       # (7-5)*2 = 4, (7-5)*(-3) = -6, times 0.5 * 2


def test_conv_by_hand():
    # 1x1 conv, 2 inputs -> 1 output: (3-1)*2 + (-1-1)*5 = -6, bias 1 -> -5; * 0.5 -> -2.5
    # rounds to -2 in SRDHM (negative tie toward zero); RELU clamps at out_zp 0 -> 0.
    x = np.array([[[3, -1]]], np.int8)
    w = np.array([[[[2, 5]]]], np.int8)
    args = dict(in_zp=1, mult=[1 << 30], shift=[0], out_zp=0, act_max=127)
    assert conv2d(x, w, np.array([1], np.int32), act_min=-128, **args).tolist() == [[[-2]]]
    assert conv2d(x, w, np.array([1], np.int32), act_min=0, **args).tolist() == [[[0]]]


def test_run_graph_rejects_unsupported_op():
    g = read_tflite(dwsep_layer_model(_spec(0)))
    g.operators[1].opcode = "SOFTMAX"
    x = np.zeros(g.input.shape, np.int8)
    with pytest.raises(UnsupportedModelError, match="reference cannot run SOFTMAX"):
        run_graph(g, x)


# --------------------------------------------------------------------------------------------
# bit-exact against LiteRT BUILTIN_REF


def _spec(seed: int) -> LayerSpec:
    return random_layer_spec(np.random.default_rng(seed), extreme_fraction=0.25,
                             activations=("NONE", "RELU", "RELU6", "RELU_N1_TO_1"))


def _grid_spec(n: int, k: int, stride: int, dilation: int, padding: str) -> LayerSpec:
    r = np.random.default_rng(1000 + n)
    min_hw = (k - 1) * dilation + 1 if padding == "VALID" else 1
    return LayerSpec(h=int(r.integers(min_hw, 33)), w=int(r.integers(min_hw, 33)),
                     c=int(r.integers(1, 65)), depth_multiplier=1 + n % 3, kernel=k,
                     stride=stride, dilation=dilation, padding=padding,
                     dw_activation=("NONE", "RELU", "RELU6")[n % 3], c_out=int(r.integers(1, 65)),
                     pw_activation=("RELU6", "NONE", "RELU")[n % 3], seed=n, extreme=n % 5 == 0)


# Every window geometry once (sizes, channels and quantization random), then random layers,
# then the corners: 1x1 images, single channels, the largest sizes.
_GRID = [_grid_spec(n, *g) for n, g in enumerate(itertools.product(
    (1, 2, 3, 4, 5, 7), (1, 2), (1, 2), ("SAME", "VALID")))]
_CORNERS = [
    LayerSpec(1, 1, 1, 1, 7, 2, 2, "SAME", "NONE", 1, "NONE", seed=1),
    LayerSpec(1, 32, 5, 3, 3, 2, 1, "SAME", "RELU6", 1, "RELU", seed=2),
    LayerSpec(32, 32, 64, 3, 3, 1, 1, "SAME", "RELU6", 64, "RELU6", seed=3),
    LayerSpec(32, 32, 64, 1, 7, 2, 2, "VALID", "RELU", 64, "NONE", seed=4, extreme=True),
    LayerSpec(13, 13, 1, 1, 7, 1, 2, "VALID", "NONE", 64, "RELU", seed=5),
]
_LAYERS = ([pytest.param(s, id=f"grid{n}") for n, s in enumerate(_GRID)]
           + [pytest.param(_spec(seed), id=f"seed{seed}") for seed in range(200)]
           + [pytest.param(s, id=f"corner{n}") for n, s in enumerate(_CORNERS)])


def _input(spec: LayerSpec, shape) -> np.ndarray:
    return np.random.default_rng(spec.seed + 1).integers(-128, 128, shape, dtype=np.int8)


def _assert_same(ours, theirs, what, spec):
    assert ours.shape == theirs.shape, f"{what} shape: {spec}"
    if not np.array_equal(ours, theirs):
        diff = ours.astype(np.int64) - theirs
        pytest.fail(f"{what} differs in {np.count_nonzero(diff)}/{diff.size} values "
                    f"(max |diff| {np.abs(diff).max()}) for {spec}")


@pytest.mark.parametrize("spec", _LAYERS)
def test_layer_bit_exact(spec):
    model = dwsep_layer_model(spec)
    graph = read_tflite(model)
    x = _input(spec, graph.input.shape)
    theirs = litert_run_all(model, x)   # tensor indices: 3 DW output, 6 output
    _assert_same(run_graph(graph, x), theirs[6], "DW+PW output", spec)
    graph.outputs = ["dw/out"]
    _assert_same(run_graph(graph, x), theirs[3], "DW intermediate", spec)

    for op in ("DEPTHWISE_CONV_2D", "CONV_2D"):
        model = single_op_model(spec, op)
        _assert_same(run_graph(read_tflite(model), x), litert_run(model, x), op, spec)


def test_litert_run_all_matches_litert_run():
    spec = _spec(7)
    model = dwsep_layer_model(spec)
    x = _input(spec, (1, spec.h, spec.w, spec.c))
    everything = litert_run_all(model, x)
    assert np.array_equal(everything[6], litert_run(model, x))
    assert np.array_equal(everything[0], x)


def test_conv_quant_params_match_quantize_multiplier():
    spec = _spec(11)
    graph = read_tflite(dwsep_layer_model(spec))
    dw = graph.operators[0]
    q = conv_quant_params(graph, dw)
    s_in = float(graph.input.scale[0])
    s_w = graph.tensor("dw/weights").scale
    s_out = float(graph.tensor("dw/out").scale[0])
    for c in (0, s_w.size - 1):
        assert (q["mult"][c], q["shift"][c]) == quantize_multiplier(
            s_in * float(s_w[c]) / s_out)
    assert q["in_zp"] == int(graph.input.zero_point[0])
    assert (q["act_min"], q["act_max"]) == activation_range(
        spec.dw_activation, float(np.float32(s_out)), q["out_zp"])
