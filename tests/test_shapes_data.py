"""The shapes world as a dataset: its shipped evaluation prompts, dataset.skills, its rendered reference images, the
`judge` metric, and a generation run scored by the judge end to end."""

from __future__ import annotations

import io
import json
import math
import pickle

import numpy as np
import pytest
from conftest import muse_bench
from omegaconf import OmegaConf
from PIL import Image

from bench.core.errors import BenchError
from bench.core.results import evaluation
from bench.data.prompts import load_dataset, packaged_data_path
from bench.data.references import has_own_references, open_references
from bench.jobs.generation import Sample
from bench.metrics.evaluate import score_models
from bench.metrics.judge import ENTRIES, ShapesJudge, judge_accuracy
from bench.metrics.scoring import MetricTools, SampleScorer
from bench.shapes.captions import caption, parse
from bench.shapes.prompts import SCENE_SIZE, evaluation_prompts, format_prompts, main
from bench.shapes.scenes import BACKGROUND, SKILLS, make_scene, render

# ---- the evaluation prompts ---------------------------------------------------------------------------------


def test_the_shipped_prompt_file_is_its_regeneration(tmp_path):
    shipped = packaged_data_path("shapes_prompts.tsv")
    assert shipped.read_text(encoding="utf-8") == format_prompts(evaluation_prompts())
    main([str(tmp_path / "again.tsv")])  # the documented command writes the same bytes
    assert (tmp_path / "again.tsv").read_bytes() == shipped.read_bytes()


def test_the_prompts_are_test_scene_captions_fifty_per_skill_round_robin():
    records = load_dataset("shapes")
    assert len(records) == 300
    assert [r.metadata["skill"] for r in records] == [SKILLS[i % 6] for i in range(300)]
    assert {s: sum(r.metadata["skill"] == s for r in records) for s in SKILLS} == dict.fromkeys(SKILLS, 50)
    for r in records:
        scene = make_scene(r.metadata["scene"], "test", SCENE_SIZE)
        assert r.prompt == caption(scene) and parse(r.prompt).skill == scene.skill == r.metadata["skill"], r
    assert [r.index for r in records] == list(range(300)) and [r.id for r in records] == list(range(300))
    assert {r.metadata["skill"] for r in load_dataset("shapes", limit=6)} == set(SKILLS)  # a small limit: all six


@pytest.mark.parametrize(("line", "error"), [
    ("0\ta circle\tsingle_object", "4 tab-separated fields"),
    ("0\ta circle\tsinging\t0", "unknown skill 'singing'"),
    ("0\ta circle\tsingle_object\tzero", "scene must be a whole number"),
    ("0\t \tsingle_object\t0", "empty prompt"),
])
def test_a_malformed_prompt_line_is_refused_with_its_line(tmp_path, line, error):
    path = tmp_path / "shapes.tsv"
    path.write_text(f"id\tprompt\tskill\tscene\n1\ta square\tsingle_object\t6\n{line}\n", encoding="utf-8")
    with pytest.raises(BenchError, match=rf"shapes.tsv:3: .*{error}"):
        load_dataset("shapes", path=str(path))


# ---- dataset.skills -------------------------------------------------------------------------------------------


def test_dataset_skills_keeps_those_skills_records_with_their_full_list_indices():
    full = load_dataset("shapes")
    picked = load_dataset("shapes", skills=["position", "counting"], limit=5)
    assert [r.index for r in picked] == [2, 4, 8, 10, 14]  # skills first, then the first 5 of those
    assert picked == [full[i] for i in (2, 4, 8, 10, 14)]
    assert len(load_dataset("shapes", skills=["colors"])) == 50
    assert load_dataset("shapes", skills=None) == full


def test_dataset_skills_refuses_unknown_skills_and_datasets_without_skills():
    with pytest.raises(BenchError, match="dataset.skills") as err:
        load_dataset("shapes", skills=["counting", "juggling"])
    assert "juggling" in str(err.value) and all(skill in str(err.value) for skill in SKILLS)
    with pytest.raises(BenchError, match="dataset.skills is an empty list"):
        load_dataset("shapes", skills=[])
    with pytest.raises(BenchError, match=r"dataset.skills.*'partiprompts' has no skills.*dataset=shapes"):
        load_dataset("partiprompts", skills=["counting"])


def test_the_config_takes_dataset_skills():
    from bench.cli import compose_config

    cfg = compose_config(["dataset=shapes", "dataset.skills=[counting,position]"])
    assert cfg.dataset.name == "shapes" and list(cfg.dataset.skills) == ["counting", "position"]
    assert compose_config(["dataset=shapes"]).dataset.skills is None


