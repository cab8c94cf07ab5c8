"""What the latency job can time: one runner per kind of model, all under the same protocols.

- a Muse or aMUSEd preset name (muse.presets.PRESET_NAMES): our pipeline and sampler;
- "<amused preset>+diffusers" (e.g. amused-256+diffusers): diffusers' own AmusedPipeline on the very same
  weights as "<amused preset>" (same init seed), so the two rows compare samplers, not weights;
- "sd-v1-4": Stable Diffusion v1.4 through diffusers (bench/models/diffusion.py), 50 PNDM steps, guidance 7.5, at
  the profile latency.sd_profile (full, scaled or tiny) or from latency.sd_pretrained;
- "parti-3b-proxy", "imagen-proxy": labelled proxies of the paper's other Table 3 rows, which have no public
  weights (bench/models/proxies.py), at latency.profile (full, scaled or tiny).
A runner says which resolutions it supports, its parameters, FLOPs per image by stage (at the timed profile and
at full size), its architecture, and either how to run one batch with a stage timer (protocols measured and
extrapolated: the model is built whole) or how to build it one role at a time (protocol per_stage,
bench/latency/stagewise.py: nothing is built until the role is timed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable

import torch

from bench.core.errors import BenchError
from bench.latency.stagewise import (
    Part,
    StagePlan,
    build_for_timing,
    random_tokens,
    repeat_prompts,
    shared_module,
)
from bench.models.runner import CompileSpec, Runner

SD_NAME = "sd-v1-4"
DIFFUSERS_SUFFIX = "+diffusers"


def known_models() -> list[str]:
    from bench.models.proxies import RUNNERS as PROXIES
    from muse.presets import PRESET_NAMES

    amused = [name + DIFFUSERS_SUFFIX for name in PRESET_NAMES if name.startswith("amused")]
    return [*PRESET_NAMES, *amused, SD_NAME, *PROXIES]


def is_test_size(name: str) -> bool:
    """Presets named *-tiny exist only for tests: they have no published full size."""
    return name.endswith("-tiny")


def _muse_full_steps(config, resolution: int) -> dict[str, int]:
    steps = {"base": config.base_sampler.steps}
    if resolution > config.base_resolution:
        steps["superres"] = config.superres_sampler.steps
    return steps


def _steps_label(config, resolution: int) -> int | str:
    steps = _muse_full_steps(config, resolution)
    return "+".join(map(str, steps.values())) if len(steps) > 1 else steps["base"]


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


def _muse_profile_config(name: str, profile: str):
    """(config at the timed profile, the profile's name) of a Muse or aMUSEd preset."""
    from bench.models.profiles import PROFILES, scaled_config, tiny_config
    from muse.presets import preset_config

    config = preset_config(name)
    if is_test_size(name) or profile == "tiny":
        # A test-size preset is its own profile; "tiny" gives any preset the family's test-size shape.
        return (config if is_test_size(name) else tiny_config(config)), "tiny"
    if profile == "scaled":
        if config.family != "muse":
            raise BenchError(f"latency.profile=scaled is defined for Muse presets (T5), not {name}: use full")
        return scaled_config(config), profile
    if profile != "full":
        raise BenchError(f"latency.profile={profile!r}: use one of {', '.join(PROFILES)}")
    return config, profile


def _muse_flops(name: str, config) -> tuple[Callable, Callable]:
    """(FLOPs at the timed profile, FLOPs at full size) by resolution, counted on meta pipelines."""
    from bench.models.flops import muse_stage_flops
    from muse import MusePipeline
    from muse.presets import preset_config

    meta = MusePipeline.from_config(config, device="meta")
    full = meta if config.name == name else MusePipeline.from_config(preset_config(name), device="meta")
    # Counting a paper-size model takes seconds; each resolution is asked for several times.
    return functools.cache(lambda r: muse_stage_flops(meta, r)), (
        (lambda r: None) if is_test_size(name) else functools.cache(lambda r: muse_stage_flops(full, r)))


def _muse_runner(name: str, device, dtype, init_seed: int, seed: int, profile: str = "full",
                 compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
                 materialize: bool = True) -> Runner:
    from muse import MusePipeline

    config, profile = _muse_profile_config(name, profile)
    flops, full_flops = _muse_flops(name, config)
    common = dict(model=name, profile=profile, resolutions=config.resolutions, steps=lambda r: _steps_label(config, r),
                  flops=flops, full_steps=lambda r: _muse_full_steps(config, r), arch=name, full_flops=full_flops)
    if not materialize:
        meta = MusePipeline.from_config(config, device="meta")
        return Runner(weights="random", params=meta.parameter_counts()["total"], run=None,
                      stage_plan=muse_stage_plan(config, prompts or [""], device, dtype, init_seed), **common)
    pipe = MusePipeline.from_config(config, device=device, dtype=dtype, seed=init_seed)
    _compile_muse(pipe, compile)

    def run(prompts, resolution, clock, steps=None):
        with torch.inference_mode():
            return pipe(prompts, resolution=resolution, seed=seed, output_type="pt", stage_timer=clock,
                        steps=steps, superres_steps=steps)

    return Runner(weights=pipe.weights, params=pipe.parameter_counts()["total"], run=run, pipeline=pipe, **common)


def muse_stage_plan(config, prompts: list[str], device, dtype, seed: int = 0) -> StagePlan:
    """The per_stage plan of a Muse or aMUSEd pipeline config (bench/latency/stagewise.py): text encoder; base and
    super-res transformers with the sampler's own per-step work; VQ decoders (one decode per sample)."""
    from muse.sampling import make_generators, parallel_decode
    from muse.text import TextEmbedding, TextEncoder, build_text_model, load_tokenizer
    from muse.transformer import build_transformers
    from muse.vqgan import VQTokenizer

    build = dict(device=device, dtype=dtype, seed=seed)
    text_cfg = dataclasses.replace(config.text, pretrained=None)
    width = text_cfg.model["d_model"] if text_cfg.kind == "t5" else text_cfg.model["hidden_size"]
    pooled = text_cfg.model.get("projection_dim") if config.family == "amused" else None
    samplers = {"base": config.base_sampler, "superres": config.superres_sampler}

    def guided(stage: str) -> bool:
        return bool(samplers[stage].guidance_t)

    def text_role(resolutions, shared):
        model = shared_module(shared, ("text", text_cfg.kind, json.dumps(text_cfg.model, sort_keys=True)),
                              lambda: build_text_model(text_cfg), **build)
        encoder = TextEncoder(model, load_tokenizer(text_cfg), text_cfg.kind, text_cfg.max_length)

        def parts(resolution, batch):
            stages = ["base"] + (["superres"] if resolution > config.base_resolution else [])
            batch_prompts = repeat_prompts(prompts, batch)
            # The pipeline encodes the prompts, then (guided) the negative / empty prompts: two calls of B.
            calls = 2 if any(guided(s) for s in stages) else 1
            return [Part("text_encoder", f"text encoder over {batch} prompts", calls, lambda: encoder(batch_prompts))]

        return parts

    def decode_parts(model, stage, batch, rows, low=None):
        """context once; transformer forward and two sampler steps on fixed logits, per decoding step."""
        sampler = samplers[stage]
        text = TextEmbedding(torch.randn(rows, text_cfg.max_length, width, dtype=dtype, device=device),
                             torch.ones(rows, text_cfg.max_length, dtype=torch.bool, device=device),
                             torch.randn(rows, pooled, dtype=dtype, device=device) if pooled else None)
        tokens = random_tokens(rows, model.seq_len, model.mask_token_id, device, seed)
        with torch.inference_mode():
            context = model.context(text, low)
            logits = model.logits(tokens, context)
        pair = logits.chunk(2) if rows > batch else (logits, None)
        start = torch.full((batch, model.seq_len), model.mask_token_id, device=device)
        settings = dataclasses.asdict(sampler) | {"steps": 2}

        def two_sampler_steps():
            parallel_decode(lambda current: pair, start, mask_token_id=model.mask_token_id,
                            generators=make_generators(seed, range(batch), device), **settings)

        return [Part(stage, "context (once per image)", 1, lambda: model.context(text, low)),
                Part(stage, f"transformer forward over {rows} rows", sampler.steps, lambda: model.logits(tokens, context)),
                Part(stage, "sampler: 2 steps on fixed logits", sampler.steps / 2, two_sampler_steps)]

    def generator_role(resolutions, shared):
        # The super-res transformer only where a resolution needs it (0.85B parameters for Muse-3B).
        need_superres = any(r > config.base_resolution for r in resolutions)
        built = build_for_timing(lambda: torch.nn.ModuleList(
            [m for m in build_transformers(config) if m is not None][: 2 if need_superres else 1]), **build)
        base, superres = built[0], (built[1] if len(built) > 1 else None)

        def parts(resolution, batch):
            if resolution not in config.resolutions:
                return None
            out = decode_parts(base, "base", batch, 2 * batch if guided("base") else batch)
            if resolution > config.base_resolution:
                rows = 2 * batch if guided("superres") else batch
                low = random_tokens(rows, base.seq_len, base.mask_token_id, device, seed + 1)
                out += decode_parts(superres, "superres", batch, rows, low)
            return out

        return parts

    def decoder_role(resolutions, shared):
        vqs = {}
        if config.base_resolution in resolutions:
            vqs[config.base_resolution] = build_for_timing(lambda: VQTokenizer.from_config(config.vq_base), **build)
        if config.vq_superres is not None and 2 * config.base_resolution in resolutions:
            vqs[2 * config.base_resolution] = build_for_timing(lambda: VQTokenizer.from_config(config.vq_superres),
                                                               **build)

        def parts(resolution, batch):
            vq = vqs.get(resolution)
            if vq is None:
                return None
            grid = resolution // vq.downsample
            tokens = random_tokens(1, grid * grid, vq.codebook_size, device, seed)
            # The pipeline decodes one sample at a time (its pixels must not depend on the batch).
            return [Part("decoder", "VQ decode of one sample", batch, lambda: vq.decode(tokens, grid))]

        return parts

    return StagePlan({"text": text_role, "generator": generator_role, "decoder": decoder_role})


def _amused_diffusers_runner(name: str, device, dtype, init_seed: int, seed: int,
                             compile: CompileSpec = CompileSpec(), profile: str = "full") -> Runner:
    """diffusers' AmusedPipeline over the components of our preset (identical weights), run as a user would."""
    from diffusers import AmusedPipeline, AmusedScheduler

    from muse.sampling import to_guidance_scale

    ours = _muse_runner(name.removesuffix(DIFFUSERS_SUFFIX), device, dtype, init_seed, seed, profile)
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


def _sd_runner(latency_cfg: Any, device, dtype, init_seed: int, seed: int, compile: CompileSpec = CompileSpec(),
               prompts: list[str] | None = None, materialize: bool = True) -> Runner:
    from bench.models.diffusion import (
        SD_GUIDANCE,
        SD_STEPS,
        build_stable_diffusion,
        run_stable_diffusion,
        sd_stage_flops,
        sd_stage_plan,
    )

    profile = latency_cfg.sd_profile
    pretrained = latency_cfg.sd_pretrained
    meta = build_stable_diffusion(profile, device="meta")
    full = meta if profile == "full" else build_stable_diffusion("full", device="meta")
    params = sum(sum(p.numel() for p in m.parameters()) for m in (meta.unet, meta.vae, meta.text_encoder))
    common = dict(model=SD_NAME, profile=profile, resolutions=(256, 512), steps=lambda r: SD_STEPS,
                  flops=functools.cache(lambda r: sd_stage_flops(meta, r, steps=SD_STEPS)),
                  full_steps=lambda r: {"denoiser": SD_STEPS}, arch=SD_NAME,
                  full_flops=functools.cache(lambda r: sd_stage_flops(full, r, steps=SD_STEPS)))
    if not materialize:
        if pretrained:
            raise BenchError("latency.protocol=per_stage times random weights of SD v1.4's shape; unset "
                             "latency.sd_pretrained (latency does not depend on weight values).")
        return Runner(weights="random", params=params, run=None,
                      stage_plan=sd_stage_plan(profile, prompts or [""], device, dtype, init_seed), **common)
    pipe = build_stable_diffusion(profile, pretrained=pretrained, device=device, dtype=dtype, seed=init_seed)
    params = sum(sum(p.numel() for p in m.parameters()) for m in (pipe.unet, pipe.vae, pipe.text_encoder))
    # The UNet runs every step; the VAE decoder once, at full resolution.
    pipe.unet = compile(pipe.unet)
    pipe.vae.decoder = compile(pipe.vae.decoder)

    def run(prompts, resolution, clock, run_steps=None):
        with torch.inference_mode():
            return run_stable_diffusion(pipe, prompts, resolution=resolution, steps=run_steps or SD_STEPS,
                                        guidance_scale=SD_GUIDANCE, seed=seed, output_type="pt", stage_timer=clock)

    return Runner(weights="pretrained" if pretrained else "random", params=params, run=run, **common)


def build_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
                 compile: bool | None = None, prompts: list[str] | None = None) -> Runner:
    """The runner of a model name (see the module docstring), or BenchError listing the known names.

    compile overrides latency.compile (the eager and compiled passes of one run). Under latency.protocol
    per_stage nothing is built here: the runner holds a StagePlan and its FLOP counts.
    """
    from muse.presets import PRESET_NAMES

    enabled = latency_cfg.compile if compile is None else compile
    spec = CompileSpec(enabled, latency_cfg.compile_mode, latency_cfg.compile_backend)
    materialize = latency_cfg.protocol != "per_stage"
    if name in PRESET_NAMES:
        return _muse_runner(name, device, dtype, init_seed, seed, latency_cfg.profile, spec, prompts, materialize)
    base = name.removesuffix(DIFFUSERS_SUFFIX)
    if name.endswith(DIFFUSERS_SUFFIX) and base.startswith("amused") and base in PRESET_NAMES:
        if not materialize:
            raise BenchError(f"{name} runs diffusers' whole AmusedPipeline, which latency.protocol=per_stage cannot "
                             f"split into stages; time it with protocol measured (it costs what {base} costs per "
                             "forward).")
        return _amused_diffusers_runner(name, device, dtype, init_seed, seed, spec,
                                        "tiny" if latency_cfg.profile == "tiny" else "full")
    if name == SD_NAME:
        return _sd_runner(latency_cfg, device, dtype, init_seed, seed, spec, prompts, materialize)
    from bench.models.proxies import RUNNERS as PROXIES

    if name in PROXIES:
        return PROXIES[name](latency_cfg.profile, device, dtype, init_seed, seed, prompts=prompts,
                             materialize=materialize)
    raise BenchError(f"Unknown model {name!r} in latency.models. Known models: {', '.join(known_models())}.")
