"""The typical nucleus diameter of an image set, measured from its DNA images.

Why: every size setting of nucleus segmentation (smoothing, area limits, hole filling,
the split footprint, how far a cell grows) is a length in pixels that depends on the
cell line and the magnification. BBBC021's MCF7 values throw away 60 px CHO nuclei and
split them along their nucleoli. Measuring one length from the data and deriving the
rest from it lets `prepare` work on a new cell line without the user knowing any of them.

The estimate is a first pass that needs no size setting: a light blur, an Otsu threshold
on log intensities (so dim nuclei count too), holes filled, and the median equivalent
diameter of the objects that look like single nuclei (round, not clumps). Debris is
ignored by first taking the area-weighted median and dropping objects far below it.
"""

from __future__ import annotations

import numpy as np

MIN_OBJECTS = 3        # fewer round nuclei than this: the median of all objects is used
COARSE_MIN = 20.0      # below this (px) the half-resolution estimate is redone at full size
ROUND_SINGLE = 0.75    # clumps of touching nuclei are far from round; single nuclei are not


def log_otsu_mask(img: np.ndarray) -> np.ndarray:
    """Foreground by Otsu on log intensity (threshold.log_image), empty when the image
    has no intensity range or no object stands above its noise."""
    from skimage.filters import threshold_otsu

    from .threshold import has_signal, log_image

    logged, has_range = log_image(img)
    if not has_range:
        return np.zeros(img.shape, bool)
    mask = logged > threshold_otsu(logged)
    return mask if has_signal(img, mask) else np.zeros(img.shape, bool)


def object_diameters(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(equivalent diameters, roundness) of the components of `mask`, each measured at
    half its own height above the background: a low threshold finds dim nuclei but draws
    every nucleus too wide by its blur, and half maximum is where the true edge lies.

    Roundness is the widest inscribed disk over the equivalent diameter: about 1 for a
    single nucleus (0.8 for a 1.5:1 ellipse), well below for a clump of touching ones.
    """
    from scipy import ndimage as ndi

    from .threshold import background_level, fill_holes, trim_to_half_height

    if not mask.any() or mask.all():
        return np.zeros(0), np.zeros(0)
    img = np.asarray(image, np.float32)
    components, _ = ndi.label(fill_holes(mask))
    cores = trim_to_half_height(components, img, background_level(img, mask))
    cores, n = ndi.label(cores > 0)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    areas = np.bincount(cores.ravel(), minlength=n + 1)[1:].astype(float)
    inscribed = np.zeros(n + 1)
    inside = cores > 0
    np.maximum.at(inscribed, cores[inside], ndi.distance_transform_edt(inside)[inside])
    inscribed = inscribed[1:]
    big = areas >= 9  # single pixels of noise say nothing about size
    diam = np.sqrt(4 * areas[big] / np.pi)
    return diam, 2 * inscribed[big] / diam


def estimate_diameter(dna: np.ndarray) -> float | None:
    """Typical nucleus diameter (px) in one DNA image, or None when it has no nuclei."""
    return _typical(*_measure(np.asarray(dna, np.float32)))


def estimate_from_images(images, channel: int = 0) -> float | None:
    """One diameter from the objects of several HxWxC images pooled (DNA in `channel`),
    so sample images with a few nuclei each still give a measured value; None if none."""
    measured = [_measure(np.asarray(im, np.float32)[..., channel]) for im in images]
    if not measured:
        return None
    return _typical(np.concatenate([d for d, _ in measured]), np.concatenate([r for _, r in measured]))


def _measure(dna: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object diameters and roundness, measured at half resolution (a quarter of the
    work) unless the nuclei come out smaller than COARSE_MIN px there."""
    if min(dna.shape) >= 64:
        diam, roundness = _objects(dna, coarse=True)
        typical = _typical(diam, roundness)
        if typical is not None and typical >= COARSE_MIN:
            return diam, roundness
    return _objects(dna, coarse=False)


def _objects(dna: np.ndarray, coarse: bool) -> tuple[np.ndarray, np.ndarray]:
    from skimage.filters import gaussian
    from skimage.transform import downscale_local_mean

    img = downscale_local_mean(dna, (2, 2)) if coarse else dna
    blurred = gaussian(img, sigma=1.0, preserve_range=True)
    diam, roundness = object_diameters(blurred, log_otsu_mask(blurred))
    return (2 * diam if coarse else diam), roundness


def _typical(diam: np.ndarray, roundness: np.ndarray) -> float | None:
    """Median diameter of the round objects, ignoring specks; None without any object."""
    if len(diam) == 0:
        return None
    # Area-weighted median first: robust to many tiny specks of debris or noise.
    order = np.argsort(diam)
    weight = np.cumsum(diam[order] ** 2)
    rough = float(diam[order][np.searchsorted(weight, 0.5 * weight[-1])])
    keep = diam >= 0.4 * rough
    singles = keep & (roundness >= ROUND_SINGLE)
    if singles.sum() >= MIN_OBJECTS:
        return float(np.median(diam[singles]))
    # Mostly clumps: the widest disk inside each is about one nucleus across.
    return float(np.median((diam * np.minimum(roundness, 1.0))[keep]))


def dataset_diameter(samples, given: float | None = None) -> dict:
    """The nucleus diameter a whole data set is segmented at: `given` when set, else
    measured once from its sample images, so every shard job and resume agrees.
    Returns {"value", "source": "given" | "estimated" | "fallback", "images"}."""
    import logging

    from .segment import FALLBACK_DIAMETER

    if given is not None:
        return {"value": float(given), "source": "given", "images": 0}
    value = estimate_from_images(samples)
    if value is None:
        logging.getLogger(__name__).warning(
            "no nuclei in the %d sample images to measure their size; segmenting at %.0f px "
            "(pass --nucleus-diameter to set it)", len(samples), FALLBACK_DIAMETER)
        return {"value": FALLBACK_DIAMETER, "source": "fallback", "images": len(samples)}
    return {"value": round(value, 2), "source": "estimated", "images": len(samples)}
