"""Shards format and tf.data pipeline: shapes, ranges, determinism, corrupt input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cytogan_tf.data import pipeline, shards
from cytogan_tf.errors import DataError

CROP = 16


def _write_toy_shards(out, n_cells=50, n_shards=3, crop=CROP):
    """A shards directory whose crop `i` is filled with the value `i` (easy to trace)."""
    out.mkdir(parents=True, exist_ok=True)
    names = [shards.shard_name(i, n_shards) for i in range(n_shards)]
    per = [[] for _ in range(n_shards)]
    for cid in range(n_cells):
        img = np.full((crop, crop, 3), cid % 256, np.uint8)
        img[0, 0] = (0, 128, 255)  # marks orientation, used by the augmentation test
        meta = dict(cell_id=cid, plate=f"P{cid % 2}", well="B02", compound="taxol",
                    moa="Microtubule stabilizers", concentration=0.3, site=cid % 4,
                    center_x=10.5 + cid, center_y=20.25)
        per[cid * n_shards // n_cells].append(shards.serialize_cell(img, meta))
    for name, recs in zip(names, per):
        shards.write_shard(out / name, recs)
    shards.write_dataset_info(out, {
        "crop_size": crop, "channels": shards.CHANNELS, "n_cells": n_cells, "shards": names,
        "normalization": {"method": "percentile", "percentiles": [0.1, 99.9], "per_plate": {}},
        "source": "toy", "layout": "toy", "format_version": shards.FORMAT_VERSION})
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _write_toy_shards(tmp_path_factory.mktemp("toy") / "shards")


def test_training_batches_shapes_dtypes_ranges(toy):
    ds = pipeline.make_dataset(toy, 8, seed=1)
    batch = next(iter(ds))
    assert batch.shape == (8, CROP, CROP, 3) and batch.dtype.name == "float32"
    assert float(batch.numpy().min()) >= -1.0 and float(batch.numpy().max()) <= 1.0
    # repeat=True keeps going past one epoch (50 cells -> 6 full batches per epoch)
    assert len(list(ds.take(20))) == 20

    unit = next(iter(pipeline.make_dataset(toy, 4, scale="unit", seed=1))).numpy()
    assert 0.0 <= unit.min() and unit.max() <= 1.0
    raw = next(iter(pipeline.make_dataset(toy, 4, scale="uint8", seed=1))).numpy()
    assert raw.dtype == np.uint8
    np.testing.assert_allclose(unit, raw / 255.0, atol=1e-6)


def test_one_epoch_sees_every_cell_once(toy):
    ds = pipeline.make_dataset(toy, 7, seed=3, repeat=False, drop_remainder=False, scale="uint8")
    values = sorted(int(v) for b in ds for v in b.numpy()[:, 5, 5, 0])
    assert values == list(range(50))


def test_same_seed_same_batches_different_seed_differs(toy):
    def first(seed, augment=False):
        ds = pipeline.make_dataset(toy, 10, seed=seed, augment=augment, scale="uint8")
        return np.stack([b.numpy() for b in ds.take(6)])

    a, b, c = first(7), first(7), first(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(first(7, augment=True), first(7, augment=True))


def test_augmentation_moves_the_marker_but_keeps_content(toy):
    ds = pipeline.make_dataset(toy, 50, seed=0, augment=True, shuffle=False, repeat=False,
                               scale="uint8", drop_remainder=False)
    imgs = next(iter(ds)).numpy()
    corners = {tuple(np.argwhere(im[:, :, 2] == 255)[0]) for im in imgs}
    # the marked pixel lands on more than one corner, and only on corners
    assert len(corners) > 1
    assert corners <= {(0, 0), (0, CROP - 1), (CROP - 1, 0), (CROP - 1, CROP - 1)}
    # content preserved: each crop still holds its fill value everywhere but the marker
    for im in imgs:
        assert len(np.unique(im[:, :, 0])) <= 2


def test_with_metadata_in_table_order_and_complete(toy):
    ds = pipeline.make_dataset(toy, 16, with_metadata=True, scale="unit")
    items = list(ds)
    ids = np.concatenate([d["cell_id"].numpy() for d in items])
    assert ids.tolist() == list(range(50))
    d = items[0]
    assert d["image"].shape == (16, CROP, CROP, 3)
    assert d["plate"].numpy()[1] == b"P1" and d["moa"].numpy()[0] == b"Microtubule stabilizers"
    assert d["center_x"].numpy()[3] == pytest.approx(13.5)
    assert d["concentration"].dtype.name == "float32" and d["site"].dtype.name == "int64"
    assert pipeline.count_cells(toy) == 50 == shards.verify_shards(toy)


def test_read_shard_eagerly(toy):
    info = shards.read_dataset_info(toy)
    recs = list(shards.read_shard(toy / info["shards"][0], crop_size=CROP))
    assert recs[0]["image"].shape == (CROP, CROP, 3) and recs[0]["cell_id"] == 0
    assert recs[0]["compound"] == "taxol"


def test_missing_or_broken_dataset_info(tmp_path, toy):
    with pytest.raises(DataError, match="dataset.json"):
        shards.read_dataset_info(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json"):
        pipeline.make_dataset(tmp_path, 4)
    copy = _write_toy_shards(tmp_path / "copy", n_cells=5, n_shards=1)
    info = json.loads((copy / "dataset.json").read_text())
    info["shards"].append("shard-00009-of-00010.tfrecord")
    (copy / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="shard-00009-of-00010"):
        pipeline.make_dataset(copy, 4)


def test_truncated_shard_raises_dataerror_naming_file(tmp_path):
    out = _write_toy_shards(tmp_path / "s", n_cells=10, n_shards=1)
    path = out / shards.shard_name(0, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 7])  # mid-record
    with pytest.raises(DataError, match=path.name):
        list(shards.read_shard(path))
    with pytest.raises(DataError, match=path.name):
        shards.verify_shards(out)


def test_parse_functions_on_garbage_raise_dataerror():
    import tensorflow as tf

    with pytest.raises(DataError, match="corrupt cell record"):
        shards.parse_single(tf.constant(b"\x00garbage"), CROP)
    good = shards.serialize_cell(np.zeros((8, 8, 3), np.uint8), dict(cell_id=1, center_x=0, center_y=0))
    with pytest.raises(DataError, match="corrupt cell record"):
        shards.parse_batch(tf.constant([good]), CROP)  # declared 8x8, expected 16x16
    parsed = shards.parse_single(tf.constant(good), 8)
    assert parsed["image"].shape == (8, 8, 3) and int(parsed["cell_id"]) == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=400), framed=st.booleans())
def test_random_bytes_as_shard_only_raise_dataerror(tmp_path, data, framed):
    import tensorflow as tf

    path = tmp_path / "shard-00000-of-00001.tfrecord"
    if framed:  # valid TFRecord framing and CRCs around a garbage Example
        with tf.io.TFRecordWriter(str(path)) as w:
            w.write(data)
    else:
        path.write_bytes(data)
    try:
        for _ in shards.read_shard(path, crop_size=CROP):
            pass
        shards.count_records(path)
    except DataError as exc:
        assert path.name in str(exc)



_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 100) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=8)


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    out = _write_toy_shards(tmp_path_factory.mktemp("fuzz") / "shards", n_cells=4, n_shards=1)
    return out, json.loads((out / "dataset.json").read_text())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(override=st.dictionaries(st.sampled_from(["crop_size", "channels", "n_cells", "shards",
                                                 "format_version"]),
                                _json | st.integers(1, 40), max_size=3))
def test_damaged_dataset_json_only_raises_dataerror(fuzz_base, override):
    out, base = fuzz_base
    (out / "dataset.json").write_text(json.dumps({**base, **override}))
    try:
        for _ in pipeline.make_dataset(out, 2, seed=0, repeat=False):
            pass
    except DataError as exc:
        assert "dataset.json" in str(exc) or "shard" in str(exc)
