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

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Queries, keys and values as [B, heads, tokens, head_dim]."""
        b, n, _ = x.shape
        source = x if context is None else context
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(source).view(b, source.shape[1], 2, self.kv_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.kv_heads != self.heads:
            # Expanding keeps the kernel choice open on every backend (enable_gqa is not accepted by all).
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        q, k, v = self.project(x, context)
        # mask: [B, S] True where a key may be attended (padding of the text is False).
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class MultiAxisAttention(Attention):
    """Multi-axis blocked self-attention over a square token grid (Zhao et al. 2021, HiT; used by Muse's
    super-res layers): half the heads attend within non-overlapping block x block windows, the other half
    across the grid, among tokens at the same position of every window. Cost grows with tokens x block^2
    instead of tokens^2, with the same parameters as full attention."""

    def __init__(self, dim: int, heads: int, grid: int, block: int):
        super().__init__(dim, heads)
        if heads < 2 or heads % 2:
            raise ValueError(f"multi-axis attention splits heads in two: got {heads} heads")
        if grid % block:
            raise ValueError(f"the {grid}x{grid} token grid does not split into {block}x{block} blocks")
        self.grid, self.block = grid, block

    def _windows(self, t: torch.Tensor, local: bool) -> torch.Tensor:
        # [B, h, grid*grid, d] -> [B, h, windows, tokens per window, d]
        b, h, _, d = t.shape
        n, s = self.grid // self.block, self.block
        t = t.view(b, h, n, s, n, s, d)  # rows: (window row, row in window); columns likewise
        if local:  # a window = one block: tokens share (window row, window column)
            return t.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, h, n * n, s * s, d)
        # a window = one position within the blocks, gathered from every block (a dilated grid)
        return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, h, s * s, n * n, d)

    def _unwindow(self, t: torch.Tensor, local: bool) -> torch.Tensor:
        b, h, _, _, d = t.shape
        n, s = self.grid // self.block, self.block
        if local:
            t = t.view(b, h, n, n, s, s, d).permute(0, 1, 2, 4, 3, 5, 6)
        else:
            t = t.view(b, h, s, s, n, n, d).permute(0, 1, 4, 2, 5, 3, 6)
        return t.reshape(b, h, self.grid * self.grid, d)

    def forward(self, x: torch.Tensor, context=None, mask=None):
        q, k, v = self.project(x)
        half = self.heads // 2
        parts = []
        for local, heads in ((True, slice(0, half)), (False, slice(half, None))):
            qw, kw, vw = (self._windows(t[:, heads], local) for t in (q, k, v))
            parts.append(self._unwindow(F.scaled_dot_product_attention(qw, kw, vw), local))
        y = torch.cat(parts, dim=1)
        return self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    """Self-attention, optional cross-attention to a context sequence, MLP; each behind a LayerNorm."""

    def __init__(self, dim: int, heads: int, mlp: int, context_dim: int | None = None, kv_heads: int | None = None,
                 self_attention: nn.Module | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = self_attention or Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim) if context_dim else None
        self.cross = Attention(dim, heads, context_dim, kv_heads) if context_dim else None
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp)

    def forward(self, x, context=None, context_mask=None):
        x = x + self.attn(self.norm1(x))
        if self.cross is not None:
            x = x + self.cross(self.norm2(x), context, context_mask)
        return x + self.mlp(self.norm3(x))