# ---- reference images -------------------------------------------------------------------------------------------


def _pixels(reference) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(reference.read())).convert("RGB"))


def test_the_references_are_test_scenes_rendered_at_the_asked_size():
    records = load_dataset("shapes", limit=4)
    refs = open_references({"name": "shapes"}, records, resolution=64)
    assert has_own_references("shapes") and not has_own_references("partiprompts")
    assert len(refs.images) == 300 and refs.stats["expected"] == refs.stats["found"] == 300  # one per row
    for i in (0, 5, 299):
        assert _pixels(refs.images[i]).shape == (64, 64, 3)
        assert np.array_equal(_pixels(refs.images[i]), np.asarray(render(make_scene(i, "test", 64))))
    assert not np.array_equal(_pixels(refs.images[0]), np.asarray(render(make_scene(0, "train", 64))))
    assert np.array_equal(_pixels(pickle.loads(pickle.dumps(refs.images[5]))), _pixels(refs.images[5]))
    p = refs.protocol
    assert (p["split"], p["size"], p["count"], p["scenes"], p["reference_set"]) == ("test", 64, 300, "0-299", "all")
    assert "not from the prompts" in p["disjoint_from"] and p["caption_list"] == "shapes_prompts.tsv"
    assert "scene" in p["content"]["of"] and p["content"]["images"] == 300
    # At any size each reference is the very scene its prompt was captioned from (the layout is size-free).
    at_256 = open_references({"name": "shapes", "reference_set": "matched"}, records, resolution=256)
    assert at_256.protocol["scenes"] == "0-3" and at_256.protocol["size"] == 256
    for record, image in zip(records, at_256.images):
        scene = make_scene(record.metadata["scene"], "test", 256)
        assert parse(record.prompt) == parse(caption(scene)) and _pixels(image).shape == (256, 256, 3)
        assert np.array_equal(_pixels(image), np.asarray(render(scene)))
    capped = open_references({"name": "shapes", "reference_limit": 7}, records, resolution=32)
    assert capped.protocol["count"] == 7 and capped.protocol["content"] != refs.protocol["content"]
    with pytest.raises(ValueError, match="resolution"):
        open_references({"name": "shapes"}, records)


def test_a_reference_dir_still_replaces_the_rendered_references(tmp_path):
    render(make_scene(0, "train", 32)).save(tmp_path / "a.png")
    refs = open_references({"name": "shapes", "reference_dir": str(tmp_path)}, load_dataset("shapes", limit=1),
                           resolution=64)
    assert refs.protocol["source"] == "folder" and [i.key for i in refs.images] == ["a.png"]


# ---- the judge metric ---------------------------------------------------------------------------------------------


def _judged(records, images, tmp_path, dataset="shapes"):
    """The judge metric's entries and the evaluation, through the scorer and score_models as a run computes them."""
    tools = MetricTools(judge=ShapesJudge())
    samples = [Sample(r, 0, 256) for r in records]
    scorer = SampleScorer(tools, 256)
    half = len(samples) // 2  # two shards, merged as a distributed run merges them
    other = SampleScorer(tools, 256)
    scorer.add(samples[:half], images[:half])
    other.add(samples[half:], images[half:])
    state = SampleScorer.merged([other.state(), scorer.state()])
    entry = evaluation(model="m", dataset=dataset, weights="random", requested=len(samples), effective=len(samples),
                       protocol={"resolution": 256})
    cfg = OmegaConf.create({"seed": 0, "dataset": {"name": dataset}, "eval": {"bootstrap": 0}})
    score_models([entry], {"m": (state, samples)}, tools=tools, cfg=cfg, metrics=["judge"], references=None,
                 resolution=256, run_dir=tmp_path)
    return entry["metrics"], entry


