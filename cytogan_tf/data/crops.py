"""Per image set: load the channels, segment, crop and mask (what prepare's workers run),
and what to tell the user when images or crop sizes do not fit.

Split from prepare.py, which plans, resumes and merges; this module holds the work one
image set needs and nothing about parts or state.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from ..errors import DataError
from . import normalize, shards
from .segment import SegmentParams, segment_image, segment_nuclei, seeds_from_points

CHANNELS = ("DNA", "Actin", "Tubulin")  # stacked in this order as the crops' RGB

class SaturatedImage(Exception):
    """A channel is mostly at its maximum value: skipped with a warning, never fatal."""


def load_image_set(row: Mapping, saturation_fraction: float = 0.5) -> np.ndarray:
    """HxWx3 float32 raw image of one row.

    Raises DataError naming the file for unreadable files, unsupported bit depths,
    channels of different bit depth or shape; SaturatedImage naming a saturated file.
    """
    from .bbbc021 import read_channel

    chans = []
    for c in CHANNELS:
        path = row[f"PathName_{c}"]
        img = read_channel(path)
        if img.dtype.kind == "u":
            top = np.iinfo(img.dtype).max
            if np.count_nonzero(img == top) > saturation_fraction * img.size:
                raise SaturatedImage(f"{path}: saturated ({saturation_fraction:.0%}+ of pixels "
                                     f"at {top}); image set skipped")
        chans.append((path, img))
    (p0, first), *rest = chans
    for path, img in rest:
        if img.shape != first.shape:
            raise DataError(f"{path}: image size {img.shape[1]}x{img.shape[0]} differs from "
                            f"{p0} ({first.shape[1]}x{first.shape[0]})")
        if img.dtype != first.dtype:
            raise DataError(f"{path}: bit depth {img.dtype} differs from {p0} ({first.dtype})")
    return np.stack([img for _, img in chans], axis=-1).astype(np.float32)


def process_image_set(task: dict) -> dict:
    """Segment, crop, mask and normalise one image set (runs in a worker process).

    Returns {"status": "ok"|"bad"|"saturated", "file", "reason", "crops" uint8 [n,c,c,3],
    "cells": [(object_number, x, y), ...]}.
    """
    row, opts = task["row"], task["options"]
    crop = opts["crop_size"]
    params = SegmentParams(**opts["segmentation"])
    try:
        image = load_image_set(row, opts["saturation_fraction"])
    except SaturatedImage as exc:
        return {"status": "saturated", "file": named_file(str(exc), row), "reason": str(exc)}
    except DataError as exc:
        status = "bad" if opts["skip_bad"] else "error"  # error: reported with the others
        return {"status": status, "file": named_file(str(exc), row), "reason": str(exc)}

    points = task.get("points")
    if points is None:
        seg = segment_image(image, params)
        labels, centres, cells = seg.labels, seg.centroids, seg.cells
    else:
        nuclei = segment_nuclei(image[..., 0], params)
        seeds = seeds_from_points(points, image.shape[:2], nuclei)
        seg = segment_image(image, params, nuclei=seeds)
        labels = np.arange(1, len(points) + 1, dtype=np.int32)
        centres, cells = np.asarray(points, float).reshape(-1, 2), seg.cells

    ranges = task["ranges"]
    if ranges is None:  # the plate had no usable image when the normalisation was computed
        raise DataError(f"{row['PathName_DNA']}: readable now but not when plate "
                        f"{row['Metadata_Plate']} was normalised; delete the .parts directory")
    h, w = image.shape[:2]
    half = crop // 2
    out_crops, out_cells = [], []
    fits = crop_fits(centres, h, w)
    for lab, (x, y) in zip(labels, centres):
        r0, c0 = int(round(y)) - half, int(round(x)) - half
        if r0 < 0 or c0 < 0 or r0 + crop > h or c0 + crop > w:
            continue  # cut by the image border: a partial cell would teach the GAN edges
        patch = normalize.apply_ranges(image[r0:r0 + crop, c0:c0 + crop], ranges)
        if opts["mask"]:
            patch = patch * (cells[r0:r0 + crop, c0:c0 + crop] == lab)[..., None].astype(np.uint8)
        out_crops.append(patch)
        out_cells.append((int(lab), float(x), float(y)))
    crops = np.stack(out_crops) if out_crops else np.zeros((0, crop, crop, 3), np.uint8)
    return {"status": "ok", "crops": crops, "cells": out_cells, "found": len(labels), "fits": fits}


def crop_fits(centres, h: int, w: int) -> dict:
    """For each allowed crop size, how many of these cells a crop of it keeps whole in
    the image (to suggest a crop size when the chosen one is cut by the border)."""
    out = {}
    for size in shards.CROP_SIZES:
        half = size // 2
        n = 0
        for x, y in centres:
            r0, c0 = int(round(y)) - half, int(round(x)) - half
            n += r0 >= 0 and c0 >= 0 and r0 + size <= h and c0 + size <= w
        out[str(size)] = int(n)
    return out


def named_file(message: str, row: Mapping) -> str:
    """The file a DataError message is about (its first token), else the DNA path."""
    head = message.split(":", 1)[0].strip()
    return head if os.sep in head or head.lower().endswith((".tif", ".tiff")) else str(row["PathName_DNA"])


def all_bad_files(rows, options) -> list[str]:
    from ..progress import progress_bar

    bad = []
    for row in progress_bar(rows, desc="checking images", unit="image", enabled=options.progress):
        try:
            load_image_set(row, options.saturation_fraction)
        except SaturatedImage:
            continue
        except DataError as exc:
            bad.append(str(exc))
    return bad


def bad_files_error(reasons: list[str], shown: int = 10) -> DataError:
    """One DataError naming every bad input file found (the first `shown` in full)."""
    head = reasons[0] if len(reasons) == 1 else f"{len(reasons)} bad image files: " + "; ".join(reasons[:shown])
    more = f"; ... and {len(reasons) - shown} more" if len(reasons) > shown else ""
    return DataError(f"{head}{more} (fix them, or pass --skip-bad to leave their image sets out)")


def suggest_crop(summaries, found: int) -> str:
    """The largest allowed crop size that keeps at least half the cells found."""
    fits = {int(k): 0 for k in shards.CROP_SIZES}
    for s in summaries:
        for size, n in s.get("fits", {}).items():
            fits[int(size)] = fits.get(int(size), 0) + int(n)
    good = [size for size, n in sorted(fits.items()) if n >= 0.5 * found]
    if good:
        return f"--crop-size {good[-1]} keeps {fits[good[-1]]} of them"
    best = max(fits, key=lambda size: (fits[size], -size))
    if fits[best]:
        return f"--crop-size {best} keeps the most ({fits[best]})"
    return f"the images are too small for the smallest crop size ({shards.CROP_SIZES[0]} px)"


CELLS_PER_CROP = 3.0  # a crop one cell fits in is about 3 nucleus diameters wide


def suggested_crop_size(diameter: float) -> int:
    """The smallest allowed crop about CELLS_PER_CROP nucleus diameters wide."""
    fits = [c for c in shards.CROP_SIZES if c >= CELLS_PER_CROP * diameter]
    return fits[0] if fits else shards.CROP_SIZES[-1]
