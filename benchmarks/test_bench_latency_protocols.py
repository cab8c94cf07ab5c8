"""How far the per_stage latency protocol's sum of parts is from timing the whole pipeline.

per_stage (bench/latency/stagewise.py) exists for paper-size models that a CPU cannot run end to end; on a model that
does run whole, its estimate can be put beside a measured end-to-end time. This benchmark times both, under the
same rounds, for models at the scaled profile (real layer counts, token grids and step counts; narrower), and
records the estimate / measured ratio in extra_info. It measures; it asserts nothing about time.

Run with `make bench ARGS="-k protocols -s"`.
"""

import statistics

import pytest
import torch

from bench.latency.measure import RowInfo, time_measured, time_per_stage
from bench.models.runner import build_runner


class Spec:
    compile = False
    compile_mode = "default"
    compile_backend = "inductor"
    sd_pretrained = None

    def __init__(self, protocol, profile):
        self.protocol, self.profile, self.sd_profile = protocol, profile, profile


@pytest.mark.parametrize("model,resolution", [("muse-632m", 256), ("muse-632m", 512), ("sd-v1-4", 256)])
def test_per_stage_estimate_against_the_whole_pipeline(benchmark, model, resolution):
    dtype = torch.float32
    prompts = ["a red cube on a blue sphere"]
    whole = build_runner(model, Spec("measured", "scaled"), "cpu", dtype, 0, 0, prompts=prompts)
    parts = build_runner(model, Spec("per_stage", "scaled"), "cpu", dtype, 0, 0, prompts=prompts)
    info = RowInfo(model, "random", "scaled", resolution, whole.steps(resolution), "cpu", dtype, whole.params,
                   whole.flops(resolution))

    def run():
        measured = time_measured({model: (info, lambda b, clock: whole.run(prompts[:b], resolution, clock))},
                                 batch=1, runs=3, warmup=1)[model]
        estimated = time_per_stage({model: (parts.stage_plan, {resolution: info})}, resolutions=[resolution],
                                   batch_sizes=[1], runs=3, warmup=1)[(model, resolution, 1)]
        return measured, estimated

    measured, estimated = benchmark.pedantic(run, rounds=1, iterations=1)
    m, e = statistics.median(measured.totals), statistics.median(estimated.totals)
    benchmark.extra_info.update(
        model=model, resolution=resolution, profile="scaled", measured_s=m, per_stage_s=e, ratio=e / m,
        measured_stages={k: statistics.median(v) for k, v in measured.stages.items()},
        per_stage_stages={k: statistics.median(v) for k, v in estimated.stages.items()},
        threads=torch.get_num_threads())
    print(f"\n{model} {resolution}px scaled: measured {m:.3f} s, per_stage {e:.3f} s, ratio {e / m:.3f}")
