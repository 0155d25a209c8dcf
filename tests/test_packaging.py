"""Packaging: the host side (compiler, driver, command line, backends) imports and runs on
a board image without the ``hw`` and ``sim`` extras (no Amaranth, no cocotb); the README's
board install (a wheel with the ``pynq`` extra) works."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: top-level packages the host must not import
BLOCKED = ("amaranth", "cocotb", "cocotbext")

#: run in a fresh interpreter: refuse the blocked packages, import the host modules, compile
#: a small layer and run it on the reference device
SCRIPT = f"""
import importlib.abc
import sys

BLOCKED = {BLOCKED!r}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"refused to import {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Refuse())

import numpy as np

import dwsep.host.backends.pynq
import dwsep.host.backends.reference
import dwsep.host.cli
import dwsep.host.compiler
import dwsep.host.driver
from dwsep.host.reference import run_graph
from dwsep.host.tflite_reader import read_tflite
from dwsep.host.tflite_writer import LayerSpec, dwsep_layer_model

spec = LayerSpec(h=6, w=5, c=10, depth_multiplier=1, kernel=3, stride=1, dilation=1,
                 padding="SAME", dw_activation="RELU6", c_out=9, pw_activation="NONE",
                 seed=1)
model = dwsep_layer_model(spec)
program = dwsep.host.compiler.compile_model(read_tflite(model), "tiny")
assert len(program.descriptors) == 1, program.summary()
x = np.random.default_rng(1).integers(-128, 128, (1, 6, 5, 10), dtype=np.int8)
with dwsep.host.driver.Accelerator("tiny", "reference") as acc:
    y = acc.run(model, x)
assert np.array_equal(y, run_graph(read_tflite(model), x))
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def test_host_runs_without_amaranth_and_cocotb():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_board_install_from_a_wheel(tmp_path):
    """The README's board route, in a fresh venv: ``pip wheel --no-deps . -w dist``, then
    ``pip install 'dwsep-VERSION-py3-none-any.whl[pynq]'``. The real ``pynq`` 4.0 comes in
    and with it NumPy 1.x, as on a PYNQ image; Amaranth and cocotb do not. The host runs
    there (the script above) and ``dwsep --version`` names the wheel's version."""
    version = installed_version("dwsep")
    readme = (REPO / "README.md").read_text()
    wheel_name = f"dwsep-{version}-py3-none-any.whl"
    assert "pip wheel --no-deps . -w dist" in readme and f"'{wheel_name}[pynq]'" in readme

    def run(*argv, cwd=tmp_path):
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout

    # from a copy: setuptools leaves build/ and *.egg-info beside the sources
    shutil.copytree(REPO, tmp_path / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", ".", "-w",
        str(tmp_path / "dist"), cwd=tmp_path / "src")
    assert (tmp_path / "dist" / wheel_name).is_file()
    run(sys.executable, "-m", "venv", "board")
    board = tmp_path / "board" / "bin"
    run(str(board / "pip"), "install", "-q", f"dist/{wheel_name}[pynq]")
    listed = run(str(board / "python"), "-c", "import importlib.metadata as m, sys; "
                 "print(m.version('pynq'), m.version('numpy')); "
                 "print(*[p for p in ('amaranth', 'cocotb') if p in "
                 "{d.metadata['Name'] for d in m.distributions()}])").split("\n")
    pynq_version, numpy_version = listed[0].split()
    assert pynq_version == "4.0.0" and numpy_version.startswith("1."), listed
    assert listed[1] == "", f"installed on the board: {listed[1]}"
    run(str(board / "python"), "-c", SCRIPT)
    assert run(str(board / "dwsep"), "--version") == f"dwsep {version}\n"
