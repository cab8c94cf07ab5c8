"""What a metric declares: the one mapping that scoring (bench/metrics/scoring.py: which feature networks to
load) and evaluation (bench/metrics/evaluate.py: what to compute, what to report as skipped) both read.

Each metric module defines one `Metric` and bench/metrics/__init__.py registers it by name (the names of
`eval.metrics`). Adding a metric is one module that defines it, one registry line and a test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The feature networks a metric can read (fields of bench.metrics.scoring.MetricTools, keys of eval.*):
# "fid" is Inception (or an injected stand-in), "clip" is CLIP score's CLIP, "cmmd" is CMMD's own CLIP.
NETWORKS = ("fid", "clip", "cmmd")


@dataclass(frozen=True, eq=False)
class Metric:
    """A metric as the scorer sees it.

    `network`: the feature network it reads (one of NETWORKS). `needs_references`: whether it compares with
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
    score_model: Callable[[Any, Any], Mapping[str, Any]] | None = None
    score_run: Callable[[Any, list[Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"metric {self.name}: network {self.network!r} is not one of {NETWORKS}")
        if not self.entries:
            raise ValueError(f"metric {self.name} declares no results.json entries")
