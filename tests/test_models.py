"""The four GANs train on tiny batches; shapes, dtypes, ranges, checkpoints, config errors."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf.errors import ConfigError
from cytogan_tf.models import ARCHS, build_gan, make_optimizers

TINY = {"image_size": 32, "latent_dim": 8, "encoder_dim": 6, "widths": [16, 8, 8, 4]}
ARCH_EXTRA = {"wgan": {"n_critic": 2}}
OPT = {"g_lr": 1e-3, "d_lr": 1e-3, "beta1": 0.5, "beta2": 0.999}


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def _tiny(arch, seed=1, **extra):
    gan = build_gan({"arch": arch, **TINY, **ARCH_EXTRA.get(arch, {}), **extra}, seed=seed)
    gan.compile(*make_optimizers(OPT))
    return gan


def _weights(model):
    return [w.numpy().copy() for w in model.trainable_weights]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_trains_and_weights_move(arch):
    gan = _tiny(arch)
    g0, d0 = _weights(gan.generator), _weights(gan.discriminator)
    x = tf.constant(_images())
    history = [{k: float(v) for k, v in gan.train_step(x).items()} for _ in range(3)]
    assert set(history[0]) == set(gan.metric_names)
    for logs in history:
        assert all(np.isfinite(v) for v in logs.values()), logs
    assert history[0]["d_loss"] != history[-1]["d_loss"]
    assert history[0]["g_loss"] != history[-1]["g_loss"]
    assert any(not np.allclose(a, b) for a, b in zip(g0, _weights(gan.generator)))
    assert any(not np.allclose(a, b) for a, b in zip(d0, _weights(gan.discriminator)))

    emb = gan.encoder(x, training=False)
    # BiGAN's embedding is its encoder's z; the others read out D's 6-unit hidden layer
    assert emb.shape == (4, 8 if arch == "bigan" else 6) and emb.dtype == tf.float32
    imgs = gan.generate(gan.sample_z(3)).numpy()
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.float32
    assert imgs.min() >= -1.0 and imgs.max() <= 1.0
    if arch == "began":
        assert 0.0 < float(gan.k_t.numpy()) <= 1.0  # k_t moved off its start, stays clipped


@pytest.mark.parametrize("arch", ["dcgan", "began"])
def test_alternating_update_moves_both_networks_differently_from_simultaneous(arch):
    x = tf.constant(_images())
    runs = {}
    for update in ("simultaneous", "alternating"):
        gan = _tiny(arch, update=update)
        d0 = _weights(gan.discriminator)
        logs = {k: float(v) for k, v in gan.train_step(x).items()}
        assert all(np.isfinite(v) for v in logs.values()), logs
        assert any(not np.allclose(a, b) for a, b in zip(d0, _weights(gan.discriminator)))
        runs[update] = _weights(gan.generator)
    # same seed, same first D step; the G step sees the updated D only when alternating
    assert any(not np.allclose(a, b) for a, b in zip(runs["simultaneous"], runs["alternating"]))


def test_fit_drives_train_step_with_steps_per_execution():
    gan = build_gan({"arch": "lsgan", **TINY}, seed=3)
    gan.compile(*make_optimizers(OPT), steps_per_execution=2)
    ds = tf.data.Dataset.from_tensor_slices(_images(8)).batch(4, drop_remainder=True).repeat()
    hist = gan.fit(ds, steps_per_epoch=4, epochs=1, verbose=0).history
    assert set(hist) == {"d_loss", "g_loss"} and np.isfinite(hist["d_loss"][0])
    assert int(gan.g_optimizer.iterations.numpy()) == 4


def test_same_seed_same_training():
    x = tf.constant(_images())
    runs = []
    for _ in range(2):
        gan = _tiny("dcgan", seed=7)
        logs = [gan.train_step(x) for _ in range(2)][-1]
        runs.append((float(logs["d_loss"]), gan.sample_z(2).numpy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # an explicit seed gives the same latents whatever the generator's state
    np.testing.assert_array_equal(gan.sample_z(2, seed=5).numpy(), gan.sample_z(2, seed=5).numpy())


@pytest.mark.parametrize("size", [64, 96])
def test_image_sizes(size):
    gan = build_gan({"arch": "dcgan", **TINY, "image_size": size})
    assert gan.generate(gan.sample_z(1)).shape == (1, size, size, 3)
    assert gan.encoder(tf.zeros((2, size, size, 3))).shape == (2, 6)


def test_checkpoint_round_trip_with_extra_state(tmp_path):
    gan = _tiny("began")
    x = tf.constant(_images())
    gan.train_step(x)
    ckpt = tf.train.Checkpoint(generator=gan.generator, discriminator=gan.discriminator,
                               g_optimizer=gan.g_optimizer, d_optimizer=gan.d_optimizer,
                               **gan.extra_state())
    path = ckpt.save(str(tmp_path / "ckpt"))
    k_saved, z_next = float(gan.k_t.numpy()), gan.sample_z(2).numpy()
    gan.seed_generator.state.assign(gan.seed_generator.state - [0, 1])  # rewind one draw
    w_saved = _weights(gan.generator)
    gan.train_step(x)
    ckpt.restore(path)
    assert float(gan.k_t.numpy()) == k_saved
    for a, b in zip(w_saved, _weights(gan.generator)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(gan.sample_z(2).numpy(), z_next)


@pytest.mark.parametrize("arch", ["lsgan", "wgan"])  # wgan: the loss-scaled penalty too
def test_mixed_float16_wraps_optimizers_in_loss_scaling(arch):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        extra = {"n_critic": 1} if arch == "wgan" else {}
        gan = build_gan({"arch": arch, "image_size": 32, "latent_dim": 4, "encoder_dim": 3,
                         "widths": [4, 4, 4, 4], **extra})
        gan.compile(*make_optimizers(OPT))
        assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)
        logs = gan.train_step(tf.constant(_images(2)))
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert gan.generate(gan.sample_z(1)).dtype == tf.float32
        assert gan.encoder(tf.zeros((1, 32, 32, 3))).dtype == tf.float32
    finally:
        keras.config.set_dtype_policy("float32")


def test_float32_does_not_wrap():
    gan = _tiny("dcgan")
    assert not isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize(
    "cfg,match",
    [({"arch": "stylegan"}, "dcgan, lsgan, wgan, began"),
     ({"arch": "lsgan", "image_size": 40}, "model.image_size"),
     ({"arch": "lsgan", "widths": [8, 8]}, "model.widths"),
     ({"arch": "lsgan", "gamma": 0.5}, "unknown key.*gamma"),
     ({"arch": "wgan", "critic_norm": "batch"}, "model.critic_norm"),
     ({"arch": "began", "k_init": 1.5}, "model.k_init"),
     ({"arch": "began", "gamma": "high"}, "model.gamma")],
)
def test_bad_model_config_is_config_error(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_gan(cfg)


def test_make_optimizers_reads_train_section():
    g, d = make_optimizers({"g_lr": 2e-4, "d_lr": 7e-5, "beta1": 0.5, "beta2": 0.9})
    assert float(g.learning_rate) == pytest.approx(2e-4) and float(d.learning_rate) == pytest.approx(7e-5)
    assert g.beta_1 == 0.5 and d.beta_2 == 0.9
    with pytest.raises(ConfigError, match="train.d_lr"):
        make_optimizers({"g_lr": 1e-4})


MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cytogan_tf.models import build_gan, make_optimizers
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4, drop_remainder=True).repeat()
    for arch, extra in (("began", {}), ("wgan", {"n_critic": 1})):
        with strategy.scope():
            gan = build_gan({"arch": arch, "image_size": 32, "latent_dim": 4, "encoder_dim": 3,
                             "widths": [4, 4, 4, 4], **extra}, seed=0)
            # steps_per_execution > 1 fails under MirroredStrategy in Keras 3 for any
            # model (keras-team/keras#19246), so distributed fit() uses 1.
            gan.compile(*make_optimizers({"g_lr": 1e-3, "d_lr": 1e-3}))
        h = gan.fit(ds, steps_per_epoch=2, epochs=1, verbose=0).history
        assert all(np.isfinite(v[0]) for v in h.values()), h
        assert int(gan.d_optimizer.iterations.numpy()) == 2
        print("OK", arch, sorted(h))
""")


