"""Shared fixtures for the training/generation tests: tiny shards and tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cytogan_tf.data import shards

CROP = 32
TINY_WIDTHS = [16, 8, 8, 4]


def write_tiny_shards(out, n_cells=48, n_shards=2, crop=CROP, seed=0) -> Path:
    """Blob-like random cells: enough structure for a few GAN steps, written as shards."""
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
        img = np.stack([blob * rng.uniform(0.5, 1.0) for _ in range(3)], -1)
        img = (np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1) * 255).astype(np.uint8)
        meta = {"cell_id": cid, "center_x": cx, "center_y": cy, "plate": "P1", "well": "A01",
                "compound": "DMSO", "moa": "DMSO"}
        per[cid % n_shards].append(shards.serialize_cell(img, meta))
    for name, recs in zip(names, per):
        shards.write_shard(out / name, recs)
    shards.write_dataset_info(out, {
        "crop_size": crop, "channels": shards.CHANNELS, "n_cells": n_cells, "shards": names,
        "normalization": {"method": "percentile", "percentiles": [1, 99], "per_plate": {}},
        "source": "test", "layout": "test", "format_version": shards.FORMAT_VERSION})
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
