"""Packaging: the host side (compiler, driver, command line, backends) imports and runs on
a board image without the ``hw`` and ``sim`` extras (no Amaranth, no cocotb)."""

from __future__ import annotations

import subprocess
import sys

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
