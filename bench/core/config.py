"""Typed schema of the `muse-bench` configuration, registered in Hydra's ConfigStore.

conf/config.yaml starts its defaults list with `muse_bench_schema`, so every YAML preset in conf/
(model/, dataset/, experiment/) is merged onto these dataclasses: an unknown key or a value of the
wrong type is refused at composition time instead of being silently accepted. Every closed choice is an
enum (a StrEnum: it compares, hashes, formats and serialises as its string), so Hydra refuses a wrong value
when it composes the config, with the allowed list; open choices (device, compile backend) stay strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_NAME = "muse_bench_schema"


def _choices(name: str, values: str) -> type[StrEnum]:
    # The functional form: members are named by the very strings users type (some hold a hyphen), which is what
    # OmegaConf matches an override against.
    return StrEnum(name, [(v, v) for v in values.split()])


Job = _choices("Job", "default edit generate latency prepare sweep train")
Family = _choices("Family", "muse stable-diffusion")
Profile = _choices("Profile", "full scaled tiny")
Dtype = _choices("Dtype", "float32 bfloat16 float16")
LatencyProtocol = _choices("LatencyProtocol", "measured extrapolated per_stage")
CompileMode = _choices("CompileMode", "default reduce-overhead max-autotune max-autotune-no-cudagraphs")
FidMode = _choices("FidMode", "clean legacy_pytorch legacy_tensorflow")
ReferenceSet = _choices("ReferenceSet", "all matched")
Metric = _choices("Metric", "fid kid prdc clip_score cmmd parti win_rate judge judge_win_rate")


@dataclass
class ModelConfig:
    """Which Muse pipeline to run and where its weights come from."""

    # A name of muse.presets.PRESET_NAMES; also the label of the model in samples/ and results.json.
    name: str = MISSING
    # muse (Muse and aMUSEd through MusePipeline) or stable-diffusion (diffusers' StableDiffusionPipeline).
    family: Family = Family.muse
    # A local checkpoint folder or a hub id for MusePipeline.from_pretrained; null = random init.
    pretrained: str | None = None
    # A training recipe of the learned shapes world (bench/train/recipe.py, e.g. shapes): the weights are that
    # world's, trained into the cache ($MUSE_BENCH_CACHE/worlds/, default ~/.cache/muse-bench) first if absent.
    world: str | None = None
    # The muse preset whose architecture to build with random weights when neither pretrained nor world is set;
    # null = `name` (so one architecture can run under two names, e.g. trained and random side by side).
    preset: str | None = None
    # The output resolutions this pipeline supports (256: base model; 512: base + super-res).
    resolution: list[int] = field(default_factory=lambda: [256])
    # The resolutions the model was trained at (null = all of `resolution`). An image asked for at another one is
    # made at a native one and resized with PIL bicubic (SD v1.4: made at 512, resized to 256, as published SD
    # FIDs at 256 are); the protocol records generated_at and resized_with.
    native_resolutions: list[int] | None = None
    # Seed of the random weights when pretrained is null, so that runs of a random-init model are
    # comparable across processes; separate from the sampling seed.
    init_seed: int = 0
    # Stable Diffusion models (name sd-v1-4...): full (SD v1.4's published shape), scaled or tiny
    # (bench/models/diffusion.py); random weights unless pretrained is set. Muse presets ignore it.
    profile: Profile = Profile.full
    # Override the model's own decoding steps (base stage for Muse) and guidance scale; null = its defaults.
    # guidance_scale is the classifier-free guidance scale g for every family (diffusers', aMUSEd's; Muse's
    # t = g - 1; 1 = no guidance, below 1 refused). A guidance sweep (the paper's Figure 8) is a multirun over it.
    steps: int | None = None
    guidance_scale: float | None = None
    # Override the base stage's choice temperature (the Gumbel temperature of MaskGIT's re-masking choice, >= 0;
    # the stage keeps its temperature schedule) and masking schedule (cosine, linear, arccos or powP with P > 0,
    # e.g. pow2); null = the preset's. Muse family only, and the base stage only, as steps (MusePipeline.stage_samplers).
    choice_temperature: float | None = None
    schedule: str | None = None
    # Which tokens each decoding step keeps, in every stage (editing included): confidence (MaskGIT's), halton or
    # halton-random (the 2-D Halton sequence over the token grid, Besnier et al. 2025; muse/sampling.py); null =
    # the preset's (confidence). Muse family only.
    token_order: str | None = None


@dataclass
class DatasetConfig:
    """A prompt dataset of bench.data.prompts and the subset of it to use."""

    name: str = MISSING
    # Keep the first N prompts; null = the whole dataset.
    limit: int | None = None
    # Keep only the prompts of these skills (names of a dataset that labels its prompts with skills: shapes), before
    # `limit`; every prompt keeps its index in the full list. null = every prompt.
    skills: list[str] | None = None
    # A local file that replaces the dataset's default one; null = the default. For coco30k it may also be a
    # captions_<split>.json, from which one caption per image is drawn with caption_seed.
    path: str | None = None
    caption_seed: int = 0
    # Reference images for FID, KID and CMMD (bench/data/references.py): a folder of images (COCO val2014, a
    # plain folder), an img2dataset output folder or folder of .tar shards (CC3M); null = none (those
    # metrics are then reported as skipped, with the reason).
    reference_dir: str | None = None
    # COCO: captions_valXXXX.json that lists the reference image files by id (optional).
    captions_file: str | None = None
    # COCO: "all" (every image of the split, the Imagen convention) or "matched" (the selected captions' images).
    reference_set: ReferenceSet = ReferenceSet.all
    # Keep at most N reference images (a deterministic subset); null = all.
    reference_limit: int | None = None


@dataclass
class LatencyConfig:
    """The latency job (bench/latency/measure.py): which presets, sizes and batch sizes, under which protocol."""

    # Preset names of muse.presets.PRESET_NAMES, timed one after another into one latency.csv.
    models: list[str] = field(default_factory=lambda: ["muse-tiny"])
    resolutions: list[int] = field(default_factory=lambda: [256, 512])
    # A sweep: Muse-style models win by batching, so one size says little.
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2])
    runs: int = 3
    warmup: int = 1
    # float32, bfloat16 or float16.
    dtype: Dtype = Dtype.float32
    # Muse presets: full (as published) or scaled (widths / 16, same layers, tokens and steps; bench/models/profiles.py).
    profile: Profile = Profile.full
    # measured (every step run), extrapolated (decoding loops timed at 1 and 2 steps, fitted, evaluated at the
    # real step counts) or per_stage (a few full-size forwards of each part, built one role at a time so a
    # paper-size model fits in 24 GB; bench/latency/stagewise.py): the last two for models too slow to run whole here.
    protocol: LatencyProtocol = LatencyProtocol.measured
    # torch.compile the per-step forwards and the image decoders; the first warm-up run's excess over the
    # steady state is reported apart (compile_s). mode reduce-overhead captures CUDA graphs on a GPU.
    compile: bool = False
    # Time every model eager, then compiled (compile_mode, compile_backend), in one run.
    eager_and_compiled: bool = False
    compile_mode: CompileMode = CompileMode["default"]
    compile_backend: str = "inductor"
    # Stable Diffusion v1.4 (model name sd-v1-4): profile full, scaled or tiny (bench/models/diffusion.py), or a
    # local diffusers folder of its weights.
    sd_profile: Profile = Profile.tiny
    sd_pretrained: str | None = None
    # [slower, faster] model pairs whose end-to-end time ratio results.json reports (latency_ratios). The models
    # of a pair are timed in rounds, back to back; the ratio is the median of per-round ratios, with its range.
    compare: list[list[str]] = field(default_factory=list)
    # Seconds after which no new configuration is started (those left say over_budget); null = no limit.
    budget_s: float | None = None


@dataclass
class TrainConfig:
    """The train job (bench/train/): which recipe of the shapes world to train into the cache."""

    # A name of bench.train.recipe.RECIPES: shapes (what model=muse-shapes uses) or shapes-ci (the tests' shorter one).
    recipe: str = "shapes"


@dataclass
class SweepConfig:
    """The sweep job (bench/jobs/sweep.py): one decoding setting of the model run at several values."""

    # A model setting of bench.jobs.sweep.SWEEPABLE: guidance_scale (the paper's Figure 8), steps,
    # choice_temperature or schedule.
    key: str = "guidance_scale"
    # The values of `key` to run (named points: `values` is a method of every Hydra config node).
    points: list[Any] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 5.0, 8.0])


@dataclass
class EditConfig:
    """The edit job (bench/jobs/edit.py): Muse's zero-shot editing on the shapes world, scored by its exact judge
    (bench/shapes/editing.py)."""

    # Any of inpaint, outpaint, edit (mask-free editing: colour and shape edits, reported apart).
    tasks: list[str] = field(default_factory=lambda: ["inpaint", "outpaint", "edit"])
    # Trials per task (per kind of edit): the first N that fit the task, over test scenes in order.
    trials: int = 20
    # The scenes' split: test (default), validation or train.
    split: str = "test"
    # Resolution of the scenes and the edits (64: base, then super-res; the judge reads objects from 64 px on).
    resolution: int = 64
    # The CFG scale g of every stage of every task; null = the model's own.
    guidance_scale: float | None = None
    # Mask-free editing (muse.editing.edit): resampling iterations, share of base tokens resampled in each, top-k.
    iterations: int = 30
    resample_fraction: float = 0.08
    top_k: int | None = 3
    # Trials per task and model kept as example images (original | mask | result) for the report.
    examples: int = 4


@dataclass
class FidConfig:
    """FID and KID through clean-fid (bench/metrics/fid.py, bench/metrics/features.py)."""

    # clean (default), legacy_pytorch or legacy_tensorflow: clean-fid's resize and Inception port.
    mode: FidMode = FidMode.clean
    # null = clean-fid's Inception (inception-2015-12-05.pt); or {_target_: ...} building an nn.Module that maps
    # [N,3,H,W] floats in [0,255] to [N,D] features (clean-fid's custom_feat_extractor); or a TorchScript path.
    feature_extractor: Any = None
    # A local copy of inception-2015-12-05.pt (checked against its sha256) for machines without a network.
    inception_path: str | None = None
    # Fetch missing Inception weights once (clean-fid's URL, sha256-checked); false = fail with how to supply them.
    download: bool = True
    batch_size: int = 32
    # Below these counts FID's 2048-d covariance is rank-deficient / KID is noisy: results are flagged.
    min_samples: int = 2048
    kid_min_samples: int = 1000
    kid_subsets: int = 100
    kid_subset_size: int = 1000


@dataclass
class ClipConfig:
    """CLIP score and the CLIP judge through open_clip (bench/metrics/clip_score.py, bench/metrics/clip_model.py)."""

    arch: str = "ViT-L-14"
    # An open_clip pretrained tag, or a local checkpoint file; null = random weights (smoke runs only).
    pretrained: str | None = "openai"
    # null = as the pretrained tag says (OpenAI's weights use QuickGELU).
    quick_gelu: bool | None = None
    # Where open_clip looks for / stores weights; null = the Hugging Face cache (HF_HOME).
    cache_dir: str | None = None
    # null = open_clip's (arch, pretrained); or {_target_: ...} returning a bench.metrics.clip_model.ClipScorer.
    model: Any = None
    batch_size: int = 32


@dataclass
class CmmdConfig:
    """CMMD (bench/metrics/cmmd.py) over the image embeddings of its own CLIP model, as google-research's cmmd."""

    # The reference's CLIP ViT-L/14 at 336 px with OpenAI weights; same keys as eval.clip. Images are resized
    # whole (bicubic, no crop) to the model's input size. Loaded only when CMMD is computed (reference images set).
    arch: str = "ViT-L-14-336"
    pretrained: str | None = "openai"
    quick_gelu: bool | None = None
    cache_dir: str | None = None
    model: Any = None
    batch_size: int = 32
    sigma: float = 10.0
    scale: float = 1000.0
    # The estimator is biased at small counts: the bias estimate is flagged when above this fraction of the value.
    max_relative_bias: float = 0.01


