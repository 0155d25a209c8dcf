"""The ``dwsep`` command through ``main([...])``: outputs, stats file, photo input with the
top-5 ImageNet classes, the progress bar, exit codes and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dwsep.host import imagenet
from dwsep.host.cli import main
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model
from dwsep.hw.layout import REGISTERS, markdown
from dwsep.sim.oracle import litert_run

SPEC = LayerSpec(h=9, w=6, c=11, depth_multiplier=2, kernel=3, stride=2, dilation=1,
                 padding="SAME", dw_activation="RELU6", c_out=13, pw_activation="NONE", seed=4)


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "layer.tflite"
    model.write_bytes(dwsep_layer_model(SPEC))
    x = np.random.default_rng(0).integers(-128, 128, (1, SPEC.h, SPEC.w, SPEC.c), np.int8)
    np.save(tmp_path / "in.npy", x)
    return tmp_path, model, x


def _one_line_error(capsys, text: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("dwsep: error: ") and text in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_run_writes_output_and_stats(files, capsys):
    d, model, x = files
    assert main(["run", str(model), "--input", str(d / "in.npy"), "--output",
                 str(d / "out.npy"), "--stats", str(d / "stats.json")]) == 0
    y = np.load(d / "out.npy")
    assert y.dtype == np.int8 and np.array_equal(y, litert_run(model.read_bytes(), x))
    stats = json.loads((d / "stats.json").read_text())
    assert stats["cycles"] is None and stats["backend"] == "reference"
    assert stats["layers"][0]["output_shape"] == [5, 3, 13]
    assert stats["config"] == "pynq-z2"  # the default: the board's
    err = capsys.readouterr().err
    assert err.startswith("dwsep: ran layer.tflite on reference (config 'pynq-z2'): output "
                          "[1, 5, 3, 13] int8 in ") and err.count("\n") == 1, err
    assert err.endswith(f" s; wrote {d / 'out.npy'} and {d / 'stats.json'}\n"), err


@pytest.mark.verilator
def test_run_on_rtl_reports_cycles(files, capsys):
    """On the ``rtl`` backend the summary line carries the run's cycle count, as the stats
    file does."""
    d, model, x = files
    assert main(["run", str(model), "--input", str(d / "in.npy"), "--backend", "rtl",
                 "--config", "tiny", "--output", str(d / "out.npy"), "--stats",
                 str(d / "stats.json")]) == 0
    assert np.array_equal(np.load(d / "out.npy"), litert_run(model.read_bytes(), x))
    cycles = json.loads((d / "stats.json").read_text())["cycles"]
    assert isinstance(cycles, int) and cycles > 0
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("dwsep: ran layer.tflite on rtl (config 'tiny'): output "
                          "[1, 5, 3, 13] int8 in "), err
    assert f" s, {cycles:,} cycles; wrote {d / 'out.npy'} and " in err, err


def test_compile_report(files, capsys):
    _, model, _ = files
    assert main(["compile", str(model), "--config", "pynq-z2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config 'pynq-z2': 1 layer(s), 1 descriptor(s)")
    assert ("layer 0 [descriptor 0] operators 0,1 DEPTHWISE_CONV_2D+CONV_2D -> DW+PW: 9x6x11 "
            "-> 5x3x13, k3 s2 d1 m2") in out
    assert main(["compile", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == "pynq-z2" and report["layers"][0]["depth_multiplier"] == 2
    assert report["descriptor_count"] == 1 and report["host_steps"] == []


def test_info(capsys):
    assert main(["info", "--config", "zcu104"]) == 0
    out = capsys.readouterr().out
    assert "dw_lanes           32" in out and "magic[31:0]=0x44575350" in out
    assert main(["info", "--json"]) == 0
    export = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in export["registers"]] == [r.name for r in REGISTERS]
    assert export["config"]["name"] == "pynq-z2"
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "descriptor (128 bytes; bit offsets):" in out and "] pf1_base" in out
    assert main(["info", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown()


def _run(d, model, inp, **extra):
    argv = ["run", str(model), "--input", str(inp), "--output", str(d / "out.npy")]
    for k, v in extra.items():
        argv += [f"--{k}", v]
    return main(argv)


def test_errors(files, capsys, monkeypatch):
    d, model, x = files
    np.save(d / "float.npy", x.astype(np.float32))
    np.save(d / "shape.npy", x[:, :4])
    assert _run(d, model, d / "float.npy") == 2
    _one_line_error(capsys, "input must be int8, not float32")
    assert _run(d, model, d / "shape.npy") == 2
    _one_line_error(capsys, "input has shape [1, 4, 6, 11], the model takes [1, 9, 6, 11]")
    assert _run(d, model, d / "missing.npy") == 2
    _one_line_error(capsys, "No such file or directory: ")
    (d / "bad.npy").write_bytes(b"not numpy")
    assert _run(d, model, d / "bad.npy") == 2
    _one_line_error(capsys, "bad.npy: not a .npy file of an array")
    assert _run(d, model, model) == 2  # a photo input needs a model from 'dwsep quantize'
    _one_line_error(capsys, "layer.tflite: its description holds no image preprocessing")
    assert _run(d, d / "in.npy", d / "in.npy") == 2
    _one_line_error(capsys, "not a TFLite flatbuffer")
    big = d / "big.tflite"
    big.write_bytes(dwsep_layer_model(LayerSpec(**{**SPEC.__dict__, "kernel": 9, "h": 12})))
    assert _run(d, big, d / "in.npy") == 2
    _one_line_error(capsys, "operator 0 DEPTHWISE_CONV_2D ('dw/out'): kernel 9x9 exceeds "
                            "k_max=7 of config 'pynq-z2'; no config of 'tiny', 'pynq-z2', "
                            "'zcu104' runs it")
    wide = d / "wide.tflite"  # 20 * 16 = 320 DW channels: more than tiny's 256
    wide.write_bytes(dwsep_layer_model(LayerSpec(**{**SPEC.__dict__, "c": 20,
                                                     "depth_multiplier": 16})))
    assert main(["compile", str(wide), "--config", "tiny"]) == 2
    _one_line_error(capsys, "exceed mid_channels_max=256 of config 'tiny'; it fits config "
                            "'pynq-z2' and 'zcu104'")
    monkeypatch.setitem(__import__("sys").modules, "pynq", None)
    assert _run(d, model, d / "in.npy", backend="pynq") == 2
    _one_line_error(capsys, "the pynq backend needs the 'pynq' package")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "m.tflite"])
    assert info.value.code == 2
    _one_line_error(capsys, "the following arguments are required: --input")
    with pytest.raises(SystemExit):
        main(["info", "--config", "huge"])
    _one_line_error(capsys, "invalid choice: 'huge'")


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory, v2_int8):
    """The int8 MobileNetV2-224 of torchvision's ImageNet weights in a file."""
    path = tmp_path_factory.mktemp("v2") / "mobilenet_v2.tflite"
    path.write_bytes(v2_int8)
    return path


