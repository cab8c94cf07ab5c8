"""What the Parti and Imagen proxies share: the profile check, prompt and sample-index handling, parameter
counts and casts, and the per_stage text role of their T5 encoders. (The scaled profile's narrowing is Muse's,
bench/models/profiles.py.)"""

from __future__ import annotations

import contextlib
import json
from typing import Sequence

import torch
from torch import nn

from bench.latency.stagewise import Part, repeat_prompts, shared_module
from bench.models.profiles import PROFILES
from muse.config import TextConfig
from muse.errors import MuseInputError
from muse.text import TextEncoder, build_text_model, load_tokenizer


def check_profile(profile: str) -> None:
    """Refuse a profile that is not one of PROFILES (MuseInputError naming them)."""
    if profile not in PROFILES:
        raise MuseInputError(f"unknown proxy profile {profile!r}: use one of {', '.join(PROFILES)}")


def stage_clock(stage_timer):
    """The stage timer a generation reports to, or one that times nothing."""
    return stage_timer or (lambda name: contextlib.nullcontext())


def cast(modules: dict[str, nn.Module], dtype: torch.dtype) -> None:
    """Cast the modules to `dtype` in place."""
    # Through a ModuleDict (nn.Module.to): diffusers' own ModelMixin.to warns about fp32 modules on every cast.
    nn.ModuleDict(modules).to(dtype=dtype)


def count_params(module: nn.Module) -> int:
    """Parameters of a module (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


def with_unconditional(prompts: Sequence[str]) -> list[str]:
    """The prompts, then one empty prompt per sample: conditional and unconditional rows in one batch of 2B."""
    return [*prompts, *[""] * len(prompts)]


def sample_indices_of(prompts, sample_indices) -> list[int]:
    """The sample index of each prompt (default: its position); MuseInputError if the counts differ."""
    indices = list(range(len(prompts))) if sample_indices is None else [int(i) for i in sample_indices]
    if len(indices) != len(prompts):
        raise MuseInputError(f"{len(indices)} sample indices for {len(prompts)} prompts")
    return indices


def text_role(text: TextConfig, prompts: list[str], build: dict):
    """Both proxies' per_stage text role: their T5 encoder over the prompts and as many empty prompts, one call."""
    def role(resolutions, shared):
        model = shared_module(shared, ("text", text.kind, json.dumps(text.model, sort_keys=True)),
                              lambda: build_text_model(text), **build)
        encoder = TextEncoder(model, load_tokenizer(text), "t5", text.max_length)

        def parts(resolution, batch):
            both = with_unconditional(repeat_prompts(prompts, batch))
            return [Part("text_encoder", f"text encoder over {len(both)} prompts", 1, lambda: encoder(both))]

        return parts

    return role
