"""The reference-feature cache shared by FID, KID and CMMD: features of a set of images, and of reference images
computed once and cached across runs.

Reference features are expensive (30K COCO images) and depend on every choice that moves them, so
they are cached under a name derived from all those choices (`reference_cache_key`), the images
themselves included (the caller's key holds bench.data.references' content fingerprint). Whether a run read
the cache or wrote it, and under which key, is in its FeatureResult (and so in results.json). The extractor is
any callable of uint8 images with a `name`, `mode`, `dims` and `device`: FID's Inception
(bench.metrics.features.FeatureExtractor) or CMMD's CLIP (bench.metrics.cmmd).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import atomic_write_bytes, write_json
from bench.data.images import REFERENCE_RESIZE, ImageLoadError, load_rgb, to_square

log = logging.getLogger(__name__)

# 2: the key includes the reference images' content fingerprint, and the cache counts images smaller than the
# resolution (n_smaller).
CACHE_FORMAT = 2


@dataclass
class FeatureResult:
    """Features of a set of images, row i belonging to keys[i], and the images that could not be read.

    `failures` lists (file or name, reason). `cache_file` is the reference cache used or written, if any,
    `cache_key` its sha256 key, and `cached` is true when the features were loaded from it without reading
    any image. `n_smaller`: reference images whose centre square was smaller than the resolution (upsampled).
    """

    features: np.ndarray
    keys: list[Any]
    failures: list[tuple[str, str]] = field(default_factory=list)
    cache_file: Path | None = None
    cached: bool = False
    cache_key: str | None = None
    n_smaller: int = 0

    def cache_record(self) -> dict[str, Any]:
        """What a metric's protocol records about the reference cache: key, file and whether it was a hit."""
        return {"key": self.cache_key, "file": str(self.cache_file) if self.cache_file else None, "hit": self.cached}


