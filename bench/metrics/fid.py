"""FID and KID on features from bench.metrics.features: streaming, folders, cached reference features, metric entries.

Features are computed per image exactly as clean-fid computes them, and the distances are
clean-fid's (frechet_distance restated so that it runs on SciPy 1.18, see _sqrtm; kernel_distance
with a seeded generator), so a number here equals clean-fid's on the same images. What can differ between published FIDs is
recorded in each metric's protocol: mode, feature network, resize of generated and reference
images, sample counts, and whether the counts are below the level where the metric is reliable.

Reference features are expensive (30K COCO images) and depend on every choice that moves them, so
they are cached under a name derived from all those choices (`reference_cache_key`), the images
themselves included (the caller's key holds bench.data.references' content fingerprint). Whether a run read
the cache or wrote it, and under which key, is in its FeatureResult (and so in results.json).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import atomic_write_bytes, write_json
from bench.data.images import (
    REFERENCE_RESIZE,
    ImageLoadError,
    list_images,
    load_rgb,
    to_square,
)
from bench.metrics.features import FeatureExtractor

log = logging.getLogger(__name__)

# 2: the key includes the reference images' content fingerprint, and the cache counts images smaller than the
# resolution (n_smaller).
CACHE_FORMAT = 2
# Keys fid_metric / kid_metric need in the protocol they are given (fid_protocol provides them).
REQUIRED_PROTOCOL_KEYS = ("mode", "feature_extractor", "generated_resize", "reference_resize")


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


class FeatureAccumulator:
    """Features of images that arrive in batches of any size and any order, e.g. straight from generation.

    Images are buffered and sent to the extractor `batch_size` at a time, and only their features are
    kept, so memory does not grow with images. `features()` is ordered by key (sorted), so the result
    does not depend on the order in which images arrived.
    """

    def __init__(self, extractor: FeatureExtractor, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.extractor = extractor
        self.batch_size = batch_size
        self._pending: list[np.ndarray] = []
        self._pending_keys: list[Hashable] = []
        self._chunks: list[np.ndarray] = []
        self._keys: list[Hashable] = []
        self._seen: set[Hashable] = set()

    def add(self, images: Sequence[np.ndarray], keys: Sequence[int | str]) -> None:
        """Queue uint8 H x W x 3 images under unique `keys` (e.g. sample indices); extracts full batches."""
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        for img, key in zip(images, keys):
            if key in self._seen:
                raise ValueError(f"key {key!r} was added twice; every image needs its own key")
            self._seen.add(key)
            self._pending.append(img)
            self._pending_keys.append(key)
            if len(self._pending) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Extract the features of the images still buffered."""
        if self._pending:
            self._chunks.append(self.extractor(self._pending))
            self._keys.extend(self._pending_keys)
            self._pending, self._pending_keys = [], []

    def _order(self) -> list[int]:
        try:
            return sorted(range(len(self._keys)), key=self._keys.__getitem__)
        except TypeError as exc:
            raise ValueError("keys must be all ints or all strings, so that they can be sorted") from exc

    @property
    def keys(self) -> list[Any]:
        """The keys of every image added, sorted (the row order of `features()`)."""
        self.flush()
        return [self._keys[i] for i in self._order()]

    def features(self) -> np.ndarray:
        """[n, dims] features, rows in sorted key order."""
        self.flush()
        if not self._chunks:
            return np.zeros((0, self.extractor.dims or 0), dtype=np.float32)
        return np.concatenate(self._chunks)[self._order()]

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)


def _extract_all(
    items: Iterable[tuple[Any, Callable[[], np.ndarray]]], extractor: FeatureExtractor, batch_size: int
) -> FeatureResult:
    """Features of items (key, load) in their given order; loads failing with ImageLoadError are listed."""
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


def folder_features(
    paths: str | Path | Iterable[str | Path], extractor: FeatureExtractor, batch_size: int = 32
) -> FeatureResult:
    """Features of image files (a list of paths, or a folder listed with list_images), in the given order.

    Each file is read with load_rgb; a corrupt or truncated file is skipped and listed in `failures`
    with the reason, so the caller can report it and count it out of the effective sample count.
    Keys are the paths as strings.
    """
    if isinstance(paths, (str, Path)):
        paths = list_images(paths)
    return _extract_all(((str(p), lambda p=p: load_rgb(p)) for p in paths), extractor, batch_size)


