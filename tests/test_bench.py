"""``dwsep bench`` (:mod:`dwsep.sim.benchmark`): figures from the cycle model and the RTL, the
JSON document, plots and the one-line errors."""

from __future__ import annotations

import json

import pytest

from dwsep.host.cli import main
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model
from dwsep.sim import benchmark

#: a MobileNetV1 small enough for the tiny config and a quick RTL frame
SMALL_V1 = ["--model", "mobilenet_v1", "--width", "0.25", "--resolution", "32",
            "--config", "tiny"]


def bench_json(capsys, *args) -> dict:
    assert main(["bench", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_document(capsys):
    out = bench_json(capsys, *SMALL_V1, "--memory", "ideal", "--clock-mhz", "150")
    for key in ("cycles_per_frame", "mac_utilization", "fps", "clock_mhz", "memory",
                "ddr_bytes", "layers"):
        assert key in out
    assert out["memory"] == "ideal" and out["clock_mhz"] == 150 and out["source"] == "model"
    assert out["cycles_per_frame"] == sum(la["cycles"] for la in out["layers"])
    assert out["fps"] == pytest.approx(150e6 / out["cycles_per_frame"])
    assert out["mac_utilization"] == pytest.approx(
        out["macs"] / (out["cycles_per_frame"] * out["mac_units"]))
    assert out["ddr_bytes"] == sum(la["ddr_bytes_read"] + la["ddr_bytes_written"]
                                   for la in out["layers"])
    assert {la["bound"] for la in out["layers"]} <= {*benchmark.perf.BOUNDS, "table_load"}


def test_limited_memory_costs_cycles(capsys):
    """The pynq-z2 DDR (latency ~200 ns, ~1.2 GB/s) is slower than the ideal memory, and its
    cost in cycles grows with the clock."""
    ideal = bench_json(capsys, *SMALL_V1, "--memory", "ideal", "--clock-mhz", "200")
    at100 = bench_json(capsys, *SMALL_V1, "--memory", "pynq-z2", "--clock-mhz", "100")
    at200 = bench_json(capsys, *SMALL_V1, "--memory", "pynq-z2", "--clock-mhz", "200")
    assert ideal["cycles_per_frame"] < at100["cycles_per_frame"] < at200["cycles_per_frame"]
    assert ideal["ddr_bytes"] == at200["ddr_bytes"]


def test_table_lists_every_layer(capsys):
    assert main(["bench", *SMALL_V1, "--memory", "ideal"]) == 0
    text = capsys.readouterr().out
    assert "cycles per frame" in text and "MAC utilization" in text and "fps" in text
    name, tflite = benchmark.build_model("mobilenet_v1", width=0.25, resolution=32)
    result = benchmark.run_benchmark(name, tflite, "tiny", "ideal", 200)
    for la in result.layers:
        assert f"{la.model_cycles:,}" in text


def test_named_archs_and_non_square_sizes(capsys):
    """Every architecture ``dwsep quantize --arch`` builds is a named model, at a square or
    an ``HxW`` resolution: the OS16 backbone's dilated layers and a non-square pool."""
    out = bench_json(capsys, "--model", "mobilenet_v2_os16", "--width", "0.35",
                     "--resolution", "64", "--memory", "ideal")
    assert out["model"] == "mobilenet_v2_os16-0.35-64"
    assert sum("DW" in la["stages"] for la in out["layers"]) == 17
    out = bench_json(capsys, "--model", "mobilenet_v2", "--width", "0.35",
                     "--resolution", "64x32", "--memory", "ideal")
    assert out["model"] == "mobilenet_v2-0.35-64x32"
    assert any(la["stages"].startswith("POOL") for la in out["layers"])
    assert set(benchmark.NAMED_MODELS) == {"mobilenet_v2", "mobilenet_v1", "mobilenet_v2_os16"}


@pytest.mark.verilator
def test_rtl_side_by_side(capsys):
    """With the ideal memory the model equals the RTL exactly, layer by layer; with the
    pynq-z2 memory it agrees within the cycle model's stated tolerance; both frames are
    bit-exact with the reference backend."""
    exact = bench_json(capsys, *SMALL_V1, "--memory", "ideal", "--rtl")
    assert exact["source"] == "rtl" and exact["rtl_bit_exact"]
    assert exact["rtl_cycles_per_frame"] == exact["model_cycles_per_frame"]
    for la in exact["layers"]:
        assert la["rtl_cycles"] == la["model_cycles"], la
    board = bench_json(capsys, *SMALL_V1, "--memory", "pynq-z2", "--clock-mhz", "200", "--rtl")
    assert board["rtl_bit_exact"]
    assert board["rtl_cycles_per_frame"] > exact["rtl_cycles_per_frame"]
    rtl, model = board["rtl_cycles_per_frame"], board["model_cycles_per_frame"]
    assert abs(model - rtl) <= 0.01 * rtl  # the cycle model's stated frame tolerance
    for la in board["layers"]:  # and its per-descriptor tolerance
        assert abs(la["model_cycles"] - la["rtl_cycles"]) <= 0.03 * la["rtl_cycles"], la


def test_plots(tmp_path, capsys):
    assert main(["bench", *SMALL_V1, "--memory", "ideal", "--plot", str(tmp_path)]) == 0
    for name in ("roofline.png", "layers.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_file_model(tmp_path, capsys):
    spec = LayerSpec(h=8, w=8, c=16, depth_multiplier=1, kernel=3, stride=1, dilation=1,
                     padding="SAME", dw_activation="RELU6", c_out=16, pw_activation="NONE",
                     seed=0)
    path = tmp_path / "layer.tflite"
    path.write_bytes(dwsep_layer_model(spec))
    out = bench_json(capsys, "--model", str(path), "--config", "tiny")
    assert out["model"] == "layer" and len(out["layers"]) == 1


def test_set_overrides_config_fields(capsys):
    """``--set`` benches a variant of a config without editing it: here a 1x1 engine twice
    as wide as the DW lanes, which the cycle model follows (the top level does not yet)."""
    base = bench_json(capsys, *SMALL_V1, "--memory", "ideal")
    wide = bench_json(capsys, *SMALL_V1, "--memory", "ideal", "--set", "pw_cols=16")
    assert (base["config"], wide["config"]) == ("tiny", "tiny-custom")
    assert (base["mac_units"], wide["mac_units"]) == (8 * 3 + 8 * 8, 8 * 3 + 8 * 16)


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet50"], "unknown model 'resnet50': give mobilenet_v2, mobilenet_v1, "
                              "mobilenet_v2_os16, or a .tflite file"),
    (["--model", "mobilenet_v2", "--clock-mhz", "0"],
     "clock must be a positive number of MHz, not 0.0"),
    (["--model", "mobilenet_v2", "--memory", "ddr5"],
     "unknown memory model 'ddr5'; known: pynq-z2, ideal"),
    (["--model", "mobilenet_v2", "--width", "0"], "--width must be > 0, not 0.0"),
    (["--model", "x.tflite", "--width", "0.5"],
     "--width and --resolution apply to mobilenet_v2, mobilenet_v1, mobilenet_v2_os16, not to "
     "a .tflite file"),
    (["--model", "missing.tflite"], "No such file or directory: missing.tflite"),
    (["--model", "mobilenet_v2", "--config", "big"], "argument --config: invalid choice: 'big'"),
    (["--model", "mobilenet_v2", "--set", "lanes=3"], "--set lanes=3: no config field 'lanes'"),
    (["--model", "mobilenet_v2", "--set", "pw_cols=12"],
     "config 'pynq-z2-custom': pw_cols must be a multiple of 8, not 12"),
])
def test_errors(capsys, args, message):
    try:
        status = main(["bench", *args])
    except SystemExit as e:  # argparse's own checks exit from parse_args
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("dwsep: error: ") and message in err and err.count("\n") == 1
