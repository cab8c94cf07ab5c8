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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.results import MetricEntry
from bench.metrics import METRICS
from bench.metrics.published import comparable_to_published
from bench.metrics.reference_cache import reference_features
from bench.metrics.scoring import effective_count

log = logging.getLogger(__name__)

NO_REFERENCES = (
    "no reference images: set dataset.reference_dir to a folder of reference images (for COCO, val2014; for CC3M, "
    "img2dataset output; muse-bench job=prepare dataset=... fetches them where online)")


@dataclass
class ModelScores:
    """One model's gathered features (a merged bench.metrics.scoring.SampleScorer state), its scored samples and
    its evaluation entry of results.json, which the metrics fill."""

    name: str
    state: dict[str, Any]
    samples: list[Any]
    entry: dict[str, Any]

    @property
    def common(self) -> dict[str, Any]:
        """What every metric of this model records first in its protocol."""
        return {"n_generated": effective_count(self.state)}

    def add(self, entries: Mapping[str, MetricEntry]) -> None:
        """Put metric entries into the evaluation, in their results.json form."""
        self.entry["metrics"].update({name: e.as_dict() for name, e in entries.items()})


@dataclass
class Scoring:
    """What the metrics of one run read: the feature networks (bench.metrics.scoring.MetricTools), the config,
    the reference images (None when there are none), the evaluation resolution and the run directory."""

    tools: Any
    cfg: Any
    references: Any
    resolution: int
    run_dir: Path
    _references: dict[tuple[str, int], tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    def reference(self, extractor: Any, size: int) -> tuple[Any, dict[str, Any]]:
        """(reference features for `extractor` at `size`, what a metric's protocol records about them), computed
        once per run (FID and KID share them) and cached across runs (bench/metrics/reference_cache.py)."""
        key = (extractor.name, size)
        if key not in self._references:
            self._references[key] = _reference(extractor, self.references, self.cfg, size)
        return self._references[key]


def _reference(extractor, references, cfg, resolution: int) -> tuple[Any, dict[str, Any]]:
    key = {"dataset": cfg.dataset.name, **references.protocol}
    result = reference_features(
        [(image.key, image.read) for image in references.images], extractor, resolution=resolution, key=key,
        cache_dir=Path(cfg.eval.cache_dir).expanduser(), batch_size=cfg.eval.fid.batch_size,
    )
    n_read = len(result.keys) + len(result.failures)
    note: dict[str, Any] = {
        "reference": references.protocol, "reference_stats": references.stats,
        "reference_cache": result.cache_record(),
        "reference_smaller_than_resolution": {"count": result.n_smaller, "of": n_read, "resolution": resolution},
    }
    if result.failures:
        log.warning("%d reference images could not be read and were left out, e.g. %s", len(result.failures),
                    result.failures[0])
        note["reference_excluded"] = [{"file": str(f), "reason": r} for f, r in result.failures]
    if result.n_smaller:
        log.warning(
            "%d of %d reference images are smaller than %d px (their centre square) and were upsampled for %s: "
            "their features are of blurred images. Download the references at the evaluation resolution or above "
            "(muse-bench job=prepare with the run's resolutions).", result.n_smaller, n_read, resolution,
            extractor.name)
    return result, note


def skip_reasons(metrics: list[str], *, tools: Any, has_references: bool) -> dict[str, str]:
    """The requested metrics that cannot be computed, each with the reason: no reference images for a metric
    that needs them, or its feature network unavailable (bench.metrics.scoring.MetricTools.unavailable)."""
    skip = {}
    for name in metrics:
        metric = METRICS[name]
        if metric.needs_references and not has_references:
            skip[name] = NO_REFERENCES
        elif metric.network in tools.unavailable:
            skip[name] = tools.unavailable[metric.network]
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
           and getattr(tools, METRICS[name].network) is not None]
    scoring = Scoring(tools, cfg, references, resolution, run_dir)
    by_model = {e["model"]: e for e in evaluations if e["protocol"]["resolution"] == resolution}
    models = [ModelScores(name, state, samples, by_model[name]) for name, (state, samples) in scored.items()]
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
