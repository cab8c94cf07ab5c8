"""The eval config group (conf/eval/: default, paper), composed in-process with Hydra's compose API, and the
comparable_to_published record every metric entry carries (bench/metrics/published.py)."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from bench.cli import compose_config
from bench.core.config import EvalConfig
from bench.core.paths import CONF_DIR
from bench.metrics.features import INCEPTION_NAME
from bench.metrics.published import NO_PUBLISHED, comparable_to_published

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_each_eval_preset(experiment):
    """Each preset composes onto the typed schema with either eval preset; the eval preset changes the metric
    protocol only, never which metrics an experiment computes."""
    default = compose_config([f"experiment={experiment}"])
    paper = compose_config([f"experiment={experiment}", "eval=paper"])
    assert OmegaConf.get_type(paper.eval) is EvalConfig
    assert paper.eval.metrics == default.eval.metrics
    assert paper.eval.samples_per_prompt == default.eval.samples_per_prompt
    assert (default.eval.fid.mode, paper.eval.fid.mode) == ("clean", "legacy_tensorflow")


def test_eval_paper_selects_the_published_protocols_and_overrides_still_win():
    cfg = compose_config(["experiment=coco30k", "eval=paper"])
    assert cfg.eval.metrics == ["fid", "kid", "clip_score", "cmmd"]
    assert cfg.eval.fid.mode == "legacy_tensorflow" and cfg.eval.fid.feature_extractor is None
    assert (cfg.eval.cmmd.arch, cfg.eval.cmmd.pretrained, cfg.eval.cmmd.sigma, cfg.eval.cmmd.scale) == \
        ("ViT-L-14-336", "openai", 10.0, 1000.0)
    assert (cfg.eval.clip.arch, cfg.eval.clip.pretrained) == ("ViT-L-14", "openai")
    assert compose_config(["experiment=coco30k", "eval=paper", "eval.fid.mode=clean"]).eval.fid.mode == "clean"
    assert compose_config([]).eval.fid.mode == "clean"  # the default stays the suite's own protocol


# ---- comparable_to_published ----------------------------------------------------------------------------


def _fid(**changes):
    protocol = {"mode": "legacy_tensorflow", "feature_extractor": INCEPTION_NAME, "n_generated": 30_000,
                "n_reference": 40_504, "min_samples": 2048, "below_minimum": False,
                "reference": {"dataset": "coco30k", "reference_set": "all", "reference_limit": None}}
    protocol.update(changes)
    return {"value": 7.9, "higher_is_better": False, "stderr": 0.05, "protocol": protocol}


def _cmmd(**changes):
    protocol = {"backend": "open_clip", "arch": "ViT-L-14-336", "pretrained": "openai", "weights": "pretrained",
                "image_preprocess": {"size": [336, 336], "resize_mode": "squash", "interpolation": "bicubic"},
                "sigma": 10.0, "scale": 1000.0, "n_generated": 30_000, "n_reference": 40_504,
                "small_sample_bias": {"estimate": 1e-4, "negligible": True}}
    protocol.update(changes)
    return {"value": 0.6, "higher_is_better": False, "stderr": None, "protocol": protocol}


def _record(metric, entry, dataset="coco30k", weights="pretrained", resolution=256):
    return comparable_to_published(metric, entry, dataset=dataset, model_weights=weights, resolution=resolution)


def test_a_protocol_that_matches_the_published_one_is_comparable():
    fid = _record("fid", _fid())
    assert fid["value"] is True and fid["reasons"] == [] and "FID-30K" in fid["published"]
    cmmd = _record("cmmd", _cmmd())
    assert cmmd["value"] is True and "CMMD paper" in cmmd["published"]
    clip = _record("clip_score", {"value": 0.31, "protocol": {"backend": "open_clip", "arch": "ViT-L-14",
                                                              "pretrained": "openai", "weights": "pretrained",
                                                              "n": 30_000}})
    assert clip["value"] is True and clip["unknown"] == ["the CLIP backbone (not stated by the paper)"]


@pytest.mark.parametrize(("metric", "entry", "kwargs", "reason"), [
    ("fid", _fid(mode="clean"), {}, "clean-fid mode clean (published: legacy_tensorflow"),
    ("fid", _fid(n_generated=5_000), {}, "5,000 samples (published: 30,000)"),
    ("fid", _fid(), {"weights": "random"}, "random model weights"),
    ("fid", _fid(), {"resolution": 512}, "evaluated at 512 px (published: 256)"),
    ("fid", _fid(feature_extractor="bench.testing.RandomConvFeatures(seed=0,dims=8,width=16) [random weights]"),
     {}, "stand-in feature network"),
    ("fid", _fid(reference={"reference_set": "matched", "reference_limit": None}), {}, "reference set matched"),
    ("fid", _fid(reference={"reference_set": "all", "reference_limit": 500}), {}, "dataset.reference_limit=500"),
    ("cmmd", _cmmd(arch="ViT-L-14"), {}, "CLIP ViT-L-14 / openai (published: ViT-L-14-336 / openai)"),
    ("cmmd", _cmmd(image_preprocess={"size": [336, 336], "resize_mode": "shortest"}), {}, "images shortest to 336"),
    ("cmmd", _cmmd(weights="random", arch="muse-bench-tiny-clip"), {}, "random CLIP weights"),
    ("cmmd", _cmmd(small_sample_bias={"estimate": 0.05, "negligible": False}), {}, "small-sample bias"),
    ("clip_score_x100", {"value": 31.0, "protocol": {"arch": "ViT-L-14", "pretrained": "openai", "n": 5_000}},
     {"dataset": "coco5k"}, "CLIP ViT-L-14 / openai (published: ViT-B-32 / openai)"),
])
def test_each_known_difference_is_a_reason(metric, entry, kwargs, reason):
    record = _record(metric, copy.deepcopy(entry), **kwargs)
    assert record["value"] is False
    assert any(reason in r for r in record["reasons"]), record["reasons"]


def test_without_a_published_figure_or_a_value_nothing_is_comparable():
    kid = _record("kid", {"value": 0.01, "protocol": {"feature_extractor": INCEPTION_NAME}})
    assert kid == {"value": False, "published": None, "unknown": [], "reasons": [NO_PUBLISHED]}
    assert _record("kid", {"value": 0.01, "protocol": {"feature_extractor": INCEPTION_NAME}},
                   weights="random")["reasons"] == [NO_PUBLISHED, "random model weights"]
    skipped = _record("fid", {"value": None, "protocol": {"skipped": "no reference images"}})
    assert skipped["value"] is False and skipped["reasons"] == ["not computed: no reference images"]
    win = _record("win_rate", {"value": 0.6, "protocol": {"judge": {"name": "clip_cosine"}, "K": 16}},
                  dataset="partiprompts")
    assert win["value"] is False and "stands in for the paper's human raters" in win["reasons"][0]
