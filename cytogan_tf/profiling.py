"""Profiles from cells: embed every cell with an exported encoder (or hand-made features),
aggregate to wells, normalise against DMSO, aggregate to treatments.

Order (why: normalisation must see every well of a plate, and treatments span plates):
    cells --(mean|median per plate+well)--> wells --normalise (none|dmso|tvn)--> wells
          --(mean|median per compound+concentration)--> treatments
DMSO wells stay in the tables as their own treatment rows (MOA "DMSO").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .io_utils import atomic_write_json, write_table
from .metrics import BATCH_COL, BATCH_SEP, feature_columns, metadata_columns
from .normalization import normalize_profiles

FEATURE_SETS = ("encoder", "handcrafted", "both")
AGGREGATIONS = ("mean", "median")
WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]
TREATMENT_KEYS = ["Metadata_Compound", "Metadata_Concentration"]
# Columns carried to wells/treatments when present (constant within a well / treatment).
WELL_CARRY = ["Metadata_Batch", "Metadata_Compound", "Metadata_Concentration", "Metadata_MOA",
              "Metadata_Control", "Metadata_Replicate"]
TREATMENT_CARRY = ["Metadata_MOA", "Metadata_Control"]
_WEEK_RE = re.compile(r"^(Week\d+)[_-]", re.IGNORECASE)


# --------------------------------------------------------------------------- encoder


class Encoder:
    """An exported encoder SavedModel (`exported/<name>-encoder/<N>/`)."""

    def __init__(self, path):
        import tensorflow as tf

        from .export import require_role

        self.path = resolve_export_dir(path)
        self.path, self.metadata = require_role(self.path, "encoder")
        try:
            self._loaded = tf.saved_model.load(str(self.path))
        except Exception as exc:  # TF raises several types for an unreadable model
            raise DataError(f"{self.path}: cannot load SavedModel ({exc})") from None
        if "serving_default" not in self._loaded.signatures:
            raise DataError(f"{self.path}: SavedModel has no serving_default signature")
        self._fn = self._loaded.signatures["serving_default"]
        self.image_size = int(self.metadata.get("image_size") or self._fn.structured_input_signature[1]["images"].shape[1])
        self.name = model_name(self.path, self.metadata)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Embeddings float32 [B, D] for images float32 [B, H, W, 3] in [0, 1]."""
        import tensorflow as tf

        out = self._fn(images=tf.convert_to_tensor(images, tf.float32))
        return out["embeddings"].numpy()


def resolve_export_dir(path) -> Path:
    """A version directory; given a model base path (`exported/x-encoder`), its newest version."""
    from .export import resolve_export_dir as resolve

    if not Path(path).exists():
        raise DataError(f"encoder directory not found: {path}")
    return resolve(path)


def model_name(path: Path, metadata: dict) -> str:
    """Feature-column prefix: export name (`wgan` from `wgan-encoder/1`), else the arch."""
    name = metadata.get("name")
    if not name:
        base = path.parent.name if path.name.isdigit() else path.name
        name = re.sub(r"-encoder$", "", base) or metadata.get("arch") or "encoder"
    name = re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_")
    return name or "encoder"


# --------------------------------------------------------------------------- cells


def _iterate_batches(shards_dir, batch_size, scale, shards=None):
    from .data.pipeline import make_dataset

    import tensorflow as tf

    from .data.shards import locate_bad_shard

    ds = make_dataset(shards_dir, batch_size, shuffle=False, repeat=False, with_metadata=True,
                      scale=scale, drop_remainder=False, shards=shards)
    try:
        for batch in ds:
            yield batch["image"].numpy(), batch["cell_id"].numpy()
    except tf.errors.DataLossError as exc:  # a corrupt record, met inside tf.data
        raise locate_bad_shard(shards_dir, exc) from None


def images_at(shards_dir, positions) -> np.ndarray:
    """uint8 crops at the given positions of the shards' read order (`_iterate_batches`),
    in the order given; only those crops are held in memory, so a subset of a screen of
    millions of cells can be drawn."""
    positions = np.asarray(positions, int)
    out = None
    start = 0
    for images, _ in _iterate_batches(shards_dir, 512, "uint8"):
        if out is None:
            out = np.zeros((len(positions), *images.shape[1:]), np.uint8)
        hit = (positions >= start) & (positions < start + len(images))
        out[hit] = images[positions[hit] - start]
        start += len(images)
    return out if out is not None else np.zeros((0, 0, 0, 3), np.uint8)


