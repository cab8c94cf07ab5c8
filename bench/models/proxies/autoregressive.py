"""The Parti proxy's decoder: a decoder-only Transformer over image tokens with cross-attention to the text
(muse.layers.Block's modules, pre-LayerNorm), decoded one token at a time with a pre-allocated KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muse.layers import Block


class KVCache:
    """Pre-allocated self-attention keys and values of every decoder layer, [layers, B, heads, max_len,
    head_dim] each; a step writes its position and attends to the filled prefix."""

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(layers, batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)


class ARDecoder(nn.Module):
    """Decoder-only Transformer over image tokens with cross-attention to the text (Parti's decoder shape).

    The input at position p is the token at p - 1 (a BOS id at p = 0); the output predicts the token at p.
    `forward` is the teacher-forced causal pass over a whole prefix (no cache); `step` is one cached step.
    """

    def __init__(self, codebook_size: int, seq_len: int, hidden: int, layers: int, heads: int, mlp: int,
                 context_dim: int):
        super().__init__()
        self.bos_id = codebook_size
        self.seq_len, self.heads, self.head_dim = seq_len, heads, hidden // heads
        self.embed = nn.Embedding(codebook_size + 1, hidden)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, hidden))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp, context_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, codebook_size, bias=False)

    def new_cache(self, batch: int) -> KVCache:
        """An empty KV cache for `batch` rows, on the decoder's device and dtype."""
        param = self.pos
        return KVCache(len(self.blocks), batch, self.heads, self.seq_len, self.head_dim, param.device, param.dtype)

    def memory(self, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys and values of every layer, [B, heads, S, head_dim]: computed once per image."""
        b, s, _ = text.shape
        out = []
        for block in self.blocks:
            cross = block.cross
            k, v = cross.kv(text).view(b, s, 2, cross.kv_heads, cross.head_dim).unbind(2)
            out.append((k.transpose(1, 2), v.transpose(1, 2)))
        return out

    @staticmethod
    def _cross(block: Block, h: torch.Tensor, kv, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        cross = block.cross
        q = cross.q(h).view(b, n, cross.heads, cross.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask[:, None, None, :])
        return cross.out(y.transpose(1, 2).reshape(b, n, -1))

    def step(self, token: torch.Tensor, position: int, cache: KVCache, memory, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, codebook] at `position` from its input token [B], writing its keys and values into
        `cache` and attending to positions 0..position (the filled prefix)."""
        b = token.shape[0]
        x = self.embed(token)[:, None] + self.pos[:, position : position + 1]
        for i, block in enumerate(self.blocks):
            q, k, v = block.attn.project(block.norm1(x))  # [B, heads, 1, head_dim]
            cache.k[i, :, :, position] = k[:, :, 0]
            cache.v[i, :, :, position] = v[:, :, 0]
            y = F.scaled_dot_product_attention(q, cache.k[i, :, :, : position + 1], cache.v[i, :, :, : position + 1])
            x = x + block.attn.out(y.transpose(1, 2).reshape(b, 1, -1))
            x = x + self._cross(block, block.norm2(x), memory[i], mask)
            x = x + block.mlp(block.norm3(x))
        return self.head(self.norm(x))[:, 0]

    def forward(self, inputs: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, n, codebook] for inputs [B, n] (BOS first), causal, without a cache."""
        b, n = inputs.shape
        x = self.embed(inputs) + self.pos[:, :n]
        for block in self.blocks:
            q, k, v = block.attn.project(block.norm1(x))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.attn.out(y.transpose(1, 2).reshape(b, n, -1))
            x = x + block.cross(block.norm2(x), text, mask)
            x = x + block.mlp(block.norm3(x))
        return self.head(self.norm(x))
