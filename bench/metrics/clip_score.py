"""CLIP score: the cosine between each image's and its prompt's CLIP embeddings (bench/metrics/clip_model.py), in
its two conventions, and the `clip_score` metric.

The Muse paper reports CLIP score as a plain cosine (0.32 on COCO-30K); torchmetrics and most later papers
report 100 * max(cos, 0). Both come out of `clip_score_metrics`, each with a protocol that records the
backbone, the weights, the image preprocessing and the prompt truncation, since each of them moves the number.
bench.testing converts the tiny CLIP to transformers, so tests cross-check these numbers with torchmetrics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import MetricEntry
from bench.metrics.bootstrap import resample_groups
from bench.metrics.metric import Metric, ModelScores, Scoring


def clip_score_metrics(cosines: np.ndarray, *, truncated: int, protocol: Mapping[str, Any], bootstrap: int,
                       seed: int, prompts: Sequence[Hashable] | None = None) -> dict[str, MetricEntry]:
    """results.json entries "clip_score" (mean cosine, the Muse paper's convention) and "clip_score_x100"
    (mean of 100 * max(cos, 0) per sample: CLIPScore of Hessel et al. 2021 with w = 100, torchmetrics'
    documented formula).

    `prompts` names the prompt of each sample (e.g. its dataset index); None = every sample its own prompt.
    The value is the mean over samples. stderr is clustered by prompt, because the K images of one prompt are
    not independent draws (they share the prompt's difficulty): with `bootstrap` > 0, the standard deviation
    of the mean over that many resamples of the prompts with replacement, each bringing all its images (drawn
    from `seed`); else the std of the per-prompt means / sqrt(n_prompts), as bench.metrics.parti.group_means. With one
    image per prompt both are the usual per-sample errors. null for a single prompt. torchmetrics 1.9's
    CLIPScore.compute clamps the mean instead of each sample (max(mean(100 cos), 0)); the two agree when no
    cosine is negative, and the protocol counts the negative ones (n_negative).
    """
    cos = np.asarray(cosines, dtype=np.float64)
    if cos.ndim != 1 or cos.size == 0:
        raise BenchError("CLIP score needs at least one scored sample; none were scored.")
    if not np.all(np.isfinite(cos)):
        raise ValueError("CLIP cosines contain NaN or infinity")
    x100 = 100.0 * np.maximum(cos, 0.0)
    n = cos.size
    if prompts is None:
        cluster = np.arange(n)
    else:
        if len(prompts) != n:
            raise ValueError(f"{n} cosines but {len(prompts)} prompt ids: one per sample is needed")
        first_seen: dict[Hashable, int] = {}
        cluster = np.array([first_seen.setdefault(p, len(first_seen)) for p in prompts], dtype=np.int64)
    n_prompts = int(cluster.max()) + 1
    counts = np.bincount(cluster, minlength=n_prompts).astype(np.float64)
    sums = [np.bincount(cluster, weights=v, minlength=n_prompts) for v in (cos, x100)]
    if n_prompts < 2:
        stderrs: tuple[float | None, float | None] = (None, None)
        method = "none (one prompt)"
    elif bootstrap > 0:
        idx = resample_groups(n_prompts, bootstrap, seed)
        totals = counts[idx].sum(axis=1)
        stderrs = tuple(float((s[idx].sum(axis=1) / totals).std(ddof=1)) for s in sums)  # type: ignore[assignment]
        method = (f"bootstrap over prompts: {bootstrap} resamples of the {n_prompts} prompts with replacement, each "
                  f"with all its images (seed {seed})")
    else:
        stderrs = tuple(float((s / counts).std(ddof=1) / np.sqrt(n_prompts)) for s in sums)  # type: ignore[assignment]
        method = "over prompts: std of the per-prompt means / sqrt(n_prompts)"
    common = {**protocol, "n": n, "n_prompts": n_prompts, "n_truncated": int(truncated), "stderr_method": method}
    return {
        "clip_score": MetricEntry(float(cos.mean()), True, stderrs[0], {**common, "scale": "cosine (Muse paper)"}),
        "clip_score_x100": MetricEntry(
            float(x100.mean()), True, stderrs[1],
            {**common, "scale": "100 * max(cos, 0) per sample, then the mean (torchmetrics' formula)",
             "n_negative": int((cos < 0).sum())}),
    }


# ---- the clip_score metric of a run --------------------------------------------------------------------------


def cosines(state: Mapping[str, Any]) -> dict[tuple[int, int], float]:
    """The image-prompt CLIP cosine of every scored sample of a scorer state (bench.metrics.scoring), by
    (dataset index, replica): what clip_score, the PartiPrompts breakdowns and the win rate read."""
    return {key: cos for key, (_, cos) in state["clip"].items()}


def _score_clip(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    cos = cosines(model.state)
    return clip_score_metrics(np.array(list(cos.values())), truncated=len(model.state["truncated"]),
                              protocol=scoring.tools.clip.protocol, bootstrap=scoring.cfg.eval.bootstrap,
                              seed=scoring.cfg.seed, prompts=[k[0] for k in cos])


CLIP_SCORE = Metric("clip_score", network="clip", entries={"clip_score": True, "clip_score_x100": True},
                    score_model=_score_clip)


