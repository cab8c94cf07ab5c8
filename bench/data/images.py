"""Reading image files and preparing reference images, exactly as clean-fid reads them.

FID moves when an image is decoded or resized differently, so this module copies clean-fid's
choices rather than inventing its own: files are opened with PIL and converted with
.convert("RGB") (cleanfid.utils.ResizeDataset), folders are listed with clean-fid's extensions and
sort order (cleanfid.fid.get_folder_features). Reference images, which come in any size and
aspect, are centre-cropped to a square and resized with PIL bicubic (`to_square`); that choice is
described in REFERENCE_RESIZE so every protocol can record it.
"""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bench.core.errors import BenchError

# cleanfid.utils.EXTENSIONS (clean-fid 0.1.35), copied so that listing a folder does not import
# torchvision; tests/test_fid.py checks the two stay equal. Matching is case-sensitive, as in
# clean-fid's glob: "x.Png" is not an image to either.
EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "npy", "JPEG", "JPG", "PNG"})

# How reference images are brought to the generated images' size before feature extraction.
# Recorded in every FID/KID protocol and part of the reference-feature cache key.
REFERENCE_RESIZE = {
    "crop": "center",
    "crop_box": "largest centred square, offsets floor((H - side) / 2), floor((W - side) / 2)",
    "resize": "PIL bicubic",
    "dtype": "uint8 (rounded by PIL)",
    "skip_when": "already size x size",
    "function": "bench.data.images.to_square",
}


class ImageLoadError(BenchError):
    """An image file that cannot be decoded: corrupt, truncated or not an image.

    `source` names the file, `reason` says what is wrong with it (for failure lists).
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"Cannot read image {source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuild from (source, reason), not from the message, when sent between processes.
        return (type(self), (self.source, self.reason))


def _load_npy(source: str | Path | bytes, label: str) -> np.ndarray:
    # clean-fid reads .npy files with np.load; refuse pickles (arbitrary code) and anything that is not
    # an 8-bit RGB image, which the rest of the pipeline assumes.
    try:
        array = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for a bad file
        raise ImageLoadError(label, f"{type(exc).__name__}: {exc}") from exc
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageLoadError(
            label, f"expected a uint8 H x W x 3 RGB array, found dtype {array.dtype}, shape {array.shape}"
        )
    return array


def load_rgb(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode an image file (a path or its bytes) to a uint8 H x W x 3 RGB array, as clean-fid does.

    The image is fully decoded before conversion, so a truncated file fails here instead of being
    padded with grey (PIL's LOAD_TRUNCATED_IMAGES stays off). Any file that cannot be decoded raises
    ImageLoadError naming the file (`name`, else the path) and the reason. No EXIF rotation is
    applied: clean-fid applies none.
    """
    label = name if name is not None else (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
    suffix = Path(name if name is not None else ("" if isinstance(source, bytes) else str(source))).suffix
    if suffix == ".npy":
        return _load_npy(source, label)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()  # decode every byte now: a truncated file raises here
            return np.array(img.convert("RGB"))
    # PIL reports bad data as OSError, SyntaxError (broken PNG chunks), ValueError, EOFError,
    # DecompressionBombError...: whatever the cause, the file is unusable.
    except Exception as exc:
        raise ImageLoadError(label, f"{type(exc).__name__}: {exc}") from exc


def list_images(folder: str | Path) -> list[Path]:
    """The image files clean-fid's get_folder_features finds in `folder`: recursive, its extensions, sorted.

    Sorted as clean-fid sorts them, by the full path string. Hidden files and folders (names starting
    with a dot) are skipped, as glob skips them. Unlike clean-fid, glob characters in the folder name
    ("[", "*") are escaped, so such a folder is read instead of silently matching nothing.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BenchError(f"Image folder not found: {folder}. Check the path (it must be a directory of images).")
    root = glob.escape(str(folder))
    files = sorted(
        file for ext in EXTENSIONS for file in glob.glob(os.path.join(root, f"**/*.{ext}"), recursive=True)
    )
    return [Path(file) for file in files]


def to_square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop a uint8 H x W x 3 image to a square and resize it to size x size with PIL bicubic.

    This is how reference photos (any size, any aspect) are matched to square generated images;
    REFERENCE_RESIZE describes it. An image that is already size x size is returned as is.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"to_square expects a uint8 H x W x 3 array, got dtype {img.dtype}, shape {img.shape}")
    height, width = img.shape[:2]
    if height == size and width == size:
        return img
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = img[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    resized = Image.fromarray(np.ascontiguousarray(square)).resize((size, size), resample=Image.BICUBIC)
    return np.array(resized)


# How an image a model made at its native resolution is brought to the resolution that is evaluated (SD v1.4 makes
# 512 x 512 images; its published FIDs at 256 downsample them). The same PIL bicubic as the reference images:
# PIL widens the filter's support by the scale factor, so a downsample is antialiased. Recorded, with the sizes,
# as `resized_with` in every protocol and sampling.json; Pillow's version is in results.json's provenance.
GENERATED_RESIZE = {"library": "Pillow", "filter": "bicubic", "antialias": True, "function": "bench.data.images.to_square"}


def resize_generated(image: Image.Image, size: int) -> Image.Image:
    """A generated square image resized to size x size as GENERATED_RESIZE says (to_square: no crop is needed)."""
    return Image.fromarray(to_square(np.asarray(image.convert("RGB")), size))
