"""Image-set tables and channel readers: the real BBBC021 CSV traps and bad-input errors."""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cytogan_tf.data.bbbc021 import (
    IMAGE_COLUMNS,
    OUTPUT_COLUMNS,
    load_image_sets,
    read_channel,
    read_image_set,
)
from cytogan_tf.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "bbbc021_mini"
# ../shared beside the checkout (as in CI), else the committed crops of the same fields
_SHARED_FLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "examplefly"
EXAMPLEFLY = _SHARED_FLY if _SHARED_FLY.is_dir() else Path(__file__).parent / "data" / "examplefly"


def _make_plate_set(root: Path, skip: set[str] = frozenset()) -> Path:
    """Copy the fixture CSVs to `root` and create every image file they name."""
    for name in ("BBBC021_v1_image.csv", "BBBC021_v1_moa.csv"):
        shutil.copy(FIXTURE / name, root / name)
    table = pd.read_csv(root / "BBBC021_v1_image.csv", lineterminator="\r")
    for stain, value in (("DAPI", 100), ("Actin", 200), ("Tubulin", 300)):
        for folder, name in zip(table[f"Image_PathName_{stain}"], table[f"Image_FileName_{stain}"]):
            if name in skip:
                continue
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, np.full((8, 10), value, np.uint16))
    return root


@pytest.fixture
def plate_set(tmp_path):
    return _make_plate_set(tmp_path)


def _rewrite_image_csv(root: Path, edit) -> None:
    path = root / "BBBC021_v1_image.csv"
    table = pd.read_csv(path, dtype=str, lineterminator="\r")
    table = edit(table)
    path.write_text(table.to_csv(index=False, lineterminator="\r"))


def test_fixture_has_real_traps():
    raw = (FIXTURE / "BBBC021_v1_image.csv").read_bytes()
    assert b"\r" in raw and b"\n" not in raw  # bare-CR line endings, like the real CSVs
    header = raw.split(b"\r")[0].decode().split(",")
    assert header == IMAGE_COLUMNS


def test_loads_bbbc021_tables(plate_set):
    df = load_image_sets(plate_set)
    assert list(df.columns) == OUTPUT_COLUMNS
    assert len(df) == 10
    assert df["Metadata_Concentration"].dtype == np.float64
    assert df["Metadata_ImageNumber"].tolist() == list(range(1, 11))
    assert sorted(df["Metadata_Plate"].unique()) == ["Week1_22123", "Week2_24121"]
    for channel, tag in (("DNA", "_w1"), ("Actin", "_w4"), ("Tubulin", "_w2")):
        paths = df[f"PathName_{channel}"]
        assert all(Path(p).is_absolute() and Path(p).is_file() and tag in Path(p).name for p in paths)
    row10 = df.set_index("Metadata_ImageNumber").loc[10]
    assert row10["Metadata_Site"] == 3 and row10["Metadata_Well"] == "C05"
    assert df.set_index("Metadata_ImageNumber").loc[2, "Metadata_Site"] == 2


def test_controls_are_not_treatments(plate_set):
    df = load_image_sets(plate_set).set_index("Metadata_ImageNumber")
    # DMSO: negative control on every plate.
    assert (df.loc[[1, 2, 7], "Metadata_MOA"] == "DMSO").all()
    assert (df.loc[[1, 2, 7], "Metadata_Control"] == "negative").all()
    # Taxol 0.3 in well B11 of both plates: positive controls, never the taxol treatment.
    assert (df.loc[[3, 8], "Metadata_Control"] == "positive").all()
    assert (df.loc[[3, 8], "Metadata_MOA"] == "control").all()
    # The real taxol 0.3 treatment well (D05, one plate) keeps its MOA; "0.30" in the MOA
    # table and "1" vs "1.0" still join.
    assert df.loc[4, "Metadata_MOA"] == "Microtubule stabilizers"
    assert df.loc[4, "Metadata_Control"] == "treatment"
    assert df.loc[5, "Metadata_MOA"] == "Microtubule stabilizers"
    assert df.loc[9, "Metadata_MOA"] == "Microtubule destabilizers"
    # A compound missing from the MOA table is kept, with MOA "" and flagged.
    assert df.loc[6, "Metadata_MOA"] == ""
    assert load_image_sets(plate_set).attrs["unknown_moa"] == ["mysterine"]


def test_taxol_replicates_at_one_position_stay_treatment(plate_set):
    """Replicate plates of one week put the taxol 0.3 treatment at the same well (D05):
    counted per plate it would look like a control position, counted per week it does not."""
    def edit(t):
        extra = t[t["ImageNumber"].isin(["3", "4"])].copy()
        extra["ImageNumber"] = ["11", "12"]
        for col in ("Image_PathName_DAPI", "Image_PathName_Tubulin", "Image_PathName_Actin"):
            extra[col] = "Week1/Week1_22141"
        extra["Image_Metadata_Plate_DAPI"] = "Week1_22141"
        extra["Replicate"] = "2"
        return pd.concat([t, extra])

    _rewrite_image_csv(plate_set, edit)
    df = load_image_sets(plate_set, check_files=False).set_index("Metadata_ImageNumber")
    assert df.loc[[4, 12], "Metadata_Control"].tolist() == ["treatment", "treatment"]
    assert df.loc[[4, 12], "Metadata_MOA"].tolist() == ["Microtubule stabilizers"] * 2
    assert df.loc[[3, 8, 11], "Metadata_Control"].tolist() == ["positive"] * 3


