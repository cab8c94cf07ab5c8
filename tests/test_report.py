"""The report (bench/report/) and its figures (bench/report/figures.py) over schema-valid run folders.

Run folders are written through bench.core.results (build_results / write_results / evaluation), so the report
reads the real results.json schema; one test makes a real (tiny, offline) run with the muse-bench command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import muse_bench
from PIL import Image

from bench.core.errors import BenchError
from bench.core.results import (
    build_results,
    evaluation,
    write_json,
    write_jsonl,
    write_results,
)
from bench.latency.measure import COLUMNS
from bench.metrics.features import INCEPTION_NAME
from bench.report import figures
from bench.report.cli import main
from bench.report.document import write_report
from bench.report.images import render_trajectories
from bench.report.markdown import NOT_PAPER
from bench.report.published import REFERENCE_CSV, read_reference
from bench.report.runs import load_runs, trajectory_file
from muse.sampling import GUIDANCE_CONVENTION

REPO = Path(__file__).resolve().parent.parent
PROVENANCE = {"git_commit": "0123456789abcdef", "git_dirty": False, "packages": {"muse-bench": "0.1.0"},
              "device": "cpu", "device_name": "Test CPU", "torch": "2.x"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- run folders -------------------------------------------------------------------------------------


def metric(value, *, stderr=None, higher=True, **protocol):
    return {"value": value, "higher_is_better": higher, "stderr": stderr, "protocol": protocol}


def clip_protocol():
    return {"backend": "open_clip", "arch": "muse-bench-tiny-clip", "pretrained": "tiny.bin",
            "image_preprocess": {"size": [32, 32], "interpolation": "bicubic"}, "scale": "cosine (Muse paper)"}


def fid_protocol():
    return {"mode": "clean", "feature_extractor": "RandomConvFeatures [random weights: NOT comparable with Inception]",
            "generated_resize": {"library": "PIL", "filter": "bicubic", "size": [299, 299], "quantize": False},
            "n_reference": 8, "n_generated": 4, "min_samples": 2048, "below_minimum": True}


def an_evaluation(model, *, guidance=5.0, dataset="partiprompts", metrics=None, samples_dir=None, weights="random"):
    """An evaluation as bench.jobs.generate.sampling_protocol records it: guidance is the CFG scale g, beside Muse's t."""
    protocol = {"resolution": 256, "seed": 0, "samples_per_prompt": 1, "steps": 24, "guidance": guidance,
                "guidance_t": guidance - 1, "guidance_convention": GUIDANCE_CONVENTION,
                "sampler": {"base": {"steps": 24, "schedule": "cosine", "guidance_scale": guidance,
                                     "guidance_t": guidance - 1}}}
    if samples_dir:
        protocol["samples_dir"] = samples_dir
    return evaluation(model=model, dataset=dataset, weights=weights, requested=4, effective=4, protocol=protocol,
                      metrics=metrics)


def latency_rows(model, resolution, batch, stages, *, profile="tiny"):
    """A (model, resolution, batch) block of latency rows: one per stage and the total."""
    base = dict.fromkeys(COLUMNS) | {
        "model": model, "weights": "random", "profile": profile, "resolution": resolution, "batch_size": batch,
        "steps": 24, "n_runs": 2, "device": "cpu", "dtype": "float32", "compiled": False, "status": "ok",
        "params": 1_500_000, "peak_mem_bytes": 2**30, "protocol": "measured; warmup=1 runs=2; perf_counter"}
    rows = [base | {"stage": s, "median_s": t, "p90_s": t * 1.1, "images_per_s": batch / t} for s, t in stages.items()]
    total = sum(stages.values()) * 1.05
    return rows + [base | {"stage": "total", "median_s": total, "p90_s": total * 1.1, "images_per_s": batch / total}]


def write_run(run_dir, *, evaluations=(), latency=(), overrides=(), extra=None, limit=4):
    """A run folder with a schema-valid results.json (bench.core.results) and Hydra's .hydra/overrides.yaml."""
    run_dir = Path(run_dir)
    results = build_results(experiment="test", config={"dataset": {"name": "partiprompts", "limit": limit}},
                            provenance=PROVENANCE, evaluations=list(evaluations), latency=list(latency),
                            overrides=list(overrides))
    results.update(extra or {})
    write_results(run_dir, results)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run_dir


def write_samples(run_dir, model, prompts):
    """samples/<model>/partiprompts/*.png and manifest.jsonl, as the generate job writes them."""
    folder = Path(run_dir) / "samples" / model / "partiprompts"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, prompt in enumerate(prompts):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        rows.append({"index": i, "id": i, "prompt": prompt, "seed": 0, "replica": 0, "resolution": 256,
                     "file": f"{i:05d}.png", "category": "Animals", "challenge": "Basic"})
    write_jsonl(folder / "manifest.jsonl", rows)
    return f"samples/{model}/partiprompts"


