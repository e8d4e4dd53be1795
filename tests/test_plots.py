"""The profile map a biologist opens: axes that say what they show, outliers that do not
squash the picture, a named positive control, a title naming the feature set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cytogan_tf.evaluation import _control_notes, feature_set_name
from cytogan_tf.plots import embed_2d, plot_embedding, robust_limits


def test_pca_axes_name_the_variance_they_explain():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) * [5, 3, 1, 1, 1, 1]
    coords, names = embed_2d(x, "pca")
    assert coords.shape == (40, 2)
    share = [float(n.split("(")[1].split("%")[0]) for n in names]
    assert names[0].startswith("PC1 (") and share[0] >= share[1] > 0 and sum(share) <= 100


def test_robust_limits_ignore_a_far_outlier():
    values = np.concatenate([np.random.default_rng(1).normal(size=99), [1000.0]])
    lo, hi = robust_limits(values)
    assert hi < 10 and lo > -10 and (values < hi).sum() >= 98


def test_embedding_plot_draws_outliers_at_the_edge_and_names_the_control(tmp_path):
    coords = np.array([[0, 0], [1, 1], [0.5, 0.2], [0.2, 0.9], [1e4, 0.5], [0.3, 0.3]], float)
    labels = ["DMSO", "Actin disruptors", "Actin disruptors", "control", "DNA damage", "DMSO"]
    table = pd.DataFrame({"Metadata_MOA": labels, "Metadata_Compound": ["DMSO", "a", "b", "taxol", "c", "DMSO"]})
    notes = _control_notes(table)
    assert notes == {"control": "positive control (taxol)"}
    out = tmp_path / "map.png"
    plot_embedding(coords, labels, out, "title", axis_names=("PC1 (50.0% of variance)", "PC2"), notes=notes)
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 300


def test_titles_name_the_feature_set_not_the_export():
    here = Path("p")
    assert feature_set_name({"features": "handcrafted", "model": None}, here) == "hand-made features"
    assert feature_set_name({"features": "encoder", "model": "demo-encoder/1"}, here) == "encoder demo-encoder/1"
    assert feature_set_name({"features": "both", "model": "m"}, here) == "hand-made + encoder m"
    assert feature_set_name({}, here) == "p"
