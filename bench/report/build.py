"""The report: report.md and figures/*.png built from one or several run directories.

    python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR

A RUN_DIR is a folder `muse-bench` wrote (it holds results.json), a multirun sweep folder (multirun/<date>/
<time>, whose numbered subfolders are runs), a results.json file, or a glob of any of these. A folder without
results.json (a run that failed or has not finished), a results.json that is not valid JSON or has another
schema_version are not fatal: they are listed under "Failed or incomplete runs" with the reason, and the
report is built from the rest. Only when nothing is usable is it an error (BenchError).

report.md has a section for each kind of data the runs hold, and only those: the paper's Tables 1-3 with the
measured rows beside them (reports/paper_reference.csv), quality metrics, FID against CLIP over a guidance
sweep (the paper's Figure 8), PartiPrompts breakdowns and win rates, latency by stage and throughput, sample
grids and decoding-trajectory strips. Every table is followed by a "Protocol:" note with what moves its
numbers (data, sample counts, feature extractors, resizing, seeds, weights, profile, device), and rows that
come from random weights, test-size models or scaled profiles say "not a paper number". Figures come from
bench/report/figures.py. The report holds no time of its own: the same runs give the same report.md.

Decoding trajectories: a run may hold trajectory/<model>-<index>-step<NN>.png (trajectory_file), one
decoded, partially unmasked image per step (still-masked tokens grey), where <index> is the prompt's
dataset index (as in samples/.../manifest.jsonl) and NN the 1-based step; the report lays them out as strips.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.paths import REPO_ROOT
from bench.core.results import (
    MANIFEST_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    atomic_write_text,
)
from bench.core.rundir import PENDING_DIR, RECORD_DIR
from bench.metrics.published import NO_PUBLISHED

# reports/ sits at the repository root beside bench/, as conf/ does: muse-bench runs from its checkout.
REFERENCE_CSV = REPO_ROOT / "reports" / "paper_reference.csv"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
TRAJECTORY_DIR = "trajectory"
TRAJECTORY_RE = re.compile(r"^(?P<model>.+)-(?P<index>\d+)-step(?P<step>\d+)\.png$")
# Prefixes of the figures this module writes: an earlier report's figure that is not made again is removed.
FIGURE_PREFIXES = ("latency-", "throughput-", "fid-clip-", "parti-", "win-rate-", "grid-", "trajectory-")

# Depth of run folders below a given folder: multirun/<date>/<time>/<n> is three levels below multirun/.
MAX_DEPTH = 4
SKIP_DIRS = {"samples", FIGURES_DIR, TRAJECTORY_DIR, RECORD_DIR, PENDING_DIR, "__pycache__", ".git"}
MAX_GRIDS = 6
GRID_IMAGES = 8
MAX_STRIPS = 6

QUALITY_DATASETS = {"muse-table1": ("cc3m",), "muse-table2": ("coco30k", "coco5k")}
METRIC_ORDER = ("fid", "kid", "clip_score", "clip_score_x100", "cmmd", "win_rate", "loss_rate", "win_ratio")
METRIC_NAMES = {"fid": "FID", "kid": "KID", "clip_score": "CLIP (cosine)", "clip_score_x100": "CLIP x100",
                "cmmd": "CMMD", "win_rate": "win rate", "loss_rate": "loss rate", "win_ratio": "win ratio"}
STAGE_ORDER = ("text_encoder", "base", "superres", "decoder", "denoiser", "autoregressive", "pipeline")
OTHER_STAGE = "other (outside the timed stages)"
NOT_PAPER = "not a paper number"


# ---- loading runs ------------------------------------------------------------------------------------


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
    import yaml

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
    import glob

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


def _label_runs(runs: list[Run]) -> None:
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


def _nothing_usable(runs: Sequence[Run]) -> str:
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
    _label_runs(runs)
    if not any(r.ok for r in runs):
        raise BenchError(_nothing_usable(runs))
    return runs


# ---- formatting --------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)


def _metric_cell(metric: Mapping[str, Any] | None) -> str:
    if not metric:
        return "—"
    if metric.get("value") is None:
        return "skipped" if (metric.get("protocol") or {}).get("skipped") else "—"
    return _num(metric["value"]) + (f" ± {_err(metric.get('stderr'))}" if metric.get("stderr") is not None else "")


def _err(value: Any) -> str:
    """A standard error to two significant digits, trailing zeros kept (1.0, 0.020)."""
    if value is None:
        return "—"
    text = f"{float(value):#.2g}"
    return text.rstrip(".") if "e" not in text else text


def _params(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _notes(rows: Sequence[tuple[str, Mapping[str, str]]], *, intro: str = "") -> str:
    """The "Protocol:" note under a table: facets every row shares once, then each row's own facets.

    `rows` are (row label, {facet: text}); a facet with the same text in every row is said once.
    """
    if not rows:
        return f"**Protocol:** {intro}".rstrip()
    keys = list(dict.fromkeys(k for _, facets in rows for k in facets))
    shared = {k: rows[0][1][k] for k in keys if all(f.get(k) == rows[0][1].get(k) for _, f in rows)}
    if len(rows) == 1:
        shared = dict(rows[0][1])
    lines = ["**Protocol:** " + " ".join(p for p in (intro, "; ".join(f"{k}: {v}" for k, v in shared.items())) if p)]
    if len(rows) > 1:
        for label, facets in rows:
            own = {k: v for k, v in facets.items() if k not in shared}
            if own:
                lines.append(f"- {label}: " + "; ".join(f"{k}: {v}" for k, v in own.items()))
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.")[:80] or "x"


class _Figures:
    """Unique figure paths under out_dir/figures and their Markdown links."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.dir = out_dir / FIGURES_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def path(self, name: str) -> Path:
        stem = _slug(name)
        candidate, i = stem, 2
        while any(p.stem == candidate for p in self.written):
            candidate, i = f"{stem}-{i}", i + 1
        path = self.dir / f"{candidate}.png"
        self.written.append(path)
        return path

    def link(self, path: Path, alt: str) -> str:
        return f"![{_cell(alt)}]({path.relative_to(self.out_dir).as_posix()})"

    def remove_stale(self) -> None:
        """Remove figures an earlier report wrote here that this one did not write again."""
        keep = {p.name for p in self.written}
        for old in self.dir.glob("*.png"):
            if old.name not in keep and old.name.startswith(FIGURE_PREFIXES):
                old.unlink()


# ---- protocol facets ---------------------------------------------------------------------------------


def _legacy_t(protocol: Mapping[str, Any]) -> bool:
    """Whether a protocol's `guidance` is Muse's t: runs recorded before guidance became the CFG scale g for
    every family (no guidance_convention) stored t for Muse and aMUSEd, and g for Stable Diffusion (denoiser)."""
    sampler = protocol.get("sampler")
    return "guidance_convention" not in protocol and not (isinstance(sampler, Mapping) and "denoiser" in sampler)


def _guidance(ev: Mapping[str, Any]) -> Any:
    """The evaluation's classifier-free guidance scale g (g = 1 + t), whichever convention its run recorded."""
    protocol = ev.get("protocol") or {}
    value = protocol.get("guidance")
    return float(value) + 1.0 if value is not None and _legacy_t(protocol) else value


def _guidance_text(protocol: Mapping[str, Any]) -> str:
    g = _guidance({"protocol": protocol})
    if g is None:
        return "none recorded"
    if _legacy_t(protocol):
        return f"g={_num(g)} (the run recorded Muse's t={_num(protocol.get('guidance'))}; g = 1 + t)"
    t = protocol.get("guidance_t")
    return f"g={_num(g)}" + (f", Muse's t={_num(t)}" if t is not None else "") + \
        (f" ({protocol['guidance_convention']})" if protocol.get("guidance_convention") else "")


def _sampler_text(protocol: Mapping[str, Any]) -> str:
    sampler = protocol.get("sampler") or {}
    if not isinstance(sampler, Mapping) or not sampler:
        return f"steps={protocol.get('steps')}, guidance g={_num(_guidance({'protocol': protocol}))}"
    # An older run's per-stage guidance_scale held t (see _legacy_t): show it under the name it meant.
    rename = {"guidance_scale": "guidance_t"} if _legacy_t(protocol) else {}
    return " / ".join(f"{stage}: " + ", ".join(f"{rename.get(k, k)}={v}" for k, v in (s or {}).items())
                      for stage, s in sampler.items() if isinstance(s, Mapping))


