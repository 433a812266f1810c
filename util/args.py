"""Argument groups shared by every training script (pre-training, fine-tuning, linear probing)."""
import argparse
import contextlib

import torch

from util.misc import default_device


def bounded(low, high=None, kind=int):
    """An argparse type: a number of `kind` in [low, high]; outside it, argparse's one-line usage error
    naming the option ("argument --batch_size: must be at least 1, got 0")."""
    def parse(text):
        value = kind(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be at least {low}" + (f" and at most {high}" if high is not None
                                                                          else "") + f", got {text}")
        return value
    parse.__name__ = kind.__name__  # what argparse names in "invalid int value: 'x'"
    return parse


def add_optimization_args(parser, batch_size, epochs, blr, weight_decay, warmup_epochs, epochs_help=None):
    g = parser.add_argument_group("optimization")
    g.add_argument("--batch_size", default=batch_size, type=bounded(1),
                   help="batch size per GPU (effective batch = batch_size * accum_iter * world size)")
    g.add_argument("--epochs", default=epochs, type=bounded(1), help=epochs_help)
    g.add_argument("--accum_iter", default=1, type=bounded(1),
                   help="accumulate gradients over this many iterations (for a larger effective batch)")
    g.add_argument("--weight_decay", type=float, default=weight_decay)
    g.add_argument("--lr", type=float, default=None, help="absolute learning rate (default: blr * eff. batch / 256)")
    g.add_argument("--blr", type=float, default=blr, help="base learning rate: lr = blr * effective batch / 256")
    g.add_argument("--min_lr", type=float, default=0., help="lower bound of the cosine schedule")
    g.add_argument("--warmup_epochs", type=bounded(0), default=warmup_epochs)
    g.add_argument("--clip_grad", type=float, default=None, help="clip the gradient norm (default: no clipping)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                   help="autocast: bf16 on CUDA by default, none on CPU; fp16 uses a grad scaler")
    return g


def add_runtime_args(parser):
    g = parser.add_argument_group("runtime")
    g.add_argument("--output_dir", default="./output_dir", help="checkpoints and log.txt")
    g.add_argument("--log_dir", default=None, help="TensorBoard logs (default: output_dir)")
    g.add_argument("--device", default=default_device(), help="cuda (default when present) or cpu")
    g.add_argument("--seed", default=0, type=int)
    g.add_argument("--resume", default="", help="checkpoint to resume or initialise from")
    g.add_argument("--start_epoch", default=0, type=bounded(0))
    g.add_argument("--num_workers", default=8, type=bounded(0))
    g.add_argument("--pin_mem", action=argparse.BooleanOptionalAction, default=True,
                   help="pin CPU memory in the data loader")
    g.add_argument("--print_freq", default=20, type=bounded(1))
    g.add_argument("--world_size", default=1, type=int, help="number of distributed processes")
    g.add_argument("--dist_url", default="env://", help="url used to set up distributed training")
    return g


def resolve_lr(args, world_size):
    """Fill args.lr from args.blr and the effective batch size; returns the effective batch."""
    eff_batch = args.batch_size * args.accum_iter * world_size
    if args.lr is None:
        args.lr = args.blr * eff_batch / 256
    return eff_batch


def amp_dtype(args):
    """The autocast dtype the run uses (None: full precision)."""
    mode = args.amp
    if mode == "auto":
        mode = "bf16" if str(args.device).startswith("cuda") else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[mode]


def autocast(args):
    dtype = amp_dtype(args)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(args.device).type, dtype=dtype)


def grad_scaler(args):
    """A gradient scaler for fp16, None otherwise."""
    if amp_dtype(args) is torch.float16:
        return torch.amp.GradScaler(torch.device(args.device).type)
    return None


def add_classification_args(parser, global_pool):
    """Model, data and evaluation arguments of fine-tuning and linear probing."""
    g = parser.add_argument_group("model and data")
    g.add_argument("--model", default=None,
                   help="ViT architecture, e.g. vit_base_patch16 (default: that of --finetune, or of the "
                        "checkpoint resumed)")
    g.add_argument("--input_size", default=None, type=bounded(1),
                   help="image size (default: that of the checkpoint resumed, else 224)")
    g.add_argument("--finetune", default="",
                   help="pre-trained weights: a SiamMAE or MAE checkpoint or a ViT state dict (encoder used)")
    g.add_argument("--global_pool", action=argparse.BooleanOptionalAction, default=global_pool,
                   help="classify the mean patch token (--no-global_pool: the [CLS] token)")
    g.add_argument("--cls_token", action="store_false", dest="global_pool", help="same as --no-global_pool")
    g.add_argument("--data_path", default="", help="ImageNet layout: train/<class>/*, val/<class>/*")
    g.add_argument("--nb_classes", default=None, type=int, help="default: the class folders in train/")
    g.add_argument("--eval", action="store_true",
                   help="only evaluate --resume (or output_dir/checkpoint-last.pth) on val/")
    return g
