"""Segmentation that adapts to the images: the nucleus size estimate, the settings that
follow it, dim and large nuclei, empty fields, and the --nucleus-diameter override."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from cytogan_tf.data.nucleus_scale import estimate_diameter, estimate_from_images
from cytogan_tf.data.seg_metrics import match_objects
from cytogan_tf.data.segment import (SegmentParams, choose_declump, resolve_params, segment_image,
                                     segment_nuclei, work_scale)
from cytogan_tf.data.synth_nuclei import PRESETS, NucleusField, render_field
from cytogan_tf.errors import ConfigError


def _true_diameter(labels):
    areas = np.bincount(labels.ravel())[1:]
    return float(np.median(np.sqrt(4 * areas[areas > 0] / np.pi)))


@pytest.mark.parametrize("diameter, shape", [(12.0, (256, 256)), (60.0, (640, 640))])
def test_diameter_estimate_within_20_percent_at_very_different_sizes(diameter, shape):
    field = NucleusField(diameter=diameter, shape=shape, nucleoli=diameter > 40, touching=0.2)
    image, labels = render_field(field, seed=3)
    estimate = estimate_diameter(image)
    assert estimate == pytest.approx(_true_diameter(labels), rel=0.2)


def test_pooled_estimate_uses_images_with_few_nuclei_each():
    # Three 64x64 fields with two or three nuclei each: too few alone, enough together.
    images = []
    for seed in range(3):
        img, labels = render_field(NucleusField(diameter=10.0, shape=(64, 64), density=0.06), seed)
        images.append(np.stack([img] * 3, -1))
    truth = _true_diameter(render_field(NucleusField(diameter=10.0, shape=(64, 64), density=0.06), 0)[1])
    assert estimate_from_images(images) == pytest.approx(truth, rel=0.25)


def test_work_scale_is_fractional_below_two_work_diameters_and_whole_above():
    assert work_scale(10.0) == 1 and work_scale(12.0) == 1
    assert work_scale(15.0) == pytest.approx(1.5)
    assert work_scale(24.0) == 2.0 and work_scale(39.0) == 3.0 and work_scale(60.0) == 6.0


@pytest.mark.parametrize("shape", [(257, 301), (256, 256)])
def test_nuclei_segmented_at_a_fractional_scale_match_the_full_scale_result(shape):
    # 15 px nuclei are segmented at 1/1.5 of the size; the labels come back at the
    # image's own (odd) shape and find the same nuclei as segmenting at full scale.
    image, labels = render_field(NucleusField(diameter=15.0, shape=shape, touching=0.2), seed=4)
    params = SegmentParams(nucleus_diameter=15.0)
    reduced = segment_nuclei(image, params)
    assert reduced.shape == image.shape and reduced.dtype == np.int32
    assert match_objects(labels, reduced)["f1"] >= 0.95
    full = segment_nuclei(image, SegmentParams(nucleus_diameter=12.0, **{
        k: getattr(params.resolved(), k) for k in ("min_nucleus_area", "max_nucleus_area")}))
    assert abs(int(reduced.max()) - int(full.max())) <= max(1, int(0.05 * full.max()))


@pytest.mark.parametrize("preset", ["large", "dim"])
def test_defaults_segment_large_textured_and_dim_nuclei(preset):
    # The two failures of fixed BBBC021 sizes and one global Otsu level: 60 px nuclei with
    # nucleoli (thrown away or split) and a 12x brightness range (dim ones lost).
    image, labels = render_field(PRESETS[preset], seed=1)
    scores = match_objects(labels, segment_nuclei(image))
    assert scores["f1"] >= 0.9
    assert abs(scores["count_error"]) <= 0.1


def test_touching_nuclei_of_different_brightness_are_split_by_intensity():
    image, labels = render_field(PRESETS["clumped"], seed=0)
    shape_only = match_objects(labels, segment_nuclei(image, SegmentParams(declump="shape")))
    combined = match_objects(labels, segment_nuclei(image, SegmentParams(declump="combined")))
    assert combined["f1"] > shape_only["f1"]
    assert combined["f1"] >= 0.85


@pytest.mark.parametrize("preset,seed", [("bbbc021", 0), ("bbbc021", 2), ("large", 1)])
def test_auto_declumping_uses_intensity_seams_only_where_lone_nuclei_have_one_peak(preset, seed):
    # Equally bright touching nuclei part best along intensity seams; nucleolar 60 px
    # nuclei would be cut along their nucleoli, so there "auto" keeps distance x intensity.
    image, labels = render_field(PRESETS[preset], seed=seed)
    params = resolve_params(image, None)
    scores = {m: match_objects(labels, segment_nuclei(image, replace(params, declump=m)))["f1"]
              for m in ("auto", "intensity", "combined")}
    want = "intensity" if preset == "bbbc021" else "combined"
    assert scores["auto"] == scores[want], scores
    assert scores["auto"] >= max(scores.values()) - 1e-9 and scores["auto"] >= 0.95, scores


def test_data_set_declumping_choice_pools_its_sample_images():
    smooth = [render_field(PRESETS["bbbc021"], seed=s)[0] for s in (0, 1)]
    spotted = [render_field(PRESETS["large"], seed=s)[0] for s in (0, 1)]
    got = choose_declump(smooth, SegmentParams(nucleus_diameter=22))
    assert got["method"] == "intensity" and got["lone_nuclei"] >= 20 and got["images"] == 2
    assert choose_declump(spotted, SegmentParams(nucleus_diameter=50))["method"] == "combined"
    empty = choose_declump([np.zeros((64, 64))], SegmentParams(nucleus_diameter=10))
    assert empty == {"method": "combined", "lone_nuclei": 0, "multi_peak_share": None, "images": 1}


@pytest.mark.parametrize("image", [
    np.zeros((64, 64)),
    np.full((96, 96), 700, np.uint16),
    (1000 + np.random.default_rng(0).normal(0, 30, (128, 128))).astype(np.uint16),
], ids=["black", "flat", "noise"])
def test_a_field_without_nuclei_gives_zero_cells_not_an_error(image):
    assert estimate_diameter(image) is None
    assert segment_nuclei(image).max() == 0
    assert len(segment_image(np.stack([image] * 3, -1))) == 0


def test_sizes_follow_the_diameter_and_explicit_settings_win():
    small, large = SegmentParams().resolved(12.0), SegmentParams().resolved(60.0)
    assert large.min_nucleus_area == pytest.approx(25 * small.min_nucleus_area, rel=0.1)
    assert large.max_cell_radius == 5 * small.max_cell_radius
    assert large.local_block_size % 2 == 1
    fixed = SegmentParams(min_nucleus_area=15, nucleus_diameter=40).resolved(12.0)
    assert fixed.min_nucleus_area == 15 and fixed.nucleus_diameter == 40
    with pytest.raises(ConfigError, match="declump"):
        SegmentParams.from_config({"declump": "magic"})
    with pytest.raises(ConfigError, match="nucleus_diameter"):
        SegmentParams.from_config({"nucleus_diameter": 0.5})


def test_object_matching_counts_splits_and_misses():
    truth = np.zeros((40, 40), np.int32)
    truth[5:15, 5:15], truth[20:30, 20:30] = 1, 2
    assert match_objects(truth, truth)["f1"] == 1.0
    split = truth.copy()
    split[20:30, 23:26], split[20:30, 26:30] = 3, 4   # cut in three: no piece has IoU 0.5
    m = match_objects(truth, split)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 3, 1)
    uneven = truth.copy()
    uneven[20:30, 27:30] = 3                           # 70 / 30: the large piece still matches
    m = match_objects(truth, uneven)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)
    assert match_objects(truth, np.zeros_like(truth))["f1"] == 0.0


def test_prepare_measures_the_diameter_and_records_it(small_plates, tmp_path):
    from cli.main import cli

    res = CliRunner().invoke(cli, ["prepare", str(small_plates), "--out", str(tmp_path / "a"),
                                   "--crop-size", "32", "--quiet"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "a" / "dataset.json").read_text())
    d = info["nucleus_diameter"]
    assert d["source"] == "estimated" and d["images"] > 0
    assert 5 <= d["value"] <= 12   # the tiny preset draws ~8 px nuclei
    assert info["segmentation"]["nucleus_diameter"] == pytest.approx(d["value"], abs=0.01)
    assert info["segmentation"]["min_nucleus_area"] == max(1, round(0.1 * d["value"] ** 2))
    assert f"nuclei:     {d['value']:.1f} px across (estimated from" in res.output
    chosen = info["declump"]  # "auto" settled once for the data set, and used
    assert chosen["method"] in ("intensity", "combined") and chosen["images"] == d["images"]
    assert info["segmentation"]["declump"] == chosen["method"]
    assert f"declumping: {chosen['method']} (auto:" in res.output


def test_nucleus_diameter_override_is_honoured_and_recorded(small_plates, tmp_path):
    from cli.main import cli

    res = CliRunner().invoke(cli, ["prepare", str(small_plates), "--out", str(tmp_path / "b"),
                                   "--crop-size", "32", "--nucleus-diameter", "9", "--quiet"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert info["nucleus_diameter"] == {"value": 9.0, "source": "given", "images": 0}
    assert info["segmentation"]["min_nucleus_area"] == 8     # 0.1 x 9**2
    assert info["segmentation"]["max_cell_radius"] == 22     # 2.5 x 9, rounded
    assert "px across (from --nucleus-diameter)" in res.output
    assert info["n_cells"] > 0
