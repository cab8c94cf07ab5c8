"""The timing protocol and the latency job (behaviour only: no test asserts how long anything takes)."""

import csv
import json
import time

import pytest
import torch
from conftest import muse_bench

from bench.latency.floors import peak_flops
from bench.latency.measure import (
    COLUMNS,
    RowInfo,
    Timing,
    latency_csv,
    time_pipeline,
)
from bench.latency.timing import StageClock, measure, percentile

CONTRACT_COLUMNS = ("model", "weights", "profile", "resolution", "batch_size", "steps", "stage", "n_runs", "median_s",
                    "p90_s", "images_per_s", "peak_mem_bytes", "params", "flops", "device", "dtype", "compiled")


def run_latency(tmp_path, *overrides):
    """Run the command line with its run folder in tmp_path (in-process, tests/conftest.py)."""
    # Without an experiment of its own, the tiny one (the default experiment trains the shapes world).
    chosen = () if any(o.startswith("experiment=") for o in overrides) else ("experiment=tiny",)
    return muse_bench(f"hydra.run.dir={tmp_path}", *chosen, *overrides, cwd=tmp_path)


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
    # Datasheet dense bf16 peaks; the PCIe H100 is slower than the SXM part that "H100" alone matches.
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989e12
    assert peak_flops("NVIDIA H100 PCIe", torch.float16) == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312e12
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.float32) is None
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
    done = run_latency(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compare=[]",
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
    done = run_latency(tmp_path, "experiment=latency", "latency.models=[muse-7b]")
    assert done.returncode == 2
    assert "muse-tiny" in done.stderr and "sd-v1-4" in done.stderr and "Traceback" not in done.stderr
    assert "parti-3b-proxy" in done.stderr and "imagen-proxy" in done.stderr


def test_our_sampler_and_diffusers_amused_side_by_side_with_stable_diffusion(tmp_path):
    done = run_latency(tmp_path, "experiment=latency", "latency.resolutions=[256]", "latency.batch_sizes=[1]",
                      "latency.runs=2", "latency.warmup=0")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    stages = {(r["model"], r["stage"]) for r in results["latency"]}
    assert {("amused-tiny", "base"), ("amused-tiny+diffusers", "pipeline"), ("sd-v1-4", "denoiser"),
            ("sd-v1-4", "text_encoder"), ("sd-v1-4", "decoder")} <= stages
    sd = next(r for r in results["latency"] if r["model"] == "sd-v1-4" and r["stage"] == "total")
    assert (sd["steps"], sd["profile"], sd["weights"]) == (50, "tiny", "random")
    ratios = {(r["slower"], r["faster"]): r for r in results["latency_ratios"]}
    assert set(ratios) == {("amused-tiny+diffusers", "amused-tiny"), ("sd-v1-4", "muse-tiny")}
    # One architecture timed twice: a ratio of implementations, at any profile.
    samplers = ratios[("amused-tiny+diffusers", "amused-tiny")]
    assert samplers["shown"] and samplers["ratio"] > 0 and samplers["rounds"] == 2
    assert samplers["ratio_range"][0] <= samplers["ratio"] <= samplers["ratio_range"][1]
    # Two test-size models: no time ratio at all, and no full size to compare FLOPs at.
    models = ratios[("sd-v1-4", "muse-tiny")]
    assert models["ratio"] is None and not models["shown"] and "do not preserve" in models["why"]
    assert models["flop_ratio_full"] is None and models["flop_ratio_timed"] > 0
    compute = {(c["model"], c["resolution"]): c for c in results["compute"]}
    assert compute[("sd-v1-4", 512)]["flops_full"]["total"] > 8e13 and compute[("muse-tiny", 256)]["flops_full"] is None


def timing(model, totals, *, profile="full", arch=None, flops=100, full=100, batch=1, status="ok"):
    info = RowInfo(model, "random", profile, 256, 24, "cpu", torch.float32, 10, {"total": flops}, arch=arch or model,
                   full_flops_per_image={"total": full} if full else None)
    return Timing(info, batch, "measured; p", totals, {"base": totals}, 0, status=status)


def test_a_ratio_is_the_median_of_per_round_ratios_with_its_range():
    from bench.latency.ratios import latency_ratio

    # Round 2 hit a busy spell on both models: per-round ratios 2, 2, 2.2. The ratio of medians would be 3.
    slow, fast = timing("a", [2.0, 20.0, 4.4]), timing("b", [1.0, 10.0, 2.0])
    entry = latency_ratio(slow, fast)
    assert entry["ratio"] == pytest.approx(2.0) and entry["ratio_range"] == pytest.approx([2.0, 2.2])
    assert entry["verdict"] == "faster" and entry["shown"] and entry["rounds"] == 3
    # A spread that covers 1 is a tie; entirely below 1 means the "faster" model was the slower one.
    assert latency_ratio(timing("a", [1.2, 0.9, 1.1]), timing("b", [1.0, 1.0, 1.0]))["verdict"] == "tie"
    assert latency_ratio(timing("a", [0.5, 0.6]), timing("b", [1.0, 1.0]))["verdict"] == "slower"


def test_ratios_stand_beside_the_full_size_flop_ratio_and_gpu_floors():
    from bench.latency.floors import FLOOR_GPUS
    from bench.latency.ratios import latency_ratio

    entry = latency_ratio(timing("sd", [1.0], full=19e12, flops=19e12, batch=2),
                          timing("muse", [2.0], full=78e12, flops=78e12, batch=2))
    assert entry["flop_ratio_full"] == pytest.approx(19 / 78)
    for gpu, peak in FLOOR_GPUS.items():
        assert entry["floor_s"][gpu]["slower"] == pytest.approx(2 * 19e12 / peak)
        assert entry["floor_s"][gpu]["faster"] == pytest.approx(2 * 78e12 / peak)


def test_no_cross_model_ratio_from_profiles_that_break_the_cost_ratio():
    from bench.latency.ratios import latency_ratio

    # Scaled widths change two architectures' costs by different factors: SD costs 0.24x Muse-3B at full size but
    # 2x at the scaled profile, so a scaled time ratio would say the opposite of the FLOP count.
    scaled = latency_ratio(timing("sd", [2.0], profile="scaled", flops=2e11, full=19e12),
                           timing("muse", [1.0], profile="scaled", flops=1e11, full=78e12))
    assert scaled["ratio"] is None and scaled["ratio_range"] is None and not scaled["shown"]
    assert "scaled" in scaled["why"] and "2 at the timed profiles but 0.244 at full size" in scaled["why"]
    assert scaled["flop_ratio_full"] == pytest.approx(19 / 78)
    # One architecture at one profile (ours and diffusers' aMUSEd): the ratio compares implementations.
    same = latency_ratio(timing("amused+diffusers", [2.0], profile="tiny", arch="amused"),
                         timing("amused", [1.0], profile="tiny", arch="amused"))
    assert same["shown"] and same["ratio"] == 2.0
    # A model that ran out of memory (or was not started) gives no ratio.
    oom = latency_ratio(timing("a", [], status="oom"), timing("b", [1.0]))
    assert oom["ratio"] is None and "oom" in oom["why"]


def test_full_size_flops_put_stable_diffusion_below_muse_3b_and_the_scaled_profile_breaks_the_ratio():
    """The fact behind the ratio rule (README "Latency", Ratios): counted on the meta device, SD v1.4 costs about
    a quarter of Muse-3B per image at 256 and half at 512; narrowing every width by 16 does not keep that."""
    from types import SimpleNamespace

    from bench.models.runner import build_runner

    def runner(name, profile):
        spec = SimpleNamespace(compile=False, compile_mode="default", compile_backend="inductor", profile=profile,
                               sd_profile=profile, sd_pretrained=None, protocol="per_stage")
        return build_runner(name, spec, "cpu", torch.bfloat16, 0, 0)

    muse, sd = runner("muse-3b", "full"), runner("sd-v1-4", "full")
    for resolution, (sd_tflop, muse_tflop) in {256: (19.0, 77.9), 512: (84.5, 154.4)}.items():
        assert sd.full_flops(resolution)["total"] / 1e12 == pytest.approx(sd_tflop, abs=0.05)
        assert muse.full_flops(resolution)["total"] / 1e12 == pytest.approx(muse_tflop, abs=0.05)
    muse_scaled, sd_scaled = runner("muse-3b", "scaled"), runner("sd-v1-4", "scaled")
    for resolution in (256, 512):
        full = sd.full_flops(resolution)["total"] / muse.full_flops(resolution)["total"]
        scaled = sd_scaled.flops(resolution)["total"] / muse_scaled.flops(resolution)["total"]
        assert scaled / full > 1.5, (resolution, scaled, full)
    assert muse_scaled.full_flops(256) == muse.full_flops(256)  # full size whatever the profile timed


def test_compared_models_are_timed_in_rounds():
    from bench.latency.measure import compare_groups
    from bench.latency.timing import measure_group

    order = []
    measured = measure_group({name: (lambda clock, name=name: order.append(name)) for name in "ab"},
                             device="cpu", warmup=1, runs=3)
    assert "".join(order) == "ab" * 4  # one warm-up round, then three rounds, each model once per round
    assert all(len(m.total) == 3 for m in measured.values())
    assert compare_groups(["a", "b", "c", "d"], [["c", "a"]]) == [["a", "c"], ["b"], ["d"]]
    assert compare_groups(["a", "b", "c"], [["a", "b"], ["b", "c"]]) == [["a", "b", "c"]]
    # per_stage: each pair on its own, so only two models' modules of a role are in memory at once
    assert compare_groups(["a", "b", "c", "d"], [["b", "a"], ["c", "a"]], pairwise=True) == [["a", "b"], ["a", "c"],
                                                                                            ["d"]]


def test_models_of_a_group_with_the_same_text_encoder_share_one_copy():
    from bench.latency.measure import time_per_stage
    from bench.latency.stagewise import Part, StagePlan, shared_module

    built = {}  # id -> width of every module given real memory (the group's weights are counted on meta first)

    def text_role(width):
        def build(resolutions, shared):
            module = shared_module(shared, ("text", width), lambda: torch.nn.Linear(width, width), device="cpu",
                                   dtype=torch.float32)
            if module.weight.device.type != "meta":
                built[id(module)] = width
            return lambda r, b: [Part("text_encoder", "text", 1, lambda: module(torch.ones(1, width)))]
        return build

    plans = {m: (StagePlan({"text": text_role(w)}), {256: info(m)}) for m, w in (("a", 8), ("b", 8), ("c", 4))}
    time_per_stage(plans, resolutions=[256], batch_sizes=[1], runs=1, warmup=1)
    assert sorted(built.values()) == [4, 8]  # a and b (T5-XXL in Muse-632M, Muse-3B and Imagen) hold one copy


def test_extrapolation_fits_fixed_plus_per_step():
    from bench.latency.measure import extrapolate

    # 0.5 s of set-up plus 0.25 s a step: 0.75 s at 1 step, 1.0 s at 2, so 6.5 s at 24.
    assert extrapolate(0.75, 1.0, 24) == pytest.approx(6.5)
    assert extrapolate(0.75, 1.0, 1) == pytest.approx(0.75)
    assert extrapolate(1.0, 0.9, 24) == pytest.approx(1.0)  # noise: no negative per-step cost


def test_extrapolated_rows_cover_every_stage_and_sum_to_the_total():
    from bench.latency.measure import time_pipeline_extrapolated

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
    from bench.models.profiles import scaled_config
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
    from bench.jobs.latency import paper_table3

    rows = [dict(model="muse-3b", resolution=256, batch_size=1, stage="total", status="ok", median_s=2.0,
                 device="cpu", profile="scaled", weights="random", protocol="extrapolated: ..."),
            dict(model="muse-3b", resolution=256, batch_size=8, stage="total", status="ok", median_s=9.0,
                 device="cpu", profile="scaled", weights="random", protocol="p")]
    table = paper_table3(rows)
    # table3.csv's columns, and Table 3 as published (reports/paper_reference.csv, its one copy), in the paper's order.
    assert list(table[0]) == ["paper_model", "ours", "resolution", "published_s", "hardware", "note", "source",
                              "measured_s", "measured_on", "measured_profile", "measured_weights", "measured_protocol"]
    assert [(r["paper_model"], r["ours"], r["resolution"], r["published_s"], r["hardware"]) for r in table] == [
        ("Imagen", "imagen-proxy", 256, 9.1, "TPUv4"), ("Imagen", "imagen-proxy", 1024, 13.3, "TPUv4"),
        ("LDM, 50 steps", "sd-v1-4", 512, 3.7, "A100"), ("LDM, 250 steps", "", 512, 18.5, "A100"),
        ("Parti-3B", "parti-3b-proxy", 256, 6.4, "TPUv4"), ("Muse-3B", "muse-3b", 256, 0.5, "TPUv4"),
        ("Muse-3B", "muse-3b", 512, 1.3, "TPUv4")]
    muse = [r for r in table if r["paper_model"] == "Muse-3B"]
    assert [(r["resolution"], r["published_s"], r["measured_s"]) for r in muse] == [(256, 0.5, 2.0), (512, 1.3, None)]
    assert muse[0]["measured_profile"] == "scaled" and "Table 3" in muse[0]["source"]
    assert {r["paper_model"] for r in table} >= {"Imagen", "Parti-3B", "LDM, 50 steps"}


def test_paper_table3_job_writes_the_published_table_beside_per_stage_rows(tmp_path):
    # The preset's protocol (per_stage, compared pairs timed pair by pair) with test-size shapes: the full preset
    # builds T5-XXL.
    done = run_latency(tmp_path, "experiment=paper_table3", "latency.models=[muse-632m,muse-3b,sd-v1-4]",
                      "latency.resolutions=[256]", "latency.compare=[[sd-v1-4,muse-3b],[sd-v1-4,muse-632m]]",
                      "latency.runs=1", "latency.warmup=0", "latency.profile=tiny", "latency.sd_profile=tiny",
                      "latency.dtype=float32")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    assert {r["profile"] for r in rows} == {"tiny"} and all(r["protocol"].startswith("per_stage") for r in rows)
    # sd-v1-4 was timed with each partner; latency.csv has its rows once
    assert [r["model"] for r in rows if r["stage"] == "total"] == ["muse-632m", "muse-3b", "sd-v1-4"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["slower"], r["faster"], r["rounds"]) for r in results["latency_ratios"]] == [
        ("sd-v1-4", "muse-3b", 1), ("sd-v1-4", "muse-632m", 1)]
    table = read_csv(tmp_path / "table3.csv")
    assert len(table) == 7 and all(r["source"] for r in table)


