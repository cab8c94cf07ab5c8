"""Building the Muse pipeline a job asks for: device choice, preset or pretrained weights."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from bench.errors import BenchError

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
