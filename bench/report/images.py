"""The report's image sections: sample grids (the first prompts of each samples folder, prompts under the images)
and decoding-trajectory strips (one image per parallel-decoding step, still-masked tokens in grey).

A run may hold trajectory/<model>-<index>-step<NN>.png (bench.report.runs.trajectory_file, written by the default
job), one decoded, partially unmasked image per step, where <index> is the prompt's dataset index (as in
samples/.../manifest.jsonl) and NN the 1-based step; `render_trajectories` lays them out as strips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.results import MANIFEST_FILE
from bench.report import figures as figs
from bench.report.markdown import NOT_PAPER, FigureFolder, number, protocol_note, slug
from bench.report.protocols import eval_facets, guidance_scale, sampler_text
from bench.report.runs import TRAJECTORY_DIR, TRAJECTORY_RE, Run

MAX_GRIDS = 6
GRID_IMAGES = 8
MAX_STRIPS = 6


def _manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a samples folder's manifest.jsonl; a line that is not JSON is a BenchError naming it."""
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


def grids_section(runs: list[Run], figures: FigureFolder) -> str | None:
    """"Samples": a grid of the first GRID_IMAGES images of each samples folder (at most MAX_GRIDS), prompts under
    the images; None when no run kept samples."""
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
            sweep = ev.get("sweep") or {}
            # A sweep value other than guidance is named too: its grids would otherwise carry the same title.
            swept = f", {sweep['key']}={sweep.get('value')}" if sweep.get("key") not in (None, "guidance_scale") else ""
            title = (f"{ev.get('model')} on {ev.get('dataset')}, {protocol.get('resolution')} px, guidance g="
                     f"{number(guidance_scale(ev))}{swept}, seed {protocol.get('seed')}")
            path = figs.image_grid([folder / str(r["file"]) for r in rows], [str(r.get("prompt", "")) for r in rows],
                                   figures.path(f"grid-{folder.parent.name}-{ev.get('dataset')}-"
                                                f"{protocol.get('resolution')}-{run.label}"),
                                   title=title, note=("Random weights: the images show the pipeline working, not what "
                                                      "the model can draw." if ev.get("weights") == "random" else None))
            heading = f"### {ev.get('model')} on {ev.get('dataset')}, {protocol.get('resolution')} px" + \
                      (f", guidance g={number(guidance_scale(ev))}" if ev.get("sweep") else "") + swept + \
                      (f" ({run.label})" if len(runs) > 1 else "")
            facets = {k: v for k, v in eval_facets(run, ev, ()).items()}
            facets["shown"] = f"the first {len(rows)} prompts (replica 0) of {samples_dir}/{MANIFEST_FILE}"
            text.append(f"{heading}\n\n{figures.link(path, title)}\n\n{protocol_note([(ev.get('model'), facets)])}")
    if not text:
        return None
    if skipped:
        text.append(f"{skipped} more sample folder(s) not shown (at most {MAX_GRIDS} grids per report).")
    return "## Samples\n\nPrompts under the images (wrapped, long ones cut).\n\n" + "\n\n".join(text)


@dataclass
class TrajectoryStrip:
    """One rendered decoding-trajectory strip."""

    model: str
    index: int
    prompt: str | None
    steps: int
    path: Path


def _prompts(run_dir: Path, model: str) -> dict[int, str]:
    """The prompts of a model's samples in a run folder, by dataset index (unreadable manifests skipped)."""
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
        path = figs.trajectory_strip([f for _, f in steps], figures_dir / f"{slug(f'{prefix}-{model}-{index}')}.png",
                                     step_labels=[f"step {s}" for s, _ in steps],
                                     title=f"{model}, prompt {index}" + (f": {prompt}" if prompt else ""))
        strips.append(TrajectoryStrip(model, index, prompt, len(steps), path))
    return strips


def trajectory_section(runs: list[Run], figures: FigureFolder) -> str | None:
    """"Decoding trajectories": each run's strips (render_trajectories) with their sampler; None without any."""
    parts = []
    for run in runs:
        if not (run.path / TRAJECTORY_DIR).is_dir():
            continue
        prefix = "trajectory" + (f"-{slug(run.label)}" if len(runs) > 1 else "")
        for strip in render_trajectories(run.path, figures.dir, prefix=prefix):
            figures.written.append(strip.path)
            weights = next((ev.get("weights") for ev in run.evaluations if ev.get("model") == strip.model), None)
            sampler = next((sampler_text(ev.get("protocol") or {}) for ev in run.evaluations
                            if ev.get("model") == strip.model), "not recorded")
            facets = {"steps shown": str(strip.steps), "sampler": sampler,
                      "weights": f"random ({NOT_PAPER})" if weights == "random" else str(weights or "not recorded"),
                      "device": run.device()}
            parts.append(f"### {strip.model}, prompt {strip.index}" + (f" ({run.label})" if len(runs) > 1 else "")
                         + f"\n\n{figures.link(strip.path, f'decoding trajectory of {strip.model}')}\n\n"
                         + protocol_note([(strip.model, facets)]))
    if not parts:
        return None
    return ("## Decoding trajectories\n\nOne image per parallel-decoding step, left to right: the tokens decoded so "
            "far, still-masked tokens in grey.\n\n" + "\n\n".join(parts))
