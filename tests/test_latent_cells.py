"""Real cells in latent space: encode, reconstruct, group arithmetic, conditioned samples,
on tiny exports (untrained networks: these tests check the plumbing and the optimiser,
not how good a trained model's reconstructions are)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cytogan_tf.cli.main import cli
from cytogan_tf.errors import DataError
from cytogan_tf.export import export_models
from cytogan_tf.grids import grid_pixel_size
from cytogan_tf.latent_cells import InversionSettings, LatentModels, select_rows, treatment_strip
from cytogan_tf.models import build_gan
from cytogan_tf.training import _build_networks

from training_helpers import CROP, write_tiny_shards

TINY = {"image_size": CROP, "latent_dim": 8, "encoder_dim": 6, "widths": [16, 8, 8, 4]}


def _export(base, arch, name):
    gan = build_gan({"arch": arch, **TINY}, seed=0)
    _build_networks(gan)
    return export_models(gan.generator, gan.encoder, {"arch": arch, "step": 0}, name, base,
                         latent_encoder=getattr(gan, "latent_encoder", None))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    shards = write_tiny_shards(root / "shards", n_cells=24, compounds=["DMSO", "taxol", "AZ138"])
    return root, shards, _export(root / "exported", "lsgan", "ls"), _export(root / "exported", "bigan", "bi")


def run(args):
    return CliRunner().invoke(cli, args)


def test_encode_writes_one_row_per_cell_with_metadata(setup, tmp_path):
    root, shards, ls, bi = setup
    for paths, method in ((ls, "invert"), (bi, "signature")):
        out = tmp_path / method
        res = run(["encode", str(paths["generator"]), "--data", str(shards), "--out", str(out),
                   "--steps", "5", "--no-progress"])
        assert res.exit_code == 0, res.output
        table = pd.read_parquet(out / "latents.parquet")
        assert len(table) == 24 and sorted(table["Metadata_CellId"]) == list(range(24))
        assert {"Metadata_Plate", "Metadata_Well", "Metadata_Compound"} <= set(table.columns)
        z = table[[f"z_{i}" for i in range(8)]].to_numpy()
        assert np.isfinite(z).all() and len(pd.read_csv(out / "latents.csv")) == 24
        summary = json.loads((out / "encode.json").read_text())
        assert summary["method"] == method and summary["reconstruction_mse_mean"] > 0
    res = run(["encode", str(ls["encoder"]), "--data", str(shards), "--out", str(tmp_path / "x"),
               "--method", "signature"])
    assert res.exit_code == 1 and "no `encode` signature" in res.output


def test_inversion_lowers_the_reconstruction_error(setup):
    _, _, ls, _ = setup
    models = LatentModels(ls["encoder"])  # the generator is found beside the encoder
    target = models.generate(np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32))
    z, after, before = models.invert(target, InversionSettings(steps=80, restarts=2, seed=1))
    assert z.shape == (6, 8) and np.all(after <= before)
    assert after.mean() < 0.85 * before.mean(), (before.mean(), after.mean())
    assert (after < before).sum() >= 3
    with pytest.raises(DataError, match="takes \\(32, 32, 3\\)"):
        models.invert(np.zeros((2, 16, 16, 3), np.float32), InversionSettings(steps=1))


def test_a_selector_that_matches_nothing_names_what_exists():
    table = pd.DataFrame({"Metadata_Compound": ["DMSO", "taxol", "taxol"], "Metadata_Concentration": [0, 1, 3]})
    assert select_rows(table, "Metadata_Compound=taxol;Metadata_Concentration=3.0").tolist() == [False, False, True]
    with pytest.raises(DataError, match=r"'Metadata_Compound=taxl' matches no cell; Metadata_Compound has: DMSO, taxol"):
        select_rows(table, "Metadata_Compound=taxl")
    with pytest.raises(DataError, match="no column 'Metadata_Moa'"):
        select_rows(table, "Metadata_Moa=x")


def test_group_arithmetic_and_conditioned_samples_write_pngs(setup, tmp_path):
    root, shards, ls, _ = setup
    lat = tmp_path / "lat"
    assert run(["encode", str(ls["generator"]), "--data", str(shards), "--out", str(lat),
                "--steps", "2", "--no-progress"]).exit_code == 0
    png = tmp_path / "arith.png"
    res = run(["arithmetic", str(ls["generator"]), "--out", str(png), "--latents", str(lat),
               "--a", "Metadata_Compound=taxol", "--b", "Metadata_Compound=DMSO",
               "--c", "Metadata_Compound=DMSO", "--n-cells", "3", "--steps", "5"])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size[::-1] == grid_pixel_size(15, CROP, CROP, ncols=5)
    res = run(["arithmetic", str(ls["generator"]), "--out", str(png), "--latents", str(lat),
               "--a", "Metadata_Compound=nope", "--b", "Metadata_Compound=DMSO", "--c", "Metadata_Compound=DMSO"])
    assert res.exit_code == 1 and "matches no cell" in res.output and "AZ138, DMSO, taxol" in res.output
    res = run(["arithmetic", str(ls["generator"]), "--out", str(png), "--a", "Metadata_Compound=taxol",
               "--b", "1", "--c", "2"])
    assert res.exit_code == 1 and "do not mix" in res.output
    assert run(["arithmetic", str(ls["generator"]), "--out", str(png), "--a", "1,2", "--b", "3",
                "--c", "4"]).exit_code == 0  # seed arithmetic still works
    cond = tmp_path / "cond.png"
    res = run(["sample", str(ls["generator"]), "--out", str(cond), "--n", "4", "--ncols", "4",
               "--condition", "Metadata_Compound=AZ138", "--latents", str(lat)])
    assert res.exit_code == 0, res.output
    with Image.open(cond) as im:
        assert im.size[::-1] == grid_pixel_size(4, CROP, CROP, ncols=4)


def test_treatment_strip_moves_each_cell_from_itself_to_the_shifted_point():
    z = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = np.ones(3, np.float32)
    strip = treatment_strip(z, d, 3).reshape(2, 3, 3)
    np.testing.assert_allclose(strip[:, 0], z)
    np.testing.assert_allclose(strip[:, -1], z + d)


def test_reconstruct_writes_real_over_reconstructed_cells_and_metrics(setup, tmp_path):
    _, shards, _, bi = setup
    png = tmp_path / "recon.png"
    res = run(["reconstruct", str(bi["generator"]), "--data", str(shards), "--out", str(png),
               "--n", "5", "--n-eval", "16"])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size[::-1] == grid_pixel_size(10, CROP, CROP, ncols=5)
    metrics = json.loads(png.with_suffix(".json").read_text())
    assert metrics["method"] == "signature" and metrics["n_cells"] == 16
    assert metrics["fd_handcrafted_real_recon"] >= 0 and metrics["pixel_mse_mean"] > 0
