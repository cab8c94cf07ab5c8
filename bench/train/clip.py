"""The shapes world's CLIP: open_clip's own CLIP class at a small size (recipe.ClipShape), trained contrastively on
the pool's images and captions with open_clip's ClipLoss, saved as an open_clip model config and safetensors
weights; and the two ways the suite's metrics read it: a ClipScorer for CLIP score, CMMD and the CLIP judge
(`world_clip_scorer`), and its image tower as the FID / KID feature network (`WorldImageFeatures`).

Images enter as open_clip's inference transform prepares them (OpenAI's mean and std at 64 px), so training and
scoring see the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from bench.metrics.clip_model import ClipScorer, open_clip_scorer

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


def world_clip_scorer(world: str = "shapes", cache_dir: str | None = None, batch_size: int = 64) -> ClipScorer:
    """The ClipScorer of a trained world's CLIP (training the world first if its cache has none), for
    `eval.clip.model: {_target_: bench.train.clip.world_clip_scorer, world: shapes}`."""
    from bench.train.world import ensure_world

    folder = ensure_world(world, cache_dir) / "clip"
    scorer = open_clip_scorer(register(folder), str(folder / WEIGHTS_FILE), device="cpu", batch_size=batch_size,
                              setting="eval.clip")
    scorer.protocol.update({"model": f"{CLIP_NAME} trained on the {world} world (bench/train/clip.py)",
                            "comparable_to_published": False})
    return scorer


class WorldImageFeatures(nn.Module):
    """The image embedding of a trained world's CLIP as FID / KID features (`eval.fid.feature_extractor:
    {_target_: bench.train.clip.WorldImageFeatures, world: shapes}`). Input [N, 3, H, W] in [0, 255], resized to
    the tower's size; output the unnormalised image embedding [N, embed_dim]. Not Inception: its protocol_name
    says so."""

    def __init__(self, world: str = "shapes", cache_dir: str | None = None):
        super().__init__()
        import open_clip

        from bench.train.world import ensure_world

        folder = ensure_world(world, cache_dir) / "clip"
        self.world = world
        self.model = open_clip.create_model(register(folder), pretrained=str(folder / WEIGHTS_FILE))
        self.model.eval().requires_grad_(False)
        self.size = self.model.visual.image_size
        self.size = self.size[0] if isinstance(self.size, (tuple, list)) else self.size
        self._key = (folder / WEIGHTS_FILE).stat().st_size, folder.parent.name

    @property
    def protocol_name(self) -> str:
        return (f"{CLIP_NAME} image tower of world {self._key[1]} (bench/train/clip.py) "
                "[a world-specific feature network: NOT comparable with Inception FID/KID]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x / 255, size=(self.size, self.size), mode="bilinear",
                                            antialias=True, align_corners=False)
        return self.model.encode_image(normalise(self.model, x))