def test_compiled_runs_report_compilation_apart(tmp_path):
    # The eager backend exercises the compile path (Dynamo capture) without minutes of C++ compilation.
    done = run_latency(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compare=[]",
                      "latency.resolutions=[256]", "latency.batch_sizes=[1]", "latency.runs=1", "latency.compile=true",
                      "latency.compile_backend=eager")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    assert {r["compiled"] for r in rows} == {"True"}
    total = next(r for r in rows if r["stage"] == "total")
    assert float(total["compile_s"]) >= 0
    assert all(r["compile_s"] == "" for r in rows if r["stage"] != "total")


def test_compile_needs_a_warmup_run(tmp_path):
    done = run_latency(tmp_path, "experiment=latency", "latency.models=[muse-tiny]", "latency.compile=true", "latency.warmup=0")
    assert done.returncode == 2 and "warmup" in done.stderr and "Traceback" not in done.stderr


def test_compiled_pipeline_gives_the_same_tokens():
    from bench.models.muse import preset_runner
    from bench.models.runner import CompileSpec

    eager = preset_runner("muse-tiny", "cpu", torch.float32, 0, 0)
    compiled = preset_runner("muse-tiny", "cpu", torch.float32, 0, 0, compile=CompileSpec(True, "default", "eager"))
    a = eager.pipeline(["a red cube"], seed=3, steps=4)
    b = compiled.pipeline(["a red cube"], seed=3, steps=4)
    assert torch.equal(a.tokens, b.tokens)


