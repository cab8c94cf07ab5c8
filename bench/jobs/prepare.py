"""The prepare job: fetch the reference images a dataset's FID needs, or say how to (bench/data/download.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from bench.core.results import write_json
from bench.data.download import prepare_dataset
from bench.jobs.generate import evaluation_resolution

log = logging.getLogger(__name__)



def run_prepare(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Fetch cfg.dataset's reference images under data_root (COCO: download + sha256 + extract; CC3M: the
    img2dataset command, at the resolution these settings evaluate at) and write what to set in prepare.json;
    the settings are logged too."""
    root = Path(cfg.data_root).expanduser() / cfg.dataset.name
    # CC3M's images are resized as they are downloaded: to the resolution the same settings would evaluate at.
    prepared = prepare_dataset(cfg.dataset.name, root, path=cfg.dataset.path, image_size=evaluation_resolution(cfg))
    if prepared.get("command_line"):
        log.info("run this to download the images at %d px (the resolution these settings evaluate at; pass the "
                 "evaluation's resolutions=... to prepare for another): %s", prepared["image_size"],
                 prepared["command_line"])
    if prepared.get("overrides"):
        log.info("then evaluate with: %s", " ".join(prepared["overrides"]))
    return write_json(Path(run_dir) / "prepare.json", prepared)
