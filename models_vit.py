"""Plain Vision Transformer: the encoder shared by MAE and SiamMAE, and the network for
fine-tuning, linear probing and feature extraction.

State-dict keys equal timm's and MAE's (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.*``, ``norm``, ``fc_norm``, ``head``), so an encoder trained here loads into MAE or timm
ViT code and back.
"""
from functools import partial

import torch
import torch.nn as nn

from util.blocks import Block, PatchEmbed
from util.checkpoint import encoder_state_dict, load_checkpoint, load_matching, model_state_dict
from util.misc import logger
from util.pos_embed import get_2d_sincos_pos_embed, resize_pos_embed


class VisionTransformer(nn.Module):
    """ViT encoder with an optional classification head.

    fixed_pos_embed: a frozen 2-D sin-cos table (MAE pre-training) instead of a learnt one.
    global_pool: classify the mean patch token through ``fc_norm`` (MAE fine-tuning) instead of
    the normalised [CLS] token; ``norm`` is then absent, as in MAE.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4., qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0,
                 global_pool=False, drop_path_rate=0., fixed_pos_embed=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=not fixed_pos_embed)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], norm_layer=norm_layer)
            for i in range(depth)])
        if global_pool:
            self.fc_norm = norm_layer(embed_dim)
        else:
            self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.initialize_encoder_weights()

    def initialize_encoder_weights(self):
        """MAE's initialisation: sin-cos position table, xavier patch projection and linears,
        normal(0.02) [CLS] token, unit LayerNorms."""
        pos = get_2d_sincos_pos_embed(self.embed_dim, self.patch_embed.grid_size, cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(pos).unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.cls_token, std=.02)
        self.apply(init_weights)

    @property
    def feature_norm(self):
        return self.fc_norm if self.global_pool else self.norm

    def pos_embed_for(self, grid_hw):
        """The position table (1, 1 + h*w, D) for a patch grid (h, w), bicubically resized if needed."""
        if tuple(grid_hw) == tuple(self.patch_embed.grid_size):
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid_hw)

    def grid_of(self, imgs):
        """imgs (N, 3, H, W) -> the patch grid (H / p, W / p)."""
        p = self.patch_embed.patch_size[0]
        return imgs.shape[-2] // p, imgs.shape[-1] // p

    def with_cls(self, x, pos=None):
        """Patch tokens (N, L, D) -> (N, 1 + L, D): [CLS] plus its position embedding first (pos: the
        position table in use, default pos_embed)."""
        pos = self.pos_embed if pos is None else pos
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def run_blocks(self, x):
        """Tokens (N, T, D) through every block -> (N, T, D), before the final norm."""
        for blk in self.blocks:
            x = blk(x)
        return x

    def prepare_tokens(self, imgs):
        """imgs (N, 3, H, W) -> embedded patches with [CLS] and position embeddings (N, 1 + h*w, D)."""
        pos = self.pos_embed_for(self.grid_of(imgs))
        return self.with_cls(self.patch_embed(imgs) + pos[:, 1:], pos)

    def forward_tokens(self, imgs):
        """imgs (N, 3, H, W) -> tokens (N, 1 + h*w, D) after the last block, before the final norm."""
        return self.run_blocks(self.prepare_tokens(imgs))

    def forward_features(self, imgs):
        """imgs (N, 3, H, W), H and W multiples of the patch -> patch features (N, h, w, D):
        last-block tokens after the final norm, [CLS] dropped (for label propagation)."""
        h, w = self.grid_of(imgs)
        x = self.feature_norm(self.forward_tokens(imgs))[:, 1:]
        return x.reshape(x.shape[0], h, w, -1)

    def forward_head(self, tokens):
        """tokens (N, 1 + L, D) -> logits (N, num_classes) (or pooled features without a head)."""
        if self.global_pool:
            x = self.fc_norm(tokens[:, 1:].mean(dim=1))
        else:
            x = self.norm(tokens)[:, 0]
        return self.head(x)

    def forward(self, imgs):
        """imgs (N, 3, H, W) -> logits (N, num_classes)."""
        return self.forward_head(self.forward_tokens(imgs))

    @torch.no_grad()
    def last_selfattention(self, imgs):
        """imgs (N, 3, H, W) -> the last block's attention weights (N, heads, 1+h*w, 1+h*w)."""
        x = self.prepare_tokens(imgs)
        for blk in self.blocks[:-1]:
            x = blk(x)
        return self.blocks[-1].attn.attention_map(self.blocks[-1].norm1(x))


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


