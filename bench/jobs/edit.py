"""The edit job: Muse's zero-shot editing (inpainting, outpainting, mask-free editing) made measurable on the learned
shapes world, for cfg.model and eval.compare_to (muse-shapes-random: random weights, whose rates near 0 show that a
rate measures something).

Each task's trials come from bench/shapes/editing.py (a function of the trial's index; sampling seed = seed + scene
index); the exact judge decides success. results.json holds one evaluation per model (dataset `shapes-editing`)
whose metrics are, per kind of trial (inpaint, outpaint, edit_color, edit_shape): the success rate and each of its
conditions with their binomial standard error, the judge's reading of the VQ reconstruction (the ceiling of what kept
tokens can keep), and what changed where the edit must leave the image alone. Every trial's row is in
editing/<model>/trials.jsonl; the first edit.examples trials of each kind keep their images (original, mask, what was
asked, result) in editing/<model>/<kind>/, which the report lays out as grids (bench/report/editing.py).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench.core.errors import BenchError
from bench.core.provenance import collect_provenance
from bench.core.results import MetricEntry, atomic_write_bytes, build_results, evaluation, write_jsonl, write_results
from bench.core.rundir import promote_record
from bench.jobs.checks import check_guidance
from bench.jobs.generate import model_configs, model_weights
from bench.metrics.published import comparable_to_published
from bench.shapes.editing import (
    CHANGE_LEVELS,
    CONDITIONS,
    TASKS,
    EditSettings,
    make_trials,
    rate,
    run_trial,
    target_image,
)
from bench.shapes.scenes import LATTICE, SPLIT_SEEDS
from muse.sampling import GUIDANCE_CONVENTION

log = logging.getLogger(__name__)

DATASET = "shapes-editing"
EDITING_DIR = "editing"
# The preset whose architecture (and, with model.world, whose trained weights) the shapes world's judge can read.
SHAPES_PRESET = "muse-shapes"
SUCCESS = {
    "inpaint": "the new object inside the masked 3x3-cell block and the old object where it was",
    "outpaint": "the kept object unchanged (shape, colour, box within a pixel) and the other asked object wholly "
                "outside the kept box",
    "edit_color": "the object in the asked colour at its place (box within its cell) and the old (shape, colour) "
                  "nowhere",
    "edit_shape": "the object in the asked shape at its place (box within its cell) and the old (shape, colour) "
                  "nowhere",
}


def _is_shapes_model(model_cfg: Any) -> bool:
    # A world's weights, or the world's architecture with random weights; a checkpoint folder is checked by its
    # pipeline's own preset name once loaded (load_models).
    named = model_cfg.get("preset") or model_cfg.name
    return model_cfg.family == "muse" and bool(model_cfg.get("world") or model_cfg.get("pretrained")
                                               or named == SHAPES_PRESET)


def check_edit_settings(cfg: DictConfig) -> tuple[list[str], list[Any]]:
    """The trial kinds to run and the models (cfg.model, then eval.compare_to's preset), or a BenchError naming the
    config key. Writes nothing and loads no weights."""
    tasks = list(cfg.edit.tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise BenchError(f"edit.tasks={tasks} names unknown task(s) {', '.join(map(repr, unknown))}: use any of "
                         f"{', '.join(TASKS)}.")
    if not tasks:
        raise BenchError(f"edit.tasks is empty: list at least one of {', '.join(TASKS)}.")
    if len(set(tasks)) < len(tasks):
        raise BenchError(f"edit.tasks={tasks} lists a task twice: list each once.")
    if cfg.edit.trials < 1:
        raise BenchError(f"edit.trials={cfg.edit.trials}: run at least 1 trial per task; set edit.trials=N (N >= 1).")
    if cfg.edit.examples < 0:
        raise BenchError(f"edit.examples={cfg.edit.examples}: the number of trials kept as images is 0 or more.")
    if cfg.edit.split not in SPLIT_SEEDS:
        raise BenchError(f"edit.split={cfg.edit.split!r} is not a split of the shapes world: one of "
                         f"{', '.join(SPLIT_SEEDS)}.")
    resolution = cfg.edit.resolution
    if resolution < 8 * LATTICE or resolution % LATTICE:
        raise BenchError(f"edit.resolution={resolution}: the judge reads objects from 8 px cells on; use a multiple "
                         f"of {LATTICE} of at least {8 * LATTICE} (the shapes models make 64).")
    if cfg.edit.iterations < 1:
        raise BenchError(f"edit.iterations={cfg.edit.iterations}: mask-free editing needs at least 1 iteration.")
    if not 0 < cfg.edit.resample_fraction <= 1:
        raise BenchError(f"edit.resample_fraction={cfg.edit.resample_fraction} must be in (0, 1]: the share of base "
                         f"tokens resampled per iteration.")
    if cfg.edit.top_k is not None and cfg.edit.top_k < 1:
        raise BenchError(f"edit.top_k={cfg.edit.top_k} must be at least 1, or null for no top-k.")
    check_guidance(cfg.edit.guidance_scale, "edit.guidance_scale")
    if cfg.seed < 0:
        raise BenchError(f"seed={cfg.seed}: sampling seeds are non-negative integers; set seed=N with N >= 0.")
    models = model_configs(cfg)
    for i, model_cfg in enumerate(models):
        key = "model" if i == 0 else f"eval.compare_to={cfg.eval.compare_to}"
        if not _is_shapes_model(model_cfg):
            raise BenchError(f"{key}: model {model_cfg.name} is not a shapes-world model; the edit job scores edits "
                             f"with the shapes world's judge. Use model=muse-shapes (trained, model.world) or "
                             f"model=muse-shapes-random (its architecture with random weights).")
        if resolution not in list(model_cfg.resolution):
            raise BenchError(f"edit.resolution={resolution} is not one of {key}'s resolutions "
                             f"{list(model_cfg.resolution)}.")
    return [kind for task in tasks for kind in TASKS[task]], models


def load_models(models: list[Any], device: str) -> list[Any]:
    """Each model's pipeline (a world trains into the cache first if absent); a checkpoint whose pipeline is not
    the shapes world's architecture is a BenchError."""
    from bench.models.muse import load_pipeline

    pipes = []
    for model_cfg in models:
        pipe = load_pipeline(model_cfg, device)
        if pipe.config.name != SHAPES_PRESET:
            raise BenchError(f"model {model_cfg.name} loads a {pipe.config.name} pipeline, not the shapes world's "
                             f"{SHAPES_PRESET}: the edit job runs shapes-world models only.")
        pipes.append(pipe)
    return pipes


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _metric(value: float | None, stderr: float | None, protocol: dict[str, Any], *, higher_is_better: bool,
            weights: str, resolution: int, name: str) -> dict[str, Any]:
    entry = MetricEntry(value, higher_is_better, stderr, protocol).as_dict()
    entry["protocol"]["comparable_to_published"] = comparable_to_published(
        name, entry, dataset=DATASET, model_weights=weights, resolution=resolution)
    return entry


def editing_metrics(rows: dict[str, list[dict[str, Any]]], protocols: dict[str, dict[str, Any]],
                    weights: str, resolution: int) -> dict[str, dict[str, Any]]:
    """results.json metric entries from each kind's trial rows (see the module docstring); `protocols` holds each
    kind's protocol, which every entry of the kind carries with its own n and what it measures."""
    import numpy as np

    metrics: dict[str, dict[str, Any]] = {}
    for kind, kind_rows in rows.items():
        n = len(kind_rows)
        base = protocols[kind] | {"n": n}

        def add(name: str, value, stderr, measures: str, higher_is_better: bool = True) -> None:
            full = f"{kind}_{name}"
            metrics[full] = _metric(value, stderr, base | {"measures": measures}, higher_is_better=higher_is_better,
                                    weights=weights, resolution=resolution, name=full)

        add("success", *rate([r["success"] for r in kind_rows]), "success rate: " + SUCCESS[kind] +
            " (binomial stderr)")
        for condition in CONDITIONS[kind]:
            add(condition, *rate([r[condition] for r in kind_rows]), f"share of trials with {condition}")
        add("reconstruction_kept", *rate([r["reconstruction_kept"] for r in kind_rows]),
            "share of trials whose original, through the VQGAN alone, the judge reads the kept (or old) object from")
        shares = np.array([r["outside_changed"] for r in kind_rows], dtype=float)
        add("outside_changed", float(shares.mean()), float(shares.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            f"mean share of the pixels left alone (a token's width from the edited region) that differ from the VQ "
            f"reconstruction of the original by more than {CHANGE_LEVELS} levels", higher_is_better=False)
        add("outside_change", max(int(r["outside_change"]) for r in kind_rows), None,
            "largest difference (8-bit levels) over every trial's pixels left alone from the VQ reconstruction",
            higher_is_better=False)
    return metrics


def edit_model(pipe, model_cfg: Any, trials: dict[str, list], settings: EditSettings, cfg: DictConfig,
               run_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Run every trial on one model; returns (rows by kind, examples by kind) and writes the examples' images."""
    rows: dict[str, list[dict[str, Any]]] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for kind, kind_trials in trials.items():
        rows[kind], examples[kind] = [], []
        for i, trial in enumerate(tqdm(kind_trials, desc=f"{model_cfg.name} {kind}", unit="trial", dynamic_ncols=True)):
            done = run_trial(pipe, trial, settings, seed=cfg.seed, split=cfg.edit.split)
            rows[kind].append(done.row)
            if i < cfg.edit.examples:
                folder = Path(EDITING_DIR) / model_cfg.name / kind
                files = {}
                for part, image in (("original", done.original), ("mask", done.mask),
                                    ("asked", target_image(trial)), ("result", done.result)):
                    files[part] = str(folder / f"{trial.scene_index}-{part}.png")
                    atomic_write_bytes(run_dir / files[part], _png(image))
                examples[kind].append({"scene": trial.scene_index, "prompt": trial.prompt,
                                       "success": done.row["success"], "files": files})
    return rows, examples


def run_edit(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """The edit job (see the module docstring): every setting checked, then each model's trials, results.json
    (returned) and report.md."""
    from bench.models.generators import resolve_device
    from bench.report.document import report_run_dir

    kinds, models = check_edit_settings(cfg)
    run_dir = Path(run_dir)
    settings = EditSettings(resolution=cfg.edit.resolution, guidance_scale=cfg.edit.guidance_scale,
                            iterations=cfg.edit.iterations, resample_fraction=cfg.edit.resample_fraction,
                            top_k=cfg.edit.top_k)
    trials = {kind: make_trials(kind, cfg.edit.trials, cfg.edit.resolution, cfg.edit.split) for kind in kinds}
    device = resolve_device(cfg.device)
    pipes = load_models(models, device)
    promote_record(run_dir)  # every check passed: the run commits to this folder

    evaluations = []
    for model_cfg, pipe in zip(models, pipes):
        weights = model_weights(model_cfg)
        sampler = pipe.sampler_settings(settings.resolution, settings.guidance_scale)
        protocols = {kind: {"task": kind, "trials": cfg.edit.trials, "split": cfg.edit.split, "seed": cfg.seed,
                            "trial_seeds": "seed + scene index", **settings.protocol(kind),
                            "guidance": sampler["base"]["guidance_scale"]} for kind in kinds}
        rows, examples = edit_model(pipe, model_cfg, trials, settings, cfg, run_dir)
        write_jsonl(run_dir / EDITING_DIR / model_cfg.name / "trials.jsonl", [r for k in kinds for r in rows[k]])
        metrics = editing_metrics(rows, protocols, weights, settings.resolution)
        for kind in kinds:
            log.info("%s %s: success %.3f (n=%d)", model_cfg.name, kind, metrics[f"{kind}_success"]["value"],
                     len(rows[kind]))
        n = sum(len(r) for r in rows.values())
        entry = evaluation(
            model=model_cfg.name, dataset=DATASET, weights=weights, requested=cfg.edit.trials * len(kinds),
            effective=n, metrics=metrics,
            protocol={"resolution": settings.resolution, "seed": cfg.seed,
                      "guidance": sampler["base"]["guidance_scale"], "guidance_t": sampler["base"]["guidance_t"],
                      "guidance_convention": GUIDANCE_CONVENTION, "sampler": sampler, "split": cfg.edit.split,
                      "trials": cfg.edit.trials, "trial_seeds": "seed + scene index",
                      "trials_file": f"{EDITING_DIR}/{model_cfg.name}/trials.jsonl"})
        entry["editing"] = {"kinds": kinds, "examples": examples}
        evaluations.append(entry)
    results = build_results(experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
                            provenance=collect_provenance(device), evaluations=evaluations, overrides=overrides)
    path = write_results(run_dir, results)
    log.info("report: %s", report_run_dir(run_dir))
    return path
