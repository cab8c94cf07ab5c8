"""Named pipeline shapes: the paper's models, aMUSEd's, and tiny ones for tests.

Choices the papers leave open (neither the Muse paper nor any release states them), and what we chose:
- muse-3b base: 48 layers, hidden 2048, MLP 8192, 16 heads (head dim 128). With full-width cross-attention in
  every layer that shape counts 3.26B, 9% above "3B"; we give cross-attention 8 key/value heads
  (grouped-query), which counts 3.06B. Set base.cross_kv_heads=16 for the full-width variant.
- muse-3b super-res: Table 6 (16-layer low-res encoder, 32 layers at hidden 1024, MLP 4096), 0.84B.
- muse-632m (the CC3M model) base: 36 layers, hidden 1024, MLP 4096, 16 heads: 625M (632M - 1.0%).
- muse-632m super-res (268M in the paper): encoder 8 x 768, decoder 17 x 768, MLP 4x, 12 heads: 265M (-1.0%).
- Sampling: guidance scale and temperatures behind the headline numbers are unpublished; Muse presets use
  t = 4 (guidance scale g = 5) ramped linearly, choice temperature 4.5 (MaskGIT's default), 24 base and 8
  super-res steps.
- aMUSEd presets use its published architecture (Patil et al. 2024, arXiv 2401.01808; diffusers' amused-256 and amused-512 configs) and its sampler defaults: 12 steps,
  guidance scale g = 10 (t = 9, constant), choice temperature from 2 to 0, cosine schedule.
"""

from __future__ import annotations

from .config import (
    AmusedConfig,
    PipelineConfig,
    SamplerConfig,
    SuperResConfig,
    TextConfig,
    TransformerConfig,
    VQConfig,
)

# transformers' T5Config for google/t5-v1_1-xxl, whose encoder Muse uses.
T5_XXL = dict(
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
    dropout_rate=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
)
T5_TINY = dict(
    vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
    dropout_rate=0.0, tie_word_embeddings=False,
)
CLIP_L14_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
)
CLIP_TINY_TEXT = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
)

# Paper VQGANs: 128 base channels, 2 residual blocks per level, no attention; decoder 256 channels, 4 blocks.
VQ_F16 = VQConfig(
    block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2,
    decoder_block_out_channels=(256, 256, 512, 512, 1024), decoder_layers_per_block=4,
    latent_channels=256, codebook_size=8192,
)
VQ_F8 = VQConfig(
    block_out_channels=(128, 256, 256, 512), layers_per_block=2,
    decoder_block_out_channels=(256, 512, 512, 1024), decoder_layers_per_block=4,
    latent_channels=256, codebook_size=8192,
)
# Guidance in Muse's t (the sampler's); users set g = 1 + t (muse/sampling.py).
MUSE_BASE_SAMPLER = SamplerConfig(steps=24, guidance_t=4.0, guidance_ramp="linear", choice_temperature=4.5)
MUSE_SR_SAMPLER = SamplerConfig(steps=8, guidance_t=4.0, guidance_ramp="linear", choice_temperature=4.5)
AMUSED_SAMPLER = SamplerConfig(
    steps=12, guidance_t=9.0, guidance_ramp="constant", choice_temperature=2.0,
    temperature_schedule="linear", temperature_end=0.0,
)


def _muse_t5_xxl() -> TextConfig:
    # Random weights use the byte tokenizer (ids fall inside T5's vocabulary); pretrained=google/t5-v1_1-xxl
    # loads the real tokenizer with the weights.
    return TextConfig(kind="t5", model=dict(T5_XXL), tokenizer="byt5", max_length=128)


def muse_3b() -> PipelineConfig:
    return PipelineConfig(
        name="muse-3b",
        text=_muse_t5_xxl(),
        vq_base=VQ_F16,
        base=TransformerConfig(hidden=2048, layers=48, heads=16, mlp=8192, cross_kv_heads=8, text_dim=4096),
        vq_superres=VQ_F8,
        superres=SuperResConfig(),
        base_sampler=MUSE_BASE_SAMPLER,
        superres_sampler=MUSE_SR_SAMPLER,
    )


def muse_632m() -> PipelineConfig:
    return PipelineConfig(
        name="muse-632m",
        text=_muse_t5_xxl(),
        vq_base=VQ_F16,
        base=TransformerConfig(hidden=1024, layers=36, heads=16, mlp=4096, text_dim=4096),
        vq_superres=VQ_F8,
        superres=SuperResConfig(
            enc_hidden=768, enc_layers=8, enc_heads=12, enc_mlp=3072, hidden=768, layers=17, heads=12, mlp=3072,
        ),
        base_sampler=MUSE_BASE_SAMPLER,
        superres_sampler=MUSE_SR_SAMPLER,
    )


def muse_tiny() -> PipelineConfig:
    """A few hundred thousand parameters: the full cascade at 256 and 512, in seconds on a CPU."""
    vq = dict(layers_per_block=1, latent_channels=8, codebook_size=1024, norm_num_groups=8)
    return PipelineConfig(
        name="muse-tiny",
        text=TextConfig(kind="t5", model=dict(T5_TINY), tokenizer="byt5", max_length=64),
        vq_base=VQConfig(block_out_channels=(16, 16, 32, 32, 32), **vq),
        base=TransformerConfig(hidden=64, layers=2, heads=4, mlp=128, codebook_size=1024, text_dim=32),
        vq_superres=VQConfig(block_out_channels=(16, 16, 32, 32), **vq),
        superres=SuperResConfig(
            enc_hidden=64, enc_layers=1, enc_heads=4, enc_mlp=128, hidden=64, layers=2, heads=4, mlp=128,
            low_codebook_size=1024, codebook_size=1024, text_dim=32,
        ),
        base_sampler=MUSE_BASE_SAMPLER,
        superres_sampler=MUSE_SR_SAMPLER,
    )