def failed_run(run_dir, overrides, log_line):
    """What a Hydra job that raised leaves behind: .hydra/ and its log, no results.json."""
    run_dir = Path(run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "muse-bench.log").write_text(f"[2024-01-01 12:00:00][bench.jobs.generate][INFO] - start\n{log_line}\n")
    return run_dir


def rich_run(run_dir):
    """A PartiPrompts run with two models, breakdowns, a win rate, samples, latency and a trajectory."""
    long_prompt = ("a very long prompt about a red cube balanced on a blue sphere in a field of sunflowers at "
                   "dawn, photographed with a wide-angle lens, with fog rolling over distant hills")
    samples = write_samples(run_dir, "muse-tiny", ["a cat", long_prompt, "a dog"])
    breakdown = {"category": [{"group": "Animals", "mean": 0.21, "stderr": 0.02, "n": 3, "n_prompts": 3},
                              {"group": "Abstract", "mean": 0.18, "stderr": None, "n": 1, "n_prompts": 1}],
                 "challenge": [{"group": "Basic", "mean": 0.2, "stderr": 0.01, "n": 4, "n_prompts": 4}]}
    muse = an_evaluation("muse-tiny", samples_dir=samples, metrics={
        "clip_score": metric(0.2, stderr=0.01, **clip_protocol()),
        "fid": metric(None, higher=False, skipped="no reference images: set dataset.reference_dir"),
        "win_rate": metric(0.75, stderr=0.2, model_a="muse-tiny", model_b="sd-v1-4-tiny", K=1, n_prompts=4,
                           judge={"name": "clip_cosine"})})
    muse["breakdown"] = breakdown
    counts = {"n": 4, "a_wins": 3, "b_wins": 1, "ties": 0, "a_win_rate": 0.75, "b_win_rate": 0.25, "tie_rate": 0.0,
              "ratio": 3.0}
    muse["win_rate"] = {"judge": {"name": "clip_cosine"}, "n_prompts": 4, "overall": counts,
                        "by_category": {"Animals": counts}, "by_challenge": {"Basic": counts}}
    sd = an_evaluation("sd-v1-4-tiny", guidance=7.5, metrics={"clip_score": metric(0.15, stderr=0.01, **clip_protocol())})
    sd["breakdown"] = {"category": [{"group": "Animals", "mean": 0.15, "stderr": 0.02, "n": 4, "n_prompts": 4}],
                       "challenge": [{"group": "Basic", "mean": 0.15, "stderr": 0.02, "n": 4, "n_prompts": 4}]}
    latency = []
    for batch in (1, 2):
        latency += latency_rows("muse-tiny", 256, batch, {"text_encoder": 0.01, "base": 0.2 * batch, "decoder": 0.05})
        latency += latency_rows("muse-tiny", 512, batch, {"text_encoder": 0.01, "base": 0.2, "superres": 0.4 * batch,
                                                          "decoder": 0.1})
        latency += latency_rows("sd-v1-4", 512, batch, {"text_encoder": 0.01, "denoiser": 3.0 * batch, "decoder": 0.3})
    # A batch size that ran out of memory: one total row without times (bench/latency/measure.py).
    latency.append(latency_rows("sd-v1-4", 512, 4, {"denoiser": 1.0})[-1] | {
        "median_s": None, "p90_s": None, "images_per_s": None, "status": "oom"})
    run_dir = write_run(run_dir, evaluations=[muse, sd], latency=latency, overrides=["dataset.limit=4"])
    (run_dir / "trajectory").mkdir()
    for step in range(1, 4):
        Image.new("RGB", (64, 64), (40 * step, 80, 120)).save(run_dir / "trajectory" / trajectory_file("muse-tiny", 1, step))
    return run_dir


def sweep(root, guidances=(2.0, 4.0, 8.0), failed_guidance=16.0):
    """A Hydra multirun over model.guidance_scale: one finished run per guidance, the last one failed."""
    root = Path(root) / "multirun" / "2024-01-01" / "12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for i, g in enumerate(guidances):
        metrics = {"fid": metric(40.0 - 3 * i, stderr=0.5, higher=False, **fid_protocol()),
                   "clip_score": metric(0.20 + 0.02 * i, stderr=0.004, **clip_protocol())}
        write_run(root / str(i), evaluations=[an_evaluation("muse-tiny", guidance=g, metrics=metrics)],
                  overrides=[f"model.guidance_scale={g:g}", "dataset.limit=4"])
    failed_run(root / str(len(guidances)), [f"model.guidance_scale={failed_guidance:g}", "dataset.limit=4"],
               "[2024-01-01 12:00:09][HYDRA][ERROR] - boom: out of patience")
    return root


# ---- checks on a written report ----------------------------------------------------------------------


def figure_links(text):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def assert_figures_are_readable_pngs(out_dir, text):
    links = figure_links(text)
    assert links, "the report embeds no figure"
    for link in links:
        path = out_dir / link
        assert path.is_file(), f"{link} is referenced but missing"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as im:
            assert round(im.info["dpi"][0]) >= 150 and round(im.info["dpi"][1]) >= 150
    # Nothing in figures/ that the report does not show (no stale figures of an earlier report).
    assert sorted(p.name for p in (out_dir / "figures").glob("*.png")) == sorted(Path(link).name for link in links)


