"""FLOPs per image counted on the meta device, against the analytic 2 x parameters x tokens per forward."""

import pytest

from bench.models.flops import muse_stage_flops
from muse import MusePipeline


@pytest.fixture(scope="module")
def muse_3b():
    return MusePipeline.from_preset("muse-3b", device="meta")


def test_base_flops_match_the_architecture(muse_3b):
    flops = muse_stage_flops(muse_3b, 256)
    c, text = muse_3b.base.config, muse_3b.config.text.max_length
    img, d, kv = c.grid**2, c.hidden, c.cross_kv_heads * (c.hidden // c.heads)
    per_layer = (
        2 * img * (4 * d * d + 2 * d * d + 2 * d * c.mlp)  # self q/k/v/out, cross q/out, MLP: on image tokens
        + 2 * text * 2 * d * kv  # cross-attention keys and values: on the text tokens
        + 2 * 2 * img * img * d + 2 * 2 * img * text * d  # attention scores and weighted sums
    )
    forward = c.layers * per_layer + 2 * img * d * c.codebook_size  # + the output head
    context = 2 * text * c.text_dim * d  # the text projection, once per image
    guided = 2  # conditional and unconditional in one batch
    expected = guided * (context + 24 * forward)
    assert flops["base"] == pytest.approx(expected, rel=0.001)
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")
    assert set(flops) == {"text_encoder", "base", "decoder", "total"}


def test_superres_stage_counted_only_at_512_and_multi_axis_attention_is_cheaper(muse_3b):
    from dataclasses import replace

    from muse.presets import preset_config

    flops = muse_stage_flops(muse_3b, 512)
    assert "superres" not in muse_stage_flops(muse_3b, 256)
    assert flops["decoder"] > muse_stage_flops(muse_3b, 256)["decoder"]
    # Full attention over the 4096 high-res tokens costs far more than 8x8 blocks plus the dilated grid.
    config = preset_config("muse-3b")
    config.superres = replace(config.superres, attention_block=None)
    full = muse_stage_flops(MusePipeline.from_config(config, device="meta"), 512)
    sr = config.superres
    tokens = sr.grid**2
    # Per guided step (x2) and layer, full attention scores and sums cost 4 * tokens^2 * hidden; the
    # multi-axis windows hold 64 tokens each, so they cost 4 * tokens * 64 * hidden.
    per_image = 8 * 2 * sr.layers * 4 * sr.hidden * tokens * (tokens - 64)
    assert full["superres"] - flops["superres"] == pytest.approx(per_image, rel=0.001)


def test_flops_need_the_meta_device():
    with pytest.raises(ValueError, match="meta"):
        muse_stage_flops(MusePipeline.from_preset("muse-tiny"), 256)
