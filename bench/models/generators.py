"""What the generate job runs: the ImageGenerator interface over every family of models, `load_generator`
(which finds a model config's loader in bench.models.GENERATORS), and the device and model-name checks a loader
shares."""

from __future__ import annotations

import re
from typing import Any

import torch

from bench.core.errors import BenchError
from bench.data.images import GENERATED_RESIZE, resize_generated
from bench.models import GENERATORS

# A model name becomes a folder name under samples/, so it must be a plain file name.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_plain_name(name: str) -> bool:
    """Whether a model name can be a folder name under samples/ (letters, digits, '.', '_', '-')."""
    return bool(_LABEL.match(name))


def resolve_device(device: str) -> str:
    """Turn the config's device into a torch device string: "auto" is cuda when available, else cpu.

    A malformed device, or cuda where no GPU is visible, raises BenchError.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise BenchError(f"device={device!r} is not a torch device. Use cpu, cuda, cuda:N or auto.") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device={device} was asked for, but PyTorch sees no CUDA GPU here. Use device=cpu or device=auto.")
    return str(parsed)


class ImageGenerator:
    """One interface over every model the generate job runs: Muse presets and checkpoints (incl. aMUSEd) through
    MusePipeline (bench/models/muse.py), and Stable Diffusion v1.4 through diffusers' StableDiffusionPipeline (bench/models/diffusion.py).

    `generate(prompts, resolution, seed, sample_indices, replica)` returns PIL images at `resolution`, each
    depending only on (seed, its sample index, replica); `settings(resolution)` is the sampling protocol behind
    them, every stage with its guidance as the CFG scale g (`guidance_scale`) and Muse's t (`guidance_t`);
    `weights` is random|pretrained. A model makes every image at a resolution it was trained at
    (`native_resolutions`, by default all it supports): an image asked for at another one is made at
    `generated_at(resolution)` and resized (bench.data.images.resize_generated), as `resize_protocol(resolution)`
    records.
    """

    def __init__(self, name: str, weights: str, resolutions, generate, settings, pipeline=None,
                 native_resolutions=None, determinism=None):
        self.name = name
        self.determinism = determinism  # what holds across batch sizes, thread counts and process layouts
        self.weights = weights
        self.resolutions = tuple(resolutions)
        self.native_resolutions = tuple(native_resolutions or resolutions)
        self._generate = generate
        self._settings = settings
        self.pipeline = pipeline

    def generated_at(self, resolution: int) -> int:
        """The native resolution an image at `resolution` is made at: itself when native, else the smallest
        native one above it (a downsample, as published SD v1.x FIDs at 256 are made), else the largest."""
        native = sorted(self.native_resolutions)
        if resolution in native:
            return resolution
        return next((r for r in native if r > resolution), native[-1])

    def generate(self, prompts: list[str], resolution: int, seed: int, sample_indices: list[int],
                 replica: int = 0) -> list:
        """PIL images of `prompts` at `resolution`, made at generated_at(resolution)."""
        made_at = self.generated_at(resolution)
        images = self._generate(prompts, made_at, seed, sample_indices, replica)
        return list(images) if made_at == resolution else [resize_generated(im, resolution) for im in images]

    def settings(self, resolution: int) -> dict:
        """Every stage's decoding settings behind an image at `resolution` (those of the resolution made)."""
        return self._settings(self.generated_at(resolution))

    def resize_protocol(self, resolution: int) -> dict:
        """{generated_at, resized_with}: both None when the image is made at `resolution` itself."""
        made_at = self.generated_at(resolution)
        if made_at == resolution:
            return {"generated_at": None, "resized_with": None}
        return {"generated_at": made_at, "resized_with": {**GENERATED_RESIZE, "from": made_at, "to": resolution}}


def load_generator(model_cfg: Any, device: str) -> ImageGenerator:
    """The ImageGenerator of a model config, from the loader bench.models.GENERATORS registers for its
    model.family (muse or stable-diffusion); an unknown family is a BenchError listing the known ones."""
    return GENERATORS[model_cfg.get("family", "muse")](model_cfg, device)
