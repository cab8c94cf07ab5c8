"""The `muse-bench` command line as a user runs it: its configs, jobs, errors and run folders (tests/conftest.py
runs it in-process; the console script itself runs in a subprocess once)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import muse_bench
from omegaconf import OmegaConf
from PIL import Image

from bench.data.prompts import load_dataset
from muse import MusePipeline
from muse.presets import PRESET_NAMES, preset_config

REPO = Path(__file__).resolve().parent.parent


# The generate job alone, without the default job's latency and report (tested on its own below).
# experiment=tiny: muse-tiny on PartiPrompts with random weights, nothing trained (the default experiment trains the
# shapes world; its own test below uses the test suite's shorter recipe).
GENERATE = ("experiment=tiny", "job=generate", "eval.metrics=[]")


def test_help_lists_config_groups(tmp_path):
    # The installed console script itself, in a fresh process (every other test runs the command line in-process).
    done = muse_bench("--help", cwd=tmp_path, process=True)
    assert done.returncode == 0, done.stderr
    groups = {}
    section = done.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    for line in section.splitlines():
        if ": " in line:
            group, options = line.split(": ", 1)
            groups[group.strip()] = {o.strip() for o in options.split(",")}
    assert groups["model"] >= {"muse-tiny", "muse-632m", "muse-3b", "amused-256", "amused-512"}
    assert "partiprompts" in groups["dataset"]
    assert "default" in groups["experiment"]
    assert groups["eval"] == {"default", "paper", "shapes"}
    assert groups["latency"] == {"cpu", "cpu_full", "gpu_full"}


def test_cfg_job_prints_the_resolved_config_with_overrides(tmp_path):
    done = muse_bench("--cfg", "job", "experiment=tiny", "dataset.limit=3", "seed=5", "model=muse-632m", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["model"] == {"name": "muse-632m", "family": "muse", "pretrained": None, "world": None, "preset": None,
                            "resolution": [256, 512],
                            "native_resolutions": [256, 512], "init_seed": 0, "profile": "full", "steps": None,
                            "guidance_scale": None, "choice_temperature": None, "schedule": None,
                            "token_order": None}
    assert cfg["dataset"]["name"] == "partiprompts" and cfg["dataset"]["limit"] == 3
    assert (cfg["seed"], cfg["device"], cfg["resolutions"]) == (5, "cpu", [256])
    assert not (tmp_path / "outputs").exists()  # --cfg composes and prints; it runs nothing


def test_override_of_the_wrong_type_is_refused(tmp_path):
    done = muse_bench("--cfg", "job", "experiment=tiny", "seed=abc", cwd=tmp_path)
    assert done.returncode != 0
    assert "seed" in done.stderr and "Traceback" not in done.stderr


def test_every_model_preset_has_a_config_that_matches_the_pipeline():
    files = {path.stem: path for path in (REPO / "conf" / "model").glob("*.yaml")}
    muse = {name: path for name, path in files.items() if OmegaConf.load(path).get("family", "muse") == "muse"}
    # muse-shapes-random and muse-shapes-short: the muse-shapes preset under names of their own (random weights, and
    # the short training recipe shapes-ci, beside the long one).
    assert set(muse) == set(PRESET_NAMES) | {"muse-shapes-random", "muse-shapes-short"}
    assert set(files) - set(muse) == {"sd-v1-4", "sd-v1-4-tiny"}
    for name, path in muse.items():
        cfg = OmegaConf.load(path)
        assert cfg.name == name
        name = cfg.get("preset") or name
        assert cfg.get("pretrained") is None
        assert list(cfg.resolution) == list(preset_config(name).resolutions), name
        assert list(cfg.native_resolutions) == list(cfg.resolution), name  # Muse models: every size is native
    for name in ("sd-v1-4", "sd-v1-4-tiny"):  # trained at 512: 256 images are made at 512 and resized
        cfg = OmegaConf.load(files[name])
        assert (list(cfg.resolution), list(cfg.native_resolutions)) == ([256, 512], [512]), name


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The generate job of the default experiment on the first two PartiPrompts prompts."""
    run_dir = tmp_path_factory.mktemp("default_run")
    done = muse_bench(f"hydra.run.dir={run_dir}", "dataset.limit=2", *GENERATE, cwd=run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir, done


def test_generate_job_writes_pngs_and_a_manifest(default_run):
    run_dir, _ = default_run
    sample_dir = run_dir / "samples" / "muse-tiny" / "partiprompts"
    assert sorted(p.name for p in sample_dir.glob("*.png")) == ["00000.png", "00001.png"]
    for png in sample_dir.glob("*.png"):
        with Image.open(png) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (256, 256), "RGB")

    rows = [json.loads(line) for line in (sample_dir / "manifest.jsonl").read_text().splitlines()]
    records = load_dataset("partiprompts", limit=2)
    assert [row["index"] for row in rows] == [0, 1]
    for row, record in zip(rows, records):
        assert row["prompt"] == record.prompt
        assert row["id"] == record.id
        assert (row["category"], row["challenge"]) == (record.metadata["category"], record.metadata["challenge"])
        assert (row["seed"], row["resolution"]) == (0, 256)
        assert (sample_dir / row["file"]).is_file()
    assert not list(sample_dir.glob(".*.tmp"))  # no leftovers of the atomic writes


