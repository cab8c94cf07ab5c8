"""The sweep job: one model setting swept over values (the paper's Figure 8 is model.guidance_scale), each value a
generation run of its own with the run's metrics, all in one results.json.

Each value's samples go to samples/<model>-<key>-<value>/ and its evaluations are labelled so, each with the
generation run's own time per image (generation_time); the report draws judge accuracy, FID and CLIP score against
the value and, where times were measured, against seconds per image (bench/report/sweeps.py), and a guidance sweep's
FID against CLIP score and judge accuracy (bench/report/quality.py). A killed
sweep resumes where it stopped, as the generate job does: samples on disk are kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from bench.core.errors import BenchError
from bench.core.provenance import collect_provenance
from bench.core.results import build_results, write_results
from bench.jobs.checks import check_decoding_settings
from bench.jobs.generate import generate_and_score
from bench.metrics import METRICS
from bench.models.generators import is_plain_name

log = logging.getLogger(__name__)

# model settings a sweep may vary: each is a decoding setting, so every value is the same weights sampled otherwise.
# choice_temperature and schedule (the masking schedule, string values) act on the base stage, as steps does;
# token_order (which tokens each step keeps) on every stage.
SWEEPABLE = ("guidance_scale", "steps", "choice_temperature", "schedule", "token_order")


def swept_name(model: str, key: str, value: Any) -> str:
    """The label of one value's model: <model>-<key>-<value>, a plain folder name."""
    return f"{model}-{key}-{value}"


def check_sweep(cfg: DictConfig) -> list[Any]:
    """The sweep's values, or a BenchError naming the setting when it is not one a sweep can vary, or a value
    that model.<key> cannot take (its type, what the sampler accepts, a folder name): every value is checked
    before the first one's samples are written."""
    key = cfg.sweep.key
    if key not in SWEEPABLE:
        raise BenchError(f"sweep.key={key!r} is not a setting a sweep varies; use one of {', '.join(SWEEPABLE)}.")
    values = list(cfg.sweep.points)
    if not values:
        raise BenchError("sweep.points is empty: give the values of sweep.key to run, e.g. sweep.points=[1,2,4].")
    if len(set(map(str, values))) != len(values):
        raise BenchError(f"sweep.points repeats a value: {values}.")
    for value in values:
        try:
            # The schema's type of model.<key> (int steps, float scales, str schedule) decides, as on the command line.
            point = OmegaConf.merge(cfg.model, {key: value})
        except ValidationError as err:
            raise BenchError(f"sweep.points holds {value!r}, which model.{key} cannot take: {err.msg}") from None
        try:
            check_decoding_settings(point, "model")
        except BenchError as err:
            raise BenchError(f"sweep.points holds {value!r}: {err}") from None
        name = swept_name(cfg.model.name, key, value)
        if not is_plain_name(name):
            raise BenchError(f"sweep.points holds {value!r}, which would name its samples' folder {name!r}: use "
                             "values written with letters, digits, '.', '_' and '-' only.")
    return values


def sweep_evaluations(cfg: DictConfig, run_dir: str | Path) -> tuple[list[dict], str]:
    """Generate and score cfg.model at each of cfg.sweep.points of cfg.sweep.key (eval.compare_to not used);
    returns (the evaluations, labelled with their sweep value, and the device)."""
    values = check_sweep(cfg)
    key = cfg.sweep.key
    evaluations: list[dict] = []
    device = cfg.device
    for value in values:
        run_cfg = cfg.copy()
        with open_dict(run_cfg):
            run_cfg.eval.compare_to = None
            # A sweep point is one model: metrics that compare two (win rates) have nothing to compare it with. The
            # default job's own generation keeps them; run_sweep refuses them up front.
            run_cfg.eval.metrics = [m for m in cfg.eval.metrics if not (m in METRICS and METRICS[m].pairwise)]
            if not (run_cfg.model.get("world") or run_cfg.model.get("pretrained") or run_cfg.model.get("preset")):
                run_cfg.model.preset = cfg.model.name  # the architecture stays the named preset's
            run_cfg.model.name = swept_name(cfg.model.name, key, value)
            run_cfg.model[key] = value
        log.info("sweep %s: %s", key, value)
        found, device, _ = generate_and_score(run_cfg, run_dir=run_dir, skip_missing_weights=True)
        for entry in found:
            # Labelled with the swept model's own name, so the report draws one curve through the values; the
            # samples' folder keeps the value in its name.
            entry["sweep"] = {"model": cfg.model.name, "key": key, "value": value, "samples": run_cfg.model.name}
            entry["model"] = cfg.model.name
        evaluations += found
    return evaluations, device


def run_sweep(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """The sweep job: sweep_evaluations, one results.json for all values, and report.md."""
    from bench.report.document import report_run_dir

    if cfg.eval.compare_to:
        raise BenchError("eval.compare_to is not used by a sweep (every value is compared with the others); unset it.")
    pairwise = [m for m in cfg.eval.metrics if m in METRICS and METRICS[m].pairwise]
    if pairwise:
        raise BenchError(f"eval.metrics holds {', '.join(pairwise)}, which compare{'s' if len(pairwise) == 1 else ''} "
                         "two models; a sweep runs one model at each value: drop it from eval.metrics.")
    evaluations, device = sweep_evaluations(cfg, run_dir)
    key, values = cfg.sweep.key, list(cfg.sweep.points)
    results = build_results(experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
                            provenance=collect_provenance(device), evaluations=evaluations, overrides=overrides)
    results["sweep"] = {"model": cfg.model.name, "key": key, "values": values}
    path = write_results(Path(run_dir), results)
    log.info("report: %s", report_run_dir(Path(run_dir)))
    return path
