"""Building the Muse pipeline a job asks for: device choice, preset or pretrained weights."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from bench.core.errors import BenchError
from bench.data.images import GENERATED_RESIZE, resize_generated

if TYPE_CHECKING:
    from muse import MusePipeline

# A model name becomes a folder name under samples/, so it must be a plain file name.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def load_pipeline(model_cfg: Any, device: str) -> MusePipeline:
    """The pipeline for a model config: from_pretrained when `pretrained` is set, else the named preset
    with random weights (offline) drawn from `init_seed`.

    An unknown preset name raises BenchError listing the known ones; errors of the muse package
    (missing weights, bad checkpoints) propagate as muse.errors.MuseError.
    """
    from muse import MusePipeline
    from muse.presets import PRESET_NAMES

    name = model_cfg.name
    if model_cfg.pretrained:
        if not _LABEL.match(name):
            raise BenchError(
                f"model.name={name!r} names the output folder of a pretrained model and must be a plain "
                "name (letters, digits, '.', '_', '-')."
            )
        return MusePipeline.from_pretrained(model_cfg.pretrained, device=device)
    if name not in PRESET_NAMES:
        raise BenchError(
            f"Unknown model {name!r}. Known models: {', '.join(PRESET_NAMES)}. Pick one with model=NAME, "
            "or load a checkpoint with model.pretrained=PATH_OR_HUB_ID."
        )
    # The same init seed gives the same weights, hence the same images, in every process.
    return MusePipeline.from_preset(name, device=device, seed=model_cfg.init_seed)


SD_FAMILY = "stable-diffusion"
FAMILIES = ("muse", SD_FAMILY)


class ImageGenerator:
    """One interface over every model the generate job runs: Muse presets and checkpoints (incl. aMUSEd) through
    MusePipeline, and Stable Diffusion v1.4 through diffusers' StableDiffusionPipeline (bench/models/diffusion.py).

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


# Generated files must not depend on how a run is split over processes; torchrun gives each rank one CPU thread,
# and the VQ decoder's convolutions round differently per thread count, so Muse images are decoded with one
# thread on a CPU (exact; the cost is measured in README "Scale-out"). Latency runs time the default instead.
DECODE_THREADS = 1
MUSE_DETERMINISM = (
    "pixels are a function of the tokens (VQ decoded one sample at a time, with 1 thread on a CPU); tokens are the "
    "same across batch sizes and process layouts wherever the transformers' float32 logits are: bit-identical "
    "between 1 and 2 CPU threads for muse-tiny, up to 2.5e-6 apart for Muse-632M's base transformer, where a "
    "near-tied draw could then differ"
)
SD_DETERMINISM = ("UNet and VAE run batched with the process's CPU threads: pixels can differ by float rounding between "
                  "batch compositions and thread counts")


def load_generator(model_cfg: Any, device: str) -> ImageGenerator:
    """The ImageGenerator for a model config (model.family muse or stable-diffusion), with model.steps and
    model.guidance_scale (the CFG scale g, for every family), when set, overriding the model's own."""
    from muse.sampling import to_guidance_t

    family = model_cfg.get("family", "muse")
    steps, guidance = model_cfg.get("steps"), model_cfg.get("guidance_scale")
    if family == "muse":
        pipe = load_pipeline(model_cfg, device)

        def generate(prompts, resolution, seed, indices, replica=0):
            return pipe(prompts, resolution=resolution, seed=seed, sample_indices=indices, replica=replica,
                        guidance_scale=guidance, steps=steps, decode_threads=DECODE_THREADS).images

        def settings(resolution):
            # The pipeline applies a guidance override to every stage and a steps override to the base stage.
            return pipe.sampler_settings(resolution, guidance_scale=guidance, steps=steps)

        return ImageGenerator(model_cfg.name, pipe.weights, pipe.config.resolutions, generate, settings, pipe,
                              model_cfg.get("native_resolutions"), MUSE_DETERMINISM)
    if family == SD_FAMILY:
        from bench.models.diffusion import build_stable_diffusion, run_stable_diffusion

        if not _LABEL.match(model_cfg.name):
            raise BenchError(f"model.name={model_cfg.name!r} must be a plain name (letters, digits, '.', '_', '-').")
        pipe = build_stable_diffusion(model_cfg.get("profile", "full"), model_cfg.pretrained, device,
                                      seed=model_cfg.init_seed)
        sd_steps, sd_guidance = 50 if steps is None else steps, 7.5 if guidance is None else guidance

        def generate(prompts, resolution, seed, indices, replica=0):
            return run_stable_diffusion(pipe, prompts, resolution=resolution, steps=sd_steps,
                                        guidance_scale=sd_guidance, seed=seed, sample_indices=indices, replica=replica)

        def settings(resolution):
            return {"denoiser": {"scheduler": type(pipe.scheduler).__name__, "steps": sd_steps,
                                 "guidance_scale": sd_guidance, "guidance_t": to_guidance_t(sd_guidance),
                                 "profile": model_cfg.get("profile", "full")}}

        weights = "pretrained" if model_cfg.pretrained else "random"
        return ImageGenerator(model_cfg.name, weights, tuple(model_cfg.resolution), generate, settings, pipe,
                              model_cfg.get("native_resolutions"), SD_DETERMINISM)
    raise BenchError(f"model.family={family!r} is not one of {', '.join(FAMILIES)}.")
