"""Nuclei and cell segmentation of one field of view (scikit-image throughout).

The recipe follows CellProfiler's: nuclei are the primary objects (smoothed DNA,
threshold, small objects removed, holes filled, touching nuclei split by a marker
watershed), cells are secondary objects grown from the nuclei by a watershed on the
cytoplasm stains (Actin + Tubulin) and stopped by a foreground threshold.

What adapts to the images, so a new cell line needs no settings:
- every size (smoothing, area limits, hole filling, split distance, cell radius) is a
  multiple of the nucleus diameter, measured from the DNA images (nucleus_scale.py) or
  given as `nucleus_diameter`;
- the default threshold is two-level (threshold.py): log-Otsu finds dim and bright nuclei,
  then each nucleus is trimmed at half its own height;
- declumping splits on intensity seams where lone nuclei show one intensity peak each,
  and on shape x intensity where chromatin texture gives them several (`declump = auto`).
Every setting can also be given in a config's `[prepare]` section (`SegmentParams.from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping

import numpy as np

from ..errors import ConfigError


# Each size setting as a multiple of the nucleus diameter D (areas of D**2). At D = 24 px,
# MCF7 in BBBC021, they give the values the CytoGAN crops were made with.
PER_DIAMETER = {
    "smoothing_sigma": 1 / 16,
    "min_nucleus_area": 0.1,         # x D**2: debris (a disk of 0.36 D)
    "max_nucleus_area": 7.0,         # x D**2: unsplit clumps (a disk of 3 D)
    "max_hole_area": 0.2,            # x D**2: nucleolar holes (a disk of D / 2) are filled
    "min_nucleus_distance": 1 / 4,   # the split footprint: centres at least D / 4 apart
    "local_block_size": 4.0,         # local threshold window
    "cell_smoothing_sigma": 1 / 12,
    "max_cell_radius": 2.5,
}
FALLBACK_DIAMETER = 24.0  # when an image set has too few nuclei to measure (BBBC021's MCF7)
DECLUMP_METHODS = ("auto", "intensity", "shape", "combined")
# "auto" trusts intensity seams when at most this share of the lone nuclei (one shape
# maximum) show more than one intensity maximum. Measured: smooth synthetic nuclei
# 0-0.06 (small, dim, clumped, BBBC021-like), DSB 0.12, ExampleFly 0.16-0.28, the
# synthetic plates' textured chromatin 0.25-0.41, nucleolar 60 px nuclei 0.43.
MAX_MULTI_PEAK_SHARE = 0.1
MIN_LONE_NUCLEI = 10  # fewer lone nuclei than this: too few to judge, "combined" is used
SIZE_KEYS = tuple(PER_DIAMETER)
WORK_DIAMETER = 10.0  # px: nuclei are segmented at 10-15 px across (work_scale)
MIN_WORK_SCALE = 1.25  # below 1.25 x WORK_DIAMETER, nuclei are segmented as they are
INTENSITY_BLUR = 1 / 16  # intensity declumping looks at the stain blurred by D / 16
DIST_SIGMA_MIN, BLUR_MIN = 0.5, 0.5  # px floors of the distance and intensity blurs


@dataclass(frozen=True)
class SegmentParams:
    """Segmentation settings. Size settings left at None follow the nucleus diameter,
    which is `nucleus_diameter` when given and otherwise measured from the images."""

    nucleus_diameter: float | None = None  # px; None: estimated (nucleus_scale)
    threshold: str = "adaptive"         # "adaptive", "otsu" (global) or "local"
    threshold_scale: float = 1.0        # multiply the threshold (>1: stricter)
    declump: str = "auto"               # split touching nuclei by "shape", "intensity", both ("combined"), or "auto"
    smoothing_sigma: float | None = None   # Gaussian sigma (px) before the nucleus threshold
    min_nucleus_area: int | None = None    # smaller objects are debris (px)
    max_nucleus_area: int | None = None    # larger objects are clumps we could not split (px)
    max_hole_area: int | None = None       # holes up to this area are filled (px)
    min_nucleus_distance: int | None = None  # minimum distance between split centres (px)
    local_block_size: int | None = None    # window (px, odd) of the local threshold
    cell_smoothing_sigma: float | None = None  # Gaussian sigma (px) on the cytoplasm image
    cell_threshold_scale: float = 0.7   # cell foreground = cytoplasm > scale * Otsu threshold
    max_cell_radius: int | None = None  # a cell reaches at most this far from its nucleus (px)

    @classmethod
    def from_config(cls, section: Mapping | None) -> "SegmentParams":
        """Build from a `[prepare]` config section; keys that are not parameters are ignored."""
        section = dict(section or {})
        kwargs = {f.name: section[f.name] for f in fields(cls) if f.name in section}
        params = cls(**kwargs)
        params.validate()
        return params

    def validate(self) -> None:
        from .threshold import METHODS

        if self.threshold not in METHODS:
            raise ConfigError(f"prepare.threshold: expected one of {', '.join(METHODS)}, "
                              f"got {self.threshold!r}")
        if self.declump not in DECLUMP_METHODS:
            raise ConfigError(f"prepare.declump: expected one of {', '.join(DECLUMP_METHODS)}, "
                              f"got {self.declump!r}")
        if self.nucleus_diameter is not None and not 3 <= float(self.nucleus_diameter) <= 500:
            raise ConfigError(f"prepare.nucleus_diameter: expected 3 to 500 px, got {self.nucleus_diameter}")
        b = self.local_block_size
        if b is not None and (b < 3 or b % 2 == 0):
            raise ConfigError(f"prepare.local_block_size must be odd and >= 3, got {b}")
        lo, hi = self.min_nucleus_area, self.max_nucleus_area
        if (lo is not None and lo < 1) or (lo is not None and hi is not None and hi <= lo):
            raise ConfigError("prepare.min_nucleus_area/max_nucleus_area: need 1 <= min < max")
        if any(v is not None and v < 0 for v in (self.smoothing_sigma, self.cell_smoothing_sigma)):
            raise ConfigError("prepare.*smoothing_sigma must be >= 0")

    def resolved(self, diameter: float | None = None) -> "SegmentParams":
        """Every size setting filled in from `diameter` (or nucleus_diameter, or the
        fallback) where it was left at None; explicit settings are kept."""
        d = float(self.nucleus_diameter or diameter or FALLBACK_DIAMETER)
        values = {}
        for key, per in PER_DIAMETER.items():
            if getattr(self, key) is not None:
                continue
            length = per * d * d if key.endswith("_area") else per * d
            if key == "local_block_size":
                values[key] = int(round(length)) // 2 * 2 + 1
            elif key.endswith("sigma"):
                values[key] = round(max(0.5, length), 2)
            else:
                values[key] = max(1, int(round(length)))
        if self.min_nucleus_area is None and self.max_nucleus_area is not None:
            values["min_nucleus_area"] = min(values["min_nucleus_area"], self.max_nucleus_area - 1)
        if self.max_nucleus_area is None and self.min_nucleus_area is not None:
            values["max_nucleus_area"] = max(values["max_nucleus_area"], self.min_nucleus_area + 1)
        return replace(self, nucleus_diameter=round(d, 2), **values)

    def scaled(self, factor: float) -> "SegmentParams":
        """These (resolved) settings for the image resized by `factor` (lengths x factor,
        areas x factor**2); used to segment large nuclei at a reduced scale."""
        values = {"nucleus_diameter": self.nucleus_diameter * factor}
        for key in SIZE_KEYS:
            v = getattr(self, key)
            if key.endswith("_area"):
                values[key] = max(1, int(round(v * factor * factor)))
            elif key == "local_block_size":
                values[key] = max(3, int(round(v * factor)) // 2 * 2 + 1)
            elif key.endswith("sigma"):
                values[key] = v * factor
            else:
                values[key] = max(1, int(round(v * factor)))
        return replace(self, **values)

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, key) is not None for key in SIZE_KEYS) and self.nucleus_diameter is not None


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


def resolve_params(dna: np.ndarray, params: SegmentParams | None) -> SegmentParams:
    """`params` with its size settings filled from this image's nucleus diameter when
    they are not set already (prepare resolves them once per data set instead)."""
    from .nucleus_scale import estimate_diameter

    params = params or SegmentParams()
    if params.is_resolved:
        return params
    return params.resolved(None if params.nucleus_diameter else estimate_diameter(dna))


def segment_nuclei(dna: np.ndarray, params: SegmentParams | None = None) -> np.ndarray:
    """Nucleus label image (int32, labels 1..N) from the DNA channel.

    Images whose nuclei are wider than 1.25 x WORK_DIAMETER are segmented at a reduced
    scale (`work_scale`) and the labels scaled back: the objects' outlines lose nothing
    an IoU can see, and the time per megapixel falls with the square of the factor.
    """
    params = resolve_params(dna, params)
    dna = np.asarray(dna, np.float32)
    small, work_params, factor = _at_work_scale(dna, params)
    labels = _segment_nuclei_at_scale(small, work_params)
    if factor == 1:
        return _drop_by_area(labels, params)
    return _drop_by_area(_to_full_size(labels, dna.shape), params)  # areas are exact only here


def _at_work_scale(dna: np.ndarray, params: SegmentParams):
    """(image, settings, factor) at the scale nuclei are segmented at (`work_scale`),
    reduced by area averaging: Pillow's box filter, exact block means at integer
    factors and area weights between them."""
    factor = work_scale(params.nucleus_diameter)
    if factor == 1:
        return dna, params, 1
    from PIL import Image

    h, w = max(1, round(dna.shape[0] / factor)), max(1, round(dna.shape[1] / factor))
    small = np.asarray(Image.fromarray(dna).resize((w, h), Image.Resampling.BOX))
    return small, params.scaled(1 / factor), factor


def work_scale(diameter: float) -> float:
    """By how much an image is reduced before segmentation: nuclei of 1.25-2
    WORK_DIAMETERs are brought to WORK_DIAMETER (fractional), larger ones by whole
    factors (nuclei then 10-15 px), smaller ones not at all.

    Measured (benchmarks/segmentation.py): 14.5 px nuclei at factor 1.45 keep F1 1.0
    at 2.1x less time; bringing larger nuclei to exactly 10 px instead costs F1 (DSB
    0.855 -> 0.819 at 23 px, nucleolar 49 px 0.969 -> 0.909), and 7 px (WORK_DIAMETER
    7) loses touching nuclei (clumped 0.920 -> 0.858).
    """
    ratio = float(diameter) / WORK_DIAMETER
    if ratio < MIN_WORK_SCALE:
        return 1
    return ratio if ratio < 2 else float(int(ratio))


def _to_full_size(labels: np.ndarray, shape) -> np.ndarray:
    """Work-scale labels back at the image's size, nearest neighbour (pixel centres)."""
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.intp)
    return labels[np.minimum(rows, labels.shape[0] - 1)[:, None], np.minimum(cols, labels.shape[1] - 1)]


