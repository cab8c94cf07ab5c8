"""The jobs `muse-bench` runs (config key `job`), one module each: edit, generate, latency, prepare, sweep, train
and the default job that strings them together. Each is `run_<name>(cfg, *, run_dir, experiment, overrides) -> results path`.
Helpers the jobs share live beside them: checks (settings checked before writing), generation (resumable
samples), distributed (torchrun / SLURM)."""

from bench.core.registry import Registry

JOBS = Registry("job", {
    "default": "bench.jobs.default:run_default",
    "edit": "bench.jobs.edit:run_edit",
    "generate": "bench.jobs.generate:run_generation",
    "latency": "bench.jobs.latency:run_latency",
    "prepare": "bench.jobs.prepare:run_prepare",
    "sweep": "bench.jobs.sweep:run_sweep",
    "train": "bench.jobs.train:run_train",
})
