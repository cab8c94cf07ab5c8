"""Jobs the command line runs. For now one: generate a dataset's samples and write results.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.generation import generate_samples
from bench.pipelines import load_pipeline, resolve_device
from bench.provenance import collect_provenance
from bench.results import MANIFEST_FILE, build_results, evaluation, write_jsonl, write_results

log = logging.getLogger(__name__)


def _check_job(cfg: DictConfig) -> None:
    if cfg.batch_size < 1:
        raise BenchError(f"batch_size must be at least 1, got {cfg.batch_size}.")
    if not cfg.resolutions:
        raise BenchError("resolutions is empty: list at least one, e.g. resolutions=[256].")
    supported = list(cfg.model.resolution)
    unsupported = [r for r in cfg.resolutions if r not in supported]
    if unsupported:
        raise BenchError(
            f"Model {cfg.model.name} generates at {supported} only, not at {unsupported}: set resolutions "
            f"to a subset of {supported} (e.g. resolutions=[{supported[0]}]), or pick another model."
        )


def sampling_protocol(pipe: Any, *, resolution: int, seed: int) -> dict[str, Any]:
    """Every choice that moves a sample: resolution, seed, and the pipeline's decoding settings.

    `steps` and `guidance` are the base stage's decoding steps and guidance scale; `sampler` holds
    every stage's full settings as the pipeline reports them (base, and superres above 256).
    """
    settings = pipe.sampler_settings(resolution)
    return {
        "resolution": resolution,
        "seed": seed,
        "steps": settings["base"]["steps"],
        "guidance": settings["base"]["guidance_scale"],
        "sampler": settings,
    }


def run_generation(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Generate cfg.dataset's first cfg.dataset.limit prompts at each of cfg.resolutions with cfg.model.

    Writes samples/<model>/<dataset>/*.png with manifest.jsonl, and results.json (returned) in run_dir.
    """
    _check_job(cfg)
    run_dir = Path(run_dir)
    records = load_dataset(cfg.dataset.name, limit=cfg.dataset.limit, path=cfg.dataset.path)
    requested = cfg.dataset.limit if cfg.dataset.limit is not None else len(records)
    device = resolve_device(cfg.device)
    pipe = load_pipeline(cfg.model, device)

    model, dataset = cfg.model.name, cfg.dataset.name
    sample_dir = run_dir / "samples" / model / dataset
    rows: list[dict[str, Any]] = []
    evaluations = []
    for resolution in cfg.resolutions:
        rows += generate_samples(
            pipe,
            records,
            resolution=resolution,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            out_dir=sample_dir,
            desc=f"{model} {dataset} {resolution}px",
        )
        evaluations.append(
            evaluation(
                model=model,
                dataset=dataset,
                weights=pipe.weights,
                requested=requested,
                effective=len(records),
                protocol=sampling_protocol(pipe, resolution=resolution, seed=cfg.seed),
            )
        )
    write_jsonl(sample_dir / MANIFEST_FILE, rows)
    log.info("wrote %d samples to %s", len(rows), sample_dir)

    results = build_results(
        experiment=experiment,
        config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device),
        evaluations=evaluations,
        latency=[],
        overrides=overrides,
    )
    return write_results(run_dir, results)
