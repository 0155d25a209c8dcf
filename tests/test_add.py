# amaranth: UnusedElaboratable=no
"""ResidualAdd (hw/add.py) against its NumPy model (sim/models/add.py), the model and
add_params against LiteRT BUILTIN_REF on random single-ADD int8 models, and the ADD by table
(dwsep.host.numerics.add_table / add_by_table, what the hardware computes) against the model
on every pair of int8 inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from dwsep.host import numerics
from dwsep.host.tflite_writer import ModelBuilder
from dwsep.hw.add import ResidualAdd, add_params_layout
from dwsep.hw.layout import ADD_TABLE_ENTRIES
from dwsep.sim.models.add import PARAM_FIELDS, add_model, add_params
from dwsep.sim.streams import recv_n, run_sim, send_all

INT32_MIN, INT32_MAX = numerics.INT32_MIN, numerics.INT32_MAX


# ---- LiteRT oracle ----------------------------------------------------------------------

def add_tflite(shape, q1, q2, q_out, activation: str) -> bytes:
    """A model with one int8 ADD of inputs ``a`` (``q1 = (scale, zp)``) and ``b``."""
    mb = ModelBuilder("dwsep ADD test")
    a = mb.add_tensor("a", shape, scale=q1[0], zero_point=q1[1])
    b = mb.add_tensor("b", shape, scale=q2[0], zero_point=q2[1])
    o = mb.add_tensor("o", shape, scale=q_out[0], zero_point=q_out[1])
    mb.add_operator("ADD", [a, b], [o], activation=activation)
    mb.inputs, mb.outputs = [a, b], [o]
    return mb.finish()


def litert_add(model: bytes, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Run a two-input model with LiteRT BUILTIN_REF (``dwsep.sim.oracle.litert_run`` takes
    one input only); inputs are matched by tensor name."""
    interpreter = Interpreter(model_content=model,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    index = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    interpreter.set_tensor(index["a"], a)
    interpreter.set_tensor(index["b"], b)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def random_quant(rng: np.random.Generator) -> tuple[tuple, tuple, tuple, str]:
    """Scales as a converter picks them (log-uniform, sometimes equal inputs, output scale
    around the sum's range), any zero points, a random fused activation."""
    s1, s2 = np.exp(rng.uniform(np.log(1e-3), np.log(2.0), 2))
    if rng.random() < 0.2:
        s2 = s1
    s_out = np.exp(rng.uniform(np.log(max(s1, s2) / 4), np.log(2 * (s1 + s2))))
    zp = rng.integers(-128, 128, 3)
    act = ("NONE", "RELU", "RELU6")[rng.integers(3)]
    return (float(s1), int(zp[0])), (float(s2), int(zp[1])), (float(s_out), int(zp[2])), act


def all_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b) int8 pair once, as two [1, 256, 256, 1] tensors."""
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    return (a.astype(np.int8).reshape(1, 256, 256, 1), b.astype(np.int8).reshape(1, 256, 256, 1))


def check_against_litert(q1, q2, q_out, act, a, b) -> dict:
    params = add_params(q1[0], q1[1], q2[0], q2[1], q_out[0], q_out[1], act)
    want = litert_add(add_tflite(a.shape, q1, q2, q_out, act), a, b)
    got = add_model(a, b, params)
    bad = np.argwhere(got != want)
    assert not bad.size, (f"{q1} {q2} {q_out} {act} {params}: {len(bad)} mismatches, first "
                          f"a={a[tuple(bad[0])]} b={b[tuple(bad[0])]} got "
                          f"{got[tuple(bad[0])]} want {want[tuple(bad[0])]}")
    return params


# ---- model and parameters ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_model_matches_litert_random(seed):
    """50 random ADD models per seed, every (a, b) pair through each."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    a, b = all_pairs()
    for _ in range(50):
        check_against_litert(*random_quant(rng), a, b)


