"""The generation runner: resumable, atomic, sharded; the same files however a run is cut or split."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.core.config import ModelConfig
from bench.core.errors import BenchError
from bench.core.paths import CONF_DIR
from bench.core.results import write_json
from bench.data.images import resize_generated
from bench.data.prompts import load_dataset
from bench.jobs.generate import generate_and_score
from bench.jobs.generation import (
    check_sampling_record,
    generate_samples,
    plan_samples,
    sample_file_name,
    shard,
    write_sampling_record,
)
from bench.models.generators import load_generator

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def generator():
    cfg = OmegaConf.create({"name": "muse-tiny", "family": "muse", "pretrained": None, "init_seed": 0,
                            "steps": 2, "guidance_scale": None})
    return load_generator(cfg, "cpu")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_plan_orders_samples_and_shards_split_it_disjointly():
    records = load_dataset("partiprompts", limit=5)
    plan = plan_samples(records, [256, 512], samples_per_prompt=3)
    assert len(plan) == 5 * 2 * 3
    assert [s.key for s in plan] == sorted(s.key for s in plan)
    assert len({s.file for s in plan}) == len(plan)
    for world in (1, 2, 3, 7):
        shards = [shard(plan, rank, world) for rank in range(world)]
        assert sorted(s.key for part in shards for s in part) == [s.key for s in plan]
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert sample_file_name(3, 512, 2) == "00003-512-k2.png"
    assert plan[1].row(10)["seed"] == 10 and plan[1].row(10)["replica"] == 1


def test_a_killed_run_resumes_to_exactly_the_files_of_an_uninterrupted_run(generator, tmp_path):
    records = load_dataset("partiprompts", limit=5)
    plan = plan_samples(records, [256], samples_per_prompt=2)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    counts = generate_samples(generator.generate, plan, seed=0, batch_size=3, out_dir=whole, progress=False)
    assert (counts["generated"], counts["resumed"]) == (10, 0)
    assert counts["timed"][256][1] == 10 and counts["timed"][256][0] > 0  # every image made is timed

    batches = []

    def killed_after_two_batches(prompts, resolution, seed, indices, replica):
        if len(batches) == 2:
            raise KeyboardInterrupt  # what Ctrl-C or a SLURM preemption looks like to the loop
        batches.append(indices)
        return generator.generate(prompts, resolution, seed, indices, replica)

    with pytest.raises(KeyboardInterrupt):
        generate_samples(killed_after_two_batches, plan, seed=0, batch_size=3, out_dir=cut, progress=False)
    made = sum(map(len, batches))
    assert len(list(cut.glob("*.png"))) == made < len(plan)
    assert not [p for p in cut.iterdir() if p.name.startswith(".")]  # no half-written file

    seen = []
    counts = generate_samples(generator.generate, plan, seed=0, batch_size=2, out_dir=cut, progress=False,
                              on_images=lambda samples, images: seen.extend(s.file for s in samples))
    assert (counts["generated"], counts["resumed"]) == (len(plan) - made, made)
    assert counts["timed"][256][1] == len(plan) - made  # resumed images are not timed: they were not made
    assert sorted(seen) == sorted(s.file for s in plan)  # streamed metrics still see every sample once
    assert digests(cut) == digests(whole)


def test_a_damaged_png_is_made_again(generator, tmp_path):
    plan = plan_samples(load_dataset("partiprompts", limit=2), [256])
    generate_samples(generator.generate, plan, seed=0, batch_size=2, out_dir=tmp_path, progress=False)
    before = digests(tmp_path)
    path = tmp_path / plan[1].file
    path.write_bytes(path.read_bytes()[:200])  # truncated by something outside the runner
    counts = generate_samples(generator.generate, plan, seed=0, batch_size=2, out_dir=tmp_path, progress=False)
    assert (counts["generated"], counts["resumed"]) == (1, 1)
    assert digests(tmp_path) == before


def test_runs_with_different_seeds_share_no_image_and_replica_zero_is_the_one_per_prompt_image(generator, tmp_path):
    records = load_dataset("partiprompts", limit=2)
    folders = {}
    for seed in (0, 1):
        folders[seed] = tmp_path / f"seed{seed}"
        generate_samples(generator.generate, plan_samples(records, [256], samples_per_prompt=3), seed=seed,
                         batch_size=4, out_dir=folders[seed], progress=False)
    shared = set(digests(folders[0]).values()) & set(digests(folders[1]).values())
    assert len(digests(folders[0])) == 6 and not shared  # replica k of seed 0 used to be replica k-1 of seed 1
    single = tmp_path / "single"
    generate_samples(generator.generate, plan_samples(records, [256]), seed=0, batch_size=2, out_dir=single,
                     progress=False)
    assert digests(single) == {name: d for name, d in digests(folders[0]).items() if "-k" not in name}


def test_generated_pixels_do_not_depend_on_the_thread_count(generator):
    # torchrun gives each rank one intra-op thread; a one-process run uses every core. The same tokens must give
    # the same pixels either way (the VQ decoder's float sums otherwise depend on the thread count).
    records = load_dataset("partiprompts", limit=8)
    prompts, indices = [r.prompt for r in records], [r.index for r in records]
    before = torch.get_num_threads()
    pixels = {}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            pixels[threads] = [np.asarray(image) for image in generator.generate(prompts, 256, 0, indices)]
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(pixels[1], pixels[2]))


def test_a_folder_of_an_older_sampling_format_is_refused_saying_what_to_do(tmp_path):
    # What sampling.json held before replicas were drawn from (seed, index, replica): no "format".
    write_json(tmp_path / "sampling.json", {"model": {"name": "muse-tiny"}, "seed": 0, "sampler": {"256": {}}})
    (tmp_path / "00000-k1.png").write_bytes(b"")
    with pytest.raises(BenchError, match=r"format 1, this version writes 2.*seed \+ replica.*new run directory"):
        check_sampling_record(tmp_path, {"model": {"name": "muse-tiny"}, "seed": 0, "sampler": {"256": {}}})


@pytest.mark.parametrize(("name", "override", "expected"), [
    # (g, t) of the first stage; Muse presets are t = 4 (g = 5), aMUSEd's default is g = 10, SD v1.4's g = 7.5.
    ("muse-tiny", None, {"base": (5.0, 4.0), "superres": (5.0, 4.0)}),
    ("muse-tiny", 2.0, {"base": (2.0, 1.0), "superres": (2.0, 1.0)}),
    ("amused-tiny", None, {"base": (10.0, 9.0)}),
    ("amused-tiny", 1.0, {"base": (1.0, 0.0)}),
    ("sd-v1-4-tiny", None, {"denoiser": (7.5, 6.5)}),
    ("sd-v1-4-tiny", 4.0, {"denoiser": (4.0, 3.0)}),
])
def test_protocol_records_guidance_as_the_cfg_scale_and_as_muses_t_for_every_family(name, override, expected):
    from bench.jobs.generate import sampling_protocol
    from muse.sampling import GUIDANCE_CONVENTION

    family = "stable-diffusion" if name.startswith("sd-") else "muse"
    cfg = OmegaConf.create({"name": name, "family": family, "pretrained": None, "init_seed": 0, "profile": "tiny",
                            "resolution": [256, 512], "steps": None, "guidance_scale": override})
    generator = load_generator(cfg, "cpu")
    resolution = 512 if "superres" in expected else 256
    protocol = sampling_protocol(generator, resolution=resolution, seed=0)
    stages = {k: (v["guidance_scale"], v["guidance_t"]) for k, v in protocol["sampler"].items()}
    assert stages == expected
    first = next(iter(expected.values()))
    assert (protocol["guidance"], protocol["guidance_t"]) == first
    assert protocol["guidance_convention"] == GUIDANCE_CONVENTION and "g = 1 + t" in GUIDANCE_CONVENTION
    assert ("batched" if family == "stable-diffusion" else "with 1 thread on a CPU") in protocol["determinism"]


def test_a_guidance_scale_below_one_is_refused_before_anything_is_written(tmp_path):
    from hydra import compose, initialize_config_dir

    from bench.core.paths import CONF_DIR
    from bench.jobs.generate import run_generation
    from muse.errors import MuseInputError

    for model in ("muse-tiny", "sd-v1-4-tiny"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                "experiment=tiny", "job=generate", "eval.metrics=[]", "dataset.limit=1", f"model={model}",
                "model.guidance_scale=0.5"])
        run_dir = tmp_path / model
        run_dir.mkdir()
        with pytest.raises((BenchError, MuseInputError), match=r"model\.guidance_scale=0\.5 .*at least 1"):
            run_generation(cfg, run_dir=run_dir, experiment="test")
        assert not list(run_dir.iterdir())


def test_resuming_with_other_settings_is_refused(tmp_path):
    record = {"model": {"name": "muse-tiny"}, "seed": 0, "sampler": {"256": {"steps": 2}}}
    check_sampling_record(tmp_path, record)
    assert not list(tmp_path.iterdir())  # checking writes nothing
    write_sampling_record(tmp_path, record)
    check_sampling_record(tmp_path, dict(record))  # the same settings: fine
    with pytest.raises(BenchError, match="seed"):
        check_sampling_record(tmp_path, {**record, "seed": 1})
    other = tmp_path / "other"
    other.mkdir()
    (other / "00000.png").write_bytes(b"")
    with pytest.raises(BenchError, match="sampling.json"):
        check_sampling_record(other, record)


def compose_config(*overrides: str):
    """The job config `muse-bench OVERRIDES` runs with, composed in-process by Hydra."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=tiny", "job=generate", "eval.metrics=[]",
                                                        "dataset.limit=1", *overrides])