@dataclass
class PrdcConfig:
    """Precision, recall, density and coverage (bench/metrics/prdc.py) on FID's features (eval.fid)."""

    # The k of the k-nearest-neighbour balls: 5 as Naeem et al. 2020 recommend (Kynkaanniemi et al. 2019 use 3).
    nearest_k: int = 5
    # Below this many samples a side results are flagged (the authors report at 10,000).
    min_samples: int = 10000


@dataclass
class WinRateConfig:
    """The PartiPrompts alignment comparison (bench/metrics/parti.py): best-of-K per prompt, then a pairwise judge."""

    # Judge score differences within this margin count as ties ("no consensus"); also the CLIP judge's tie margin
    # of judge_win_rate (bench/metrics/judge_win_rate.py).
    margin: float = 0.0
    # null = CLIP cosine with the prompt; or {_target_: ...} a judge callable (bench/metrics/parti.py).
    judge: Any = None


@dataclass
class EvalConfig:
    """Which metrics the generate job computes on its samples, and how."""

    # Any of fid, kid, prdc (precision, recall, density, coverage on FID's features), clip_score, cmmd, parti
    # (per-category / per-challenge CLIP), win_rate, judge (the shapes world's exact judge), judge_win_rate (two
    # models of the shapes world by the exact judge and by CLIP).
    metrics: list[Metric] = field(default_factory=list)
    # Images per prompt (the paper's PartiPrompts protocol draws 16 and keeps the best by CLIP); replica k
    # draws from (seed, index, k), and replica 0 is the image a one-per-prompt run makes.
    samples_per_prompt: int = 1
    # A second model for win_rate and judge_win_rate, by the name of its conf/model/ preset (e.g. sd-v1-4,
    # muse-shapes-short); generated into its own samples/ folder in the same run. null = none.
    compare_to: str | None = None
    # Compute features in-process as images are generated; false = re-read the written PNGs afterwards.
    stream: bool = True
    # Resolution the metrics use when several are generated; null = the first of resolutions.
    resolution: int | None = None
    # Where reference features are cached (keyed by every choice that moves them).
    cache_dir: str = "${oc.env:MUSE_BENCH_CACHE,'~/.cache/muse-bench'}"
    # Bootstrap resamples for the standard error of FID and CLIP score, drawn from `seed`: prompts are resampled,
    # each with all its images (0 = none for FID; CLIP score then uses std of per-prompt means / sqrt(n_prompts)).
    bootstrap: int = 100
    fid: FidConfig = field(default_factory=FidConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    cmmd: CmmdConfig = field(default_factory=CmmdConfig)
    prdc: PrdcConfig = field(default_factory=PrdcConfig)
    win_rate: WinRateConfig = field(default_factory=WinRateConfig)


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
    # Which job runs: "default" (latency, a small generation, metrics, report.md), "generate" (samples +
    # manifest + metrics in results.json), "latency" (latency.csv), "prepare" (a dataset's reference images),
    # "sweep" (one decoding setting at several values), "train" (a shapes world) or "edit" (editing success rates).
    job: Job = Job.generate
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    # The learned shapes world (a recipe of bench/train/recipe.py) that model=muse-shapes and the shapes metrics
    # (conf/eval/shapes.yaml) use: shapes, or shapes-ci (the test suite's shorter training).
    world: str = "shapes"
    # The default job also draws the decoding trajectories (what is unmasked at each step) of its first N samples.
    trajectories: int = 2
    # job=prepare downloads a dataset's reference images under <data_root>/<dataset name> (bench/data/download.py).
    data_root: str = "${oc.env:MUSE_BENCH_DATA,'~/muse-bench-data'}"
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore; call before hydra.main composes the config."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=BenchConfig)
