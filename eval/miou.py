"""Mean IoU of semantic label maps from one confusion matrix accumulated over all frames."""
import numpy as np


def confusion(pred, gt, n_classes, ignore_index=255):
    """(n_classes, n_classes) int64 counts, rows = truth, columns = prediction; pixels whose truth
    is ignore_index are left out."""
    keep = gt != ignore_index
    index = gt[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(matrix):
    """(n_classes,) IoU = TP / (TP + FP + FN); NaN for a class absent from truth and prediction."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(matrix):
    """Mean over the classes present in truth or prediction (NaN if none is)."""
    ious = iou_per_class(matrix)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")
