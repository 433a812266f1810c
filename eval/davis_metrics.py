"""DAVIS-2017 semi-supervised scores, computed as the official davis2017-evaluation does.

J: region similarity (IoU of object masks; 1 when both are empty). F: boundary F-measure between
the one-pixel boundary maps of the two masks, a boundary pixel matching when the other map has one
within ceil(0.008 * image diagonal) pixels (dilation by a disk). Per object: mean, recall
(fraction of frames > 0.5) and decay (mean of the first quarter of frames minus the last quarter)
over all frames but the first and the last. Objects are counted from the first annotation.
Global scores average over all objects of all sequences; J&F-Mean = (J-Mean + F-Mean) / 2.

An object missing from every scored result frame scores as an empty mask, as the official script's
zero padding does; a result with more objects than the annotation is an error in both.
"""
import math
import os
import warnings

import cv2
import numpy as np

from eval.davis_data import first_annotation, read_mask
from eval.files import InputError, image_size, read_indexed_png, stem, write_csv

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]


def region_similarity(pred, gt):
    """J: IoU of two boolean masks (H, W); 1 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask):
    """One-pixel boundary of a boolean mask (H, W): a pixel that differs from its right, lower or
    lower-right neighbour (on the last row only the right one counts, on the last column only the
    lower one, never the last pixel) -- the boundaries of the official seg2bmap."""
    m = np.asarray(mask, dtype=bool)
    b = np.zeros_like(m)
    core = m[:-1, :-1]
    b[:-1, :-1] = (core != m[:-1, 1:]) | (core != m[1:, :-1]) | (core != m[1:, 1:])
    b[-1, :-1] = m[-1, :-1] != m[-1, 1:]
    b[:-1, -1] = m[:-1, -1] != m[1:, -1]
    return b


def disk(radius):
    """A filled disk structuring element of size 2r+1: x^2 + y^2 <= r^2, as uint8."""
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def boundary_tolerance(shape, bound_th=0.008):
    """Matching distance in pixels: bound_th itself if >= 1, else ceil(bound_th * diagonal)."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def boundary_f(pred, gt, bound_th=0.008):
    """F: boundary F-measure of two boolean masks (H, W).

    No predicted and no true boundary: 1. Only one of them empty: 0 (precision or recall is 0).
    """
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = disk(boundary_tolerance(pred.shape, bound_th))
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    gt_near = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    precision = (pred_b & gt_near).sum() / n_pred
    recall = (gt_b & pred_near).sum() / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def statistics(values):
    """(mean, recall, decay) of per-frame values (T,), as the official db_statistics: recall is the
    fraction above 0.5; decay the mean of the first of four equal bins minus that of the last."""
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
        decay = np.nanmean(values[ids[0]:ids[1] + 1]) - np.nanmean(values[ids[3]:ids[4] + 1])
    return float(mean), float(recall), float(decay)


def read_result(path, size, n_objects):
    """A result PNG (H, W) uint8, checked against the annotation size and the object count."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: missing result PNG")
    if image_size(path) != tuple(size):
        raise InputError(f"{path}: size {image_size(path)} differs from the annotation's {tuple(size)}")
    result, _ = read_indexed_png(path)
    if result.max() > n_objects:
        raise InputError(f"{path}: index {result.max()} is higher than the {n_objects} objects "
                         "of the sequence's first annotation")
    return result


def evaluate_sequence(seq, results_dir):
    """J and F of every object on every frame but the first and the last.

    seq: an eval.davis_data.Sequence; results_dir holds <seq.name>/<frame>.png.
    Returns (J, F), each (n_objects, T - 2).
    """
    _, _, n_objects = first_annotation(seq)
    scored = range(1, len(seq.frames) - 1)
    j = np.zeros((n_objects, len(scored)))
    f = np.zeros((n_objects, len(scored)))
    for col, t in enumerate(scored):
        gt = read_mask(seq.annotations[t])
        pred = read_result(os.path.join(results_dir, seq.name, stem(seq.frames[t]) + ".png"), seq.size, n_objects)
        for k in range(1, n_objects + 1):
            j[k - 1, col] = region_similarity(pred == k, gt == k)
            f[k - 1, col] = boundary_f(pred == k, gt == k)
    return j, f


def evaluate(sequences, results_dir):
    """Scores of the results in results_dir over sequences (list of Sequence).

    Returns (global: dict GLOBAL_COLUMNS -> float, per_object: list of (f'{seq}_{k}', J-Mean, F-Mean)).
    """
    stats = {"J": [], "F": []}
    per_object = []
    for seq in sequences:
        j, f = evaluate_sequence(seq, results_dir)
        for k in range(j.shape[0]):
            sj, sf = statistics(j[k]), statistics(f[k])
            stats["J"].append(sj)
            stats["F"].append(sf)
            per_object.append((f"{seq.name}_{k + 1}", sj[0], sf[0]))
    jm, jr, jd = np.mean(stats["J"], axis=0)
    fm, fr, fd = np.mean(stats["F"], axis=0)
    values = [(jm + fm) / 2, jm, jr, jd, fm, fr, fd]
    return dict(zip(GLOBAL_COLUMNS, map(float, values))), per_object


def write_results(results_dir, global_scores, per_object, split="val"):
    """global_results-<split>.csv and per-sequence_results-<split>.csv in the official format."""
    write_csv(os.path.join(results_dir, f"global_results-{split}.csv"), GLOBAL_COLUMNS,
              [[global_scores[c] for c in GLOBAL_COLUMNS]])
    write_csv(os.path.join(results_dir, f"per-sequence_results-{split}.csv"), SEQUENCE_COLUMNS, per_object)


def format_table(global_scores, per_object, split="val"):
    """The two tables as text, as the official script prints them."""
    head = " ".join(f"{c:>9}" for c in GLOBAL_COLUMNS)
    row = " ".join(f"{global_scores[c]:>9.3f}" for c in GLOBAL_COLUMNS)
    width = max([len("Sequence")] + [len(name) for name, _, _ in per_object])
    lines = [f"--------------------------- Global results for {split} ---------------------------", head, row,
             f"\n---------- Per sequence results for {split} ----------",
             f"{'Sequence':>{width}}    J-Mean    F-Mean"]
    lines += [f"{name:>{width}} {jm:>9.3f} {fm:>9.3f}" for name, jm, fm in per_object]
    return "\n".join(lines)