def cell_features(shards_dir, *, features="encoder", encoder: Encoder | None = None,
                  batch_size=256, workers=1, progress=True,
                  scheduler=None) -> tuple[pd.DataFrame, dict]:
    """Per-cell table: `Metadata_*` from the cells table + feature columns.

    Encoder columns are `<model>_<i>`; hand-made ones keep CellProfiler-style names
    (see `cytogan_tf.features`). Returns (table, stats) with stats["cells_per_s"].
    Work runs one shard at a time, in this process or as one Dask task per shard
    (`scheduler`: an address, "local" or a distributed.Client, see cytogan_tf.cluster);
    the table is the same either way.
    """
    from .data.shards import read_cells_table, read_dataset_info
    from .features import FEATURE_NAMES

    if features not in FEATURE_SETS:
        raise DataError(f"unknown feature set {features!r} (choose from {', '.join(FEATURE_SETS)})")
    info = read_dataset_info(shards_dir)
    n_cells = int(info.get("n_cells", 0))
    if n_cells == 0:
        raise DataError(f"{shards_dir}: no cells to profile (empty data set)")
    use_encoder = features in ("encoder", "both")
    if use_encoder:
        if encoder is None:
            raise DataError("--features encoder/both needs an --encoder")
        crop = int(info["crop_size"])
        if crop != encoder.image_size:
            raise DataError(
                f"crop size mismatch: data {shards_dir} has {crop}x{crop} crops, "
                f"encoder {encoder.path} expects {encoder.image_size}x{encoder.image_size}"
            )
    from .shard_features import gather_shard_features

    parts = gather_shard_features(shards_dir, list(info["shards"]), n_cells, encoder=encoder,
                                  features=features, batch_size=batch_size, workers=workers,
                                  scheduler=scheduler, progress=progress)
    ids = [p["ids"] for p in parts if len(p["ids"])]
    embeddings = [p["embeddings"] for p in parts if p["embeddings"] is not None and len(p["ids"])]
    handmade = [p["handmade"] for p in parts if p["handmade"] is not None and len(p["ids"])]
    # Only the very first encoder call traces the graph; every shard's own first batch
    # after it is steady-state work and counts towards the rate.
    first_calls = [p["first_call"] for p in parts if p["first_call"]]
    first_call = first_calls[0] if first_calls else (0.0, 0)
    embed_seconds = sum(p["embed_seconds"] for p in parts) + sum(t for t, _ in first_calls[1:])
    embed_cells = sum(p["embed_cells"] for p in parts) + sum(n for _, n in first_calls[1:])
    if not ids:
        raise DataError(f"{shards_dir}: no cells to profile (empty data set)")
    ids = np.concatenate(ids)
    blocks = []
    if use_encoder:
        emb = np.concatenate(embeddings)
        blocks.append(pd.DataFrame(emb, columns=[f"{encoder.name}_{i}" for i in range(emb.shape[1])]))
    if handmade:
        blocks.append(pd.DataFrame(np.concatenate(handmade), columns=FEATURE_NAMES))
    feats = pd.concat(blocks, axis=1)

    cells = read_cells_table(shards_dir)
    if "Metadata_CellId" not in cells.columns:
        raise DataError(f"{shards_dir}/cells.parquet: missing column Metadata_CellId")
    meta = cells[metadata_columns(cells)].set_index("Metadata_CellId", drop=False)
    missing = np.setdiff1d(ids, meta.index.to_numpy())
    if len(missing):
        raise DataError(f"{shards_dir}: {len(missing)} cells in the shards are not in cells.parquet (e.g. id {missing[0]})")
    table = pd.concat([meta.loc[ids].reset_index(drop=True), feats], axis=1)
    table = add_batch_column(table)
    stats = {"n_cells": int(len(table))}
    if use_encoder and embed_cells == 0:  # a single batch: its time is all we have
        embed_seconds, embed_cells = first_call
    if use_encoder and embed_seconds > 0:
        stats["cells_per_s"] = float(embed_cells / embed_seconds)
    return table, stats


