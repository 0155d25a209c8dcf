"""The READMEs run as written: every ``sh`` and ``python`` block of ``README.md`` and
``bitstreams/README.md``, in order, with the venv's ``bin`` first on PATH (what ``source
.venv/bin/activate`` does). ``README.md``'s blocks run in an empty scratch directory (a user's
own); ``bitstreams/README.md``'s in a copy of the repository (its commands name repository
paths and write into ``bitstreams/``).

A block's tier is the ``<!-- readme-test: TIER -->`` comment on the line before its fence:
none (the default run), ``slow`` or ``ecp5`` (behind those markers; each tier's test runs
the blocks of the tiers below it first, since later blocks use earlier ones' files). Three
tiers are not run here: ``setup``, the set-up and test commands, which CI runs itself
(running them here would reinstall the venv and run pytest inside pytest), ``vivado``,
which needs Vivado, and ``board``, which needs a PYNQ-Z2 (neither is on these
machines)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: each document and whether its blocks run in a copy of the repository
DOCUMENTS = {"README.md": False, "bitstreams/README.md": True}
TIERS = ("default", "slow", "ecp5")
NOT_RUN = ("setup", "vivado", "board")
_BLOCK = re.compile(r"(?:<!-- readme-test: (\w+)[^>]*-->\n)?```(sh|python)\n(.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``(tier, language, code)`` of each ``sh`` and ``python`` block, in order."""
    return [(tier or "default", lang, code) for tier, lang, code in _BLOCK.findall(text)]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_block_has_a_known_tier(document):
    text = (REPO / document).read_text()
    found = blocks(text)
    assert {tier for tier, _, _ in found} <= {*NOT_RUN, *TIERS}
    assert len(found) == text.count("```sh") + text.count("```python"), (
        "a block the pattern does not see")
    assert [t for t, _, _ in found].count("setup") == (document == "README.md")


def _run_blocks(document: str, upto: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    if DOCUMENTS[document]:
        shutil.copytree(REPO, workdir, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"))
    else:
        workdir.mkdir()
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    wanted = TIERS[:TIERS.index(upto) + 1]
    for n, (tier, lang, code) in enumerate(blocks((REPO / document).read_text())):
        if tier not in wanted:
            continue
        argv = (["bash", "-euo", "pipefail", "-c", code] if lang == "sh"
                else [sys.executable, "-c", code])
        proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (
            f"{document} block {n} ({lang}, {tier}) failed with status {proc.returncode}:\n"
            f"{code}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n"
            f"{proc.stderr[-3000:]}")


@pytest.mark.verilator
def test_readme_quick_blocks(tmp_path):
    _run_blocks("README.md", "default", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_readme_slow_blocks(document, tmp_path):
    _run_blocks(document, "slow", tmp_path)


@pytest.mark.ecp5
@pytest.mark.parametrize("document", DOCUMENTS)
def test_readme_ecp5_blocks(document, tmp_path):
    _run_blocks(document, "ecp5", tmp_path)
