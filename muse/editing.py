"""Zero-shot editing from masking (Muse section 3.6): inpainting, outpainting and mask-free editing.

Inpainting and outpainting mask the tokens of a region and resample them with the same sampler as
generation: low-res tokens first, then (at 512) the high-res tokens conditioned on the new low-res ones.
Tokens outside the region are never changed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import MuseInputError
from .output import MuseOutput, to_pil
from .sampling import make_generators, remask


def _image_tensor(image) -> torch.Tensor:
    """PIL image, HxWx3 uint8 array, or [3, H, W] float tensor in [0, 1] -> [1, 3, H, W] float."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise MuseInputError(f"expected an HxWx3 image, got an array of shape {image.shape}")
        image = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise MuseInputError("expected a PIL image, an HxWx3 uint8 array or a [3, H, W] tensor in [0, 1]")
    return image[None].float()


def _mask_tensor(mask, size: tuple[int, int]) -> torch.Tensor:
    """A mask of the image's height and width (PIL 'L'/'1', bool/uint8 array or tensor) -> [1, 1, H, W] float."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 127
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if mask.ndim != 2 or tuple(mask.shape) != size:
        raise MuseInputError(f"the mask must have the image's height and width {size}, got shape {tuple(mask.shape)}")
    return mask.bool()[None, None].float()


def token_mask(mask: torch.Tensor, resolution: int, downsample: int) -> torch.Tensor:
    """Pixel mask [1, 1, H, W] -> token mask [1, (R/f)^2]: a token is masked if any pixel of its patch is."""
    mask = F.interpolate(mask, size=(resolution, resolution), mode="nearest")
    return (F.max_pool2d(mask, downsample) > 0).flatten(1)


def _resize(image: torch.Tensor, resolution: int) -> torch.Tensor:
    if image.shape[-1] == resolution and image.shape[-2] == resolution:
        return image
    return F.interpolate(image, size=(resolution, resolution), mode="bicubic", antialias=True).clamp(0, 1)


def _setup(pipe, prompt, resolution, seed, guidance_scale, steps=None, superres_steps=None, token_order=None):
    """Prompts, resolution, per-stage samplers (the call's overrides applied to every stage it runs), generators
    and text (paired with the empty prompt when any stage is guided)."""
    prompts = pipe.check_prompts(prompt)
    resolution = resolution or pipe.config.base_resolution
    pipe.check_resolution(resolution)
    samplers = pipe.stage_samplers(resolution, guidance_scale, steps, superres_steps, token_order=token_order)
    generators = make_generators(seed, range(len(prompts)), pipe.device)
    text = pipe.encode_text(prompts, None, guided=any(s.guidance_t for s in samplers.values()))
    return prompts, resolution, samplers, generators, text


@torch.no_grad()
def inpaint(pipe, image, mask, prompt, resolution: int | None = None, seed: int = 0,
            guidance_scale: float | None = None, steps: int | None = None, superres_steps: int | None = None,
            token_order: str | None = None):
    """Regenerate the tokens under `mask` (True = regenerate) of `image` for each prompt.

    resolution: 256 (base only) or 512 (base, then super-res); the image and mask are resized to it.
    guidance_scale (the CFG scale g, as in MusePipeline.__call__) and token_order (which masked tokens each step
    keeps: confidence, halton or halton-random) apply to every stage; steps to the base stage, superres_steps to
    the super-res stage.
    """
    pixels = _image_tensor(image)
    region = _mask_tensor(mask, tuple(pixels.shape[-2:]))
    prompts, resolution, samplers, generators, text = _setup(pipe, prompt, resolution, seed, guidance_scale, steps,
                                                             superres_steps, token_order)
    batch = len(prompts)
    device = pipe.device

    base_res = pipe.config.base_resolution
    low = pipe.vq_base.encode(_resize(pixels, base_res).to(device)).repeat(batch, 1)
    low_mask = token_mask(region, base_res, pipe.vq_base.downsample).to(device).expand(batch, -1)
    start = torch.where(low_mask, torch.full_like(low, pipe.base.mask_token_id), low)
    base = pipe.decode_stage(pipe.base, text, start, samplers["base"], generators, return_trajectory=True)
    tokens, edited = base.tokens, low_mask
    if "superres" in samplers:
        high = pipe.vq_superres.encode(_resize(pixels, resolution).to(device)).repeat(batch, 1)
        edited = token_mask(region, resolution, pipe.vq_superres.downsample).to(device).expand(batch, -1)
        start = torch.where(edited, torch.full_like(high, pipe.superres.mask_token_id), high)
        tokens = pipe.decode_stage(pipe.superres, text, start, samplers["superres"], generators,
                                   low_tokens=base.tokens).tokens
    return MuseOutput(to_pil(pipe.decode_tokens(tokens, resolution)), tokens, base.trajectory, pipe.mask_token_id, edited)


def outpaint(pipe, image, keep, prompt, **kwargs):
    """Regenerate everything outside `keep`: a (left, top, right, bottom) box in pixels, or a mask that is
    True where the image is kept. Other arguments as inpaint."""
    pixels = _image_tensor(image)
    height, width = pixels.shape[-2:]
    if isinstance(keep, (tuple, list)) and len(keep) == 4:
        left, top, right, bottom = (int(v) for v in keep)
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise MuseInputError(f"keep box {tuple(keep)} is not inside the {width}x{height} image")
        region = torch.ones(height, width, dtype=torch.bool)
        region[top:bottom, left:right] = False
    else:
        region = ~_mask_tensor(keep, (height, width))[0, 0].bool()
    return inpaint(pipe, image, region, prompt, **kwargs)


@torch.no_grad()
def edit(pipe, image, prompt, resolution: int | None = None, seed: int = 0, iterations: int = 100,
         resample_fraction: float = 0.08, guidance_scale: float | None = 5.0, top_k: int | None = 3,
         superres_steps: int | None = None, token_order: str | None = None):
    """Mask-free editing: from the image's tokens, `iterations` times mask a random `resample_fraction` of the
    base tokens and resample them with guidance and top-k; then (at 512) super-res from the edited tokens.

    guidance_scale is the CFG scale g of every stage (default 5: the paper's t = 4, constant during the
    resampling; super-res keeps its own ramp); None keeps each stage's preset. top_k applies to the resampling.
    token_order applies to the super-res stage (each resampling is one step, which fills every masked token).
    """
    if iterations < 1:
        raise MuseInputError(f"iterations must be at least 1, got {iterations}")
    if not 0 < resample_fraction <= 1:
        raise MuseInputError(f"resample_fraction must be in (0, 1], got {resample_fraction}")
    pixels = _image_tensor(image)
    prompts, resolution, samplers, generators, text = _setup(pipe, prompt, resolution, seed, guidance_scale,
                                                             superres_steps=superres_steps, token_order=token_order)
    # One step of the shared sampler fills every masked token: this is Muse's resampling step.
    resample = dataclasses.replace(samplers["base"], steps=1, guidance_ramp="constant", top_k=top_k)
    device, batch = pipe.device, len(prompts)
    tokens = pipe.vq_base.encode(_resize(pixels, pipe.config.base_resolution).to(device)).repeat(batch, 1)
    count = torch.full((batch,), max(1, round(resample_fraction * tokens.shape[1])), device=device)
    for _ in range(iterations):
        scores = torch.stack([torch.rand(tokens.shape[1], generator=g, device=device, dtype=torch.float32)
                              for g in generators])
        chosen = remask(scores, count)
        start = torch.where(chosen, torch.full_like(tokens, pipe.base.mask_token_id), tokens)
        tokens = pipe.decode_stage(pipe.base, text, start, resample, generators).tokens
    final = tokens
    if "superres" in samplers:
        start = torch.full((batch, pipe.superres.seq_len), pipe.superres.mask_token_id, device=device)
        final = pipe.decode_stage(pipe.superres, text, start, samplers["superres"], generators, low_tokens=tokens).tokens
    return MuseOutput(to_pil(pipe.decode_tokens(final, resolution)), final, None, pipe.mask_token_id)
