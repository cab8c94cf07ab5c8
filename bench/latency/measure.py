"""Latency of text-to-image pipelines under the one timing protocol (bench/latency/timing.py), as latency.csv rows.

A row is one (model, resolution, batch size, stage) under one protocol: `stage` is a pipeline stage
(text_encoder, base, superres, decoder for Muse) or `total` (end to end). Every row says whether the weights
were random and which profile was timed (`tiny`: a test-size model, never a paper number), the FLOPs per image
and, where the device's peak is known, the percent of the compute floor reached (bench/latency/floors.py).
Out-of-memory at some batch size is recorded in that row (status "oom") and the sweep goes on; a configuration
not timed because the run's time budget (latency.budget_s) was spent says so (status "over_budget").

Protocols:
- measured: every step runs (`time_measured`);
- extrapolated: each decoding loop timed at 1 and 2 steps and fitted as fixed + per-step (`time_extrapolated`);
- per_stage: a few full-size forwards of each part, built one role at a time (bench/latency/stagewise.py).
Models compared by latency.compare are timed together, in rounds (A B A B ...; `compare_groups`), so that
bench/latency/ratios.py can take their ratio round by round.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.core.results import csv_text, write_csv
from bench.latency.floors import peak_flops
from bench.latency.stagewise import ROLES, counting_weights, time_role
from bench.latency.timing import (
    RunFailed,
    available_memory_bytes,
    measure_group,
    peak_memory_bytes,
    percentile,
    reset_peak_memory,
)

log = logging.getLogger(__name__)

# latency.csv's columns: the 17 of the original contract (up to `compiled`), then the percent of the compute floor,
# the run status, the timing protocol and the compilation time.
COLUMNS = (
    "model", "weights", "profile", "resolution", "batch_size", "steps", "stage", "n_runs", "median_s", "p90_s",
    "images_per_s", "peak_mem_bytes", "params", "flops", "device", "dtype", "compiled",
    "percent_of_floor", "status", "protocol", "compile_s",
)
PROTOCOLS = ("measured", "extrapolated", "per_stage")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def clock_name(device: torch.device | str) -> str:
    """How a row's time was taken, for its protocol."""
    return "CUDA events, synchronised" if torch.device(device).type == "cuda" else "perf_counter"


def compile_seconds(first_s: float | None, steady_s: float) -> float | None:
    """Compilation time, reported apart from latency: the first call's excess over a steady-state call."""
    return None if first_s is None else max(first_s - steady_s, 0.0)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@dataclass
class RowInfo:
    """What every latency row of one (model, resolution) carries besides its times."""

    model: str
    weights: str
    profile: str
    resolution: int
    steps: int | str
    device: torch.device | str
    dtype: torch.dtype
    params: int
    flops_per_image: dict[str, int] = field(default_factory=dict)
    compiled: bool = False
    arch: str = ""  # the architecture, whatever the profile (bench.models.runner.Runner.arch)
    full_flops_per_image: dict[str, int] | None = None  # at full size; None for test-size models

    def base(self, protocol: str) -> dict[str, Any]:
        return dict(model=self.model, weights=self.weights, profile=self.profile, resolution=self.resolution,
                    steps=self.steps, device=device_name(self.device), dtype=str(self.dtype).removeprefix("torch."),
                    compiled=self.compiled, params=self.params, protocol=protocol)


@dataclass
class Timing:
    """One model at one resolution and batch size: end-to-end and per-stage seconds of each round.

    A round is one run of every model of a compared group (bench.latency.timing.measure_group), so round r of two
    models was timed back to back. `status` is "ok", "oom" or "over_budget" (no times then).
    """

    info: RowInfo
    batch: int
    protocol: str
    totals: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    peak_mem_bytes: int | None = None
    compile_s: float | None = None
    status: str = "ok"

    def rows(self) -> list[dict[str, Any]]:
        """latency.csv rows: one per stage and one `total` (median and p90 over rounds), or one `total` row
        with the status when nothing was timed."""
        base = self.info.base(self.protocol) | dict(batch_size=self.batch)
        if self.status != "ok":
            return [base | dict(stage="total", status=self.status)]
        peak = peak_flops(device_name(self.info.device), self.info.dtype)
        rows = []
        for stage, values in [*self.stages.items(), ("total", self.totals)]:
            median = statistics.median(values)
            flops = self.info.flops_per_image.get(stage)
            rows.append(base | dict(
                stage=stage, n_runs=len(values), median_s=median, p90_s=percentile(values, 90),
                images_per_s=self.batch / median, peak_mem_bytes=self.peak_mem_bytes, flops=flops,
                percent_of_floor=100 * flops * self.batch / (median * peak) if peak and flops else None,
                status="ok", compile_s=self.compile_s if stage == "total" and self.info.compiled else None,
            ))
        return rows


