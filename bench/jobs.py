"""Jobs the command line runs: generate (samples, then metrics), latency, and prepare (reference data)."""

from __future__ import annotations

import logging
import time
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
        **generator.resize_protocol(resolution),
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
    from bench.checks import check_generate_settings
    from bench.distributed import init_world, process_device
    from bench.generation import check_sampling_record, generate_samples, plan_samples, shard, write_sampling_record
    from bench.pipelines import load_generator
    from bench.rundir import promote_record
    from bench.scoring import REFERENCE_METRICS, MetricTools, SampleScorer, check_metrics, runnable_metrics

    models = _model_configs(cfg)
    check_generate_settings(cfg, models)
    metrics = check_metrics(cfg.eval.metrics)
    eval_resolution = evaluation_resolution(cfg)  # one of resolutions: check_generate_settings made sure
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
    # Decided from the config alone, so that every rank of a sharded run loads the same feature networks.
    has_references = bool(cfg.dataset.reference_dir or dataset_has_references(cfg.dataset.name))
    if world.is_main and REFERENCE_METRICS & set(metrics) and has_references:
        from bench.references import open_references

        # Checked before any image is made: missing or wrong reference images should not cost a generation run.
        # Datasets without reference images of their own (PartiPrompts) report those metrics as skipped instead.
        references = open_references(cfg.dataset, records)
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
            ))
    if world.is_main and tools is not None:
        from bench.evaluate import score_models

        score_models(evaluations, scored, tools=tools, cfg=cfg, metrics=metrics, references=references,
                     resolution=eval_resolution, run_dir=run_dir)
    return evaluations, device, world.is_main


def evaluation_resolution(cfg: Any) -> int:
    """The resolution the metrics use: eval.resolution, else the first of resolutions."""
    return int(cfg.eval.resolution or cfg.resolutions[0])


def dataset_has_references(name: str) -> bool:
    """Whether the dataset's protocol defines reference images (COCO val2014, CC3M validation)."""
    return name in ("coco30k", "coco5k", "cc3m")


def model_weights(model_cfg: Any) -> str:
    """random or pretrained, as every result row says."""
    return "pretrained" if model_cfg.pretrained else "random"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def run_latency(cfg: DictConfig, *, run_dir: str | Path, experiment: str, overrides: list[str] | None = None) -> Path:
    """Time each of cfg.latency.models at each resolution and batch size; write latency.csv and results.json.

    Every row carries its protocol: random or pretrained weights, profile, FLOPs per image counted on the meta
    device, device and dtype. results.json adds `latency_ratios` for the pairs in cfg.latency.compare and
    `compute` (full-size FLOPs and compute floors per model and resolution).
    """
    timed, device = time_models(cfg, run_dir=run_dir)
    results = build_results(
        experiment=experiment, config=OmegaConf.to_container(cfg, resolve=True),
        provenance=collect_provenance(device), evaluations=[], latency=timed["rows"], overrides=overrides,
    )
    results["latency_ratios"] = timed["ratios"]
    results["compute"] = timed["compute"]
    if experiment == "paper_table3":
        table = paper_table3(timed["rows"])
        results["paper_table3"] = table
        write_csv(Path(run_dir) / "table3.csv", table)
    return write_results(run_dir, results)


def _check_latency(spec: Any) -> None:
    """Refuse latency settings that cannot run, before anything is built or written."""
    from bench.latency import PROTOCOLS
    from bench.runners import known_models

    unknown = [name for name in spec.models if name not in known_models()]
    if unknown:
        raise BenchError(f"Unknown model(s) {', '.join(map(repr, unknown))} in latency.models. Known models: "
                         f"{', '.join(known_models())}.")
    if spec.dtype not in DTYPES:
        raise BenchError(f"latency.dtype={spec.dtype!r} is not one of {', '.join(DTYPES)}.")
    if spec.protocol not in PROTOCOLS:
        raise BenchError(f"latency.protocol={spec.protocol!r}: use one of {', '.join(PROTOCOLS)}.")
    if (spec.compile or spec.eager_and_compiled) and spec.protocol == "per_stage":
        raise BenchError("latency.compile / latency.eager_and_compiled need whole models (latency.protocol measured "
                         "or extrapolated); per_stage times eager forwards one role at a time.")
    if (spec.compile or spec.eager_and_compiled) and spec.warmup < 1:
        raise BenchError("latency.compile needs latency.warmup >= 1: compilation happens in the first warm-up run, "
                         "which must not be timed.")
    if not spec.batch_sizes or min(spec.batch_sizes) < 1:
        raise BenchError(f"latency.batch_sizes must list sizes of at least 1, got {list(spec.batch_sizes)}.")
    if spec.runs < 1 or spec.warmup < 0:
        raise BenchError(f"latency.runs must be at least 1 and latency.warmup at least 0, got {spec.runs} and "
                         f"{spec.warmup}.")
    for pair in spec.compare:
        if len(pair) != 2 or not set(pair) <= set(spec.models) or pair[0] == pair[1]:
            raise BenchError(f"latency.compare entry {list(pair)} must name two different models of latency.models "
                             f"({', '.join(spec.models)}), as [slower, faster].")


