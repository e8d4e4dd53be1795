"""Evaluation metrics: MOA prediction (NSC/NSCB 1-NN), mAP of MOA retrieval, and
distribution distances (Frechet distance, KID) between feature sets.

Profiles are pandas tables in the pycytominer convention: `Metadata_*` columns describe a
row, every other numeric column is a feature. One row is one treatment (compound,
concentration) unless stated otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import DataError

MOA_COL = "Metadata_MOA"
COMPOUND_COL = "Metadata_Compound"
CONCENTRATION_COL = "Metadata_Concentration"
BATCH_COL = "Metadata_Batch"
CONTROL_VALUE = "DMSO"
# Batch sets of a treatment imaged on several batches are joined with this separator.
BATCH_SEP = "|"
_UNKNOWN_MOA = {"", "nan", "none", "unknown", "null"}
# bbbc021.py marks positive-control wells (BBBC021: taxol 0.3 uM on every plate) with
# Metadata_Control == "positive" and MOA "control"; they are not treatments to evaluate.
POSITIVE_CONTROL_MOA = "control"


# --------------------------------------------------------------------------- tables


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Numeric columns that are not `Metadata_*`: the pycytominer notion of a feature."""
    return [
        c
        for c in df.columns
        if not str(c).startswith("Metadata_") and pd.api.types.is_numeric_dtype(df[c])
    ]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith("Metadata_")]


def is_control(df: pd.DataFrame) -> pd.Series:
    compound = df[COMPOUND_COL].astype(str) if COMPOUND_COL in df else pd.Series("", index=df.index)
    moa = df[MOA_COL].astype(str) if MOA_COL in df else pd.Series("", index=df.index)
    return (compound == CONTROL_VALUE) | (moa == CONTROL_VALUE)


def has_known_moa(df: pd.DataFrame) -> pd.Series:
    moa = df[MOA_COL]
    return moa.notna() & ~moa.astype(str).str.strip().str.lower().isin(_UNKNOWN_MOA)


def evaluable_treatments(profiles: pd.DataFrame) -> pd.DataFrame:
    """Treatments that take part in MOA evaluation: not DMSO, MOA known."""
    for col in (MOA_COL, COMPOUND_COL):
        if col not in profiles.columns:
            raise DataError(f"profiles table has no {col} column (needed for MOA evaluation)")
    keep = has_known_moa(profiles) & ~is_control(profiles)
    keep &= profiles[MOA_COL].astype(str) != POSITIVE_CONTROL_MOA
    if "Metadata_Control" in profiles.columns:
        keep &= profiles["Metadata_Control"].astype(str) != "positive"
    out = profiles.loc[keep].reset_index(drop=True)
    if len(out) < 2:
        raise DataError(
            f"need at least 2 non-DMSO treatments with a known MOA, found {len(out)}"
        )
    return out


def batch_sets(profiles: pd.DataFrame) -> list[frozenset]:
    """Batches each row was imaged on (a treatment can span several plates/batches)."""
    if BATCH_COL in profiles.columns:
        source = profiles[BATCH_COL]
    elif "Metadata_Plate" in profiles.columns:
        source = profiles["Metadata_Plate"]
    else:
        raise DataError("profiles table has neither Metadata_Batch nor Metadata_Plate (needed for NSCB)")
    return [frozenset(str(v).split(BATCH_SEP)) for v in source.astype(str)]


# --------------------------------------------------------------------------- 1-NN MOA


def cosine_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    return 1.0 - unit @ unit.T


def candidate_mask(profiles: pd.DataFrame, mode: str) -> np.ndarray:
    """mask[i, j] is True when row j may serve as the neighbour of query row i.

    `all`: any other row; `nsc`: not the same compound; `nscb`: not the same compound
    and no batch in common.
    """
    n = len(profiles)
    mask = ~np.eye(n, dtype=bool)
    if mode == "all":
        return mask
    compounds = profiles[COMPOUND_COL].astype(str).to_numpy()
    mask &= compounds[:, None] != compounds[None, :]
    if mode == "nsc":
        return mask
    if mode != "nscb":
        raise ValueError(f"unknown neighbour mode {mode!r} (all, nsc, nscb)")
    batches = batch_sets(profiles)
    shared = np.array([[bool(a & b) for b in batches] for a in batches], dtype=bool)
    return mask & ~shared


