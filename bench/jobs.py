"""Jobs the command line runs. For now one: generate a dataset's samples and write results.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.generation import generate_samples
from bench.pipelines import load_pipeline, resolve_device
from bench.provenance import collect_provenance
from bench.results import MANIFEST_FILE, build_results, evaluation, write_csv, write_jsonl, write_results

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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def latency_ratios(rows: list[dict[str, Any]], pairs: list[list[str]]) -> list[dict[str, Any]]:
    """For each [slower, faster] pair of models: the ratio of their end-to-end medians at every resolution and
    batch size both ran (greater than 1 means `faster` is faster)."""
    totals = {(r["model"], r["resolution"], r["batch_size"]): r for r in rows if r["stage"] == "total" and r["status"] == "ok"}
    out = []
    for slower, faster in pairs:
        for (model, resolution, batch), row in totals.items():
            other = totals.get((faster, resolution, batch))
            if model == slower and other is not None:
                out.append({
                    "slower": slower, "faster": faster, "resolution": resolution, "batch_size": batch,
                    "ratio": row["median_s"] / other["median_s"],
                    "protocol": f"median end-to-end time of {slower} / of {faster}; profiles {row['profile']} / "
                                f"{other['profile']}; weights {row['weights']} / {other['weights']}; {row['protocol']}",
                })
    return out


def run_latency(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Time each of cfg.latency.models at each resolution and batch size; write latency.csv and results.json.

    Every row carries its protocol: random or pretrained weights, profile, FLOPs per image counted on the meta
    device, device and dtype. results.json adds `latency_ratios` for the pairs in cfg.latency.compare.
    """
    from bench.latency import RowInfo, time_pipeline, time_pipeline_extrapolated, write_latency_csv
    from bench.runners import build_runner

    spec = cfg.latency
    if spec.dtype not in DTYPES:
        raise BenchError(f"latency.dtype={spec.dtype!r} is not one of {', '.join(DTYPES)}.")
    if spec.compile and spec.warmup < 1:
        raise BenchError("latency.compile needs latency.warmup >= 1: compilation happens in the first warm-up run, "
                         "which must not be timed.")
    if spec.protocol not in ("measured", "extrapolated"):
        raise BenchError(f"latency.protocol={spec.protocol!r}: use measured or extrapolated.")
    if not spec.batch_sizes or min(spec.batch_sizes) < 1:
        raise BenchError(f"latency.batch_sizes must list sizes of at least 1, got {list(spec.batch_sizes)}.")
    dtype = DTYPES[spec.dtype]
    device = resolve_device(cfg.device)
    # Real prompts: the timed work does not depend on them (text is padded to a fixed length), but nothing
    # here should look synthetic.
    prompts = [r.prompt for r in load_dataset("partiprompts", limit=max(spec.batch_sizes))]
    runners = [build_runner(name, spec, device, dtype, cfg.model.init_seed, cfg.seed) for name in spec.models]
    rows = []
    for runner in runners:
        for resolution in spec.resolutions:
            if resolution not in runner.resolutions:
                log.warning("%s does not generate at %d; skipped", runner.model, resolution)
                continue
            info = RowInfo(
                model=runner.model, weights=runner.weights, profile=runner.profile, resolution=resolution,
                steps=runner.steps(resolution), device=device, dtype=dtype, params=runner.params,
                flops_per_image=runner.flops(resolution), compiled=bool(spec.compile),
            )
            sweep = dict(batch_sizes=list(spec.batch_sizes), runs=spec.runs, warmup=spec.warmup)
            if spec.protocol == "extrapolated":
                rows += time_pipeline_extrapolated(
                    lambda batch, steps, clock, runner=runner, resolution=resolution:
                        runner.run(prompts[:batch], resolution, clock, steps),
                    info, full_steps=runner.full_steps(resolution), **sweep)
            else:
                rows += time_pipeline(
                    lambda batch, clock, runner=runner, resolution=resolution: runner.run(prompts[:batch], resolution, clock),
                    info, **sweep)
    write_latency_csv(Path(run_dir) / "latency.csv", rows)
    results = build_results(
        experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device), evaluations=[], latency=rows, overrides=overrides,
    )
    results["latency_ratios"] = latency_ratios(rows, [list(pair) for pair in spec.compare])
    if experiment == "paper_table3":
        table = paper_table3(rows)
        results["paper_table3"] = table
        write_csv(Path(run_dir) / "table3.csv", table)
    return write_results(run_dir, results)


def paper_table3(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's Table 3 rows (bench/data/paper_table3.csv), each with the measured batch-1 end-to-end time
    of our matching model at the same resolution, where one was measured, and that row's protocol."""
    import csv

    from bench.datasets import packaged_data_path

    measured = {(r["model"], r["resolution"]): r for r in rows
                if r["stage"] == "total" and r["status"] == "ok" and r["batch_size"] == 1}
    table = []
    with packaged_data_path("paper_table3.csv").open(newline="") as f:
        for ref in csv.DictReader(f):
            row = measured.get((ref["ours"], int(ref["resolution"])))
            table.append({
                **ref, "resolution": int(ref["resolution"]), "published_s": float(ref["published_s"]),
                "measured_s": row["median_s"] if row else None,
                "measured_on": row["device"] if row else None,
                "measured_profile": row["profile"] if row else None,
                "measured_weights": row["weights"] if row else None,
                "measured_protocol": row["protocol"] if row else None,
            })
    return table


JOBS = {"generate": run_generation, "latency": run_latency}
