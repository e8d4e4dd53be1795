"""The on-disk cell dataset: TFRecord shards, a per-cell table and `dataset.json`.

`prepare` writes this format and everything downstream (training, profiling) reads only
it, so the feature names and the `dataset.json` keys below are the contract of
docs/architecture.md. TensorFlow is imported inside the functions that need it, so the
CLI can import this module cheaply.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ..errors import DataError
from ..io_utils import atomic_path, atomic_write_json, write_table

FORMAT_VERSION = 1
CHANNELS = ["DNA", "Actin", "Tubulin"]
DATASET_JSON = "dataset.json"
CELLS_STEM = "cells"

# Feature name -> kind; the order here is the order of metadata keys in parsed records.
INT_FEATURES = ("height", "width", "channels", "cell_id", "site")
BYTES_FEATURES = ("plate", "well", "compound", "moa")
FLOAT_FEATURES = ("concentration", "center_x", "center_y")
METADATA_FEATURES = ("cell_id", "plate", "well", "compound", "moa", "concentration", "site",
                     "center_x", "center_y")

# The crop sizes the GAN networks take (four stride-2 stages from a 4x4 or larger start);
# prepare refuses others up front rather than letting train refuse the shards later.
CROP_SIZES = tuple(range(32, 129, 16))


def crop_size_problem(size) -> str | None:
    """Why `size` cannot be a crop size, or None when it can."""
    if isinstance(size, bool) or not isinstance(size, int) or size not in CROP_SIZES:
        return (f"{size!r} must be a multiple of 16 from {CROP_SIZES[0]} to {CROP_SIZES[-1]} "
                f"({', '.join(map(str, CROP_SIZES))})")
    return None


_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.tfrecord$")


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    m = _SHARD_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------- writing

def serialize_cell(image: np.ndarray, meta: Mapping) -> bytes:
    """One cell as a serialized `tf.train.Example` (image: uint8 HxWxC)."""
    import tensorflow as tf

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"crop must be uint8 HxWxC, got {image.dtype} {image.shape}")
    h, w, c = image.shape

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode("utf-8")]))

    feats = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes(order="C")])),
        "height": ints(h),
        "width": ints(w),
        "channels": ints(c),
        "cell_id": ints(meta["cell_id"]),
        "site": ints(meta.get("site", 0)),
        "concentration": floats(meta.get("concentration", 0.0)),
        "center_x": floats(meta["center_x"]),
        "center_y": floats(meta["center_y"]),
    }
    for key in BYTES_FEATURES:
        feats[key] = strings(meta.get(key, ""))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write_shard(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write serialized records to `path` atomically; returns the record count.

    The file appears under its final name only once complete, which is what lets a
    killed `prepare` resume by skipping shards that exist.
    """
    import tensorflow as tf

    n = 0
    with atomic_path(path, suffix=".tfrecord") as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for rec in records:
                writer.write(rec)
                n += 1
    return n


def write_dataset_info(shards_dir: str | os.PathLike, info: Mapping) -> None:
    atomic_write_json(Path(shards_dir) / DATASET_JSON, dict(info))


def write_cells_table(shards_dir: str | os.PathLike, cells) -> None:
    write_table(cells, Path(shards_dir) / CELLS_STEM)


# --------------------------------------------------------------------------- reading

def read_dataset_info(shards_dir: str | os.PathLike) -> dict:
    """`dataset.json` of a shards directory; DataError if it is missing or unreadable."""
    path = Path(shards_dir) / DATASET_JSON
    if not Path(shards_dir).is_dir():
        raise DataError(f"shards directory not found: {shards_dir}")
    if not path.is_file():
        raise DataError(f"{path}: missing (not a prepared shards directory, or prepare "
                        f"has not finished)")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable dataset info ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in ("crop_size", "channels", "shards", "n_cells", "format_version"):
        if key not in info:
            raise DataError(f"{path}: missing key {key!r}")
    def bad_int(v):
        return isinstance(v, bool) or not isinstance(v, int) or v < 0

    if bad_int(info["crop_size"]) or info["crop_size"] == 0 or bad_int(info["n_cells"]):
        raise DataError(f"{path}: crop_size/n_cells must be non-negative integers")
    if not isinstance(info["shards"], list) or not all(
            isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in info["shards"]):
        raise DataError(f"{path}: 'shards' must be a list of file names")
    if not isinstance(info["channels"], list) or not info["channels"]:
        raise DataError(f"{path}: 'channels' must be a non-empty list")
    if info["format_version"] != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {info['format_version']!r} not supported "
                        f"(expected {FORMAT_VERSION})")
    return info


def shard_paths(shards_dir: str | os.PathLike, info: Mapping | None = None) -> list[Path]:
    """Absolute shard paths listed in dataset.json; DataError naming a missing one."""
    shards_dir = Path(shards_dir)
    info = read_dataset_info(shards_dir) if info is None else info
    paths = [shards_dir / name for name in info["shards"]]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: shard listed in dataset.json is missing")
    return paths


def read_cells_table(shards_dir: str | os.PathLike):
    """The per-cell table (parquet preferred, CSV fallback)."""
    import pandas as pd

    shards_dir = Path(shards_dir)
    pq, csv = shards_dir / f"{CELLS_STEM}.parquet", shards_dir / f"{CELLS_STEM}.csv"
    try:
        if pq.is_file():
            return pd.read_parquet(pq)
        if csv.is_file():
            return pd.read_csv(csv)
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        raise DataError(f"{pq if pq.is_file() else csv}: unreadable cell table ({exc})") from None
    raise DataError(f"{pq}: missing cell table")


def feature_spec():
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in INT_FEATURES})
    spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in BYTES_FEATURES})
    spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in FLOAT_FEATURES})
    return spec


