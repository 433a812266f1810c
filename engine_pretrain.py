"""One pre-training epoch: the step, gradient accumulation, mixed precision, logging.

No host synchronisation per step: losses are summed on the device and read every print_freq
iterations; a non-finite loss is detected on the device and reported (epoch and iteration) at the
next read, before anything is saved.
"""
import contextlib
import math
import time

import torch

import util.lr_sched as lr_sched
from datasets import device_batches
from util.args import autocast
from util.misc import (MetricLogger, SmoothedValue, all_reduce_mean, all_reduce_min, all_reduce_sum, get_rank,
                       get_world_size, log_scalars)
from util.optim import NonFiniteLoss, backward, micro_batch, optimizer_step


def _check_finite(bad_iter, epoch):
    """Raise NonFiniteLoss in every process when any has seen a non-finite loss (bad_iter: the first
    such iteration, or -1). Collective: every process calls it at the same iteration, so none is left
    waiting for the ones that stopped."""
    bad = int(bad_iter.item())
    first = all_reduce_min(bad if bad >= 0 else math.inf)
    if first < math.inf:
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, iteration {int(first)}: stopping; "
                            "checkpoint-last.pth keeps the last good state")


class EpochTotals:
    """An epoch's running sums: per-iteration losses (on the device, no sync per step), lrs, iterations and
    skipped videos. state() (collective) is what a checkpoint keeps; EpochTotals(device, state) continues
    from it in a resumed epoch: every process starts from the mean loss sum, the first one from the
    skipped count (a sum over processes), so the epoch's statistics equal an uninterrupted run's."""

    def __init__(self, device, state=None):
        state = state or {"loss_sum": 0.0, "lr_sum": 0.0, "iters": 0, "skipped": 0}
        self.loss = torch.full((), state["loss_sum"], device=device)
        self.lr_sum, self.iters = state["lr_sum"], state["iters"]
        self.skipped = torch.tensor(state["skipped"] if get_rank() == 0 else 0, dtype=torch.long)

    def add(self, loss, lr, n_skipped):
        self.loss += loss.detach().float()
        self.lr_sum, self.iters = self.lr_sum + lr, self.iters + 1
        self.skipped += n_skipped.sum()

    def state(self):
        return {"loss_sum": all_reduce_mean(self.loss.item()), "lr_sum": self.lr_sum, "iters": self.iters,
                "skipped": int(all_reduce_sum(int(self.skipped)))}

    def stats(self):
        """{'loss', 'lr': means over the epoch's iterations (and processes), 'skipped_videos'}."""
        n = max(self.iters, 1)
        return {"loss": all_reduce_mean(self.loss.item() / n), "lr": self.lr_sum / n,
                "skipped_videos": int(all_reduce_sum(int(self.skipped)))}


def train_one_epoch(model, data_loader, optimizer, device, epoch, scaler, args, log_writer=None,
                    start_iter=0, iters_per_epoch=None, on_step_end=None, start_totals=None):
    """Train one epoch from iteration start_iter. Batches are (frames (B, R, 2, 3, H, W) uint8,
    n_skipped (B,)), or undecoded pairs (datasets.EncodedPairs, --gpu_decode) that
    datasets.device_batches decodes on the device (ahead, in a thread).

    on_step_end(iteration, ensure_finite, totals) is called after each optimizer step (iteration = the
    next one to run); it calls ensure_finite() before saving anything (a host sync, so only then) and
    returns True to stop the epoch early; totals() (collective) is EpochTotals.state(), what a checkpoint
    keeps, and start_totals continues it in a resumed epoch. Returns EpochTotals.stats(), or None when
    stopped early.
    """
    model.train()
    iters = iters_per_epoch or len(data_loader) + start_iter
    accum = args.accum_iter
    meters = MetricLogger()
    meters.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.2e}"))
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    totals = EpochTotals(device, start_totals)
    bad_iter = torch.full((), -1, dtype=torch.long, device=device)
    pairs_per_iter = args.batch_size * get_world_size()
    optimizer.zero_grad(set_to_none=True)
    header = f"Epoch: [{epoch}]"
    t_log, it_log = time.perf_counter(), start_iter
    with contextlib.closing(device_batches(data_loader, device)) as prepared:  # closed: its thread stops
        batches = meters.log_every(prepared, args.print_freq, header, total=iters, samples_per_iter=pairs_per_iter,
                                   start=start_iter)
        for it, (frames, n_skipped) in enumerate(batches, start=start_iter):  # frames (B*R, 2, 3, H, W) normalised
            if it % accum == 0:
                lr = lr_sched.adjust_learning_rate(optimizer, it / iters + epoch, args)
            step_now, context = micro_batch(model, it, iters, accum)
            with context:
                with autocast(args):
                    loss, _, _ = model(frames, mask_ratio=args.mask_ratio, mask_ratio_f1=args.mask_ratio_f1)
                loss_sum += loss.detach().float()
                loss_count += 1
                totals.add(loss, lr, n_skipped)
                bad_iter = torch.where((bad_iter < 0) & ~torch.isfinite(loss.detach()), it, bad_iter)
                backward(loss / accum, scaler)
            log_now = (it + 1) % args.print_freq == 0 or it + 1 == iters
            grad_norm = (optimizer_step(model, optimizer, scaler, args.clip_grad, want_norm=log_now)
                         if step_now else None)
            if log_now:
                _check_finite(bad_iter, epoch)
                mean_loss = all_reduce_mean((loss_sum / max(loss_count, 1)).item())
                loss_sum.zero_()
                loss_count = 0
                meters.update(loss=mean_loss, lr=lr)
                now = time.perf_counter()
                log_scalars(log_writer, epoch, (it + 1) / iters, loss=mean_loss, lr=lr, grad_norm=grad_norm,
                            pairs_per_s=(it + 1 - it_log) * pairs_per_iter / (now - t_log))
                t_log, it_log = now, it + 1
            if step_now and on_step_end is not None:
                if on_step_end(it + 1, lambda bad=bad_iter: _check_finite(bad, epoch), totals.state):
                    return None  # stopped inside the epoch
    _check_finite(bad_iter, epoch)
    return totals.stats()
