"""Jobs the command line runs: generate (samples, then metrics), latency, and prepare (reference data)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.pipelines import resolve_device
from bench.provenance import collect_provenance
from bench.results import MANIFEST_FILE, build_results, evaluation, write_csv, write_jsonl, write_results

log = logging.getLogger(__name__)


def _check_job(cfg: DictConfig) -> None:
    from muse.sampling import to_guidance_t

    if cfg.model.guidance_scale is not None:
        to_guidance_t(cfg.model.guidance_scale, "model.guidance_scale")  # the CFG scale g: at least 1
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


def sampling_protocol(generator: Any, *, resolution: int, seed: int, samples_per_prompt: int = 1) -> dict[str, Any]:
    """Every choice that moves a sample: resolution, seed, images per prompt and the model's decoding settings.

    `steps` and `guidance` are the first stage's decoding steps and classifier-free guidance scale g (every
    family; `guidance_t` is the same setting as Muse's t = g - 1, `guidance_convention` says so); `sampler`
    holds every stage's full settings as the model reports them (base, and superres above 256, for Muse), each
    with both g and t. `replica_seeds` says how each sample's random stream is derived, `determinism` what holds
    across batch sizes, thread counts and process layouts.
    """
    from muse.sampling import GUIDANCE_CONVENTION, STREAM_DERIVATION

    settings = generator.settings(resolution)
    first = next(iter(settings.values()))
    return {
        "resolution": resolution,
        "seed": seed,
        "samples_per_prompt": samples_per_prompt,
        "replica_seeds": STREAM_DERIVATION,
        "steps": first["steps"],
        "guidance": first["guidance_scale"],
        "guidance_t": first["guidance_t"],
        "guidance_convention": GUIDANCE_CONVENTION,
        "sampler": settings,
        "determinism": generator.determinism,
    }


def _model_configs(cfg: DictConfig) -> list[Any]:
    """The run's model, then eval.compare_to's preset from conf/model/, typed by the schema."""
    models = [cfg.model]
    if cfg.eval.compare_to:
        from bench.cli import CONF_DIR
        from bench.config import ModelConfig

        path = CONF_DIR / "model" / f"{cfg.eval.compare_to}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
            raise BenchError(f"eval.compare_to={cfg.eval.compare_to!r} names no model preset in conf/model/ "
                             f"(known: {known}).")
        models.append(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path)))
        if models[1].name == cfg.model.name:
            raise BenchError(f"eval.compare_to={cfg.eval.compare_to!r} is the run's own model; compare two models.")
    return models


def run_generation(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Generate cfg.dataset's prompts with cfg.model (and eval.compare_to) and score them with eval.metrics.

    Writes samples/<model>/<dataset>/*.png with manifest.jsonl and sampling.json, and results.json (returned) in
    run_dir. Resumable (finished PNGs are kept) and shardable over processes (bench/distributed.py).
    """
    evaluations, device, is_main = generate_and_score(cfg, run_dir=run_dir)
    if not is_main:
        return Path(run_dir) / "results.json"
    results = build_results(
        experiment=experiment,
        config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device),
        evaluations=evaluations,
        latency=[],
        overrides=overrides,
    )
    return write_results(run_dir, results)