def parse_batch(serialized, crop_size: int, channels: int = 3, with_metadata: bool = True):
    """Parse a batch (1-D string tensor) of Examples into `image` uint8 [B,H,W,C] + metadata.

    Parsing a whole batch at once (`tf.io.parse_example`) is several times faster than
    one record at a time, which matters because this feeds GAN training.
    """
    import tensorflow as tf

    spec = feature_spec()
    if not with_metadata:
        spec = {"image": spec["image"]}
    try:
        parsed = tf.io.parse_example(serialized, spec)
        flat = tf.io.decode_raw(parsed.pop("image"), tf.uint8)
        images = tf.reshape(flat, [-1, crop_size, crop_size, channels])
    except (tf.errors.OpError, UnicodeDecodeError) as exc:  # eager only; in a graph it surfaces later
        raise DataError(f"corrupt cell record(s): {_describe(exc)}") from None
    out = {"image": images}
    if with_metadata:
        out.update({k: parsed[k] for k in METADATA_FEATURES})
    return out


def parse_single(serialized, crop_size: int, channels: int = 3):
    """Parse one serialized Example into a dict of tensors (image uint8 [H,W,C])."""
    import tensorflow as tf

    parsed = parse_batch(tf.reshape(serialized, [1]), crop_size, channels)
    return {k: v[0] for k, v in parsed.items()}


def read_shard(path: str | os.PathLike, crop_size: int | None = None) -> Iterator[dict]:
    """Eagerly read one shard as dicts of numpy values; DataError naming the file if corrupt.

    Each record's own height/width/channels are checked against its image bytes, so a
    damaged record cannot silently turn into a wrong-shaped crop.
    """
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard not found")
    check_framing(path)
    spec = feature_spec()
    ds = tf.data.TFRecordDataset(str(path))
    it = iter(ds)
    index = 0
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except (tf.errors.OpError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: corrupt TFRecord at record {index} ({_describe(exc)})") from None
        try:
            parsed = tf.io.parse_single_example(raw, spec)
            h, w, c = (int(parsed[k]) for k in ("height", "width", "channels"))
            pixels = tf.io.decode_raw(parsed["image"], tf.uint8).numpy()
        except (tf.errors.OpError, UnicodeDecodeError) as exc:
            # TF builds some parse-error messages from the record's raw bytes and then
            # fails to decode them itself (UnicodeDecodeError): both mean a bad record.
            raise DataError(f"{path}: unparsable record {index} ({_describe(exc)})") from None
        if min(h, w, c) <= 0 or pixels.size != h * w * c or (
                crop_size is not None and (h, w) != (crop_size, crop_size)):
            raise DataError(f"{path}: record {index} has {pixels.size} image bytes for "
                            f"declared shape {h}x{w}x{c}")
        rec = {"image": pixels.reshape(h, w, c)}
        for k in METADATA_FEATURES:
            v = parsed[k].numpy()
            rec[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v.item()
        yield rec
        index += 1


def check_framing(path: str | os.PathLike) -> int:
    """Walk the TFRecord frames of a file; DataError unless they tile it exactly.

    Hand-written because TFRecordDataset treats a cut-off last record as a clean end of
    file (it supports tailing a file being written), so a truncated shard would read as
    a shorter one without any error. Frame: u64 length, u32 crc, data, u32 crc; the CRCs
    themselves are checked by TensorFlow while reading.
    """
    path = Path(path)
    size = path.stat().st_size
    offset = n = 0
    with open(path, "rb") as fh:
        while offset < size:
            head = fh.read(8)
            if len(head) < 8:
                raise DataError(f"{path}: truncated TFRecord (record {n} header cut off)")
            length = int.from_bytes(head, "little")
            offset += 8 + 4 + length + 4
            if offset > size:
                raise DataError(f"{path}: truncated TFRecord (record {n} cut off)")
            fh.seek(offset)
            n += 1
    return n


def count_records(path: str | os.PathLike) -> int:
    """Number of records in one shard (reads it through; DataError if corrupt)."""
    import tensorflow as tf

    path = Path(path)
    check_framing(path)
    try:
        return int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda n, _: n + 1))
    except (tf.errors.OpError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt TFRecord ({_describe(exc)})") from None


def verify_shards(shards_dir: str | os.PathLike) -> int:
    """Read every record of every shard; returns the cell count or raises DataError.

    Training streams shards inside a tf.data graph where an error cannot name its file,
    so this is the check to run when a shards directory is in doubt.
    """
    info = read_dataset_info(shards_dir)
    n = 0
    for p in shard_paths(shards_dir, info):
        for _ in read_shard(p, crop_size=int(info["crop_size"])):
            n += 1
    if n != int(info["n_cells"]):
        raise DataError(f"{Path(shards_dir) / DATASET_JSON}: n_cells={info['n_cells']} "
                        f"but the shards hold {n} records")
    return n


def locate_bad_shard(shards_dir: str | os.PathLike, exc: BaseException) -> DataError:
    """The DataError to raise for a tf.data read error `exc` on `shards_dir`.

    Inside a tf.data graph a truncated or corrupt record surfaces without its file name;
    re-reading each shard's framing and records finds which one it is.
    """
    try:
        paths = shard_paths(shards_dir)
    except DataError as err:
        return err
    for path in paths:
        try:
            count_records(path)
        except DataError as err:
            return DataError(f"{err}; re-run prepare for this dataset (or restore the file)")
    return DataError(f"{shards_dir}: a shard failed to read ({_describe(exc)})")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "undecodable parse error"
    return _first_line(getattr(exc, "message", str(exc)))


def _first_line(msg: str) -> str:
    return (msg or "").strip().splitlines()[0][:200] if msg else "unknown error"