@pytest.mark.parametrize("q1, q2, q_out, act, expect", [
    # equal scales: both inputs 0.5 exactly -> (2**30, 0); output 1 / 2**20 -> (2**30, -19)
    ((0.5, 0), (0.5, 0), (1.0, 0), "NONE",
     dict(a_mult=1 << 30, a_shift=0, b_mult=1 << 30, b_shift=0, out_mult=1 << 30,
          out_shift=-19)),
    # input 2 ratio 2**-32: below QuantizeMultiplier's shift range, flushed to (0, 0)
    ((1.0, 3), (2.0 ** -32, -7), (1.5, 0), "RELU6", dict(b_mult=0, b_shift=0)),
    # ratio exactly 2**-31: the smallest representable, shift -31
    ((2.0 ** -31, 0), (1.0, 0), (1.0, 0), "NONE", dict(a_mult=1 << 30, a_shift=-31)),
    # output multiplier just below 1: shift 0
    ((1.0, -128), (1.0, 127), (2.0 ** -19 * 1.01, 5), "RELU", dict(out_shift=0)),
    ((1e-3, 0), (2.3e-3, 0), (1e-2, -100), "RELU6", {}),
    ((0.02, 10), (0.02, -10), (0.0390625, 0), "RELU", {}),
])
def test_model_matches_litert_directed(q1, q2, q_out, act, expect):
    """Boundary scales of QuantizeMultiplierSmallerThanOneExp, every (a, b) pair."""
    params = check_against_litert(q1, q2, q_out, act, *all_pairs())
    assert {k: params[k] for k in expect} == expect


def test_multipliers_are_double_precision():
    """TFLite computes the real multipliers in double from the float32 scales; the same in
    float32 gives other (mult, shift) for most scale choices and LiteRT agrees with double."""
    rng = np.random.default_rng(9)
    f32 = np.float32
    a, b = all_pairs()
    differ = 0
    for _ in range(20):
        q1, q2, q_out, act = random_quant(rng)
        params = check_against_litert(q1, q2, q_out, act, a, b)
        twice_max = f32(2) * max(f32(q1[0]), f32(q2[0]))
        single = numerics.quantize_multiplier(float(twice_max / (f32(1 << 20) * f32(q_out[0]))))
        differ += single != (params["out_mult"], params["out_shift"])
    assert differ >= 10


def test_add_params_fields_and_errors():
    params = add_params(0.1, 1, 0.2, 2, 0.3, 3, "RELU")
    assert tuple(params) == PARAM_FIELDS
    assert set(add_params_layout().members) < set(PARAM_FIELDS)   # the rest: the table
    assert (params["a_zp"], params["b_zp"], params["out_zp"]) == (1, 2, 3)
    assert (params["act_min"], params["act_max"]) == (3, 127)
    with pytest.raises(ValueError, match=r"ADD output multiplier .* must be in \(0, 1\)"):
        add_params(1.0, 0, 1.0, 0, 2.0 ** -21, 0)
    with pytest.raises(ValueError, match=r"ADD scale s2=0.0 must be positive"):
        add_params(1.0, 0, 0.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match=r"ADD zero point zp_out=128 must be in \[-128, 127\]"):
        add_params(1.0, 0, 1.0, 0, 1.0, 128)
    with pytest.raises(ValueError, match=r"ADD 'out_shift' must be in \[-31, 0\], not 1"):
        add_model(np.zeros(1), np.zeros(1), {**params, "out_shift": 1})


def test_model_hand_values():
    """Worked by hand. a_mult = 2**30 and shift -20 make sa = RDBPOT(d * 2**19, 20) = d / 2
    rounded half away from zero; out (2**30, -1) makes o = SRDHM(sum, 2**30) / 2, i.e. sum / 4
    rounded half up (SRDHM), then half away from zero (RDBPOT)."""
    params = dict(a_zp=0, b_zp=0, a_mult=1 << 30, b_mult=1 << 30, a_shift=-20, b_shift=-20,
                  out_mult=1 << 30, out_shift=-1, out_zp=0, act_min=-128, act_max=127)
    a = np.array([3, -3, 1, -1, 5, -5, 2, 127])
    b = np.array([0, 0, 0, 0, 0, 0, 0, 127])
    # sa: 1.5->2, -1.5->-2, 0.5->1, -0.5->-1, 2.5->3, -2.5->-3, 1, 63.5->64
    # o = sum/4: 2/4->1 (SRDHM 1, RDBPOT 0.5->1), -2/4->-1 (SRDHM -1, -0.5->-1),
    #     1/4->0 (SRDHM 0.5->1, RDBPOT 0.5->1), -1/4->0 (SRDHM -0.5->0), 3/4->1
    #     (SRDHM 1.5->2, 1), -3/4->-1 (SRDHM -1.5->-1, -0.5->-1), 1/4->1, 128/4->32
    assert list(add_model(a, b, params)) == [1, -1, 1, 0, 1, -1, 1, 32]


