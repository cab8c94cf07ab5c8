"""The shapes world's evaluation prompts (bench/shapes/prompts.py) as a prompt dataset: `shapes`.

bench/data/shapes_prompts.tsv holds 300 captions of test-split scenes, 50 per GenEval skill, ordered so that row i
has skill SKILLS[i % 6]. Each record's metadata holds its `skill` and `scene` (the index of the test scene the
caption was written from: bench.shapes.scenes.make_scene(scene, "test", size) at any size), which
end up in every sample's manifest row. Its reference images are renders of test scenes
(bench.data.references.shapes_references); its exact metric is `judge` (bench/metrics/judge.py).
"""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError
from bench.data.prompts import PromptList, PromptRecord, tsv_rows
from bench.shapes.prompts import COLUMNS, FILE_NAME
from bench.shapes.scenes import SKILLS


def _integer(value: str, column: str, where: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BenchError(f"{where}: {column} must be a whole number, found {value!r}. Fix or remove that line.") from None
    if number < 0:
        raise BenchError(f"{where}: {column} must not be negative, found {number}. Fix or remove that line.")
    return number


def read_shapes_prompts(path: str | Path) -> list[PromptRecord]:
    """Read a shapes prompt TSV (header id, prompt, skill, scene; no quoting) into records: id = the id column,
    metadata {skill, scene}. A malformed line (field count, empty prompt, unknown skill, a non-integer id or scene)
    raises BenchError naming the file and line."""
    path = Path(path)
    missing = (f"Shapes prompt file not found: {path}. Point dataset.path at a copy of {FILE_NAME}, or leave it "
               "unset to use the one shipped in bench/data/ (`python -m bench.shapes.prompts` writes it).")
    records: list[PromptRecord] = []
    for where, (id_, prompt, skill, scene) in tsv_rows(path, COLUMNS, missing=missing, what=FILE_NAME):
        if not prompt.strip():
            raise BenchError(f"{where}: empty prompt. Fix or remove that line.")
        if skill not in SKILLS:
            raise BenchError(f"{where}: unknown skill {skill!r}; the skills are {', '.join(SKILLS)}.")
        records.append(PromptRecord(
            index=len(records), prompt=prompt, id=_integer(id_, "id", where),
            metadata={"skill": skill, "scene": _integer(scene, "scene", where)}))
    if not records:
        raise BenchError(f"{path}: no prompts after the header.")
    return records


SHAPES = PromptList(FILE_NAME, read_shapes_prompts, skills=SKILLS)
