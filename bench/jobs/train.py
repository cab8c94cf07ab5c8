"""The train job: the shapes world of `train.recipe` trained into the cache (bench/train/world.py), resuming what a
killed run left, or found there already; results.json records the recipe, its cache folder and each stage's
steps, seconds and logged losses. Under torchrun every process takes part (data-parallel, gloo on CPU)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bench.core.provenance import collect_provenance
from bench.core.results import build_results, write_results
from bench.jobs.distributed import init_world
from bench.train.recipe import get_recipe
from bench.train.world import ensure_world

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Train (or find) the world of cfg.train.recipe; write results.json with its training record."""
    recipe = get_recipe(cfg.train.recipe)  # an unknown recipe is refused before anything is written
    world = init_world()
    folder = ensure_world(recipe.name)
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    log.info("world %s: %s", recipe.name, folder)
    results = build_results(experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
                            provenance=collect_provenance(cfg.device), evaluations=[], overrides=overrides)
    results["training"] = {"folder": str(folder), **record}
    return write_results(Path(run_dir), results) if world.is_main else Path(run_dir) / "results.json"
