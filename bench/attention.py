"""Fused attention kernels on the shapes of a SiamMAE step: forward+backward time per kernel family.

One JSON line per (shape, backend): milliseconds per call (median of --reps samples, each timing --inner
calls back to back, so that the GPU's time is measured rather than the host's launch cost: timed one call
at a time on an H200, the masked f2 pass's tiny attention read 0.2-0.6 ms per call, while in the compiled
step's profile neither its forward nor its backward reached 1 ms per step of 12 calls), TFLOP/s (forward
4*B*H*Lq*Lk*d, backward counted as 2.5x forward), or the error when the backend does not take the shape. The
inputs are laid out as the model's blocks make them (views of the packed qkv / kv projections).

    python bench/attention.py --model vit_small_patch16 --batch_size 256        # on CUDA
    python bench/attention.py --device cpu --batch_size 2 --backends math       # smoke run
"""
import argparse
import json
import os
import statistics
import sys
import time

if __name__ == "__main__":  # run as a script: the repo root, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from models_vit import vit_config
from util.args import bounded
from util.misc import default_device

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def get_args_parser():
    parser = argparse.ArgumentParser("Attention kernels on SiamMAE's shapes", add_help=False)
    parser.add_argument("--model", default="vit_small_patch16", help="the encoder (a models_vit name)")
    parser.add_argument("--decoder_embed_dim", default=512, type=int)
    parser.add_argument("--decoder_num_heads", default=16, type=int)
    parser.add_argument("--decoder_depth", default=8, type=int)
    parser.add_argument("--input_size", default=224, type=int)
    parser.add_argument("--mask_ratio", default=0.95, type=float)
    parser.add_argument("--batch_size", default=256, type=int)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--reps", default=20, type=bounded(1), help="timed samples (the median is printed)")
    parser.add_argument("--inner", default=10, type=bounded(1), help="calls back to back in each sample")
    parser.add_argument("--warmup_s", default=0.5, type=float, help="seconds of warm-up calls per case")
    parser.add_argument("--device", default=default_device())
    return parser


def step_shapes(args):
    """(name, heads, query length, key length, head dim, uses per step) of one SiamMAE step."""
    cfg = vit_config(args.model)
    tokens = (args.input_size // cfg["patch_size"]) ** 2
    kept = int(tokens * (1 - args.mask_ratio))
    enc_d, dec_d = cfg["embed_dim"] // cfg["num_heads"], args.decoder_embed_dim // args.decoder_num_heads
    return [("encoder_f1", cfg["num_heads"], 1 + tokens, 1 + tokens, enc_d, cfg["depth"]),
            ("encoder_f2", cfg["num_heads"], 1 + kept, 1 + kept, enc_d, cfg["depth"]),
            ("decoder_self", args.decoder_num_heads, 1 + tokens, 1 + tokens, dec_d, args.decoder_depth),
            ("decoder_cross", args.decoder_num_heads, 1 + tokens, 1 + tokens, dec_d, args.decoder_depth)]


def make_leaves(name, b, h, lq, lk, d, device, dtype):
    """The projections' outputs: self-attention's packed (B, L, 3, H, d); cross-attention's
    q (B, Lq, H, d) and packed kv (B, Lk, 2, H, d)."""
    def leaf(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
    return [leaf(b, lq, 3, h, d)] if "cross" not in name else [leaf(b, lq, h, d), leaf(b, lk, 2, h, d)]


def qkv_views(leaves):
    """q, k, v (B, H, L, d) as the blocks make them: views of the projections, no copies."""
    if len(leaves) == 1:
        return leaves[0].permute(2, 0, 3, 1, 4).unbind(0)
    q, kv = leaves
    return (q.transpose(1, 2), *kv.permute(2, 0, 3, 1, 4).unbind(0))


def time_ms(fn, device, reps, warmup_s, inner=1):
    """Median milliseconds per call of fn() over reps samples of `inner` calls each (see samples_ms)."""
    return statistics.median(samples_ms(fn, device, reps, warmup_s, inner))


def samples_ms(fn, device, reps, warmup_s, inner=1):
    """Milliseconds per call of fn() in each of reps samples of `inner` calls back to back, after calling it
    for warmup_s seconds (at least 3 times): an idle GPU's clock takes a while to rise, and the first calls
    would be timed slow."""
    t0, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - t0 < warmup_s:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        calls += 1
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) * 1e3 / inner)
    return times


def measure(args, shape, backend, device, dtype):
    name, h, lq, lk, d, uses = shape
    leaves = make_leaves(name, args.batch_size, h, lq, lk, d, device, dtype)
    grad = torch.randn(args.batch_size, h, lq, d, device=device, dtype=dtype)

    def fwd_bwd():
        q, k, v = qkv_views(leaves)
        with sdpa_kernel(BACKENDS[backend]):
            out = F.scaled_dot_product_attention(q, k, v)
        out.backward(grad)

    row = {"bench": "attention", "device": str(device), "shape": name, "batch": args.batch_size, "heads": h,
           "lq": lq, "lk": lk, "head_dim": d, "uses_per_step": uses, "backend": backend}
    try:
        ms = time_ms(fwd_bwd, device, args.reps, args.warmup_s, args.inner)
    except RuntimeError as e:
        return {**row, "error": str(e).splitlines()[0][:200]}
    flop = 4 * args.batch_size * h * lq * lk * d * 3.5
    return {**row, "ms": round(ms, 4), "tflops": round(flop / ms / 1e9, 2), "ms_per_step": round(ms * uses, 3)}


def main(args):
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for shape in step_shapes(args):
        for backend in args.backends:
            rows.append(measure(args, shape, backend, device, dtype))
            print(json.dumps(rows[-1]), flush=True)
    totals = {}
    for r in rows:
        if "ms" in r:
            totals.setdefault(r["backend"], {})[r["shape"]] = r["ms_per_step"]
    summary = {b: round(sum(v.values()), 3) for b, v in totals.items() if len(v) == len(step_shapes(args))}
    print(json.dumps({"bench": "attention_per_step_ms", "device": str(device), "by_backend": summary,
                      "fastest": min(summary, key=summary.get) if summary else None}), flush=True)
    return rows, summary


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()]).parse_args())
