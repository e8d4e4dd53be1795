"""Weak labels at the level of a profile: grouped batches and the set-level loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf import losses
from cytogan_tf.data.labels import weak_labels
from cytogan_tf.data.pipeline import make_dataset
from cytogan_tf.errors import ConfigError, DataError
from cytogan_tf.export import export_run, read_export_metadata
from cytogan_tf.models import build_gan, make_head_optimizer, make_optimizers
from cytogan_tf.models.class_head import SET_PROJECTION_DIM, build_weak_head
from cytogan_tf.training import _weak_group, load_run, train

from training_helpers import tiny_config, write_tiny_shards

TINY = {"image_size": 32, "latent_dim": 8, "encoder_dim": 6, "widths": [16, 8, 8, 4]}
OPT = {"g_lr": 1e-3, "d_lr": 1e-3, "beta1": 0.5, "beta2": 0.999}
COMPOUNDS = ["taxol", "DMSO", "AZ138", "nocodazole"]
SET = {"weak_labels": "treatment", "weak_objective": "set", "weak_group": 4}


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("sets") / "shards", n_cells=64,
                             compounds=COMPOUNDS)


def _runs(centres, group, noise, seed=0):
    """Projections of runs of `group` cells around each centre."""
    rng = np.random.default_rng(seed)
    return np.repeat(centres, group, axis=0) + noise * rng.normal(size=(len(centres) * group,
                                                                      centres.shape[1]))


def test_set_loss_is_low_when_each_runs_halves_agree_and_high_for_unrelated_cells():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 8)
    centres = 3.0 * rng.normal(size=(8, 16))
    agree = float(losses.set_contrast_loss(_runs(centres, 8, 1.0), labels, 8))
    unrelated = float(losses.set_contrast_loss(rng.normal(size=(64, 16)), labels, 8))
    assert agree < 0.3 < 2.0 < unrelated  # chance is ln 15 = 2.7 over 16 half-means


def test_set_loss_leaves_two_runs_of_one_class_alike():
    """Runs of the same class must not be pushed apart: a batch whose two runs of class
    0 share one centre scores as well as one whose runs all differ."""
    rng = np.random.default_rng(1)
    centres = 3.0 * rng.normal(size=(8, 16))
    twins = centres.copy()
    twins[4] = twins[0]
    distinct = np.repeat(np.arange(8), 8)
    same = distinct.copy()
    same[32:40] = 0  # run 4 is class 0 too
    all_differ = float(losses.set_contrast_loss(_runs(centres, 8, 0.5), distinct, 8))
    with_mask = float(losses.set_contrast_loss(_runs(twins, 8, 0.5), same, 8))
    as_if_other = float(losses.set_contrast_loss(_runs(twins, 8, 0.5), distinct, 8))
    assert with_mask < all_differ + 0.02 and as_if_other > with_mask + 0.1, (
        all_differ, with_mask, as_if_other)


def test_set_class_loss_scores_each_runs_mean_logits_not_each_cell():
    """Cells whose own logits mostly name the wrong class still give a low loss when
    their run's mean names the right one; the loss is the cross-entropy of that mean."""
    labels = np.repeat(np.arange(4), 4)
    logits = np.full((16, 4), -2.0, np.float32)
    logits[np.arange(16), labels] = 3.0  # the run's class, every cell a little
    wrong = (labels + 1 + np.arange(16) % 3) % 4
    logits[np.arange(16) % 4 != 0, wrong[np.arange(16) % 4 != 0]] = 4.5  # 3 of 4 cells misled
    per_cell = float(losses.classification_loss(logits, labels))
    per_run = float(losses.set_classification_loss(logits, labels, 4))
    means = logits.reshape(4, 4, 4).mean(axis=1)
    expected = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        np.arange(4), means)))
    assert per_run == pytest.approx(expected, rel=1e-5)
    assert per_run < 0.5 < 1.0 < per_cell, (per_run, per_cell)
    with pytest.raises(ValueError, match="weak objective over runs"):
        losses.grouped_weak_loss("class", logits, labels, 4)


