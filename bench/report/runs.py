"""The runs a report is made of: finding run folders (a run, a multirun sweep, results.json files, globs), reading
each one's results.json and Hydra's record of its overrides, and giving each run a short label.

A folder without results.json (a run that failed or has not finished), a results.json that is not valid JSON or
has another schema_version are not fatal: the Run carries the reason (`error`) and the report lists it under
"Failed or incomplete runs". Only when nothing is usable is it an error (BenchError).

It also holds the names of what a run folder holds besides results.json that the report reads or writes: the
decoding-trajectory images (trajectory/<model>-<index>-step<NN>.png, `trajectory_file`, written by the default
job) and the report's own figures/ folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import BenchError
from bench.core.results import RESULTS_FILE, SCHEMA_VERSION
from bench.core.rundir import PENDING_DIR, RECORD_DIR

FIGURES_DIR = "figures"  # where a report puts its figures (in a run folder too, when written into one)
TRAJECTORY_DIR = "trajectory"
# trajectory_file's names: <index> is the prompt's dataset index (as in samples/.../manifest.jsonl), NN the 1-based step.
TRAJECTORY_RE = re.compile(r"^(?P<model>.+)-(?P<index>\d+)-step(?P<step>\d+)\.png$")

# Depth of run folders below a given folder: multirun/<date>/<time>/<n> is three levels below multirun/.
MAX_DEPTH = 4
SKIP_DIRS = {"samples", FIGURES_DIR, TRAJECTORY_DIR, RECORD_DIR, PENDING_DIR, "__pycache__", ".git"}


def trajectory_file(model: str, index: int, step: int) -> str:
    """The file name of one decoding step's image under a run's trajectory/ folder (step counts from 1)."""
    return f"{model}-{index:05d}-step{step:02d}.png"


@dataclass
class Run:
    """One run directory: its results.json when usable, else the reason it is not."""

    path: Path
    source: str  # the command-line argument (folder, sweep or glob) it was found through
    results: dict[str, Any] | None = None
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def ok(self) -> bool:
        """Whether results.json was read (schema_version 1)."""
        return self.results is not None

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """results.json's evaluations (empty for a failed run)."""
        return list((self.results or {}).get("evaluations") or [])

    @property
    def latency(self) -> list[dict[str, Any]]:
        """results.json's latency rows (empty for a failed run)."""
        return list((self.results or {}).get("latency") or [])

    @property
    def provenance(self) -> dict[str, Any]:
        """results.json's provenance (empty for a failed run)."""
        return dict((self.results or {}).get("provenance") or {})

    @property
    def config(self) -> dict[str, Any]:
        """results.json's resolved config (empty for a failed run)."""
        return dict((self.results or {}).get("config") or {})

    def device(self) -> str:
        """The device the run's numbers were taken on, as its provenance names it."""
        prov = self.provenance
        name, kind = prov.get("device_name"), prov.get("device")
        return f"{name} ({kind})" if name and kind and name != kind else str(name or kind or "unknown device")


def _natural_key(path: Path | str) -> list[Any]:
    # Sweep folders are 0, 1, ..., 10: sort 10 after 9.
    name = path.name if isinstance(path, Path) else path
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _is_run_dir(path: Path) -> bool:
    # Hydra's record is written when a job starts (into .hydra-pending until the job commits to the folder, see
    # bench/core/rundir.py), results.json when it ends: any of them marks a run folder.
    return (path / RESULTS_FILE).is_file() or (path / RECORD_DIR).is_dir() or (path / PENDING_DIR).is_dir()


def _find_run_dirs(path: Path) -> list[Path]:
    """Run folders at `path` or below it (up to MAX_DEPTH levels), in natural order."""
    if _is_run_dir(path):
        return [path]
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted((c for c in folder.iterdir() if c.is_dir() and c.name not in SKIP_DIRS), key=_natural_key)
        except OSError:
            return
        for child in children:
            if _is_run_dir(child):
                found.append(child)
            elif depth < MAX_DEPTH:
                walk(child, depth + 1)

    walk(path, 1)
    return found


def _hydra_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for the run (.hydra/overrides.yaml; for a run killed before it
    committed to the folder, .hydra-pending/overrides.yaml), if any."""
    path = next((p for p in (run_dir / d / "overrides.yaml" for d in (RECORD_DIR, PENDING_DIR)) if p.is_file()), None)
    if path is None:
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


def _log_hint(run_dir: Path) -> str:
    """The last error line of the run's Hydra log (or its last line), to say why a run has no results."""
    for log in sorted(run_dir.glob("*.log")):
        try:
            lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        except OSError:
            continue
        if not lines:
            continue
        errors = [line for line in lines if re.search(r"error|exception|traceback", line, re.IGNORECASE)]
        last = (errors or lines)[-1]
        return f"; last {'error' if errors else 'line'} in {log.name}: {last[:300]}"
    return ""


