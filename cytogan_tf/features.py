"""Hand-made, CellProfiler-like per-cell features: the baseline without deep learning.

Each crop (HxWx3 uint8, channels DNA, Actin, Tubulin) is segmented inside the crop by
Otsu thresholding: the nucleus is the DNA component nearest the crop centre, the cell is
the foreground component (any channel) that holds it. Features follow CellProfiler's
naming (`Nuclei_AreaShape_Area`, `Cells_Intensity_MeanIntensity_Actin`,
`Cells_Texture_Contrast_DNA_1`, `Cells_RadialDistribution_FracAtD_Tubulin_2of4`, ...), so
the tables read like a CellProfiler export and pycytominer treats them as features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import measure
from skimage.feature import graycomatrix, graycoprops

CHANNELS = ("DNA", "Actin", "Tubulin")
SHAPE_PROPS = ("Area", "Perimeter", "Eccentricity", "Solidity", "MajorAxisLength",
               "MinorAxisLength", "FormFactor")
TEXTURE_PROPS = ("contrast", "homogeneity", "correlation")
GLCM_LEVELS = 16
RADIAL_BINS = 4


def feature_names() -> list[str]:
    names = []
    for obj in ("Nuclei", "Cells"):
        names += [f"{obj}_AreaShape_{p}" for p in SHAPE_PROPS]
    names.append("Cells_AreaShape_NucleusCellAreaRatio")
    for obj in ("Nuclei", "Cells"):
        for ch in CHANNELS:
            names += [
                f"{obj}_Intensity_MeanIntensity_{ch}",
                f"{obj}_Intensity_StdIntensity_{ch}",
                f"{obj}_Intensity_IntegratedIntensity_{ch}",
            ]
    names += [
        "Cells_Intensity_MeanRatio_Actin_DNA",
        "Cells_Intensity_MeanRatio_Tubulin_DNA",
        "Cells_Intensity_MeanRatio_Actin_Tubulin",
    ]
    for ch in CHANNELS:
        names += [f"Cells_Texture_{p.capitalize()}_{ch}_1" for p in TEXTURE_PROPS]
    for ch in CHANNELS:
        names += [f"Cells_RadialDistribution_FracAtD_{ch}_{k + 1}of{RADIAL_BINS}" for k in range(RADIAL_BINS)]
    return names


FEATURE_NAMES = feature_names()


def otsu_thresholds(images: np.ndarray) -> np.ndarray:
    """Otsu threshold of every uint8 image in a [N, H, W] stack at once.

    Vectorised over the batch (one histogram per image) because calling
    skimage.filters.threshold_otsu image by image costs more than the features.
    """
    n = images.shape[0]
    flat = images.reshape(n, -1).astype(np.int64)
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    hist = np.bincount((flat + offsets).ravel(), minlength=n * 256).reshape(n, 256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist, axis=1)
    w1 = w0[:, -1:] - w0
    m0 = np.cumsum(hist * levels, axis=1)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[:, -1:] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return np.argmax(between, axis=1).astype(np.float64)  # foreground: pixel > threshold


def _component_near(mask: np.ndarray, point) -> np.ndarray:
    """The connected component of `mask` that contains `point`, else the nearest one."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    r, c = int(round(point[0])), int(round(point[1]))
    label = labels[r, c]
    if label == 0:
        rr, cc = np.nonzero(labels)
        k = np.argmin((rr - point[0]) ** 2 + (cc - point[1]) ** 2)
        label = labels[rr[k], cc[k]]
    return labels == label


def _shape(mask: np.ndarray) -> list[float]:
    if mask.sum() < 2:
        return [float(mask.sum())] + [0.0] * (len(SHAPE_PROPS) - 1)
    p = measure.regionprops(mask.astype(np.uint8))[0]
    perimeter = float(p.perimeter)
    form = 4 * np.pi * p.area / perimeter**2 if perimeter > 0 else 0.0
    return [float(p.area), perimeter, float(p.eccentricity), float(p.solidity),
            float(p.axis_major_length), float(p.axis_minor_length), float(form)]


def _intensity(crop: np.ndarray, mask: np.ndarray) -> list[float]:
    out = []
    for ch in range(3):
        values = crop[..., ch][mask].astype(np.float64) / 255.0
        if values.size == 0:
            out += [0.0, 0.0, 0.0]
        else:
            out += [values.mean(), values.std(), values.sum()]
    return out