def choose_declump(images, params: SegmentParams, channel: int = 0) -> dict:
    """What "auto" declumping settles on for a whole data set, from its sample images
    (HxWxC, DNA in `channel`; or HxW DNA), pooled as the diameter estimate is: one method
    for every image, so a compound that changes chromatin texture cannot change how its
    cells are split. Returns {"method", "lone_nuclei", "multi_peak_share", "images"}."""
    params = params.resolved() if not params.is_resolved else params
    lone = multi = 0
    for image in images:
        image = np.asarray(image, np.float32)
        dna = image[..., channel] if image.ndim == 3 else image
        small, work_params, _ = _at_work_scale(dna, params)
        mask, smoothed = _nucleus_mask(small, work_params)
        if mask.any():
            n_lone, n_multi = _lone_nucleus_peaks(*_landscapes(mask, smoothed, work_params),
                                                  work_params.min_nucleus_distance)
            lone, multi = lone + n_lone, multi + n_multi
    share = multi / lone if lone else None
    return {"method": _auto_declump(lone, multi), "lone_nuclei": int(lone),
            "multi_peak_share": None if share is None else round(share, 3), "images": len(images)}


def _auto_declump(n_lone: int, n_multi: int) -> str:
    """"auto"'s rule, from the lone nuclei and how many of them are multi-peaked."""
    one_peak = n_lone >= MIN_LONE_NUCLEI and n_multi <= MAX_MULTI_PEAK_SHARE * n_lone
    return "intensity" if one_peak else "combined"


