"""The timing protocol and the latency job (behaviour only: no test asserts how long anything takes)."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from bench.latency import COLUMNS, RowInfo, latency_csv, peak_flops, time_pipeline
from bench.timing import StageClock, measure, percentile

CONTRACT_COLUMNS = ("model", "weights", "profile", "resolution", "batch_size", "steps", "stage", "n_runs", "median_s",
                    "p90_s", "images_per_s", "peak_mem_bytes", "params", "flops", "device", "dtype", "compiled")


def muse_bench(tmp_path, *overrides):
    """Run the real command line in tmp_path; returns the finished process."""
    cmd = [sys.executable, "-m", "bench.cli", f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def info(model, **kwargs):
    fields = dict(weights="random", profile="tiny", resolution=256, steps=24, device="cpu", dtype=torch.float32,
                  params=10) | kwargs
    return RowInfo(model, **fields)


def test_percentile_interpolates():
    assert percentile([3.0], 90) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 100) == 5.0


def test_measure_runs_warmup_then_timed_runs_with_stages():
    calls = []

    def run(clock):
        calls.append(clock)
        with clock("a"):
            sum(range(1000))
        for _ in range(3):  # a stage entered repeatedly (a denoiser per step) is summed
            with clock("b"):
                sum(range(100))

    result = measure(run, device="cpu", warmup=2, runs=4)
    assert len(calls) == 6
    assert len(result.total) == 4 and set(result.stages) == {"a", "b"}
    assert all(len(v) == 4 for v in result.stages.values())
    for i in range(4):  # the stages nest inside the end-to-end time of the same run
        assert result.stages["a"][i] + result.stages["b"][i] <= result.total[i]
    assert result.peak_mem_bytes > 0
    summary = result.summary()
    assert summary["n_runs"] == 4 and summary["median_s"] <= summary["p90_s"]
    with pytest.raises(ValueError):
        measure(run, device="cpu", runs=0)


def test_stage_clock_records_time_even_when_the_stage_fails():
    clock = StageClock("cpu")
    with pytest.raises(KeyError):
        with clock("x"):
            raise KeyError("boom")
    assert len(clock.intervals["x"]) == 1  # the failed stage was still closed and recorded


def test_oom_is_recorded_and_the_sweep_goes_on():
    def run(batch, clock):
        if batch == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        with clock("base"):
            pass

    rows = time_pipeline(run, info("m"), batch_sizes=[1, 4, 8], runs=1, warmup=0)
    assert [(r["batch_size"], r["stage"], r["status"]) for r in rows] == [
        (1, "base", "ok"), (1, "total", "ok"), (4, "total", "oom"), (8, "base", "ok"), (8, "total", "ok")]
    assert all(r["params"] == 10 and r["model"] == "m" for r in rows)


def test_other_errors_are_not_swallowed():
    def run(batch, clock):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        time_pipeline(run, info("m"), batch_sizes=[1], runs=1, warmup=0)


def test_percent_of_floor_only_where_the_peak_is_known():
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 790e12
    assert peak_flops("cpu", torch.float32) is None

    def run(batch, clock):
        with clock("base"):
            pass

    rows = time_pipeline(run, info("m", flops_per_image={"base": 10, "total": 10}), batch_sizes=[1], runs=1, warmup=0)
    assert all(r["percent_of_floor"] is None for r in rows)
    assert rows[-1]["flops"] == 10


def test_csv_has_the_contract_columns():
    header = latency_csv([]).splitlines()[0].split(",")
    assert tuple(header[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert tuple(header) == COLUMNS


def test_latency_job_writes_latency_csv_and_results(tmp_path):
    done = muse_bench(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compare=[]",
                      "latency.resolutions=[256]", "latency.batch_sizes=[1,2]", "latency.runs=1", "latency.warmup=0")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    assert [(r["batch_size"], r["stage"]) for r in rows] == [
        (b, s) for b in ("1", "2") for s in ("text_encoder", "base", "decoder", "total")]
    for row in rows:
        assert (row["model"], row["weights"], row["profile"], row["status"]) == ("muse-tiny", "random", "tiny", "ok")
        assert float(row["median_s"]) > 0 and int(row["flops"]) > 0 and row["steps"] == "24"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["latency"][0]["model"] == "muse-tiny" and len(results["latency"]) == len(rows)
    assert results["config"]["job"] == "latency"


def test_latency_job_refuses_unknown_models(tmp_path):
    done = muse_bench(tmp_path, "experiment=latency", "latency.models=[muse-7b]")
    assert done.returncode == 2
    assert "muse-tiny" in done.stderr and "sd-v1-4" in done.stderr and "Traceback" not in done.stderr
    assert "parti-3b-proxy" in done.stderr and "imagen-proxy" in done.stderr


def test_our_sampler_and_diffusers_amused_side_by_side_with_stable_diffusion(tmp_path):
    done = muse_bench(tmp_path, "experiment=latency", "latency.resolutions=[256]", "latency.batch_sizes=[1]",
                      "latency.runs=1", "latency.warmup=0")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    stages = {(r["model"], r["stage"]) for r in results["latency"]}
    assert {("amused-tiny", "base"), ("amused-tiny+diffusers", "pipeline"), ("sd-v1-4", "denoiser"),
            ("sd-v1-4", "text_encoder"), ("sd-v1-4", "decoder")} <= stages
    sd = next(r for r in results["latency"] if r["model"] == "sd-v1-4" and r["stage"] == "total")
    assert (sd["steps"], sd["profile"], sd["weights"]) == (50, "tiny", "random")
    ratios = {(r["slower"], r["faster"]): r for r in results["latency_ratios"]}
    assert set(ratios) == {("amused-tiny+diffusers", "amused-tiny"), ("sd-v1-4", "muse-tiny")}
    for ratio in ratios.values():
        assert ratio["ratio"] > 0 and "tiny" in ratio["protocol"] and "random" in ratio["protocol"]


def test_ratios_pair_rows_at_the_same_resolution_and_batch():
    from bench.jobs import latency_ratios

    def row(model, resolution, batch, median, status="ok"):
        return dict(model=model, resolution=resolution, batch_size=batch, stage="total", status=status,
                    median_s=median, profile="tiny", weights="random", protocol="p")

    rows = [row("a", 256, 1, 4.0), row("b", 256, 1, 2.0), row("a", 256, 8, 8.0), row("b", 256, 8, 1.0, "oom"),
            row("a", 512, 1, 9.0), row("b", 512, 1, 3.0)]
    ratios = latency_ratios(rows, [["a", "b"]])
    assert [(r["resolution"], r["batch_size"], r["ratio"]) for r in ratios] == [(256, 1, 2.0), (512, 1, 3.0)]


def test_extrapolation_fits_fixed_plus_per_step():
    from bench.latency import extrapolate

    # 0.5 s of set-up plus 0.25 s a step: 0.75 s at 1 step, 1.0 s at 2, so 6.5 s at 24.
    assert extrapolate(0.75, 1.0, 24) == pytest.approx(6.5)
    assert extrapolate(0.75, 1.0, 1) == pytest.approx(0.75)
    assert extrapolate(1.0, 0.9, 24) == pytest.approx(1.0)  # noise: no negative per-step cost


def test_extrapolated_rows_cover_every_stage_and_sum_to_the_total():
    from bench.latency import time_pipeline_extrapolated

    seen_steps = []

    def run(batch, steps, clock):
        seen_steps.append(steps)
        with clock("text_encoder"):
            pass
        for _ in range(steps):
            with clock("base"):
                sum(range(2000))

    rows = time_pipeline_extrapolated(run, info("m", profile="scaled"), full_steps={"base": 24}, batch_sizes=[1],
                                      runs=2, warmup=1)
    assert sorted(set(seen_steps)) == [1, 2]
    by_stage = {r["stage"]: r for r in rows}
    assert set(by_stage) == {"text_encoder", "base", "total"}
    assert by_stage["total"]["median_s"] == pytest.approx(by_stage["text_encoder"]["median_s"] + by_stage["base"]["median_s"])
    assert "extrapolated" in by_stage["total"]["protocol"] and by_stage["total"]["profile"] == "scaled"


def test_scaled_profile_keeps_the_shape_of_the_work():
    from bench.profiles import scaled_config
    from muse.presets import preset_config

    full, scaled = preset_config("muse-3b"), scaled_config(preset_config("muse-3b"))
    assert scaled.base.hidden == full.base.hidden // 16 and scaled.base.layers == full.base.layers
    assert (scaled.base.heads, scaled.base.grid, scaled.base.codebook_size) == (full.base.heads, 16, 8192)
    assert (scaled.superres.layers, scaled.superres.enc_layers, scaled.superres.grid) == (32, 16, 64)
    assert scaled.superres.attention_block == full.superres.attention_block
    assert scaled.text.max_length == full.text.max_length and scaled.text.model["num_layers"] == 24
    assert scaled.base.text_dim == scaled.text.model["d_model"] == 256
    assert (scaled.base_sampler, scaled.superres_sampler) == (full.base_sampler, full.superres_sampler)
    assert len(scaled.vq_base.block_out_channels) == len(full.vq_base.block_out_channels)  # same f=16


def test_paper_table3_puts_measured_beside_published():
    from bench.jobs import paper_table3

    rows = [dict(model="muse-3b", resolution=256, batch_size=1, stage="total", status="ok", median_s=2.0,
                 device="cpu", profile="scaled", weights="random", protocol="extrapolated: ..."),
            dict(model="muse-3b", resolution=256, batch_size=8, stage="total", status="ok", median_s=9.0,
                 device="cpu", profile="scaled", weights="random", protocol="p")]
    table = paper_table3(rows)
    muse = [r for r in table if r["paper_model"] == "Muse-3B"]
    assert [(r["resolution"], r["published_s"], r["measured_s"]) for r in muse] == [(256, 0.5, 2.0), (512, 1.3, None)]
    assert muse[0]["measured_profile"] == "scaled" and "Table 3" in muse[0]["source"]
    assert {r["paper_model"] for r in table} >= {"Imagen", "Parti-3B", "LDM, 50 steps"}


def test_paper_table3_job_on_a_scaled_model(tmp_path):
    done = muse_bench(tmp_path, "experiment=paper_table3", "latency.models=[muse-632m]", "latency.resolutions=[256]",
                      "latency.compare=[]", "latency.runs=1", "latency.warmup=0")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    assert {r["profile"] for r in rows} == {"scaled"} and all("extrapolated" in r["protocol"] for r in rows)
    table = read_csv(tmp_path / "table3.csv")
    assert len(table) == 7 and all(r["source"] for r in table)


def test_compiled_runs_report_compilation_apart(tmp_path):
    # The eager backend exercises the compile path (Dynamo capture) without minutes of C++ compilation.
    done = muse_bench(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compare=[]",
                      "latency.resolutions=[256]", "latency.batch_sizes=[1]", "latency.runs=1", "latency.compile=true",
                      "latency.compile_backend=eager")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    assert {r["compiled"] for r in rows} == {"True"}
    total = next(r for r in rows if r["stage"] == "total")
    assert float(total["compile_s"]) >= 0
    assert all(r["compile_s"] == "" for r in rows if r["stage"] != "total")


def test_compile_needs_a_warmup_run(tmp_path):
    done = muse_bench(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compile=true", "latency.warmup=0")
    assert done.returncode == 2 and "warmup" in done.stderr and "Traceback" not in done.stderr


def test_compiled_pipeline_gives_the_same_tokens():
    from bench.runners import CompileSpec, _muse_runner

    eager = _muse_runner("muse-tiny", "cpu", torch.float32, 0, 0)
    compiled = _muse_runner("muse-tiny", "cpu", torch.float32, 0, 0, compile=CompileSpec(True, "default", "eager"))
    a = eager.pipeline(["a red cube"], seed=3, steps=4)
    b = compiled.pipeline(["a red cube"], seed=3, steps=4)
    assert torch.equal(a.tokens, b.tokens)


def test_proxies_run_through_the_latency_job(tmp_path):
    done = muse_bench(tmp_path, "experiment=latency", "latency.models=[parti-3b-proxy,imagen-proxy]",
                      "latency.profile=tiny", "latency.compare=[]", "latency.resolutions=[256]", "latency.batch_sizes=[1]",
                      "latency.runs=1", "latency.warmup=0", "latency.protocol=extrapolated")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    stages = {(r["model"], r["stage"]) for r in rows}
    assert {("parti-3b-proxy", "autoregressive"), ("imagen-proxy", "superres_256"), ("imagen-proxy", "total")} <= stages
    assert {r["profile"] for r in rows} == {"tiny"}


def test_extrapolation_shrugs_off_one_disturbed_pair(monkeypatch):
    import bench.latency as latency
    from bench.timing import Measurement

    # Fixed 0.5 s + 0.1 s a step; the second measured pair's 2-step run was slowed by 5 s (a busy machine).
    calls = []

    def fake_measure(run, *, device, warmup, runs):
        calls.append(None)
        steps = 1 if len(calls) % 2 else 2
        base = 0.5 + 0.1 * steps + (5.0 if len(calls) == 6 else 0.0)  # calls 1-2: warm-up pair
        return Measurement([base + 0.2], {"text_encoder": [0.2], "base": [base]}, 1)

    monkeypatch.setattr(latency, "measure", fake_measure)
    rows = latency.time_pipeline_extrapolated(lambda b, k, c: None, info("m"), full_steps={"base": 24},
                                              batch_sizes=[1], runs=3, warmup=1)
    by_stage = {r["stage"]: r for r in rows}
    assert len(calls) == 8
    assert by_stage["base"]["median_s"] == pytest.approx(0.5 + 24 * 0.1)
    assert by_stage["text_encoder"]["median_s"] == pytest.approx(0.2)
    assert by_stage["total"]["median_s"] == pytest.approx(0.2 + 2.9)
    assert by_stage["total"]["p90_s"] > by_stage["total"]["median_s"]  # the disturbed pair shows in the tail
