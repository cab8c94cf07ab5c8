"""The one results writer: results.json, per-sample manifests, atomic file writes.

results.json (schema_version 1) holds:
  schema_version, experiment, created (ISO 8601, UTC), overrides (the command-line overrides),
  provenance (bench.core.provenance), config (the resolved config),
  evaluations: [{model, dataset, weights, n_samples {requested, effective},
                 metrics {NAME: {value, higher_is_better, stderr, protocol}}, protocol {...},
                 generation_time {seconds_per_image, images, device, threads, batch_size, clock, ...} (generate
                 and sweep jobs: the generation run's own wall-clock, bench.jobs.generate.generation_time),
                 sweep {model, key, value, samples} (sweep job)}],
  latency: [rows as in latency.csv].
Every file is written to a temporary file in its destination folder and moved into place with
os.replace, so a reader never sees a half-written file, even if the run is killed. A kill (SIGKILL, a node
lost) between the two leaves the temporary behind: remove_stale_temporaries clears them when a run starts.
Files get the mode a plain open() gives (0666 less the umask), so colleagues can read a shared run folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
MANIFEST_FILE = "manifest.jsonl"


# Temporary names: ".<name>.<8 characters>.tmp", the alphabet and length tempfile.mkstemp uses, so that the
# leftovers of earlier versions (which used mkstemp) are recognised too.
_TEMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _open_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """Create and open a new temporary file for `name` in `folder`, exclusively (O_EXCL, as mkstemp does).

    Created with mode 0666 so the kernel applies the umask (and a default ACL of the folder) as for a plain
    open(); mkstemp's 0600 would hide results and samples from colleagues on a shared cluster.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{name}.{''.join(secrets.choice(_TEMP_ALPHABET) for _ in range(8))}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_atomic_temporary(name: str) -> bool:
    """Whether a file name is that of atomic_write_bytes's temporary files."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed atomic writes left under `folder` (recursively, not into hidden
    folders or through links); returns them.

    Only safe while nothing writes under `folder`: a run calls it on its main process before any process of
    the run starts writing (bench.cli), so no process's file in flight is taken for a leftover.
    """
    removed = []
    stack = [Path(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and is_atomic_temporary(entry.name):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return sorted(removed)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see atomic_write_bytes)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _dumps(obj: Any, **kwargs: Any) -> str:
    # allow_nan=False: NaN and Infinity are not JSON; a metric without a value is null.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented, strict JSON (no NaN), atomically."""
    return atomic_write_text(path, _dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""
    return atomic_write_text(path, "".join(_dumps(dict(row)) + "\n" for row in rows))


def csv_text(rows: Iterable[Mapping[str, Any]], fieldnames: Iterable[str] | None = None) -> str:
    """Rows as CSV text; columns are `fieldnames` (default: the first row's keys), missing values empty."""
    rows = list(rows)
    fieldnames = list(fieldnames if fieldnames is not None else (rows[0] if rows else []))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames, restval="", extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: Iterable[str] | None = None) -> Path:
    """Write rows as CSV (see csv_text), atomically."""
    return atomic_write_text(path, csv_text(rows, fieldnames))


_sha256_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; remembered per (path, size, mtime), since weights files of
    ~100 MB are checked more than once per run."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _sha256_memo:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _sha256_memo[memo] = digest.hexdigest()
    return _sha256_memo[memo]


def read_json(path: str | Path) -> Any:
    """Read a JSON file such as results.json."""
    with Path(path).open(encoding="utf-8") as handle:
        return json.load(handle)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file such as manifest.jsonl."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class MetricEntry:
    """One entry of an evaluation's `metrics` in results.json: every metric builds its entries as these.

    `value` is None for a metric that was not computed (then `protocol["skipped"]` says why); `stderr` is None
    where no standard error was computed; `protocol` records every choice that moves the value.
    """

    value: float | None
    higher_is_better: bool
    stderr: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def skipped(cls, reason: str, higher_is_better: bool) -> MetricEntry:
        """An entry with no value, saying why the metric was not computed."""
        return cls(None, higher_is_better, None, {"skipped": reason})

    def as_dict(self) -> dict[str, Any]:
        """The results.json form: {value, higher_is_better, stderr, protocol}, in that order."""
        return {"value": self.value, "higher_is_better": self.higher_is_better, "stderr": self.stderr,
                "protocol": self.protocol}


def evaluation(
    *,
    model: str,
    dataset: str,
    weights: str,
    requested: int,
    effective: int,
    protocol: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry of results.json's `evaluations`: a model on a dataset under one protocol.

    `requested` is the number of samples the config asked for, `effective` the number actually
    evaluated (fewer when the dataset is smaller than the limit).
    """
    if weights not in ("random", "pretrained", "trained"):
        raise ValueError(f"weights must be 'random', 'pretrained' or 'trained' (a world trained here), got {weights!r}")
    return {
        "model": model,
        "dataset": dataset,
        "weights": weights,
        "n_samples": {"requested": requested, "effective": effective},
        "metrics": dict(metrics or {}),
        "protocol": dict(protocol),
    }


def build_results(
    *,
    experiment: str,
    config: Mapping[str, Any],
    provenance: Mapping[str, Any],
    evaluations: list[dict[str, Any]],
    latency: list[dict[str, Any]] | None = None,
    overrides: list[str] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """Assemble the results.json document (schema_version 1)."""
    created = created or datetime.now(timezone.utc)
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "created": created.isoformat(timespec="seconds"),
        "overrides": list(overrides or []),
        "provenance": dict(provenance),
        "config": dict(config),
        "evaluations": list(evaluations),
        "latency": list(latency or []),
    }


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Write results.json into the run directory, atomically; returns its path."""
    return write_json(Path(run_dir) / RESULTS_FILE, results)
