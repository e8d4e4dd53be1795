"""Nuclei/cell segmentation and percentile normalisation on small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from cytogan_tf.data import normalize
from cytogan_tf.data.segment import (SegmentParams, segment_cells, segment_image,
                                     segment_nuclei, seeds_from_points)
from cytogan_tf.errors import ConfigError, DataError

REPO_FLY = Path(__file__).parent / "data" / "examplefly"
# the full field lives in ../shared beside the checkout (as in CI)
SHARED_FLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "examplefly" / "01_POS002_D.TIF"


def _blobs(shape=(96, 96), centres=((30, 30), (30, 70), (70, 50)), radius=9, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(100, noise, shape)
    for c in centres:
        img[disk(c, radius, shape=shape)] += 400
    return img.astype(np.float32)


def test_separate_nuclei_found_with_centroids_and_areas():
    img = _blobs()
    seg = segment_image(np.stack([img, img, img], -1))
    assert len(seg) == 3
    found = sorted((round(y), round(x)) for x, y in seg.centroids)
    assert found == [(30, 30), (30, 70), (70, 50)]
    assert np.all(np.abs(seg.areas - np.pi * 81) < 40)


def test_touching_nuclei_are_split_and_debris_removed():
    img = _blobs(centres=(), radius=11)
    for c in ((48, 38), (48, 58)):                          # overlapping disks, one level
        img[disk(c, 11, shape=img.shape)] = 500
    img[disk((10, 10), 2, shape=img.shape)] += 400         # 13-px speck: debris
    nuclei = segment_nuclei(img, SegmentParams(min_nucleus_area=40))
    assert nuclei.max() == 2
    left, right = nuclei[48, 34], nuclei[48, 62]
    assert left and right and left != right
    assert nuclei[10, 10] == 0


def test_flat_or_dark_image_gives_zero_nuclei():
    assert segment_nuclei(np.zeros((64, 64), np.float32)).max() == 0
    seg = segment_image(np.full((64, 64, 3), 7.0, np.float32))
    assert len(seg) == 0 and seg.cells.max() == 0 and seg.centroids.shape == (0, 2)


def test_cells_grow_from_their_own_nucleus_and_stop_at_background():
    shape = (96, 96)
    nuc = _blobs(shape, centres=((48, 28), (48, 68)), radius=7)
    cyto = np.full(shape, 10.0, np.float32)
    for c in ((48, 28), (48, 68)):
        cyto[disk(c, 18, shape=shape)] = 200.0
    seg = segment_image(np.stack([nuc, cyto, cyto], -1))
    assert len(seg) == 2
    for lab, (x, y) in zip(seg.labels, seg.centroids):
        cell = seg.cells == lab
        assert cell[int(round(y)), int(round(x))]
        assert np.all(cell[seg.nuclei == lab])
        assert 0.6 * np.pi * 18**2 < cell.sum() < 1.3 * np.pi * 18**2  # stops at the cytoplasm edge
    assert seg.cells[5, 5] == 0


def test_examplefly_dna_channel_finds_plausible_nuclei_count():
    # Kc167 fly cells: a 384x384 cut of field POS002 holds ~50 nuclei, the dense
    # POS076 cut ~130 (measured by eye on the overlay: 10-40 px nuclei).
    counts = {}
    for pos in ("002", "076"):
        dna = tifffile.imread(REPO_FLY / f"01_POS{pos}_D.TIF")
        assert dna.dtype == np.uint8
        counts[pos] = int(segment_nuclei(dna).max())
    assert 30 <= counts["002"] <= 90
    assert 80 <= counts["076"] <= 200


@pytest.mark.skipif(not SHARED_FLY.is_file(), reason="full ExampleFly field not present")
def test_examplefly_full_field_hundreds_of_nuclei():
    n = int(segment_nuclei(tifffile.imread(SHARED_FLY)).max())
    assert 150 <= n <= 1500


def test_seeds_from_points_take_over_nuclei_or_make_disks():
    nuclei = np.zeros((40, 40), np.int32)
    nuclei[5:15, 5:15] = 1
    seeds = seeds_from_points([(10, 10), (30, 30), (99, 99)], nuclei.shape, nuclei)
    assert np.all(seeds[5:15, 5:15] == 1)
    assert seeds[30, 30] == 2 and 20 < (seeds == 2).sum() < 40
    assert not (seeds == 3).any()  # outside the image
    cells = segment_cells(seeds, np.ones((40, 40), np.float32))
    assert {1, 2} <= set(np.unique(cells).tolist()) <= {0, 1, 2}


def test_params_from_config_and_validation():
    p = SegmentParams.from_config({"min_nucleus_area": 20, "smoothing_sigma": 0.5, "crop_size": 32})
    assert p.min_nucleus_area == 20 and p.smoothing_sigma == 0.5
    with pytest.raises(ConfigError, match="threshold"):
        SegmentParams.from_config({"threshold": "magic"})
    with pytest.raises(ConfigError, match="local_block_size"):
        SegmentParams.from_config({"threshold": "local", "local_block_size": 10})
    img = _blobs()
    local = segment_nuclei(img, SegmentParams(threshold="local", local_block_size=51))
    assert local.max() == 3


def test_percentile_normalisation_maps_range_to_uint8():
    rng = np.random.default_rng(0)
    img = rng.uniform(100, 1100, (64, 64, 3)).astype(np.float32)
    ranges = normalize.channel_ranges([img], (0.1, 99.9))
    assert set(ranges) == {"DNA", "Actin", "Tubulin"}
    lo, hi = ranges["DNA"]
    assert 99 < lo < 110 and 1090 < hi <= 1100
    out = normalize.apply_ranges(img, ranges)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    fixed = {c: [100.0, 1100.0] for c in normalize.CHANNELS}
    px = normalize.apply_ranges(np.array([[[100, 600, 5000]]], np.float32), fixed)
    assert px.tolist() == [[[0, 128, 255]]]


def test_plate_normalisation_is_seeded_and_stored_form_reapplies():
    imgs = {f"p{i}": np.full((8, 8, 3), float(i), np.float32) + np.arange(64).reshape(8, 8, 1)
            for i in range(12)}
    plates = {"B": [f"p{i}" for i in range(6, 12)], "A": [f"p{i}" for i in range(6)]}
    a = normalize.plate_normalization(plates, imgs.__getitem__, sample_size=3, seed=5)
    b = normalize.plate_normalization(plates, imgs.__getitem__, sample_size=3, seed=5)
    assert a == b and list(a["per_plate"]) == ["A", "B"] and a["method"] == "percentile"
    assert normalize.sample_images(list(range(10)), 3, seed=1) != normalize.sample_images(
        list(range(10)), 3, seed=2)
    img = imgs["p7"]
    np.testing.assert_array_equal(normalize.apply_normalization(img, a, "B"),
                                  normalize.apply_ranges(img, a["per_plate"]["B"]))
    with pytest.raises(DataError, match="plate 'Z'"):
        normalize.apply_normalization(img, a, "Z")
    assert normalize.apply_normalization(img, a, "Z", fallback="self").max() == 255
