"""MOA metrics checked against answers worked out by hand on tiny tables."""

import numpy as np
import pandas as pd
import pytest

from cytogan_tf.errors import DataError
from cytogan_tf.metrics import (
    average_precision, chance_levels, frechet_distance, kernel_inception_distance,
    mean_average_precision, nearest_neighbor_moa,
)


def table(rows):
    """rows: (compound, moa, angle_degrees[, batch]) -> treatment table with 2-D unit features."""
    out = []
    for i, row in enumerate(rows):
        compound, moa, angle = row[:3]
        batch = row[3] if len(row) > 3 else f"b{i}"
        t = np.deg2rad(angle)
        out.append({"Metadata_Compound": compound, "Metadata_Concentration": 1.0 + i,
                    "Metadata_MOA": moa, "Metadata_Batch": batch,
                    "f_0": np.cos(t), "f_1": np.sin(t)})
    return pd.DataFrame(out)


def test_one_nn_matches_hand_computed_neighbours():
    # Angles chosen so every nearest neighbour is unambiguous:
    # A(0)->B(10) ok, B->A ok, C(90)->F(93) wrong, D(100)->F(93) wrong,
    # E(200)->D(100) wrong, F(93)->C(90) wrong  => 2/6.
    t = table([("A", "m1", 0), ("B", "m1", 10), ("C", "m2", 90), ("D", "m2", 100),
               ("E", "m3", 200), ("F", "m3", 93)])
    res = nearest_neighbor_moa(t, "nsc")
    assert list(res.predictions["Neighbor_Compound"]) == ["B", "A", "F", "F", "D", "C"]
    assert list(res.predictions["Predicted_MOA"]) == ["m1", "m1", "m3", "m3", "m2", "m2"]
    assert res.accuracy == pytest.approx(2 / 6)
    assert res.chance_prior == pytest.approx(1 / 3) and res.chance_uniform == pytest.approx(1 / 3)


def test_nsc_excludes_same_compound_neighbour():
    # X at two doses: X@0 and X@5 are closest to each other and share the MOA; the best
    # other-compound neighbour of X is Y (20 degrees) with the wrong MOA.
    t = table([("X", "m1", 0), ("X", "m1", 5), ("Y", "m2", 20), ("Z", "m1", 90), ("W", "m2", 120)])
    everything = nearest_neighbor_moa(t, "all").predictions
    nsc = nearest_neighbor_moa(t, "nsc").predictions
    assert everything.loc[0, "Neighbor_Compound"] == "X" and everything.loc[0, "Correct"]
    assert nsc.loc[0, "Neighbor_Compound"] == "Y" and not nsc.loc[0, "Correct"]
    assert (nsc["Neighbor_Compound"] != nsc["Metadata_Compound"]).all()


def test_nscb_excludes_same_batch_and_reports_dropped_moas():
    # X (week1): other-compound neighbour in its own batch is Y (right MOA);
    # across batches the nearest is Z (wrong MOA). MOA m3 lives in one batch only.
    t = table([("X", "m1", 0, "w1"), ("Y", "m1", 10, "w1"), ("Z", "m2", 30, "w2"),
               ("V", "m1", 80, "w2"), ("W", "m2", 60, "w1"),
               ("P", "m3", 200, "w3"), ("Q", "m3", 210, "w3")])
    nsc = nearest_neighbor_moa(t, "nsc").predictions.set_index("Metadata_Compound")
    res = nearest_neighbor_moa(t, "nscb")
    nscb = res.predictions.set_index("Metadata_Compound")
    assert nsc.loc["X", "Neighbor_Compound"] == "Y"
    assert nscb.loc["X", "Neighbor_Compound"] == "Z"
    assert res.moas_dropped == ["m3"] and "P" not in nscb.index
    batch = dict(zip(t["Metadata_Compound"], t["Metadata_Batch"]))
    assert all(batch[q] != batch[n] for q, n in zip(nscb.index, nscb["Neighbor_Compound"]))


