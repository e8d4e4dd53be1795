"""Real cells in the generator's latent space: encode, reconstruct, move along treatments.

A BiGAN export maps cells to z through its `encode` signature. For the other archs the
generator is inverted by optimisation: Adam on z minimising the pixel error of G(z) plus
a feature-matching term on the discriminator's features (the exported encoder), from the
best of a few random starts. Both work on exports only, so what a biologist sees here is
what a served model does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

METHODS = ("auto", "signature", "invert")


@dataclass
class InversionSettings:
    steps: int = 300
    learning_rate: float = 0.05
    # Weight of the D-feature term relative to pixel MSE. Measured on the demo LSGAN
    # (64 real cells, 200 steps): start 0.0114; weight 0 -> 0.0045, 0.1 -> 0.0057,
    # 1 -> 0.0092. 0.1 keeps most of the pixel fit while matching D's view of the cell.
    feature_weight: float = 0.1
    prior_weight: float = 1e-3    # keeps z near where N(0, I) latents live
    restarts: int = 8             # random starts per cell; the best by pixel error is optimised
    seed: int = 0


class LatentModels:
    """A generator export and its sibling encoder export (same name and version)."""

    def __init__(self, path):
        import tensorflow as tf

        from .export import read_export_metadata, resolve_export_dir

        path = resolve_export_dir(path)
        meta = read_export_metadata(path)
        role = meta.get("role")
        if role not in ("generator", "encoder"):
            raise DataError(f"{path}: export metadata names no role (generator or encoder)")
        siblings = meta.get("models") or {}
        other = "encoder" if role == "generator" else "generator"
        if other not in siblings:
            raise DataError(f"{path}: metadata does not name its {other} export")
        other_path = path.parent.parent / siblings[other] / path.name
        if not (other_path / "saved_model.pb").is_file():
            raise DataError(f"{other_path}: the {other} exported beside {path} is missing")
        paths = {role: path, other: other_path}
        self.paths, self.metadata = paths, meta
        # The loaded objects must stay referenced: signatures hold their variables weakly.
        self._loaded = {r: tf.saved_model.load(str(p)) for r, p in paths.items()}
        self._generate = self._loaded["generator"].signatures["serving_default"]
        self._features = self._loaded["encoder"].signatures["serving_default"]
        self._encode = self._loaded["encoder"].signatures.get("encode")
        self.latent_dim = int(self._generate.structured_input_signature[1]["z"].shape[-1])
        self.image_size = int(meta.get("image_size") or
                              self._features.structured_input_signature[1]["images"].shape[1])
        self.name = str(meta.get("name") or path.parent.name)

    @property
    def path(self) -> Path:  # the encoder side, as `profiling.ensure_shards` expects
        return self.paths["encoder"]

    @property
    def has_encode(self) -> bool:
        return self._encode is not None

    def generate(self, z) -> np.ndarray:
        import tensorflow as tf

        out = self._generate(z=tf.constant(np.asarray(z, np.float32)))["images"]
        return np.clip(out.numpy(), 0.0, 1.0)

    def check_images(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        want = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != want:
            raise DataError(f"images are {images.shape[1:]}, the export {self.paths['generator']} "
                            f"takes {want}")
        return images

    def resolve_method(self, method: str) -> str:
        """"auto" -> "signature" where the export has `encode`, else "invert"."""
        if method not in METHODS:
            raise DataError(f"unknown encoding method {method!r} ({', '.join(METHODS)})")
        if method == "auto":
            return "signature" if self.has_encode else "invert"
        return method

    def encode(self, images, method: str = "auto", settings: InversionSettings | None = None):
        """(z [B, latent], pixel MSE of G(z) per cell, MSE at the start per cell or None)."""
        images = self.check_images(images)
        method = self.resolve_method(method)
        if method == "signature":
            if not self.has_encode:
                raise DataError(f"{self.paths['encoder']}: no `encode` signature (only BiGAN exports "
                                f"have one); use --method invert")
            import tensorflow as tf

            z = self._encode(images=tf.constant(images))["z"].numpy()
            return z, _mse(self.generate(z), images), None
        return self.invert(images, settings or InversionSettings())

    def invert(self, images, settings: InversionSettings):
        """z with G(z) close to `images`, by Adam from the best of `restarts` random starts."""
        import tensorflow as tf

        from .latent import sample_latent

        images = self.check_images(images)
        n = len(images)
        if n == 0:
            return np.zeros((0, self.latent_dim), np.float32), np.zeros(0), np.zeros(0)
        starts = sample_latent(n * settings.restarts, self.latent_dim, seed=settings.seed)
        starts = starts.reshape(settings.restarts, n, self.latent_dim)
        errors = np.stack([_mse(self.generate(s), images) for s in starts])
        z0 = starts[np.argmin(errors, axis=0), np.arange(n)]
        start_mse = errors.min(axis=0)

        x = tf.constant(images)
        target = self._features(images=x)["embeddings"]
        scale = tf.reduce_mean(tf.square(target)) + 1e-8
        import keras

        z = tf.Variable(z0)
        opt = keras.optimizers.Adam(settings.learning_rate)
        opt.build([z])  # slots now, not inside the tf.function
        generate, features = self._generate, self._features

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                recon = tf.clip_by_value(generate(z=z)["images"], 0.0, 1.0)
                pixel = tf.reduce_mean(tf.square(recon - x), axis=[1, 2, 3])
                feat = tf.reduce_mean(tf.square(features(images=recon)["embeddings"] - target), axis=1) / scale
                prior = tf.reduce_mean(tf.square(z), axis=1)
                loss = tf.reduce_sum(pixel + settings.feature_weight * feat + settings.prior_weight * prior)
            opt.apply_gradients([(tape.gradient(loss, z), z)])

        for _ in range(int(settings.steps)):
            step()
        z_final = z.numpy()
        final_mse = _mse(self.generate(z_final), images)
        worse = final_mse > start_mse  # the feature term can trade pixels away: keep the start
        z_final[worse], final_mse[worse] = z0[worse], start_mse[worse]
        return z_final, final_mse, start_mse


def _mse(a, b) -> np.ndarray:
    return np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))


# --------------------------------------------------------------------------- selections


def parse_selector(text: str) -> list[tuple[str, str]]:
    """'Metadata_Compound=taxol;Metadata_Concentration=1' -> [(column, value), ...]."""
    terms = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"selector {text!r}: expected COLUMN=VALUE (several joined by ';')")
        col, value = part.split("=", 1)
        terms.append((col.strip(), value.strip()))
    if not terms:
        raise DataError(f"selector {text!r}: expected COLUMN=VALUE")
    return terms


def is_selector(text: str) -> bool:
    return "=" in str(text)


def select_rows(table, text: str):
    """Boolean mask of the rows `text` selects; a one-line error naming what exists when a
    column is unknown or nothing matches."""
    mask = np.ones(len(table), bool)
    for col, value in parse_selector(text):
        if col not in table.columns:
            cols = ", ".join(c for c in table.columns if c.startswith("Metadata_"))
            raise DataError(f"selector {text!r}: no column {col!r}; columns: {cols}")
        column = table[col]
        hit = column.astype(str) == value
        try:  # numbers match by value: 1 == 1.0
            hit |= np.isclose(column.astype(float), float(value))
        except (TypeError, ValueError):
            pass
        mask &= hit.to_numpy()
    if not mask.any():
        col = parse_selector(text)[-1][0]
        values = sorted(map(str, table[col].unique()))
        shown = ", ".join(values[:25]) + (f", ... ({len(values)} in all)" if len(values) > 25 else "")
        raise DataError(f"selector {text!r} matches no cell; {col} has: {shown}")
    return mask


# --------------------------------------------------------------------------- encoded tables

LATENTS_STEM = "latents"


def read_latents(path):
    """(table, z columns) of a `cytogan encode` output directory."""
    import pandas as pd

    path = Path(path)
    pq = path / f"{LATENTS_STEM}.parquet"
    if not pq.is_file():
        raise DataError(f"{pq}: missing; run `cytogan encode EXPORT --data SHARDS --out {path}` first")
    table = pd.read_parquet(pq)
    cols = [c for c in table.columns if c.startswith("z_")]
    if not cols:
        raise DataError(f"{pq}: no z_<i> columns (not a `cytogan encode` table)")
    return table, cols


def fit_gaussian(z: np.ndarray):
    """(mean, covariance) of a group's latents, the covariance Ledoit-Wolf shrunk so a
    group of fewer cells than latent dimensions still gives a proper Gaussian."""
    from sklearn.covariance import LedoitWolf

    z = np.asarray(z, np.float64)
    if len(z) < 2:
        return z.mean(0), np.eye(z.shape[1]) * 1e-6
    return z.mean(0), LedoitWolf().fit(z).covariance_


def treatment_strip(z_controls: np.ndarray, direction: np.ndarray, steps: int) -> np.ndarray:
    """Latents [n_cells * steps, D]: each control cell moved from t=0 to t=1 along
    `direction` (row-major: one row of the image per cell)."""
    t = np.linspace(0.0, 1.0, int(steps))
    return (z_controls[:, None, :] + t[None, :, None] * direction[None, None, :]).reshape(
        -1, z_controls.shape[1]).astype(np.float32)


def write_json(path, data) -> None:
    from .io_utils import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2))


class CellEncoder:
    """`profiling.cell_features`' encoder interface over `LatentModels.encode`: z columns
    named z_<i>, with the reconstruction errors of every batch kept for the summary."""

    name = "z"

    def __init__(self, models: LatentModels, method: str, settings: InversionSettings):
        self.models, self.method, self.settings = models, method, settings
        self.image_size, self.metadata, self.path = models.image_size, models.metadata, models.path
        self.mse, self.start_mse = [], []

    def __call__(self, images):
        z, mse, start = self.models.encode(images, self.method, self.settings)
        self.mse.append(mse)
        if start is not None:
            self.start_mse.append(start)
        return z

    def summary(self) -> dict:
        out = {}
        if self.mse:
            mse = np.concatenate(self.mse)
            out.update(reconstruction_mse_mean=float(mse.mean()),
                       reconstruction_mse_median=float(np.median(mse)))
        if self.start_mse:
            out["start_mse_mean"] = float(np.concatenate(self.start_mse).mean())
        return out


# --------------------------------------------------------------------------- figures


def cells_by_group(shards, per_group: int, seed: int = 0, key: str = "moa"):
    """(images float [0,1], labels) with up to `per_group` random cells of every value of
    the shards' `key` metadata (moa, compound, plate, ...)."""
    from .data.pipeline import make_dataset
    from .profiling import images_at

    # A first pass reads only the labels; the second keeps only the chosen crops.
    labels = np.concatenate([
        np.array([v.decode() if isinstance(v, bytes) else str(v) for v in batch[key].numpy()])
        for batch in make_dataset(shards, 512, with_metadata=True, scale="uint8")])
    rng = np.random.default_rng(seed)
    keep = []
    for value in sorted(set(labels)):
        idx = np.flatnonzero(labels == value)
        keep.extend(rng.choice(idx, min(per_group, len(idx)), replace=False))
    keep = np.sort(np.asarray(keep, int))
    return images_at(shards, keep).astype(np.float32) / 255.0, labels[keep]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "group"


