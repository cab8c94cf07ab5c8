"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): maximum mean discrepancy between CLIP image embeddings.

The estimator is the one of the reference code, google-research/google-research cmmd/distance.py: a Gaussian
RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, the biased (minimum-variance, diagonal
included) MMD^2 estimate of Gretton et al. 2012, eq. 5,

    CMMD = scale * (mean k(x, x') + mean k(y, y') - 2 mean k(x, y)),   scale = 1000,

over L2-normalised CLIP embeddings. The squared distances are expanded as |x|^2 + |y|^2 - 2 x.y, as there.
Differences from the reference, none of which moves the value beyond rounding: float64 instead of float32, the
kernel summed in row blocks so memory stays bounded at 30K x 30K, and no images dropped to fill the last batch
(the reference drops the remainder).

The embeddings come from CMMD's own CLIP model (`eval.cmmd`, `build_cmmd_scorer`), not CLIP score's: the
reference (cmmd/embedding.py, io_util.py) embeds with CLIP ViT-L/14 at 336 px (OpenAI weights), each image
brought to 336 x 336 with a bicubic resize of the whole image and no crop (`resize_mode` "squash"); a reference
photo is first centre-cropped to its largest square and resized with PIL bicubic to 336 (io_util), which is what
bench.data.images.to_square does at that size.

The estimator is biased: on two samples of one distribution it is positive, by about
scale * ((1 - mean k(x, x')) / n_x + (1 - mean k(y, y')) / n_y) (about 1e-2 at 1,000 images per side). The
metric entry records that estimate (the V- minus the U-statistic) and flags it where it is not negligible
against the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.core.results import MetricEntry
from bench.data.images import REFERENCE_RESIZE
from bench.metrics.clip_model import build_clip_scorer
from bench.metrics.metric import Metric, ModelScores, Scoring

SIGMA = 10.0
SCALE = 1000.0
PAPER_BACKBONE = "CLIP ViT-L/14 at 336x336 (OpenAI weights; open_clip ViT-L-14-336 / openai)"
PAPER_ARCH, PAPER_PRETRAINED = "ViT-L-14-336", "openai"
# open_clip's resize mode that matches the reference: the whole image to the input size, no crop.
RESIZE_MODE = "squash"
REFERENCE_PREPROCESS = (
    "google-research cmmd: reference images centre-cropped to the largest square and resized with PIL bicubic to "
    "the CLIP input size (io_util); every image then resized whole to that size, bicubic, no crop (embedding.py)"
)
# Below this fraction of the value the small-sample bias is called negligible.
MAX_RELATIVE_BIAS = 0.01
_BLOCK_ROWS = 1024


def build_cmmd_scorer(cfg: Any, device: str) -> Any:
    """The bench.metrics.clip_model.ClipScorer that embeds images for CMMD, from the `eval.cmmd` config.

    Same keys as eval.clip (arch, pretrained, quick_gelu, cache_dir, model, batch_size); by default the
    reference's CLIP ViT-L/14-336 with OpenAI weights, with the whole image resized to the input size (no crop).
    Missing weights offline raise a BenchError that names the eval.cmmd settings.
    """
    return build_clip_scorer(cfg, device, setting="eval.cmmd", resize_mode=RESIZE_MODE, default_arch=PAPER_ARCH)


def _kernel_mean(x: np.ndarray, y: np.ndarray, gamma: float, block: int) -> float:
    """Mean of exp(-gamma ||x_i - y_j||^2) over all pairs, a block of rows of x at a time."""
    x_sq = np.einsum("nd,nd->n", x, x)
    y_sq = np.einsum("nd,nd->n", y, y)
    total = 0.0
    for start in range(0, len(x), block):
        xb = x[start:start + block]
        d2 = x_sq[start:start + block, None] + y_sq[None, :] - 2.0 * (xb @ y.T)
        total += float(np.exp(-gamma * d2).sum())
    return total / (len(x) * len(y))


def _as_embeddings(name: str, emb: Any) -> np.ndarray:
    arr = np.asarray(emb, dtype=np.float64)
    if arr.ndim != 2 or len(arr) == 0:
        raise BenchError(f"CMMD needs a non-empty [N, D] array of {name} embeddings; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} embeddings contain NaN or infinity")
    return arr


