"""aMUSEd (Patil et al. 2024) through our sampler: diffusers' UVit2DModel with its micro-conditioning.

The adapter gives the U-ViT the same two-part interface as our transformers (context once, logits per step),
so aMUSEd decodes with muse.sampling.parallel_decode. Its guidance uncond + g * (cond - uncond) is Muse's
formula with t = g - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UVit2DModel
from torch import nn

from .text import TextEmbedding


@dataclass
class AmusedContext:
    hidden: torch.Tensor  # [B, S, 768] CLIP penultimate hidden states
    pooled: torch.Tensor  # [B, 768] projected pooled text embedding
    micro_conds: torch.Tensor  # [B, 5] width, height, crop x, crop y, aesthetic score


class AmusedTransformer(nn.Module):
    """UVit2DModel over a square token grid, conditioned as aMUSEd's pipeline conditions it."""

    def __init__(self, uvit: UVit2DModel, grid: int, resolution: int, aesthetic_score: float = 6.0, crop_coord=(0, 0)):
        super().__init__()
        self.uvit = uvit
        self.grid = grid
        self.resolution = resolution
        self.aesthetic_score = aesthetic_score
        self.crop_coord = tuple(crop_coord)

    @property
    def mask_token_id(self) -> int:
        # aMUSEd's scheduler uses the last id of the input vocabulary (8255 for vocab 8256).
        return self.uvit.config.vocab_size - 1

    @property
    def seq_len(self) -> int:
        return self.grid**2

    def context(self, text: TextEmbedding, low_tokens=None) -> AmusedContext:
        conds = [self.resolution, self.resolution, *self.crop_coord, self.aesthetic_score]
        micro = torch.tensor(conds, dtype=text.hidden.dtype, device=text.hidden.device).expand(text.hidden.shape[0], -1)
        return AmusedContext(text.hidden, text.pooled, micro)

    def logits(self, tokens: torch.Tensor, context: AmusedContext) -> torch.Tensor:
        b = tokens.shape[0]
        out = self.uvit(
            tokens.view(b, self.grid, self.grid),
            micro_conds=context.micro_conds,
            pooled_text_emb=context.pooled,
            encoder_hidden_states=context.hidden,
        )
        return out.reshape(b, out.shape[1], -1).transpose(1, 2)  # [B, V, h, w] -> [B, L, V]
