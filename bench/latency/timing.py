"""The one timing protocol of muse-bench, used for every model.

A measurement: `warmup` untimed runs of exactly the measured work, then `runs` timed runs. On a GPU each
timed region (a run, a stage) is bracketed by CUDA events and the device is synchronised before the events
are read, so queued work is neither missed nor attributed to the wrong stage, and stages need no
synchronisation between them; elsewhere regions are timed with perf_counter. Stages inside a run (text encoder, base decoding,
super-res, VQ decode; or text encoder, denoiser loop, VAE decode) are timed the same way through
`StageClock`, which models receive as their `stage_timer` hook. Several models are timed in rounds, each round
running every model once (`measure_group`), so that models compared with one another share the machine's
slow and fast spells. Peak memory is CUDA's max allocated bytes
on a GPU, or the process's peak resident set size on a CPU (a whole-process high-water mark: it never
goes down, so read it as an upper bound).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on `device` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Interval:
    """One timed region: CUDA events on a GPU, perf_counter elsewhere. Read `seconds` after the run."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self.start_event.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end_event.record()
        else:
            self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.cuda:
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event) / 1000
        return self.t1 - self.t0


class StageClock:
    """Times named stages within one run: `with clock("base"): ...`. A stage that repeats (a denoiser called
    once per step) is summed. Read `seconds` after the run."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.intervals: dict[str, list[Interval]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        interval = Interval(self.device)
        interval.start()
        try:
            yield
        finally:
            interval.stop()
            self.intervals[stage].append(interval)

    @property
    def seconds(self) -> dict[str, float]:
        return {stage: sum(i.seconds for i in intervals) for stage, intervals in self.intervals.items()}


def peak_memory_bytes(device: torch.device | str) -> int:
    """CUDA max allocated bytes since the last reset, or the process's peak RSS on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def available_memory_bytes(device: torch.device | str) -> int | None:
    """Memory that can still be allocated: free CUDA memory, or on a CPU the kernel's MemAvailable (Linux);
    None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Measurement:
    """Timed runs of one configuration: end-to-end seconds per run and per-stage seconds per run."""

    total: list[float]
    stages: dict[str, list[float]] = field(default_factory=dict)
    peak_mem_bytes: int = 0
    first_s: float | None = None  # the first warm-up run (with torch.compile: compilation included)

    def summary(self, stage: str = "total") -> dict[str, float]:
        values = self.total if stage == "total" else self.stages[stage]
        return {"n_runs": len(values), "median_s": statistics.median(values), "p90_s": percentile(values, 90)}


def timed_run(run: Callable[[Callable[[str], Any]], Any], device: torch.device) -> tuple[float, dict[str, float]]:
    """One run, bracketed by synchronisation: (end-to-end seconds, seconds per stage)."""
    clock = StageClock(device)
    synchronize(device)  # nothing queued before the run counts towards it
    total = Interval(device)
    total.start()
    run(clock)
    total.stop()
    synchronize(device)
    return total.seconds, clock.seconds


class RunFailed(Exception):
    """A model of a timed group raised: `model` says which, the original error is the cause."""

    def __init__(self, model: str, error: BaseException):
        super().__init__(f"{model}: {type(error).__name__}: {error}")
        self.model = model
        self.error = error


def measure_group(runs_by_model: dict[str, Callable[[Callable[[str], Any]], Any]], *, device: torch.device | str,
                  warmup: int = 1, runs: int = 3) -> dict[str, Measurement]:
    """Time several models in rounds: `warmup` untimed rounds, then `runs` timed rounds, each running every model
    once in the given order (A B A B ...), so a slow spell of a shared machine falls on every model of the
    group alike and ratios taken per round cancel it. With one model this is the plain protocol: warm-up
    runs of exactly the measured work, then timed runs.

    Each `run` receives a stage timer (a StageClock). An error in a run is raised as RunFailed naming the model.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    device = torch.device(device)
    out = {name: Measurement([], {}) for name in runs_by_model}

    def attempt(name, run):
        try:
            return timed_run(run, device)
        except Exception as err:  # noqa: BLE001 - re-raised with the model's name
            raise RunFailed(name, err) from err

    for i in range(warmup):
        for name, run in runs_by_model.items():
            seconds, _ = attempt(name, run)
            if i == 0:
                out[name].first_s = seconds
    stages: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in runs_by_model}
    for _ in range(runs):
        for name, run in runs_by_model.items():
            reset_peak_memory(device)
            seconds, by_stage = attempt(name, run)
            out[name].total.append(seconds)
            for stage, value in by_stage.items():
                stages[name][stage].append(value)
            out[name].peak_mem_bytes = max(out[name].peak_mem_bytes, peak_memory_bytes(device))
    for name in runs_by_model:
        out[name].stages = dict(stages[name])
    return out


def measure(run: Callable[[Callable[[str], Any]], Any], *, device: torch.device | str, warmup: int = 1,
            runs: int = 3) -> Measurement:
    """Time `run(stage_timer)`: `warmup` untimed calls, then `runs` timed ones (measure_group of one model).

    `run` receives a stage timer (a StageClock) to bracket its stages with; the end-to-end time of each run
    is bracketed by synchronisation as well.
    """
    try:
        return measure_group({"run": run}, device=device, warmup=warmup, runs=runs)["run"]
    except RunFailed as failed:
        raise failed.error from None
