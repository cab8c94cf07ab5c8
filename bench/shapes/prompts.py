"""The shapes world's fixed evaluation prompts: captions of test-split scenes, 50 per skill, shipped as a file.

Row i is the caption (bench/shapes/captions.py) of test scene i, so its skill is SKILLS[i % 6]
(bench.shapes.scenes.make_scene): the first N rows cover the six skills round-robin, and a small `dataset.limit`
still asks for every skill. A scene's layout is chosen on a lattice and does not depend on the size it is drawn
at, so the scene of row i is make_scene(i, "test", size) at any size (SCENE_SIZE is only the one the captions are
read from).

The grammar is small, so prompts repeat (single_object has three possible captions, two_objects six, counting
nine); each row is still its own scene and its own sample. The shipped copy, bench/data/shapes_prompts.tsv, is
written by `python -m bench.shapes.prompts` and must equal a regeneration (tests/test_shapes_data.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.shapes.captions import caption
from bench.shapes.scenes import SKILLS, make_scene

SPLIT = "test"
PER_SKILL = 50
# The size the captions are read from (any multiple of the lattice gives the same scenes).
SCENE_SIZE = 64
COLUMNS = ("id", "prompt", "skill", "scene")
FILE_NAME = "shapes_prompts.tsv"
# Where the shipped copy lives (bench/data/, read by bench.data.shapes); bench.shapes does not import bench.data.
SHIPPED = Path(__file__).resolve().parent.parent / "data" / FILE_NAME


@dataclass(frozen=True)
class EvaluationPrompt:
    """One row of the prompt file: its id (the row number), the caption, its skill and its test-scene index."""

    id: int
    prompt: str
    skill: str
    scene: int


def evaluation_prompts(per_skill: int = PER_SKILL) -> list[EvaluationPrompt]:
    """The evaluation prompts: the captions of test scenes 0 .. 6 * per_skill - 1 at SCENE_SIZE, in scene order
    (row i has skill SKILLS[i % 6])."""
    rows = []
    for i in range(per_skill * len(SKILLS)):
        scene = make_scene(i, SPLIT, SCENE_SIZE)
        if scene.skill != SKILLS[i % len(SKILLS)]:  # make_scene's promise, which the round-robin order rests on
            raise AssertionError(f"test scene {i} has skill {scene.skill}, not {SKILLS[i % len(SKILLS)]}")
        rows.append(EvaluationPrompt(i, caption(scene), scene.skill, i))
    return rows


def format_prompts(rows: Sequence[EvaluationPrompt]) -> str:
    """The file's text: a header line of COLUMNS, then one tab-separated line per row (no quoting: captions of the
    grammar hold neither tabs nor quotes)."""
    lines = ["\t".join(COLUMNS)]
    lines += [f"{r.id}\t{r.prompt}\t{r.skill}\t{r.scene}" for r in rows]
    return "\n".join(lines) + "\n"


def write_prompts(path: str | Path = SHIPPED) -> Path:
    """Write the evaluation prompts to `path` (by default the shipped copy in bench/data/)."""
    path = Path(path)
    path.write_text(format_prompts(evaluation_prompts()), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.shapes.prompts [PATH]`: (re)write the evaluation prompt file."""
    parser = argparse.ArgumentParser(prog="python -m bench.shapes.prompts", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(SHIPPED), help=f"output file (default: {SHIPPED})")
    args = parser.parse_args(argv)
    print(f"wrote {write_prompts(args.path)}")


if __name__ == "__main__":
    main()
