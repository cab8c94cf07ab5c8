"""The generate job with metrics, run as a user runs it: `muse-bench experiment=partiprompts ...`, offline, with
small local feature networks injected through the config (no Inception or CLIP weights exist here)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import muse_bench

from bench.metrics.clip_model import TINY_CLIP_NAME, open_clip_scorer

PHOTOS = sorted((Path(__file__).resolve().parent / "assets" / "cc_images").glob("*.jpg"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny CLIP checkpoint, a folder of real reference photos and the overrides that inject small extractors."""
    root = tmp_path_factory.mktemp("eval")
    checkpoint = root / "tiny-clip.bin"
    torch.save(open_clip_scorer(TINY_CLIP_NAME, None, seed=0).model.state_dict(), checkpoint)
    refs = root / "refs"
    refs.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, refs / photo.name)
    overrides = [
        "eval.fid.feature_extractor={_target_: bench.testing.RandomConvFeatures, dims: 32}",
        f"eval.clip.arch={TINY_CLIP_NAME}", f"eval.clip.pretrained={checkpoint}",
        f"eval.cmmd.arch={TINY_CLIP_NAME}", f"eval.cmmd.pretrained={checkpoint}",
        f"dataset.reference_dir={refs}", f"eval.cache_dir={root / 'cache'}",
    ]
    return root, overrides


