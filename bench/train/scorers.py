"""How the suite's metrics read a trained world's CLIP (bench/train/clip.py): a ClipScorer for CLIP score, CMMD and
the CLIP judge (`world_clip_scorer`), and its image tower as the FID / KID feature network (`WorldImageFeatures`).
Both train the world first when the cache has none (bench.train.world.ensure_world)."""

from __future__ import annotations

import torch
from torch import nn

from bench.metrics.clip_model import ClipScorer, open_clip_scorer
from bench.train.clip import CLIP_NAME, WEIGHTS_FILE, normalise, register
from bench.train.world import ensure_world


def world_clip_scorer(world: str = "shapes", cache_dir: str | None = None, batch_size: int = 64) -> ClipScorer:
    """The ClipScorer of a trained world's CLIP (training the world first if its cache has none), for
    `eval.clip.model: {_target_: bench.train.scorers.world_clip_scorer, world: shapes}`."""
    folder = ensure_world(world, cache_dir) / "clip"
    scorer = open_clip_scorer(register(folder), str(folder / WEIGHTS_FILE), device="cpu", batch_size=batch_size,
                              setting="eval.clip")
    scorer.protocol.update({"model": f"{CLIP_NAME} trained on the {world} world (bench/train/clip.py)",
                            "comparable_to_published": False})
    return scorer


class WorldImageFeatures(nn.Module):
    """The image embedding of a trained world's CLIP as FID / KID features (`eval.fid.feature_extractor:
    {_target_: bench.train.scorers.WorldImageFeatures, world: shapes}`). Input [N, 3, H, W] in [0, 255], resized to
    the tower's size; output the unnormalised image embedding [N, embed_dim]. Not Inception: its protocol_name
    says so."""

    def __init__(self, world: str = "shapes", cache_dir: str | None = None):
        super().__init__()
        import open_clip

        folder = ensure_world(world, cache_dir) / "clip"
        self.world = world
        self.model = open_clip.create_model(register(folder), pretrained=str(folder / WEIGHTS_FILE))
        self.model.eval().requires_grad_(False)
        self.size = self.model.visual.image_size
        self.size = self.size[0] if isinstance(self.size, (tuple, list)) else self.size
        self.folder_name = folder.parent.name  # <recipe>-<key>: names the weights exactly

    @property
    def protocol_name(self) -> str:
        return (f"{CLIP_NAME} image tower of world {self.folder_name} (bench/train/clip.py) "
                "[a world-specific feature network: NOT comparable with Inception FID/KID]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x / 255, size=(self.size, self.size), mode="bilinear",
                                            antialias=True, align_corners=False)
        return self.model.encode_image(normalise(self.model, x))