def generate_and_score(cfg: DictConfig, *, run_dir: str | Path, skip_missing_weights: bool = False,
                       keep_generator: list | None = None) -> tuple[list[dict[str, Any]], str, bool]:
    """The generate job's work: samples of every model, then their metrics. Returns (evaluations, device,
    whether this is the main process). With skip_missing_weights, a metric whose feature network cannot be
    loaded is reported as skipped with the reason, not an error. keep_generator, if a list, receives the run's
    first model (the default job draws its decoding trajectories with it)."""
    from bench.distributed import init_world, process_device
    from bench.generation import check_sampling_record, generate_samples, plan_samples, shard
    from bench.pipelines import load_generator
    from bench.scoring import REFERENCE_METRICS, MetricTools, SampleScorer, check_metrics

    _check_job(cfg)
    metrics = check_metrics(cfg.eval.metrics)
    eval_resolution = cfg.eval.resolution or cfg.resolutions[0]
    if eval_resolution not in cfg.resolutions:
        raise BenchError(f"eval.resolution={eval_resolution} is not one of resolutions={list(cfg.resolutions)}.")
    if "win_rate" in metrics and not cfg.eval.compare_to:
        raise BenchError("eval.metrics asks for win_rate, which compares two models: name the second with "
                         "eval.compare_to=PRESET (e.g. sd-v1-4), or drop win_rate.")
    world = init_world()
    run_dir = Path(run_dir)
    records = load_dataset(cfg.dataset.name, limit=cfg.dataset.limit, path=cfg.dataset.path,
                           caption_seed=cfg.dataset.caption_seed)
    samples_per_prompt = cfg.eval.samples_per_prompt
    requested = (cfg.dataset.limit if cfg.dataset.limit is not None else len(records)) * samples_per_prompt
    device = process_device(resolve_device(cfg.device), world)
    references = None
    if world.is_main and REFERENCE_METRICS & set(metrics) and (cfg.dataset.reference_dir or dataset_has_references(cfg.dataset.name)):
        from bench.references import open_references

        # Checked before any image is made: missing or wrong reference images should not cost a generation run.
        # Datasets without reference images of their own (PartiPrompts) report those metrics as skipped instead.
        references = open_references(cfg.dataset, records)
    tools = MetricTools.build(cfg.eval, metrics, device, skip_missing=skip_missing_weights) if metrics else None

    dataset = cfg.dataset.name
    scored = {}
    evaluations = []
    for model_cfg in _model_configs(cfg):
        generator = load_generator(model_cfg, device)
        unsupported = [r for r in cfg.resolutions if r not in generator.resolutions]
        if unsupported:
            raise BenchError(f"Model {model_cfg.name} generates at {list(generator.resolutions)} only, not at "
                             f"{unsupported}: set resolutions to a subset of those.")
        sample_dir = run_dir / "samples" / model_cfg.name / dataset
        samples = plan_samples(records, cfg.resolutions, samples_per_prompt)
        protocols = {r: sampling_protocol(generator, resolution=r, seed=cfg.seed, samples_per_prompt=samples_per_prompt)
                     for r in cfg.resolutions}
        check_sampling_record(sample_dir, {
            "model": OmegaConf.to_container(model_cfg, resolve=True) | {"weights": generator.weights},
            "dataset": {"name": dataset, "path": cfg.dataset.path, "caption_seed": cfg.dataset.caption_seed},
            "seed": cfg.seed,
            "streams": protocols[cfg.resolutions[0]]["replica_seeds"],
            "sampler": {str(r): p["sampler"] for r, p in protocols.items()},
        })
        scorer = SampleScorer(tools, eval_resolution) if tools is not None and cfg.eval.stream else None
        counts = generate_samples(
            generator.generate, shard(samples, world.rank, world.world_size), seed=cfg.seed,
            batch_size=cfg.batch_size, out_dir=sample_dir, on_images=scorer.add if scorer else None,
            desc=f"{model_cfg.name} {dataset}" + (f" [rank {world.rank}/{world.world_size}]" if world.world_size > 1 else ""),
        )
        log.info("%s: %d generated, %d already there (resumed)", model_cfg.name, counts["generated"], counts["resumed"])
        world.barrier()
        states = world.gather(scorer.state() if scorer else None)
        if keep_generator is not None and not keep_generator:
            keep_generator.append(generator)
        del generator
        if not world.is_main:
            continue
        write_jsonl(sample_dir / MANIFEST_FILE, [s.row(cfg.seed) for s in samples])
        log.info("wrote %d samples to %s", len(samples), sample_dir)
        if tools is not None:
            if scorer is None:
                scorer = SampleScorer(tools, eval_resolution)
                scorer.add_files(samples, sample_dir)
                state = SampleScorer.merged([scorer.state()])
            else:
                state = SampleScorer.merged(states)
            scored[model_cfg.name] = (state, [s for s in samples if s.resolution == eval_resolution])
        for resolution in cfg.resolutions:
            evaluations.append(evaluation(
                model=model_cfg.name, dataset=dataset, weights=model_weights(model_cfg),
                requested=requested, effective=len(records) * samples_per_prompt,
                protocol=protocols[resolution] | {"samples_dir": str(sample_dir.relative_to(run_dir))},
            ))
    if world.is_main and tools is not None:
        from bench.evaluate import score_models

        score_models(evaluations, scored, tools=tools, cfg=cfg, metrics=metrics, references=references,
                     resolution=eval_resolution, run_dir=run_dir)
    return evaluations, device, world.is_main


def dataset_has_references(name: str) -> bool:
    """Whether the dataset's protocol defines reference images (COCO val2014, CC3M validation)."""
    return name in ("coco30k", "coco5k", "cc3m")