def test_nscb_with_multi_batch_treatments():
    t = table([("X", "m1", 0, "w1|w2"), ("Y", "m1", 10, "w2"), ("Z", "m1", 40, "w3"), ("U", "m2", 20, "w3")])
    preds = nearest_neighbor_moa(t, "nscb").predictions.set_index("Metadata_Compound")
    assert preds.loc["X", "Neighbor_Compound"] == "U"  # Y shares batch w2


def test_dmso_and_unknown_moa_are_not_queries():
    t = table([("DMSO", "DMSO", 0), ("A", "m1", 1), ("B", "m1", 50), ("C", "", 2), ("D", "m2", 3),
               ("E", "m2", 60), ("G", "m4", 4)])
    t.loc[3, "Metadata_MOA"] = None
    res = nearest_neighbor_moa(t, "nsc")
    preds = res.predictions
    # G is the only compound of m4: no possible match, so it is dropped, not counted wrong
    assert set(preds["Metadata_Compound"]) == {"A", "B", "D", "E"}
    assert res.moas_dropped == ["m4"]
    assert "DMSO" not in set(preds["Neighbor_Compound"]) | set(preds["Predicted_MOA"])


def test_too_few_treatments_is_a_clear_error():
    with pytest.raises(DataError, match="at least 2"):
        nearest_neighbor_moa(table([("DMSO", "DMSO", 0), ("A", "m1", 1)]), "nsc")


def test_chance_levels():
    prior, uniform = chance_levels(["a", "a", "a", "b"])
    assert prior == pytest.approx(0.75**2 + 0.25**2) and uniform == 0.5


def test_average_precision_hand_computed():
    assert average_precision([1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 1, 0, 0, 1]) == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert np.isnan(average_precision([0, 0]))


def test_map_follows_copairs_pairing():
    # Query Q (m1) ranks: same-compound Q' (excluded), P1 (pos), N1 (neg), P2 (pos)
    # -> AP(Q) = (1/1 + 2/3) / 2.
    t = table([("Q", "m1", 0), ("Q", "m1", 1), ("P1", "m1", 10), ("N1", "m2", 20),
               ("P2", "m1", 30), ("N2", "m2", 170)])
    per_query, per_moa, overall = mean_average_precision(t)
    q = per_query[(per_query["Metadata_Compound"] == "Q") & (per_query["Metadata_Concentration"] == 1.0)]
    assert q["average_precision"].item() == pytest.approx(5 / 6)
    assert q["n_total"].item() == 4  # the same-compound row is not ranked
    assert overall == pytest.approx(per_query["average_precision"].mean())
    m1 = per_moa.set_index("Metadata_MOA").loc["m1"]
    assert m1["mean_average_precision"] == pytest.approx(
        per_query.loc[per_query["Metadata_MOA"] == "m1", "average_precision"].mean())


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # b = s*a + mu: cov_b = s^2 cov_a, so sqrt(cov_a cov_b) = s cov_a and
    # d = |mean_a - mean_b|^2 + (1 - s)^2 tr(cov_a), exactly, from sample statistics.
    mu, s = np.array([1.0, -2.0, 0.5, 0.0]), 2.0
    b = s * a + mu
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + (1 - s) ** 2 * np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    # large-sample check against the population value |mu|^2 + d (1 - s)^2 = 5.25 + 4
    big = rng.standard_normal((20000, 4))
    assert frechet_distance(big, s * rng.standard_normal((20000, 4)) + mu) == pytest.approx(9.25, rel=0.05)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same, _ = kernel_inception_distance(a, b, subset_size=200, n_subsets=5)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subset_size=200, n_subsets=5)
    assert abs(same) < 0.05 and shifted > 0.5


def test_distance_inputs_validated():
    with pytest.raises(DataError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        kernel_inception_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))
