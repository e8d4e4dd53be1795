"""tf.data input: TFRecord shards -> batches of crops for training and profiling.

Everything heavy is batched: records are shuffled while still serialized (cheap to move),
then a whole batch is parsed, decoded and augmented in one op each. On 2 CPU cores this
delivers thousands of 64x64 crops per second, far more than a GAN step consumes.
"""

from __future__ import annotations

import os

from ..errors import DataError
from .shards import check_framing, parse_batch, read_dataset_info, shard_paths

SCALES = ("tanh", "unit", "uint8")
DEFAULT_SHUFFLE_BUFFER = 8192


def count_cells(shards_dir: str | os.PathLike) -> int:
    """Cells in a shards directory (from dataset.json; `shards.verify_shards` re-counts)."""
    return int(read_dataset_info(shards_dir)["n_cells"])


def make_dataset(shards_dir, batch_size, *, shuffle=True, augment=False, seed=None,
                 repeat=True, with_metadata=False, drop_remainder=True, scale="tanh",
                 shuffle_buffer=None, labels=None, shards=None, group_size=None):
    """Batches of crops from a shards directory.

    Without metadata: image tensors [B,H,W,3] (`scale`: "tanh" float32 in [-1,1],
    "unit" float32 in [0,1], "uint8"). With metadata: dicts with `image` plus
    cell_id, plate, well, compound, moa, concentration, site, center_x, center_y.
    Profiling needs every cell exactly once in a stable order, so `with_metadata=True`
    turns off shuffle, augmentation and repeat and keeps the last partial batch.
    With `seed` set the stream (order and augmentation) is identical run to run.
    `labels` (a `data.labels.WeakLabels`) makes training batches (images, class index)
    pairs, the index looked up from each record's cell_id. `shards` (names) reads only
    those shards of the directory, e.g. one per cluster task. `group_size` (with
    `labels`) orders each training batch as runs of `group_size` cells of one class,
    what the set-level weak-label loss (losses.set_contrast_loss) compares.
    """
    import tensorflow as tf

    if scale not in SCALES:
        raise DataError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if int(batch_size) <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    info = read_dataset_info(shards_dir)
    paths = [str(p) for p in shard_paths(shards_dir, info) if shards is None or p.name in shards]
    if not paths or int(info["n_cells"]) == 0:
        raise DataError(f"{shards_dir}: dataset holds no cells")
    crop = int(info["crop_size"])
    n_channels = len(info["channels"])
    _check_first_record(paths, crop, n_channels)
    for path in paths:
        # tf.data reads a cut-off last record as a clean end of file: check the framing
        # up front (one 8-byte read per record) so a truncated shard is named, not skipped.
        check_framing(path)
    if with_metadata:
        shuffle, augment, repeat, drop_remainder = False, False, False, False

    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle and len(paths) > 1:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def read(path):
        return tf.data.TFRecordDataset(path, buffer_size=1 << 20)

    if shuffle and len(paths) > 1:
        # Parallel reads across shards; deterministic=True keeps the interleave order fixed.
        records = files.interleave(read, cycle_length=min(len(paths), 8), block_length=1,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        # Unshuffled reads go shard by shard so the order follows the cell table.
        records = files.flat_map(read)
    if shuffle:
        buf = shuffle_buffer or min(int(info["n_cells"]), DEFAULT_SHUFFLE_BUFFER)
        records = records.shuffle(max(1, buf), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()

    table = None
    if labels is not None and not with_metadata:
        from .labels import label_table
        table = label_table(labels)
    if group_size:
        if table is None:
            raise DataError("group_size needs labels (training batches, not profiling)")
        records = _grouped_by_class(records, table, int(group_size), int(batch_size))
    batches = records.batch(int(batch_size), drop_remainder=drop_remainder)

    def parse(serialized):
        d = parse_batch(serialized, crop, n_channels, with_metadata=with_metadata or table is not None)
        if table is not None:
            return {"image": d["image"], "label": table.lookup(d["cell_id"])}
        return d

    ds = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        base = 0 if seed is None else int(seed)
        # A per-batch counter makes the stateless augmentation seed differ per batch and
        # epoch yet repeat exactly for the same `seed`.
        ds = tf.data.Dataset.zip((tf.data.Dataset.counter(), ds)).map(
            lambda i, d: {**d, "image": random_dihedral(d["image"], tf.stack(
                [tf.constant(base, tf.int64), i]))},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def finish(d):
        img = _rescale(d["image"], scale)
        if with_metadata:
            return {**d, "image": img}
        if table is not None:
            return img, d["label"]
        return img

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    opts = tf.data.Options()
    opts.deterministic = True
    return ds.with_options(opts).prefetch(tf.data.AUTOTUNE)


def _grouped_by_class(records, table, group_size: int, batch_size: int):
    """Serialized records reordered into runs of `group_size` of one class (the order
    within and between runs still the shuffle's), so a batch of `batch_size` holds
    batch_size / group_size whole runs. tf.data's group_by_window does the bookkeeping;
    only each record's cell_id is parsed here, the batch parse comes later."""
    import tensorflow as tf

    if group_size < 2 or group_size % 2 or batch_size % group_size or batch_size // group_size < 2:
        raise DataError(f"group_size {group_size} must be even (two halves per run) and divide "
                        f"the batch size {batch_size} into at least 2 runs")
    spec = {"cell_id": tf.io.FixedLenFeature([], tf.int64)}

    def label_of(serialized):
        return table.lookup(tf.io.parse_single_example(serialized, spec)["cell_id"])

    runs = records.group_by_window(
        key_func=label_of, reduce_func=lambda _, run: run.batch(group_size, drop_remainder=True),
        window_size=group_size)
    return runs.unbatch()


def _check_first_record(paths, crop: int, n_channels: int) -> None:
    """Compare the first stored crop with dataset.json before building the graph.

    Inside tf.data a shape mismatch would surface mid-training as a bare TF error that
    names no file; one eager record here turns the common cases (a dataset.json edited or
    copied from another set) into a DataError naming the shard.
    """
    from .shards import read_shard

    for path in paths:
        for rec in read_shard(path):
            if rec["image"].shape != (crop, crop, n_channels):
                raise DataError(f"{path}: crops are {'x'.join(map(str, rec['image'].shape))} but "
                                f"dataset.json says {crop}x{crop}x{n_channels}")
            return


def random_dihedral(images, seed):
    """Random flips and 90-degree rotations per image (the 8 symmetries of a square).

    Cell crops have no preferred orientation, so these are label-free augmentations.
    Composed from three independent coin flips (left-right, up-down, transpose), which
    together reach all 8 elements; `seed` is a stateless [2] int seed.
    """
    import tensorflow as tf

    b = tf.shape(images)[0]
    coins = tf.random.stateless_uniform([3, b], seed=seed, maxval=2, dtype=tf.int32) > 0

    def pick(mask, transformed, x):
        return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), transformed, x)

    x = images
    x = pick(coins[0], tf.reverse(x, axis=[2]), x)
    x = pick(coins[1], tf.reverse(x, axis=[1]), x)
    x = pick(coins[2], tf.transpose(x, [0, 2, 1, 3]), x)
    return x


def _rescale(images, scale):
    import tensorflow as tf

    if scale == "uint8":
        return images
    x = tf.cast(images, tf.float32)
    if scale == "unit":
        return x * (1.0 / 255.0)
    return x * (2.0 / 255.0) - 1.0