@pytest.mark.parametrize(("overrides", "key"), [
    (["model.steps=0"], "model.steps"),
    (["model.guidance_scale=-1"], "model.guidance_scale"),
    (["model.guidance_scale=0.5"], "model.guidance_scale"),  # the CFG scale g: 1 is "off", below 1 is refused
    (["model.guidance_scale=nan"], "model.guidance_scale"),
    (["batch_size=0"], "batch_size"),
    (["eval.samples_per_prompt=0"], "eval.samples_per_prompt"),
    (["seed=-1"], "seed"),
    (["resolutions=[]"], "resolutions"),
    (["resolutions=[256,256]"], "resolutions"),
    (["resolutions=[1024]"], "resolutions"),
    (["eval.resolution=512"], "eval.resolution"),
    (["model.native_resolutions=[384]"], "model.native_resolutions"),
    # eval.compare_to's model has no 512: refused before the run's own model makes its 512 samples.
    (["resolutions=[512]", "eval.compare_to=amused-tiny"], "amused-tiny"),
])
def test_a_bad_sampler_setting_is_refused_by_its_key_before_anything_is_written(tmp_path, overrides, key):
    cfg = compose_config(*overrides)
    with pytest.raises(BenchError, match=re.escape(key)):
        generate_and_score(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def preset_generator(name: str, steps: int = 2):
    """The generator of a conf/model/ preset as the job builds it, with few decoding steps."""
    preset = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    return load_generator(OmegaConf.merge(OmegaConf.structured(ModelConfig), preset, {"steps": steps}), "cpu")


def test_stable_diffusion_makes_256_images_at_512_and_resizes_them_with_pil_bicubic():
    sd = preset_generator("sd-v1-4-tiny")
    prompts, indices = ["a red cube on a blue sphere", "an owl"], [3, 8]
    at_256, at_512 = sd.generate(prompts, 256, 0, indices), sd.generate(prompts, 512, 0, indices)
    for small, large in zip(at_256, at_512):
        assert (small.size, large.size) == ((256, 256), (512, 512))
        assert np.array_equal(np.asarray(small), np.asarray(resize_generated(large, 256)))
    assert (sd.generated_at(256), sd.generated_at(512)) == (512, 512)
    assert sd.resize_protocol(256) == {"generated_at": 512, "resized_with": {
        "library": "Pillow", "filter": "bicubic", "antialias": True, "function": "bench.data.images.to_square",
        "from": 512, "to": 256}}
    assert sd.resize_protocol(512) == {"generated_at": None, "resized_with": None}


def test_muse_generates_natively_at_256_and_512():
    generator = preset_generator("muse-tiny")
    assert generator.native_resolutions == (256, 512)
    for resolution in (256, 512):
        assert generator.generated_at(resolution) == resolution
        assert generator.resize_protocol(resolution) == {"generated_at": None, "resized_with": None}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # OMP_NUM_THREADS is left as it is: torchrun sets it to 1 per rank, the one-process run uses every core, and
    # the files must still be the same.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "HYDRA_FULL_ERROR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


OVERRIDES = ["experiment=tiny", "job=generate", "eval.metrics=[]", "dataset.limit=5", "batch_size=2", "model.steps=2",
             "resolutions=[256]"]
SAMPLES = "samples/muse-tiny/partiprompts"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one")
    _run([str(BIN / "muse-bench"), f"hydra.run.dir={run_dir}", *OVERRIDES], cwd=run_dir)
    files = digests(run_dir / SAMPLES)
    assert len(files) == 5 + 2  # PNGs, manifest.jsonl, sampling.json
    return files


def test_two_torchrun_processes_write_the_files_of_one(one_process, tmp_path):
    # No hydra.run.dir: both ranks must still land in one directory, rank 0's.
    _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(BIN / "muse-bench"), *OVERRIDES],
         cwd=tmp_path)
    [run_dir] = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert digests(run_dir / SAMPLES) == one_process
    assert (run_dir / "results.json").is_file() and (run_dir / ".hydra").is_dir()
    assert not (run_dir / ".hydra-pending").exists()  # rank 0 moved Hydra's record into place
    assert (run_dir / "muse-bench-rank1.log").is_file()  # rank 1 logs beside rank 0, not in a directory of its own


def test_two_submitit_tasks_write_the_files_of_one(one_process, tmp_path):
    from test_results import killed_write

    # A write killed in an earlier run of this folder: the main task removes it before either task writes.
    killed_write(tmp_path / "sweep" / "0" / SAMPLES / "00000.png")
    # hydra-submitit-launcher's local executor runs the tasks of a job as SLURM would (same job environment).
    _run([str(BIN / "muse-bench"), "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
          f"hydra.sweep.dir={tmp_path}/sweep", *OVERRIDES], cwd=tmp_path)
    run_dir = tmp_path / "sweep" / "0"
    assert digests(run_dir / SAMPLES) == one_process  # hidden files included: no leftover temporary
    assert (run_dir / ".hydra").is_dir() and not (run_dir / ".hydra-pending").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.err"))
    assert "rank 0/2" in logs and "rank 1/2" in logs  # both tasks made a shard
