"""Image grids and strips as PNG: sample sheets during training and the generate commands.

No TensorFlow here: grids are numpy arrays written with Pillow (a matplotlib dependency),
so any caller (training callbacks, CLI on an exported model) can use them.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from .io_utils import atomic_write_bytes


def to_uint8(images, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Float images in `value_range` (e.g. (-1, 1) for tanh outputs) -> uint8, clipped."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    lo, hi = value_range
    scaled = (images.astype(np.float32) - lo) / (hi - lo)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def grid_shape(n: int, ncols: int | None = None) -> tuple[int, int]:
    """Rows and columns for `n` cells: as square as possible unless `ncols` is given."""
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / ncols)), ncols


def grid_pixel_size(n: int, height: int, width: int, ncols: int | None = None, pad: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of the grid `make_grid` builds."""
    rows, cols = grid_shape(n, ncols)
    return rows * height + (rows - 1) * pad, cols * width + (cols - 1) * pad


def make_grid(images, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one [rows*H + gaps, cols*W + gaps, C] image.

    Unfilled cells of the last row and the `pad`-pixel gaps are `pad_value` (white).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [N, H, W, C] images, got shape {images.shape}")
    n, h, w, c = images.shape
    rows, cols = grid_shape(n, ncols)
    gh, gw = grid_pixel_size(n, h, w, ncols, pad)
    grid = np.full((gh, gw, c), pad_value, dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = r * (h + pad), col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write one uint8 [H, W, 3] (or [H, W, 1]) array as PNG, atomically."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_grid(path, images, ncols: int | None = None, value_range=(0.0, 1.0), pad: int = 2) -> np.ndarray:
    """Tile float or uint8 images into a grid PNG at `path`; returns the grid array."""
    grid = make_grid(to_uint8(images, value_range), ncols=ncols, pad=pad)
    write_png(path, grid)
    return grid