def add_batch_column(table: pd.DataFrame) -> pd.DataFrame:
    """Metadata_Batch (for NSCB) when absent: the BBBC021 week (`Week4_27481` -> `Week4`),
    else the plate itself."""
    if BATCH_COL in table.columns or "Metadata_Plate" not in table.columns:
        return table
    plates = table["Metadata_Plate"].astype(str)
    batch = plates.map(lambda p: (_WEEK_RE.match(p).group(1) if _WEEK_RE.match(p) else p))
    out = table.copy()
    out.insert(out.columns.get_loc("Metadata_Plate") + 1, BATCH_COL, batch)
    return out


# --------------------------------------------------------------------------- aggregation


def _agg(table: pd.DataFrame, keys: list[str], carry: list[str], method: str, count_name: str,
         join: list[str] = ()) -> pd.DataFrame:
    if method not in AGGREGATIONS:
        raise DataError(f"unknown aggregation {method!r} (mean, median)")
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise DataError(f"profile table lacks {', '.join(missing)}")
    if table.empty:
        raise DataError("no profiles to aggregate (empty table)")
    feats = feature_columns(table)
    carry = [c for c in carry if c in table.columns and c not in keys]
    group_keys = keys + carry
    grouped = table.groupby(group_keys, sort=True, dropna=False)
    parts = []
    for col in join:
        if col in table.columns and col not in group_keys:
            parts.append(grouped[col].agg(lambda s: BATCH_SEP.join(sorted(set(s.astype(str))))))
    parts.append(grouped.size().rename(count_name))
    parts.append(grouped[feats].agg(method))
    # one concat (not repeated inserts) keeps wide feature tables unfragmented
    return pd.concat(parts, axis=1).reset_index()


def aggregate_wells(cells: pd.DataFrame, method="mean") -> pd.DataFrame:
    return _agg(cells, WELL_KEYS, WELL_CARRY, method, "Metadata_Count_Cells")


def aggregate_treatments(wells: pd.DataFrame, method="mean") -> pd.DataFrame:
    """One row per (compound, concentration[, MOA, control kind]); Metadata_Plate and
    Metadata_Batch list every plate/batch the treatment was imaged on, '|'-joined."""
    wells = wells.drop(columns=["Metadata_Count_Cells"], errors="ignore")
    return _agg(wells, TREATMENT_KEYS, TREATMENT_CARRY, method, "Metadata_Count_Wells",
                join=["Metadata_Plate", BATCH_COL])


# --------------------------------------------------------------------------- pipeline


def build_profiles(cells: pd.DataFrame, *, normalize="none", tvn_scope="global") -> dict[str, pd.DataFrame]:
    """cells -> {"wells_mean", "wells_median", "treatments_mean", "treatments_median"}.

    `dmso` standardises wells against the DMSO wells of their plate; `tvn` whitens
    wells with a PCA fitted on the DMSO *cells* (per plate or global): a plate has only
    a handful of DMSO wells, too few to estimate a covariance.
    """
    out = {}
    for method in AGGREGATIONS:
        wells = aggregate_wells(cells, method)
        if normalize == "dmso":
            wells = normalize_profiles(wells, "dmso", scope="plate")
        elif normalize == "robust":
            wells = normalize_profiles(wells, "robust")
        elif normalize == "tvn":
            wells = normalize_profiles(wells, "tvn", reference=cells, scope=tvn_scope)
        elif normalize != "none":
            raise DataError(f"unknown normalisation {normalize!r} (none, dmso, robust, tvn)")
        out[f"wells_{method}"] = wells
        out[f"treatments_{method}"] = aggregate_treatments(wells, method)
    return out


