"""Prompt datasets: a small registry of named prompt lists, each read into `PromptRecord`s.

A dataset is a list of prompts with the dataset's own id and metadata. `limit` keeps the first N
records, so a subset is deterministic and every record keeps its index in the full list: a sample's
randomness is derived from (seed, index), so the same prompt gets the same image in any subset.

Registered datasets (their files ship in bench/data/; sources, licences and checksums in its README):
- partiprompts: PartiPrompts (P2), 1632 prompts with category and challenge labels.
- coco30k: the fixed COCO-30K zero-shot FID list, one caption for each of 30,000 val2014 images;
  or a list built from a user's captions_valXXXX.json (`coco_captions_from_json`).
- coco5k: the 5,000 val2014 captions MLPerf Inference's text-to-image benchmark uses.
- cc3m: the 15,840 rows of the Conceptual Captions (CC3M) validation split.
- shapes: 300 captions of the shapes world's test scenes, 50 per GenEval skill (bench/shapes/prompts.py), with
  skill and scene metadata; `skills` keeps only some skills' records, as `limit` keeps the first N.
Each is a `PromptList` (its shipped file and the reader of its format) defined beside its reader
(partiprompts.py, captions.py, shapes.py) and registered in DATASETS by name; adding a dataset is a reader, one registry
line and a conf/dataset/ preset. The reference images these lists are compared against live in
bench/data/references.py.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.registry import Registry
from bench.core.results import file_sha256


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a dataset: its position in the full list, the text, the dataset's id and metadata."""

    index: int
    prompt: str
    id: int | str
    # JSON-friendly values only (str, int, float, None): they are copied into manifest.jsonl rows.
    metadata: dict[str, Any] = field(default_factory=dict)


def packaged_data_path(filename: str) -> Path:
    """Path of a data file shipped inside the bench package (bench/data/)."""
    return Path(str(resources.files("bench") / "data" / filename))


def tsv_rows(path: Path, columns: tuple[str, ...], *, missing: str, what: str) -> Iterator[tuple[str, list[str]]]:
    """The rows of a tab-separated prompt file with header `columns` (no quoting), each as ("<path>:<line>", its
    fields), blank lines skipped. BenchError, naming the file and line, for a missing file (`missing` says what to
    do), another header, a row with another number of fields, or text that is not UTF-8 (`what` names the file
    expected, e.g. "the PartiPrompts TSV")."""
    if not path.is_file():
        raise BenchError(missing)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None or tuple(header) != columns:
                raise BenchError(f"{path}:1: expected the header {'<TAB>'.join(columns)}, found {header!r}. "
                                 f"Is this {what}?")
            for row in reader:
                if not row:  # a blank line, e.g. at the end of the file
                    continue
                where = f"{path}:{reader.line_num}"
                if len(row) != len(columns):
                    raise BenchError(f"{where}: expected {len(columns)} tab-separated fields ({', '.join(columns)}), "
                                     f"found {len(row)}. Fix or remove that line.")
                yield where, row
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err}). Is this {what}?") from err


@dataclass(frozen=True)
class PromptList:
    """A named prompt dataset: the caption list shipped in bench/data/ and the reader of its format (a path ->
    its records)."""

    file: str
    read: Callable[[Path], list[PromptRecord]]
    # How many records the list defines (the COCO lists); a list built from a captions JSON is cut to it.
    size: int | None = None
    # For a list that can also be built from a COCO captions JSON (coco30k): (path, n, seed) -> records, and the
    # rule it selects captions by, for the protocol.
    from_captions_json: Callable[..., list[PromptRecord]] | None = None
    json_selection: str | None = None
    # The skills its records are labelled with (metadata "skill"), which dataset.skills selects from; None = the
    # list has no skills (dataset.skills is refused for it).
    skills: tuple[str, ...] | None = None