@dataclass
class MOAResult:
    """1-NN MOA prediction over treatment profiles for one neighbour mode."""

    mode: str
    predictions: pd.DataFrame  # one row per evaluated query
    accuracy: float
    n_queries: int
    moas_evaluated: list[str]
    moas_dropped: list[str] = field(default_factory=list)
    chance_prior: float = 0.0  # sum_k p_k^2: a guess drawn from the class frequencies
    chance_uniform: float = 0.0  # 1 / n_moa

    def summary(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "n_queries": self.n_queries,
            "n_moas": len(self.moas_evaluated),
            "moas_evaluated": self.moas_evaluated,
            "moas_dropped": self.moas_dropped,
            "chance_prior": self.chance_prior,
            "chance_uniform": self.chance_uniform,
        }


def chance_levels(labels) -> tuple[float, float]:
    """(expected accuracy of a guess drawn from the class frequencies, 1/n_classes)."""
    counts = pd.Series(list(labels)).value_counts().to_numpy(dtype=float)
    if counts.sum() == 0:
        return 0.0, 0.0
    p = counts / counts.sum()
    return float((p**2).sum()), 1.0 / len(counts)


def nearest_neighbor_moa(profiles: pd.DataFrame, mode: str = "nsc", features=None) -> MOAResult:
    """Predict each treatment's MOA as the MOA of its cosine-nearest allowed neighbour.

    DMSO and unknown-MOA rows are removed first. Queries with no allowed neighbour (under
    NSCB: compounds whose MOA only occurs in their own batch) are dropped; an MOA is
    reported as dropped when none of its treatments could be evaluated.
    """
    table = evaluable_treatments(profiles)
    features = list(features) if features is not None else feature_columns(table)
    if not features:
        raise DataError("profiles table has no numeric feature columns")
    x = table[features].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise DataError("profiles contain NaN or infinite feature values")
    dist = cosine_distances(x)
    allowed = candidate_mask(table, mode)
    dist = np.where(allowed, dist, np.inf)
    moas = table[MOA_COL].astype(str).to_numpy()

    # A query counts only if some allowed neighbour shares its MOA: otherwise it cannot be
    # right whatever the features are (the NSCB trap on BBBC021).
    matchable = (allowed & (moas[:, None] == moas[None, :])).any(axis=1)
    rows = []
    for i in np.flatnonzero(matchable):
        j = int(np.argmin(dist[i]))
        rows.append(
            {
                "Metadata_Compound": table[COMPOUND_COL].iloc[i],
                "Metadata_Concentration": table[CONCENTRATION_COL].iloc[i]
                if CONCENTRATION_COL in table
                else np.nan,
                "Metadata_MOA": moas[i],
                "Predicted_MOA": moas[j],
                "Neighbor_Compound": table[COMPOUND_COL].iloc[j],
                "Neighbor_Concentration": table[CONCENTRATION_COL].iloc[j]
                if CONCENTRATION_COL in table
                else np.nan,
                "Cosine_Distance": float(dist[i, j]),
                "Correct": bool(moas[i] == moas[j]),
                "Mode": mode,
            }
        )
    preds = pd.DataFrame(
        rows,
        columns=[
            "Metadata_Compound", "Metadata_Concentration", "Metadata_MOA", "Predicted_MOA",
            "Neighbor_Compound", "Neighbor_Concentration", "Cosine_Distance", "Correct", "Mode",
        ],
    )
    all_moas = sorted(set(moas))
    evaluated = sorted(set(preds["Metadata_MOA"])) if len(preds) else []
    dropped = [m for m in all_moas if m not in evaluated]
    accuracy = float(preds["Correct"].mean()) if len(preds) else float("nan")
    prior, uniform = chance_levels(preds["Metadata_MOA"]) if len(preds) else (float("nan"),) * 2
    return MOAResult(mode, preds, accuracy, len(preds), evaluated, dropped, prior, uniform)


def confusion_table(predictions: pd.DataFrame, labels=None) -> pd.DataFrame:
    """Counts of true MOA (rows) vs predicted MOA (columns)."""
    if labels is None:
        labels = sorted(set(predictions["Metadata_MOA"]) | set(predictions["Predicted_MOA"]))
    table = pd.crosstab(predictions["Metadata_MOA"], predictions["Predicted_MOA"])
    return table.reindex(index=labels, columns=labels, fill_value=0)


