"""`cytogan profile` / `cytogan evaluate` end to end on a tiny shards dir and a tiny
exported encoder (a small Keras net exported through cytogan_tf.export)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cytogan_tf.cli.main import cli
from cytogan_tf.data import shards

CROP = 16
# compound -> (MOA, DNA brightness, actin brightness)
COMPOUNDS = {"DMSO": ("DMSO", 80, 80), "A": ("m1", 220, 40), "B": ("m1", 200, 60),
             "C": ("m2", 40, 220), "D": ("m2", 60, 200), "E": ("m3", 140, 140), "F": ("m3", 150, 120)}


def write_tiny_shards(out, crop=CROP, cells_per_well=4, seed=0):
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    records, rows = [], []
    # like BBBC021, each compound is imaged in one week only (two doses), DMSO everywhere
    for plate, compounds in (("Week1_P1", "ACE"), ("Week2_P2", "BDF")):
        wells = [("DMSO", 0.0)] * 2 + [(c, dose) for c in compounds for dose in (1.0, 3.0)]
        for w, (compound, conc) in enumerate(wells):
            moa, dna, actin = COMPOUNDS[compound]
            for _ in range(cells_per_well):
                cid = len(rows)
                img = np.zeros((crop, crop, 3), np.uint8)
                r = int(rng.integers(3, 6))
                yy, xx = np.mgrid[:crop, :crop]
                inside = (yy - crop / 2) ** 2 + (xx - crop / 2) ** 2 < (r + 3) ** 2
                nucleus = (yy - crop / 2) ** 2 + (xx - crop / 2) ** 2 < r ** 2
                img[inside, 1] = actin
                img[inside, 2] = 100
                img[nucleus, 0] = dna
                img = np.clip(img + rng.integers(0, 10, img.shape), 0, 255).astype(np.uint8)
                meta = dict(cell_id=cid, plate=plate, well=f"B{w + 2:02d}", compound=compound,
                            moa=moa, concentration=conc, site=1, center_x=50.0, center_y=60.0)
                records.append(shards.serialize_cell(img, meta))
                rows.append({"Metadata_CellId": cid, "Metadata_Plate": plate, "Metadata_Well": meta["well"],
                             "Metadata_Site": 1, "Metadata_Compound": compound,
                             "Metadata_Concentration": conc, "Metadata_MOA": moa, "Metadata_Shard": 0,
                             "Location_Center_X": 50.0, "Location_Center_Y": 60.0})
    name = shards.shard_name(0, 1)
    shards.write_shard(out / name, records)
    shards.write_cells_table(out, pd.DataFrame(rows))
    shards.write_dataset_info(out, {
        "crop_size": crop, "channels": shards.CHANNELS, "n_cells": len(rows), "shards": [name],
        "normalization": {"method": "percentile", "percentiles": [0.1, 99.9], "per_plate": {}},
        "source": "test", "layout": "test", "format_version": shards.FORMAT_VERSION})
    return out


def export_tiny_encoder(base, crop=CROP, name="tiny"):
    import keras

    from cytogan_tf.export import export_models

    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((crop, crop, 3)), keras.layers.Conv2D(4, 3, strides=2),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(6)])
    generator = keras.Sequential([keras.Input((8,)), keras.layers.Dense(crop * crop * 3, activation="tanh"),
                                  keras.layers.Reshape((crop, crop, 3))])
    paths = export_models(generator, encoder, {"arch": "test", "image_size": crop, "latent_dim": 8,
                                               "step": 0, "normalization": {"method": "percentile",
                                                                            "percentiles": [0.1, 99.9]}},
                          name, base_dir=base)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    data = write_tiny_shards(root / "shards")
    paths = export_tiny_encoder(root / "exported")
    return root, data, paths


def run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_profile_writes_documented_tables(setup):
    root, data, paths = setup
    out = root / "prof_enc"
    res = run(["profile", "--encoder", str(paths["encoder"]), "--data", str(data), "--out", str(out),
               "--normalize", "dmso", "--batch-size", "7", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "profiled 64 cells" in res.output
    for stem in ("cells", "wells_mean", "wells_median", "treatments_mean", "treatments_median"):
        for ext in ("parquet", "csv"):
            assert (out / f"{stem}.{ext}").is_file()
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == 64 and [f"tiny_{i}" for i in range(6)] == [c for c in cells if c.startswith("tiny_")]
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration",
            "Metadata_MOA", "Metadata_Batch", "Metadata_CellId"} <= set(cells.columns)
    # every cell embedded with the right cell id: a cell's MOA matches the table's
    assert (cells.groupby("Metadata_Compound")["Metadata_MOA"].nunique() == 1).all()
    wells = pd.read_csv(out / "wells_mean.csv")
    assert len(wells) == 2 * 8 and (wells["Metadata_Count_Cells"] == 4).all()
    treatments = pd.read_parquet(out / "treatments_mean.parquet")
    assert len(treatments) == 13 and "DMSO" in set(treatments["Metadata_MOA"])
    assert set(treatments.loc[treatments.Metadata_Compound == "A", "Metadata_Batch"]) == {"Week1"}
    assert set(treatments.loc[treatments.Metadata_Compound == "DMSO", "Metadata_Batch"]) == {"Week1|Week2"}
    info = json.loads((out / "profile.json").read_text())
    assert info["model"] == "tiny" and info["normalize"] == "dmso" and info["cells_per_s"] > 0

    # embeddings equal what the SavedModel gives for the same crops (uint8 / 255)
    import tensorflow as tf

    fn = tf.saved_model.load(str(paths["encoder"])).signatures["serving_default"]
    batch = next(iter(__import__("cytogan_tf.data.pipeline", fromlist=["x"]).make_dataset(
        data, 5, with_metadata=True, scale="unit")))
    expected = fn(images=batch["image"])["embeddings"].numpy()
    raw = pd.read_parquet(out.parent / "prof_enc" / "cells.parquet")  # dmso-normalised only at well level
    got = raw.set_index("Metadata_CellId").loc[batch["cell_id"].numpy(), [f"tiny_{i}" for i in range(6)]]
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-4, atol=1e-5)

    ev = run(["evaluate", str(out), "--no-such-flag"])
    assert ev.exit_code != 0
    ev = run(["evaluate", str(out), "--out", str(root / "eval")])
    assert ev.exit_code == 0, ev.output
    assert "NSC" in ev.output and "chance" in ev.output
    for name in ("metrics.json", "moa_predictions.csv", "map_per_moa.csv", "confusion_nsc.png",
                 "embedding_pca.png"):
        assert (root / "eval" / name).is_file(), name
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["n_treatments"] == 12 and 0 <= metrics["nsc"]["accuracy"] <= 1
    # every MOA has one compound per week, so every treatment has an other-batch match
    assert metrics["nscb"]["n_queries"] == 12 and metrics["nscb"]["moas_dropped"] == []
    preds = pd.read_csv(root / "eval" / "moa_predictions.csv")
    assert set(preds["Mode"]) == {"nsc", "nscb"} and (preds["Metadata_Compound"] != preds["Neighbor_Compound"]).all()


def test_handcrafted_profiles_separate_moas(setup):
    root, data, _ = setup
    out = root / "prof_hand"
    res = run(["profile", "--features", "handcrafted", "--data", str(data), "--out", str(out),
               "--normalize", "tvn", "--tvn-scope", "global", "--no-progress", "--evaluate",
               "--workers", "2", "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    cells = pd.read_parquet(out / "cells.parquet")
    assert "Nuclei_AreaShape_Area" in cells.columns and "Cells_Texture_Contrast_DNA_1" in cells.columns
    treatments = pd.read_parquet(out / "treatments_mean.parquet")
    assert "Nuclei_AreaShape_Area" in treatments.columns  # TVN keeps the feature names (ZCA)
    metrics = json.loads((out / "metrics.json").read_text())
    # MOAs differ by channel brightness, which the hand-made features measure directly
    assert metrics["nsc"]["accuracy"] > metrics["nsc"]["chance_prior"]

    # comparing two long profile paths prints each in full
    long_dir = root / ("a-rather-long-folder-name-for-profiles-" * 2) / "handmade"
    import shutil
    shutil.copytree(out, long_dir)
    both = run(["evaluate", str(out), str(long_dir), "--out", str(root / "eval2")])
    assert both.exit_code == 0, both.output
    table = both.output.split("chance(NSC)")[-1]
    assert str(long_dir) in table and str(out) in table


def test_clear_errors(setup, tmp_path):
    root, data, paths = setup
    res = CliRunner().invoke(cli, ["profile", "--encoder", str(tmp_path / "nope"), "--data", str(data),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Error:" in res.output and "nope" in res.output

    big = write_tiny_shards(tmp_path / "big", crop=24, cells_per_well=1)
    res = CliRunner().invoke(cli, ["profile", "--encoder", str(paths["encoder"]), "--data", str(big),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "24" in res.output and "16" in res.output and "mismatch" in res.output

    empty = tmp_path / "empty"
    empty.mkdir()
    shards.write_dataset_info(empty, {"crop_size": CROP, "channels": shards.CHANNELS, "n_cells": 0,
                                      "shards": [], "normalization": {}, "source": "x", "layout": "x",
                                      "format_version": shards.FORMAT_VERSION})
    res = CliRunner().invoke(cli, ["profile", "--features", "handcrafted", "--data", str(empty),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "empty" in res.output

    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "missing" in res.output


def test_sample_quality_real_vs_generated(setup, tmp_path):
    root, data, paths = setup
    res = run(["evaluate", "--generator", str(paths["generator"]), "--data", str(data),
               "--encoder", str(paths["encoder"]), "--n-samples", "28", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "sample_quality.json").read_text())
    # an untrained generator is far from real cells; the real-vs-real split is the floor
    for space in ("handcrafted", "encoder"):
        assert q[space]["fd_real_fake"] > q[space]["fd_real_real"]
