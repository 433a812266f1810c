"""Does a speed lever keep the loss curve? Trains the same model from the same initialisation on the
same learnable pairs with the same masks, once per variant: the baseline, the baseline again (the
run-to-run noise floor: GPU kernels are not bit-deterministic), the baseline from another seed (another
initialisation, other pairs and masks: the seed-to-seed spread a lever's drift should stay well inside)
and the baseline plus the lever's options. Prints one JSON line per chunk of steps (mean loss of each
run) and a summary (the largest relative gap to the baseline, of the repeat, the other seed and the
lever).

    python bench/loss_curve.py --lever="--amp_residual" --steps 300 --every 25 [--compile]
    python bench/loss_curve.py --lever="--amp_residual" --model siammae_vit_tiny_patch16 --input_size 64 \\
        --batch_size 16 --steps 40 --every 10 --amp bf16 --device cpu

Pairs: random crops of two frames 2-8 apart from a bank of generated clips (a panning texture and
moving boxes, datasets.synthetic.textured_frames), drawn on the device from a fixed seed.
"""
import argparse
import itertools
import json
import os
import shlex
import sys

if __name__ == "__main__":  # run as a script: the repo root, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

import main_pretrain_siam
from datasets.synthetic import textured_frames
from engine_pretrain import train_one_epoch
from util.misc import compile_model


def get_args_parser():
    parser = argparse.ArgumentParser("Loss curve of a speed lever against the baseline",
                                     parents=[main_pretrain_siam.get_args_parser()])
    parser.add_argument("--lever", default="--amp_residual", help="options added to the baseline's (one string)")
    parser.add_argument("--steps", default=300, type=int)
    parser.add_argument("--every", default=25, type=int, help="steps per reported mean loss")
    parser.add_argument("--clips", default=8, type=int, help="generated clips in the bank")
    parser.add_argument("--clip_frames", default=32, type=int)
    parser.set_defaults(batch_size=256, repeated_sampling=1, print_freq=10 ** 9, warmup_epochs=1)
    return parser


def clip_bank(args, device):
    """(clips, frames, 3, S + 32, S + 32) uint8 RGB on the device."""
    size = (args.input_size + 32,) * 2
    clips = [np.stack(list(textured_frames(args.clip_frames, size, seed=c)))[..., ::-1] for c in range(args.clips)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(clips))).permute(0, 1, 4, 2, 3).contiguous().to(device)


def pair_batches(bank, args, device):
    """Endless batches (B, 1, 2, 3, S, S) uint8 of f1, f2 2..8 frames apart, one random crop per pair."""
    g = torch.Generator(device=device).manual_seed(args.seed)
    n, t, _, full, _ = bank.shape
    s, b = args.input_size, args.batch_size
    skipped = torch.zeros(b, dtype=torch.long)
    batch = torch.arange(b, device=device)[:, None, None, None]
    channel = torch.arange(3, device=device)[None, :, None, None]
    while True:
        clip = torch.randint(0, n, (b,), generator=g, device=device)
        gap = torch.randint(2, 9, (b,), generator=g, device=device)
        f1 = (torch.rand(b, generator=g, device=device) * (t - gap)).long()
        y, x = (torch.randint(0, full - s + 1, (b,), generator=g, device=device) for _ in range(2))
        rows = (y[:, None] + torch.arange(s, device=device))[:, None, :, None]  # (B, 1, S, 1)
        cols = (x[:, None] + torch.arange(s, device=device))[:, None, None, :]  # (B, 1, 1, S)
        frames = torch.stack([bank[clip, f][batch, channel, rows, cols] for f in (f1, f1 + gap)], dim=1)
        yield frames[:, None], skipped


def loss_curve(args, bank, device):
    """Mean loss per chunk of args.every steps: each chunk is one 'epoch' of the schedule (warm-up
    over the first)."""
    main_pretrain_siam.check_args(args)
    torch.manual_seed(args.seed)
    model, optimizer, scaler, _ = main_pretrain_siam.build_training(args, device)
    step_model = compile_model(model, args.compile_mode) if args.compile else model
    batches = pair_batches(bank, args, device)
    losses = []
    for chunk in range(args.epochs):
        stats = train_one_epoch(step_model, itertools.islice(batches, args.every), optimizer, device, chunk,
                                scaler, args, iters_per_epoch=args.every)
        losses.append(stats["loss"])
    return losses


def main(args, argv):
    device = torch.device(args.device)
    args.epochs, args.print_freq = args.steps // args.every, args.every
    bank = clip_bank(args, device)
    parser = get_args_parser()
    runs = {}
    variants = (("baseline", []), ("baseline_repeat", []), ("baseline_seed", ["--seed", str(args.seed + 1)]),
                ("lever", shlex.split(args.lever)))
    for name, extra in variants:
        run_args = parser.parse_args(argv + extra)
        run_args.epochs, run_args.print_freq = args.epochs, args.every
        runs[name] = loss_curve(run_args, bank, device)
    for k in range(args.epochs):
        print(json.dumps({"bench": "loss_curve", "step": (k + 1) * args.every,
                          **{name: round(losses[k], 5) for name, losses in runs.items()}}), flush=True)
    base = np.array(runs["baseline"])
    gap = {name: float(np.max(np.abs(np.array(runs[name]) - base) / base)) for name in list(runs)[1:]}
    summary = {"bench": "loss_curve_summary", "device": str(device), "model": args.model, "lever": args.lever,
               "steps": args.steps, "batch_size": args.batch_size, "compile": args.compile,
               "first_loss": round(float(base[0]), 5), "last_loss": round(float(base[-1]), 5),
               "max_rel_gap_repeat": round(gap["baseline_repeat"], 5), "max_rel_gap_seed": round(gap["baseline_seed"], 5),
               "max_rel_gap_lever": round(gap["lever"], 5)}
    print(json.dumps(summary), flush=True)
    return runs, summary


if __name__ == "__main__":
    main(get_args_parser().parse_args(), sys.argv[1:])
