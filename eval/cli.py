"""What the three propagation CLIs share: their common arguments, building the feature
extractor from them, and turning bad input into a one-line error."""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch

from eval.features import FeatureExtractor, load_encoder, network_size
from eval.files import InputError, image_size, read_rgb
from eval.propagation import WINDOWS, grid_to_labels, labels_to_grid, propagate
from util.args import bounded
from util.misc import default_device, make_output_dir, setup_logging


def common_args(topk, radius, queue=20, temperature=0.1, short_side=None, size=None):
    """A parent parser with the model, feature and propagation arguments; the defaults differ
    per benchmark (SiamMAE Table 4b: DAVIS and JHMDB top-k 7 radius 20, VIP top-k 10 radius 8)."""
    parser = argparse.ArgumentParser(add_help=False)
    g = parser.add_argument_group("model and features")
    g.add_argument("--checkpoint", default="",
                   help="SiamMAE, MAE (mae_pretrain_vit_*.pth) or timm/DINO ViT weights")
    g.add_argument("--model", default=None,
                   help="architecture, e.g. vit_small_patch16 (inferred from the checkpoint if omitted)")
    g.add_argument("--device", default=default_device())
    g.add_argument("--batch_size", default=8, type=bounded(1), help="frames per forward pass")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network (CUDA only)")
    g.add_argument("--short_side", default=short_side, type=bounded(1),
                   help="resize frames so that their short side is this, aspect ratio kept")
    g.add_argument("--size", default=size, type=bounded(1), nargs=2, metavar=("H", "W"), help="resize frames to H x W instead")
    g = parser.add_argument_group("propagation")
    g.add_argument("--topk", default=topk, type=bounded(1),
                   help="sources averaged per query patch, over all context frames")
    g.add_argument("--temperature", default=temperature, type=float,
                   help="softmax temperature on the top-k dot products")
    g.add_argument("--queue", default=queue, type=bounded(0), help="previous frames (with propagated labels) kept as context")
    g.add_argument("--radius", default=radius, type=bounded(0, kind=float), help="sources within this many patches of the query")
    g.add_argument("--window", default="circle", choices=WINDOWS,
                   help="neighbourhood shape: circle (distance < radius, CRW) or square (offsets <= radius, DINO)")
    g.add_argument("--restrict_first", action="store_true", help="apply --radius to the first frame too")
    g.add_argument("--norm_mask", action="store_true",
                   help="label maps (DAVIS, VIP): scale each label's upsampled scores to [0, 1] before the "
                        "argmax, as DINO's DAVIS script does")
    parser.add_argument("--output_dir", default="./output_dir", help="where predictions and scores are written")
    return parser


def prepare_output_dir(path, protected):
    """Create the results folder before any work (one line when a file is in the way or it cannot be
    written); refuse one that is, or lies inside, a protected folder: the data set's frames and
    annotations, which the result PNGs would overwrite."""
    real = os.path.realpath(path)
    for folder in protected:
        top = os.path.realpath(folder)
        if real == top or real.startswith(top + os.sep):
            raise InputError(f"--output_dir {path} lies in the data set's {folder}: results written there would "
                             "overwrite its files; choose a folder outside it")
    try:
        make_output_dir(path)
    except ValueError as e:
        raise InputError(str(e)) from None


def check_propagation_args(args):
    if args.topk < 1 or args.queue < 0 or args.radius <= 0 or args.temperature <= 0:
        raise InputError("--topk must be >= 1, --queue >= 0, --radius and --temperature > 0")


def propagation_kwargs(args):
    return dict(topk=args.topk, temperature=args.temperature, queue=args.queue, radius=args.radius,
                restrict_first=args.restrict_first, window=args.window)


def extractor_from_args(args):
    """Check the propagation arguments, then load --checkpoint (--model) onto --device."""
    check_propagation_args(args)
    if not args.checkpoint:
        raise InputError("--checkpoint is required to compute features")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return FeatureExtractor(load_encoder(args.checkpoint, args.model), args.device, args.batch_size, args.bf16)


def video_features(extractor, frame_paths, args):
    """A video's network input size (H', W'), feature grid (h, w) and per-frame features (a
    generator of (h, w, D)); every frame must have the size of the first."""
    height, width = image_size(frame_paths[0])
    size = network_size(height, width, extractor.patch, args.short_side, args.size)
    grid = (size[0] // extractor.patch, size[1] // extractor.patch)
    frames = (read_rgb(p, (height, width)) for p in frame_paths)
    return size, grid, extractor.iter_features(frames, size)


def propagate_masks(extractor, frame_paths, mask0, n_labels, args):
    """Yield the (H, W) uint8 label maps of frames 1, 2, ... propagated from the first frame's
    (H, W) label map (values >= n_labels, e.g. 255, carry no label)."""
    size, grid, features = video_features(extractor, frame_paths, args)
    labels0 = labels_to_grid(torch.from_numpy(mask0.astype(np.int64)).to(extractor.device), n_labels, grid)
    for soft in propagate(features, labels0, **propagation_kwargs(args)):
        yield grid_to_labels(soft, size, mask0.shape, args.norm_mask).to(torch.uint8).cpu().numpy()


class Progress:
    """One line per finished video: '[i/n] name: k frames in s (f frames/s), <detail>, ETA h:mm:ss', the ETA
    from the frames still to do at the mean rate so far."""

    def __init__(self, frames_per_video):
        self.frames, self.videos = sum(frames_per_video), len(frames_per_video)
        self.done, self.frames_done, self.start = 0, 0, time.time()
        self.last = self.start

    def step(self, name, frames, detail=""):
        now = time.time()
        self.done, self.frames_done = self.done + 1, self.frames_done + frames
        eta = datetime.timedelta(seconds=round((self.frames - self.frames_done) * (now - self.start) / self.frames_done))
        line = (f"[{self.done}/{self.videos}] {name}: {frames} frames in {now - self.last:.1f}s "
                f"({frames / max(now - self.last, 1e-9):.1f} frames/s){', ' + detail if detail else ''}, ETA {eta}")
        self.last = now
        print(line, flush=True)
        return line


def print_args(args):
    """The run's settings, one line (as the training scripts log them)."""
    print("args: " + json.dumps(vars(args), default=str), flush=True)


def run(main, parser):
    """Parse the command line and run main(args); an InputError ends the run with one line."""
    args = parser.parse_args()
    setup_logging()  # what the checkpoint loader reports goes to stdout
    try:
        main(args)
    except InputError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
