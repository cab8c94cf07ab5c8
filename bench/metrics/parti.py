"""PartiPrompts analysis over manifest rows: per-category and per-challenge means, best-of-K, pairwise win rate.

A row is one sample of manifest.jsonl: index (the prompt's position in PartiPrompts), prompt, seed, file,
category, challenge, and replica k in 0..K-1 when K images were drawn per prompt.

The Muse paper's alignment claim (2.7x better than Stable Diffusion v1.4) comes from human raters: for each
prompt, each model drew 16 images and kept the one with the highest CLIP score; 5 raters picked the image that
matched the caption better, and a verdict needed >= 3 of them to agree (Muse 70.6%, SD 25.4%, no consensus
4%). `win_rate` runs the same comparison with an automatic judge in place of the raters. The default judge,
the CLIP cosine of each best image with its prompt, is a stand-in, not a replication: it is the same score
that picked the best of K, so it favours whichever model's best-of-K selection it shares. A judge with another
backbone (`RescoreJudge`) or any callable of the `Judge` signature can be plugged in (Hydra `_target_`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import MetricEntry, write_csv
from bench.metrics.clip_model import open_clip_scorer
from bench.metrics.clip_score import cosines
from bench.metrics.metric import Metric, ModelScores, Scoring

Verdict = Literal["a", "b", "tie"]
VERDICTS = ("a", "b", "tie")
GROUP_KEYS = ("category", "challenge")


class Pick(NamedTuple):
    """The image kept for a prompt: its manifest row and the score that chose it (the CLIP cosine)."""

    row: dict[str, Any]
    score: float


# A judge compares model A's and model B's picks for one prompt: "a", "b" or "tie".
Judge = Callable[[str, Pick, Pick], Verdict]


def _field(row: Mapping[str, Any], key: str, position: int) -> Any:
    if key not in row:
        raise BenchError(
            f"Manifest row {position} (prompt index {row.get('index', '?')}) has no {key!r} field; PartiPrompts "
            f"breakdowns need rows with {', '.join(GROUP_KEYS)} (the dataset's metadata). Was the run made on "
            "dataset=partiprompts?"
        )
    return row[key]


def _finite(values: Sequence[float], n_rows: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n_rows,):
        raise ValueError(f"{n_rows} rows but values of shape {arr.shape}: one value per row is needed")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values contain NaN or infinity")
    return arr


def group_means(rows: Sequence[Mapping[str, Any]], values: Sequence[float], by: str) -> list[dict[str, Any]]:
    """Mean of a per-sample value (e.g. the CLIP cosine) per group of `by` ("category" or "challenge").

    Returns one dict per group, sorted by group name: {group, mean, stderr, n (samples), n_prompts}. The
    mean is over samples. The stderr is over prompts (std of the per-prompt means / sqrt(n_prompts)),
    because the K images of one prompt are not independent; with one image per prompt that is the usual
    std / sqrt(n). stderr is None for a group of one prompt.
    """
    if by not in GROUP_KEYS:
        raise BenchError(f"Group PartiPrompts by one of {', '.join(GROUP_KEYS)}, not {by!r}.")
    vals = _finite(values, len(rows))
    per_prompt: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for position, (row, value) in enumerate(zip(rows, vals)):
        group = str(_field(row, by, position))
        per_prompt[group][_field(row, "index", position)].append(float(value))
    out = []
    for group in sorted(per_prompt):
        prompts = per_prompt[group]
        samples = [v for vs in prompts.values() for v in vs]
        prompt_means = np.array([np.mean(vs) for vs in prompts.values()])
        stderr = float(prompt_means.std(ddof=1) / math.sqrt(len(prompt_means))) if len(prompt_means) > 1 else None
        out.append({"group": group, "mean": float(np.mean(samples)), "stderr": stderr, "n": len(samples),
                    "n_prompts": len(prompts)})
    return out


def best_of_k(rows: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> dict[int, Pick]:
    """For each prompt index, the row with the highest score among its replicas (the paper keeps the best
    of 16 images by CLIP score). Ties go to the lowest replica number. Returned in prompt order."""
    vals = _finite(scores, len(rows))
    best: dict[int, Pick] = {}
    for position, (row, score) in enumerate(zip(rows, vals)):
        index = int(_field(row, "index", position))
        current = best.get(index)
        if (current is None or score > current.score
                or (score == current.score and row.get("replica", 0) < current.row.get("replica", 0))):
            best[index] = Pick(dict(row), float(score))
    return dict(sorted(best.items()))


class ClipJudge:
    """The default judge: the higher CLIP cosine with the prompt wins; a difference of at most `margin` is
    a tie (the paper's "no consensus"). It reads the scores best_of_k kept, so it needs no model."""

    def __init__(self, margin: float = 0.0):
        if margin < 0:
            raise BenchError(f"eval.win_rate.margin must be >= 0, got {margin}.")
        self.margin = float(margin)
        self.protocol = {"name": "clip_cosine", "margin": self.margin,
                         "note": "automatic stand-in for the paper's human raters; the same CLIP score chose the "
                                 "best of K"}

    def __call__(self, prompt: str, a: Pick, b: Pick) -> Verdict:
        """Compare the two picks' scores."""
        diff = a.score - b.score
        if abs(diff) <= self.margin:
            return "tie"
        return "a" if diff > 0 else "b"


class RescoreJudge:
    """A judge that re-scores both picked images with another CLIP (e.g. another backbone than the one that
    chose the best of K), so the verdict is not made by the selector itself.

    Each pick's image is read from row["path"] when present, else row["file"] (relative paths resolve
    against `root_a` / `root_b`, the two models' sample folders). Hydra:
    `{_target_: bench.metrics.parti.RescoreJudge, arch: ViT-B-32, pretrained: openai, margin: 0.0}`.
    """

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | None = "openai", margin: float = 0.0, *,
                 root_a: str | None = None, root_b: str | None = None, device: str = "cpu",
                 scorer: Any = None):
        self.scorer = scorer if scorer is not None else open_clip_scorer(arch, pretrained, device=device)
        self.margin = float(margin)
        self.roots = (root_a, root_b)
        self.protocol = {"name": "clip_rescore", "margin": self.margin, "scorer": self.scorer.protocol}

    def _path(self, pick: Pick, root: str | None) -> Path:
        path = Path(pick.row.get("path") or pick.row["file"])
        return path if path.is_absolute() or root is None else Path(root) / path

    def __call__(self, prompt: str, a: Pick, b: Pick) -> Verdict:
        """Score both images against the prompt with this judge's CLIP and compare."""
        cos, _ = self.scorer.cosines([self._path(a, self.roots[0]), self._path(b, self.roots[1])], [prompt, prompt])
        return ClipJudge(self.margin)(prompt, Pick(a.row, float(cos[0])), Pick(b.row, float(cos[1])))