def read_run(run_dir: str | Path, source: str | None = None) -> Run:
    """Read one run folder's results.json; problems become the Run's `error`, never an exception."""
    run_dir = Path(run_dir)
    run = Run(path=run_dir, source=source if source is not None else str(run_dir), overrides=_hydra_overrides(run_dir))
    file = run_dir / RESULTS_FILE
    if not file.is_file():
        run.error = "no results.json: the run failed or has not finished" + _log_hint(run_dir)
        return run
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        run.error = (f"{file}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); muse-bench writes "
                     "results.json atomically, so the file was changed afterwards: re-run the experiment")
        return run
    except (OSError, UnicodeDecodeError) as err:
        run.error = f"{file} could not be read: {err}"
        return run
    if not isinstance(data, dict):
        run.error = f"{file}: a results.json holds a JSON object, this one holds a {type(data).__name__}"
        return run
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        written_by = ((data.get("provenance") or {}).get("packages") or {}).get("muse-bench")
        by = f" (written by muse-bench {written_by})" if written_by else ""
        if version is None:
            what = "has no schema_version (it predates versioned results or was not written by muse-bench)"
        else:
            what = f"has schema_version {version}{by}"
        fix = ("update muse-bench (git pull; pip install -e .) to read it, or report it with the muse-bench version "
               "that wrote it" if isinstance(version, int) and version > SCHEMA_VERSION
               else "re-run the experiment with this muse-bench to write it in the current schema")
        run.error = f"{file} {what}; this report reads schema_version {SCHEMA_VERSION}: {fix}"
        return run
    run.results = data
    run.overrides = [str(o) for o in data.get("overrides") or []] or run.overrides
    return run


def _expand(paths: Iterable[str | Path]) -> list[tuple[str, Path | None]]:
    out: list[tuple[str, Path | None]] = []
    for p in paths:
        text = os.path.expanduser(str(p))
        if re.search(r"[*?\[]", text):
            # A glob over a sweep also matches its files (multirun.yaml): keep folders and results.json files.
            matches = [Path(m) for m in glob.glob(text)]
            matches = sorted((m for m in matches if m.is_dir() or m.name == RESULTS_FILE),
                             key=lambda m: [_natural_key(part) for part in m.parts])
            out += [(str(p), m) for m in matches] or [(str(p), None)]
        else:
            out.append((str(p), Path(text)))
    return out


def label_runs(runs: list[Run]) -> None:
    """Short, distinct labels: the path below the runs' common folder; runs of one sweep (found through one
    argument, in one folder) add the overrides that differ between them, e.g. "3 (model.guidance_scale=8)"."""
    if len(runs) == 1:
        runs[0].label = runs[0].path.name or str(runs[0].path)
        return
    resolved = [r.path.resolve() for r in runs]
    try:
        common = Path(os.path.commonpath(resolved))
    except ValueError:  # different drives
        common = None
    # Siblings: runs found through one argument (a sweep folder or a glob) in one folder.
    siblings: dict[tuple[str, Path], list[int]] = {}
    for i, (run, path) in enumerate(zip(runs, resolved)):
        siblings.setdefault((run.source, path.parent), []).append(i)
    for run, path in zip(runs, resolved):
        run.label = str(path.relative_to(common)) if common is not None and path != common else path.name
    for members in siblings.values():
        if len(members) < 2:
            continue
        # hydra.* overrides (run dirs, launchers) differ between runs without changing any number.
        own = {i: [o for o in runs[i].overrides if not o.lstrip("+~").startswith("hydra.")] for i in members}
        shared = set.intersection(*(set(o) for o in own.values()))
        for i in members:
            differing = [o for o in own[i] if o not in shared]
            if differing:
                runs[i].label += f" ({', '.join(differing)})"


def nothing_usable(runs: Sequence[Run]) -> str:
    reasons = "; ".join(f"{r.path}: {r.error}" for r in runs[:5])
    more = f"; and {len(runs) - 5} more" if len(runs) > 5 else ""
    return (f"Nothing to report: none of the {len(runs)} run folder(s) given has a usable results.json ({reasons}{more}). "
            "Point the report at a folder muse-bench wrote (its hydra.run.dir, which holds results.json), at a "
            "multirun sweep folder (multirun/<date>/<time>), or at results.json files.")


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """The runs at `paths` (run folders, sweep folders, results.json files or globs), usable or not.

    Unusable ones (no results.json, invalid JSON, another schema_version, a missing path) are returned with
    their `error` and listed by the report; BenchError only when none is usable.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs: list[Run] = []
    seen: set[Path] = set()
    for source, path in _expand(paths):
        if path is None:
            runs.append(Run(Path(source), source, error="no file or folder matches this pattern"))
            continue
        if path.is_file() and path.name == RESULTS_FILE:
            path = path.parent
        if not path.exists():
            runs.append(Run(path, source, error="does not exist"))
            continue
        if path.is_file():
            runs.append(Run(path, source, error="is a file, not a run folder: give the folder that holds results.json"))
            continue
        dirs = _find_run_dirs(path)
        if not dirs:
            runs.append(Run(path, source, error=f"no results.json here or in the folders below it (up to {MAX_DEPTH} "
                                                "levels): not a muse-bench run folder or sweep"))
            continue
        for run_dir in dirs:
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(read_run(run_dir, source))
    if not runs:
        raise BenchError("No run folders given: name at least one folder muse-bench wrote (it holds results.json).")
    label_runs(runs)
    if not any(r.ok for r in runs):
        raise BenchError(nothing_usable(runs))
    return runs
