# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Classification (fine-tuning and linear probing): the training epoch, evaluation with top-1/top-5,
and the run around them that main_finetune and main_linprobe share: building the ViT, initialising
its encoder from a pre-trained checkpoint, resuming, the epoch loop with checkpoint-last.pth and
log.txt."""
import datetime
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

import models_vit
import util.lr_sched as lr_sched
from util.args import autocast
from util.checkpoint import (LAST, compact_keys, encoder_state_dict, find_resume, is_mae_training_checkpoint,
                             is_training_checkpoint, load_checkpoint, load_exact, load_matching, model_state_dict,
                             restore_training_state, save_atomic, training_state)
from util.misc import (MetricLogger, SmoothedValue, all_reduce_mean, all_reduce_sum, broadcast_buffers, distribute,
                        get_world_size, is_main_process, log_scalars, logger)
from util.optim import NonFiniteLoss, backward, micro_batch, optimizer_step

HEAD_KEYS = ("head.", "fc_norm.")


# ---------------------------------------------------------------- metrics, epoch, evaluation
def accuracy(output, target, topk=(1,)):
    """output (N, C) scores, target (N,) class indices -> [percentage of samples whose target is
    among the k highest scores, for each k in topk]; k larger than C counts as C."""
    maxk = min(max(topk), output.shape[1])
    hits = output.topk(maxk, dim=1).indices.eq(target[:, None])  # (N, maxk)
    return [hits[:, :min(k, maxk)].any(dim=1).float().mean().item() * 100. for k in topk]


def train_one_epoch(model, criterion, data_loader, optimizer, device, epoch, scaler, args,
                    mixup_fn=None, log_writer=None, trainable=None):
    """One epoch over batches (images (N, 3, H, W), labels (N,)). trainable: the module put in
    training mode (default the whole model); the rest stays in eval mode, as the frozen encoder
    of linear probing. Returns {'loss': epoch mean over all processes, 'lr': last lr}."""
    model.eval()
    (trainable or model).train()
    iters, accum = len(data_loader), args.accum_iter
    meters = MetricLogger()
    meters.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.2e}"))
    loss_sum, loss_count = torch.zeros((), device=device), 0
    epoch_loss = torch.zeros((), device=device)
    optimizer.zero_grad(set_to_none=True)
    batches = meters.log_every(data_loader, args.print_freq, f"Epoch: [{epoch}]",
                               samples_per_iter=args.batch_size * get_world_size(), samples="images")
    for it, (images, labels) in enumerate(batches):
        if it % accum == 0:
            lr = lr_sched.adjust_learning_rate(optimizer, epoch + it / iters, args)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, labels = mixup_fn(images, labels)
        step_now, context = micro_batch(model, it, iters, accum)
        with context:
            with autocast(args):
                loss = criterion(model(images), labels)
            backward(loss / accum, scaler)
        loss_sum += loss.detach().float()
        epoch_loss += loss.detach().float()
        loss_count += 1
        if step_now:
            optimizer_step(model, optimizer, scaler, args.clip_grad)
        if (it + 1) % args.print_freq == 0 or it + 1 == iters:
            mean_loss = _finite_mean(loss_sum, loss_count, epoch, it)
            loss_sum.zero_()
            loss_count = 0
            meters.update(loss=mean_loss, lr=lr)
            log_scalars(log_writer, epoch, (it + 1) / iters, loss=mean_loss, lr=lr)
    return {"loss": all_reduce_mean(epoch_loss.item() / max(iters, 1)), "lr": lr}


def _finite_mean(loss_sum, count, epoch, it):
    """The mean loss since the last read, averaged over processes; raises NonFiniteLoss."""
    mean = all_reduce_mean(loss_sum.item() / max(count, 1))
    if not np.isfinite(mean):
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch} by iteration {it}: stopping; "
                            "checkpoint-last.pth keeps the last good state")
    return mean


@torch.no_grad()
def evaluate(model, data_loader, device, args):
    """Cross-entropy, top-1 and top-5 accuracy (%) over every sample of every process's share.
    model: not DDP-wrapped (the shares may differ by a batch; DDP's forward would wait for the others)."""
    model.eval()
    totals = np.zeros(4)  # loss sum, top-1 hits, top-5 hits, samples
    for images, labels in MetricLogger().log_every(data_loader, args.print_freq, "Test:"):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(args):
            output = model(images)
        output = output.float()
        acc1, acc5 = accuracy(output, labels, topk=(1, 5))
        n = len(labels)
        totals += [F.cross_entropy(output, labels, reduction="sum").item(), acc1 * n / 100, acc5 * n / 100, n]
    loss, hits1, hits5, n = (all_reduce_sum(float(t)) for t in totals)
    stats = {"loss": loss / n, "acc1": 100. * hits1 / n, "acc5": 100. * hits5 / n}
    logger.info(f"* {int(n)} images: top-1 {stats['acc1']:.3f}%  top-5 {stats['acc5']:.3f}%  loss {stats['loss']:.4f}")
    return stats


# ---------------------------------------------------------------- setting up a run
def resume_path(args):
    """The checkpoint to continue from. Training: output_dir/checkpoint-last.pth, else --resume.
    --eval: --resume, else output_dir/checkpoint-last.pth ('' for none)."""
    if args.eval:
        path = args.resume or find_resume(args.output_dir)
        if not path:
            raise ValueError("--eval needs --resume CKPT (or an output_dir holding checkpoint-last.pth)")
        return path
    return find_resume(args.output_dir, args.resume)


def check_same_run(path, ckpt, args):
    """A one-line error when the checkpoint to continue is a pre-training one (a shared --output_dir); a
    warning when it continues a run started from other --finetune weights (not read when continuing)."""
    saved = ckpt.get("args") if is_training_checkpoint(ckpt) or is_mae_training_checkpoint(ckpt) else None
    if saved is None:
        return
    if not hasattr(saved, "nb_classes"):
        raise ValueError(f"{path}: a pre-training checkpoint, not a classifier's: give this run its own "
                         "--output_dir (and the pre-trained weights as --finetune)")
    before = getattr(saved, "finetune", "")
    if not args.eval and args.finetune and before and os.path.abspath(before) != os.path.abspath(args.finetune):
        logger.warning(f"{path}: continuing a run started from {before}; --finetune {args.finetune} is not "
                       "read (another --output_dir starts a new run)")


def start_point(args):
    """What the run starts from: (resume, pretrained). resume: (path, checkpoint) to continue from,
    or None; pretrained: the encoder weights of --finetune when not resuming, or None."""
    path = resume_path(args)
    if path:
        ckpt = load_checkpoint(path)
        check_same_run(path, ckpt, args)
        if args.input_size is None:  # the size the weights were trained at (their position embeddings')
            args.input_size = models_vit.infer_vit_config(model_state_dict(ckpt, path), path)["img_size"]
        return (path, ckpt), None
    if args.input_size is None:
        args.input_size = 224
    return None, pretrained_encoder(args.finetune) if args.finetune else None


def build_vit(args, resume, pretrained, drop_path=0.):
    """A models_vit.VisionTransformer with args.nb_classes outputs and args.global_pool at
    args.input_size: the architecture of --model, else the one of the weights to resume or of
    the pretrained encoder."""
    if args.model:
        arch = models_vit.vit_config(models_vit.to_vit_name(args.model))
    elif resume or pretrained is not None:
        source = resume[0] if resume else args.finetune
        arch = models_vit.infer_vit_config(model_state_dict(resume[1], source) if resume else pretrained, source)
        arch.pop("img_size")
    else:
        raise ValueError("give --model (e.g. vit_base_patch16), --finetune CKPT or --resume CKPT: "
                         "there is nothing to take the architecture from")
    model = models_vit.VisionTransformer(img_size=args.input_size, num_classes=args.nb_classes,
                                         global_pool=args.global_pool, drop_path_rate=drop_path, **arch)
    logger.info(f"model: ViT {arch}, input {args.input_size}, {args.nb_classes} classes, "
                f"{'global pool' if args.global_pool else '[CLS] token'}, drop path {drop_path}")
    return model


def init_classifier(args, device, start, head_std, drop_path=0., wrap=None):
    """The run's classifier: built (build_vit), wrapped (wrap(model), e.g. a probe head), initialised
    from --finetune unless resuming, moved to device and distributed. start: start_point(args).
    Returns (resume, model, model_without_ddp); resume as in start_point."""
    resume, pretrained = start
    model = build_vit(args, resume, pretrained, drop_path)
    if wrap is not None:
        model = wrap(model)
    if pretrained is not None:
        load_pretrained(model, pretrained, args.finetune, head_std)
    elif resume is None:
        logger.warning("no --finetune: starting from a randomly initialised encoder")
    return (resume, *distribute(model.to(device), args))


def pretrained_encoder(path):
    """The encoder weights of a SiamMAE or MAE checkpoint or of a plain ViT state dict."""
    return encoder_state_dict(model_state_dict(load_checkpoint(path), path))


def load_pretrained(model, state_dict, source, head_std):
    """Initialise model from encoder weights (position embeddings resized to the model's grid)
    and re-initialise the last linear layer of the head (trunc normal, head_std, bias 0).
    Raises ValueError unless only head and fc_norm keys were left out."""
    report = load_matching(model, state_dict, source)
    missing = [k for k in report.new if not k.startswith(HEAD_KEYS)]
    if missing:
        raise ValueError(f"{source}: the checkpoint lacks encoder weights {compact_keys(missing)} "
                         "(a different architecture? check --model)")
    linear = model.head[-1] if isinstance(model.head, torch.nn.Sequential) else model.head
    torch.nn.init.trunc_normal_(linear.weight, std=head_std)
    torch.nn.init.zeros_(linear.bias)
    logger.info(report.summary())


def restore(path, ckpt, model, optimizer, scaler, args):
    """Continue from one of our training checkpoints (or one of MAE's, at the epoch after its own), or
    (--eval, or a weights-only file) load weights that must fit the model exactly. Returns the first
    epoch to run."""
    if (is_training_checkpoint(ckpt) or is_mae_training_checkpoint(ckpt)) and not args.eval:
        epoch, _ = restore_training_state(ckpt, model, optimizer, scaler, path)
        logger.info(f"resumed from {path} at epoch {epoch}")
        return epoch
    load_exact(model, model_state_dict(ckpt, path), path)
    logger.info(f"loaded the weights of {path}")
    return args.start_epoch


# ---------------------------------------------------------------- the run
def fit(model, criterion, optimizer, scaler, loaders, device, args, resume=None,
        mixup_fn=None, trainable=None):
    """Train from the resumed epoch to args.epochs, evaluating after each epoch and saving
    output_dir/checkpoint-last.pth (atomically) and a JSON line in output_dir/log.txt; with
    --eval only evaluate. resume: (path, checkpoint) or None. Returns the last evaluation."""
    train_loader, val_loader = loaders
    model_without_ddp = model.module if hasattr(model, "module") else model
    start_epoch = restore(*resume, model_without_ddp, optimizer, scaler, args) if resume else args.start_epoch
    if args.eval:
        return evaluate(model_without_ddp, val_loader, device, args)
    log_writer = SummaryWriter(args.log_dir or args.output_dir) if is_main_process() else None
    n_params = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    logger.info(f"{n_params:,} trainable parameters; lr {args.lr:.3e}; "
                f"training epochs {start_epoch} to {args.epochs - 1}")
    stats, best, t0 = None, 0., time.time()
    for epoch in range(start_epoch, args.epochs):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        train_stats = train_one_epoch(model, criterion, train_loader, optimizer, device, epoch, scaler, args,
                                      mixup_fn, log_writer, trainable)
        broadcast_buffers(model_without_ddp)  # the probe's BatchNorm: what is saved is what every process scores
        state = training_state(model_without_ddp, optimizer, scaler, epoch + 1, 0, args)  # collective
        if is_main_process():
            save_atomic(state, os.path.join(args.output_dir, LAST))
        stats = evaluate(model_without_ddp, val_loader, device, args)
        best = max(best, stats["acc1"])
        logger.info(f"epoch {epoch}: top-1 {stats['acc1']:.2f}% (best {best:.2f}%)")
        if is_main_process():
            write_epoch_log(args, epoch, train_stats, stats, n_params, log_writer)
    logger.info(f"training time {datetime.timedelta(seconds=int(time.time() - t0))}")
    if log_writer is not None:
        log_writer.close()
    return stats if stats is not None else evaluate(model_without_ddp, val_loader, device, args)


def write_epoch_log(args, epoch, train_stats, test_stats, n_params, log_writer):
    log = {**{f"train_{k}": v for k, v in train_stats.items()}, **{f"test_{k}": v for k, v in test_stats.items()},
           "epoch": epoch, "n_parameters": n_params}
    with open(os.path.join(args.output_dir, "log.txt"), "a") as f:
        f.write(json.dumps(log) + "\n")
    for k in ("acc1", "acc5", "loss"):
        log_writer.add_scalar(f"test/{k}", test_stats[k], epoch)
    log_writer.flush()