def tables(text):
    """(table lines, the first non-blank line after the table) for every Markdown table."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            after = next((line for line in lines[i:] if line.strip()), "")
            heading = next((line for line in reversed(lines[:start]) if line.startswith("#")), "")
            out.append((heading, lines[start:i], after))
        i += 1
    return out


def sections(text):
    return re.findall(r"^##+ (.+)$", text, flags=re.MULTILINE)


# ---- tests -------------------------------------------------------------------------------------------


def test_report_has_a_section_per_kind_of_data_with_protocol_notes_and_readable_figures(tmp_path):
    run = rich_run(tmp_path / "run")
    out = write_report(load_runs([run]), tmp_path / "out")
    text = out.read_text()
    heads = sections(text)
    for expected in ("Measured against published", "Table 3: inference time", "Quality metrics", "PartiPrompts",
                     "CLIP score per category", "CLIP score per challenge", "Win rate", "Latency", "Samples",
                     "Decoding trajectories"):
        assert expected in heads, f"missing section {expected!r}; sections: {heads}"
    # No data, no section.
    for absent in ("Table 1: CC3M (FID and CLIP)", "Failed or incomplete runs",
                   "FID against CLIP over the guidance scale"):
        assert absent not in heads
    assert_figures_are_readable_pngs(tmp_path / "out", text)
    for name in ("latency-stages.png", "throughput-batch.png", "parti-clip-category.png", "grid-muse-tiny"):
        assert any(name in link for link in figure_links(text)), name
    # Every table of numbers is followed by its protocol note (the runs and failures tables list runs).
    checked = 0
    for heading, rows, after in tables(text):
        if rows[0].startswith("| Run | Experiment") or heading.startswith("## Failed"):
            continue
        assert after.startswith("**Protocol:**"), f"table under {heading!r} has no protocol note: {rows[0]}"
        checked += 1
    assert checked >= 6
    # Random weights and tiny profiles are said loudly; a skipped metric gives its reason.
    assert "not a paper number" in text and "random weights" in text and "tiny profile" in text
    assert "skipped (why: under Not computed)" in text  # the reason is said once, not in every note
    assert "**Not computed:**\n- FID (muse-tiny): no reference images: set dataset.reference_dir" in text
    oom = [line for line in text.splitlines() if line.startswith("| sd-v1-4 | 512 | 4 |")]
    assert len(oom) == 1 and "| oom |" in oom[0]
    # Table 3 puts the measured SD v1.4 time (batch 1, 512 px) beside the published 3.7 s LDM row.
    ldm = next(line for line in text.splitlines() if line.startswith("| LDM, 50 steps"))
    sd_total = next(r["median_s"] for r in json.loads((run / "results.json").read_text())["latency"]
                    if r["model"] == "sd-v1-4" and r["stage"] == "total" and r["batch_size"] == 1)
    assert "| 3.7 |" in ldm and f"{sd_total:.4g}" in ldm
    # The grid shows each prompt; the trajectory strip has the run's three steps.
    assert "(replica 0) of samples/muse-tiny/partiprompts/manifest.jsonl" in text
    assert "steps shown: 3" in text


def test_quality_notes_say_which_samples_were_made_at_another_resolution_and_resized(tmp_path):
    muse = an_evaluation("muse-tiny", metrics={"clip_score": metric(0.2, **clip_protocol())})
    sd = an_evaluation("sd-v1-4-tiny", guidance=7.5, metrics={"clip_score": metric(0.15, **clip_protocol())})
    sd["protocol"] |= {"generated_at": 512, "resized_with": {"library": "Pillow", "filter": "bicubic",
                                                             "antialias": True, "from": 512, "to": 256}}
    muse["protocol"] |= {"generated_at": None, "resized_with": None}
    text = write_report(load_runs([write_run(tmp_path / "run", evaluations=[muse, sd])]), tmp_path / "out").read_text()
    notes = text.split("## Quality metrics", 1)[1].split("\n## ", 1)[0]
    assert notes.count("made at 512x512, resized with Pillow bicubic") == 1
    assert "256x256 px (made at 512x512, resized with Pillow bicubic), seed 0" in notes


def test_guidance_sweep_draws_the_fid_clip_curve_and_lists_the_failed_run(tmp_path, monkeypatch):
    root = sweep(tmp_path)
    drawn = []
    real = figures.tradeoff_curve

    def spy(curves, path, **kwargs):
        drawn.append(curves)
        return real(curves, path, **kwargs)

    monkeypatch.setattr(figures, "tradeoff_curve", spy)
    # A figure an earlier report left in the same folder goes; a figure of someone else's stays.
    (tmp_path / "out" / "figures").mkdir(parents=True)
    (tmp_path / "out" / "figures" / "latency-stages.png").write_bytes(PNG_SIGNATURE)
    (tmp_path / "out" / "figures" / "mine.png").write_bytes(PNG_SIGNATURE)
    runs = load_runs([root])
    assert [r.ok for r in runs] == [True, True, True, False]
    assert [r.label for r in runs] == ["0 (model.guidance_scale=2)", "1 (model.guidance_scale=4)",
                                       "2 (model.guidance_scale=8)", "3 (model.guidance_scale=16)"]
    out = write_report(runs, tmp_path / "out")
    text = out.read_text()
    assert len(drawn) == 1 and list(drawn[0]) == ["muse-tiny"]
    points = drawn[0]["muse-tiny"]
    assert [p["label"] for p in points] == ["g=2", "g=4", "g=8"]
    assert [p["y"] for p in points] == [40.0, 37.0, 34.0]
    assert [p["x"] for p in points] == pytest.approx([0.20, 0.22, 0.24])
    assert "FID against CLIP over the guidance scale" in sections(text)
    assert "fid-clip-guidance.png" in text
    assert not (tmp_path / "out" / "figures" / "latency-stages.png").exists()
    (tmp_path / "out" / "figures" / "mine.png").unlink()
    assert_figures_are_readable_pngs(tmp_path / "out", text)
    # The same runs give the same report, figures included (no timestamps).
    again = write_report(load_runs([root]), tmp_path / "again", command="same")
    first = write_report(load_runs([root]), tmp_path / "out", command="same")
    assert again.read_text() == first.read_text()
    assert (tmp_path / "again/figures/fid-clip-guidance.png").read_bytes() == \
        (tmp_path / "out/figures/fid-clip-guidance.png").read_bytes()
    failed = text.split("## Failed or incomplete runs", 1)[1].split("\n## ", 1)[0]
    assert "3 (model.guidance_scale=16)" in failed and "no results.json" in failed and "boom: out of patience" in failed
    assert "1 run(s) failed and are not plotted: 3 (model.guidance_scale=16)" in text
    # The same sweep through a glob of its run folders.
    assert [r.path.name for r in load_runs([str(root / "*")])] == ["0", "1", "2", "3"]


def section_text(text, heading):
    """The text of report section `## heading`, up to the next one."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def a_sweep_job(run_dir, key, values, *, timed=True):
    """A sweep job's results.json (bench/jobs/sweep.py): one evaluation per value, labelled with it, each with the
    generation run's time per image (more steps, more seconds) when `timed`."""
    evaluations = []
    for i, value in enumerate(values):
        metrics = {"judge_accuracy": metric(0.1 + 0.05 * i, stderr=0.02), "fid": metric(30.0 - i, stderr=1.0, higher=False),
                   "clip_score": metric(0.3, stderr=0.01)}
        ev = an_evaluation("muse-shapes", guidance=3.0, dataset="shapes", metrics=metrics, weights="trained")
        ev["sweep"] = {"model": "muse-shapes", "key": key, "value": value, "samples": f"muse-shapes-{key}-{value}"}
        ev["generation_time"] = {"seconds_per_image": 0.01 * (i + 1) if timed else None, "images": 4 if timed else 0,
                                 "device": "cpu", "threads": 1, "batch_size": 4, "processes": 1, "clock": "wall"}
        evaluations.append(ev)
    return write_run(run_dir, evaluations=evaluations, extra={"sweep": {"model": "muse-shapes", "key": key,
                                                                           "values": list(values)}})