def test_the_judge_scores_the_prompts_own_scenes_right_and_other_images_wrong(tmp_path):
    records = load_dataset("shapes", limit=60)
    truth = [render(make_scene(r.metadata["scene"], "test", SCENE_SIZE)) for r in records]
    metrics, entry = _judged(records, truth, tmp_path)
    assert list(metrics) == list(ENTRIES)
    for name in ENTRIES:
        assert (metrics[name]["value"], metrics[name]["stderr"], metrics[name]["higher_is_better"]) == (1.0, 0.0, True)
    protocol = metrics["judge_accuracy"]["protocol"]
    assert protocol["judge"] == "exact programmatic (bench/shapes/judge.py)" and protocol["resolution"] == 256
    assert protocol["counts"] == {s: {"n": 10, "correct": 10, "n_prompts": 10} for s in SKILLS}
    assert (protocol["n"], protocol["n_prompts"]) == (60, 60)
    assert metrics["judge_accuracy/colors"]["protocol"]["n"] == 10
    assert "no published number" in protocol["comparable_to"]
    assert protocol["objects_found"]["max"] == 4  # a counting scene's four objects, nothing else
    assert protocol["comparable_to_published"]["published"] is None
    assert entry["n_samples"]["effective"] == 60
    verdicts = entry["judge_verdicts"]
    assert [(v["index"], v["scene"], v["skill"], v["correct"]) for v in verdicts] == [
        (r.index, r.metadata["scene"], r.metadata["skill"], True) for r in records]

    blank = [Image.new("RGB", (256, 256), BACKGROUND)] * len(records)
    metrics, _ = _judged(records, blank, tmp_path)
    assert all(metrics[name]["value"] == 0.0 for name in ENTRIES)
    assert metrics["judge_accuracy/counting"]["protocol"]["counts"]["counting"] == {"n": 10, "correct": 0,
                                                                                    "n_prompts": 10}

    shuffled = truth[6:] + truth[:6]  # each prompt beside another scene of its own skill
    metrics, _ = _judged(records, shuffled, tmp_path)
    assert metrics["judge_accuracy"]["value"] <= 0.25
    assert metrics["judge_accuracy"]["protocol"]["counts"]["colors"]["n"] == 10


def test_judge_accuracy_is_the_mean_of_the_skills_with_binomial_errors():
    entries = judge_accuracy(["counting"] * 4 + ["colors"] * 2, [True, True, False, False, True, True],
                             prompts=[0, 0, 1, 1, 2, 3])  # two images of each counting prompt
    assert set(entries) == {"judge_accuracy", "judge_accuracy/counting", "judge_accuracy/colors"}
    assert entries["judge_accuracy/counting"].value == 0.5 and entries["judge_accuracy/counting"].stderr == 0.25
    assert entries["judge_accuracy/colors"].value == 1.0 and entries["judge_accuracy/colors"].stderr == 0.0
    # GenEval's overall is the mean of the skills (0.75), not the pooled fraction (4 / 6).
    assert entries["judge_accuracy"].value == 0.75
    assert math.isclose(entries["judge_accuracy"].stderr, math.sqrt(0.25 ** 2 + 0.0) / 2)
    assert entries["judge_accuracy"].protocol["counts"] == {"counting": {"n": 4, "correct": 2, "n_prompts": 2},
                                                          "colors": {"n": 2, "correct": 2, "n_prompts": 2}}
    assert (entries["judge_accuracy"].protocol["n"], entries["judge_accuracy"].protocol["n_prompts"]) == (6, 4)
    assert entries["judge_accuracy/counting"].protocol["n"] == 4


def test_the_judge_refuses_prompts_outside_the_shapes_grammar(tmp_path):
    records = load_dataset("partiprompts", limit=3)
    metrics, entry = _judged(records, [Image.new("RGB", (256, 256), BACKGROUND)] * 3, tmp_path, "partiprompts")
    assert list(metrics) == list(ENTRIES) and "judge_verdicts" not in entry
    for metric in metrics.values():
        assert metric["value"] is None
        assert "shapes grammar" in metric["protocol"]["skipped"] and "dataset=shapes" in metric["protocol"]["skipped"]


# ---- end to end ----------------------------------------------------------------------------------------------------


def test_a_generation_run_on_shapes_writes_the_judge_entries(tmp_path):
    run_dir = tmp_path / "run"
    done = muse_bench("experiment=tiny", "job=generate", "model=muse-tiny", "dataset=shapes", "dataset.limit=6", "resolutions=[256]",
                      "eval.metrics=[judge]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (ev,) = json.loads((run_dir / "results.json").read_text())["evaluations"]
    assert ev["dataset"] == "shapes" and list(ev["metrics"]) == list(ENTRIES)  # limit 6: every skill
    for metric in ev["metrics"].values():
        assert 0.0 <= metric["value"] <= 1.0 and metric["higher_is_better"] is True
        counts = metric["protocol"]["counts"]
        assert counts == {s: {"n": 1, "correct": counts[s]["correct"], "n_prompts": 1} for s in SKILLS}
    rows = [json.loads(line) for line in (run_dir / ev["protocol"]["samples_dir"] / "manifest.jsonl").open()]
    assert [(r["skill"], r["scene"]) for r in rows] == [(SKILLS[i], i) for i in range(6)]
    assert [v["index"] for v in ev["judge_verdicts"]] == list(range(6))