# ---- the ADD by table ---------------------------------------------------------------------

def table_of(params: dict) -> np.ndarray:
    return numerics.add_table(*(params[k] for k in ("a_zp", "a_mult", "a_shift", "b_zp",
                                                     "b_mult", "b_shift", "out_mult")))


def by_table(a, b, params: dict) -> np.ndarray:
    return numerics.add_by_table(a, b, table_of(params), params["out_shift"],
                                 params["out_zp"], params["act_min"], params["act_max"])


@pytest.mark.parametrize("seed", range(3))
def test_table_equals_model_on_every_pair(seed):
    """The table's sums are exact: on all 65,536 input pairs, for the directed parameters,
    fully random ones (any int32 multipliers, shifts in [-31, 0]) and converter-like
    scales, the ADD by table equals TFLite's formula; every entry has |T| < 2**59."""
    rng = np.random.default_rng(seed)
    cases = list(_DIRECTED_PARAMS) if seed == 0 else []
    cases += [random_params(rng) for _ in range(30)]
    for _ in range(30):
        q1, q2, q_out, act = random_quant(rng)
        cases.append(add_params(q1[0], q1[1], q2[0], q2[1], q_out[0], q_out[1], act))
    a, b = all_pairs()
    for params in cases:
        assert np.abs(table_of(params)).max() < 2 ** 59
        got, want = by_table(a, b, params), add_model(a, b, params)
        assert np.array_equal(got, want), params


def test_table_shift_errors():
    with pytest.raises(ValueError, match=r"ADD a_shift must be in \[-31, 0\], not 1"):
        numerics.add_table(0, 1 << 30, 1, 0, 1 << 30, 0, 1 << 30)
    with pytest.raises(ValueError, match=r"ADD out_shift must be in \[-31, 0\], not -32"):
        numerics.add_by_table(0, 0, np.zeros((2, 256), np.int64), -32, 0, -128, 127)


# ---- hardware ---------------------------------------------------------------------------

def hw_params(params: dict) -> dict:
    """The hardware's ``params`` port value (the rest is in the table)."""
    return {name: params[name] for name in add_params_layout().members}


async def write_table(ctx, dut: ResidualAdd, params: dict) -> None:
    """Write the table of ``params`` through ``dut.wr``, one entry a cycle."""
    entries = table_of(params).reshape(-1)
    ctx.set(dut.wr.en, 1)
    for addr in range(ADD_TABLE_ENTRIES):
        ctx.set(dut.wr.addr, addr)
        ctx.set(dut.wr.data, int(entries[addr]) & ((1 << 64) - 1))
        await ctx.tick()
    ctx.set(dut.wr.en, 0)


def simulate(lanes: int, compute_lanes: int, params: dict, a: np.ndarray, b: np.ndarray, *,
             seed: int, p_stall: tuple[float, float, float] = (0.3, 0.3, 0.3)) -> np.ndarray:
    """Stream the words of ``a`` and ``b`` (``int8[N, lanes]``) through a ResidualAdd under
    seeded random stalls on a, b and o (probabilities ``p_stall``); return the output."""
    dut = ResidualAdd(lanes, compute_lanes)
    out = []

    def words(x):
        return [[int(v) for v in w] for w in x]

    async def put_a(ctx):
        ctx.set(dut.params, hw_params(params))
        await write_table(ctx, dut, params)
        await send_all(ctx, dut.a, words(a), rng=random.Random(seed), p_stall=p_stall[0])

    async def put_b(ctx):
        await send_all(ctx, dut.b, words(b), rng=random.Random(seed + 1), p_stall=p_stall[1])

    async def get_o(ctx):
        out.extend(await recv_n(ctx, dut.o, len(a), rng=random.Random(seed + 2),
                                p_stall=p_stall[2], convert=lambda w: [w[k] for k in range(lanes)]))

    run_sim(dut, put_a, put_b, get_o,
            deadline_cycles=40 * len(a) * dut.chunks + 500 + ADD_TABLE_ENTRIES)
    return np.array(out, np.int64).reshape(len(a), lanes)


