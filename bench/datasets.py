"""Prompt datasets: a small registry of named prompt lists, each read into `PromptRecord`s.

A dataset is a list of prompts with the dataset's own id and metadata. `limit` keeps the first N
records, so a subset is deterministic and every record keeps its index in the full list: a sample's
randomness is derived from (seed, index), so the same prompt gets the same image in any subset.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bench.errors import BenchError


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a dataset: its position in the full list, the text, the dataset's id and metadata."""

    index: int
    prompt: str
    id: int | str
    metadata: dict[str, str] = field(default_factory=dict)


PARTIPROMPTS_COLUMNS = ("Prompt", "Category", "Challenge", "Note")


def packaged_data_path(filename: str) -> Path:
    """Path of a data file shipped inside the bench package (bench/data/)."""
    return Path(str(resources.files("bench") / "data" / filename))


def read_partiprompts(path: str | Path) -> list[PromptRecord]:
    """Read a PartiPrompts TSV (header Prompt, Category, Challenge, Note) into records.

    The file is plain tab-separated text without CSV quoting (a prompt may start with a double
    quote), so it is read with csv.QUOTE_NONE. A line that does not have the four fields, or has an
    empty prompt, category or challenge, raises BenchError naming the file and line number. The id
    of a record is its 0-based row number: PartiPrompts has no ids of its own.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(
            f"PartiPrompts file not found: {path}. Point dataset.path at a PartiPrompts.tsv, or leave it "
            "unset to use the copy shipped in bench/data/."
        )
    records: list[PromptRecord] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None or tuple(header) != PARTIPROMPTS_COLUMNS:
                raise BenchError(
                    f"{path}:1: expected the header {'<TAB>'.join(PARTIPROMPTS_COLUMNS)}, found "
                    f"{header!r}. Is this the PartiPrompts TSV?"
                )
            for row in reader:
                if not row:  # a blank line, e.g. at the end of the file
                    continue
                line = reader.line_num
                if len(row) != len(PARTIPROMPTS_COLUMNS):
                    raise BenchError(
                        f"{path}:{line}: expected {len(PARTIPROMPTS_COLUMNS)} tab-separated fields "
                        f"({', '.join(PARTIPROMPTS_COLUMNS)}), found {len(row)}. Fix or remove that line."
                    )
                prompt, category, challenge, note = row
                empty = [name for name, value in zip(PARTIPROMPTS_COLUMNS[:3], row[:3]) if not value.strip()]
                if empty:
                    raise BenchError(
                        f"{path}:{line}: empty {', '.join(empty)} field. Fix or remove that line."
                    )
                index = len(records)
                records.append(
                    PromptRecord(
                        index=index,
                        prompt=prompt,
                        id=index,
                        metadata={"category": category, "challenge": challenge, "note": note},
                    )
                )
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err}). Is this the PartiPrompts TSV?") from err
    if not records:
        raise BenchError(f"{path}: no prompts after the header.")
    return records


def _load_partiprompts(path: str | None) -> list[PromptRecord]:
    return read_partiprompts(path if path else packaged_data_path("PartiPrompts.tsv"))


# name -> loader(path or None). COCO-30K and CC3M join here when their issues land.
_DATASETS: dict[str, Callable[[str | None], list[PromptRecord]]] = {
    "partiprompts": _load_partiprompts,
}

DATASET_NAMES: tuple[str, ...] = tuple(_DATASETS)


def load_dataset(name: str, limit: int | None = None, path: str | None = None) -> list[PromptRecord]:
    """Load the named dataset and keep its first `limit` records (all of them when limit is None).

    `path` replaces the dataset's default file. Unknown names and a limit below 1 raise BenchError.
    """
    if name not in _DATASETS:
        raise BenchError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASET_NAMES)}; pick one with dataset=NAME."
        )
    if limit is not None and limit < 1:
        raise BenchError(f"dataset.limit must be at least 1, or null for the whole dataset; got {limit}.")
    records = _DATASETS[name](path)
    return records if limit is None else records[:limit]
