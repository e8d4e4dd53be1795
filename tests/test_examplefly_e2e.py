"""Real cells end to end: ExampleFly crops -> prepare -> exported encoder -> profile.

Uses the committed 384x384 crops of CellProfiler's ExampleFly fields (BSD-3, see
tests/data/examplefly/LICENSE.cellprofiler). The encoder is an untrained tiny model
exported through the real export path: this checks the data and serving contracts, not
what a trained encoder has learned.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

FLY = Path(__file__).parent / "data" / "examplefly"


@pytest.fixture(scope="module")
def fly_shards(tmp_path_factory):
    from cytogan_tf.cli.main import cli

    out = tmp_path_factory.mktemp("fly") / "shards"
    result = CliRunner().invoke(cli, ["prepare", str(FLY), "--layout", "examplefly",
                                      "--config", "examplefly", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_prepare_finds_real_cells_in_every_field(fly_shards):
    from cytogan_tf.data.shards import read_dataset_info

    info = read_dataset_info(fly_shards)
    cells = pd.read_parquet(fly_shards / "cells.parquet")
    assert info["crop_size"] == 48
    assert info["channels"] == ["DNA", "Actin", "Tubulin"]
    # three 384x384 fields of densely packed Kc167 cells: dozens of interior cells each
    per_field = cells.groupby("Metadata_Site").size()
    assert len(per_field) == 3
    assert (per_field >= 20).all(), per_field.to_dict()
    assert len(cells) == info["n_cells"]


def export_untrained_encoder(base_dir, arch, image_size, encoder_dim):
    """An exported encoder of a freshly built tiny GAN (float32), through the real export."""
    import keras

    from cytogan_tf.export import export_models
    from cytogan_tf.models import build_gan

    keras.mixed_precision.set_global_policy("float32")
    gan = build_gan({"arch": arch, "image_size": image_size, "latent_dim": 8,
                     "encoder_dim": encoder_dim, "widths": [16, 8, 8, 4]})
    exp = export_models(gan.generator, gan.encoder, {"arch": arch, "step": 0}, arch,
                        base_dir=base_dir)
    return exp["encoder"]


def profile_cli(encoder, data, out):
    from cytogan_tf.cli.main import cli

    return CliRunner().invoke(cli, ["profile", "--encoder", str(encoder), "--data", str(data),
                                    "--out", str(out), "--no-progress"])


def test_exported_encoder_profiles_real_cells(fly_shards, tmp_path):
    encoder = export_untrained_encoder(tmp_path / "exported", "lsgan", 48, 6)
    out = tmp_path / "profiles"
    result = profile_cli(encoder, fly_shards, out)
    assert result.exit_code == 0, result.output
    cells = pd.read_parquet(out / "cells.parquet")
    n_cells = len(pd.read_parquet(fly_shards / "cells.parquet"))
    feats = [c for c in cells.columns if not c.startswith("Metadata_")]
    assert len(cells) == n_cells
    assert len(feats) == 6 and all(np.isfinite(cells[feats].to_numpy()).ravel())
    # embeddings differ from cell to cell: real crops went through the encoder
    assert cells[feats].std().min() > 0
    wells = pd.read_csv(out / "wells_mean.csv")
    assert {"Metadata_Plate", "Metadata_Well"} <= set(wells.columns)


def test_encoder_with_the_wrong_crop_size_is_refused(fly_shards, tmp_path):
    encoder = export_untrained_encoder(tmp_path / "exported", "dcgan", 32, 4)
    result = profile_cli(encoder, fly_shards, tmp_path / "p")
    assert result.exit_code == 1
    assert "Error:" in result.output and "32" in result.output and "48" in result.output
    assert "Traceback" not in result.output


def test_profile_prepares_raw_plates_with_the_layouts_settings(fly_shards, tmp_path):
    """Raw images in, profiles out: prepared on the fly with the layout's [prepare]
    section and the encoder's crop size, giving the same cells as `cytogan prepare`."""
    from cytogan_tf.cli.main import cli

    encoder = export_untrained_encoder(tmp_path / "exported", "lsgan", 48, 6)
    out = tmp_path / "profiles"
    result = CliRunner().invoke(cli, ["profile", "--encoder", str(encoder), "--data", str(FLY),
                                      "--layout", "examplefly", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "shards" / "dataset.json").is_file()
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == len(pd.read_parquet(fly_shards / "cells.parquet"))