# name (dataset.name) -> its PromptList, imported when first used.
DATASETS = Registry("dataset.name", {
    "partiprompts": "bench.data.partiprompts:PARTIPROMPTS",
    "coco30k": "bench.data.captions:COCO30K",
    "coco5k": "bench.data.captions:COCO5K",
    "cc3m": "bench.data.captions:CC3M",
    "shapes": "bench.data.shapes:SHAPES",
})
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def _known(name: str) -> None:
    if name not in DATASETS:
        raise BenchError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASET_NAMES)}; pick one with dataset=NAME."
        )


def dataset_file(name: str, path: str | Path | None = None) -> Path:
    """The caption list a dataset reads: `path` when given, else its file shipped in bench/data/."""
    _known(name)
    return Path(path) if path else packaged_data_path(DATASETS[name].file)


def _is_captions_json(path: str | Path | None) -> bool:
    return path is not None and str(path).lower().endswith(".json")


def check_skills(name: str, skills: Sequence[str] | None) -> list[str] | None:
    """The skills `dataset.skills` asks for, checked against the dataset's (None: every record). A dataset without
    skills, an empty list or an unknown skill raises BenchError naming dataset.skills and the skills there are."""
    if skills is None:
        return None
    _known(name)
    known = DATASETS[name].skills
    if known is None:
        with_skills = [n for n in DATASET_NAMES if DATASETS[n].skills is not None]
        raise BenchError(f"dataset.skills={list(skills)}: dataset {name!r} has no skills to select; only "
                         f"{', '.join(with_skills)} has. Use dataset={with_skills[0]}, or set dataset.skills=null.")
    skills = list(skills)
    unknown = [s for s in skills if s not in known]
    if not skills or unknown:
        what = f"has unknown skill(s) {', '.join(map(repr, unknown))}" if unknown else "is an empty list"
        raise BenchError(f"dataset.skills {what}. The skills of {name} are {', '.join(known)}; list some of them, "
                         "or set dataset.skills=null for all.")
    return list(dict.fromkeys(skills))


def load_dataset(
    name: str, limit: int | None = None, path: str | None = None, *, caption_seed: int = 0,
    skills: Sequence[str] | None = None,
) -> list[PromptRecord]:
    """Load the named dataset, keep the records of `skills` (all of them when None), then the first `limit` of
    those (all of them when limit is None). Every record keeps its index in the full list.

    `path` replaces the dataset's default file (same format). For coco30k it may also be a COCO
    captions_<split>.json: the list is then built by `coco_captions_from_json` with `caption_seed`,
    30,000 images (or `limit`, when smaller). `skills` names skills of a dataset that has them (shapes: metadata
    "skill"). Unknown names, a limit below 1, and skills a dataset does not have raise BenchError.
    """
    _known(name)
    if limit is not None and limit < 1:
        raise BenchError(f"dataset.limit must be at least 1, or null for the whole dataset; got {limit}.")
    selected = check_skills(name, skills)
    spec = DATASETS[name]
    if _is_captions_json(path):
        if spec.from_captions_json is None:
            raise BenchError(f"dataset.path={path} is a JSON file; only coco30k can be built from a COCO captions "
                             f"JSON. For {name}, point dataset.path at a copy of {spec.file}.")
        size = spec.size if limit is None else min(limit, spec.size)
        return spec.from_captions_json(path, n=size, seed=caption_seed)
    records = spec.read(dataset_file(name, path))
    if selected is not None:
        records = [r for r in records if r.metadata.get("skill") in selected]
        if not records:
            raise BenchError(f"dataset.skills={selected}: {dataset_file(name, path)} has no prompt of those skills.")
    return records if limit is None else records[:limit]


def caption_list_protocol(name: str, path: str | None = None, *, caption_seed: int = 0) -> dict[str, Any]:
    """What identifies a dataset's caption list in a protocol: file name, its sha256 (first 12 hex digits),
    and, for a list built from a COCO captions JSON, the selection rule and its seed."""
    file = dataset_file(name, path)
    protocol: dict[str, Any] = {"caption_list": file.name, "caption_list_sha256": file_sha256(file)[:12]}
    if _is_captions_json(path):
        protocol.update(caption_selection=DATASETS[name].json_selection, caption_seed=caption_seed)
    return protocol
