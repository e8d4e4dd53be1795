"""Object-level agreement of a label image with a reference: matched pairs, F1 at an IoU.

The matching is the optimal one-to-one assignment on IoU (scipy's linear_sum_assignment),
as the DSB2018 and StarDist evaluations use, so a split or merged nucleus counts as one
match at most, never two.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair, objects numbered 1..max."""
    from scipy.sparse import coo_matrix

    t = np.asarray(true).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    nt, np_ = int(t.max(initial=0)), int(p.max(initial=0))
    inter = coo_matrix((np.ones_like(t), (t, p)), shape=(nt + 1, np_ + 1)).toarray()[1:, 1:]
    area_t = np.bincount(t, minlength=nt + 1)[1:]
    area_p = np.bincount(p, minlength=np_ + 1)[1:]
    union = area_t[:, None] + area_p[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_objects(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict:
    """{"tp", "fp", "fn", "precision", "recall", "f1", "count_error", "mean_iou"} at `threshold`."""
    from scipy.optimize import linear_sum_assignment
    from skimage.segmentation import relabel_sequential

    true = relabel_sequential(np.asarray(true, np.int64))[0]
    pred = relabel_sequential(np.asarray(pred, np.int64))[0]
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true and n_pred:
        rows, cols = linear_sum_assignment(-iou)
        matched = iou[rows, cols]
        good = matched >= threshold
        tp = int(good.sum())
        mean_iou = float(matched[good].mean()) if tp else 0.0
    else:
        tp, mean_iou = 0, 0.0
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "n_true": n_true, "n_pred": n_pred,
            "precision": precision, "recall": recall, "f1": f1,
            "count_error": (n_pred - n_true) / n_true if n_true else float(n_pred),
            "mean_iou": mean_iou}
