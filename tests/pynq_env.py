"""The environment the real ``pynq`` package runs in for the tests: ``pynq`` 4.0 pins NumPy
1.x, so it gets a venv of its own, made on first use (about a minute; needs the package index)
and kept in the build cache (``dwsep.sim.verilator.build_root()``) under a name that changes
with ``pyproject.toml`` and the Python version. dwsep is installed there editable with its
``pynq``, ``sim`` and ``notebook`` extras (:data:`EXTRAS`), so the environment runs the
working tree's code, the simulated board's accelerator can be the Verilated RTL and the
notebook executes (``tests/test_packaging.py`` checks the board's own install: host only,
no Amaranth).

``run_on_board(job, ...)`` runs ``tests/pynq_board_runner.py`` in it; ``run_notebook(...)``
executes a notebook there."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from dwsep.sim.verilator import build_root

REPO = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "pynq_board_runner.py"
EXTRAS = "pynq,sim,notebook"


def _key() -> str:
    text = (REPO / "pyproject.toml").read_text() + sys.version + platform.platform() + EXTRAS
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pynq_python() -> Path:
    """The interpreter of the ``pynq`` environment, created if missing."""
    root = build_root() / f"pynq-env-{_key()}"
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root}.lock"):
        if not (root / "ready").is_file():
            shutil.rmtree(root, ignore_errors=True)
            print(f"creating the pynq test environment in {root} (about a minute)",
                  file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
            proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e",
                                   f"{REPO}[{EXTRAS}]"], capture_output=True, text=True,
                                  timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"pip install -e '{REPO}[{EXTRAS}]' into {root} failed:\n"
                                   f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            (root / "ready").write_text("")
    return python


def run_on_board(job: dict, workdir: Path, timeout: float = 600) -> dict:
    """Run ``job`` (see ``pynq_board_runner.py``) on the simulated board in the ``pynq``
    environment; return its report."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([str(pynq_python()), str(RUNNER), str(workdir)], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads((workdir / "report.json").read_text())


def run_notebook(notebook: Path, workdir: Path, env: dict[str, str], timeout: float = 900,
                 python: str | None = None) -> dict:
    """Execute ``notebook`` with ``nbclient`` in the ``pynq`` environment (or with
    ``python``: a board's own), whose Python is the kernel, in ``workdir``, with ``env`` added
    to the environment; return the executed notebook (JSON)."""
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / notebook.name
    script = ("import sys, nbformat, nbclient\n"
              "nb = nbformat.read(sys.argv[1], as_version=4)\n"
              "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',\n"
              "    resources={'metadata': {'path': sys.argv[3]}}).execute()\n"
              "nbformat.write(nb, sys.argv[2])\n")
    proc = subprocess.run([python or str(pynq_python()), "-c", script, str(notebook), str(out),
                           str(workdir)], cwd=workdir, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text())
