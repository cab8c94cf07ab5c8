"""Latency proxies of Parti-3B and Imagen: paper-size shapes (on meta), the KV cache, seeding, stages, FLOPs.

Paper-size models are only ever built on the meta device here; generation uses the tiny profiles.
"""

from types import SimpleNamespace

import pytest
import torch

from bench.latency.timing import StageClock
from bench.models.proxies.imagen import IMAGEN_NAME, ImagenProxy, imagen_config, imagen_runner, imagen_stage_flops
from bench.models.proxies.parti import PARTI_NAME, PartiProxy, parti_config, parti_runner, parti_stage_flops
from muse.errors import MuseInputError

PROMPTS = ["a photograph of an astronaut riding a horse", "a red cube on a blue sphere"]


@pytest.fixture(scope="module")
def parti_tiny():
    return PartiProxy.from_config(parti_config("tiny"), seed=0)


@pytest.fixture(scope="module")
def imagen_tiny():
    return ImagenProxy.from_config(imagen_config("tiny"), seed=0)


@pytest.fixture(scope="module")
def parti_meta():
    return PartiProxy.from_config(parti_config("full"), device="meta")


@pytest.fixture(scope="module")
def imagen_meta():
    return ImagenProxy.from_config(imagen_config("full"), device="meta")


def stages_of(clock) -> list[str]:
    """The stages a StageClock saw, in order, each entered exactly once."""
    assert all(len(intervals) == 1 for intervals in clock.intervals.values()), dict(clock.intervals)
    return list(clock.intervals)


