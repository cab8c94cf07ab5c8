"""The training objectives of Muse's parts: the VQGAN tokenizer's and the masked-token transformers'.

- VQGAN (`vq_loss`): reconstruction (L1 + L2 in the model's pixel range) plus diffusers' VectorQuantizer loss,
  which is the codebook term ||sg[z] - e||^2 and the commitment term beta * ||z - sg[e]||^2 (beta 0.25).
  Perceptual and adversarial terms are left out: they sharpen natural images, and the flat-coloured worlds this
  module is used on here are reconstructed sharply without them.
- Base and super-res transformers (`masked_token_loss`, MaskGIT's objective, Muse section 2.4): a mask ratio
  r = cos(pi/2 * u), u ~ U(0, 1) per sample, that many tokens replaced by the mask token (at least one), and
  cross-entropy on the masked positions only. Text dropout (`drop_text`) replaces a fraction of the captions with
  the empty prompt, which is what the sampler's unconditional branch feeds, so classifier-free guidance has an
  unconditional model to contrast with.

Every random draw takes an explicit torch.Generator, so a training step is a function of (weights, batch, generator
state): a run resumed from a checkpoint that stores the generator state repeats the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .text import TextEmbedding


def cosine_mask_ratio(u: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule as a training distribution: the masked fraction for u ~ U(0, 1)."""
    return torch.cos(math.pi / 2 * u)


def mask_tokens(tokens: torch.Tensor, mask_token_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a cosine-distributed fraction of each row of `tokens` [B, L] (at least one token per row).

    Returns (masked tokens, mask [B, L] True where masked). The positions are the ceil(r * L) lowest of uniform
    scores, so each sample's mask depends only on the generator's draws, not on the other samples' tokens.
    """
    b, length = tokens.shape
    ratio = cosine_mask_ratio(torch.rand(b, generator=generator, device=tokens.device))
    n_masked = (ratio * length).ceil().clamp(1, length).long()
    scores = torch.rand(b, length, generator=generator, device=tokens.device)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)
    mask = ranks < n_masked[:, None]
    return torch.where(mask, torch.full_like(tokens, mask_token_id), tokens), mask


def masked_token_loss(model, tokens: torch.Tensor, text: TextEmbedding, generator: torch.Generator,
                      low_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """MaskGIT's loss for a base or super-res model (muse.transformer.MaskedTokenModel): cross-entropy of the
    true tokens at the masked positions, given the rest, the text and (super-res) the low-res tokens."""
    masked, mask = mask_tokens(tokens, model.mask_token_id, generator)
    logits = model.logits(masked, model.context(text, low_tokens))
    return F.cross_entropy(logits[mask].float(), tokens[mask])


def drop_text(prompts: Sequence[str], rate: float, generator: torch.Generator) -> list[str]:
    """The prompts with each replaced by the empty prompt with probability `rate` (classifier-free guidance)."""
    keep = torch.rand(len(prompts), generator=generator) >= rate
    return [p if k else "" for p, k in zip(prompts, keep.tolist())]


def vq_loss(tokenizer, images: torch.Tensor, quantize: bool = True, train_encoder: bool = True,
            weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The VQGAN loss of a muse.vqgan.VQTokenizer on `images` in its model's pixel range; returns (loss, its parts).
    quantize=False trains encoder and decoder as a plain autoencoder (reconstruction only), e.g. before the
    codebook is initialised from the encoder's outputs; train_encoder=False keeps the encoder out of the gradient
    (its outputs detached: the commitment term then moves nothing, the codebook term moves the codes). `weight`
    [B, 1, H, W], if given, weighs each pixel's reconstruction error (a weighted mean), e.g. to stop a background
    that covers most pixels from drowning the objects' colours."""
    vq = tokenizer.vq
    latents = tokenizer.latents(images)
    if not train_encoder:
        latents = latents.detach()
    if weight is None:
        weight = torch.ones_like(images[:, :1])

    def reconstruction_of(decoded):
        error = decoded - images
        return ((error.abs() + error.pow(2)) * weight).sum() / (weight.sum() * images.shape[1])

    if not quantize:
        reconstruction = reconstruction_of(vq.decoder(vq.post_quant_conv(latents)))
        return reconstruction, {"reconstruction": reconstruction.item()}
    decoded = vq.decode(latents)
    reconstruction = reconstruction_of(decoded.sample)
    quantizer = decoded.commit_loss.mean()
    return reconstruction + quantizer, {"reconstruction": reconstruction.item(), "quantizer": quantizer.item()}