# name: (patch_size, embed_dim, depth, num_heads)
VIT_CONFIGS = {
    "vit_tiny_patch16": (16, 192, 12, 3),
    "vit_small_patch16": (16, 384, 12, 6),
    "vit_small_patch8": (8, 384, 12, 6),
    "vit_base_patch16": (16, 768, 12, 12),
    "vit_base_patch8": (8, 768, 12, 12),
    "vit_large_patch16": (16, 1024, 24, 16),
    "vit_huge_patch14": (14, 1280, 32, 16),
}
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def vit_config(name):
    """Architecture keywords of a named ViT, e.g. 'vit_small_patch16'."""
    if name not in VIT_CONFIGS:
        raise ValueError(f"unknown ViT '{name}'; known: {', '.join(VIT_CONFIGS)}")
    p, d, depth, heads = VIT_CONFIGS[name]
    return dict(patch_size=p, embed_dim=d, depth=depth, num_heads=heads)


def _factory(name):
    def build(**kwargs):
        return VisionTransformer(**{**vit_config(name), **kwargs})
    build.__name__ = name
    build.__doc__ = f"{name}: patch, width, depth, heads = {VIT_CONFIGS[name]}"
    return build


vit_tiny_patch16 = _factory("vit_tiny_patch16")
vit_small_patch16 = _factory("vit_small_patch16")
vit_small_patch8 = _factory("vit_small_patch8")
vit_base_patch16 = _factory("vit_base_patch16")
vit_base_patch8 = _factory("vit_base_patch8")
vit_large_patch16 = _factory("vit_large_patch16")
vit_huge_patch14 = _factory("vit_huge_patch14")


def infer_vit_config(state_dict, source="checkpoint"):
    """Encoder architecture (patch_size, embed_dim, depth, num_heads, img_size) from its weights."""
    if "patch_embed.proj.weight" not in state_dict:
        raise ValueError(f"{source}: no 'patch_embed.proj.weight', so not a ViT encoder")
    width, _, patch, _ = state_dict["patch_embed.proj.weight"].shape
    depth = 1 + max((int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")), default=-1)
    if depth == 0:
        raise ValueError(f"{source}: no encoder blocks ('blocks.*' weights)")
    heads = HEADS_BY_WIDTH.get(width, width // 64)
    if heads < 1 or width % heads:
        raise ValueError(f"{source}: cannot infer the number of heads of width {width}; pass --model")
    grid = int(round((state_dict["pos_embed"].shape[1] - 1) ** 0.5)) if "pos_embed" in state_dict else 14
    if (patch, width, depth, heads) not in VIT_CONFIGS.values():
        logger.warning(f"{source}: weights of a ViT with patch {patch}, width {width}, depth {depth}, which is "
                       "no named model (a cut or custom one?); pass --model to check them against one")
    return dict(patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                img_size=grid * patch)


def encoder_from_checkpoint(path, model_name=None, verbose=True):
    """A VisionTransformer (no head) with the encoder weights of a SiamMAE, MAE, DINO or timm
    checkpoint. model_name: e.g. 'vit_small_patch16' (or a SiamMAE/MAE model name); inferred if None."""
    sd = encoder_state_dict(model_state_dict(load_checkpoint(path), path))
    cfg = infer_vit_config(sd, path)
    if model_name:
        cfg.update(vit_config(to_vit_name(model_name)))
    model = VisionTransformer(**cfg)
    report = load_matching(model, sd, source=path)
    if verbose:
        logger.info(report.summary())
    return model


def to_vit_name(model_name):
    """'siammae_vit_small_patch16' / 'mae_vit_base_patch16' / 'vit_base_patch16' -> 'vit_..._patchP'."""
    name = model_name[model_name.index("vit_"):] if "vit_" in model_name else model_name
    return name.split("_dec")[0]