def within(value: int, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


# ---- shapes ---------------------------------------------------------------------------------------------


def test_parti_full_profile_is_3b_sized(parti_meta):
    counts = parti_meta.parameter_counts()
    assert {p.device.type for p in parti_meta.decoder.parameters()} == {"meta"}
    # The module docstring's figures: encoder 12 x 2048, decoder 36 x 2048, MLP 8192.
    assert counts["text_encoder"] == 636_800_000 and counts["decoder"] == 2_452_019_200
    assert within(counts["text_encoder"] + counts["decoder"], 3e9, 0.05)
    assert len(parti_meta.decoder.blocks) == 36 and parti_meta.config.seq_len == 1024
    assert parti_meta.vq.downsample == 8 and parti_meta.vq.codebook_size == 8192


def test_imagen_full_profile_hits_the_paper_sizes(imagen_meta):
    counts = imagen_meta.parameter_counts()
    assert counts["text_encoder"] == 4_762_310_656  # the encoder of google/t5-v1_1-xxl
    assert within(counts["base"], 2e9, 0.10)
    assert within(counts["superres_256"], 600e6, 0.10)
    assert within(counts["superres_1024"], 400e6, 0.10)
    unets = imagen_meta.unets
    assert unets["base"].config.in_channels == 3
    assert unets["superres_256"].config.in_channels == unets["superres_1024"].config.in_channels == 6
    assert unets["superres_256"].config.cross_attention_dim == 4096


def test_scaled_profiles_narrow_widths_and_keep_the_work_shape():
    full, scaled = parti_config("full"), parti_config("scaled")
    assert scaled.hidden * 16 == full.hidden and scaled.mlp * 16 == full.mlp
    assert (scaled.layers, scaled.heads, scaled.seq_len, scaled.text.max_length) == \
        (full.layers, full.heads, full.seq_len, full.text.max_length)
    assert scaled.text.model["num_layers"] == full.text.model["num_layers"]
    full, scaled = imagen_config("full"), imagen_config("scaled")
    assert scaled.steps == full.steps and scaled.text.max_length == full.text.max_length
    for stage, unet in full.unets.items():
        narrow = scaled.unets[stage]
        assert tuple(c // 16 for c in unet["block_out_channels"]) == narrow["block_out_channels"]
        assert narrow["layers_per_block"] == unet["layers_per_block"]
        assert narrow["attention_head_dim"] == unet["attention_head_dim"]  # head counts (diffusers' naming)
    # Building the scaled models checks that every narrowed width divides into its heads and norm groups.
    assert ImagenProxy.from_config(scaled, device="meta").parameter_counts()["total"] > 0


def test_unknown_profile_and_stage_are_refused():
    with pytest.raises(MuseInputError, match="full, scaled, tiny"):
        parti_config("huge")
    with pytest.raises(MuseInputError, match="superres_256"):
        imagen_config("full", steps={"refiner": 10})
    assert imagen_config("full", steps={"base": 64}).steps["base"] == 64


# ---- the autoregressive decoder ---------------------------------------------------------------------------


def test_kv_cached_decode_matches_an_uncached_causal_forward(parti_tiny):
    decoder = parti_tiny.decoder
    gen = torch.Generator().manual_seed(0)
    b, n, s = 2, 24, 7
    text = torch.randn(b, s, decoder.blocks[0].cross.kv.in_features, generator=gen)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, 4:] = False  # padding in one row: cached and uncached paths must mask alike
    targets = torch.randint(0, decoder.bos_id, (b, n), generator=gen)
    inputs = torch.cat([torch.full((b, 1), decoder.bos_id), targets[:, :-1]], dim=1)
    with torch.no_grad():
        full = decoder(inputs, text, mask)
        cache, memory = decoder.new_cache(b), decoder.memory(text)
        stepped = torch.stack([decoder.step(inputs[:, p], p, cache, memory, mask) for p in range(n)], dim=1)
    assert full.shape == stepped.shape == (b, n, decoder.head.out_features)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    # The cache really holds the prefix: wiping it changes the next step.
    with torch.no_grad():
        cache.k.zero_()
        cache.v.zero_()
        wiped = decoder.step(inputs[:, n - 1], n - 1, cache, memory, mask)
    assert not torch.allclose(wiped, full[:, n - 1], atol=1e-3)


def test_parti_sample_is_the_same_alone_or_in_a_batch(parti_tiny):
    both = parti_tiny.generate(PROMPTS, steps=32, seed=7, output_type="tokens")
    alone = parti_tiny.generate(PROMPTS[1:], steps=32, seed=7, sample_indices=[1], output_type="tokens")
    assert torch.equal(alone[0], both[1])
    other_seed = parti_tiny.generate(PROMPTS[1:], steps=32, seed=8, sample_indices=[1], output_type="tokens")
    assert not torch.equal(other_seed, alone)


def test_parti_steps_decode_a_window_in_the_middle(parti_tiny, monkeypatch):
    positions = []
    step = parti_tiny.decoder.step

    def spy(token, position, *args):
        positions.append(position)
        return step(token, position, *args)

    monkeypatch.setattr(parti_tiny.decoder, "step", spy)
    parti_tiny.generate(PROMPTS[:1], steps=2, output_type="tokens")
    assert positions == [511, 512]
    with pytest.raises(MuseInputError, match="between 1 and 1024"):
        parti_tiny.generate(PROMPTS[:1], steps=1025)


def test_parti_generates_256_images_and_reports_its_stages(parti_tiny):
    clock = StageClock("cpu")
    images = parti_tiny.generate(PROMPTS, steps=2, stage_timer=clock)
    assert images.shape == (2, 3, 256, 256) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert stages_of(clock) == ["text_encoder", "autoregressive", "decoder"]
    with pytest.raises(MuseInputError, match="256 only"):
        parti_tiny.generate(PROMPTS, resolution=512, steps=1)


# ---- the cascade ----------------------------------------------------------------------------------------


def test_imagen_generates_256_and_1024_with_its_stages(imagen_tiny):
    clock = StageClock("cpu")
    images = imagen_tiny.generate(PROMPTS, resolution=256, steps=2, stage_timer=clock)
    assert images.shape == (2, 3, 256, 256) and 0 <= images.min() and images.max() <= 1
    assert stages_of(clock) == ["text_encoder", "base", "superres_256"]
    clock = StageClock("cpu")
    images = imagen_tiny.generate(PROMPTS[:1], resolution=1024, steps=1, stage_timer=clock)
    assert images.shape == (1, 3, 1024, 1024)
    assert stages_of(clock) == ["text_encoder", "base", "superres_256", "superres_1024"]
    with pytest.raises(MuseInputError, match="256 and 1024"):
        imagen_tiny.generate(PROMPTS, resolution=512, steps=1)


def test_imagen_sample_is_the_same_alone_or_in_a_batch(imagen_tiny):
    both = imagen_tiny.generate(PROMPTS, resolution=256, steps=2, seed=3)
    alone = imagen_tiny.generate(PROMPTS[1:], resolution=256, steps=2, seed=3, sample_indices=[1])
    torch.testing.assert_close(alone[0], both[1], atol=1e-4, rtol=0)
    assert not torch.allclose(both[0], both[1], atol=1e-2)


# ---- FLOPs ----------------------------------------------------------------------------------------------


def test_parti_flops_sum_every_position_exactly():
    meta = PartiProxy.from_config(parti_config("tiny"), device="meta")
    decoder, config = meta.decoder, meta.config
    length = config.text.max_length
    with torch.device("meta"):
        text = torch.zeros(2, length, meta.text_encoder.dim)
        mask = torch.ones(2, length, dtype=torch.bool)
        token = torch.zeros(2, dtype=torch.long)
    memory, cache = decoder.memory(text), decoder.new_cache(2)

    def count(fn):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    per_position = [count(lambda p=p: decoder.step(token, p, cache, memory, mask)) for p in range(6)]
    assert per_position[5] > per_position[0]  # later tokens attend to more keys
    fixed = count(lambda: decoder.memory(text))
    assert parti_stage_flops(meta, tokens=6)["autoregressive"] == fixed + sum(per_position)


def test_parti_flops_grow_with_the_number_of_tokens(parti_meta):
    flops = parti_stage_flops(parti_meta)
    assert all(value > 0 for value in flops.values())
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")
    half = parti_stage_flops(parti_meta, tokens=512)
    one = parti_stage_flops(parti_meta, tokens=1)["autoregressive"]  # the text memory and the first token
    ratio = (flops["autoregressive"] - one) / (half["autoregressive"] - one)
    # 1023 against 511 more tokens (x 2.002), each attending to a longer prefix on average (x 1.017).
    assert 2.03 < ratio < 2.04
    assert half["text_encoder"] == flops["text_encoder"] and half["decoder"] == flops["decoder"]
    # The module docstring's figures (TFLOP per image).
    assert within(flops["autoregressive"], 9.269e12, 0.001) and within(flops["total"], 12.179e12, 0.001)


def test_imagen_flops_by_stage_and_step_count(imagen_meta):
    at_256, at_1024 = imagen_stage_flops(imagen_meta, 256), imagen_stage_flops(imagen_meta, 1024)
    assert list(at_256) == ["text_encoder", "base", "superres_256", "total"]
    assert list(at_1024) == ["text_encoder", "base", "superres_256", "superres_1024", "total"]
    assert all(value > 0 for value in at_1024.values())
    assert at_1024["base"] == at_256["base"] and at_1024["total"] > at_256["total"]
    one_step = imagen_stage_flops(imagen_meta, 256, steps={"base": 1})
    assert at_256["base"] == imagen_meta.config.steps["base"] * one_step["base"]
    assert within(at_256["total"], 1258.8e12, 0.001) and within(at_1024["total"], 4335.7e12, 0.001)
    with pytest.raises(MuseInputError, match="meta"):
        imagen_stage_flops(ImagenProxy.from_config(imagen_config("tiny")), 256)


# ---- runners --------------------------------------------------------------------------------------------


def test_parti_runner_runs_under_a_stage_clock():
    runner = parti_runner(PARTI_NAME, SimpleNamespace(profile="tiny"), "cpu", torch.float32, init_seed=0, seed=0)
    assert (runner.model, runner.weights, runner.profile, runner.resolutions) == (PARTI_NAME, "random", "tiny", (256,))
    assert runner.steps(256) == 1024 and runner.full_steps(256) == {"autoregressive": 1024}
    assert set(runner.flops(256)) == {"text_encoder", "autoregressive", "decoder", "total"}
    clock = StageClock("cpu")
    images = runner.run(PROMPTS[:1], 256, clock, 1)
    assert images.shape == (1, 3, 256, 256)
    assert set(clock.intervals) == {"text_encoder", "autoregressive", "decoder"}
    assert runner.params == runner.pipeline.parameter_counts()["total"]


def test_imagen_runner_reports_steps_per_resolution():
    runner = imagen_runner(IMAGEN_NAME, SimpleNamespace(profile="tiny"), "cpu", torch.float32, init_seed=0, seed=0,
                           steps={"superres_1024": 8})
    assert (runner.model, runner.resolutions) == (IMAGEN_NAME, (256, 1024))
    assert runner.full_steps(256) == {"base": 256, "superres_256": 128}
    assert runner.full_steps(1024) == {"base": 256, "superres_256": 128, "superres_1024": 8}
    assert runner.steps(1024) == "256+128+8"
    assert set(runner.flops(1024)) == {"text_encoder", "base", "superres_256", "superres_1024", "total"}
    clock = StageClock("cpu")
    assert runner.run(PROMPTS[:1], 256, clock, 1).shape == (1, 3, 256, 256)
    assert set(clock.intervals) == {"text_encoder", "base", "superres_256"}
