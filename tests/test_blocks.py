import math

import pytest
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block as TimmBlock

from util.blocks import (Attention, Block, CrossAttention, CrossBlock, CrossSelfBlock, PatchEmbed,
                         set_attention_backend)


def naive_attention(q, k, v):
    """q (N, h, L, d), k and v (N, h, M, d)."""
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v


def heads(x, h):
    n, length, c = x.shape
    return x.reshape(n, length, h, c // h).permute(0, 2, 1, 3)


def test_sdpa_self_attention_equals_naive():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True)
    x = torch.randn(2, 10, 32)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    out = naive_attention(heads(q, 4), heads(k, 4), heads(v, 4)).permute(0, 2, 1, 3).reshape(2, 10, 32)
    torch.testing.assert_close(attn(x), attn.proj(out), rtol=1e-5, atol=1e-6)
    weights = attn.attention_map(x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))


def test_sdpa_cross_attention_equals_naive():
    torch.manual_seed(0)
    attn = CrossAttention(32, num_heads=4, qkv_bias=True)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 11, 32)
    k, v = attn.kv(ctx).chunk(2, dim=-1)
    out = naive_attention(heads(attn.q(x), 4), heads(k, 4), heads(v, 4)).permute(0, 2, 1, 3).reshape(2, 5, 32)
    torch.testing.assert_close(attn(x, ctx), attn.proj(out), rtol=1e-5, atol=1e-6)


def test_block_equals_timm_block_with_same_weights():
    torch.manual_seed(0)
    ours = Block(48, 6, qkv_bias=True)
    theirs = TimmBlock(48, 6, qkv_bias=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 7, 48)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_cross_blocks_keep_timm_names_for_self_attention_and_mlp():
    keys = set(CrossSelfBlock(32, 4).state_dict())
    assert {"norm1.weight", "attn.qkv.weight", "attn.proj.weight", "norm2.weight", "mlp.fc1.weight",
            "mlp.fc2.weight", "norm_q.weight", "norm_kv.weight", "cross_attn.q.weight",
            "cross_attn.kv.weight", "cross_attn.proj.weight"} <= keys
    assert "attn.qkv.weight" not in CrossBlock(32, 4).state_dict()


def test_cross_self_block_uses_context():
    torch.manual_seed(0)
    blk = CrossSelfBlock(32, 4).eval()
    x = torch.randn(1, 6, 32)
    a, b = blk(x, torch.randn(1, 9, 32)), blk(x, torch.randn(1, 9, 32))
    assert not torch.allclose(a, b)
    assert isinstance(blk.norm_q, nn.LayerNorm)


def test_patch_embed_as_matrix_product_equals_the_strided_convolution():
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=24)
    x = torch.randn(2, 3, 32, 48)  # not square: 4 x 6 patches
    expected = torch.nn.functional.conv2d(x, embed.proj.weight, embed.proj.bias, stride=8).flatten(2).transpose(1, 2)
    torch.testing.assert_close(embed(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_backend_choice_sets_the_flags_and_rejects_unknown_names():
    try:
        set_attention_backend("flash")
        cuda = torch.backends.cuda
        assert cuda.flash_sdp_enabled() and not cuda.cudnn_sdp_enabled() and not cuda.mem_efficient_sdp_enabled()
        assert cuda.math_sdp_enabled()  # the fallback for shapes the kernel does not take
        with pytest.raises(ValueError, match="attention backend"):
            set_attention_backend("fastest")
    finally:
        set_attention_backend("auto")
    assert torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()


def test_cross_self_block_is_cross_then_self_then_mlp():
    torch.manual_seed(0)
    blk = CrossSelfBlock(32, 4).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    y = x + blk.cross_attn(blk.norm_q(x), blk.norm_kv(ctx))
    y = y + blk.attn(blk.norm1(y))
    y = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(blk(x, ctx), y)


def test_attention_map_is_softmax_of_scaled_scores():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True)
    x = torch.randn(2, 6, 32)
    q, k, _ = attn.qkv(x).reshape(2, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)  # head_dim 8
    torch.testing.assert_close(attn.attention_map(x), expected, rtol=1e-5, atol=1e-6)
