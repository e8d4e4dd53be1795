"""Encoder options: readouts, DiffAugment, the contrastive D head and BiGAN, trained a few
steps on tiny shards, exported, and loaded the way a client would."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf import losses
from cytogan_tf.errors import ConfigError
from cytogan_tf.export import export_run, read_export_metadata
from cytogan_tf.models import build_gan, make_head_optimizer, make_optimizers
from cytogan_tf.models.augment import (BACKGROUND, cell_and_silhouette, channel_gain,
                                      contrastive_views, diff_augment,
                                      dihedral, paired_windows, silhouette, strong_augment,
                                      translate, window, window_augment, zoom)
from cytogan_tf.models.networks import multiscale_dim
from cytogan_tf.models.second_order import ChannelCorrelation, texture_dim
from cytogan_tf.models.views import DihedralViews
from cytogan_tf.training import load_run, train

from training_helpers import CROP, TINY_WIDTHS, tiny_config, write_tiny_shards

TINY = {"image_size": 32, "latent_dim": 8, "encoder_dim": 6, "widths": [16, 8, 8, 4]}
OPT = {"g_lr": 1e-3, "d_lr": 1e-3, "beta1": 0.5, "beta2": 0.999}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards")


def _images(n=4, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, 3)).astype("float32"))


# ------------------------------------------------------------------ augmentation


def test_dihedral_transforms_are_exact_permutations_of_pixels():
    x = _images(16)
    y = dihedral(x, tf.constant([3, 4], tf.int64)).numpy()
    xs = x.numpy()
    for a, b in zip(xs, y):
        candidates = [np.rot90(a, k, axes=(0, 1)) for k in range(4)]
        candidates += [np.flip(c, axis=0) for c in candidates]
        assert any(np.array_equal(b, c) for c in candidates)
    assert not np.array_equal(y, xs)  # 16 coin triples are not all heads-down


def test_translation_shifts_in_background_and_repeats_per_seed():
    x = tf.ones((8, 32, 32, 3))
    seed = tf.constant([1, 2], tf.int64)
    y = translate(x, seed).numpy()
    assert y.shape == (8, 32, 32, 3)
    assert set(np.unique(y)) <= {1.0, BACKGROUND}
    assert (y == BACKGROUND).any()  # some image moved
    np.testing.assert_array_equal(y, translate(x, seed).numpy())
    assert not np.array_equal(y, translate(x, tf.constant([1, 3], tf.int64)).numpy())


def test_diff_augment_passes_gradients_to_its_input():
    x = _images(4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diff_augment(x, tf.constant([0, 1], tf.int64))
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_channel_gain_keeps_background_black_and_scales_each_stain():
    x = tf.concat([tf.fill((4, 8, 8, 3), BACKGROUND), tf.fill((4, 8, 8, 3), 0.0)], axis=1)  # black | 0.5
    y = channel_gain(x, tf.constant([5, 6], tf.int64)).numpy()
    np.testing.assert_array_equal(y[:, :8], BACKGROUND)
    unit = (y[:, 8:] + 1) / 2  # 0.5 times a gain in [0.6, 1.4]
    assert unit.min() >= 0.3 - 1e-6 and unit.max() <= 0.7 + 1e-6
    assert np.ptp(unit[:, 0, 0, :], axis=1).max() > 0  # stains get their own gains


def test_zoom_and_strong_policy_keep_shape_and_gradients():
    x = _images(4)
    z = zoom(x, tf.constant([1, 1], tf.int64))
    assert z.shape == x.shape and not np.allclose(z.numpy(), x.numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(strong_augment(x, tf.constant([2, 3], tf.int64)) ** 2)
    assert np.abs(tape.gradient(loss, x).numpy()).sum() > 0


def test_window_keeps_one_square_around_the_centre_and_blacks_out_the_rest():
    x = _images(8)
    seed = tf.constant([4, 5], tf.int64)
    y = window(x, seed).numpy()
    xs = x.numpy()
    for a, b in zip(xs, y):
        kept = np.all(b == a, axis=-1) & np.any(a != BACKGROUND, axis=-1)
        rows, cols = np.nonzero(kept)
        square = np.zeros_like(kept)
        square[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        np.testing.assert_array_equal(kept, square)  # one rectangle kept ...
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert 0.45 * 32 <= height <= 0.8 * 32 and abs(height - width) <= 1
        assert rows.min() <= 16 <= rows.max() and cols.min() <= 16 <= cols.max()  # ... over the centre
        np.testing.assert_array_equal(b[~kept], BACKGROUND)
    np.testing.assert_array_equal(y, window(x, seed).numpy())
    assert not np.array_equal(y, window(x, tf.constant([4, 6], tf.int64)).numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(window_augment(x, seed) ** 2)
    assert np.abs(tape.gradient(loss, x).numpy()).sum() > 0


def test_paired_windows_give_each_cell_two_windows_of_one_side_at_different_places():
    x = tf.ones([16, 32, 32, 3])  # all foreground, so a window's kept area is its side squared
    a, b = paired_windows(x, tf.constant([7, 8], tf.int64))
    kept_a = np.all(a.numpy() == 1.0, axis=-1).sum(axis=(1, 2))
    kept_b = np.all(b.numpy() == 1.0, axis=-1).sum(axis=(1, 2))
    sides_a, sides_b = np.sqrt(kept_a), np.sqrt(kept_b)
    assert np.all(np.abs(sides_a - sides_b) <= 1.5)  # one side per cell, up to the pixel grid
    assert np.ptp(sides_a) > 2  # ... but the side varies from cell to cell
    assert not np.array_equal(a.numpy(), b.numpy())  # placed apart
    c, d = paired_windows(x, tf.constant([7, 8], tf.int64))
    np.testing.assert_array_equal(a.numpy(), c.numpy())
    np.testing.assert_array_equal(b.numpy(), d.numpy())


def _seeds(first=7):
    """A next_seed callable counting up from [first, 0], and the list of what it gave."""
    given = []

    def next_seed():
        given.append(tf.constant([first + len(given), 0], tf.int64))
        return given[-1]
    return next_seed, given


def test_contrastive_views_draw_a_paired_policy_once_and_others_twice():
    x = tf.ones([16, 32, 32, 3])
    next_seed, given = _seeds()
    a, b = contrastive_views("window-paired", x, next_seed)
    assert len(given) == 1  # one draw makes both views, so they share each cell's side
    want_a, want_b = paired_windows(x, given[0])
    np.testing.assert_array_equal(a.numpy(), want_a.numpy())
    np.testing.assert_array_equal(b.numpy(), want_b.numpy())
    next_seed, given = _seeds()
    a, b = contrastive_views("window", x, next_seed)
    assert len(given) == 2  # two independent one-view draws
    np.testing.assert_array_equal(a.numpy(), window_augment(x, given[0]).numpy())
    np.testing.assert_array_equal(b.numpy(), window_augment(x, given[1]).numpy())


def test_silhouette_paints_each_cells_foreground_one_flat_colour_per_stain():
    rng = np.random.default_rng(0)
    x = np.full([6, 16, 16, 3], BACKGROUND, np.float32)
    x[:, 4:12, 3:10] = rng.uniform(-0.5, 1, size=(6, 8, 7, 3))  # a textured "cell"
    out = silhouette(tf.constant(x), tf.constant([5, 6], tf.int64)).numpy()
    fg = x.max(axis=-1) > BACKGROUND + 0.02
    assert np.all(out[~fg] == BACKGROUND)
    for img, mask in zip(out, fg):
        inside = img[mask]
        assert np.ptp(inside, axis=0).max() < 1e-6  # flat: the texture is gone
        assert np.all(inside > BACKGROUND)
    a, b = cell_and_silhouette(tf.constant(x), tf.constant([5, 6], tf.int64))
    c, d = cell_and_silhouette(tf.constant(x), tf.constant([5, 6], tf.int64))
    np.testing.assert_array_equal(a.numpy(), c.numpy())
    np.testing.assert_array_equal(b.numpy(), d.numpy())
    # the cell view keeps its texture; its pair is a silhouette of the same cell's outline
    assert np.unique(np.round(a.numpy()[0], 3)).size > 20
    assert np.isclose((b.numpy() > BACKGROUND).mean(), (x > BACKGROUND).mean(), atol=1e-6)


def test_block_views_need_the_each_head():
    for extra in ({"ssl": "contrastive", "head_features": "both"}, {"head_features": "each"}):
        with pytest.raises(ConfigError, match="model.augment.*head_features = \"each\""):
            build_gan({"arch": "lsgan", **TINY, "augment": "window-silhouette", **extra})


def test_each_readout_gets_a_head_that_reads_only_its_own_columns():
    gan = build_gan({"arch": "lsgan", **TINY, "readout": "multiscale", "augment": "window",
                     "ssl": "contrastive", "head_features": "each"}, seed=1)
    ms, tex = multiscale_dim(TINY["widths"]), texture_dim(TINY["widths"])
    feats = np.random.default_rng(0).normal(size=(5, ms + tex)).astype("float32")
    proj = gan.ssl_head(feats).numpy()
    assert proj.shape == (5, 2, 128)
    changed = feats.copy()
    changed[:, ms:] = 0.0  # the texture block only
    moved = gan.ssl_head(changed).numpy()
    np.testing.assert_allclose(moved[:, 0], proj[:, 0], rtol=1e-6)
    assert not np.allclose(moved[:, 1], proj[:, 1])


# ------------------------------------------------------------------ contrastive loss


def test_contrastive_loss_is_low_for_matching_views_and_high_for_unrelated_ones():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 32)).astype(np.float32)
    same = float(losses.contrastive_loss(a, a + 0.01 * rng.standard_normal(a.shape), 0.1))
    other = float(losses.contrastive_loss(a, rng.standard_normal(a.shape), 0.1))
    assert same < 0.1
    assert other > math.log(2 * 16 - 1) - 1.0  # about chance among 2B-1 candidates


def test_vicreg_rewards_agreeing_spread_views_and_penalises_collapse_and_cross_talk():
    rng = np.random.default_rng(0)
    a = (2.0 * rng.standard_normal((64, 16))).astype(np.float32)  # spread: every std ~2
    agree = float(losses.vicreg_loss(a, a + 0.01 * rng.standard_normal(a.shape)))
    apart = float(losses.vicreg_loss(a, 2.0 * rng.standard_normal(a.shape)))
    collapsed = np.tile(a[:1], (64, 1))  # every cell one point: the views agree perfectly
    assert agree < 0.5 < apart  # distance between the views counts (agree: sampling cross-talk)
    assert float(losses.vicreg_loss(collapsed, collapsed)) >= 1.9  # each view's spread hinge ~1
    correlated = np.repeat(a[:, :1], 16, axis=1)  # 16 copies of one dimension
    assert float(losses.vicreg_loss(correlated, correlated)) > agree + 1.0
    assert float(losses.view_agreement_loss("vicreg", a, a)) == pytest.approx(
        float(losses.vicreg_loss(a, a)))
    assert float(losses.view_agreement_loss("nt-xent", a, a, 0.1)) == pytest.approx(
        float(losses.contrastive_loss(a, a, 0.1)))
    with pytest.raises(ValueError, match="ssl_objective"):
        losses.view_agreement_loss("barlow", a, a)


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("arch,extra", [
    ("lsgan", {"readout": "multiscale", "augment": "strong", "ssl": "contrastive"}),
    ("dcgan", {"augment": "diff", "ssl": "contrastive", "update": "alternating"}),
    ("wgan", {"readout": "multiscale", "ssl": "contrastive", "n_critic": 1}),
    ("began", {"readout": "multiscale"}),
    ("bigan", {"augment": "diff"}),
    ("bigan", {"readout": "multiscale"}),
    ("bigan", {"readout": "multiscale", "recon_weight": 2.0, "views": "dihedral"}),
    ("bigan", {"recon_weight": 1.0, "recon_space": "features", "update": "alternating"}),
    ("lsgan", {"readout": "texture", "augment": "strong", "ssl": "contrastive",
               "head_features": "texture"}),
    ("lsgan", {"readout": "texture", "augment": "window", "ssl": "contrastive",
               "head_features": "texture"}),
    ("lsgan", {"readout": "texture", "augment": "window-paired", "ssl": "contrastive",
               "head_features": "texture"}),
    ("wgan", {"readout": "texture", "ssl": "contrastive", "head_features": "both", "n_critic": 1}),
    ("lsgan", {"readout": "multiscale", "augment": "window", "ssl": "contrastive",
               "head_features": "each"}),
    ("lsgan", {"readout": "multiscale", "augment": "window-silhouette", "ssl": "contrastive",
               "head_features": "each"}),
    ("wgan", {"readout": "texture", "augment": "window-silhouette", "ssl": "contrastive",
              "head_features": "each", "n_critic": 1}),
    ("began", {"readout": "texture"}),
    ("bigan", {"readout": "texture"}),
    ("bigan", {"ssl": "contrastive", "views": "dihedral"}),
    ("bigan", {"ssl": "contrastive", "views": "dihedral", "latent_from": "pooled",
               "ssl_views": "window-paired"}),
    ("bigan", {"ssl": "contrastive", "head_features": "all", "readout": "multiscale",
               "ssl_views": "strong", "update": "alternating", "recon_weight": 1.0}),
    ("bigan", {"ssl": "contrastive", "ssl_objective": "vicreg", "head_features": "multiscale",
               "readout": "multiscale", "ssl_views": "window-paired"}),
    ("bigan", {"ssl": "contrastive", "ssl_views": "cell-silhouette"}),
    ("lsgan", {"readout": "texture", "augment": "window", "ssl": "contrastive",
               "head_features": "both", "ssl_objective": "vicreg"}),
])
def test_option_trains_with_finite_losses_and_moves_its_networks(arch, extra):
    gan = build_gan({"arch": arch, **TINY, **extra}, seed=1)
    gan.compile(*make_optimizers(OPT))
    before = [v.numpy().copy() for v in gan.d_variables + gan.g_variables]
    x = _images()
    logs = [{k: float(v) for k, v in gan.train_step(x).items()} for _ in range(2)]
    assert all(math.isfinite(v) for step in logs for v in step.values()), logs
    if extra.get("ssl"):
        assert "ssl_loss" in logs[0] and logs[0]["ssl_loss"] > 0
        head, owner = _contrastive_head(gan).trainable_variables, _head_owner(gan)
        assert head and all(any(h is v for v in owner) for h in head)
    after = gan.d_variables + gan.g_variables
    assert all(not np.allclose(b, a.numpy()) for b, a in zip(before, after) if b.ndim > 1)
    emb = gan.encoder(x, training=False)
    want = {"multiscale": multiscale_dim(TINY["widths"]), "texture": texture_dim(TINY["widths"])}.get(
        extra.get("readout"), TINY["latent_dim"] if arch == "bigan" else TINY["encoder_dim"])
    assert emb.shape == (4, want) and emb.dtype == tf.float32


def test_texture_readout_is_each_images_channel_correlations_and_spreads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5, 4)).astype("float32")
    x[..., 1] = 0.5 * x[..., 0] + 0.1 * x[..., 1]          # channels 0 and 1 correlate
    out = ChannelCorrelation()(tf.constant(x)).numpy()
    assert out.shape == (3, 4 * 3 // 2 + 4)
    for img, row in zip(x, out):
        flat = img.reshape(-1, 4)
        want_corr = np.corrcoef(flat, rowvar=False)[np.triu_indices(4, 1)]
        np.testing.assert_allclose(row[:6], want_corr, atol=1e-3)
        np.testing.assert_allclose(row[6:], flat.std(axis=0), rtol=1e-3)
    assert out[:, 0].min() > 0.9  # the correlated pair
    # invariant to where the texture sits: a shifted image gives the same features
    rolled = np.roll(x, 2, axis=1)
    np.testing.assert_allclose(ChannelCorrelation()(tf.constant(rolled)).numpy(), out, atol=1e-5)


def test_bigan_encoder_maps_cells_to_latents_and_back_to_images():
    gan = build_gan({"arch": "bigan", **TINY}, seed=0)
    z = gan.encode(_images(3))
    assert z.shape == (3, TINY["latent_dim"]) and np.isfinite(z.numpy()).all()
    assert gan.generate(z).shape == (3, 32, 32, 3)


def _discs(n=4):
    """Cells a small autoencoder can learn: a bright disc of its own size on background."""
    yy, xx = np.mgrid[:32, :32]
    radii = np.linspace(5, 12, n)
    cells = [np.where(((yy - 16) ** 2 + (xx - 16) ** 2 < r * r)[..., None], 0.6, -1.0) for r in radii]
    return tf.constant(np.repeat(np.stack(cells), 3, axis=-1).astype("float32"))


@pytest.mark.parametrize("space", ["pixels", "features"])
def test_bigan_cycle_term_teaches_the_encoder_to_reconstruct_cells(space):
    x = _discs()
    gan = build_gan({"arch": "bigan", **TINY, "recon_weight": 5.0, "recon_space": space}, seed=0)
    gan.compile(*make_optimizers(OPT))

    def pixel_error():  # as a client of the export sees it: G and E in inference mode
        return float(losses.cycle_reconstruction_loss(x, gan.generate(gan.encode(x))))

    start = pixel_error()
    logs = [{k: float(v) for k, v in gan.train_step(x).items()} for _ in range(60)]
    assert all(math.isfinite(v) for step in logs for v in step.values())
    assert "recon_loss" in logs[0] and logs[0]["recon_loss"] > 0
    assert pixel_error() < 0.75 * start, (start, pixel_error())  # G(E(x)) moved towards x
    assert gan.generate(gan.encode(x)).shape == x.shape
    plain = build_gan({"arch": "bigan", **TINY}, seed=0)
    plain.compile(*make_optimizers(OPT))
    assert "recon_loss" not in plain.train_step(x)


@pytest.mark.parametrize("arch,value,message", [
    ("bigan", -1.0, "model.recon_weight"), ("bigan", True, "model.recon_weight"),
    ("lsgan", 1.0, "unknown key"),
])
def test_recon_weight_is_a_bigan_option_and_not_negative(arch, value, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"arch": arch, **TINY, "recon_weight": value})


def test_bigan_config_takes_the_cycle_term_options_from_the_command_line():
    from cytogan_tf.config import apply_overrides, load_config, parse_set_options

    cfg = apply_overrides(load_config("bigan"), parse_set_options(
        ["model.recon_weight=2.5", "model.recon_space=features"]))
    gan = build_gan({**cfg["model"], **TINY}, seed=0)
    assert (gan.recon_weight, gan.recon_space) == (2.5, "features")
    assert load_config("bigan")["model"]["recon_weight"] == 0  # plain BiGAN by default


def test_bigan_config_takes_the_encoder_head_options_from_the_command_line():
    from cytogan_tf.config import apply_overrides, load_config, parse_set_options

    cfg = apply_overrides(load_config("bigan"), parse_set_options(
        ["model.ssl=contrastive", "model.head_features=all", "model.ssl_views=strong",
         "model.ssl_weight=0.5"]))
    gan = build_gan({**cfg["model"], **TINY}, seed=0)
    assert gan.encoder_head is not None and "ssl_loss" in gan.trackers
    assert (gan.encoder_ssl_views, gan.encoder_ssl_weight) == ("strong", 0.5)
    default = build_gan({**load_config("bigan")["model"], **TINY}, seed=0)
    # the config's default: E's contrastive head at weight 3 and the morphology head
    assert default.encoder_head is not None and default.encoder_ssl_weight == 3.0
    assert default.encoder_morphology_head is not None
    plain = {**load_config("bigan")["model"], **TINY, "ssl": "none", "morphology_weight": 0.0}
    assert build_gan(plain, seed=0).encoder_head is None


def test_recon_space_names_pixels_or_features():
    with pytest.raises(ConfigError, match="model.recon_space"):
        build_gan({"arch": "bigan", **TINY, "recon_weight": 1.0, "recon_space": "gram"})


def _turned(x):
    return [tf.image.rot90(x, 1), tf.reverse(x, axis=[1]), tf.transpose(x, [0, 2, 1, 3])]


@pytest.mark.parametrize("arch,readout", [("lsgan", "texture"), ("lsgan", "multiscale"),
                                          ("lsgan", "hidden"), ("bigan", "hidden"), ("began", "hidden")])
def test_dihedral_views_make_the_embedding_orientation_free(arch, readout):
    x = _images(3)
    one = build_gan({"arch": arch, **TINY, "readout": readout, "views": "single"}, seed=0).encoder
    eight = build_gan({"arch": arch, **TINY, "readout": readout, "views": "dihedral"}, seed=0).encoder
    assert eight.outputs[0].shape[-1] == one.outputs[0].shape[-1]
    e = eight(x).numpy()
    assert np.isfinite(e).all()
    for turned in _turned(x):
        np.testing.assert_allclose(eight(turned).numpy(), e, rtol=1e-4, atol=1e-5)
        assert not np.allclose(one(turned).numpy(), one(x).numpy(), rtol=1e-4, atol=1e-5)
    # the mean of the single-view encoder (same weights) over the 8 transforms
    views = tf.split(DihedralViews()(x), 8, axis=0)
    assert len({v.numpy().tobytes() for v in views}) == 8
    np.testing.assert_allclose(e, np.mean([one(v).numpy() for v in views], axis=0), rtol=1e-4, atol=1e-5)


def test_bigan_encode_sees_the_crop_as_it_is_under_dihedral_views():
    gan = build_gan({"arch": "bigan", **TINY, "views": "dihedral"}, seed=0)
    x = _images(2)
    turned = tf.image.rot90(x, 1)
    assert not np.allclose(gan.encode(turned).numpy(), gan.encode(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(gan.encoder(turned).numpy(), gan.encoder(x).numpy(), rtol=1e-4, atol=1e-5)


def _contrastive_head(gan):
    """BiGAN's head trains E (in G and E's loss); the other archs' heads train D."""
    return gan.encoder_head if gan.arch == "bigan" else gan.ssl_head