def test_a_steps_sweep_is_drawn_against_steps_and_against_seconds_per_image(tmp_path, monkeypatch):
    drawn = {}
    real = figures.tradeoff_curve

    def spy(curves, path, **kwargs):
        drawn[path.stem] = curves
        return real(curves, path, **kwargs)

    monkeypatch.setattr(figures, "tradeoff_curve", spy)
    out = write_report(load_runs([a_sweep_job(tmp_path / "steps", "steps", [16, 2, 8])]), tmp_path / "out")
    text = out.read_text()
    part = section_text(text, "Sweeps")
    assert "### model.steps" in part and "| muse-shapes | 2 |" in part and "0.02 (4 images)" in part
    # Against the value, in value order; against time, with each point labelled with its value.
    assert [p["x"] for p in drawn["sweep-steps-judge_accuracy"]["muse-shapes"]] == [2, 8, 16]
    assert [p["y"] for p in drawn["sweep-steps-fid"]["muse-shapes"]] == [29.0, 28.0, 30.0]
    timed = drawn["sweep-steps-fid-time"]["muse-shapes"]
    assert [(p["x"], p["label"]) for p in timed] == [(0.01, "steps=16"), (0.02, "steps=2"), (0.03, "steps=8")]
    assert "sweep-steps-judge_accuracy-time" in drawn
    assert "muse-shapes (steps=2)" in section_text(text, "Quality metrics")  # the quality table says which value
    assert_figures_are_readable_pngs(tmp_path / "out", text)