def test_proxies_run_through_the_latency_job(tmp_path):
    done = run_latency(tmp_path, "experiment=latency", "latency.models=[parti-3b-proxy,imagen-proxy]",
                      "latency.profile=tiny", "latency.compare=[]", "latency.resolutions=[256]", "latency.batch_sizes=[1]",
                      "latency.runs=1", "latency.warmup=0", "latency.protocol=extrapolated")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "latency.csv")
    stages = {(r["model"], r["stage"]) for r in rows}
    assert {("parti-3b-proxy", "autoregressive"), ("imagen-proxy", "superres_256"), ("imagen-proxy", "total")} <= stages
    assert {r["profile"] for r in rows} == {"tiny"}


def test_extrapolation_shrugs_off_one_disturbed_pair(monkeypatch):
    import bench.latency.measure as latency
    from bench.latency.timing import Measurement

    # Fixed 0.5 s + 0.1 s a step; in the second timed round the 2-step run was slowed by 5 s (a busy machine).
    def fake_measure_group(runs_by_key, *, device, warmup, runs):
        assert warmup == 1 and runs == 3
        out = {}
        for (model, steps) in runs_by_key:
            base = [0.5 + 0.1 * steps + (5.0 if (steps, r) == (2, 1) else 0.0) for r in range(runs)]
            out[(model, steps)] = Measurement([b + 0.2 for b in base], {"text_encoder": [0.2] * runs, "base": base})
        return out

    monkeypatch.setattr(latency, "measure_group", fake_measure_group)
    rows = latency.time_pipeline_extrapolated(lambda b, k, c: None, info("m"), full_steps={"base": 24},
                                              batch_sizes=[1], runs=3, warmup=1)
    by_stage = {r["stage"]: r for r in rows}
    assert by_stage["base"]["median_s"] == pytest.approx(0.5 + 24 * 0.1)
    assert by_stage["text_encoder"]["median_s"] == pytest.approx(0.2)
    assert by_stage["total"]["median_s"] == pytest.approx(0.2 + 2.9)
    assert by_stage["total"]["p90_s"] > by_stage["total"]["median_s"]  # the disturbed round shows in the tail


