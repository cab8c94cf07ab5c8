"""Caption lists of COCO and CC3M as prompt datasets: the fixed COCO-30K zero-shot FID list, MLPerf's COCO 5K, the
CC3M validation split, and a COCO-30K list built from a user's captions_valXXXX.json."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from bench.core.errors import BenchError
from bench.data.prompts import PromptList, PromptRecord

COCO30K_FILE = "MS-COCO_val2014_30k_captions.csv"
COCO5K_FILE = "mlperf_coco2014_captions_source.tsv"
CC3M_FILE = "Validation_GCC-1.1.0-Validation.tsv"


def coco_file_name(image_id: int, split: str = "val2014") -> str:
    """The official file name of a COCO-2014 image: COCO_val2014_000000123456.jpg."""
    return f"COCO_{split}_{image_id:012d}.jpg"


def _table_rows(path: Path, what: str, *, delimiter: str, quoting: int) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, fields) of each non-blank row of a delimited text file.

    The line number is where the row starts, so a quoted caption spanning lines is reported at its
    first line. Undecodable bytes and csv errors become a BenchError naming file and line.
    """
    if not path.is_file():
        raise BenchError(
            f"{what} file not found: {path}. Point dataset.path at your copy, or leave it unset to use the "
            "copy shipped in bench/data/."
        )
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=True)
        previous_end = 0
        while True:
            start = previous_end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise BenchError(
                    f"{path}:{start}: not a valid {what} row ({err}). Fix or remove that line (a caption with a "
                    'double quote must be quoted, with the quote doubled: "a ""quoted"" word").'
                ) from err
            except UnicodeDecodeError as err:
                raise BenchError(f"{path}:{start}: not UTF-8 text ({err}). Is this the {what} file?") from err
            previous_end = reader.line_num
            if row:  # blank lines, e.g. at the end of the file, are not rows
                yield start, row


def _parse_image_id(path: Path, line: int, value: str) -> int:
    try:
        image_id = int(value)
    except ValueError:
        image_id = -1
    if image_id < 0:
        raise BenchError(f"{path}:{line}: image_id {value!r} is not a COCO image id (an integer). Fix that line.")
    return image_id


def _header(path: Path, rows: Iterator[tuple[int, list[str]]], required: tuple[str, ...], what: str) -> dict[str, int]:
    """Read the header row and map each column name to its position; every `required` name must be there."""
    first = next(rows, None)
    if first is None:
        raise BenchError(f"{path}: empty file. Is this the {what} file?")
    line, header = first
    missing = [name for name in required if name not in header]
    if missing:
        raise BenchError(
            f"{path}:{line}: the header lacks the column(s) {', '.join(missing)} (found {header!r}). "
            f"Is this the {what} file?"
        )
    return {name: header.index(name) for name in header}


def _check_fields(path: Path, line: int, row: list[str], columns: dict[str, int], caption: str) -> None:
    if len(row) != len(columns):
        raise BenchError(
            f"{path}:{line}: expected {len(columns)} fields ({', '.join(columns)}), found {len(row)}. "
            "Fix or remove that line."
        )
    if not row[columns[caption]].strip():
        raise BenchError(f"{path}:{line}: empty {caption}. Fix or remove that line.")