def test_a_schedule_sweep_draws_bars_and_an_untimed_sweep_no_time_figure(tmp_path):
    out = write_report(load_runs([a_sweep_job(tmp_path / "s", "schedule", ["cosine", "pow0.5"], timed=False)]),
                       tmp_path / "out")
    text = out.read_text()
    assert "figures/sweep-schedule-fid.png" in text and "-time.png" not in text
    assert "no generation time recorded" in section_text(text, "Sweeps")
    assert_figures_are_readable_pngs(tmp_path / "out", text)


def test_a_sweep_member_killed_before_it_committed_to_its_folder_is_listed_with_its_overrides(tmp_path):
    root = sweep(tmp_path, guidances=(2.0,), failed_guidance=4.0)
    # Killed while loading its model: Hydra's record is still pending (bench/core/rundir.py), nothing else written.
    pending = root / "2" / ".hydra-pending"
    pending.mkdir(parents=True)
    (pending / "overrides.yaml").write_text("- model.guidance_scale=8\n- dataset.limit=4\n")
    runs = load_runs([root])
    assert [r.label for r in runs] == ["0 (model.guidance_scale=2)", "1 (model.guidance_scale=4)",
                                       "2 (model.guidance_scale=8)"]
    assert [r.ok for r in runs] == [True, False, False]


def with_comparability(ev):
    """An evaluation whose metric entries carry comparable_to_published, as bench.metrics.evaluate records it."""
    from bench.metrics.published import comparable_to_published

    for name, entry in ev["metrics"].items():
        entry["protocol"]["comparable_to_published"] = comparable_to_published(
            name, entry, dataset=ev["dataset"], model_weights=ev["weights"], resolution=ev["protocol"]["resolution"])
    return ev


def test_measured_quality_sits_beside_the_papers_tables_1_and_2(tmp_path):
    def quality(model, dataset, fid):
        return with_comparability(an_evaluation(model, dataset=dataset, weights="pretrained", metrics={
            "fid": metric(fid, stderr=0.1, higher=False, **fid_protocol()),
            "clip_score": metric(0.3, stderr=0.002, **clip_protocol())}))

    run = write_run(tmp_path / "run", evaluations=[quality("muse-3b", "coco30k", 9.5), quality("muse-632m", "cc3m", 7.5),
                                                   quality("muse-3b", "coco5k", 24.5)], limit=None)
    text = write_report(load_runs([run]), tmp_path / "out").read_text()
    heads = sections(text)
    assert "Table 1: CC3M (FID and CLIP)" in heads and "Table 2: zero-shot MS-COCO 256x256 (FID-30K and CLIP)" in heads
    table1 = text.split("### Table 1", 1)[1].split("###", 1)[0]
    table2 = text.split("### Table 2", 1)[1].split("##", 1)[0]
    assert "| Muse base + super-res | 632M + 268M | 6.06 | 0.26 |" in table1
    assert "| **measured**: muse-632m (run) | — | 7.5 ± 0.10 | 0.3 ± 0.0020 |" in table1
    assert "coco30k" not in table1 and "| Muse-3B | 3B | 7.88 | 0.32 |" in table2
    assert "| **measured**: muse-3b (run) | — | 9.5 ± 0.10 |" in table2 and "24.5 ± 0.10" in table2
    # coco5k was measured: MLPerf's accepted window is shown beside it.
    assert "23.0109–23.9501" in table2
    # Pretrained weights, but a stand-in FID extractor, clean mode and too few samples: flagged with the reasons
    # each metric's protocol records.
    row = next(line for line in table2.splitlines() if line.startswith("| **measured**: muse-3b") and "9.5" in line)
    assert f"**{NOT_PAPER}**: " in row and "4 samples (published: 30,000) (FID)" in row
    assert "stand-in feature network RandomConvFeatures" in row and "clean-fid mode clean (published: " \
        "legacy_tensorflow; eval=paper selects it) (FID)" in row and "test-size CLIP" in row
    assert "FID vs published: zero-shot FID-30K" in table2


def test_a_measured_row_whose_protocol_matches_says_so(tmp_path):
    """Beside a published number, a row whose every recorded choice matches the published protocol says it
    matches (and which one); the report reads that from the entries, not from names."""
    def paper_fid(mode):
        return metric(7.9, stderr=0.05, higher=False, mode=mode, feature_extractor=INCEPTION_NAME,
                      n_generated=30_000, n_reference=40_504, min_samples=2048, below_minimum=False,
                      reference={"dataset": "coco30k", "reference_set": "all", "reference_limit": None})

    def clip():
        return metric(0.31, stderr=0.001, backend="open_clip", arch="ViT-L-14", pretrained="openai",
                      weights="pretrained", n=30_000, scale="cosine (Muse paper)")

    evaluations = [with_comparability(an_evaluation(name, dataset="coco30k", weights="pretrained",
                                                    metrics={"fid": paper_fid(mode), "clip_score": clip()}))
                   for name, mode in (("muse-3b", "legacy_tensorflow"), ("muse-632m", "clean"))]
    run = write_run(tmp_path / "run", evaluations=evaluations, limit=None)
    table2 = write_report(load_runs([run]), tmp_path / "out").read_text().split("### Table 2", 1)[1].split("##", 1)[0]
    matching = next(line for line in table2.splitlines() if "**measured**: muse-3b" in line)
    assert "protocol matches: zero-shot FID-30K" in matching and NOT_PAPER not in matching
    clean = next(line for line in table2.splitlines() if "**measured**: muse-632m" in line)
    assert f"**{NOT_PAPER}**: clean-fid mode clean" in clean and "protocol matches" not in clean


