"""The default job: a small generation run (the learned shapes world's Muse against the same architecture with
random weights, by default), the decoding trajectories of its first samples, a small guidance sweep, the latency of
Muse-3B against Stable Diffusion v1.4 at full size, and the report over all of it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.core.provenance import collect_provenance
from bench.core.results import build_results, write_results
from bench.data.prompts import load_dataset
from bench.jobs.generate import generate_and_score
from bench.jobs.latency import time_models
from bench.jobs.sweep import check_sweep, sweep_evaluations

log = logging.getLogger(__name__)



def run_default(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """The first command a user runs (`muse-bench`): offline, minutes on a CPU. A small generation with decoding
    trajectories (cfg.model against eval.compare_to on cfg.dataset), the metrics whose weights are present (the
    others reported as skipped, saying how to supply them), a sweep of cfg.sweep.key over cfg.sweep.points when
    cfg.sweep.points is not empty, latency of Muse against Stable Diffusion v1.4 (cfg.latency), then report.md."""
    from bench.report.document import report_run_dir

    run_dir = Path(run_dir)
    if cfg.sweep.points:
        check_sweep(cfg)  # every sweep value is checked before the first samples are written
    # Generation first: it takes seconds and checks the model and dataset settings before minutes of timing.
    kept: list = []
    evaluations, device, _ = generate_and_score(cfg, run_dir=run_dir, skip_missing_weights=True, keep_generator=kept)
    if cfg.trajectories > 0 and kept and kept[0].pipeline is not None and hasattr(kept[0].pipeline, "decode_tokens"):
        records = load_dataset(cfg.dataset.name, limit=cfg.trajectories, path=cfg.dataset.path)
        write_trajectories(kept[0].pipeline, cfg.model.name, records, run_dir=run_dir, seed=cfg.seed,
                           steps=cfg.model.steps, guidance_scale=cfg.model.guidance_scale,
                           choice_temperature=cfg.model.choice_temperature, schedule=cfg.model.schedule,
                           token_order=cfg.model.token_order, resolution=cfg.resolutions[0])
    kept.clear()
    if cfg.sweep.points:
        swept, _ = sweep_evaluations(cfg, run_dir)
        evaluations += swept
    timed, _ = time_models(cfg, run_dir=run_dir)
    results = build_results(
        experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device), evaluations=evaluations, latency=timed["rows"], overrides=overrides,
    )
    results["latency_ratios"] = timed["ratios"]
    results["compute"] = timed["compute"]
    path = write_results(run_dir, results)
    log.info("report: %s", report_run_dir(run_dir))
    return path


def write_trajectories(pipe: Any, model: str, records, *, run_dir: Path, seed: int, steps: int | None = None,
                       guidance_scale: float | None = None, resolution: int | None = None,
                       choice_temperature: float | None = None, schedule: str | None = None,
                       token_order: str | None = None) -> list[Path]:
    """Decode what is unmasked after each base decoding step of each record's sample, still-masked tokens in
    grey, into run_dir/trajectory/ (bench.report.runs.trajectory_file names). The sample is the one the run made:
    same seed, sample index and decoding overrides (and resolution: the call's, default the base stage's)."""
    from PIL import Image

    from bench.core.results import atomic_write_bytes
    from bench.jobs.generation import png_bytes
    from bench.report.figures import grey_masked
    from bench.report.runs import TRAJECTORY_DIR, trajectory_file
    from muse.output import to_pil

    written = []
    side = int(pipe.base.seq_len ** 0.5)
    base_resolution = pipe.config.base_resolution
    for record in records:
        with torch.inference_mode():
            # The base stage's trajectory is the same whatever stages follow it (same generators, same draws).
            out = pipe([record.prompt], resolution=resolution or base_resolution, seed=seed,
                       sample_indices=[record.index], return_trajectory=True, steps=steps,
                       guidance_scale=guidance_scale, choice_temperature=choice_temperature, schedule=schedule,
                       token_order=token_order)
            for step, tokens in enumerate(out.trajectory[0], start=1):
                masked = tokens == out.mask_token_id
                # Masked positions hold the mask id, which is no code of the VQ codebook: decode code 0 there
                # and paint those tokens grey.
                image = to_pil(pipe.decode_tokens(torch.where(masked, 0, tokens)[None], base_resolution))[0]
                grid = masked.reshape(side, side).cpu().numpy()
                path = run_dir / TRAJECTORY_DIR / trajectory_file(model, record.index, step)
                atomic_write_bytes(path, png_bytes(Image.fromarray(grey_masked(image, grid))))
                written.append(path)
    return written