def test_run_photo_top5(v2_model, tmp_path, capsys):
    photo = imagenet.sample_images()["grace_hopper"]
    assert main(["run", str(v2_model), "--input", str(photo), "--config", "zcu104",
                 "--top", "5", "--progress", "--output", str(tmp_path / "y.npy")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "top 5 of 1000 classes (int8 score, dequantized):"
    assert lines[1].startswith("  1. 457 bow tie: ")
    assert any(line.startswith("  2. 652 military uniform: ") for line in lines)
    y = np.load(tmp_path / "y.npy")
    x = imagenet.image_to_input(photo, v2_model.read_bytes())
    assert np.array_equal(y, litert_run(v2_model.read_bytes(), x))
    # the bar goes to stderr, one step per descriptor, named after the layer
    assert "20/20" in captured.err and "layer 20/20 POOL+PW+RAW_OUT" in captured.err


def test_run_npy_prints_no_classes_unless_asked(files, capsys):
    d, model, _ = files
    assert main(["run", str(model), "--input", str(d / "in.npy")]) == 0
    assert capsys.readouterr().out == ""
    assert main(["run", str(model), "--input", str(d / "in.npy"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top 3 of 195 classes") and out.count("\n") == 4


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"dwsep {version('dwsep')}\n"


def test_top_is_checked_against_the_classes(files, capsys):
    d, model, _ = files  # the layer's output has 5 x 3 x 13 = 195 values
    for bad in ("0", "-1", "196"):
        assert main(["run", str(model), "--input", str(d / "in.npy"), "--top", bad]) == 2
        _one_line_error(capsys, f"--top {bad}: the model's output has 195 classes, so --top "
                                "takes 1..195")
    assert main(["run", str(model), "--input", str(d / "in.npy"), "--top", "195"]) == 0
    assert capsys.readouterr().out.startswith("top 195 of 195 classes")


def test_model_and_photo_swapped(tmp_path, capsys):
    """``dwsep run photo.jpg --input photo.jpg``: the model argument is checked first."""
    photo = imagenet.sample_images()["grace_hopper"]
    assert main(["run", str(photo), "--input", str(photo)]) == 2
    _one_line_error(capsys, f"{photo}: not a TFLite flatbuffer (file identifier "
                            f"{photo.read_bytes()[4:8]!r}, expected b'TFL3')")


def test_closed_pipe_ends_quietly():
    """Output into a pipe whose reader has gone (``dwsep info | head -0``): exit 0, nothing on
    stderr (no 'Broken pipe', no traceback)."""
    import subprocess
    import sys

    code = "import sys; from dwsep.host.cli import main; sys.exit(main(['info']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has printed anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b"", err


def test_samples(capsys):
    photos = imagenet.sample_images()
    assert main(["samples"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(photos)
    assert main(["samples", "grace_hopper"]) == 0
    assert capsys.readouterr().out == f"{photos['grace_hopper']}\n"
    assert main(["samples", "nope"]) == 2
    _one_line_error(capsys, f"no sample photo 'nope'; there are {', '.join(photos)}")
