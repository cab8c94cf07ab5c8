"""Training recipes of the shapes world: every choice that changes the trained weights, and the cache key made of
them.

A recipe names the pipeline architecture (a muse preset), the seed, the pool of training scenes and each stage's
steps, batch and learning rate. Its key is a hash of all of that plus the architecture's full config (its
samplers aside: how a world is sampled changes none of its weights, and a world is loaded with its preset's current
samplers, bench.models.muse.load_pipeline) and FORMAT_VERSION (bumped when the training code changes what a
recipe produces), so a changed recipe is trained into a new folder and never mixed with an old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import BenchError
from muse.presets import preset_config

FORMAT_VERSION = 2
# The parts of a pipeline config that say how it samples, not what it is: left out of the key.
SAMPLER_FIELDS = ("base_sampler", "superres_sampler")


@dataclass(frozen=True)
class Stage:
    """One stage's optimisation: steps, global batch (split over processes), peak learning rate (linear warm-up
    over `warmup` steps, then cosine decay to zero)."""

    steps: int
    batch: int
    lr: float
    warmup: int = 50


@dataclass(frozen=True)
class ClipShape:
    """The shapes CLIP, in open_clip's model-config terms (a ViT image tower and a text transformer)."""

    embed_dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    text_width: int = 64
    text_layers: int = 2
    heads: int = 4
    context_length: int = 16

    def open_clip_config(self) -> dict[str, Any]:
        """The model config open_clip builds this CLIP from (open_clip.add_model_config / create_model)."""
        return {
            "embed_dim": self.embed_dim,
            "quick_gelu": True,
            "vision_cfg": {"image_size": self.image_size, "layers": self.vision_layers, "width": self.vision_width,
                           "patch_size": self.patch_size, "head_width": self.vision_width // self.heads},
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                         "heads": self.heads, "layers": self.text_layers},
        }


@dataclass(frozen=True)
class WorldRecipe:
    """How the shapes world is trained (see the module docstring). `vq_autoencoder_steps` of the VQ stage train
    without quantisation, then the codebook starts from k-means of the encoder's outputs (a dead-code-free start
    that a few minutes of training cannot reach otherwise); object pixels weigh 1 + vq_foreground_weight in its
    reconstruction loss (bench.train.world.foreground_weight); its images are vq_crop px crops around objects
    (bench.train.data.object_crops)."""

    name: str
    preset: str = "muse-shapes"
    seed: int = 0
    train_scenes: int = 8192
    vq: Stage = Stage(steps=1200, batch=64, lr=3e-3, warmup=50)
    vq_autoencoder_steps: int = 800
    vq_crop: int = 16
    vq_foreground_weight: float = 20.0
    base: Stage = Stage(steps=1200, batch=32, lr=2e-3)
    superres: Stage = Stage(steps=400, batch=16, lr=2e-3)
    clip: Stage = Stage(steps=300, batch=64, lr=1e-3)
    clip_shape: ClipShape = field(default_factory=ClipShape)
    text_dropout: float = 0.1
    checkpoint_every: int = 100

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """16 hex digits of sha256 over the recipe, its architecture's config (samplers aside) and FORMAT_VERSION."""
        architecture = preset_config(self.preset).to_dict()
        for sampler in SAMPLER_FIELDS:
            architecture.pop(sampler)
        data = {"format": FORMAT_VERSION, "recipe": self.to_dict(), "architecture": architecture}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.key}"


# The named recipes (model.world / train.recipe). "shapes" is the world the default job and the experiments use;
# "shapes-ci" is a shorter one for the test suite, the same code on fewer steps.
RECIPES: dict[str, WorldRecipe] = {
    "shapes": WorldRecipe(name="shapes"),
    "shapes-ci": WorldRecipe(
        name="shapes-ci", train_scenes=4096,
        vq=Stage(steps=900, batch=64, lr=3e-3, warmup=50), vq_autoencoder_steps=600,
        base=Stage(steps=600, batch=32, lr=2e-3), superres=Stage(steps=200, batch=16, lr=2e-3),
        clip=Stage(steps=150, batch=64, lr=1e-3),
    ),
}


def get_recipe(name: str, setting: str = "train.recipe") -> WorldRecipe:
    """The named recipe, or a BenchError naming `setting` and the known recipes."""
    if name not in RECIPES:
        raise BenchError(f"{setting}={name!r} names no training recipe; known recipes: {', '.join(RECIPES)}.")
    return RECIPES[name]