def check(lanes, compute_lanes, params, a, b, *, seed, **kw):
    got = simulate(lanes, compute_lanes, params, a, b, seed=seed, **kw)
    want = add_model(a, b, params)
    bad = np.argwhere(got != want)
    assert not bad.size, (
        f"seed {seed}: {len(bad)} mismatches, first at word {bad[0][0]} lane {bad[0][1]}: "
        f"a={a[tuple(bad[0])]} b={b[tuple(bad[0])]} got {got[tuple(bad[0])]} "
        f"want {want[tuple(bad[0])]}, params {params}")


def random_params(rng: np.random.Generator) -> dict:
    """Any int32 multipliers (some 0, INT32_MIN, INT32_MAX), shifts in [-31, 0], any zero
    points, clamp bounds with act_min <= act_max."""
    def mult():
        return int(rng.choice([0, INT32_MIN, INT32_MAX, int(rng.integers(INT32_MIN, INT32_MAX))],
                              p=[0.1, 0.1, 0.1, 0.7]))

    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    if rng.random() < 0.4:
        lo, hi = -128, 127
    zp = rng.integers(-128, 128, 3)
    shift = np.where(rng.random(3) < 0.2, rng.choice([0, -31], 3), rng.integers(-31, 1, 3))
    return dict(a_zp=int(zp[0]), b_zp=int(zp[1]), a_mult=mult(), b_mult=mult(),
                out_mult=mult(), a_shift=int(shift[0]), b_shift=int(shift[1]),
                out_shift=int(shift[2]), out_zp=int(zp[2]), act_min=lo, act_max=hi)


def random_words(rng, n, lanes):
    return (rng.integers(-128, 128, (n, lanes)).astype(np.int8),
            rng.integers(-128, 128, (n, lanes)).astype(np.int8))


@pytest.mark.parametrize("lanes, compute_lanes, seed", [
    (8, 8, 1), (8, 4, 2), (8, 2, 3), (16, 16, 4), (16, 4, 5), (16, 8, 6),
])
def test_real_scales(lanes, compute_lanes, seed):
    """Parameters from add_params on random converter-like scales, random stalls."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    q1, q2, q_out, act = random_quant(rng)
    params = add_params(q1[0], q1[1], q2[0], q2[1], q_out[0], q_out[1], act)
    check(lanes, compute_lanes, params, *random_words(rng, 120, lanes), seed=seed)


@pytest.mark.parametrize("lanes, compute_lanes, seed", [(8, 8, 11), (16, 4, 12), (8, 2, 13)])
def test_random_params(lanes, compute_lanes, seed):
    """Fully random parameters (extreme multipliers and shifts), random stalls."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    check(lanes, compute_lanes, random_params(rng), *random_words(rng, 100, lanes), seed=seed)


_EXTREMES = [-128, -127, -1, 0, 1, 126, 127]