def test_per_stage_sums_count_times_call_time_per_round_and_rounds_interleave_models():
    from bench.latency.measure import time_per_stage
    from bench.latency.stagewise import Part, StagePlan

    calls = []

    def part(model, stage, count, seconds):
        def call():
            calls.append((model, stage))
            time.sleep(seconds)
        return Part(stage, f"{stage} call", count, call)

    def plan(model, scale):
        return StagePlan({"text": lambda res, shared: (lambda r, b: [part(model, "text_encoder", 2, 0.001 * scale)]),
                          "generator": lambda res, shared: (lambda r, b: [part(model, "base", 24, 0.002 * scale)])})

    plans = {m: (plan(m, s), {256: info(m)}) for m, s in (("a", 1), ("b", 3))}
    timed = time_per_stage(plans, resolutions=[256], batch_sizes=[1], runs=2, warmup=1)
    a, b = timed[("a", 256, 1)], timed[("b", 256, 1)]
    assert set(a.stages) == {"text_encoder", "base"} and len(a.totals) == 2
    for t in (a, b):
        for r in range(2):
            assert t.totals[r] == pytest.approx(t.stages["text_encoder"][r] + t.stages["base"][r])
    # count x call time: 24 calls of >= 2 ms (a) and 6 ms (b) per round
    assert min(a.stages["base"]) >= 24 * 0.002 and min(b.stages["base"]) >= 24 * 0.006
    # within a role, each round calls every model once, in turn: warm-up round then two rounds
    assert [m for m, s in calls if s == "base"] == ["a", "b"] * 3
    # a spent budget leaves configurations untimed, and says so
    over = time_per_stage(plans, resolutions=[256], batch_sizes=[1], runs=2, warmup=1, deadline=0.0)
    assert {t.status for t in over.values()} == {"over_budget"}
    assert over[("a", 256, 1)].rows()[0]["status"] == "over_budget"
    # a deadline passed during the warm-up stops it after the call in flight (a slow machine overshoots by one call)
    from bench.latency.stagewise import time_role

    calls.clear()
    slow = {m: [part(m, "base", 24, 0.05)] for m in "ab"}
    assert time_role(slow, device="cpu", warmup=1, runs=2, deadline=time.monotonic() + 0.01) is None
    assert len(calls) == 1


