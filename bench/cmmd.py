"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): maximum mean discrepancy between CLIP image embeddings.

The estimator is the one of the reference code, google-research/google-research cmmd/distance.py: a Gaussian
RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, the biased (minimum-variance, diagonal
included) MMD^2 estimate of Gretton et al. 2012, eq. 5,

    CMMD = scale * (mean k(x, x') + mean k(y, y') - 2 mean k(x, y)),   scale = 1000,

over L2-normalised CLIP embeddings (the paper: CLIP ViT-L/14 at 336 px, OpenAI weights). The squared
distances are expanded as |x|^2 + |y|^2 - 2 x.y, as there. Differences from the reference, none of which
moves the value beyond rounding: float64 instead of float32, the kernel summed in row blocks so memory stays
bounded at 30K x 30K, and no images dropped to fill the last batch (the reference drops the remainder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.errors import BenchError

SIGMA = 10.0
SCALE = 1000.0
PAPER_BACKBONE = "CLIP ViT-L/14 at 336x336 (OpenAI weights; open_clip ViT-L-14-336 / openai)"
_BLOCK_ROWS = 1024


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


def cmmd(gen_emb: np.ndarray, ref_emb: np.ndarray, sigma: float = SIGMA, scale: float = SCALE, *,
         block: int = _BLOCK_ROWS) -> float:
    """CMMD between two sets of embeddings ([N, D] and [M, D]; N and M may differ). Symmetric in its
    arguments; 0 for identical sets. `block` bounds memory (block x max(N, M) kernel values at a time)."""
    x = _as_embeddings("generated", gen_emb)
    y = _as_embeddings("reference", ref_emb)
    if x.shape[1] != y.shape[1]:
        raise BenchError(f"CMMD: generated embeddings have {x.shape[1]} dimensions, reference ones {y.shape[1]}; "
                         "both must come from the same CLIP model.")
    if sigma <= 0:
        raise BenchError(f"eval.cmmd.sigma must be positive, got {sigma}.")
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx = _kernel_mean(x, x, gamma, block)
    k_yy = _kernel_mean(y, y, gamma, block)
    k_xy = _kernel_mean(x, y, gamma, block)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def cmmd_metric(gen_emb: np.ndarray, ref_emb: np.ndarray, *, sigma: float = SIGMA, scale: float = SCALE,
                protocol: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The results.json entry for CMMD (lower is better; stderr null). `protocol` is the CLIP scorer's (which
    backbone and weights embedded the images) plus anything else the caller records; this adds the kernel,
    the estimator, the sample counts and the paper's backbone for comparison."""
    gen = _as_embeddings("generated", gen_emb)
    ref = _as_embeddings("reference", ref_emb)
    norms = np.linalg.norm(np.concatenate([gen, ref]), axis=1)
    return {
        "value": cmmd(gen, ref, sigma=sigma, scale=scale),
        "higher_is_better": False,
        "stderr": None,
        "protocol": {
            **dict(protocol or {}),
            "kernel": "gaussian rbf exp(-||x-y||^2 / (2 sigma^2))",
            "sigma": float(sigma),
            "scale": float(scale),
            "estimator": "biased MMD^2 (diagonal included), as google-research cmmd/distance.py",
            "embeddings_l2_normalised": bool(np.allclose(norms, 1.0, atol=1e-3)),
            "precision": "float64",
            "n_generated": int(len(gen)),
            "n_reference": int(len(ref)),
            "paper_backbone": PAPER_BACKBONE,
        },
    }