def test_published_amused_quality_is_beside_a_measured_row_only_at_the_same_guidance(tmp_path):
    def amused(g, fid, clip):
        return an_evaluation("amused-256", guidance=g, dataset="coco5k", weights="pretrained", metrics={
            "fid": metric(fid, stderr=0.1, higher=False, **fid_protocol()),
            "clip_score_x100": metric(clip, stderr=0.1, **clip_protocol())})

    runs = [write_run(tmp_path / str(g), evaluations=[amused(g, fid, clip)], limit=None,
                      overrides=[f"model.guidance_scale={g}"]) for g, fid, clip in ((4, 41.0, 25.0), (10, 45.0, 27.0))]
    text = write_report(load_runs(runs), tmp_path / "out").read_text()
    part = text.split("### aMUSEd's published quality", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("| aMUSEd-256")]
    # FID 39.3 was published at g=4: only the g=4 run's FID stands beside it; CLIP 26.1 (g=5) has no partner.
    assert rows == [next(line for line in rows if "| FID | 39.3 | 4 | 41 ± 0.10 | 4 |" in line)]
    assert "amused-256 FID (10) was measured at guidance g=10, the published 39.3 at g=4" in part
    assert "amused-256 CLIP x100 (4) was measured at guidance g=4, the published 26.1 at g=5" in part
    assert "model.guidance_scale=5 measures it there" in part


def test_runs_recorded_before_the_cfg_scale_convention_show_guidance_as_g(tmp_path):
    # Older results.json files stored Muse's t for Muse and aMUSEd (guidance 4 meant g = 5) and g for SD.
    muse = an_evaluation("muse-tiny", metrics={"clip_score": metric(0.2, **clip_protocol())})
    sd = an_evaluation("sd-v1-4-tiny", metrics={"clip_score": metric(0.1, **clip_protocol())})
    for ev, value, sampler in ((muse, 4.0, {"base": {"steps": 24, "guidance_scale": 4.0}}),
                               (sd, 7.5, {"denoiser": {"steps": 50, "guidance_scale": 7.5}})):
        for key in ("guidance_t", "guidance_convention"):
            del ev["protocol"][key]
        ev["protocol"].update(guidance=value, sampler=sampler)
    run = write_run(tmp_path / "run", evaluations=[muse, sd])
    text = write_report(load_runs([run]), tmp_path / "out").read_text()
    quality = text.split("## Quality metrics", 1)[1].split("\n## ", 1)[0]
    assert "| muse-tiny | partiprompts | 256 | 5 |" in quality and "| sd-v1-4-tiny | partiprompts | 256 | 7.5 |" in quality
    assert "g=5 (the run recorded Muse's t=4; g = 1 + t)" in quality
    assert "base: steps=24, guidance_t=4.0" in quality and "denoiser: steps=50, guidance_scale=7.5" in quality


def test_a_folder_without_results_is_listed_and_nothing_usable_is_an_error(tmp_path):
    good = write_run(tmp_path / "good", evaluations=[an_evaluation("muse-tiny", metrics={
        "clip_score": metric(0.2, **clip_protocol())})])
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = load_runs([good, empty])
    assert [r.ok for r in runs] == [True, False]
    text = write_report(runs, tmp_path / "out").read_text()
    failed = text.split("## Failed or incomplete runs", 1)[1]
    assert str(empty) in failed and "no results.json" in failed
    with pytest.raises(BenchError, match=r"Nothing to report.*empty: no results\.json"):
        load_runs([empty, tmp_path / "missing"])


def test_another_schema_version_says_which_version_is_needed(tmp_path):
    run = tmp_path / "v2"
    write_json(run / "results.json", {"schema_version": 2, "provenance": {"packages": {"muse-bench": "9.0"}}})
    with pytest.raises(BenchError) as err:
        load_runs([run])
    message = str(err.value)
    assert "schema_version 2 (written by muse-bench 9.0)" in message
    assert "this report reads schema_version 1" in message and "update muse-bench" in message
    # Beside a usable run it is listed, not fatal.
    good = write_run(tmp_path / "good", evaluations=[an_evaluation("muse-tiny", metrics={
        "clip_score": metric(0.2, **clip_protocol())})])
    text = write_report(load_runs([good, run]), tmp_path / "out").read_text()
    assert "schema_version 2" in text.split("## Failed or incomplete runs", 1)[1]


def test_unparsable_results_name_the_file_and_line(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "results.json").write_text('{\n  "schema_version": 1,\n  "evaluations": [\n}\n')
    with pytest.raises(BenchError, match=r"results\.json, line 4, column 1: not valid JSON"):
        load_runs([run])