def _canonical_json(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reference cache key must be plain JSON data (str, int, float, list, dict): {exc}") from exc


def reference_cache_key(
    extractor: FeatureExtractor, *, resolution: int, key: Mapping[str, Any]
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
    extractor: FeatureExtractor,
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

    result = _extract_all(
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


def _check_features(gen: np.ndarray, ref: np.ndarray, metric: str) -> None:
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"{metric}: expected [n, d] feature arrays of equal d, got {gen.shape} and {ref.shape}")
    if min(len(gen), len(ref)) < 2:
        raise BenchError(
            f"{metric} needs at least 2 generated and 2 reference images; got {len(gen)} and {len(ref)}. "
            "Raise dataset.limit (and check the reference images were found)."
        )


def _gaussian(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # cleanfid.fid.fid_from_feats: the mean, and the unbiased covariance of rows.
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # scipy.linalg.sqrtm called with the matrix alone: clean-fid 0.1.35 passes disp=False, which SciPy 1.16-1.17
    # deprecate and SciPy 1.18 (the release pip installs on Python 3.12+) removed, so its own frechet_distance
    # raises TypeError there. Without the argument every SciPy version runs the same Schur algorithm and returns
    # the root alone, which is the first element of what clean-fid gets back.
    from scipy import linalg

    return linalg.sqrtm(matrix)


def _frechet(gen_stats: tuple[np.ndarray, np.ndarray], ref_stats: tuple[np.ndarray, np.ndarray],
             eps: float = 1e-6) -> float:
    """cleanfid.fid.frechet_distance (0.1.35) step for step, with a square root that every SciPy accepts."""
    (mu1, sigma1), (mu2, sigma2) = gen_stats, ref_stats
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"FID: statistics of different dimensions ({mu1.shape} vs {mu2.shape})")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # The product is almost singular: clean-fid retries with eps on both diagonals.
        log.warning("FID: singular covariance product; adding %g to the diagonal of both covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Numerical error may leave a small imaginary part; a large one means the root is meaningless.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise BenchError(
                f"FID is numerically undefined here (imaginary component {np.max(np.abs(covmean.imag)):.3g} in the "
                "covariance square root): the feature covariances are too degenerate, usually because there are "
                "far fewer images than feature dimensions. Use more images."
            )
        covmean = covmean.real
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    if not np.isfinite(value):
        raise BenchError("FID came out non-finite: the feature covariances are degenerate. Use more images.")
    return value


def frechet_distance(gen: np.ndarray, ref: np.ndarray) -> float:
    """FID between two feature sets [n, d], exactly as clean-fid's fid_from_feats computes it.

    Gaussians fitted with np.mean and np.cov(rowvar=False); the distance is clean-fid's frechet_distance
    (0.1.35), restated so that it runs on every SciPy (see _sqrtm).
    """
    _check_features(gen, ref, "FID")
    return _frechet(_gaussian(gen), _gaussian(ref))


def kernel_inception_distance(
    gen: np.ndarray, ref: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> tuple[float, float | None]:
    """KID as clean-fid's kernel_distance(gen, ref), but drawing subsets from a generator seeded with `seed`.

    Polynomial kernel (x.y / d + 1)^3, unbiased MMD^2, averaged over `num_subsets` random subsets of
    m = min(n_gen, n_ref, max_subset_size) rows of each set, drawn without replacement. Draws are made
    in clean-fid's order from np.random.RandomState(seed), so the value equals clean-fid's after
    np.random.seed(seed). Returns (value, stderr) with stderr = std of the per-subset estimates (ddof=1)
    / sqrt(num_subsets): the Monte-Carlo error of the subset average, not the sampling error of the
    image sets; None with a single subset. Raw scale (not x1000).
    """
    _check_features(gen, ref, "KID")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    rng = np.random.RandomState(seed)
    n = gen.shape[1]
    m = min(min(gen.shape[0], ref.shape[0]), max_subset_size)
    t = 0
    per_subset = []
    for _ in range(num_subsets):
        x = ref[rng.choice(ref.shape[0], m, replace=False)]
        y = gen[rng.choice(gen.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        term = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
        t += term  # accumulated as clean-fid does, so the value matches it to the last bit
        per_subset.append(float(term) / m)
    value = float(t / num_subsets / m)
    stderr = float(np.std(per_subset, ddof=1) / np.sqrt(num_subsets)) if num_subsets > 1 else None
    if not np.isfinite(value) or (stderr is not None and not np.isfinite(stderr)):
        raise BenchError("KID came out non-finite (overflowing features?). Check the feature extractor's output.")
    return value, stderr


def bootstrap_stderr(
    statistic: Callable[[np.ndarray, np.ndarray], float], gen: np.ndarray, ref: np.ndarray, n: int, seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> float | None:
    """Standard error of statistic(gen, ref) by `n` bootstrap resamples of the generated features.

    Without `groups` each resample draws len(gen) rows of `gen` with replacement. With `groups` (one id per row,
    e.g. the prompt of each image) it draws as many groups as there are, with replacement, and takes every row
    of each: the K images of one prompt are correlated, so they are resampled together. Draws come from numpy
    default_rng(seed); the result is the standard deviation (ddof=1) of the n statistics. It captures the
    sampling variance of the generated set only: the reference set is held fixed, and the spread over
    generation seeds is a separate matter. Returns None when n < 2.
    """
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(gen))]
    else:
        if len(groups) != len(gen):
            raise ValueError(f"{len(gen)} feature rows but {len(groups)} group ids: one per row is needed")
        by_group: dict[Hashable, list[int]] = {}
        for row, group in enumerate(groups):
            by_group.setdefault(group, []).append(row)
        members = [np.array(rows) for rows in by_group.values()]
    values = []
    for _ in range(n):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), size=len(members))])
        values.append(statistic(gen[rows], ref))
    stderr = float(np.std(values, ddof=1))
    return stderr if np.isfinite(stderr) else None


