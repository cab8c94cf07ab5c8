"""Generation plus scoring: memory against the number of samples, and streaming against re-reading PNGs.

Run with `make bench`. muse-tiny with random weights (2 base steps) and small offline feature networks
(bench.testing.RandomConvFeatures for FID/KID, the tiny open_clip model for CLIP): a test-size setting whose
times say nothing about paper-size models. These measure and record; they assert nothing about time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent('''
    import json, resource, sys, tempfile
    from omegaconf import OmegaConf
    from bench.data.prompts import load_dataset
    from bench.jobs.generation import generate_samples, plan_samples
    from bench.models.generators import load_generator
    from bench.metrics.scoring import MetricTools, SampleScorer
    from bench.metrics.features import build_fid_extractor
    from bench.metrics.clip_model import TINY_CLIP_NAME, open_clip_scorer

    n = int(sys.argv[1])
    gen = load_generator(OmegaConf.create({"name": "muse-tiny", "pretrained": None, "init_seed": 0, "steps": 2}), "cpu")
    tools = MetricTools(fid=build_fid_extractor({"feature_extractor": {"_target_": "bench.testing.RandomConvFeatures"}}),
                        clip=open_clip_scorer(TINY_CLIP_NAME, None, seed=0))
    scorer = SampleScorer(tools, 256)
    plan = plan_samples(load_dataset("partiprompts", limit=n), [256])
    with tempfile.TemporaryDirectory() as out:
        generate_samples(gen.generate, plan, seed=0, batch_size=8, out_dir=out, on_images=scorer.add, progress=False)
    state = SampleScorer.merged([scorer.state()])
    print(json.dumps({"n": n, "scored": min(len(state["fid_keys"]), len(state["clip"])),
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
''')


@pytest.mark.parametrize("n", [64, 256])
def test_peak_memory_of_generation_and_scoring(benchmark, n):
    """Peak resident memory of one process that generates and scores n samples (streaming): it should not grow
    with n beyond the feature vectors (n x 64 floats here)."""

    def run():
        done = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent.parent)
        return json.loads(done.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["scored"] == n
    benchmark.extra_info.update(model="muse-tiny", weights="random", steps=2, samples=n,
                                peak_rss_bytes=result["peak_rss_bytes"],
                                extractors="RandomConvFeatures (FID/KID) + tiny random open_clip (CLIP)")
    print(f"\n{n} samples: peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from omegaconf import OmegaConf

    from bench.data.prompts import load_dataset
    from bench.jobs.generation import generate_samples, plan_samples
    from bench.metrics.features import build_fid_extractor
    from bench.metrics.scoring import MetricTools
    from bench.models.generators import load_generator

    out = tmp_path_factory.mktemp("samples")
    gen = load_generator(OmegaConf.create({"name": "muse-tiny", "pretrained": None, "init_seed": 0, "steps": 2}), "cpu")
    plan = plan_samples(load_dataset("partiprompts", limit=64), [256])
    images = []
    generate_samples(gen.generate, plan, seed=0, batch_size=8, out_dir=out, progress=False,
                     on_images=lambda samples, ims: images.extend(ims))
    tools = MetricTools(fid=build_fid_extractor({"feature_extractor": {"_target_": "bench.testing.RandomConvFeatures"}}))
    return plan, images, out, tools


def test_score_streamed_images(benchmark, made):
    from bench.metrics.scoring import SampleScorer

    plan, images, _, tools = made

    def run():
        scorer = SampleScorer(tools, 256)
        for start in range(0, len(plan), 8):
            scorer.add(plan[start : start + 8], images[start : start + 8])
        return scorer.state()

    benchmark.extra_info.update(samples=len(plan), path="streaming (in-process images)")
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


def test_score_written_pngs(benchmark, made):
    from bench.metrics.scoring import SampleScorer

    plan, _, out, tools = made

    def run():
        scorer = SampleScorer(tools, 256)
        scorer.add_files(plan, out, batch_size=8)
        return scorer.state()

    benchmark.extra_info.update(samples=len(plan), path="re-read PNGs")
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
