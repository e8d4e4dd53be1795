"""The moving average of the exported networks' weights (train.ema_decay)."""

import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf.errors import ConfigError
from cytogan_tf.models.weight_average import WeightAverage
from cytogan_tf.training import load_run, train

from training_helpers import tiny_config, write_tiny_shards


def test_the_average_is_the_plain_mean_first_then_exponential():
    v = tf.Variable([0.0, 0.0])
    average = WeightAverage([v, v], decay=0.5)  # a variable listed twice is averaged once
    assert len(average.averages) == 1
    for value in ([1.0, 2.0], [3.0, 6.0], [5.0, 10.0]):
        v.assign(value)
        average.update()
    # steps 1-2: their mean (2, 4); step 3 at decay 0.5: (2 + 5) / 2, (4 + 10) / 2
    np.testing.assert_allclose(average.averages[0].numpy(), [3.5, 7.0])
    assert int(average.updates.numpy()) == 3
    with average.applied():  # for the sample grids: the averages, then the live weights back
        np.testing.assert_allclose(v.numpy(), [3.5, 7.0])
    np.testing.assert_allclose(v.numpy(), [5.0, 10.0])
    average.apply()
    np.testing.assert_allclose(v.numpy(), [3.5, 7.0])
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([v], decay=1.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards")


def test_a_run_exports_its_averaged_weights(shards, tmp_path):
    cfg = tiny_config("bigan", ema_decay=0.9)
    train(cfg, shards, tmp_path / "run", steps=6, precision="float32", seed=2,
          sample_every=100, checkpoint_every=100, verbose=0)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")))
    assert int(reader.get_tensor("weight_average/updates/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    loaded = load_run(tmp_path / "run")
    kernel = loaded.gan.generator.weights[0]
    averaged = reader.get_tensor("weight_average/averages/0/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(kernel.numpy(), averaged)
    # the last step's weights are in the checkpoint too (saved along the optimizer's
    # path to them), and differ from their average
    live = [reader.get_tensor(k) for k, shape in reader.get_variable_to_shape_map().items()
            if "_trainable_variables/" in k and tuple(shape) == tuple(kernel.shape)]
    assert live and not any(np.array_equal(w, averaged) for w in live)
    # BiGAN's E (its z) is averaged as well as the readout and the generator
    e_kernel = loaded.gan.latent_encoder.get_layer("e_latent").kernel
    assert any(x is e_kernel for x in loaded.gan.weight_average.live)


@pytest.mark.parametrize("arch,trained_with", [("lsgan", "multiscale"), ("bigan", "multiscale"),
                                               ("began", "hidden")])
def test_an_averaged_run_reloads_under_every_readout(arch, trained_with, shards, tmp_path):
    """The benchmark and `cytogan profile --readout` rebuild a run with another readout;
    with a moving average (stored by position) that must restore the same averages."""
    cfg = tiny_config(arch, ema_decay=0.9)
    cfg["model"]["readout"] = trained_with
    train(cfg, shards, tmp_path / "run", steps=3, precision="float32", seed=1,
          sample_every=100, checkpoint_every=100, verbose=0)
    g_kernels = []
    for readout in ("hidden", "multiscale", "texture"):
        gan = load_run(tmp_path / "run", readout=readout).gan
        assert gan.encoder.output_shape[-1] > 0
        g_kernels.append(gan.generator.weights[0].numpy())
    for kernel in g_kernels[1:]:
        np.testing.assert_array_equal(kernel, g_kernels[0])


def test_a_decay_of_one_or_more_is_a_config_error(shards, tmp_path):
    with pytest.raises(ConfigError, match="train.ema_decay"):
        train(tiny_config("lsgan", ema_decay=1.0), shards, tmp_path / "run", steps=2,
              precision="float32", verbose=0)
