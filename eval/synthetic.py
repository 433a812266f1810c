"""A small DAVIS-2017-format set of textured objects moving over a textured background.

Writes ``JPEGImages/480p/<seq>/00000.jpg ...``, ``Annotations/480p/<seq>/00000.png ...`` (indexed
palette PNGs, object k = index k) and ``ImageSets/2017/val.txt``, so every DAVIS tool here (and the
official scorer) runs on it. Used by the quick start and the tests:

    python eval/synthetic.py --out demo_davis --sequences 2 --frames 12 --height 120 --width 160
"""
import argparse
import os
import shutil
import sys

if __name__ == "__main__":  # run as a script: the repo root, not eval/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cv2
import numpy as np
from PIL import Image

from eval.files import atomic_path, default_palette, write_indexed_png, write_text
from util.args import bounded
from util.misc import make_output_dir


def texture(rng, height, width, colour):
    """(height, width, 3) float32 in [0, 255]: a base colour with random stripes and smooth noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    coarse = cv2.resize(rng.normal(0, 1, (max(2, height // 8), max(2, width // 8))).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    shade = 40 * stripes + 25 * coarse
    return np.clip(np.asarray(colour, np.float32) + shade[..., None], 0, 255)


def bounce(start, velocity, t, low, high):
    """Position at time t of a point moving at `velocity` and reflecting off [low, high]."""
    span = high - low
    if span <= 0:
        return low
    p = (start - low + velocity * t) % (2 * span)
    return low + (p if p <= span else 2 * span - p)


def make_sequence(rng, n_frames=12, height=120, width=160, n_objects=2):
    """frames (T, H, W, 3) uint8 and masks (T, H, W) uint8 (0 background, k for object k; a later
    object hides an earlier one where they overlap)."""
    background = texture(rng, height, width, rng.uniform(60, 200, 3))
    objects = []
    for _ in range(n_objects):
        ry, rx = (int(rng.uniform(0.12, 0.22) * s) for s in (height, width))
        yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
        shape = (yy / max(ry, 1)) ** 2 + (xx / max(rx, 1)) ** 2 <= 1
        objects.append(dict(shape=shape, tex=texture(rng, 2 * ry + 1, 2 * rx + 1, rng.uniform(0, 255, 3)),
                            r=(ry, rx), start=(rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)),
                            vel=rng.uniform(-0.05, 0.05, 2) * (height, width)))
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    masks = np.zeros((n_frames, height, width), np.uint8)
    for t in range(n_frames):
        frame, mask = background.copy(), np.zeros((height, width), np.uint8)
        for k, ob in enumerate(objects, start=1):
            (ry, rx), (y0, x0), (vy, vx) = ob["r"], ob["start"], ob["vel"]
            cy = int(round(bounce(y0, vy, t, ry, height - 1 - ry)))
            cx = int(round(bounce(x0, vx, t, rx, width - 1 - rx)))
            window = (slice(cy - ry, cy + ry + 1), slice(cx - rx, cx + rx + 1))
            frame[window][ob["shape"]] = ob["tex"][ob["shape"]]
            mask[window][ob["shape"]] = k
        frames[t], masks[t] = frame.astype(np.uint8), mask
    return frames, masks


def write_davis_set(out, n_sequences=2, n_frames=12, height=120, width=160, n_objects=2, seed=0):
    """Write the set under `out`, replacing sequences of the same names an earlier call wrote (their frames
    would otherwise mix two sizes or lengths); returns the sequence names."""
    rng = np.random.default_rng(seed)
    palette = default_palette()
    names = [f"synthetic-{i:02d}" for i in range(n_sequences)]
    for name in names:
        for kind in ("JPEGImages", "Annotations"):
            shutil.rmtree(os.path.join(out, kind, "480p", name), ignore_errors=True)
        frames, masks = make_sequence(rng, n_frames, height, width, n_objects)
        for t, (frame, mask) in enumerate(zip(frames, masks)):
            with atomic_path(os.path.join(out, "JPEGImages", "480p", name, f"{t:05d}.jpg")) as tmp:
                Image.fromarray(frame).save(tmp, format="JPEG", quality=95)
            write_indexed_png(os.path.join(out, "Annotations", "480p", name, f"{t:05d}.png"), mask, palette)
    write_text(os.path.join(out, "ImageSets", "2017", "val.txt"), "\n".join(names) + "\n")
    return names


def get_args_parser():
    parser = argparse.ArgumentParser("Synthetic DAVIS-format sequences", add_help=False)
    parser.add_argument("--out", required=True, help="folder to write the set into")
    parser.add_argument("--sequences", default=2, type=bounded(1))
    parser.add_argument("--frames", default=12, type=bounded(1))
    parser.add_argument("--height", default=120, type=bounded(16))
    parser.add_argument("--width", default=160, type=bounded(16))
    parser.add_argument("--objects", default=2, type=bounded(1))
    parser.add_argument("--seed", default=0, type=int)
    return parser


def main(args):
    try:
        make_output_dir(args.out, "--out")
    except ValueError as e:
        sys.exit(f"synthetic.py: error: {e}")
    names = write_davis_set(args.out, args.sequences, args.frames, args.height, args.width, args.objects, args.seed)
    print(f"wrote {len(names)} sequences x {args.frames} frames ({args.height}x{args.width}) to {args.out}")


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()]).parse_args())
