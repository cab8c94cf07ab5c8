"""The typed config: closed choices are refused when Hydra composes the config, with the allowed values, and the
latency presets (conf/latency/) compose into the experiments that use them. All in-process (Hydra's compose API)."""

import json

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from bench.cli import compose_config


@pytest.mark.parametrize(("override", "allowed"), [
    ("job=learn", "default, edit, generate, latency, prepare, sweep, train"),
    ("model.family=gan", "muse, stable-diffusion"),
    ("model.profile=huge", "full, scaled, tiny"),
    ("dataset.reference_set=some", "all, matched"),
    ("latency.dtype=fp8", "float32, bfloat16, float16"),
    ("latency.protocol=guessed", "measured, extrapolated, per_stage"),
    ("latency.sd_profile=medium", "full, scaled, tiny"),
    ("latency.compile_mode=fast", "default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"),
    ("eval.fid.mode=legacy", "clean, legacy_pytorch, legacy_tensorflow"),
    ("eval.metrics=[fid,clipscore]", "fid, kid, prdc, clip_score, cmmd, parti, win_rate, judge, judge_win_rate"),
])
def test_a_closed_choice_is_refused_at_composition_with_the_allowed_values(override, allowed):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    key, value = override.split("=")
    value = value.strip("[]").split(",")[-1]
    message = f"{err.value} {err.value.__cause__}"
    assert key in message and f"Invalid value '{value}'" in message and f"expected one of [{allowed}]" in message


def test_choices_compare_and_serialise_as_the_strings_users_type():
    cfg = compose_config(["latency.protocol=per_stage", "latency.compile_mode=reduce-overhead", "model.family=muse"])
    assert cfg.latency.protocol == "per_stage" and f"{cfg.latency.compile_mode}" == "reduce-overhead"
    assert {"per_stage": 1}[cfg.latency.protocol] == 1
    written = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    assert written["latency"]["compile_mode"] == "reduce-overhead" and written["model"]["family"] == "muse"


def test_latency_presets_compose_into_the_experiments_that_use_them():
    latency = lambda *o: OmegaConf.to_container(compose_config(list(o)).latency)  # noqa: E731
    assert latency("experiment=latency_gpu") == latency("experiment=latency", "latency=gpu_full")
    # The default experiment times at 256 px only (the shapes world's training takes the rest of its 10 minutes).
    assert latency("experiment=default") == latency("experiment=latency", "latency=cpu_full", "latency.resolutions=[256]")
    assert latency("experiment=tiny") == latency("experiment=latency", "latency=cpu_full")
    assert latency("experiment=latency")["models"][0] == "muse-tiny"
    table3 = latency("experiment=paper_table3")
    assert table3["protocol"] == "per_stage" and table3["resolutions"] == [256, 512, 1024]
    assert compose_config(["experiment=latency_gpu"]).device == "cuda"


def test_the_metric_choices_are_the_registered_metrics():
    # The schema's closed list (refused at composition) and the registry that computes them are one list.
    from bench.core.config import Metric
    from bench.metrics import METRICS

    assert [m.value for m in Metric] == list(METRICS)


def test_a_registry_refuses_an_unknown_name_naming_its_key_and_behaves_as_a_mapping():
    from bench.core.errors import BenchError
    from bench.jobs import JOBS

    with pytest.raises(BenchError) as err:
        JOBS["learn"]
    assert str(err.value) == "Unknown job='learn'. Known: default, edit, generate, latency, prepare, sweep, train."
    assert JOBS.get("learn") is None and "learn" not in JOBS  # Mapping.get, not an exception
    assert JOBS.target("latency") == "bench.jobs.latency:run_latency"
