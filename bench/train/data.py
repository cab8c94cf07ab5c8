"""The training data of the shapes world: a fixed pool of train-split scenes, rendered once.

Each scene is rendered at the super-res size (64 px) and at the base size (32 px): a scene's layout is the same
at every size (bench/shapes/scenes.py), so both stages see flat palette images of the same scene. A step's examples are drawn from the pool with replacement by the step's generator (bench/train/loop.py), so
they are a function of (seed, stage, step) alone.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.shapes.captions import caption
from bench.shapes.scenes import BACKGROUND, make_scene, render


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


def object_crops(images: torch.Tensor, crop: int, generator: torch.Generator, cell: int = 4) -> torch.Tensor:
    """One `crop` x `crop` crop of each of `images` [B, 3, S, S], aligned to the `cell` px token grid, around an
    object: an object pixel is drawn uniformly from the image's object pixels and the crop placed so that its cell
    falls at a random cell of the crop (a random crop when the image is all background).

    Why: objects cover about 4% of a scene's cells, and the VQ must tell apart cells that differ in three of
    sixteen pixels (a square's quarter from a circle's). On random 32 px crops the autoencoder read 5-53% of the
    validation scenes back exactly after 1200 steps; on 16 px crops around objects, the same compute, 100%.
    """
    b, _, size, _ = images.shape
    if crop > size or crop % cell or size % cell:
        raise ValueError(f"a {crop} px crop on the {cell} px grid does not fit {size} px images")
    background = torch.tensor(BACKGROUND, dtype=images.dtype).view(1, 3, 1, 1)
    objects = (images != background).any(1).flatten(1).float()  # [B, S*S]
    weights = objects + (objects.sum(1, keepdim=True) == 0).float()  # an empty image: any pixel
    pixel = torch.multinomial(weights, 1, generator=generator)[:, 0]
    cells = crop // cell
    offset = torch.randint(0, cells, (b, 2), generator=generator) * cell
    y = ((pixel // size) // cell * cell - offset[:, 0]).clamp(0, size - crop)
    x = ((pixel % size) // cell * cell - offset[:, 1]).clamp(0, size - crop)
    return torch.stack([image[:, i:i + crop, j:j + crop] for image, i, j in zip(images, y.tolist(), x.tolist())])
