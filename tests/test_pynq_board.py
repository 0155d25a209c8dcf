"""The ``pynq`` backend on the real ``pynq`` 4.0 package and a simulated PYNQ-Z2
(``dwsep.sim.pynq_board``), in an environment of its own (``tests/pynq_env.py``: PYNQ pins
NumPy 1.x): ``pynq.Overlay`` parses the block design's ``.hwh``, binds the dwsep driver by
VLNV, the unchanged ``Accelerator(backend="pynq")`` path allocates ``PynqBuffer``s in the
simulated DDR, flushes and invalidates them, and waits on ``pynq.Interrupt`` through the AXI
interrupt controller (or polls). Outputs are compared with LiteRT here, in the test's own
environment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pynq_env import REPO, run_notebook, run_on_board

from dwsep.bitstreams.build import REG_BASE
from dwsep.host import imagenet
from dwsep.host.backends.pynq import VLNV
from dwsep.host.driver import Accelerator, BackendUnavailableError
from dwsep.host.tflite_writer import (
    BlockSpec,
    MobileNetSpec,
    dwsep_layer_model,
    mobilenet_like_model,
    random_layer_spec,
)
from dwsep.sim.oracle import litert_run

#: a MobileNet-like network: several descriptors and the FC host step, which reads the RAW_OUT
#: sums through the CPU's view of a buffer (invalidated after the run)
NETWORK = MobileNetSpec(h=12, w=10, stem_channels=8, blocks=(BlockSpec(3, 8, 1),
                                                             BlockSpec(2, 12, 2)),
                        head_channels=20, pool="AVERAGE_POOL_2D", keep_dims=True, classes=9,
                        fc_per_channel=False, reshape=True, seed=2)


def _cases(tmp_path, models: list[bytes], seed: int = 0) -> tuple[list[dict], list]:
    """Write each model and a random input into ``tmp_path``; return the job's runs and
    LiteRT's outputs."""
    rng = np.random.default_rng(seed)
    runs, expected = [], []
    for i, model in enumerate(models):
        (tmp_path / f"m{i}.tflite").write_bytes(model)
        shape = litert_input_shape(model)
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        np.save(tmp_path / f"x{i}.npy", x)
        runs.append({"model": f"m{i}.tflite", "input": f"x{i}.npy"})
        expected.append(litert_run(model, x))
    return runs, expected


def litert_input_shape(model: bytes) -> tuple[int, ...]:
    from ai_edge_litert.interpreter import Interpreter

    return tuple(Interpreter(model_content=model).get_input_details()[0]["shape"])


