"""diffusers' own AmusedPipeline on the very same weights as one of our aMUSEd presets (same init seed), as the
latency job's "<amused preset>+diffusers" (e.g. amused-256+diffusers): beside "<amused preset>", the two rows
compare samplers, not weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from diffusers import AmusedPipeline, AmusedScheduler

from bench.core.errors import BenchError
from bench.models import DIFFUSERS_SUFFIX
from bench.models.muse import preset_runner
from bench.models.runner import CompileSpec, Runner
from muse.sampling import to_guidance_scale


def amused_diffusers_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
                            compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
                            materialize: bool = True) -> Runner:
    """The latency Runner of "<amused preset>+diffusers" (bench.models.runner.RunnerFactory): diffusers'
    AmusedPipeline over the components of our preset (identical weights), run as a user would, at latency.profile
    tiny or else full. It runs whole, so latency.protocol per_stage is refused."""
    base = name.removesuffix(DIFFUSERS_SUFFIX)
    if not materialize:
        raise BenchError(f"{name} runs diffusers' whole AmusedPipeline, which latency.protocol=per_stage cannot "
                         f"split into stages; time it with protocol measured (it costs what {base} costs per "
                         "forward).")
    profile = "tiny" if latency_cfg.profile == "tiny" else "full"
    ours = preset_runner(base, device, dtype, init_seed, seed, profile)
    pipe = ours.pipeline
    reference = AmusedPipeline(
        vqvae=pipe.vq_base.vq, tokenizer=pipe.text_encoder.tokenizer, text_encoder=pipe.text_encoder.model,
        transformer=compile(pipe.base.uvit), scheduler=AmusedScheduler(mask_token_id=pipe.mask_token_id),
    )
    reference.set_progress_bar_config(disable=True)
    sampler = pipe.config.base_sampler
    resolution = pipe.config.base_resolution

    def run(prompts, res, clock, steps=None):
        # The whole call is one stage: diffusers' pipeline has no hook between its stages.
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.inference_mode(), clock("pipeline"):
            return reference(
                prompts, num_inference_steps=steps or sampler.steps, guidance_scale=to_guidance_scale(sampler.guidance_t),
                generator=generator, output_type="pt", height=res, width=res,
                temperature=(sampler.choice_temperature, sampler.temperature_end),
            ).images

    return dataclasses.replace(ours, model=name, resolutions=(resolution,), run=run, pipeline=None,
                               full_steps=lambda r: {"pipeline": sampler.steps})
