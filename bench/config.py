"""Typed schema of the `muse-bench` configuration, registered in Hydra's ConfigStore.

conf/config.yaml starts its defaults list with `muse_bench_schema`, so every YAML preset in conf/
(model/, dataset/, experiment/) is merged onto these dataclasses: an unknown key or a value of the
wrong type is refused at composition time instead of being silently accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_NAME = "muse_bench_schema"


@dataclass
class ModelConfig:
    """Which Muse pipeline to run and where its weights come from."""

    # A name of muse.presets.PRESET_NAMES; also the label of the model in samples/ and results.json.
    name: str = MISSING
    # A local checkpoint folder or a hub id for MusePipeline.from_pretrained; null = random init.
    pretrained: str | None = None
    # The output resolutions this pipeline supports (256: base model; 512: base + super-res).
    resolution: list[int] = field(default_factory=lambda: [256])
    # Seed of the random weights when pretrained is null, so that runs of a random-init model are
    # comparable across processes; separate from the sampling seed.
    init_seed: int = 0


@dataclass
class DatasetConfig:
    """A prompt dataset of bench.datasets and the subset of it to use."""

    name: str = MISSING
    # Keep the first N prompts; null = the whole dataset.
    limit: int | None = None
    # A local file that replaces the dataset's default one; null = the default.
    path: str | None = None


@dataclass
class LatencyConfig:
    """The latency job (bench/latency.py): which presets, sizes and batch sizes, under which protocol."""

    # Preset names of muse.presets.PRESET_NAMES, timed one after another into one latency.csv.
    models: list[str] = field(default_factory=lambda: ["muse-tiny"])
    resolutions: list[int] = field(default_factory=lambda: [256, 512])
    # A sweep: Muse-style models win by batching, so one size says little.
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2])
    runs: int = 3
    warmup: int = 1
    # float32, bfloat16 or float16.
    dtype: str = "float32"
    # Muse presets: full (as published) or scaled (widths / 16, same layers, tokens and steps; bench/profiles.py).
    profile: str = "full"
    # measured (every step run) or extrapolated (decoding loops timed at 1 and 2 steps, fitted, evaluated at
    # the real step counts: for models too slow to run whole here).
    protocol: str = "measured"
    # torch.compile the per-step forwards and the image decoders; the first warm-up run's excess over the
    # steady state is reported apart (compile_s). mode reduce-overhead captures CUDA graphs on a GPU.
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    # Stable Diffusion v1.4 (model name sd-v1-4): profile full, scaled or tiny (bench/diffusion.py), or a
    # local diffusers folder of its weights.
    sd_profile: str = "tiny"
    sd_pretrained: str | None = None
    # [slower, faster] model pairs whose end-to-end time ratio results.json reports (latency_ratios).
    compare: list[list[str]] = field(default_factory=list)


@dataclass
class BenchConfig:
    """The whole job configuration; the experiment presets set its fields."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    seed: int = 0
    # "cpu", "cuda", "cuda:N", or "auto" (cuda when available, else cpu).
    device: str = "cpu"
    batch_size: int = 4
    # Resolutions to generate at; each must be one of model.resolution.
    resolutions: list[int] = field(default_factory=lambda: [256])
    # Which job runs: "generate" (samples + manifest + results.json) or "latency" (latency.csv).
    job: str = "generate"
    latency: LatencyConfig = field(default_factory=LatencyConfig)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore; call before hydra.main composes the config."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=BenchConfig)
