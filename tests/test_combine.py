"""Hand-made (+) encoder tables: cells matched by id, blocks standardised and weighted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cytogan_tf.combine import combine_cell_tables
from cytogan_tf.errors import DataError


def _table(ids, width, prefix, seed):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"Metadata_CellId": ids, "Metadata_Plate": "P1",
                         "Metadata_Well": [f"A{i % 3:02d}" for i in ids]})
    feats = pd.DataFrame(rng.normal(5, 3, (len(ids), width)), columns=[f"{prefix}_{i}" for i in range(width)])
    return pd.concat([meta, feats], axis=1)


def test_blocks_are_matched_by_cell_id_and_weighted_by_width():
    enc = _table(list(range(10)), 16, "enc", 0)
    hand = _table(list(range(10))[::-1], 4, "f", 1)  # same cells, other order
    out = combine_cell_tables({"enc": enc, "hand": hand})
    assert list(out["Metadata_CellId"]) == list(range(10))
    enc_cols = [c for c in out.columns if c.startswith("enc_enc_")]
    hand_cols = [c for c in out.columns if c.startswith("hand_f_")]
    assert len(enc_cols) == 16 and len(hand_cols) == 4
    # each block carries the same total variance whatever its width
    assert out[enc_cols].var(ddof=0).sum() == pytest.approx(1.0)
    assert out[hand_cols].var(ddof=0).sum() == pytest.approx(1.0)
    # rows were aligned: cell 0's hand-made value is the one hand's table held for cell 0
    raw = hand.set_index("Metadata_CellId")["f_0"]
    z = (raw - raw.mean()) / raw.std(ddof=0) / 2.0
    np.testing.assert_allclose(out["hand_f_0"].to_numpy(), z.loc[range(10)].to_numpy())


def test_missing_cells_or_ids_are_clear_errors():
    enc = _table(list(range(10)), 3, "enc", 0)
    with pytest.raises(DataError, match="lacks 2 cells"):
        combine_cell_tables({"enc": enc, "hand": _table(list(range(8)), 3, "f", 1)})
    with pytest.raises(DataError, match="Metadata_CellId"):
        combine_cell_tables({"enc": enc, "hand": enc.drop(columns="Metadata_CellId")})
    with pytest.raises(DataError, match="at least two"):
        combine_cell_tables({"enc": enc})


def test_combine_cli_writes_joint_profiles(tmp_path):
    from cytogan_tf.cli.main import cli
    from cytogan_tf.profiling import write_profiles

    rng = np.random.default_rng(0)
    rows = []
    for plate in ("Week1_1", "Week2_2"):
        for w, (compound, moa) in enumerate([("DMSO", "DMSO")] * 2 + [("a", "M1"), ("b", "M1"), ("c", "M2"), ("d", "M2")]):
            for c in range(5):
                rows.append({"Metadata_CellId": len(rows), "Metadata_Plate": plate, "Metadata_Well": f"A{w:02d}",
                             "Metadata_Compound": compound, "Metadata_Concentration": 0.0 if moa == "DMSO" else 1.0,
                             "Metadata_MOA": moa, "Metadata_Control": "negative" if moa == "DMSO" else "treatment",
                             "Metadata_Batch": plate.split("_")[0]})
    meta = pd.DataFrame(rows)
    dirs = []
    for name, width in (("enc", 6), ("hand", 3)):
        feats = pd.DataFrame(rng.normal(size=(len(meta), width)), columns=[f"{name}_{i}" for i in range(width)])
        cells = pd.concat([meta, feats], axis=1)
        from cytogan_tf.profiling import build_profiles
        write_profiles(tmp_path / name, cells, build_profiles(cells), {})
        dirs.append(str(tmp_path / name))
    result = CliRunner().invoke(cli, ["combine", *dirs, "--out", str(tmp_path / "both"), "--normalize", "none"])
    assert result.exit_code == 0, result.output
    assert "9 features" in result.output
    treatments = pd.read_parquet(tmp_path / "both" / "treatments_mean.parquet")
    assert sum(c.startswith("enc_") for c in treatments.columns) == 6
    assert sum(c.startswith("hand_") for c in treatments.columns) == 3
    bad = CliRunner().invoke(cli, ["combine", dirs[0], str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "Error:" in bad.output