def _metric_facets(name: str, metric: Mapping[str, Any]) -> dict[str, str]:
    """The choices behind one metric that move its number, from its recorded protocol, and what it is compared
    with (its comparable_to_published record)."""
    p = metric.get("protocol") or {}
    title = METRIC_NAMES.get(name, name)
    if metric.get("value") is None and p.get("skipped"):
        return {f"{title}": "skipped (why: under Not computed)"}
    facets = _choice_facets(name, title, p)
    record = p.get("comparable_to_published")
    if record and record.get("published"):
        verdict = "matches" if record.get("value") else "differs: " + "; ".join(record.get("reasons") or [])
        unknown = record.get("unknown") or []
        facets[f"{title} vs published"] = (f"{record['published']}: protocol {verdict}"
                                           + (f" (not stated there: {'; '.join(unknown)})" if unknown else ""))
    return facets


def _choice_facets(name: str, title: str, p: Mapping[str, Any]) -> dict[str, str]:
    ref = p.get("reference") or {}
    ref_text = (f"reference set {ref.get('dataset')} ({ref.get('source')}, {ref.get('reference_set')}, "
                f"{ref.get('count')} images)") if ref else None
    stats = p.get("reference_stats") or {}
    unreachable = (f"{stats['unreachable']} of {stats.get('expected')} reference images unreachable"
                   if stats.get("unreachable") else None)
    below = f"**below the minimum of {p.get('min_samples')} samples: {NOT_PAPER}**" if p.get("below_minimum") else None
    cache = p.get("reference_cache") or {}
    cache_text = (f"reference features {'read from the cache' if cache.get('hit') else 'computed'} (key "
                  f"{str(cache.get('key'))[:12]})") if cache else None
    smaller = p.get("reference_smaller_than_resolution") or {}
    smaller_text = (f"**{smaller['count']} of {smaller.get('of')} references smaller than {smaller.get('resolution')} "
                    "px, upsampled**") if smaller.get("count") else None
    ref_text = ", ".join(x for x in (ref_text, cache_text, smaller_text) if x) or None
    if name in ("fid", "kid"):
        parts = [f"mode {p.get('mode')}", f"extractor {p.get('feature_extractor')}"]
        gen = p.get("generated_resize") or {}
        if gen:
            size = gen.get("size") or ["?", "?"]
            parts.append(f"samples resized {gen.get('library')} {gen.get('filter')} to {size[0]}x{size[-1]}"
                         + (" (quantised)" if gen.get("quantize") else ""))
        ref_resize = p.get("reference_resize") or {}
        if ref_resize:
            size = ref_resize.get("size") or ["?", "?"]
            parts.append(f"references {ref_resize.get('crop')}-cropped, {ref_resize.get('resize')} to {size[0]}x{size[-1]}")
        parts += [ref_text, unreachable]
        if p.get("n_reference") is not None:
            parts.append(f"{p['n_reference']} reference / {p.get('n_generated')} generated")
        if name == "kid":
            parts.append(f"{p.get('num_subsets')} subsets of {p.get('subset_size')}, {p.get('kernel')} kernel, "
                         f"scale {p.get('scale')}")
        parts += [f"stderr {p['stderr']}" if p.get("stderr") else None, below]
        return {title: ", ".join(str(x) for x in parts if x)}
    if name.startswith("clip_score") or name == "cmmd":
        pre = p.get("image_preprocess") or {}
        size = pre.get("size")
        model = ", ".join(x for x in (
            f"{p.get('backend')} {p.get('arch')} ({p.get('pretrained')})",
            f"images {size[0]}x{size[-1]} {pre.get('interpolation')}"
            + (f" ({pre['resize_mode']})" if pre.get("resize_mode") else "") if size else None,
            f"text context {p.get('context_length')}" if p.get("context_length") else None,
            f"{p.get('precision')}" if p.get("precision") else None) if x)
        if name == "cmmd":
            bias = p.get("small_sample_bias") or {}
            bias_text = (f"small-sample bias about {bias['estimate']:.3g}"
                         + ("" if bias.get("negligible") else " (**not negligible against the value**)")
                         if bias.get("estimate") is not None else None)
            parts = [model, f"{p.get('kernel')}, sigma {p.get('sigma')}, scale {p.get('scale')}", p.get("estimator"),
                     bias_text, ref_text, unreachable, below]
            return {title: ", ".join(str(x) for x in parts if x)}
        # clip_score and clip_score_x100 share the CLIP model; only their scale differs.
        parts = [f"{p.get('n_truncated')} prompts truncated" if p.get("n_truncated") else None,
                 f"stderr {p.get('stderr_method')}" if p.get("stderr_method") else None]
        return {"CLIP model": model, f"{title} scale": str(p.get("scale")) + "".join(f", {x}" for x in parts if x)}
    if name in ("win_rate", "loss_rate", "win_ratio"):
        judge = p.get("judge") or {}
        parts = [f"{p.get('model_a')} vs {p.get('model_b')}",
                 f"{p['n_prompts']} prompts" if p.get("n_prompts") is not None else None,
                 f"best of K={p['K']}" + (f" by {p['best_of_k']}" if p.get("best_of_k") else "") if p.get("K") else None,
                 f"judge {judge.get('name')}" + (f" (margin {p['margin']})" if p.get("margin") is not None else "")
                 + (f": {judge['note']}" if judge.get("note") else "")]
        return {"win rate": ", ".join(x for x in parts if x)}
    return {title: ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (dict, list)))}


def _eval_caveats(run: Run, ev: Mapping[str, Any], metrics: Iterable[str] | None = None) -> list[str]:
    """Why an evaluation's numbers are not comparable with published ones, as each computed metric's protocol
    records it (comparable_to_published, bench/metrics/published.py): each reason once, with the metrics it concerns.
    Empty when every metric (of `metrics`, default all) matches its published protocol."""
    by_reason: dict[str, list[str]] = {}
    for name, metric in (ev.get("metrics") or {}).items():
        if (metrics is not None and name not in metrics) or metric.get("value") is None:
            continue
        record = (metric.get("protocol") or {}).get("comparable_to_published")
        reasons = ["comparability not recorded (results of an older muse-bench)"] if record is None else \
            ([] if record.get("value") else record.get("reasons") or ["not comparable"])
        # Where nothing is published there is no paper number to mistake this one for: not a caveat by itself.
        for reason in (r for r in reasons if r != NO_PUBLISHED):
            by_reason.setdefault(str(reason), []).append(METRIC_NAMES.get(name, name))
    return [f"{reason} ({', '.join(names)})" for reason, names in by_reason.items()]


def _matches(ev: Mapping[str, Any], metrics: Iterable[str]) -> str:
    """"protocol matches ..." for the metrics of `metrics` whose protocol records a match with a published one."""
    figures = [((ev.get("metrics") or {}).get(n, {}).get("protocol") or {}).get("comparable_to_published") or {}
               for n in metrics]
    shown = list(dict.fromkeys(f["published"] for f in figures if f.get("value") and f.get("published")))
    return ("protocol matches: " + "; ".join(shown)) if shown else ""


def _flag(caveats: Sequence[str]) -> str:
    return f"**{NOT_PAPER}**: " + ", ".join(caveats) if caveats else ""


def _resized_text(protocol: Mapping[str, Any]) -> str:
    """How samples made at another (the model's native) resolution were brought to the evaluated one; "" if not."""
    made_at, resized = protocol.get("generated_at"), protocol.get("resized_with")
    if not made_at or not isinstance(resized, Mapping):
        return ""
    return f" (made at {made_at}x{made_at}, resized with {resized.get('library')} {resized.get('filter')})"