def _checked(gen_emb: Any, ref_emb: Any, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    x = _as_embeddings("generated", gen_emb)
    y = _as_embeddings("reference", ref_emb)
    if x.shape[1] != y.shape[1]:
        raise BenchError(f"CMMD: generated embeddings have {x.shape[1]} dimensions, reference ones {y.shape[1]}; "
                         "both must come from the same CLIP model.")
    if sigma <= 0:
        raise BenchError(f"eval.cmmd.sigma must be positive, got {sigma}.")
    return x, y


def _terms(x: np.ndarray, y: np.ndarray, sigma: float, block: int) -> tuple[float, float, float]:
    gamma = 1.0 / (2.0 * sigma**2)
    return _kernel_mean(x, x, gamma, block), _kernel_mean(y, y, gamma, block), _kernel_mean(x, y, gamma, block)


def cmmd(gen_emb: np.ndarray, ref_emb: np.ndarray, sigma: float = SIGMA, scale: float = SCALE, *,
         block: int = _BLOCK_ROWS) -> float:
    """CMMD between two sets of embeddings ([N, D] and [M, D]; N and M may differ). Symmetric in its
    arguments; 0 for identical sets. `block` bounds memory (block x max(N, M) kernel values at a time)."""
    x, y = _checked(gen_emb, ref_emb, sigma)
    k_xx, k_yy, k_xy = _terms(x, y, sigma, block)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def _off_diagonal(mean_all: float, n: int) -> float:
    # Every diagonal kernel value is exp(0) = 1: remove the n of them from the mean over n^2 pairs.
    return (mean_all * n * n - n) / (n * (n - 1))


def small_sample_bias(k_xx: float, k_yy: float, n_x: int, n_y: int, scale: float) -> float | None:
    """The biased estimate minus the unbiased one (diagonal terms left out), in CMMD units: an estimate of the
    estimator's bias, scale * ((1 - mean off-diagonal k(x, x')) / n_x + (1 - mean off-diagonal k(y, y')) / n_y).
    None with fewer than 2 embeddings on a side."""
    if n_x < 2 or n_y < 2:
        return None
    return float(scale * ((1.0 - _off_diagonal(k_xx, n_x)) / n_x + (1.0 - _off_diagonal(k_yy, n_y)) / n_y))


def cmmd_metric(gen_emb: np.ndarray, ref_emb: np.ndarray, *, sigma: float = SIGMA, scale: float = SCALE,
                protocol: Mapping[str, Any] | None = None,
                max_relative_bias: float = MAX_RELATIVE_BIAS) -> MetricEntry:
    """The results.json entry for CMMD (lower is better; stderr null). `protocol` is the CMMD scorer's (which
    backbone, weights and preprocessing embedded the images) plus anything else the caller records; this adds
    the kernel, the estimator, the sample counts, the paper's backbone for comparison, and `small_sample_bias`:
    the bias estimate, the unbiased value, and whether the bias is negligible (at most `max_relative_bias` of
    the value); when it is not, a `note` says so."""
    x, y = _checked(gen_emb, ref_emb, sigma)
    k_xx, k_yy, k_xy = _terms(x, y, sigma, _BLOCK_ROWS)
    value = float(scale * (k_xx + k_yy - 2.0 * k_xy))
    bias = small_sample_bias(k_xx, k_yy, len(x), len(y), scale)
    relative = None if bias is None or value <= 0 else bias / value
    negligible = bias is not None and (bias <= 0 or (relative is not None and relative <= max_relative_bias))
    norms = np.linalg.norm(np.concatenate([x, y]), axis=1)
    proto: dict[str, Any] = {
        **dict(protocol or {}),
        "kernel": "gaussian rbf exp(-||x-y||^2 / (2 sigma^2))",
        "sigma": float(sigma),
        "scale": float(scale),
        "estimator": "biased MMD^2 (V-statistic, diagonal included), as google-research cmmd/distance.py",
        "embeddings_l2_normalised": bool(np.allclose(norms, 1.0, atol=1e-3)),
        "precision": "float64",
        "n_generated": int(len(x)),
        "n_reference": int(len(y)),
        "paper_backbone": PAPER_BACKBONE,
        "small_sample_bias": {
            "estimate": bias,
            "relative": relative,
            "unbiased_value": None if bias is None else value - bias,
            "negligible": negligible,
            "max_relative_bias": float(max_relative_bias),
            "how": "biased minus unbiased (U-statistic, diagonal left out) estimate: scale * ((1 - mean off-diagonal "
                   "k(x, x')) / n_generated + (1 - mean off-diagonal k(y, y')) / n_reference)",
        },
    }
    if bias is None:
        proto["note"] = "Fewer than 2 images on a side: the estimator's small-sample bias cannot be estimated."
    elif not negligible:
        share = f"{100 * relative:.1f}% of the value" if relative is not None else "against a value of 0 or less"
        proto["note"] = (
            f"Small-sample bias: with {len(x)} generated and {len(y)} reference images the biased estimator adds "
            f"about {bias:.4g} ({share}); published CMMDs use 30,000 images, where it is negligible. Compare only "
            "at equal counts, or read small_sample_bias.unbiased_value."
        )
    return MetricEntry(value, False, None, proto)


# ---- the cmmd metric of a run --------------------------------------------------------------------------------


class ClipImages:
    """A CLIP scorer seen as a feature extractor of uint8 arrays, for the reference cache
    (bench.metrics.reference_cache.reference_features)."""

    # What identifies the embeddings in the reference cache key: the network, its weights and its preprocessing.
    _IDENTITY = ("backend", "target", "arch", "pretrained", "checkpoint_sha256", "init_seed", "image_preprocess")

    def __init__(self, scorer: Any):
        self.scorer = scorer
        identity = {k: scorer.protocol[k] for k in self._IDENTITY if k in scorer.protocol}
        self.name = "CLIP image embedding: " + json.dumps(identity, sort_keys=True, default=str)
        self.mode = "clip-preprocess"
        self.device = str(getattr(scorer, "device", "cpu"))
        self.dims = None

    def __call__(self, images):
        from PIL import Image

        return np.asarray(self.scorer.image_embeddings([Image.fromarray(a) for a in images]))


def _score_cmmd(scoring: Scoring, model: ModelScores) -> dict[str, MetricEntry]:
    scorer, cfg = scoring.tools.cmmd, scoring.cfg.eval.cmmd
    # As google-research cmmd's io_util: each reference centre-cropped and resized to the CLIP input size.
    size = scorer.image_size or scoring.resolution
    reference, note = scoring.reference(ClipImages(scorer), size)
    if not model.state["cmmd"]:
        raise BenchError(f"No readable samples of {model.name} to score.")
    return {"cmmd": cmmd_metric(
        np.stack(list(model.state["cmmd"].values())), reference.features, sigma=cfg.sigma, scale=cfg.scale,
        max_relative_bias=cfg.max_relative_bias,
        protocol={**scorer.protocol, **model.common, **note,
                  "reference_resize": {**REFERENCE_RESIZE, "size": [size, size], "as": REFERENCE_PREPROCESS}})}


CMMD = Metric("cmmd", network="cmmd", entries={"cmmd": False}, needs_references=True, score_model=_score_cmmd)
