"""Stable Diffusion v1.4, the latency baseline, through diffusers' StableDiffusionPipeline.

Latency does not depend on weights, so without a checkpoint the pipeline is built from SD v1.4's published
component configs with random weights (drawn from a seed); with a local folder in diffusers' layout it loads
the real ones. Three profiles:

- "full": exactly the published configs (CompVis/stable-diffusion-v1-4): UNet 859.5M parameters, KL
  autoencoder 83.7M, CLIP ViT-L/14 text encoder 123.1M, PNDM scheduler.
- "scaled": narrower channels so a CPU can time it, with the work's shape kept: the same block layout and
  layers per block, the same latent grid (resolution / 8, 4 channels), the same 77 text tokens, and (at
  run time) the same steps and guidance. UNet channels (32, 64, 128, 128), still 8 heads (diffusers'
  `attention_head_dim` is the head count in SD v1 configs), so head widths 4 to 16; text encoder 64 wide,
  2 layers, 4 heads (12 heads do not divide 64); VAE channels (32, 64, 64, 64). 32 norm groups divide every
  width, as in the full model.
- "tiny": the smallest that runs, for tests: a two-level UNet (32, 64) with attention only at the coarse
  level, a 2-layer 32-wide text encoder and an 8-channel VAE that keeps four levels (so latents stay at
  resolution / 8, which the pipeline derives from the VAE's depth).

The vocabulary (49408) and the 77-token context are the same in every profile: the tokenizer is CLIP's own
BPE, built from the merges open_clip ships (muse.text.clip_bpe_tokenizer_dir), so nothing is downloaded.

A generation has three timed stages, "text_encoder", "denoiser" and "decoder", reported to a `stage_timer`
as for Muse. Note that PNDM with skip_prk_steps evaluates the UNet steps + 1 times (51 at 50 steps): its
first PLMS step needs two evaluations. sd_stage_flops counts the evaluations the scheduler really makes.

What the jobs use: `sd_generator` (the generate job, model.family stable-diffusion), `sd_runner` (the latency
job's "sd-v1-4", at latency.sd_profile) and `sd_stage_plan` (its latency.protocol per_stage).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from bench.core.errors import BenchError
from bench.latency.stagewise import Part, StagePlan, build_for_timing, repeat_prompts
from bench.models.flops import count_flops
from bench.models.generators import ImageGenerator, is_plain_name
from bench.models.runner import CompileSpec, Runner
from muse.errors import MissingWeightsError, MuseInputError
from muse.sampling import make_generators, to_guidance_t
from muse.seeding import seeded_init
from muse.text import clip_bpe_tokenizer_dir

HUB_ID = "CompVis/stable-diffusion-v1-4"
PROFILES = ("full", "scaled", "tiny")
# diffusers' StableDiffusionPipeline defaults, the paper's comparison: 50 PNDM steps, guidance 7.5.
SD_STEPS = 50
SD_GUIDANCE = 7.5
SD_DETERMINISM = ("UNet and VAE run batched with the process's CPU threads: pixels can differ by float rounding between "
                  "batch compositions and thread counts")

# The published component configs of CompVis/stable-diffusion-v1-4 (unet/, vae/, text_encoder/, scheduler/).
_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
_VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
    pad_token_id=1,
)
_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
)
_SMALLER = {
    "full": ({}, {}, {}),
    "scaled": (
        dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=64),
        dict(block_out_channels=(32, 64, 64, 64)),
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, projection_dim=64),
    ),
    "tiny": (
        # Self-attention over the fine 64x64 latent grid would dominate a tiny model, so attend only coarse.
        dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=2,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    ),
}


@dataclass(frozen=True)
class SDConfig:
    """Constructor arguments of SD v1.4's components for one profile (diffusers / transformers names)."""

    profile: str
    unet: dict  # UNet2DConditionModel
    vae: dict  # AutoencoderKL
    text_encoder: dict  # CLIPTextConfig of a CLIPTextModel
    scheduler: dict = field(default_factory=lambda: dict(_SCHEDULER))  # PNDMScheduler


