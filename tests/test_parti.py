"""PartiPrompts analysis (bench/metrics/parti.py): group means, best-of-K, win rate and its results.json entries."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.core.errors import BenchError
from bench.metrics.parti import (
    ClipJudge,
    Pick,
    best_of_k,
    group_means,
    judge_protocol,
    win_rate,
    win_rate_metrics,
)

CATEGORIES = ["Animals", "Arts", "Food & Beverage"]
CHALLENGES = ["Basic", "Complex", "Imagination"]


def _dicts(entries: dict) -> dict:
    """Metric entries (bench.core.results.MetricEntry) in their results.json form."""
    return {name: entry.as_dict() for name, entry in entries.items()}


def _rows(n_prompts: int, k: int) -> list[dict]:
    """Manifest rows of n_prompts prompts with k replicas each, in replica-major order as a run writes them."""
    rows = []
    for replica in range(k):
        for index in range(n_prompts):
            rows.append({"index": index, "prompt": f"prompt {index}", "seed": 100 + replica, "replica": replica,
                         "file": f"{index:05d}_{replica:02d}.png", "category": CATEGORIES[index % 3],
                         "challenge": CHALLENGES[(index // 3) % 3]})
    return rows


@pytest.mark.parametrize("by", ["category", "challenge"])
def test_group_means_match_pandas(by):
    rows = _rows(n_prompts=14, k=3)
    values = np.random.default_rng(0).normal(0.3, 0.05, size=len(rows))
    got = group_means(rows, values, by)

    df = pd.DataFrame(rows).assign(v=values)
    means = df.groupby(by)["v"].mean()
    sizes = df.groupby(by).size()
    # stderr over prompts: first the per-prompt means, then pandas' standard error of the mean per group.
    per_prompt = df.groupby([by, "index"])["v"].mean().reset_index()
    sems = per_prompt.groupby(by)["v"].sem()
    n_prompts = per_prompt.groupby(by).size()

    assert [g["group"] for g in got] == sorted(means.index)
    for g in got:
        assert g["mean"] == pytest.approx(means[g["group"]], rel=1e-12)
        assert g["n"] == sizes[g["group"]] and g["n_prompts"] == n_prompts[g["group"]]
        assert g["stderr"] == pytest.approx(sems[g["group"]], rel=1e-12)
    json.dumps(got, allow_nan=False)


def test_group_means_single_prompt_has_no_stderr_and_bad_input_is_refused():
    rows = _rows(n_prompts=1, k=2)
    (only,) = group_means(rows, [0.1, 0.3], "category")
    assert only["mean"] == pytest.approx(0.2) and only["stderr"] is None and only["n"] == 2
    with pytest.raises(BenchError, match="category, challenge"):
        group_means(rows, [0.1, 0.3], "note")
    with pytest.raises(BenchError, match="Manifest row 1"):
        group_means([rows[0], {"index": 0, "prompt": "p"}], [0.1, 0.3], "category")
    with pytest.raises(ValueError):
        group_means(rows, [0.1], "category")


def test_best_of_k_picks_the_highest_score_per_prompt():
    rows = _rows(n_prompts=5, k=4)
    scores = np.random.default_rng(1).normal(size=len(rows))
    best = best_of_k(rows, scores)
    assert list(best) == [0, 1, 2, 3, 4]
    for index, pick in best.items():
        own = [s for r, s in zip(rows, scores) if r["index"] == index]
        assert pick.score == max(own)
        assert pick.row["index"] == index and pick.row["replica"] == int(np.argmax(own))


def test_best_of_k_breaks_ties_by_the_lowest_replica():
    rows = _rows(n_prompts=1, k=3)[::-1]  # replicas 2, 1, 0
    best = best_of_k(rows, [0.5, 0.5, 0.2])
    assert best[0].row["replica"] == 1 and best[0].score == 0.5


def _picks(scores: dict[int, float], categories: dict[int, str]) -> dict[int, Pick]:
    return {i: Pick({"index": i, "prompt": f"prompt {i}", "file": f"{i}.png", "category": categories[i],
                     "challenge": "Basic" if i < 4 else "Complex"}, s) for i, s in scores.items()}


def test_win_rate_counts_ties_and_categories():
    cats = {0: "Animals", 1: "Animals", 2: "Animals", 3: "Arts", 4: "Arts", 5: "Arts"}
    a = _picks({0: 0.30, 1: 0.25, 2: 0.200, 3: 0.31, 4: 0.10, 5: 0.28}, cats)
    b = _picks({0: 0.20, 1: 0.30, 2: 0.205, 3: 0.20, 4: 0.20, 5: 0.20}, cats)
    # margin 0.01: prompt 2 (difference 0.005) is a tie; A wins 0, 3, 5; B wins 1, 4.
    result = win_rate(a, b, margin=0.01)
    assert [p["verdict"] for p in result["prompts"]] == ["a", "b", "tie", "a", "b", "a"]
    overall = result["overall"]
    assert (overall["a_wins"], overall["b_wins"], overall["ties"], overall["n"]) == (3, 2, 1, 6)
    assert overall["a_win_rate"] == pytest.approx(0.5) and overall["tie_rate"] == pytest.approx(1 / 6)
    assert overall["ratio"] == pytest.approx(1.5)
    animals, arts = result["by_category"]["Animals"], result["by_category"]["Arts"]
    assert (animals["a_wins"], animals["b_wins"], animals["ties"]) == (1, 1, 1)
    assert (arts["a_wins"], arts["b_wins"], arts["ties"]) == (2, 1, 0)
    assert result["by_challenge"]["Basic"]["n"] == 4 and result["by_challenge"]["Complex"]["ratio"] == 1.0
    assert result["judge"] == {"name": "clip_cosine", "margin": 0.01, "note": result["judge"]["note"]}
    json.dumps(result, allow_nan=False)

    # With no margin the near-tie is decided.
    assert win_rate(a, b)["overall"]["ties"] == 0


def test_win_rate_takes_metadata_from_rows_when_given():
    a = _picks({0: 0.3, 1: 0.1}, {0: "Animals", 1: "Animals"})
    b = _picks({0: 0.2, 1: 0.2}, {0: "Animals", 1: "Animals"})
    rows = [{"index": 0, "category": "Arts", "challenge": "Basic"},
            {"index": 1, "category": "Food", "challenge": "Basic"}]
    result = win_rate(a, b, rows=rows)
    assert set(result["by_category"]) == {"Arts", "Food"}


def test_win_rate_with_a_custom_judge_and_bad_inputs():
    cats = {0: "Animals", 1: "Arts"}
    a, b = _picks({0: 0.9, 1: 0.9}, cats), _picks({0: 0.1, 1: 0.1}, cats)
    seen = []

    def prefer_b(prompt, pick_a, pick_b):
        seen.append((prompt, pick_a.row["file"], pick_b.score))
        return "b"

    result = win_rate(a, b, judge=prefer_b)
    assert result["overall"]["b_wins"] == 2 and result["overall"]["ratio"] == 0.0
    assert seen == [("prompt 0", "0.png", 0.1), ("prompt 1", "1.png", 0.1)]
    assert result["judge"]["name"].endswith("prefer_b")

    with pytest.raises(BenchError, match="'a', 'b' or 'tie'"):
        win_rate(a, b, judge=lambda *args: "A")
    with pytest.raises(BenchError, match="same prompts"):
        win_rate(a, {0: b[0]})
    other = {0: Pick({**b[0].row, "prompt": "something else"}, 0.1), 1: b[1]}
    with pytest.raises(BenchError, match="different prompts"):
        win_rate(a, other)
    with pytest.raises(BenchError, match="margin"):
        ClipJudge(-0.1)


def test_judge_protocol_prefers_the_judges_own():
    assert judge_protocol(ClipJudge(0.02))["margin"] == 0.02
    assert judge_protocol(len) == {"name": "builtins.len"}


def test_win_rate_metrics_entries():
    cats = {i: "Animals" for i in range(10)}
    a = _picks({i: 0.3 if i < 7 else 0.1 for i in range(10)}, cats)
    b = _picks({i: 0.2 if i < 9 else 0.1 for i in range(10)}, cats)  # A wins 7, B wins 2, 1 tie
    result = win_rate(a, b)
    m = _dicts(win_rate_metrics(result, model_a="muse-tiny", model_b="sd-v1-4", samples_per_prompt=16, margin=0.0,
                                protocol={"arch": "ViT-L-14"}))
    assert m["win_rate"]["value"] == pytest.approx(0.7) and m["win_rate"]["higher_is_better"] is True
    assert m["win_rate"]["stderr"] == pytest.approx(math.sqrt(0.7 * 0.3 / 10))
    assert m["loss_rate"]["value"] == pytest.approx(0.2) and m["loss_rate"]["higher_is_better"] is False
    assert m["win_ratio"]["value"] == pytest.approx(3.5)
    assert m["win_ratio"]["stderr"] == pytest.approx(3.5 * math.sqrt(1 / 7 + 1 / 2))
    proto = m["win_ratio"]["protocol"]
    assert (proto["K"], proto["margin"], proto["n_prompts"], proto["model_b"], proto["arch"]) == (
        16, 0.0, 10, "sd-v1-4", "ViT-L-14")
    assert proto["counts"] == {"a_wins": 7, "b_wins": 2, "ties": 1, "tie_rate": pytest.approx(0.1)}
    json.dumps(m, allow_nan=False)


def test_win_ratio_is_null_when_b_never_wins():
    cats = {0: "Animals", 1: "Arts"}
    result = win_rate(_picks({0: 0.9, 1: 0.9}, cats), _picks({0: 0.1, 1: 0.1}, cats))
    m = _dicts(win_rate_metrics(result, model_a="a", model_b="b", samples_per_prompt=1, margin=0.0))
    assert m["win_ratio"]["value"] is None and m["win_ratio"]["stderr"] is None
    assert m["win_rate"]["value"] == 1.0 and m["win_rate"]["stderr"] == 0.0
    json.dumps(m, allow_nan=False)
