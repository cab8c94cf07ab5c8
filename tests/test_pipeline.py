"""MusePipeline end to end with the tiny preset: shapes, schedule, determinism, bad input, checkpoints."""

import json
import math
import os

import pytest
import torch

from muse import (
    MissingWeightsError,
    MuseInputError,
    MusePipeline,
    UnsafeCheckpointError,
)

PROMPTS = ["a red cube on a blue sphere", "a corgi wearing sunglasses", "", "an astronaut riding a horse",
           "a bowl of ramen", "the eiffel tower at night", "two cats playing chess", "a lighthouse in a storm"]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MusePipeline.from_preset("muse-tiny")


def test_generates_256_and_512(pipe):
    out = pipe(PROMPTS[:2], resolution=256, seed=0, return_trajectory=True)
    assert [im.size for im in out.images] == [(256, 256)] * 2
    assert out.tokens.shape == (2, 256) and out.tokens.max() < pipe.mask_token_id
    assert out.trajectory.shape == (2, 24, 256)
    out = pipe(PROMPTS[:1], resolution=512, seed=0)
    assert out.images[0].size == (512, 512)
    assert out.tokens.shape == (1, 64 * 64)


def test_trajectory_follows_the_cosine_schedule(pipe):
    out = pipe(PROMPTS[:2], seed=1, return_trajectory=True)
    counts = (out.trajectory == out.mask_token_id).sum(-1)
    # floor(N cos(pi/2 (s+1)/T)) evaluated in float32 (as MaskGIT and aMUSEd do); none after the last step.
    ratios = torch.arange(1, 24, dtype=torch.float32) / 24
    expected = torch.floor(256 * torch.cos(ratios * math.pi / 2)).long().tolist() + [0]
    assert counts.tolist() == [expected, expected]
    assert torch.equal(out.trajectory[:, -1], out.tokens)


def test_sample_is_the_same_alone_or_in_a_batch_of_8(pipe):
    # Few steps: batch independence does not depend on the step count, and this CPU is slow.
    batch = pipe(PROMPTS, seed=5, sample_indices=range(100, 108), steps=6).tokens
    for i in (0, 3, 7):
        alone = pipe([PROMPTS[i]], seed=5, sample_indices=[100 + i], steps=6).tokens
        assert torch.equal(alone[0], batch[i])


def test_sample_512_is_the_same_alone_or_in_a_batch(pipe):
    batch = pipe(PROMPTS[:3], resolution=512, seed=2).tokens
    alone = pipe([PROMPTS[2]], resolution=512, seed=2, sample_indices=[2]).tokens
    assert torch.equal(alone[0], batch[2])


def test_seed_and_negative_prompt_change_the_image(pipe):
    a = pipe(PROMPTS[:1], seed=0).tokens
    assert torch.equal(a, pipe(PROMPTS[:1], seed=0).tokens)
    assert not torch.equal(a, pipe(PROMPTS[:1], seed=1).tokens)
    assert not torch.equal(a, pipe(PROMPTS[:1], seed=0, negative_prompt="blurry").tokens)


def test_empty_prompt_is_the_unconditional_prompt(pipe):
    out = pipe([""], seed=0, guidance_scale=1.0)
    assert out.images[0].size == (256, 256)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=[]), "no prompts"),
        (dict(prompts=["x"], resolution=384), "resolution 384"),
        (dict(prompts=["x"], steps=0), "steps"),
        (dict(prompts=["x"], superres_steps=0, resolution=512), "superres_steps"),
        (dict(prompts=[None]), "strings"),
        (dict(prompts=["x", "y"], sample_indices=[0]), "sample indices"),
    ],
)
def test_bad_input_is_refused_clearly(pipe, kwargs, match):
    with pytest.raises(MuseInputError, match=match):
        pipe(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(MuseInputError, match="muse-tiny"):
        MusePipeline.from_preset("muse-7b")


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    loaded = MusePipeline.from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.weights == "pretrained"
    assert loaded.parameter_counts() == pipe.parameter_counts()
    for name, module in pipe.modules().items():
        theirs = loaded.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, theirs[key]), f"{name}.{key}"
    fast = dict(resolution=512, seed=4, steps=4, superres_steps=2)  # equality does not need every step
    assert torch.equal(pipe(PROMPTS[:2], **fast).tokens, loaded(PROMPTS[:2], **fast).tokens)


