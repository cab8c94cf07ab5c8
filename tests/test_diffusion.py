"""Stable Diffusion v1.4 baseline: published shapes, stage timing, per-sample seeding, loading, FLOPs.

Paper-size models are only ever built on the meta device here; generation uses the tiny profile.
"""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from bench.latency.timing import StageClock
from bench.models.diffusion import (
    PROFILES,
    build_stable_diffusion,
    run_stable_diffusion,
    sd14_config,
    sd_stage_flops,
    unet_evaluations,
)
from muse.errors import MissingWeightsError, MuseInputError

PROMPTS = ["a photograph of an astronaut riding a horse", "a red cube on a blue sphere"]


@pytest.fixture(scope="module")
def tiny():
    return build_stable_diffusion("tiny")


@pytest.fixture(scope="module")
def full_meta():
    return build_stable_diffusion("full", device="meta")


def generate(pipe, prompts, **kwargs):
    kwargs = {"resolution": 256, "steps": 2, "output_type": "pt", **kwargs}
    return run_stable_diffusion(pipe, prompts, **kwargs)


def stages_of(clock) -> list[str]:
    """The stages a StageClock saw, in order, each entered exactly once."""
    assert all(len(intervals) == 1 for intervals in clock.intervals.values()), dict(clock.intervals)
    return list(clock.intervals)


def test_full_profile_has_sd14_parameter_counts():
    config = sd14_config("full")
    with torch.device("meta"):
        parts = {"unet": UNet2DConditionModel(**config.unet), "vae": AutoencoderKL(**config.vae),
                 "text_encoder": CLIPTextModel(CLIPTextConfig(**config.text_encoder))}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    # CompVis/stable-diffusion-v1-4's released components.
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_meta_build_allocates_nothing(full_meta):
    for module in (full_meta.unet, full_meta.vae, full_meta.text_encoder):
        assert {p.device.type for p in module.parameters()} == {"meta"}
    assert sum(p.numel() for p in full_meta.unet.parameters()) == 859_520_964
    assert full_meta.safety_checker is None and full_meta.vae_scale_factor == 8