def fid_protocol(extractor: FeatureExtractor, *, resolution: int) -> dict[str, Any]:
    """The protocol entries fid_metric and kid_metric need, for features from `extractor` and references
    brought to `resolution` by reference_features. Callers add their own (dataset, reference set, ...)."""
    return {
        **extractor.protocol(),
        "reference_resize": {**REFERENCE_RESIZE, "size": [int(resolution), int(resolution)]},
    }


def _implementation() -> str:
    try:
        return f"clean-fid {metadata.version('clean-fid')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - clean-fid is a dependency
        return "clean-fid (version unknown)"


def _base_protocol(protocol: Mapping[str, Any], gen: np.ndarray, ref: np.ndarray, min_samples: int) -> dict[str, Any]:
    missing = [k for k in REQUIRED_PROTOCOL_KEYS if k not in protocol]
    if missing:
        raise ValueError(f"protocol lacks {missing}: start it from bench.metrics.fid.fid_protocol(extractor, resolution=...)")
    return {
        **protocol,
        "feature_dims": int(gen.shape[1]),
        "n_generated": int(len(gen)),
        "n_reference": int(len(ref)),
        "min_samples": int(min_samples),
        "below_minimum": bool(min(len(gen), len(ref)) < min_samples),
    }


def fid_metric(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    protocol: Mapping[str, Any],
    min_samples: int = 2048,
    bootstrap: int = 0,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """A results.json metric entry for FID: value, higher_is_better False, stderr, protocol.

    `protocol` must hold fid_protocol's keys; counts, the minimum and the stderr method are added.
    Below `min_samples` images on either side the value is still computed but flagged (below_minimum,
    note). stderr is bootstrap_stderr over `bootstrap` resamples of the generated set (seeded; by
    `groups`, e.g. the prompt of each row, when given), or None.
    """
    value = frechet_distance(gen, ref)
    ref_stats = _gaussian(ref)  # fixed across resamples: compute once
    stderr = bootstrap_stderr(lambda g, _r: _frechet(_gaussian(g), ref_stats), gen, ref, bootstrap, seed, groups)
    unit = "rows" if groups is None else f"prompts ({len(set(groups))}, each with all its images)"
    proto = _base_protocol(protocol, gen, ref, min_samples)
    proto.update(
        {
            "implementation": f"{_implementation()} features; cleanfid.fid.frechet_distance restated (scipy.linalg.sqrtm "
                              "without disp) on np.mean, np.cov(rowvar=False)",
            "stderr": (
                f"bootstrap: std of FID over {bootstrap} resamples of the generated {unit} with replacement "
                f"(seed {seed}); reference set fixed"
                if stderr is not None
                else None
            ),
            "bootstrap": int(bootstrap),
            "bootstrap_seed": int(seed),
        }
    )
    if proto["below_minimum"]:
        d = proto["feature_dims"]
        proto["note"] = (
            f"Only {min(len(gen), len(ref))} images on one side (< {min_samples}): the {d}-d feature covariance is "
            f"rank-deficient below {d + 1} images and FID is biased upwards at small counts, so this value is not "
            "comparable with published FIDs (COCO FID-30K uses 30,000); compare only at equal counts."
        )
    return {"value": value, "higher_is_better": False, "stderr": stderr, "protocol": proto}


def kid_metric(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    protocol: Mapping[str, Any],
    min_samples: int = 1000,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """A results.json metric entry for KID (raw scale, lower is better) by kernel_inception_distance.

    `protocol` must hold fid_protocol's keys. Below `min_samples` images on either side the value is
    flagged (HEIM computes KID only with at least 1000 images). stderr: see kernel_inception_distance.
    """
    value, stderr = kernel_inception_distance(gen, ref, num_subsets, max_subset_size, seed)
    proto = _base_protocol(protocol, gen, ref, min_samples)
    proto.update(
        {
            "implementation": f"{_implementation()}: kernel_distance, subsets from np.random.RandomState(seed)",
            "kernel": "polynomial (x.y / d + 1)^3",
            "estimator": "unbiased MMD^2 averaged over subsets",
            "scale": "raw (not x1000)",
            "num_subsets": int(num_subsets),
            "max_subset_size": int(max_subset_size),
            "subset_size": int(min(len(gen), len(ref), max_subset_size)),
            "seed": int(seed),
            "stderr": (
                "std of the per-subset estimates (ddof=1) / sqrt(num_subsets): Monte-Carlo error of the subset "
                "average, not the sampling error of the image sets"
                if stderr is not None
                else None
            ),
        }
    )
    if proto["below_minimum"]:
        proto["note"] = (
            f"Only {min(len(gen), len(ref))} images on one side (< {min_samples}): KID is noisy at this count "
            "(HEIM reports KID only with at least 1000 images); treat this value as a smoke test."
        )
    return {"value": value, "higher_is_better": False, "stderr": stderr, "protocol": proto}
