"""The Imagen latency proxy (Saharia et al. 2022), `imagen_config`: a cascade of pixel-space diffusion UNets of
Imagen's sizes behind T5-XXL, with random weights, for timing only (bench/models/proxies/__init__.py says what a
proxy is and is not).

- Text encoder: frozen T5-XXL encoder (muse.presets.T5_XXL), 128 tokens, byte tokenizer: 4.76B parameters.
- Cascade of three pixel-space UNets (diffusers' UNet2DConditionModel), each with cross-attention to the T5
  tokens and an attention-pooled text embedding added to the time embedding (addition_embed_type="text",
  as Imagen pools the text into its conditioning); heads of 64 channels. Parameter targets from the paper,
  what we chose (full profile) and what it counts:
    base 64x64 (~2B): channels (512, 1024, 1536, 1792), 2 resnets per level, cross+self attention at
      32, 16 and 8 (not at 64) and in the mid block: 2.079B (+3.9%).
    super-res 64 -> 256 (~600M): channels (128, 256, 512, 1024), resnets (2, 4, 4, 3), attention only at
      the lowest level (32x32) and cross-attention only (no self-attention anywhere; the mid block is two
      plain resnets): 0.587B (-2.1%).
    super-res 256 -> 1024 (~400M): channels (128, 256, 512, 768), resnets (2, 2, 3, 3), cross-attention
      only, at 128x128: 0.394B (-1.5%).
  Total with T5-XXL: 7.82B.
  A super-res UNet sees the noisy image concatenated with the low-res image upsampled (bilinear) to its
  size, 6 input channels, as Imagen does; Imagen's noise-conditioning augmentation of that input is not
  modelled (a few element-wise ops). The paper's UNets ("Efficient U-Net") differ in block internals;
  diffusers' transformer blocks are heavier, so our counts come from fewer resnets per level.
- Sampling: DDIM (diffusers' DDIMScheduler, eta 0, cosine "squaredcos_cap_v2" betas over 1000 training
  steps, Imagen's dynamic thresholding at the 99.5th percentile, uncapped). Step counts are UNKNOWN (the
  paper does not say what its timing used): defaults 256 (base), 128 (64 -> 256), 64 (256 -> 1024), settable
  with `imagen_config(steps=...)` or `imagen_runner(..., steps=...)`. Guidance scales 7.0 / 4.0 / 4.0
  (UNKNOWN; no effect on cost), each step one UNet forward of 2B. A feasibility check on these defaults:
  per image they need 1.26 PFLOP at 256 and 4.34 PFLOP at 1024, the 256 -> 1024 stage alone 3.08 PFLOP
  (24 TFLOP per UNet forward of one 1024x1024 image). Table 3's 13.3 - 9.1 = 4.2 s for that stage is at
  most 1.16 PFLOP on one TPUv4 chip at its 275 TFLOP/s bf16 peak, so the paper's timing must have used
  fewer steps there (about 24 or fewer at this UNet's cost), a cheaper UNet, or several chips: read the
  proxy's 1024 row as an upper estimate, and sweep `steps` when comparing.
- Resolutions 256 (base + first super-res) and 1024 (all three), as Table 3's Imagen rows (9.1 s, 13.3 s).
- FLOPs (`imagen_stage_flops`): one UNet forward of 2 images (guided) counted on the meta device, times the
  step count, per stage; element-wise work (scheduler, thresholding, upsampling) is not counted. Full
  profile, per image at the default steps: text encoder 2.38 TFLOP, base 700.7 (2.74 per step),
  superres_256 555.8 (4.34 per step), superres_1024 3076.9 (48.1 per step); total 1258.8 TFLOP at 256 and
  4335.7 TFLOP at 1024.

"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch import nn

from bench.latency.stagewise import Part, StagePlan, build_for_timing
from bench.models.flops import count_flops
from bench.models.profiles import DIVISOR, scaled_t5
from bench.models.proxies import IMAGEN_NAME
from bench.models.proxies.shared import (
    cast,
    check_profile,
    count_params,
    sample_indices_of,
    stage_clock,
    text_role,
    with_unconditional,
)
from bench.models.runner import CompileSpec, Runner
from muse.config import TextConfig
from muse.errors import MuseInputError
from muse.presets import T5_TINY, T5_XXL
from muse.sampling import make_generators
from muse.seeding import seeded_init
from muse.text import TextEncoder, build_text_model, load_tokenizer

IMAGEN_STAGES = ("base", "superres_256", "superres_1024")
_STAGE_SIZE = {"base": 64, "superres_256": 256, "superres_1024": 1024}


def _unet(channels, layers, attention_levels: int, context_dim: int, *, cross_only: bool, size: int,
          in_channels: int, pool_heads: int = 64, head_channels: int = 64, **extra) -> dict:
    """UNet2DConditionModel kwargs: attention in the `attention_levels` coarsest levels, heads of
    `head_channels` (diffusers' `attention_head_dim` is the head COUNT in this class)."""
    plain = len(channels) - attention_levels
    return dict(
        sample_size=size, in_channels=in_channels, out_channels=3, block_out_channels=tuple(channels),
        layers_per_block=layers, cross_attention_dim=context_dim, only_cross_attention=cross_only,
        attention_head_dim=tuple(max(1, c // head_channels) for c in channels),
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * attention_levels,
        up_block_types=("CrossAttnUpBlock2D",) * attention_levels + ("UpBlock2D",) * plain,
        addition_embed_type="text", addition_embed_type_num_heads=pool_heads,
        # diffusers' cross-attention mid block always self-attends too; a cross-only (super-res) UNet gets
        # a mid block of plain resnets instead, so it has no self-attention anywhere.
        mid_block_type="UNetMidBlock2D" if cross_only else "UNetMidBlock2DCrossAttn", **extra,
    )


@dataclass(frozen=True)
class ImagenConfig:
    """Shape and sampler of the Imagen proxy for one profile (see the module docstring)."""

    profile: str
    text: TextConfig
    unets: dict  # stage -> UNet2DConditionModel kwargs
    steps: dict = field(default_factory=lambda: {"base": 256, "superres_256": 128, "superres_1024": 64})
    guidance: dict = field(default_factory=lambda: {"base": 7.0, "superres_256": 4.0, "superres_1024": 4.0})
    scheduler: dict = field(default_factory=lambda: dict(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=True,
        prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1e4,
    ))  # DDIMScheduler; sample_max_value this high leaves Imagen's dynamic threshold uncapped


def imagen_config(profile: str = "full", steps: dict | None = None) -> ImagenConfig:
    """The Imagen proxy's shape: "full" (paper-sized), "scaled" (widths / 16) or "tiny" (tests).

    steps overrides the (UNKNOWN) default step counts by stage, e.g. {"base": 64}.
    """
    check_profile(profile)
    if profile == "tiny":
        text = TextConfig(kind="t5", model=dict(T5_TINY), tokenizer="byt5", max_length=64)
        small = dict(context_dim=32, pool_heads=4, head_channels=16, norm_num_groups=4)
        unets = {
            "base": _unet((16, 32), 1, 1, size=64, in_channels=3, cross_only=False, **small),
            "superres_256": _unet((8, 16), 1, 1, size=256, in_channels=6, cross_only=True, **small),
            "superres_1024": _unet((4, 8), 1, 1, size=1024, in_channels=6, cross_only=True, **small),
        }
    else:
        text_model = dict(T5_XXL) if profile == "full" else scaled_t5(T5_XXL)
        text = TextConfig(kind="t5", model=text_model, tokenizer="byt5", max_length=128)
        scale = 1 if profile == "full" else DIVISOR
        # Scaled: same head counts (head channels / 16) and 8 norm groups, which divide every narrowed width.
        common = dict(context_dim=text_model["d_model"], head_channels=64 // scale,
                      **({} if profile == "full" else dict(norm_num_groups=8)))
        unets = {
            "base": _unet([c // scale for c in (512, 1024, 1536, 1792)], 2, 3, size=64, in_channels=3,
                          cross_only=False, **common),
            "superres_256": _unet([c // scale for c in (128, 256, 512, 1024)], (2, 4, 4, 3), 1, size=256,
                                  in_channels=6, cross_only=True, **common),
            "superres_1024": _unet([c // scale for c in (128, 256, 512, 768)], (2, 2, 3, 3), 1, size=1024,
                                   in_channels=6, cross_only=True, **common),
        }
    config = ImagenConfig(profile, text, unets)
    if steps:
        unknown = set(steps) - set(IMAGEN_STAGES)
        if unknown:
            raise MuseInputError(f"unknown Imagen stages {sorted(unknown)}: use {', '.join(IMAGEN_STAGES)}")
        config = dataclasses.replace(config, steps={**config.steps, **steps})
    return config


def _imagen_stages(resolution: int) -> tuple[str, ...]:
    if resolution == 256:
        return IMAGEN_STAGES[:2]
    if resolution == 1024:
        return IMAGEN_STAGES
    raise MuseInputError(f"{IMAGEN_NAME} supports resolutions 256 and 1024 (Table 3's rows), got {resolution}")


class ImagenProxy:
    """T5-XXL -> 64x64 base UNet -> 256 super-res -> 1024 super-res, pixel-space DDIM, random weights."""

    resolutions = (256, 1024)

    def __init__(self, config: ImagenConfig, text_encoder: TextEncoder, unets: dict[str, nn.Module]):
        self.config = config
        self.text_encoder = text_encoder
        self.unets = {name: unet.eval().requires_grad_(False) for name, unet in unets.items()}

    @classmethod
    def from_config(cls, config: ImagenConfig, device="cpu", dtype: torch.dtype | None = None,
                    seed: int = 0) -> "ImagenProxy":
        """Random weights drawn from `seed`; device="meta" allocates nothing (parameter and FLOP counts)."""
        device = torch.device(device)
        with seeded_init(seed, device):
            text_model = build_text_model(config.text)
            unets = {name: UNet2DConditionModel(**config.unets[name]) for name in IMAGEN_STAGES}
        text = TextEncoder(text_model, load_tokenizer(config.text), "t5", config.text.max_length)
        proxy = cls(config, text, unets)
        if device.type != "meta" and dtype not in (None, torch.float32):
            cast(proxy.modules(), dtype)
        return proxy

    def modules(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.text_encoder.model, **self.unets}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and in total."""
        counts = {name: count_params(m) for name, m in self.modules().items()}
        counts["total"] = sum(counts.values())
        return counts

    def _denoise(self, stage: str, noise: torch.Tensor, low: torch.Tensor | None, steps: int, context, mask):
        unet, scale = self.unets[stage], self.config.guidance[stage]
        scheduler = DDIMScheduler(**self.config.scheduler)
        scheduler.set_timesteps(steps, device=noise.device)
        x = noise
        extra = None if low is None else torch.cat([low, low])
        for t in scheduler.timesteps:
            # Conditional and unconditional rows in one batched forward of 2B.
            inputs = torch.cat([x, x]) if extra is None else torch.cat([torch.cat([x, x]), extra], dim=1)
            eps = unet(inputs, t, encoder_hidden_states=context, encoder_attention_mask=mask, return_dict=False)[0]
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + scale * (cond - uncond), t, x, return_dict=False)[0]
        return x

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, resolution: int = 256, seed: int = 0,
                 sample_indices: Sequence[int] | None = None, steps: int | None = None,
                 stage_timer: Callable[[str], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
        """Images [B, 3, resolution, resolution] in [0, 1] (float32), resolution 256 or 1024.

        Stages "text_encoder", "base", "superres_256" (and "superres_1024") go to `stage_timer`. steps=None
        uses the config's step counts; an int runs every denoising loop with that many steps. Sample i's
        noise comes only from its generator, seeded by (seed, sample_indices[i]).
        """
        stages = _imagen_stages(resolution)
        stage = stage_clock(stage_timer)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        indices = sample_indices_of(prompts, sample_indices)
        if steps is not None and steps < 1:
            raise MuseInputError(f"steps must be at least 1, got {steps}")
        with stage("text_encoder"):
            text = self.text_encoder(with_unconditional(prompts))
        device, dtype = text.hidden.device, self.unets["base"].dtype
        context = text.hidden.to(dtype)
        # diffusers turns a key mask into an additive bias; it wants 1 at real tokens.
        mask = text.mask.to(dtype)
        generators = make_generators(seed, indices, device)
        x = None
        for name in stages:
            size = _STAGE_SIZE[name]
            with stage(name):
                noise = torch.stack([torch.randn(3, size, size, generator=g, device=device) for g in generators])
                low = None if x is None else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                x = self._denoise(name, noise.to(dtype), low, steps or self.config.steps[name], context, mask)
        return ((x.float().clamp(-1, 1) + 1) / 2)


@torch.no_grad()
def imagen_stage_flops(proxy: ImagenProxy, resolution: int, steps: dict | None = None) -> dict[str, int]:
    """FLOPs per image of each stage of an ImagenProxy built on the meta device, at `resolution`.

    text_encoder: one forward over the prompt and the empty prompt; each UNet stage: its step count (the
    config's, or `steps`) x one forward over 2 images. Element-wise work is not counted.
    """
    if proxy.unets["base"].device.type != "meta":
        raise MuseInputError("count FLOPs on a proxy built with device='meta'")
    steps = {**proxy.config.steps, **(steps or {})}
    length = proxy.config.text.max_length
    with torch.device("meta"):
        ids = torch.zeros(2, length, dtype=torch.long)
        context = torch.zeros(2, length, proxy.text_encoder.dim)
        mask = torch.ones(2, length)
        t = torch.tensor(999)  # an explicit tensor: nothing is read back from the meta device
    flops = {"text_encoder": count_flops(lambda: proxy.text_encoder.model(input_ids=ids))}
    for name in _imagen_stages(resolution):
        unet, size = proxy.unets[name], _STAGE_SIZE[name]
        with torch.device("meta"):
            x = torch.zeros(2, unet.config.in_channels, size, size)
        flops[name] = steps[name] * count_flops(
            lambda: unet(x, t, encoder_hidden_states=context, encoder_attention_mask=mask))
    flops["total"] = sum(flops.values())
    return flops


def imagen_stage_plan(config: ImagenConfig, prompts: list[str], device, dtype, seed: int = 0):
    """The per_stage plan of the Imagen proxy (bench/latency/stagewise.py): T5-XXL over 2B prompts; per denoising
    step of each stage one UNet forward over 2B images (DDIM arithmetic, thresholding and upsampling, all
    element-wise, are not timed). Pixel-space: no image decoder."""
    build = dict(device=device, dtype=dtype, seed=seed)

    def generator_role(resolutions, shared):
        stages = {stage for r in resolutions if r in ImagenProxy.resolutions for stage in _imagen_stages(r)}
        unets = build_for_timing(lambda: nn.ModuleDict(
            {name: UNet2DConditionModel(**config.unets[name]) for name in IMAGEN_STAGES if name in stages}), **build)

        def parts(resolution, batch):
            if resolution not in ImagenProxy.resolutions:
                return None
            rows, width = 2 * batch, config.text.model["d_model"]
            g = torch.Generator().manual_seed(seed)
            context = torch.randn(rows, config.text.max_length, width, generator=g).to(device, dtype)
            mask = torch.ones(rows, config.text.max_length, device=device, dtype=dtype)
            t = torch.tensor(999, device=device)
            out = []
            for name in _imagen_stages(resolution):
                unet, size = unets[name], _STAGE_SIZE[name]
                x = torch.randn(rows, unet.config.in_channels, size, size, generator=g).to(device, dtype)
                out.append(Part(name, f"UNet forward over {rows} images at {size}x{size}", config.steps[name],
                                lambda unet=unet, x=x: unet(x, t, encoder_hidden_states=context,
                                                            encoder_attention_mask=mask, return_dict=False)))
            return out

        return parts

    return StagePlan({"text": text_role(config.text, prompts, build), "generator": generator_role})


def imagen_runner(name: str, latency_cfg: Any, device, dtype, init_seed: int, seed: int, *,
                  compile: CompileSpec = CompileSpec(), prompts: list[str] | None = None, materialize: bool = True,
                  steps: dict | None = None) -> Runner:
    """The latency Runner of the Imagen proxy (bench.models.runner.RunnerFactory) at latency.profile (full,
    scaled or tiny); random weights, timed eager (`compile` is not applied).

    steps overrides the default (UNKNOWN) step counts by stage. With materialize=False nothing is built: the
    runner holds the per_stage plan.
    """
    profile = latency_cfg.profile
    config = imagen_config(profile, steps)
    meta = ImagenProxy.from_config(config, device="meta")
    flops = {r: imagen_stage_flops(meta, r) for r in ImagenProxy.resolutions}
    if profile == "full":
        full = flops
    else:
        full_meta = ImagenProxy.from_config(imagen_config("full", steps), device="meta")
        full = {r: imagen_stage_flops(full_meta, r) for r in ImagenProxy.resolutions}

    def full_steps(resolution):
        return {name: config.steps[name] for name in _imagen_stages(resolution)}

    common = dict(model=IMAGEN_NAME, weights="random", profile=profile, resolutions=ImagenProxy.resolutions,
                  params=meta.parameter_counts()["total"],
                  steps=lambda r: "+".join(str(s) for s in full_steps(r).values()), flops=lambda r: dict(flops[r]),
                  full_steps=full_steps, arch=IMAGEN_NAME,
                  full_flops=lambda r: None if profile == "tiny" else dict(full[r]))
    if not materialize:
        return Runner(run=None, stage_plan=imagen_stage_plan(config, prompts or [""], device, dtype, init_seed),
                      **common)
    proxy = ImagenProxy.from_config(config, device=device, dtype=dtype, seed=init_seed)

    def run(prompts, resolution, clock, run_steps=None):
        with torch.inference_mode():
            return proxy.generate(prompts, resolution=resolution, seed=seed, steps=run_steps, stage_timer=clock)

    return Runner(run=run, pipeline=proxy, **common)

