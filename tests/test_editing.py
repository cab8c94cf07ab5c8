"""Zero-shot editing on real photographs: inpainting, outpainting and mask-free editing."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from muse import MuseInputError, MusePipeline

FIXTURE = Path(__file__).parent / "assets" / "photo_256.png"


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MusePipeline.from_preset("muse-tiny")


@pytest.fixture(scope="module")
def photo():
    """A real photograph (CC BY 2.0, see tests/assets/README.md), centre-cropped to 512x512."""
    return Image.open(FIXTURE).convert("RGB").resize((512, 512), Image.BICUBIC)


def box_mask(size, left, top, right, bottom):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_inpainting_leaves_unmasked_tokens_untouched(pipe, photo):
    image = photo.resize((256, 256), Image.BICUBIC)
    mask = box_mask(256, 64, 64, 160, 128)  # 6 x 4 tokens at f=16
    out = pipe.inpaint(image, mask, ["a red balloon", "a tree"], seed=0, steps=6)
    original = pipe.vq_base.encode(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255)
    assert out.edit_mask.sum(-1).tolist() == [24, 24]
    keep = ~out.edit_mask
    assert torch.equal(out.tokens[keep], original.expand(2, -1)[keep])
    assert out.images[0].size == (256, 256)


def test_multiscale_inpainting_at_512(pipe, photo):
    mask = box_mask(512, 128, 128, 320, 256)
    out = pipe.inpaint(photo, mask, "a red balloon", resolution=512, seed=0, steps=4, superres_steps=4)
    high = pipe.vq_superres.encode(torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255)
    assert out.tokens.shape == (1, 4096)
    assert out.edit_mask.sum().item() == (192 // 8) * (128 // 8)
    assert torch.equal(out.tokens[~out.edit_mask], high[~out.edit_mask])
    assert out.images[0].size == (512, 512)


def test_outpainting_keeps_the_box(pipe, photo):
    image = photo.resize((256, 256), Image.BICUBIC)
    out = pipe.outpaint(image, (64, 64, 192, 192), "a wide landscape", seed=0, steps=4)
    assert out.edit_mask.sum().item() == 256 - 64  # the kept 8 x 8 tokens are not edited
    original = pipe.vq_base.encode(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255)
    assert torch.equal(out.tokens[~out.edit_mask], original[~out.edit_mask])


def test_mask_free_edit_resamples_the_given_fraction(pipe, photo):
    image = photo.resize((256, 256), Image.BICUBIC)
    original = pipe.vq_base.encode(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255)
    one = pipe.edit(image, "a watercolor painting", iterations=1, seed=0)
    changed = (one.tokens != original).sum().item()
    assert 0 < changed <= round(0.08 * 256)
    again = pipe.edit(image, "a watercolor painting", iterations=1, seed=0)
    assert torch.equal(one.tokens, again.tokens)
    many = pipe.edit(image, "a watercolor painting", iterations=10, seed=0)
    assert (many.tokens != original).sum().item() > changed


def test_edit_inputs_are_checked(pipe, photo):
    image = photo.resize((256, 256), Image.BICUBIC)
    with pytest.raises(MuseInputError, match="height and width"):
        pipe.inpaint(image, np.zeros((128, 128), dtype=bool), "x")
    with pytest.raises(MuseInputError, match="keep box"):
        pipe.outpaint(image, (0, 0, 300, 300), "x")
    with pytest.raises(MuseInputError, match="iterations"):
        pipe.edit(image, "x", iterations=0)
    with pytest.raises(MuseInputError, match="resolution"):
        pipe.inpaint(image, np.zeros((256, 256), dtype=bool), "x", resolution=1024)


def forward_batches(module):
    """Record the batch size of every forward of `module` (2B means a guided step: cond and uncond together)."""
    sizes = []
    handle = module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    return sizes, handle


@pytest.mark.parametrize("entry", ["inpaint", "outpaint", "edit"])
def test_every_editing_entry_point_applies_a_guidance_override_to_both_stages_at_512(pipe, photo, entry):
    # g = 1 turns guidance off: no stage may run an unconditional branch, super-res included (the super-res stage
    # used to keep its preset's guidance, and with guidance off in the base stage the text was not paired for it).
    calls = {
        "inpaint": lambda **kw: pipe.inpaint(photo, box_mask(512, 128, 128, 320, 256), "a red balloon", steps=2, **kw),
        "outpaint": lambda **kw: pipe.outpaint(photo, (64, 64, 448, 448), "a wide landscape", steps=2, **kw),
        "edit": lambda **kw: pipe.edit(photo, "a watercolor painting", iterations=2, **kw),
    }
    for g, per_prompt in ((1.0, 1), (3.0, 2)):
        base, base_hook = forward_batches(pipe.base.decoder)
        sr, sr_hook = forward_batches(pipe.superres.decoder)
        try:
            out = calls[entry](resolution=512, guidance_scale=g, superres_steps=2, seed=0)
        finally:
            base_hook.remove(), sr_hook.remove()
        assert out.images[0].size == (512, 512)
        assert set(base) == {per_prompt} and set(sr) == {per_prompt}, (g, base, sr)


def test_editing_guidance_is_the_cfg_scale_in_every_stage(pipe, photo):
    # guidance_scale=g must decode exactly as a pipeline whose every stage is preset to Muse's t = g - 1.
    from dataclasses import replace

    from muse import MusePipeline

    config = pipe.config
    t2 = MusePipeline(replace(config, base_sampler=replace(config.base_sampler, guidance_t=2.0),
                              superres_sampler=replace(config.superres_sampler, guidance_t=2.0)),
                      pipe.text_encoder, pipe.vq_base, pipe.base, pipe.vq_superres, pipe.superres)
    mask = box_mask(512, 128, 128, 320, 256)
    fast = dict(resolution=512, seed=3, steps=3, superres_steps=2)
    assert torch.equal(pipe.inpaint(photo, mask, "a red balloon", guidance_scale=3.0, **fast).tokens,
                       t2.inpaint(photo, mask, "a red balloon", **fast).tokens)
    edit = dict(resolution=512, seed=3, iterations=2, superres_steps=2)
    assert torch.equal(pipe.edit(photo, "a watercolor painting", guidance_scale=3.0, **edit).tokens,
                       t2.edit(photo, "a watercolor painting", guidance_scale=None, **edit).tokens)


def test_editing_refuses_a_guidance_scale_below_one_before_decoding(pipe, photo):
    image = photo.resize((256, 256), Image.BICUBIC)
    for call in (lambda: pipe.edit(image, "x", guidance_scale=0.0),
                 lambda: pipe.inpaint(image, np.ones((256, 256), dtype=bool), "x", guidance_scale=0.5)):
        with pytest.raises(MuseInputError, match=r"guidance_scale=0\.[05] .*at least 1"):
            call()
