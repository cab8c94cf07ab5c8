"""Latency of text-to-image pipelines under the one timing protocol (bench/timing.py), as latency.csv rows.

A row is one (model, resolution, batch size, stage) under one protocol: `stage` is a pipeline stage
(text_encoder, base, superres, decoder for Muse) or `total` (end to end). Every row says whether the
weights were random and which profile was timed (`tiny`: a test-size model, never a paper number), the
FLOPs per image and, where the device's peak is known, the percent of the compute floor reached.
Out-of-memory at some batch size is recorded in that row (status "oom") and the sweep goes on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.results import csv_text, write_csv
from bench.timing import measure, percentile, reset_peak_memory

# CONTRACT.md's latency.csv columns, then ours: percent of the compute floor, run status, timing protocol.
COLUMNS = (
    "model", "weights", "profile", "resolution", "batch_size", "steps", "stage", "n_runs", "median_s", "p90_s",
    "images_per_s", "peak_mem_bytes", "params", "flops", "device", "dtype", "compiled",
    "percent_of_floor", "status", "protocol", "compile_s",
)

# Dense peak FLOP/s by device name fragment and dtype: the compute floor of percent_of_floor.
# H100: REFERENCE.md section 6 (790-800 TFLOP/s bf16 measured on 8192^3 products); A100: datasheet.
PEAK_FLOPS = {
    ("H100", torch.bfloat16): 790e12, ("H100", torch.float16): 790e12,
    ("A100", torch.bfloat16): 312e12, ("A100", torch.float16): 312e12,
}


def peak_flops(device_name: str, dtype: torch.dtype) -> float | None:
    """The dense peak FLOP/s of a known device at `dtype`, or None where it is not known (CPUs, fp32)."""
    for (fragment, kind), value in PEAK_FLOPS.items():
        if fragment in device_name and kind == dtype:
            return value
    return None


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def clock_name(device: torch.device | str) -> str:
    """How a row's time was taken, for its protocol."""
    return "CUDA events, synchronised" if torch.device(device).type == "cuda" else "perf_counter"


def compile_seconds(first_s: float | None, steady_s: float) -> float | None:
    """Compilation time, reported apart from latency: the first call's excess over a steady-state call."""
    return None if first_s is None else max(first_s - steady_s, 0.0)


def _is_oom(err: BaseException) -> bool:
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

    def base(self, protocol: str) -> dict[str, Any]:
        return dict(model=self.model, weights=self.weights, profile=self.profile, resolution=self.resolution,
                    steps=self.steps, device=device_name(self.device), dtype=str(self.dtype).removeprefix("torch."),
                    compiled=self.compiled, params=self.params, protocol=protocol)


def _rows(info: RowInfo, protocol: str, batch: int, times: dict[str, dict[str, float]], n_runs: int,
          peak_mem: int, compile_s: float | None) -> list[dict[str, Any]]:
    """One row per stage of `times` ({stage: {median_s, p90_s}}, "total" included) at one batch size."""
    peak = peak_flops(device_name(info.device), info.dtype)
    compile_s = compile_s if info.compiled else None
    rows = []
    for stage, values in times.items():
        flops = info.flops_per_image.get(stage)
        floor = 100 * flops * batch / (values["median_s"] * peak) if peak and flops else None
        rows.append(info.base(protocol) | values | dict(
            batch_size=batch, stage=stage, n_runs=n_runs, images_per_s=batch / values["median_s"],
            peak_mem_bytes=peak_mem, flops=flops, percent_of_floor=floor, status="ok",
            compile_s=compile_s if stage == "total" else None,
        ))
    return rows


def _oom_row(info: RowInfo, protocol: str, batch: int, err: BaseException) -> dict[str, Any]:
    """The row of a batch size that ran out of memory; anything else than out-of-memory is re-raised."""
    if not _is_oom(err):
        raise err
    if torch.device(info.device).type == "cuda":
        torch.cuda.empty_cache()
    return info.base(protocol) | dict(batch_size=batch, stage="total", status="oom")


