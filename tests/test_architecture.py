"""The architecture contract of pyproject.toml ([tool.importlinter]): muse never imports bench, and bench's wings
import only the layers below them, so no import loop can come back unnoticed."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_imports_keep_the_architecture_contract():
    # lint-imports reads pyproject.toml from the working directory and lives beside the interpreter; PYTHONPATH
    # makes it analyse this checkout whatever is installed.
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(lint)], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
