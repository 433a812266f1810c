"""Masked Autoencoder (He et al., 2022) with a ViT backbone: the original model, on today's stack.

Same constructor, methods, initialisation scheme, state-dict keys and numerics as facebookresearch/mae's
``MaskedAutoencoderViT`` (the same distributions, not the same draws for a seed); released checkpoints (``mae_pretrain_vit_*.pth``, encoder only, and
``mae_visualize_vit_*.pth``, encoder + decoder) load without renaming. The encoder is
``models_vit.VisionTransformer`` with a fixed sin-cos position table; attention is fused (SDPA).
"""
from functools import partial

import torch
import torch.nn as nn

from models_vit import VisionTransformer, init_weights, vit_config
from util.blocks import Block
from util.pos_embed import get_2d_sincos_pos_embed


class MaskedAutoencoderViT(VisionTransformer):
    """Masked Autoencoder with VisionTransformer backbone."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.,
                 norm_layer=nn.LayerNorm, norm_pix_loss=False):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                         qkv_bias=True, norm_layer=norm_layer, fixed_pos_embed=True)
        self.norm_pix_loss = norm_pix_loss
        num_patches = self.patch_embed.num_patches
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = self.build_decoder_blocks(decoder_embed_dim, decoder_depth, decoder_num_heads,
                                                        mlp_ratio, norm_layer)
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)
        self.initialize_weights()

    def build_decoder_blocks(self, dim, depth, num_heads, mlp_ratio, norm_layer, block=Block):
        """depth decoder blocks of width dim (MAE's: self-attention blocks)."""
        return nn.ModuleList([block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                              for _ in range(depth)])

    def initialize_weights(self):
        """MAE's initialisation of the decoder (the encoder initialises itself the same way)."""
        dec = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.patch_embed.grid_size, cls_token=True)
        self.decoder_pos_embed.data.copy_(torch.from_numpy(dec).unsqueeze(0))
        nn.init.normal_(self.mask_token, std=.02)
        for module in self.decoder_modules():
            module.apply(init_weights)

    def decoder_modules(self):
        return [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred]

    def patchify(self, imgs):
        """imgs: (N, C, H, W) -> x: (N, L, patch_size**2 * C)"""
        p = self.patch_embed.patch_size[0]
        n, c, H, W = imgs.shape
        if H % p or W % p:
            raise ValueError(f"image size {(H, W)} is not a multiple of the patch size {p}")
        h, w = H // p, W // p
        x = imgs.reshape(n, c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, h * w, p * p * c)

    def unpatchify(self, x, grid_hw=None):
        """x: (N, L, patch_size**2 * C) -> imgs: (N, C, H, W); grid_hw defaults to a square grid."""
        p = self.patch_embed.patch_size[0]
        h, w = grid_hw or (int(round(x.shape[1] ** .5)),) * 2
        if h * w != x.shape[1]:
            raise ValueError(f"{x.shape[1]} patches do not form a {h}x{w} grid")
        c = x.shape[2] // (p * p)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def random_masking(self, x, mask_ratio):
        """Per-sample random masking by per-sample shuffling (argsort of uniform noise).

        x: (N, L, D) -> x_masked (N, int(L * (1 - mask_ratio)), D), mask (N, L) with 0 keep and
        1 remove, ids_restore (N, L).
        """
        n, length, _ = x.shape
        return self.mask_by_noise(x, masking_noise(n, length, x.device), int(length * (1 - mask_ratio)))

    @staticmethod
    def mask_by_noise(x, noise, len_keep):
        """Keep the len_keep patches of lowest noise. x (N, L, D), noise (N, L)."""
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        mask = torch.ones(x.shape[:2], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio):
        """imgs (N, 3, H, W) -> latent (N, 1 + len_keep, D), mask (N, L), ids_restore (N, L)."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        return self.norm(self.run_blocks(self.with_cls(x))), mask, ids_restore

    def restore_tokens(self, x, ids_restore):
        """Embed latent (N, 1 + len_keep, D) into the decoder width, append [MASK] tokens, unshuffle
        and add decoder position embeddings -> (N, 1 + L, D_dec). ids_restore None: nothing masked."""
        x = self.decoder_embed(x)
        if ids_restore is not None:
            mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
            x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
            x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
            x = torch.cat([x[:, :1, :], x_], dim=1)
        return x + self.decoder_pos_embed

    def predict_pixels(self, x):
        """Decoder tokens (N, 1 + L, D_dec) -> per-patch pixels (N, L, p*p*C), [CLS] dropped."""
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_decoder(self, x, ids_restore):
        """latent (N, 1 + len_keep, D) -> pred (N, L, p*p*C)"""
        x = self.restore_tokens(x, ids_restore)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.predict_pixels(x)

    def forward_loss(self, imgs, pred, mask):
        """imgs: (N, 3, H, W), pred: (N, L, p*p*3), mask: (N, L) with 0 keep, 1 remove.
        Mean squared error over the removed patches only (per-patch normalised targets with
        norm_pix_loss)."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio=0.75):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


def masking_noise(n, length, device):
    """Uniform noise (n, length) from the global generator. A model compiled by util.misc.compile_model
    draws the same noise as in eager mode (a plain torch.compile would draw its own)."""
    return torch.rand(n, length, device=device)


def autoencoder_factory(cls, vit_name):
    """A factory of cls (an MAE or SiamMAE class) with the encoder of vit_name and MAE's decoder
    (512 wide, 8 blocks, 16 heads); keyword arguments override any of it."""
    def build(**kwargs):
        cfg = dict(**vit_config(vit_name), decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                   mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        return cls(**{**cfg, **kwargs})
    build.__name__ = f"{cls.__name__}({vit_name})"
    return build


mae_vit_tiny_patch16_dec512d8b = autoencoder_factory(MaskedAutoencoderViT, "vit_tiny_patch16")
mae_vit_small_patch16_dec512d8b = autoencoder_factory(MaskedAutoencoderViT, "vit_small_patch16")
mae_vit_base_patch16_dec512d8b = autoencoder_factory(MaskedAutoencoderViT, "vit_base_patch16")
mae_vit_large_patch16_dec512d8b = autoencoder_factory(MaskedAutoencoderViT, "vit_large_patch16")
mae_vit_huge_patch14_dec512d8b = autoencoder_factory(MaskedAutoencoderViT, "vit_huge_patch14")

# recommended names
mae_vit_tiny_patch16 = mae_vit_tiny_patch16_dec512d8b
mae_vit_small_patch16 = mae_vit_small_patch16_dec512d8b
mae_vit_base_patch16 = mae_vit_base_patch16_dec512d8b
mae_vit_large_patch16 = mae_vit_large_patch16_dec512d8b
mae_vit_huge_patch14 = mae_vit_huge_patch14_dec512d8b