def test_generate_job_writes_results_json(default_run):
    run_dir, done = default_run
    assert str(run_dir / "results.json") in done.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schema_version"] == 1
    assert results["experiment"] == "tiny"
    assert datetime.fromisoformat(results["created"]).tzinfo is not None
    assert results["overrides"] == ["dataset.limit=2", *GENERATE]

    provenance = results["provenance"]
    assert provenance["device"] == "cpu" and provenance["device_name"]
    assert provenance["torch"] and provenance["python"]
    assert set(provenance["packages"]) >= {"torch", "diffusers", "transformers", "hydra-core", "muse-bench"}
    assert provenance["git_commit"] is None or len(provenance["git_commit"]) == 40

    # The config recorded is the resolved one Hydra ran with.
    # (.hydra/config.yaml keeps interpolations such as ${oc.env:...}; results.json holds their values.)
    ran_with = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)
    assert results["config"] == ran_with
    assert results["config"]["dataset"]["limit"] == 2

    [evaluation] = results["evaluations"]
    assert (evaluation["model"], evaluation["dataset"], evaluation["weights"]) == ("muse-tiny", "partiprompts", "random")
    assert evaluation["n_samples"] == {"requested": 2, "effective": 2}
    assert evaluation["metrics"] == {}
    protocol = evaluation["protocol"]
    assert (protocol["resolution"], protocol["seed"]) == (256, 0)
    assert protocol["steps"] == protocol["sampler"]["base"]["steps"] >= 1
    assert protocol["guidance"] == protocol["sampler"]["base"]["guidance_scale"]
    assert results["latency"] == []


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.int16)


