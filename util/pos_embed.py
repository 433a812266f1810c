"""Fixed 2-D sine-cosine position embeddings and their resizing.

The layout follows MAE: the first half of the channels encodes the column (x) coordinate,
the second half the row (y) coordinate, each half as [sin, cos] over geometric frequencies.
Without 2-D embeddings reconstructions show stripe artifacts (see the reproduction report).
"""
import numpy as np
import torch
import torch.nn.functional as F


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """pos: array of positions (M,) -> (M, embed_dim) as [sin | cos]."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    """grid_size: int or (h, w) -> (h*w, embed_dim), or (1+h*w, embed_dim) with a zero cls row."""
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    ys, xs = np.meshgrid(np.arange(gh, dtype=np.float32), np.arange(gw, dtype=np.float32), indexing="ij")
    emb = np.concatenate([get_1d_sincos_pos_embed_from_grid(embed_dim // 2, xs),
                          get_1d_sincos_pos_embed_from_grid(embed_dim // 2, ys)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb.astype(np.float32)


def resize_pos_embed(pos_embed, new_hw, num_extra_tokens=1):
    """Bicubically resize a (1, extra + h*w, D) table to the grid new_hw = (h', w').

    The source grid must be square (as in every released checkpoint). Returns (1, extra + h'*w', D).
    """
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    n, dim = grid.shape[1], grid.shape[2]
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"position embedding with {n} grid tokens is not a square grid")
    if (side, side) == tuple(new_hw):
        return pos_embed
    grid = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_hw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([extra, grid], dim=1)