def time_pipeline(run: Callable[[int, Callable], Any], info: RowInfo, *, batch_sizes: list[int], runs: int = 3,
                  warmup: int = 1) -> list[dict[str, Any]]:
    """Time `run(batch_size, stage_timer)` at each batch size; one row per stage and one `total` row.

    A batch size that runs out of memory gives one `total` row with status "oom" and the sweep goes on.
    """
    protocol = f"measured; warmup={warmup} runs={runs}; {clock_name(info.device)}; median and p90 of runs"
    rows = []
    for batch in batch_sizes:
        try:
            result = measure(lambda clock: run(batch, clock), device=info.device, warmup=warmup, runs=runs)
        except Exception as err:  # noqa: BLE001 - _oom_row re-raises all but out-of-memory
            rows.append(_oom_row(info, protocol, batch, err))
            continue
        times = {stage: result.summary(stage) for stage in [*result.stages, "total"]}
        for values in times.values():
            values.pop("n_runs")
        compile_s = compile_seconds(result.first_s, times["total"]["median_s"])
        rows += _rows(info, protocol, batch, times, runs, result.peak_mem_bytes, compile_s)
    return rows


def extrapolate(one_step_s: float, two_steps_s: float, steps: int) -> float:
    """A stage's time at `steps` from its times at 1 and 2 steps: fixed + steps x per-step."""
    per_step = max(two_steps_s - one_step_s, 0.0)  # noise can make the difference negative on a busy machine
    return (one_step_s - per_step) + steps * per_step


def time_pipeline_extrapolated(run: Callable[[int, int, Callable], Any], info: RowInfo, *,
                               full_steps: dict[str, int], batch_sizes: list[int], runs: int = 3,
                               warmup: int = 1) -> list[dict[str, Any]]:
    """Time `run(batch_size, steps, stage_timer)` at 1 and 2 steps and extrapolate to the real step counts.

    Runs come in interleaved pairs (1 step, then 2 steps), so a slow spell of a shared machine hits both
    halves of a pair rather than one side of the fit. For each pair and each decoding stage (full_steps),
    the stage time is fitted as fixed + steps x per-step and evaluated at full_steps[stage]; other stages
    (text encoder, VQ/VAE decode) take the mean of the pair. Rows report the median and p90 over pairs,
    so one disturbed pair of three moves nothing: a decoding step costs the same at every step (fixed token
    counts), so two points fix the line, but its noise is multiplied by the step count.
    """
    protocol = (f"extrapolated: {runs} interleaved pairs of runs at 1 and 2 steps (after {warmup} warm-up pairs), "
                f"each decoding stage fitted as fixed + per-step per pair and evaluated at {dict(full_steps)} steps; "
                f"median and p90 over pairs; {clock_name(info.device)}")
    rows = []
    for batch in batch_sizes:
        try:
            first = None
            for i in range(warmup):
                for k in (1, 2):
                    warm = measure(lambda clock, k=k: run(batch, k, clock), device=info.device, warmup=0, runs=1)
                    if first is None:
                        first = warm.total[0]
            reset_peak_memory(info.device)
            pairs = [[measure(lambda clock, k=k: run(batch, k, clock), device=info.device, warmup=0, runs=1)
                      for k in (1, 2)] for _ in range(runs)]
        except Exception as err:  # noqa: BLE001 - _oom_row re-raises all but out-of-memory
            rows.append(_oom_row(info, protocol, batch, err))
            continue
        per_pair = []
        for one, two in pairs:
            stages = {}
            for stage in one.stages:
                t1, t2 = one.stages[stage][0], two.stages[stage][0]
                stages[stage] = extrapolate(t1, t2, full_steps[stage]) if stage in full_steps else (t1 + t2) / 2
            stages["total"] = sum(stages.values())
            per_pair.append(stages)
        times = {stage: {"median_s": statistics.median(p[stage] for p in per_pair),
                         "p90_s": percentile([p[stage] for p in per_pair], 90)} for stage in per_pair[0]}
        peak_mem = max(m.peak_mem_bytes for pair in pairs for m in pair)
        # Compilation: the first 1-step call against steady 1-step calls.
        compile_s = compile_seconds(first, statistics.median(one.total[0] for one, _ in pairs))
        rows += _rows(info, protocol, batch, times, runs, peak_mem, compile_s)
    return rows


def latency_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text with the COLUMNS header (missing values empty)."""
    return csv_text(rows, COLUMNS)


def write_latency_csv(path, rows: list[dict[str, Any]]):
    """Write latency.csv atomically."""
    return write_csv(path, rows, COLUMNS)