def test_cancelling_the_nearest_other_run_spares_a_look_alike_treatment():
    """With weak_cancel, a run whose centre sits next to another treatment's (two
    compounds of one mechanism) is not pushed from it: the loss drops to what it is
    without that run in the denominator, and a distant run is never the one dropped."""
    rng = np.random.default_rng(2)
    centres = 3.0 * rng.normal(size=(4, 16))
    centres[1] = centres[0] + 0.3 * rng.normal(size=16)  # run 1 looks like run 0
    labels = np.repeat(np.arange(4), 8)
    x = _runs(centres, 8, 0.5)
    plain = float(losses.set_contrast_loss(x, labels, 8))
    cancelled = float(losses.set_contrast_loss(x, labels, 8, cancel=2))
    # the same batch scored with runs 0 and 1 as one class: each leaves the other out
    as_one = labels.copy()
    as_one[8:16] = 0
    masked = float(losses.set_contrast_loss(x, as_one, 8))
    assert cancelled < 0.25 * plain, (plain, cancelled)
    assert cancelled == pytest.approx(masked, abs=0.02), (cancelled, masked)
    assert float(losses.set_contrast_loss(x, labels, 8, cancel=6)) == pytest.approx(0.0, abs=1e-6)


def test_set_class_cancel_drops_each_runs_highest_other_classes():
    labels = np.repeat(np.arange(4), 4)
    logits = np.random.default_rng(3).normal(size=(16, 6)).astype(np.float32)
    means = logits.reshape(4, 4, 6).mean(axis=1)
    expected = []
    for run, label in enumerate(range(4)):
        others = [c for c in np.argsort(-means[run]) if c != label][:2]  # the 2 highest others
        kept = np.delete(means[run], others)
        target = label - sum(o < label for o in others)
        expected.append(-(kept[target] - np.log(np.exp(kept).sum())))
    got = float(losses.set_classification_loss(logits, labels, 4, cancel=2))
    assert got == pytest.approx(np.mean(expected), rel=1e-5)
    assert got < float(losses.set_classification_loss(logits, labels, 4))
    assert float(losses.grouped_weak_loss("set_class", logits, labels, 4, cancel=2)) == pytest.approx(got)


def test_grouped_batches_hold_runs_of_one_treatment_each_cells_own(labelled_shards):
    weak = weak_labels(labelled_shards, "treatment")
    of_cell = dict(zip(weak.cell_ids, weak.labels))
    ds = make_dataset(labelled_shards, 8, seed=3, labels=weak, group_size=4, scale="uint8")
    batches = [(x.numpy(), y.numpy()) for x, y in ds.take(12)]
    for images, labels in batches:
        assert images.shape == (8, 32, 32, 3)
        runs = labels.reshape(-1, 4)
        assert (runs == runs[:, :1]).all(), labels
    seen = np.concatenate([y for _, y in batches])
    assert set(seen.tolist()) == set(range(4))
    # each label is its own cell's: find every batch image among the plate's cells
    plain = make_dataset(labelled_shards, 64, shuffle=False, repeat=False, with_metadata=True,
                         scale="uint8")
    cells = next(iter(plain))
    label_of_image = {img.tobytes(): of_cell[cid] for cid, img in
                      zip(cells["cell_id"].numpy(), cells["image"].numpy())}
    for images, labels in batches:
        assert [label_of_image[img.tobytes()] for img in images] == labels.tolist()
    again = [y.numpy() for _, y in make_dataset(labelled_shards, 8, seed=3, labels=weak,
                                                group_size=4).take(12)]
    np.testing.assert_array_equal(np.concatenate(again), seen)  # a seed repeats the stream


@pytest.mark.parametrize("group,batch", [(3, 9), (4, 4), (5, 8)])
def test_group_sizes_that_do_not_split_the_batch_into_runs_are_refused(labelled_shards, group, batch):
    weak = weak_labels(labelled_shards, "treatment")
    with pytest.raises(DataError, match="group_size"):
        make_dataset(labelled_shards, batch, seed=0, labels=weak, group_size=group)