def sd14_config(profile: str = "full") -> SDConfig:
    """The component configs of profile "full" (SD v1.4 as published), "scaled" or "tiny" (see module doc)."""
    if profile not in _SMALLER:
        raise MuseInputError(f"unknown Stable Diffusion profile {profile!r}: use one of {', '.join(PROFILES)}")
    unet, vae, text = _SMALLER[profile]
    return SDConfig(profile, {**_UNET, **unet}, {**_VAE, **vae}, {**_TEXT, **text})


def build_stable_diffusion(profile: str = "full", pretrained: str | None = None, device="cpu",
                           dtype: torch.dtype | None = None, seed: int = 0):
    """A StableDiffusionPipeline without safety checker: random weights of `profile` drawn from `seed`, or
    SD v1.4's weights from `pretrained` (a local folder in diffusers' layout, or the hub id when online).

    device="meta" allocates nothing (for parameter and FLOP counts). A missing checkpoint raises
    MissingWeightsError saying how to supply one.
    """
    device = torch.device(device)
    if pretrained:
        if profile != "full":
            # A profile names a random-weight model; a checkpoint brings its own configs. Refuse the mix so
            # that no result row says "scaled" over pretrained full-size weights.
            raise MuseInputError(f"profile {profile!r} is for random weights; with pretrained={pretrained!r} "
                                 f"leave profile='full' (the checkpoint's own configs are used)")
        pipe = _load_pretrained(StableDiffusionPipeline, pretrained, dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)
    config = sd14_config(profile)
    with seeded_init(seed, device):
        unet = UNet2DConditionModel(**config.unet).eval()
        vae = AutoencoderKL(**config.vae).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**config.text_encoder)).eval()
    folder = clip_bpe_tokenizer_dir()
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                              model_max_length=77)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**config.scheduler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    # Built in float32; casting only when asked for another dtype (a no-op cast still makes diffusers warn).
    if dtype not in (None, torch.float32) and device.type != "meta":
        pipe.to(dtype=dtype)
    return pipe


def _load_pretrained(pipeline_cls, path: str, dtype: torch.dtype | None):
    how = (f"Download it where there is a network (`huggingface-cli download {HUB_ID} --local-dir DIR`), copy DIR "
           f"here and set model.pretrained=DIR, or leave model.pretrained unset for random weights.")
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path)
    if looks_local and not os.path.isdir(os.path.expanduser(path)):
        raise MissingWeightsError(f"No Stable Diffusion folder at {path!r}. {how}")
    kwargs = {} if dtype is None else {"torch_dtype": dtype}
    try:
        return pipeline_cls.from_pretrained(os.path.expanduser(path), use_safetensors=True, safety_checker=None,
                                            requires_safety_checker=False, **kwargs)
    except (OSError, ValueError) as err:  # offline hub, no cache, missing files, or .bin weights only
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise MissingWeightsError(f"Could not load Stable Diffusion v1.4 (safetensors, diffusers layout) from "
                                  f"{path!r} ({type(err).__name__}: {first_line}). {how}") from err


def check_resolution(pipe, resolution: int) -> None:
    """Raise MuseInputError unless `resolution` is a positive multiple of the VAE's downsampling (8)."""
    factor = pipe.vae_scale_factor
    if resolution < factor or resolution % factor:
        raise MuseInputError(f"Stable Diffusion needs a resolution that is a multiple of {factor} (its latent "
                             f"grid is resolution / {factor}), got {resolution}; 256 and 512 are the ones used")


