"""Nuclei and cell segmentation of one field of view (scikit-image throughout).

The recipe is the classic CellProfiler one, which is what the CytoGAN paper's crops came
from: nuclei are the primary objects (smoothed DNA, global Otsu or local threshold,
small-object removal, hole filling, touching nuclei split by a distance-transform
watershed), cells are secondary objects grown from the nuclei by a watershed on the
cytoplasm stains (Actin + Tubulin) and stopped by a foreground threshold.

Defaults suit BBBC021-like images (MCF7 at 1024x1280, nuclei ~15-40 px across); every
parameter can be set from a config's `[prepare]` section via `SegmentParams.from_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class SegmentParams:
    smoothing_sigma: float = 1.5      # Gaussian sigma (px) before the nucleus threshold
    threshold: str = "otsu"           # "otsu" (global) or "local"
    threshold_scale: float = 1.0      # multiply the threshold (>1: stricter)
    local_block_size: int = 101       # window (px, odd) of the local threshold
    min_nucleus_area: int = 60        # smaller objects are debris (px)
    max_nucleus_area: int = 4000      # larger objects are clumps we could not split (px)
    min_nucleus_distance: int = 6     # minimum distance between split nucleus centres (px)
    cell_smoothing_sigma: float = 2.0  # Gaussian sigma (px) on the cytoplasm image
    cell_threshold_scale: float = 0.7  # cell foreground = cytoplasm > scale * Otsu threshold
    max_cell_radius: int = 60         # a cell reaches at most this far from its nucleus (px)

    @classmethod
    def from_config(cls, section: Mapping | None) -> "SegmentParams":
        """Build from a `[prepare]` config section; keys that are not parameters are ignored."""
        section = dict(section or {})
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for name in known:
            if name in section:
                kwargs[name] = section[name]
        params = cls(**kwargs)
        params.validate()
        return params

    def validate(self) -> None:
        if self.threshold not in ("otsu", "local"):
            raise ConfigError(f"prepare.threshold: expected 'otsu' or 'local', got {self.threshold!r}")
        if self.local_block_size < 3 or self.local_block_size % 2 == 0:
            raise ConfigError(f"prepare.local_block_size must be odd and >= 3, got {self.local_block_size}")
        if self.min_nucleus_area < 1 or self.max_nucleus_area <= self.min_nucleus_area:
            raise ConfigError("prepare.min_nucleus_area/max_nucleus_area: need 1 <= min < max")
        if self.smoothing_sigma < 0 or self.cell_smoothing_sigma < 0:
            raise ConfigError("prepare.*smoothing_sigma must be >= 0")


@dataclass
class Segmentation:
    """Label images (0 = background; cell k grew from nucleus k) and per-nucleus stats."""

    nuclei: np.ndarray       # int32 HxW
    cells: np.ndarray        # int32 HxW
    labels: np.ndarray       # int32 [N] label ids, ascending
    centroids: np.ndarray    # float64 [N, 2] as (x, y) = (column, row)
    areas: np.ndarray        # int64 [N] nucleus areas (px)

    def __len__(self) -> int:
        return len(self.labels)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    image = np.asarray(image, dtype=np.float32)
    return gaussian(image, sigma=sigma, preserve_range=True) if sigma > 0 else image


def _foreground(smoothed: np.ndarray, params: SegmentParams) -> np.ndarray:
    from skimage.filters import threshold_local, threshold_otsu

    if float(smoothed.max()) <= float(smoothed.min()):
        return np.zeros(smoothed.shape, bool)  # flat image: nothing to find
    otsu = threshold_otsu(smoothed)
    if params.threshold == "local":
        local = threshold_local(smoothed, params.local_block_size, method="gaussian")
        # A local threshold alone turns flat background noise into objects; require the
        # pixel to also clear a fraction of the global level.
        return (smoothed > local * params.threshold_scale) & (smoothed > 0.5 * otsu)
    return smoothed > otsu * params.threshold_scale


def segment_nuclei(dna: np.ndarray, params: SegmentParams | None = None) -> np.ndarray:
    """Nucleus label image (int32, labels 1..N) from the DNA channel."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.morphology import remove_small_holes, remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    params = params or SegmentParams()
    smoothed = _smooth(dna, params.smoothing_sigma)
    mask = _foreground(smoothed, params)
    mask = remove_small_objects(mask, max_size=params.min_nucleus_area - 1)
    mask = remove_small_holes(mask, max_size=params.min_nucleus_area)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)

    # Split touching nuclei: one marker per maximum of the distance to the background.
    distance = ndi.distance_transform_edt(mask)
    distance = _smooth(distance, 1.0)  # avoids several maxima along one flat ridge
    components = label(mask)
    peaks = peak_local_max(distance, min_distance=params.min_nucleus_distance,
                           labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Components without a peak (tiny, flat) keep one marker at their deepest pixel.
    unmarked = np.setdiff1d(np.unique(components[mask]), np.unique(components[markers > 0]))
    if len(unmarked):
        for comp_id, pos in zip(unmarked, ndi.maximum_position(distance, components, unmarked)):
            markers[pos] = markers.max() + 1
    nuclei = watershed(-distance, markers, mask=mask)

    areas = np.bincount(nuclei.ravel())
    bad = (areas < params.min_nucleus_area) | (areas > params.max_nucleus_area)
    bad[0] = False
    nuclei[bad[nuclei]] = 0
    nuclei, _, _ = relabel_sequential(nuclei)
    return nuclei.astype(np.int32)


def cytoplasm_image(actin: np.ndarray, tubulin: np.ndarray) -> np.ndarray:
    """Actin + Tubulin, each scaled by its own robust range so neither stain dominates."""
    out = np.zeros(np.shape(actin), np.float32)
    for ch in (actin, tubulin):
        ch = np.asarray(ch, np.float32)
        lo, hi = np.percentile(ch[::4, ::4], [1.0, 99.5])
        if hi > lo:
            out += np.clip((ch - lo) / (hi - lo), 0, 1)
    return out


def segment_cells(nuclei: np.ndarray, cytoplasm: np.ndarray,
                  params: SegmentParams | None = None) -> np.ndarray:
    """Cell label image grown from `nuclei` (cell k contains nucleus k)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    params = params or SegmentParams()
    if nuclei.max() == 0:
        return np.zeros(nuclei.shape, np.int32)
    smoothed = _smooth(cytoplasm, params.cell_smoothing_sigma)
    if float(smoothed.max()) > float(smoothed.min()):
        foreground = smoothed > params.cell_threshold_scale * threshold_otsu(smoothed)
    else:
        foreground = np.zeros(nuclei.shape, bool)
    foreground |= nuclei > 0
    if params.max_cell_radius > 0:
        foreground &= ndi.distance_transform_edt(nuclei == 0) <= params.max_cell_radius
    # Flood from the nuclei down the cytoplasm intensity: boundaries settle in the dim
    # gaps between neighbouring cells, as in CellProfiler's secondary objects.
    cells = watershed(-smoothed, nuclei, mask=foreground)
    return cells.astype(np.int32)


def segment_image(image: np.ndarray, params: SegmentParams | None = None,
                  nuclei: np.ndarray | None = None) -> Segmentation:
    """Segment one HxWx3 (DNA, Actin, Tubulin) field of view.

    `nuclei` may be given (e.g. seeds from a CellProfiler object table) to skip the
    nucleus step.
    """
    from skimage.measure import regionprops_table

    params = params or SegmentParams()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected HxWx3 image, got shape {image.shape}")
    if nuclei is None:
        nuclei = segment_nuclei(image[..., 0], params)
    cells = segment_cells(nuclei, cytoplasm_image(image[..., 1], image[..., 2]), params)
    props = regionprops_table(nuclei, properties=("label", "centroid", "area"))
    return Segmentation(
        nuclei=nuclei,
        cells=cells,
        labels=np.asarray(props["label"], np.int32),
        centroids=np.stack([props["centroid-1"], props["centroid-0"]], axis=1)
        if len(props["label"]) else np.zeros((0, 2)),
        areas=np.asarray(props["area"], np.int64),
    )


def seeds_from_points(points_xy: np.ndarray, shape: tuple[int, int],
                      nuclei: np.ndarray | None = None, radius: int = 3) -> np.ndarray:
    """Seed label image for externally given nucleus centres (label k+1 for point k).

    A point inside a segmented nucleus takes over that nucleus' pixels (first come);
    otherwise it gets a small disk, so cells can still be grown and masked around it.
    """
    from skimage.draw import disk

    seeds = np.zeros(shape, np.int32)
    claimed: set[int] = set()
    for k, (x, y) in enumerate(np.asarray(points_xy, float).reshape(-1, 2)):
        r, c = int(round(y)), int(round(x))
        if not (0 <= r < shape[0] and 0 <= c < shape[1]):
            continue
        nid = int(nuclei[r, c]) if nuclei is not None else 0
        if nid and nid not in claimed:
            claimed.add(nid)
            seeds[(nuclei == nid) & (seeds == 0)] = k + 1
        else:
            rr, cc = disk((r, c), radius, shape=shape)
            free = seeds[rr, cc] == 0
            seeds[rr[free], cc[free]] = k + 1
    return seeds
