"""The runner interface: what the latency job needs of any model it times (bench/models/runners.py builds
runners of Muse, aMUSEd and Stable Diffusion, bench/models/proxies.py those of the Parti and Imagen proxies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.latency.stagewise import StagePlan


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