_DIRECTED_PARAMS = [
    # ties: sa = d / 2 and o = sum / 4 (test_model_hand_values), both signs
    dict(a_zp=0, b_zp=0, a_mult=1 << 30, b_mult=1 << 30, a_shift=-20, b_shift=-20,
         out_mult=1 << 30, out_shift=-1, out_zp=0, act_min=-128, act_max=127),
    # SRDHM ties inside the folded input product: d * (2**30 + 2**10) = ... + d * 2**10
    dict(a_zp=-3, b_zp=5, a_mult=(1 << 30) + (1 << 10), b_mult=-(1 << 30) - (1 << 10),
         a_shift=0, b_shift=0, out_mult=1 << 30, out_shift=-19, out_zp=-7, act_min=-128,
         act_max=127),
    # largest magnitudes: |d| = 255 with mult INT32_MIN, shift 0, output shift 0 (clamps)
    dict(a_zp=127, b_zp=-128, a_mult=INT32_MIN, b_mult=INT32_MIN, a_shift=0, b_shift=0,
         out_mult=INT32_MIN, out_shift=0, out_zp=0, act_min=-128, act_max=127),
    dict(a_zp=-128, b_zp=127, a_mult=INT32_MAX, b_mult=INT32_MIN, a_shift=0, b_shift=-31,
         out_mult=INT32_MAX, out_shift=-20, out_zp=127, act_min=-128, act_max=127),
    # largest sum, |sum| = 255 * 2**21, made visible by a small output shift
    dict(a_zp=127, b_zp=127, a_mult=INT32_MIN, b_mult=INT32_MIN, a_shift=0, b_shift=0,
         out_mult=INT32_MIN, out_shift=-23, out_zp=0, act_min=-128, act_max=127),
    dict(a_zp=-128, b_zp=-128, a_mult=INT32_MIN, b_mult=INT32_MIN, a_shift=0, b_shift=0,
         out_mult=INT32_MAX, out_shift=-23, out_zp=3, act_min=-128, act_max=127),
    dict(a_zp=-128, b_zp=-128, a_mult=INT32_MAX, b_mult=INT32_MAX, a_shift=0, b_shift=0,
         out_mult=INT32_MIN, out_shift=0, out_zp=0, act_min=-128, act_max=127),
    # rounding addend 2**30 (shift -31) on the largest positive values: sa = 0, out = 0
    dict(a_zp=-128, b_zp=0, a_mult=INT32_MAX, b_mult=0, a_shift=-31, b_shift=0,
         out_mult=INT32_MAX, out_shift=0, out_zp=0, act_min=-128, act_max=127),
    dict(a_zp=127, b_zp=127, a_mult=INT32_MIN, b_mult=INT32_MIN, a_shift=0, b_shift=0,
         out_mult=INT32_MAX, out_shift=-31, out_zp=0, act_min=-128, act_max=127),
    # shift -31 everywhere, negative zero points
    dict(a_zp=-100, b_zp=-1, a_mult=INT32_MAX, b_mult=INT32_MAX, a_shift=-31, b_shift=-31,
         out_mult=INT32_MAX, out_shift=-31, out_zp=-128, act_min=-128, act_max=127),
    # saturation into a RELU6-style clamp, output zero point at the top
    dict(a_zp=0, b_zp=0, a_mult=1 << 30, b_mult=1 << 30, a_shift=0, b_shift=0,
         out_mult=1 << 30, out_shift=-12, out_zp=100, act_min=100, act_max=110),
    # zero multipliers: the output is the clamped zero point
    dict(a_zp=3, b_zp=4, a_mult=0, b_mult=0, a_shift=-5, b_shift=0, out_mult=0, out_shift=0,
         out_zp=-50, act_min=-40, act_max=127),
]


@pytest.mark.parametrize("case", range(len(_DIRECTED_PARAMS)))
def test_directed(case):
    """Ties, extreme multipliers/shifts/zero points and clamps, on every pair of extreme
    and near-zero-point inputs, through 16 lanes computed 4 at a time."""
    params = _DIRECTED_PARAMS[case]
    values = sorted({*_EXTREMES, *(np.clip([params["a_zp"] + d for d in (-1, 0, 1)],
                                           -128, 127)), *range(-6, 7)})
    pairs = np.array([(x, y) for x in values for y in values], np.int64)
    pairs = np.concatenate([pairs, pairs[: -len(pairs) % 16]])
    a = pairs[:, 0].astype(np.int8).reshape(-1, 16)
    b = pairs[:, 1].astype(np.int8).reshape(-1, 16)
    check(16, 4, params, a, b, seed=100 + case, p_stall=(0.2, 0.2, 0.2))


@pytest.mark.parametrize("p_stall", [(0.0, 0.8, 0.1), (0.8, 0.0, 0.1), (0.1, 0.1, 0.8)])
def test_heavy_stalls(p_stall):
    """One input or the output mostly stalled: nothing lost, duplicated or reordered."""
    seed = 21
    rng = np.random.default_rng(seed)
    params = add_params(0.05, -3, 0.11, 9, 0.12, -20, "RELU6")
    check(8, 4, params, *random_words(rng, 60, 8), seed=seed, p_stall=p_stall)


