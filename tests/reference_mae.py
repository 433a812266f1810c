"""An independent re-statement of the original MAE forward pass, built from timm 0.4.12's own
PatchEmbed and Block (explicit softmax attention), to check our model's numerics against."""
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, PatchEmbed


class ReferenceMAE(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, dec_dim, dec_depth, dec_heads,
                 norm_pix_loss):
        super().__init__()
        ln = lambda d: nn.LayerNorm(d, eps=1e-6)  # noqa: E731
        self.p = patch_size
        self.norm_pix_loss = norm_pix_loss
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, 4., qkv_bias=True, norm_layer=ln) for _ in range(depth)])
        self.norm = ln(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, dec_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, 4., qkv_bias=True, norm_layer=ln)
                                             for _ in range(dec_depth)])
        self.decoder_norm = ln(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch_size ** 2 * 3)

    def forward(self, imgs, mask_ratio):
        n, _, H, W = imgs.shape
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        L = x.shape[1]
        keep = int(L * (1 - mask_ratio))
        order = torch.rand(n, L).argsort(dim=1)
        back = order.argsort(dim=1)
        x = x[torch.arange(n)[:, None], order[:, :keep]]
        mask = torch.ones(n, L)
        mask[:, :keep] = 0
        mask = mask[torch.arange(n)[:, None], back]
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1), x], 1)
        for b in self.blocks:
            x = b(x)
        x = self.decoder_embed(self.norm(x))
        full = torch.cat([x[:, 1:], self.mask_token.expand(n, L - keep, -1)], 1)
        full = full[torch.arange(n)[:, None], back]
        x = torch.cat([x[:, :1], full], 1) + self.decoder_pos_embed
        for b in self.decoder_blocks:
            x = b(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        p, h, w = self.p, H // self.p, W // self.p
        target = imgs.reshape(n, 3, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(n, h * w, p * p * 3)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** .5
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred, mask
