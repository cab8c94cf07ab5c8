"""pytest-benchmark benchmarks of the tiny pipelines (random weights, muse-tiny: a test-size model).

Run with `make bench` (or `python -m pytest benchmarks`). These measure; they assert nothing about time.
Numbers from muse-tiny say nothing about paper-size models: the latency harness times those.
"""

import pytest
import torch

from muse import MusePipeline
from muse.sampling import make_generators


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MusePipeline.from_preset("muse-tiny")


@pytest.mark.parametrize("resolution", [256, 512])
def test_tiny_pipeline(benchmark, tiny, resolution):
    benchmark.extra_info.update(model="muse-tiny", weights="random", resolution=resolution, batch_size=1,
                                device=str(tiny.device), threads=torch.get_num_threads())
    benchmark.pedantic(tiny, args=(["a red cube on a blue sphere"],), kwargs=dict(resolution=resolution, seed=0),
                       rounds=3, warmup_rounds=1)


def _guided_decode(benchmark, tiny, steps: int):
    text = tiny.encode_text(["a red cube"] * 8, None, guided=True)
    start = torch.full((8, tiny.base.seq_len), tiny.mask_token_id)
    benchmark.extra_info.update(model="muse-tiny", weights="random", batch_size=8, stage="base", steps=steps)

    def run():
        gens = make_generators(0, range(8), "cpu")
        return tiny.decode_stage(tiny.base, text, start, tiny.config.base_sampler, gens, steps=steps)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


def test_one_sampler_step(benchmark, tiny):
    """One guided base step at batch 8: a forward over 2 x 8 x 256 tokens, guidance and sampling (as a last
    step, so without re-masking; test_two_sampler_steps includes it)."""
    _guided_decode(benchmark, tiny, steps=1)


def test_two_sampler_steps(benchmark, tiny):
    """Two guided base steps at batch 8: each a forward over 2 x 8 x 256 tokens and sampling; the first
    also re-masks (the last step of a decode never does)."""
    _guided_decode(benchmark, tiny, steps=2)
