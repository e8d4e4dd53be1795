"""Bad input to prepare: every case is a DataError naming the file, or a reported skip;
and a prepare killed mid-way resumes to the same bytes as a clean run."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cytogan_tf.data import shards
from cytogan_tf.data.prepare import PrepareOptions, prepare
from cytogan_tf.data.synthetic import load_preset, simulate_plates
from cytogan_tf.errors import DataError

CROP = 32
SEGMENT = {"min_nucleus_area": 15, "smoothing_sigma": 1.0, "min_nucleus_distance": 3}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    settings = dataclasses.replace(load_preset("tiny"), image_size=(96, 96), cells_per_image=5)
    out = tmp_path_factory.mktemp("synth") / "plates"
    simulate_plates(out, settings, progress=False)
    return out


@pytest.fixture
def plates(pristine, tmp_path):
    dst = tmp_path / "plates"
    shutil.copytree(pristine, dst)
    return dst


def _opts(**kw):
    return PrepareOptions.from_config(dict(SEGMENT, crop_size=CROP, shards_count=2),
                                      progress=False, **kw)


def _image_files(plates: Path, image_number: int) -> dict[str, Path]:
    """DNA/Actin/Tubulin files of one image set, from the BBBC021 image CSV."""
    text = (plates / "BBBC021_v1_image.csv").read_text().replace("\r", "\n")
    from io import StringIO
    df = pd.read_csv(StringIO(text))
    row = df[df.ImageNumber == image_number].iloc[0]
    return {c: plates / row[f"Image_PathName_{s}"] / row[f"Image_FileName_{s}"]
            for c, s in (("DNA", "DAPI"), ("Actin", "Actin"), ("Tubulin", "Tubulin"))}


def test_truncated_tiff_names_file_or_is_skipped(plates, tmp_path):
    dna = _image_files(plates, 3)["DNA"]
    dna.write_bytes(dna.read_bytes()[:300])
    with pytest.raises(DataError, match=dna.name):
        prepare(plates, tmp_path / "a", options=_opts())
    res = prepare(plates, tmp_path / "b", options=_opts(skip_bad=True))
    assert res.complete and res.n_cells > 0
    assert [s["file"] for s in res.skipped] == [str(dna)]
    info = shards.read_dataset_info(tmp_path / "b")
    assert info["skipped"][0]["file"] == str(dna) and "corrupt" in info["skipped"][0]["reason"]
    assert dna.name in res.summary()
    assert 3 not in set(shards.read_cells_table(tmp_path / "b").Metadata_ImageNumber)


def test_wrong_bit_depth_names_file(plates, tmp_path):
    files = _image_files(plates, 5)
    tifffile.imwrite(files["Actin"], np.ones((96, 96), np.uint32))
    with pytest.raises(DataError, match=files["Actin"].name):
        prepare(plates, tmp_path / "a", options=_opts())
    tifffile.imwrite(files["Actin"], np.ones((96, 96), np.uint8))  # 8-bit among 16-bit
    with pytest.raises(DataError, match=rf"{files['Actin'].name}.*bit depth"):
        prepare(plates, tmp_path / "b", options=_opts())


def test_channels_of_different_size_names_file(plates, tmp_path):
    tub = _image_files(plates, 7)["Tubulin"]
    tifffile.imwrite(tub, np.ones((50, 60), np.uint16))
    with pytest.raises(DataError, match=rf"{tub.name}.*size"):
        prepare(plates, tmp_path / "a", options=_opts())


def test_missing_file_in_csv_names_file_or_is_skipped(plates, tmp_path):
    actin = _image_files(plates, 2)["Actin"]
    actin.unlink()
    with pytest.raises(DataError, match=actin.name):
        prepare(plates, tmp_path / "a", options=_opts())
    res = prepare(plates, tmp_path / "b", options=_opts(skip_bad=True))
    assert any(actin.name in s["file"] for s in res.skipped)
    assert res.n_image_sets == 37


def test_zero_cell_image_is_reported_not_an_error(plates, tmp_path):
    dna = _image_files(plates, 4)["DNA"]
    tifffile.imwrite(dna, np.full((96, 96), 300, np.uint16))
    res = prepare(plates, tmp_path / "a", options=_opts())
    assert res.zero_cell_images >= 1 and res.n_cells > 0 and res.skipped == []
    assert 4 not in set(shards.read_cells_table(tmp_path / "a").Metadata_ImageNumber)


def test_saturated_image_skipped_with_warning_naming_file(plates, tmp_path, caplog):
    tub = _image_files(plates, 6)["Tubulin"]
    tifffile.imwrite(tub, np.full((96, 96), 65535, np.uint16))
    with caplog.at_level(logging.WARNING, logger="cytogan_tf.data.prepare"):
        res = prepare(plates, tmp_path / "a", options=_opts())
    assert any(tub.name in r.getMessage() and "saturated" in r.getMessage() for r in caplog.records)
    assert [s["file"] for s in res.skipped] == [str(tub)] and "saturated" in res.skipped[0]["reason"]
    assert 6 not in set(shards.read_cells_table(tmp_path / "a").Metadata_ImageNumber)


def test_empty_plate_set_is_a_clear_error(plates, tmp_path):
    csv = plates / "BBBC021_v1_image.csv"
    header = csv.read_bytes().split(b"\r")[0]
    csv.write_bytes(header + b"\r")
    with pytest.raises(DataError, match="BBBC021_v1_image.csv"):
        prepare(plates, tmp_path / "a", options=_opts())


def test_no_cells_anywhere_is_a_clear_error(plates, tmp_path):
    for path in sorted(plates.rglob("*_w1*.tif")):  # every DNA image blank
        tifffile.imwrite(path, np.full((96, 96), 300, np.uint16))
    with pytest.raises(DataError, match="no cells found"):
        prepare(plates, tmp_path / "a", options=_opts())
    assert not (tmp_path / "a" / "dataset.json").exists()


def test_killed_prepare_resumes_to_identical_bytes(pristine, tmp_path):
    clean = tmp_path / "clean"
    # 12 image sets in 12 shards: enough parts that the kill lands between two of them.
    opts = PrepareOptions.from_config(dict(SEGMENT, crop_size=CROP, shards_count=12),
                                      progress=False, limit=12)
    prepare(pristine, clean, options=opts)

    config = tmp_path / "prep.toml"
    config.write_text("[prepare]\n" + "".join(f"{k} = {v}\n" for k, v in SEGMENT.items())
                      + f"crop_size = {CROP}\nshards_count = 12\n")
    target = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cytogan_tf.cli.main", "prepare", str(pristine), "--out",
           str(target), "--config", str(config), "--limit", "12", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = target / ".parts" / "part-00000.tfrecord"
    deadline = time.time() + 60
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (target / "dataset.json").exists(), "prepare finished before it could be killed"
    assert first.exists()

    # Resume in-process (the CLI and the API build the same options from the config).
    assert prepare(pristine, target, options=opts).complete
    got = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    want = {p.name: p.read_bytes() for p in clean.iterdir() if p.is_file()}
    assert got == want
    assert json.loads((target / "dataset.json").read_text())["n_cells"] > 0


def test_plate_with_only_saturated_images_is_skipped_whole(plates, tmp_path):
    week1 = sorted(plates.glob("Week1/*/*_w2*.tif"))
    for path in week1:
        tifffile.imwrite(path, np.full((96, 96), 65535, np.uint16))
    res = prepare(plates, tmp_path / "a", options=_opts())
    assert len(res.skipped) == len(week1) and res.n_cells > 0
    plates_left = set(shards.read_cells_table(tmp_path / "a").Metadata_Plate)
    assert plates_left and not any(p.startswith("Week1") for p in plates_left)
    assert list(shards.read_dataset_info(tmp_path / "a")["normalization"]["per_plate"]) == sorted(plates_left)


def test_every_bad_tiff_is_named_in_one_pass(plates, tmp_path):
    src = plates  # a private copy
    files = [_image_files(src, n)["DNA"] for n in (2, 7, 11)]
    for f in files:
        f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError) as err:
        prepare(src, tmp_path / "out", options=_opts())
    message = str(err.value)
    assert all(f.name in message for f in files), message
    assert "--skip-bad" in message and "\n" not in message
