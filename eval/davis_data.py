"""The official DAVIS-2017 layout: ``ImageSets/2017/<split>.txt``, ``JPEGImages/<res>/<seq>/*.jpg``,
``Annotations/<res>/<seq>/*.png`` (indexed palette PNGs, 0 = background, 1..N = objects, 255 = void)."""
import os
from dataclasses import dataclass

import numpy as np

from eval.files import InputError, image_size, list_files, read_indexed_png, read_list, stem


@dataclass
class Sequence:
    name: str
    frames: list  # JPEG paths, sorted
    annotations: list  # PNG paths, one per frame, same stems
    size: tuple  # (H, W) of every frame and annotation


def read_sequence_names(davis_path, split="val"):
    """The sequence names listed in ImageSets/2017/<split>.txt."""
    if not os.path.isdir(davis_path):
        raise InputError(f"{davis_path}: no such DAVIS folder")
    listing = os.path.join(davis_path, "ImageSets", "2017", f"{split}.txt")
    return read_list(listing, f"the DAVIS-2017 list of {split} sequences")


def load_sequence(davis_path, name, resolution="480p"):
    """A sequence's files, checked: an annotation for every frame, every size equal to the first frame's."""
    frames = list_files(os.path.join(davis_path, "JPEGImages", resolution, name), ".jpg", "frames")
    annotations = list_files(os.path.join(davis_path, "Annotations", resolution, name), ".png", "annotations")
    have = {stem(p) for p in annotations}
    missing = [p for p in frames if stem(p) not in have]
    if missing:
        raise InputError(f"{missing[0]}: frame without annotation ({stem(missing[0])}.png) "
                         f"in {os.path.dirname(annotations[0])}")
    frame_stems = {stem(p) for p in frames}
    extra = [p for p in annotations if stem(p) not in frame_stems]
    if extra:
        raise InputError(f"{extra[0]}: annotation without frame ({stem(extra[0])}.jpg) in "
                         f"{os.path.dirname(frames[0])}: is the frames folder complete?")
    by_stem = {stem(p): p for p in annotations}
    annotations = [by_stem[stem(p)] for p in frames]
    size = image_size(frames[0])
    for path in frames + annotations:
        if image_size(path) != size:
            raise InputError(f"{path}: size {image_size(path)} differs from the first frame's {size}")
    return Sequence(name, frames, annotations, size)


def read_mask(path):
    """An annotation as (H, W) uint8 with void (255) set to background, as the official scorer does."""
    mask, _ = read_indexed_png(path)
    return np.where(mask == 255, 0, mask).astype(np.uint8)


def first_annotation(seq):
    """(mask (H, W) uint8, palette (768,), number of objects) of the first frame;
    the objects are counted from it, as in the official evaluation."""
    mask, palette = read_indexed_png(seq.annotations[0])
    n_objects = int(np.where(mask == 255, 0, mask).max())
    if n_objects == 0:
        hint = (" (only 0 and 255, which DAVIS reads as void: objects are indices 1..N, as in a palette PNG, "
                "not 255 as in a black-and-white mask)" if (mask == 255).any() else "")
        raise InputError(f"{seq.annotations[0]}: the first annotation holds no object{hint}")
    return mask, palette, n_objects
