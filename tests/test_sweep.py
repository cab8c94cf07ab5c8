"""The sampler settings a sweep varies beyond guidance (bench/jobs/sweep.py): model.choice_temperature and
model.schedule reach the base stage's sampler and its record, bad values are refused before anything is written,
every sweep value carries the generation run's own time per image, and the shapes experiments over steps,
temperature and schedule compose. The tiny random model throughout: nothing trained."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import muse_bench
from omegaconf import OmegaConf

from bench.cli import compose_config
from bench.core.config import ModelConfig
from bench.core.errors import BenchError
from bench.jobs.checks import check_decoding_settings
from bench.jobs.sweep import SWEEPABLE, check_sweep
from muse import MusePipeline
from muse.errors import MuseInputError
from muse.presets import preset_config
from muse.sampling import mask_ratio

SWEEP = ("experiment=tiny", "job=sweep", "dataset.limit=2", "eval.metrics=[]")


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MusePipeline.from_preset("muse-tiny")


def model_cfg(**settings):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "muse-tiny", **settings})


def test_temperature_and_schedule_apply_to_the_base_stage_and_its_record_only(pipe):
    samplers = pipe.stage_samplers(512, choice_temperature=1.5, schedule="pow2")
    assert (samplers["base"].choice_temperature, samplers["base"].schedule) == (1.5, "pow2")
    assert samplers["superres"] == preset_config("muse-tiny").superres_sampler  # the super-res stage keeps its own
    recorded = pipe.sampler_settings(512, choice_temperature=1.5, schedule="pow2")
    assert (recorded["base"]["choice_temperature"], recorded["base"]["schedule"]) == (1.5, "pow2")
    assert pipe.sampler_settings(256)["base"]["schedule"] == preset_config("muse-tiny").base_sampler.schedule


@pytest.mark.parametrize("schedule", ["linear", "pow0.5"])
def test_a_schedule_override_sets_how_many_tokens_stay_masked_after_each_step(pipe, schedule):
    out = pipe(["a red cube"], resolution=256, seed=0, steps=6, schedule=schedule, return_trajectory=True)
    n = pipe.base.seq_len
    masked = (out.trajectory[0] == out.mask_token_id).sum(-1).tolist()
    expected = []
    for step in range(6):
        # MaskGIT's rule (muse.sampling.mask_lengths): floor(N * ratio), at least one fixed and one left per step.
        left = math.floor(n * float(mask_ratio((step + 1) / 6, schedule)))
        unknown = n if step == 0 else expected[-1]
        expected.append(0 if step == 5 else max(1, min(left, unknown - 1)))
    assert masked == expected  # the cosine preset's counts differ from both at several steps


def test_the_choice_temperature_moves_the_tokens_and_the_seed_repeats_them(pipe):
    cold = pipe(["a red cube"], resolution=256, seed=0, steps=6, choice_temperature=0.5).tokens
    hot = pipe(["a red cube"], resolution=256, seed=0, steps=6, choice_temperature=16.0).tokens
    assert not torch.equal(cold, hot)
    assert torch.equal(cold, pipe(["a red cube"], resolution=256, seed=0, steps=6, choice_temperature=0.5).tokens)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"schedule": "sqrt"}, "unknown masking schedule 'sqrt'"),
    ({"schedule": "pow0"}, "powP with P > 0"),
    ({"choice_temperature": -1.0}, "choice_temperature=-1.0 is not a choice temperature"),
    ({"choice_temperature": math.inf}, "finite number >= 0"),
])
def test_the_pipeline_refuses_bad_overrides_before_decoding(pipe, kwargs, message):
    with pytest.raises(MuseInputError, match=message):
        pipe(["a red cube"], resolution=256, **kwargs)


@pytest.mark.parametrize(("settings", "message"), [
    ({"schedule": "sqrt"}, "model.schedule='sqrt' is not a masking schedule: use one of cosine, linear, arccos or powP"),
    ({"schedule": "pow-1"}, "model.schedule='pow-1'"),
    ({"choice_temperature": -0.5}, "model.choice_temperature=-0.5"),
    ({"family": "stable-diffusion", "name": "sd-v1-4-tiny", "choice_temperature": 1.0},
     "model.choice_temperature=1.0 is a setting of Muse's MaskGIT sampler; model.family=stable-diffusion has none"),
])
def test_bad_settings_are_refused_naming_the_config_key(settings, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_decoding_settings(model_cfg(**settings))
    check_decoding_settings(model_cfg(schedule="pow2", choice_temperature=0.0))  # 0 keeps the most confident


def test_a_temperature_sweep_records_each_value_and_the_time_per_image(tmp_path):
    done = muse_bench(f"hydra.run.dir={tmp_path}", *SWEEP, "sweep.key=choice_temperature",
                      "sweep.points=[0.5,16.0]", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sweep"] == {"model": "muse-tiny", "key": "choice_temperature", "values": [0.5, 16.0]}
    pixels = {}
    for ev, value in zip(results["evaluations"], (0.5, 16.0), strict=True):
        assert ev["sweep"]["value"] == value
        assert ev["protocol"]["sampler"]["base"]["choice_temperature"] == value  # the number carries its setting
        folder = tmp_path / ev["protocol"]["samples_dir"]
        assert folder.name == "partiprompts" and folder.parent.name == f"muse-tiny-choice_temperature-{value}"
        record = json.loads((folder / "sampling.json").read_text())
        assert record["sampler"]["256"]["base"]["choice_temperature"] == value
        timing = ev["generation_time"]
        assert timing["images"] == 2 and timing["seconds_per_image"] > 0
        assert (timing["device"], timing["processes"], timing["batch_size"]) == ("cpu", 1, 4)
        assert timing["threads"] >= 1 and "not the latency harness" in timing["clock"]
        pixels[value] = sorted(p.read_bytes() for p in folder.glob("*.png"))
    assert pixels[0.5] != pixels[16.0]
    report = (tmp_path / "report.md").read_text()
    assert "### model.choice_temperature" in report and "Seconds per image" in report
    assert "### muse-tiny on partiprompts, 256 px, guidance g=5, choice_temperature=16.0" in report  # grids apart

    # A rerun resumes every sample from disk: nothing is made, so no time is claimed for it.
    done = muse_bench(f"hydra.run.dir={tmp_path}", *SWEEP, "sweep.key=choice_temperature",
                      "sweep.points=[0.5,16.0]", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    timing = json.loads((tmp_path / "results.json").read_text())["evaluations"][0]["generation_time"]
    assert timing["seconds_per_image"] is None and timing["images"] == 0 and "resumed" in timing["not_measured"]


@pytest.mark.parametrize(("overrides", "message"), [
    (("sweep.key=schedule", "sweep.points=[cosine,sqrt]"),
     "sweep.points holds 'sqrt': model.schedule='sqrt' is not a masking schedule: use one of cosine, linear, arccos or powP"),
    (("sweep.key=choice_temperature", "sweep.points=[1.0,hot]"), "sweep.points holds 'hot', which model.choice_temperature"),
    (("sweep.key=choice_temperature", "sweep.points=[1.0,-2.0]"), "model.choice_temperature=-2.0"),
    (("model.preset=muse-tiny", "model.name=tiny model", "sweep.key=steps", "sweep.points=[2,3]"),
     "would name its samples' folder 'tiny model-steps-2'"),
    (("sweep.key=top_k", "sweep.points=[1,2]"), "use one of " + ", ".join(SWEEPABLE)),
    # A two-model metric in a one-model sweep: refused, not asked for at every point (eval.compare_to is refused).
    (("sweep.key=steps", "sweep.points=[2,3]", "eval.metrics=[judge_win_rate]"),
     "eval.metrics holds judge_win_rate, which compares two models"),
])
def test_a_bad_sweep_value_is_refused_before_anything_is_written(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", *SWEEP, *overrides, cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (run_dir / "samples").exists() and not (run_dir / "results.json").exists()


def test_a_bad_schedule_is_refused_by_the_generate_job_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", "experiment=tiny", "job=generate", "eval.metrics=[]",
                      "model.schedule=sqrt", cwd=tmp_path)
    assert done.returncode != 0 and "model.schedule='sqrt' is not a masking schedule" in done.stderr
    assert not (run_dir / "samples").exists()


@pytest.mark.parametrize(("experiment", "key"), [
    ("shapes_steps", "steps"), ("shapes_temperature", "choice_temperature"), ("shapes_schedule", "schedule")])
def test_the_sampler_experiments_sweep_the_trained_world_and_pass_the_sweep_checks(experiment, key):
    cfg = compose_config([f"experiment={experiment}"])
    assert (cfg.job, cfg.sweep.key, cfg.model.name, cfg.dataset.name) == ("sweep", key, "muse-shapes", "shapes")
    assert cfg.model.world and list(cfg.eval.metrics) == ["judge", "clip_score", "fid"]
    values = check_sweep(cfg)  # every point is a value the sampler takes, with a plain folder name
    assert len(values) >= 5
    if key == "schedule":
        assert {"cosine", "linear"} <= set(values) and any(v.startswith("pow") for v in values)
    else:  # the preset's own value is among the points, so the sweep passes through the default
        assert preset_config("muse-shapes").base_sampler.__getattribute__(key) in values