def write_profiles(out_dir, cells: pd.DataFrame, profiles: dict[str, pd.DataFrame], settings: dict) -> dict:
    """cells.{parquet,csv}, wells_{mean,median}.*, treatments_{mean,median}.*, profile.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [str(p) for p in write_table(cells, out_dir / "cells")]
    for name, table in profiles.items():
        written += [str(p) for p in write_table(table, out_dir / name)]
    info = dict(settings)
    info["tables"] = {name: {"rows": int(len(t)), "features": len(feature_columns(t))}
                      for name, t in {"cells": cells, **profiles}.items()}
    info["feature_columns"] = feature_columns(profiles["treatments_mean"])
    atomic_write_json(out_dir / "profile.json", info)
    return {"files": written + [str(out_dir / "profile.json")], **info}


def read_profiles(profiles_dir, kind="treatments_mean") -> pd.DataFrame:
    profiles_dir = Path(profiles_dir)
    pq, csv = profiles_dir / f"{kind}.parquet", profiles_dir / f"{kind}.csv"
    if pq.is_file():
        return pd.read_parquet(pq)
    if csv.is_file():
        return pd.read_csv(csv)
    if not profiles_dir.is_dir():
        raise DataError(f"profiles directory not found: {profiles_dir}")
    raise DataError(f"{pq}: missing (run `cytogan profile` first)")


def read_profile_settings(profiles_dir) -> dict:
    path = Path(profiles_dir) / "profile.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def profile_shards(shards_dir, out_dir, *, encoder=None, features="encoder", normalize="none",
                   tvn_scope="global", batch_size=256, workers=1, progress=True,
                   scheduler=None) -> dict:
    """The `cytogan profile` pipeline on a prepared shards directory."""
    if Path(out_dir).resolve() == Path(shards_dir).resolve():
        # its cells.parquet would replace the shards' own cell table
        raise DataError(f"{out_dir}: --out is the shards directory (--data); write the profiles elsewhere")
    enc = Encoder(encoder) if (encoder is not None and not isinstance(encoder, Encoder)) else encoder
    cells, stats = cell_features(shards_dir, features=features, encoder=enc, batch_size=batch_size,
                                 workers=workers, progress=progress, scheduler=scheduler)
    profiles = build_profiles(cells, normalize=normalize, tvn_scope=tvn_scope)
    settings = {
        "shards": str(Path(shards_dir).resolve()),
        "encoder": str(enc.path.resolve()) if enc is not None else None,
        "model": enc.name if enc is not None else None,
        "features": features,
        "normalize": normalize,
        "tvn_scope": tvn_scope if normalize == "tvn" else None,
        "order": "cells -> wells (mean|median) -> normalise -> treatments (mean|median)",
        **stats,
    }
    return write_profiles(out_dir, cells, profiles, settings)


def ensure_shards(data_dir, out_dir, *, encoder: Encoder | None = None, layout="bbbc021",
                  crop_size=None, workers=1, progress=True, scheduler=None) -> Path:
    """A shards directory for `data_dir`: itself when prepared, else raw plates prepared
    into `<out_dir>/shards` with the encoder's crop size and the normalisation method and
    percentiles recorded in its metadata (per-plate ranges are measured on these plates)."""
    from .data.prepare import PrepareOptions, prepare, prepare_section
    from .data.shards import DATASET_JSON

    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"data directory not found: {data_dir}")
    if (data_dir / DATASET_JSON).is_file():
        return data_dir
    overrides = {"workers": workers, "progress": progress, "scheduler": scheduler}
    if encoder is not None:
        if crop_size is not None and int(crop_size) != encoder.image_size:
            raise DataError(f"crop size mismatch: --crop-size {crop_size}, encoder {encoder.path} "
                            f"expects {encoder.image_size}")
        overrides["crop_size"] = encoder.image_size
        norm = encoder.metadata.get("normalization") or {}
        if norm.get("method") not in (None, "percentile"):
            raise DataError(f"{encoder.path}: normalisation method {norm.get('method')!r} is not "
                            "supported by prepare (percentile)")
        if norm.get("percentiles"):
            overrides["percentiles"] = tuple(float(p) for p in norm["percentiles"])
    elif crop_size is not None:
        overrides["crop_size"] = int(crop_size)
    shards_dir = Path(out_dir) / "shards"
    # the layout's own [prepare] section (segmentation scale etc.), then the encoder's needs
    options = PrepareOptions.from_config(prepare_section(None, layout), **overrides)
    result = prepare(data_dir, shards_dir, layout=layout, options=options)
    if result.n_cells == 0:
        raise DataError(f"{data_dir}: no cells found in the plates (empty data set)")
    return shards_dir
