"""VIP semantic part propagation: mIoU over the 20 classes (background + 19 human parts).

The first frame's part map is propagated (frames resized to 560x560 by default), predictions are
written as indexed PNGs (<output_dir>/<video>/<frame>.png) and scored against every later annotated
frame with one confusion matrix over all of them (truth 255 ignored):

    python eval/vip_propagate.py --vip_path VIP_Fine --checkpoint ckpt.pth --output_dir out/vip

Layout: ``<vip_path>/lists/val_videos.txt`` (one video per line), ``Images/<video>/*.jpg`` and
``Annotations/Category_ids/<video>/*.png`` (same stems; the first frame must be annotated).
"""
import argparse
import os
import sys

if __name__ == "__main__":  # run as a script: the repo root, not eval/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from eval import cli, miou
from eval.files import (InputError, list_files, read_indexed_png, read_list, stem, write_csv,
                        write_indexed_png)

CLASSES = ["background", "hat", "hair", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
           "gloves", "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg",
           "right-shoe", "left-shoe"]


def get_args_parser():
    parser = argparse.ArgumentParser("VIP part propagation", add_help=False,
                                     parents=[cli.common_args(topk=10, radius=8, size=(560, 560))])
    parser.add_argument("--vip_path", required=True, help="VIP root: lists/, Images/, Annotations/Category_ids/")
    parser.add_argument("--list", default="lists/val_videos.txt", help="video list, relative to --vip_path")
    parser.add_argument("--images", default="Images", help="frames folder, relative to --vip_path")
    parser.add_argument("--annotations", default="Annotations/Category_ids", help="part maps, relative to --vip_path")
    return parser


def read_videos(args):
    """[(name, frame paths, {stem: annotation path})], checked: frames, a first-frame annotation."""
    names = read_list(os.path.join(args.vip_path, args.list), "the list of videos to evaluate")
    videos = []
    for name in names:
        frames = list_files(os.path.join(args.vip_path, args.images, name), ".jpg", "frames")
        annotations = list_files(os.path.join(args.vip_path, args.annotations, name), ".png", "annotations")
        by_stem = {stem(p): p for p in annotations}
        if stem(frames[0]) not in by_stem:
            raise InputError(f"{frames[0]}: the first frame has no annotation in {os.path.dirname(annotations[0])}")
        videos.append((name, frames, by_stem))
    return videos


def read_part_map(path, size=None):
    labels, palette = read_indexed_png(path)
    if size is not None and labels.shape != tuple(size):
        raise InputError(f"{path}: size {labels.shape} differs from the first annotation's {tuple(size)}")
    bad = (labels >= len(CLASSES)) & (labels != 255)
    if bad.any():
        raise InputError(f"{path}: label {labels[bad].max()} is not one of the {len(CLASSES)} classes (or 255)")
    return labels, palette


def main(args):
    videos = read_videos(args)
    cli.prepare_output_dir(args.output_dir, [os.path.join(args.vip_path, d) for d in (args.images, args.annotations)])
    cli.print_args(args)
    extractor = cli.extractor_from_args(args)
    matrix = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    progress = cli.Progress([len(frames) for _, frames, _ in videos])
    for name, frames, annotations in videos:
        mask0, palette = read_part_map(annotations[stem(frames[0])])
        for path, pred in zip(frames[1:], cli.propagate_masks(extractor, frames, mask0, len(CLASSES), args)):
            write_indexed_png(os.path.join(args.output_dir, name, stem(path) + ".png"), pred, palette)
            if stem(path) in annotations:
                matrix += miou.confusion(pred, read_part_map(annotations[stem(path)], mask0.shape)[0], len(CLASSES))
        progress.step(name, len(frames), f"running mIoU {miou.mean_iou(matrix):.3f}")
    ious = miou.iou_per_class(matrix)
    write_csv(os.path.join(args.output_dir, "vip_miou.csv"), ["mIoU"] + CLASSES,
              [[miou.mean_iou(matrix)] + list(ious)], "%.4f")
    print("\n".join(f"{c:>14} {v:.3f}" for c, v in zip(CLASSES, ious)))
    print(f"VIP, {len(videos)} videos: mIoU {100 * miou.mean_iou(matrix):.1f}")


if __name__ == "__main__":
    cli.run(main, argparse.ArgumentParser(parents=[get_args_parser()]))
