"""The generate job: samples of a dataset from each model (resumable, sharded), then their metrics, into
results.json; and the protocol record of how the samples were made."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.core.config import ModelConfig
from bench.core.errors import BenchError
from bench.core.paths import CONF_DIR
from bench.core.provenance import collect_provenance
from bench.core.results import (
    MANIFEST_FILE,
    build_results,
    evaluation,
    write_jsonl,
    write_results,
)
from bench.core.rundir import promote_record
from bench.data.prompts import load_dataset
from bench.data.references import has_own_references, open_references
from bench.jobs.checks import check_generate_settings
from bench.jobs.distributed import init_world, process_device
from bench.jobs.generation import check_sampling_record, generate_samples, plan_samples, shard, write_sampling_record
from bench.metrics import METRICS
from bench.metrics.evaluate import score_models
from bench.metrics.scoring import MetricTools, SampleScorer, check_metrics, reference_metrics, runnable_metrics
from bench.models.generators import load_generator, resolve_device
from muse.sampling import GUIDANCE_CONVENTION, STREAM_DERIVATION

log = logging.getLogger(__name__)



def sampling_protocol(generator: Any, *, resolution: int, seed: int, samples_per_prompt: int = 1) -> dict[str, Any]:
    """Every choice that moves a sample: resolution, seed, images per prompt and the model's decoding settings.

    `steps` and `guidance` are the first stage's decoding steps and classifier-free guidance scale g (every
    family; `guidance_t` is the same setting as Muse's t = g - 1, `guidance_convention` says so); `sampler`
    holds every stage's full settings as the model reports them (base, and superres above 256, for Muse), each
    with both g and t. `replica_seeds` says how each sample's random stream is derived, `determinism` what holds
    across batch sizes, thread counts and process layouts. `generated_at` and `resized_with` say at which
    resolution the model made the image and how it was resized to `resolution` (both None when it was made at
    `resolution`, its native one).
    """
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
        **generator.resize_protocol(resolution),
    }


def model_configs(cfg: DictConfig) -> list[Any]:
    """The run's model, then eval.compare_to's preset from conf/model/, typed by the schema."""
    models = [cfg.model]
    if cfg.eval.compare_to:
        path = CONF_DIR / "model" / f"{cfg.eval.compare_to}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
            raise BenchError(f"eval.compare_to={cfg.eval.compare_to!r} names no model preset in conf/model/ "
                             f"(known: {known}).")
        preset = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
        # The preset's interpolations mean the run's top-level keys, as they do in the run's own model (muse-shapes'
        # `world: ${world}`): resolved as the model of a copy of the run's config, not on their own (where ${world}
        # would name the preset's own key, a loop).
        scope = cfg.copy()
        scope.model = preset
        models.append(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                      OmegaConf.to_container(scope.model, resolve=True)))
        if models[1].name == cfg.model.name:
            raise BenchError(f"eval.compare_to={cfg.eval.compare_to!r} is the run's own model; compare two models.")
    return models


def run_generation(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Generate cfg.dataset's prompts with cfg.model (and eval.compare_to) and score them with eval.metrics.

    Writes samples/<model>/<dataset>/*.png with manifest.jsonl and sampling.json, and results.json (returned) in
    run_dir. Resumable (finished PNGs are kept) and shardable over processes (bench/jobs/distributed.py).
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
    models = model_configs(cfg)
    check_generate_settings(cfg, models)
    metrics = check_metrics(cfg.eval.metrics)
    eval_resolution = evaluation_resolution(cfg)  # one of resolutions: check_generate_settings made sure
    pairwise = [m for m in metrics if METRICS[m].pairwise]
    if pairwise and not cfg.eval.compare_to:
        names = " and ".join(pairwise)
        raise BenchError(f"eval.metrics asks for {names}, which compare{'s' if len(pairwise) == 1 else ''} two "
                         "models: name the second with eval.compare_to=PRESET (a conf/model/ preset: e.g. sd-v1-4 "
                         f"on PartiPrompts, muse-shapes-short on the shapes world), or drop {names}.")
    world = init_world()
    run_dir = Path(run_dir)
    records = load_dataset(cfg.dataset.name, limit=cfg.dataset.limit, path=cfg.dataset.path,
                           caption_seed=cfg.dataset.caption_seed, skills=cfg.dataset.skills)
    samples_per_prompt = cfg.eval.samples_per_prompt
    requested = (cfg.dataset.limit if cfg.dataset.limit is not None else len(records)) * samples_per_prompt
    device = process_device(resolve_device(cfg.device), world)
    references = None
    # Decided from the config alone, so that every rank of a sharded run loads the same feature networks.
    has_references = bool(cfg.dataset.reference_dir or dataset_has_references(cfg.dataset.name))
    if world.is_main and reference_metrics(metrics) and has_references:
        # Checked before any image is made: missing or wrong reference images should not cost a generation run.
        # Datasets without reference images of their own (PartiPrompts) report those metrics as skipped instead.
        references = open_references(cfg.dataset, records, resolution=eval_resolution)
    # Only the networks of metrics that will be computed are loaded (and their weights asked for), still before
    # any image is made: FID's Inception is not needed where FID is skipped for want of reference images.
    tools = (MetricTools.build(cfg.eval, runnable_metrics(metrics, has_references), device,
                               skip_missing=skip_missing_weights) if metrics else None)

    dataset = cfg.dataset.name
    samples = plan_samples(records, cfg.resolutions, samples_per_prompt)
    # Every model's folder is checked before anything is written, so that no setting is refused after the first
    # model's samples (or any sampling.json) are on disk. Last model first: the run's own model, loaded last,
    # is kept for generation, so only eval.compare_to's model is loaded twice.
    plans, generator = {}, None
    for i, model_cfg in reversed(list(enumerate(models))):
        generator = load_generator(model_cfg, device)
        unsupported = [r for r in cfg.resolutions if r not in generator.resolutions]
        if unsupported:
            raise BenchError(f"Model {model_cfg.name} generates at {list(generator.resolutions)} only, not at "
                             f"{unsupported}: set resolutions to a subset of those.")
        protocols = {r: sampling_protocol(generator, resolution=r, seed=cfg.seed, samples_per_prompt=samples_per_prompt)
                     for r in cfg.resolutions}
        sample_dir = run_dir / "samples" / model_cfg.name / dataset
        record = {
            "model": OmegaConf.to_container(model_cfg, resolve=True) | {"weights": generator.weights},
            "dataset": {"name": dataset, "path": cfg.dataset.path, "caption_seed": cfg.dataset.caption_seed},
            "seed": cfg.seed,
            "streams": protocols[cfg.resolutions[0]]["replica_seeds"],
            "sampler": {str(r): p["sampler"] for r, p in protocols.items()},
            "generated_at": {str(r): p["generated_at"] for r, p in protocols.items()},
            "resized_with": {str(r): p["resized_with"] for r, p in protocols.items()},
        }
        check_sampling_record(sample_dir, record)
        plans[i] = (sample_dir, protocols, record)
        if i > 0:
            generator = None
    if world.is_main:
        # Every check passed: the run commits to this folder. Hydra's record of it becomes the folder's.
        promote_record(run_dir)
        for sample_dir, _, record in plans.values():
            write_sampling_record(sample_dir, record)
    world.barrier()  # sampling.json is on disk before any process writes a sample

    scored = {}
    evaluations = []
    for i, model_cfg in enumerate(models):
        sample_dir, protocols, _ = plans[i]
        generator = generator or load_generator(model_cfg, device)
        scorer = SampleScorer(tools, eval_resolution) if tools is not None and cfg.eval.stream else None
        counts = generate_samples(
            generator.generate, shard(samples, world.rank, world.world_size), seed=cfg.seed,
            batch_size=cfg.batch_size, out_dir=sample_dir, on_images=scorer.add if scorer else None,
            desc=f"{model_cfg.name} {dataset}" + (f" [rank {world.rank}/{world.world_size}]" if world.world_size > 1 else ""),
        )
        log.info("%s: %d generated, %d already there (resumed)", model_cfg.name, counts["generated"], counts["resumed"])
        world.barrier()
        states = world.gather(scorer.state() if scorer else None)
        timings = world.gather(counts["timed"])
        if keep_generator is not None and not keep_generator:
            keep_generator.append(generator)
        generator = None
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
            ) | {"generation_time": generation_time(timings, resolution, device=device, batch_size=cfg.batch_size)})
    if world.is_main and tools is not None:
        score_models(evaluations, scored, tools=tools, cfg=cfg, metrics=metrics, references=references,
                     resolution=eval_resolution, run_dir=run_dir)
    return evaluations, device, world.is_main


# What generation_time measures, said in every record: it is not the latency job's protocol.
GENERATION_CLOCK = (
    "wall-clock seconds (time.perf_counter) of the model's generate calls in this generation run, batch by batch, "
    "summed over processes and divided by the images made: includes the first batch's warm-up, excludes model "
    "loading, PNG writing and metrics; not the latency harness (job=latency: warm-up runs, repeated timings, "
    "per-stage times), and on a shared CPU it moves with whatever else runs"
)


def generation_time(timings: list[dict[int, tuple[float, int]]], resolution: int, *, device: str,
                    batch_size: int) -> dict[str, Any]:
    """The generation run's own time per image at `resolution`, from every process's generate_samples "timed"
    counts, with its protocol: device, intra-op threads, batch size, processes and the clock (GENERATION_CLOCK).
    seconds_per_image is None when no image was made in this run (all resumed from disk), saying so."""
    seconds = sum(t.get(resolution, (0.0, 0))[0] for t in timings)
    images = sum(t.get(resolution, (0.0, 0))[1] for t in timings)
    record = {
        "seconds_per_image": seconds / images if images else None,
        "seconds": seconds,
        "images": images,
        "device": device,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "processes": len(timings),
        "clock": GENERATION_CLOCK,
    }
    if not images:
        record["not_measured"] = "every sample was already on disk (a resumed run): nothing was generated to time"
    return record


def evaluation_resolution(cfg: Any) -> int:
    """The resolution the metrics use: eval.resolution, else the first of resolutions."""
    return int(cfg.eval.resolution or cfg.resolutions[0])


def dataset_has_references(name: str) -> bool:
    """Whether the dataset's protocol defines reference images (COCO val2014, CC3M validation, rendered shapes)."""
    return has_own_references(name)


def model_weights(model_cfg: Any) -> str:
    """random, pretrained, or trained (a world trained here, model.world), as every result row says."""
    if model_cfg.pretrained:
        return "pretrained"
    return "trained" if model_cfg.get("world") else "random"