def time_models(cfg: DictConfig, *, run_dir: str | Path) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """The latency job's work: {"rows": latency.csv rows (also written), "ratios": the latency.compare pairs
    (bench.latency.latency_ratio), "compute": full-size FLOPs and floors}, and the device they were timed on.

    Models linked by latency.compare are built and timed together, in rounds (bench.latency.compare_groups);
    each group is released before the next is built. latency.eager_and_compiled times every group eager, then
    compiled. latency.budget_s, if set, leaves configurations not yet started when it is spent as over_budget.
    """
    from bench.latency import (
        RowInfo, Timing, compare_groups, compute_row, deadline_from, latency_ratio, time_extrapolated, time_measured,
        release_memory, time_per_stage, write_latency_csv,
    )
    from bench.runners import build_runner

    spec = cfg.latency
    _check_latency(spec)
    dtype = DTYPES[spec.dtype]
    device = resolve_device(cfg.device)
    # Real prompts: the timed work does not depend on them (text is padded to a fixed length), but nothing
    # here should look synthetic.
    prompts = [r.prompt for r in load_dataset("partiprompts", limit=max(spec.batch_sizes))]
    deadline = deadline_from(spec.budget_s)
    variants = [False, True] if spec.eager_and_compiled else [bool(spec.compile)]
    pairs = [list(pair) for pair in spec.compare]
    timings: dict[tuple[str, int, int, bool], Timing] = {}
    compute: dict[tuple[str, int], dict[str, Any]] = {}
    last_unit_s = 0.0  # the longest configuration so far (measured, extrapolated): what the next may cost
    groups = compare_groups(list(spec.models), pairs, pairwise=spec.protocol == "per_stage")
    # (model, resolution, batch, compiled, group): each group's own timings, for the ratios of its pairs; a model
    # timed in several groups (per_stage pairs) reports the rows of its first.
    timed_in: dict[tuple[str, int, int, bool, int], Timing] = {}
    for compiled in variants:
        for gid, group in enumerate(groups):
            log.info("building %s%s", ", ".join(group), " (compiled)" if compiled else "")
            runners = {name: build_runner(name, spec, device, dtype, cfg.model.init_seed, cfg.seed, compile=compiled,
                                          prompts=prompts) for name in group}
            group_infos: dict[str, dict[int, RowInfo]] = {}
            for name, runner in runners.items():
                for resolution in runner.resolutions:
                    compute[(name, resolution)] = compute_row(name, resolution, runner.steps(resolution),
                                                              runner.full_flops(resolution))
                for resolution in spec.resolutions:
                    if resolution not in runner.resolutions:
                        log.warning("%s does not generate at %d; skipped", name, resolution)
                        continue
                    group_infos.setdefault(name, {})[resolution] = RowInfo(
                        model=name, weights=runner.weights, profile=runner.profile, resolution=resolution,
                        steps=runner.steps(resolution), device=device, dtype=dtype, params=runner.params,
                        flops_per_image=runner.flops(resolution), compiled=compiled, arch=runner.arch,
                        full_flops_per_image=runner.full_flops(resolution))
            if spec.protocol == "per_stage":
                timed = time_per_stage({name: (runners[name].stage_plan, by_res) for name, by_res in group_infos.items()},
                                       resolutions=list(spec.resolutions), batch_sizes=list(spec.batch_sizes),
                                       runs=spec.runs, warmup=spec.warmup, deadline=deadline)
                timed_in.update({(*key, compiled, gid): t for key, t in timed.items()})
            else:
                for resolution in spec.resolutions:
                    members = {name: by_res[resolution] for name, by_res in group_infos.items() if resolution in by_res}
                    for batch in spec.batch_sizes:
                        if not members:
                            break
                        started = time.monotonic()
                        # Start nothing that the last configuration's duration says would end past the budget.
                        if deadline is not None and started + last_unit_s > deadline:
                            log.warning("latency.budget_s would be passed: %s at %d px, batch %d not timed",
                                        ", ".join(members), resolution, batch)
                            timed = {n: Timing(info, batch, spec.protocol, status="over_budget")
                                     for n, info in members.items()}
                        elif spec.protocol == "measured":
                            timed = time_measured(
                                {n: (info, lambda b, clock, run=runners[n].run, r=resolution: run(prompts[:b], r, clock))
                                 for n, info in members.items()}, batch=batch, runs=spec.runs, warmup=spec.warmup)
                        else:
                            timed = time_extrapolated(
                                {n: (info, lambda b, k, clock, run=runners[n].run, r=resolution:
                                     run(prompts[:b], r, clock, k), runners[n].full_steps(resolution))
                                 for n, info in members.items()}, batch=batch, runs=spec.runs, warmup=spec.warmup)
                        timed_in.update({(n, resolution, batch, compiled, gid): t for n, t in timed.items()})
                        last_unit_s = max(last_unit_s, time.monotonic() - started)
                        log.info("timed %s%s at %d px, batch %d, in %.1f s", ", ".join(members),
                                 " (compiled)" if compiled else "", resolution, batch, time.monotonic() - started)
            runners.clear()
            release_memory(device)
    for (*key, _), timing in timed_in.items():
        timings.setdefault(tuple(key), timing)
    order = {name: i for i, name in enumerate(spec.models)}
    keys = sorted(timings, key=lambda k: (k[3], order[k[0]], k[1], k[2]))
    rows = [row for key in keys for row in timings[key].rows()]
    ratios = []
    for c in variants:
        for slower, faster in pairs:
            gid = next(i for i, group in enumerate(groups) if slower in group and faster in group)
            ratios += [latency_ratio(timed_in[(slower, r, b, c, gid)], timed_in[(faster, r, b, c, gid)])
                       for r in spec.resolutions for b in spec.batch_sizes
                       if (slower, r, b, c, gid) in timed_in and (faster, r, b, c, gid) in timed_in]
    write_latency_csv(Path(run_dir) / "latency.csv", rows)
    compute_list = [compute[key] for key in sorted(compute, key=lambda k: (order[k[0]], k[1]))]
    return {"rows": rows, "ratios": ratios, "compute": compute_list}, device


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
    img2dataset command, at the resolution these settings evaluate at) and write what to set in prepare.json;
    the settings are logged too."""
    from bench.download import prepare_dataset
    from bench.results import write_json

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