def test_checkpoint_missing_file_is_named(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "superres.safetensors")
    with pytest.raises(MissingWeightsError, match="superres.safetensors"):
        MusePipeline.from_pretrained(str(tmp_path / "ckpt"))


def test_pickle_checkpoints_are_refused(pipe, tmp_path):
    pickle = tmp_path / "model.ckpt"
    torch.save(pipe.base.state_dict(), pickle)
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        MusePipeline.from_pretrained(str(pickle))
    # A folder whose component was saved as a pickle instead of safetensors is refused too.
    pipe.save_pretrained(tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "base.safetensors")
    torch.save(pipe.base.state_dict(), tmp_path / "ckpt" / "base.bin")
    with pytest.raises(UnsafeCheckpointError, match="base.bin"):
        MusePipeline.from_pretrained(str(tmp_path / "ckpt"))


def test_checkpoint_from_a_newer_version_is_refused(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "muse_pipeline.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(MissingWeightsError, match="newer"):
        MusePipeline.from_pretrained(str(tmp_path / "ckpt"))


def test_missing_hub_download_says_how_to_supply_it(monkeypatch):
    # Offline by construction: the hub is never reached, the download fails and the error must say what to do.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "amused/amused-256"
    with pytest.raises(MissingWeightsError, match=f"huggingface-cli download {hub_id}"):
        MusePipeline.from_pretrained(hub_id)


def test_pretrained_text_encoder_offline_is_a_clear_error():
    from dataclasses import replace

    from muse.presets import preset_config
    from muse.text import build_text_model

    config = preset_config("muse-tiny").text
    with pytest.raises(MissingWeightsError, match=r"from_pretrained\(DIR\); in muse-bench, model\.pretrained=DIR"):
        build_text_model(replace(config, pretrained="/nonexistent/t5-v1_1-xxl"))


def test_pixels_are_the_same_alone_or_in_a_batch(pipe):
    batch = pipe(PROMPTS[:3], seed=9, steps=4, output_type="pt").images
    alone = pipe([PROMPTS[1]], seed=9, steps=4, sample_indices=[1], output_type="pt").images
    assert torch.equal(alone[0], batch[1])


def test_random_weights_depend_on_the_init_seed_only():
    torch.manual_seed(123)
    a = MusePipeline.from_preset("muse-tiny", seed=3)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    b = MusePipeline.from_preset("muse-tiny", seed=3)
    c = MusePipeline.from_preset("muse-tiny", seed=4)
    for (name, x), y, z in zip(a.base.named_parameters(), b.base.parameters(), c.base.parameters()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.base.decoder.pos, c.base.decoder.pos)
    torch.manual_seed(123)
    MusePipeline.from_preset("muse-tiny", seed=5)
    assert torch.equal(torch.rand(1), after_a)  # building a pipeline leaves the caller's generator alone


def test_random_weight_images_show_their_tokens(pipe):
    # With diffusers' +-1/n codebook init every token decoded to nearly the same latent, so all random-weight
    # images looked alike; different samples must differ visibly.
    images = pipe(PROMPTS[:2], seed=0, steps=4, output_type="pt").images
    assert (images[0] - images[1]).abs().mean() > 0.05  # > 12 grey levels on average


def forward_batches(module):
    sizes = []
    return sizes, module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))


def with_guidance_t(pipe, t):
    """The same modules with every stage's preset guidance set to Muse's t."""
    from dataclasses import replace

    c = pipe.config
    config = replace(c, base_sampler=replace(c.base_sampler, guidance_t=t),
                     superres_sampler=replace(c.superres_sampler, guidance_t=t))
    return MusePipeline(config, pipe.text_encoder, pipe.vq_base, pipe.base, pipe.vq_superres, pipe.superres)


