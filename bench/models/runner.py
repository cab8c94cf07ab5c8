"""The runner interface: what the latency job needs of any model it times (`Runner`), the signature of the
function that builds one (`RunnerFactory`; the factory of each model name is registered in bench/models/__init__.py)
and `build_runner`, which looks the name up and calls its factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from bench.latency.stagewise import StagePlan
from bench.models import RUNNERS


@dataclass
class CompileSpec:
    """torch.compile settings: mode "reduce-overhead" captures CUDA graphs on a GPU."""

    enabled: bool = False
    mode: str = "default"
    backend: str = "inductor"

    def __call__(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return module
        return torch.compile(module, mode=None if self.mode == "default" else self.mode, backend=self.backend)


@dataclass
class Runner:
    """One model as the latency job times it (every field is described beside it)."""

    model: str
    weights: str
    profile: str
    resolutions: tuple[int, ...]
    params: int
    steps: Callable[[int], int | str]  # resolution -> steps (e.g. "24+8")
    flops: Callable[[int], dict[str, int]]  # resolution -> FLOPs per image by stage, at the timed profile
    # (prompts, resolution, stage_timer, steps) -> images; steps=None runs the model's own step counts, an int
    # runs every decoding loop with that many steps (for the extrapolated protocol). None for per_stage runners.
    run: Callable[..., Any] | None
    full_steps: Callable[[int], dict[str, int]]  # resolution -> {decoding stage: its real step count}
    pipeline: Any = None  # the MusePipeline behind a Muse runner, for runners that reuse its weights
    # What the model is, whatever the profile: runners of one architecture (ours and diffusers' aMUSEd) cost the
    # same per image, so a ratio between them compares implementations at any profile.
    arch: str = ""
    # resolution -> FLOPs per image by stage at full size (the published shape); None for test-size models,
    # which have no full size.
    full_flops: Callable[[int], dict[str, int] | None] = lambda resolution: None
    stage_plan: StagePlan | None = None  # per_stage protocol: how to build and time it one role at a time


class RunnerFactory(Protocol):
    """What bench.models.RUNNERS maps a model name to: (name, latency config, device, dtype, init seed, sampling
    seed) -> its Runner. The factory reads what it needs of `latency_cfg` (latency.profile, latency.sd_profile,
    ...); `compile` says how to compile what runs every step; `prompts` are those timed (a per_stage plan
    encodes them); with materialize=False (latency.protocol per_stage) nothing is built: the Runner holds a
    StagePlan and its FLOP counts, and `run` is None."""

    def __call__(self, name: str, latency_cfg: Any, device, dtype: torch.dtype, init_seed: int, seed: int, *,
                 compile: CompileSpec, prompts: list[str] | None, materialize: bool) -> Runner: ...


def build_runner(name: str, latency_cfg: Any, device, dtype: torch.dtype, init_seed: int, seed: int, *,
                 compile: bool | None = None, prompts: list[str] | None = None) -> Runner:
    """The runner of a model name of bench.models.RUNNERS; an unknown name is a BenchError naming latency.models
    and listing the known names.

    compile overrides latency.compile (the eager and compiled passes of one run). Under latency.protocol
    per_stage nothing is built here: the runner holds a StagePlan and its FLOP counts.
    """
    factory = RUNNERS[name]
    enabled = latency_cfg.compile if compile is None else compile
    spec = CompileSpec(enabled, latency_cfg.compile_mode, latency_cfg.compile_backend)
    return factory(name, latency_cfg, device, dtype, init_seed, seed, compile=spec, prompts=prompts,
                   materialize=latency_cfg.protocol != "per_stage")
