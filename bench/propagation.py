"""Speed of label propagation: frames/s with features cached and end to end, peak memory.

Random-initialised ViT (speed does not depend on the weights) on a synthetic sequence; one JSON
line per device and mode. Defaults are the DAVIS setting (ViT-S/16, 480p, Table 4b); shrink them
for a CPU run:

    python bench/propagation.py                                   # cuda (if present) and cpu
    python bench/propagation.py --devices cpu --model vit_tiny_patch16 --height 240 --width 427 \
        --short_side 240 --frames 12
"""
import argparse
import json
import os
import resource
import sys
import time

if __name__ == "__main__":  # run as a script: the repo root, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

import models_vit
from eval.features import FeatureExtractor, network_size
from eval.propagation import MAX_ELEMS, grid_to_labels, labels_to_grid, propagate
from eval.synthetic import make_sequence

DAVIS_VAL_FRAMES = 1999  # 30 sequences


def get_args_parser():
    parser = argparse.ArgumentParser("Label propagation benchmark", add_help=False)
    parser.add_argument("--model", default="vit_small_patch16")
    parser.add_argument("--devices", nargs="+", default=(["cuda"] if torch.cuda.is_available() else []) + ["cpu"])
    parser.add_argument("--height", default=480, type=int, help="frame height (DAVIS 480p: 480 x 854)")
    parser.add_argument("--width", default=854, type=int)
    parser.add_argument("--short_side", default=480, type=int, help="network input short side")
    parser.add_argument("--frames", default=40, type=int)
    parser.add_argument("--objects", default=3, type=int)
    parser.add_argument("--batch_size", default=8, type=int)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network (CUDA)")
    parser.add_argument("--topk", default=7, type=int)
    parser.add_argument("--queue", default=20, type=int)
    parser.add_argument("--radius", default=20, type=float)
    parser.add_argument("--temperature", default=0.1, type=float)
    parser.add_argument("--max_elems", default=MAX_ELEMS, type=int, help="affinity entries per chunk")
    return parser


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    """Peak CUDA memory allocated since the last reset, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_propagation(features, labels0, size, out_size, args):
    """Propagate and turn every frame into a label map on the host; returns the number of frames."""
    n = 0
    for soft in propagate(features, labels0, topk=args.topk, temperature=args.temperature, queue=args.queue,
                          radius=args.radius, max_elems=args.max_elems):
        grid_to_labels(soft, size, out_size).to(torch.uint8).cpu()
        n += 1
    return n


def timed(device, fn):
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    n = fn()
    synchronize(device)
    return n, time.perf_counter() - start, peak_mb(device)


def bench_device(device, frames, mask0, n_labels, args):
    device = torch.device(device)
    extractor = FeatureExtractor(getattr(models_vit, args.model)(), device, args.batch_size, args.bf16)
    size = network_size(args.height, args.width, extractor.patch, args.short_side)
    grid = (size[0] // extractor.patch, size[1] // extractor.patch)
    labels0 = labels_to_grid(torch.from_numpy(mask0.astype(np.int64)).to(device), n_labels, grid)
    out_size = mask0.shape
    run_propagation(extractor(frames[:3], size), labels0, size, out_size, args)  # warm-up
    base = dict(bench="propagation", device=str(device), model=args.model, frame=[args.height, args.width],
                input=list(size), grid=list(grid), topk=args.topk, queue=args.queue, radius=args.radius,
                bf16=extractor.bf16, threads=torch.get_num_threads())
    cache = {}

    def extract():
        cache["feats"] = extractor(frames, size)
        return len(frames)

    modes = [("features", extract),
             ("cached", lambda: run_propagation(cache["feats"], labels0, size, out_size, args)),
             ("end_to_end", lambda: run_propagation(extractor.iter_features(iter(frames), size), labels0, size,
                                                    out_size, args))]
    for mode, fn in modes:
        n, seconds, mem = timed(device, fn)
        line = dict(base, mode=mode, frames=n, seconds=round(seconds, 3), fps=round(n / seconds, 2),
                    peak_mem_mb=round(mem, 1))
        if mode == "end_to_end":
            line["davis_val_minutes_est"] = round(DAVIS_VAL_FRAMES / (n / seconds) / 60, 1)
        print(json.dumps(line), flush=True)


def main(args):
    frames, masks = make_sequence(np.random.default_rng(0), args.frames, args.height, args.width, args.objects)
    for device in args.devices:
        bench_device(device, frames, masks[0], args.objects + 1, args)


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()]).parse_args())
