"""The published protocols the suite's metrics are put beside, and whether a measured entry's protocol matches.

Every metric entry's protocol gets `comparable_to_published` (`comparable_to_published`), computed where the
metric is computed (bench/metrics/evaluate.py) from what the entry records:

    {"value": true | false, "published": what it would be compared with (or null: nothing published),
     "reasons": [every known difference from that protocol], "unknown": [choices the source does not state]}

`value` is true only when no difference is known: the published protocol's feature network, mode, backbone,
preprocessing, sample count and resolution, pretrained weights on both the model and the feature network, and
no flagged small-sample bias. Choices the source leaves unstated cannot be checked; they are listed, not
counted against the entry. The report (bench/report/protocols.py) prints these records beside every published number
instead of guessing from names. The figures themselves are in reports/paper_reference.csv.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Published:
    """The protocol behind a published figure, as far as its source states it."""

    figure: str
    # Samples the published figure was computed on; fewer here is a difference (FID and CMMD move with the count).
    n_samples: int | None = None
    resolution: int | None = None
    fid_mode: str | None = None  # clean-fid's name for the published Inception port and resize
    reference_set: str | None = None  # bench.data.references' "all" / "matched"
    clip: tuple[str, str] | None = None  # (open_clip arch, pretrained tag) of the published backbone
    clip_resize: tuple[str, int] | None = None  # (open_clip resize mode, input size) of the published preprocessing
    samples_per_prompt: int | None = None
    human_judges: bool = False
    unknown: tuple[str, ...] = ()


_UNSTATED_CLIP = "the CLIP backbone (not stated by the paper)"
_WIN_RATE = Published(
    "Muse paper's human evaluation on PartiPrompts against SD v1.4 (70.6% / 25.4%)", samples_per_prompt=16,
    human_judges=True)

# (metric, dataset) -> the published protocol a measured value would be compared with.
PUBLISHED: dict[tuple[str, str], Published] = {
    ("fid", "coco30k"): Published(
        "zero-shot FID-30K on MS-COCO val2014 (Muse Table 2 and the Imagen protocol): TF-Inception",
        n_samples=30_000, resolution=256, fid_mode="legacy_tensorflow", reference_set="all"),
    ("fid", "cc3m"): Published(
        "FID on CC3M validation (Muse Table 1)", fid_mode="legacy_tensorflow",
        unknown=("how many validation images the paper scored", "the paper's FID code (TF-Inception assumed)")),
    ("fid", "coco5k"): Published(
        "MLPerf Inference SDXL accuracy window (5,000 COCO-2014 captions)", n_samples=5_000,
        unknown=("MLPerf's FID code, Inception port and resize (not recorded here)",)),
    ("clip_score", "coco30k"): Published(
        "Muse Table 2 CLIP score (plain cosine), MS-COCO 30K", n_samples=30_000, resolution=256,
        unknown=(_UNSTATED_CLIP,)),
    ("clip_score", "cc3m"): Published(
        "Muse Table 1 CLIP score (plain cosine), CC3M validation",
        unknown=(_UNSTATED_CLIP, "how many validation images the paper scored")),
    ("clip_score_x100", "coco5k"): Published(
        "MLPerf Inference SDXL accuracy window (CLIP x100, open_clip ViT-B/32 openai)", n_samples=5_000,
        clip=("ViT-B-32", "openai")),
    ("cmmd", "coco30k"): Published(
        "CMMD paper, MS-COCO 30K (Jayasumana et al. 2024): CLIP ViT-L/14-336, whole image to 336, sigma 10, x1000",
        n_samples=30_000, clip=("ViT-L-14-336", "openai"), clip_resize=("squash", 336)),
    **{(name, "partiprompts"): _WIN_RATE for name in ("win_rate", "loss_rate", "win_ratio")},
}

# The reason recorded where nothing published is put beside a metric (the report does not flag it as a difference).
NO_PUBLISHED = "no published figure to compare with"
# clean-fid's names of its real Inception networks (bench.metrics.features); anything else is a stand-in.
_INCEPTION_PREFIXES = ("inception-2015-12-05", "pt_inception-2015-12-05")


def _record(published: Published | None, reasons: list[str]) -> dict[str, Any]:
    reasons = list(dict.fromkeys(reasons))
    return {"value": published is not None and not reasons,
            "published": published.figure if published is not None else None,
            "reasons": reasons, "unknown": list(published.unknown) if published is not None else []}


def _clip_reasons(p: Mapping[str, Any], published: Published | None) -> list[str]:
    out = []
    if p.get("backend") == "injected":
        out.append(f"an injected CLIP scorer ({p.get('target')})")
    if p.get("weights") == "random":
        out.append("random CLIP weights")
    if "tiny" in str(p.get("arch", "")):
        out.append(f"test-size CLIP {p.get('arch')}")
    if published is None:
        return out
    if published.clip is not None and (p.get("arch"), p.get("pretrained")) != published.clip:
        out.append(f"CLIP {p.get('arch')} / {p.get('pretrained')} (published: {published.clip[0]} / "
                   f"{published.clip[1]})")
    if published.clip_resize is not None:
        pre = p.get("image_preprocess") or {}
        size = pre.get("size")
        size = size[0] if isinstance(size, (list, tuple)) else size
        if (pre.get("resize_mode"), size) != published.clip_resize:
            out.append(f"images {pre.get('resize_mode')} to {size} (published: the whole image, no crop, to "
                       f"{published.clip_resize[1]})")
    return out


def comparable_to_published(metric: str, entry: Mapping[str, Any], *, dataset: str, model_weights: str,
                            resolution: int) -> dict[str, Any]:
    """The `comparable_to_published` record of one metric entry of results.json (see the module docstring).

    `entry` is the metric entry ({value, protocol, ...}); `dataset` and `resolution` are the evaluation's,
    `model_weights` the evaluated model's ("random" or "pretrained").
    """
    published = PUBLISHED.get((metric, dataset))
    p = entry.get("protocol") or {}
    if entry.get("value") is None:
        return _record(published, ["not computed" + (f": {p['skipped']}" if p.get("skipped") else "")])
    reasons = [] if published is not None else [NO_PUBLISHED]
    if model_weights == "random":
        reasons.append("random model weights")
    if p.get("below_minimum"):
        reasons.append(f"below the minimum of {p.get('min_samples')} samples")
    if metric in ("fid", "kid"):
        extractor = str(p.get("feature_extractor", ""))
        if not extractor.startswith(_INCEPTION_PREFIXES):
            reasons.append(f"stand-in feature network {extractor}")
    if metric.startswith("clip_score") or metric == "cmmd":
        reasons += _clip_reasons(p, published)
    if published is None:
        return _record(None, reasons)
    n = p.get("n_generated", p.get("n"))
    if published.n_samples is not None and n is not None and n < published.n_samples:
        reasons.append(f"{n:,} samples (published: {published.n_samples:,})")
    if published.resolution is not None and resolution != published.resolution:
        reasons.append(f"evaluated at {resolution} px (published: {published.resolution})")
    reference = p.get("reference") or {}
    if published.reference_set is not None and reference.get("reference_set") not in (None, published.reference_set):
        reasons.append(f"reference set {reference.get('reference_set')} (published: {published.reference_set})")
    if reference.get("reference_limit") is not None:
        reasons.append(f"dataset.reference_limit={reference['reference_limit']} (published: every reference image)")
    if metric in ("fid", "kid") and published.fid_mode is not None and p.get("mode") != published.fid_mode:
        reasons.append(f"clean-fid mode {p.get('mode')} (published: {published.fid_mode}; eval=paper selects it)")
    if metric == "cmmd":
        if (p.get("sigma"), p.get("scale")) != (10.0, 1000.0):
            reasons.append(f"kernel sigma {p.get('sigma')}, scale {p.get('scale')} (published: 10, 1000)")
        bias = p.get("small_sample_bias") or {}
        if not bias.get("negligible", False):
            reasons.append("the estimator's small-sample bias is not negligible against the value")
    if published.human_judges:
        judge = p.get("judge") or {}
        reasons.append(f"an automatic judge ({judge.get('name', '?')}) stands in for the paper's human raters")
        if p.get("K") != published.samples_per_prompt:
            reasons.append(f"best of K={p.get('K')} (published: {published.samples_per_prompt})")
    return _record(published, reasons)
