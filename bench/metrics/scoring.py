"""Scoring a model's samples: per-sample features gathered while images are made, then the metrics.

A SampleScorer holds, per sample at the evaluation resolution, its FID feature vector (bench.metrics.features), its
CLIP image embedding and image-prompt cosine (bench.metrics.clip_model), its CMMD image embedding (bench.metrics.cmmd,
its own CLIP model), and the shapes judge's verdict on it (bench.metrics.judge). MetricTools loads only the feature networks the requested metrics declare (bench.metrics.metric). It is fed either in-process as images are generated ("streaming": no PNG is read back) or
from the written PNGs; both see the same pixels (PNG is lossless), so both give the same numbers. Memory grows
with the number of samples only by their feature vectors: images are never kept. Shards of a distributed run merge by sample key, so the result does not
depend on the number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.core.errors import BenchError
from bench.data.images import ImageLoadError, load_rgb
from bench.metrics import METRICS, NETWORKS
from bench.metrics.fid import FeatureAccumulator

log = logging.getLogger(__name__)


def reference_metrics(metrics: Sequence[str]) -> list[str]:
    """The requested metrics that compare with reference images (bench.metrics.metric.Metric.needs_references)."""
    return [m for m in metrics if METRICS[m].needs_references]


def runnable_metrics(metrics: Sequence[str], has_references: bool) -> list[str]:
    """The requested metrics that will be computed: those needing reference images only when there are some.

    The others are reported as skipped (bench.metrics.evaluate), so their feature networks need not be loaded.
    """
    needing = set(reference_metrics(metrics))
    return [m for m in metrics if has_references or m not in needing]


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The requested metric names, refused with the known ones listed when any is unknown."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise BenchError(f"Unknown metric(s) {', '.join(unknown)} in eval.metrics. Known: {', '.join(METRICS)}.")
    return list(dict.fromkeys(metrics))


@dataclass
class MetricTools:
    """The feature extractors a run needs, built once and shared by every model it scores."""

    # One field per feature network (bench.metrics.NETWORKS), named as its config node eval.<name>.
    fid: Any = None  # bench.metrics.features.FeatureExtractor
    clip: Any = None  # bench.metrics.clip_model.ClipScorer
    cmmd: Any = None  # bench.metrics.clip_model.ClipScorer built by bench.metrics.cmmd.build_cmmd_scorer
    judge: Any = None  # bench.metrics.judge.ShapesJudge: the exact judge of the shapes world, no network
    fid_batch_size: int = 32

    # Feature networks that could not be loaded (skip_missing): "fid", "clip" or "cmmd" -> the error saying how to
    # supply them.
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, eval_cfg: Any, metrics: Sequence[str], device: str, skip_missing: bool = False) -> MetricTools:
        """Build only what `metrics` need. Missing weights raise BenchError saying how to supply them, or, with
        skip_missing, are recorded in `unavailable` (their metrics are then reported as skipped, with that text)."""
        tools = cls(fid_batch_size=eval_cfg.fid.batch_size)
        needed = {n for m in metrics for n in METRICS[m].networks}
        for name in NETWORKS:
            if name in needed:
                try:
                    setattr(tools, name, NETWORKS[name](getattr(eval_cfg, name, None), device))
                except BenchError as err:
                    if not skip_missing:
                        raise
                    tools.unavailable[name] = " ".join(str(err).split())
                    log.warning("%s metrics skipped: %s", name, tools.unavailable[name])
        return tools


@dataclass
class SampleScorer:
    """Per-sample features of one model's images at one resolution, keyed by (dataset index, replica)."""

    tools: MetricTools
    resolution: int
    fid_keys: list[tuple[int, int]] = field(default_factory=list)
    fid_features: list[np.ndarray] = field(default_factory=list)
    clip: dict[tuple[int, int], tuple[np.ndarray, float]] = field(default_factory=dict)
    cmmd: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    judge: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)
    failures: list[tuple[str, str]] = field(default_factory=list)
    _fid: Any = None
    _text: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tools.fid is not None:
            self._fid = FeatureAccumulator(self.tools.fid, self.tools.fid_batch_size)

    def add(self, samples: Sequence[Any], images: Sequence[Any]) -> None:
        """Take the images (PIL) of `samples` (bench.jobs.generation.Sample); other resolutions are ignored."""
        pairs = [(s, im.convert("RGB")) for s, im in zip(samples, images) if s.resolution == self.resolution]
        if not pairs:
            return
        keys = [(s.record.index, s.replica) for s, _ in pairs]
        if self._fid is not None:
            self._fid.add([np.asarray(im) for _, im in pairs], keys)
        if self.tools.clip is not None:
            prompts = [s.record.prompt for s, _ in pairs]
            new = [p for p in dict.fromkeys(prompts) if p not in self._text]
            if new:
                embeddings, truncated = self.tools.clip.text_embeddings(new)
                for prompt, emb, cut in zip(new, embeddings, truncated):
                    self._text[prompt] = np.asarray(emb, dtype=np.float64)
                    if cut:
                        self.truncated.add(prompt)
            image_emb = np.asarray(self.tools.clip.image_embeddings([im for _, im in pairs]), dtype=np.float64)
            for key, prompt, emb in zip(keys, prompts, image_emb):
                self.clip[key] = (emb, float(emb @ self._text[prompt]))
        if self.tools.cmmd is not None:
            cmmd_emb = np.asarray(self.tools.cmmd.image_embeddings([im for _, im in pairs]), dtype=np.float64)
            self.cmmd.update(zip(keys, cmmd_emb))
        if self.tools.judge is not None:
            verdicts = self.tools.judge([im for _, im in pairs], [s.record.prompt for s, _ in pairs])
            self.judge.update(zip(keys, verdicts))

    def add_files(self, samples: Sequence[Any], folder: str | Path, batch_size: int = 16) -> None:
        """Score the written PNGs of `samples` in `folder`; unreadable ones are recorded in `failures` and left out."""
        folder = Path(folder)
        todo = [s for s in samples if s.resolution == self.resolution]
        for start in range(0, len(todo), batch_size):
            ok, images = [], []
            for s in todo[start : start + batch_size]:
                try:
                    images.append(Image.fromarray(load_rgb(folder / s.file)))
                    ok.append(s)
                except ImageLoadError as err:
                    self.failures.append((s.file, str(err)))
            self.add(ok, images)

    def state(self) -> dict[str, Any]:
        """Everything gathered so far, as plain picklable objects (for merging shards)."""
        fid_keys, fid = ([], None)
        if self._fid is not None and len(self._fid):
            fid_keys, fid = list(self._fid.keys), self._fid.features()
        return {"fid_keys": fid_keys, "fid": fid, "clip": dict(self.clip), "cmmd": dict(self.cmmd),
                "judge": dict(self.judge), "truncated": sorted(self.truncated), "failures": list(self.failures)}

    @staticmethod
    def merged(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One state from the states of every shard, ordered by sample key."""
        fid_pairs = [(k, f) for st in states if st["fid"] is not None for k, f in zip(st["fid_keys"], st["fid"])]
        fid_pairs.sort(key=lambda kv: tuple(kv[0]))
        clip: dict = {}
        cmmd: dict = {}
        judge: dict = {}
        for st in states:
            clip.update(st["clip"])
            cmmd.update(st["cmmd"])
            judge.update(st.get("judge", {}))
        return {
            "fid_keys": [tuple(k) for k, _ in fid_pairs],
            "fid": np.stack([f for _, f in fid_pairs]) if fid_pairs else None,
            "clip": dict(sorted(clip.items())),
            "cmmd": dict(sorted(cmmd.items())),
            "judge": dict(sorted(judge.items())),
            "truncated": sorted({p for st in states for p in st["truncated"]}),
            "failures": [f for st in states for f in st["failures"]],
        }


def effective_count(state: dict[str, Any]) -> int:
    """Samples that every requested feature covers (corrupt files excluded)."""
    counts = [len(state["fid_keys"])] if state["fid"] is not None else []
    for name in ("clip", "cmmd", "judge"):
        if state.get(name):
            counts.append(len(state[name]))
    return min(counts) if counts else 0