# ---- protocols ---------------------------------------------------------------------------------------------


def _measured_protocol(warmup: int, runs: int, device, grouped: bool) -> str:
    order = "models in turn (A B A B ...) within each round; " if grouped else ""
    return f"measured; warmup={warmup} runs={runs}; {order}{clock_name(device)}; median and p90 of runs"


def _without_failures(group: dict[str, Any], attempt: Callable[[dict[str, Any]], dict[str, Timing]],
                      failed: dict[str, Timing], info_of: Callable[[str], RowInfo], batch: int,
                      protocol: str) -> dict[str, Timing]:
    """attempt(group), dropping a model that ran out of memory (its row says oom) and retrying the rest;
    any other error is re-raised as it was."""
    group = dict(group)
    while group:
        try:
            return attempt(group) | failed
        except RunFailed as failure:
            if not is_oom(failure.error):
                raise failure.error from None
            if torch.device(info_of(failure.model).device).type == "cuda":
                torch.cuda.empty_cache()
            failed[failure.model] = Timing(info_of(failure.model), batch, protocol, status="oom")
            del group[failure.model]
    return failed


def time_measured(group: Mapping[str, tuple[RowInfo, Callable[[int, Callable], Any]]], *, batch: int, runs: int = 3,
                  warmup: int = 1) -> dict[str, Timing]:
    """Time `run(batch, stage_timer)` of every model of the group in rounds (measure_group). A model that runs
    out of memory gets status "oom" and the others are timed without it."""
    infos = {name: info for name, (info, _) in group.items()}
    device = next(iter(infos.values())).device
    protocol = _measured_protocol(warmup, runs, device, len(group) > 1)

    def attempt(members):
        measured = measure_group({n: (lambda clock, run=group[n][1]: run(batch, clock)) for n in members},
                                 device=device, warmup=warmup, runs=runs)
        out = {}
        for name, m in measured.items():
            compile_s = compile_seconds(m.first_s, statistics.median(m.total))
            out[name] = Timing(infos[name], batch, protocol, m.total, m.stages, m.peak_mem_bytes, compile_s)
        return out

    return _without_failures(dict(group), attempt, {}, infos.__getitem__, batch, protocol)


def time_pipeline(run: Callable[[int, Callable], Any], info: RowInfo, *, batch_sizes: list[int], runs: int = 3,
                  warmup: int = 1) -> list[dict[str, Any]]:
    """Rows of one model at each batch size under the measured protocol (time_measured of a one-model group)."""
    return [row for batch in batch_sizes
            for row in time_measured({info.model: (info, run)}, batch=batch, runs=runs, warmup=warmup)[info.model].rows()]


def extrapolate(one_step_s: float, two_steps_s: float, steps: int) -> float:
    """A stage's time at `steps` from its times at 1 and 2 steps: fixed + steps x per-step."""
    per_step = max(two_steps_s - one_step_s, 0.0)  # noise can make the difference negative on a busy machine
    return (one_step_s - per_step) + steps * per_step


