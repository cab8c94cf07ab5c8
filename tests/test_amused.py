"""aMUSEd through our sampler, against diffusers' own AmusedPipeline on tiny random components.

The components are made with our amused-tiny preset, saved in diffusers' layout by diffusers itself, and
loaded back by both pipelines: the real loading code on both sides.
"""

import pytest
import torch
from diffusers import AmusedPipeline, AmusedScheduler

from muse import MusePipeline
from muse.sampling import guide
from muse.text import TextEmbedding

PROMPT = "a photograph of an astronaut riding a horse"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ours = MusePipeline.from_preset("amused-tiny")
    reference = AmusedPipeline(
        vqvae=ours.vq_base.vq, tokenizer=ours.text_encoder.tokenizer, text_encoder=ours.text_encoder.model,
        transformer=ours.base.uvit, scheduler=AmusedScheduler(mask_token_id=ours.mask_token_id),
    )
    path = tmp_path_factory.mktemp("amused-tiny")
    reference.save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="module")
def pipes(checkpoint):
    reference = AmusedPipeline.from_pretrained(checkpoint, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    return MusePipeline.from_pretrained(checkpoint), reference


def test_loaded_from_diffusers_layout(pipes):
    ours, reference = pipes
    assert ours.config.family == "amused" and ours.weights == "pretrained"
    assert ours.supported_resolutions == (256,)
    assert ours.mask_token_id == reference.scheduler.config.mask_token_id


def test_identical_transformer_logits(pipes):
    ours, reference = pipes
    seen = {}

    def hook(module, args, kwargs, output):
        seen.setdefault("inputs", (args, kwargs))
        seen.setdefault("output", output)

    handle = reference.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        reference(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        handle.remove()
    # The reference batches [negative, positive]; build the same batch through our text encoder and adapter.
    text = TextEmbedding.cat([ours.text_encoder([""]), ours.text_encoder([PROMPT])])
    tokens = torch.full((2, ours.base.seq_len), ours.mask_token_id)
    logits = ours.base.logits(tokens, ours.base.context(text))
    expected = seen["output"]
    expected = expected.reshape(2, expected.shape[1], -1).transpose(1, 2)
    assert torch.equal(logits, expected)
    # And their guidance is ours with t = g - 1.
    uncond, cond = expected.chunk(2)
    assert torch.allclose(guide(cond, uncond, 10.0 - 1), uncond + 10.0 * (cond - uncond), atol=1e-5)


@pytest.mark.parametrize("steps", [4, 12])
def test_same_number_of_masked_tokens_after_every_step(pipes, steps):
    ours, reference = pipes
    counts = []
    reference(
        PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent",
        callback=lambda step, timestep, latents: counts.append(int((latents == ours.mask_token_id).sum())),
    )
    out = ours([PROMPT], seed=0, steps=steps, return_trajectory=True)
    assert counts == (out.trajectory == ours.mask_token_id).sum(-1)[0].tolist()
    assert counts[-1] == 0


def test_amused_generates_images_through_our_sampler(pipes):
    ours, _ = pipes
    out = ours(["a cat", "a dog"], seed=0, steps=4)
    assert [im.size for im in out.images] == [(256, 256)] * 2
    assert out.tokens.max() < ours.base.uvit.config.codebook_size
    with pytest.raises(Exception, match="resolution 512"):
        ours(["a cat"], resolution=512)
