"""Hand-made features separate cells the way a biologist would expect."""

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from cytogan_tf.features import FEATURE_NAMES, compute_features, features_table, otsu_thresholds


def cell(nucleus_r, cell_r, rng, size=48, actin=120, elongation=1.0):
    im = np.zeros((size, size, 3), np.uint8)
    c = size // 2
    rr, cc = ellipse(c, c, cell_r, cell_r * elongation, shape=(size, size))
    im[rr, cc, 1] = actin
    im[rr, cc, 2] = 90
    rr, cc = disk((c, c), nucleus_r, shape=(size, size))
    im[rr, cc, 0] = 220
    noise = rng.integers(0, 15, im.shape)
    return np.clip(im.astype(int) + noise, 0, 255).astype(np.uint8)


def column(features, name):
    return features[:, FEATURE_NAMES.index(name)]


def test_small_and_large_nuclei_separate_by_area():
    rng = np.random.default_rng(0)
    small = np.stack([cell(4, 10, rng) for _ in range(10)])
    large = np.stack([cell(9, 16, rng) for _ in range(10)])
    f = compute_features(np.concatenate([small, large]))
    assert f.shape == (20, len(FEATURE_NAMES)) and np.isfinite(f).all()
    area = column(f, "Nuclei_AreaShape_Area")
    assert area[:10].max() < area[10:].min()
    # disk area pi r^2 within a pixel-discretisation margin
    assert np.median(area[:10]) == pytest.approx(np.pi * 16, rel=0.3)
    assert np.median(area[10:]) == pytest.approx(np.pi * 81, rel=0.2)
    cells = column(f, "Cells_AreaShape_Area")
    assert cells[:10].max() < cells[10:].min()


def test_intensity_and_shape_features_respond():
    rng = np.random.default_rng(1)
    dim = np.stack([cell(6, 14, rng, actin=60) for _ in range(4)])
    bright = np.stack([cell(6, 14, rng, actin=200) for _ in range(4)])
    long = np.stack([cell(6, 8, rng, elongation=2.5) for _ in range(4)])
    f = compute_features(np.concatenate([dim, bright, long]))
    actin = column(f, "Cells_Intensity_MeanIntensity_Actin")
    assert actin[:4].max() < actin[4:8].min()
    ecc = column(f, "Cells_AreaShape_Eccentricity")
    assert ecc[:4].max() < ecc[8:].min()
    radial = f[:, [FEATURE_NAMES.index(f"Cells_RadialDistribution_FracAtD_DNA_{k}of4") for k in range(1, 5)]]
    assert np.allclose(radial.sum(1), 1.0, atol=1e-5)
    assert (radial[:, 0] > radial[:, 3]).all()  # DNA sits at the centre


def test_blank_crop_gives_finite_zeros_and_float_input_accepted():
    blank = np.zeros((2, 32, 32, 3), np.float32)
    f = compute_features(blank)
    assert np.isfinite(f).all()
    assert (column(f, "Nuclei_AreaShape_Area") <= 32 * 32).all()


def test_otsu_matches_scikit_image():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(2)
    ims = np.stack([cell(6, 12, rng)[..., 0] for _ in range(3)])
    ours = otsu_thresholds(ims)
    theirs = np.array([threshold_otsu(im) for im in ims])
    # skimage returns the bin centre below which pixels are background, as ours does
    assert np.all(np.abs(ours - theirs) <= 1)


def test_workers_give_identical_features():
    rng = np.random.default_rng(3)
    ims = np.stack([cell(int(rng.integers(3, 9)), 12, rng) for _ in range(12)])
    serial = features_table(ims)
    parallel = features_table(ims, workers=2, chunk_size=6)
    assert list(serial.columns) == FEATURE_NAMES
    np.testing.assert_allclose(serial.to_numpy(), parallel.to_numpy())


def test_bad_shape_rejected():
    with pytest.raises(ValueError, match="H, W, 3"):
        compute_features(np.zeros((2, 32, 32), np.uint8))