def test_per_stage_frees_a_role_before_building_the_next():
    """Only one role of the models is in memory at a time: that is what lets Muse-3B (T5-XXL alone is 9.8 GB in
    bfloat16) be timed at full size on a 24 GB machine."""
    import weakref

    from bench.latency.measure import time_per_stage
    from bench.latency.stagewise import Part, StagePlan

    alive = {}

    def role(name, check):
        def build(resolutions, shared):
            if check:
                assert alive["text"]() is None, "the text role's modules are still held"
            module = torch.nn.Linear(4, 4)
            alive[name] = weakref.ref(module)
            x = torch.ones(1, 4)
            return lambda r, b: [Part("text_encoder" if name == "text" else "base", name, 1, lambda: module(x))]
        return build

    plan = StagePlan({"text": role("text", False), "generator": role("generator", True)})
    timed = time_per_stage({"m": (plan, {256: info("m")})}, resolutions=[256], batch_sizes=[1, 2], runs=1, warmup=1)
    assert timed[("m", 256, 2)].status == "ok" and alive["generator"]() is None


def test_a_group_whose_weights_do_not_fit_is_timed_one_model_at_a_time_and_says_so(monkeypatch):
    """Muse-3B's generator beside the Imagen proxy's (1024 px super-res included) took more than 24 GB: the run
    was killed. A group whose weights for a role would take more than half the available memory (counted on the
    meta device before anything is allocated) is built and timed one model at a time instead."""
    import bench.latency.measure as latency
    from bench.latency.stagewise import Part, StagePlan, build_for_timing, counting_weights

    calls, built = [], []

    def plan(model, width):
        def generator(resolutions, shared):
            module = build_for_timing(lambda: torch.nn.Linear(width, width), device="cpu", dtype=torch.float32)
            built.append((model, module.weight.device.type))
            x = torch.ones(1, width)
            return lambda r, b: [Part("base", "forward", 1, lambda: calls.append(model) or module(x))]
        return StagePlan({"generator": generator})

    plans = {m: (plan(m, w), {256: info(m)}) for m, w in (("a", 64), ("b", 64))}
    with counting_weights() as tally:
        build_for_timing(lambda: torch.nn.Linear(64, 64), device="cpu", dtype=torch.float32)
    assert tally[0] == (64 * 64 + 64) * 4  # the bytes of its weights, and nothing allocated

    monkeypatch.setattr(latency, "available_memory_bytes", lambda device: 10 * tally[0])  # both fit in half
    together = latency.time_per_stage(plans, resolutions=[256], batch_sizes=[1], runs=2, warmup=1)
    assert calls == ["a", "b"] * 3 and "timed alone" not in together[("a", 256, 1)].protocol

    calls.clear()
    built.clear()
    monkeypatch.setattr(latency, "available_memory_bytes", lambda device: 3 * tally[0])  # 2 of 3 is over half
    alone = latency.time_per_stage(plans, resolutions=[256], batch_sizes=[1], runs=2, warmup=1)
    assert calls == ["a"] * 3 + ["b"] * 3  # one model at a time: a's rounds, then b's
    # counted on the meta device first (both), then built for real one at a time
    assert built == [("a", "meta"), ("b", "meta"), ("a", "cpu"), ("b", "cpu")]
    for model in "ab":
        timing = alone[(model, 256, 1)]
        assert timing.status == "ok" and len(timing.totals) == 2
        assert "generator timed alone, not interleaved" in timing.protocol


