"""Typed configs of every component of a Muse pipeline.

A pipeline's config is plain data: presets build it, checkpoints store it as JSON, and the harness records it
in every result. Nothing here imports a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextConfig:
    """The frozen text encoder.

    kind: "t5" (Muse: T5 encoder, transformers' T5EncoderModel) or "clip" (aMUSEd: CLIPTextModelWithProjection).
    pretrained: a local folder or hub id to load weights from; None builds `model` (config kwargs) at random.
    tokenizer: "byt5" (byte-level, needs no vocabulary file), "clip-bpe" (open_clip's bundled BPE), or a
    folder / hub id. max_length: prompts are padded and truncated to this many tokens, so the text length
    (and the cost of cross-attention) is fixed by the protocol, not by the prompt.
    """

    kind: str = "t5"
    pretrained: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "byt5"
    max_length: int = 64


@dataclass
class VQConfig:
    """A convolutional VQGAN built from diffusers' VQModel.

    The paper's decoder at inference is wider than its encoder (4 residual blocks, 256 base channels): the
    decoder_* fields describe it; None means "same as the encoder". value_range is the pixel range the
    encoder expects and the decoder produces: "-1,1" (Muse) or "0,1" (aMUSEd).
    """

    block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    decoder_block_out_channels: tuple[int, ...] | None = None
    decoder_layers_per_block: int | None = None
    latent_channels: int = 256
    codebook_size: int = 8192
    norm_num_groups: int = 32
    mid_block_add_attention: bool = False
    lookup_from_codebook: bool = False
    value_range: str = "-1,1"
    # True: the encoder reads each f x f cell of the image on its own (a patch tokenizer), so a cell's token depends
    # on its pixels only, not on its neighbours'; the decoder still sees the whole grid. False: the whole image at
    # once (Muse's and aMUSEd's VQGANs).
    encode_cells: bool = False

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class TransformerConfig:
    """The base transformer: bidirectional self-attention over image tokens, cross-attention to text.

    cross_kv_heads < heads makes cross-attention grouped-query (fewer key/value heads); see presets.py for why
    muse-3b uses it.
    """

    hidden: int = 2048
    layers: int = 48
    heads: int = 16
    mlp: int = 8192
    cross_kv_heads: int | None = None
    codebook_size: int = 8192
    grid: int = 16
    text_dim: int = 4096


@dataclass
class SuperResConfig:
    """The super-res transformer: an encoder over the low-res tokens (cross-attending to text), then a decoder
    over the high-res tokens that cross-attends to the text and the low-res encoding."""

    enc_hidden: int = 1024
    enc_layers: int = 16
    enc_heads: int = 16
    enc_mlp: int = 4096
    hidden: int = 1024
    layers: int = 32
    heads: int = 16
    mlp: int = 4096
    cross_kv_heads: int | None = None
    low_codebook_size: int = 8192
    low_grid: int = 16
    codebook_size: int = 8192
    grid: int = 64
    text_dim: int = 4096
    # Self-attention of the high-res decoder: None = full attention over all grid^2 tokens; B = multi-axis
    # (half the heads within BxB blocks, half across the grid), Muse's "multi-axis" super-res layers.
    attention_block: int | None = 8
    # True: the low-res encoding is also added to the high-res token embeddings, each high-res token getting the
    # one of the low-res token under it (the grids' alignment given rather than learned through cross-attention).
    # Not in the paper; the muse-shapes preset uses it so that minutes of CPU training learn the super-res stage.
    add_low_res: bool = False


@dataclass
class AmusedConfig:
    """aMUSEd's U-ViT (diffusers' UVit2DModel config kwargs) and its micro-conditioning."""

    transformer: dict[str, Any] = field(default_factory=dict)
    aesthetic_score: float = 6.0
    crop_coord: tuple[int, int] = (0, 0)


@dataclass
class SamplerConfig:
    """MaskGIT parallel decoding settings (MaskGIT's parallel decoding; see muse/sampling.py).

    guidance_t is Muse's t in (1 + t) * l_cond - t * l_uncond (the classifier-free guidance scale users set is
    g = 1 + t); 0 disables guidance and its extra forward. guidance_ramp: "linear" raises t from t/steps to t
    over the steps; "constant" keeps it.
    temperature_schedule: "maskgit" uses choice_temperature * (1 - ratio) afresh at each step; "linear"
    interpolates from choice_temperature to temperature_end across the steps (aMUSEd's scheduler).
    token_order: which tokens each step keeps, "confidence" (MaskGIT's), "halton" or "halton-random" (the 2-D
    Halton sequence over the grid, Besnier et al. 2025; see muse/sampling.py).
    """

    steps: int = 24
    schedule: str = "cosine"
    choice_temperature: float = 4.5
    temperature_schedule: str = "maskgit"
    temperature_end: float = 0.0
    guidance_t: float = 4.0
    guidance_ramp: str = "linear"
    top_k: int | None = None
    token_order: str = "confidence"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplerConfig":
        """From a stored config; checkpoints written before the rename call t `guidance_scale` (it was t)."""
        data = dict(data)
        if "guidance_scale" in data:
            if "guidance_t" in data:
                raise ValueError("a sampler config holds both guidance_scale (old name of t) and guidance_t")
            data["guidance_t"] = data.pop("guidance_scale")
        return cls(**data)


@dataclass
class PipelineConfig:
    """A whole text-to-image pipeline. family "muse" uses our transformers; "amused" uses diffusers' U-ViT."""

    name: str = "custom"
    family: str = "muse"
    text: TextConfig = field(default_factory=TextConfig)
    vq_base: VQConfig = field(default_factory=VQConfig)
    base: TransformerConfig | None = field(default_factory=TransformerConfig)
    amused: AmusedConfig | None = None
    vq_superres: VQConfig | None = None
    superres: SuperResConfig | None = None
    base_sampler: SamplerConfig = field(default_factory=SamplerConfig)
    superres_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=8))
    base_resolution: int = 256

    @property
    def resolutions(self) -> tuple[int, ...]:
        if self.superres is not None:
            return (self.base_resolution, self.base_resolution * 2)
        return (self.base_resolution,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        def build(kind, value):
            if value is None:
                return None
            value = dict(value)
            for key in ("block_out_channels", "decoder_block_out_channels", "crop_coord"):
                if isinstance(value.get(key), list):
                    value[key] = tuple(value[key])
            return kind(**value)

        data = dict(data)
        return cls(
            name=data.get("name", "custom"),
            family=data.get("family", "muse"),
            text=build(TextConfig, data["text"]),
            vq_base=build(VQConfig, data["vq_base"]),
            base=build(TransformerConfig, data.get("base")),
            amused=build(AmusedConfig, data.get("amused")),
            vq_superres=build(VQConfig, data.get("vq_superres")),
            superres=build(SuperResConfig, data.get("superres")),
            base_sampler=SamplerConfig.from_dict(data["base_sampler"]),
            superres_sampler=SamplerConfig.from_dict(data["superres_sampler"]),
            base_resolution=data.get("base_resolution", 256),
        )