@torch.no_grad()
def run_stable_diffusion(pipe, prompts: Sequence[str], *, resolution: int = 512, steps: int = 50,
                         guidance_scale: float = 7.5, seed: int = 0, sample_indices: Sequence[int] | None = None,
                         output_type: str = "pil", stage_timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
                         replica: int = 0):
    """Generate one image per prompt with PNDM and classifier-free guidance, as StableDiffusionPipeline does.

    Sample i's starting noise comes only from (seed, sample_indices[i], replica) (default: its position,
    replica 0; muse.sampling.make_generators), so an image is the same, up to the rounding of batched kernels,
    whatever the batch it is generated in. guidance_scale is the CFG scale g (1 = no guidance; below 1 refused).
    output_type "pil" (list of images), "pt" or "np" (in [0, 1]) or "latent". stage_timer(name) -> context
    manager, if given, brackets the stages "text_encoder" (prompt and negative prompt), "denoiser" (noise, then every
    UNet evaluation and scheduler step) and "decoder" (VAE decode).
    """
    stage = stage_timer or (lambda name: contextlib.nullcontext())
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_resolution(pipe, resolution)
    if steps < 1:
        raise MuseInputError(f"steps must be at least 1, got {steps}")
    indices = list(range(len(prompts))) if sample_indices is None else [int(i) for i in sample_indices]
    if len(indices) != len(prompts):
        raise MuseInputError(f"{len(indices)} sample indices for {len(prompts)} prompts")
    to_guidance_t(guidance_scale)  # refuses g < 1, naming the convention
    device = pipe._execution_device
    guided = guidance_scale > 1  # diffusers' rule: a scale of 1 or less means no unconditional branch
    with stage("text_encoder"):
        text, negative = pipe.encode_prompt(prompts, device, 1, guided)
        context = torch.cat([negative, text]) if guided else text
    with stage("denoiser"):
        pipe.scheduler.set_timesteps(steps, device=device)
        latents = pipe.prepare_latents(len(prompts), pipe.unet.config.in_channels, resolution, resolution,
                                       context.dtype, device, make_generators(seed, indices, device, replica))
        for t in pipe.scheduler.timesteps:
            # Conditional and unconditional branches in one batched forward of 2B, as diffusers does.
            x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise = pipe.unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
    if output_type == "latent":
        return latents
    with stage("decoder"):
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type=output_type)


def unet_evaluations(pipe, steps: int) -> int:
    """How many UNet evaluations the pipeline's scheduler makes in `steps` steps (PNDM: steps + 1)."""
    return _evaluations(pipe.scheduler, steps)


def _evaluations(scheduler, steps: int) -> int:
    scheduler = type(scheduler).from_config(scheduler.config)  # leave the caller's scheduler state alone
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


@torch.no_grad()
def sd_stage_flops(pipe, resolution: int, steps: int = 50, guided: bool = True) -> dict[str, int]:
    """FLOPs per image of each stage of a pipeline built with device="meta", at `resolution`.

    text_encoder: one forward over the prompt (and the negative prompt when guided), 77 tokens each;
    denoiser: every UNet evaluation of the scheduler's loop (unet_evaluations), each over 2 latents when
    guided; decoder: one VAE decode. Counted by torch's FlopCounterMode (matrix products, convolutions and
    attention; element-wise work such as scheduler steps and norms is not counted).
    """
    if pipe.unet.device.type != "meta":
        raise MuseInputError("count FLOPs on a pipeline built with device='meta'")
    check_resolution(pipe, resolution)
    batch = 2 if guided else 1
    latent = resolution // pipe.vae_scale_factor
    with torch.device("meta"):
        ids = torch.zeros(batch, pipe.tokenizer.model_max_length, dtype=torch.long)
        context = torch.zeros(batch, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim)
        x = torch.zeros(batch, pipe.unet.config.in_channels, latent, latent)
        t = torch.tensor(999)  # an explicit tensor: nothing has to be read back from the meta device
        z = torch.zeros(1, pipe.vae.config.latent_channels, latent, latent)
    flops = {
        "text_encoder": count_flops(lambda: pipe.text_encoder(ids)),
        "denoiser": unet_evaluations(pipe, steps) * count_flops(lambda: pipe.unet(x, t, encoder_hidden_states=context)),
        "decoder": count_flops(lambda: pipe.vae.decode(z)),
    }
    flops["total"] = sum(flops.values())
    return flops