# --------------------------------------------------------------------------- mAP


def average_precision(relevance_sorted: np.ndarray) -> float:
    """AP of one ranked list of 0/1 relevances: mean of precision@k over the hits."""
    rel = np.asarray(relevance_sorted, dtype=float)
    n_pos = rel.sum()
    if n_pos == 0:
        return float("nan")
    precision_at_k = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision_at_k * rel).sum() / n_pos)


def mean_average_precision(profiles: pd.DataFrame, features=None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """MOA retrieval mAP following copairs' pairing rules.

    For each query treatment, the other treatments are ranked by cosine similarity.
    Positives: same MOA, different compound (copairs `pos_sameby=[moa]`,
    `pos_diffby=[compound]`); negatives: different MOA (`neg_diffby=[moa]`); same-compound
    rows are left out of the ranking. Queries without positives get no AP.
    Returns (per-query table, per-MOA table, overall mAP = mean over queries).
    """
    table = evaluable_treatments(profiles)
    features = list(features) if features is not None else feature_columns(table)
    x = table[features].to_numpy(dtype=np.float64)
    sim = 1.0 - cosine_distances(x)
    moas = table[MOA_COL].astype(str).to_numpy()
    compounds = table[COMPOUND_COL].astype(str).to_numpy()
    rows = []
    for i in range(len(table)):
        candidates = np.flatnonzero(compounds != compounds[i])
        if len(candidates) == 0:
            continue
        positive = moas[candidates] == moas[i]
        if not positive.any():
            continue
        # stable sort on -similarity: ties keep table order, deterministic
        order = np.argsort(-sim[i, candidates], kind="stable")
        ap = average_precision(positive[order])
        rows.append(
            {
                "Metadata_Compound": compounds[i],
                "Metadata_Concentration": table[CONCENTRATION_COL].iloc[i]
                if CONCENTRATION_COL in table
                else np.nan,
                "Metadata_MOA": moas[i],
                "average_precision": ap,
                "n_positives": int(positive.sum()),
                "n_total": int(len(candidates)),
            }
        )
    per_query = pd.DataFrame(
        rows,
        columns=["Metadata_Compound", "Metadata_Concentration", "Metadata_MOA",
                 "average_precision", "n_positives", "n_total"],
    )
    if per_query.empty:
        return per_query, pd.DataFrame(columns=["Metadata_MOA", "mean_average_precision", "n_queries"]), float("nan")
    per_moa = (
        per_query.groupby("Metadata_MOA")["average_precision"]
        .agg(mean_average_precision="mean", n_queries="size")
        .reset_index()
    )
    return per_query, per_moa, float(per_query["average_precision"].mean())


# --------------------------------------------------------------------------- distances


def _as_matrix(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise DataError(f"{name} must be a [n >= 2, d] feature matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return a


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID's formula).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
    """
    from scipy import linalg  # scipy ships with scikit-learn; sqrtm handles non-symmetric products

    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    import warnings

    with warnings.catch_warnings():
        # singular products (fewer samples than features) are handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # singular product: nudge both covariances (the usual FID fix)
        eps = 1e-6 * np.eye(cov_a.shape[0])
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def _polynomial_kernel(x, y, degree, gamma, coef0):
    return (gamma * x @ y.T + coef0) ** degree


def kernel_inception_distance(
    a, b, *, n_subsets: int = 10, subset_size: int = 1000, degree: int = 3,
    gamma: float | None = None, coef0: float = 1.0, seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with a polynomial kernel, averaged over random subsets.

    Returns (mean, std) over subsets. gamma defaults to 1/d as in Binkowski et al.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = _polynomial_kernel(x, x, degree, gamma, coef0)
        kyy = _polynomial_kernel(y, y, degree, gamma, coef0)
        kxy = _polynomial_kernel(x, y, degree, gamma, coef0)
        # unbiased estimator: diagonal terms of the within-set kernels left out
        term_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        term_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(term_xx + term_yy - 2.0 * kxy.mean())
    values = np.asarray(values)
    return float(values.mean()), float(values.std())
