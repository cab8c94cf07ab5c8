"""From gathered per-sample features to the metrics of results.json: FID, KID, CLIP score, CMMD, the
PartiPrompts breakdowns and the pairwise win rate.

Reference features (FID's Inception features, CMMD's CLIP embeddings of the reference images) are computed once
per run and cached across runs under a key of every choice that moves them, the images' content included
(bench/metrics/fid.py, bench/data/references.py); each metric's protocol records the key and whether the cache was hit. A
metric that cannot be computed (no reference images configured, its feature network unavailable) is reported
with a null value and the reason, never left out silently. Every entry's protocol says whether it is comparable
with the published figure it would be put beside (bench/metrics/published.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import write_csv

log = logging.getLogger(__name__)

NO_REFERENCES = (
    "no reference images: set dataset.reference_dir to a folder of reference images (for COCO, val2014; for CC3M, "
    "img2dataset output; muse-bench job=prepare dataset=... fetches them where online)")
# The results.json entries of each requested metric that can be reported as skipped.
_ENTRIES = {"fid": ("fid",), "kid": ("kid",), "clip_score": ("clip_score", "clip_score_x100"), "cmmd": ("cmmd",)}


def skipped(reason: str, higher_is_better: bool) -> dict[str, Any]:
    """A metric entry with no value, saying why."""
    return {"value": None, "higher_is_better": higher_is_better, "stderr": None, "protocol": {"skipped": reason}}


class _ClipImages:
    """A CLIP scorer seen as a feature extractor of uint8 arrays, for bench.metrics.fid.reference_features."""

    # What identifies the embeddings in the reference cache key: the network, its weights and its preprocessing.
    _IDENTITY = ("backend", "target", "arch", "pretrained", "checkpoint_sha256", "init_seed", "image_preprocess")

    def __init__(self, scorer: Any):
        self.scorer = scorer
        identity = {k: scorer.protocol[k] for k in self._IDENTITY if k in scorer.protocol}
        self.name = "CLIP image embedding: " + json.dumps(identity, sort_keys=True, default=str)
        self.mode = "clip-preprocess"
        self.device = str(getattr(scorer, "device", "cpu"))

    def __call__(self, images):
        from PIL import Image

        return np.asarray(self.scorer.image_embeddings([Image.fromarray(a) for a in images]))


def _reference(extractor, references, cfg, resolution: int) -> tuple[Any, dict[str, Any]]:
    """(reference features for `extractor` at `resolution`, what a metric's protocol records about them)."""
    from bench.metrics.fid import reference_features

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


def score_models(evaluations: list[dict[str, Any]], scored: dict[str, tuple[dict, list]], *, tools: Any, cfg: Any,
                 metrics: list[str], references: Any, resolution: int, run_dir: Path) -> None:
    """Fill the `metrics` of each model's evaluation at `resolution` (in place); write the PartiPrompts
    breakdown and win-rate tables (parti_breakdown.csv, win_rate.csv) into run_dir when asked for.

    `metrics` are the requested ones: those that need reference images when `references` is None, or a feature
    network that `tools` could not load, are reported as skipped with the reason.
    """
    from bench.metrics.scoring import REFERENCE_METRICS, TOOL_OF, effective_count

    seed, bootstrap = cfg.seed, cfg.eval.bootstrap
    skip = {}
    for name in metrics:
        if name in REFERENCE_METRICS and references is None:
            skip[name] = NO_REFERENCES
        elif TOOL_OF[name] in tools.unavailable:
            skip[name] = tools.unavailable[TOOL_OF[name]]
    ref_fid = ref_cmmd = None
    if references is not None:
        if tools.fid is not None and {"fid", "kid"} & set(metrics):
            ref_fid = _reference(tools.fid, references, cfg, resolution)
        if tools.cmmd is not None and "cmmd" in metrics:
            # As google-research cmmd's io_util: each reference centre-cropped and resized to the CLIP input size.
            cmmd_size = tools.cmmd.image_size or resolution
            ref_cmmd = _reference(_ClipImages(tools.cmmd), references, cfg, cmmd_size)
    by_model = {e["model"]: e for e in evaluations if e["protocol"]["resolution"] == resolution}
    clip_cosines: dict[str, dict[tuple[int, int], float]] = {}
    breakdown_rows = []
    for model, (state, samples) in scored.items():
        entry = by_model[model]
        entry["n_samples"]["effective"] = effective_count(state)
        if state["failures"]:
            entry["excluded"] = [{"file": f, "reason": r} for f, r in state["failures"]]
        out = entry["metrics"]
        common = {"n_generated": effective_count(state)}
        for name, reason in skip.items():
            out.update({n: skipped(reason, n.startswith("clip")) for n in _ENTRIES.get(name, ())})
        if ref_fid is not None:
            from bench.metrics.fid import fid_metric, fid_protocol, kid_metric

            gen = state["fid"]
            if gen is None:
                raise BenchError(f"No readable samples of {model} to score.")
            fid_common = {**fid_protocol(tools.fid, resolution=resolution), **common, **ref_fid[1]}
            if "fid" in metrics:
                out["fid"] = fid_metric(gen, ref_fid[0].features, protocol=fid_common,
                                        min_samples=cfg.eval.fid.min_samples, bootstrap=bootstrap, seed=seed,
                                        groups=[k[0] for k in state["fid_keys"]])
            if "kid" in metrics:
                out["kid"] = kid_metric(gen, ref_fid[0].features, protocol=fid_common,
                                        min_samples=cfg.eval.fid.kid_min_samples,
                                        num_subsets=cfg.eval.fid.kid_subsets,
                                        max_subset_size=cfg.eval.fid.kid_subset_size, seed=seed)
        if tools.clip is not None:
            cos = {k: c for k, (_, c) in state["clip"].items()}
            clip_cosines[model] = cos
            if "clip_score" in metrics:
                from bench.metrics.clip_score import clip_score_metrics

                out.update(clip_score_metrics(np.array(list(cos.values())), truncated=len(state["truncated"]),
                                              protocol=tools.clip.protocol, bootstrap=bootstrap, seed=seed,
                                              prompts=[k[0] for k in cos]))
            if "parti" in metrics:
                from bench.metrics.parti import group_means

                rows = _rows(samples, cfg.seed, cos)
                values = [r["clip_cosine"] for r in rows]
                entry["breakdown"] = {by: group_means(rows, values, by) for by in ("category", "challenge")}
                for by, groups in entry["breakdown"].items():
                    breakdown_rows += [{"model": model, "by": by, **g} for g in groups]
        if ref_cmmd is not None:
            from bench.data.images import REFERENCE_RESIZE
            from bench.metrics.cmmd import REFERENCE_PREPROCESS, cmmd_metric

            if not state["cmmd"]:
                raise BenchError(f"No readable samples of {model} to score.")
            out["cmmd"] = cmmd_metric(
                np.stack(list(state["cmmd"].values())), ref_cmmd[0].features, sigma=cfg.eval.cmmd.sigma,
                scale=cfg.eval.cmmd.scale, max_relative_bias=cfg.eval.cmmd.max_relative_bias,
                protocol={**tools.cmmd.protocol, **common, **ref_cmmd[1],
                          "reference_resize": {**REFERENCE_RESIZE, "size": [cmmd_size, cmmd_size],
                                               "as": REFERENCE_PREPROCESS}})
    if breakdown_rows:
        write_csv(run_dir / "parti_breakdown.csv", breakdown_rows)
    if "win_rate" in metrics and tools.clip is not None:
        _win_rate(by_model, scored, clip_cosines, cfg, run_dir)
    for entry in by_model.values():
        _mark_comparability(entry, dataset=cfg.dataset.name, resolution=resolution)


def _mark_comparability(entry: dict[str, Any], *, dataset: str, resolution: int) -> None:
    """Add comparable_to_published to the protocol of every metric entry of an evaluation (bench/metrics/published.py)."""
    from bench.metrics.published import comparable_to_published

    for name, metric in entry["metrics"].items():
        record = comparable_to_published(name, metric, dataset=dataset, model_weights=entry.get("weights", "random"),
                                         resolution=resolution)
        # A copy: some entries share one protocol dict (win_rate, loss_rate, win_ratio).
        metric["protocol"] = {**(metric.get("protocol") or {}), "comparable_to_published": record}


def _rows(samples, seed: int, cosines: dict) -> list[dict[str, Any]]:
    """Manifest rows of the scored samples, each with its CLIP cosine."""
    rows = []
    for s in samples:
        key = (s.record.index, s.replica)
        if key in cosines:
            rows.append({**s.row(seed), "clip_cosine": cosines[key]})
    return rows


def _win_rate(by_model, scored, clip_cosines, cfg, run_dir: Path) -> None:
    from bench.metrics.parti import best_of_k, win_rate, win_rate_metrics

    model_a, model_b = list(scored)[:2]
    best = {}
    for model in (model_a, model_b):
        rows = _rows(scored[model][1], cfg.seed, clip_cosines[model])
        best[model] = best_of_k(rows, [r["clip_cosine"] for r in rows])
    judge = None
    if cfg.eval.win_rate.judge is not None:
        from hydra.utils import instantiate

        judge = instantiate(cfg.eval.win_rate.judge)
    result = win_rate(best[model_a], best[model_b], judge=judge, margin=cfg.eval.win_rate.margin)
    by_model[model_a]["metrics"].update(win_rate_metrics(
        result, model_a=model_a, model_b=model_b, samples_per_prompt=cfg.eval.samples_per_prompt,
        margin=cfg.eval.win_rate.margin))
    by_model[model_a]["win_rate"] = result