def test_scaled_profile_keeps_the_work_shape():
    full, scaled = sd14_config("full"), sd14_config("scaled")
    for key in ("down_block_types", "up_block_types", "layers_per_block", "in_channels", "attention_head_dim"):
        assert scaled.unet[key] == full.unet[key]
    assert len(scaled.vae["block_out_channels"]) == 4 and scaled.vae["latent_channels"] == 4
    assert scaled.text_encoder["max_position_embeddings"] == 77 and scaled.scheduler == full.scheduler
    assert scaled.unet["cross_attention_dim"] == scaled.text_encoder["hidden_size"]
    assert max(scaled.unet["block_out_channels"]) < max(full.unet["block_out_channels"])


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(MuseInputError, match="scaled"):
        sd14_config("huge")
    assert PROFILES == ("full", "scaled", "tiny")


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build_stable_diffusion("tiny", seed=3), build_stable_diffusion("tiny", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert not torch.equal(a.unet.conv_in.weight, build_stable_diffusion("tiny", seed=4).unet.conv_in.weight)


@pytest.mark.parametrize("resolution", [256, 512])
def test_tiny_generates_images_and_times_each_stage(tiny, resolution):
    clock = StageClock("cpu")
    images = run_stable_diffusion(tiny, PROMPTS[:1], resolution=resolution, steps=2,
                                  stage_timer=clock)
    assert len(images) == 1 and images[0].size == (resolution, resolution) and images[0].mode == "RGB"
    assert stages_of(clock) == ["text_encoder", "denoiser", "decoder"]


def test_same_seed_same_image_and_batch_independence(tiny):
    alone = generate(tiny, PROMPTS[1:], sample_indices=[1])
    assert torch.equal(alone, generate(tiny, PROMPTS[1:], sample_indices=[1]))
    # Sample 1 of a batch of 2 starts from the same noise as when it is generated alone; batched kernels
    # may round differently, so equal within float32 noise, while another seed is visibly different.
    batch = generate(tiny, PROMPTS)
    assert batch.shape == (2, 3, 256, 256)
    torch.testing.assert_close(batch[1], alone[0], atol=1e-4, rtol=0)
    assert (generate(tiny, PROMPTS[1:], sample_indices=[1], seed=1) - alone).abs().max() > 0.1
    assert (batch[0] - batch[1]).abs().max() > 0.1


def test_unguided_and_latent_outputs(tiny):
    latents = generate(tiny, PROMPTS[:1], guidance_scale=1.0, output_type="latent")
    assert latents.shape == (1, 4, 32, 32)
    assert not torch.equal(latents, generate(tiny, PROMPTS[:1], output_type="latent"))


@pytest.mark.parametrize("resolution", [500, 4, 0])
def test_bad_resolution(tiny, resolution):
    with pytest.raises(MuseInputError, match="multiple of 8"):
        generate(tiny, PROMPTS[:1], resolution=resolution)


def test_replicas_draw_independent_noise_and_seeds_share_none(tiny):
    first = generate(tiny, PROMPTS[:1], sample_indices=[3], output_type="latent")
    assert torch.equal(first, generate(tiny, PROMPTS[:1], sample_indices=[3], replica=0, output_type="latent"))
    replica1 = generate(tiny, PROMPTS[:1], sample_indices=[3], replica=1, output_type="latent")
    seed1 = generate(tiny, PROMPTS[:1], sample_indices=[3], seed=1, output_type="latent")
    assert (replica1 - first).abs().max() > 0.1 and (replica1 - seed1).abs().max() > 0.1


def test_guidance_below_one_is_refused(tiny):
    with pytest.raises(MuseInputError, match=r"guidance_scale=0\.5 .*at least 1"):
        generate(tiny, PROMPTS[:1], guidance_scale=0.5)


def test_bad_indices_and_steps(tiny):
    with pytest.raises(MuseInputError, match="sample indices"):
        generate(tiny, PROMPTS, sample_indices=[0])
    with pytest.raises(MuseInputError, match="steps"):
        generate(tiny, PROMPTS[:1], steps=0)


def test_missing_pretrained_folder_says_how_to_get_it():
    with pytest.raises(MissingWeightsError, match="/nonexistent") as info:
        build_stable_diffusion(pretrained="/nonexistent")
    assert "huggingface-cli download CompVis/stable-diffusion-v1-4" in str(info.value)
    assert "model.pretrained=DIR" in str(info.value)


def test_folder_without_pipeline_is_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match=str(tmp_path)):
        build_stable_diffusion(pretrained=str(tmp_path))


def test_pretrained_folder_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path, safe_serialization=True)
    loaded = build_stable_diffusion(pretrained=str(tmp_path))
    assert loaded.safety_checker is None
    original = np.asarray(run_stable_diffusion(tiny, PROMPTS[:1], resolution=256, steps=2)[0])
    again = np.asarray(run_stable_diffusion(loaded, PROMPTS[:1], resolution=256, steps=2)[0])
    assert np.array_equal(original, again)


def test_pndm_evaluates_the_unet_once_more_than_steps(full_meta):
    assert unet_evaluations(full_meta, 50) == 51
    assert unet_evaluations(full_meta, 25) == 26


@pytest.mark.parametrize("resolution, per_unet", [(512, 0.80e12), (256, 0.18e12)])
def test_flops_match_published_unet_cost(full_meta, resolution, per_unet):
    flops = sd_stage_flops(full_meta, resolution, steps=50)
    per_image_per_forward = flops["denoiser"] / (51 * 2)  # 51 guided evaluations, 2 latents each
    assert abs(per_image_per_forward - per_unet) / per_unet < 0.15
    assert flops["total"] == flops["text_encoder"] + flops["denoiser"] + flops["decoder"]
    assert 0 < flops["text_encoder"] < flops["decoder"] < flops["denoiser"]
    unguided = sd_stage_flops(full_meta, resolution, steps=50, guided=False)
    assert unguided["denoiser"] * 2 == flops["denoiser"] and unguided["decoder"] == flops["decoder"]


def test_flops_need_meta(tiny):
    with pytest.raises(MuseInputError, match="meta"):
        sd_stage_flops(tiny, 256)
