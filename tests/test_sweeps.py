"""Property-based sweeps (hypothesis) of the ``reference`` backend on the configs ``tiny`` and
``pynq-z2`` (issue 12, item 8).

Within the limits: random depthwise-separable layers (``layers``: a ``LayerSpec`` of any
kernel, dilation, stride, padding, size, channel count, depth multiplier, output channels,
fused activations and quantization, extreme scales included) and small MobileNetV2-like
networks (``networks``: a ``MobileNetSpec``), each within every limit of the config (``k_max``,
``lb_window``, ``max_dim``, ``C*m`` within ``mid_channels_max`` and the DW weight memory,
the line-buffer row ``lb_width*lb_channels``), run on ``Accelerator(config, "reference")``:
bit-exact with LiteRT ``BUILTIN_REF``. Just outside them (``BEYOND``): a layer valid but for
one field pushed past one limit (kernel, dilation, stride 3 or 4, height or width, ``C*m``,
DW weight words, line-buffer row) makes ``compile_model`` raise ``UnsupportedModelError``
naming that limit and the value.

Examples are drawn by hypothesis with ``derandomize`` (the same on every run; a failure
prints the drawn spec: ``dwsep_layer_model(spec)`` or ``mobilenet_like_model(spec)``
rebuilds the model). Counts and times, measured with ``-n 0`` on a 2-core machine that
another test run kept busy:

- default: 40 layers and 10 networks per config, 10 layers per config and limit outside
  (17 tests): 8 to 10 s.
- ``-m slow``: 1,000 layers on ``pynq-z2`` (larger ones than by default, up to
  ``SLOW_LAYER_MACS``): 98 s; 100 back-to-back runs of one network on one Accelerator: 14 s.

To sweep further, raise the counts below (``LAYER_EXAMPLES``, ``SLOW_LAYER_EXAMPLES``, ...);
``-m slow -s`` prints the slow sweep's count and time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import PYNQ_Z2, TINY, random_int8
from hypothesis import given, settings
from hypothesis import strategies as st

from dwsep.host import packing
from dwsep.host.compiler import compile_model
from dwsep.host.driver import Accelerator
from dwsep.host.graph import UnsupportedModelError
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    BlockSpec,
    LayerSpec,
    MobileNetSpec,
    dwsep_layer_model,
    mobilenet_like_model,
)
from dwsep.hw.config import AcceleratorConfig
from dwsep.sim.oracle import litert_run

CONFIGS = [TINY, PYNQ_Z2]
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")

#: Hypothesis settings of every sweep: no deadline (a layer takes up to about a second),
#: examples drawn from a seed derived from the test, not stored between runs (CI and a
#: developer see the same examples; a failure prints the drawn spec to reproduce it).
SWEEP = settings(deadline=None, derandomize=True, database=None)

#: Examples per test and config of the default run, and of the slow sweep. Raise them here
#: to sweep further (the counts are the only knob: no profile or environment variable).
LAYER_EXAMPLES, NETWORK_EXAMPLES, BEYOND_EXAMPLES = 40, 10, 10
SLOW_LAYER_EXAMPLES, SLOW_RUNS = 1000, 100

#: Multiply-accumulates a drawn layer may take (its depthwise and pointwise parts), by
#: default and in the slow sweep: a layer takes the NumPy reference and LiteRT about 0.1 s
#: on average, a second at most, while sizes, channels and line-buffer rows still reach
#: each limit of the config (a large one of them on fewer rows).
LAYER_MACS, SLOW_LAYER_MACS = 30_000_000, 100_000_000


def _padded(c: int, cfg: AcceleratorConfig) -> int:
    return packing.padded(c, cfg.dw_lanes)


def _lb_bytes(cfg: AcceleratorConfig) -> int:
    """Bytes of a line-buffer row (``lb_width*lb_channels``): an input's ``W * C`` (channels
    padded to the DW lanes) may not exceed it."""
    return cfg.lb_row_capacity_words * cfg.dw_lanes


# ---- strategies ------------------------------------------------------------------------------

def _activations_and_weights(draw) -> dict:
    """The fused activations, the seed of the weights and quantization, and whether its scales
    are extreme (``LayerSpec.extreme``)."""
    return dict(dw_activation=draw(st.sampled_from(ACTIVATIONS)),
                pw_activation=draw(st.sampled_from(ACTIVATIONS)),
                seed=draw(st.integers(0, 2**31 - 1)), extreme=draw(st.booleans()))


@st.composite
def layers(draw, cfg: AcceleratorConfig, macs: int = LAYER_MACS) -> LayerSpec:
    """A depthwise-separable layer within every limit of ``cfg``: square kernel up to
    ``k_max``, dilation up to what the window allows (``lb_window``), stride 1 or 2, SAME or
    VALID; ``C*m`` (channels padded to the DW lanes) up to what the DW weight memory holds at
    that kernel (``dw_channels_max``, at most ``mid_channels_max``); input width up to
    ``max_dim`` and the line-buffer row (``W * C_pad <= lb_width*lb_channels``); output
    channels up to two PW tiles and a bit; height up to ``max_dim`` within ``macs``
    multiply-accumulates."""
    k = draw(st.integers(1, cfg.k_max))
    d = draw(st.integers(1, cfg.dilation_limit(k)))
    padding = draw(st.sampled_from(("SAME", "VALID")))
    stride = draw(st.sampled_from((1, 2)))
    min_hw = (k - 1) * d + 1 if padding == "VALID" else 1
    groups_max = cfg.dw_channels_max(k) // cfg.dw_lanes
    m = draw(st.integers(1, min(groups_max, 8)))
    c = draw(st.integers(1, groups_max // m * cfg.dw_lanes))
    w = draw(st.integers(min_hw, min(cfg.max_dim, _lb_bytes(cfg) // _padded(c, cfg))))
    c_out = draw(st.integers(1, 2 * cfg.out_channels_max + cfg.pw_cols))
    row_macs = -(-w // stride) * c * m * (k * k + c_out)
    h = draw(st.integers(min_hw, min(cfg.max_dim, max(min_hw, macs // row_macs * stride))))
    return LayerSpec(h=h, w=w, c=c, depth_multiplier=m, kernel=k, stride=stride, dilation=d,
                     padding=padding, c_out=c_out, **_activations_and_weights(draw))


def _block_widths(x: int, strides) -> list[int]:
    """Input width of each block of a network on ``x`` columns (the stem and each stride-2
    block halve it, rounding up), then the width after the last block."""
    widths = [-(-x // 2)]
    for s in strides:
        widths.append(-(-widths[-1] // s))
    return widths


def _network_hw_max(cfg: AcceleratorConfig, blocks: list[tuple[int, BlockSpec]],
                    limit: int) -> tuple[int, int]:
    """Largest input height and width (up to ``limit``) of a network whose ``blocks`` (each
    with its input channel count) run on ``cfg``: the global pool's window (the last feature
    map) at most ``k_max``, and each block's line-buffer row (its expanded channels) within
    ``lb_width*lb_channels``."""
    rows = [_padded(c * b.expand, cfg) for c, b in blocks]

    def fits(x: int, row_limit: bool) -> bool:
        widths = _block_widths(x, [b.stride for _, b in blocks])
        return widths[-1] <= cfg.k_max and (not row_limit or all(
            w * row <= _lb_bytes(cfg) for w, row in zip(widths, rows, strict=False)))

    h = max(x for x in range(3, limit + 1) if fits(x, row_limit=False))
    w = max(x for x in range(3, limit + 1) if fits(x, row_limit=True))
    return h, w


@st.composite
def networks(draw, cfg: AcceleratorConfig, max_hw: int = 64, max_channels: int = 32,
             max_blocks: int = 4) -> MobileNetSpec:
    """A small MobileNetV2-like network (``mobilenet_like_model``) within the limits of
    ``cfg``: 1 to ``max_blocks`` inverted-residual blocks (expansion 1 to 6 within the DW
    memory, stride 1 or 2, a residual ADD half the time a stride-1 block could have one
    within ``out_channels_max``), channels up to
    ``max_channels``, input up to ``max_hw`` such that the last feature map fits the pool's
    ``k_max`` window and each block's expanded row fits the line buffer, classes up to two
    output tiles."""
    c = stem = draw(st.integers(2, max_channels))
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        stride = draw(st.sampled_from((1, 2)))
        residual = stride == 1 and c <= cfg.out_channels_max and draw(st.booleans())
        c_out = c if residual else draw(st.integers(2, max_channels))
        expand_max = min(6, cfg.dw_channels_max(3) // _padded(c, cfg))
        blocks.append((c, BlockSpec(expand=draw(st.integers(1, expand_max)), c_out=c_out,
                                    stride=stride)))
        c = c_out
    h_max, w_max = _network_hw_max(cfg, blocks, min(max_hw, cfg.max_dim))
    return MobileNetSpec(
        h=draw(st.integers(3, h_max)), w=draw(st.integers(3, w_max)), stem_channels=stem,
        blocks=tuple(b for _, b in blocks), head_channels=draw(st.integers(4, 2 * max_channels)),
        pool=draw(st.sampled_from(("AVERAGE_POOL_2D", "MEAN"))), keep_dims=draw(st.booleans()),
        classes=draw(st.integers(2, 2 * cfg.out_channels_max)),
        fc_per_channel=draw(st.booleans()), reshape=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)))


def _small_layer(draw, cfg: AcceleratorConfig, *, kernel: int | None = None,
                 dilation: int = 1, stride: int | None = None, c: int | None = None,
                 m: int | None = None, h: int | None = None, w: int | None = None) -> LayerSpec:
    """A layer of at most 16 x 16 pixels and 16 channels within the limits of ``cfg``, but
    for the fields given (one pushed past one limit, or those that go with it)."""
    if kernel is None:
        kernel = draw(st.integers(1, cfg.k_max))
    padding = draw(st.sampled_from(("SAME", "VALID")))
    min_hw = (kernel - 1) * dilation + 1 if padding == "VALID" else 1
    side = st.integers(min_hw, max(min_hw, 16))
    return LayerSpec(
        h=draw(side) if h is None else h, w=draw(side) if w is None else w,
        c=draw(st.integers(1, 16)) if c is None else c,
        depth_multiplier=draw(st.integers(1, 2)) if m is None else m, kernel=kernel,
        stride=draw(st.sampled_from((1, 2))) if stride is None else stride,
        dilation=dilation, padding=padding, c_out=draw(st.integers(1, 16)),
        **_activations_and_weights(draw))


@st.composite
def beyond_k_max(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    k = draw(st.integers(cfg.k_max + 1, cfg.k_max + 4))
    return (_small_layer(draw, cfg, kernel=k),
            f"kernel {k}x{k} exceeds k_max={cfg.k_max} of config {cfg.name!r}")


@st.composite
def beyond_lb_window(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    k = draw(st.integers(2, cfg.k_max))
    d = draw(st.integers(cfg.dilation_limit(k) + 1, cfg.dilation_limit(k) + 2))
    return (_small_layer(draw, cfg, kernel=k, dilation=d),
            f"dilation {d} of a {k}x{k} kernel spans {(k - 1) * d + 1} input rows, more than "
            f"lb_window={cfg.lb_window} of config {cfg.name!r} (at most dilation "
            f"{cfg.dilation_limit(k)} at this kernel)")


@st.composite
def beyond_stride(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    s = draw(st.integers(3, 4))
    return _small_layer(draw, cfg, stride=s), f"stride {s} is not supported (1 or 2)"


@st.composite
def beyond_max_dim(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    side = draw(st.sampled_from(("height", "width")))
    v = draw(st.integers(cfg.max_dim + 1, cfg.max_dim + 8))
    spec = _small_layer(draw, cfg, **{side[0]: v})
    return spec, f"input {side} {v} exceeds max_dim={cfg.max_dim} of config {cfg.name!r}"


def _mid_message(c: int, m: int, cfg: AcceleratorConfig) -> str:
    shown = f"{c}x{m}" if m > 1 else f"{c}"
    return f"depthwise output channels {shown} (padded to {_padded(c, cfg) * m})"


def _channels_past(draw, cfg: AcceleratorConfig, m: int, low: int, high: int) -> int:
    """Channels ``c`` with ``low < padded(c) * m <= high``."""
    P = cfg.dw_lanes
    return draw(st.integers(low // m // P * P + 1, high // m // P * P))


def _narrow_kernels(cfg: AcceleratorConfig) -> list[int]:
    """Kernels whose DW weights hold fewer than ``mid_channels_max`` channels."""
    return [k for k in range(1, cfg.k_max + 1)
            if cfg.dw_channels_max(k) < cfg.mid_channels_max]


@st.composite
def beyond_mid_channels_max(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    k = draw(st.sampled_from([k for k in range(1, cfg.k_max + 1)
                              if k not in _narrow_kernels(cfg)]))
    m = draw(st.integers(1, 8))
    P = cfg.dw_lanes
    c = _channels_past(draw, cfg, m, cfg.mid_channels_max, cfg.mid_channels_max + 3 * P * m)
    spec = _small_layer(draw, cfg, kernel=k, c=c, m=m,
                        w=draw(st.integers(k, _lb_bytes(cfg) // _padded(c, cfg))))
    return spec, (f"{_mid_message(c, m, cfg)} exceed mid_channels_max={cfg.mid_channels_max} "
                  f"of config {cfg.name!r}")


@st.composite
def beyond_dw_weight_words(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    k = draw(st.sampled_from(_narrow_kernels(cfg)))
    m = draw(st.integers(1, 4))
    c = _channels_past(draw, cfg, m, cfg.dw_channels_max(k), cfg.mid_channels_max)
    spec = _small_layer(draw, cfg, kernel=k, c=c, m=m,
                        w=draw(st.integers(k, _lb_bytes(cfg) // _padded(c, cfg))))
    words = cfg.dw_words(_padded(c, cfg) * m // cfg.dw_lanes, k)
    return spec, (f"{_mid_message(c, m, cfg)} of a {k}x{k} kernel need {words} DW weight "
                  f"words, more than dw_weight_words={cfg.dw_weight_depth} of config "
                  f"{cfg.name!r}")


@st.composite
def beyond_line_buffer(draw, cfg: AcceleratorConfig) -> tuple[LayerSpec, str]:
    k = draw(st.integers(1, cfg.k_max))
    c_min = _lb_bytes(cfg) // cfg.max_dim + 1  # a row of max_dim pixels is too wide
    m = draw(st.integers(1, cfg.dw_channels_max(k) // _padded(c_min, cfg)))
    c = draw(st.integers(c_min, cfg.dw_channels_max(k) // m // cfg.dw_lanes * cfg.dw_lanes))
    c_pad = _padded(c, cfg)
    w = draw(st.integers(_lb_bytes(cfg) // c_pad + 1, cfg.max_dim))
    return _small_layer(draw, cfg, kernel=k, c=c, m=m, w=w), (
        f"line-buffer row {w}x{c_pad} (width x channels padded to {cfg.dw_lanes}) = "
        f"{w * c_pad} bytes exceeds the {_lb_bytes(cfg)} bytes (lb_width*lb_channels) of "
        f"config {cfg.name!r}")


#: One strategy per limit: a layer within every other limit of the config, pushed past this
#: one, and the text the compiler's refusal must contain.
BEYOND = {
    "k_max": beyond_k_max,
    "lb_window": beyond_lb_window,
    "stride": beyond_stride,
    "max_dim": beyond_max_dim,
    "mid_channels_max": beyond_mid_channels_max,
    "dw_weight_words": beyond_dw_weight_words,
    "line_buffer": beyond_line_buffer,
}


# ---- checks ----------------------------------------------------------------------------------

def _assert_same(ours: np.ndarray, theirs: np.ndarray, spec) -> None:
    assert ours.shape == theirs.shape, f"shape {ours.shape} != LiteRT's {theirs.shape}: {spec}"
    if not np.array_equal(ours, theirs):
        diff = ours.astype(np.int64) - theirs
        pytest.fail(f"{np.count_nonzero(diff)}/{diff.size} values differ from LiteRT (max "
                    f"|diff| {np.abs(diff).max()}) for {spec}")


def _check_model(cfg: AcceleratorConfig, model: bytes, shape, seed: int, spec) -> None:
    """``model`` on a fresh reference Accelerator (so that a long sweep holds no compiled
    programs) is bit-exact with LiteRT on a random int8 input with both extremes."""
    x = random_int8(np.random.default_rng(seed), shape)
    with Accelerator(cfg, "reference") as acc:
        y = acc.run(model, x)
    _assert_same(y, litert_run(model, x), spec)


def _check_layer(cfg: AcceleratorConfig, spec: LayerSpec) -> None:
    _check_model(cfg, dwsep_layer_model(spec), (1, spec.h, spec.w, spec.c), spec.seed, spec)


# ---- within the limits -----------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
@settings(SWEEP, max_examples=LAYER_EXAMPLES)
@given(data=st.data())
def test_layers_within_limits_match_litert(cfg, data):
    _check_layer(cfg, data.draw(layers(cfg), label="spec"))


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
@settings(SWEEP, max_examples=NETWORK_EXAMPLES)
@given(data=st.data())
def test_networks_within_limits_match_litert(cfg, data):
    spec = data.draw(networks(cfg), label="spec")
    _check_model(cfg, mobilenet_like_model(spec), (1, spec.h, spec.w, 3), spec.seed, spec)


# ---- just outside the limits -----------------------------------------------------------------

BEYOND_CASES = [pytest.param(cfg, strategy, id=f"{cfg.name}-{limit}")
                for cfg in CONFIGS for limit, strategy in BEYOND.items()
                if limit != "dw_weight_words" or _narrow_kernels(cfg)]


@pytest.mark.parametrize("cfg,beyond", BEYOND_CASES)
@settings(SWEEP, max_examples=BEYOND_EXAMPLES)
@given(data=st.data())
def test_layers_beyond_a_limit_are_refused(cfg, beyond, data):
    spec, message = data.draw(beyond(cfg), label="spec, message")
    graph = read_tflite(dwsep_layer_model(spec))
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(graph, cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ---- slow ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_layer_sweep_pynq_z2():
    """``SLOW_LAYER_EXAMPLES`` layers within the limits of ``pynq-z2``, bit-exact."""
    count = 0

    @settings(SWEEP, max_examples=SLOW_LAYER_EXAMPLES)
    @given(spec=layers(PYNQ_Z2, SLOW_LAYER_MACS))
    def sweep(spec):
        nonlocal count
        _check_layer(PYNQ_Z2, spec)
        count += 1

    start = time.perf_counter()
    sweep()
    print(f"{count} random layers on pynq-z2 bit-exact with LiteRT in "
          f"{time.perf_counter() - start:.0f} s")
    assert count >= SLOW_LAYER_EXAMPLES


@pytest.mark.slow
def test_back_to_back_runs():
    """One network, run ``SLOW_RUNS`` times on one Accelerator on two inputs in turn: every
    result is LiteRT's (the device keeps nothing from a run that changes the next)."""
    spec = MobileNetSpec(h=96, w=96, stem_channels=16, blocks=(
        BlockSpec(1, 16, 1), BlockSpec(6, 24, 2), BlockSpec(6, 24, 1), BlockSpec(6, 32, 2),
        BlockSpec(6, 32, 1), BlockSpec(6, 64, 2)), head_channels=320, pool="MEAN",
        keep_dims=True, classes=300, fc_per_channel=True, reshape=True, seed=12)
    model = mobilenet_like_model(spec)
    rng = np.random.default_rng(12)
    xs = [random_int8(rng, (1, 96, 96, 3)) for _ in range(2)]
    expected = [litert_run(model, x) for x in xs]
    start = time.perf_counter()
    with Accelerator(PYNQ_Z2, "reference") as acc:
        for run in range(SLOW_RUNS):
            y = acc.run(model, xs[run % 2])
            assert np.array_equal(y, expected[run % 2]), f"run {run} differs: {spec}"
    print(f"{SLOW_RUNS} runs of one network on one Accelerator in "
          f"{time.perf_counter() - start:.1f} s")