def _head_owner(gan):
    return gan.g_variables if gan.arch == "bigan" else gan.d_variables


@pytest.mark.parametrize("key,value,message", [
    ("readout", "flat", "model.readout"), ("augment", "colour", "model.augment"),
    ("ssl", "rotation", "model.ssl"), ("ssl_weight", -1, "model.ssl_weight"),
    ("ssl_temperature", 0, "model.ssl_temperature"), ("head_features", "all", "model.head_features"),
    ("views", "rotations", "model.views"), ("ssl_objective", "barlow", "model.ssl_objective"),
    ("augment", "cell-silhouette", "model.augment"),  # E's view pair only: D has no one-view form
])
def test_bad_representation_options_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"arch": "lsgan", **TINY, key: value})


def test_began_refuses_the_contrastive_head():
    with pytest.raises(ConfigError, match="unknown key"):
        build_gan({"arch": "began", **TINY, "ssl": "contrastive"})


@pytest.mark.parametrize("arch,key,value,message", [
    ("bigan", "head_features", "each", "model.head_features"),
    ("bigan", "ssl_views", "colour", "model.ssl_views"),
    ("bigan", "ssl_weight", -0.5, "model.ssl_weight"),
    ("lsgan", "ssl_views", "window", "unknown key"),
    ("lsgan", "head_features", "latent", "model.head_features"),
    ("bigan", "latent_from", "gap", "model.latent_from"),
    ("bigan", "ssl_views", "window-silhouette", "model.ssl_views"),
    ("lsgan", "latent_from", "pooled", "unknown key"),
])
def test_bigan_encoder_head_options_are_checked(arch, key, value, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"arch": arch, **TINY, "ssl": "contrastive", key: value})


