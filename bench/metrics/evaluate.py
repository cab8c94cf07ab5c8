"""From gathered per-sample features to the metrics of results.json: each requested metric of the registry
(bench/metrics/__init__.py) is computed by its own module, in registry order, or reported as skipped.

Reference features (FID's Inception features, CMMD's CLIP embeddings of the reference images) are computed once
per run and cached across runs under a key of every choice that moves them, the images' content included
(bench/metrics/reference_cache.py, bench/data/references.py); each metric's protocol records the key and
whether the cache was hit. A metric that cannot be computed (no reference images configured, its feature network unavailable) is reported
with a null value and the reason, never left out silently. Every entry's protocol says whether it is comparable
with the published figure it would be put beside (bench/metrics/published.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench.core.results import MetricEntry
from bench.metrics import METRICS
from bench.metrics.metric import ModelScores, Scoring
from bench.metrics.published import comparable_to_published
from bench.metrics.scoring import effective_count

log = logging.getLogger(__name__)

NO_REFERENCES = (
    "no reference images: set dataset.reference_dir to a folder of reference images (for COCO, val2014; for CC3M, "
    "img2dataset output; muse-bench job=prepare dataset=... fetches them where online)")


def skip_reasons(metrics: list[str], *, tools: Any, has_references: bool) -> dict[str, str]:
    """The requested metrics that cannot be computed, each with the reason: no reference images for a metric
    that needs them, or a feature network it reads unavailable (bench.metrics.scoring.MetricTools.unavailable)."""
    skip = {}
    for name in metrics:
        metric = METRICS[name]
        if metric.needs_references and not has_references:
            skip[name] = NO_REFERENCES
        else:
            missing = [n for n in metric.networks if n in tools.unavailable]
            if missing:
                skip[name] = tools.unavailable[missing[0]]
    return skip


def score_models(evaluations: list[dict[str, Any]], scored: dict[str, tuple[dict, list]], *, tools: Any, cfg: Any,
                 metrics: list[str], references: Any, resolution: int, run_dir: Path) -> None:
    """Fill the `metrics` of each model's evaluation at `resolution` (in place); write the PartiPrompts
    breakdown table (parti_breakdown.csv) into run_dir when asked for.

    `metrics` are the requested ones: those that need reference images when `references` is None, or a feature
    network that `tools` could not load, are reported as skipped with the reason, under every entry they would
    have written. The others are computed in registry order, each where its feature network is loaded.
    """
    skip = skip_reasons(metrics, tools=tools, has_references=references is not None)
    run = [METRICS[name] for name in METRICS if name in metrics and name not in skip
           and all(getattr(tools, n) is not None for n in METRICS[name].networks)]
    scoring = Scoring(tools, cfg, references, resolution, run_dir)
    by_model = {e["model"]: e for e in evaluations if e["protocol"]["resolution"] == resolution}
    models = [ModelScores(name, state, samples, by_model[name], effective_count(state))
              for name, (state, samples) in scored.items()]
    for model in models:
        model.entry["n_samples"]["effective"] = effective_count(model.state)
        if model.state["failures"]:
            model.entry["excluded"] = [{"file": f, "reason": r} for f, r in model.state["failures"]]
        for name, reason in skip.items():
            model.add({entry: MetricEntry.skipped(reason, higher) for entry, higher in METRICS[name].entries.items()})
        for metric in run:
            if metric.score_model is not None:
                model.add(metric.score_model(scoring, model))
    for metric in run:
        if metric.score_run is not None:
            metric.score_run(scoring, models)
    for entry in by_model.values():
        _mark_comparability(entry, dataset=cfg.dataset.name, resolution=resolution)


def _mark_comparability(entry: dict[str, Any], *, dataset: str, resolution: int) -> None:
    """Add comparable_to_published to the protocol of every metric entry of an evaluation (bench/metrics/published.py)."""
    for name, metric in entry["metrics"].items():
        record = comparable_to_published(name, metric, dataset=dataset, model_weights=entry.get("weights", "random"),
                                         resolution=resolution)
        # A copy: some entries share one protocol dict (win_rate, loss_rate, win_ratio).
        metric["protocol"] = {**(metric.get("protocol") or {}), "comparable_to_published": record}
