"""The `judge_win_rate` metric: two models of the shapes world compared image against image, by the world's exact
judge and by CLIP, and how far the CLIP judge can be trusted where the exact one knows the answer.

The PartiPrompts win rate (bench/metrics/parti.py, the paper's protocol for two models) needs a judge; the paper's
were human raters, and the suite's stand-in is CLIP. On the shapes world the truth is known: the exact judge
(bench/shapes/judge.py) says whether each image satisfies its prompt. So each pair (model A's and model B's image
of the same prompt and replica, drawn from the same seed stream) gets two verdicts, "a", "b" or "tie":

- exact (`bench.metrics.judge.exact_verdict`): A wins where only A's image satisfies the prompt, B where only B's
  does, a tie where both or neither do;
- CLIP (`bench.metrics.judge.clip_verdict`): the image of higher cosine with its prompt under eval.clip (the
  world's own CLIP with eval=shapes, the same cosines as clip_score) wins; within eval.win_rate.margin, a tie.

Entries, in model A's evaluation: judge_win_rate and judge_loss_rate (A's and B's share of pairs under the exact
judge), clip_judge_win_rate and clip_judge_loss_rate (the same under CLIP), clip_judge_agreement (the share of the
pairs the exact judge decides where CLIP picks the same winner; chance is 0.5). Stderr binomial. The per-pair
verdicts and the breakdown per skill go into A's evaluation under `judge_win_rate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.core.errors import BenchError
from bench.core.results import MetricEntry
from bench.metrics.judge import JUDGE_NAME, clip_verdict, compare_judges, exact_verdict
from bench.metrics.metric import Metric, ModelScores, Scoring
from bench.shapes.scenes import SKILLS

NAME = "judge_win_rate"
# Each entry with higher_is_better, from model A's side.
ENTRIES = {"judge_win_rate": True, "judge_loss_rate": False, "clip_judge_win_rate": True,
           "clip_judge_loss_rate": False, "clip_judge_agreement": True}
PAIRS = ("model A's image against model B's image of the same prompt and replica (both drawn from the same seed "
         "stream), one verdict per pair from each judge")
EXACT_RULE = ("A wins where only A's image satisfies its prompt, B where only B's does; a tie where both or neither "
              "do")
CLIP_RULE = "the image of higher CLIP cosine with the prompt wins; a difference of at most the margin is a tie"
AGREEMENT_RULE = ("on the pairs the exact judge decides, the share where the CLIP judge picks the same winner (a CLIP "
                  "tie there is not agreement); 0.5 is a judge that picks one of two at random")
STDERR = ("binomial sqrt(p (1 - p) / n): n = every pair for the win rates, the pairs the exact judge decides for the "
          "agreement; images of one prompt (samples_per_prompt > 1) counted as independent")
NOT_PUBLISHED = ("no published number: the shapes world, its exact judge and its CLIP are this suite's own; the "
                 "paper's win rate was judged by human raters on PartiPrompts")


def judge_win_rate(pairs: Sequence[Mapping[str, Any]], *, margin: float = 0.0) -> dict[str, Any]:
    """Both judges' verdicts on every pair, overall and per skill.

    A pair is a mapping with skill, correct_a, correct_b (the exact judge's reading of each image) and cos_a, cos_b
    (each image's CLIP cosine with the prompt); anything else it holds (index, replica, prompt) is kept. Returns
    {overall: compare_judges(...), by_skill: {skill: compare_judges(...)} in SKILLS order, pairs: each pair with its
    exact and clip verdicts and whether they agree (None where the exact judge calls a tie)}.
    """
    if not pairs:
        raise ValueError("no pairs to judge")
    rows = []
    for pair in pairs:
        exact = exact_verdict(pair["correct_a"], pair["correct_b"])
        clip = clip_verdict(pair["cos_a"], pair["cos_b"], margin)
        rows.append({**pair, "exact": exact, "clip": clip, "agree": None if exact == "tie" else exact == clip})
    unknown = sorted({str(r["skill"]) for r in rows} - set(SKILLS))
    if unknown:
        raise ValueError(f"unknown skill(s) {unknown}: the skills are {', '.join(SKILLS)}")

    def judged(subset):
        return compare_judges([r["exact"] for r in subset], [r["clip"] for r in subset], margin=margin)

    by_skill = {skill: judged([r for r in rows if r["skill"] == skill]) for skill in SKILLS
                if any(r["skill"] == skill for r in rows)}
    return {"overall": judged(rows), "by_skill": by_skill, "pairs": rows}


def judge_win_rate_metrics(result: Mapping[str, Any], *, model_a: str, model_b: str,
                           protocol: Mapping[str, Any] | None = None) -> dict[str, MetricEntry]:
    """results.json entries of a `judge_win_rate` result, for model A's evaluation (see the module docstring); each
    protocol holds `protocol`, both models, both judges' rules, every count and that no published number compares."""
    overall = result["overall"]
    exact, clip = overall["exact"], overall["clip"]
    common = {
        **dict(protocol or {}),
        "model_a": model_a, "model_b": model_b, "pairs": PAIRS,
        "n_pairs": overall["n"], "n_prompts": len({r.get("index") for r in result["pairs"]}),
        "exact_judge": {"name": JUDGE_NAME, "rule": EXACT_RULE},
        "clip_judge": {**dict((protocol or {}).get("clip_judge") or {}), "rule": CLIP_RULE,
                       "margin": overall["clip_margin"]},
        "counts": {"exact": exact, "clip": clip},
        "agreement": {"n_decided": overall["n_decided"], "n_agree": overall["n_agree"], "chance": overall["chance"],
                      "rule": AGREEMENT_RULE},
        "clip_on_exact_ties": overall["clip_on_exact_ties"],
        "stderr_method": STDERR,
        "comparable_to": NOT_PUBLISHED,
    }

    def entry(name, value, stderr, **extra):
        return name, MetricEntry(value, ENTRIES[name], stderr, {**common, **extra})

    return dict([
        entry("judge_win_rate", exact["a_win_rate"], exact["a_win_rate_stderr"], judge="exact", n=exact["n"]),
        entry("judge_loss_rate", exact["b_win_rate"], exact["b_win_rate_stderr"], judge="exact", n=exact["n"]),
        entry("clip_judge_win_rate", clip["a_win_rate"], clip["a_win_rate_stderr"], judge="clip", n=clip["n"]),
        entry("clip_judge_loss_rate", clip["b_win_rate"], clip["b_win_rate_stderr"], judge="clip", n=clip["n"]),
        entry("clip_judge_agreement", overall["agreement"], overall["agreement_stderr"], judge="clip against exact",
              n=overall["n_decided"], chance=overall["chance"],
              **({} if overall["n_decided"] else {"undefined": "the exact judge decides no pair (every pair a tie)"})),
    ])


def _skipped(reason: str) -> dict[str, MetricEntry]:
    return {name: MetricEntry.skipped(reason, higher) for name, higher in ENTRIES.items()}


def _score_judge_win_rate(scoring: Scoring, models: list[ModelScores]) -> None:
    """The run's model (A) against eval.compare_to's (B), pair by pair, into A's evaluation."""
    if len(models) < 2:
        raise BenchError(f"{NAME} compares two models: name the second with eval.compare_to=PRESET (a conf/model/ "
                         "preset, e.g. muse-shapes-short), or drop it from eval.metrics.")
    first, second = models[:2]
    verdicts = {m.name: m.state.get("judge") or {} for m in (first, second)}
    cosines = {m.name: m.state.get("clip") or {} for m in (first, second)}
    keys = sorted(set(verdicts[first.name]) & set(verdicts[second.name]) & set(cosines[first.name])
                  & set(cosines[second.name]))
    records = {(s.record.index, s.replica): s.record for s in first.samples}
    refused = sorted({records[k].prompt if k in records else str(k[0]) for k in keys
                      if verdicts[first.name][k]["skill"] is None})
    if refused:
        first.add(_skipped(f"the exact judge reads prompts of the shapes grammar only (bench/shapes/captions.py), and "
                           f"{len(refused)} prompts of {scoring.cfg.dataset.name} are not (e.g. {refused[0]!r}): run "
                           "it on dataset=shapes"))
        return
    if not keys:
        first.add(_skipped(f"no prompt has an image judged and CLIP-scored from both {first.name} and {second.name}"))
        return
    pairs = []
    for key in keys:
        a, b = verdicts[first.name][key], verdicts[second.name][key]
        record = records.get(key)
        pairs.append({"index": key[0], "replica": key[1], "prompt": record.prompt if record else None,
                      "skill": a["skill"], "correct_a": bool(a["correct"]), "correct_b": bool(b["correct"]),
                      "cos_a": float(cosines[first.name][key][1]), "cos_b": float(cosines[second.name][key][1])})
    margin = float(scoring.cfg.eval.win_rate.margin)
    result = judge_win_rate(pairs, margin=margin)
    # Images one model has and the other lacks (unreadable files, an interrupted shard) cannot be paired.
    unpaired = {m.name: len(set(verdicts[m.name]) - set(keys)) for m in (first, second)}
    protocol = {"resolution": scoring.resolution, "unpaired": unpaired,
                "clip_judge": {"scorer": dict(getattr(scoring.tools.clip, "protocol", None) or {}),
                               "margin_setting": "eval.win_rate.margin"}}
    first.add(judge_win_rate_metrics(result, model_a=first.name, model_b=second.name, protocol=protocol))
    first.entry[NAME] = {"model_a": first.name, "model_b": second.name, **result}


JUDGE_WIN_RATE = Metric(NAME, network="judge", also_reads=("clip",), pairwise=True, entries=ENTRIES,
                        score_run=_score_judge_win_rate)