def judge_protocol(judge: Any) -> dict[str, Any]:
    """What a judge records in results: its `protocol` attribute when it has one, else its name."""
    protocol = getattr(judge, "protocol", None)
    if isinstance(protocol, Mapping):
        return dict(protocol)
    name = getattr(judge, "__qualname__", None) or type(judge).__qualname__
    return {"name": f"{getattr(judge, '__module__', '?')}.{name}"}


def tally(verdicts: Sequence[str]) -> dict[str, Any]:
    """Counts and fractions of a list of verdicts, and the ratio of A's wins to B's (None when B never wins)."""
    n = len(verdicts)
    a, b, t = (sum(v == x for v in verdicts) for x in VERDICTS)
    return {
        "n": n, "a_wins": a, "b_wins": b, "ties": t,
        "a_win_rate": a / n if n else None, "b_win_rate": b / n if n else None, "tie_rate": t / n if n else None,
        "ratio": a / b if b else None,
    }


def win_rate(best_a: Mapping[int, Pick], best_b: Mapping[int, Pick], judge: Judge | None = None, *,
             margin: float = 0.0, rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Judge model A's best image against model B's for every prompt; overall and per category / challenge.

    `judge(prompt, pick_a, pick_b) -> "a" | "b" | "tie"`; None = ClipJudge(margin) (`margin` is used only
    then). Category and challenge come from `rows` (manifest rows, by prompt index) when given, else from A's
    picked rows. Both models must cover the same prompts. Returns a JSON-ready dict: judge (its protocol),
    n_prompts, overall / by_category / by_challenge tallies (see `tally`), and per-prompt verdicts.
    """
    judge = judge if judge is not None else ClipJudge(margin)
    only_a, only_b = sorted(set(best_a) - set(best_b)), sorted(set(best_b) - set(best_a))
    if only_a or only_b:
        raise BenchError(
            f"The two models were not run on the same prompts: {len(only_a)} prompt(s) only in A (e.g. "
            f"{only_a[:5]}), {len(only_b)} only in B (e.g. {only_b[:5]}). Generate both on the same dataset and "
            "limit."
        )
    meta = {int(r["index"]): r for r in rows} if rows is not None else {}
    verdicts, per_prompt = [], []
    groups: dict[str, dict[str, list[str]]] = {key: defaultdict(list) for key in GROUP_KEYS}
    for index in sorted(best_a):
        a, b = best_a[index], best_b[index]
        prompt = a.row.get("prompt")
        if prompt != b.row.get("prompt"):
            raise BenchError(f"Prompt index {index} has different prompts in the two runs ({prompt!r} vs "
                             f"{b.row.get('prompt')!r}); they were made from different prompt lists.")
        verdict = judge(prompt, a, b)
        if verdict not in VERDICTS:
            raise BenchError(f"The win-rate judge returned {verdict!r} for prompt {index}; a judge must return "
                             "'a', 'b' or 'tie'.")
        verdicts.append(verdict)
        source = meta.get(index, a.row)
        entry = {"index": index, "prompt": prompt, "verdict": verdict, "score_a": a.score, "score_b": b.score,
                 "file_a": a.row.get("file"), "file_b": b.row.get("file")}
        for key in GROUP_KEYS:
            if key in source:
                entry[key] = source[key]
                groups[key][str(source[key])].append(verdict)
        per_prompt.append(entry)
    return {
        "judge": judge_protocol(judge),
        "n_prompts": len(verdicts),
        "overall": tally(verdicts),
        "by_category": {g: tally(v) for g, v in sorted(groups["category"].items())},
        "by_challenge": {g: tally(v) for g, v in sorted(groups["challenge"].items())},
        "prompts": per_prompt,
    }


def _ratio_stderr(counts: Mapping[str, Any]) -> float | None:
    # Delta method for R = p_a / p_b with multinomial counts: Var(R) ~= R^2 (1/p_a + 1/p_b) / n
    # = R^2 (1/a + 1/b) in counts (the covariance of p_a and p_b, -p_a p_b / n, gives the cross term).
    a, b = counts["a_wins"], counts["b_wins"]
    if not (a and b):
        return None
    return (a / b) * math.sqrt(1 / a + 1 / b)


def _rate_stderr(p: float | None, n: int) -> float | None:
    return math.sqrt(p * (1 - p) / n) if n and p is not None else None


def win_rate_metrics(result: Mapping[str, Any], *, model_a: str, model_b: str, samples_per_prompt: int,
                     margin: float, protocol: Mapping[str, Any] | None = None) -> dict[str, MetricEntry]:
    """results.json entries from a `win_rate` result, for model A's evaluation:
    "win_rate" (A's share of prompts won), "loss_rate" (B's share) and "win_ratio" (A's wins / B's wins; the
    paper's 70.6 / 25.4 = 2.8), each with its stderr (binomial; delta method for the ratio; null where a count
    is 0). Ties are in the protocol's counts. `protocol` adds e.g. the CLIP scorer's protocol."""
    overall = result["overall"]
    n = overall["n"]
    common = {
        **dict(protocol or {}),
        "judge": result["judge"], "K": samples_per_prompt, "margin": margin, "n_prompts": result["n_prompts"],
        "model_a": model_a, "model_b": model_b,
        "best_of_k": "highest CLIP cosine with the prompt among the K images",
        "counts": {k: overall[k] for k in ("a_wins", "b_wins", "ties", "tie_rate")},
        "paper": "human raters (5, >= 3 agreeing), Muse vs SD v1.4: 70.6% / 25.4% / 4% no consensus",
    }
    return {
        "win_rate": MetricEntry(overall["a_win_rate"], True, _rate_stderr(overall["a_win_rate"], n), common),
        "loss_rate": MetricEntry(overall["b_win_rate"], False, _rate_stderr(overall["b_win_rate"], n), common),
        "win_ratio": MetricEntry(overall["ratio"], True, _ratio_stderr(overall), common),
    }


# ---- the parti and win_rate metrics of a run -----------------------------------------------------------------


def scored_rows(samples: Sequence[Any], seed: int, cosines: Mapping[tuple[int, int], float]) -> list[dict[str, Any]]:
    """Manifest rows of the scored samples (bench.jobs.generation.Sample), each with its CLIP cosine."""
    rows = []
    for s in samples:
        key = (s.record.index, s.replica)
        if key in cosines:
            rows.append({**s.row(seed), "clip_cosine": cosines[key]})
    return rows


def _score_breakdown(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    """The CLIP cosine per category and per challenge, into the model's evaluation (`breakdown`)."""
    rows = scored_rows(model.samples, scoring.cfg.seed, cosines(model.state))
    values = [r["clip_cosine"] for r in rows]
    model.entry["breakdown"] = {by: group_means(rows, values, by) for by in GROUP_KEYS}
    return {}


def _write_breakdown(scoring: Scoring, models: list[ModelScores]) -> None:
    rows = [{"model": m.name, "by": by, **g} for m in models for by, groups in m.entry.get("breakdown", {}).items()
            for g in groups]
    if rows:
        write_csv(scoring.run_dir / "parti_breakdown.csv", rows)


def _score_win_rate(scoring: Scoring, models: list[ModelScores]) -> None:
    """The first model's best-of-K images judged against the second's, into the first model's evaluation."""
    cfg = scoring.cfg
    first, second = models[:2]
    best = {}
    for model in (first, second):
        rows = scored_rows(model.samples, cfg.seed, cosines(model.state))
        best[model.name] = best_of_k(rows, [r["clip_cosine"] for r in rows])
    judge = None
    if cfg.eval.win_rate.judge is not None:
        from hydra.utils import instantiate

        judge = instantiate(cfg.eval.win_rate.judge)
    result = win_rate(best[first.name], best[second.name], judge=judge, margin=cfg.eval.win_rate.margin)
    first.add(win_rate_metrics(result, model_a=first.name, model_b=second.name,
                               samples_per_prompt=cfg.eval.samples_per_prompt, margin=cfg.eval.win_rate.margin))
    first.entry["win_rate"] = result


# parti writes no metric entry of its own (its breakdown goes beside them): when it cannot run, an entry named
# "parti" says so, as every metric that cannot run does.
PARTI = Metric("parti", network="clip", entries={"parti": True}, score_model=_score_breakdown,
               score_run=_write_breakdown)
WIN_RATE = Metric("win_rate", network="clip", entries={"win_rate": True, "loss_rate": False, "win_ratio": True},
                  pairwise=True, score_run=_score_win_rate)
