"""The latency job: every model of `latency.models` timed under the chosen protocol, compared pairs timed
round by round, and the ratios, full-size FLOPs and, for the paper's Table 3, the published figures beside them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.core.errors import BenchError
from bench.core.provenance import collect_provenance
from bench.core.results import build_results, write_csv, write_results
from bench.data.prompts import load_dataset
from bench.latency.floors import compute_row
from bench.latency.measure import (
    PROTOCOLS,
    RowInfo,
    Timing,
    compare_groups,
    deadline_from,
    release_memory,
    time_extrapolated,
    time_measured,
    time_per_stage,
    write_latency_csv,
)
from bench.latency.ratios import latency_ratio
from bench.models import RUNNERS
from bench.models.generators import resolve_device
from bench.models.runner import build_runner
from bench.report.published import published_rows

log = logging.getLogger(__name__)

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
    unknown = [name for name in spec.models if name not in RUNNERS]
    if unknown:
        raise BenchError(f"Unknown model(s) {', '.join(map(repr, unknown))} in latency.models. Known models: "
                         f"{', '.join(RUNNERS)}.")
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
    (bench.latency.ratios.latency_ratio), "compute": full-size FLOPs and floors}, and the device they were timed on.

    Models linked by latency.compare are built and timed together, in rounds (bench.latency.measure.compare_groups);
    each group is released before the next is built. latency.eager_and_compiled times every group eager, then
    compiled. latency.budget_s, if set, leaves configurations not yet started when it is spent as over_budget.
    """
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
    """The paper's Table 3 rows (the muse-table3 rows of reports/paper_reference.csv), each with the measured
    batch-1 end-to-end time of our matching model at the same resolution, where one was measured, and that row's
    protocol."""
    measured = {(r["model"], r["resolution"]): r for r in rows
                if r["stage"] == "total" and r["status"] == "ok" and r["batch_size"] == 1}
    table = []
    for ref in published_rows("muse-table3"):
        row = measured.get((ref["ours"], int(ref["resolution"])))
        table.append({
            "paper_model": ref["model"], "ours": ref["ours"], "resolution": int(ref["resolution"]),
            "published_s": float(ref["value"]), "hardware": ref["hardware"], "note": ref["notes"],
            "source": ref["source"],
            "measured_s": row["median_s"] if row else None,
            "measured_on": row["device"] if row else None,
            "measured_profile": row["profile"] if row else None,
            "measured_weights": row["weights"] if row else None,
            "measured_protocol": row["protocol"] if row else None,
        })
    return table
