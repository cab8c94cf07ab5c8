"""The training data of the shapes world: a fixed pool of train-split scenes, rendered once.

Each scene is rendered at the super-res size (64 px) and at the base size (32 px): a scene's layout is the same
at every size (bench/shapes/scenes.py), so both stages see flat palette images of the same scene. A step's examples are drawn from the pool with replacement by the step's generator (bench/train/loop.py), so
they are a function of (seed, stage, step) alone.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.shapes.captions import caption
from bench.shapes.scenes import make_scene, render


class ScenePool:
    """`n` train-split scenes: `high` [n, 3, S, S] and `low` [n, 3, S/2, S/2] uint8 images and their captions."""

    def __init__(self, n: int, size: int = 64):
        self.captions = [caption(make_scene(i, "train", size)) for i in range(n)]
        self.high, self.low = (
            torch.from_numpy(np.stack([np.asarray(render(make_scene(i, "train", s))) for i in range(n)]))
            .permute(0, 3, 1, 2).contiguous() for s in (size, size // 2))

    def __len__(self) -> int:
        return len(self.captions)

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """`batch` pool indices drawn uniformly with replacement."""
        return torch.randint(len(self), (batch,), generator=generator)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]."""
    return images.float() / 255
