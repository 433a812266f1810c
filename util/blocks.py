"""Transformer blocks with timm's parameter names and fused attention.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (flash or
memory-efficient kernels on GPU, a plain kernel on CPU). Parameter names equal timm 0.4.12's
``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so MAE, DINO
and timm checkpoints load without renaming. The cross-attention blocks of SiamMAE keep those
names for their self-attention and MLP parts and add ``norm_q``, ``norm_kv`` and ``cross_attn``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.layers import DropPath, Mlp

SDPA_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def set_attention_backend(name):
    """Restrict fused attention to one family of kernels, process-wide ('auto': PyTorch picks per
    call; 'math': the plain composite). The plain composite stays allowed as the fallback for
    shapes a chosen kernel does not support."""
    if name not in SDPA_BACKENDS:
        raise ValueError(f"attention backend must be one of {SDPA_BACKENDS}, got '{name}'")
    cuda = torch.backends.cuda
    cuda.enable_cudnn_sdp(name in ("auto", "cudnn"))
    cuda.enable_flash_sdp(name in ("auto", "flash"))
    cuda.enable_mem_efficient_sdp(name in ("auto", "efficient"))
    cuda.enable_math_sdp(True)


class PatchEmbed(nn.Module):
    """Image (N, C, H, W) -> patch tokens (N, H/p * W/p, D), for any H, W divisible by p.

    The projection keeps the convolution's parameters (``proj``, (D, C, p, p)) but runs as one
    matrix product over the patches, (N*L, C*p*p) x (C*p*p, D): the same function; on an H200 the
    compiled ViT-S/16 SiamMAE step ran 3% faster than with the strided convolution (bench/train_step.py)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        p = self.patch_size[0]
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        n, c, height, width = x.shape
        h, w = height // p, width // p
        patches = x.reshape(n, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(n, h * w, c * p * p)
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


def _split_heads(x, num_heads):
    """(N, L, C) -> (N, heads, L, C/heads)."""
    n, length, c = x.shape
    return x.reshape(n, length, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x):
    """(N, heads, L, d) -> (N, L, heads*d)."""
    n, h, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, h * d)


class Attention(nn.Module):
    """Multi-head self-attention: (N, L, C) -> (N, L, C)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x):
        n, length, c = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, heads, L, d)

    def forward(self, x):
        q, k, v = self._qkv(x)
        drop = self.attn_drop if self.training else 0.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(_merge_heads(x)))

    def attention_map(self, x):
        """The softmax attention weights (N, heads, L, L), computed explicitly (for pictures)."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries x (N, L, C) attend to context (N, M, C) -> (N, L, C)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, context):
        q = _split_heads(self.q(x), self.num_heads)
        k, v = (_split_heads(t, self.num_heads) for t in self.kv(context).chunk(2, dim=-1))
        drop = self.attn_drop if self.training else 0.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(_merge_heads(x)))


class _MlpMixin:
    """The pre-norm MLP sub-layer shared by every block: norm2, mlp, drop_path."""

    def _init_mlp(self, dim, mlp_ratio, drop, drop_path, act_layer, norm_layer):
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def _mlp(self, x):
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Block(_MlpMixin, nn.Module):
    """Pre-norm transformer block (timm's): self-attention, then MLP. (N, L, C) -> (N, L, C)."""

    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop=0., attn_drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self._init_mlp(dim, mlp_ratio, drop, drop_path, act_layer, norm_layer)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self._mlp(x)


class CrossBlock(_MlpMixin, nn.Module):
    """SiamMAE's cross decoder block: cross-attention to the context, then MLP.

    x: (N, L, C) queries (f2 tokens); context: (N, M, C) (f1 tokens) -> (N, L, C).
    """

    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop=0., attn_drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm_q = norm_layer(dim)
        self.norm_kv = norm_layer(dim)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self._init_mlp(dim, mlp_ratio, drop, drop_path, act_layer, norm_layer)

    def _cross(self, x, context):
        return x + self.drop_path(self.cross_attn(self.norm_q(x), self.norm_kv(context)))

    def forward(self, x, context):
        return self._mlp(self._cross(x, context))


class CrossSelfBlock(CrossBlock):
    """SiamMAE's cross-self decoder block: cross-attention to the context, self-attention, MLP.

    x: (N, L, C) queries (f2 tokens); context: (N, M, C) (f1 tokens) -> (N, L, C).
    """

    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop=0., attn_drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path, act_layer, norm_layer)
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)

    def forward(self, x, context):
        x = self._cross(x, context)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self._mlp(x)
