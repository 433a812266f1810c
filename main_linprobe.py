# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Linear probing: a linear classifier on the frozen features of a pre-trained ViT encoder
(MAE's protocol).

    torchrun --nproc_per_node=8 main_linprobe.py --finetune siammae.pth --data_path IMAGENET \\
        --model vit_small_patch16 --batch_size 512 --epochs 90 --blr 0.1
    python main_linprobe.py --eval --resume output_dir/checkpoint-last.pth --data_path IMAGENET

The encoder is frozen and kept in eval mode; the head is BatchNorm (no affine parameters) followed
by a linear layer (trunc_normal(std=0.01) init), trained with LARS (or SGD) with momentum 0.9 on
weakly augmented images (random-resized crop, flip). Features: the [CLS] token by default
(--global_pool: the mean patch token). Same engine, resuming and checkpoints as main_finetune.
"""
import argparse

import torch

import engine_finetune as engine
from util.args import add_classification_args, add_optimization_args, add_runtime_args, grad_scaler, resolve_lr
from util.datasets_cls import build_datasets, build_loaders, describe, linprobe_transform
from util.lars import LARS
from util.misc import get_world_size, init_run, logger
from util.optim import run_script


def get_args_parser():
    parser = argparse.ArgumentParser("SiamMAE linear probing", add_help=False)
    add_optimization_args(parser, batch_size=512, epochs=90, blr=0.1, weight_decay=0., warmup_epochs=10)
    g = parser.add_argument_group("linear probing")
    g.add_argument("--optimizer", default="lars", choices=["lars", "sgd"], help="both with momentum 0.9")
    add_classification_args(parser, global_pool=False)
    add_runtime_args(parser)
    return parser


def add_probe_head(model):
    """Replace the head by BatchNorm1d (no affine) + the linear layer and freeze everything else."""
    model.head = torch.nn.Sequential(torch.nn.BatchNorm1d(model.head.in_features, affine=False, eps=1e-6),
                                     model.head)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    return model


def build_optimizer(params, args):
    if args.optimizer == "lars":
        return LARS(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)


def main(args):
    device = init_run(args)
    start = engine.start_point(args)  # before the transforms: it may set --input_size
    train_set, val_set = build_datasets(args, linprobe_transform(args))
    loaders = build_loaders(train_set, val_set, args)

    resume, model, model_without_ddp = engine.init_classifier(args, device, start, head_std=0.01, wrap=add_probe_head)

    eff_batch = resolve_lr(args, get_world_size())
    logger.info(f"{describe(train_set, val_set, args)}; "
                f"effective batch {eff_batch}, lr {args.lr:.3e} (blr {args.blr:.3e}), {args.optimizer}")
    optimizer = build_optimizer(model_without_ddp.head.parameters(), args)
    return engine.fit(model, torch.nn.CrossEntropyLoss(), optimizer, grad_scaler(args), loaders, device, args,
                      resume=resume, trainable=model_without_ddp.head)


if __name__ == "__main__":
    run_script("SiamMAE linear probing", get_args_parser, main)