def test_guidance_scale_is_the_cfg_scale_in_every_stage(pipe):
    # guidance_scale is g = 1 + t: g = 3 decodes exactly as presets of Muse's t = 2, in both stages.
    fast = dict(resolution=512, seed=1, steps=3, superres_steps=2)
    assert torch.equal(pipe(PROMPTS[:2], guidance_scale=3.0, **fast).tokens,
                       with_guidance_t(pipe, 2.0)(PROMPTS[:2], **fast).tokens)
    # The preset (t = 4, ramped) is g = 5.
    assert torch.equal(pipe(PROMPTS[:1], seed=2, steps=4).tokens, pipe(PROMPTS[:1], seed=2, steps=4, guidance_scale=5).tokens)
    settings = pipe.sampler_settings(512, guidance_scale=3.0, steps=6)
    assert {k: (v["guidance_scale"], v["guidance_t"], v["steps"]) for k, v in settings.items()} == {
        "base": (3.0, 2.0, 6), "superres": (3.0, 2.0, 8)}


def test_guidance_scale_one_runs_no_unconditional_forward(pipe):
    base, base_hook = forward_batches(pipe.base.decoder)
    sr, sr_hook = forward_batches(pipe.superres.decoder)
    try:
        pipe(PROMPTS[:2], resolution=512, seed=0, steps=2, superres_steps=2, guidance_scale=1.0)
    finally:
        base_hook.remove(), sr_hook.remove()
    assert base == [2, 2] and sr == [2, 2]


@pytest.mark.parametrize("g", [0.0, 0.99, -1.0, float("nan")])
def test_guidance_scale_below_one_is_refused_naming_the_convention(pipe, g):
    with pytest.raises(MuseInputError, match=r"guidance_scale=.*classifier-free guidance scale g.*t is g - 1.*at least 1"):
        pipe(PROMPTS[:1], guidance_scale=g)


def test_checkpoints_that_stored_t_as_guidance_scale_still_load(pipe, tmp_path):
    # Sampler configs written before the rename held Muse's t under the key guidance_scale.
    pipe.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "muse_pipeline.json"
    data = json.loads(path.read_text())
    for stage in ("base_sampler", "superres_sampler"):
        sampler = data["config"][stage]
        sampler["guidance_scale"] = sampler.pop("guidance_t") - 1.5  # a t of 2.5, to see it read as t
    path.write_text(json.dumps(data))
    loaded = MusePipeline.from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.config.base_sampler.guidance_t == loaded.config.superres_sampler.guidance_t == 2.5
    fast = dict(resolution=512, seed=4, steps=3, superres_steps=2)
    assert torch.equal(loaded(PROMPTS[:1], **fast).tokens, pipe(PROMPTS[:1], guidance_scale=3.5, **fast).tokens)


def test_replica_draws_an_independent_image_and_replica_zero_is_the_default(pipe):
    a = pipe(PROMPTS[:1], seed=0, steps=4, sample_indices=[3]).tokens
    assert torch.equal(a, pipe(PROMPTS[:1], seed=0, steps=4, sample_indices=[3], replica=0).tokens)
    replica1 = pipe(PROMPTS[:1], seed=0, steps=4, sample_indices=[3], replica=1).tokens
    seed1 = pipe(PROMPTS[:1], seed=1, steps=4, sample_indices=[3]).tokens
    assert not torch.equal(replica1, a) and not torch.equal(replica1, seed1)


def test_decoded_pixels_do_not_depend_on_the_thread_count_with_decode_threads(pipe):
    # oneDNN's convolutions round differently per intra-op thread count (torchrun gives each rank one thread):
    # with decode_threads fixed, the pixels are a function of the tokens alone.
    tokens = pipe(PROMPTS, seed=0, steps=4).tokens
    before = torch.get_num_threads()
    images = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            images[threads] = pipe.decode_tokens(tokens, 256, threads=1)
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(images[1], images[2]) and torch.equal(images[1], images[3])
