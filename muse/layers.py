"""Transformer building blocks shared by the base and super-res models (pre-LayerNorm, no biases in linears)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention through scaled_dot_product_attention.

    With `context` it is cross-attention (keys and values from `context`, of width `context_dim`); kv_heads
    below heads makes it grouped-query: each key/value head serves heads // kv_heads query heads.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, kv_heads: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        kv_heads = kv_heads or heads
        if heads % kv_heads:
            raise ValueError(f"{heads} heads are not divisible by {kv_heads} key/value heads")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        b, n, _ = x.shape
        source = x if context is None else context
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(source).view(b, source.shape[1], 2, self.kv_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.kv_heads != self.heads:
            # Expanding keeps the kernel choice open on every backend (enable_gqa is not accepted by all).
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        # mask: [B, S] True where a key may be attended (padding of the text is False).
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    """Self-attention, optional cross-attention to a context sequence, MLP; each behind a LayerNorm."""

    def __init__(self, dim: int, heads: int, mlp: int, context_dim: int | None = None, kv_heads: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim) if context_dim else None
        self.cross = Attention(dim, heads, context_dim, kv_heads) if context_dim else None
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp)

    def forward(self, x, context=None, context_mask=None):
        x = x + self.attn(self.norm1(x))
        if self.cross is not None:
            x = x + self.cross(self.norm2(x), context, context_mask)
        return x + self.mlp(self.norm3(x))
