# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""What a loader worker spends on one frame: decoding its JPEG, cropping and resizing, laying it out.

On a frame of --frame_size (textured, saved as a JPEG of --quality, as datasets/extract_frames.py does)
prints one JSON line of ms per frame, each the best of --rounds (the candidates of a comparison take turns
within each round):
- decoding with OpenCV (what the workers use), Pillow and torchvision (on the CPU);
- crop and resize over random-resized-crop boxes (scale 0.5-1, as datasets.transforms.draw_pair_crop)
  with bilinear and with area averaging; the share of boxes that shrink (both sides >= input_size);
  what datasets.transforms.crop_resize costs (area averaging only for 2x or more), its ratio to the
  all-area rule (area wherever both sides shrink: the rule before), and the mean absolute difference of
  bilinear to area outputs on the shrinking boxes (0..255 scale);
- BGR (H, W, 3) -> RGB (3, H, W): datasets.transforms.to_uint8_tensor against a strided numpy copy
  (the layout before);
- each step's share of the worker's time per frame (OpenCV decode + crop_resize + layout).

    python bench/worker_frame.py [--frame_size 256x340] [--input_size 224] [--boxes 400] [--rounds 5]
"""
import argparse
import io
import json
import os
import sys
import time

if __name__ == "__main__":  # run as a script: the repo root, not bench/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.io import decode_jpeg

from datasets.frames import JPEG_QUALITY
from datasets.synthetic import textured_frames
from datasets.transforms import crop_resize, draw_pair_crop, to_uint8_tensor


def get_args_parser():
    parser = argparse.ArgumentParser("A loader worker's cost per frame", add_help=False)
    parser.add_argument("--frame_size", default="256x340", help="H x W")
    parser.add_argument("--quality", default=JPEG_QUALITY, type=int, help="JPEG quality of the frame")
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


def moveaxis_layout(frame):
    """The layout before: BGR (H, W, 3) -> RGB (3, H, W) by a strided numpy copy."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(frame[..., ::-1], -1, -3)))


def best_ms(fns, items, rounds):
    """{name: the best over rounds of the mean ms per call of fn(item) over items}. The candidates take
    turns within each round (in a rotated order), so warm-up and a busy machine's noise do not fall on
    whichever is timed first."""
    best = dict.fromkeys(fns, float("inf"))
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            for item in items:
                fns[name](item)
            best[name] = min(best[name], (time.perf_counter() - t) / len(items) * 1e3)
    return best


def decode_ms(jpeg, rounds, reps=50):
    """ms per decode of an encoded frame (bytes) with OpenCV, Pillow and torchvision."""
    data, tensor = np.frombuffer(jpeg, np.uint8), torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
    decoders = {"decode_opencv": lambda _: cv2.imdecode(data, cv2.IMREAD_COLOR),
                "decode_pillow": lambda _: np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")),
                "decode_torchvision": lambda _: decode_jpeg(tensor)}
    return best_ms(decoders, range(reps), rounds)


def main(args):
    cv2.setNumThreads(1)  # as in a loader worker
    torch.set_num_threads(1)
    height, width = (int(v) for v in args.frame_size.lower().split("x"))
    rgb = next(iter(textured_frames(1, (height, width), seed=args.seed)))
    _, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)  # BGR, as the workers decode it
    rng = np.random.default_rng(args.seed)
    size = args.input_size
    boxes = [draw_pair_crop(rng, height, width)[0] for _ in range(args.boxes)]
    shrinking = [b for b in boxes if b[2] >= size and b[3] >= size]
    ms = decode_ms(jpeg.tobytes(), args.rounds)
    resizes = {"bilinear": fixed(cv2.INTER_LINEAR), "area": fixed(cv2.INTER_AREA), "area_rule": area_rule,
               "crop_resize": crop_resize}
    ms.update(best_ms({name: lambda box, fn=fn: fn(img, box, size) for name, fn in resizes.items()}, boxes,
                      args.rounds))
    crops = [crop_resize(img, b, size) for b in boxes[:50]]
    ms.update(best_ms({"layout": to_uint8_tensor, "moveaxis_layout": moveaxis_layout}, crops, args.rounds))
    diff = [np.abs(fixed(cv2.INTER_LINEAR)(img, b, size).astype(np.float32) - fixed(cv2.INTER_AREA)(img, b, size)).mean()
            for b in shrinking]
    frame_ms = ms["decode_opencv"] + ms["crop_resize"] + ms["layout"]
    row = {"bench": "worker_frame", "frame_size": [height, width], "jpeg_kb": round(len(jpeg) / 1024, 1),
           "input_size": size, "boxes": len(boxes), "shrinking_share": round(len(shrinking) / len(boxes), 3),
           **{f"{k}_ms": round(v, 4) for k, v in ms.items()},
           "crop_resize_vs_area_rule": round(ms["area_rule"] / ms["crop_resize"], 3),
           "layout_vs_moveaxis": round(ms["moveaxis_layout"] / ms["layout"], 3),
           "bilinear_vs_area_mean_abs_diff": round(float(np.mean(diff)), 3) if diff else None,
           "frame_ms": round(frame_ms, 4),
           **{f"{k}_share": round(ms[k] / frame_ms, 3) for k in ("decode_opencv", "crop_resize", "layout")}}
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()]).parse_args())
