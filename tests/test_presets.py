"""Paper-size presets, built on the meta device (no memory), against the papers' parameter counts."""

import pytest

from muse import MusePipeline


@pytest.fixture(scope="module")
def counts():
    return {name: MusePipeline.from_preset(name, device="meta").parameter_counts()
            for name in ("muse-3b", "muse-632m", "amused-256", "amused-512")}


def within(value, target, tolerance):
    return abs(value - target) <= tolerance * target


def test_muse_3b_matches_the_paper(counts):
    c = counts["muse-3b"]
    assert within(c["base"], 3.0e9, 0.05), c["base"]
    # T5-XXL's encoder (google/t5-v1_1-xxl): about 4.7B with its embeddings.
    assert within(c["text_encoder"], 4.76e9, 0.01), c["text_encoder"]
    # Table 6 super-res shape, far above the CC3M pipeline's 268M.
    assert 0.7e9 < c["superres"] < 1.0e9


def test_muse_632m_cc3m_pipeline(counts):
    c = counts["muse-632m"]
    assert within(c["base"], 632e6, 0.03), c["base"]
    assert within(c["superres"], 268e6, 0.05), c["superres"]


def test_muse_3b_shapes_and_meta_device():
    pipe = MusePipeline.from_preset("muse-3b", device="meta")
    assert next(pipe.base.parameters()).device.type == "meta"
    base = pipe.base.config
    assert (base.layers, base.hidden, base.mlp) == (48, 2048, 8192)
    sr = pipe.superres.config
    assert (sr.enc_layers, sr.layers, sr.hidden, sr.mlp) == (16, 32, 1024, 4096)
    assert pipe.text_encoder.dim == 4096
    assert pipe.vq_base.downsample == 16 and pipe.vq_superres.downsample == 8
    assert pipe.vq_base.codebook_size == pipe.vq_superres.codebook_size == 8192
    assert pipe.supported_resolutions == (256, 512)


def test_vqgans_have_no_attention_and_a_wider_decoder():
    pipe = MusePipeline.from_preset("muse-3b", device="meta")
    vq = pipe.vq_base.vq
    from diffusers.models.attention_processor import Attention

    assert not any(isinstance(m, Attention) for m in vq.modules())
    encoder = sum(p.numel() for p in vq.encoder.parameters())
    decoder = sum(p.numel() for p in vq.decoder.parameters())
    assert decoder > 3 * encoder


def test_amused_presets_follow_the_published_architecture(counts):
    for name in ("amused-256", "amused-512"):
        pipe = MusePipeline.from_preset(name, device="meta")
        uvit = pipe.base.uvit.config
        assert (uvit.hidden_size, uvit.num_hidden_layers, uvit.num_attention_heads) == (1024, 22, 16)
        assert (uvit.intermediate_size, uvit.vocab_size, pipe.mask_token_id) == (2816, 8256, 8255)
        assert pipe.text_encoder.dim == 768
    assert MusePipeline.from_preset("amused-512", device="meta").supported_resolutions == (512,)
    # CLIP-L/14's text tower is 123M parameters.
    assert within(counts["amused-256"]["text_encoder"], 123.7e6, 0.01)