def test_command_line_writes_the_report_and_exits_2_on_bad_input(tmp_path, capsys):
    run = rich_run(tmp_path / "run")
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.md").is_file()
    assert f"python -m bench.report {run} --out {tmp_path / 'out'}" in (tmp_path / "out" / "report.md").read_text()
    assert main([str(tmp_path / "nothing-here")]) == 2
    assert "bench.report: error: Nothing to report" in capsys.readouterr().err
    assert main([str(run), str(run)]) == 2  # several folders need --out
    assert "--out DIR" in capsys.readouterr().err


def test_trajectory_strip_paints_still_masked_tokens_grey(tmp_path):
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 1] = True  # token (0, 1) covers pixels [0:16, 16:32]
    painted = figures.grey_masked(white, mask)
    assert (painted[0:16, 16:32] == figures.MASK_GREY).all()
    assert (painted[16:, :] == 255).all() and (painted[0:16, 0:16] == 255).all()
    masks = [np.ones((4, 4), bool), mask, np.zeros((4, 4), bool)]
    path = figures.trajectory_strip([white] * 3, tmp_path / "strip.png", masks=masks, title="a prompt")
    with Image.open(path) as im:
        assert round(im.info["dpi"][0]) >= 150
    caption = figures.wrap_caption("word " * 40, width=20, max_lines=3)
    assert len(caption.splitlines()) == 3 and caption.endswith(" ...")
    assert all(len(line) <= 20 for line in caption.splitlines())
    with pytest.raises(ValueError, match="one mask per step"):
        figures.trajectory_strip([white] * 3, tmp_path / "x.png", masks=masks[:2])


def test_render_trajectories_orders_steps_and_finds_the_prompt(tmp_path):
    run = tmp_path / "run"
    write_samples(run, "muse-tiny", ["a cat", "a dog"])
    (run / "trajectory").mkdir()
    for step in (10, 2, 1):  # numeric order, not file-name order
        Image.new("RGB", (32, 32), (step * 20, 0, 0)).save(run / "trajectory" / trajectory_file("muse-tiny", 1, step))
    (run / "trajectory" / "notes.txt").write_text("ignored")
    strips = render_trajectories(run, tmp_path / "figs")
    assert [(s.model, s.index, s.prompt, s.steps) for s in strips] == [("muse-tiny", 1, "a dog", 3)]
    assert strips[0].path.read_bytes()[:8] == PNG_SIGNATURE
    assert trajectory_file("muse-tiny", 1, 2) == "muse-tiny-00001-step02.png"


def test_paper_reference_csv_holds_the_published_tables_with_sources():
    rows = read_reference(REFERENCE_CSV)
    by = {(r["table"], r["model"], r["metric"], r["resolution"]): r for r in rows}
    assert all(r["source"] for r in rows)
    muse_rows = [r for r in rows if r["table"].startswith("muse-")]
    assert all("arXiv 2301.00704" in r["source"] for r in muse_rows)
    assert all("arXiv 2401.01808" in r["source"] for r in rows if r["table"].startswith("amused-"))
    assert len([r for r in rows if r["table"] == "muse-table1"]) == 14  # 7 models, FID and CLIP
    assert float(by[("muse-table1", "Muse base + super-res", "fid", "512")]["value"]) == 6.06
    assert float(by[("muse-table2", "Muse-3B", "fid", "256")]["value"]) == 7.88
    assert float(by[("muse-table2", "Muse-3B", "clip_score", "256")]["value"]) == 0.32


def test_a_bad_reference_row_names_its_line(tmp_path):
    bad = tmp_path / "ref.csv"
    bad.write_text(REFERENCE_CSV.read_text().splitlines()[0] + "\nmuse-table1,X,,fid,n/a,,FID,,,,,,src,\n")
    with pytest.raises(BenchError, match=r"ref\.csv, line 2: value 'n/a' is not a number"):
        read_reference(bad)


