"""Per-shard cell features (embeddings and/or hand-made), in this process or on Dask.

Why per shard: a shard is the unit a cluster task can read alone, and running the
in-process path shard by shard too gives both the same batches, hence the same bytes
(a convolution's result can depend on how many images share its batch).
"""

from __future__ import annotations

import time

import numpy as np

# A worker keeps each SavedModel it loaded, so a task per shard loads it once per worker.
_ENCODERS: dict[str, object] = {}


def shard_features(shards_dir, shard: str, *, encoder=None, features: str = "encoder",
                   batch_size: int = 256, pool=None, on_batch=None) -> dict:
    """{"ids", "embeddings", "handmade", "embed_seconds", "embed_cells", "first_call"} of
    one shard; `pool` computes hand-made features in parallel, `on_batch(n)` reports progress."""
    from .features import compute_features
    from .profiling import _iterate_batches

    use_encoder = features in ("encoder", "both")
    use_handmade = features in ("handcrafted", "both")
    ids, embeddings, handmade = [], [], []
    embed_seconds, embed_cells, first_call = 0.0, 0, None
    for images, cell_ids in _iterate_batches(shards_dir, batch_size, "uint8", shards=[shard]):
        ids.append(cell_ids)
        if use_encoder:
            t0 = time.perf_counter()
            embeddings.append(encoder(images.astype(np.float32) / 255.0))
            if first_call is None:  # the first call traces the graph: not steady-state speed
                first_call = (time.perf_counter() - t0, len(cell_ids))
            else:
                embed_seconds += time.perf_counter() - t0
                embed_cells += len(cell_ids)
        if use_handmade:
            handmade.append(pool.submit(compute_features, images) if pool else compute_features(images))
        if on_batch is not None:
            on_batch(len(cell_ids))
    if pool is not None:
        handmade = [f.result() for f in handmade]
    return {
        "ids": np.concatenate(ids) if ids else np.zeros(0, np.int64),
        "embeddings": np.concatenate(embeddings) if embeddings else None,
        "handmade": np.concatenate(handmade) if handmade else None,
        "embed_seconds": embed_seconds, "embed_cells": embed_cells, "first_call": first_call,
    }


def shard_task(task: dict) -> dict:
    """One cluster task: a shard's features on a worker, which imports TensorFlow and
    loads the exported encoder itself (once per worker).

    TensorFlow keeps its default thread pools here. Sizing them to the worker's threads
    made 2 workers on 2 cores 1.53x one instead of 1.15x, but the embeddings then differ
    in the last bits from an in-process run (a reduction's order follows the thread
    count), and identical output matters more.
    """
    encoder = None
    if task["encoder"] is not None:
        from .profiling import Encoder

        encoder = _ENCODERS.get(task["encoder"])
        if encoder is None:
            encoder = _ENCODERS[task["encoder"]] = Encoder(task["encoder"])
    return shard_features(task["shards_dir"], task["shard"], encoder=encoder,
                          features=task["features"], batch_size=task["batch_size"])


def gather_shard_features(shards_dir, shards: list[str], n_cells: int, *, encoder=None,
                          features="encoder", batch_size=256, workers=1, scheduler=None,
                          progress=True) -> list[dict]:
    """shard_features for every shard, in shard order, with one progress bar."""
    from pathlib import Path

    from .progress import progress_bar

    bar = progress_bar(total=n_cells, desc="profiling cells", unit="cell", enabled=progress)
    try:
        if scheduler:
            from .cluster import dask_client, map_in_order

            tasks = [{"shards_dir": str(Path(shards_dir).resolve()), "shard": name,
                      "encoder": str(encoder.path.resolve()) if encoder is not None else None,
                      "features": features, "batch_size": int(batch_size)} for name in shards]
            out = []
            with dask_client(scheduler, workers, quiet=not progress) as client:
                for result in map_in_order(client, shard_task, tasks, key="cytogan-shard"):
                    bar.update(len(result["ids"]))
                    out.append(result)
            return out
        from .features import features_pool

        # one process pool for the whole pass (spawning one per batch would cost seconds each)
        use_pool = features in ("handcrafted", "both") and workers > 1
        pool = features_pool(workers) if use_pool else None
        try:
            return [shard_features(shards_dir, name, encoder=encoder, features=features,
                                   batch_size=batch_size, pool=pool, on_batch=bar.update)
                    for name in shards]
        finally:
            if pool is not None:
                pool.shutdown()
    finally:
        bar.close()
