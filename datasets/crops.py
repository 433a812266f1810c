# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Image-crop pairs for the CropMAE pretext (Eymael et al., 2024): global-to-local views.

The global view is a random-resized crop of the image; the local view is a
random-resized crop of the global view's box, so it always lies inside it and the
masked local view (mask ratio 0.985) is always reconstructible from the global one.
Each view gets its own flip. Scales follow CropMAE's training scripts: global [0.1, 1] of an image
(its ImageNet runs) or [0.5, 1] of a video frame (its Kinetics runs), local [0.3, 0.6] of the global
box, ratios [3/4, 4/3].
"""
from .transforms import crop_resize, random_resized_box

GLOBAL_SCALE_IMAGES = (0.1, 1.0)
GLOBAL_SCALE_FRAMES = (0.5, 1.0)
LOCAL_SCALE = (0.3, 0.6)
RATIO = (3 / 4, 4 / 3)


def global_local_boxes(rng, height, width, global_scale=GLOBAL_SCALE_FRAMES,
                       local_scale=LOCAL_SCALE, ratio=RATIO):
    """Boxes (y, x, h, w) in image pixels: a global box and a local box inside it."""
    gy, gx, gh, gw = random_resized_box(rng, height, width, global_scale, ratio)
    ly, lx, lh, lw = random_resized_box(rng, gh, gw, local_scale, ratio)
    return (gy, gx, gh, gw), (gy + ly, gx + lx, lh, lw)


def global_local_crop(img, rng, size, global_scale=GLOBAL_SCALE_FRAMES, local_scale=LOCAL_SCALE,
                      ratio=RATIO):
    """img (H, W, 3) uint8 -> (global, local) views, each (size, size, 3) uint8."""
    g_box, l_box = global_local_boxes(rng, img.shape[0], img.shape[1], global_scale,
                                      local_scale, ratio)
    g_flip, l_flip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    return crop_resize(img, g_box, size, g_flip), crop_resize(img, l_box, size, l_flip)
