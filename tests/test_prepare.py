"""Synthetic plates -> prepare -> shards: counts, centring, metadata, determinism, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cytogan_tf.data import pipeline, shards
from cytogan_tf.data.prepare import PrepareOptions, prepare
from cytogan_tf.data.segment import SegmentParams
from cytogan_tf.data.synthetic import load_preset, simulate_plates
from cytogan_tf.errors import DataError

CROP = 32
FLY = Path(__file__).parent / "data" / "examplefly"


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    # The tiny preset at 128x128 so that most cells lie a crop's half-width from the border.
    settings = dataclasses.replace(load_preset("tiny"), image_size=(128, 128), cells_per_image=6)
    out = tmp_path_factory.mktemp("synth") / "plates"
    simulate_plates(out, settings, progress=False)
    return out


# Nuclei of the tiny preset are ~8 px across, a third of BBBC021's: the defaults must
# measure that and follow it, with no size setting given.
TINY_SEGMENT = SegmentParams()


def _opts(**kw):
    base = dict(crop_size=CROP, shards_count=4, progress=False, segment=TINY_SEGMENT)
    base.update(kw)
    return PrepareOptions(**base)


@pytest.fixture(scope="module")
def prepared(plates, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "shards"
    result = prepare(plates, out, options=_opts())
    return out, result


def _inside(truth):
    """Ground-truth cells whose crop (centred on the rounded centre) fits in the image."""
    half = CROP // 2
    x, y = np.rint(truth.Location_Center_X), np.rint(truth.Location_Center_Y)
    return truth[x.between(half, 128 - half) & y.between(half, 128 - half)]


def _dir_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_cell_count_matches_ground_truth(plates, prepared):
    out, result = prepared
    truth = pd.read_csv(plates / "synth_cells.csv")
    inside = _inside(truth)
    assert result.complete and result.n_cells == pipeline.count_cells(out)
    assert abs(result.n_cells - len(inside)) <= 0.15 * len(inside)
    assert result.n_image_sets == truth.ImageNumber.nunique()


def test_crops_centred_on_true_nuclei_and_metadata_joined(plates, prepared):
    out, _ = prepared
    cells = shards.read_cells_table(out)
    truth = pd.read_csv(plates / "synth_cells.csv")
    dists = []
    for row in cells.itertuples():
        t = truth[truth.ImageNumber == row.Metadata_ImageNumber]
        d = np.hypot(t.Location_Center_X - row.Location_Center_X,
                     t.Location_Center_Y - row.Location_Center_Y)
        nearest = t.iloc[int(np.argmin(d.values))]
        dists.append(d.min())
        assert nearest.Metadata_Compound == row.Metadata_Compound
        assert nearest.Metadata_MOA == row.Metadata_MOA
        assert nearest.Metadata_Plate == row.Metadata_Plate and nearest.Metadata_Well == row.Metadata_Well
    assert np.median(dists) < 3.0 and np.mean(np.array(dists) < 5) > 0.9

    # The DNA channel's intensity centroid sits at the crop centre.
    ds = pipeline.make_dataset(out, 64, with_metadata=True, scale="uint8")
    offsets = []
    for batch in ds:
        dna = batch["image"].numpy()[..., 0].astype(float)
        yy, xx = np.mgrid[:CROP, :CROP]
        mass = dna.sum(axis=(1, 2))
        cy = (dna * yy).sum(axis=(1, 2)) / mass
        cx = (dna * xx).sum(axis=(1, 2)) / mass
        offsets.extend(np.hypot(cy - CROP / 2, cx - CROP / 2))
        # records carry the same metadata as the cell table rows they point to
        ids = batch["cell_id"].numpy()
        rows = cells.set_index("Metadata_CellId").loc[ids]
        assert [m.decode() for m in batch["compound"].numpy()] == rows.Metadata_Compound.tolist()
        assert [m.decode() for m in batch["plate"].numpy()] == rows.Metadata_Plate.tolist()
        np.testing.assert_allclose(batch["center_x"].numpy(), rows.Location_Center_X, atol=1e-3)
    assert np.median(offsets) < 2.5
    assert cells.Metadata_CellId.tolist() == list(range(len(cells)))


def test_dataset_json_and_masking(prepared, plates, tmp_path):
    out, _ = prepared
    info = shards.read_dataset_info(out)
    assert info["crop_size"] == CROP and info["channels"] == ["DNA", "Actin", "Tubulin"]
    norm = info["normalization"]
    assert norm["method"] == "percentile" and norm["percentiles"] == [0.1, 99.9]
    plates_seen = set(shards.read_cells_table(out).Metadata_Plate)
    assert set(norm["per_plate"]) == plates_seen and len(plates_seen) == 2
    for ranges in norm["per_plate"].values():
        assert all(0 <= lo < hi <= 65535 for lo, hi in ranges.values())
    assert info["skipped"] == [] and not (out / ".parts").exists()
    masked = next(iter(pipeline.make_dataset(out, 32, with_metadata=True, scale="uint8")))["image"].numpy()
    assert (masked[:, 0, 0, :] == 0).mean() > 0.8  # corners lie outside the cell

    unmasked_dir = tmp_path / "nomask"
    prepare(plates, unmasked_dir, options=_opts(mask=False, limit=6))
    raw = next(iter(pipeline.make_dataset(unmasked_dir, 8, with_metadata=True, scale="uint8")))
    assert (raw["image"].numpy() == 0).mean() < (masked == 0).mean()


def test_same_output_for_any_worker_count(plates, prepared, tmp_path):
    out, _ = prepared
    prepare(plates, tmp_path / "w2", options=_opts(workers=2))
    assert _dir_bytes(tmp_path / "w2") == _dir_bytes(out)


def test_resume_after_partial_runs_gives_identical_bytes(plates, prepared, tmp_path):
    out, _ = prepared
    target = tmp_path / "resumed"
    # A cluster job that did half the parts: no dataset yet.
    half = prepare(plates, target, options=_opts(), shard=(0, 2))
    assert not half.complete and not (target / "dataset.json").exists()
    parts = target / ".parts"
    assert (parts / "state.json").is_file() and (parts / "part-00002.tfrecord").is_file()
    # A kill mid-write: a temp file left behind and a part missing its records file.
    (parts / ".part-00001.tfrecord.abc.tmp.tfrecord").write_bytes(b"partial")
    (parts / "part-00002.tfrecord").unlink()
    with pytest.raises(DataError, match="not done"):
        prepare(plates, target, options=_opts(), merge_only=True)
    done = prepare(plates, target, options=_opts())
    assert done.complete
    assert _dir_bytes(target) == _dir_bytes(out)
    # A finished dataset is recognised, and a different setup is refused.
    assert prepare(plates, target, options=_opts()).n_cells == done.n_cells
    with pytest.raises(DataError, match="other inputs or options"):
        prepare(plates, target, options=_opts(crop_size=48))


def test_cluster_jobs_merge_when_last_part_lands(plates, prepared, tmp_path):
    out, _ = prepared
    target = tmp_path / "cluster"
    assert not prepare(plates, target, options=_opts(), shard=(1, 2)).complete
    last = prepare(plates, target, options=_opts(), shard=(0, 2))
    assert last.complete and _dir_bytes(target) == _dir_bytes(out)


def test_cellprofiler_objects_table(plates, tmp_path):
    truth = pd.read_csv(plates / "synth_cells.csv")
    objects = truth.rename(columns={"Location_Center_X": "Nuclei_Location_Center_X",
                                    "Location_Center_Y": "Nuclei_Location_Center_Y"})
    objects[["ImageNumber", "Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]].to_csv(
        tmp_path / "objects.csv", index=False)
    res = prepare(plates, tmp_path / "obj", options=_opts(objects=str(tmp_path / "objects.csv")))
    cells = shards.read_cells_table(tmp_path / "obj")
    inside = _inside(truth)
    assert res.n_cells == len(inside)  # exactly the given objects, minus border crops
    merged = cells.merge(truth, left_on=["Metadata_ImageNumber", "Location_Center_X"],
                         right_on=["ImageNumber", "Location_Center_X"])
    assert len(merged) == len(cells)
    # the project's own ground truth (plain Location_Center_X/Y) reads as it is
    own = prepare(plates, tmp_path / "own", options=_opts(objects=str(plates / "synth_cells.csv")))
    assert own.n_cells == res.n_cells
    bad = tmp_path / "bad_objects.csv"
    bad.write_text("ImageNumber,X,Y\n1,2,3\n")
    with pytest.raises(DataError, match="bad_objects.csv"):
        prepare(plates, tmp_path / "obj2", options=_opts(objects=str(bad)))


def test_examplefly_layout_8bit(tmp_path):
    res = prepare(FLY, tmp_path / "fly", layout="examplefly", options=_opts(shards_count=2))
    assert res.n_image_sets == 3 and res.n_cells > 100
    batch = next(iter(pipeline.make_dataset(tmp_path / "fly", 16, seed=0)))
    assert batch.shape == (16, CROP, CROP, 3)


def test_cli_prepare_prints_summary_and_errors(plates, tmp_path):
    from cytogan_tf.cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["prepare", str(plates), "--out", str(tmp_path / "c"), "--crop-size",
                              str(CROP), "--shards-count", "2", "--limit", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "image sets: 4" in res.output and "shards:     2" in res.output
    info = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert info["n_image_sets"] == 4 and len(info["shards"]) == 2
    res = runner.invoke(cli, ["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "Error:" in res.output and "nowhere" in res.output


def test_crops_cut_by_the_border_say_so_and_suggest_a_size_that_fits(plates, tmp_path):
    import re

    out = tmp_path / "big"
    with pytest.raises(DataError, match=r"found \d+ cells .* cut by the image border; "
                                        r"--crop-size \d+ keeps") as err:
        prepare(plates, out, options=_opts(crop_size=128, limit=6))
    size = int(re.search(r"--crop-size (\d+)", str(err.value)).group(1))
    assert size in shards.CROP_SIZES and size < 128
    # the failed run wrote nothing, so it does not block a retry with other options
    assert not (out / ".parts").exists() and not (out / "dataset.json").exists()
    result = prepare(plates, out, options=_opts(crop_size=size, limit=6))
    assert result.complete and result.n_cells > 0


@pytest.mark.parametrize("size", [40, 16, 144])
def test_crop_sizes_the_networks_cannot_take_are_refused_up_front(plates, tmp_path, size):
    with pytest.raises(DataError, match=f"crop size {size} must be a multiple of 16 from 32 to 128"):
        prepare(plates, tmp_path / "x", options=_opts(crop_size=size))
    assert not (tmp_path / "x").exists()


def test_a_run_that_failed_before_any_part_does_not_block_other_options(plates, tmp_path):
    out = tmp_path / "s"
    parts = out / ".parts"
    parts.mkdir(parents=True)
    (parts / "state.json").write_text(json.dumps({"fingerprint": "from-an-earlier-try"}))
    assert prepare(plates, out, options=_opts(limit=4)).complete


def test_out_equal_to_the_input_is_refused_everywhere(plates, prepared, tmp_path):
    from cytogan_tf.errors import ConfigError
    from cytogan_tf.profiling import profile_shards
    from cytogan_tf.training import train

    with pytest.raises(DataError, match="--out is the source directory"):
        prepare(plates, plates, options=_opts())
    out, _ = prepared
    before = (out / "cells.parquet").read_bytes()
    with pytest.raises(DataError, match="--out is the shards directory"):
        profile_shards(out, out, features="handcrafted", progress=False)
    with pytest.raises(ConfigError, match="--out is the shards directory"):
        train({"model": {"arch": "lsgan"}}, out, out, steps=1, verbose=0)
    assert (out / "cells.parquet").read_bytes() == before and not (out / "run.json").exists()


def test_a_layout_toml_brings_its_own_prepare_section(tmp_path):
    from cytogan_tf.data.prepare import prepare_section

    layout = tmp_path / "my_layout.toml"
    text = (Path(__file__).parents[1] / "configs" / "examplefly.toml").read_text()
    layout.write_text(text)
    section = prepare_section(None, str(layout))
    assert section["crop_size"] == 48  # from the TOML, not the 64 default
