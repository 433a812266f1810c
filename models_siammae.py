"""Siamese Masked Autoencoders (Gupta et al., 2023).

A pair of frames f1 (past) and f2 (future), ``frames`` of shape (N, 2, 3, H, W), is encoded by one
ViT (shared weights; 2-D sin-cos position embeddings, no temporal embedding). f1 is left whole and
f2 is masked at 95% (asymmetric masking); the decoder predicts the (per-patch normalised) pixels of
f2's masked patches from f2's few visible tokens and all of f1's tokens.

Every variant of the paper's ablations (Table 2) is a constructor option:
- encoder: 'siam' (each frame alone) or 'joint' (the visible tokens of both frames in one pass);
- decoder: 'cross_self' (cross-attention f2 -> f1, self-attention over f2, MLP), 'cross'
  (cross-attention, MLP) or 'joint' (self-attention over both frames' full token sets);
- masking: asymmetric (mask_ratio_f1 = 0) or symmetric, 'random' or 'grid' pattern.
One speed option: amp_residual (see _stream).

Builds on MAE: patchify, random masking, the decoder embedding and [MASK] tokens, the loss and the
parameter names are MAE's, so released MAE weights initialise it (util.checkpoint.load_matching).
"""
import functools

import torch

from models_mae import MaskedAutoencoderViT, autoencoder_factory
from util.blocks import Block, CrossBlock, CrossSelfBlock

ENCODERS = ("siam", "joint")
DECODERS = {"cross_self": CrossSelfBlock, "cross": CrossBlock, "joint": Block}
MASK_PATTERNS = ("random", "grid")


