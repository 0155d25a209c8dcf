"""Driver + reference device: compiled programs executed from their DDR bytes, bit-exact with
the NumPy TFLite reference and LiteRT BUILTIN_REF (DW + PW layers, lone convolutions and
depthwise layers, chains, the FC host step); descriptor errors, capability checks, progress,
timeouts and input checks."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from helpers import chain

from dwsep.host.backends import device_class
from dwsep.host.backends.reference import ReferenceDevice
from dwsep.host.driver import (
    Accelerator,
    BackendUnavailableError,
    CapabilityMismatchError,
    DeviceTimeoutError,
    DwsepError,
    HardwareError,
    InvalidInputError,
)
from dwsep.host.graph import Graph
from dwsep.host.reference import run_graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import (
    LayerSpec,
    dwsep_layer_model,
    fully_connected_model,
    random_layer_spec,
    single_op_model,
)
from dwsep.hw.config import get_config
from dwsep.hw.layout import ADDRESS_FIELDS, DESCRIPTOR, REGISTERS, DescFlag, ErrorCode
from dwsep.sim.oracle import litert_run

SEEDS = range(32)


def _random_input(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def _layer(seed: int) -> LayerSpec:
    """Random layer ``seed``; every fourth has a depth multiplier of 2 or 3 and a channel
    count that is not a multiple of 8, so both are always covered."""
    rng = np.random.default_rng(seed)
    spec = random_layer_spec(rng)
    if seed % 4 == 0:
        spec = LayerSpec(**{**spec.__dict__, "depth_multiplier": 2 + seed % 8 // 4,
                            "c": 8 * int(rng.integers(0, 6)) + int(rng.integers(1, 8))})
    return spec


@pytest.mark.parametrize("seed", SEEDS)
def test_random_layer_matches_litert(reference, seed):
    spec = _layer(seed)
    model = dwsep_layer_model(spec)
    x = _random_input(np.random.default_rng(1000 + seed), (1, spec.h, spec.w, spec.c))
    y = reference.run(model, x)
    expected = litert_run(model, x)
    assert y.dtype == np.int8 and y.shape == expected.shape, spec
    assert np.array_equal(y, expected), (spec, np.argwhere(y != expected)[:5])
    assert np.array_equal(y, run_graph(read_tflite(model), x)), spec
    stats = reference.last_stats
    assert stats["cycles"] is None and stats["backend"] == "reference"
    assert stats["config"] == "tiny" and len(stats["layers"]) == 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["CONV_2D", "DEPTHWISE_CONV_2D"])
def test_single_convolution_matches_litert(reference, op, seed):
    """A k x k CONV_2D alone (conv mode: taps straight into the PW array) and a
    DEPTHWISE_CONV_2D alone (identity PW), with stride, dilation and padding drawn."""
    spec = random_layer_spec(np.random.default_rng(seed), k_choices=(1, 2, 3, 4, 5), max_c=8,
                             max_c_out=80)
    model = single_op_model(spec, op)
    x = _random_input(np.random.default_rng(2000 + seed), (1, spec.h, spec.w, spec.c))
    assert np.array_equal(reference.run(model, x), litert_run(model, x)), spec
    conv_mode = op == "CONV_2D" and spec.kernel > 1  # a 1x1 CONV_2D gets an identity DW
    assert reference.last_stats["layers"][0]["stages"] == (["CONV", "PW"] if conv_mode
                                                     else ["DW", "PW"])


def test_sample_covers_depth_multiplier_and_odd_channels():
    specs = [_layer(s) for s in SEEDS]
    assert {s.depth_multiplier for s in specs} >= {1, 2, 3}
    assert sum(s.c % 8 != 0 and s.depth_multiplier > 1 for s in specs) >= 8
    assert {s.stride for s in specs} == {1, 2} and {s.dilation for s in specs} == {1, 2}
    assert {s.padding for s in specs} == {"SAME", "VALID"}


@pytest.mark.parametrize("seed", range(3))
def test_chain_of_layers(reference, seed):
    g = chain(3, seed)
    prog = reference.compile(g)
    # each later descriptor finds its PW weights prefetched while the one before ran
    assert [d["flags"] for d in prog.descriptors] == [
        0, DescFlag.PW_LOADED, DescFlag.PW_LOADED | DescFlag.LAST]
    for a, b in zip(prog.descriptors, prog.descriptors[1:], strict=False):
        assert a["out_addr"] == b["in_addr"]
    x = _random_input(np.random.default_rng(seed), g.input.shape)
    assert np.array_equal(reference.run(g, x), run_graph(g, x))
    assert len(reference.last_stats["layers"]) == 3


def test_batch_convention_and_cache(reference):
    spec = _layer(1)
    model = dwsep_layer_model(spec)
    x = _random_input(np.random.default_rng(5), (1, spec.h, spec.w, spec.c))
    y4 = reference.run(model, x)
    y3 = reference.run(model, x[0])
    assert y3.shape == y4.shape[1:] and np.array_equal(y3, y4[0])
    assert reference.compile(model) is reference.compile(bytes(model))


def test_model_from_path(reference, tmp_path):
    spec = _layer(2)
    path = tmp_path / "layer.tflite"
    path.write_bytes(dwsep_layer_model(spec))
    x = _random_input(np.random.default_rng(6), (1, spec.h, spec.w, spec.c))
    assert np.array_equal(reference.run(path, x), litert_run(path.read_bytes(), x))


def test_input_checks(reference):
    spec = _layer(3)
    model = dwsep_layer_model(spec)
    with pytest.raises(InvalidInputError, match="input must be int8, not float32"):
        reference.run(model, np.zeros((1, spec.h, spec.w, spec.c), np.float32))
    with pytest.raises(InvalidInputError, match=r"input has shape \[1, 1, 1, 1\], the model "
                                                r"takes \[1, "):
        reference.run(model, np.zeros((1, 1, 1, 1), np.int8))


# ---- descriptor validation: errors come back through STATUS/ERROR ---------------------------

# The hardware checks descriptors with the same rules as the reference device.
BACKENDS = ["reference", pytest.param("rtl", marks=pytest.mark.verilator)]


def _tampered_run(g: Graph, layer: int, backend: str = "reference", config="tiny", *,
                  window: bool = True, **fields):
    """Run ``g`` on a fresh device after changing descriptor ``layer``'s fields (a callable
    value computes the new value from the descriptor). ``window=False``: the DDR window is
    left open (the bus sees what the descriptor names)."""
    a = Accelerator(config, backend)
    a.restrict_window = window
    d = a.compile(g).descriptors[layer]
    d.update({k: v(d) if callable(v) else v for k, v in fields.items()})
    x = np.zeros(g.input.shape, np.int8)
    with pytest.raises(HardwareError) as info:
        a.run(g, x)
    info.value.base = a._load(g).buffer.physical_address  # where the program was linked
    return info.value


@pytest.mark.parametrize("fields,code", [
    (dict(opcode=0), ErrorCode.BAD_OPCODE),
    (dict(opcode=9), ErrorCode.BAD_OPCODE),
    (dict(kernel=8), ErrorCode.BAD_PARAMS),
    (dict(stride=3), ErrorCode.BAD_PARAMS),
    (dict(dilation=13), ErrorCode.BAD_PARAMS),
    (dict(kernel=3, dilation=7), ErrorCode.BAD_PARAMS),  # 15 rows: beyond the window of 13
    (dict(in_w=65), ErrorCode.BAD_PARAMS),
    (dict(out_groups=9), ErrorCode.BAD_PARAMS),
    (dict(mid_groups=33), ErrorCode.BAD_PARAMS),
    (dict(depth_mult=0), ErrorCode.BAD_PARAMS),
    (dict(pad_top=13), ErrorCode.BAD_PARAMS),
    (dict(pad_left=13), ErrorCode.BAD_PARAMS),
    (dict(exp_groups=lambda d: d["in_groups"] + 1), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.CONV), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.EXPAND | DescFlag.CONV), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.RAW_OUT | DescFlag.RESIDUAL), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.POOL), ErrorCode.BAD_PARAMS),     # a pool of a 3x3 kernel
    (dict(flags=DescFlag.POOL, kernel=1, pad_top=0, pad_left=0), ErrorCode.BAD_PARAMS),
    (dict(out_pitch=lambda d: d["out_groups"] - 1), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.RAW_OUT), ErrorCode.BAD_PARAMS),  # pitch too small for int32
    (dict(flags=DescFlag.RESIDUAL, out_pitch=lambda d: d["out_groups"] + 1),
     ErrorCode.BAD_PARAMS),
    (dict(mid_groups=lambda d: d["mid_groups"] + 1), ErrorCode.BAD_PARAMS),
    # the engine's weights: a table past the end of its memory (tiny: 512 words), a
    # prefetch segment past it or over this layer's PW weights
    (dict(pw_wbase=lambda d: 513 - d["mid_groups"] * d["out_groups"]), ErrorCode.BAD_PARAMS),
    (dict(pf1_words=1, pf1_base=512), ErrorCode.BAD_PARAMS),
    (dict(pf0_base=lambda d: d["pw_wbase"] + 1), ErrorCode.BAD_PARAMS),
    # the ADD's output shift is TFLite's, -31..0
    (dict(flags=DescFlag.RESIDUAL, pf0_words=0, add_out_shift=1), ErrorCode.BAD_PARAMS),
    (dict(flags=DescFlag.RESIDUAL, pf0_words=0, add_out_shift=-32), ErrorCode.BAD_PARAMS),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_descriptor_errors(fields, code, backend):
    err = _tampered_run(chain(2, 7), 0, backend, **fields)
    assert err.code == code and err.layer == 0
    # the message names the layer, the rule the descriptor breaks and the fields' values
    assert str(err).startswith(f"accelerator stopped with {code.name} at descriptor 0: "
                               "descriptor 0 (layer 0: DEPTHWISE_CONV_2D + CONV_2D -> "
                               "l0/pw/out) needs "), str(err)
    assert "; it has " in str(err), str(err)


def test_dw_weights_past_their_memory():
    """With ``dw_weight_words`` set, a descriptor whose DW weights (``mid_groups`` x
    ``dw_passes(k) * k`` words) would run past that memory stops with BAD_PARAMS."""
    cfg = dataclasses.replace(get_config("tiny"), dw_weight_words=96)
    g = chain(1, 7)     # 9 mid groups: 27 words at 3x3, 189 at 7x7
    mid = Accelerator(cfg, "reference").compile(g).descriptors[0]["mid_groups"]
    assert (cfg.dw_words(mid, 3), cfg.dw_words(mid, 7)) == (27, 189)
    err = _tampered_run(g, 0, config=cfg, kernel=7)
    assert (err.code, err.layer) == (ErrorCode.BAD_PARAMS, 0)


@pytest.mark.parametrize("field", ADDRESS_FIELDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_misaligned_address(field, backend):
    """Every address field must be aligned, also those the descriptor's flags leave unused."""
    g = chain(2, 8)
    offset = Accelerator("tiny", "reference").compile(g).descriptors[1][field]
    err = _tampered_run(g, 1, backend, **{field: offset + 4})
    assert (err.code, err.layer) == (ErrorCode.MISALIGNED, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bus_errors(backend):
    """With the DDR window open, an address with no memory behind it gets DECERR from the
    bus: the run stops with AXI_READ/AXI_WRITE and ERROR_ADDR names the failing access."""
    def bus(g, **fields):
        err = _tampered_run(g, 0, backend, window=False, **fields)
        return err.code, err.addr - err.base  # descriptor addresses are program-relative

    g = chain(1, 9)
    far = 1 << 24
    assert bus(g, in_addr=far) == (ErrorCode.AXI_READ, far)
    assert bus(g, out_addr=far) == (ErrorCode.AXI_WRITE, far)
    assert bus(g, pw_weights=far) == (ErrorCode.AXI_READ, far)
    assert bus(chain(2, 9), pf0_addr=far) == (ErrorCode.AXI_READ, far)
    # unused addresses are not read: a RESIDUAL flag makes res_addr count
    assert bus(g, flags=DescFlag.LAST | DescFlag.RESIDUAL, res_addr=far) == \
        (ErrorCode.AXI_READ, far)
    err = _tampered_run(g, 0, backend, window=False, in_addr=far)
    assert str(err).startswith(f"accelerator stopped with AXI_READ at descriptor 0 at address "
                               f"{err.base + far:#010x}"), str(err)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("field,flags", [
    ("in_addr", 0), ("out_addr", 0), ("pw_weights", 0), ("dw_table", 0),
    ("res_addr", DescFlag.RESIDUAL), ("pf0_addr", 0)])
def test_window_keeps_a_program_in_its_buffer(field, flags, backend):
    """The driver sets the DDR window to the program's buffer: a descriptor naming memory
    past it (here 16 bytes past the end, or far away) stops with OUT_OF_WINDOW before any
    byte moves, and the message names the field, its region and the window."""
    g = chain(2, 9)
    a = Accelerator("tiny", "reference")
    prog = a.compile(g)
    d = prog.descriptors[0]
    extra = {"flags": d["flags"] | flags} if flags else {}
    if field == "pf0_addr":
        extra["pf0_words"] = max(d["pf0_words"], 1)
    err = _tampered_run(g, 0, backend, **{field: prog.size - 16 if field != "in_addr"
                                           else 1 << 24}, **extra)
    assert (err.code, err.layer) == (ErrorCode.OUT_OF_WINDOW, 0), str(err)
    assert re.search(rf"needs {field} region 0x[0-9a-f]+\.\.0x[0-9a-f]+ inside the DDR window "
                     r"0x[0-9a-f]+\.\.0x[0-9a-f]+$", str(err)), str(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_checks_the_descriptors_themselves(backend):
    """The descriptors must lie in the window too: a program starting below it, one whose
    first descriptor crosses its end, and one whose next descriptor (no LAST flag) would
    be read past its end stop with OUT_OF_WINDOW, ERROR_ADDR naming that descriptor."""
    g = chain(1, 3)
    prog = Accelerator("tiny", "reference").compile(g)
    assert len(prog.descriptors) == 1
    dev = device_class(backend)("tiny")
    buf = dev.alloc(prog.size + DESCRIPTOR.size)
    base, end = buf.physical_address, buf.physical_address + prog.size
    image = bytearray(prog.link(base))
    last = end - DESCRIPTOR.size  # the descriptor again, at the window's end, without LAST
    d = dict(prog.descriptors[0])
    d["flags"] &= ~DescFlag.LAST
    image[prog.size - DESCRIPTOR.size:] = DESCRIPTOR.pack(**_linked(prog, d, base))
    buf.write(0, bytes(image))

    def run(program: int) -> tuple[int, int, int]:
        dev.write_register("STATUS", done=1, error=1)
        dev.write_register("WINDOW_LO", addr=base)
        dev.write_register("WINDOW_HI", addr=end - 1)
        dev.write_register("PROGRAM", addr=program)
        dev.write_register("CTRL", start=1)
        status = dev.wait_done(dev.default_timeout_s)
        err = dev.read_register("ERROR")
        return status["error"], ErrorCode(err["code"]), err["layer"], \
            dev.read_field("ERROR_ADDR", "addr")

    try:
        assert run(base - DESCRIPTOR.size) == (1, ErrorCode.OUT_OF_WINDOW, 0,
                                               base - DESCRIPTOR.size)
        assert run(end - 64) == (1, ErrorCode.OUT_OF_WINDOW, 0, end - 64)
        assert run(last) == (1, ErrorCode.OUT_OF_WINDOW, 1, end)
    finally:
        dev.close()


def _linked(prog, d: dict, base: int) -> dict:
    """Descriptor fields ``d`` (relative addresses, as in ``Program.descriptors``) with the
    program image linked at ``base``."""
    linked = DESCRIPTOR.unpack(prog.link(base)[:DESCRIPTOR.size])
    return dict(linked, flags=d["flags"])


def _run_with_dw_weights_at_end(g: Graph, offset_from_end: int, window: bool) -> None:
    """Run ``g`` (one layer) with its ``dw_weights`` this many bytes before the end of the
    DDR image, the last mapped byte (and, with ``window``, the DDR window's last byte)."""
    a = Accelerator("tiny", "reference")
    a.restrict_window = window
    prog = a.compile(g)
    prog.descriptors[0]["dw_weights"] = prog.size - offset_from_end
    a.run(g, np.zeros(g.input.shape, np.int8))


def test_dw_weights_read_exactly_their_words():
    """A 5x5 layer's DW weights are M*R*k words of T*P bytes (R = 2 passes of T = 3 kernel
    rows, the second with a zero row): the device reads all of them and nothing past them,
    and the DDR window check counts exactly those bytes."""
    cfg = get_config("tiny")
    spec = LayerSpec(h=6, w=7, c=10, depth_multiplier=2, kernel=5, stride=1, dilation=1,
                     padding="SAME", dw_activation="RELU6", c_out=9, pw_activation="NONE",
                     seed=5)
    g = read_tflite(dwsep_layer_model(spec))
    d = Accelerator(cfg, "reference").compile(g).descriptors[0]
    n = d["mid_groups"] * cfg.dw_passes(5) * 5 * cfg.dw_taps * cfg.dw_lanes
    assert (d["mid_groups"], n) == (4, 4 * 2 * 5 * 3 * 8)
    for window, code in ((False, ErrorCode.AXI_READ), (True, ErrorCode.OUT_OF_WINDOW)):
        _run_with_dw_weights_at_end(g, n, window)
        with pytest.raises(HardwareError) as info:
            _run_with_dw_weights_at_end(g, n - 8, window)
        assert (info.value.code, info.value.layer) == (code, 0)


def test_unused_address_is_not_read(reference):
    g = chain(1, 9)
    a = Accelerator("tiny", "reference")
    a.compile(g).descriptors[0].update(res_addr=1 << 24, exp_table=1 << 25)
    x = _random_input(np.random.default_rng(9), g.input.shape)
    assert np.array_equal(a.run(g, x), run_graph(g, x))


# ---- progress, host steps, stats ------------------------------------------------------------

def test_progress_and_stats(reference):
    g = chain(3, 4)
    calls = []
    x = _random_input(np.random.default_rng(4), g.input.shape)
    reference.run(g, x, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    stats = reference.last_stats
    assert stats["descriptor_count"] == 3 and stats["host_steps"] == []
    assert all(r["seconds"] is not None and r["seconds"] >= 0 for r in stats["layers"])
    assert stats["seconds"] >= sum(r["seconds"] for r in stats["layers"]) * 0.99


def test_fc_host_step(reference):
    """FULLY_CONNECTED: identity DW + PW with RAW_OUT on the accelerator, then the
    double-precision requantization on the host, equal to LiteRT; per-tensor weights with a
    zero point and a bias."""
    rng = np.random.default_rng(3)
    model = fully_connected_model((1, 1, 1, 40), rng.integers(-100, 100, (12, 40)).astype(
        np.int8), [0.004], rng.integers(-5000, 5000, 12).astype(np.int32), (0.05, 3),
        (0.2, 1), w_zp=-9, activation="RELU")
    for seed in range(3):
        x = _random_input(np.random.default_rng(seed), (1, 1, 1, 40))
        assert np.array_equal(reference.run(model, x), litert_run(model, x))
    prog = reference.compile(model)
    assert prog.descriptors[0]["flags"] == DescFlag.RAW_OUT | DescFlag.LAST
    (step,) = reference.last_stats["host_steps"]
    assert step["kind"] == "fc_requant" and step["seconds"] >= 0


def test_fc_wider_than_the_mid_memory(reference):
    """A FULLY_CONNECTED over one pixel of 300 channels ('tiny': mid_channels_max 256, here the
    model input, which cannot be stored in slices) reads its input in slices where it lies,
    channels 0-255 and 256-299, and the host adds the two slices' partial sums."""
    rng = np.random.default_rng(4)
    model = fully_connected_model((1, 1, 1, 300), rng.integers(-127, 128, (70, 300)).astype(
        np.int8), rng.uniform(0.002, 0.004, 70), rng.integers(-5000, 5000, 70).astype(np.int32),
        (0.05, -3), (0.3, 2))
    prog = reference.compile(model)
    (r,) = prog.layers
    assert (r["input_slices"], r["tiles"]) == (2, 2)
    assert [(d["in_addr"] - prog.input.offset, d["in_groups"]) for d in prog.descriptors] == [
        (0, 32), (0, 32), (256, 6), (256, 6)]
    assert len(prog.output_step.params["partials"]) == 2
    for seed in range(3):
        x = _random_input(np.random.default_rng(seed), (1, 1, 1, 300))
        assert np.array_equal(reference.run(model, x), litert_run(model, x))


def test_mid_tensor_as_model_output(reference):
    """A DW output that is also the model output is not fused away: DW (identity PW) and the
    1x1 CONV_2D run as two layers."""
    g = read_tflite(dwsep_layer_model(_layer(5)))
    g.outputs = ["dw/out"]
    prog = reference.compile(g)
    assert [r["stages"] for r in prog.layers] == [["DW", "PW"], ["DW", "PW"]]
    x = _random_input(np.random.default_rng(5), g.input.shape)
    assert np.array_equal(reference.run(g, x), run_graph(g, x))


def test_default_timeout_is_the_devices():
    a = Accelerator("tiny", "reference")
    assert a.timeout_s == ReferenceDevice.default_timeout_s == 10.0


# ---- device: registers, capabilities, timeouts, backends --------------------------------------

def test_reference_registers():
    dev = ReferenceDevice("tiny")
    assert dev.read_register("CAP_ARRAY") == dict(dw_lanes=8, pw_rows=8, pw_cols=8, k_max=7,
                                                  lb_window=13)
    dev.write_register("PROGRAM", addr=0x1234_5670)
    assert dev.read_field("PROGRAM", "addr") == 0x1234_5670
    dev.write_register("CTRL", start=1)  # nothing mapped there: read error on descriptor 0
    assert dev.read_register("STATUS") == dict(busy=0, done=0, error=1)
    assert dev.read_register("ERROR")["code"] == ErrorCode.AXI_READ
    dev.write_register("STATUS", error=1)  # write 1 to clear
    assert dev.read_register("STATUS")["error"] == 0


def test_capability_mismatch():
    with pytest.raises(CapabilityMismatchError,
                       match=r"CAP_ARRAY\.dw_lanes: the reference device reads 0x10, config "
                             r"'tiny' expects 0x8"):
        Accelerator("tiny", ReferenceDevice("pynq-z2"))


class _StuckDevice(ReferenceDevice):
    """Never finishes: start sets busy and nothing else."""

    def write_word(self, offset, value):
        if offset == REGISTERS["CTRL"].offset and value & 1:
            self._set("STATUS", busy=1)
        else:
            super().write_word(offset, value)


def test_timeout():
    g = chain(1, 3)
    a = Accelerator("tiny", _StuckDevice("tiny"), timeout_s=0.05)
    with pytest.raises(DeviceTimeoutError, match=r"no done after 0\.05 s \(STATUS busy=1"):
        a.run(g, np.zeros(g.input.shape, np.int8))


def test_busy_device_and_concurrent_runs():
    """A run left busy (here: one that timed out) makes the next run's error say so; two
    runs at once on one Accelerator: the second is refused at once, the first completes."""
    import threading

    g = chain(1, 3)
    x = np.zeros(g.input.shape, np.int8)
    stuck = Accelerator("tiny", _StuckDevice("tiny"), timeout_s=0.05)
    with pytest.raises(DeviceTimeoutError):
        stuck.run(g, x)
    with pytest.raises(DwsepError, match=r"^reference: the accelerator is busy with a run "
                                         r"this program did not start"):
        stuck.run(g, x)

    acc = Accelerator("tiny", "reference")
    inside, release, results = threading.Event(), threading.Event(), []

    def slow_progress(i, count):
        inside.set()
        release.wait(10)

    first = threading.Thread(target=lambda: results.append(acc.run(g, x,
                                                                   progress=slow_progress)))
    first.start()
    assert inside.wait(10)
    with pytest.raises(DwsepError, match=r"^reference: a run is already going on on this "
                                         r"accelerator \(from another thread\)"):
        acc.run(g, x)
    release.set()
    first.join(10)
    assert len(results) == 1 and np.array_equal(results[0], run_graph(g, x))
    assert np.array_equal(acc.run(g, x), results[0])  # and the next run goes


def test_backend_registry():
    assert device_class("reference") is ReferenceDevice
    with pytest.raises(BackendUnavailableError, match="unknown backend 'fpga'; known backends: "
                                                      "reference, rtl, pynq"):
        Accelerator("tiny", "fpga")
