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


def test_no_module_of_bench_or_muse_imports_itself_back():
    # Every import counts, those inside functions and under TYPE_CHECKING included: a loop is a loop to a reader.
    import grimp

    graph = grimp.build_graph("bench", "muse")
    done: set[str] = set()
    loops = []

    def visit(module: str, stack: list[str]) -> None:
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported in stack:
                loops.append(stack[stack.index(imported):] + [imported])
            elif imported not in done:
                visit(imported, stack)
        stack.pop()
        done.add(module)

    for module in sorted(graph.modules):
        if module not in done:
            visit(module, [])
    assert not loops, "import loops: " + "; ".join(" -> ".join(loop) for loop in loops)
