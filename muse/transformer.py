"""Muse's masked-token transformers: the base model (text -> 16x16 tokens) and the super-res model
(text + 16x16 tokens -> 64x64 tokens).

Both split their work in two: `context(...)` computes what stays fixed during decoding (projected text, the
low-res encoding), once per image; `logits(tokens, context)` is the per-step forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import PipelineConfig, SuperResConfig, TransformerConfig
from .layers import Block, MultiAxisAttention
from .text import TextEmbedding


@dataclass
class Context:
    """Cross-attention memory [B, S, D] and its key mask [B, S] (True = attend); `addend` [B, L, D], if set, is
    added to the token embeddings (the super-res model's low-res encoding, when its config asks for it)."""

    memory: torch.Tensor
    mask: torch.Tensor
    addend: torch.Tensor | None = None


class TokenDecoder(nn.Module):
    """Token embedding + learned positions, a stack of blocks, and a head over the codebook.

    The input vocabulary is the codebook plus one mask token (id = codebook_size).
    """

    def __init__(self, codebook_size, grid, hidden, layers, heads, mlp, context_dim, kv_heads=None, head=True,
                 attention_block: int | None = None):
        super().__init__()
        self.mask_token_id = codebook_size
        self.embed = nn.Embedding(codebook_size + 1, hidden)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, hidden))
        nn.init.normal_(self.pos, std=0.02)

        def self_attention():
            return MultiAxisAttention(hidden, heads, grid, attention_block) if attention_block else None

        self.blocks = nn.ModuleList(
            Block(hidden, heads, mlp, context_dim, kv_heads, self_attention()) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, codebook_size, bias=False) if head else None

    def forward(self, tokens: torch.Tensor, context: Context) -> torch.Tensor:
        x = self.embed(tokens) + self.pos
        if context.addend is not None:
            x = x + context.addend
        for block in self.blocks:
            x = block(x, context.memory, context.mask)
        x = self.norm(x)
        return x if self.head is None else self.head(x)


def text_projection(text_dim: int, width: int) -> nn.Module:
    """The T5 embeddings, projected linearly to a transformer's width (paper: "linearly projected")."""
    return nn.Sequential(nn.Linear(text_dim, width, bias=False), nn.LayerNorm(width))


class MaskedTokenModel(nn.Module):
    """What the sampler needs of a model: its mask id, its sequence length, and per-step logits from a
    `decoder` (TokenDecoder) given the context that subclasses compute once per image."""

    config: TransformerConfig | SuperResConfig
    decoder: TokenDecoder

    @property
    def mask_token_id(self) -> int:
        return self.decoder.mask_token_id

    @property
    def seq_len(self) -> int:
        return self.config.grid**2

    def logits(self, tokens: torch.Tensor, context: Context) -> torch.Tensor:
        """tokens [B, L] (mask id where unknown) -> logits [B, L, codebook_size]."""
        return self.decoder(tokens, context)


class BaseTransformer(MaskedTokenModel):
    """Base model: predicts the codebook distribution of every 16x16 token given text (Muse section 2.2)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.text_proj = text_projection(config.text_dim, config.hidden)
        self.decoder = TokenDecoder(
            config.codebook_size, config.grid, config.hidden, config.layers, config.heads, config.mlp,
            context_dim=config.hidden, kv_heads=config.cross_kv_heads,
        )

    def context(self, text: TextEmbedding, low_tokens=None) -> Context:
        return Context(self.text_proj(text.hidden), text.mask)


class SuperResTransformer(MaskedTokenModel):
    """Super-res model (Muse section 2.3, Table 6): the low-res tokens are encoded once, with cross-attention
    to the text; the high-res decoder cross-attends to [projected text; low-res encoding]."""

    def __init__(self, config: SuperResConfig):
        super().__init__()
        self.config = config
        c = config
        self.enc_text_proj = text_projection(c.text_dim, c.enc_hidden)
        self.encoder = TokenDecoder(
            c.low_codebook_size, c.low_grid, c.enc_hidden, c.enc_layers, c.enc_heads, c.enc_mlp,
            context_dim=c.enc_hidden, kv_heads=c.cross_kv_heads, head=False,
        )
        self.text_proj = text_projection(c.text_dim, c.hidden)
        self.low_proj = nn.Linear(c.enc_hidden, c.hidden, bias=False)
        self.decoder = TokenDecoder(
            c.codebook_size, c.grid, c.hidden, c.layers, c.heads, c.mlp, context_dim=c.hidden, kv_heads=c.cross_kv_heads,
            attention_block=c.attention_block,
        )

    def context(self, text: TextEmbedding, low_tokens: torch.Tensor | None = None) -> Context:
        if low_tokens is None:
            raise ValueError("the super-res model needs the low-res tokens")
        low = self.encoder(low_tokens, Context(self.enc_text_proj(text.hidden), text.mask))
        low = self.low_proj(low)
        memory = torch.cat([self.text_proj(text.hidden), low], dim=1)
        low_mask = torch.ones(low.shape[:2], dtype=torch.bool, device=low.device)
        addend = None
        if self.config.add_low_res:
            # Each high-res token also gets the encoding of the low-res token under it: the alignment of the two
            # grids given, not learned through attention.
            b, n, d = low.shape
            c = self.config
            grid = low.transpose(1, 2).reshape(b, d, c.low_grid, c.low_grid)
            addend = torch.nn.functional.interpolate(grid, size=(c.grid, c.grid), mode="nearest")
            addend = addend.flatten(2).transpose(1, 2)
        return Context(memory, torch.cat([text.mask, low_mask], dim=1), addend)


def build_transformers(config: PipelineConfig) -> tuple[nn.Module, nn.Module | None]:
    """The (base, super-res or None) masked-token models of a pipeline config, randomly initialised on the
    current default device (callers build under `torch.device(...)`, meta included)."""
    if config.family == "amused":
        from diffusers import UVit2DModel

        from .amused import AmusedTransformer

        grid = config.base_resolution // config.vq_base.downsample
        base = AmusedTransformer(
            UVit2DModel(**config.amused.transformer), grid, config.base_resolution,
            config.amused.aesthetic_score, config.amused.crop_coord,
        )
    else:
        base = BaseTransformer(config.base)
    superres = SuperResTransformer(config.superres) if config.superres is not None else None
    return base, superres