def _textures(n=8, size=32):
    """Cells told apart by texture alone: one disc, each filled with its own random
    grain (its own grain size and contrast), on background."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2)[..., None]
    cells = []
    for k in range(n):
        grain = 1 + k % 4
        noise = rng.uniform(-1, 1, (size // grain + 1, size // grain + 1, 3))
        tex = np.kron(noise, np.ones((grain, grain, 1)))[:size, :size] * (0.2 + 0.1 * k)
        cells.append(np.where(disc, 0.2 + tex, -1.0))
    return tf.constant(np.clip(np.stack(cells), -1, 1).astype("float32"))


def test_bigan_encoder_head_learns_to_match_two_windows_of_a_cell():
    x = _textures(16)
    # The pooled stages: the tiny E's 2x2 last stage gives z too little room to become
    # invariant to a window's place in 60 steps (at 64 px the z head learns, README).
    gan = build_gan({"arch": "bigan", **TINY, "ssl": "contrastive", "head_features": "multiscale"},
                    seed=0)
    gan.compile(*make_optimizers(OPT))
    logs = [float(gan.train_step(x)["ssl_loss"]) for _ in range(60)]
    assert all(math.isfinite(v) for v in logs)
    # chance for 16 cells' 32 views is log(31) = 3.43: the head must find partners above it
    assert np.mean(logs[-5:]) < 0.9 * np.log(31) < np.mean(logs[:5]), logs
    plain = build_gan({"arch": "bigan", **TINY}, seed=0)
    plain.compile(*make_optimizers(OPT))
    assert "ssl_loss" not in plain.train_step(x) and plain.encoder_head is None


# ------------------------------------------------------------------ runs and exports


def _config(arch, **model):
    cfg = tiny_config(arch)
    cfg["model"].update(model)
    return cfg


def _train_resume_and_check_the_head(cfg, shards, run):
    """Train 2 steps, resume to 4, and check the contrastive head is checkpointed: a
    restore gets its trained weights, not fresh ones."""
    kw = dict(precision="float32", seed=2, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, shards, run, steps=2, **kw)
    result = train(cfg, shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["ssl_loss"])
    restored = _contrastive_head(load_run(run).gan).get_weights()
    fresh = build_gan(cfg["model"], seed=2)
    fresh.warm_up(np.zeros((1, CROP, CROP, 3), np.float32), np.zeros((1, 8), np.float32))
    assert any(not np.allclose(a, b) for a, b in zip(restored, _contrastive_head(fresh).get_weights()))


def _export_and_serve(run, name, base, expect_readout, dim, **export_options):
    """Export `run`'s encoder, check its metadata names `expect_readout` at width `dim`,
    and return what its serving signature gives for two random crops (checked [2, dim])."""
    exported = export_run(run, name, base, **export_options)
    meta = read_export_metadata(exported["encoder"])
    assert meta["encoder_dim"] == dim and meta["readout"] == expect_readout
    served = tf.saved_model.load(str(exported["encoder"])).signatures["serving_default"](
        images=np.random.default_rng(1).uniform(0, 1, (2, CROP, CROP, 3)).astype(np.float32))
    assert served["embeddings"].shape == (2, dim)
    return served["embeddings"].numpy()


def test_bigan_encoder_head_run_resumes_its_head_and_exports_the_encoder(shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("bigan", ssl="contrastive", head_features="latent", readout="multiscale",
                  views="dihedral")
    _train_resume_and_check_the_head(cfg, shards, run)
    served = _export_and_serve(run, "bi-ssl", tmp_path / "exported", "multiscale",
                               multiscale_dim(TINY_WIDTHS))
    assert np.isfinite(served).all()


def test_contrastive_run_resumes_its_head_and_exports_both_readouts(shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("lsgan", augment="diff", ssl="contrastive", readout="multiscale")
    _train_resume_and_check_the_head(cfg, shards, run)

    base = tmp_path / "exported"
    multi = export_run(run, "multi", base)
    hidden = export_run(run, "hidden", base, readout="hidden")
    meta_m, meta_h = read_export_metadata(multi["encoder"]), read_export_metadata(hidden["encoder"])
    assert meta_m["encoder_dim"] == multiscale_dim(TINY_WIDTHS) and meta_m["readout"] == "multiscale"
    assert meta_h["encoder_dim"] == cfg["model"]["encoder_dim"] and meta_h["readout"] == "hidden"
    served_t = _export_and_serve(run, "texture", base, "texture", texture_dim(TINY_WIDTHS),
                                 readout="texture")
    assert np.isfinite(served_t).all()
    # the readout is a view of the same trained D: both come from the step-4 weights
    loaded = load_run(run, readout="hidden")
    x = np.random.default_rng(0).uniform(0, 1, (2, CROP, CROP, 3)).astype(np.float32)
    served = tf.saved_model.load(str(hidden["encoder"])).signatures["serving_default"](images=x)
    np.testing.assert_allclose(served["embeddings"].numpy(),
                               loaded.gan.encoder(x * 2 - 1, training=False).numpy(), rtol=1e-4, atol=1e-5)


def test_per_readout_heads_resume_their_weights_and_export(shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("lsgan", augment="window-silhouette", ssl="contrastive",
                  head_features="each", readout="multiscale")
    _train_resume_and_check_the_head(cfg, shards, run)
    _export_and_serve(run, "each", tmp_path / "exported", "multiscale", multiscale_dim(TINY_WIDTHS))


def test_views_are_exported_and_served_orientation_free(shards, tmp_path):
    run = tmp_path / "run"
    train(_config("lsgan", readout="texture", views="single"), shards, run, steps=2, precision="float32",
          seed=0, sample_every=2, checkpoint_every=2, verbose=0)
    base = tmp_path / "exported"
    single = export_run(run, "one", base)
    dihedral = export_run(run, "eight", base, views="dihedral")
    assert read_export_metadata(single["encoder"])["views"] == "single"
    meta = read_export_metadata(dihedral["encoder"])
    assert meta["views"] == "dihedral" and meta["encoder_dim"] == texture_dim(TINY_WIDTHS)
    x = np.random.default_rng(3).uniform(0, 1, (2, CROP, CROP, 3)).astype(np.float32)
    serve = tf.saved_model.load(str(dihedral["encoder"])).signatures["serving_default"]
    e = serve(images=x)["embeddings"].numpy()
    np.testing.assert_allclose(serve(images=np.ascontiguousarray(np.rot90(x, 1, (1, 2))))["embeddings"].numpy(),
                               e, rtol=1e-4, atol=1e-5)
    # the same trained weights: the served mean equals the single-view encoder's mean
    one = load_run(run, views="single").gan.encoder
    views = tf.split(DihedralViews()(tf.constant(x * 2 - 1)), 8, axis=0)
    np.testing.assert_allclose(e, np.mean([one(v).numpy() for v in views], axis=0), rtol=1e-4, atol=1e-5)


ENCODE_CLIENT = """
import json, sys
import numpy as np
import tensorflow as tf
enc = tf.saved_model.load(sys.argv[1])
gen = tf.saved_model.load(sys.argv[2])
x = np.random.default_rng(0).uniform(0, 1, (3, int(sys.argv[3]), int(sys.argv[3]), 3)).astype(np.float32)
z = enc.signatures["encode"](images=tf.constant(x))["z"].numpy()
recon = gen.signatures["serving_default"](z=tf.constant(z))["images"].numpy()
out = {"z_shape": list(z.shape), "z_finite": bool(np.isfinite(z).all()), "recon_shape": list(recon.shape),
       "signatures": sorted(enc.signatures.keys())}
