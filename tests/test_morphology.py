"""E's morphology head: the statistics say what a biologist would read off a cell, and z
learns them (models/morphology.py, BiGAN's `morphology_weight`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf.errors import ConfigError
from cytogan_tf.export import export_run, read_export_metadata
from cytogan_tf.models import build_gan, make_optimizers
from cytogan_tf.models.morphology import (N_STATISTICS, PER_CHANNEL, TEXTURE_PER_CHANNEL,
                                          morphology_statistics, n_statistics, standardized)
from cytogan_tf.training import load_run, train

from training_helpers import tiny_config, write_tiny_shards

SIZE = 32
YY, XX = np.mgrid[:SIZE, :SIZE]


def _cells(radii, brightness, centre=(16, 16), stretch=1.0):
    """Flat discs (or ellipses, `stretch` along x) on black, the networks' [-1, 1] scale."""
    cy, cx = centre
    imgs = []
    for r, v in zip(radii, brightness):
        inside = (YY - cy) ** 2 + ((XX - cx) / stretch) ** 2 < r * r
        img = np.where(inside, 2.0 * v - 1.0, -1.0).astype(np.float32)
        imgs.append(np.stack([img] * 3, axis=-1))
    return tf.constant(np.stack(imgs))


def _stat(stats, name, channel=0):
    return stats[:, 3 * PER_CHANNEL.index(name) + channel]


def test_statistics_grow_with_size_brightness_and_elongation():
    stats = morphology_statistics(tf.concat([_cells([4, 9, 9], [0.5, 0.5, 0.9]),
                                             _cells([6], [0.5], stretch=2.0)], axis=0)).numpy()
    assert stats.shape == (4, N_STATISTICS) and np.isfinite(stats).all()
    area, spread = _stat(stats, "area"), _stat(stats, "spread")
    assert area[0] < area[1] == pytest.approx(area[2]) and spread[0] < spread[1]
    assert _stat(stats, "cell_mean")[1] == pytest.approx(0.5, abs=0.01)
    assert _stat(stats, "cell_mean")[2] == pytest.approx(0.9, abs=0.01)
    assert _stat(stats, "elongation")[3] > 0.4 > _stat(stats, "elongation")[1]
    np.testing.assert_allclose(stats[:, -3:], 1.0, atol=1e-3)  # identical stains co-localise


def test_statistics_ignore_the_cells_pose():
    cells = _cells([4, 6, 8], [0.3, 0.6, 0.9], centre=(14, 17), stretch=1.5)  # inside the crop
    base = morphology_statistics(cells).numpy()
    for turned in (tf.image.rot90(cells), tf.image.flip_left_right(cells),
                   tf.roll(cells, -2, axis=2), tf.roll(cells, 2, axis=1)):
        moved = morphology_statistics(turned).numpy()
        shifted_grid = 3 * PER_CHANNEL.index("edges_4")  # 4-px pooling sees a 2-px shift
        keep = np.ones(N_STATISTICS, bool)
        keep[shifted_grid:shifted_grid + 3] = False
        np.testing.assert_allclose(moved[:, keep], base[:, keep], atol=1e-4)


def test_texture_statistics_tell_fibres_spots_and_haze_apart():
    rng = np.random.default_rng(0)
    disk = (YY - 16) ** 2 + (XX - 16) ** 2 < 12 ** 2
    patterns = {"fibres": 0.5 + 0.3 * np.sin(XX * 1.2), "flat": np.full((SIZE, SIZE), 0.5),
                "spots": 0.4 + 0.5 * (rng.random((SIZE, SIZE)) > 0.93),
                "haze": 0.5 + 0.1 * rng.standard_normal((SIZE, SIZE))}
    imgs = np.stack([np.stack([np.where(disk, p, 0.0)] * 3, -1) for p in patterns.values()])
    stats = morphology_statistics(tf.constant(imgs * 2.0 - 1.0, tf.float32), "shape-texture").numpy()
    assert stats.shape == (4, n_statistics("shape-texture")) == (4, N_STATISTICS + 12)
    named = dict(zip(patterns, stats))
    at = {n: 3 * (len(PER_CHANNEL) + i) for i, n in enumerate(TEXTURE_PER_CHANNEL)}
    assert named["fibres"][at["coherence"]] > 0.9 > 0.5 > named["haze"][at["coherence"]]
    assert named["flat"][at["coherence"]] == pytest.approx(0.0, abs=1e-3)  # no edges inside
    assert named["spots"][at["spots"]] > 0.03 > named["flat"][at["spots"]]
    assert named["flat"][at["granularity_3"]] < named["haze"][at["granularity_3"]]
    with pytest.raises(ValueError, match="shape-texture"):
        morphology_statistics(tf.constant(imgs, tf.float32), "texture")


def test_standardized_targets_are_batch_z_scores_and_clipped():
    stats = tf.constant([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [1000.0, 5.0]])
    z = standardized(stats, clip=1.5).numpy()
    assert np.abs(z).max() <= 1.5 and z[0, 0] < z[1, 0] < z[2, 0]
    np.testing.assert_array_equal(z[:, 1], 0.0)  # a constant statistic teaches nothing


