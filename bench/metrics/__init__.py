"""Metrics, one module each, registered below by the names `eval.metrics` takes: FID and KID (fid.py) on
Inception features (features.py), precision / recall / density / coverage on the same features (prdc.py), CLIP
score (clip_score.py) on CLIP models (clip_model.py), CMMD (cmmd.py), the PartiPrompts breakdowns and win rate
(parti.py), the shapes world's exact-judge accuracy (judge.py) and two models
of it compared by the exact judge and by CLIP (judge_win_rate.py). Beside them: what a metric declares (metric.py), the
reference-feature cache of FID, KID and CMMD (reference_cache.py), the bootstrap (bootstrap.py), the published
protocols they are put beside (published.py), and the scoring of a run's samples (scoring.py while images are
made, evaluate.py after).

Each entry is a bench.metrics.metric.Metric, imported only when a run asks for it. Evaluation computes the
requested metrics in this order.
"""

from bench.core.registry import Registry

METRICS = Registry("eval.metrics", {
    "fid": "bench.metrics.fid:FID",
    "kid": "bench.metrics.fid:KID",
    "prdc": "bench.metrics.prdc:PRDC",
    "clip_score": "bench.metrics.clip_score:CLIP_SCORE",
    "cmmd": "bench.metrics.cmmd:CMMD",
    "parti": "bench.metrics.parti:PARTI",
    "win_rate": "bench.metrics.parti:WIN_RATE",
    "judge": "bench.metrics.judge:JUDGE",
    "judge_win_rate": "bench.metrics.judge_win_rate:JUDGE_WIN_RATE",
})

# The feature networks metrics read (bench.metrics.metric.NETWORKS), each built from its eval.<name> config node
# (None where there is no such node: the shapes judge has no settings).
NETWORKS = Registry("feature network", {
    "fid": "bench.metrics.features:build_fid_extractor",
    "clip": "bench.metrics.clip_model:build_clip_scorer",
    "cmmd": "bench.metrics.cmmd:build_cmmd_scorer",
    "judge": "bench.metrics.judge:build_judge",
})
