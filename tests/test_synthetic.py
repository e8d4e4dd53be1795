"""The plate simulator: BBBC021 layout, experiment design, determinism, cells where it says."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner

from cytogan_tf.cli.main import cli
from cytogan_tf.data.bbbc021 import IMAGE_COLUMNS, load_image_sets, read_image_set
from cytogan_tf.data.synthetic import load_preset, simulate_plates
from cytogan_tf.errors import DataError

TINY = load_preset("tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "plates"
    summary = simulate_plates(out, TINY, progress=False)
    return out, summary


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    simulate_plates(again, TINY, progress=False)
    assert _digests(again) == _digests(out)
    other = tmp_path / "other"
    simulate_plates(other, dataclasses.replace(TINY, seed=1), progress=False)
    a, b = _digests(out), _digests(other)
    assert a["BBBC021_v1_image.csv"] != b["BBBC021_v1_image.csv"]
    assert set(a) != set(b)  # file names carry seed-derived UUIDs


def test_real_layout_and_csvs(tiny):
    out, summary = tiny
    raw = (out / "BBBC021_v1_image.csv").read_bytes()
    assert b"\r" in raw and b"\n" not in raw
    assert raw.split(b"\r")[0].decode().split(",") == IMAGE_COLUMNS
    assert (out / "BBBC021_v1_moa.csv").read_bytes().split(b"\r")[0] == b"compound,concentration,moa"
    tifs = sorted(out.rglob("*.tif"))
    assert len(tifs) == 3 * summary["images"]
    name = tifs[0].name
    assert tifs[0].parent.parent.name.startswith("Week") and tifs[0].parent.name.startswith("Week")
    assert "_s1_w" in name and len(name.split("_w")[1]) == len("1") + 36 + len(".tif")
    image = tifffile.imread(tifs[0])
    assert image.dtype == np.uint16 and image.shape == TINY.image_size


def test_loads_with_expected_design(tiny):
    out, summary = tiny
    df = load_image_sets(out, layout="synth")
    assert len(df) == summary["images"]
    assert df["Metadata_Plate"].nunique() == TINY.plates
    treat = df[df["Metadata_Control"] == "treatment"]
    assert treat["Metadata_MOA"].nunique() == TINY.moas >= 6
    assert "" not in set(df["Metadata_MOA"])
    per_moa = treat.groupby("Metadata_MOA")
    assert (per_moa["Metadata_Compound"].nunique() >= 2).all()
    assert (treat.groupby("Metadata_Compound")["Metadata_Concentration"].nunique() >= 2).all()
    # Every compound in one week, every MOA across two or more weeks (NSC and NSCB both work).
    week = treat["Metadata_Plate"].str.split("_").str[0]
    assert (week.groupby(treat["Metadata_Compound"]).nunique() == 1).all()
    assert (week.groupby(treat["Metadata_MOA"]).nunique() >= 2).all()
    # Controls on every plate; taxol 0.3 controls are told apart from the taxol treatment.
    for kind in ("negative", "positive"):
        assert set(df.loc[df["Metadata_Control"] == kind, "Metadata_Plate"]) == set(df["Metadata_Plate"])
    taxol = treat[treat["Metadata_Compound"] == "taxol"]
    assert 0.3 in set(taxol["Metadata_Concentration"])
    assert set(taxol["Metadata_MOA"]) == {"Microtubule stabilizers"}


def test_ground_truth_cells_sit_on_nuclei(tiny):
    out, summary = tiny
    cells = pd.read_csv(out / "synth_cells.csv")
    assert len(cells) == summary["cells"]
    h, w = TINY.image_size
    assert cells["Location_Center_X"].between(0, w).all() and cells["Location_Center_Y"].between(0, h).all()
    df = load_image_sets(out, layout="synth").set_index("Metadata_ImageNumber")
    assert set(cells["ImageNumber"]) <= set(df.index)
    ratios = []
    for number, group in list(cells.groupby("ImageNumber"))[:12]:
        dna = read_image_set(df.loc[number])[..., 0]
        ys = group["Location_Center_Y"].astype(int).clip(0, h - 1)
        xs = group["Location_Center_X"].astype(int).clip(0, w - 1)
        ratios.append(np.median(dna[ys, xs]) / np.median(dna))
    assert np.median(ratios) > 3  # DNA is bright where the ground truth puts nuclei


def test_moa_changes_morphology(tmp_path):
    """Measured from pixels: DNA-damage nuclei are larger than DMSO ones, stabilisers brighten tubulin."""
    s = dataclasses.replace(TINY, image_size=(96, 96), cells_per_image=5, wells_per_treatment=2,
                            dmso_wells_per_plate=3, seed=5)
    simulate_plates(tmp_path / "p", s, progress=False)
    df = load_image_sets(tmp_path / "p", layout="synth")
    n_cells = pd.read_csv(tmp_path / "p" / "synth_cells.csv").groupby("ImageNumber").size()

    def stats(rows):
        area = tub = n = 0.0
        for _, row in rows.iterrows():
            img = read_image_set(row)
            bg = np.percentile(img, 10, axis=(0, 1))
            dna = img[..., 0] - bg[0]
            nuclei = dna > 0.25 * np.percentile(dna, 99.9)
            cyto = (img[..., 2] - bg[2]) > 4 * np.std(img[:8, :8, 2]) + 50
            area += nuclei.sum()
            tub += (img[..., 2] - bg[2])[cyto].sum()
            n += n_cells.get(row["Metadata_ImageNumber"], 0)
        return area / n, tub / n

    top = df.groupby("Metadata_Compound")["Metadata_Concentration"].transform("max") == df["Metadata_Concentration"]
    dmso_area, dmso_tub = stats(df[df["Metadata_Compound"] == "DMSO"])
    damage_area, _ = stats(df[(df["Metadata_MOA"] == "DNA damage") & top])
    _, stabil_tub = stats(df[(df["Metadata_MOA"] == "Microtubule stabilizers") & top])
    assert damage_area > 1.3 * dmso_area
    assert stabil_tub > 1.2 * dmso_tub


def test_rejects_bad_settings_and_existing_output(tmp_path):
    with pytest.raises(DataError, match="moas"):
        simulate_plates(tmp_path / "x", dataclasses.replace(TINY, moas=3), progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        simulate_plates(tmp_path / "full", TINY, progress=False)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["synth", "--out", str(out), "--preset", "tiny", "--seed", "3",
                                 "--plates", "3", "--image-size", "48x64", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 plates" in result.output and str(out) in result.output
    df = load_image_sets(out, layout="synth")
    assert df["Metadata_Plate"].nunique() == 3
    assert tifffile.imread(df.loc[0, "PathName_DNA"]).shape == (48, 64)
    again = runner.invoke(cli, ["synth", "--out", str(out), "--preset", "tiny", "--quiet"])
    assert again.exit_code == 1 and "Error:" in again.output
    bad = runner.invoke(cli, ["synth", "--out", str(tmp_path / "b"), "--image-size", "big"])
    assert bad.exit_code == 2