def test_report_of_a_real_run_of_the_command(tmp_path):
    run = tmp_path / "run"
    # The tiny experiment (the default job on muse-tiny) with its latency part on test-size shapes.
    small = ["latency.models=[muse-tiny,sd-v1-4]", "latency.sd_profile=tiny", "latency.dtype=float32",
             "latency.runs=1", "latency.compare=[[sd-v1-4,muse-tiny]]"]
    done = muse_bench("experiment=tiny", "dataset.limit=2", f"hydra.run.dir={run}", *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The report's own command line, in a process of its own.
    done = subprocess.run([sys.executable, "-m", "bench.report", str(run)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    text = (run / "report.md").read_text()  # one run folder: the report goes into it
    assert "## Samples" in text and "muse-tiny on partiprompts, 256 px" in text
    assert "random (not a paper number)" in text
    assert_figures_are_readable_pngs(run, text)


def test_speed_ups_show_time_ratios_only_where_the_cost_ratio_is_kept_beside_flops_and_floors(tmp_path):
    import torch

    from bench.latency.floors import compute_row
    from bench.latency.measure import RowInfo, Timing
    from bench.latency.ratios import latency_ratio

    def timing(model, profile, totals, flops, full, arch=None):
        info = RowInfo(model, "random", profile, 256, 24, "cpu", torch.bfloat16, 10, {"total": flops},
                       arch=arch or model, full_flops_per_image={"total": full})
        return Timing(info, 1, "per_stage: p", totals, {"base": totals})

    shown = latency_ratio(timing("sd-v1-4", "full", [1.0, 1.1, 1.2], 19e12, 19e12),
                          timing("muse-3b", "full", [2.0, 2.0, 2.0], 78e12, 78e12))
    scaled = latency_ratio(timing("sd-v1-4", "scaled", [9.0, 9.0], 2.9e11, 19e12),
                           timing("muse-632m", "scaled", [3.0, 3.0], 1.1e11, 18.7e12))
    old = {"slower": "parti-3b-proxy", "faster": "muse-3b", "resolution": 256, "batch_size": 1, "ratio": 3.8,
           "protocol": "old"}
    run = write_run(tmp_path / "run", latency=latency_rows("muse-3b", 256, 1, {"base": 2.0}, profile="full"), extra={
        "latency_ratios": [shown, scaled, old],
        "compute": [compute_row("muse-3b", 256, 24, {"total": 77.9e12}), compute_row("sd-v1-4", 256, 50, {"total": 19e12}),
                    compute_row("muse-tiny", 256, 24, None)],
    })
    results = json.loads((run / "results.json").read_text())
    results["config"]["latency"] = {"compare": [["sd-v1-4", "muse-3b"]]}
    write_json(run / "results.json", results)
    text = write_report(load_runs([run]), tmp_path / "out").read_text()
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in text.splitlines()
             if " | 256 | 1 | no | " in line}
    assert "| 0.55x (0.5–0.6) | the second is slower | 0.244 |" in lines[("sd-v1-4", "muse-3b")]
    assert "A100 60.9 / 250 ms" in lines[("sd-v1-4", "muse-3b")]
    # The scaled pair measured 3x: that number must not appear as a speed-up, but its FLOP ratio does.
    assert "not shown (see protocol)" in lines[("sd-v1-4", "muse-632m")] and "| 3x" not in lines[("sd-v1-4", "muse-632m")]
    assert "| 1.02 |" in lines[("sd-v1-4", "muse-632m")]
    assert "not shown because: profiles scaled / scaled do not preserve the full-size cost ratio" in text
    # An entry from before this check is not shown either.
    parti = lines[("parti-3b-proxy", "muse-3b")]
    assert "not shown (see protocol)" in parti and "3.8" not in parti
    assert "### Compute at full size" in text
    assert "| muse-3b | 256 | 24 | 77.9 | 250 | 78.8 | 78.8 |" in text
    assert "| sd-v1-4 | muse-3b | 256 | 0.244 |" in text
    assert "| muse-tiny | 256 | 24 | — | — | — | — | test-size model: no full size |" in text


def test_latency_caveats_and_flop_ratios_are_read_from_the_results_fields(tmp_path):
    from bench.latency.floors import compute_row

    def run(name, protocol, ratios):
        # Full-size rows timed on a CPU; only the run's latency.protocol says how they were timed.
        rows = latency_rows("muse-3b", 256, 1, {"base": 2.0}, profile="full")
        folder = write_run(tmp_path / name, latency=rows, extra={
            "latency_ratios": ratios,
            "compute": [compute_row("muse-3b", 256, 24, {"total": 77.9e12}), compute_row("sd-v1-4", 256, 50, {"total": 19e12})]})
        results = json.loads((folder / "results.json").read_text())
        results["config"]["latency"] = {"protocol": protocol, "compare": [["sd-v1-4", "muse-3b"]]}
        write_json(folder / "results.json", results)
        return write_report(load_runs([folder]), tmp_path / f"out-{name}").read_text()

    pair = {"slower": "sd-v1-4", "faster": "muse-3b", "resolution": 256, "batch_size": 1, "compiled": False,
            "flop_ratio_full": 0.5, "shown": False, "why": "w", "protocol": "p"}
    per_stage = run("per-stage", "per_stage", [pair])
    row = next(line for line in per_stage.splitlines() if line.startswith("| muse-3b | 256 | 1 |"))
    assert f"**{NOT_PAPER}**: sum of per-stage forwards, timed on a CPU" in row
    # The FLOP ratio of a compared pair is the one latency_ratios records, not one recomputed from `compute`.
    assert "| sd-v1-4 | muse-3b | 256 | 0.5 |" in per_stage and "0.244" not in per_stage
    measured = run("measured", "measured", [])
    row = next(line for line in measured.splitlines() if line.startswith("| muse-3b | 256 | 1 |"))
    assert "per-stage" not in row and "timed on a CPU" in row
    assert "FLOP ratio (first / second)" not in measured