def _drop_by_area(nuclei: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Objects outside the area limits removed, the rest numbered 1..N in label order."""
    areas = np.bincount(nuclei.ravel())
    keep = (areas >= params.min_nucleus_area) & (areas <= params.max_nucleus_area)
    keep[0] = False
    # A lookup table instead of skimage's relabel_sequential: one pass, no hashing.
    new_ids = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    return new_ids[nuclei]


def _segment_nuclei_at_scale(dna: np.ndarray, params: SegmentParams) -> np.ndarray:
    from . import threshold

    mask, smoothed = _nucleus_mask(dna, params)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    nuclei = _declump(mask, smoothed, params)
    if params.threshold == "adaptive":
        nuclei = threshold.trim_to_half_height(
            nuclei, smoothed, threshold.background_level(smoothed, mask))
    return nuclei.astype(np.int32)


def _nucleus_mask(dna: np.ndarray, params: SegmentParams):
    """(foreground mask with debris removed and holes filled, smoothed DNA)."""
    from skimage.morphology import remove_small_holes, remove_small_objects

    from . import threshold

    smoothed = _smooth(dna, params.smoothing_sigma)
    mask = threshold.foreground(smoothed, params.threshold, params.threshold_scale,
                                params.local_block_size)
    mask = remove_small_objects(mask, max_size=params.min_nucleus_area - 1)
    mask = remove_small_holes(mask, max_size=params.max_hole_area)
    return mask, smoothed


def _declump(mask: np.ndarray, smoothed: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Split touching nuclei with a marker watershed, as CellProfiler's declumping does.

    "shape": markers at maxima of the distance to the background, lines along necks;
    "intensity": markers at maxima of the stain blurred to nucleus scale, lines along dim
    seams, so touching nuclei part at the seam even where the neck is wide, and nuclei of
    different brightness at the brightness step;
    "combined": both at once, on distance x intensity: a dim nucleus beside a bright one
    keeps its own maximum, and the texture of a large nucleus does not make extra ones
    away from its middle;
    "auto": "intensity" where lone nuclei have one intensity maximum each (intensity
    seams are then nucleus borders), else "combined". prepare settles it once per data
    set (`choose_declump`); a lone call settles it from its own image.
    Measured in benchmarks/segmentation.py: intensity beats combined on DSB and
    touching equal nuclei (0.863 vs 0.855, 0.997 vs 0.979) and cuts nucleolar ones
    (0.675 vs 0.969) and ExampleFly's spotted ones (453 nuclei vs 380 where
    CellProfiler finds 327 in 01_POS002).
    """
    kind = params.declump
    # A settled "intensity" needs no distance transform, the costliest step left.
    components, n_comp, distance, intensity = _landscapes(mask, smoothed, params,
                                                          with_distance=kind != "intensity")
    md = params.min_nucleus_distance
    if kind == "auto":
        kind = _auto_declump(*_lone_nucleus_peaks(components, n_comp, distance, intensity, md))
    landscape = {"shape": distance, "intensity": intensity}.get(kind)
    if landscape is None:
        landscape = distance * intensity
    return _split_by_markers(components, n_comp, landscape, md)


def _landscapes(mask: np.ndarray, smoothed: np.ndarray, params: SegmentParams,
                with_distance: bool = True):
    """(components, their number, smoothed distance to background or None when not
    asked for, blurred stain above the mask's minimum): what the declumping methods
    split on."""
    from scipy import ndimage as ndi

    d = params.nucleus_diameter or FALLBACK_DIAMETER
    components, n_comp = ndi.label(mask, np.ones((3, 3), bool))
    distance = None
    if with_distance:  # one maximum per flat ridge after the blur
        distance = _smooth(ndi.distance_transform_edt(mask), max(DIST_SIGMA_MIN, d / 24))
    # A light blur, so chromatin grain does not make maxima but a dim neighbour does.
    blurred = _smooth(smoothed, max(BLUR_MIN, d * INTENSITY_BLUR))
    intensity = np.clip(blurred - float(np.min(blurred[mask])), 0, None)
    return components, n_comp, distance, intensity


def _lone_nucleus_peaks(components, n_comp, distance, intensity, min_distance):
    """(lone nuclei, how many of them show more than one intensity maximum). Lone
    nuclei are components with one shape maximum; nucleoli and coarse chromatin give
    them several intensity maxima, along which intensity declumping would cut."""
    shape_peaks = _maxima_per_component(components, n_comp, distance, min_distance)[2]
    lone = np.flatnonzero(shape_peaks == 1)
    lone = lone[lone > 0]
    if len(lone) == 0:
        return 0, 0
    intensity_peaks = _maxima_per_component(components, n_comp, intensity, min_distance)[2]
    return len(lone), int(np.sum(intensity_peaks[lone] > 1))


def _maxima_per_component(components, n_comp, landscape, min_distance):
    """(plateau labels, their number, maxima per component) of the landscape:
    its local maxima within `min_distance` px, a flat top counted once."""
    from scipy import ndimage as ndi

    mask = components > 0
    local_max = ndi.maximum_filter(landscape, size=2 * min_distance + 1)
    peaks = mask & (landscape >= local_max) & (landscape > 0)
    plateaus, n_plateaus = ndi.label(peaks, np.ones((3, 3), bool))
    component_of = np.zeros(n_plateaus + 1, np.int64)
    component_of[plateaus[peaks]] = components[peaks]   # a plateau lies in one component
    return plateaus, n_plateaus, np.bincount(component_of[1:], minlength=n_comp + 1)


def _split_by_markers(components: np.ndarray, n_comp: int, landscape: np.ndarray,
                      min_distance: int) -> np.ndarray:
    """Relabel `components`, cutting each one with more than one maximum of `landscape`
    (within `min_distance` px) by a marker watershed confined to those components.

    Written out rather than peak_local_max + one watershed of the whole field because
    most components hold a single nucleus: they need neither, and this is what keeps
    segmentation several times faster than CellProfiler per megapixel.
    """
    from skimage.segmentation import watershed

    if n_comp == 0:
        return components.astype(np.int32)
    plateaus, n_plateaus, per_component = _maxima_per_component(
        components, n_comp, landscape, min_distance)
    # Components with one maximum (or none) are one nucleus each: numbered 1..n_single.
    single = per_component <= 1
    single[0] = False
    n_single = int(single.sum())
    out = np.where(single, np.cumsum(single), 0).astype(np.int32)[components]
    clumps = (per_component > 1)[components]
    if clumps.any():
        # One watershed over all clumps at once; each marker floods only its own clump.
        markers = np.where(clumps & (plateaus > 0), plateaus, 0)
        cut = watershed(-landscape, markers, mask=clumps)
        used = np.zeros(n_plateaus + 1, bool)
        used[cut[clumps]] = True
        new_ids = (n_single + np.cumsum(used)).astype(np.int32)
        out[clumps] = new_ids[cut[clumps]]
    return out


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
    if not params.is_resolved:
        params = params.resolved()
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

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected HxWx3 image, got shape {image.shape}")
    params = resolve_params(image[..., 0], params)
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
