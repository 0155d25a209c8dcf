"""README.md runs as written: every ``sh`` and ``python`` block, in order, in one scratch
directory, with the venv's ``bin`` first on PATH (what ``source .venv/bin/activate`` does).

A block's tier is the ``<!-- readme-test: TIER -->`` comment on the line before its fence:
none (the default run), ``slow`` or ``ecp5`` (behind those markers; each tier's test runs
the blocks of the tiers below it first, since later blocks use earlier ones' files), or
``setup``: the set-up and test commands, which CI runs itself (running them here would
reinstall the venv and run pytest inside pytest)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TIERS = ("default", "slow", "ecp5")
_BLOCK = re.compile(r"(?:<!-- readme-test: (\w+)[^>]*-->\n)?```(sh|python)\n(.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``(tier, language, code)`` of each ``sh`` and ``python`` block, in order."""
    return [(tier or "default", lang, code) for tier, lang, code in _BLOCK.findall(text)]


def test_every_block_has_a_known_tier():
    found = blocks(README.read_text())
    assert {tier for tier, _, _ in found} <= {"setup", *TIERS}
    assert len(found) == README.read_text().count("```sh") + README.read_text().count(
        "```python"), "a block the pattern does not see"
    assert [t for t, _, _ in found].count("setup") == 1


def _run_blocks(upto: str, workdir: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    wanted = TIERS[:TIERS.index(upto) + 1]
    for n, (tier, lang, code) in enumerate(blocks(README.read_text())):
        if tier not in wanted:
            continue
        argv = (["bash", "-euo", "pipefail", "-c", code] if lang == "sh"
                else [sys.executable, "-c", code])
        proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (
            f"README block {n} ({lang}, {tier}) failed with status {proc.returncode}:\n"
            f"{code}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n"
            f"{proc.stderr[-3000:]}")


@pytest.mark.verilator
def test_readme_quick_blocks(tmp_path):
    _run_blocks("default", tmp_path)


@pytest.mark.slow
def test_readme_slow_blocks(tmp_path):
    _run_blocks("slow", tmp_path)


@pytest.mark.ecp5
def test_readme_ecp5_block(tmp_path):
    _run_blocks("ecp5", tmp_path)
