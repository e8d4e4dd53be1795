"""Per-cell morphology statistics computed in the graph: regression targets for E's z.

Why: nothing in the pair game or in view agreement asks E's z to keep how big, how
bright, how spread out or how textured a cell is, and on plates whose treatments differ in
exactly that E's z gains only ~+0.06 NSC over random weights while hand-made features
(features.py) keep it by construction. A linear head that must predict a cell's summary
statistics from z (as MaskFeat predicts HOG features of the image) makes z carry them. The
statistics are taken from the cell as it is and E sees it under a random flip, rotation
and shift, so z learns them independent of pose; every statistic is itself invariant to
the 8 flips/rotations and to shifts (moments about the intensity centroid). They are
computed per batch in TensorFlow, so any plate set works without a feature table.
"""

from __future__ import annotations

import tensorflow as tf

FOREGROUND = 0.05  # [0, 1] intensity above which a pixel belongs to a cell (crops are masked to black)
PER_CHANNEL = ("area", "mean", "cell_mean", "cell_std", "spread", "elongation",
               "edges_1", "edges_2", "edges_4")
CHANNEL_PAIRS = ((0, 1), (0, 2), (1, 2))
# The "shape-texture" set adds, per stain, CellProfiler-granularity-like band-pass energy at
# two scales, how aligned the stain's edges are (fibres against haze) and how many bright
# spots it has per cell pixel (puncta).
TEXTURE_PER_CHANNEL = ("granularity_3", "granularity_7", "coherence", "spots")
# "hand-made" takes the baseline's own CellProfiler-like features (features.py: Otsu
# segmentation, shape, intensity, GLCM texture, radial distribution) as the targets.
STATISTIC_SETS = ("shape", "shape-texture", "hand-made")
_EPS = 1e-6


def n_statistics(which: str = "shape") -> int:
    if which == "hand-made":
        from ..features import FEATURE_NAMES

        return len(FEATURE_NAMES)
    per_channel = PER_CHANNEL + (TEXTURE_PER_CHANNEL if which == "shape-texture" else ())
    return 3 * len(per_channel) + len(CHANNEL_PAIRS)


N_STATISTICS = n_statistics("shape")


def _safe_div(a, b):
    return a / (b + _EPS)


def _moments(x):
    """Intensity-weighted spread (mean squared distance from the centroid, in units of the
    crop's side squared) and elongation ((l1 - l2) / (l1 + l2) of the second-moment
    matrix) per image and channel. x: [B, H, W, C] in [0, 1]."""
    size = tf.cast(tf.shape(x)[1], tf.float32)
    coords = (tf.range(size) + 0.5) / size
    ys, xs = coords[None, :, None, None], coords[None, None, :, None]
    total = tf.reduce_sum(x, axis=[1, 2])
    cy = _safe_div(tf.reduce_sum(x * ys, axis=[1, 2]), total)
    cx = _safe_div(tf.reduce_sum(x * xs, axis=[1, 2]), total)
    dy, dx = ys - cy[:, None, None, :], xs - cx[:, None, None, :]
    myy = _safe_div(tf.reduce_sum(x * dy * dy, axis=[1, 2]), total)
    mxx = _safe_div(tf.reduce_sum(x * dx * dx, axis=[1, 2]), total)
    mxy = _safe_div(tf.reduce_sum(x * dy * dx, axis=[1, 2]), total)
    spread = myy + mxx
    elongation = _safe_div(tf.sqrt((myy - mxx) ** 2 + 4.0 * mxy ** 2 + _EPS), spread)
    return spread, elongation


def _edges(x, cell):
    """Absolute differences of neighbouring pixels, summed over the pairs that touch the
    cell, per cell pixel: the fine texture (and outline) at x's scale. A pair counts when
    either pixel is in the cell, so flips and rotations leave the sum unchanged."""
    total = 0.0
    for axis in (1, 2):
        n = tf.shape(x)[axis] - 1
        first, second = (tf.gather(t, tf.range(n), axis=axis) for t in (x, cell))
        next_x, next_cell = (tf.gather(t, tf.range(1, n + 1), axis=axis) for t in (x, cell))
        touching = tf.maximum(second, next_cell)
        total += tf.reduce_sum(tf.abs(next_x - first) * touching, axis=[1, 2])
    return _safe_div(total, tf.reduce_sum(cell, axis=[1, 2]))


def _correlations(x):
    """Pearson correlation of each stain pair's pixels: where the stains co-localise."""
    flat = tf.reshape(x, [tf.shape(x)[0], -1, 3])
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    norm = tf.sqrt(tf.reduce_sum(centred ** 2, axis=1) + _EPS)
    return tf.stack([tf.reduce_sum(centred[..., i] * centred[..., j], axis=1) / (norm[:, i] * norm[:, j])
                     for i, j in CHANNEL_PAIRS], axis=1)


