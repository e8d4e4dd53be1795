"""Walks through the generator's latent space: spherical interpolation and vector arithmetic.

Latent vectors drawn from a high-dimensional normal concentrate on a shell of radius
~sqrt(latent_dim); a straight line between two of them passes through the low-density
interior, so the paper-style interpolation follows the great circle (slerp) instead.
Pure numpy: usable on a run, on an exported generator, or on saved `.npy` vectors.
"""

from __future__ import annotations

import numpy as np

# Below this angle (radians) the vectors are treated as parallel: sin(omega) ~ 0 would
# divide by ~0, and the straight line is then indistinguishable from the arc anyway.
_PARALLEL_EPS = 1e-6


def sample_latent(n: int, latent_dim: int, seed: int | None = None, distribution: str = "normal") -> np.ndarray:
    """`n` latent vectors float32 [n, latent_dim], reproducible for a given seed."""
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        z = rng.standard_normal((n, latent_dim))
    elif distribution == "uniform":
        z = rng.uniform(-1.0, 1.0, size=(n, latent_dim))
    else:
        raise ValueError(f"unknown latent distribution {distribution!r} (normal|uniform)")
    return z.astype(np.float32)


def slerp(z0, z1, t) -> np.ndarray:
    """Spherical interpolation between two vectors at fraction(s) `t` in [0, 1].

    The angle is taken between the directions; the norm is interpolated linearly along
    the arc, so for equal-norm endpoints every point keeps that norm. `t` may be a scalar
    (returns [D]) or 1-D (returns [len(t), D]).
    """
    z0 = np.asarray(z0, dtype=np.float64)
    z1 = np.asarray(z1, dtype=np.float64)
    if z0.shape != z1.shape or z0.ndim != 1:
        raise ValueError(f"slerp needs two vectors of one shape, got {z0.shape} and {z1.shape}")
    t_arr = np.asarray(t, dtype=np.float64)
    ts = np.atleast_1d(t_arr)[:, None]
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if n0 == 0.0 or n1 == 0.0:
        out = (1.0 - ts) * z0 + ts * z1
    else:
        u0, u1 = z0 / n0, z1 / n1
        omega = np.arccos(np.clip(np.dot(u0, u1), -1.0, 1.0))
        if omega < _PARALLEL_EPS:
            out = (1.0 - ts) * z0 + ts * z1
        else:
            so = np.sin(omega)
            direction = (np.sin((1.0 - ts) * omega) * u0 + np.sin(ts * omega) * u1) / so
            out = direction * ((1.0 - ts) * n0 + ts * n1)
    out = out.astype(np.float32)
    return out[0] if t_arr.ndim == 0 else out


def lerp(z0, z1, t) -> np.ndarray:
    z0 = np.asarray(z0, dtype=np.float32)
    z1 = np.asarray(z1, dtype=np.float32)
    ts = np.atleast_1d(np.asarray(t, dtype=np.float32))[:, None]
    out = (1.0 - ts) * z0 + ts * z1
    return out[0] if np.ndim(t) == 0 else out


def interpolate(z0, z1, n: int, method: str = "slerp") -> np.ndarray:
    """`n` evenly spaced points from `z0` to `z1` inclusive, [n, D]."""
    if n < 2:
        raise ValueError(f"interpolate needs n >= 2 points, got {n}")
    ts = np.linspace(0.0, 1.0, n)
    if method == "slerp":
        return slerp(z0, z1, ts)
    if method == "lerp":
        return lerp(z0, z1, ts)
    raise ValueError(f"unknown interpolation {method!r} (slerp|lerp)")


def vector_arithmetic(z_a, z_b, z_c) -> np.ndarray:
    """mean(z_a) - mean(z_b) + mean(z_c): "a is to b as ? is to c" in latent space.

    Each argument is one vector [D] or a group [N, D]; averaging a group first (as in the
    DCGAN paper) cancels the idiosyncrasies of single samples.
    """
    means = []
    for name, z in (("a", z_a), ("b", z_b), ("c", z_c)):
        z = np.asarray(z, dtype=np.float64)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[0] == 0:
            raise ValueError(f"vector_arithmetic: group {name} must be [D] or [N, D], got {z.shape}")
        means.append(z.mean(axis=0))
    if len({m.shape for m in means}) != 1:
        raise ValueError(f"vector_arithmetic: groups differ in dimension: {[m.shape for m in means]}")
    return (means[0] - means[1] + means[2]).astype(np.float32)