def muse_shapes() -> PipelineConfig:
    """The architecture of muse-bench's learned shapes world (bench/train/): a small cascade, 32 px base (8x8
    tokens) and 64 px super-res (16x16 tokens), one f=4 VQGAN for both stages whose encoder reads each 4x4 cell on
    its own (so equal cells get equal tokens), a small T5 encoder reading CLIP's BPE words; its super-res model
    adds the low-res encoding to the high-res tokens (SuperResConfig.add_low_res), which the paper's does not.
    About 6M parameters: the whole cascade trains on a 2-core CPU in minutes. Random weights from
    this preset are the untrained model the trained one is compared with."""
    # One GroupNorm group: the encoder's last layers see a single pixel (a 4x4 cell brought down to 1x1), where
    # groups of four channels normalise away most of what tells cells apart; measured on the shapes world's VQ
    # stage, exact read-back of validation scenes 84% with eight groups against 100% with one.
    vq = VQConfig(block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=8, codebook_size=256,
                  norm_num_groups=1, encode_cells=True)
    text = dict(vocab_size=49408, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False)
    # 16 tokens hold the longest caption of the grammar ("a red circle and a blue square": 7 words) and CLIP's
    # start and end tokens.
    sampler = dict(guidance_t=2.0, guidance_ramp="linear", choice_temperature=4.5)
    return PipelineConfig(
        name="muse-shapes",
        text=TextConfig(kind="t5", model=text, tokenizer="clip-bpe", max_length=16),
        vq_base=vq,
        base=TransformerConfig(hidden=128, layers=4, heads=4, mlp=512, codebook_size=256, grid=8, text_dim=64),
        vq_superres=vq,
        superres=SuperResConfig(
            enc_hidden=64, enc_layers=1, enc_heads=4, enc_mlp=256, hidden=128, layers=3, heads=4, mlp=512,
            low_codebook_size=256, low_grid=8, codebook_size=256, grid=16, text_dim=64, attention_block=8,
            add_low_res=True,
        ),
        base_sampler=SamplerConfig(steps=12, **sampler),
        superres_sampler=SamplerConfig(steps=8, **sampler),
        base_resolution=32,
    )


def _amused(name: str, resolution: int) -> PipelineConfig:
    uvit = dict(
        hidden_size=1024, use_bias=False, cond_embed_dim=768, micro_cond_encode_dim=256, micro_cond_embed_dim=1280,
        encoder_hidden_size=768, vocab_size=8256, codebook_size=8192, in_channels=768, block_out_channels=768,
        num_res_blocks=3, downsample=resolution == 512, upsample=resolution == 512, block_num_heads=12,
        num_hidden_layers=22, num_attention_heads=16, intermediate_size=2816, layer_norm_eps=1e-6,
        ln_elementwise_affine=True, sample_size=resolution // 16,
    )
    return PipelineConfig(
        name=name,
        family="amused",
        text=TextConfig(kind="clip", model=dict(CLIP_L14_TEXT), tokenizer="clip-bpe", max_length=77),
        vq_base=VQConfig(
            block_out_channels=(128, 256, 256, 512, 768), layers_per_block=2, latent_channels=64, codebook_size=8192,
            mid_block_add_attention=True, lookup_from_codebook=True, value_range="0,1",
        ),
        base=None,
        amused=AmusedConfig(transformer=uvit),
        base_sampler=AMUSED_SAMPLER,
        base_resolution=resolution,
    )


def amused_tiny() -> PipelineConfig:
    """aMUSEd's architecture at toy width: for parity tests against diffusers' AmusedPipeline."""
    uvit = dict(
        hidden_size=32, use_bias=False, cond_embed_dim=32, micro_cond_encode_dim=2, micro_cond_embed_dim=10,
        encoder_hidden_size=32, vocab_size=72, codebook_size=64, in_channels=16, block_out_channels=16,
        num_res_blocks=1, downsample=False, upsample=False, block_num_heads=2, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=16,
    )
    return PipelineConfig(
        name="amused-tiny",
        family="amused",
        text=TextConfig(kind="clip", model=dict(CLIP_TINY_TEXT), tokenizer="clip-bpe", max_length=77),
        vq_base=VQConfig(
            block_out_channels=(16, 16, 16, 16, 16), layers_per_block=1, latent_channels=8, codebook_size=64,
            norm_num_groups=8, mid_block_add_attention=True, lookup_from_codebook=True, value_range="0,1",
        ),
        base=None,
        amused=AmusedConfig(transformer=uvit),
        base_sampler=AMUSED_SAMPLER,
    )


PRESETS = {
    "muse-tiny": muse_tiny,
    "muse-632m": muse_632m,
    "muse-3b": muse_3b,
    "muse-shapes": muse_shapes,
    "amused-tiny": amused_tiny,
    "amused-256": lambda: _amused("amused-256", 256),
    "amused-512": lambda: _amused("amused-512", 512),
}
PRESET_NAMES = tuple(PRESETS)


def preset_config(name: str) -> PipelineConfig:
    """The PipelineConfig of a named preset (a fresh copy)."""
    import copy

    from .errors import MuseInputError

    if name not in PRESETS:
        raise MuseInputError(f"unknown preset {name!r}; known presets: {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(PRESETS[name]())
