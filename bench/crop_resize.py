# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""What the loader workers' crop-and-resize costs, per interpolation, on the crops pre-training draws.

Draws random-resized-crop boxes (scale 0.5-1, as datasets.transforms.draw_pair_crop) on a frame of
--frame_size, resizes each to --input_size with bilinear and with area averaging, and prints one JSON
line: the share of boxes that shrink (both sides >= input_size), ms per frame for each filter, what
datasets.transforms.crop_resize costs (it picks area averaging only for 2x or more), its ratio to the
all-area rule (area wherever both sides shrink: the rule before), and the mean absolute difference of
bilinear to area outputs on the shrinking boxes (0..255 scale).

    python bench/crop_resize.py [--frame_size 256x340] [--input_size 224] [--boxes 400] [--rounds 5]
"""
import argparse
import json
import os
import sys
import time

if __name__ == "__main__":  # run as a script: the repo root, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cv2
import numpy as np

from datasets.synthetic import textured_frames
from datasets.transforms import crop_resize, draw_pair_crop


def get_args_parser():
    parser = argparse.ArgumentParser("Crop-and-resize cost per interpolation", add_help=False)
    parser.add_argument("--frame_size", default="256x340", help="H x W")
    parser.add_argument("--input_size", default=224, type=int)
    parser.add_argument("--boxes", default=400, type=int)
    parser.add_argument("--rounds", default=5, type=int, help="timing rounds; the best is kept")
    parser.add_argument("--seed", default=0, type=int)
    return parser


def area_rule(img, box, size):
    """The rule before: area averaging wherever both sides shrink."""
    y, x, h, w = box
    shrink = h >= size and w >= size
    return cv2.resize(img[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fixed(interpolation):
    def resize(img, box, size):
        y, x, h, w = box
        return cv2.resize(img[y:y + h, x:x + w], (size, size), interpolation=interpolation)
    return resize


def best_ms(fn, img, boxes, size, rounds):
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for box in boxes:
            fn(img, box, size)
        best = min(best, (time.perf_counter() - t) / len(boxes) * 1e3)
    return best


def main(args):
    cv2.setNumThreads(1)  # as in a loader worker
    height, width = (int(v) for v in args.frame_size.lower().split("x"))
    img = np.ascontiguousarray(next(iter(textured_frames(1, (height, width), seed=args.seed)))[..., ::-1])
    rng = np.random.default_rng(args.seed)
    size = args.input_size
    boxes = [draw_pair_crop(rng, height, width)[0] for _ in range(args.boxes)]
    shrinking = [b for b in boxes if b[2] >= size and b[3] >= size]
    ms = {name: best_ms(fn, img, boxes, size, args.rounds) for name, fn in (
        ("bilinear", fixed(cv2.INTER_LINEAR)), ("area", fixed(cv2.INTER_AREA)), ("area_rule", area_rule),
        ("crop_resize", lambda im, b, s: crop_resize(im, b, s)))}
    diff = [np.abs(fixed(cv2.INTER_LINEAR)(img, b, size).astype(np.float32) - fixed(cv2.INTER_AREA)(img, b, size)).mean()
            for b in shrinking]
    row = {"bench": "crop_resize", "frame_size": [height, width], "input_size": size, "boxes": len(boxes),
           "shrinking_share": round(len(shrinking) / len(boxes), 3),
           **{f"{k}_ms": round(v, 4) for k, v in ms.items()},
           "crop_resize_vs_area_rule": round(ms["area_rule"] / ms["crop_resize"], 3),
           "bilinear_vs_area_mean_abs_diff": round(float(np.mean(diff)), 3) if diff else None}
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()]).parse_args())
