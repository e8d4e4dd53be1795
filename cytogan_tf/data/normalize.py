"""Per-plate, per-channel percentile intensity normalisation to uint8.

Plates differ in gain and illumination (a batch effect the GAN should not learn), so each
plate's channels are stretched between their own low and high percentiles. The values
are computed once from a deterministic sample of the plate's images, stored in
`dataset.json`, and re-applied unchanged by `profile` to new images of the same kind.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

METHOD = "percentile"
DEFAULT_PERCENTILES = (0.1, 99.9)
CHANNELS = ("DNA", "Actin", "Tubulin")
# A plate's range is estimated from this many images and pixels per image; enough for
# stable 0.1/99.9 percentiles, small enough to be cheap next to segmentation.
DEFAULT_SAMPLE_IMAGES = 8
DEFAULT_SAMPLE_PIXELS = 200_000


def sample_images(image_ids: Sequence, n: int, seed: int = 0) -> list:
    """A reproducible subset of `image_ids` (all of them if there are at most `n`)."""
    ids = list(image_ids)
    if len(ids) <= n:
        return ids
    pick = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(pick)]


def channel_ranges(images: Iterable[np.ndarray], percentiles=DEFAULT_PERCENTILES,
                   pixels_per_image: int = DEFAULT_SAMPLE_PIXELS,
                   channels: Sequence[str] = CHANNELS) -> dict[str, list[float]]:
    """{channel: [lo, hi]} percentiles over a regular pixel subsample of `images` (HxWxC)."""
    samples = []
    for img in images:
        img = np.asarray(img, np.float32)
        step = max(1, int(np.sqrt(img.shape[0] * img.shape[1] / pixels_per_image)))
        samples.append(img[::step, ::step].reshape(-1, img.shape[-1]))
    if not samples:
        raise DataError("no images to compute the intensity normalisation from")
    pix = np.concatenate(samples, axis=0)
    lo, hi = np.percentile(pix, list(percentiles), axis=0)
    out = {}
    for i, name in enumerate(channels):
        l, h = float(lo[i]), float(hi[i])
        if h <= l:  # a flat channel: keep a unit range so division stays finite
            h = l + 1.0
        out[name] = [l, h]
    return out


def plate_normalization(plates: Mapping[str, Sequence], load: Callable[[object], np.ndarray],
                        percentiles=DEFAULT_PERCENTILES, sample_size: int = DEFAULT_SAMPLE_IMAGES,
                        seed: int = 0) -> dict:
    """The `normalization` block of dataset.json for {plate: [image keys]}.

    `load(key)` returns an HxWx3 raw-intensity image; only a seeded sample per plate is
    loaded. Plates are processed in sorted order so the result never depends on dict order.
    """
    per_plate = {}
    for plate in sorted(plates):
        keys = sample_images(plates[plate], sample_size, seed=seed)
        per_plate[str(plate)] = channel_ranges((load(k) for k in keys), percentiles)
    return {"method": METHOD, "percentiles": [float(p) for p in percentiles],
            "per_plate": per_plate}


def apply_ranges(image: np.ndarray, ranges: Mapping[str, Sequence[float]],
                 channels: Sequence[str] = CHANNELS) -> np.ndarray:
    """Stretch raw HxWxC intensities to uint8 0..255 with {channel: [lo, hi]}."""
    image = np.asarray(image, np.float32)
    lo = np.array([ranges[c][0] for c in channels], np.float32)
    hi = np.array([ranges[c][1] for c in channels], np.float32)
    scaled = (image - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def apply_normalization(image: np.ndarray, normalization: Mapping, plate: str,
                        fallback: str = "error") -> np.ndarray:
    """Apply a stored dataset.json normalisation to a raw image of `plate`.

    A plate the dataset never saw has no stored range: `fallback="error"` raises,
    `fallback="self"` computes the same percentiles from this image alone, and
    `fallback="mean"` uses the mean range over the stored plates.
    """
    if normalization.get("method") != METHOD:
        raise DataError(f"normalization method {normalization.get('method')!r} not supported")
    per_plate = normalization.get("per_plate", {})
    if str(plate) in per_plate:
        return apply_ranges(image, per_plate[str(plate)])
    if fallback == "self":
        return apply_ranges(image, channel_ranges([image], normalization["percentiles"]))
    if fallback == "mean" and per_plate:
        mean = {c: list(np.mean([r[c] for r in per_plate.values()], axis=0)) for c in CHANNELS}
        return apply_ranges(image, mean)
    raise DataError(f"plate {plate!r}: no stored normalisation (dataset has "
                    f"{', '.join(sorted(per_plate)) or 'none'})")
