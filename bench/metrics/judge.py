"""The `judge` metric: GenEval-style accuracy of a model's images on the shapes world's prompts, by the world's exact
judge (bench/shapes/judge.py) in place of GenEval's object detector.

Each image at the evaluation resolution is read back into objects (shape, palette colour, box) and checked against
what its prompt asks for, per skill as GenEval checks it; a sample is correct or not. The results are GenEval's:
the accuracy of each skill, and the overall score as the mean of the per-skill accuracies (so each skill weighs the
same whatever its number of prompts). The judge reads the prompt only, never the scene it was captioned from, so
any prompt of the shapes grammar can be judged; a prompt outside it (any other dataset) cannot, and the metric is
then reported as skipped, saying to use dataset=shapes.

The shapes judge is no feature network, but it plays that part in scoring (bench/metrics/metric.py NETWORKS): it
reads each image as it is made (or re-read from its PNG) into a small per-sample verdict, which shards merge by
sample key like any feature. Every verdict is written into the model's evaluation (`judge_verdicts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.core.results import MetricEntry
from bench.metrics.metric import Metric, ModelScores, Scoring
from bench.metrics.parti import VERDICTS, ClipJudge, Pick, Verdict, tally
from bench.shapes.captions import parse
from bench.shapes.judge import detect, satisfies
from bench.shapes.scenes import SKILLS

JUDGE_NAME = "exact programmatic (bench/shapes/judge.py)"
ENTRY = "judge_accuracy"
# The entries the metric can write: the overall score, then one per skill ("judge_accuracy/counting", ...).
ENTRIES = (ENTRY, *(f"{ENTRY}/{skill}" for skill in SKILLS))
# A verdict lists at most this many of the objects the judge found (random-weight images can hold many regions).
MAX_LISTED = 8
NOT_PUBLISHED = ("no published number: the shapes world, its prompts and its exact judge are this suite's own "
                 "(GenEval's skills and scoring rule, not its prompts, detector or images)")


class ShapesJudge:
    """The judge as scoring uses it: images and their prompts -> one verdict each, a plain dict: skill, correct
    (bool) and the objects found; skill and correct are None for a prompt outside the shapes grammar."""

    name = "shapes-judge"

    def __call__(self, images: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, Any]]:
        """The verdict of each (image, prompt) pair (see the class docstring)."""
        verdicts = []
        for image, prompt in zip(images, prompts, strict=True):
            try:
                request = parse(prompt)
            except ValueError:
                verdicts.append({"skill": None, "correct": None})
                continue
            objects = detect(image)
            verdicts.append({"skill": request.skill, "correct": satisfies(objects, request),
                             "n_detected": len(objects),
                             "detected": [f"{o.color} {o.shape}" for o in objects[:MAX_LISTED]]})
        return verdicts


def build_judge(cfg: Any, device: str) -> ShapesJudge:
    """The judge for a run (bench.metrics.NETWORKS): no settings, no weights, no device."""
    return ShapesJudge()


def _binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def judge_accuracy(skills: Sequence[str], correct: Sequence[bool], *, protocol: Mapping[str, Any] | None = None,
                   prompts: Sequence[Any] | None = None) -> dict[str, MetricEntry]:
    """results.json entries from per-sample verdicts (each sample's skill, and whether the judge found it correct).

    "judge_accuracy/<skill>" for every skill present: the fraction correct, stderr binomial sqrt(p (1 - p) / n).
    "judge_accuracy": GenEval's overall score, the mean of those per-skill accuracies, with the stderr of a mean of
    independent estimates, sqrt(sum_k p_k (1 - p_k) / n_k) / K. Images of one prompt (samples_per_prompt > 1) are
    counted as independent draws. `prompts` names each sample's prompt (e.g. its dataset index), for the prompt
    counts; None = every sample its own prompt. Each protocol holds `protocol`, the judge, the per-skill counts, n
    and n_prompts (of its skill, for a skill's entry) and that no published number is comparable.
    """
    if len(skills) != len(correct):
        raise ValueError(f"{len(skills)} skills but {len(correct)} verdicts: one of each per sample is needed")
    unknown = sorted(set(skills) - set(SKILLS))
    if unknown:
        raise ValueError(f"unknown skill(s) {unknown}: the skills are {', '.join(SKILLS)}")
    if not skills:
        raise ValueError("no verdicts to score")
    prompts = list(range(len(skills))) if prompts is None else list(prompts)
    if len(prompts) != len(skills):
        raise ValueError(f"{len(skills)} verdicts but {len(prompts)} prompt ids: one per sample is needed")
    counts = {}
    for skill in SKILLS:
        verdicts = [c for s, c in zip(skills, correct) if s == skill]
        if verdicts:
            counts[skill] = {"n": len(verdicts), "correct": int(sum(bool(c) for c in verdicts)),
                             "n_prompts": len({p for s, p in zip(skills, prompts) if s == skill})}
    rates = {k: c["correct"] / c["n"] for k, c in counts.items()}
    common = {
        **dict(protocol or {}),
        "judge": JUDGE_NAME,
        "n": len(skills),
        "n_prompts": len(set(prompts)),
        "counts": counts,
        "comparable_to": NOT_PUBLISHED,
    }
    k = len(rates)
    overall = MetricEntry(
        sum(rates.values()) / k, True,
        math.sqrt(sum(_binomial_stderr(p, counts[s]["n"]) ** 2 for s, p in rates.items())) / k,
        {**common, "skills": list(rates),
         "overall": "mean of the per-skill accuracies over the skills present (GenEval's overall score)",
         "stderr_method": "sqrt(sum_k p_k (1 - p_k) / n_k) / K over the K skills present (independent skills; "
                          "images of one prompt counted as independent)"})
    entries = {ENTRY: overall}
    for skill, p in rates.items():
        entries[f"{ENTRY}/{skill}"] = MetricEntry(
            p, True, _binomial_stderr(p, counts[skill]["n"]),
            {**common, "skill": skill, "n": counts[skill]["n"], "n_prompts": counts[skill]["n_prompts"],
             "stderr_method": "binomial sqrt(p (1 - p) / n) over the skill's images"})
    return entries


def _skipped(reason: str) -> dict[str, MetricEntry]:
    return {name: MetricEntry.skipped(reason, True) for name in ENTRIES}


def _score_judge(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    verdicts = model.state.get("judge") or {}
    prompts = {(s.record.index, s.replica): s.record for s in model.samples}
    if not verdicts:
        return _skipped("no image was judged")
    refused = sorted({prompts[key].prompt if key in prompts else str(key[0])
                      for key, v in verdicts.items() if v["skill"] is None})
    if refused:
        n_prompts = len({key[0] for key in verdicts})
        return _skipped(
            f"the judge reads prompts of the shapes grammar only (bench/shapes/captions.py), and {len(refused)} of "
            f"the {n_prompts} prompts of {scoring.cfg.dataset.name} are not (e.g. {refused[0]!r}): run it on "
            "dataset=shapes")
    rows = []
    for (index, replica), verdict in verdicts.items():
        record = prompts.get((index, replica))
        row: dict[str, Any] = {"index": index, "replica": replica, "prompt": record.prompt if record else None}
        if record is not None and "scene" in record.metadata:
            row["scene"] = record.metadata["scene"]
        rows.append({**row, **verdict})
    model.entry["judge_verdicts"] = rows
    keys = list(verdicts)
    found = [verdicts[k]["n_detected"] for k in keys]
    # The judge checks what a prompt asks for and ignores anything else in the image (as GenEval does), so an image
    # cluttered with regions can pass presence checks: how many objects it found says how far to trust a pass.
    objects = {"mean": sum(found) / len(found), "max": max(found), "of": "objects the judge found per image"}
    return judge_accuracy([verdicts[k]["skill"] for k in keys], [verdicts[k]["correct"] for k in keys],
                          protocol={**model.common, "resolution": scoring.resolution, "objects_found": objects},
                          prompts=[k[0] for k in keys])


JUDGE = Metric("judge", network="judge", entries=dict.fromkeys(ENTRIES, True), score_model=_score_judge)


def exact_verdict(correct_a: bool, correct_b: bool) -> Verdict:
    """The exact judge's verdict on a pair: "a" where only A's image satisfies its prompt, "b" where only B's does,
    "tie" where both or neither do (the judge says right or wrong, never which wrong is less wrong)."""
    if bool(correct_a) == bool(correct_b):
        return "tie"
    return "a" if correct_a else "b"


def clip_verdict(cos_a: float, cos_b: float, margin: float = 0.0) -> Verdict:
    """The CLIP judge's verdict on a pair: the image of higher cosine with the prompt wins; a difference of at most
    `margin` is a tie (parti.ClipJudge's rule)."""
    return ClipJudge(margin)("", Pick({}, float(cos_a)), Pick({}, float(cos_b)))


def _judged(verdicts: Sequence[str]) -> dict[str, Any]:
    """parti.tally of a judge's verdicts, with the binomial stderr of each rate (None where there is no verdict)."""
    counts = tally(verdicts)
    for rate in ("a_win_rate", "b_win_rate", "tie_rate"):
        p = counts[rate]
        counts[f"{rate}_stderr"] = _binomial_stderr(p, counts["n"]) if p is not None else None
    return counts


def compare_judges(exact: Sequence[str], clip: Sequence[str], *, margin: float = 0.0) -> dict[str, Any]:
    """Two judges' verdicts ("a" / "b" / "tie") on the same pairs: each judge's tally (counts, rates and their
    binomial stderr), and how often the CLIP judge picks the exact judge's winner on the pairs the exact judge
    decides (a CLIP tie there counts as not agreeing), with its binomial stderr over those pairs and the chance
    level 0.5 (a judge that picks one of two at random); `clip_on_exact_ties` is how the CLIP judge splits the pairs
    the exact judge calls even. `margin` is recorded as the CLIP judge's tie margin."""
    if len(exact) != len(clip):
        raise ValueError(f"{len(exact)} exact verdicts but {len(clip)} CLIP verdicts: one of each per pair is needed")
    bad = sorted({str(v) for v in (*exact, *clip) if v not in VERDICTS})
    if bad:
        raise ValueError(f"unknown verdict(s) {bad}: a verdict is one of {', '.join(VERDICTS)}")
    decided = [(e, c) for e, c in zip(exact, clip) if e != "tie"]
    agree = sum(e == c for e, c in decided)
    agreement = agree / len(decided) if decided else None
    return {"n": len(exact), "exact": _judged(exact), "clip": _judged(clip), "n_decided": len(decided),
            "n_agree": agree, "agreement": agreement,
            "agreement_stderr": _binomial_stderr(agreement, len(decided)) if decided else None,
            "chance": 0.5, "clip_on_exact_ties": _judged([c for e, c in zip(exact, clip) if e == "tie"]),
            "clip_margin": margin}


def judge_agreement(prompts: Sequence[str], images_a: Sequence[Any], images_b: Sequence[Any], scorer: Any,
                    margin: float = 0.0) -> dict[str, Any]:
    """Two models' images of the same prompts judged pairwise twice: exactly (`exact_verdict`) and by CLIP
    (`clip_verdict`: the higher image-prompt cosine wins; within `margin`, a tie), with how often the CLIP judge
    picks the exact judge's winner where the exact judge has one (`compare_judges`, whose result this is, with
    n_prompts). The metric `judge_win_rate` (bench/metrics/judge_win_rate.py) is the same comparison on a run's
    gathered verdicts and cosines.

    `scorer` is a bench.metrics.clip_model.ClipScorer. Chance agreement is 0.5 (CLIP picks one of two)."""
    exact = [exact_verdict(satisfies(detect(a), parse(p)), satisfies(detect(b), parse(p)))
             for p, a, b in zip(prompts, images_a, images_b, strict=True)]
    cos_a, _ = scorer.cosines(list(images_a), list(prompts))
    cos_b, _ = scorer.cosines(list(images_b), list(prompts))
    clip = [clip_verdict(a, b, margin) for a, b in zip(cos_a.tolist(), cos_b.tolist())]
    return {"n_prompts": len(exact), **compare_judges(exact, clip, margin=margin)}
