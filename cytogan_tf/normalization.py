"""Profile normalisation against the DMSO controls: none, DMSO standardisation, TVN.

Why: plates differ in gain and illumination; expressing each profile relative to the
negative controls imaged with it removes most of that. Both methods are fitted on control
rows of a *reference* table (by default the table itself; `profile` passes the per-cell
table so TVN has enough DMSO samples to whiten) and applied to every row of the profile
table, per plate (`scope="plate"`) or over all plates at once (`scope="global"`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError
from .metrics import feature_columns, is_control

METHODS = ("none", "dmso", "robust", "tvn")
SCOPES = ("plate", "global")
PLATE_COL = "Metadata_Plate"


def _groups(df: pd.DataFrame, scope: str):
    if scope == "global":
        return {None: df.index}
    if scope != "plate":
        raise DataError(f"unknown normalisation scope {scope!r} (plate, global)")
    if PLATE_COL not in df.columns:
        raise DataError(f"per-plate normalisation needs a {PLATE_COL} column")
    return df.groupby(PLATE_COL, sort=True).groups


def _controls(reference: pd.DataFrame, plate, scope: str, n_min: int) -> np.ndarray:
    ref = reference if scope == "global" else reference[reference[PLATE_COL] == plate]
    ref = ref[is_control(ref)]
    if len(ref) < n_min:
        where = "the data set" if scope == "global" else f"plate {plate}"
        raise DataError(f"{where} has {len(ref)} DMSO control profiles; normalisation needs at least {n_min}")
    return ref


def standardize_to_dmso(profiles, reference=None, *, scope="plate", features=None, eps=1e-6):
    """Subtract the DMSO mean and divide by the DMSO std (per feature, per plate)."""
    reference = profiles if reference is None else reference
    features = list(features) if features is not None else feature_columns(profiles)
    out = profiles.copy()
    out[features] = out[features].astype(np.float64)
    for plate, index in _groups(profiles, scope).items():
        ref = _controls(reference, plate, scope, 2)[features].to_numpy(np.float64)
        mean, std = ref.mean(0), ref.std(0, ddof=1)
        # constant features would divide by zero; leave their scale alone
        std = np.where(std > eps, std, 1.0)
        out.loc[index, features] = (profiles.loc[index, features].to_numpy(np.float64) - mean) / std
    return out.copy()  # defragment: per-plate assignment leaves many column blocks


def robust_dmso_normalize(profiles, reference=None, *, features=None, eps=1e-6):
    """Centre each plate on its DMSO median, scale by the DMSO spread of all plates (MAD).

    Why: a plate holds 3-6 DMSO wells, so the per-plate standard deviation of
    `standardize_to_dmso` is itself noise (measured: the worst normalisation for every
    feature set); the plate offset is what differs between plates, the spread much less.
    MAD x 1.4826 estimates the standard deviation robustly, as pycytominer's robustize_mad.
    """
    reference = profiles if reference is None else reference
    features = list(features) if features is not None else feature_columns(profiles)
    out = profiles.copy()
    out[features] = out[features].astype(np.float64)
    centred = []
    for plate, index in _groups(profiles, "plate").items():
        ref = _controls(reference, plate, "plate", 1)[features].to_numpy(np.float64)
        median = np.median(ref, axis=0)
        out.loc[index, features] = profiles.loc[index, features].to_numpy(np.float64) - median
        centred.append(ref - median)
    spread = np.concatenate(centred)
    mad = 1.4826 * np.median(np.abs(spread - np.median(spread, axis=0)), axis=0)
    scale = np.where(mad > eps, mad, np.where(spread.std(0) > eps, spread.std(0), 1.0))
    out[features] = out[features].to_numpy(np.float64) / scale
    return out.copy()


def typical_variation_normalize(profiles, reference=None, *, scope="plate", features=None,
                                rel_tol=1e-6, shrinkage="ledoit-wolf"):
    """TVN: whitening fitted on DMSO profiles, rotated back into feature space (ZCA).

    Each fit z-scores features by their DMSO std, estimates their covariance and maps
    profiles through its inverse square root. Why back into feature space: per-plate
    bases differ from plate to plate (order and sign of components), so component
    columns would not line up across plates; feature columns do, and keep their names.

    `shrinkage="ledoit-wolf"` (default) estimates the covariance with sklearn's
    LedoitWolf, which pulls it towards a scaled identity by the amount its sample size
    calls for. Why: a plate set has a few hundred DMSO cells and an encoder 100-500
    features, so the smallest sample eigenvalues are mostly noise and exact whitening
    multiplies that noise into every profile (measured: a 480-wide embedding fell from
    NSC 0.48 to 0.23 on the texture plates; hand-made features gain too). `"none"` is
    exact PCA whitening (DMSO profiles come out with identity covariance on the kept
    components; those below rel_tol x the largest variance are dropped).
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    if shrinkage not in ("ledoit-wolf", "none"):
        raise DataError(f"unknown TVN shrinkage {shrinkage!r} (ledoit-wolf, none)")
    reference = profiles if reference is None else reference
    features = list(features) if features is not None else feature_columns(profiles)
    out = profiles.copy()
    out[features] = out[features].astype(np.float64)
    for plate, index in _groups(profiles, scope).items():
        ref = _controls(reference, plate, scope, 3)[features].to_numpy(np.float64)
        # z-score by the DMSO std first: whitening is scale-free in exact arithmetic, but
        # the variance cut-off and the shrinkage target are not (areas ~1e3 next to ~1e-1).
        scale = ref.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        x = profiles.loc[index, features].to_numpy(np.float64) / scale
        where = "the data set" if scope == "global" else f"plate {plate}"
        if shrinkage == "none":
            pca = PCA(whiten=True, svd_solver="full").fit(ref / scale)
            var = pca.explained_variance_
            keep = int((var > rel_tol * var.max()).sum()) if var.max() > 0 else 0
            if keep == 0:
                raise DataError(f"DMSO profiles of {where} have no variance to whiten (TVN)")
            out.loc[index, features] = pca.transform(x)[:, :keep] @ pca.components_[:keep]
            continue
        lw = LedoitWolf().fit(ref / scale)
        values, vectors = np.linalg.eigh(lw.covariance_)
        if values.max() <= 0:
            raise DataError(f"DMSO profiles of {where} have no variance to whiten (TVN)")
        inv_sqrt = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, rel_tol * values.max()))) @ vectors.T
        out.loc[index, features] = (x - lw.location_) @ inv_sqrt
    return out.copy()


def normalize_profiles(profiles, method="none", *, reference=None, scope="plate", features=None):
    """Dispatch on `method` in METHODS."""
    if method == "none":
        return profiles.copy()
    if method == "dmso":
        return standardize_to_dmso(profiles, reference, scope=scope, features=features)
    if method == "robust":
        return robust_dmso_normalize(profiles, reference, features=features)
    if method == "tvn":
        return typical_variation_normalize(profiles, reference, scope=scope, features=features)
    raise DataError(f"unknown normalisation {method!r} (choose from {', '.join(METHODS)})")