def _texture(crop: np.ndarray, mask: np.ndarray) -> list[float]:
    """GLCM contrast/homogeneity/correlation at distance 1, averaged over 4 angles,
    on the cell's bounding box quantised to GLCM_LEVELS grey levels."""
    rows, cols = np.nonzero(mask)
    if rows.size < 4:
        return [0.0] * (3 * len(TEXTURE_PROPS))
    box = crop[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    box_mask = mask[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    out = []
    for ch in range(3):
        # level 0 is reserved for background so out-of-cell pixels can be dropped
        q = 1 + (box[..., ch].astype(np.int32) * (GLCM_LEVELS - 1)) // 256
        q = np.where(box_mask, q, 0).astype(np.uint8)
        glcm = graycomatrix(q, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                            levels=GLCM_LEVELS, symmetric=True, normed=False)
        glcm = glcm[1:, 1:].astype(np.float64)
        totals = glcm.sum(axis=(0, 1), keepdims=True)
        glcm = glcm / np.where(totals > 0, totals, 1.0)
        for prop in TEXTURE_PROPS:
            value = graycoprops(glcm, prop).mean()
            out.append(float(value) if np.isfinite(value) else 0.0)
    return out


def _radial(crop: np.ndarray, cell: np.ndarray, center) -> list[float]:
    """Fraction of each channel's in-cell intensity in RADIAL_BINS rings around the
    nucleus centre (ring edges scaled to the farthest cell pixel)."""
    rows, cols = np.nonzero(cell)
    if rows.size == 0:
        return [0.0] * (3 * RADIAL_BINS)
    dist = np.hypot(rows - center[0], cols - center[1])
    ring = np.minimum((dist / max(dist.max(), 1e-6) * RADIAL_BINS).astype(int), RADIAL_BINS - 1)
    out = []
    for ch in range(3):
        values = crop[rows, cols, ch].astype(np.float64)
        total = values.sum()
        sums = np.bincount(ring, weights=values, minlength=RADIAL_BINS)
        out += list(sums / total) if total > 0 else [0.0] * RADIAL_BINS
    return out


def crop_features(crop: np.ndarray, nucleus_threshold: float, cell_threshold: float) -> np.ndarray:
    """Feature vector (order of FEATURE_NAMES) of one HxWx3 uint8 crop."""
    h, w = crop.shape[:2]
    center = ((h - 1) / 2, (w - 1) / 2)
    nucleus = _component_near(crop[..., 0] > nucleus_threshold, center)
    if nucleus.any():
        center = ndimage.center_of_mass(nucleus)
    foreground = ndimage.binary_fill_holes((crop.max(axis=-1) > cell_threshold) | nucleus)
    cell = _component_near(foreground, center) if foreground.any() else foreground
    nucleus &= cell if cell.any() else nucleus

    values = _shape(nucleus) + _shape(cell)
    values.append(nucleus.sum() / cell.sum() if cell.sum() else 0.0)
    nuc_int = _intensity(crop, nucleus)
    cell_int = _intensity(crop, cell)
    values += nuc_int + cell_int
    dna, actin, tubulin = cell_int[0], cell_int[3], cell_int[6]
    eps = 1e-3
    values += [actin / (dna + eps), tubulin / (dna + eps), actin / (tubulin + eps)]
    values += _texture(crop, cell)
    values += _radial(crop, cell, center)
    return np.asarray(values, dtype=np.float32)


def _features_chunk(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    nucleus_t = otsu_thresholds(images[..., 0])
    cell_t = otsu_thresholds(images.max(axis=-1))
    return np.stack([crop_features(images[i], nucleus_t[i], cell_t[i]) for i in range(len(images))])


def compute_features(images, *, workers: int = 1, chunk_size: int = 256, progress: bool = False) -> np.ndarray:
    """[N, FEATURES] float32 for a [N, H, W, 3] uint8 stack.

    `workers > 1` spreads chunks over processes (spawned, so a parent holding TensorFlow
    is never forked).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] crops, got shape {images.shape}")
    if images.dtype != np.uint8:
        # accept [0,1] floats too
        images = np.clip(np.rint(np.asarray(images, np.float64) * 255.0), 0, 255).astype(np.uint8)
    if len(images) == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    chunks = [images[i: i + chunk_size] for i in range(0, len(images), chunk_size)]
    if workers <= 1 or len(chunks) == 1:
        results = []
        iterator = chunks
        if progress:
            from .progress import progress_bar

            iterator = progress_bar(chunks, desc="features", unit="chunk", leave=False)
        for chunk in iterator:
            results.append(_features_chunk(chunk))
    else:
        with features_pool(workers) as pool:
            results = list(pool.map(_features_chunk, chunks))
    return np.concatenate(results).astype(np.float32)


def features_pool(workers: int):
    """A process pool for feature work; spawned, so a parent holding TensorFlow is never
    forked, and its workers exit if the parent is killed (cytogan_tf.workers)."""
    from .workers import process_pool

    return process_pool(workers, "spawn")


def features_table(images, **kwargs) -> pd.DataFrame:
    return pd.DataFrame(compute_features(images, **kwargs), columns=FEATURE_NAMES)
