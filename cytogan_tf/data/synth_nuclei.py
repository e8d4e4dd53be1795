"""Labelled nucleus fields: DNA images with their true label masks, to check segmentation.

Why: the only real labelled nuclei offline are one DSB2018 image, which has one cell line
and one size. The failure modes a new cell line brings (large textured nuclei with
nucleolar holes, nuclei that differ 10x in brightness, touching nuclei of different
brightness) are drawn here at any scale, so the benchmark and the tests can measure them
with exact ground truth. Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NucleusField:
    diameter: float = 20.0          # mean nucleus diameter (px)
    size_spread: float = 0.15       # coefficient of variation of the diameter
    shape: tuple[int, int] = (512, 512)
    density: float = 0.25           # fraction of the field covered by nuclei
    brightness_range: float = 1.0   # max/min brightness ratio (log-uniform): 10 = dim and bright
    touching: float = 0.0           # fraction of nuclei placed touching a neighbour
    nucleoli: bool = False          # dark nucleolar holes and coarse chromatin (large nuclei)
    background: float = 0.02        # flat background level (image max ~1)
    noise: float = 0.01             # Gaussian read noise (std)
    gradient: float = 0.0           # illumination falls off by this fraction across the field
    bit_depth: int = 16


PRESETS = {
    "small": NucleusField(diameter=16.0),
    "bbbc021": NucleusField(diameter=24.0, touching=0.2),
    "large": NucleusField(diameter=60.0, nucleoli=True, density=0.3, shape=(768, 768)),
    "dim": NucleusField(diameter=26.0, brightness_range=12.0, gradient=0.3),
    "clumped": NucleusField(diameter=24.0, brightness_range=4.0, touching=0.6, density=0.3),
}


def render_field(field: NucleusField, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image uint16/uint8 HxW, labels int32 HxW) for one field; label k is nucleus k."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = field.shape
    labels = np.zeros((h, w), np.int32)
    image = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mean_area = np.pi / 4 * field.diameter ** 2
    target = int(field.density * h * w / mean_area)
    placed: list[tuple[float, float, float]] = []   # (y, x, radius)
    attempts = 0
    while len(placed) < target and attempts < 50 * target:
        attempts += 1
        d = field.diameter * float(np.clip(rng.normal(1.0, field.size_spread), 0.6, 1.6))
        a = d / 2 * float(rng.uniform(1.0, 1.3))     # semi-axes with the same area as the disk
        b = (d / 2) ** 2 / a
        if placed and rng.random() < field.touching:
            # Next to a previous nucleus, overlapping it slightly: a clump to split.
            py, px, pr = placed[int(rng.integers(len(placed)))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = 0.85 * (pr + b)
            cy, cx = py + dist * np.sin(ang), px + dist * np.cos(ang)
            touch = True
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            touch = False
        if not touch and any(np.hypot(cy - py, cx - px) < 1.1 * (pr + a) for py, px, pr in placed):
            continue
        theta = rng.uniform(0, np.pi)
        r0, r1 = int(max(0, cy - a - 2)), int(min(h, cy + a + 3))
        c0, c1 = int(max(0, cx - a - 2)), int(min(w, cx + a + 3))
        if r1 <= r0 or c1 <= c0:
            continue
        dy, dx = yy[r0:r1, c0:c1] - cy, xx[r0:r1, c0:c1] - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        free = inside & (labels[r0:r1, c0:c1] == 0)
        if not free.any() or free.sum() < 0.85 * inside.sum():
            continue
        k = len(placed) + 1
        labels[r0:r1, c0:c1][free] = k
        level = float(np.exp(rng.uniform(0, np.log(field.brightness_range)))) / field.brightness_range
        # Nuclei are thicker in the middle: a mild dome, as in widefield DNA images.
        body = free.astype(np.float32) * level * (1.0 - 0.3 * ((u / a) ** 2 + (v / b) ** 2))
        if field.nucleoli:
            body *= _chromatin(rng, free, d)
        image[r0:r1, c0:c1] += body
        placed.append((cy, cx, (a + b) / 2))

    image = ndi.gaussian_filter(image, 1.0)              # the optics' blur
    if field.gradient:
        image *= (1.0 - field.gradient * xx / w).astype(np.float32)
    image += field.background
    image += rng.normal(0, field.noise, image.shape).astype(np.float32)
    top = 2 ** field.bit_depth - 1
    out = np.clip(image * 0.8 * top, 0, top).astype(np.uint16 if field.bit_depth > 8 else np.uint8)
    from skimage.segmentation import relabel_sequential

    return out, relabel_sequential(labels)[0].astype(np.int32)


def _chromatin(rng, mask: np.ndarray, diameter: float) -> np.ndarray:
    """Multiplicative texture for one large nucleus: coarse chromatin and 1-4 dark nucleoli."""
    from scipy import ndimage as ndi

    tex = ndi.gaussian_filter(rng.normal(0, 1, mask.shape), diameter / 20)
    tex = 1.0 + 0.25 * tex / (tex.std() + 1e-6)
    ys, xs = np.nonzero(mask)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(len(ys)))
        rr = diameter * rng.uniform(0.06, 0.12)
        dist = np.hypot(np.arange(mask.shape[0])[:, None] - ys[i], np.arange(mask.shape[1])[None] - xs[i])
        tex = np.where(dist < rr, 0.25, tex)
    return np.clip(tex, 0.1, None).astype(np.float32)