try:
    enc.signatures["encode"](images=tf.zeros((1, 16, 16, 3)))
    out["small"] = "accepted"
except Exception as exc:
    out["small"] = str(exc)
print("REPORT" + json.dumps(out))
"""


@pytest.mark.parametrize("recon_weight", [0.0, 1.0])
def test_bigan_export_has_an_encode_signature_for_a_fresh_client(shards, tmp_path, recon_weight):
    run = tmp_path / "bigan"
    train(_config("bigan", recon_weight=recon_weight), shards, run, steps=2, precision="float32", seed=0, sample_every=2,
          checkpoint_every=2, verbose=0)
    result = export_run(run, "bi", tmp_path / "exported")
    meta = read_export_metadata(result["encoder"])
    assert meta["arch"] == "bigan" and meta["encoder_dim"] == meta["latent_dim"] == 8
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(ENCODE_CLIENT), str(result["encoder"]),
                           str(result["generator"]), str(CROP)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))[6:])
    assert rep["z_shape"] == [3, 8] and rep["z_finite"]
    assert rep["recon_shape"] == [3, CROP, CROP, 3]
    assert {"encode", "serving_default", "serve_uint8"} <= set(rep["signatures"])
    assert f"expected images of shape [None, {CROP}, {CROP}, 3]" in rep["small"]


# ------------------------------------------------------------------ weak treatment labels

COMPOUNDS = ["taxol", "DMSO", "AZ138"]


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("labelled") / "shards", compounds=COMPOUNDS)


def test_weak_labels_number_sorted_treatments_and_refuse_a_single_one(labelled_shards, tmp_path):
    from cytogan_tf.data.labels import weak_labels

    weak = weak_labels(labelled_shards, "treatment")
    assert weak.classes == ["AZ138@1", "DMSO@1", "taxol@1"]
    want = [weak.classes.index(f"{COMPOUNDS[i % 3]}@1") for i in weak.cell_ids]
    np.testing.assert_array_equal(weak.labels, want)
    assert weak_labels(labelled_shards, "compound").classes == sorted(COMPOUNDS)
    one = write_tiny_shards(tmp_path / "one", n_cells=4, compounds=["DMSO"])
    with pytest.raises(ConfigError, match="needs at least 2 treatments.*DMSO@1"):
        weak_labels(one, "treatment")


def test_labelled_batches_carry_each_cells_own_treatment(labelled_shards):
    from cytogan_tf.data.labels import weak_labels
    from cytogan_tf.data.pipeline import make_dataset

    weak = weak_labels(labelled_shards, "treatment")
    plain = make_dataset(labelled_shards, 8, with_metadata=True)
    ids = np.concatenate([b["cell_id"].numpy() for b in plain])
    pairs = list(make_dataset(labelled_shards, 8, shuffle=False, repeat=False, labels=weak,
                              drop_remainder=False))
    labels = np.concatenate([y.numpy() for _, y in pairs])
    assert pairs[0][0].shape == (8, CROP, CROP, 3)
    of_cell = dict(zip(weak.cell_ids, weak.labels))
    np.testing.assert_array_equal(labels, [of_cell[i] for i in ids])
    assert len(set(labels.tolist())) == 3


def test_class_head_learns_treatments_the_images_show():
    gan = build_gan({"arch": "lsgan", **TINY, "readout": "multiscale", "weak_labels": "treatment",
                     "n_classes": 2, "weak_weight": 1.0}, seed=0)
    gan.compile(*make_optimizers({**OPT, "d_lr": 3e-3}))
    labels = tf.constant([0, 1] * 4, tf.int64)
    x = tf.where(tf.reshape(labels, [-1, 1, 1, 1]) == 0, -0.8, 0.6) + 0.05 * _images(8)
    losses_seen = [float(gan.train_step((x, labels))["class_loss"]) for _ in range(25)]
    assert all(math.isfinite(v) for v in losses_seen)
    assert losses_seen[-1] < 0.5 * losses_seen[0], losses_seen
    head = gan.class_head.trainable_variables
    assert head and all(any(h is v for v in gan.d_variables) for h in head)
    with pytest.raises(ValueError, match="needs \\(images, labels\\)"):
        gan.train_step(x)


@pytest.mark.parametrize("arch", ["lsgan", "wgan"])
def test_head_optimizer_trains_the_texture_readout_on_labels_at_its_own_rate(arch):
    """D's rate is set near zero: only the heads' own optimizer can teach the first stage."""
    extra = {"n_critic": 1} if arch == "wgan" else {}
    gan = build_gan({"arch": arch, **TINY, **extra, "readout": "texture", "head_features": "texture",
                     "weak_labels": "treatment", "n_classes": 2}, seed=0)
    gan.compile(*make_optimizers({**OPT, "d_lr": 1e-9}), head_optimizer=make_head_optimizer({"head_lr": 3e-2}))
    head = gan.class_head.trainable_variables
    assert not any(h is v for h in head for v in gan.d_variables)
    assert all(any(h is v for v in gan.head_variables) for h in head)
    conv0 = next(v for v in gan.discriminator.trainable_variables if "conv0" in v.path)
    dense = gan.discriminator.trainable_variables[-1]  # D's output layer: no head reaches it
    before, dense_before = conv0.numpy().copy(), dense.numpy().copy()
    labels = tf.constant([0, 1] * 4, tf.int64)
    # The classes differ in texture only: the same mean, fine stripes vs flat noise.
    stripes = tf.reshape(tf.cast(tf.range(32) % 2, tf.float32) * 0.8 - 0.4, [1, 1, 32, 1])
    x = tf.where(tf.reshape(labels, [-1, 1, 1, 1]) == 0, stripes, 0.0) + 0.05 * _images(8)
    losses_seen = [float(gan.train_step((x, labels))["class_loss"]) for _ in range(30)]
    assert all(math.isfinite(v) for v in losses_seen)
    assert losses_seen[-1] < 0.5 * losses_seen[0], losses_seen
    assert np.abs(conv0.numpy() - before).max() > 1e-3  # the head optimizer moved it
    np.testing.assert_allclose(dense.numpy(), dense_before, atol=1e-6)  # only D's ~0 rate did


def test_head_optimizer_needs_a_head_and_a_positive_rate():
    assert make_head_optimizer({"g_lr": 1e-3}) is None
    assert make_head_optimizer({"head_lr": 0.0}) is None
    with pytest.raises(ConfigError, match="train.head_lr"):
        make_head_optimizer({"head_lr": -1})
    gan = build_gan({"arch": "lsgan", **TINY}, seed=0)
    with pytest.raises(ValueError, match="needs a D head"):
        gan.compile(*make_optimizers(OPT), head_optimizer=make_head_optimizer({"head_lr": 1e-3}))


@pytest.mark.parametrize("extra,message", [
    ({"weak_labels": "moa"}, "model.weak_labels"),
    ({"weak_labels": "treatment"}, "model.n_classes"),
    ({"weak_labels": "treatment", "n_classes": 3, "weak_weight": -1}, "model.weak_weight"),
])
def test_bad_weak_label_options_are_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"arch": "lsgan", **TINY, **extra})
    with pytest.raises(ConfigError, match="unknown key"):
        build_gan({"arch": "began", **TINY, "weak_labels": "treatment", "n_classes": 3})


def test_weak_label_run_records_its_classes_resumes_and_exports(labelled_shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("lsgan", augment="diff", ssl="contrastive", readout="multiscale",
                  weak_labels="treatment")
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, labelled_shards, run, steps=2, **kw)
    assert json.loads((run / "labels.json").read_text())["classes"] == ["AZ138@1", "DMSO@1", "taxol@1"]
    assert "n_classes = 3" in (run / "config.toml").read_text()
    result = train(cfg, labelled_shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["class_loss"])
    assert math.isfinite(result.metrics["ssl_loss"])
    restored = load_run(run).gan.class_head.get_weights()
    assert any(np.abs(w).sum() > 0 for w in restored)
    paths = export_run(run, "weak", tmp_path / "exported")
    assert read_export_metadata(paths["encoder"])["encoder_dim"] == multiscale_dim(TINY_WIDTHS)
    other = write_tiny_shards(tmp_path / "two", compounds=["a", "b"])
    with pytest.raises(ConfigError, match="n_classes"):
        train(cfg, other, run, steps=6, resume=True, **kw)


def test_head_lr_without_a_head_is_a_config_error_before_training(labelled_shards, tmp_path):
    cfg = _config("lsgan", readout="texture")
    cfg["train"]["head_lr"] = 1e-3
    with pytest.raises(ConfigError, match="train.head_lr.*no discriminator head"):
        train(cfg, labelled_shards, tmp_path / "run", steps=2, precision="float32", seed=1, verbose=0)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_head_optimizer_run_checkpoints_its_state_and_resumes(labelled_shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("lsgan", augment="strong", readout="texture", head_features="texture",
                  weak_labels="treatment")
    cfg["train"]["head_lr"] = 1e-3
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, labelled_shards, run, steps=2, **kw)
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    saved = reader.get_variable_to_shape_map()
    assert any(k.startswith("head_optimizer/") for k in saved), sorted(saved)[:10]
    result = train(cfg, labelled_shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["class_loss"])
    paths = export_run(run, "weakt", tmp_path / "exported")
    assert read_export_metadata(paths["encoder"])["encoder_dim"] == texture_dim(TINY_WIDTHS)


def test_bigan_class_head_on_z_learns_treatments_and_trains_with_g_and_e():
    gan = build_gan({"arch": "bigan", **TINY, "weak_labels": "treatment", "n_classes": 2,
                     "ssl": "contrastive", "ssl_weight": 1.0}, seed=0)
    gan.compile(*make_optimizers({**OPT, "g_lr": 3e-3}))
    head = gan.encoder_class_head.trainable_variables
    assert head and all(any(h is v for v in gan.g_variables) for h in head)
    assert not any(h is v for h in head for v in gan.d_variables)
    labels = tf.constant([0, 1] * 4, tf.int64)
    x = tf.where(tf.reshape(labels, [-1, 1, 1, 1]) == 0, -0.8, 0.6) + 0.05 * _images(8)
    seen = [gan.train_step((x, labels)) for _ in range(25)]
    class_losses = [float(s["class_loss"]) for s in seen]
    assert all(math.isfinite(float(v)) for s in seen for v in s.values())
    assert class_losses[-1] < 0.5 * class_losses[0], class_losses
    with pytest.raises(ValueError, match="needs \\(images, labels\\)"):
        gan.train_step(x)


def test_bigan_weak_label_run_resumes_and_exports_z(labelled_shards, tmp_path):
    run = tmp_path / "run"
    cfg = _config("bigan", ssl="contrastive", head_features="latent", weak_labels="treatment")
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    train(cfg, labelled_shards, run, steps=2, **kw)
    assert "n_classes = 3" in (run / "config.toml").read_text()
    result = train(cfg, labelled_shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["class_loss"])
    restored = load_run(run).gan.encoder_class_head.get_weights()
    fresh = build_gan({**cfg["model"], "n_classes": 3}, seed=1).encoder_class_head.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(restored, fresh))  # trained, restored
    paths = export_run(run, "bigan-weak", tmp_path / "exported")
    meta = read_export_metadata(paths["encoder"])
    assert meta["encoder_dim"] == meta["latent_dim"] == cfg["model"]["latent_dim"]
