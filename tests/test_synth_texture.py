"""The texture phenotype set: MOAs change texture at matched size and stain intensity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from cytogan_tf.data.synth_texture import match_mean
from cytogan_tf.data.synthetic import (PHENOTYPE_SETS, Treatment, _cell_params, _render_cell,
                                       load_preset, simulate_plates)
from cytogan_tf.errors import DataError


def _cells(moa, n=80, seed=0):
    """Per-cell pixel statistics of `n` isolated cells drawn at full strength."""
    rng = np.random.default_rng(seed)
    t = Treatment("x", 1.0, moa, 0, 1.0, ()) if moa else None
    params = _cell_params(rng, t, n, None, PHENOTYPE_SETS["texture"]["phenotypes"])
    rows = []
    for p in params:
        p["mitotic_now"] = False  # mitosis is MOA-independent here; keep the comparison clean
        canvas = np.zeros((3, 96, 96), np.float32)
        fields = [ndimage.gaussian_filter(rng.standard_normal((96, 96)).astype(np.float32), sg) * k
                  for sg, k in ((1.0, 2.0), (1.5, 2.5))]
        _render_cell(canvas, fields, rng, p, 48.0, 48.0, 18.0, matched=True)
        cell = canvas[1] > 0.05
        nucleus = canvas[0] > 0.3
        tub = canvas[2][cell]
        dna = canvas[0][nucleus]
        rows.append({"cell_area": cell.sum(), "nucleus_area": nucleus.sum(), "tub_mean": tub.mean(),
                     "tub_cv": tub.std() / tub.mean(), "dna_mean": dna.mean(), "dna_cv": dna.std() / dna.mean()})
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


@pytest.fixture(scope="module")
def dmso():
    return _cells(None)


@pytest.mark.parametrize("moa,texture", [("Microtubule stabilizers", "tub_cv"), ("DNA damage", "dna_cv"),
                                         ("DNA replication", "dna_cv")])
def test_moa_changes_texture_but_not_size_or_mean_intensity(dmso, moa, texture):
    treated = _cells(moa)
    for key in ("cell_area", "nucleus_area", "tub_mean", "dna_mean"):
        assert treated[key] == pytest.approx(dmso[key], rel=0.12), key
    change = treated[texture] / dmso[texture]
    assert change > 1.1 or change < 0.9, (texture, treated[texture], dmso[texture])


def test_match_mean_sets_the_weighted_mean():
    rng = np.random.default_rng(0)
    channel, mask = rng.uniform(0, 2, (20, 20)), rng.uniform(0, 1, (20, 20))
    out = match_mean(channel, mask, 0.7)
    assert float((out * mask).sum() / mask.sum()) == pytest.approx(0.7)
    assert match_mean(channel, np.zeros_like(mask), 0.7) is channel  # empty mask: unchanged


def test_texture_preset_and_bad_phenotype_set(tmp_path):
    assert load_preset("texture").phenotypes == "texture"
    assert load_preset("demo").phenotypes == "demo"
    tiny = dataclasses.replace(load_preset("tiny"), phenotypes="texture")
    summary = simulate_plates(tmp_path / "t", tiny, progress=False)
    assert summary["moas"] == 8 and summary["cells"] > 0
    with pytest.raises(DataError, match="phenotypes"):
        simulate_plates(tmp_path / "bad", dataclasses.replace(tiny, phenotypes="shape"), progress=False)
