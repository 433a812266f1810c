# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Pictures of a SiamMAE: reconstructions of a masked future frame, and [CLS] attention maps.

    python visualize.py                                      # demo clips, randomly initialised model
    python visualize.py --checkpoint output_dir/checkpoint-last.pth --video clip.mp4 --output_dir vis
    python visualize.py --checkpoint ckpt.pth --frames f1.jpg f2.jpg
    python visualize.py --checkpoint mae_visualize_vit_base.pth --no-norm_pix_loss

Reconstructions (reconstruction_mask<ratio>.png, one per --mask_ratios): a row per frame pair
(several start frames and gaps per video): f1 | f2 with the removed patches grey | prediction
(with f2's visible patches pasted) | f2. Attention (attention_<k>_<name>.png): the [CLS] token's
attention over the patches in the last encoder block, one panel per head and their mean, over a
frame resized to --attention_size (a finer patch grid than in training; the paper's Fig. 5 used 720p).

The architecture comes from the checkpoint's weights; the encoder type, mask pattern and target
normalisation from the checkpoint's training arguments when it holds them (ours do), else from
--encoder / --norm_pix_loss. ``reconstruction_grid`` is what pre-training logs to TensorBoard.
"""
import argparse
import contextlib
import os
import sys
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn as nn

import models_siammae
import models_vit
from datasets import demo_video_paths, denormalize
from datasets.sources import UnreadableError
from datasets.transforms import crop_resize, to_tensor
from datasets.video import VideoClip
from util.args import bounded
from util.checkpoint import compact_keys, load_checkpoint, load_matching, model_state_dict
from util.misc import default_device, logger, make_output_dir, setup_logging

PAD = 2  # white pixels between panels
GREY = 0.5  # colour of the removed patches
GRID_RATIOS = (0.5, 0.75)  # the mask ratios grid masking supports


def get_args_parser():
    parser = argparse.ArgumentParser("SiamMAE visualisation", add_help=False)
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", default="", help="SiamMAE checkpoint or MAE mae_visualize_vit_*.pth "
                   "(default: a randomly initialised siammae_vit_small_patch16)")
    g.add_argument("--model", default=None, help="model name, only to tell the number of heads, e.g. "
                   "siammae_vit_base_patch16 (default: the checkpoint's, else inferred from the width)")
    g.add_argument("--encoder", default=None, choices=models_siammae.ENCODERS,
                   help="default: the checkpoint's, else 'siam'")
    g.add_argument("--norm_pix_loss", action=argparse.BooleanOptionalAction, default=None,
                   help="the model predicts per-patch normalised pixels (default: the checkpoint's, else yes; "
                        "MAE's visualize checkpoints: --no-norm_pix_loss)")
    g.add_argument("--input_size", default=224, type=bounded(1), help="frame size without --checkpoint")
    g = parser.add_argument_group("input (default: the embedded demo clips)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--video", default="", help="a video file")
    src.add_argument("--frames", nargs=2, metavar=("F1", "F2"), help="two image files: f1 and f2")
    g.add_argument("--gaps", nargs="+", type=bounded(1), default=[4, 16, 48], help="frame gaps of the pairs")
    g.add_argument("--starts", type=bounded(1), default=1, help="start frames per video (evenly spread)")
    g = parser.add_argument_group("pictures")
    g.add_argument("--mask_ratios", nargs="+", type=bounded(0, 0.99, kind=float), default=[0.5, 0.75, 0.95])
    g.add_argument("--attention_size", type=bounded(1), default=448, help="short side of the attention maps' frames")
    g.add_argument("--output_dir", default="./output_dir/visualize")
    g.add_argument("--device", default=default_device())
    g.add_argument("--seed", default=0, type=int, help="seed of the random masks")
    return parser


# ---------------------------------------------------------------- pictures
def to_uint8(imgs):
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8 numpy array."""
    pixels = (imgs.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round()
    return np.ascontiguousarray(pixels.astype(np.uint8))


def tile(rows):
    """A list of rows, each a list of (H, W, 3) uint8 panels of one size -> one uint8 image with
    PAD white pixels around every panel."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + PAD) + PAD, ncols * (w + PAD) + PAD, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            y, x = PAD + i * (h + PAD), PAD + j * (w + PAD)
            out[y:y + h, x:x + w] = panel
    return out


def put_label(img, text):
    """Write text at the top-left of img (H, W, 3) uint8 (white with a black outline); returns img."""
    scale = max(img.shape[1] / 560, 0.25)
    org = (3, 3 + int(18 * scale))
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return img


def unnormalize_prediction(model, pred, f2):
    """pred (N, L, p*p*3) -> patches in f2's (ImageNet-normalised) pixel space: with norm_pix_loss
    each patch is de-standardised with the mean and variance of f2's own patch."""
    if not model.norm_pix_loss:
        return pred
    target = model.patchify(f2)
    return pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** .5 + target.mean(dim=-1, keepdim=True)


@torch.no_grad()
def reconstruction_grid(model, frames, mask_ratio, labels=None, mask_ratio_f1=0.0):
    """frames (N, 2, 3, H, W) ImageNet-normalised, on the model's device -> uint8 image
    (N * (H + PAD) + PAD, 4 * (W + PAD) + PAD, 3): a row per pair, f1 | masked f2 | prediction
    (f2's visible patches pasted) | f2. labels: optional text per row. mask_ratio_f1: f1's masking (the
    symmetric ablations; f1 is shown whole). The model (not DDP-wrapped) runs in eval mode and is
    returned to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        _, pred, mask = model(frames, mask_ratio=mask_ratio, mask_ratio_f1=mask_ratio_f1)
    finally:
        model.train(was_training)
    f1, f2 = frames[:, 0].float(), frames[:, 1].float()
    p = model.patch_embed.patch_size[0]
    grid_hw = (f2.shape[-2] // p, f2.shape[-1] // p)
    pred = model.unpatchify(unnormalize_prediction(model, pred.float(), f2), grid_hw)
    removed = model.unpatchify(mask[..., None].float().expand(-1, -1, p * p * 3), grid_hw)  # 1: removed
    f1, f2, pred = denormalize(f1), denormalize(f2), denormalize(pred)
    columns = [f1, f2 * (1 - removed) + GREY * removed, pred * removed + f2 * (1 - removed), f2]
    rows = [list(r) for r in zip(*(to_uint8(c) for c in columns))]
    f1_name = f"f1 (masked {mask_ratio_f1:.0%})" if mask_ratio_f1 else "f1"
    for name, panel in zip((f1_name, f"f2 masked {mask_ratio:.0%}", "prediction", "f2"), rows[0]):
        put_label(panel, name)
    for row, text in zip(rows, labels or []):
        put_label(row[0][-row[0].shape[0] // 2:], text)  # lower half of f1
    return tile(rows)


@torch.no_grad()
def cls_attention(model, imgs):
    """imgs (N, 3, H, W) normalised, H and W multiples of the patch -> (N, heads, h, w): the [CLS]
    query's attention weights over the patches in the last encoder block, renormalised to sum to
    one per head (the [CLS]-to-[CLS] weight left out)."""
    attn = model.last_selfattention(imgs)[:, :, 0, 1:].float()
    attn = attn / attn.sum(dim=-1, keepdim=True)
    return attn.reshape(*attn.shape[:2], *model.grid_of(imgs))


def overlay(img, amap):
    """img (H, W, 3) uint8 RGB, amap (h, w) non-negative -> the map (scaled to its maximum,
    bilinearly upsampled, inferno colours) blended half-and-half over img."""
    a = amap.cpu().numpy().astype(np.float32)
    a = cv2.resize(a / max(float(a.max()), 1e-12), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((a.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    return cv2.addWeighted(img, 0.5, heat, 0.5, 0)


def attention_figure(img, maps):
    """img (H, W, 3) uint8 RGB, maps (heads, h, w) -> one row: the image, each head, the mean."""
    panels = [img.copy()] + [overlay(img, m) for m in maps] + [overlay(img, maps.mean(dim=0))]
    for k, panel in enumerate(panels[1:-1]):
        put_label(panel, f"head {k + 1}")
    put_label(panels[-1], "mean")
    return tile([panels])


@contextlib.contextmanager
def masking_for(model, mask_ratio):
    """Random masking while the ratio is one grid masking does not support; then the model's own."""
    pattern = model.mask_pattern
    if pattern == "grid" and mask_ratio not in GRID_RATIOS:
        model.mask_pattern = "random"
    try:
        yield
    finally:
        model.mask_pattern = pattern


# ---------------------------------------------------------------- model
def siammae_config(sd, saved, args, source):
    """SiamMAE constructor keywords: architecture from the weights sd; encoder type, mask pattern,
    target normalisation and decoder heads from the command line, else the checkpoint's training
    arguments (saved), else SiamMAE's defaults."""
    cfg = models_vit.infer_vit_config(sd, source)
    name = args.model or getattr(saved, "model", None)
    if name:
        named = models_vit.vit_config(models_vit.to_vit_name(name))
        if named["embed_dim"] == cfg["embed_dim"]:
            cfg["num_heads"] = named["num_heads"]
        elif args.model:
            logger.warning(f"--model {args.model} is {named['embed_dim']} wide, {source}'s encoder "
                           f"{cfg['embed_dim']}: --model ignored (the architecture comes from the weights)")
    if "decoder_embed.weight" not in sd:
        raise ValueError(f"{source}: holds no decoder weights; reconstructions need a SiamMAE checkpoint or "
                         "MAE's mae_visualize_vit_*.pth")
    block0 = {k[len("decoder_blocks.0."):] for k in sd if k.startswith("decoder_blocks.0.")}
    cross, self_attn = "cross_attn.q.weight" in block0, "attn.qkv.weight" in block0
    decoder = "cross_self" if cross and self_attn else "cross" if cross else "joint"

    def pick(key, default):
        chosen = getattr(args, key, None)
        return chosen if chosen is not None else getattr(saved, key, default)
    decoder_dim = sd["decoder_embed.weight"].shape[0]
    return dict(**cfg, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / cfg["embed_dim"],
                norm_layer=partial(nn.LayerNorm, eps=1e-6), decoder=decoder, decoder_embed_dim=decoder_dim,
                decoder_mlp_ratio=sd["decoder_blocks.0.mlp.fc1.weight"].shape[0] / decoder_dim,
                decoder_depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder_blocks.")),
                decoder_num_heads=getattr(saved, "decoder_num_heads", 16),
                encoder=pick("encoder", "siam"), mask_pattern=getattr(saved, "mask_pattern", "random"),
                norm_pix_loss=pick("norm_pix_loss", True))


def build_model(args):
    """The SiamMAE of --checkpoint (or a randomly initialised siammae_vit_small_patch16)."""
    if not args.checkpoint:
        logger.warning("no --checkpoint: a RANDOMLY INITIALISED siammae_vit_small_patch16; the pictures "
                       "show an untrained model")
        return models_siammae.siammae_vit_small_patch16(
            img_size=args.input_size, encoder=args.encoder or "siam",
            norm_pix_loss=True if args.norm_pix_loss is None else args.norm_pix_loss)
    ckpt = load_checkpoint(args.checkpoint)
    sd = model_state_dict(ckpt, args.checkpoint)
    saved = ckpt.get("args") if isinstance(ckpt.get("args"), argparse.Namespace) else None
    cfg = siammae_config(sd, saved, args, args.checkpoint)
    model = models_siammae.SiamMAE(**cfg)
    report = load_matching(model, sd, args.checkpoint)
    logger.info(f"SiamMAE {cfg['embed_dim']}-wide, depth {cfg['depth']}, patch {cfg['patch_size']}, "
                f"{cfg['img_size']} px; decoder {cfg['decoder']} x{cfg['decoder_depth']}; encoder {cfg['encoder']}; "
                f"norm_pix_loss {cfg['norm_pix_loss']}. {report.summary()}")
    if report.new:
        logger.warning(f"{args.checkpoint}: {compact_keys(report.new)} not in the checkpoint: left random")
    return model


# ---------------------------------------------------------------- input frames
def centre_square(img, size):
    """(H, W, 3) uint8 -> the largest centred square resized to (size, size, 3)."""
    h, w = img.shape[:2]
    s = min(h, w)
    return crop_resize(img, ((h - s) // 2, (w - s) // 2, s, s), size)


def read_image(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: missing or not a decodable image")
    return img


def video_pairs(path, gaps, starts):
    """Frame pairs (f1, f2) of (H, W, 3) BGR uint8 with labels: for `starts` evenly spread start
    frames, one pair per gap (cut at the last frame); also the start frames themselves."""
    with VideoClip(path) as clip:
        n = clip.num_frames
        firsts = sorted({int(n * (k + 0.5) / (starts + 1)) for k in range(starts)})
        pairs, labels = [], []
        for t in firsts:
            for gap in gaps:
                f1, f2 = clip.read([t, min(t + gap, n - 1)])
                pairs.append((f1, f2))
                labels.append(f"t {t} gap {min(t + gap, n - 1) - t}")
        return pairs, labels, clip.read(firsts)


def collect_inputs(args):
    """(pairs, labels, attention frames): pairs of BGR frames to reconstruct, a label per pair,
    and (name, BGR frame) to draw attention maps on."""
    if args.frames:
        f1, f2 = (read_image(p) for p in args.frames)
        return [(f1, f2)], ["frames"], [(os.path.splitext(os.path.basename(p))[0], img) for p, img in zip(args.frames, (f1, f2))]
    paths = [args.video] if args.video else demo_video_paths()
    pairs, labels, singles = [], [], []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        p, lab, firsts = video_pairs(path, args.gaps, args.starts)
        pairs += p
        labels += [f"{name} {text}" for text in lab]
        singles += [(f"{name}_{k}", frame) for k, frame in enumerate(firsts)]
    return pairs, labels, singles


def attention_input(img, short_side, patch):
    """BGR frame -> (RGB uint8 (H, W, 3), normalised (1, 3, H, W)): short side resized to short_side,
    each side rounded down to a multiple of the patch."""
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    size = tuple(max(patch, int(s * scale) // patch * patch) for s in (w, h))
    resized = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized[..., ::-1]), to_tensor(resized)[None]


def save_rgb(path, img):
    if not cv2.imwrite(path, np.ascontiguousarray(img[..., ::-1])):
        raise OSError(f"{path}: could not write the image")
    logger.info(f"wrote {path} ({img.shape[1]}x{img.shape[0]})")


# ---------------------------------------------------------------- main
def main(args):
    """Write the pictures; returns their paths."""
    make_output_dir(args.output_dir)
    setup_logging()
    device = torch.device(args.device)
    model = build_model(args).to(device).eval()
    size, patch = model.patch_embed.img_size[0], model.patch_embed.patch_size[0]
    pairs, labels, singles = collect_inputs(args)
    frames = torch.stack([to_tensor([centre_square(f, size) for f in pair]) for pair in pairs]).to(device)
    written = []
    for ratio in args.mask_ratios:
        torch.manual_seed(args.seed)
        with masking_for(model, ratio):
            grid = reconstruction_grid(model, frames, ratio, labels)
        written.append(os.path.join(args.output_dir, f"reconstruction_mask{round(ratio * 100)}.png"))
        save_rgb(written[-1], grid)
    for k, (name, frame) in enumerate(singles):
        rgb, x = attention_input(frame, args.attention_size, patch)
        figure = attention_figure(rgb, cls_attention(model, x.to(device))[0])
        written.append(os.path.join(args.output_dir, f"attention_{k}_{name}.png"))
        save_rgb(written[-1], figure)
    return written


if __name__ == "__main__":
    args = argparse.ArgumentParser("SiamMAE visualisation", parents=[get_args_parser()]).parse_args()
    try:
        main(args)
    except (ValueError, FileNotFoundError, UnreadableError, OSError) as e:
        sys.exit(f"error: {e}")