def test_trains_under_mirrored_strategy():
    """Two logical CPUs in a fresh process (devices must be split before TF starts)."""
    out = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK began" in out.stdout and "OK wgan" in out.stdout


def test_fused_batch_norm_matches_keras_batch_norm():
    from cytogan_tf.models.networks import FusedBatchNorm

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 5)).astype("float32"))
    ours = FusedBatchNorm(momentum=0.9, epsilon=1e-3)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    np.testing.assert_allclose(ours(x, training=True).numpy(), ref(x, training=True).numpy(), atol=1e-4)
    # moving statistics follow the batch (variance: unbiased in the fused kernel)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=0.05)
    np.testing.assert_allclose(ours(x, training=False).numpy(), ref(x, training=False).numpy(), atol=0.05)


def test_began_starts_k_t_where_its_config_says():
    # k_t = 0 lets the generator collapse to flat grey on masked crops (README, Configs);
    # the shipped config and the class default must agree on the non-zero start.
    from cytogan_tf.config import load_config

    model_cfg = load_config("began")["model"]
    assert model_cfg["k_init"] > 0
    gan = build_gan({**model_cfg, **TINY})
    assert float(gan.k_t.numpy()) == pytest.approx(model_cfg["k_init"])
    default = build_gan({"arch": "began", **TINY})
    assert float(default.k_t.numpy()) == pytest.approx(model_cfg["k_init"])


def _shipped_model_configs():
    from cytogan_tf.config import available_configs, load_config

    return [n for n in available_configs() if "arch" in load_config(n).get("model", {})]


@pytest.mark.parametrize("name", _shipped_model_configs())
def test_every_shipped_config_builds_trains_and_reads_out(name):
    # `cytogan train --config wgan` once failed here: the config set model.views and the
    # WGAN builder did not take it. Every shipped [model] must build as written.
    from cytogan_tf.config import load_config
    from cytogan_tf.models.class_head import GROUPED_OBJECTIVES

    model_cfg = {**load_config(name)["model"], **TINY}
    model_cfg.pop("n_classes", None)
    if model_cfg.get("weak_labels", "none") != "none":
        model_cfg["n_classes"] = 3
        if model_cfg.get("weak_objective") in GROUPED_OBJECTIVES:
            model_cfg["weak_group"] = 2  # the batch of 4 below in two runs of one class
    if model_cfg["arch"] == "wgan":
        model_cfg["n_critic"] = 1
    gan = build_gan(model_cfg, seed=0)
    gan.compile(*make_optimizers(OPT))
    x = tf.constant(_images())
    labels = tf.constant([0, 0, 1, 1]) if gan.class_head is not None else None
    logs = gan.train_step(x if labels is None else (x, labels))
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    emb = gan.encoder(x, training=False)
    assert emb.shape[0] == 4 and np.isfinite(emb.numpy()).all()