def _eval_facets(run: Run, ev: Mapping[str, Any], metrics: Iterable[str] | None = None) -> dict[str, str]:
    protocol = ev.get("protocol") or {}
    n = ev.get("n_samples") or {}
    limit = (run.config.get("dataset") or {}).get("limit")
    facets = {
        "data": f"{ev.get('dataset')}, {n.get('effective')} samples evaluated of {n.get('requested')} requested"
                + (f" (dataset.limit={limit})" if limit is not None else ""),
        "samples": f"{protocol.get('resolution')}x{protocol.get('resolution')} px{_resized_text(protocol)}, "
                   f"seed {protocol.get('seed')}, {protocol.get('samples_per_prompt', 1)} per prompt",
        "guidance": _guidance_text(protocol),
        "sampler": _sampler_text(protocol),
        "weights": ("random (" + NOT_PAPER + ")") if ev.get("weights") == "random" else str(ev.get("weights")),
    }
    for name, metric in (ev.get("metrics") or {}).items():
        if metrics is None or name in metrics:
            facets.update(_metric_facets(name, metric))
    if ev.get("excluded"):
        facets["excluded"] = f"{len(ev['excluded'])} unreadable samples left out"
    prov = run.provenance
    commit = str(prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
    facets["device"] = f"{run.device()}, torch {prov.get('torch', '?')}, git {commit}"
    return facets


def _latency_caveats(row: Mapping[str, Any]) -> list[str]:
    out = []
    if row.get("profile") == "scaled":
        out.append("scaled profile (for settings of one model, not for comparing models)")
    elif row.get("profile") == "tiny":
        out.append("tiny profile")
    if "proxy" in str(row.get("model", "")):
        out.append("labelled proxy")
    if str(row.get("protocol", "")).startswith("per_stage"):
        out.append("sum of per-stage forwards")
    if row.get("device") == "cpu" and row.get("profile") == "full":
        out.append("timed on a CPU")
    return out


PROFILE_TEXT = {
    "full": "full (the published shapes)",
    "scaled": f"scaled: every width / 16, same layers, tokens and steps; compares settings of one model (batch size, "
              f"steps, compile), not models, whose costs it changes by different factors ({NOT_PAPER})",
    "tiny": f"tiny: a test-size model ({NOT_PAPER})",
}


def _latency_facets(run: Run, row: Mapping[str, Any]) -> dict[str, str]:
    weights = row.get("weights")
    return {
        "device": f"{row.get('device')} ({row.get('dtype')}{', compiled' if row.get('compiled') else ''})",
        "profile": PROFILE_TEXT.get(str(row.get("profile")), str(row.get("profile"))),
        "weights": f"{weights}" + (" (times do not depend on weight values)" if weights == "random" else ""),
        "steps": str(row.get("steps")),
        "timing": str(row.get("protocol")),
        "git": str(run.provenance.get("git_commit") or "?")[:10],
    }


# ---- the published tables ----------------------------------------------------------------------------


def read_reference(path: str | Path = REFERENCE_CSV) -> list[dict[str, str]]:
    """The published figures of reports/paper_reference.csv, one dict per row (see reports/README.md)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"The published figures are missing: {path} does not exist. It ships with the repository "
                         "(reports/paper_reference.csv): restore it with git checkout, or run from a full checkout.")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        try:
            float(row["value"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{path}, line {line}: value {row.get('value')!r} is not a number; every row needs a "
                             "numeric value column (see reports/README.md).") from None
    return rows


def _ref_value(row: Mapping[str, str]) -> str:
    high = row.get("value_high")
    return f"{row['value']}–{high}" if high else row["value"]


def _quality_table(table: str, title: str, reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    datasets = QUALITY_DATASETS[table]
    measured = [(run, ev) for run in runs for ev in run.evaluations
                if ev.get("dataset") in datasets and ({"fid", "clip_score"} & set(ev.get("metrics") or {}))]
    if not measured:
        return None
    shown = {table}
    if table == "muse-table2":
        # Context for COCO: the third-party SD v1.4 FID-30K, and MLPerf's accepted window when 5K was measured.
        shown.add("sd-third-party")
        if any(ev.get("dataset") == "coco5k" for _, ev in measured):
            shown.add("mlperf-t2i")
    published: dict[str, dict[str, Any]] = {}
    for row in reference:
        if row["table"] in shown:
            entry = published.setdefault(row["model"], {"params": row["params"], "source": row["source"],
                                                        "notes": row["notes"], "res": row["resolution"]})
            entry[row["metric"]] = _ref_value(row) + (" (x100)" if row["metric"] == "clip_score_x100" else "")
    rows = [[name, e["params"] or "—", e.get("fid", "—"), e.get("clip_score", e.get("clip_score_x100", "—")), "—",
             e["res"] or "—", e["source"], e["notes"]] for name, e in published.items()]
    notes = []
    shown_metrics = ("fid", "clip_score", "clip_score_x100")
    for run, ev in measured:
        metrics = ev.get("metrics") or {}
        n = ev.get("n_samples") or {}
        label = f"**measured**: {ev.get('model')} ({run.label})"
        rows.append([label, "—", _metric_cell(metrics.get("fid")), _metric_cell(metrics.get("clip_score")),
                     n.get("effective"), (ev.get("protocol") or {}).get("resolution"), f"this report ({ev.get('dataset')})",
                     _flag(_eval_caveats(run, ev, shown_metrics)) or _matches(ev, shown_metrics)])
        notes.append((f"{ev.get('model')} ({run.label})", _eval_facets(run, ev, {"fid", "clip_score"})))
    header = ["Model", "Params", "FID", "CLIP (cosine)", "n", "Resolution", "Source", "Note"]
    intro = ("Published rows as printed in their sources (reports/paper_reference.csv); the paper's CLIP backbone "
             "is not stated. A measured row's Note says whether its protocol matches the published one, as its "
             "metrics' comparable_to_published records (`eval=paper` selects the published protocols). Measured rows:")
    return f"### {title}\n\n{_table(header, rows)}\n\n{_notes(notes, intro=intro)}"


def _totals(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("stage") == "total" and r.get("status", "ok") == "ok" and r.get("median_s") is not None]


def _table3(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    published = [r for r in reference if r["table"] == "muse-table3"]
    measured: dict[tuple[str, int], list[tuple[Run, Mapping[str, Any]]]] = {}
    for run in runs:
        if run.results and run.results.get("paper_table3"):
            for entry in run.results["paper_table3"]:
                if entry.get("measured_s") is not None:
                    row = next((r for r in _totals(run.latency) if r.get("model") == entry.get("ours")
                                and r.get("resolution") == entry.get("resolution") and r.get("batch_size") == 1), None)
                    row = row or {"model": entry.get("ours"), "resolution": entry.get("resolution"), "batch_size": 1,
                                  "median_s": entry["measured_s"], "device": entry.get("measured_on"),
                                  "profile": entry.get("measured_profile"), "weights": entry.get("measured_weights"),
                                  "protocol": entry.get("measured_protocol")}
                    measured.setdefault((str(entry.get("ours")), int(entry["resolution"])), []).append((run, row))
        else:
            for row in _totals(run.latency):
                if row.get("batch_size") == 1:
                    measured.setdefault((str(row.get("model")), int(row.get("resolution"))), []).append((run, row))
    if not measured:
        return None
    rows, notes, matched = [], [], set()
    for ref in published:
        key = (ref["ours"], int(ref["resolution"]))
        hits = measured.get(key, []) if ref["ours"] else []
        matched.add(key)
        if not hits:
            rows.append([ref["model"], ref["resolution"], ref["value"], ref["hardware"], ref["ours"] or "—",
                         "—", "—", "—", ref["notes"]])
        for run, row in hits:
            rows.append([ref["model"], ref["resolution"], ref["value"], ref["hardware"], ref["ours"],
                         _num(row.get("median_s")), row.get("device"), run.label,
                         _flag(_latency_caveats(row)) or ref["notes"]])
    for key, hits in measured.items():
        if key in matched:
            continue
        for run, row in hits:
            rows.append(["— (not in the paper)", key[1], "—", "—", key[0], _num(row.get("median_s")), row.get("device"),
                         run.label, _flag(_latency_caveats(row))])
    for hits in measured.values():
        for run, row in hits:
            notes.append((f"{row.get('model')} {row.get('resolution')} px ({run.label})", _latency_facets(run, row)))
    header = ["Paper model", "Resolution", "Published (s)", "Published on", "Ours", "Measured (s)", "Measured on", "Run",
              "Note"]
    intro = ("Published: per-batch inference time, batch size not stated (Muse paper, Table 3). Measured: median "
             "end-to-end time of one batch of 1 image.")
    parts = [f"### Table 3: inference time\n\n{_table(header, rows)}\n\n{_notes(notes, intro=intro)}"]
    amused = _amused_latency(reference, runs)
    if amused:
        parts.append(amused)
    return "\n\n".join(parts)


def _amused_latency(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    rows, notes = [], []
    for ref in (r for r in reference if r["table"] == "amused-latency"):
        for run in runs:
            for row in _totals(run.latency):
                if (row.get("model") == ref["ours"] and row.get("resolution") == int(ref["resolution"])
                        and row.get("batch_size") == int(ref["batch_size"])):
                    rows.append([ref["model"], ref["resolution"], ref["batch_size"], _ref_value(ref), ref["hardware"],
                                 ref["ours"], _num(1000 * row["median_s"]), row.get("device"), run.label,
                                 _flag(_latency_caveats(row))])
                    notes.append((f"{row.get('model')} {row.get('resolution')} px batch {row.get('batch_size')} "
                                  f"({run.label})", _latency_facets(run, row)))
    if not rows:
        return None
    header = ["Published model", "Resolution", "Batch", "Published (ms)", "Published on", "Ours", "Measured (ms)",
              "Measured on", "Run", "Note"]
    intro = "Published: aMUSEd paper (arXiv 2401.01808), median, 12 steps, random weights. Measured: median end-to-end."
    return f"### aMUSEd's published latency\n\n{_table(header, rows)}\n\n{_notes(notes, intro=intro)}"


def _amused_quality(reference: list[dict[str, str]], runs: list[Run]) -> str | None:
    """aMUSEd's published sweep optima (amused-quality rows) beside measured rows of the same model, resolution
    and metric, and only at the guidance scale g the published figure was taken at; the others are named with why
    they are not beside it."""
    published = [r for r in reference if r["table"] == "amused-quality"]
    rows, notes, apart = [], [], []
    for ref in published:
        wanted = float(ref["guidance"]) if ref.get("guidance") else None
        for run in runs:
            for ev in run.evaluations:
                metric = (ev.get("metrics") or {}).get(ref["metric"]) or {}
                protocol = ev.get("protocol") or {}
                if (ev.get("model") != ref["ours"] or metric.get("value") is None
                        or str(protocol.get("resolution")) != ref["resolution"]):
                    continue
                g = _guidance(ev)
                name = f"{ev.get('model')} {METRIC_NAMES.get(ref['metric'], ref['metric'])} ({run.label})"
                if wanted is not None and (g is None or not math.isclose(float(g), wanted)):
                    apart.append(f"{name} was measured at guidance g={_num(g)}, the published {ref['value']} at "
                                 f"g={_num(wanted)} (model.guidance_scale={_num(wanted)} measures it there)")
                    continue
                rows.append([ref["model"], METRIC_NAMES.get(ref["metric"], ref["metric"]), _ref_value(ref),
                             _num(wanted) if wanted is not None else "—", _metric_cell(metric), _num(g),
                             (ev.get("n_samples") or {}).get("effective"), run.label, _flag(_eval_caveats(run, ev))])
                notes.append((name, _eval_facets(run, ev, {ref["metric"]})))
    if not rows and not apart:
        return None
    parts = ["### aMUSEd's published quality\n\nThe best FID and CLIP of aMUSEd-256's guidance sweep (arXiv "
             "2401.01808; 10k images, dataset not stated), each taken at its own guidance scale g (aMUSEd's CFG scale, "
             "the one this suite uses); a measured row stands beside one only at the same g."]
    if rows:
        header = ["Published model", "Metric", "Published", "At g", "Measured", "Measured at g", "n", "Run", "Note"]
        parts.append(f"{_table(header, rows)}\n\n{_notes(notes)}")
    if apart:
        parts.append("Not beside a published figure, because the guidance differs: " + "; ".join(apart) + ".")
    return "\n\n".join(parts)


def _published_section(runs: list[Run], reference: list[dict[str, str]] | None) -> str | None:
    if reference is None:
        return None
    parts = [_quality_table("muse-table1", "Table 1: CC3M (FID and CLIP)", reference, runs),
             _quality_table("muse-table2", "Table 2: zero-shot MS-COCO 256x256 (FID-30K and CLIP)", reference, runs),
             _table3(reference, runs)]
    amused = _amused_quality(reference, runs)
    if not any(parts) and not amused:
        return None
    missing = [name for name, part in zip(("Table 1 (muse-bench experiment=cc3m)", "Table 2 (experiment=coco30k)",
                                           "Table 3 (experiment=paper_table3)"), parts) if part is None]
    lead = ("## Measured against published\n\nThe Muse paper's tables (Chang et al. 2023, arXiv 2301.00704) with the "
            "rows measured by these runs beside them; every published figure and its source is in "
            "reports/paper_reference.csv.")
    if missing:
        lead += " No run here measured " + "; ".join(missing) + "."
    return "\n\n".join([lead, *(p for p in parts + [amused] if p)])


# ---- quality, guidance sweep, PartiPrompts -----------------------------------------------------------


def _quality_section(runs: list[Run]) -> str | None:
    entries = [(run, ev) for run in runs for ev in run.evaluations if ev.get("metrics")]
    if not entries:
        return None
    names = list(dict.fromkeys(n for _, ev in entries for n in ev["metrics"]))
    names = [n for n in METRIC_ORDER if n in names] + [n for n in names if n not in METRIC_ORDER]
    arrows = {}
    for _, ev in entries:
        for n, m in ev["metrics"].items():
            arrows.setdefault(n, " ↑" if m.get("higher_is_better") else " ↓")
    many = len({id(run) for run, _ in entries}) > 1
    header = (["Run"] if many else []) + ["Model", "Dataset", "Resolution", "Guidance g", "n"] + \
             [METRIC_NAMES.get(n, n) + arrows[n] for n in names] + ["Note"]
    rows, notes = [], []
    for run, ev in entries:
        protocol = ev.get("protocol") or {}
        n = ev.get("n_samples") or {}
        rows.append(([run.label] if many else []) + [ev.get("model"), ev.get("dataset"), protocol.get("resolution"),
                    _num(_guidance(ev)), f"{n.get('effective')} / {n.get('requested')}"] +
                    [_metric_cell(ev["metrics"].get(m)) for m in names] + [_flag(_eval_caveats(run, ev))])
        notes.append((f"{ev.get('model')}" + (f" ({run.label})" if many else ""), _eval_facets(run, ev)))
    intro = "Values are mean ± standard error where one was computed; n is samples evaluated / requested."
    text = f"## Quality metrics\n\n{_table(header, rows)}\n\n{_notes(notes, intro=intro)}"
    # What was not computed and how to get it (missing weights, missing reference images), said once each.
    missing: dict[str, dict[str, list[str]]] = {}  # reason -> metric -> models
    for run, ev in entries:
        for n, m in ev["metrics"].items():
            reason = (m.get("protocol") or {}).get("skipped")
            if m.get("value") is None and reason:
                missing.setdefault(str(reason), {}).setdefault(METRIC_NAMES.get(n, n), []).append(str(ev.get("model")))
    if missing:
        text += "\n\n**Not computed:**\n" + "\n".join(
            "- " + "; ".join(f"{name} ({', '.join(dict.fromkeys(models))})" for name, models in by_metric.items())
            + f": {reason}" for reason, by_metric in missing.items())
    return text


def _clip_metric(metrics: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    for name in ("clip_score", "clip_score_x100"):
        m = metrics.get(name)
        if m and m.get("value") is not None:
            return name, m
    return None


def _guidance_section(runs: list[Run], figures: _Figures, failed: list[Run]) -> str | None:
    from bench.report import figures as figs

    candidates: dict[tuple[str, str, Any], list[tuple[Run, Mapping[str, Any]]]] = {}
    for run in runs:
        for ev in run.evaluations:
            if _guidance(ev) is not None and ev.get("metrics"):
                key = (str(ev.get("model")), str(ev.get("dataset")), (ev.get("protocol") or {}).get("resolution"))
                candidates.setdefault(key, []).append((run, ev))
    sweeps = {k: v for k, v in candidates.items() if len({_guidance(ev) for _, ev in v}) >= 2}
    if not sweeps:
        return None
    curves: dict[str, list[dict[str, Any]]] = {}
    rows, notes, unplotted = [], [], []
    clip_names = set()
    several = len({(k[1], k[2]) for k in sweeps}) > 1
    for (model, dataset, res), entries in sweeps.items():
        name = model + (f" ({dataset}, {res} px)" if several else "")
        points = []
        for run, ev in sorted(entries, key=lambda e: float(_guidance(e[1]))):
            metrics = ev.get("metrics") or {}
            fid, clip = metrics.get("fid") or {}, _clip_metric(metrics)
            if fid.get("value") is None or clip is None:
                why = (fid.get("protocol") or {}).get("skipped") or "FID or CLIP not computed"
                unplotted.append(f"{model} at guidance {_guidance(ev)} ({run.label}): {why}")
                continue
            clip_names.add(clip[0])
            points.append({"x": clip[1]["value"], "y": fid["value"], "xerr": clip[1].get("stderr"),
                           "yerr": fid.get("stderr"), "label": f"g={_num(_guidance(ev))}"})
            rows.append([name, _num(_guidance(ev)), _metric_cell(clip[1]), _metric_cell(fid),
                         (ev.get("n_samples") or {}).get("effective"), run.label, _flag(_eval_caveats(run, ev))])
            notes.append((f"{model} g={_num(_guidance(ev))} ({run.label})", _eval_facets(run, ev, {"fid", clip[0]})))
        if len(points) >= 2:
            curves[name] = points
    text = ["## FID against CLIP over the guidance scale\n\nAs in the Muse paper's Figure 8: one curve per model "
            "through its runs at each guidance scale (labels g=...), lower FID and higher CLIP being better."]
    if curves:
        clip_label = "CLIP score (cosine)" if clip_names == {"clip_score"} else "CLIP score (x100)" \
            if clip_names == {"clip_score_x100"} else "CLIP score"
        caveats = sorted({c for run, ev in (e for v in sweeps.values() for e in v) for c in _eval_caveats(run, ev)})
        path = figs.tradeoff_curve(curves, figures.path("fid-clip-guidance"), xlabel=f"{clip_label}, higher is better",
                                   ylabel="FID, lower is better", title="FID against CLIP over guidance scale",
                                   note="Error bars: one standard error each way."
                                        + (" " + _flag(caveats).replace("**", "") + "." if caveats else ""))
        text.append(figures.link(path, "FID against CLIP over guidance scale"))
    else:
        text.append("No curve: fewer than two runs of a model have both FID and CLIP.")
    if rows:
        header = ["Model", "Guidance g", "CLIP", "FID", "n", "Run", "Note"]
        text.append(_table(header, rows) + "\n\n" + _notes(notes))
    if unplotted:
        text.append("Not plotted: " + "; ".join(unplotted) + ".")
    if failed:
        text.append(f"{len(failed)} run(s) failed and are not plotted: " + ", ".join(r.label for r in failed)
                    + " (see Failed or incomplete runs).")
    return "\n\n".join(text)


def _parti_section(runs: list[Run], figures: _Figures, reference: list[dict[str, str]] | None) -> str | None:
    from bench.report import figures as figs

    with_breakdown = [(run, ev) for run in runs for ev in run.evaluations if ev.get("breakdown")]
    with_wins = [(run, ev) for run in runs for ev in run.evaluations if isinstance(ev.get("win_rate"), Mapping)]
    if not with_breakdown and not with_wins:
        return None
    many = len({id(r) for r, _ in with_breakdown + with_wins}) > 1
    text = ["## PartiPrompts"]
    notes = [(f"{ev.get('model')}" + (f" ({run.label})" if many else ""), _eval_facets(run, ev, {"clip_score"}))
             for run, ev in with_breakdown]
    for by in ("category", "challenge"):
        entries = [(run, ev, ev["breakdown"].get(by) or []) for run, ev in with_breakdown if ev["breakdown"].get(by)]
        if not entries:
            continue
        groups = sorted({g["group"] for _, _, gs in entries for g in gs})
        series = {}
        table_cols = []
        for run, ev, gs in entries:
            name = str(ev.get("model")) + (f" ({run.label})" if many else "")
            by_group = {g["group"]: g for g in gs}
            series[name] = ([by_group[g]["mean"] if g in by_group else None for g in groups],
                            [by_group[g].get("stderr") if g in by_group else None for g in groups])
            table_cols.append((name, by_group))
        caveats = sorted({c for run, ev, _ in entries for c in _eval_caveats(run, ev)})
        path = figs.grouped_bars(groups, series, figures.path(f"parti-clip-{by}"),
                                 xlabel="CLIP score (cosine), mean ± stderr over prompts",
                                 title=f"CLIP score per PartiPrompts {by}",
                                 note=_flag(caveats).replace("**", "") if caveats else None)
        rows = [[g] + [(_num(c[g]["mean"]) + (f" ± {_err(c[g]['stderr'])}" if c[g].get("stderr") is not None else "")
                        + f" ({c[g].get('n')} samples, {c[g].get('n_prompts')} prompts)") if g in c else "—"
                       for _, c in table_cols] for g in groups]
        intro = ("Mean CLIP cosine per group; stderr over prompts (std of the per-prompt means / sqrt(prompts)), "
                 "none for a group of one prompt.")
        text.append(f"### CLIP score per {by}\n\n{figures.link(path, f'CLIP per {by}')}\n\n"
                    f"{_table([by.capitalize(), *[n for n, _ in table_cols]], rows)}\n\n{_notes(notes, intro=intro)}")
    if with_wins:
        text.append(_win_rate_part(with_wins, figures, reference, many))
    return "\n\n".join(text)


def _win_rate_part(entries: list[tuple[Run, Mapping[str, Any]]], figures: _Figures,
                   reference: list[dict[str, str]] | None, many: bool) -> str:
    from bench.report import figures as figs

    rows, notes, links = [], [], []
    for run, ev in entries:
        wr = ev["win_rate"]
        metric = (ev.get("metrics") or {}).get("win_rate") or {}
        p = metric.get("protocol") or {}
        a, b = p.get("model_a", ev.get("model")), p.get("model_b", "the other model")
        overall = wr.get("overall") or {}
        judge = (wr.get("judge") or {}).get("name", "?")
        rows.append(([run.label] if many else []) + [a, b, judge, overall.get("n"), _pct(overall.get("a_win_rate")),
                     _pct(overall.get("tie_rate")), _pct(overall.get("b_win_rate")), _num(overall.get("ratio")),
                     _flag(_eval_caveats(run, ev))])
        notes.append((f"{a} vs {b}" + (f" ({run.label})" if many else ""), _eval_facets(run, ev, {"win_rate"})))
        for by in ("category", "challenge"):
            groups = wr.get(f"by_{by}") or {}
            if not groups:
                continue
            names = sorted(groups)
            caveats = _eval_caveats(run, ev)
            path = figs.win_rate_bars(
                ["overall", *names], [overall.get("a_win_rate")] + [groups[g].get("a_win_rate") for g in names],
                [overall.get("tie_rate")] + [groups[g].get("tie_rate") for g in names],
                [overall.get("b_win_rate")] + [groups[g].get("b_win_rate") for g in names],
                figures.path(f"win-rate-{a}-vs-{b}-{by}-{run.label}"), names=(str(a), str(b)),
                counts=[overall.get("n")] + [groups[g].get("n") for g in names],
                title=f"{a} against {b} per {by} (judge: {judge})",
                note=_flag(caveats).replace("**", "") if caveats else None)
            links.append(figures.link(path, f"win rate per {by}"))
    header = (["Run"] if many else []) + ["Model A", "Model B", "Judge", "Prompts", "A wins", "Ties", "B wins",
                                          "A / B", "Note"]
    for ref in reference or []:
        if ref["table"] == "muse-human-eval" and ref["metric"] == "muse_preferred":
            wins = float(ref["value"])
            others = {r["metric"]: float(r["value"]) for r in reference if r["table"] == "muse-human-eval"}
            rows.append(([""] if many else []) + ["Muse-3B (published)", "Stable Diffusion v1.4", "5 human raters",
                         "PartiPrompts", f"{wins:.1f}%", f"{others.get('no_consensus', 0):.1f}%",
                         f"{others.get('sd_preferred', 0):.1f}%", _num(wins / others["sd_preferred"]) if
                         others.get("sd_preferred") else "—", ref["source"]])
    intro = ("Best of K images per prompt by CLIP score, then one verdict per prompt; the automatic judge stands in "
             "for the paper's human raters and is not a replication of them.")
    return "### Win rate\n\n" + "\n\n".join(links) + ("\n\n" if links else "") + _table(header, rows) + "\n\n" + \
        _notes(notes, intro=intro)


def _achieved(row: Mapping[str, Any]) -> str:
    """TFLOP/s a latency row reached: FLOPs per image x batch / median time."""
    flops, median, batch = row.get("flops"), row.get("median_s"), row.get("batch_size")
    if not flops or not median or not batch:
        return "—"
    return _num(float(flops) * int(batch) / float(median) / 1e12, 3)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


# ---- latency -----------------------------------------------------------------------------------------


def _latency_section(runs: list[Run], figures: _Figures) -> str | None:
    from bench.report import figures as figs

    entries = [(run, row) for run in runs for row in run.latency]
    if not entries:
        return None
    many = len({id(run) for run, _ in entries}) > 1
    text = ["## Latency"]

    # Stage breakdown at each (run, model, resolution)'s smallest batch size.
    bars: dict[tuple[int, str, Any], dict[str, Any]] = {}
    for run, row in entries:
        if row.get("status", "ok") != "ok" or row.get("median_s") is None:
            continue
        key = (id(run), str(row.get("model")), row.get("resolution"))
        smallest = bars.get(key, {}).get("batch")
        if smallest is None or row.get("batch_size") < smallest:
            bars[key] = {"batch": row.get("batch_size"), "stages": {}, "total": None, "run": run}
        if row.get("batch_size") == bars[key]["batch"]:
            if row.get("stage") == "total":
                bars[key]["total"] = row["median_s"]
            else:
                bars[key]["stages"][str(row.get("stage"))] = row["median_s"]
    bars = {k: v for k, v in bars.items() if v["total"] is not None or v["stages"]}
    if bars:
        stages = [s for s in STAGE_ORDER if any(s in b["stages"] for b in bars.values())]
        stages += sorted({s for b in bars.values() for s in b["stages"]} - set(stages))
        stacks: dict[str, list[float | None]] = {s: [b["stages"].get(s) for b in bars.values()] for s in stages}
        rest = []
        for b in bars.values():
            gap = (b["total"] or 0.0) - sum(b["stages"].values())
            # Time outside every timed stage (scheduling, Python, copies), shown where it is not negligible.
            rest.append(gap if b["total"] and gap > 0.02 * b["total"] else None)
        if any(r is not None for r in rest):
            stacks[OTHER_STAGE] = rest
        batches = {b["batch"] for b in bars.values()}
        labels = [model + (f"\nbatch {b['batch']}" if len(batches) > 1 else "")
                  + (f"\n{textwrap.shorten(b['run'].label, 24)}" if many else "") for (_, model, _), b in bars.items()]
        panels = [f"{res} px" for (_, _, res) in bars]
        caveats = sorted({c for _, row in entries for c in _latency_caveats(row)})
        devices = sorted({str(row.get("device")) for _, row in entries})
        note = f"Measured on {', '.join(devices)}." + (f" {NOT_PAPER.capitalize()}: {', '.join(caveats)}." if caveats else "")
        batch_text = f"batch of {batches.pop()}" if len(batches) == 1 else "batch"
        path = figs.stacked_bars(labels, stacks, figures.path("latency-stages"), panels=panels,
                                 ylabel=f"time per {batch_text} (s, median)",
                                 title="End-to-end latency by stage", legend_title="stage",
                                 totals=[b["total"] for b in bars.values()], note=note,
                                 # One colour per stage in every latency figure; untimed time in neutral grey.
                                 colours=dict(zip(STAGE_ORDER, figs.OKABE_ITO)) | {OTHER_STAGE: "#999999"})
        text.append(figures.link(path, "latency by stage"))

    # Throughput against batch size, where a model ran at two batch sizes or more.
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for run, row in entries:
        if row.get("stage") == "total" and row.get("status", "ok") == "ok" and row.get("images_per_s"):
            name = f"{row.get('model')} {row.get('resolution')} px" + (f" ({run.label})" if many else "")
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(row["batch_size"])
            ys.append(row["images_per_s"])
    for name, (xs, ys) in list(curves.items()):
        if len(set(xs)) < 2:
            del curves[name]
        else:
            order = sorted(range(len(xs)), key=xs.__getitem__)
            curves[name] = ([xs[i] for i in order], [ys[i] for i in order])
    if curves:
        xs_all = [x for xs, _ in curves.values() for x in xs]
        ys_all = [y for _, ys in curves.values() for y in ys]
        path = figs.line_chart(curves, figures.path("throughput-batch"), xlabel="batch size (images)",
                               ylabel="throughput (images / s)", title="Throughput against batch size",
                               logx=max(xs_all) / min(xs_all) >= 4, logy=max(ys_all) / min(ys_all) > 30)
        text.append(figures.link(path, "throughput against batch size"))

    header = (["Run"] if many else []) + ["Model", "Resolution", "Batch", "Steps", "Profile", "Weights", "Median (s)",
                                          "p90 (s)", "Images/s", "Params", "Peak memory (GiB)", "TFLOP/s achieved",
                                          "% of compute floor",
                                          "Status", "Note"]
    rows, notes, seen = [], [], set()
    order = {id(run): i for i, run in enumerate(runs)}
    totals = sorted(((run, row) for run, row in entries if row.get("stage") == "total"),
                    key=lambda e: (order[id(e[0])], str(e[1].get("model")), e[1].get("resolution") or 0,
                                   e[1].get("batch_size") or 0))
    for run, row in totals:
        mem = row.get("peak_mem_bytes")
        rows.append(([run.label] if many else []) + [
            row.get("model"), row.get("resolution"), row.get("batch_size"), row.get("steps"), row.get("profile"),
            row.get("weights"), _num(row.get("median_s")), _num(row.get("p90_s")), _num(row.get("images_per_s")),
            _params(row.get("params")), _num(mem / 2**30, 3) if isinstance(mem, (int, float)) else "—",
            _achieved(row), _num(row.get("percent_of_floor"), 3), row.get("status", "ok"), _flag(_latency_caveats(row))])
        key = (id(run), row.get("model"), row.get("resolution"))
        if key not in seen:
            seen.add(key)
            notes.append((f"{row.get('model')} {row.get('resolution')} px" + (f" ({run.label})" if many else ""),
                          _latency_facets(run, row)))
    intro = ("End-to-end (stage total) rows; every stage is in each run's latency.csv. TFLOP/s achieved: the timed "
             "profile's FLOPs of the batch over the median time, which says how well a model's kernels use this "
             "device (models with equal FLOPs can differ several-fold). % of compute floor: FLOPs over the device's "
             "dense peak, blank where the peak is not known (CPUs, fp32).")
    text.append(_table(header, rows) + "\n\n" + _notes(notes, intro=intro))

    ratios = _ratios(runs)
    if ratios:
        text.append("### Speed-ups\n\n" + ratios)
    compute = _compute_section(runs)
    if compute:
        text.append(compute)
    return "\n\n".join(text)


# The paper's speed claims, by the slower model of a measured pair.
CLAIMS = {"sd-v1-4": "about 3x (Muse-3B vs SD v1.4)", "imagen-proxy": "more than 10x (Muse-3B vs Imagen)",
          "parti-3b-proxy": "more than 10x (Muse-3B vs Parti-3B)"}
VERDICTS = {"faster": "the second is faster", "tie": "tie (range covers 1)", "slower": "the second is slower"}
OLD_RATIO = ("recorded by a muse-bench that did not check whether the timed profiles keep the full-size cost ratio; "
             "rerun the latency job")


def _floors(floor: Mapping[str, Any] | None) -> str:
    """'A100 61 / 250 ms, H100 ...' from a ratio's floor_s, or a dash."""
    if not floor:
        return "—"
    cells = []
    for gpu, pair in floor.items():
        if pair.get("slower") is None or pair.get("faster") is None:
            continue
        cells.append(f"{gpu} {_num(1e3 * pair['slower'], 3)} / {_num(1e3 * pair['faster'], 3)} ms")
    return ", ".join(cells) or "—"


def _ratios(runs: list[Run]) -> str | None:
    """The compared pairs of each run as results.json records them (bench.latency.ratios.latency_ratio): a time ratio
    only where the timed profiles keep the full-size cost ratio, always beside the FLOP ratio and floors."""
    rows, notes = [], []
    many = len([r for r in runs if r.latency]) > 1
    for run in runs:
        for pair in (run.results or {}).get("latency_ratios") or []:
            shown = pair.get("shown", False)
            why = pair.get("why") or OLD_RATIO
            if shown and pair.get("ratio") is not None:
                low, high = pair.get("ratio_range") or (None, None)
                ratio = f"{pair['ratio']:.3g}x" + (f" ({low:.3g}–{high:.3g})" if low is not None else "")
                verdict = VERDICTS.get(pair.get("verdict"), "—")
            else:
                ratio, verdict = "not shown (see protocol)", "—"
            flops = pair.get("flop_ratio_full")
            label = (f"{pair['slower']} / {pair['faster']} {pair['resolution']} px batch {pair['batch_size']}"
                     + (" compiled" if pair.get("compiled") else "") + (f" ({run.label})" if many else ""))
            rows.append(([run.label] if many else []) + [
                pair["slower"], pair["faster"], pair["resolution"], pair["batch_size"],
                "yes" if pair.get("compiled") else "no", ratio, verdict,
                f"{flops:.3g}" if flops else "—", _floors(pair.get("floor_s")), CLAIMS.get(pair["slower"], "—")])
            facets = {"time ratio": str(pair.get("protocol"))}
            if not shown:
                facets["not shown because"] = why
            notes.append((label, facets))
    if not rows:
        return None
    header = (["Run"] if many else []) + ["First", "Second", "Resolution", "Batch", "Compiled",
                                          "Time ratio (median, range over rounds)", "Verdict",
                                          "Full-size FLOP ratio", "Compute floor, first / second", "Paper's claim"]
    intro = ("First and second: a pair of latency.compare, listed as the claim puts it (the first is claimed to be "
             "the slower; results.json keeps them as `slower` and `faster`), whatever this machine measures. "
             "Time ratio: the first model's end-to-end time over the second's, per round (both timed back to back), "
             "median and range over rounds; above 1 the second model is faster, a range covering 1 is a tie. Given "
             "only where the timed profiles keep the full-size cost ratio (both full size, or one architecture "
             "timed twice): a scaled or tiny profile changes the models' costs by different factors. Full-size "
             "FLOP ratio: FLOPs per image, first / second (below 1 the first does less work). Compute floor: FLOPs "
             "of the batch at the dense bf16 peak (datasheet) of each GPU, a time no implementation can beat.")
    return _table(header, rows) + "\n\n" + _notes(notes, intro=intro)


def _compute_section(runs: list[Run]) -> str | None:
    """Full-size FLOPs and compute floors of every model and resolution the runs' latency jobs covered, and
    the FLOP ratio of each compared pair at each resolution (results.json `compute`)."""
    rows, pair_rows = [], []
    for run in runs:
        compute = (run.results or {}).get("compute") or []
        by = {(c["model"], c["resolution"]): c for c in compute}
        for c in compute:
            flops, floor = c.get("flops_full"), c.get("floor_s") or {}
            rows.append([c["model"], c["resolution"], c.get("steps"),
                         _num(flops["total"] / 1e12, 4) if flops else "—",
                         *(_num(1e3 * floor[g], 3) if g in floor else "—" for g in ("A100", "H100", "H200")),
                         c.get("note") or ""])
        for slower, faster in (run.config.get("latency") or {}).get("compare") or []:
            for resolution in sorted({r for (m, r) in by if m == slower} & {r for (m, r) in by if m == faster}):
                a, b = by[(slower, resolution)].get("flops_full"), by[(faster, resolution)].get("flops_full")
                if a and b:
                    pair_rows.append([slower, faster, resolution, f"{a['total'] / b['total']:.3g}"])
    if not rows:
        return None
    text = ["### Compute at full size",
            _table(["Model", "Resolution", "Steps", "TFLOP per image", "Floor A100 (ms)", "Floor H100 (ms)",
                    "Floor H200 (ms)", "Note"], rows)]
    if pair_rows:
        text.append(_table(["First", "Second", "Resolution", "FLOP ratio (first / second)"], pair_rows))
    text.append("**Protocol:** FLOPs per image of the published shapes, counted exactly on the meta device by "
                "torch's FlopCounterMode (matrix products, convolutions, attention; element-wise work not counted), "
                "at each model's own steps and guidance (a guided step is one forward over 2 images). Floor: one "
                "image at the dense bf16 tensor-core peak of the datasheet (A100 312, H100 989, H200 989 TFLOP/s); "
                "measured large matrix products reach about 80% of it, and batch-1 decoding far less. These are not "
                "times: they say which model does more work, whatever the machine.")
    return "\n\n".join(text)


# ---- images: sample grids and decoding trajectories --------------------------------------------------


def _manifest(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchError(f"{path}, line {line_no}: not valid JSON ({err.msg}). manifest.jsonl holds one JSON "
                                 "object per line; re-run the generation to rewrite it.") from None
    return rows


def _grids_section(runs: list[Run], figures: _Figures) -> str | None:
    from bench.report import figures as figs

    text, done, skipped = [], set(), 0
    for run in runs:
        for ev in run.evaluations:
            protocol = ev.get("protocol") or {}
            samples_dir = protocol.get("samples_dir")
            if not samples_dir:
                continue
            folder = run.path / samples_dir
            key = (folder.resolve(), protocol.get("resolution"))
            if key in done or not (folder / MANIFEST_FILE).is_file():
                continue
            done.add(key)
            if len(done) > MAX_GRIDS:
                skipped += 1
                continue
            try:
                manifest = _manifest(folder / MANIFEST_FILE)
            except BenchError as err:
                text.append(f"### {ev.get('model')} on {ev.get('dataset')} ({run.label})\n\nNo grid: {err}")
                continue
            rows = [r for r in manifest if r.get("resolution", protocol.get("resolution")) == protocol.get("resolution")
                    and r.get("replica", 0) == 0 and (folder / str(r.get("file"))).is_file()]
            rows = sorted(rows, key=lambda r: r.get("index", 0))[:GRID_IMAGES]
            if not rows:
                continue
            title = (f"{ev.get('model')} on {ev.get('dataset')}, {protocol.get('resolution')} px, guidance g="
                     f"{_num(_guidance(ev))}, seed {protocol.get('seed')}")
            path = figs.image_grid([folder / str(r["file"]) for r in rows], [str(r.get("prompt", "")) for r in rows],
                                   figures.path(f"grid-{ev.get('model')}-{ev.get('dataset')}-"
                                                f"{protocol.get('resolution')}-{run.label}"),
                                   title=title, note=("Random weights: the images show the pipeline working, not what "
                                                      "the model can draw." if ev.get("weights") == "random" else None))
            heading = f"### {ev.get('model')} on {ev.get('dataset')}, {protocol.get('resolution')} px" + \
                      (f" ({run.label})" if len(runs) > 1 else "")
            facets = {k: v for k, v in _eval_facets(run, ev, ()).items()}
            facets["shown"] = f"the first {len(rows)} prompts (replica 0) of {samples_dir}/{MANIFEST_FILE}"
            text.append(f"{heading}\n\n{figures.link(path, title)}\n\n{_notes([(ev.get('model'), facets)])}")
    if not text:
        return None
    if skipped:
        text.append(f"{skipped} more sample folder(s) not shown (at most {MAX_GRIDS} grids per report).")
    return "## Samples\n\nPrompts under the images (wrapped, long ones cut).\n\n" + "\n\n".join(text)


def trajectory_file(model: str, index: int, step: int) -> str:
    """The file name of one decoding step's image under a run's trajectory/ folder (step counts from 1)."""
    return f"{model}-{index:05d}-step{step:02d}.png"


@dataclass
class TrajectoryStrip:
    """One rendered decoding-trajectory strip."""

    model: str
    index: int
    prompt: str | None
    steps: int
    path: Path


def _prompts(run_dir: Path, model: str) -> dict[int, str]:
    prompts: dict[int, str] = {}
    for manifest in sorted((run_dir / "samples" / model).glob(f"*/{MANIFEST_FILE}")):
        try:
            for row in _manifest(manifest):
                prompts.setdefault(int(row.get("index", -1)), str(row.get("prompt", "")))
        except (BenchError, ValueError):
            continue
    return prompts


def render_trajectories(run_dir: str | Path, figures_dir: str | Path, *, limit: int = MAX_STRIPS,
                        prefix: str = "trajectory") -> list[TrajectoryStrip]:
    """Lay out the images of run_dir/trajectory/<model>-<index>-step<NN>.png as one strip per (model, index).

    Steps are ordered by NN; the prompt is looked up by index in the model's samples manifests. At most
    `limit` strips, in (model, index) order; strips are written to figures_dir as <prefix>-<model>-<index>.png.
    """
    from bench.report import figures as figs

    run_dir, figures_dir = Path(run_dir), Path(figures_dir)
    found: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    for file in (run_dir / TRAJECTORY_DIR).glob("*.png"):
        match = TRAJECTORY_RE.match(file.name)
        if match:
            key = (match["model"], int(match["index"]))
            found.setdefault(key, []).append((int(match["step"]), file))
    strips = []
    for (model, index), steps in sorted(found.items())[:limit]:
        steps.sort()
        prompt = _prompts(run_dir, model).get(index)
        path = figs.trajectory_strip([f for _, f in steps], figures_dir / f"{_slug(f'{prefix}-{model}-{index}')}.png",
                                     step_labels=[f"step {s}" for s, _ in steps],
                                     title=f"{model}, prompt {index}" + (f": {prompt}" if prompt else ""))
        strips.append(TrajectoryStrip(model, index, prompt, len(steps), path))
    return strips


def _trajectory_section(runs: list[Run], figures: _Figures) -> str | None:
    parts = []
    for run in runs:
        if not (run.path / TRAJECTORY_DIR).is_dir():
            continue
        prefix = "trajectory" + (f"-{_slug(run.label)}" if len(runs) > 1 else "")
        for strip in render_trajectories(run.path, figures.dir, prefix=prefix):
            figures.written.append(strip.path)
            weights = next((ev.get("weights") for ev in run.evaluations if ev.get("model") == strip.model), None)
            sampler = next((_sampler_text(ev.get("protocol") or {}) for ev in run.evaluations
                            if ev.get("model") == strip.model), "not recorded")
            facets = {"steps shown": str(strip.steps), "sampler": sampler,
                      "weights": f"random ({NOT_PAPER})" if weights == "random" else str(weights or "not recorded"),
                      "device": run.device()}
            parts.append(f"### {strip.model}, prompt {strip.index}" + (f" ({run.label})" if len(runs) > 1 else "")
                         + f"\n\n{figures.link(strip.path, f'decoding trajectory of {strip.model}')}\n\n"
                         + _notes([(strip.model, facets)]))
    if not parts:
        return None
    return ("## Decoding trajectories\n\nOne image per parallel-decoding step, left to right: the tokens decoded so "
            "far, still-masked tokens in grey.\n\n" + "\n\n".join(parts))


# ---- the report --------------------------------------------------------------------------------------


def _runs_section(runs: list[Run], command: str) -> str:
    ok = [r for r in runs if r.ok]
    rows = []
    for run in ok:
        prov = run.provenance
        commit = str(prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
        overrides = ", ".join(o for o in run.overrides if not o.lstrip("+~").startswith("hydra.")) or "—"
        rows.append([run.label, run.results.get("experiment"), overrides, run.results.get("created"), commit,
                     run.device(), len(run.evaluations), len(run.latency)])
    failed = len(runs) - len(ok)
    head = (f"# muse-bench report\n\n{len(runs)} run(s): {len(ok)} usable"
            + (f", {failed} failed or incomplete (listed below)" if failed else "") + f". Made with `{command}`.")
    table = _table(["Run", "Experiment", "Overrides", "Created", "Git commit", "Device", "Evaluations",
                    "Latency rows"], rows)
    warn = sorted({c for run in ok for ev in run.evaluations for c in _eval_caveats(run, ev)}
                  | {c for run in ok for row in run.latency for c in _latency_caveats(row)})
    banner = ""
    if warn:
        banner = (f"\n\n> **Not paper numbers.** Some results below come from {', '.join(warn)}. They show the "
                  f"protocol working; they are not comparable with the published figures. Their rows say "
                  f"*{NOT_PAPER}*.")
    return head + banner + "\n\n" + table


def _failed_section(runs: list[Run]) -> str | None:
    failed = [r for r in runs if not r.ok]
    if not failed:
        return None
    rows = [[r.label, str(r.path), r.error] for r in failed]
    return ("## Failed or incomplete runs\n\nNot in any table or figure below.\n\n"
            + _table(["Run", "Folder", "Reason"], rows))


def _command(runs: Sequence[Run], out_dir: Path) -> str:
    sources = list(dict.fromkeys(r.source for r in runs))
    return "python -m bench.report " + " ".join(sources) + f" --out {out_dir}"


def write_report(runs: Sequence[Run], out_dir: str | Path, *, command: str | None = None,
                 reference_csv: str | Path = REFERENCE_CSV) -> Path:
    """Write out_dir/report.md and out_dir/figures/*.png from `runs` (load_runs); returns report.md's path.

    `command` is the command line recorded in the report (default: the equivalent `python -m bench.report`).
    Raises BenchError when no run is usable.
    """
    runs = list(runs)
    ok = [r for r in runs if r.ok]
    if not ok:
        raise BenchError(_nothing_usable(runs))
    if any(not r.label for r in runs):
        _label_runs(runs)
    out_dir = Path(out_dir)
    figures = _Figures(out_dir)
    reference, no_reference = None, None
    if Path(reference_csv).is_file():
        reference = read_reference(reference_csv)  # a malformed row is an error: it names its line
    else:
        # The measurements still make a report; only the published columns are missing, and it says so.
        no_reference = (f"Published figures not shown: {reference_csv} was not found (it ships with the repository "
                        "as reports/paper_reference.csv; run from a full checkout).")
    failed = [r for r in runs if not r.ok]
    sections = [
        _runs_section(runs, command or _command(runs, out_dir)),
        _failed_section(runs),
        no_reference,
        _published_section(ok, reference),
        _quality_section(ok),
        _guidance_section(ok, figures, failed),
        _parti_section(ok, figures, reference),
        _latency_section(ok, figures),
        _grids_section(ok, figures),
        _trajectory_section(ok, figures),
        "---\n\nFigures: bench/report/figures.py (Okabe-Ito palette, 150 dpi). Published figures: "
        "reports/paper_reference.csv (each row cites its source). Full protocols: each run's results.json.",
    ]
    figures.remove_stale()
    return atomic_write_text(out_dir / REPORT_FILE, "\n\n".join(s for s in sections if s) + "\n")


def report_run_dir(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """The report of one run folder (or sweep), written into `out_dir` (default: the folder itself)."""
    return write_report(load_runs([run_dir]), out_dir if out_dir is not None else run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.report RUN_DIR [RUN_DIR ...] --out DIR`: write DIR/report.md; 0 on success, 2 on a
    BenchError (printed as one paragraph)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Build report.md and figures/*.png from muse-bench run folders, sweep folders or globs.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a run folder (with results.json), a multirun sweep folder, a results.json or a glob")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write report.md and figures/ (default: the RUN_DIR, when only one is given)")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            if len(args.runs) != 1 or re.search(r"[*?\[]", args.runs[0]):
                raise BenchError("Several run folders given: say where the report goes with --out DIR.")
            args.out = args.runs[0]
        runs = load_runs(args.runs)
        command = "python -m bench.report " + " ".join(args.runs) + f" --out {args.out}"
        path = write_report(runs, args.out, command=command)
    except BenchError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"bench.report: error: {message}", file=sys.stderr)
        return 2
    failed = sum(not r.ok for r in runs)
    print(f"report: {path}" + (f" ({failed} failed or incomplete run(s) listed in it)" if failed else ""))
    return 0