def test_duplicate_image_number(plate_set):
    _rewrite_image_csv(plate_set, lambda t: t.assign(ImageNumber=t["ImageNumber"].replace("7", "6")))
    with pytest.raises(DataError, match="ImageNumber: duplicate value 6"):
        load_image_sets(plate_set)
    df = load_image_sets(plate_set, skip_bad=True)
    assert len(df) == 9 and df.attrs["skipped"] == [(str(plate_set / "BBBC021_v1_image.csv"), "duplicate ImageNumber 6")]


def test_missing_column_names_it(plate_set):
    _rewrite_image_csv(plate_set, lambda t: t.drop(columns=["Image_Metadata_Compound", "Replicate"]))
    with pytest.raises(DataError, match=r"BBBC021_v1_image\.csv.*Replicate, Image_Metadata_Compound"):
        load_image_sets(plate_set)


def test_missing_csv_and_empty_table(tmp_path, plate_set):
    with pytest.raises(DataError, match="nothere.csv"):
        load_image_sets(plate_set, image_csv=plate_set / "nothere.csv")
    (plate_set / "BBBC021_v1_moa.csv").unlink()
    with pytest.raises(DataError, match="BBBC021_v1_moa.csv"):
        load_image_sets(plate_set)
    _make_plate_set(plate_set)
    _rewrite_image_csv(plate_set, lambda t: t.iloc[:0])
    with pytest.raises(DataError, match="no rows"):
        load_image_sets(plate_set)


def test_bad_concentration(plate_set):
    def edit(t):
        t.loc[4, "Image_Metadata_Concentration"] = "a lot"
        return t

    _rewrite_image_csv(plate_set, edit)
    with pytest.raises(DataError, match=r"ImageNumber 5.*Image_Metadata_Concentration.*'a lot'"):
        load_image_sets(plate_set)
    df = load_image_sets(plate_set, skip_bad=True)
    assert len(df) == 9 and 5 not in df["Metadata_ImageNumber"].tolist()


def test_missing_file_named_and_skipped(tmp_path):
    table = pd.read_csv(FIXTURE / "BBBC021_v1_image.csv", lineterminator="\r")
    gone = table.loc[table["ImageNumber"] == 9, "Image_FileName_Actin"].item()
    root = _make_plate_set(tmp_path, skip={gone})
    with pytest.raises(DataError, match=rf"ImageNumber 9\).*{gone}"):
        load_image_sets(root)
    df = load_image_sets(root, skip_bad=True)
    assert len(df) == 9 and 9 not in df["Metadata_ImageNumber"].tolist()
    (file, reason), = df.attrs["skipped"]
    assert file.endswith(gone) and "not found" in reason
    assert len(load_image_sets(root, check_files=False)) == 10


# ----------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_channel_keeps_dtype(tmp_path, dtype):
    data = (np.arange(48).reshape(6, 8) * 3).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    out = read_channel(tmp_path / "a.tif")
    assert out.dtype == dtype and out.shape == (6, 8)
    np.testing.assert_array_equal(out, data)


