"""From gathered per-sample features to the metrics of results.json: FID, KID, CLIP score, CMMD, the
PartiPrompts breakdowns and the pairwise win rate.

Reference features (FID's Inception features, CMMD's CLIP embeddings of the reference images) are computed once
per run and cached across runs under a key of every choice that moves them (bench/fid.py). A metric that cannot
be computed (no reference images configured) is reported with a null value and the reason, never left out
silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.results import write_csv

log = logging.getLogger(__name__)


def skipped(reason: str, higher_is_better: bool) -> dict[str, Any]:
    """A metric entry with no value, saying why."""
    return {"value": None, "higher_is_better": higher_is_better, "stderr": None, "protocol": {"skipped": reason}}


class _ClipImages:
    """The CLIP scorer seen as a feature extractor of uint8 arrays, for bench.fid.reference_features."""

    def __init__(self, scorer: Any):
        self.scorer = scorer
        self.name = "CLIP image embedding: " + ", ".join(f"{k}={v}" for k, v in scorer.protocol.items()
                                                        if k in ("backend", "arch", "pretrained"))
        self.mode = "clip-preprocess"
        self.device = str(getattr(scorer, "device", "cpu"))

    def __call__(self, images):
        from PIL import Image

        return np.asarray(self.scorer.image_embeddings([Image.fromarray(a) for a in images]))


def _reference(extractor, references, cfg, resolution) -> Any:
    from bench.fid import reference_features

    key = {"dataset": cfg.dataset.name, **references.protocol}
    return reference_features(
        [(image.key, image.read) for image in references.images], extractor, resolution=resolution, key=key,
        cache_dir=Path(cfg.eval.cache_dir).expanduser(), batch_size=cfg.eval.fid.batch_size,
    )


def score_models(evaluations: list[dict[str, Any]], scored: dict[str, tuple[dict, list]], *, tools: Any, cfg: Any,
                 metrics: list[str], references: Any, resolution: int, run_dir: Path) -> None:
    """Fill the `metrics` of each model's evaluation at `resolution` (in place); write the PartiPrompts
    breakdown and win-rate tables (parti_breakdown.csv, win_rate.csv) into run_dir when asked for."""
    from bench.scoring import effective_count

    seed, bootstrap = cfg.seed, cfg.eval.bootstrap
    no_refs = ("no reference images: set dataset.reference_dir to a folder of reference images (for COCO, val2014; "
               "for CC3M, img2dataset output; muse-bench job=prepare dataset=... fetches them where online)")
    ref_fid = ref_clip = None
    ref_note: dict[str, Any] = {}
    if references is not None:
        ref_note = {"reference": references.protocol, "reference_stats": references.stats}
        if tools.fid is not None:
            ref_fid = _reference(tools.fid, references, cfg, resolution)
        if "cmmd" in metrics and tools.clip is not None:
            ref_clip = _reference(_ClipImages(tools.clip), references, cfg, resolution)
        for result in (ref_fid, ref_clip):
            if result is not None and result.failures:
                log.warning("%d reference images could not be read and were left out, e.g. %s", len(result.failures),
                            result.failures[0])
                ref_note["reference_excluded"] = [{"file": str(f), "reason": r} for f, r in result.failures]
    by_model = {e["model"]: e for e in evaluations if e["protocol"]["resolution"] == resolution}
    clip_cosines: dict[str, dict[tuple[int, int], float]] = {}
    breakdown_rows = []
    for model, (state, samples) in scored.items():
        entry = by_model[model]
        entry["n_samples"]["effective"] = effective_count(state)
        if state["failures"]:
            entry["excluded"] = [{"file": f, "reason": r} for f, r in state["failures"]]
        out = entry["metrics"]
        common = {"n_generated": effective_count(state), **ref_note}
        for name in metrics:
            missing = "fid" if name in ("fid", "kid") else "clip" if name in ("clip_score", "cmmd") else None
            if missing in tools.unavailable:
                out.update({n: skipped(tools.unavailable[missing], n.startswith("clip"))
                            for n in ((name, "clip_score_x100") if name == "clip_score" else (name,))})
        if tools.fid is not None and ("fid" in metrics or "kid" in metrics):
            from bench.fid import fid_metric, fid_protocol, kid_metric

            gen = state["fid"]
            fid_common = {**fid_protocol(tools.fid, resolution=resolution), **common}
            if ref_fid is None:
                for name in ("fid", "kid"):
                    if name in metrics:
                        out[name] = skipped(no_refs, False)
            elif gen is None:
                raise BenchError(f"No readable samples of {model} to score.")
            else:
                if "fid" in metrics:
                    out["fid"] = fid_metric(gen, ref_fid.features, protocol=fid_common, min_samples=cfg.eval.fid.min_samples,
                                            bootstrap=bootstrap, seed=seed, groups=[k[0] for k in state["fid_keys"]])
                if "kid" in metrics:
                    out["kid"] = kid_metric(gen, ref_fid.features, protocol=fid_common,
                                            min_samples=cfg.eval.fid.kid_min_samples,
                                            num_subsets=cfg.eval.fid.kid_subsets,
                                            max_subset_size=cfg.eval.fid.kid_subset_size, seed=seed)
        if tools.clip is not None:
            cos = {k: c for k, (_, c) in state["clip"].items()}
            clip_cosines[model] = cos
            if "clip_score" in metrics:
                from bench.clip_score import clip_score_metrics

                out.update(clip_score_metrics(np.array(list(cos.values())), truncated=len(state["truncated"]),
                                              protocol=tools.clip.protocol, bootstrap=bootstrap, seed=seed,
                                              prompts=[k[0] for k in cos]))
            if "cmmd" in metrics:
                from bench.cmmd import cmmd_metric

                if ref_clip is None:
                    out["cmmd"] = skipped(no_refs, False)
                else:
                    gen_emb = np.stack([e for e, _ in state["clip"].values()])
                    out["cmmd"] = cmmd_metric(gen_emb, ref_clip.features, sigma=cfg.eval.cmmd.sigma,
                                              scale=cfg.eval.cmmd.scale,
                                              protocol={**tools.clip.protocol, **common})
            if "parti" in metrics:
                from bench.parti import group_means

                rows = _rows(samples, cfg.seed, cos)
                values = [r["clip_cosine"] for r in rows]
                entry["breakdown"] = {by: group_means(rows, values, by) for by in ("category", "challenge")}
                for by, groups in entry["breakdown"].items():
                    breakdown_rows += [{"model": model, "by": by, **g} for g in groups]
    if breakdown_rows:
        write_csv(run_dir / "parti_breakdown.csv", breakdown_rows)
    if "win_rate" in metrics and tools.clip is not None:
        _win_rate(by_model, scored, clip_cosines, cfg, run_dir)


def _rows(samples, seed: int, cosines: dict) -> list[dict[str, Any]]:
    """Manifest rows of the scored samples, each with its CLIP cosine."""
    rows = []
    for s in samples:
        key = (s.record.index, s.replica)
        if key in cosines:
            rows.append({**s.row(seed), "clip_cosine": cosines[key]})
    return rows


def _win_rate(by_model, scored, clip_cosines, cfg, run_dir: Path) -> None:
    from bench.parti import best_of_k, win_rate, win_rate_metrics

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
