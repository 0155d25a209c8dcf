"""host.reference's MobileNet operators (PAD, PADV2, ADD, AVERAGE_POOL_2D, MEAN,
FULLY_CONNECTED, RESHAPE, QUANTIZE), the elementwise operators of MobileNetV3 and
squeeze-and-excitation (HARD_SWISH, LOGISTIC, TANH, LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1, MUL)
and whole random MobileNet-like networks, bit for bit against LiteRT BUILTIN_REF (sim.oracle,
ai-edge-litert 2.3.0), plus hand-derived edge cases."""

import numpy as np
import pytest

from dwsep.host.graph import UnsupportedModelError
from dwsep.host.numerics import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot16,
    srdhm16,
)
from dwsep.host.reference import (
    SUPPORTED_OPS,
    UNARY_OPS,
    fully_connected_params,
    fused_activation_range,
    hard_swish_params,
    mean_multiplier,
    pad,
    round_half_away,
    run_graph,
    table_lookup,
    unary_table,
)
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    RANDOM_OPS,
    UNARY_MODEL_OPS,
    BlockSpec,
    InvertedResidualSpec,
    ModelBuilder,
    add_model,
    average_pool_model,
    fully_connected_model,
    inverted_residual_model,
    mean_model,
    mobilenet_like_model,
    mul_model,
    pad_model,
    quantize_model,
    random_mobilenet_spec,
    random_op_model,
    unary_model,
)
from dwsep.sim.oracle import litert_run, litert_run_all


def _random_input(graph, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, graph.input.shape, dtype=np.int8)


def _mismatch(ours: np.ndarray, theirs: np.ndarray) -> str | None:
    """None when equal, else what differs."""
    if ours.shape != theirs.shape:
        return f"shape {list(ours.shape)} != LiteRT {list(theirs.shape)}"
    diff = ours.astype(np.int64) - theirs
    if np.any(diff):
        return (f"{np.count_nonzero(diff)}/{diff.size} values differ "
                f"(max |diff| {np.abs(diff).max()})")
    return None


def _check(model: bytes, x: np.ndarray) -> np.ndarray:
    """Assert run_graph == LiteRT on ``x``; return the output."""
    theirs = litert_run(model, x)
    problem = _mismatch(run_graph(read_tflite(model), x), theirs)
    assert problem is None, problem
    return theirs


# --------------------------------------------------------------------------------------------
# >= 100 random single-op models per op


@pytest.mark.parametrize("op", RANDOM_OPS)
def test_random_single_op_models_bit_exact(op):
    failures = []
    for seed in range(150):
        model = random_op_model(op, seed)
        graph = read_tflite(model)
        x = _random_input(graph, seed)
        problem = _mismatch(run_graph(graph, x), litert_run(model, x))
        if problem:
            failures.append(f"random_op_model({op!r}, {seed}): {problem}")
    assert not failures, "\n".join(failures)


