"""What the latency job can time: one runner per kind of model, all under the same protocol.

- a Muse or aMUSEd preset name (muse.presets.PRESET_NAMES): our pipeline and sampler;
- "<amused preset>+diffusers" (e.g. amused-256+diffusers): diffusers' own AmusedPipeline on the very same
  weights as "<amused preset>" (same init seed), so the two rows compare samplers, not weights;
- "sd-v1-4": Stable Diffusion v1.4 through diffusers (bench/diffusion.py), 50 PNDM steps, guidance 7.5, at
  the profile latency.sd_profile (full, scaled or tiny) or from latency.sd_pretrained;
- "parti-3b-proxy", "imagen-proxy": labelled proxies of the paper's other Table 3 rows, which have no public
  weights (bench/proxies.py), at latency.profile (full, scaled or tiny).
A runner says which resolutions it supports, its parameters, FLOPs per image by stage, and how to run one
batch with a stage timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.errors import BenchError

SD_NAME = "sd-v1-4"


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
DIFFUSERS_SUFFIX = "+diffusers"


@dataclass
class Runner:
    model: str
    weights: str
    profile: str
    resolutions: tuple[int, ...]
    params: int
    steps: Callable[[int], int | str]  # resolution -> steps (e.g. "24+8")
    flops: Callable[[int], dict[str, int]]  # resolution -> FLOPs per image by stage
    # (prompts, resolution, stage_timer, steps) -> images; steps=None runs the model's own step counts, an int
    # runs every decoding loop with that many steps (for the extrapolated protocol).
    run: Callable[..., Any]
    full_steps: Callable[[int], dict[str, int]]  # resolution -> {decoding stage: its real step count}
    pipeline: Any = None  # the MusePipeline behind a Muse runner, for runners that reuse its weights


def known_models() -> list[str]:
    from muse.presets import PRESET_NAMES

    from bench.proxies import RUNNERS as PROXIES

    amused = [name + DIFFUSERS_SUFFIX for name in PRESET_NAMES if name.startswith("amused")]
    return [*PRESET_NAMES, *amused, SD_NAME, *PROXIES]


def _muse_full_steps(pipe, resolution: int) -> dict[str, int]:
    steps = {"base": pipe.config.base_sampler.steps}
    if resolution > pipe.config.base_resolution:
        steps["superres"] = pipe.config.superres_sampler.steps
    return steps


def _compile_muse(pipe, compile: CompileSpec) -> None:
    """Compile what runs every step (the transformers' token decoders, aMUSEd's U-ViT) and the VQ decoders;
    the sampler's own loop stays eager (per-sample generators)."""
    if not compile.enabled:
        return
    for model in (pipe.base, pipe.superres):
        if model is None:
            continue
        if hasattr(model, "uvit"):
            model.uvit = compile(model.uvit)
        else:
            model.decoder = compile(model.decoder)
    for vq in (pipe.vq_base, pipe.vq_superres):
        if vq is not None:
            vq.vq.decoder = compile(vq.vq.decoder)


def _muse_runner(name: str, device, dtype, init_seed: int, seed: int, profile: str = "full",
                 compile: CompileSpec = CompileSpec()) -> Runner:
    from muse import MusePipeline
    from muse.presets import preset_config

    from bench.flops import muse_stage_flops
    from bench.profiles import scaled_config

    config = preset_config(name)
    if name.endswith("-tiny"):
        profile = "tiny"  # a test-size preset is its own profile
    elif profile == "scaled":
        config = scaled_config(config)
    elif profile != "full":
        raise BenchError(f"latency.profile={profile!r}: use full or scaled")
    pipe = MusePipeline.from_config(config, device=device, dtype=dtype, seed=init_seed)
    meta = MusePipeline.from_config(config, device="meta")
    _compile_muse(pipe, compile)

    def run(prompts, resolution, clock, steps=None):
        with torch.inference_mode():
            return pipe(prompts, resolution=resolution, seed=seed, output_type="pt", stage_timer=clock,
                        steps=steps, superres_steps=steps)

    counts = pipe.parameter_counts()
    return Runner(name, pipe.weights, profile, pipe.supported_resolutions, counts["total"],
                  lambda r: "+".join(map(str, _muse_full_steps(pipe, r).values())) if r > pipe.config.base_resolution
                  else pipe.config.base_sampler.steps,
                  lambda r: muse_stage_flops(meta, r), run,
                  lambda r: _muse_full_steps(pipe, r), pipe)


