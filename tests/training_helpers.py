"""Shared fixtures for the training/generation tests: tiny shards and tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cytogan_tf.data import shards

CROP = 32
TINY_WIDTHS = [16, 8, 8, 4]


def write_tiny_shards(out, n_cells=48, n_shards=2, crop=CROP, seed=0, compounds=None) -> Path:
    """Blob-like random cells: enough structure for a few GAN steps, written as shards.
    With `compounds`, cell i gets compounds[i % len] and a cell table is written; the
    cells of later compounds are brighter, so a classifier can tell them apart."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:crop, :crop]
    names = [shards.shard_name(i, n_shards) for i in range(n_shards)]
    per = [[] for _ in range(n_shards)]
    for cid in range(n_cells):
        cy, cx = rng.uniform(crop * 0.3, crop * 0.7, 2)
        r = rng.uniform(crop * 0.1, crop * 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        if compounds:
            gain = (1 + cid % len(compounds)) / len(compounds)
            img = np.stack([blob * gain * rng.uniform(0.9, 1.0) for _ in range(3)], -1)
        else:
            img = np.stack([blob * rng.uniform(0.5, 1.0) for _ in range(3)], -1)
        img = (np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1) * 255).astype(np.uint8)
        compound = compounds[cid % len(compounds)] if compounds else "DMSO"
        meta = {"cell_id": cid, "center_x": cx, "center_y": cy, "plate": "P1", "well": "A01",
                "compound": compound, "moa": "DMSO"}
        per[cid % n_shards].append(shards.serialize_cell(img, meta))
    for name, recs in zip(names, per):
        shards.write_shard(out / name, recs)
    shards.write_dataset_info(out, {
        "crop_size": crop, "channels": shards.CHANNELS, "n_cells": n_cells, "shards": names,
        "normalization": {"method": "percentile", "percentiles": [1, 99], "per_plate": {}},
        "source": "test", "layout": "test", "format_version": shards.FORMAT_VERSION})
    if compounds:
        import pandas as pd

        shards.write_cells_table(out, pd.DataFrame({
            "Metadata_CellId": np.arange(n_cells), "Metadata_Plate": "P1", "Metadata_Well": "A01",
            "Metadata_Compound": [compounds[i % len(compounds)] for i in range(n_cells)],
            "Metadata_Concentration": 1.0, "Metadata_MOA": "DMSO"}))
    return out


def tiny_config(arch="lsgan", batch_size=8, **train):
    model = {"arch": arch, "image_size": CROP, "latent_dim": 8, "encoder_dim": 8,
             "widths": list(TINY_WIDTHS)}
    if arch == "wgan":
        # the critic loop is unrolled in the graph: each extra critic step costs tracing time
        model["n_critic"] = 1
    tcfg = {"batch_size": batch_size, "g_lr": 2e-4, "d_lr": 2e-4, "beta1": 0.5,
            "steps_per_epoch": 4, "sample_count": 4}
    tcfg.update(train)
    return {"model": model, "train": tcfg}
