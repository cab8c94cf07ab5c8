"""What a metric declares, and what it reads: the one mapping that scoring (bench/metrics/scoring.py: which
feature networks to load) and evaluation (bench/metrics/evaluate.py: what to compute, what to report as skipped)
both read, and the run's and each model's gathered features as a metric sees them (Scoring, ModelScores).

Each metric module defines one `Metric` and bench/metrics/__init__.py registers it by name (the names of
`eval.metrics`). Adding a metric is one module that defines it, one registry line and a test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.results import MetricEntry
from bench.metrics.reference_cache import reference_features

log = logging.getLogger(__name__)

# The feature networks a metric can read (fields of bench.metrics.scoring.MetricTools, keys of eval.*):
# "fid" is Inception (or an injected stand-in), "clip" is CLIP score's CLIP, "cmmd" is CMMD's own CLIP, and "judge"
# is no network at all but the shapes world's exact judge (bench/shapes/judge.py), which reads each image's pixels
# into its verdict on the prompt; it needs no weights and no config node.
NETWORKS = ("fid", "clip", "cmmd", "judge")


@dataclass(frozen=True, eq=False)
class Metric:
    """A metric as the scorer sees it.

    `network`: the feature network it reads (one of NETWORKS; "judge" is the programmatic reader of the shapes
    world, which reads the images themselves); `also_reads`: any further ones (a metric that sets two readers of the
    same images against each other reads both; `networks` lists them all). `pairwise`: it compares the run's model
    with a second one (eval.compare_to), so a run without one is refused before any image is made.
    `needs_references`: whether it compares with
    reference images (without any it is reported as skipped and its network is not loaded). `entries`: the
    results.json entries it writes, each with higher_is_better; when it cannot be computed, each is written
    with no value and the reason, so nothing requested is left out silently. `score_model(scoring, model)`
    returns the entries for one model (bench.metrics.evaluate.ModelScores) and may add to its evaluation;
    `score_run(scoring, models)` runs once after every model is scored (tables over all models, comparisons).
    """

    name: str
    network: str
    entries: Mapping[str, bool]
    needs_references: bool = False
    also_reads: tuple[str, ...] = ()
    pairwise: bool = False
    score_model: Callable[[Any, Any], Mapping[str, Any]] | None = None
    score_run: Callable[[Any, list[Any]], None] | None = None

    def __post_init__(self) -> None:
        for network in self.networks:
            if network not in NETWORKS:
                raise ValueError(f"metric {self.name}: network {network!r} is not one of {NETWORKS}")
        if not self.entries:
            raise ValueError(f"metric {self.name} declares no results.json entries")

    @property
    def networks(self) -> tuple[str, ...]:
        """Every feature network the metric reads: `network`, then `also_reads`."""
        return (self.network, *self.also_reads)


@dataclass
class ModelScores:
    """One model's gathered features (a merged bench.metrics.scoring.SampleScorer state), its scored samples and
    its evaluation entry of results.json, which the metrics fill."""

    name: str
    state: dict[str, Any]
    samples: list[Any]
    entry: dict[str, Any]
    n_generated: int  # samples every requested feature covers (bench.metrics.scoring.effective_count)

    @property
    def common(self) -> dict[str, Any]:
        """What every metric of this model records first in its protocol."""
        return {"n_generated": self.n_generated}

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