def test_random_models_cover_the_options():
    """The random single-op models reach the cases the ops distinguish."""
    seen = set()
    for op in RANDOM_OPS:
        for seed in range(150):
            graph = read_tflite(random_op_model(op, seed))
            o = graph.operators[-1]    # a MUL's computed operand comes first
            x, y = graph.tensor(o.inputs[0]), graph.tensor(o.outputs[0])
            same_quant = (x.scale[0], x.zero_point[0]) == (y.scale[0], y.zero_point[0])
            seen.add((o.opcode, "same quant" if same_quant else "other quant"))
            seen.add((o.opcode, o.options.get("activation"), o.options.get("keep_dims"),
                      o.options.get("keep_num_dims")))
            if o.opcode == "ADD":
                seen.add(("ADD broadcast", graph.tensor(o.inputs[0]).shape
                          != graph.tensor(o.inputs[1]).shape))
            if o.opcode == "FULLY_CONNECTED":
                w = graph.tensor(o.inputs[1])
                seen.add(("FC", w.scale.size > 1, int(w.zero_point[0]) != 0, o.inputs[2] is None))
            if o.opcode == "MUL":
                a, b = (graph.tensor(name).shape for name in o.inputs)
                kind = ("same" if a == b else "SE" if (1, 1, 1, max(a, b, key=len)[-1]) in (a, b)
                        else "other")
                seen.add(("MUL", kind, len(graph.operators) > 1))   # computed operand?
            if o.opcode in ("LOGISTIC", "TANH"):
                fixed = {"LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0)}[o.opcode]
                seen.add((o.opcode, (y.scale[0], y.zero_point[0]) == fixed))
            if o.opcode == "LEAKY_RELU":
                seen.add(("LEAKY_RELU", "negative alpha" if o.options["alpha"] < 0 else
                          "alpha > 1" if o.options["alpha"] > 1 else "alpha"))
    for case in [("AVERAGE_POOL_2D", "other quant"), ("MEAN", "same quant"),
                 ("MEAN", "other quant"), ("PAD", "other quant"), ("ADD broadcast", True),
                 ("MEAN", None, True, None), ("MEAN", None, False, None),
                 ("FULLY_CONNECTED", "RELU6", None, True), ("ADD", "RELU_N1_TO_1", None, None),
                 ("FC", True, False, False), ("FC", False, True, False),
                 ("FC", False, False, True), ("MUL", "SE", False), ("MUL", "SE", True),
                 ("MUL", "same", False), ("MUL", "same", True), ("MUL", "other", False),
                 ("MUL", "RELU6", None, None), ("LOGISTIC", True), ("LOGISTIC", False),
                 ("TANH", True), ("TANH", False), ("LEAKY_RELU", "negative alpha"),
                 ("LEAKY_RELU", "alpha > 1")]:
        assert case in seen, case


# --------------------------------------------------------------------------------------------
# Whole networks: >= 20 random MobileNet-like networks and single inverted residual blocks


def _check_every_tensor(model: bytes, x: np.ndarray, what: str) -> None:
    """Every operator's output equal to LiteRT's (tensor indices follow the graph's order)."""
    graph = read_tflite(model)
    theirs = litert_run_all(model, x)
    index = {name: i for i, name in enumerate(graph.tensors)}
    for op in graph.operators:
        graph.outputs = [op.outputs[0]]
        problem = _mismatch(run_graph(graph, x), theirs[index[op.outputs[0]]])
        assert problem is None, f"{what}: {op.opcode} {op.index} output: {problem}"


@pytest.mark.parametrize("seed", range(24))
def test_random_mobilenet_like_network_bit_exact(seed):
    spec = random_mobilenet_spec(np.random.default_rng(seed))
    model = mobilenet_like_model(spec)
    graph = read_tflite(model)
    x = _random_input(graph, seed)
    _check_every_tensor(model, x, f"seed {seed}: {spec}")
    # Quantization keeps values spread: the network's output is not a constant.
    assert len(np.unique(litert_run(model, x))) > 1, f"seed {seed}: constant output"


def test_random_networks_cover_the_structure():
    ops, residual_adds = set(), 0
    for seed in range(24):
        graph = read_tflite(mobilenet_like_model(random_mobilenet_spec(
            np.random.default_rng(seed))))
        ops |= {op.opcode for op in graph.operators}
        block_inputs = {name for op in graph.operators for name in op.inputs
                        if sum(name in o.inputs for o in graph.operators) > 1}
        residual_adds += sum(op.opcode == "ADD" and bool(block_inputs & set(op.inputs))
                             for op in graph.operators)
    assert ops == {"PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "MEAN",
                   "FULLY_CONNECTED", "RESHAPE"}
    assert residual_adds >= 10


_BLOCKS = [InvertedResidualSpec(h, w, c, BlockSpec(t, c_out, s), seed=n)
           for n, (h, w, c, t, c_out, s) in enumerate([
               (8, 8, 8, 6, 8, 1), (9, 7, 8, 6, 8, 2), (5, 5, 3, 1, 3, 1), (6, 11, 4, 1, 16, 2),
               (1, 1, 16, 4, 16, 1), (2, 3, 5, 3, 5, 2), (16, 16, 12, 6, 12, 1),
               (13, 13, 24, 2, 32, 1), (7, 7, 1, 6, 1, 1), (10, 4, 6, 5, 6, 2)])]


@pytest.mark.parametrize("spec", _BLOCKS, ids=lambda s: f"block{s.seed}")
def test_inverted_residual_block_bit_exact(spec):
    model = inverted_residual_model(spec)
    graph = read_tflite(model)
    expected_ops = (["CONV_2D"] * (spec.block.expand > 1) + ["PAD"] * (spec.block.stride == 2)
                    + ["DEPTHWISE_CONV_2D", "CONV_2D"]
                    + ["ADD"] * (spec.block.stride == 1 and spec.block.c_out == spec.c_in))
    assert [op.opcode for op in graph.operators] == expected_ops
    _check_every_tensor(model, _random_input(graph, spec.seed), f"{spec}")


def test_run_graph_runs_operators_in_dependency_order():
    """The same network with its operator list reversed: run_graph orders the operators by
    their inputs (a residual ADD reads the block input after the block has run)."""
    model = mobilenet_like_model(random_mobilenet_spec(np.random.default_rng(5)))
    graph = read_tflite(model)
    x = _random_input(graph, 5)
    expected = litert_run(model, x)
    graph.operators.reverse()
    assert np.array_equal(run_graph(graph, x), expected)


def test_run_graph_rejects_missing_producer_and_unsupported_op():
    graph = read_tflite(inverted_residual_model(_BLOCKS[0]))
    x = _random_input(graph, 0)
    del graph.operators[1]                     # the DEPTHWISE_CONV_2D
    with pytest.raises(UnsupportedModelError, match="CONV_2D 2: input .* is neither the graph "
                       "input, a constant nor computed by another operator"):
        run_graph(graph, x)
    graph.operators[0].opcode = "SOFTMAX"
    with pytest.raises(UnsupportedModelError,
                       match=r"reference cannot run SOFTMAX \(operator 0\)"):
        run_graph(graph, x)
    assert "FULLY_CONNECTED" in SUPPORTED_OPS and "SOFTMAX" not in SUPPORTED_OPS


# --------------------------------------------------------------------------------------------
# Directed edge cases


def test_round_half_away():
    v = [2.5, -2.5, 0.5, -0.5, 1.4999999999999998, 0.49999999999999994, -7.0, 1e15 + 0.5]
    assert round_half_away(v).tolist() == [3.0, -3.0, 1.0, -1.0, 1.0, 0.0, -7.0, 1e15 + 1]


def test_pad_by_hand():
    x = np.array([[1, 2]], np.int8)
    assert pad(x, [[1, 0], [0, 2]], -5).tolist() == [[-5, -5, -5, -5], [1, 2, -5, -5]]


def test_pad_fills_output_zero_point_and_padv2_its_constant():
    shape, paddings = (1, 2, 3, 2), [[0, 0], [1, 2], [0, 1], [1, 0]]
    x = np.arange(-6, 6, dtype=np.int8).reshape(shape)
    for model, fill in ((pad_model(shape, paddings, (0.5, 17)), 17),
                        (pad_model(shape, paddings, (0.5, 17), constant=-99), -99)):
        y = _check(model, x)
        assert y.shape == (1, 5, 4, 3)
        assert np.array_equal(y[:, 1:3, :3, 1:], x)
        assert np.count_nonzero(y == fill) == y.size - x.size


def test_add_saturates_both_ways():
    """Full-range inputs into an output scale 4x too small: ADD saturates at -128 and 127,
    and the fused RELU clamps at the output zero point."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)
    other = np.random.default_rng(0).integers(-128, 128, (1, 16, 16, 1)).astype(np.int8)
    y = _check(add_model(x.shape, (0.02, 3), other, (0.03, -7), (0.0125, -2)), x)
    assert np.count_nonzero(y == -128) > 20 and np.count_nonzero(y == 127) > 20
    y = _check(add_model(x.shape, (0.02, 3), other, (0.03, -7), (0.0125, -2),
                         activation="RELU"), x)
    assert y.min() == -2


def test_add_with_too_small_output_scale_is_refused():
    # twice_max / (2**20 * s_out) = 1 / (2**20 * 2**-21) = 2 >= 1: LiteRT's TFLITE_CHECK
    # would abort the process.
    model = add_model((1, 2, 2, 1), (0.5, 0), np.zeros((1, 2, 2, 1), np.int8), (0.25, 0),
                      (2.0**-21, 0))
    with pytest.raises(UnsupportedModelError,
                       match=r"ADD 0: output rescale 2 must lie in \(0, 1\)"):
        run_graph(read_tflite(model), np.zeros((1, 2, 2, 1), np.int8))


def test_average_pool_rounds_ties_away_from_zero():
    # 1x2 windows, stride 2: means 1.5, -1.5, 0.5, -0.5, 2.5, -2.5.
    x = np.array([1, 2, -1, -2, 0, 1, 0, -1, 2, 3, -2, -3], np.int8).reshape(1, 1, 12, 1)
    y = _check(average_pool_model(x.shape, (1, 2), (1, 2), "VALID", (0.1, 0)), x)
    assert y.ravel().tolist() == [2, -2, 1, -1, 3, -3]


def test_average_pool_counts_only_taps_inside_the_image():
    # 1x3 SAME: the edge windows hold 2 taps (padding counts for nothing): 3/2 -> 2,
    # 7/3 -> 2, 6/2 -> 3, and the negatives.
    x = np.array([1, 2, 4, -1, -2, -4], np.int8).reshape(1, 2, 3, 1)
    y = _check(average_pool_model(x.shape, (1, 3), (1, 1), "SAME", (0.1, 0)), x)
    assert y.ravel().tolist() == [2, 2, 3, -2, -2, -3]


def test_average_pool_ignores_a_quantization_change():
    """LiteRT only debug-checks equal in/out quantization: release builds return the raw
    integer mean, clamped by the output's activation range (RELU6 here: [zp, zp + 6/s])."""
    x = np.random.default_rng(1).integers(-128, 128, (1, 6, 6, 4), dtype=np.int8)
    y = _check(average_pool_model(x.shape, (6, 6), (1, 1), "VALID", (0.1, -5), (0.05, 10)),
               x)
    s = x.astype(np.int64).sum(axis=(1, 2))
    assert y.ravel().tolist() == [int(v) for v in round_half_away(s / 36).ravel()]
    y = _check(average_pool_model(x.shape, (6, 6), (1, 1), "VALID", (0.1, -5), (1.0, 10),
                                  activation="RELU6"), x)
    assert y.min() >= 10 and y.max() <= 16


def test_mean_multiplier_by_hand():
    # count 49: k = floor(log2 49) = 5; mult' = (2**30 << 5) // 49; shift' = 1 - 5.
    assert mean_multiplier(1 << 30, 1, 49) == ((1 << 35) // 49, -4)
    # k is clamped to 31 + shift and to 32.
    assert mean_multiplier(1 << 30, -30, 8) == ((1 << 31) // 8, -31)
    assert mean_multiplier(1 << 30, 1, 2**40) == ((1 << 62) // 2**40, -31)


def test_mean_with_equal_quantization_is_not_exact_rounding():
    """Equal in/out quantization still goes through QuantizedMeanOrSum: the 1/n folded into
    the multiplier is truncated, so some means differ from round(sum / n)."""
    mult, shift = quantize_multiplier(1.0)
    m, s = mean_multiplier(mult, shift, 5)
    sums = [t for t in range(-640, 636) if int(multiply_by_quantized_multiplier(t, m, s))
            != int(round_half_away(t / 5))][:8]
    assert len(sums) == 8
    x = np.array([[t // 5 + (i < t % 5) for i in range(5)] for t in sums], np.int8)
    x = x.T.reshape(1, 1, 5, len(sums))     # channel c sums to sums[c]
    y = _check(mean_model(x.shape, [1, 2], True, (0.1, 0), (0.1, 0)), x)
    assert y.ravel().tolist() == [int(multiply_by_quantized_multiplier(t, m, s)) for t in sums]
    assert y.ravel().tolist() != [int(round_half_away(t / 5)) for t in sums]


@pytest.mark.parametrize("keep_dims", [False, True])
def test_mean_with_different_quantization(keep_dims):
    x = np.random.default_rng(2).integers(-128, 128, (1, 7, 7, 16), dtype=np.int8)
    y = _check(mean_model(x.shape, [1, 2], keep_dims, (0.05, -20), (0.0123, 31)), x)
    assert y.shape == ((1, 1, 1, 16) if keep_dims else (1, 16))
    assert len(np.unique(y)) > 4


def _fc_tie_model():
    """FC whose requantization lands on near-ties: one weight 1, bias -18233, input zero point
    0, so the 256 rows of a [1, 1, 256, 1] input give acc = x - 18233; with these scales
    acc * s_in * s_w / s_out ~ -9.5."""
    s_in, s_w, s_out = 0.011487486772239208, 0.00831943191587925, 0.18342356383800507
    model = fully_connected_model((1, 1, 256, 1), np.ones((1, 1), np.int8), [s_w],
                                  np.array([-18233]), (s_in, 0), (s_out, 0), keep_num_dims=True)
    return model, s_in * s_w / s_out


def test_fully_connected_requantizes_in_double_precision():
    """LiteRT's reference FC rounds ``double(acc) * s_in * s_w / s_out`` half away from zero;
    the fixed-point MultiplyByQuantizedMultiplier conv uses would differ here."""
    model, scale = _fc_tie_model()
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 256, 1)
    y = _check(model, x).ravel().astype(np.int64)
    acc = np.arange(-128, 128) - 18233
    assert y.tolist() == round_half_away(acc * scale).astype(np.int64).tolist()
    fixed = multiply_by_quantized_multiplier(acc, *quantize_multiplier(scale))
    assert np.count_nonzero(fixed != y) >= 1


def test_random_fc_layers_where_fixed_point_would_differ():
    """Across the random FC models, count those LiteRT matches only with double rounding."""
    differ = 0
    for seed in range(150):
        model = random_op_model("FULLY_CONNECTED", seed)
        graph = read_tflite(model)
        op = graph.operators[0]
        if graph.tensor(op.inputs[1]).scale.size != 1:
            continue
        x = _random_input(graph, seed)
        ours = run_graph(graph, x)
        graph_fixed = read_tflite(model)
        w = graph_fixed.tensor(op.inputs[1])
        s_in = graph_fixed.input.per_tensor_scale
        s_out = graph_fixed.output.per_tensor_scale
        fixed = _fixed_point_fc(graph_fixed, x, quantize_multiplier(
            s_in * float(w.scale[0]) / s_out))
        differ += not np.array_equal(fixed, ours)
    assert differ >= 1


def _fixed_point_fc(graph, x, multiplier):
    """The FC with the fixed-point requantization (what the optimized kernel does)."""
    p = fully_connected_params(graph, graph.operators[0])
    d = p["w"].shape[1]
    acc = (x.reshape(-1, d).astype(np.int64) - p["in_zp"]) @ (
        p["w"].astype(np.int64) - p["w_zp"]).T
    if p["bias"] is not None:
        acc += p["bias"]
    out = multiply_by_quantized_multiplier(acc, *multiplier) + p["out_zp"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8).reshape(
        run_graph(graph, x).shape)


def test_fully_connected_out_of_int32_gives_int32_min():
    """double -> int32 of a value beyond int32 is INT32_MIN on x86 (cvttsd2si): +-1e10 both
    clamp to -128."""
    model = fully_connected_model((1, 1), np.ones((1, 1), np.int8), [1.0], np.array([0]),
                                  (1.0, 0), (1e-8, 0))
    for v, expected in ((100, -128), (-100, -128), (1, 127), (0, 0)):
        assert _check(model, np.array([[v]], np.int8)).tolist() == [[expected]]


def test_fused_activation_overflow_is_refused_like_litert():
    # RELU6 with output scale 1e-12: 6 / 1e-12 leaves int32; LiteRT fails at prepare.
    assert fused_activation_range("RELU6", 0.05, -10, "x") == (-10, 110)
    with pytest.raises(UnsupportedModelError, match="FULLY_CONNECTED 0: fused RELU6 bound 6"):
        fused_activation_range("RELU6", 1e-12, 0, "FULLY_CONNECTED 0")
    model = fully_connected_model((1, 4), np.ones((2, 4), np.int8), [0.01], None, (0.1, 0),
                                  (1e-12, 0), activation="RELU6")
    with pytest.raises(UnsupportedModelError, match="does not fit int32"):
        run_graph(read_tflite(model), np.zeros((1, 4), np.int8))
    with pytest.raises(RuntimeError, match="FULLY_CONNECTED"):
        litert_run(model, np.zeros((1, 4), np.int8))


def test_per_channel_fc_with_zero_points_is_refused():
    model = fully_connected_model((1, 4), np.ones((2, 4), np.int8), [0.01, 0.02], None,
                                  (0.1, 0), (0.1, 0))
    graph = read_tflite(model)
    graph.tensor("weights").zero_point = np.array([0, 3])
    with pytest.raises(UnsupportedModelError, match="per-channel weights 'weights' need zero "
                       "points 0"):
        run_graph(graph, np.zeros((1, 4), np.int8))


def test_add_of_two_computed_tensors():
    """ADD of a tensor and a requantized copy of it: both operands computed, one of them read
    by two operators."""
    mb = ModelBuilder("x + quantize(x)")
    x = mb.add_tensor("input", (1, 5, 5, 3), "int8", 0.1, 4)
    q = mb.add_tensor("requantized", (1, 5, 5, 3), "int8", 0.037, -50)
    y = mb.add_tensor("output", (1, 5, 5, 3), "int8", 0.15, 7)
    mb.add_operator("QUANTIZE", [x], [q])
    mb.add_operator("ADD", [q, x], [y], activation="RELU6")
    mb.inputs, mb.outputs = [x], [y]
    model = mb.finish()
    _check(model, _random_input(read_tflite(model), 3))


# --------------------------------------------------------------------------------------------
# Elementwise int8 ops: every int8 input under many quantizations

#: All 256 int8 values, as one image.
_ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def _unary_case(op: str, rng) -> tuple[tuple, tuple, dict]:
    """``(in_quant, out_quant, options)`` of a random ``op`` model LiteRT accepts: half the time
    as a converter would quantize it (input scale 0.004 to 0.1, the output's fitting the op's
    range), else anything (input scale 1e-4 to 10, output scale far from it)."""
    zp_in, zp = (int(v) for v in rng.integers(-128, 128, 2))
    options = {}
    if op == "LEAKY_RELU":
        options["alpha"] = float(rng.choice([0.01, 0.1, 0.2, 0.3, 0.5, 0.0, -0.5, 1.0, 2.5]))
    if rng.random() < 0.5:
        s_in = _log_uniform(rng, 0.004, 0.1)
        out_quant = {
            "HARD_SWISH": (s_in * _log_uniform(rng, 0.4, 1.0), zp),
            "LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0),
            "LEAKY_RELU": (s_in * _log_uniform(rng, 0.5, 1.5), zp),
            "RELU": (s_in * _log_uniform(rng, 0.5, 1.0), -128),
            "RELU6": (6 / 255 * _log_uniform(rng, 0.9, 1.1), -128),
            "RELU_N1_TO_1": (2 / 255 * _log_uniform(rng, 0.9, 1.1), 0),
        }[op]
        return (s_in, zp_in), out_quant, options
    s_in = _log_uniform(rng, 1e-4, 10.0)
    if op == "LOGISTIC":
        out_quant = (1 / 256, -128 if rng.random() < 0.5 else zp)
    elif op == "TANH":
        out_quant = (1 / 128, 0) if rng.random() < 0.5 else (_log_uniform(rng, 1e-4, 1.0), zp)
    elif op == "HARD_SWISH":   # LiteRT needs s_out > s_in / 128; from 2**9 up, out_exp <= -16
        out_quant = (s_in * _log_uniform(rng, 1 / 100, 2000.0), zp)
    else:
        out_quant = (s_in * _log_uniform(rng, 1 / 64, 64.0), zp)
    return (s_in, zp_in), out_quant, options


@pytest.mark.parametrize("op", UNARY_MODEL_OPS)
def test_unary_op_on_every_int8_input_bit_exact(op):
    """40 random quantizations (seeded by the op's index and the case number) per op, each on
    all 256 int8 inputs; the op's unary_table gives the same outputs."""
    failures = []
    for case in range(40):
        seed = 1000 * UNARY_MODEL_OPS.index(op) + case
        in_quant, out_quant, options = _unary_case(op, np.random.default_rng(seed))
        model = unary_model(op, _ALL_INT8.shape, in_quant, out_quant, **options)
        graph = read_tflite(model)
        theirs = litert_run(model, _ALL_INT8)
        what = f"seed {seed}: {op} {in_quant} -> {out_quant} {options}"
        problem = _mismatch(run_graph(graph, _ALL_INT8), theirs)
        if problem:
            failures.append(f"{what}: {problem}")
        elif not np.array_equal(table_lookup(_ALL_INT8, unary_table(graph, graph.operators[0])),
                                theirs):
            failures.append(f"{what}: unary_table differs")
    assert not failures, "\n".join(failures)


def test_logistic_output_scale_must_be_1_over_256():
    """LiteRT's int8 LOGISTIC checks the output scale (exactly 1/256) but, under BUILTIN_REF,
    not the zero point; TANH checks neither."""
    for out_quant in ((1 / 128, -128), (1 / 256 * (1 + 2**-20), -128)):
        model = unary_model("LOGISTIC", _ALL_INT8.shape, (0.05, 3), out_quant)
        with pytest.raises(RuntimeError, match="LOGISTIC"):
            litert_run(model, _ALL_INT8)
        with pytest.raises(UnsupportedModelError,
                           match=r"LOGISTIC 0: output scale .* must be exactly 1/256"):
            run_graph(read_tflite(model), _ALL_INT8)
    y = _check(unary_model("LOGISTIC", _ALL_INT8.shape, (0.05, 3), (1 / 256, 0)), _ALL_INT8)
    assert y.min() == 0 and np.count_nonzero(y == 127) > 100    # sigmoid >= 1/2 saturates
    y = _check(unary_model("TANH", _ALL_INT8.shape, (0.05, 3), (0.002, -20)), _ALL_INT8)
    assert y.min() == -128 and y.max() == 127


@pytest.mark.parametrize("op, s_in, zp", [("TANH", 0.023062005639076233, 83),
                                          ("TANH", 0.012494922615587711, -63),
                                          ("LOGISTIC", 0.0038870624266564846, 29),
                                          ("LOGISTIC", 0.03930862247943878, -3)])
def test_table_ops_need_the_c_librarys_float_functions(op, s_in, zp):
    """LiteRT's int8 LOGISTIC and TANH are tables of float32 expf / tanhf (LUTPopulate). Here
    one entry lands so close to a rounding boundary that NumPy's own float32 exp / tanh (off by
    an ulp from glibc's for about a third of all inputs, on the machine this was found on) gives
    another output; the reference calls the C library's functions, as LiteRT does."""
    out_quant = (1 / 256, -128) if op == "LOGISTIC" else (1 / 128, 0)
    _check(unary_model(op, _ALL_INT8.shape, (s_in, zp), out_quant), _ALL_INT8)


def test_hard_swish_output_scale_at_most_input_over_128_is_refused():
    s_in = 0.05
    for s_out in (s_in / 128, s_in / 200):
        model = unary_model("HARD_SWISH", _ALL_INT8.shape, (s_in, 0), (s_out, 0))
        with pytest.raises(RuntimeError, match="HARD_SWISH"):
            litert_run(model, _ALL_INT8)
        with pytest.raises(UnsupportedModelError,
                           match=r"HARD_SWISH 0: output scale .* must exceed input scale / 128"):
            run_graph(read_tflite(model), _ALL_INT8)
    _check(unary_model("HARD_SWISH", _ALL_INT8.shape, (s_in, 0), (s_in / 127.9, 0)), _ALL_INT8)


def test_hard_swish_int16_rounding_with_large_exponents():
    """From a right shift of 16 on, gemmlowp's int16 RoundingDivideByPOT has a mask of -1: it
    returns 1 for every value >= 0 and -1 below. HARD_SWISH with an output scale over 2**9 times
    the input's (output exponent -16 and less) gives zp + 1 even for hard_swish(0) = 0, in
    LiteRT and here; a tiny input scale does the same to the relu-ish factor."""
    assert rounding_divide_by_pot16([0, 5, 32767, -1, -32768], 16).tolist() == [1, 1, 1, -1, -1]
    assert rounding_divide_by_pot16([3, -3, 2, -2], 1).tolist() == [2, -2, 1, -1]
    assert srdhm16([-32768, 16384, -16384], [-32768, 16384, 16384]).tolist() == [32767, 8192,
                                                                                  -8192]
    for s_in, s_out, zp in ((0.01, 0.01 * 1000, 5), (0.01, 0.01 * 2**20, -7), (1e-7, 1e-7, 0)):
        model = unary_model("HARD_SWISH", _ALL_INT8.shape, (s_in, 3), (s_out, zp))
        graph = read_tflite(model)
        p = hard_swish_params(graph, graph.operators[0])
        y = _check(model, _ALL_INT8).ravel()
        if p["out_exp"] <= -16:
            assert set(y.tolist()) == {zp - 1, zp + 1}
            assert y[128 + 3] == zp + 1                      # the input zero point
        else:
            assert p["reluish_exp"] <= -16 and len(np.unique(y)) > 100


def test_relu_bounds_beyond_int32_wrap_like_litert():
    """A standalone RELU6 / RELU_N1_TO_1 bound beyond int32 (output scale 1e-10) is not refused
    as a fused one is: int32(roundf(6 / 1e-10)) is INT32_MIN and zp + INT32_MIN wraps, so
    zp = -3 gives the bounds [-3, 127] and zp = 3 clamps everything to the wrapped bound,
    whose low byte is 3. A rescale needing a shift above 31 is refused (undefined in C++)."""
    y = _check(unary_model("RELU6", _ALL_INT8.shape, (0.05, 0), (1e-10, -3)), _ALL_INT8)
    assert y.min() == -3 and y.max() == 127
    y = _check(unary_model("RELU6", _ALL_INT8.shape, (0.05, 0), (1e-10, 3)), _ALL_INT8)
    assert set(y.ravel().tolist()) == {3}
    model = unary_model("RELU", _ALL_INT8.shape, (0.05, 0), (1e-12, 0))
    with pytest.raises(UnsupportedModelError, match="RELU 0: rescale 5e.10 needs a left shift "
                       "of 36 bits, more than int32's 31"):
        run_graph(read_tflite(model), _ALL_INT8)


def test_relu_ops_clamp_at_their_bounds():
    """Equal input and output quantization (scale 0.1, zero point 10): RELU clamps at 10,
    RELU6 at 10 and 70, RELU_N1_TO_1 at 0 and 20; values between pass unchanged."""
    x = _ALL_INT8.ravel()
    for op, lo, hi in (("RELU", 10, 127), ("RELU6", 10, 70), ("RELU_N1_TO_1", 0, 20)):
        y = _check(unary_model(op, _ALL_INT8.shape, (0.1, 10), (0.1, 10)), _ALL_INT8)
        assert y.ravel().tolist() == np.clip(x, lo, hi).tolist(), op


def test_leaky_relu_negative_alpha_negates_the_product():
    """alpha = -0.5 with equal quantization: LiteRT multiplies by +0.5 and negates, so the ties
    -0.5 * (-1, -3, -5) round as -(0.5, 1.5, 2.5) rounds upward: 0, 1, 2 (multiplying by the
    negative multiplier would give 1, 2, 3)."""
    x = np.arange(-8, 8, dtype=np.int8).reshape(1, 1, 16, 1)
    y = _check(unary_model("LEAKY_RELU", x.shape, (0.1, 0), (0.1, 0), alpha=-0.5), x)
    assert y.ravel().tolist() == [4, 3, 3, 2, 2, 1, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------------------------
# MUL: squeeze-and-excitation's channel scaling and same-shape products


def _se_input(shape, seed: int) -> np.ndarray:
    """Random int8 values around a random offset per channel, so that a MEAN over H x W (the
    squeeze) differs from channel to channel."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(-100, 100, shape[-1])
    return np.clip(offsets + rng.integers(-27, 28, shape), -128, 127).astype(np.int8)


@pytest.mark.parametrize("seed", range(30))
def test_mul_broadcast_and_same_shape_bit_exact(seed):
    """Per seed: [1, H, W, C] times [1, 1, 1, C] and times [1, H, W, C], each with a constant
    and with a computed second operand (MEAN over H x W / QUANTIZE of the input), either
    operand order, random quantization and fused activation."""
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 33)))
    x = _se_input(shape, seed)
    for other_shape in ((1, 1, 1, shape[3]), shape):
        for constant in (rng.integers(-128, 128, other_shape).astype(np.int8), None):
            quant, other_quant = (_log_uniform(rng, 1e-3, 0.5), int(rng.integers(-128, 128))), (
                _log_uniform(rng, 1e-3, 0.5), int(rng.integers(-128, 128)))
            out_quant = (float(np.float32(quant[0] * other_quant[0] * _log_uniform(rng, 4, 4096))),
                         int(rng.integers(-128, 128)))
            activation = str(rng.choice(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]))
            model = mul_model(shape, other_shape, quant, other_quant, out_quant,
                              constant=constant, activation=activation,
                              other_first=bool(rng.random() < 0.5))
            theirs = litert_run(model, x)
            problem = _mismatch(run_graph(read_tflite(model), x), theirs)
            assert problem is None, (f"seed {seed}: {shape} x {other_shape} "
                                     f"{'constant' if constant is not None else 'computed'} "
                                     f"{quant} {other_quant} -> {out_quant} {activation}: "
                                     f"{problem}")


def test_mul_squeeze_excitation_scales_each_channel():
    """x * mean_hw(x): the computed [1, 1, 1, C] operand differs per channel, the product is
    bit-exact, spread, and saturates with a small output scale (it is x's square, roughly, so
    never negative)."""
    shape = (1, 7, 7, 24)
    x = _se_input(shape, 1)
    model = mul_model(shape, (1, 1, 1, 24), (0.02, -5), (0.03, 10), (0.02 * 0.03 * 20, -128))
    theirs = litert_run_all(model, x)
    squeezed = theirs[1]                                # the MEAN's output tensor
    assert squeezed.shape == (1, 1, 1, 24) and len(np.unique(squeezed)) > 10
    y = _check(model, x)
    assert np.count_nonzero(y == 127) > 100 and len(np.unique(y)) > 100


def test_mul_of_incompatible_shapes_is_refused():
    graph = read_tflite(mul_model((1, 4, 4, 8), (1, 1, 1, 8), (0.1, 0), (0.1, 0), (0.1, 0),
                                  constant=np.ones((1, 1, 1, 8), np.int8)))
    graph.tensor("other").data = np.ones((1, 1, 1, 3), np.int8)
    with pytest.raises(UnsupportedModelError, match=r"MUL 0: input shapes \[1, 4, 4, 8\] and "
                       r"\[1, 1, 1, 3\] do not broadcast"):
        run_graph(graph, np.zeros((1, 4, 4, 8), np.int8))


# --------------------------------------------------------------------------------------------
# unary_table


def _unary_op_model(op: str, seed: int, shape) -> bytes:
    if op == "QUANTIZE":
        rng = np.random.default_rng(seed)
        return quantize_model(shape, (_log_uniform(rng, 1e-3, 0.5), int(rng.integers(-128, 128))),
                              (_log_uniform(rng, 1e-3, 0.5), int(rng.integers(-128, 128))))
    in_quant, out_quant, options = _unary_case(op, np.random.default_rng(seed))
    return unary_model(op, shape, in_quant, out_quant, **options)


@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary_table_applied_equals_running_the_op(op):
    """For 10 random quantizations per op: the table looked up at random inputs equals
    run_graph and LiteRT on them."""
    for seed in range(10):
        model = _unary_op_model(op, seed, (1, 5, 7, 3))
        graph = read_tflite(model)
        table = unary_table(graph, graph.operators[0])
        assert table.dtype == np.int8 and table.shape == (256,)
        x = _random_input(graph, seed)
        expected = litert_run(model, x)
        assert np.array_equal(run_graph(graph, x), expected), f"{op} seed {seed}"
        assert np.array_equal(table_lookup(x, table), expected), f"{op} seed {seed}"


def test_unary_table_is_indexed_by_the_inputs_byte():
    """The identity QUANTIZE's table holds at index i the int8 value whose byte is i."""
    graph = read_tflite(quantize_model((1, 4), (0.1, 7), (0.1, 7)))
    table = unary_table(graph, graph.operators[0])
    assert table.tolist() == list(range(128)) + list(range(-128, 0))


def test_unary_table_refuses_other_ops_and_refused_models():
    graph = read_tflite(mul_model((1, 2, 2, 3), (1, 1, 1, 3), (0.1, 0), (0.1, 0), (0.1, 0)))
    with pytest.raises(UnsupportedModelError, match="MUL 1 is not an int8 -> int8 elementwise "
                       "operator; tables exist for HARD_SWISH, LEAKY_RELU"):
        unary_table(graph, graph.operators[1])
    graph = read_tflite(unary_model("LOGISTIC", (1, 4), (0.1, 0), (1 / 128, -128)))
    with pytest.raises(UnsupportedModelError, match="LOGISTIC 0: output scale"):
        unary_table(graph, graph.operators[0])
