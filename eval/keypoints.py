"""Keypoints for propagation (JHMDB): Gaussian heatmaps on the feature grid, their decoding back
to coordinates, and PCK.

Conventions follow the public harness of CRW (ajabri/videowalk, ``data/jhmdb.py``,
``utils/test_utils.process_pose``, ``eval/eval_pck.py``): one heatmap channel per joint plus a
background channel that is 1 where no joint has mass; a joint is decoded as the weighted mean of
its 3 strongest grid cells; PCK@a counts a prediction correct when its distance to the truth is at
most a * 0.6 * the diagonal of the box around the frame's true joints that have a prediction, is
computed per joint over all frames but the first, and averaged over joints; a joint whose channel has
vanished is skipped (in the box too).
Coordinates are 0-based pixels (x, y); grid cell (i, j) is centred on pixel ((j + .5) s - .5, (i + .5) s - .5).
"""
import numpy as np
import torch


def pixels_to_grid(xy, frame_size, grid):
    """(..., 2) pixel (x, y) in a (H, W) frame -> continuous grid coordinates on a (h, w) grid."""
    scale = np.array([grid[1] / frame_size[1], grid[0] / frame_size[0]])
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def grid_to_pixels(xy, frame_size, grid):
    scale = np.array([frame_size[1] / grid[1], frame_size[0] / grid[0]])
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def heatmaps(xy, grid, sigma=0.5):
    """Joint heatmaps on the grid: xy (J, 2) grid coordinates -> (h, w, J + 1) float32, channel 0
    the background. Each joint is a unit-peak Gaussian cut at 3 sigma; joints outside the grid
    leave their channel empty."""
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w]
    maps = np.zeros((h, w, len(xy) + 1), np.float32)
    for j, (x, y) in enumerate(xy):
        if -0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5:
            d2 = (xx - x) ** 2 + (yy - y) ** 2
            maps[..., j + 1] = np.where(d2 <= (3 * sigma) ** 2, np.exp(-d2 / (2 * sigma ** 2)), 0)
    maps[..., 0] = maps[..., 1:].sum(-1) == 0
    return torch.from_numpy(maps)


def decode(soft, topk=3):
    """soft (h, w, J + 1) propagated heatmaps -> (J, 2) grid (x, y): the weighted mean of each
    joint's topk strongest cells; -1 for a joint whose channel holds no mass."""
    h, w, channels = soft.shape
    flat = soft[..., 1:].reshape(h * w, channels - 1).float()
    vals, idx = flat.topk(min(topk, h * w), dim=0)  # (k, J)
    total = vals.sum(0)
    weights = vals / total.clamp_min(1e-12)
    xy = torch.stack([((idx % w) * weights).sum(0), ((idx // w) * weights).sum(0)], dim=1)
    xy[total <= 0] = -1
    return xy.cpu().numpy()


def normalised_errors(pred, gt):
    """Distances of predicted to true joints over the reference box size (0.6 * diagonal of the box
    around the true joints that have a prediction), per frame. pred, gt: (T, J, 2) pixels, pred -1
    where vanished. Returns (T, J) float, NaN for vanished joints."""
    vanished = (pred < 0).any(-1, keepdims=True)  # (T, J, 1)
    top, bottom = np.where(vanished, -np.inf, gt).max(axis=1), np.where(vanished, np.inf, gt).min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # frames with every joint vanished: NaN below
        box = 0.6 * np.linalg.norm(top - bottom, axis=-1)  # (T,)
        errors = np.linalg.norm(pred - gt, axis=-1) / box[:, None]
    return np.where(vanished[..., 0], np.nan, errors)


def pck(errors, alpha):
    """PCK@alpha from (N, J) normalised errors: per joint over its non-NaN entries, then the mean
    over joints."""
    with np.errstate(invalid="ignore"):
        per_joint = np.nansum(errors <= alpha, axis=0) / np.sum(~np.isnan(errors), axis=0)
    return float(np.nanmean(per_joint))