def _layers(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [dwsep_layer_model(random_layer_spec(rng, max_hw=12, max_c=20, max_c_out=20))
            for _ in range(n)]


def _outputs(tmp_path, report) -> list[np.ndarray]:
    return [np.load(tmp_path / name) for name in report["outputs"]]


def test_layers_and_a_network_bit_exact_with_the_interrupt(tmp_path):
    runs, expected = _cases(tmp_path, [*_layers(3, seed=1), mobilenet_like_model(NETWORK)])
    report = run_on_board({"config": "tiny", "runs": runs}, tmp_path)
    assert report["error"] is None, report["error"]
    for got, want in zip(_outputs(tmp_path, report), expected, strict=True):
        assert np.array_equal(got, want)
    assert report["device"] == "PynqDevice" and report["overlay_device"] == "SimDevice"
    assert report["ip_class"] == "DwsepIP" and report["bindto"] == [VLNV]
    assert report["stats"][-1] == {"backend": "pynq", "descriptor_count": 5,
                                   "host_steps": ["fc_requant"]}
    # every run waited on the interrupt, which the accelerator raised
    assert report["uses_irq"] and report["irq_enabled_at_start"] == [True] * 4
    assert report["irq_raised"] >= 4
    assert report["flush_before_start"] and report["invalidate_after_start"]
    assert report["stale_reads"] == 0
    assert report["log_counts"]["download"] == 1


def test_polling_when_there_is_no_interrupt(tmp_path):
    runs, expected = _cases(tmp_path, _layers(2, seed=5))
    report = run_on_board({"config": "tiny", "runs": runs, "wait": "poll"}, tmp_path)
    assert report["error"] is None, report["error"]
    assert all(np.array_equal(g, w) for g, w in zip(_outputs(tmp_path, report), expected,
                                                    strict=True))
    assert report["irq_enabled_at_start"] == [False, False] and report["irq_raised"] == 0


@pytest.mark.parametrize("drop", ["flush", "invalidate"])
def test_a_missing_cache_operation_gives_a_wrong_result(tmp_path, drop):
    """The simulated board keeps the CPU's view of a buffer apart from DDR: without
    ``flush`` the accelerator reads stale bytes (seen by the board: here the program, so the
    run stops at a bad opcode), without ``invalidate`` the host reads stale results."""
    runs, expected = _cases(tmp_path, _layers(1, seed=2))
    report = run_on_board({"config": "tiny", "runs": runs, "drop": drop}, tmp_path)
    if drop == "flush":
        assert report["error"]["type"] == "HardwareError", report["error"]
        assert report["error"]["message"].startswith(
            "accelerator stopped with BAD_OPCODE at descriptor 0: descriptor 0 (layer 0: "), \
            report["error"]
        assert report["stale_reads"] > 0
    else:
        assert report["error"] is None, report["error"]
        assert not np.array_equal(_outputs(tmp_path, report)[0], expected[0])
        assert report["stale_reads"] == 0


@pytest.mark.parametrize("wait", ["irq", "poll"])
def test_an_ip_that_never_finishes_times_out(tmp_path, wait):
    runs, _ = _cases(tmp_path, _layers(1, seed=3))
    report = run_on_board({"config": "tiny", "runs": runs, "hang": True, "wait": wait,
                           "timeout_s": 0.5}, tmp_path)
    # an IP that ignores every write never started: it is idle, with neither done nor error
    assert report["error"]["type"] == "AcceleratorTimeout", report["error"]
    assert report["error"]["message"].startswith("pynq: no done after 0.5 s (STATUS busy=0")
    assert report["error"]["message"].endswith(
        "the accelerator is idle but reported neither done nor an error: the start did not "
        "reach it, or something reset it"), report["error"]
    assert report["seconds"] < 5


def test_overlay_of_another_config(tmp_path):
    report = run_on_board({"config": "tiny", "board_config": "pynq-z2", "runs": []}, tmp_path)
    assert report["error"]["type"] == "CapabilityMismatchError", report["error"]
    assert "CAP_ARRAY.dw_lanes: the pynq device reads 0x10, config 'tiny' expects 0x8" in \
        report["error"]["message"]


def test_needs_a_bitstream(tmp_path):
    report = run_on_board({"config": "tiny", "runs": [], "bitstream": False}, tmp_path)
    assert report["error"]["type"] == "BackendUnavailableError"
    assert "needs bitstream=" in report["error"]["message"]


def test_mobilenet_v2_on_the_simulated_board(tmp_path, v2_int8):
    """The quantized ImageNet MobileNetV2 with the board's config, bit-exact (2 s)."""
    runs, expected = _cases(tmp_path, [v2_int8], seed=7)
    report = run_on_board({"config": "pynq-z2", "runs": runs}, tmp_path, timeout=1800)
    assert report["error"] is None, report["error"]
    assert np.array_equal(_outputs(tmp_path, report)[0], expected[0])
    assert report["stale_reads"] == 0 and report["irq_enabled_at_start"] == [True]


def test_pynq_missing(monkeypatch):
    """Off the board, without the ``pynq`` package: one clear error."""
    monkeypatch.setitem(sys.modules, "pynq", None)  # import pynq -> ImportError
    with pytest.raises(BackendUnavailableError) as info:
        Accelerator("tiny", "pynq", bitstream="dwsep.bit")
    assert str(info.value) == ("the pynq backend needs the 'pynq' package (a PYNQ board image "
                               "has it): pip install 'dwsep[pynq]'")


@pytest.mark.verilator
def test_rtl_behind_the_simulated_board(tmp_path):
    """The same path with the Verilated accelerator behind the board (the PYNQ-Z2 memory
    model at 100 MHz): bit-exact, and each run ends with the interrupt the RTL raises."""
    runs, expected = _cases(tmp_path, [*_layers(1, seed=11), mobilenet_like_model(NETWORK)])
    report = run_on_board({"config": "tiny", "model": "rtl", "runs": runs}, tmp_path,
                          timeout=1800)
    assert report["error"] is None, report["error"]
    assert all(np.array_equal(g, w) for g, w in zip(_outputs(tmp_path, report), expected,
                                                    strict=True))
    assert report["irq_enabled_at_start"] == [True, True] and report["irq_raised"] >= 2


def _notebook_text(nb: dict) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c["outputs"])


def test_notebook_on_the_simulated_board(tmp_path, v2_int8, grace_hopper):
    """notebooks/mobilenet_v2_pynq.ipynb, executed as on a board, classifies the photo as
    LiteRT does (the same 5 classes in order) and draws the per-layer plot."""
    (tmp_path / "mnv2.tflite").write_bytes(v2_int8)
    nb = run_notebook(REPO / "notebooks" / "mobilenet_v2_pynq.ipynb", tmp_path,
                      {"DWSEP_SIMULATED_BOARD": str(tmp_path / "board"),
                       "DWSEP_MODEL": str(tmp_path / "mnv2.tflite"),
                       "DWSEP_PHOTO": str(grace_hopper)})
    text = _notebook_text(nb)
    y = litert_run(v2_int8, imagenet.image_to_input(grace_hopper, v2_int8))
    names = imagenet.labels()
    for rank, c in enumerate(imagenet.top_k(y, 5), 1):
        assert f"{rank}. class {c} {names[c]}: {int(y.reshape(-1)[c])} (" in text, text
    assert (f"IPs in the overlay: dwsep, axi_intc_0, ps7\naccelerator at {REG_BASE:#x} | "
            "interrupt: yes\n") in text
    images = [o for c in nb["cells"] for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 1


@pytest.mark.board
def test_notebook_on_the_board(tmp_path):
    """On a PYNQ-Z2 with dwsep.bit, dwsep.hwh, mnv2.tflite and photo.jpg in
    ``$DWSEP_BOARD_DIR`` (run on the board: ``pytest -m board``)."""
    import os

    folder = Path(os.environ["DWSEP_BOARD_DIR"])
    nb = run_notebook(REPO / "notebooks" / "mobilenet_v2_pynq.ipynb", tmp_path,
                      {"DWSEP_BITSTREAM": str(folder / "dwsep.bit"),
                       "DWSEP_MODEL": str(folder / "mnv2.tflite"),
                       "DWSEP_PHOTO": str(folder / "photo.jpg")}, python=sys.executable)
    assert "1. class " in _notebook_text(nb)
