"""What the tests share: running the `muse-bench` command line.

`muse_bench(*args, cwd=...)` runs the command line in this process (Hydra's own entry point, with sys.argv set
as the console script sets it): the same composition, run directory, logging, error messages and exit status,
without paying for a fresh Python and a fresh import of torch per call. `process=True` runs the installed console
script in a subprocess instead, for the few tests where the process boundary is what is checked (the script
itself, torchrun, a kill).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "muse-bench"


@dataclass
class CliRun:
    """A finished command line: exit status and what it printed (as subprocess.CompletedProcess names them)."""

    returncode: int
    stdout: str
    stderr: str


def _exit_status(code: object) -> int:
    # sys.exit(None) is 0, sys.exit(int) that int, sys.exit(message) prints the message and is 1.
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _in_process(args: tuple[str, ...], cwd: Path) -> CliRun:
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, here, root = sys.argv, os.getcwd(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.argv = [str(SCRIPT), *args]
    os.chdir(cwd)
    # As the subprocess helper does: Hydra's short error messages, not its full tracebacks.
    full_error = os.environ.pop("HYDRA_FULL_ERROR", None)
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                status = _exit_status(exit_.code)
    finally:
        sys.argv = argv
        os.chdir(here)
        if full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        # Hydra configures logging for each run (a file in the run folder, a stream): close and drop what it
        # added, so the next run neither writes into this one's log nor into a closed stream.
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return CliRun(status, out.getvalue(), err.getvalue())


def _subprocess(args: tuple[str, ...], cwd: Path, env: dict[str, str] | None) -> CliRun:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install the package with `pip install -e .` (make test does)")
    env = {k: v for k, v in (env or os.environ).items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return CliRun(done.returncode, done.stdout, done.stderr)


def muse_bench(*args: str, cwd: Path | str, process: bool = False, env: dict[str, str] | None = None) -> CliRun:
    """Run `muse-bench ARGS` in `cwd`: in this process, or with process=True as the installed console script in a
    subprocess (with `env`, default this process's environment)."""
    if process:
        return _subprocess(args, Path(cwd), env)
    if env is not None:
        raise ValueError("env applies to a subprocess: pass process=True")
    return _in_process(args, Path(cwd))


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory):
    """The test suite's learned shapes world (recipe shapes-ci, bench/train/recipe.py), trained once per session into
    a cache of the session's own (MUSE_BENCH_CACHE, which later commands of the session inherit): its folder.

    Set MUSE_BENCH_TEST_CACHE to a folder to keep the world between sessions (a changed recipe gets a new key)."""
    cache = os.environ.get("MUSE_BENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["MUSE_BENCH_CACHE"] = cache
    from bench.train.world import ensure_world

    return ensure_world("shapes-ci", progress=False)