def test_timing_modules_get_values_of_the_usual_scale_and_their_position_ids():
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.latency.stagewise import build_for_timing

    config = CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                            pad_token_id=1)
    model = build_for_timing(lambda: CLIPTextModel(config), device="cpu", dtype=torch.bfloat16, seed=0)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    layer = "encoder.layers.0."
    # gains 1 and biases 0 (gains of 0.02 shrink activations into denormals: several times slower on a CPU)
    assert torch.all(params[layer + "layer_norm1.weight"] == 1) and torch.all(params[layer + "mlp.fc1.bias"] == 0)
    fc1 = params[layer + "mlp.fc1.weight"].float()
    assert fc1.abs().max() <= 32 ** -0.5 and fc1.std() > 0.1 * 32 ** -0.5
    ids = dict(model.named_buffers())["embeddings.position_ids"]
    assert torch.equal(ids[0], torch.arange(77))
    out = model(torch.tensor([[1, 2, 3]])).last_hidden_state
    assert torch.isfinite(out).all() and out.float().std() > 0.1

    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(3))

    with pytest.raises(NotImplementedError, match="scale"):
        build_for_timing(WithBuffer, device="cpu", dtype=torch.float32)


def test_the_gpu_preset_composes_as_a_gpu_user_runs_it():
    from bench.cli import compose_config

    cfg = compose_config(["experiment=latency_gpu"])  # as `muse-bench experiment=latency_gpu` composes it
    spec = cfg.latency
    assert (cfg.job, cfg.device, spec.dtype, spec.profile, spec.sd_profile, spec.protocol) == (
        "latency", "cuda", "bfloat16", "full", "full", "measured")
    assert list(spec.models) == ["muse-632m", "muse-3b", "amused-256", "amused-256+diffusers", "sd-v1-4"]
    assert (list(spec.resolutions), list(spec.batch_sizes), spec.eager_and_compiled) == ([256, 512], [1, 8], True)
    assert 0 < spec.budget_s <= 480  # the preset must end within 8 minutes on one GPU


