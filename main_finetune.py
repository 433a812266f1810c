# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a pre-trained ViT encoder for image classification (MAE's end-to-end protocol).

    torchrun --nproc_per_node=8 main_finetune.py --finetune siammae.pth --data_path IMAGENET \\
        --model vit_small_patch16 --epochs 100 --blr 5e-4 --layer_decay 0.65 --mixup 0.8 --cutmix 1.0
    python main_finetune.py --eval --resume output_dir/checkpoint-last.pth --data_path IMAGENET

--finetune takes a SiamMAE or MAE checkpoint or a plain ViT state dict: its encoder initialises the
model (position embeddings resized to --input_size), the head starts from trunc_normal(std=2e-5).
Layer-wise lr decay, drop path, RandAugment, random erasing, mixup/cutmix, label smoothing, AdamW
and a cosine schedule with warm-up. output_dir/checkpoint-last.pth is saved each epoch and
resumed from automatically (a requeued job continues its own run).
"""
import argparse

import torch

import engine_finetune as engine
from util.args import add_classification_args, add_optimization_args, add_runtime_args, grad_scaler, resolve_lr
from util.datasets_cls import build_datasets, build_loaders, build_mixup, describe, finetune_transform
from util.lr_decay import param_groups_lrd
from util.misc import get_world_size, init_run, logger
from util.optim import run_script


def get_args_parser():
    parser = argparse.ArgumentParser("SiamMAE fine-tuning for image classification", add_help=False)
    add_optimization_args(parser, batch_size=64, epochs=50, blr=1e-3, weight_decay=0.05, warmup_epochs=5)
    parser.set_defaults(min_lr=1e-6)
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--layer_decay", type=float, default=0.75, help="layer-wise lr decay")
    g.add_argument("--drop_path", type=float, default=0.1, help="stochastic depth rate")
    add_classification_args(parser, global_pool=True)
    g = parser.add_argument_group("augmentation")
    g.add_argument("--color_jitter", type=float, default=None, help="colour jitter (used without --aa)")
    g.add_argument("--aa", type=str, default="rand-m9-mstd0.5-inc1", help="timm auto-augment policy")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--reprob", type=float, default=0.25, help="random erase probability")
    g.add_argument("--remode", type=str, default="pixel", help="random erase mode")
    g.add_argument("--recount", type=int, default=1, help="random erase count")
    g.add_argument("--mixup", type=float, default=0, help="mixup alpha (enabled if > 0)")
    g.add_argument("--cutmix", type=float, default=0, help="cutmix alpha (enabled if > 0)")
    g.add_argument("--cutmix_minmax", type=float, nargs=2, default=None, help="cutmix min/max area ratio")
    g.add_argument("--mixup_prob", type=float, default=1.0, help="probability of mixup or cutmix per batch")
    g.add_argument("--mixup_switch_prob", type=float, default=0.5, help="probability of cutmix when both are on")
    g.add_argument("--mixup_mode", type=str, default="batch", choices=["batch", "pair", "elem"])
    add_runtime_args(parser)
    return parser


def build_criterion(args, mixup_fn):
    """Cross-entropy: against mixup's soft targets (which carry the smoothing), else with label smoothing."""
    if mixup_fn is not None:
        return torch.nn.CrossEntropyLoss()  # class-probability targets
    return torch.nn.CrossEntropyLoss(label_smoothing=args.smoothing)


def main(args):
    device = init_run(args)
    start = engine.start_point(args)  # before the transforms: it may set --input_size
    train_set, val_set = build_datasets(args, finetune_transform(args))
    loaders = build_loaders(train_set, val_set, args)
    mixup_fn = build_mixup(args)
    if mixup_fn is not None and args.batch_size % 2:
        raise ValueError(f"--batch_size {args.batch_size}: mixup/cutmix needs an even batch")

    resume, model, model_without_ddp = engine.init_classifier(args, device, start, head_std=2e-5, drop_path=args.drop_path)

    eff_batch = resolve_lr(args, get_world_size())
    logger.info(f"{describe(train_set, val_set, args)}; "
                f"effective batch {eff_batch}, lr {args.lr:.3e} (blr {args.blr:.3e})")
    groups = param_groups_lrd(model_without_ddp, args.weight_decay, no_weight_decay_list={"cls_token", "pos_embed"},
                              layer_decay=args.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    return engine.fit(model, build_criterion(args, mixup_fn), optimizer, grad_scaler(args), loaders, device, args,
                      resume=resume, mixup_fn=mixup_fn)


if __name__ == "__main__":
    run_script("SiamMAE fine-tuning", get_args_parser, main)
