"""Hand-made (+) encoder: profiles from two or more feature sets of the same cells.

Why: hand-made features measure size, intensity and texture statistics exactly, a
learned encoder picks up what they miss; profiling with both should beat either. Each
set is normalised on its own, then every feature is z-scored and each set divided by
sqrt(its width), so a 480-wide embedding does not drown 57 hand-made features in the
cosine distance (`combine_well_profiles`). `combine_cell_tables` joins the per-cell
tables the same way, for the combined `cells` table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError
from .metrics import feature_columns, metadata_columns

CELL_ID = "Metadata_CellId"


def _standardized_block(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    cols = feature_columns(table)
    if not cols:
        raise DataError(f"feature block {prefix!r} has no feature columns")
    x = table[cols].to_numpy(np.float64)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 1e-12, sd, 1.0) / np.sqrt(len(cols))
    return pd.DataFrame(x, columns=[f"{prefix}_{c}" for c in cols], index=table.index)


def combine_cell_tables(blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """{prefix: per-cell table} -> one table, rows matched on Metadata_CellId; metadata from
    the first block, features renamed `<prefix>_<column>`."""
    if len(blocks) < 2:
        raise DataError("combining feature sets needs at least two tables")
    tables = {}
    for prefix, table in blocks.items():
        if CELL_ID not in table.columns:
            raise DataError(f"feature block {prefix!r}: missing column {CELL_ID}")
        tables[prefix] = table.set_index(CELL_ID, drop=False)
    first = next(iter(tables.values()))
    ids = first.index
    for prefix, table in tables.items():
        missing = ids.difference(table.index)
        if len(missing):
            raise DataError(f"feature block {prefix!r} lacks {len(missing)} cells of the first "
                            f"(e.g. {CELL_ID} {missing[0]})")
    meta = first[metadata_columns(first)].reset_index(drop=True)
    feats = [_standardized_block(t.loc[ids], p).reset_index(drop=True) for p, t in tables.items()]
    return pd.concat([meta, *feats], axis=1)


def combine_well_profiles(blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """{prefix: normalised well profiles} -> one well table, each block z-scored over the
    wells and divided by sqrt(its width).

    Why after normalisation: TVN whitens every direction to unit DMSO variance, so
    whitening the joint table would hand a 480-wide embedding ~90% of the cosine
    distance; whitening each block alone and weighting them afterwards keeps both
    feature sets at equal say (measured on the texture plates: NSC 0.854 against 0.812
    for one joint whitening).
    """
    keys = ["Metadata_Plate", "Metadata_Well"]
    first = next(iter(blocks.values()))
    index = first.set_index(keys).index
    meta = first[metadata_columns(first)].reset_index(drop=True)
    parts = []
    for prefix, wells in blocks.items():
        aligned = wells.set_index(keys)
        missing = index.difference(aligned.index)
        if len(missing):
            raise DataError(f"feature block {prefix!r} lacks {len(missing)} wells of the first (e.g. {missing[0]})")
        aligned = aligned.loc[index].reset_index()
        parts.append(_standardized_block(aligned, prefix).reset_index(drop=True))
    return pd.concat([meta, *parts], axis=1)


def combine_profiles(profile_dirs, out_dir, *, normalize="tvn", tvn_scope="global") -> dict:
    """Combine `cytogan profile` outputs of the same cells (one per feature set): each
    set's wells are normalised on their own, then weighted and joined
    (`combine_well_profiles`); treatment profiles are built from the joint wells."""
    from pathlib import Path

    from .profiling import AGGREGATIONS, aggregate_treatments, build_profiles, read_profiles, write_profiles

    dirs = [Path(d) for d in profile_dirs]
    if len(dirs) < 2:
        raise DataError("combining feature sets needs at least two profile directories")
    names = [d.name.replace("-", "_") for d in dirs]
    if len(set(names)) < len(names):  # two folders of the same name: number the blocks
        names = [f"{n}{i}" for i, n in enumerate(names, start=1)]
    cells = {name: read_profiles(d, "cells") for name, d in zip(names, dirs)}
    joint_cells = combine_cell_tables(cells)
    per_block = {name: build_profiles(t, normalize=normalize, tvn_scope=tvn_scope) for name, t in cells.items()}
    profiles = {}
    for method in AGGREGATIONS:
        wells = combine_well_profiles({n: p[f"wells_{method}"] for n, p in per_block.items()})
        profiles[f"wells_{method}"] = wells
        profiles[f"treatments_{method}"] = aggregate_treatments(wells, method)
    settings = {"combined": [str(d.resolve()) for d in dirs], "features": "combined",
                "normalize": normalize, "tvn_scope": tvn_scope if normalize == "tvn" else None,
                "order": "per feature set: cells -> wells -> normalise; then z-score, / sqrt(width), join",
                "n_cells": int(len(joint_cells))}
    return write_profiles(out_dir, joint_cells, profiles, settings)
