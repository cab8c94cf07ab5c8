"""Expected errors: bad input, missing weights, unsafe checkpoints.

The CLI prints these as one paragraph without a traceback; anything else is a bug.
"""


class MuseError(Exception):
    """Base class of every error a user can cause and fix."""


class MuseInputError(MuseError, ValueError):
    """An argument is out of range or of the wrong shape."""


class MissingWeightsError(MuseError, FileNotFoundError):
    """A checkpoint file or a hub download is missing; the message says how to supply it."""


class UnsafeCheckpointError(MuseError):
    """A pickle checkpoint was offered; only safetensors are loaded."""
