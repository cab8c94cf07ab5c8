"""Muse (Chang et al. 2023): masked generative transformers for text-to-image, in plain PyTorch."""

from .errors import MissingWeightsError, MuseError, MuseInputError, UnsafeCheckpointError
from .output import MuseOutput
from .pipeline import MusePipeline
from .presets import PRESET_NAMES

__all__ = [
    "MusePipeline", "MuseOutput", "PRESET_NAMES",
    "MuseError", "MuseInputError", "MissingWeightsError", "UnsafeCheckpointError",
]