@pytest.fixture(scope="module")
def parti_run(setup):
    root, overrides = setup
    run_dir = root / "run"
    done = muse_bench("experiment=partiprompts", "model=muse-tiny", "dataset.limit=4", "eval.samples_per_prompt=2",
                      "eval.compare_to=sd-v1-4-tiny", "model.steps=4", *overrides, f"hydra.run.dir={run_dir}",
                      "eval.metrics=[clip_score,parti,win_rate,fid,kid,cmmd,prdc]", "eval.prdc.nearest_k=3",
                      cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_partiprompts_writes_samples_manifest_and_every_metric(parti_run):
    run_dir, results = parti_run
    muse, sd = results["evaluations"]
    assert (muse["model"], sd["model"]) == ("muse-tiny", "sd-v1-4-tiny")
    for entry in (muse, sd):
        assert entry["n_samples"] == {"requested": 8, "effective": 8}
        folder = run_dir / entry["protocol"]["samples_dir"]
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        assert [(r["index"], r["replica"]) for r in rows] == [(i, k) for i in range(4) for k in range(2)]
        assert all((folder / r["file"]).is_file() and r["seed"] == 0 for r in rows)  # the run's seed; replica apart
        assert {"category", "challenge"} <= set(rows[0])
        for name in ("fid", "kid", "clip_score", "clip_score_x100", "cmmd"):
            metric = entry["metrics"][name]
            assert math.isfinite(metric["value"]), name
            assert metric["higher_is_better"] == name.startswith("clip")
        for name in ("precision", "recall", "density", "coverage"):  # on FID's features, against its references
            metric = entry["metrics"][name]
            p = metric["protocol"]
            assert metric["higher_is_better"] and 0 <= metric["value"] <= (3 if name == "density" else 1), name
            assert (p["nearest_k"], p["n_generated"], p["n_reference"]) == (3, 8, len(PHOTOS)), name
            assert "RandomConvFeatures" in p["feature_extractor"] and p["below_minimum"] is True
        assert {b["group"] for b in entry["breakdown"]["category"]} == {r["category"] for r in rows}
    # SD v1.4 (tiny) is made at 512, its native size, and resized to the 256 that is scored; Muse makes 256 itself.
    assert (muse["protocol"]["generated_at"], muse["protocol"]["resized_with"]) == (None, None)
    assert sd["protocol"]["generated_at"] == 512 and sd["protocol"]["resized_with"]["filter"] == "bicubic"
    assert (sd["protocol"]["resized_with"]["from"], sd["protocol"]["resized_with"]["to"]) == (512, 256)
    sampling = json.loads((run_dir / sd["protocol"]["samples_dir"] / "sampling.json").read_text())
    assert sampling["generated_at"] == {"256": 512} and sampling["resized_with"] == {"256": sd["protocol"]["resized_with"]}
    fid = muse["metrics"]["fid"]["protocol"]
    assert "RandomConvFeatures" in fid["feature_extractor"] and fid["below_minimum"] is True
    # Every entry says whether it can stand beside a published figure: none can here, each with its reasons.
    for name, metric in muse["metrics"].items():
        assert metric["protocol"]["comparable_to_published"]["value"] is False, name
    assert "random model weights" in muse["metrics"]["win_rate"]["protocol"]["comparable_to_published"]["reasons"]
    cmmd = muse["metrics"]["cmmd"]["protocol"]
    assert cmmd["arch"] == TINY_CLIP_NAME and cmmd["image_preprocess"]["resize_mode"] == "squash"
    assert cmmd["reference_resize"]["size"] == [32, 32] and cmmd["small_sample_bias"]["negligible"] is False
    assert fid["n_reference"] == len(PHOTOS) and fid["reference"]["source"] == "folder"
    assert muse["metrics"]["clip_score"]["protocol"]["arch"] == TINY_CLIP_NAME
    x100 = muse["metrics"]["clip_score_x100"]["value"]
    assert 0 <= x100 <= 100 and x100 >= 100 * muse["metrics"]["clip_score"]["value"] - 1e-9
    win, loss = muse["metrics"]["win_rate"], muse["metrics"]["loss_rate"]
    counts = win["protocol"]["counts"]
    assert counts["a_wins"] + counts["b_wins"] + counts["ties"] == 4
    assert math.isclose(win["value"], counts["a_wins"] / 4) and math.isclose(loss["value"], counts["b_wins"] / 4)
    assert (run_dir / "parti_breakdown.csv").is_file()


def test_scoring_the_written_pngs_equals_streaming(parti_run, setup):
    """Rerun into the same folder with eval.stream=false: nothing is generated again, the PNGs are read back, and
    every metric is the streamed one."""
    run_dir, streamed = parti_run
    root, overrides = setup
    saved = root / "streamed.json"
    saved.write_text(json.dumps(streamed))
    done = muse_bench("experiment=partiprompts", "model=muse-tiny", "dataset.limit=4", "eval.samples_per_prompt=2",
                      "eval.compare_to=sd-v1-4-tiny", "model.steps=4", *overrides, f"hydra.run.dir={run_dir}",
                      "eval.metrics=[clip_score,parti,win_rate,fid,kid,cmmd,prdc]", "eval.prdc.nearest_k=3",
                      "eval.stream=false", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0 generated, 8 already there" in done.stdout + done.stderr
    again = json.loads((run_dir / "results.json").read_text())
    for before, after in zip(streamed["evaluations"], again["evaluations"]):
        assert before["metrics"].keys() == after["metrics"].keys()
        for name, metric in before["metrics"].items():
            assert math.isclose(after["metrics"][name]["value"], metric["value"], rel_tol=1e-6, abs_tol=1e-9), name


def test_a_corrupt_reference_image_is_reported_and_left_out(setup, tmp_path):
    root, overrides = setup
    refs = tmp_path / "refs"
    shutil.copytree(root / "refs", refs)
    (refs / "zz-truncated.jpg").write_bytes(PHOTOS[0].read_bytes()[:300])
    done = muse_bench("experiment=tiny", "job=generate", "dataset.limit=2", "eval.metrics=[fid]", "model.steps=2", *overrides,
                      f"dataset.reference_dir={refs}", f"eval.cache_dir={tmp_path / 'cache'}",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    fid = json.loads((tmp_path / "run" / "results.json").read_text())["evaluations"][0]["metrics"]["fid"]
    assert fid["protocol"]["n_reference"] == len(PHOTOS)
    assert [e["file"] for e in fid["protocol"]["reference_excluded"]] == ["zz-truncated.jpg"]


def test_metrics_without_references_are_reported_as_skipped(setup, tmp_path):
    root, overrides = setup
    done = muse_bench("experiment=tiny", "job=generate", "dataset.limit=2", "eval.metrics=[fid,clip_score]", "model.steps=2", *overrides,
                      "dataset.reference_dir=null", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "results.json").read_text())["evaluations"][0]["metrics"]
    assert metrics["fid"]["value"] is None and "dataset.reference_dir" in metrics["fid"]["protocol"]["skipped"]
    assert math.isfinite(metrics["clip_score"]["value"])


@pytest.mark.parametrize(("args", "expected"), [
    (["eval.metrics=[win_rate]"], "eval.compare_to"),
    (["eval.metrics=[judge_win_rate]"], "eval.compare_to"),
    (["eval.metrics=[fid]", "eval.fid.download=false", "dataset.reference_dir={refs}"], "inception-2015-12-05.pt"),
    (["experiment=coco30k", "dataset.limit=2"], "job=prepare"),
])  # an unknown metric name is refused earlier, when Hydra composes the config (tests/test_config.py)
def test_expected_evaluation_errors_exit_2_before_generating(setup, tmp_path, args, expected, monkeypatch):
    root, _ = setup
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # no stray Inception weights in the temp folder
    args = [a.format(refs=root / "refs") for a in args]
    done = muse_bench("experiment=tiny", "job=generate", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and expected in done.stderr
    assert not (tmp_path / "run" / "samples").exists()


# ---- in-process: which feature networks a run asks for ----------------------------------------------------


@pytest.fixture
def offline_without_weights(tmp_path, monkeypatch):
    """No Inception weights anywhere clean-fid looks and no network: what a fresh offline machine has."""
    import tempfile
    import urllib.error
    import urllib.request

    from huggingface_hub import constants as hf_constants

    import bench.metrics.features as features_mod

    monkeypatch.setattr(features_mod, "CLEANFID_INCEPTION_DIR", tmp_path / "cleanfid")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(request, timeout=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what the one downloader, bench.core.download, calls
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


TINY_RUN = ["dataset.limit=2", "eval.samples_per_prompt=1", "model.steps=2", f"eval.clip.arch={TINY_CLIP_NAME}",
            "eval.clip.pretrained=null", "eval.bootstrap=0"]


def test_partiprompts_offline_runs_without_the_weights_of_metrics_it_cannot_compute(tmp_path, offline_without_weights):
    """PartiPrompts has no reference images: FID, KID and CMMD are skipped, so neither Inception nor CMMD's
    CLIP-L/14-336 is asked for, and the metrics that can run do. (The preset's win rate is left out only to
    spare the test a second model: it needs no weights beyond CLIP score's.)"""
    from bench.cli import compose_config
    from bench.jobs.generate import generate_and_score

    preset = compose_config(["experiment=partiprompts"]).eval.metrics
    assert {"fid", "kid", "cmmd", "clip_score", "parti"} <= set(preset)
    metrics = [m for m in preset if m != "win_rate"]
    cfg = compose_config(["experiment=partiprompts", "eval.compare_to=null", f"eval.metrics=[{','.join(metrics)}]",
                          *TINY_RUN, f"eval.cache_dir={tmp_path / 'cache'}"])
    evaluations, _, _ = generate_and_score(cfg, run_dir=tmp_path / "run")
    entry = evaluations[0]
    for name in ("fid", "kid", "cmmd"):
        skipped = entry["metrics"][name]
        assert skipped["value"] is None and "dataset.reference_dir" in skipped["protocol"]["skipped"]
    assert math.isfinite(entry["metrics"]["clip_score"]["value"]) and entry["breakdown"]["category"]


def test_weights_of_a_metric_that_will_be_computed_are_still_asked_for_before_generating(
        setup, tmp_path, offline_without_weights):
    """With reference images, CMMD will be computed: its CLIP weights missing offline stop the run before any
    sample is made, with a message naming the eval.cmmd settings."""
    from bench.cli import compose_config
    from bench.core.errors import BenchError
    from bench.jobs.generate import generate_and_score

    root, _ = setup
    cfg = compose_config(["experiment=tiny", "job=generate", "eval.metrics=[cmmd]", *TINY_RUN,
                          f"dataset.reference_dir={root / 'refs'}",
                          f"eval.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(BenchError, match=r"eval\.cmmd\.arch=ViT-L-14-336 eval\.cmmd\.pretrained=openai"):
        generate_and_score(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "samples").exists()


def test_reference_features_are_keyed_by_the_images_in_the_folder(tmp_path, caplog):
    """The reference cache follows the folder's content: a rerun reads it (recorded and logged as a hit); one
    image replaced under the same name (a second download over the first) changes the key and the FID.
    References smaller than the evaluation resolution are counted and warned about."""
    import logging

    from PIL import Image

    from bench.cli import compose_config
    from bench.jobs.generate import generate_and_score

    refs = tmp_path / "refs"
    refs.mkdir()
    for i, photo in enumerate(PHOTOS[:12]):
        Image.open(photo).convert("RGB").resize((96, 64)).save(refs / f"{i:05d}.png")
    cfg = compose_config([
        "experiment=tiny", "job=generate", "eval.metrics=[fid]", "dataset.limit=6", "model.steps=2", "eval.bootstrap=0",
        "eval.fid.feature_extractor={_target_: bench.testing.RandomConvFeatures, dims: 4}",
        f"dataset.reference_dir={refs}", f"eval.cache_dir={tmp_path / 'cache'}"])

    def fid() -> dict:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            return generate_and_score(cfg, run_dir=tmp_path / "run")[0][0]["metrics"]["fid"]

    first = fid()
    cache = first["protocol"]["reference_cache"]
    assert cache["hit"] is False and len(cache["key"]) == 64 and Path(cache["file"]).is_file()
    n = len(list(refs.iterdir()))
    assert first["protocol"]["reference_smaller_than_resolution"] == {"count": n, "of": n, "resolution": 256}
    assert f"{n} of {n} reference images are smaller than 256 px" in caplog.text

    again = fid()
    assert again["protocol"]["reference_cache"] == {**cache, "hit": True} and again["value"] == first["value"]
    assert f"read from the cache {cache['file']}" in caplog.text

    Image.open(PHOTOS[-1]).convert("RGB").resize((64, 64)).save(refs / "00003.png")
    assert len(list(refs.iterdir())) == n
    changed = fid()
    assert changed["protocol"]["reference_cache"]["hit"] is False
    assert changed["protocol"]["reference_cache"]["key"] != cache["key"]
    assert changed["value"] != first["value"]



# ---- the metric registry: one mapping for scoring and evaluation ---------------------------------------------


def test_every_registered_metric_declares_its_network_references_and_entries():
    from bench.metrics import METRICS, NETWORKS
    from bench.metrics.metric import NETWORKS as NETWORK_NAMES
    from bench.metrics.metric import Metric

    assert tuple(NETWORKS) == NETWORK_NAMES
    for name in METRICS:
        metric = METRICS[name]
        assert isinstance(metric, Metric) and metric.name == name
        assert set(metric.networks) <= set(NETWORKS) and metric.entries
        assert metric.score_model is not None or metric.score_run is not None, name
    assert {m for m in METRICS if METRICS[m].needs_references} == {"fid", "kid", "prdc", "cmmd"}
    assert {m for m in METRICS if METRICS[m].pairwise} == {"win_rate", "judge_win_rate"}
    assert {m: METRICS[m].networks for m in METRICS} == {
        "fid": ("fid",), "kid": ("fid",), "prdc": ("fid",), "clip_score": ("clip",), "cmmd": ("cmmd",), "parti": ("clip",),
        "win_rate": ("clip",), "judge": ("judge",), "judge_win_rate": ("judge", "clip")}


def test_every_requested_metric_is_reported_when_its_network_is_missing(tmp_path):
    """With CLIP's weights missing (the default job, offline), clip_score, parti and win_rate are each reported as
    skipped with the reason, under every entry they would write: none is dropped silently."""
    from omegaconf import OmegaConf

    from bench.core.results import evaluation
    from bench.metrics.evaluate import score_models
    from bench.metrics.scoring import MetricTools

    reason = "CLIP weights are not on this machine: set eval.clip.pretrained"
    tools = MetricTools(unavailable={"clip": reason})
    state = {"fid_keys": [], "fid": None, "clip": {}, "cmmd": {}, "truncated": [], "failures": []}
    evaluations = [evaluation(model=m, dataset="partiprompts", weights="random", requested=2, effective=2,
                              protocol={"resolution": 256}) for m in ("muse-tiny", "sd-v1-4-tiny")]
    cfg = OmegaConf.create({"seed": 0, "dataset": {"name": "partiprompts"}, "eval": {"bootstrap": 0}})
    score_models(evaluations, {"muse-tiny": (state, []), "sd-v1-4-tiny": (state, [])}, tools=tools, cfg=cfg,
                 metrics=["clip_score", "parti", "win_rate", "fid"], references=None, resolution=256, run_dir=tmp_path)
    for entry in evaluations:
        metrics = entry["metrics"]
        assert set(metrics) == {"clip_score", "clip_score_x100", "parti", "win_rate", "loss_rate", "win_ratio", "fid"}
        for name, metric in metrics.items():
            assert metric["value"] is None, name
            assert metric["protocol"]["comparable_to_published"]["value"] is False, name
        assert all(metrics[n]["protocol"]["skipped"] == reason for n in metrics if n != "fid")
        assert "dataset.reference_dir" in metrics["fid"]["protocol"]["skipped"]
        assert metrics["loss_rate"]["higher_is_better"] is False and metrics["parti"]["higher_is_better"] is True
        assert "breakdown" not in entry
    assert not (tmp_path / "parti_breakdown.csv").exists()
