"""The judge_win_rate metric (bench/metrics/judge_win_rate.py): two models of the shapes world compared pair by pair
by the exact judge and by CLIP, and the CLIP judge's agreement with the exact one. Hand-made verdicts checked
against a hand computation; the metric as a run scores it (its pairing of the two models' samples, its entries, the
report's section); the refusals; the experiment preset. Nothing here trains a world."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from conftest import muse_bench

from bench.cli import compose_config
from bench.core.errors import BenchError
from bench.core.results import build_results, evaluation, write_results
from bench.metrics.evaluate import score_models
from bench.metrics.judge import compare_judges
from bench.metrics.judge_win_rate import ENTRIES, judge_win_rate, judge_win_rate_metrics
from bench.metrics.scoring import MetricTools
from bench.report.document import write_report
from bench.report.runs import load_runs


def se(p, n):
    return math.sqrt(p * (1 - p) / n)


def pair(index, skill, correct_a, correct_b, cos_a, cos_b):
    return {"index": index, "replica": 0, "prompt": f"prompt {index}", "skill": skill, "correct_a": correct_a,
            "correct_b": correct_b, "cos_a": cos_a, "cos_b": cos_b}


# Eight hand-made pairs, CLIP margin 0.02. Verdicts worked out by hand (exact / CLIP / agree):
PAIRS = [
    pair(0, "single_object", True, False, 0.30, 0.10),   # a / a / yes
    pair(1, "single_object", True, False, 0.10, 0.30),   # a / b / no: CLIP prefers the wrong image
    pair(2, "single_object", False, True, 0.20, 0.40),   # b / b / yes
    pair(3, "single_object", True, True, 0.50, 0.20),    # tie (both right) / a / -
    pair(4, "position", False, False, 0.20, 0.20),       # tie (both wrong) / tie (equal cosines) / -
    pair(5, "position", False, True, 0.30, 0.29),        # b / tie (within the margin) / no
    pair(6, "position", True, False, 0.60, 0.10),        # a / a / yes
    pair(7, "position", False, False, 0.10, 0.50),       # tie / b / -
]
MARGIN = 0.02


def counts(n, a, b, t):
    return {"n": n, "a_wins": a, "b_wins": b, "ties": t, "a_win_rate": a / n, "b_win_rate": b / n, "tie_rate": t / n,
            "ratio": a / b if b else None, "a_win_rate_stderr": se(a / n, n), "b_win_rate_stderr": se(b / n, n),
            "tie_rate_stderr": se(t / n, n)}


def test_both_judges_and_their_agreement_equal_a_hand_computation():
    # Catches: ties counted as wins (or a tie within the margin as a CLIP win), a CLIP tie on a decided pair counted
    # as agreement, agreement over every pair instead of the decided ones, A and B swapped, a wrong stderr.
    result = judge_win_rate(PAIRS, margin=MARGIN)
    overall = result["overall"]
    assert overall["exact"] == pytest.approx(counts(8, 3, 2, 3))
    assert overall["clip"] == pytest.approx(counts(8, 3, 3, 2))
    assert (overall["n_decided"], overall["n_agree"]) == (5, 3)  # pairs 0, 1, 2, 5, 6; agreeing 0, 2, 6
    assert overall["agreement"] == pytest.approx(0.6) and overall["agreement_stderr"] == pytest.approx(se(0.6, 5))
    assert overall["chance"] == 0.5 and overall["clip_margin"] == MARGIN
    assert overall["clip_on_exact_ties"] == pytest.approx(counts(3, 1, 1, 1))  # pairs 3 (a), 4 (tie), 7 (b)
    assert [(r["exact"], r["clip"], r["agree"]) for r in result["pairs"]] == [
        ("a", "a", True), ("a", "b", False), ("b", "b", True), ("tie", "a", None), ("tie", "tie", None),
        ("b", "tie", False), ("a", "a", True), ("tie", "b", None)]
    # Per skill, in the judge's skill order: the same rules on each skill's own pairs.
    assert list(result["by_skill"]) == ["single_object", "position"]
    single, position = result["by_skill"]["single_object"], result["by_skill"]["position"]
    assert single["exact"] == pytest.approx(counts(4, 2, 1, 1)) and single["clip"] == pytest.approx(counts(4, 2, 2, 0))
    assert (single["n_decided"], single["n_agree"]) == (3, 2)
    assert (position["n_decided"], position["n_agree"]) == (2, 1) and position["agreement"] == 0.5


def test_all_a_and_all_tie_cases():
    # Catches: a win rate over the decided pairs only, an agreement of 0 (or of 1) where nothing is decided.
    all_a = judge_win_rate([pair(i, "counting", True, False, 0.4, 0.1) for i in range(4)])["overall"]
    assert all_a["exact"]["a_win_rate"] == 1.0 and all_a["exact"]["a_win_rate_stderr"] == 0.0
    assert (all_a["n_decided"], all_a["agreement"], all_a["agreement_stderr"]) == (4, 1.0, 0.0)
    ties = judge_win_rate([pair(0, "colors", True, True, 0.4, 0.1), pair(1, "colors", False, False, 0.1, 0.4)])
    assert ties["overall"]["exact"]["tie_rate"] == 1.0 and ties["overall"]["clip"]["tie_rate"] == 0.0
    assert ties["overall"]["n_decided"] == 0 and ties["overall"]["agreement"] is None
    entries = judge_win_rate_metrics(ties, model_a="a", model_b="b")
    assert entries["clip_judge_agreement"].value is None and entries["clip_judge_agreement"].protocol["n"] == 0
    assert "undefined" in entries["clip_judge_agreement"].protocol
    assert entries["judge_win_rate"].value == 0.0 and entries["clip_judge_win_rate"].value == 0.5


def test_bad_verdicts_and_pairs_are_refused():
    with pytest.raises(ValueError, match="one of each per pair"):
        compare_judges(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="unknown verdict"):
        compare_judges(["A"], ["a"])
    with pytest.raises(ValueError, match="unknown skill"):
        judge_win_rate([pair(0, "juggling", True, False, 0.1, 0.2)])
    with pytest.raises(ValueError, match="no pairs"):
        judge_win_rate([])


def test_the_entries_say_which_model_and_judge_and_carry_their_protocol():
    entries = judge_win_rate_metrics(judge_win_rate(PAIRS, margin=MARGIN), model_a="long", model_b="short",
                                     protocol={"resolution": 64})
    assert set(entries) == set(ENTRIES)
    assert {n: e.higher_is_better for n, e in entries.items()} == ENTRIES
    assert entries["judge_win_rate"].value == pytest.approx(3 / 8)
    assert entries["judge_loss_rate"].value == pytest.approx(2 / 8)
    assert entries["clip_judge_win_rate"].value == pytest.approx(3 / 8)
    assert entries["clip_judge_loss_rate"].value == pytest.approx(3 / 8)
    assert entries["clip_judge_agreement"].value == pytest.approx(0.6)
    p = entries["clip_judge_agreement"].protocol
    assert (p["model_a"], p["model_b"], p["n"], p["n_pairs"], p["n_prompts"], p["chance"]) == ("long", "short", 5, 8,
                                                                                                8, 0.5)
    assert p["clip_judge"]["margin"] == MARGIN and p["resolution"] == 64 and "binomial" in p["stderr_method"]


# ---- as a run scores it ------------------------------------------------------------------------------------------


def gathered(pairs, side):
    """One model's gathered state and scored samples (as bench.metrics.scoring.SampleScorer merges them) for `pairs`,
    from side "a" or "b"."""
    state = {"fid_keys": [], "fid": None, "cmmd": {}, "truncated": [], "failures": [],
             "clip": {(p["index"], 0): (None, p[f"cos_{side}"]) for p in pairs},
             "judge": {(p["index"], 0): {"skill": p["skill"], "correct": p[f"correct_{side}"], "n_detected": 1,
                                         "detected": []} for p in pairs}}
    samples = [SimpleNamespace(record=SimpleNamespace(index=p["index"], prompt=p["prompt"], metadata={}), replica=0)
               for p in pairs]
    return state, samples


def score(scored, tmp_path, margin=MARGIN):
    from omegaconf import OmegaConf

    tools = MetricTools(judge=object(), clip=SimpleNamespace(protocol={"model": "a test CLIP"}))
    evaluations = [evaluation(model=m, dataset="shapes", weights="trained", requested=8, effective=8,
                              protocol={"resolution": 64, "seed": 0}) for m in scored]
    cfg = OmegaConf.create({"seed": 0, "dataset": {"name": "shapes"},
                            "eval": {"bootstrap": 0, "win_rate": {"margin": margin}}})
    score_models(evaluations, scored, tools=tools, cfg=cfg, metrics=["judge_win_rate"], references=None,
                 resolution=64, run_dir=tmp_path)
    return evaluations


def test_the_run_pairs_each_prompt_of_the_two_models_and_writes_into_the_first(tmp_path):
    # Catches: the models' sides swapped (the run's model is A), samples paired by position instead of by prompt
    # (B's state is in another order here, one of its samples missing), the margin setting not applied.
    state_b, samples_b = gathered(list(reversed(PAIRS)), "b")
    del state_b["judge"][(7, 0)]  # an image of B that could not be read: pair 7 has no B verdict
    long, short = score({"long": gathered(PAIRS, "a"), "short": (state_b, samples_b)}, tmp_path)
    metrics = long["metrics"]
    assert metrics["judge_win_rate"]["value"] == pytest.approx(3 / 7)
    assert metrics["judge_loss_rate"]["value"] == pytest.approx(2 / 7)
    assert metrics["clip_judge_win_rate"]["value"] == pytest.approx(3 / 7)
    assert metrics["clip_judge_loss_rate"]["value"] == pytest.approx(2 / 7)
    assert metrics["clip_judge_agreement"]["value"] == pytest.approx(0.6)
    protocol = metrics["judge_win_rate"]["protocol"]
    assert protocol["unpaired"] == {"long": 1, "short": 0} and protocol["n_pairs"] == 7
    assert protocol["clip_judge"]["scorer"] == {"model": "a test CLIP"}
    assert protocol["comparable_to_published"]["value"] is False
    assert [r["index"] for r in long["judge_win_rate"]["pairs"]] == list(range(7))
    assert long["judge_win_rate"]["model_b"] == "short" and not short["metrics"] and "judge_win_rate" not in short
    # Every number of the run is in the report, under its own section, with its protocol.
    write_results(tmp_path / "run", build_results(
        experiment="shapes_checkpoints", config={"dataset": {"name": "shapes", "limit": 8}},
        provenance={"git_commit": "0123456789", "device": "cpu", "torch": "2.x"}, evaluations=[long, short],
        latency=[]))
    report = write_report(load_runs([tmp_path / "run"]), tmp_path / "report").read_text()
    section = report[report.index("## Exact judge against CLIP judge"):]
    assert "| exact | 7 | 42.9% ± 18.7 | 28.6% ± 17.1 | 28.6% ± 17.1 |" in section
    assert "0.6 ± 0.22 (3 of 5); chance 0.5" in section
    assert "| position | 3 |" in section and "**Protocol:**" in section


def test_prompts_outside_the_shapes_grammar_are_reported_as_skipped(tmp_path):
    # The exact judge reads shapes prompts only; on another dataset every entry says why it has no value.
    state, samples = gathered(PAIRS[:2], "a")
    for verdict in state["judge"].values():
        verdict.update(skill=None, correct=None)
    long, _ = score({"long": (state, samples), "short": gathered(PAIRS[:2], "b")}, tmp_path)
    assert set(long["metrics"]) == set(ENTRIES)
    assert all(m["value"] is None and "dataset=shapes" in m["protocol"]["skipped"] for m in long["metrics"].values())


def test_one_model_alone_is_refused_naming_eval_compare_to(tmp_path):
    with pytest.raises(BenchError, match="eval.compare_to"):
        score({"long": gathered(PAIRS, "a")}, tmp_path)


def test_a_run_without_compare_to_is_refused_before_anything_is_made(tmp_path):
    # The real command: refused with the key to set, exit status 2, before either world is trained or loaded.
    done = muse_bench("experiment=shapes_checkpoints", "eval.compare_to=null", f"hydra.run.dir={tmp_path / 'run'}",
                      cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "judge_win_rate" in done.stderr and "eval.compare_to" in done.stderr
    assert not (tmp_path / "run" / "samples").exists()


# ---- the experiment preset ---------------------------------------------------------------------------------------


def test_the_shapes_checkpoints_experiment_composes_long_against_short():
    from bench.jobs.generate import model_configs

    cfg = compose_config(["experiment=shapes_checkpoints"])
    assert (cfg.job, cfg.dataset.name, cfg.dataset.limit, list(cfg.resolutions)) == ("generate", "shapes", 120, [64])
    assert list(cfg.eval.metrics) == ["judge", "clip_score", "fid", "judge_win_rate"]
    assert cfg.eval.clip.model.world == "shapes"  # the judging CLIP: the top-level world's
    assert [(m.name, m.world) for m in model_configs(cfg)] == [("muse-shapes", "shapes"),
                                                                 ("muse-shapes-short", "shapes-ci")]
    # The other way round: muse-shapes as the compare_to preset resolves its ${world} to the run's top-level world
    # (read on its own, the preset's interpolation named its own key: a recursive interpolation).
    cfg = compose_config(["experiment=shapes_checkpoints", "model=muse-shapes-short", "eval.compare_to=muse-shapes"])
    assert [(m.name, m.world) for m in model_configs(cfg)] == [("muse-shapes-short", "shapes-ci"),
                                                                 ("muse-shapes", "shapes")]