def extract_all(
    items: Iterable[tuple[Any, Callable[[], np.ndarray]]], extractor: Any, batch_size: int
) -> FeatureResult:
    """Features of items (key, load) in their given order; loads failing with ImageLoadError are listed in
    `failures` (name, reason) and left out."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    chunks: list[np.ndarray] = []
    keys: list[Any] = []
    failures: list[tuple[str, str]] = []
    batch: list[np.ndarray] = []
    for key, load in items:
        try:
            batch.append(load())
        except ImageLoadError as exc:
            failures.append((str(key), exc.reason))
            continue
        keys.append(key)
        if len(batch) == batch_size:
            chunks.append(extractor(batch))
            batch = []
    if batch:
        chunks.append(extractor(batch))
    features = np.concatenate(chunks) if chunks else np.zeros((0, extractor.dims or 0), dtype=np.float32)
    return FeatureResult(features=features, keys=keys, failures=failures)


def _canonical_json(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reference cache key must be plain JSON data (str, int, float, list, dict): {exc}") from exc


def reference_cache_key(
    extractor: Any, *, resolution: int, key: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """(sha256 hex, the canonical description hashed) naming cached reference features.

    The description holds every choice that moves reference statistics: the caller's `key` (dataset,
    split, image count or list, ...), the feature extractor's name, the clean-fid mode, the resolution
    and REFERENCE_RESIZE. Batch size and device are left out: they move features only by rounding.
    """
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(key, DictConfig):
            key = OmegaConf.to_container(key, resolve=True)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    payload = {
        "cache_format": CACHE_FORMAT,
        "key": dict(key),
        "feature_extractor": extractor.name,
        "mode": extractor.mode,
        "resolution": int(resolution),
        "reference_resize": REFERENCE_RESIZE,
    }
    digest = hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()
    return digest, payload


def _load_cache(path: Path, digest: str) -> FeatureResult | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["digest"]) != digest:
                log.warning("Ignoring reference cache %s: made for another key", path)
                return None
            return FeatureResult(
                features=data["features"],
                keys=[str(k) for k in data["keys"]],
                failures=[(str(n), str(r)) for n, r in zip(data["failure_names"], data["failure_reasons"])],
                cache_file=path,
                cached=True,
                cache_key=digest,
                n_smaller=int(data["n_smaller"]),
            )
    except Exception as exc:  # a damaged cache file is rebuilt, not fatal
        log.warning("Ignoring unreadable reference cache %s (%s: %s); recomputing", path, type(exc).__name__, exc)
        return None


def reference_features(
    images: Iterable[tuple[str, Callable[[], bytes | np.ndarray]]],
    extractor: Any,
    *,
    resolution: int,
    key: Mapping[str, Any],
    cache_dir: str | Path,
    batch_size: int = 32,
) -> FeatureResult:
    """Features of reference images, centre-cropped and resized to `resolution` (to_square), cached.

    `images` yields (name, load): load() returns the encoded file bytes or a uint8 H x W x 3 array, and
    is only called on a cache miss. The cache file under `cache_dir` is named by reference_cache_key,
    written atomically as .npz with a .json sidecar describing it; a second call with the same key,
    extractor, mode and resolution reads it without touching the images (and logs that it did). `key`
    should name the images by content (bench.data.references.ReferenceSet.protocol does), or a changed folder
    would get the old features. Unreadable images are skipped and listed in `failures` (also cached). No
    readable reference image at all raises BenchError.
    """
    digest, payload = reference_cache_key(extractor, resolution=resolution, key=key)
    cache_dir = Path(cache_dir).expanduser()
    cache_file = cache_dir / f"reference-{digest[:24]}.npz"
    if cache_file.is_file():
        cached = _load_cache(cache_file, digest)
        if cached is not None:
            log.info("Reference features of %s read from the cache %s (key %s)", extractor.name, cache_file,
                     digest[:16])
            return cached
    n_smaller = 0

    def prepared(name: str, load: Callable[[], bytes | np.ndarray]) -> np.ndarray:
        nonlocal n_smaller
        try:
            data = load()
        except OSError as exc:  # a missing or unreadable file among many: report it like a corrupt one
            raise ImageLoadError(name, f"{type(exc).__name__}: {exc}") from exc
        img = load_rgb(bytes(data), name) if isinstance(data, (bytes, bytearray, memoryview)) else data
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"reference loader for {name} returned {type(img).__name__}, not encoded bytes or a uint8 HxWx3 array"
            )
        if min(img.shape[:2]) < resolution:
            n_smaller += 1
        return to_square(img, resolution)

    result = extract_all(
        ((name, lambda name=name, load=load: prepared(name, load)) for name, load in images),
        extractor,
        batch_size,
    )
    if not result.keys:
        shown = "; ".join(f"{n}: {r}" for n, r in result.failures[:3])
        raise BenchError(
            "No reference images could be read"
            + (f" ({len(result.failures)} failed, e.g. {shown})" if result.failures else " (the set is empty)")
            + ". Check the dataset's reference_dir (and reference_limit), or run the prepare job to download them."
        )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=result.features,
        keys=np.array([str(k) for k in result.keys]),
        failure_names=np.array([n for n, _ in result.failures], dtype=str),
        failure_reasons=np.array([r for _, r in result.failures], dtype=str),
        digest=np.array(digest),
        n_smaller=np.array(n_smaller),
    )
    atomic_write_bytes(cache_file, buffer.getvalue())
    write_json(
        cache_file.with_suffix(".json"),
        {
            **payload,
            "sha256": digest,
            "file": cache_file.name,
            "n_images": len(result.keys),
            "n_failures": len(result.failures),
            "n_smaller": n_smaller,
            "feature_dims": int(result.features.shape[1]),
            "device": extractor.device,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    log.info("Reference features of %s computed and cached in %s (key %s)", extractor.name, cache_file, digest[:16])
    result.cache_file, result.cache_key, result.n_smaller = cache_file, digest, n_smaller
    return result