def _cell_mean(values, cell):
    return _safe_div(tf.reduce_sum(values * cell, axis=[1, 2]), tf.reduce_sum(cell, axis=[1, 2]))


def _texture(x, cell, cell_mean):
    """Per stain: band-pass energy |x - its k x k box blur| at k = 3 and 7, the structure
    tensor's coherence ((l1 - l2) / (l1 + l2) of the 5 x 5 smoothed gradient products,
    averaged by edge energy: 1 where all edges run one way), and 3 x 3 local maxima brighter than 1.2x the cell's
    mean per cell pixel. All invariant to flips and right-angle rotations."""
    grains = [_cell_mean(tf.abs(x - tf.nn.avg_pool2d(x, k, 1, "SAME")), cell) for k in (3, 7)]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    gy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) * 0.5
    gx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) * 0.5
    jyy, jxx, jxy = (tf.nn.avg_pool2d(t, 5, 1, "SAME") for t in (gy * gy, gx * gx, gy * gx))
    # Weighted by edge energy (flat regions have no direction), inside the cell eroded by
    # the tensor's 5 px window so that the outline's edges do not count.
    interior = -tf.nn.max_pool2d(-cell, 7, 1, "SAME")
    aligned = tf.sqrt(tf.maximum((jyy - jxx) ** 2 + 4.0 * jxy ** 2, 0.0))
    coherence = _safe_div(tf.reduce_sum(aligned * interior, axis=[1, 2]),
                          tf.reduce_sum((jyy + jxx) * interior, axis=[1, 2]))
    peaks = tf.cast(tf.equal(x, tf.nn.max_pool2d(x, 3, 1, "SAME")), tf.float32)
    bright = tf.cast(x > 1.2 * cell_mean[:, None, None, :], tf.float32)
    return grains + [coherence, _cell_mean(peaks * bright, cell)]


def morphology_statistics(images, which: str = "shape"):
    """[B, N_STATISTICS] float32 statistics of cells in the networks' [-1, 1] scale (3
    stains): per stain its area, mean, mean and spread of intensity inside the cell, the
    spread and elongation of its intensity about the centroid, its edges at 1, 2 and 4 px
    scales (`which` = "shape-texture" adds `_texture`'s four); then the stains' pairwise
    correlations. No gradient flows through them."""
    if which not in STATISTIC_SETS:
        raise ValueError(f"morphology statistics {which!r}: one of {', '.join(STATISTIC_SETS)}")
    x = tf.stop_gradient((tf.cast(images, tf.float32) + 1.0) * 0.5)
    if which == "hand-made":
        return _hand_made(x)
    cell = tf.cast(x > FOREGROUND, tf.float32)
    cell_mean = _cell_mean(x, cell)
    cell_var = _cell_mean((x - cell_mean[:, None, None, :]) ** 2, cell)
    spread, elongation = _moments(x)
    edges = []
    for factor in (1, 2, 4):
        pooled = x if factor == 1 else tf.nn.avg_pool2d(x, factor, factor, "VALID")
        pooled_cell = tf.cast(pooled > FOREGROUND, tf.float32)
        edges.append(_edges(pooled, pooled_cell))
    per_channel = [tf.reduce_mean(cell, axis=[1, 2]), tf.reduce_mean(x, axis=[1, 2]), cell_mean,
                   tf.sqrt(cell_var + _EPS), spread, elongation, *edges]
    if which == "shape-texture":
        per_channel += _texture(x, cell, cell_mean)
    return tf.concat(per_channel + [_correlations(x)], axis=1)


def _hand_made(x):
    """The hand-made features of a [0, 1] batch, on the host (tf.numpy_function). Written
    as a host call, not in TensorFlow, because Otsu segmentation, connected components and
    GLCMs have no graph ops; ~0.5 s per 64 cells of 64 px on a busy 2-core CPU (and not
    XLA-compilable)."""
    import numpy as np

    from ..features import compute_features

    def features(batch):
        return np.nan_to_num(compute_features(batch), nan=0.0, posinf=0.0, neginf=0.0)

    out = tf.numpy_function(features, [x], tf.float32, stateful=False)
    out.set_shape([x.shape[0], n_statistics("hand-made")])
    return out


def head_loss(head, features, real, which: str = "shape"):
    """Squared error of `head(features)` against the standardized statistics of the real
    cells `features` were taken from (one row per cell, in the batch's order)."""
    from ..losses import regression_loss

    targets = standardized(morphology_statistics(real, which))
    return regression_loss(head(features, training=True), targets)


def standardized(statistics, clip=5.0):
    """Each statistic as a z-score over the batch, clipped: one scale for all targets, so
    no statistic's units decide the head's loss (a batch of 64 estimates the scale well)."""
    mean, var = tf.nn.moments(statistics, axes=[0], keepdims=True)
    return tf.clip_by_value((statistics - mean) / (tf.sqrt(var) + _EPS), -clip, clip)
