"""What a Muse pipeline call returns: the images, the final tokens, and (for generation) the decoding
trajectory; shared by generation (muse/pipeline.py) and editing (muse/editing.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class MuseOutput:
    """Images and the tokens behind them (see each field)."""

    images: list[Image.Image]
    tokens: torch.Tensor  # [B, H*W] final tokens of the last stage run (base at 256, super-res at 512)
    trajectory: torch.Tensor | None  # [B, steps, 256] base tokens after each step (mask id where still masked)
    mask_token_id: int
    edit_mask: torch.Tensor | None = None  # [B, H*W] token positions an edit was allowed to change


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] floats in [0, 1] -> PIL images (rounded to 8 bits)."""
    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]
