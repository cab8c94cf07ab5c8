"""Attention layers against explicit references."""

import pytest
import torch
import torch.nn.functional as F

from muse.layers import Attention, MultiAxisAttention


def test_multi_axis_attention_is_block_plus_grid_attention():
    torch.manual_seed(0)
    attention = MultiAxisAttention(32, 4, grid=8, block=4)
    x = torch.randn(2, 64, 32)
    q, k, v = attention.project(x)
    # The same result from full attention with masks: the first half of the heads sees its own 4x4 block,
    # the second half the tokens at the same position of every block.
    idx = torch.arange(64)
    row, col = idx // 8, idx % 8
    same_block = (row[:, None] // 4 == row[None] // 4) & (col[:, None] // 4 == col[None] // 4)
    same_position = (row[:, None] % 4 == row[None] % 4) & (col[:, None] % 4 == col[None] % 4)
    local = F.scaled_dot_product_attention(q[:, :2], k[:, :2], v[:, :2], attn_mask=same_block)
    dilated = F.scaled_dot_product_attention(q[:, 2:], k[:, 2:], v[:, 2:], attn_mask=same_position)
    expected = attention.out(torch.cat([local, dilated], 1).transpose(1, 2).reshape(2, 64, -1))
    assert torch.allclose(attention(x), expected, atol=1e-6)
    # Same parameters as full attention.
    assert sum(p.numel() for p in attention.parameters()) == sum(p.numel() for p in Attention(32, 4).parameters())


def test_multi_axis_attention_checks_its_shape():
    with pytest.raises(ValueError, match="blocks"):
        MultiAxisAttention(32, 4, grid=10, block=4)
    with pytest.raises(ValueError, match="heads"):
        MultiAxisAttention(32, 3, grid=8, block=4)


def test_grouped_query_cross_attention_equals_repeated_heads():
    torch.manual_seed(0)
    attention = Attention(32, 4, context_dim=16, kv_heads=2)
    x, context = torch.randn(2, 5, 32), torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    q, k, v = attention.project(x, context)
    assert torch.equal(k[:, 0], k[:, 1]) and torch.equal(v[:, 2], v[:, 3])  # each K/V head serves 2 query heads
    y = attention(x, context, mask)
    # Padding keys are ignored: changing the padded context positions of sample 1 changes nothing.
    context2 = context.clone()
    context2[1, 3:] = 100.0
    assert torch.allclose(attention(x, context2, mask)[1], y[1], atol=1e-6)
