# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Paired transforms on uint8 BGR frames (H, W, 3), as OpenCV decodes them.

Crop boxes are drawn first, then only the boxed region is resized to the output
size, so a 720p frame costs a 224-px resize, not a full-frame one.
A box is (y, x, h, w) in pixels of the source frame.
"""
import math

import cv2
import numpy as np
import torch

from util.image import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize  # noqa: F401 (re-exported)


def random_resized_box(rng, height, width, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """Draw a random-resized-crop box, as torchvision's RandomResizedCrop does.

    Area is uniform in scale * H * W and log aspect ratio uniform in ratio; after ten
    misses, fall back to the largest centred box whose ratio lies in range.
    Returns (y, x, h, w) ints with 1 <= h <= height, 1 <= w <= width.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            return y, x, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(img, box, size, flip=False):
    """Crop box out of img (H, W, 3) and resize it to (size, size, 3); optional h-flip.

    Bilinear, and area averaging where both sides shrink and one by 2x or more: below 2x every input
    pixel already reaches an output pixel, and OpenCV's area filter costs 3x more per crop of a 256x340
    frame (bench/worker_frame.py), the common case for pre-training's frames."""
    y, x, h, w = box
    region = img[y:y + h, x:x + w]
    shrink = min(h, w) >= size and max(h, w) >= 2 * size
    out = cv2.resize(region, (size, size),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.flip(out, 1) if flip else out  # a contiguous copy: a ::-1 view costs 5x more to stack later


def draw_pair_crop(rng, height, width, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """The random-resized-crop box (y, x, h, w) and the flip (bool) a pair of frames shares."""
    box = random_resized_box(rng, height, width, scale, ratio)
    return box, bool(rng.random() < 0.5)


def paired_crop(f1, f2, rng, size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """The same random-resized crop and the same flip on two frames of one video.

    f1, f2: (H, W, 3) uint8, same size. Returns two (size, size, 3) uint8 arrays.
    """
    if f1.shape != f2.shape:
        raise ValueError(f'paired_crop: frames differ in size: {f1.shape} vs {f2.shape}')
    box, flip = draw_pair_crop(rng, f1.shape[0], f1.shape[1], scale, ratio)
    return crop_resize(f1, box, size, flip), crop_resize(f2, box, size, flip)


def to_uint8_tensor(views):
    """uint8 BGR views (..., H, W, 3) -> uint8 RGB tensor (..., 3, H, W): what loader workers send
    (a quarter of the bytes of float32; normalisation happens on the training device).

    Each frame's channels are split by OpenCV straight into their reversed planes: 2.5x faster than a
    strided numpy copy of the reversed, moved axes (bench/worker_frame.py: 0.025 vs 0.064 ms per frame)."""
    arr = np.ascontiguousarray(views, dtype=np.uint8)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f'to_uint8_tensor: expected views of shape (..., H, W, 3), got {arr.shape}')
    frames = arr.reshape(-1, *arr.shape[-3:])
    out = np.empty((len(frames), 3, *arr.shape[-3:-1]), np.uint8)
    for frame, planes in zip(frames, out):
        cv2.split(frame, [planes[2], planes[1], planes[0]])  # B, G, R -> written into planes 2, 1, 0
    return torch.from_numpy(out.reshape(*arr.shape[:-3], 3, *arr.shape[-3:-1]))


def to_tensor(views):
    """uint8 BGR views (..., S, S, 3) -> float32 RGB tensor (..., 3, S, S), ImageNet-normalised."""
    return normalize(to_uint8_tensor(views))