def _amused_diffusers_runner(name: str, device, dtype, init_seed: int, seed: int,
                             compile: CompileSpec = CompileSpec()) -> Runner:
    """diffusers' AmusedPipeline over the components of our preset (identical weights), run as a user would."""
    from diffusers import AmusedPipeline, AmusedScheduler

    ours = _muse_runner(name.removesuffix(DIFFUSERS_SUFFIX), device, dtype, init_seed, seed, "full")
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
                prompts, num_inference_steps=steps or sampler.steps, guidance_scale=sampler.guidance_t + 1.0,
                generator=generator, output_type="pt", height=res, width=res,
                temperature=(sampler.choice_temperature, sampler.temperature_end),
            ).images

    return Runner(name, "random", ours.profile, (resolution,), ours.params, ours.steps, ours.flops, run,
                  lambda r: {"pipeline": sampler.steps})


def _sd_runner(latency_cfg: Any, device, dtype, init_seed: int, seed: int,
               compile: CompileSpec = CompileSpec()) -> Runner:
    from bench.diffusion import build_stable_diffusion, run_stable_diffusion, sd_stage_flops

    profile = latency_cfg.sd_profile
    pretrained = latency_cfg.sd_pretrained
    pipe = build_stable_diffusion(profile, pretrained=pretrained, device=device, dtype=dtype, seed=init_seed)
    params = sum(sum(p.numel() for p in m.parameters()) for m in (pipe.unet, pipe.vae, pipe.text_encoder))
    # The UNet runs every step; the VAE decoder once, at full resolution.
    pipe.unet = compile(pipe.unet)
    pipe.vae.decoder = compile(pipe.vae.decoder)
    meta = build_stable_diffusion(profile, device="meta")
    steps, guidance = 50, 7.5  # diffusers' StableDiffusionPipeline defaults, the paper's comparison

    def run(prompts, resolution, clock, run_steps=None):
        with torch.inference_mode():
            return run_stable_diffusion(pipe, prompts, resolution=resolution, steps=run_steps or steps,
                                        guidance_scale=guidance, seed=seed, output_type="pt", stage_timer=clock)

    return Runner(SD_NAME, "pretrained" if pretrained else "random", profile, (256, 512), params, lambda r: steps,
                  lambda r: sd_stage_flops(meta, r, steps=steps), run, lambda r: {"denoiser": steps})


def build_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int) -> Runner:
    """The runner of a model name (see the module docstring), or BenchError listing the known names."""
    from muse.presets import PRESET_NAMES

    compile = CompileSpec(latency_cfg.compile, latency_cfg.compile_mode, latency_cfg.compile_backend)
    if name in PRESET_NAMES:
        return _muse_runner(name, device, dtype, init_seed, seed, latency_cfg.profile, compile)
    if name.endswith(DIFFUSERS_SUFFIX) and name.removesuffix(DIFFUSERS_SUFFIX).startswith("amused") \
            and name.removesuffix(DIFFUSERS_SUFFIX) in PRESET_NAMES:
        return _amused_diffusers_runner(name, device, dtype, init_seed, seed, compile)
    if name == SD_NAME:
        return _sd_runner(latency_cfg, device, dtype, init_seed, seed, compile)
    from bench.proxies import RUNNERS as PROXIES

    if name in PROXIES:
        return PROXIES[name](latency_cfg.profile, device, dtype, init_seed, seed)
    raise BenchError(f"Unknown model {name!r} in latency.models. Known models: {', '.join(known_models())}.")
