"""Aggregation and DMSO-based normalisation of profile tables (no TensorFlow needed)."""

import numpy as np
import pandas as pd
import pytest

from cytogan_tf.errors import DataError
from cytogan_tf.normalization import normalize_profiles
from cytogan_tf.profiling import add_batch_column, aggregate_treatments, aggregate_wells, build_profiles


def fake_cells(seed=0, n_features=4, cells_per_well=20):
    """Two plates; per plate 3 DMSO wells and 2 wells of each of 3 compounds (2 MOAs),
    plus one positive-control taxol well that must not merge with treatment taxol."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    moa = {"A": "m1", "B": "m1", "C": "m2", "taxol": "Microtubule stabilizers"}
    for p, plate in enumerate(["Week1_001", "Week2_002"]):
        gain = 1.0 + 0.5 * p
        wells = [("DMSO", 0.0, "negative")] * 3 + [("A", 1.0, "treatment"), ("B", 1.0, "treatment"),
                                                    ("C", 1.0, "treatment"), ("A", 3.0, "treatment"),
                                                    ("taxol", 0.3, "positive"), ("taxol", 0.3, "treatment")]
        for w, (compound, conc, control) in enumerate(wells):
            shift = {"DMSO": 0, "A": 2, "B": 2.5, "C": -2, "taxol": 5}[compound]
            for _ in range(cells_per_well):
                rows.append({
                    "Metadata_Plate": plate, "Metadata_Well": f"W{w:02d}",
                    "Metadata_Compound": compound, "Metadata_Concentration": conc,
                    "Metadata_MOA": "DMSO" if compound == "DMSO" else ("control" if control == "positive" else moa[compound]),
                    "Metadata_Control": control, "Metadata_CellId": len(rows),
                })
                feats.append(gain * (rng.standard_normal(n_features) + shift))
    meta = pd.DataFrame(rows)
    return pd.concat([meta, pd.DataFrame(np.array(feats), columns=[f"m_{i}" for i in range(n_features)])], axis=1)


def test_batch_derived_from_bbbc021_week():
    cells = add_batch_column(fake_cells())
    assert set(cells["Metadata_Batch"]) == {"Week1", "Week2"}
    plain = add_batch_column(pd.DataFrame({"Metadata_Plate": ["P1", "P2"]}))
    assert list(plain["Metadata_Batch"]) == ["P1", "P2"]


def test_well_and_treatment_aggregation():
    cells = add_batch_column(fake_cells())
    wells = aggregate_wells(cells, "mean")
    assert len(wells) == 2 * 9
    assert (wells["Metadata_Count_Cells"] == 20).all()
    one = cells[(cells.Metadata_Plate == "Week1_001") & (cells.Metadata_Well == "W03")]
    row = wells[(wells.Metadata_Plate == "Week1_001") & (wells.Metadata_Well == "W03")]
    np.testing.assert_allclose(row[["m_0", "m_1"]].to_numpy()[0], one[["m_0", "m_1"]].mean().to_numpy())
    med = aggregate_wells(cells, "median")
    row = med[(med.Metadata_Plate == "Week1_001") & (med.Metadata_Well == "W03")]
    np.testing.assert_allclose(row["m_0"].item(), one["m_0"].median())

    treatments = aggregate_treatments(wells, "mean")
    keys = set(zip(treatments.Metadata_Compound, treatments.Metadata_Concentration, treatments.Metadata_MOA))
    # DMSO kept as its own row; the positive-control taxol wells stay apart from treatment taxol
    assert ("DMSO", 0.0, "DMSO") in keys
    assert ("taxol", 0.3, "control") in keys and ("taxol", 0.3, "Microtubule stabilizers") in keys
    assert len(treatments) == 7  # DMSO, A@1, A@3, B, C, taxol control, taxol treatment
    a1 = treatments[(treatments.Metadata_Compound == "A") & (treatments.Metadata_Concentration == 1.0)]
    assert a1["Metadata_Plate"].item() == "Week1_001|Week2_002"
    assert a1["Metadata_Batch"].item() == "Week1|Week2"
    assert a1["Metadata_Count_Wells"].item() == 2


def test_dmso_standardisation_gives_zero_mean_unit_std_on_dmso():
    wells = aggregate_wells(add_batch_column(fake_cells()), "mean")
    out = normalize_profiles(wells, "dmso", scope="plate")
    feats = [c for c in out.columns if c.startswith("m_")]
    for _, plate in out.groupby("Metadata_Plate"):
        dmso = plate[plate.Metadata_Compound == "DMSO"][feats]
        np.testing.assert_allclose(dmso.mean().to_numpy(), 0.0, atol=1e-9)
        np.testing.assert_allclose(dmso.std(ddof=1).to_numpy(), 1.0, atol=1e-9)
    # non-control wells are moved away from DMSO, not onto it
    assert out.loc[out.Metadata_Compound == "A", "m_0"].mean() > 3


def test_tvn_whitens_dmso_to_identity_covariance():
    cells = add_batch_column(fake_cells(n_features=5, cells_per_well=40))
    rng = np.random.default_rng(1)
    # correlate and rescale the features so whitening has something to undo
    mix = rng.standard_normal((5, 5)) * np.array([1000.0, 1.0, 0.01, 1.0, 1.0])
    feats = [f"m_{i}" for i in range(5)]
    cells[feats] = cells[feats].to_numpy() @ mix
    from cytogan_tf.normalization import typical_variation_normalize

    for scope in ("plate", "global"):
        out = typical_variation_normalize(cells, scope=scope, shrinkage="none")
        assert list(out.columns) == list(cells.columns)  # ZCA: same feature columns
        groups = out.groupby("Metadata_Plate") if scope == "plate" else [(None, out)]
        for _, part in groups:
            dmso = part[part.Metadata_Compound == "DMSO"][feats].to_numpy()
            # PCA(whiten=True) uses ddof=1 variances
            np.testing.assert_allclose(np.cov(dmso, rowvar=False), np.eye(5), atol=1e-6)
            np.testing.assert_allclose(dmso.mean(0), 0.0, atol=1e-9)


def test_shrunk_tvn_nearly_whitens_plenty_of_dmso_and_tames_few():
    from cytogan_tf.normalization import typical_variation_normalize

    rng = np.random.default_rng(2)
    mix = rng.standard_normal((5, 5)) * np.array([1000.0, 1.0, 0.01, 1.0, 1.0])
    feats = [f"m_{i}" for i in range(5)]
    cells = add_batch_column(fake_cells(n_features=5, cells_per_well=200))
    cells[feats] = cells[feats].to_numpy() @ mix
    out = normalize_profiles(cells, "tvn", scope="global")  # Ledoit-Wolf by default
    dmso = out[out.Metadata_Compound == "DMSO"][feats].to_numpy()
    raw = cells[cells.Metadata_Compound == "DMSO"][feats].to_numpy()
    raw = raw / raw.std(0)
    before, after = np.linalg.eigvalsh(np.cov(raw, rowvar=False)), np.linalg.eigvalsh(np.cov(dmso, rowvar=False))
    assert before.max() / before.min() > 100  # correlated features: far from white
    # whitened, except that shrinkage tempers the direction of least DMSO variance
    assert after.max() < 1.1 and np.sort(after)[1] > 0.8 and after.min() > 0.2
    # 30 DMSO rows, 40 features: exact whitening blows noise up, shrinkage keeps it bounded
    wide = add_batch_column(fake_cells(n_features=40, cells_per_well=5))
    wide_feats = [c for c in wide.columns if c.startswith("m_")]
    exact = typical_variation_normalize(wide, scope="global", shrinkage="none")[wide_feats].to_numpy()
    shrunk = normalize_profiles(wide, "tvn", scope="global")[wide_feats].to_numpy()
    treated = (wide.Metadata_Compound != "DMSO").to_numpy()
    assert np.abs(shrunk[treated]).max() < np.abs(exact[treated]).max()
    assert np.isfinite(shrunk).all()


def test_per_plate_tvn_keeps_plates_comparable():
    # Same biology on two plates whose per-feature gains differ (and order the DMSO
    # variances differently): after per-plate TVN a compound must look the same on both
    # plates. Keeping raw per-plate PCA coordinates instead would permute the columns.
    cells = add_batch_column(fake_cells(n_features=3, cells_per_well=60))
    feats = ["m_0", "m_1", "m_2"]
    is_c = cells.Metadata_Compound == "C"
    cells.loc[is_c, feats] = cells.loc[is_c, feats].to_numpy() + np.array([4.0, 0.0, -4.0])
    gains = {"Week1_001": np.array([5.0, 1.0, 0.2]), "Week2_002": np.array([0.2, 1.0, 5.0])}
    for plate, gain in gains.items():
        rows = cells.Metadata_Plate == plate
        cells.loc[rows, feats] = cells.loc[rows, feats].to_numpy() * gain
    wells = aggregate_wells(cells, "mean")
    out = normalize_profiles(wells, "tvn", reference=cells, scope="plate")
    sel = out[(out.Metadata_Compound == "C") & (out.Metadata_Concentration == 1.0)].set_index("Metadata_Plate")
    p1, p2 = sel.loc["Week1_001", feats].to_numpy(float), sel.loc["Week2_002", feats].to_numpy(float)
    assert p1 @ p2 / np.linalg.norm(p1) / np.linalg.norm(p2) > 0.9
    raw = wells[(wells.Metadata_Compound == "C") & (wells.Metadata_Concentration == 1.0)][feats].to_numpy(float)
    assert raw[0] @ raw[1] / np.linalg.norm(raw[0]) / np.linalg.norm(raw[1]) < 0.5  # before TVN they differ


def test_build_profiles_applies_normalisation_before_treatments():
    cells = add_batch_column(fake_cells())
    out = build_profiles(cells, normalize="dmso")
    assert set(out) == {"wells_mean", "wells_median", "treatments_mean", "treatments_median"}
    dmso = out["treatments_mean"].query("Metadata_Compound == 'DMSO'")
    # DMSO wells are standardised per plate, so the DMSO treatment profile is ~0
    np.testing.assert_allclose(dmso[["m_0", "m_1"]].to_numpy(), 0.0, atol=1e-9)
    tvn = build_profiles(cells, normalize="tvn", tvn_scope="global")
    assert [c for c in tvn["treatments_median"].columns if c.startswith("m_")] == ["m_0", "m_1", "m_2", "m_3"]


def test_normalisation_errors_are_clear():
    cells = add_batch_column(fake_cells())
    no_dmso = cells[cells.Metadata_Compound != "DMSO"]
    with pytest.raises(DataError, match="DMSO"):
        normalize_profiles(no_dmso, "dmso")
    with pytest.raises(DataError, match="unknown normalisation"):
        normalize_profiles(cells, "zscore")
    with pytest.raises(DataError, match="empty"):
        aggregate_wells(cells.iloc[:0])


def test_robust_normalisation_centres_plates_on_dmso_and_scales_by_the_global_mad():
    cells = add_batch_column(fake_cells(cells_per_well=40))
    wells = aggregate_wells(cells, "mean")
    out = normalize_profiles(wells, "robust")
    feats = [c for c in out.columns if c.startswith("m_")]
    centred = []
    for _, plate in out.groupby("Metadata_Plate"):
        dmso = plate[plate.Metadata_Compound == "DMSO"][feats].to_numpy()
        np.testing.assert_allclose(np.median(dmso, axis=0), 0.0, atol=1e-9)
        centred.append(dmso)
    spread = np.concatenate(centred)
    np.testing.assert_allclose(1.4826 * np.median(np.abs(spread - np.median(spread, 0)), 0), 1.0, rtol=1e-6)
    # one scale for all plates: plate 2's larger gain stays visible in its treatment profiles
    a = out[out.Metadata_Compound == "A"].groupby("Metadata_Plate")["m_0"].mean()
    assert a.iloc[1] > a.iloc[0] > 0
    assert len(build_profiles(cells, normalize="robust")["treatments_mean"]) > 0