def test_a_sample_depends_only_on_seed_and_index(default_run, tmp_path):
    run_dir, _ = default_run
    # Batches of one over three prompts: the first two images must be the default run's (batch of two).
    done = muse_bench(f"hydra.run.dir={tmp_path}", "dataset.limit=3", "batch_size=1", *GENERATE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, again = run_dir / "samples/muse-tiny/partiprompts", tmp_path / "samples/muse-tiny/partiprompts"
    for name in ("00000.png", "00001.png"):
        assert np.array_equal(pixels(first / name), pixels(again / name)), name
    assert np.abs(pixels(first / "00000.png") - pixels(again / "00001.png")).max() > 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["evaluations"][0]["n_samples"] == {"requested": 3, "effective": 3}


def test_seed_changes_the_samples_and_is_recorded(default_run, tmp_path):
    run_dir, _ = default_run
    done = muse_bench(f"hydra.run.dir={tmp_path}", "dataset.limit=1", "seed=1", *GENERATE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sample_dir = tmp_path / "samples/muse-tiny/partiprompts"
    seed0 = pixels(run_dir / "samples/muse-tiny/partiprompts/00000.png")
    assert np.abs(pixels(sample_dir / "00000.png") - seed0).max() > 1
    [row] = [json.loads(line) for line in (sample_dir / "manifest.jsonl").read_text().splitlines()]
    assert row["seed"] == 1


def test_pretrained_checkpoint_is_loaded_and_recorded(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    MusePipeline.from_preset("muse-tiny").save_pretrained(str(checkpoint))
    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", f"model.pretrained={checkpoint}", "dataset.limit=1", *GENERATE,
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["evaluations"][0]["weights"] == "pretrained"
    assert results["config"]["model"]["pretrained"] == str(checkpoint)
    assert (run_dir / "samples/muse-tiny/partiprompts/00000.png").is_file()


def test_unknown_model_group_lists_the_presets(tmp_path):
    done = muse_bench(f"hydra.run.dir={tmp_path}", "experiment=tiny", "model=muse-7b", cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert all(name in done.stderr for name in PRESET_NAMES)


def test_unknown_model_name_is_one_paragraph_listing_the_presets(tmp_path):
    done = muse_bench(f"hydra.run.dir={tmp_path}", "experiment=tiny", "model.name=muse-7b", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [message] = [line for line in done.stderr.splitlines() if line.startswith("muse-bench: error:")]
    assert "muse-7b" in message
    assert all(name in message for name in PRESET_NAMES)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.pretrained={tmp}/no-such-checkpoint", "no-such-checkpoint"),  # muse's MuseError
        ("resolutions=[512]", "resolutions"),                                  # amused-256 below has no 512
        ("dataset.limit=0", "dataset.limit"),
        ("dataset.path={tmp}/bad.tsv", "bad.tsv:3"),
    ],
)
def test_expected_errors_exit_2_without_traceback(tmp_path, override, expected):
    (tmp_path / "bad.tsv").write_text("Prompt\tCategory\tChallenge\tNote\na cat\tAnimals\tBasic\t\na dog\tAnimals\n")
    override = override.format(tmp=tmp_path)
    extra = ["model=amused-256"] if override.startswith("resolutions") else []
    done = muse_bench(f"hydra.run.dir={tmp_path}/run", override, *extra, *GENERATE, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert expected in done.stderr


def test_default_job_writes_the_report_with_the_learned_world_latency_samples_and_trajectories(tmp_path, shapes_world):
    """`muse-bench` as a new user runs it, on the test suite's shorter-trained world (world=shapes-ci) and with the
    latency part shrunk to test-size models under the default's own protocol (the full default, Muse-3B and SD v1.4
    at full size, takes minutes: timed in the issue notes)."""
    small = ["world=shapes-ci", "latency.models=[muse-tiny,sd-v1-4]", "latency.sd_profile=tiny",
             "latency.dtype=float32", "latency.runs=1", "latency.compare=[[sd-v1-4,muse-tiny]]",
             "dataset.limit=6", "trajectories=1", "sweep.points=[1.0,3.0]"]
    done = muse_bench(f"hydra.run.dir={tmp_path}", *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["experiment"] == "default"
    assert {(r["model"], r["resolution"], r["batch_size"], r["protocol"].split(":")[0]) for r in results["latency"]
            if r["stage"] == "total"} == {(m, 256, 1, "per_stage") for m in ("muse-tiny", "sd-v1-4")}
    # The trained world's Muse, its random-weight twin, then the guidance sweep of the trained one.
    labels = [(e["model"], (e.get("sweep") or {}).get("value")) for e in results["evaluations"]]
    assert labels == [("muse-shapes", None), ("muse-shapes-random", None), ("muse-shapes", 1.0), ("muse-shapes", 3.0)]
    trained = results["evaluations"][0]
    assert trained["n_samples"]["requested"] == 6 and trained["protocol"]["resolution"] == 64
    for name in ("judge_accuracy", "clip_score", "fid"):
        assert trained["metrics"][name]["value"] is not None, name
    assert "muse-bench-shapes-clip" in json.dumps(trained["metrics"]["clip_score"]["protocol"])
    assert sorted(p.name for p in (tmp_path / "trajectory").glob("*.png")) == [
        f"muse-shapes-00000-step{s:02d}.png" for s in range(1, 13)]

    report = (tmp_path / "report.md").read_text()
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert any("latency" in f for f in figures) and any("trajectory" in f for f in figures)
    assert any("grid" in f for f in figures) and "figures/fid-judge-guidance.png" in figures
    for figure in figures:
        with Image.open(tmp_path / figure) as image:
            assert image.format == "PNG"
    assert "not a paper number" in report


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (Hydra's record included) and its bytes, except logs, which every run appends to."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".log"}


SMALL = ("dataset.limit=2", "batch_size=2", *GENERATE)


def test_a_bad_setting_writes_nothing_and_the_corrected_rerun_into_the_same_folder_succeeds(tmp_path):
    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", "model.steps=0", *SMALL, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "model.steps=0" in done.stderr
    # Only Hydra's record of the failed run and its log: no samples, no sampling.json, no results.
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "muse-bench.log"]
    done = muse_bench(f"hydra.run.dir={run_dir}", "model.steps=2", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((run_dir / "samples/muse-tiny/partiprompts").glob("*.png"))) == 2
    assert "- model.steps=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_a_refused_resume_leaves_the_folder_and_its_hydra_record_as_they_were(tmp_path):
    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", "model.steps=2", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    before = folder_state(run_dir)
    assert ".hydra/overrides.yaml" in before and not (run_dir / ".hydra-pending").exists()
    for other in ("model.steps=3", "model.guidance_scale=-1"):  # refused resume; refused setting
        done = muse_bench(f"hydra.run.dir={run_dir}", other, *SMALL, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert folder_state(run_dir) == before, other
        assert not (run_dir / ".hydra-pending").exists()


def test_a_rerun_removes_what_killed_writes_left_and_resumes(tmp_path):
    from test_results import killed_write

    run_dir = tmp_path / "run"
    done = muse_bench(f"hydra.run.dir={run_dir}", "model.steps=2", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = run_dir / "samples/muse-tiny/partiprompts"
    (samples / "00001.png").unlink()
    killed_write(samples / "00001.png")  # killed while writing a sample ...
    killed_write(run_dir / "results.json")  # ... and while writing the results
    assert len(list(run_dir.rglob(".*.tmp"))) == 2
    done = muse_bench(f"hydra.run.dir={run_dir}", "model.steps=2", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 generated, 1 already there" in done.stdout + done.stderr
    assert not list(run_dir.rglob(".*.tmp"))


def test_a_refused_multirun_member_leaves_its_hydra_record_as_it_was(tmp_path):
    sweep = tmp_path / "sweep"
    done = muse_bench("-m", f"hydra.sweep.dir={sweep}", "model.steps=2,3", "dataset.limit=1", *GENERATE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    members = [sweep / "0", sweep / "1"]
    before = [folder_state(member) for member in members]
    assert "- model.steps=2\n" in before[0][".hydra/overrides.yaml"].decode()
    # The same sweep with the values swapped: its first member resumes folder 0 under other settings.
    done = muse_bench("-m", f"hydra.sweep.dir={sweep}", "model.steps=3,2", "dataset.limit=1", *GENERATE, cwd=tmp_path)
    assert done.returncode == 2 and "holds samples made with other settings" in done.stderr, done.stderr[-3000:]
    assert [folder_state(member) for member in members] == before
    assert not list(sweep.rglob(".hydra-pending"))