def test_the_gpu_preset_dry_runs_on_test_size_shapes(tmp_path):
    """experiment=latency_gpu with test-size shapes on this CPU: every model built and timed eager and compiled,
    every compared pair. To keep the suite fast it times one resolution and batch size, and decoding loops at 1 and
    2 steps (protocol extrapolated; the measured protocol runs whole in test_latency_job_writes_latency_csv_...)."""
    done = run_latency(tmp_path, "experiment=latency_gpu", "device=cpu", "latency.dtype=float32", "latency.profile=tiny",
                      "latency.sd_profile=tiny", "latency.compile_backend=eager", "latency.runs=1",
                      "latency.resolutions=[256]", "latency.batch_sizes=[1]", "latency.budget_s=null",
                      "latency.protocol=extrapolated")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["latency"]["eager_and_compiled"]
    totals = {(r["model"], r["compiled"]) for r in results["latency"] if r["stage"] == "total" and r["status"] == "ok"}
    models = ("muse-632m", "muse-3b", "amused-256", "amused-256+diffusers", "sd-v1-4")
    assert totals == {(model, compiled) for model in models for compiled in (False, True)}
    ratios = results["latency_ratios"]
    assert {(r["slower"], r["faster"], r["compiled"]) for r in ratios} == {
        (a, b, c) for a, b in (("sd-v1-4", "muse-3b"), ("sd-v1-4", "muse-632m"), ("sd-v1-4", "amused-256"),
                               ("amused-256+diffusers", "amused-256")) for c in (False, True)}
    # Full-size FLOP ratios are reported even for the tiny dry run; time ratios only between implementations.
    assert all(r["flop_ratio_full"] for r in ratios)
    assert {(r["slower"], r["shown"]) for r in ratios} == {("sd-v1-4", False), ("amused-256+diffusers", True)}


def test_latency_settings_are_refused_before_anything_runs(tmp_path):
    done = run_latency(tmp_path, "experiment=latency", "latency.protocol=per_stage", "latency.compile=true")
    assert done.returncode == 2 and "per_stage" in done.stderr and "Traceback" not in done.stderr
    done = run_latency(tmp_path, "experiment=latency", "latency.compare=[[sd-v1-4,muse-632m]]")
    assert done.returncode == 2 and "latency.compare" in done.stderr and "muse-632m" in done.stderr
    assert not (tmp_path / "latency.csv").exists()
