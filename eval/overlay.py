"""Frames with their propagated masks blended in, for a person to look at."""
import numpy as np
from PIL import Image

from eval.files import atomic_path


def blend(frame, labels, palette, alpha=0.5):
    """frame (H, W, 3) uint8, labels (H, W) indices, palette (768,) -> (H, W, 3) uint8 with every
    labelled (non-zero) pixel mixed with its palette colour."""
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[labels]
    mixed = (1 - alpha) * frame.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.where(labels[..., None] > 0, mixed, frame).astype(np.uint8)


def save_png(path, image):
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def save_gif(path, images, fps=10):
    """An animated, looping GIF of a list of (H, W, 3) uint8 images."""
    frames = [Image.fromarray(im) for im in images]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