def sd_stage_plan(profile: str, prompts: list[str], device, dtype, seed: int = 0, steps: int = SD_STEPS,
                  guidance_scale: float = SD_GUIDANCE):
    """The per_stage plan of Stable Diffusion v1.4 at `profile` (bench/latency/stagewise.py): the CLIP text encoder
    (prompt and negative prompt, two calls of B as encode_prompt makes), one UNet forward over 2B latents per
    scheduler evaluation (51 for 50 PNDM steps), one VAE decode of the batch. The scheduler's element-wise
    arithmetic and the guidance sum are not timed."""
    config = sd14_config(profile)
    build = dict(device=device, dtype=dtype, seed=seed)
    guided = guidance_scale > 1
    evaluations = _evaluations(PNDMScheduler(**config.scheduler), steps)

    def text_role(resolutions, shared):
        model = build_for_timing(lambda: CLIPTextModel(CLIPTextConfig(**config.text_encoder)), **build)
        folder = clip_bpe_tokenizer_dir()
        tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                                  model_max_length=77)

        def encode(batch_prompts):
            ids = tokenizer(batch_prompts, padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            return model(ids)[0]

        def parts(resolution, batch):
            batch_prompts = repeat_prompts(prompts, batch)
            return [Part("text_encoder", f"CLIP text encoder over {batch} prompts", 2 if guided else 1,
                         lambda: encode(batch_prompts))]

        return parts

    def generator_role(resolutions, shared):
        unet = build_for_timing(lambda: UNet2DConditionModel(**config.unet), **build)

        def parts(resolution, batch):
            rows, latent = (2 * batch if guided else batch), resolution // 8
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(rows, config.unet["in_channels"], latent, latent, generator=g).to(device, dtype)
            context = torch.randn(rows, 77, config.unet["cross_attention_dim"], generator=g).to(device, dtype)
            t = torch.tensor(999, device=device)
            return [Part("denoiser", f"UNet forward over {rows} latents", evaluations,
                         lambda: unet(x, t, encoder_hidden_states=context, return_dict=False))]

        return parts

    def decoder_role(resolutions, shared):
        vae = build_for_timing(lambda: AutoencoderKL(**config.vae), **build)

        def parts(resolution, batch):
            latent = resolution // 8
            z = torch.randn(batch, config.vae["latent_channels"], latent, latent,
                            generator=torch.Generator().manual_seed(seed)).to(device, dtype)
            return [Part("decoder", f"VAE decode of {batch} latents", 1,
                         lambda: vae.decode(z / config.vae["scaling_factor"], return_dict=False))]

        return parts

    return StagePlan({"text": text_role, "generator": generator_role, "decoder": decoder_role})


def sd_generator(model_cfg: Any, device: str) -> ImageGenerator:
    """The ImageGenerator of a model config of family stable-diffusion: random weights of model.profile, or
    model.pretrained; model.steps and model.guidance_scale, when set, replace SD's 50 steps and 7.5."""
    if not is_plain_name(model_cfg.name):
        raise BenchError(f"model.name={model_cfg.name!r} must be a plain name (letters, digits, '.', '_', '-').")
    profile = model_cfg.get("profile", "full")
    pipe = build_stable_diffusion(profile, model_cfg.pretrained, device, seed=model_cfg.init_seed)
    steps, guidance = model_cfg.get("steps"), model_cfg.get("guidance_scale")
    steps, guidance = SD_STEPS if steps is None else steps, SD_GUIDANCE if guidance is None else guidance

    def generate(prompts, resolution, seed, indices, replica=0):
        return run_stable_diffusion(pipe, prompts, resolution=resolution, steps=steps, guidance_scale=guidance,
                                    seed=seed, sample_indices=indices, replica=replica)

    def settings(resolution):
        return {"denoiser": {"scheduler": type(pipe.scheduler).__name__, "steps": steps, "guidance_scale": guidance,
                             "guidance_t": to_guidance_t(guidance), "profile": profile}}

    weights = "pretrained" if model_cfg.pretrained else "random"
    return ImageGenerator(model_cfg.name, weights, tuple(model_cfg.resolution), generate, settings, pipe,
                          model_cfg.get("native_resolutions"), SD_DETERMINISM)


def sd_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
              compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None,
              materialize: bool = True) -> Runner:
    """The latency Runner of "sd-v1-4" (bench.models.runner.RunnerFactory): 50 PNDM steps, guidance 7.5, at
    latency.sd_profile with random weights, or SD v1.4's own from latency.sd_pretrained."""
    profile = latency_cfg.sd_profile
    pretrained = latency_cfg.sd_pretrained
    meta = build_stable_diffusion(profile, device="meta")
    full = meta if profile == "full" else build_stable_diffusion("full", device="meta")
    params = sum(sum(p.numel() for p in m.parameters()) for m in (meta.unet, meta.vae, meta.text_encoder))
    common = dict(model=name, profile=profile, resolutions=(256, 512), steps=lambda r: SD_STEPS,
                  flops=functools.cache(lambda r: sd_stage_flops(meta, r, steps=SD_STEPS)),
                  full_steps=lambda r: {"denoiser": SD_STEPS}, arch=name,
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
