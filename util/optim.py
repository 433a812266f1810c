"""What every training script shares around its step: accumulation, scaled backward, unscale, clip, step; the
non-finite-loss stop; the command-line entry."""
import argparse
import contextlib
import sys

import torch

from util.checkpoint import CheckpointWriteError
from util.misc import make_output_dir


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""


# what a training script reports in one line (bad input, a diverged run, a full disk) instead of a traceback
USER_ERRORS = (ValueError, FileNotFoundError, NonFiniteLoss, CheckpointWriteError)


def one_line(error):
    """An error's message on one line; for one re-raised from a DataLoader worker (torch appends the worker's
    traceback to its text), the worker's own message."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]  # "<module>.<Error>: <message>"
    return last.split(": ", 1)[-1]


def backward(loss, scaler):
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def micro_batch(model, it, iters, accum):
    """(step_now, context) of micro-batch `it` of `iters` under accumulation over `accum`: whether the
    optimizer steps after it (the accumulation's or the epoch's last), and the context its forward and
    backward run in (DDP's no_sync on the others: gradients are all-reduced once per step)."""
    step_now = (it + 1) % accum == 0 or it + 1 == iters
    sync = step_now or not hasattr(model, "no_sync")
    return step_now, contextlib.nullcontext() if sync else model.no_sync()


def optimizer_step(model, optimizer, scaler, clip_grad, want_norm=False):
    """Unscale, clip (when asked), step, zero the gradients. Returns the gradient norm when it was
    computed (clipping, or want_norm), else None."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if clip_grad or want_norm:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad or float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def run_script(title, get_args_parser, main):
    """The command line of a training script: parse (with -h), create output_dir, run main(args);
    bad input or a non-finite loss ends the run with one line instead of a traceback."""
    args = argparse.ArgumentParser(title, parents=[get_args_parser()]).parse_args()
    try:
        make_output_dir(args.output_dir)
        main(args)
    except USER_ERRORS as e:
        sys.exit(f"error: {one_line(e)}")
