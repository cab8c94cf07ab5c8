"""Muse and aMUSEd presets (muse.presets.PRESET_NAMES) through our pipeline and sampler: what the generate job
runs (`muse_generator`, model.family muse: a preset with random weights, or a checkpoint) and what the latency job
times (`muse_runner`, at latency.profile full, scaled or tiny; `muse_stage_plan` for latency.protocol per_stage).
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
from bench.models.flops import muse_stage_flops
from bench.models.generators import ImageGenerator, is_plain_name
from bench.models.profiles import PROFILES, scaled_config, tiny_config
from bench.models.runner import CompileSpec, Runner
from muse import MusePipeline
from muse.presets import PRESET_NAMES, preset_config
from muse.sampling import make_generators, parallel_decode
from muse.text import TextEmbedding, TextEncoder, build_text_model, load_tokenizer
from muse.transformer import build_transformers
from muse.vqgan import VQTokenizer

# Generated files must not depend on how a run is split over processes; torchrun gives each rank one CPU thread,
# and the VQ decoder's convolutions round differently per thread count, so Muse images are decoded with one
# thread on a CPU (exact; the cost is measured in README "Scale-out"). Latency runs time the default instead.
DECODE_THREADS = 1
MUSE_DETERMINISM = (
    "pixels are a function of the tokens (VQ decoded one sample at a time, with 1 thread on a CPU); tokens are the "
    "same across batch sizes and process layouts wherever the transformers' float32 logits are: bit-identical "
    "between 1 and 2 CPU threads for muse-tiny, up to 2.5e-6 apart for Muse-632M's base transformer, where a "
    "near-tied draw could then differ"
)


def load_pipeline(model_cfg: Any, device: str) -> MusePipeline:
    """The pipeline for a model config: from_pretrained when `pretrained` is set; a trained world's weights when
    `world` names a training recipe (trained into the cache first if absent, bench/train/world.py); else the
    preset (`preset`, or `name`) with random weights (offline) drawn from `init_seed`.

    An unknown preset name raises BenchError listing the known ones; errors of the muse package
    (missing weights, bad checkpoints) propagate as muse.errors.MuseError.
    """
    name = model_cfg.name
    if model_cfg.pretrained:
        if not is_plain_name(name):
            raise BenchError(
                f"model.name={name!r} names the output folder of a pretrained model and must be a plain "
                "name (letters, digits, '.', '_', '-')."
            )
        return MusePipeline.from_pretrained(model_cfg.pretrained, device=device)
    if model_cfg.get("world"):
        from bench.train.recipe import get_recipe
        from bench.train.world import ensure_world

        pipe = MusePipeline.from_pretrained(str(ensure_world(model_cfg.world) / "pipeline"), device=device)
        # A world is trained weights; how they are sampled is its preset's as the preset stands now (a recipe's
        # key leaves the samplers out: changing them retrains nothing).
        preset = preset_config(get_recipe(model_cfg.world, setting="model.world").preset)
        pipe.config.base_sampler, pipe.config.superres_sampler = preset.base_sampler, preset.superres_sampler
        return pipe
    name = model_cfg.get("preset") or name
    if name not in PRESET_NAMES:
        raise BenchError(
            f"Unknown model {name!r}. Known models: {', '.join(PRESET_NAMES)}. Pick one with model=NAME, "
            "or load a checkpoint with model.pretrained=PATH_OR_HUB_ID."
        )
    # The same init seed gives the same weights, hence the same images, in every process.
    return MusePipeline.from_preset(name, device=device, seed=model_cfg.init_seed)


def muse_generator(model_cfg: Any, device: str) -> ImageGenerator:
    """The ImageGenerator of a model config of family muse (a preset, or a checkpoint with model.pretrained),
    with model.steps, model.choice_temperature and model.schedule (base stage) and model.guidance_scale and
    model.token_order (every stage), when set, overriding the preset's."""
    overrides = {key: model_cfg.get(key)
                 for key in ("guidance_scale", "steps", "choice_temperature", "schedule", "token_order")}
    pipe = load_pipeline(model_cfg, device)

    def generate(prompts, resolution, seed, indices, replica=0):
        return pipe(prompts, resolution=resolution, seed=seed, sample_indices=indices, replica=replica,
                    decode_threads=DECODE_THREADS, **overrides).images

    def settings(resolution):
        # The pipeline applies a guidance override to every stage, the others to the base stage.
        return pipe.sampler_settings(resolution, **overrides)

    return ImageGenerator(model_cfg.name, pipe.weights, pipe.config.resolutions, generate, settings, pipe,
                          model_cfg.get("native_resolutions"), MUSE_DETERMINISM)


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
    meta = MusePipeline.from_config(config, device="meta")
    full = meta if config.name == name else MusePipeline.from_config(preset_config(name), device="meta")
    # Counting a paper-size model takes seconds; each resolution is asked for several times.
    return functools.cache(lambda r: muse_stage_flops(meta, r)), (
        (lambda r: None) if is_test_size(name) else functools.cache(lambda r: muse_stage_flops(full, r)))


def muse_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
                compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
                materialize: bool = True) -> Runner:
    """The latency Runner of a Muse or aMUSEd preset (bench.models.runner.RunnerFactory) at latency.profile."""
    return preset_runner(name, device, dtype, init_seed, seed, latency_cfg.profile, compile, prompts, materialize)


def preset_runner(name: str, device, dtype, init_seed: int, seed: int, profile: str = "full",
                  compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
                  materialize: bool = True) -> Runner:
    """The latency Runner of a preset at `profile` (full, scaled or tiny): our pipeline with random weights drawn
    from `init_seed`, sampling from `seed`; with materialize=False, nothing built but the per_stage plan."""
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
