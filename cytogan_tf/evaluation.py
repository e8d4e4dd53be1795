"""`cytogan evaluate`: MOA prediction from treatment profiles, and sample quality of a
generator against real cells.

Kept apart from `profiling` (which builds the tables) so evaluation runs on any
pycytominer-style table, including one made by CellProfiler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .io_utils import atomic_path, atomic_write_json
from .metrics import (
    MOA_COL, confusion_table, evaluable_treatments, feature_columns, frechet_distance,
    kernel_inception_distance, mean_average_precision, nearest_neighbor_moa,
)
from .profiling import read_profile_settings, read_profiles


def _write_csv(df: pd.DataFrame, path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def evaluate_table(profiles: pd.DataFrame) -> dict:
    """NSC / NSCB 1-NN accuracy and mAP on a treatment-profile table (no files)."""
    nsc = nearest_neighbor_moa(profiles, "nsc")
    nscb = nearest_neighbor_moa(profiles, "nscb")
    per_query, per_moa, overall_map = mean_average_precision(profiles)
    return {"nsc": nsc, "nscb": nscb, "map_per_query": per_query, "map_per_moa": per_moa,
            "map": overall_map}


def feature_set_name(settings: dict, profiles_dir: Path) -> str:
    """What the profiles are made of, for figure titles: 'encoder <model>', 'hand-made
    features' or 'hand-made + encoder <model>'."""
    features, model = settings.get("features"), settings.get("model")
    if features == "handcrafted":
        return "hand-made features"
    if features == "encoder":
        return f"encoder {model}" if model else "encoder features"
    if features == "both":
        return f"hand-made + encoder {model}" if model else "hand-made + encoder features"
    return str(model or features or profiles_dir.name)


def _control_notes(table: pd.DataFrame) -> dict:
    """Legend text for the positive-control MOA: which compounds it is."""
    ctrl = table[table[MOA_COL].astype(str) == "control"]
    if ctrl.empty or "Metadata_Compound" not in table.columns:
        return {}
    compounds = ", ".join(sorted(set(ctrl["Metadata_Compound"].astype(str))))
    return {"control": f"positive control ({compounds})"}


