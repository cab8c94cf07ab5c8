"""PartiPrompts (P2, Yu et al. 2022): 1632 prompts with category and challenge labels, as a prompt dataset."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.core.errors import BenchError
from bench.data.prompts import PromptList, PromptRecord

PARTIPROMPTS_COLUMNS = ("Prompt", "Category", "Challenge", "Note")


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


PARTIPROMPTS = PromptList("PartiPrompts.tsv", read_partiprompts)