def test_bigan_morphology_head_learns_with_g_and_e():
    gan = build_gan({"arch": "bigan", "image_size": SIZE, "latent_dim": 16,
                     "widths": [16, 8, 8, 4], "morphology_weight": 1.0}, seed=0)
    gan.compile(*make_optimizers({"g_lr": 5e-3, "d_lr": 2e-4}))
    head = gan.encoder_morphology_head.trainable_variables
    assert head and all(any(h is v for v in gan.g_variables) for h in head)
    assert not any(h is v for h in head for v in gan.d_variables)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(30):
        batch = _cells(rng.uniform(3, 12, 16), rng.uniform(0.2, 1.0, 16))
        seen.append(float(gan.train_step(batch)["morphology_loss"]))
    assert all(math.isfinite(v) for v in seen)
    assert np.mean(seen[-5:]) < 0.75 * np.mean(seen[:5]), seen


def test_hand_made_targets_are_the_baselines_features_and_train_in_graph():
    from cytogan_tf.features import FEATURE_NAMES, compute_features

    rng = np.random.default_rng(1)
    cells = _cells(rng.uniform(3, 12, 8), rng.uniform(0.2, 1.0, 8), stretch=1.3)
    stats = morphology_statistics(cells, "hand-made").numpy()
    assert stats.shape == (8, len(FEATURE_NAMES)) == (8, n_statistics("hand-made"))
    np.testing.assert_allclose(stats, compute_features((cells.numpy() + 1) / 2), rtol=1e-5)
    gan = build_gan({"arch": "bigan", "image_size": SIZE, "latent_dim": 16, "widths": [16, 8, 8, 4],
                     "morphology_weight": 1.0, "morphology_statistics": "hand-made"}, seed=0)
    gan.compile(*make_optimizers({"g_lr": 5e-3, "d_lr": 2e-4}))
    step = tf.function(gan.train_step)  # the host call runs inside a traced step
    losses = [float(step(cells)["morphology_loss"]) for _ in range(3)]
    assert all(math.isfinite(v) and v > 0 for v in losses), losses


@pytest.mark.parametrize("cfg,message", [
    ({"arch": "bigan", "morphology_weight": -1}, "model.morphology_weight"),
    ({"arch": "bigan", "morphology_weight": True}, "model.morphology_weight"),
    ({"arch": "bigan", "morphology_statistics": "haralick"}, "model.morphology_statistics"),
    ({"arch": "began", "morphology_weight": 1.0}, "unknown key"),
    ({"arch": "lsgan", "morphology_weight": "1"}, "model.morphology_weight"),
])
def test_bad_morphology_options_are_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"image_size": SIZE, "latent_dim": 8, "widths": [16, 8, 8, 4], **cfg})


def test_morphology_run_resumes_restores_its_head_and_exports_z(tmp_path):
    shards = write_tiny_shards(tmp_path / "shards")
    run = tmp_path / "run"
    cfg = tiny_config("bigan")
    cfg["model"]["morphology_weight"] = 1.0
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, shards, run, steps=2, **kw)
    result = train(cfg, shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["morphology_loss"])
    restored = load_run(run).gan.encoder_morphology_head.get_weights()
    fresh = build_gan(cfg["model"], seed=1).encoder_morphology_head.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(restored, fresh))
    meta = read_export_metadata(export_run(run, "morph", tmp_path / "exported")["encoder"])
    assert meta["encoder_dim"] == meta["latent_dim"] == cfg["model"]["latent_dim"]


def test_lsgan_morphology_head_trains_d_features_under_the_head_optimizer(tmp_path):
    """The demo's LSGAN with a morphology head on D's texture readout: the head and the D
    layers beneath it learn the whole cells' statistics by the heads' own optimizer, and a
    resumed run restores the head."""
    from cytogan_tf.models import make_head_optimizer

    model = {"arch": "lsgan", "image_size": SIZE, "latent_dim": 16, "widths": [16, 8, 8, 4],
             "readout": "texture", "head_features": "texture", "augment": "window",
             "ssl": "contrastive", "morphology_weight": 1.0}
    gan = build_gan(model, seed=0)
    gan.compile(*make_optimizers({"g_lr": 2e-4, "d_lr": 7e-5}),
                head_optimizer=make_head_optimizer({"head_lr": 3e-3}))
    head = gan.morphology_head.trainable_variables
    assert all(any(h is v for v in gan.head_variables) for h in head)
    assert not any(h is v for h in head for v in gan.d_variables + gan.g_variables)
    step = tf.function(gan.train_step)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(30):
        batch = _cells(rng.uniform(3, 12, 16), rng.uniform(0.2, 1.0, 16))
        seen.append(float(step(batch)["morphology_loss"]))
    assert all(math.isfinite(v) for v in seen)
    assert np.mean(seen[-5:]) < 0.9 * np.mean(seen[:5]), seen  # ~-18% in 30 steps

    shards = write_tiny_shards(tmp_path / "shards")
    cfg = tiny_config("lsgan", head_lr=1e-3)
    cfg["model"].update(ssl="contrastive", morphology_weight=1.0)
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, shards, tmp_path / "run", steps=2, **kw)
    result = train(cfg, shards, tmp_path / "run", steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["morphology_loss"])
    restored = load_run(tmp_path / "run").gan.morphology_head.get_weights()
    fresh = build_gan(cfg["model"], seed=1).morphology_head.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(restored, fresh))