@pytest.mark.parametrize("lanes, compute_lanes", [(8, 8), (8, 4), (8, 2), (16, 16), (16, 4)])
def test_latency_and_throughput(lanes, compute_lanes):
    """With a, b always valid and o.ready high: a lone word appears ``latency`` cycles after
    acceptance; a burst is accepted and delivered one word per ``chunks`` cycles."""
    dut = ResidualAdd(lanes, compute_lanes)
    chunks = lanes // compute_lanes
    assert dut.latency == ResidualAdd.LATENCY + chunks - 1
    rng = np.random.default_rng(lanes + compute_lanes)
    params = add_params(0.07, 4, 0.03, -9, 0.08, 2, "NONE")
    n = 12
    a, b = random_words(rng, n + 1, lanes)
    want = add_model(a, b, params)

    def word(x):
        return [int(v) for v in x]

    async def bench(ctx):
        ctx.set(dut.params, hw_params(params))
        await write_table(ctx, dut, params)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.a.payload, word(a[0]))
        ctx.set(dut.b.payload, word(b[0]))
        ctx.set(dut.a.valid, 1)
        ctx.set(dut.b.valid, 1)
        assert ctx.get(dut.a.ready) and ctx.get(dut.b.ready)
        await ctx.tick()
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        cycles = 1
        while not ctx.get(dut.o.valid):
            assert cycles < 100, "no output"
            await ctx.tick()
            cycles += 1
        assert cycles == dut.latency
        assert [ctx.get(dut.o.payload)[k] for k in range(lanes)] == list(want[0])
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

        # Burst: offer words 1..n continuously; record the cycles of acceptance and output.
        taken, shown, outputs = [], [], []
        sent = 0
        for cycle in range(n * chunks + dut.latency + 5):
            if sent < n:
                ctx.set(dut.a.payload, word(a[sent + 1]))
                ctx.set(dut.b.payload, word(b[sent + 1]))
            ctx.set(dut.a.valid, sent < n)
            ctx.set(dut.b.valid, sent < n)
            if sent < n and ctx.get(dut.a.ready):
                assert ctx.get(dut.b.ready)
                taken.append(cycle)
                sent += 1
            if ctx.get(dut.o.valid):
                shown.append(cycle)
                outputs.append([ctx.get(dut.o.payload)[k] for k in range(lanes)])
            await ctx.tick()
        assert taken == [k * chunks for k in range(n)]
        assert shown == [dut.latency + k * chunks for k in range(n)]
        assert np.array_equal(np.array(outputs), want[1:])

    run_sim(dut, bench, deadline_cycles=2000 + ADD_TABLE_ENTRIES)


def test_join_waits_for_both():
    """A word is taken only when both a and b offer one; the output holds while o.ready is
    low."""
    lanes = 8
    dut = ResidualAdd(lanes)
    params = add_params(0.1, 0, 0.1, 0, 0.2, 0, "NONE")

    async def bench(ctx):
        ctx.set(dut.params, hw_params(params))
        await write_table(ctx, dut, params)
        ctx.set(dut.a.payload, [10] * lanes)
        ctx.set(dut.a.valid, 1)
        for _ in range(5):
            # b.ready may be high (it follows a.valid): without b.valid nothing transfers
            assert not ctx.get(dut.a.ready) and ctx.get(dut.b.ready)
            await ctx.tick()
        assert not ctx.get(dut.o.valid)
        ctx.set(dut.b.payload, list(range(lanes)))
        ctx.set(dut.b.valid, 1)
        assert ctx.get(dut.a.ready) and ctx.get(dut.b.ready)
        await ctx.tick()
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        for _ in range(ResidualAdd.LATENCY + 10):
            await ctx.tick()
        want = list(add_model(np.full(lanes, 10), np.arange(lanes), params))
        for _ in range(3):
            assert ctx.get(dut.o.valid)
            assert [ctx.get(dut.o.payload)[k] for k in range(lanes)] == want
            await ctx.tick()

    run_sim(dut, bench, deadline_cycles=200 + ADD_TABLE_ENTRIES)


@pytest.mark.parametrize("lanes, compute_lanes, msg", [
    (5, None, "'lanes' must be a positive multiple of 8, not 5"),
    (0, None, "'lanes' must be a positive multiple of 8, not 0"),
    (16, 3, "'compute_lanes' must be a positive divisor of lanes=16, not 3"),
    (16, 0, "'compute_lanes' must be a positive divisor of lanes=16, not 0"),
    (8, 16, "'compute_lanes' must be a positive divisor of lanes=8, not 16"),
])
def test_constructor_checks(lanes, compute_lanes, msg):
    with pytest.raises(ValueError, match=msg):
        ResidualAdd(lanes, compute_lanes)