def model_weights(model_cfg: Any) -> str:
    """random or pretrained, as every result row says."""
    return "pretrained" if model_cfg.pretrained else "random"


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
    rows, device = time_models(cfg, run_dir=run_dir)
    results = build_results(
        experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device), evaluations=[], latency=rows, overrides=overrides,
    )
    results["latency_ratios"] = latency_ratios(rows, [list(pair) for pair in cfg.latency.compare])
    if experiment == "paper_table3":
        table = paper_table3(rows)
        results["paper_table3"] = table
        write_csv(Path(run_dir) / "table3.csv", table)
    return write_results(run_dir, results)


def time_models(cfg: DictConfig, *, run_dir: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The latency job's work: the rows of latency.csv (also written) and the device they were timed on."""
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
    return rows, device


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


def run_prepare(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Fetch cfg.dataset's reference images under data_root (COCO: download + sha256 + extract; CC3M: the
    img2dataset command) and write what to set in prepare.json; the settings are logged too."""
    from bench.download import prepare_dataset
    from bench.results import write_json

    root = Path(cfg.data_root).expanduser() / cfg.dataset.name
    prepared = prepare_dataset(cfg.dataset.name, root, path=cfg.dataset.path)
    if prepared.get("command_line"):
        log.info("run this to download the images: %s", prepared["command_line"])
    if prepared.get("overrides"):
        log.info("then evaluate with: %s", " ".join(prepared["overrides"]))
    return write_json(Path(run_dir) / "prepare.json", prepared)


def run_default(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """The first command a user runs (`muse-bench`): offline, minutes on a CPU. Latency of Muse against Stable
    Diffusion v1.4 (cfg.latency), a small PartiPrompts generation with decoding trajectories, the metrics whose
    weights are present (the others reported as skipped, saying how to supply them), then report.md."""
    from bench.report import report_run_dir

    run_dir = Path(run_dir)
    # Generation first: it takes seconds and checks the model and dataset settings before minutes of timing.
    kept: list = []
    evaluations, device, _ = generate_and_score(cfg, run_dir=run_dir, skip_missing_weights=True, keep_generator=kept)
    if cfg.trajectories > 0 and kept and kept[0].pipeline is not None and hasattr(kept[0].pipeline, "decode_tokens"):
        records = load_dataset(cfg.dataset.name, limit=cfg.trajectories, path=cfg.dataset.path)
        write_trajectories(kept[0].pipeline, cfg.model.name, records, run_dir=run_dir, seed=cfg.seed,
                           steps=cfg.model.steps, guidance_scale=cfg.model.guidance_scale)
    kept.clear()
    rows, _ = time_models(cfg, run_dir=run_dir)
    results = build_results(
        experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device), evaluations=evaluations, latency=rows, overrides=overrides,
    )
    results["latency_ratios"] = latency_ratios(rows, [list(pair) for pair in cfg.latency.compare])
    path = write_results(run_dir, results)
    log.info("report: %s", report_run_dir(run_dir))
    return path


def write_trajectories(pipe: Any, model: str, records, *, run_dir: Path, seed: int, steps: int | None = None,
                       guidance_scale: float | None = None) -> list[Path]:
    """Decode what is unmasked after each base decoding step of each record's sample, still-masked tokens in
    grey, into run_dir/trajectory/ (bench.report.trajectory_file names). The sample is the one the run made:
    same seed and sample index."""
    from PIL import Image

    from bench.figures import grey_masked
    from bench.generation import png_bytes
    from bench.report import TRAJECTORY_DIR, trajectory_file
    from bench.results import atomic_write_bytes
    from muse.pipeline import to_pil

    written = []
    side = int(pipe.base.seq_len ** 0.5)
    for record in records:
        with torch.inference_mode():
            out = pipe([record.prompt], resolution=256, seed=seed, sample_indices=[record.index],
                       return_trajectory=True, steps=steps, guidance_scale=guidance_scale)
            for step, tokens in enumerate(out.trajectory[0], start=1):
                masked = tokens == out.mask_token_id
                # Masked positions hold the mask id, which is no code of the VQ codebook: decode code 0 there
                # and paint those tokens grey.
                image = to_pil(pipe.decode_tokens(torch.where(masked, 0, tokens)[None], 256))[0]
                grid = masked.reshape(side, side).cpu().numpy()
                path = run_dir / TRAJECTORY_DIR / trajectory_file(model, record.index, step)
                atomic_write_bytes(path, png_bytes(Image.fromarray(grey_masked(image, grid))))
                written.append(path)
    return written


JOBS = {"default": run_default, "generate": run_generation, "latency": run_latency, "prepare": run_prepare}