@pytest.mark.parametrize("objective", ["set", "set_class"])
def test_lsgan_set_head_trains_the_texture_readout_at_the_heads_rate(objective):
    gan = build_gan({"arch": "lsgan", **TINY, "readout": "texture", "head_features": "texture",
                     **SET, "weak_objective": objective, "n_classes": 2}, seed=0)
    width = SET_PROJECTION_DIM if objective == "set" else 2
    assert gan.class_head.outputs[0].shape[-1] == width
    gan.compile(*make_optimizers({**OPT, "d_lr": 1e-9}),
                head_optimizer=make_head_optimizer({"head_lr": 1e-2}))
    labels = tf.constant([0] * 4 + [1] * 4, tf.int64)
    stripes = tf.reshape(tf.cast(tf.range(32) % 2, tf.float32) * 0.8 - 0.4, [1, 1, 32, 1])
    x = tf.where(tf.reshape(labels, [-1, 1, 1, 1]) == 0, stripes, 0.0) + 0.05 * tf.random.stateless_normal(
        [8, 32, 32, 3], seed=[0, 1])
    conv0 = next(v for v in gan.discriminator.trainable_variables if "conv0" in v.path)
    before = conv0.numpy().copy()
    seen = [float(gan.train_step((x, labels))["class_loss"]) for _ in range(30)]
    assert all(math.isfinite(v) for v in seen)
    # the set loss falls below half its start; the run-level classifier from near chance
    # (ln 2) more slowly (0.62 -> 0.36 in 30 steps)
    bar = 0.5 if objective == "set" else 0.65
    assert np.mean(seen[-3:]) < bar * np.mean(seen[:3]), seen
    assert np.abs(conv0.numpy() - before).max() > 1e-3  # the head's rate reached the first stage


@pytest.mark.parametrize("objective", ["set", "set_class"])
def test_bigan_set_head_on_z_trains_with_g_and_e(objective):
    gan = build_gan({"arch": "bigan", **TINY, **SET, "weak_objective": objective, "n_classes": 2},
                    seed=0)
    width = SET_PROJECTION_DIM if objective == "set" else 2
    assert gan.encoder_class_head.outputs[0].shape[-1] == width
    gan.compile(*make_optimizers({**OPT, "g_lr": 3e-3}))
    head = gan.encoder_class_head.trainable_variables
    assert head and all(any(h is v for v in gan.g_variables) for h in head)
    labels = tf.constant([0] * 4 + [1] * 4, tf.int64)
    x = tf.where(tf.reshape(labels, [-1, 1, 1, 1]) == 0, -0.8, 0.6) + 0.05 * tf.random.stateless_normal(
        [8, 32, 32, 3], seed=[0, 2])
    seen = [float(gan.train_step((x, labels))["class_loss"]) for _ in range(20)]
    assert all(math.isfinite(v) for v in seen)
    assert seen[-1] < 0.5 * seen[0], seen


@pytest.mark.parametrize("arch", ["lsgan", "bigan"])
def test_weak_cancel_and_temperature_reach_the_run_loss_of_d_and_e(arch, monkeypatch):
    seen = []
    original = losses.grouped_weak_loss

    def recording(objective, head_out, labels, group_size, cancel=0, temperature=0.2):
        seen.append((cancel, temperature))
        return original(objective, head_out, labels, group_size, cancel=cancel,
                        temperature=temperature)

    monkeypatch.setattr(losses, "grouped_weak_loss", recording)
    gan = build_gan({"arch": arch, **TINY, **SET, "weak_cancel": 1, "weak_temperature": 0.1,
                     "n_classes": 3}, seed=0)
    gan.compile(*make_optimizers(OPT))
    labels = tf.constant([0] * 4 + [1] * 4 + [2] * 4, tf.int64)
    x = 0.1 * tf.random.stateless_normal([12, 32, 32, 3], seed=[0, 4])
    out = gan.train_step((x, labels))
    assert seen and set(seen) == {(1, 0.1)}
    assert math.isfinite(float(out["class_loss"]))


def test_the_set_losss_temperature_is_its_softmaxs():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 8)
    x = _runs(3.0 * rng.normal(size=(4, 16)), 8, 2.0)
    for t in (0.1, 0.5):
        assert float(losses.grouped_weak_loss("set", x, labels, 8, temperature=t)) == pytest.approx(
            float(losses.set_contrast_loss(x, labels, 8, temperature=t)))
    # a colder softmax is sharper: lower loss where the halves already match best
    assert float(losses.set_contrast_loss(x, labels, 8, temperature=0.1)) < float(
        losses.set_contrast_loss(x, labels, 8, temperature=0.5))


@pytest.mark.parametrize("extra,message", [
    ({"weak_objective": "pairs"}, "model.weak_objective"),
    ({"weak_cancel": -1}, "model.weak_cancel"),
    ({"weak_cancel": True}, "model.weak_cancel"),
    ({"weak_temperature": 0}, "model.weak_temperature"),
    ({"weak_temperature": "cold"}, "model.weak_temperature"),
    ({"weak_objective": "set_class", "weak_temperature": 0.1}, "has no temperature"),
    ({"weak_objective": "class", "weak_cancel": 2}, "needs a weak_objective over runs"),
    ({"weak_group": 3}, "model.weak_group"),
    ({"weak_group": True}, "model.weak_group"),
])
def test_bad_set_options_are_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        build_gan({"arch": "lsgan", **TINY, **SET, "n_classes": 3, **extra})


