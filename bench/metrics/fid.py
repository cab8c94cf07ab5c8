"""FID and KID on features from bench.metrics.features: streaming features of generated images, the distances,
and their metric entries (the `fid` and `kid` metrics).

Features are computed per image exactly as clean-fid computes them, and the distances are
clean-fid's (frechet_distance restated so that it runs on SciPy 1.18, see _sqrtm; kernel_distance
with a seeded generator), so a number here equals clean-fid's on the same images. What can differ between published FIDs is
recorded in each metric's protocol: mode, feature network, resize of generated and reference
images, sample counts, and whether the counts are below the level where the metric is reliable. Reference
features come from the cache shared with CMMD (bench/metrics/reference_cache.py).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import MetricEntry
from bench.data.images import REFERENCE_RESIZE, list_images, load_rgb
from bench.metrics.bootstrap import bootstrap_stderr
from bench.metrics.features import FeatureExtractor
from bench.metrics.metric import Metric, ModelScores, Scoring
from bench.metrics.reference_cache import FeatureResult, extract_all

log = logging.getLogger(__name__)

# Keys fid_metric / kid_metric need in the protocol they are given (fid_protocol provides them).
REQUIRED_PROTOCOL_KEYS = ("mode", "feature_extractor", "generated_resize", "reference_resize")


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
    return extract_all(((str(p), lambda p=p: load_rgb(p)) for p in paths), extractor, batch_size)


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
) -> MetricEntry:
    """The results.json entry for FID (lower is better).

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
    return MetricEntry(value, False, stderr, proto)


def kid_metric(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    protocol: Mapping[str, Any],
    min_samples: int = 1000,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> MetricEntry:
    """The results.json entry for KID (raw scale, lower is better) by kernel_inception_distance.

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
    return MetricEntry(value, False, stderr, proto)


# ---- the fid and kid metrics of a run ------------------------------------------------------------------------


def _generated(model: ModelScores) -> np.ndarray:
    if model.state["fid"] is None:
        raise BenchError(f"No readable samples of {model.name} to score.")
    return model.state["fid"]


def _protocol(scoring: Scoring, model: ModelScores) -> tuple[FeatureResult, dict[str, Any]]:
    """(the reference features, the protocol FID and KID start from) of one model at the run's resolution."""
    reference, note = scoring.reference(scoring.tools.fid, scoring.resolution)
    return reference, {**fid_protocol(scoring.tools.fid, resolution=scoring.resolution), **model.common, **note}


def _score_fid(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    gen = _generated(model)
    reference, protocol = _protocol(scoring, model)
    cfg = scoring.cfg.eval
    return {"fid": fid_metric(gen, reference.features, protocol=protocol, min_samples=cfg.fid.min_samples,
                              bootstrap=cfg.bootstrap, seed=scoring.cfg.seed,
                              groups=[k[0] for k in model.state["fid_keys"]])}


def _score_kid(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    gen = _generated(model)
    reference, protocol = _protocol(scoring, model)
    cfg = scoring.cfg.eval.fid
    return {"kid": kid_metric(gen, reference.features, protocol=protocol, min_samples=cfg.kid_min_samples,
                              num_subsets=cfg.kid_subsets, max_subset_size=cfg.kid_subset_size,
                              seed=scoring.cfg.seed)}


FID = Metric("fid", network="fid", entries={"fid": False}, needs_references=True, score_model=_score_fid)
KID = Metric("kid", network="fid", entries={"kid": False}, needs_references=True, score_model=_score_kid)