def evaluate_profiles(profiles_dir, out_dir=None, *, aggregation="mean", embedding="pca",
                      seed=0) -> dict:
    """Evaluate `treatments_<aggregation>` of a `cytogan profile` output directory.

    Writes metrics.json, moa_predictions.csv, map_per_moa.csv, confusion_nsc.png,
    confusion_nscb.png and embedding_<method>.png into `out_dir` (default: profiles_dir).
    """
    from .plots import embed_2d, plot_confusion, plot_embedding

    profiles_dir = Path(profiles_dir)
    out_dir = Path(out_dir) if out_dir is not None else profiles_dir
    table = read_profiles(profiles_dir, f"treatments_{aggregation}")
    settings = read_profile_settings(profiles_dir)
    result = evaluate_table(table)
    nsc, nscb = result["nsc"], result["nscb"]
    label = feature_set_name(settings, profiles_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(pd.concat([nsc.predictions, nscb.predictions], ignore_index=True),
               out_dir / "moa_predictions.csv")
    _write_csv(result["map_per_moa"], out_dir / "map_per_moa.csv")
    plot_confusion(confusion_table(nsc.predictions), out_dir / "confusion_nsc.png",
                   f"{label}: NSC 1-NN, accuracy {nsc.accuracy:.3f}")
    if nscb.n_queries:
        plot_confusion(confusion_table(nscb.predictions), out_dir / "confusion_nscb.png",
                       f"{label}: NSCB 1-NN, accuracy {nscb.accuracy:.3f}")
    feats = feature_columns(table)
    coords, axes = embed_2d(table[feats].to_numpy(np.float64), embedding, seed=seed)
    n_treatments = len(table)
    plot_embedding(coords, table[MOA_COL].fillna("unknown"), out_dir / f"embedding_{embedding}.png",
                   f"{label}: {n_treatments} treatment profiles ({embedding.upper()}, "
                   f"{settings.get('normalize') or 'unknown'} normalisation)",
                   axis_names=axes, notes=_control_notes(table))

    n_eval = len(evaluable_treatments(table))
    metrics = {
        "profiles": str(profiles_dir),
        "aggregation": aggregation,
        "model": settings.get("model"),
        "features": settings.get("features"),
        "normalize": settings.get("normalize"),
        "n_treatments": int(n_eval),
        "n_features": len(feats),
        "nsc": nsc.summary(),
        "nscb": nscb.summary(),
        "map": result["map"],
        "map_per_moa": dict(zip(result["map_per_moa"]["Metadata_MOA"],
                                result["map_per_moa"]["mean_average_precision"])),
        "chance_note": "chance_prior = sum of squared MOA frequencies among the queries "
                       "(a guess drawn from the class frequencies); chance_uniform = 1/n_moa",
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def format_report(metrics: dict) -> str:
    """A short plain-text table: accuracy beside chance level."""
    lines = [f"{'metric':<8} {'value':>7} {'chance':>7}  queries  MOAs", "-" * 44]
    for mode in ("nsc", "nscb"):
        m = metrics[mode]
        lines.append(f"{mode.upper():<8} {m['accuracy']:>7.3f} {m['chance_prior']:>7.3f}  "
                     f"{m['n_queries']:>7}  {m['n_moas']}")
    lines.append(f"{'mAP':<8} {metrics['map']:>7.3f}")
    dropped = metrics["nscb"]["moas_dropped"]
    if dropped:
        lines.append(f"NSCB: no other-batch match for {len(dropped)} MOA(s), left out: {', '.join(dropped)}")
    lines.append("chance = sum of squared MOA frequencies (random guess by class frequency)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- samples


def standardize_by(reference: np.ndarray):
    """z-scoring with `reference`'s mean and std (constant columns left unscaled), for
    hand-made features, whose scales differ wildly (areas vs fractions): no single
    feature then dominates a distance."""
    mu, sd = reference.mean(0), reference.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return lambda f: (f - mu) / sd


def handcrafted_features(images) -> np.ndarray:
    """Hand-made features of crops given as uint8 or float in [0, 1]."""
    from .features import compute_features

    return compute_features(_to_uint8(images, "images"))


def reconstruction_distances(real, recon, seed=0) -> dict:
    """Frechet distance on standardised hand-made features between one half of the real
    cells and the reconstructions of the other half, beside the floor (real half vs real
    half): both at the same sample size, so the two numbers compare. {} under 16 cells."""
    if len(real) < 16:
        return {}
    order = np.random.default_rng(seed).permutation(len(real))
    a, b = order[: len(real) // 2], order[len(real) // 2: 2 * (len(real) // 2)]
    fa = handcrafted_features(real[a])
    z = standardize_by(fa)
    fa, fb, fr = z(fa), z(handcrafted_features(real[b])), z(handcrafted_features(recon[b]))
    return {"fd_real_fake": float(frechet_distance(fa, fr)), "fd_real_real": float(frechet_distance(fa, fb))}


def _real_split(real, rng):
    order = rng.permutation(len(real))
    half = len(real) // 2
    return real[order[:half]], real[order[half: 2 * half]]


def sample_quality(real_images, fake_images, encoder=None, *, seed=0, kid_subset=1000) -> dict:
    """Frechet distance and KID between real and generated crops.

    Feature spaces: the hand-made features and, given an `Encoder`, its embeddings.
    Images are [N, H, W, 3] uint8 or float in [0, 1]. The floor is real-vs-real: one half
    of the real cells against the other, and the fake set is compared with the first
    half so both numbers use the same sample size.
    """
    from .features import compute_features

    real = _to_uint8(real_images, "real images")
    fake = _to_uint8(fake_images, "generated images")
    if real.shape[1:] != fake.shape[1:]:
        raise DataError(f"real crops {real.shape[1:]} and generated crops {fake.shape[1:]} differ in shape")
    if len(real) < 8 or len(fake) < 4:
        raise DataError(f"need >= 8 real and >= 4 generated crops, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    real_a, real_b = _real_split(real, rng)
    fake = fake[: len(real_a)]
    spaces = {"handcrafted": compute_features}
    if encoder is not None:
        spaces["encoder"] = lambda x: _embed(encoder, x)
    out = {"n_real_half": int(len(real_a)), "n_fake": int(len(fake))}
    for name, fn in spaces.items():
        fa, fb, ff = fn(real_a), fn(real_b), fn(fake)
        z = standardize_by(fa)  # with the real statistics
        fa, fb, ff = z(fa), z(fb), z(ff)
        sub = min(kid_subset, len(fa), len(ff))
        out[name] = {
            "fd_real_fake": frechet_distance(fa, ff),
            "fd_real_real": frechet_distance(fa, fb),
            "kid_real_fake": kernel_inception_distance(fa, ff, subset_size=sub, seed=seed)[0],
            "kid_real_real": kernel_inception_distance(fa, fb, subset_size=sub, seed=seed)[0],
        }
    return out


def _to_uint8(images, name):
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{name}: expected [N, H, W, 3], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _embed(encoder, images, batch=256):
    return np.concatenate([encoder(images[i: i + batch].astype(np.float32) / 255.0)
                           for i in range(0, len(images), batch)])


def generate_images(generator_dir, n, *, seed=0, batch=256) -> np.ndarray:
    """n crops (uint8) from an exported generator (`z` float32 [None, latent] -> images in [0,1])."""
    import tensorflow as tf

    from .export import require_role
    from .profiling import resolve_export_dir

    path, meta = require_role(resolve_export_dir(generator_dir), "generator")
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    latent = int(meta.get("latent_dim") or fn.structured_input_signature[1]["z"].shape[1])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(0, n, batch):
        z = rng.standard_normal((min(batch, n - i), latent)).astype(np.float32)
        out.append(fn(z=tf.constant(z))["images"].numpy())
    return _to_uint8(np.concatenate(out), "generated images")


def read_real_images(shards_dir, n, *, seed=0) -> np.ndarray:
    """Up to n real crops (uint8), a seeded random subset of the shards."""
    from .data.pipeline import count_cells
    from .profiling import images_at

    total = count_cells(shards_dir)
    if total <= n:
        return images_at(shards_dir, np.arange(total))
    return images_at(shards_dir, np.random.default_rng(seed).choice(total, n, replace=False))