@pytest.mark.parametrize("objective", ["class", "set", "set_class"])
def test_a_weak_head_over_fewer_than_two_classes_is_refused_naming_its_model(objective):
    with pytest.raises(ConfigError, match="model.n_classes"):
        build_gan({"arch": "bigan", **TINY, **SET, "weak_objective": objective, "n_classes": 1})
    # the networks' own check, for callers that build a head without the config check
    with pytest.raises(ValueError, match="bigan: weak labels need n_classes >= 2, got 1"):
        build_weak_head(8, objective, 1, owner="bigan")


def test_set_run_refuses_a_batch_its_runs_do_not_fill_then_resumes_and_exports(labelled_shards,
                                                                               tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("lsgan", head_lr=1e-3)
    cfg["model"].update(readout="texture", head_features="texture", **{**SET, "weak_group": 6})
    kw = dict(precision="float32", seed=1, sample_every=2, checkpoint_every=2, verbose=0)
    with pytest.raises(ConfigError, match="model.weak_group: 6 .*batch_size \\(8\\)"):
        train(cfg, labelled_shards, run, steps=2, **kw)
    assert not (run / "checkpoints").exists()
    cfg["model"]["weak_group"] = 4
    train(cfg, labelled_shards, run, steps=2, **kw)
    result = train(cfg, labelled_shards, run, steps=4, resume=True, **kw)
    assert result.step == 4 and math.isfinite(result.metrics["class_loss"])
    restored = load_run(run).gan.class_head.get_weights()
    fresh = build_gan({**cfg["model"], "n_classes": 4}, seed=1).class_head.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(restored, fresh))
    paths = export_run(run, "sets", tmp_path / "exported")
    assert read_export_metadata(paths["encoder"])["encoder_dim"] > 0


def test_each_mirrored_replica_must_get_whole_runs():
    """A batch of 64 in runs of 16 splits over 2 replicas into 2 runs each, over 4 into
    1 run each: nothing for the set loss to tell apart on a replica."""
    model = dict(SET, weak_group=16)
    assert _weak_group(model, 64, replicas=2) == 16
    # the run-level classifier needs the same grouped batches
    assert _weak_group({**model, "weak_objective": "set_class"}, 64) == 16
    with pytest.raises(ConfigError, match="model.weak_group: 16 .*4 replicas' 16 cells"):
        _weak_group(model, 64, replicas=4)
    with pytest.raises(ConfigError, match="3 replicas"):
        _weak_group(model, 64, replicas=3)
    assert _weak_group({"weak_labels": "treatment"}, 64, replicas=4) is None
    with pytest.raises(ConfigError, match="strategy multiworker"):
        _weak_group(model, 64, replicas=2, multiworker=True)


def test_the_bundled_set_config_trains_and_exports_its_multiscale_readout(labelled_shards, tmp_path):
    """configs/lsgan-set.toml, the benchmark's best-gaining option, at tiny widths: the set
    loss trains (finite), the classes are stored, and the exported encoder is the
    multiscale readout the set head trained."""
    from cytogan_tf.config import load_config
    from cytogan_tf.models.networks import multiscale_dim

    from training_helpers import CROP, TINY_WIDTHS

    cfg = load_config("lsgan-set")
    assert (cfg["model"]["weak_objective"], cfg["model"]["readout"], cfg["model"]["ssl"]) == ("set", "multiscale", "none")
    cfg["model"].update(image_size=CROP, latent_dim=8, encoder_dim=8, widths=list(TINY_WIDTHS), weak_group=4)
    cfg["train"]["batch_size"] = 8
    run = tmp_path / "run"
    result = train(cfg, labelled_shards, run, steps=2, precision="float32", seed=1, sample_every=2,
                   checkpoint_every=2, verbose=0)
    assert math.isfinite(result.metrics["class_loss"])
    assert (run / "labels.json").is_file()
    paths = export_run(run, "set", tmp_path / "exported")
    assert read_export_metadata(paths["encoder"])["encoder_dim"] == multiscale_dim(TINY_WIDTHS)
