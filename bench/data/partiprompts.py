"""PartiPrompts (P2, Yu et al. 2022): 1632 prompts with category and challenge labels, as a prompt dataset."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError
from bench.data.prompts import PromptList, PromptRecord, tsv_rows

PARTIPROMPTS_COLUMNS = ("Prompt", "Category", "Challenge", "Note")


def read_partiprompts(path: str | Path) -> list[PromptRecord]:
    """Read a PartiPrompts TSV (header Prompt, Category, Challenge, Note) into records.

    The file is plain tab-separated text without CSV quoting (a prompt may start with a double
    quote), so it is read with csv.QUOTE_NONE. A line that does not have the four fields, or has an
    empty prompt, category or challenge, raises BenchError naming the file and line number. The id
    of a record is its 0-based row number: PartiPrompts has no ids of its own.
    """
    path = Path(path)
    missing = (f"PartiPrompts file not found: {path}. Point dataset.path at a PartiPrompts.tsv, or leave it "
               "unset to use the copy shipped in bench/data/.")
    records: list[PromptRecord] = []
    for where, row in tsv_rows(path, PARTIPROMPTS_COLUMNS, missing=missing, what="the PartiPrompts TSV"):
        prompt, category, challenge, note = row
        empty = [name for name, value in zip(PARTIPROMPTS_COLUMNS[:3], row[:3]) if not value.strip()]
        if empty:
            raise BenchError(f"{where}: empty {', '.join(empty)} field. Fix or remove that line.")
        index = len(records)
        records.append(PromptRecord(index=index, prompt=prompt, id=index,
                                    metadata={"category": category, "challenge": challenge, "note": note}))
    if not records:
        raise BenchError(f"{path}: no prompts after the header.")
    return records


PARTIPROMPTS = PromptList("PartiPrompts.tsv", read_partiprompts)