def _bad_tiffs(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.tif"
    tifffile.imwrite(good, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    raw = good.read_bytes()
    files = {
        "corrupt": (b"II*\x00" + bytes(range(256)) * 4, None),
        "garbage": (b"this is not an image at all", None),
        "truncated": (raw[: len(raw) // 2], None),
        "stub": (raw[:8], None),
    }
    out = {}
    for name, (data, _) in files.items():
        out[name] = tmp / f"{name}.tif"
        out[name].write_bytes(data)
    arrays = {
        "multipage": np.zeros((3, 16, 16), np.uint16),
        "rgb": np.zeros((16, 16, 3), np.uint8),
        "int64": np.zeros((16, 16), np.int64),
        "bool": np.zeros((16, 16), bool),
        "complex": np.zeros((16, 16), np.complex64),
    }
    for name, arr in arrays.items():
        out[name] = tmp / f"{name}.tif"
        tifffile.imwrite(out[name], arr, photometric="rgb" if name == "rgb" else "minisblack")
    return out


def test_read_channel_rejects_bad_files(tmp_path):
    bad = _bad_tiffs(tmp_path)
    expect = {"multipage": "shape", "rgb": "shape", "int64": "int64", "bool": "bool", "complex": "complex"}
    for name, path in bad.items():
        with pytest.raises(DataError) as info:
            read_channel(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert expect.get(name, "") in message
    with pytest.raises(DataError, match="missing.tif"):
        read_channel(tmp_path / "missing.tif")


def test_read_image_set_channel_order(plate_set):
    df = load_image_sets(plate_set)
    image = read_image_set(df.iloc[0])
    assert image.shape == (8, 10, 3) and image.dtype == np.float32
    # DAPI=100, Actin=200, Tubulin=300 -> channel order DNA, Actin, Tubulin.
    assert image[0, 0].tolist() == [100.0, 200.0, 300.0]
    tifffile.imwrite(df.iloc[0]["PathName_Actin"], np.zeros((9, 10), np.uint16))
    with pytest.raises(DataError, match="shapes differ"):
        read_image_set(df.iloc[0])


# ----------------------------------------------------------------------------- other layouts


@pytest.mark.skipif(not EXAMPLEFLY.is_dir(), reason="ExampleFly images not available")
def test_examplefly_layout():
    df = load_image_sets(EXAMPLEFLY, layout="examplefly")
    assert list(df.columns) == OUTPUT_COLUMNS
    assert len(df) == 3
    assert sorted(df["Metadata_Site"]) == [2, 76, 218]
    assert set(df["Metadata_Plate"]) == {"examplefly"} and set(df["Metadata_Compound"]) == {"unknown"}
    assert all(df["PathName_DNA"].str.endswith("_D.TIF")) and all(df["PathName_Actin"].str.endswith("_F.TIF"))
    image = read_image_set(df.iloc[0])
    # full fields are 1006x1000 (../shared), the committed crops 384x384
    expected = (1006, 1000, 3) if EXAMPLEFLY == _SHARED_FLY else (384, 384, 3)
    assert image.shape == expected and image.max() > 100
    toml = Path(__file__).parent.parent / "configs" / "examplefly.toml"
    pd.testing.assert_frame_equal(load_image_sets(EXAMPLEFLY, layout=toml), df)


def test_regex_layout_from_toml(tmp_path):
    for site in (1, 2):
        for ch in ("dapi", "phalloidin", "tub"):
            if site == 2 and ch == "tub":
                continue  # field 2 lacks its tubulin image
            tifffile.imwrite(tmp_path / f"P7_C03_f{site}_{ch}.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    layout = tmp_path / "mine.toml"
    layout.write_text(
        "[layout]\nkind = 'regex'\n"
        "pattern = '(?P<plate>P\\d+)_(?P<well>[A-P]\\d+)_f(?P<site>\\d+)_(?P<channel>\\w+)\\.tif'\n"
        "[layout.channels]\nDNA = 'dapi'\nActin = 'phalloidin'\nTubulin = 'tub'\n"
        "[layout.defaults]\ncompound = 'DMSO'\n"
    )
    with pytest.raises(DataError, match="lacks channel.*Tubulin"):
        load_image_sets(tmp_path, layout=layout)
    df = load_image_sets(tmp_path, layout=layout, skip_bad=True)
    assert len(df) == 1 and df.loc[0, "Metadata_Plate"] == "P7" and df.loc[0, "Metadata_Well"] == "C03"
    assert df.loc[0, "Metadata_MOA"] == "DMSO" and df.loc[0, "Metadata_Control"] == "negative"
    assert len(df.attrs["skipped"]) == 1


# ----------------------------------------------------------------------------- fuzzing

_cell_text = st.one_of(
    st.text(alphabet=string.printable + "äµ\x00\r", max_size=12),
    st.sampled_from(["1", "0.3", "nan", "inf", "-1", "1e400", "", "Week1/x", "../..", "a" * 300, '"', '"\n"']),
)
_columns = st.lists(
    st.sampled_from(IMAGE_COLUMNS + ["junk", "", "ImageNumber"]), min_size=0, max_size=16
)


def _only_data_errors(root: Path, **kw) -> None:
    try:
        load_image_sets(root, **kw)
    except DataError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), moa_bytes=st.booleans())
def test_fuzz_random_bytes(data, moa_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(FIXTURE / "BBBC021_v1_moa.csv", root / "BBBC021_v1_moa.csv")
        (root / "BBBC021_v1_image.csv").write_bytes(data)
        if moa_bytes:
            (root / "BBBC021_v1_moa.csv").write_bytes(data)
        _only_data_errors(root)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    columns=_columns,
    cells=st.lists(st.lists(_cell_text, min_size=0, max_size=16), min_size=0, max_size=4),
    full_header=st.booleans(),
    skip_bad=st.booleans(),
    newline=st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_fuzz_random_tables(columns, cells, full_header, skip_bad, newline):
    header = IMAGE_COLUMNS if full_header else columns
    lines = [",".join(header)] + [",".join(row) for row in cells]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(FIXTURE / "BBBC021_v1_moa.csv", root / "BBBC021_v1_moa.csv")
        (root / "BBBC021_v1_image.csv").write_text(newline.join(lines), encoding="utf-8")
        _only_data_errors(root, skip_bad=skip_bad)
        _only_data_errors(root, skip_bad=skip_bad, check_files=False)