def read_coco30k(path: str | Path) -> list[PromptRecord]:
    """Read a COCO-30K caption list: a CSV with header image_id,text, one caption per val2014 image.

    Standard CSV quoting: a caption with a comma is quoted and some quoted captions span lines; they
    are kept whole and verbatim (trailing spaces and newlines included, as other users of this list
    pass them on). id = the COCO image id; metadata: image_id and the val2014 file_name.
    """
    path = Path(path)
    what = "COCO-30K caption list (image_id,text)"
    rows = _table_rows(path, what, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    columns = _header(path, rows, ("image_id", "text"), what)
    records: list[PromptRecord] = []
    for line, row in rows:
        _check_fields(path, line, row, columns, "text")
        image_id = _parse_image_id(path, line, row[columns["image_id"]])
        records.append(
            PromptRecord(
                index=len(records),
                prompt=row[columns["text"]],
                id=image_id,
                metadata={"image_id": image_id, "file_name": coco_file_name(image_id)},
            )
        )
    if not records:
        raise BenchError(f"{path}: no captions after the header.")
    return records


def read_mlperf_coco(path: str | Path) -> list[PromptRecord]:
    """Read MLPerf Inference's COCO-2014 caption list (captions_source.tsv).

    Tab-separated with header id, image_id, caption, height, width, file_name, coco_url; a caption
    with a double quote is CSV-quoted with the quote doubled (MLPerf reads it with pandas), so it is
    read with csv's standard quoting. id = the COCO image id; metadata: image_id, file_name and
    annotation_id (the caption's COCO annotation id, the `id` column).
    """
    path = Path(path)
    what = "MLPerf COCO-2014 caption list (captions_source.tsv)"
    rows = _table_rows(path, what, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
    columns = _header(path, rows, ("id", "image_id", "caption"), what)
    records: list[PromptRecord] = []
    for line, row in rows:
        _check_fields(path, line, row, columns, "caption")
        image_id = _parse_image_id(path, line, row[columns["image_id"]])
        file_name = row[columns["file_name"]] if "file_name" in columns else coco_file_name(image_id)
        records.append(
            PromptRecord(
                index=len(records),
                prompt=row[columns["caption"]],
                id=image_id,
                metadata={
                    "image_id": image_id,
                    "file_name": file_name,
                    "annotation_id": _parse_image_id(path, line, row[columns["id"]]),
                },
            )
        )
    if not records:
        raise BenchError(f"{path}: no captions after the header.")
    return records


CC3M_HEADER = ["caption", "url"]


def read_cc3m(path: str | Path) -> list[PromptRecord]:
    """Read a Conceptual Captions (CC3M) TSV: caption<TAB>url per line, no quoting, no header.

    A first line `caption<TAB>url` (the header img2dataset needs, see bench/data/download.py) is skipped.
    id = the 0-based row number among the caption rows (CC3M has no ids of its own); metadata: url.
    """
    path = Path(path)
    what = "CC3M caption list (caption<TAB>url)"
    records: list[PromptRecord] = []
    for line, row in _table_rows(path, what, delimiter="\t", quoting=csv.QUOTE_NONE):
        if line == 1 and row == CC3M_HEADER:
            continue
        if len(row) != 2:
            raise BenchError(
                f"{path}:{line}: expected 2 tab-separated fields (caption, url), found {len(row)}. "
                "Fix or remove that line."
            )
        caption, url = row
        if not caption.strip() or not url.strip():
            empty = "caption" if not caption.strip() else "url"
            raise BenchError(f"{path}:{line}: empty {empty}. Fix or remove that line.")
        index = len(records)
        records.append(PromptRecord(index=index, prompt=caption, id=index, metadata={"url": url}))
    if not records:
        raise BenchError(f"{path}: no caption rows.")
    return records


def _hash_order(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


COCO_JSON_SELECTION = (
    "one caption per image: images ordered by sha256('{seed}:{image_id}'), each image's caption = the "
    "annotation with the smallest sha256('{seed}:{image_id}:{annotation_id}'); the first N images kept"
)


def coco_captions_from_json(path: str | Path, *, n: int | None = None, seed: int = 0) -> list[PromptRecord]:
    """Pick one caption per image for `n` images (all when None) of a COCO captions_<split>.json.

    The rule (COCO_JSON_SELECTION) depends only on the seed and the COCO ids, not on Python's random
    module or on the order of the JSON: images are ordered by sha256("{seed}:{image_id}") and each one's
    caption is its annotation with the smallest sha256("{seed}:{image_id}:{annotation_id}"). So the
    first n records of a larger n are the records of a smaller n, and another seed gives another sample.
    Images without captions are skipped. Captions are kept verbatim. id = the image id; metadata:
    image_id, file_name (as the JSON names it) and annotation_id.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"COCO captions file not found: {path}. Point dataset.path at captions_val2014.json "
                         "(from annotations_trainval2014.zip; bench/data/download.py fetches it).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}:{err.lineno}: not valid JSON ({err.msg}). Is this a COCO captions_*.json?") from err
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err}). Is this a COCO captions_*.json?") from err
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise BenchError(f"{path}: no 'images' and 'annotations' lists. Is this a COCO captions_*.json?")
    try:
        file_names = {int(image["id"]): str(image["file_name"]) for image in data["images"]}
        captions: dict[int, list[tuple[int, str]]] = {}
        for ann in data["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"])))
    except (KeyError, TypeError, ValueError) as err:
        raise BenchError(f"{path}: an image or annotation lacks its id, file_name, image_id or caption ({err!r}). "
                         "Is this a COCO captions_*.json (not instances_ or person_keypoints_)?") from err
    usable = [image_id for image_id in file_names if captions.get(image_id)]
    usable.sort(key=lambda image_id: (_hash_order(seed, image_id), image_id))
    if n is not None:
        if n > len(usable):
            raise BenchError(f"{path} has captions for {len(usable)} images, fewer than the {n} asked for. "
                             f"Set dataset.limit to {len(usable)} or less, or use a larger split's captions file.")
        usable = usable[:n]
    records = []
    for index, image_id in enumerate(usable):
        annotation_id, caption = min(captions[image_id], key=lambda c: (_hash_order(seed, image_id, c[0]), c[0]))
        records.append(
            PromptRecord(
                index=index,
                prompt=caption,
                id=image_id,
                metadata={"image_id": image_id, "file_name": file_names[image_id], "annotation_id": annotation_id},
            )
        )
    return records


COCO30K = PromptList(COCO30K_FILE, read_coco30k, size=30_000, from_captions_json=coco_captions_from_json,
                     json_selection=COCO_JSON_SELECTION)
COCO5K = PromptList(COCO5K_FILE, read_mlperf_coco, size=5_000)
CC3M = PromptList(CC3M_FILE, read_cc3m)