def time_extrapolated(group: Mapping[str, tuple[RowInfo, Callable[[int, int, Callable], Any], Mapping[str, int]]], *,
                      batch: int, runs: int = 3, warmup: int = 1) -> dict[str, Timing]:
    """Time `run(batch, steps, stage_timer)` at 1 and 2 steps and extrapolate to the real step counts.

    A round runs, for each model in turn, a pair: 1 step, then 2 steps, so a slow spell of a shared machine
    hits both halves of a pair rather than one side of the fit. For each pair and each decoding stage (the
    model's full_steps), the stage time is fitted as fixed + steps x per-step and evaluated at its real step
    count; other stages (text encoder, VQ/VAE decode) take the mean of the pair. Rows report the median and
    p90 over rounds, so one disturbed pair of three moves nothing: a decoding step costs the same at every
    step (fixed token counts), so two points fix the line, but its noise is multiplied by the step count.
    """
    infos = {name: info for name, (info, _, _) in group.items()}
    device = next(iter(infos.values())).device
    first = next(iter(group.values()))[2]
    protocol = (f"extrapolated: {runs} rounds of a pair of runs at 1 and 2 steps (after {warmup} warm-up rounds)"
                + (", models in turn within each round" if len(group) > 1 else "")
                + f", each decoding stage fitted as fixed + per-step per pair and evaluated at "
                  f"{dict(first) if len(group) == 1 else 'its real'} steps; median and p90 over pairs; "
                  f"{clock_name(device)}")

    def attempt(members):
        runs_by_key = {(name, k): (lambda clock, run=group[name][1], k=k: run(batch, k, clock))
                       for name in members for k in (1, 2)}
        measured = measure_group(runs_by_key, device=device, warmup=warmup, runs=runs)
        out = {}
        for name in members:
            one, two = measured[(name, 1)], measured[(name, 2)]
            full_steps = group[name][2]
            per_round = []
            for r in range(runs):
                stages = {}
                for stage in one.stages:
                    t1, t2 = one.stages[stage][r], two.stages[stage][r]
                    stages[stage] = extrapolate(t1, t2, full_steps[stage]) if stage in full_steps else (t1 + t2) / 2
                per_round.append(stages)
            stages = {stage: [p[stage] for p in per_round] for stage in per_round[0]}
            totals = [sum(p.values()) for p in per_round]
            # Compilation: the first 1-step call against steady 1-step calls.
            compile_s = compile_seconds(one.first_s, statistics.median(one.total))
            peak = max(one.peak_mem_bytes, two.peak_mem_bytes)
            out[name] = Timing(infos[name], batch, protocol, totals, stages, peak, compile_s)
        return out

    def attempt_keyed(members):
        try:
            return attempt(members)
        except RunFailed as failure:
            raise RunFailed(failure.model[0], failure.error) from failure.error

    return _without_failures(dict(group), attempt_keyed, {}, infos.__getitem__, batch, protocol)


def time_pipeline_extrapolated(run: Callable[[int, int, Callable], Any], info: RowInfo, *,
                               full_steps: dict[str, int], batch_sizes: list[int], runs: int = 3,
                               warmup: int = 1) -> list[dict[str, Any]]:
    """Rows of one model at each batch size under the extrapolated protocol (see time_extrapolated)."""
    return [row for batch in batch_sizes for row in
            time_extrapolated({info.model: (info, run, full_steps)}, batch=batch, runs=runs,
                              warmup=warmup)[info.model].rows()]


def time_per_stage(plans: Mapping[str, tuple[Any, Mapping[int, RowInfo]]], *, resolutions: Sequence[int],
                   batch_sizes: Sequence[int], runs: int = 3, warmup: int = 1,
                   deadline: float | None = None) -> dict[tuple[str, int, int], Timing]:
    """The per_stage protocol (bench/latency/stagewise.py) over a group of models: {(model, resolution, batch): Timing}.

    plans: model -> (its StagePlan, {resolution: RowInfo}). Role by role, the role's modules of every model
    are built, timed at every resolution and batch size in rounds (models in turn), then released. A model's
    time in round r is the sum over roles and parts of count x that part's time in round r.

    Where the role's weights of the whole group would take more than WEIGHT_SHARE of the memory available
    (counted before anything is allocated; the rest is for activations, which at 1024 px take more than the
    weights), the models are built and timed one at a time instead, and their protocol says so: rounds are then
    not interleaved for that role, but the run is not killed for memory (the Imagen proxy's generator at 1024
    beside Muse-3B's needs more than 24 GB).
    """
    first_info = next(iter(next(iter(plans.values()))[1].values()))
    device = first_info.device
    protocol = (f"per_stage: full forwards of each part timed in {runs} rounds after {warmup} warm-up round(s), "
                "one role (text encoder, generator, image decoder) in memory at a time, models in turn within "
                "each round; a generation = sum of count x time per part (bench/latency/stagewise.py); "
                f"{clock_name(device)}; median and p90 over rounds")
    collected: dict[tuple[str, int, int], dict[str, list[float]]] = {}
    over: set[tuple[str, int, int]] = set()
    peaks: dict[tuple[str, int, int], int] = {}
    in_turn: dict[str, list[str]] = {}  # model -> roles it was timed alone in
    for role in ROLES:
        members = {name: plan.roles[role] for name, (plan, _) in plans.items() if role in plan.roles}
        if not members:
            continue
        needs = {name: [r for r in resolutions if r in plans[name][1]] for name in members}
        for group in _groups_that_fit(role, members, needs, device):
            if len(group) < len(members):
                for name in group:
                    in_turn.setdefault(name, []).append(role)
            _time_role_group(role, group, needs, plans, resolutions=resolutions, batch_sizes=batch_sizes,
                             runs=runs, warmup=warmup, deadline=deadline, collected=collected, over=over, peaks=peaks)
    out = {}
    for name, (_, infos) in plans.items():
        note = (f"; {' and '.join(in_turn[name])} timed alone, not interleaved: the group's weights would take more "
                f"than {WEIGHT_SHARE:.0%} of the memory available" if name in in_turn else "")
        for resolution, info in infos.items():
            for batch in batch_sizes:
                key = (name, resolution, batch)
                if key in over or key not in collected:
                    out[key] = Timing(info, batch, protocol + note, status="over_budget")
                    continue
                stages = collected[key]
                totals = [sum(values) for values in zip(*stages.values())]
                out[key] = Timing(info, batch, protocol + note, totals, stages, peaks.get(key))
    return out