def treatment_figures(models: LatentModels, shards, out_dir, *, per_group=8, n_cells=4, frames=6,
                      control="DMSO", settings: InversionSettings | None = None, seed=0) -> dict:
    """One PNG per MOA: `n_cells` control cells (rows) moved from themselves (left) along
    mean z(MOA) - mean z(control) to t=1 (right); plus reconstruction.png (real cells
    above G(z)). Returns {name: path}."""
    from .grids import write_grid

    out_dir = Path(out_dir)
    images, moas = cells_by_group(shards, per_group, seed)
    if control not in set(moas):
        raise DataError(f"{shards}: no {control} cells to move along treatment directions")
    z, _, _ = models.encode(images, "auto", settings or InversionSettings(seed=seed))
    paths = {}
    n_show = min(8, len(images))
    recon = models.generate(z[:n_show])
    paths["reconstruction"] = out_dir / "reconstruction.png"
    write_grid(paths["reconstruction"], np.concatenate([images[:n_show], recon]), ncols=n_show)
    ctrl = z[moas == control][:n_cells]
    for moa in sorted(set(moas) - {control}):
        direction = z[moas == moa].mean(0) - z[moas == control].mean(0)
        strip = models.generate(treatment_strip(ctrl, direction, frames))
        path = out_dir / f"arithmetic_{_slug(moa)}.png"
        write_grid(path, strip, ncols=frames)
        paths[f"arithmetic {moa}"] = path
    return paths
