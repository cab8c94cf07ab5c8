"""The shapes world's CLIP: open_clip's own CLIP class at a small size (recipe.ClipShape), trained contrastively on
the pool's images and captions with open_clip's ClipLoss, saved as an open_clip model config and safetensors
weights. The suite's metrics read it through bench/train/scorers.py.

Images enter as open_clip's inference transform prepares them (OpenAI's mean and std at 64 px), so training and
scoring see the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


CLIP_NAME = "muse-bench-shapes-clip"
CONFIG_FILE = f"{CLIP_NAME}.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def register(folder: Path) -> str:
    """Make open_clip know the world's CLIP config (it reads model configs from JSON files only)."""
    import open_clip

    open_clip.add_model_config(folder / CONFIG_FILE)
    return CLIP_NAME


def build_clip(config: dict, folder: Path):
    """A randomly initialised open_clip CLIP of `config`, registered from `folder` (where the config is written)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return open_clip.create_model(register(folder), pretrained=None)


def normalise(model, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> the tower's input (open_clip's mean and std of the model)."""
    mean = torch.tensor(model.visual.image_mean or (0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std or (0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    return (images - mean) / std
