"""End-to-end training on tiny shards: every arch, run-dir contents, errors, divergence."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from cytogan_tf.config import load_config
from cytogan_tf.errors import ConfigError, DataError, TrainingDivergedError
from cytogan_tf.grids import grid_pixel_size
from cytogan_tf.training import load_run, train

from training_helpers import CROP, tiny_config, write_tiny_shards


def event_tags(log_dir):
    """Summary tags in a TensorBoard log dir, read with TF's own Event proto."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    files = [str(p) for p in log_dir.glob("events.out.tfevents.*")]
    assert files
    return {v.tag for rec in tf.data.TFRecordDataset(files)
            for v in event_pb2.Event.FromString(rec.numpy()).summary.value}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards")


@pytest.mark.parametrize("arch", ["dcgan", "lsgan", "wgan", "began"])
def test_each_arch_trains_and_writes_a_complete_run(arch, shards, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(arch), shards, run, steps=4, precision="float32", seed=1,
                   sample_every=2, checkpoint_every=2, log_every=1, verbose=0)
    assert result.step == 4
    assert {"d_loss", "g_loss"} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())

    info = json.loads((run / "run.json").read_text())
    assert info["arch"] == arch and info["step"] == 4 and info["precision"] == "float32"
    assert info["seed"] == 1 and info["dataset"]["crop_size"] == CROP
    assert info["dataset"]["normalization"]["method"] == "percentile"
    assert load_config(run / "config.toml")["model"] == tiny_config(arch)["model"]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_000002.png", "step_000004.png"]
    with Image.open(run / "samples" / "step_000004.png") as im:
        assert im.size[::-1] == grid_pixel_size(4, CROP, CROP) and im.mode == "RGB"
    tags = event_tags(run / "logs" / "train")
    assert {"d_loss", "g_loss", "samples"} <= tags

    loaded = load_run(run)
    assert loaded.step == 4 and loaded.gan.arch == arch
    assert loaded.dataset_info["crop_size"] == CROP
    images = np.asarray(loaded.gan.generator(np.zeros((2, 8), np.float32)))
    assert images.shape == (2, CROP, CROP, 3) and np.all(np.abs(images) <= 1.0)


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(shards, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"arch": "lsgan", "step": 7}')
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(tiny_config(), shards, run, steps=4, precision="float32", verbose=0)
    assert (run / "run.json").read_text() == '{"arch": "lsgan", "step": 7}'
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    with pytest.raises(ConfigError, match="no training run to resume"):
        train(tiny_config(), shards, tmp_path / "empty", steps=2, resume=True, verbose=0)


def test_image_size_must_match_the_shards(shards, tmp_path):
    cfg = tiny_config()
    cfg["model"]["image_size"] = 64
    with pytest.raises(ConfigError, match="model.image_size is 64 .* 32x32 crops"):
        train(cfg, shards, tmp_path / "run", steps=2, verbose=0)
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    import tensorflow as tf

    def poison_from_third_batch(ds):
        nan = tf.constant(float("nan"))
        return ds.enumerate().map(lambda i, x: tf.where(i >= 2, x * nan, x))

    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 3: \w+_loss = nan; last good checkpoint: step 2"):
        train(tiny_config("lsgan"), shards, run, steps=8, precision="float32",
              checkpoint_every=2, sample_every=100, verbose=0, dataset_hook=poison_from_third_batch)
    info = json.loads((run / "run.json").read_text())
    assert info["step"] == 2 and info["diverged"]["step"] == 3
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-2.index"]
    loaded = load_run(run)
    assert loaded.step == 2
    for v in loaded.gan.generator.variables + loaded.gan.discriminator.variables:
        assert np.all(np.isfinite(np.asarray(v)))


def test_train_cli_rejects_bad_options_before_writing(shards, tmp_path):
    from click.testing import CliRunner

    from cytogan_tf.cli.main import cli

    run = tmp_path / "run"
    cases = [
        (["--arch", "lsgan", "--config", "wgan"], "model.arch is 'wgan', not --arch lsgan"),
        (["--arch", "lsgan", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
        (["--arch", "lsgan", "--set", "train.g_lr=fast"], "train.g_lr: cannot read 'fast'"),
        (["--arch", "lsgan", "--image-size", "64", "--set", "model.widths=[8,8,8,8]"],
         "model.image_size is 64"),
        (["--arch", "lsgan", "--strategy", "multiworker"], "TF_CONFIG"),
        (["--arch", "lsgan", "--sample-every", "0"], "train.sample_every must be positive"),
        (["--resume"], "no run to resume there"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(cli, ["train", "--data", str(shards), "--out", str(run), *extra])
        assert res.exit_code == 1 and "Error:" in res.output and message in res.output, (extra, res.output)
        assert not run.exists()


def test_train_cli_takes_the_crop_size_from_the_shards_and_stores_its_options(tmp_path):
    from click.testing import CliRunner

    from cytogan_tf.cli.main import cli
    from cytogan_tf.demo import arch_config_name

    run = tmp_path / "run"
    # the demo's LSGAN learns from weak treatment labels in runs of 16: a cell table, batch 32
    labelled = write_tiny_shards(tmp_path / "shards", compounds=["A", "B"])
    small = ["--set", "model.widths=[16,8,8,4]", "--set", "train.batch_size=32", "--quiet"]
    res = CliRunner().invoke(cli, ["train", "--config", "demo", "--data", str(labelled), "--out", str(run),
                                   "--steps", "2", "--sample-every", "1", "--checkpoint-every", "2",
                                   "--log-every", "1", *small])
    assert res.exit_code == 0, res.output
    cfg = load_config(run / "config.toml")
    # --config demo trains the demo's model (its arch config + the demo's overrides) at the shards' size
    assert cfg["model"]["arch"] == load_config("demo")["demo"]["arch"] and cfg["model"]["image_size"] == CROP
    # ... from the config [demo.configs] names for it, with the training keys the demo does
    # not override (the head's rate) and its weak-label keys
    bundled = load_config(arch_config_name(load_config("demo")))
    assert cfg["train"]["head_lr"] == bundled["train"]["head_lr"] > 0
    assert cfg["model"]["weak_objective"] == bundled["model"]["weak_objective"]
    assert (cfg["train"]["sample_every"], cfg["train"]["checkpoint_every"], cfg["train"]["log_every"]) == (1, 2, 1)
    assert len(list((run / "samples").glob("*.png"))) == 2
    res = CliRunner().invoke(cli, ["train", "--data", str(labelled), "--out", str(run), "--resume",
                                   "--steps", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(list((run / "samples").glob("*.png"))) == 3  # resume kept --sample-every 1


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_damaged_shard_is_named_and_the_failed_run_does_not_block_a_retry(tmp_path, damage):
    data = write_tiny_shards(tmp_path / "shards")
    path = data / "shard-00001-of-00002.tfrecord"
    good = path.read_bytes()
    if damage == "cut":
        path.write_bytes(good[: len(good) // 2 + 7])  # mid-record: tf.data would read it as EOF
    else:
        bad = bytearray(good)
        bad[-10] ^= 0xFF  # inside the last record's payload: a CRC mismatch
        path.write_bytes(bytes(bad))
    run = tmp_path / "run"
    with pytest.raises(DataError, match=path.name):
        train(tiny_config(), data, run, steps=8, precision="float32", verbose=0)
    path.write_bytes(good)
    result = train(tiny_config(), data, run, steps=2, precision="float32", verbose=0)
    assert result.step == 2