@functools.lru_cache(maxsize=None)
def grid_noise(h, w, mask_ratio, device):
    """Noise (1, h*w) whose ascending order keeps the grid pattern's patches first (each group in
    raster order), and how many are kept; made once per grid and device (no host sync per step)."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if mask_ratio == 0.5:
        keep = (ii + jj) % 2 == 0
    elif mask_ratio == 0.75:
        keep = (ii % 2 == 0) & (jj % 2 == 0)
    else:
        raise ValueError(f"grid masking supports mask ratios 0.5 and 0.75, got {mask_ratio}")
    keep = keep.flatten()
    noise = (~keep).float() + torch.arange(h * w) / (2. * h * w)
    return noise[None].to(device), int(keep.sum())


class SiamMAE(MaskedAutoencoderViT):
    """Siamese Masked Autoencoder with a ViT backbone."""

    def __init__(self, encoder="siam", decoder="cross_self", mask_pattern="random", norm_pix_loss=True,
                 amp_residual=False, decoder_mlp_ratio=None, **kwargs):
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got '{encoder}'")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {tuple(DECODERS)}, got '{decoder}'")
        if mask_pattern not in MASK_PATTERNS:
            raise ValueError(f"mask_pattern must be one of {MASK_PATTERNS}, got '{mask_pattern}'")
        self.encoder_type, self.decoder_type, self.mask_pattern = encoder, decoder, mask_pattern
        self.amp_residual = amp_residual
        self.decoder_mlp_ratio = decoder_mlp_ratio  # None: the encoder's (MAE's decoder)
        super().__init__(norm_pix_loss=norm_pix_loss, **kwargs)

    def build_decoder_blocks(self, dim, depth, num_heads, mlp_ratio, norm_layer):
        """The decoder's blocks: cross-self, cross or self-attention (joint) ones, by decoder_type."""
        return super().build_decoder_blocks(dim, depth, num_heads, self.decoder_mlp_ratio or mlp_ratio, norm_layer,
                                            DECODERS[self.decoder_type])

    def grid_masking(self, x, mask_ratio):
        """The same regular pattern for every sample: ratio 0.5 keeps every alternate patch
        (checkerboard), 0.75 one patch in each 2x2 cell. x: (N, L, D) -> as random_masking."""
        noise, len_keep = grid_noise(*self.patch_embed.grid_size, mask_ratio, x.device)
        return self.mask_by_noise(x, noise.expand(x.shape[0], -1), len_keep)

    def mask_frame(self, x, mask_ratio):
        """x: (N, L, D) -> kept tokens, mask (N, L), ids_restore (N, L) or None when nothing is
        masked (the whole frame passes in order: no shuffle, no gather)."""
        if mask_ratio == 0:
            return x, x.new_zeros(x.shape[:2]), None
        if self.mask_pattern == "grid":
            return self.grid_masking(x, mask_ratio)
        return self.random_masking(x, mask_ratio)

    def _stream(self, x):
        """Tokens entering a stack of blocks. Under autocast the residual stream stays float32 (float32
        tokens plus low-precision branch outputs); with amp_residual it is cast to the autocast dtype,
        halving the bytes every residual add and LayerNorm moves (not bit-equal to float32)."""
        device = x.device.type
        if self.amp_residual and torch.is_autocast_enabled(device):
            return x.to(torch.get_autocast_dtype(device))
        return x

    def _encode(self, x):
        """Tokens (N, T, D), [CLS] first -> encoded and normed (N, T, D)."""
        return self.norm(self.run_blocks(self._stream(x)))

    def forward_encoder(self, frames, mask_ratio, mask_ratio_f1=0.0):
        """frames: (N, 2, 3, H, W) -> for f1 and for f2: latent (N, 1 + len_keep, D),
        mask (N, L) (1 = removed) and ids_restore (N, L) or None."""
        tokens = [self.patch_embed(frames[:, i]) + self.pos_embed[:, 1:, :] for i in (0, 1)]
        (x1, m1, r1), (x2, m2, r2) = (self.mask_frame(t, r) for t, r in zip(tokens, (mask_ratio_f1, mask_ratio)))
        if self.encoder_type == "joint":
            x = self._encode(self.with_cls(torch.cat([x1, x2], dim=1)))
            cls, n1 = x[:, :1], x1.shape[1]
            l1, l2 = torch.cat([cls, x[:, 1:1 + n1]], dim=1), torch.cat([cls, x[:, 1 + n1:]], dim=1)
        elif x1.shape[1] == x2.shape[1]:  # symmetric masking: one batched pass
            l1, l2 = self._encode(self.with_cls(torch.cat([x1, x2], dim=0))).chunk(2, dim=0)
        else:
            l1, l2 = self._encode(self.with_cls(x1)), self._encode(self.with_cls(x2))
        return (l1, m1, r1), (l2, m2, r2)

    def forward_decoder(self, latent1, latent2, ids_restore1, ids_restore2):
        """latents (N, 1 + len_keep_i, D) -> pred (N, L, p*p*3) for every patch of f2."""
        y1 = self._stream(self.restore_tokens(latent1, ids_restore1))
        y2 = self._stream(self.restore_tokens(latent2, ids_restore2))
        if self.decoder_type == "joint":
            y = torch.cat([y1, y2], dim=1)
            for blk in self.decoder_blocks:
                y = blk(y)
            y2 = y[:, y1.shape[1]:]
        else:
            for blk in self.decoder_blocks:
                y2 = blk(y2, y1)
        return self.predict_pixels(y2)

    def forward(self, frames, mask_ratio=0.95, mask_ratio_f1=0.0):
        """frames: (N, 2, 3, H, W) -> loss (scalar), pred (N, L, p*p*3) for f2, mask (N, L) of f2."""
        if frames.dim() != 5 or frames.shape[1] != 2:
            raise ValueError(f"expected frames of shape (N, 2, 3, H, W), got {tuple(frames.shape)}")
        (l1, _, r1), (l2, mask, r2) = self.forward_encoder(frames, mask_ratio, mask_ratio_f1)
        pred = self.forward_decoder(l1, l2, r1, r2)
        loss = self.forward_loss(frames[:, 1], pred, mask)
        return loss, pred, mask


siammae_vit_tiny_patch16 = autoencoder_factory(SiamMAE, "vit_tiny_patch16")
siammae_vit_small_patch16 = autoencoder_factory(SiamMAE, "vit_small_patch16")  # the paper's default
siammae_vit_small_patch8 = autoencoder_factory(SiamMAE, "vit_small_patch8")
siammae_vit_base_patch16 = autoencoder_factory(SiamMAE, "vit_base_patch16")
siammae_vit_large_patch16 = autoencoder_factory(SiamMAE, "vit_large_patch16")
