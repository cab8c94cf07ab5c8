"""Precision, recall, density and coverage of generated against reference features (Kynkaanniemi et al. 2019,
"Improved Precision and Recall Metric for Assessing Generative Models"; Naeem et al. 2020, "Reliable Fidelity and
Diversity Metrics for Generative Models").

Each sample's neighbourhood is the ball around it out to its k-th nearest neighbour in its own set (itself not
counted). With real (reference) features R, fake (generated) features F and r(x) that radius:

    precision = share of f in F inside some real ball:            exists r in R, ||f - r|| < r(r)
    recall    = share of r in R inside some fake ball:            exists f in F, ||r - f|| < r(f)
    density   = (1 / k) * mean over f in F of how many real balls hold it
    coverage  = share of r in R whose own ball holds some fake:   min over f of ||r - f|| < r(r)

Precision and density ask whether generated samples look real (fidelity; density can exceed 1 where samples crowd
into dense real regions); recall and coverage whether the references' variety is reached (diversity). The
definitions and conventions (Euclidean distance, strict <, the k-th neighbour found among the k + 1 nearest
including the point itself) are those of the authors' code, clovaai/generative-evaluation-prdc (prdc.compute_prdc),
whose results this module's test reproduces on the same features. Naeem et al. recommend k = 5 with 10,000 samples
a side; Kynkaanniemi et al. use k = 3. Differences from the reference, none of which moves a value beyond
rounding: float64, and distances computed a block of rows at a time so memory stays bounded at 30K x 30K.

The features are FID's (`eval.fid`: Inception, or any extractor injected there, e.g. the shapes world's CLIP
image tower), read from the same generated features and the same reference-feature cache as FID and KID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import MetricEntry
from bench.metrics.fid import fid_protocol
from bench.metrics.metric import Metric, ModelScores, Scoring

ENTRIES = {"precision": True, "recall": True, "density": True, "coverage": True}
# The sample count per side at which the authors report their numbers; below it results are flagged.
PUBLISHED_SAMPLES = 10_000
REFERENCE_CODE = "clovaai/generative-evaluation-prdc 0.2, prdc.compute_prdc"
_BLOCK_ROWS = 1024


def _distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(x), len(y)], as |x|^2 + |y|^2 - 2 x.y (clipped at 0 against rounding)."""
    d2 = np.einsum("nd,nd->n", x, x)[:, None] + np.einsum("nd,nd->n", y, y)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.maximum(d2, 0.0))


def _blocks(n: int, block: int):
    for start in range(0, n, block):
        yield slice(start, min(n, start + block))


def nearest_neighbour_radii(features: np.ndarray, k: int, *, block: int = _BLOCK_ROWS) -> np.ndarray:
    """Each row's distance to its k-th nearest neighbour among the rows (itself, at distance 0, not counted)."""
    radii = np.empty(len(features))
    for rows in _blocks(len(features), block):
        d = _distances(features[rows], features)
        # The k + 1 smallest include the row itself: their largest is the k-th neighbour's distance.
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def _checked(name: str, features: Any, k: int) -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise BenchError(f"precision/recall needs [N, D] {name} features; got shape {arr.shape}.")
    if len(arr) <= k:
        raise BenchError(f"precision/recall with eval.prdc.nearest_k={k} needs more than {k} {name} samples; "
                         f"got {len(arr)}. Generate more images or lower eval.prdc.nearest_k.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} features contain NaN or infinity")
    return arr


def prdc(real: Any, fake: Any, nearest_k: int = 5, *, block: int = _BLOCK_ROWS) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` [N, D] against `real` [M, D] (see the module docstring).
    `block` bounds memory: block x max(N, M) distances at a time."""
    if nearest_k < 1:
        raise BenchError(f"eval.prdc.nearest_k must be at least 1, got {nearest_k}.")
    real, fake = _checked("reference", real, nearest_k), _checked("generated", fake, nearest_k)
    if real.shape[1] != fake.shape[1]:
        raise BenchError(f"precision/recall: reference features have {real.shape[1]} dimensions, generated ones "
                         f"{fake.shape[1]}; both must come from the same feature network.")
    real_radii = nearest_neighbour_radii(real, nearest_k, block=block)
    fake_radii = nearest_neighbour_radii(fake, nearest_k, block=block)
    in_real_balls = np.empty(len(fake))  # per fake: how many real balls hold it
    for rows in _blocks(len(fake), block):
        in_real_balls[rows] = (_distances(fake[rows], real) < real_radii[None, :]).sum(1)
    recalled = np.empty(len(real), dtype=bool)  # per real: inside some fake ball
    covered = np.empty(len(real), dtype=bool)  # per real: its own ball holds some fake
    for rows in _blocks(len(real), block):
        d = _distances(real[rows], fake)
        recalled[rows] = (d < fake_radii[None, :]).any(1)
        covered[rows] = d.min(1) < real_radii[rows]
    return {"precision": float((in_real_balls > 0).mean()), "recall": float(recalled.mean()),
            "density": float(in_real_balls.mean() / nearest_k), "coverage": float(covered.mean())}


def prdc_metrics(real: Any, fake: Any, *, nearest_k: int = 5, protocol: Mapping[str, Any] | None = None,
                 min_samples: int = PUBLISHED_SAMPLES) -> dict[str, MetricEntry]:
    """The four results.json entries (higher is better; stderr null). `protocol` is the feature network's (what
    extracted the features, how images were resized) plus anything the caller records; this adds k, the counts,
    the definitions and the reference implementation, and a note below `min_samples` a side."""
    values = prdc(real, fake, nearest_k)
    n_real, n_fake = len(real), len(fake)
    proto: dict[str, Any] = {
        **dict(protocol or {}),
        "nearest_k": int(nearest_k),
        "n_generated": int(n_fake),
        "n_reference": int(n_real),
        "distance": "euclidean, float64",
        "implementation": f"as {REFERENCE_CODE} (strict <, k-th neighbour excluding the sample itself)",
        "min_samples": int(min_samples),
        "below_minimum": bool(min(n_real, n_fake) < min_samples),
    }
    if proto["below_minimum"]:
        proto["note"] = (
            f"{min(n_real, n_fake)} samples on one side (< {min_samples}, the count Naeem et al. report at): the "
            "k-NN balls of a small set are wide, so precision and recall are biased upwards and coverage moves "
            "with the counts; compare only at equal counts and k.")
    definitions = {
        "precision": "share of generated samples inside some reference k-NN ball (Kynkaanniemi et al. 2019)",
        "recall": "share of reference samples inside some generated k-NN ball (Kynkaanniemi et al. 2019)",
        "density": "mean count of reference k-NN balls holding a generated sample, over k (Naeem et al. 2020)",
        "coverage": "share of reference samples whose k-NN ball holds a generated sample (Naeem et al. 2020)",
    }
    return {name: MetricEntry(values[name], True, None, {**proto, "definition": definitions[name]})
            for name in ENTRIES}


# ---- the prdc metric of a run ----------------------------------------------------------------------------------


def _score_prdc(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    if model.state["fid"] is None:
        raise BenchError(f"No readable samples of {model.name} to score.")
    reference, note = scoring.reference(scoring.tools.fid, scoring.resolution)
    protocol = {**fid_protocol(scoring.tools.fid, resolution=scoring.resolution), **model.common, **note}
    cfg = scoring.cfg.eval.prdc
    return prdc_metrics(reference.features, model.state["fid"], nearest_k=cfg.nearest_k, protocol=protocol,
                        min_samples=cfg.min_samples)


PRDC = Metric("prdc", network="fid", entries=ENTRIES, needs_references=True, score_model=_score_prdc)
