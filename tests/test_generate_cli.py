"""`cytogan sample | interpolate | arithmetic` on a tiny trained run and on a SavedModel."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytogan_tf.cli.main import cli
from cytogan_tf.grids import grid_pixel_size
from cytogan_tf.training import train

from training_helpers import CROP, tiny_config, write_tiny_shards

LATENT = tiny_config()["model"]["latent_dim"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen")
    shards = write_tiny_shards(base / "shards", n_cells=16)
    train(tiny_config("dcgan"), shards, base / "run", steps=2, precision="float32", verbose=0)
    return base / "run"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def png(path):
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def test_sample_grid_size_and_reproducible(run_dir, tmp_path):
    res = invoke("sample", run_dir, "--out", tmp_path / "a.png", "--n", 6, "--seed", 3)
    assert res.exit_code == 0, res.output
    grid = png(tmp_path / "a.png")
    assert grid.shape == (*grid_pixel_size(6, CROP, CROP), 3) == (66, 100, 3)
    assert grid[:CROP, :CROP].std() > 0  # a generated cell, not blank
    invoke("sample", run_dir, "--out", tmp_path / "b.png", "--n", 6, "--seed", 3)
    invoke("sample", run_dir, "--out", tmp_path / "c.png", "--n", 6, "--seed", 4)
    np.testing.assert_array_equal(grid, png(tmp_path / "b.png"))
    assert not np.array_equal(grid, png(tmp_path / "c.png"))


def test_interpolate_strip(run_dir, tmp_path):
    out = tmp_path / "strip.png"
    res = invoke("interpolate", run_dir, "--out", out, "--steps", 5, "--seed-a", 1, "--seed-b", 2)
    assert res.exit_code == 0, res.output
    strip = png(out)
    assert strip.shape == (CROP, 5 * CROP + 4 * 2, 3)
    # the endpoints are the cells of seed 1 and seed 2 as `sample` draws them
    invoke("sample", run_dir, "--out", tmp_path / "one.png", "--n", 1, "--seed", 1)
    np.testing.assert_array_equal(strip[:, :CROP], png(tmp_path / "one.png"))
    assert not np.array_equal(strip[:, :CROP], strip[:, -CROP:])


def test_arithmetic_with_seeds_and_npy(run_dir, tmp_path):
    zc = np.random.default_rng(0).standard_normal((2, LATENT)).astype(np.float32)
    np.save(tmp_path / "c.npy", zc)
    out = tmp_path / "arith.png"
    res = invoke("arithmetic", run_dir, "--a", "1,2", "--b", "3", "--c", tmp_path / "c.npy", "--out", out)
    assert res.exit_code == 0, res.output
    assert png(out).shape == (CROP, 4 * CROP + 3 * 2, 3)
    np.save(tmp_path / "bad.npy", np.zeros((2, LATENT + 1), np.float32))
    res = invoke("arithmetic", run_dir, "--a", "1", "--b", "2", "--c", tmp_path / "bad.npy", "--out", out)
    assert res.exit_code == 1 and "Error:" in res.output and "bad.npy" in res.output
    res = invoke("arithmetic", run_dir, "--a", "x,y", "--b", "2", "--c", "3", "--out", out)
    assert res.exit_code == 1 and "--a" in res.output


def test_not_a_run_is_a_clear_error(tmp_path):
    res = invoke("sample", tmp_path, "--out", tmp_path / "x.png")
    assert res.exit_code == 1 and "Error:" in res.output and "run.json" in res.output
    assert not (tmp_path / "x.png").exists()


def test_exported_generator_savedmodel_gives_the_same_cells(run_dir, tmp_path):
    import tensorflow as tf

    from cytogan_tf.training import load_run

    gen = load_run(run_dir).gan.generator

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.gen = gen

        @tf.function(input_signature=[tf.TensorSpec([None, LATENT], tf.float32, name="z")])
        def serve(self, z):
            return {"images": (self.gen(z, training=False) + 1.0) / 2.0}

    module = Serving()
    base = tmp_path / "exported" / "tiny-generator"
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    res = invoke("sample", base, "--out", tmp_path / "export.png", "--n", 4, "--seed", 9)
    assert res.exit_code == 0, res.output
    invoke("sample", run_dir, "--out", tmp_path / "run.png", "--n", 4, "--seed", 9)
    diff = np.abs(png(tmp_path / "export.png").astype(int) - png(tmp_path / "run.png").astype(int))
    assert diff.max() <= 1
