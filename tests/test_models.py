"""The model registries (bench/models/__init__.py): every name a config can give resolves to a factory of one
signature; an unknown name fails naming the config key and listing the known names."""

import inspect
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from bench.core.errors import BenchError
from bench.models import GENERATORS, RUNNERS
from bench.models.generators import load_generator
from bench.models.runner import RunnerFactory, build_runner

# per_stage: a runner holds its plan and FLOP counts, nothing is built; tiny: the FLOPs are counted in moments.
SPEC = SimpleNamespace(compile=False, compile_mode="default", compile_backend="inductor", profile="tiny",
                       sd_profile="tiny", sd_pretrained=None, protocol="per_stage")


def test_every_model_the_latency_job_times_is_registered_in_order():
    assert list(RUNNERS) == [
        "muse-tiny", "muse-632m", "muse-3b", "muse-shapes", "amused-tiny", "amused-256", "amused-512",
        "amused-tiny+diffusers", "amused-256+diffusers", "amused-512+diffusers",
        "sd-v1-4", "parti-3b-proxy", "imagen-proxy",
    ]
    assert list(GENERATORS) == ["muse", "stable-diffusion"]


def test_every_runner_factory_takes_the_one_signature():
    expected = [p for p in inspect.signature(RunnerFactory.__call__).parameters if p != "self"]
    for name in RUNNERS:
        parameters = list(inspect.signature(RUNNERS[name]).parameters)
        assert parameters[: len(expected)] == expected, name


def test_an_unknown_latency_model_names_the_key_and_the_known_models():
    with pytest.raises(BenchError) as err:
        build_runner("muse-7b", SPEC, "cpu", torch.float32, 0, 0)
    message = str(err.value)
    assert "latency.models" in message and "muse-7b" in message
    assert all(name in message for name in RUNNERS)


def test_an_unknown_model_family_names_the_key_and_the_known_families():
    cfg = OmegaConf.create({"name": "gan", "family": "gan", "pretrained": None, "init_seed": 0})
    with pytest.raises(BenchError) as err:
        load_generator(cfg, "cpu")
    message = str(err.value)
    assert "model.family" in message and "'gan'" in message
    assert "muse" in message and "stable-diffusion" in message


@pytest.mark.parametrize("name", ["muse-tiny", "sd-v1-4", "parti-3b-proxy", "imagen-proxy"])
def test_a_registered_name_builds_its_runner(name):
    runner = build_runner(name, SPEC, "cpu", torch.float32, 0, 0, prompts=["a red cube"])
    assert (runner.model, runner.profile, runner.weights) == (name, "tiny", "random")
    assert runner.run is None and set(runner.stage_plan.roles) <= {"text", "generator", "decoder"}
    assert runner.flops(runner.resolutions[0])["total"] > 0


def test_diffusers_amused_runs_whole_so_per_stage_is_refused():
    with pytest.raises(BenchError, match="per_stage"):
        build_runner("amused-tiny+diffusers", SPEC, "cpu", torch.float32, 0, 0)