# The share of available memory a group's weights of one role may take for its models to be timed together.
WEIGHT_SHARE = 0.5


def _groups_that_fit(role: str, members: Mapping[str, Any], needs: Mapping[str, list[int]], device) -> list[list[str]]:
    """The whole group, or one model at a time where its weights for `role` (counted on the meta device, shared
    modules once) would take more than WEIGHT_SHARE of the available memory."""
    available = available_memory_bytes(device)
    if len(members) < 2 or available is None:
        return [list(members)]
    shared: dict = {}
    with counting_weights() as tally:
        for name, build in members.items():
            build(needs[name], shared)
    if tally[0] <= WEIGHT_SHARE * available:
        return [list(members)]
    log.info("per_stage: the %s of %s would take %.1f GB of %.1f GB available: timing them one at a time", role,
             ", ".join(members), tally[0] / 1e9, available / 1e9)
    return [[name] for name in members]


def _time_role_group(role: str, group: list[str], needs, plans, *, resolutions, batch_sizes, runs, warmup,
                     deadline, collected, over, peaks) -> None:
    """Build one role of the models of `group`, time it in rounds at every resolution and batch, release it."""
    device = next(iter(next(iter(plans.values()))[1].values())).device
    log.info("per_stage: building the %s of %s", role, ", ".join(group))
    shared: dict = {}  # modules of identical shape, built once for the group (bench.latency.stagewise.shared_module)
    built = {name: plans[name][0].roles[role](needs[name], shared) for name in group}
    for resolution in resolutions:
        for batch in batch_sizes:
            parts = {name: at(resolution, batch) for name, at in built.items()
                     if resolution in plans[name][1] and (name, resolution, batch) not in over}
            parts = {name: p for name, p in parts.items() if p}
            if not parts:
                continue
            reset_peak_memory(device)
            timed = time_role(parts, device=device, warmup=warmup, runs=runs, deadline=deadline)
            for name in parts:
                key = (name, resolution, batch)
                if timed is None:
                    over.add(key)
                    log.warning("per_stage: %s at %d px, batch %d not timed: latency.budget_s would be passed",
                                name, resolution, batch)
                    continue
                collected.setdefault(key, {}).update(timed[name].stage_rounds())
                peaks[key] = max(peaks.get(key, 0), peak_memory_bytes(device))
            # The parts hold the role's modules (their calls close over them): drop them with the role.
            del parts, timed
    built.clear()
    shared.clear()
    release_memory(device)


def release_memory(device) -> None:
    """Return the memory of models just dropped before the next are built (paper-size models fill a GPU)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def latency_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text with the COLUMNS header (missing values empty)."""
    return csv_text(rows, COLUMNS)


def write_latency_csv(path, rows: list[dict[str, Any]]):
    """Write latency.csv atomically."""
    return write_csv(path, rows, COLUMNS)


def compare_groups(models: Sequence[str], pairs: Sequence[Sequence[str]], *, pairwise: bool = False) -> list[list[str]]:
    """The models in timing groups, each timed in rounds together: models linked by a compared pair (directly or
    through others) share a group; every other model is a group of its own. Order follows `models`.

    pairwise: every compared pair is a group of its own (a model in several pairs is timed with each partner),
    for the per_stage protocol, where a group's modules of one role must fit in memory at once: Table 3's five
    paper-size models together would need 22 GB for their generators alone.
    """
    if pairwise:
        paired = {m for pair in pairs for m in pair}
        groups = [sorted(pair, key=list(models).index) for pair in pairs]
        return groups + [[m] for m in models if m not in paired]
    group_of = {m: {m} for m in models}
    for pair in pairs:
        a, b = pair
        if a in group_of and b in group_of and group_of[a] is not group_of[b]:
            merged = group_of[a] | group_of[b]
            for m in merged:
                group_of[m] = merged
    groups, seen = [], set()
    for m in models:
        if m not in seen:
            members = [x for x in models if x in group_of[m]]
            seen.update(members)
            groups.append(members)
    return groups


def deadline_from(budget_s: float | None) -> float | None:
    """A time.monotonic() deadline `budget_s` from now, or None for no budget."""
    return None if budget_s is None else time.monotonic() + budget_s
